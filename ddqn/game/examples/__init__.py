"""Example games a user could have written: real Gymnasium envs with image observations, played by ddqn through
the config's ``game:`` key like any other user env (``docs/own-game.md``).

* :mod:`ddqn.game.examples.catch` — Catch: ``game: ddqn.game.examples.catch:Catch`` (``--config catch``), or its
  registered id ``ddqn/Catch-v0``.

Importing this package registers the ids (``ddqn.game`` imports it, so they are known wherever ddqn plays).
"""
from __future__ import annotations

import gymnasium

CATCH_ID = "ddqn/Catch-v0"

if CATCH_ID not in gymnasium.registry:  # a re-import is a no-op
    gymnasium.register(id=CATCH_ID, entry_point="ddqn.game.examples.catch:Catch")
