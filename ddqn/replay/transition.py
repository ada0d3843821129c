"""How one env step becomes a stored transition: reward clipping and lives (the one place both the experience loop
and the random warm-up store through).

Rules, for a step (a, r, x', terminated, truncated, life_lost) of a game:

* **Reward**: learning stores r clipped to [−``reward_clip``, ``reward_clip``] (0: as is). Scores stay raw.
* **Game over** (``terminated``): stored terminal; the caller starts the next game (``start_episode``).
* **Lost life** (``life_lost``: lives fell and the game goes on) with ``life_loss_terminal``: the transition is
  stored with terminal=True, so its target is y = r (no bootstrap past a lost life), and a new replay segment
  begins at x' (``start_episode(x')``): x' is stored a second time, as the first frame of the segment, and no
  stored history reaches back across the loss, as DeepMind's replay cut histories at terminals. The acting frame
  stack φ restarts at x' too (the caller's job, told by the return value), so acted and stored states agree.
  The game itself continues: the episode (its score, the episode count) ends only at game over or truncation.
* **Truncation** (a time limit): not terminal; the caller starts the next game. Snake has no lives, so nothing
  of this changes Snake's transitions (with ``reward_clip`` 0 or ≥ 1).
"""
from __future__ import annotations

from ddqn.config import Config
from ddqn.replay.memory import LMDBReplayMemory, ReplayMemory


def learning_reward(cfg: Config, reward: float) -> float:
    """The reward learning stores: clipped to [−reward_clip, reward_clip] when ``cfg.reward_clip`` > 0."""
    c = cfg.reward_clip
    return min(max(float(reward), -c), c) if c > 0 else float(reward)


def store_step(replay: ReplayMemory | LMDBReplayMemory, cfg: Config, action: int, reward: float,
               next_frame, terminated: bool, truncated: bool, life_lost: bool) -> bool:
    """Store one step from the newest frame of the open segment (module docstring); ``next_frame`` is x', (H, W)
    uint8. Returns True when a new segment began at x' (a lost life, terminal for learning, the game going on):
    the caller restarts φ at x'."""
    cut = bool(life_lost) and cfg.life_loss_terminal and not terminated
    replay.add(int(action), learning_reward(cfg, reward), next_frame, bool(terminated) or cut)
    if cut and not truncated:
        replay.start_episode(next_frame)
        return True
    return False
