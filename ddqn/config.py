"""One typed, validated configuration for a training run, loaded from YAML.

Defaults are the paper's (Ong, Chavez, Hong 2015) where the slides state them: 10×10 Snake, replay
memory 30,000 filled with 20,000 random-policy transitions, minibatch 32 (from the prototxt), ε annealed
1.0 → 0.1 over 50,000 steps, RMSProp or AdaGrad. The named configs in ``ddqn/configs/`` (``--config
paper``, ``--config tuned``…) are YAML files over these defaults. Every run saves its config beside its
results.

``game`` picks the game family: Snake (the default), an Atari game (ALE id, e.g. ``--config breakout``, whose
keys follow the DQN papers, Mnih et al. 2013/2015) or a user's own Gymnasium env with image observations
(``package.module:Class`` or a registered id, e.g. ``--config catch``; ``docs/own-game.md``). Snake-only keys are
ignored by the other games and ALE-only keys by Snake; a user's env refuses an ALE-only key set to anything but
its default (``ALE_ONLY``). Every other key means the same for every game and in every mode (serial or
distributed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ddqn.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
PROTOTXT_DIR = PACKAGE_DIR / "prototxt"  # the shipped nets and solvers (package data)
NAMED_CONFIGS = PACKAGE_DIR / "configs"
FRAME_LAYOUTS = ("scaled", "cells")  # how a Snake board becomes a frame (ddqn.game.snake.frame_map)
EPS_SCHEDULES = ("worker", "global", "ladder", "global-ladder")  # ε per actor among W (ddqn.dqn.exploration)
PS_PLACEMENTS = ("driver", "executors")  # where the shards of a sharded parameter server run (ddqn.distributed.shards)
AUTH_MODES = ("message", "connection")  # MAC every payload, or authenticate the connection (ddqn.distributed.protocol)
ALE_ONLY = ("frame_skip", "noop_max", "sticky_actions", "life_loss_terminal")  # a user's env refuses them


@dataclass(frozen=True)
class Config:
    """Hyperparameters of a DQN run (serial or distributed). Units: steps are env steps of one game."""

    # game: "snake"; an ALE Gymnasium id such as "ALE/Breakout-v5" (ddqn.game.atari); or a user's Gymnasium env with
    # uint8 image observations and Discrete actions, "package.module:Class" or a registered id (ddqn.game.custom)
    game: str = "snake"
    # Snake only (the other games ignore them)
    board_size: int = 10  # n×n board
    starve_steps: int = 400  # episode truncated after this many steps without an apple
    paper_look: bool = False  # head drawn like the body (the paper's frames)
    frame_layout: str = "scaled"  # "scaled": board stretched over the frame; "cells": k×k pixels per cell in a wall
    # Atari (the DQN papers' values); all but max_episode_steps are ALE_ONLY: Snake ignores them, a user's env
    # refuses them. max_episode_steps also cuts a user's env (Snake's games are cut by starve_steps)
    frame_skip: int = 4  # emulator frames per agent step (max-pooled over the last two)
    noop_max: int = 30  # a game starts with 1..noop_max no-op frames (0: none)
    sticky_actions: float = 0.0  # ALE repeat_action_probability: 0 deterministic (DQN papers), 0.25 Machado 2018
    max_episode_steps: int = 27_000  # agent steps per game before it is cut (108,000 frames at frame_skip 4)
    life_loss_terminal: bool = True  # a lost life is terminal for learning (not for the score or evaluation)
    # network and solver (Caffe prototxt; the network fixes frame size, history and minibatch size)
    net: str = "prototxt/snake_paper.prototxt"
    solver: str = "prototxt/solver_rmsprop.prototxt"
    # replay memory
    replay_capacity: int = 30_000  # frames
    replay_warmup: int = 20_000  # random-policy transitions before learning
    replay_backend: str = "ram"  # "ram" or "lmdb"
    # prioritized replay (Schaul et al. 2016, proportional): transition i drawn with P(i) ∝ p_i^α, p_i = |δ_i| + eps,
    # its loss weighted by the importance weight (N·P(i))^−β / max_j w_j of its minibatch (ddqn.replay.memory)
    replay_alpha: float = 0.0  # α; 0 = uniform sampling, exactly as without priorities (Schaul's proportional: 0.6)
    replay_beta: float = 0.4  # β at a worker's first env step (Schaul's proportional: 0.4) ...
    replay_beta_steps: int = 250_000  # ... annealed linearly to 1 over this many env steps of the worker's game
    # (≈ two hours of one `tuned` worker, which plays ≈ 124,000 env steps an hour on 2 cores: bench-tuning)
    replay_priority_eps: float = 0.01  # added to |δ| so no transition's priority is 0. Snake's |δ| lies mostly
    # in 0.01..1 (rewards ±1, γ 0.95); a floor of 0.01 keeps a well-fitted transition within (1/0.01)^α of the
    # largest priority (16× at α 0.6), so it is still revisited while its target moves with Q̂, and bounds the spread
    # of importance weights in a minibatch; baselines' 1e-6 lets such transitions go nearly unsampled
    # Q-learning
    gamma: float = 0.95  # discount factor γ
    eps_start: float = 1.0
    eps_end: float = 0.1
    eps_decay_steps: int = 50_000  # linear anneal length (env steps: a worker's own, or the run's; eps_schedule)
    eps_schedule: str = "worker"  # worker | global | ladder | global-ladder (ddqn.dqn.exploration)
    eps_ladder_base: float = 0.4  # Ape-X's per-worker ε ladder: base ** (1 + alpha * i / (W - 1))
    eps_ladder_alpha: float = 7.0
    target_update: int = 1_000  # C: reset Q̂ = Q every C gradient steps
    train_every: int = 1  # env steps per gradient step (the slides: 1)
    double_dqn: bool = False  # Double-DQN targets (van Hasselt 2016)
    n_step: int = 1  # rewards summed per target, γ^n on the bootstrap (Sutton 1988; Rainbow uses 3); 1 = the slides
    error_clip: float = 0.0  # clip y − Q to [−c, c] (Nature DQN uses 1); 0 = plain squared error
    reward_clip: float = 0.0  # learning sees rewards clipped to [−c, c] (DQN papers: 1); 0 = off; scores stay raw
    # distributed (Spark) training
    workers: int = 2  # Spark partitions, one long-running worker task each
    fetch_every: int = 1  # worker env steps between FETCHes of θ
    push_every: int = 1  # gradients summed before a PUSH
    server_timeout: float = 60.0  # seconds a worker waits for the server before exiting
    server_port: int = 0  # parameter-server TCP port on the driver, where workers join (0: any free port)
    server_session_port: int = 0  # its port for the workers' sessions (0: server_port + 1, or any if server_port is 0)
    auth: str = "message"  # "message": MAC every payload; "connection": like spark.authenticate (ddqn.protocol)
    server_threads: int = 1  # driver cores one solver apply may use (bit-identical result; >1 for big nets)
    max_staleness: int = 0  # the server drops a pushed gradient more than K θ versions old (counted "too stale");
    # 0 = off (Gorila discarded stale gradients)
    staleness_lr: bool = False  # the server divides an update's learning rate (not the gradient) by staleness + 1
    dc_lambda: float = 0.0  # DC-ASGD's λ (Zheng et al. 2017): the server applies a stale gradient g as
    # g + λ·g⊙g⊙(θ − θ_fetched), θ_fetched the θ it was computed on; 0 = off
    ps_shards: int = 1  # S: the parameter server's θ, θ⁻ and solver state cut into S slices, one shard process each
    # (ddqn.distributed.shards.server); 1 = one server thread in the driver, as before. Serial training ignores it
    ps_placement: str = "driver"  # where the S > 1 shards run: "driver" (S processes on the driver's host);
    # "executors" (S long-running Spark tasks beside the W workers: W + S task slots; ddqn.distributed.shards.task)
    max_grad_norm: float = 100.0  # the server drops a pushed gradient whose L2 norm exceeds this (per minibatch;
    # honest maxima measured by `make bench-grad-norms`: paper 0.91, small 2.8, tuned 3.1)
    # evaluation, logging, snapshots
    eval_every: int = 5_000  # env steps between greedy evaluations
    eval_episodes: int = 50
    eval_epsilon: float = 0.0  # ε of the evaluation (and play) policy: 0 greedy (Snake); the DQN papers' Atari 0.05
    log_every: int = 1_000  # env steps between metric rows
    snapshot_every: int = 10_000  # env steps between snapshots (distributed: summed over all workers, as eval_every)
    seed: int = 0

    def path(self, name: str) -> Path:
        """Resolve the file field ``name`` (``net``/``solver``): as given (absolute, or relative to the working
        directory), else within the installed package, where ``prototxt/…`` names a shipped file."""
        p = Path(getattr(self, name))
        if p.is_absolute() or p.exists():
            return p
        return PACKAGE_DIR / p

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for YAML/JSON)."""
        return dataclasses.asdict(self)


DEFAULTS = Config()


def _check(cfg: Config, source: str) -> Config:
    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {name}: {why} (got {getattr(cfg, name)!r})")

    positive = ("board_size", "starve_steps", "replay_capacity", "replay_beta_steps", "eps_decay_steps",
                "target_update", "train_every", "eval_every", "eval_episodes", "log_every", "snapshot_every",
                "workers", "fetch_every", "push_every", "server_timeout", "server_threads", "max_grad_norm")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise bad(name, "must be > 0")
    if cfg.board_size < 4:
        raise bad("board_size", "board too small for the snake (needs >= 4)")
    if cfg.replay_warmup < 1 or cfg.replay_warmup > cfg.replay_capacity:
        raise bad("replay_warmup", f"must be in [1, replay_capacity={cfg.replay_capacity}]")
    if cfg.game != "snake":
        from ddqn.game import CUSTOM, game_kind, game_problem  # noqa: PLC0415 - games import this module

        if problem := game_problem(cfg.game):
            raise bad("game", problem)
        for name in ALE_ONLY if game_kind(cfg.game) == CUSTOM else ():
            if getattr(cfg, name) != getattr(DEFAULTS, name):
                raise bad(name, f"applies to ALE games only, not to the Gymnasium env {cfg.game!r}")
    for name in ("frame_skip", "max_episode_steps"):
        if getattr(cfg, name) < 1:
            raise bad(name, "must be >= 1")
    for name in ("noop_max", "reward_clip"):
        if getattr(cfg, name) < 0:
            raise bad(name, "must be >= 0" + (" (0 = off)" if name == "reward_clip" else ""))
    for name in ("eps_start", "eps_end", "eval_epsilon", "sticky_actions", "replay_beta"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise bad(name, "must be in [0, 1]")
    if not 0.0 <= cfg.replay_alpha <= 1.0:
        raise bad("replay_alpha", "must be in [0, 1] (0 = uniform sampling)")
    if not 0.0 < cfg.replay_priority_eps < float("inf"):
        raise bad("replay_priority_eps", "must be a finite number > 0")
    if cfg.max_staleness < 0:
        raise bad("max_staleness", "must be >= 0 (0 = off)")
    if not cfg.dc_lambda >= 0:
        raise bad("dc_lambda", "must be >= 0 (0 = off)")
    if cfg.eps_schedule not in EPS_SCHEDULES:
        raise bad("eps_schedule", "must be " + ", ".join(repr(m) for m in EPS_SCHEDULES))
    if not 0.0 < cfg.eps_ladder_base <= 1.0:
        raise bad("eps_ladder_base", "must be in (0, 1]")
    if cfg.eps_ladder_alpha < 0:
        raise bad("eps_ladder_alpha", "must be >= 0")
    if not 0.0 <= cfg.gamma < 1.0:
        raise bad("gamma", "must be in [0, 1)")
    if not 0 <= cfg.server_port <= 65535:
        raise bad("server_port", "must be a TCP port (0 = any free port)")
    if not 0 <= cfg.server_session_port <= 65535 or (cfg.server_port == 65535 and not cfg.server_session_port):
        raise bad("server_session_port", "must be a TCP port (0 = server_port + 1; any if server_port is 0)")
    if cfg.server_port and cfg.server_session_port == cfg.server_port:
        raise bad("server_session_port", "must differ from server_port")
    if cfg.error_clip < 0:
        raise bad("error_clip", "must be >= 0")
    if cfg.n_step < 1:
        raise bad("n_step", "must be >= 1 (1 = one-step targets)")
    if cfg.auth not in AUTH_MODES:
        raise bad("auth", "must be " + " or ".join(repr(m) for m in AUTH_MODES))
    if cfg.ps_shards < 1:
        raise bad("ps_shards", "must be an integer >= 1 (1 = one parameter server)")
    if cfg.ps_placement not in PS_PLACEMENTS:
        raise bad("ps_placement", "must be " + " or ".join(repr(m) for m in PS_PLACEMENTS))
    if cfg.frame_layout not in FRAME_LAYOUTS:
        raise bad("frame_layout", "must be " + " or ".join(repr(m) for m in FRAME_LAYOUTS))
    if cfg.replay_backend not in ("ram", "lmdb"):
        raise bad("replay_backend", "must be 'ram' or 'lmdb'")
    for name in ("net", "solver"):
        if not cfg.path(name).is_file():
            raise bad(name, "file not found")
    return cfg


def _coerce(name: str, value: Any, typ: Any, source: str) -> Any:
    """Check ``value`` against the field type (ints accepted for floats, nothing else converted)."""
    want = {"int": int, "float": float, "bool": bool, "str": str}.get(str(typ), None)
    if want is None:
        return value
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, bool) or not isinstance(value, want):
        raise ConfigError(f"{source}: {name}: expected {want.__name__}, got {value!r}")
    return value


def make_config(values: dict[str, Any], source: str, base: Config | None = None) -> Config:
    """Build a validated Config from ``base`` (defaults) updated with ``values``."""
    known = {f.name: f.type for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    clean = {k: _coerce(k, v, known[k], source) for k, v in values.items()}
    return _check(dataclasses.replace(base or Config(), **clean), source)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of key: value")
    return data


def config_path(name_or_path: str) -> Path:
    """A config file path, or a named config (``paper``, ``tuned``…) from ``ddqn/configs``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    named = NAMED_CONFIGS / f"{name_or_path}.yaml"
    if not named.exists():
        names = ", ".join(sorted(f.stem for f in NAMED_CONFIGS.glob("*.yaml")))
        raise ConfigError(f"{name_or_path}: no such config file or named config (named: {names})")
    return named


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML (``gamma=0.9``, ``double_dqn=true``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text}: expected key=value")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: value is not valid YAML") from exc


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← config file (or named config) ← ``key=value`` overrides; validated."""
    cfg = Config()
    if name_or_path:
        path = config_path(name_or_path)
        cfg = make_config(_read_yaml(path), str(path), cfg)
    if overrides:
        cfg = make_config(dict(parse_override(o) for o in overrides), "command line", cfg)
    return _check(cfg, "config")


def save_config(cfg: Config, path: Path) -> None:
    """Write ``cfg`` as YAML (every run saves the config it ran with)."""
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# -- the values a run or a result was made with (what a finished run or a result is checked against) ------

RUN_KEYS = ("seed", "workers")  # set per run by a bench, not by its config: never part of the reuse check
PATH_KEYS = ("net", "solver")  # files: compared by their content (``<key>_sha256``), not by where they lie


def config_values(config: str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of ``config`` (with ``key=value`` ``overrides``) a run is trained with, as JSON stores them: every
    key but :data:`RUN_KEYS` (so the evaluation grid, ``ddqn.bench.runs.GRID_KEYS``, is in), and the sha256 (16 hex
    digits) of the net and solver prototxts as ``net_sha256``/``solver_sha256``. A finished run, or a result kept
    from one, counts only if it had the same values (a named config, and the prototxts it names, can change)."""
    cfg = load_config(config, list(overrides))
    values = {k: v for k, v in cfg.to_dict().items() if k not in RUN_KEYS}
    for k in PATH_KEYS:
        values[f"{k}_sha256"] = hashlib.sha256(cfg.path(k).read_bytes()).hexdigest()[:16]
    return json.loads(json.dumps(values, default=str))


def value_differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The keys of ``want`` whose value ``got`` does not have, as ``key got ≠ want``. A file key (:data:`PATH_KEYS`)
    differs only when its content does (both have ``<key>_sha256``), else by its path. A key that ``got`` lacks
    was added to the config after that run, and a new key's default is the behaviour before it (e.g.
    ``replay_alpha`` 0, uniform replay): it differs only when ``want`` has another value than the default."""
    defaults = Config().to_dict()
    out = []
    for k, v in want.items():
        if k not in got and k in defaults and v == json.loads(json.dumps(defaults[k], default=str)):
            continue
        if k.endswith("_sha256") and k[:-len("_sha256")] in PATH_KEYS:
            continue
        h = f"{k}_sha256"
        if k in PATH_KEYS and h in got and h in want:
            if got[h] != want[h]:
                out.append(f"{k} {got.get(k)} ≠ {v}" if got.get(k) != v else f"{h} {got[h]} ≠ {want[h]} ({v} changed)")
        elif got.get(k) != v:
            out.append(f"{k} {got.get(k)} ≠ {v}")
    return out
