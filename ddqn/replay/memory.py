"""Experience replay for DQN with every frame stored once, in RAM or in LMDB.

Layout. The frames x_1, x_2, ... of all episodes, in the order they are seen, go into a ring of
``capacity`` slots, one (H, W) uint8 frame each: frame number g (0, 1, 2, ... over the memory's
life, its *global index*) lives in slot g mod capacity, and the oldest frame is overwritten first.
Per slot the memory keeps the global index of its episode's first frame and, once ``add`` has
stepped from that frame, the action, reward and terminal flag of the transition starting there.
A state φ is the ``history`` frames ending at a frame, stacked by index when sampling; positions
before the episode's first frame repeat that first frame.

Sampleable transitions. The transition starting at frame g is (φ_g, a_g, r_g, φ_{g+1}, terminal_g).
It can be sampled iff ``add`` stepped from frame g (so frame g+1 is the real next frame of the
same episode) and every frame its two states use, max(episode start, g - history + 1) .. g + 1,
is still in the ring. Transitions whose history has been overwritten are excluded, never padded.
The last frame of every episode starts no transition. Truncation (a time limit) is just
``start_episode`` without a terminal ``add``: the truncated episode's last transition
(x_T, a_T, r_T, x_{T+1}) keeps terminal=False and its φ_{T+1} ends at x_{T+1}, its own frame;
the next episode's first frame is never part of it.

Lives (Atari). An "episode" here is a replay segment, which need not be a whole game: when a lost life is
terminal for learning (``life_loss_terminal``), the loss is a terminal ``add`` and a ``start_episode`` at the
frame after it, while the game goes on (:mod:`ddqn.replay.transition` is the one place that decides this).
That frame is then stored twice — as the terminal transition's next frame and as the new segment's first — and
no state stacks frames from before the loss, as in DeepMind's replay.

Multi-step returns (``n_step`` > 1): a sampled transition's reward becomes the discounted sum
r_g + γ·r_{g+1} + … over up to n of its segment's transitions, stopping after a terminal one or where the
segment has no next transition (a truncated or still-open episode's newest frame); its next state is the one
after the last summed step and ``steps`` says how many were summed (γ^steps discounts the bootstrap).

Sampling: ``batch_size`` transitions i.i.d. uniform (with replacement) over the sampleable ones,
from ``numpy.random.default_rng(seed)`` created when the memory is constructed or (LMDB) opened.
The same calls on memories with the same contents and seed give the same batches, in either
storage. A batch also carries each transition's global start index (``index``) and importance weight
(``weights``: all ones when sampling is uniform).

Prioritized replay (``alpha`` > 0; Schaul et al. 2016, "Prioritized Experience Replay", the proportional variant):
every sampleable transition i has a priority p_i and is drawn with probability P(i) = p_i^α / Σ_k p_k^α, i.i.d.
with replacement, by one prefix-sum search per draw in a sum tree (:mod:`ddqn.replay.sumtree`) over the slots, with
uniforms from the same Generator. A new transition gets the largest priority set so far (1.0 before any), so it is
drawn soon; :meth:`~_ReplayBase.update_priorities` sets p_i = |δ_i| + ``priority_eps`` for the transitions of a
batch once their TD errors δ are known. A transition that can no longer be sampled (its start frame overwritten,
or its history: the ``history`` − 1 oldest frames) has priority 0 in the tree from the write that makes it so, and
the search never returns a leaf of priority 0, so it is never drawn. The importance weight of a drawn transition is
w_i = (N·P(i))^−β / max_j w_j over the batch (N: sampleable transitions; Schaul's Algorithm 1); β is an argument of
:meth:`~_ReplayBase.sample`. ``alpha`` = 0 is uniform sampling by the code above, so its batches are the same bit
for bit as a memory without priorities. Priorities live in RAM only: an LMDB memory reopened gives every
sampleable transition the initial priority 1.0 again (and its largest priority restarts at 1.0).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import NamedTuple

import lmdb
import numpy as np

from ddqn.replay.sumtree import SumTree


class Batch(NamedTuple):
    """B transitions: states and next_states (B, history, H, W) uint8, actions (B,) int64,
    rewards (B,) float32 (n-step: the discounted sum), terminals (B,) bool, steps (B,) int64 (rewards summed;
    next_states is that many steps after states), weights (B,) float32 (importance weights; all ones when sampled
    uniformly) and index (B,) int64 (each transition's global start index, for ``update_priorities``). A batch
    made by hand may leave the last two None."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray
    terminals: np.ndarray
    steps: np.ndarray
    weights: np.ndarray | None = None
    index: np.ndarray | None = None


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_config(capacity: int, frame_shape: tuple[int, int], history: int) -> tuple[int, tuple[int, int], int]:
    """Validated (capacity, frame_shape, history); ValueError naming the bad argument."""
    if not _is_int(history) or history < 1:
        raise ValueError(f"history must be a positive integer (frames per state), got {history!r}")
    if not _is_int(capacity) or capacity <= history:
        raise ValueError(f"capacity must be an integer number of frames greater than history={history}, "
                         f"got {capacity!r}")
    try:
        shape = tuple(frame_shape)
    except TypeError:
        shape = ()
    if len(shape) != 2 or not all(_is_int(d) and d > 0 for d in shape):
        raise ValueError(f"frame_shape must be two positive integers (H, W), got {frame_shape!r}")
    return int(capacity), (int(shape[0]), int(shape[1])), int(history)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _check_priorities(alpha: float, priority_eps: float) -> tuple[float, float]:
    """Validated (alpha, priority_eps); ValueError naming the bad argument."""
    if not _is_real(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (0: uniform sampling), got {alpha!r}")
    if not _is_real(priority_eps) or not 0.0 < priority_eps < np.inf:
        raise ValueError(f"priority_eps must be a finite number > 0, got {priority_eps!r}")
    return float(alpha), float(priority_eps)


class _ReplayBase:
    """Ring indexing, episode bookkeeping and sampling (uniform, or by priority when ``alpha`` > 0); subclasses
    provide frame storage."""

    def __init__(self, capacity: int, frame_shape: tuple[int, int], history: int = 4,
                 seed: int | None = None, alpha: float = 0.0, priority_eps: float = 0.01) -> None:
        self.capacity, self.frame_shape, self.history = _check_config(capacity, frame_shape, history)
        self.alpha, self.priority_eps = _check_priorities(alpha, priority_eps)
        n = self.capacity
        self._ep_start = np.zeros(n, np.int64)   # global index of the slot's episode's first frame
        self._action = np.zeros(n, np.int64)     # the transition starting at the slot's frame ...
        self._reward = np.zeros(n, np.float32)
        self._terminal = np.zeros(n, bool)
        self._linked = np.zeros(n, bool)         # ... exists: add() stepped from this frame
        self._n_linked = 0
        self._total = 0        # frames ever written; the newest is global index _total - 1
        self._episode = -1     # global index of the current episode's first frame (-1: none yet)
        self._open = False     # the current episode accepts add() (started, not terminal)
        self._rng = np.random.default_rng(seed)
        # prioritized replay: leaf s holds p^α of the transition starting at slot s's frame, 0 if none is sampleable
        self._tree = SumTree(n) if self.alpha > 0 else None
        self._max_priority = 1.0  # the largest p set so far: a new transition's priority

    # storage hooks -------------------------------------------------------------------------
    def _store(self, slot: int, frame: np.ndarray) -> None:
        raise NotImplementedError

    def _load(self, slots: np.ndarray) -> np.ndarray:
        """Frames at ``slots`` (any int shape S) as an (*S, H, W) uint8 array."""
        raise NotImplementedError

    def _mark(self, slot: int) -> None:
        """The metadata of ``slot`` changed (for persistence)."""

    def _stepped(self) -> None:
        """A public write (start_episode/add) completed; the memory is consistent here."""

    # writing -------------------------------------------------------------------------------
    def _check_frame(self, frame: np.ndarray, name: str) -> None:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != self.frame_shape:
            got = (f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray)
                   else type(frame).__name__)
            raise ValueError(f"{name} must be a uint8 array of shape {self.frame_shape}, got {got}")

    def _push(self, frame: np.ndarray) -> None:
        slot = self._total % self.capacity
        if self._linked[slot]:                   # overwriting the oldest frame drops its transition
            self._linked[slot] = False
            self._n_linked -= 1
        self._ep_start[slot] = self._episode
        self._store(slot, frame)
        self._mark(slot)
        self._total += 1

    def start_episode(self, frame: np.ndarray) -> None:
        """Begin a new episode with its first frame x_1 ((H, W) uint8). Ends (truncates) any open one."""
        self._check_frame(frame, "frame")
        self._episode = self._total
        self._open = True
        self._push(frame)
        self._sync_priorities(None)
        self._stepped()

    def add(self, action: int, reward: float, next_frame: np.ndarray, terminal: bool) -> None:
        """Record one step from the newest frame: action a_t, reward r_t, frame x_{t+1} ((H, W) uint8),
        and whether the episode ended there (death/win; a time limit is not terminal)."""
        if not self._open:
            raise ValueError("add() needs an open episode: call start_episode() first "
                             "(and again after a terminal step)")
        if not _is_int(action) or action < 0:
            raise ValueError(f"action must be a non-negative integer, got {action!r}")
        if not isinstance(reward, (int, float, np.integer, np.floating)) or not np.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward!r}")
        if not isinstance(terminal, (bool, np.bool_)):
            raise ValueError(f"terminal must be a bool, got {terminal!r}")
        self._check_frame(next_frame, "next_frame")
        slot = (self._total - 1) % self.capacity
        self._action[slot], self._reward[slot], self._terminal[slot] = action, reward, terminal
        self._linked[slot] = True
        self._n_linked += 1
        self._mark(slot)
        self._push(next_frame)
        self._open = not terminal
        self._sync_priorities(self._total - 2)
        self._stepped()

    # reading -------------------------------------------------------------------------------
    @property
    def stored_frames(self) -> int:
        """Frames currently held (at most ``capacity``)."""
        return min(self._total, self.capacity)

    def _oldest(self) -> int:
        """Global index of the oldest frame still in the ring."""
        return max(0, self._total - self.capacity)

    def _valid(self, g: np.ndarray) -> np.ndarray:
        """Mask over global indices g (all still stored): a transition starts at g and its history
        is not overwritten."""
        s = g % self.capacity
        first_needed = np.maximum(self._ep_start[s], g - self.history + 1)
        return self._linked[s] & (first_needed >= self._oldest())

    def __len__(self) -> int:
        """Number of transitions that ``sample`` can return."""
        lo = self._oldest()   # only the history - 1 oldest frames can reach before the ring
        tail = np.arange(lo, min(lo + self.history - 1, self._total))
        lost = self._linked[tail % self.capacity] & ~self._valid(tail)
        return self._n_linked - int(np.count_nonzero(lost))

    def _draw(self, batch_size: int, n_valid: int) -> np.ndarray:
        """batch_size global start indices, i.i.d. uniform over the ``n_valid`` valid ones."""
        lo, hi = self._oldest(), self._total - 1        # candidate start frames: lo .. hi - 1
        if 4 * n_valid < hi - lo:                       # sparse: draw from the explicit list
            cand = np.arange(lo, hi)
            cand = cand[self._valid(cand)]
            return cand[self._rng.integers(0, len(cand), size=batch_size)]
        g = self._rng.integers(lo, hi, size=batch_size)  # dense: rejection sampling
        bad = ~self._valid(g)
        while bad.any():
            g[bad] = self._rng.integers(lo, hi, size=int(bad.sum()))
            bad[bad] = ~self._valid(g[bad])
        return g

    # priorities ------------------------------------------------------------------------------
    def _sync_priorities(self, new: int | None) -> None:
        """After a write: the priorities of the transitions it may have changed. Only the newest frame's slot (just
        overwritten: its transition, if any, is gone), the ``history`` − 1 oldest frames (their history may just
        have been overwritten) and ``new`` (the transition ``add`` just linked, at its max priority) can change;
        each gets 0 unless it is sampleable. Keeps: leaf s > 0 iff the transition at slot s can be sampled."""
        if self._tree is None:
            return
        lo = self._oldest()
        g = np.arange(lo, min(lo + self.history - 1, self._total))
        g = np.append(g, self._total - 1)
        keep = self._tree.leaves(g % self.capacity)
        if new is not None:
            g = np.append(g, new)
            keep = np.append(keep, self._max_priority ** self.alpha)
        self._tree.update(g % self.capacity, np.where(self._valid(g), keep, 0.0))

    def _reset_priorities(self) -> None:
        """Every sampleable transition at the initial priority 1.0 (an LMDB memory's contents as opened)."""
        self._max_priority = 1.0
        if self._tree is None or self._total == 0:
            return
        g = np.arange(self._oldest(), self._total)
        self._tree.update(g % self.capacity, self._valid(g).astype(np.float64))

    def _global(self, slots: np.ndarray) -> np.ndarray:
        """Global index of the frame stored in each of ``slots``."""
        lo = self._oldest()
        return lo + (slots - lo) % self.capacity

    def _draw_prioritized(self, batch_size: int, n_valid: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """batch_size global start indices drawn i.i.d. with P(i) = p_i^α / Σ p^α, and their importance weights
        (N·P(i))^−β / max_j w_j (float32), N = ``n_valid``."""
        tree = self._tree
        total = tree.total
        slots = tree.find(self._rng.random(batch_size) * total)
        prob = tree.leaves(slots) / total
        w = (n_valid * prob) ** -beta
        return self._global(slots), (w / w.max()).astype(np.float32)

    def update_priorities(self, index: np.ndarray, td_abs: np.ndarray) -> None:
        """p_i = |δ_i| + ``priority_eps`` for the transitions starting at global indices ``index`` (B,) int, from
        their TD errors ``td_abs`` (B,) finite (the sign is ignored). A transition no longer sampleable (dropped by
        the ring since it was drawn) is skipped; an index named twice takes its last value. Does nothing when
        ``alpha`` is 0 (uniform sampling), beyond checking the arguments."""
        index = np.asarray(index)
        td = np.asarray(td_abs)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index must be a 1-D integer array, got {index.dtype} of shape {index.shape}")
        real = np.issubdtype(td.dtype, np.floating) or np.issubdtype(td.dtype, np.integer)
        if td.shape != index.shape or not real or not np.all(np.isfinite(td)):
            raise ValueError(f"td_abs must be {index.shape} finite numbers, got {td.dtype} of shape {td.shape}")
        if self._tree is None or len(index) == 0:
            return
        g = index.astype(np.int64)
        stored = (g >= self._oldest()) & (g < self._total)
        g, p = g[stored], np.abs(td[stored]).astype(np.float64) + self.priority_eps
        live = self._valid(g)
        if live.any():
            g, p = g[live], p[live]
            self._tree.update(g % self.capacity, p ** self.alpha)
            self._max_priority = max(self._max_priority, float(p.max()))

    def _n_step(self, g: np.ndarray, n: int, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For start frames g (B,): the discounted sum of up to n rewards along each one's segment (float32), the
        number summed (int64) and whether the last summed step was terminal (see the module docstring)."""
        s = g % self.capacity
        ret, done = self._reward[s].copy(), self._terminal[s].copy()
        steps = np.ones(len(g), np.int64)
        going = ~done
        for k in range(1, n):  # transition g+k exists iff its frame (stored: g+k-1 was linked) is linked
            sk = (g + k) % self.capacity
            going &= self._linked[sk]
            ret[going] += np.float32(gamma ** k) * self._reward[sk[going]]
            steps[going] += 1
            done[going] = self._terminal[sk[going]]
            going &= ~self._terminal[sk]
        return ret, steps, done

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 1.0, beta: float = 1.0) -> Batch:
        """``batch_size`` transitions drawn with replacement — uniformly, or by priority when ``alpha`` > 0 with
        importance weights of exponent ``beta`` (ignored when uniform) —, with ``n_step``-step returns discounted
        by ``gamma`` (1: one-step, the rewards as stored); ValueError if fewer are stored."""
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not _is_int(n_step) or n_step < 1:
            raise ValueError(f"n_step must be a positive integer, got {n_step!r}")
        if not _is_real(beta) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
        n = len(self)
        if n < batch_size:
            raise ValueError(f"cannot sample batch_size={batch_size}: the replay memory holds only "
                             f"{n} sampleable transitions")
        if self._tree is None:
            g = self._draw(int(batch_size), n)
            weights = np.ones(len(g), np.float32)
        else:
            g, weights = self._draw_prioritized(int(batch_size), n, float(beta))
        s = g % self.capacity
        start = self._ep_start[s][:, None]
        if n_step == 1:
            offsets = np.arange(1 - self.history, 2)          # frames g-h+1 .. g+1
            frames = self._load(np.maximum(g[:, None] + offsets, start) % self.capacity)
            return Batch(np.ascontiguousarray(frames[:, :-1]), self._action[s], self._reward[s],
                         np.ascontiguousarray(frames[:, 1:]), self._terminal[s], np.ones(len(g), np.int64),
                         weights, g)
        rewards, steps, terminals = self._n_step(g, int(n_step), gamma)
        offsets = np.arange(1 - self.history, 1)              # a state: frames e-h+1 .. e
        ends = np.concatenate([g[:, None], (g + steps)[:, None]], axis=1)[..., None] + offsets
        frames = self._load(np.maximum(ends, start[..., None]) % self.capacity)
        return Batch(np.ascontiguousarray(frames[:, 0]), self._action[s], rewards,
                     np.ascontiguousarray(frames[:, 1]), terminals, steps, weights, g)

    @property
    def metadata_nbytes(self) -> int:
        """Bytes of per-slot metadata held in RAM (≈ 22 × capacity; the sum tree's 16 to 32 × capacity more when
        prioritized)."""
        tree = 0 if self._tree is None else self._tree.tree.nbytes
        return tree + sum(a.nbytes for a in (self._ep_start, self._action, self._reward, self._terminal,
                                             self._linked))


class ReplayMemory(_ReplayBase):
    """Replay memory in RAM: ``frames`` is one (capacity, H, W) uint8 array (see module docstring)."""

    def __init__(self, capacity: int, frame_shape: tuple[int, int], history: int = 4,
                 seed: int | None = None, alpha: float = 0.0, priority_eps: float = 0.01) -> None:
        super().__init__(capacity, frame_shape, history, seed, alpha, priority_eps)
        self.frames = np.zeros((self.capacity, *self.frame_shape), np.uint8)

    def _store(self, slot: int, frame: np.ndarray) -> None:
        self.frames[slot] = frame

    def _load(self, slots: np.ndarray) -> np.ndarray:
        return self.frames[slots]

    def close(self) -> None:
        """Nothing to release (the frames are in RAM); the same call as :meth:`LMDBReplayMemory.close`."""

    @property
    def nbytes(self) -> int:
        """RAM held: frame store (capacity × H × W) plus metadata."""
        return self.frames.nbytes + self.metadata_nbytes


_KEY = struct.Struct(">Q")            # slot number, big-endian so keys sort by slot
_META = struct.Struct("<qqf??")       # ep_start, action, reward, terminal, linked (22 bytes)
_META_DTYPE = np.dtype([("ep_start", "<i8"), ("action", "<i8"), ("reward", "<f4"),
                        ("terminal", "?"), ("linked", "?")])   # the same record, read in bulk
assert _META_DTYPE.itemsize == _META.size
_FORMAT = 1


def _map_size(capacity: int, frame_bytes: int) -> int:
    """LMDB map size (bytes of address space, not disk) for ``capacity`` frames, with headroom."""
    page = 4096
    # Small values sit in leaf pages (+ node header, key, index); large ones take whole overflow pages.
    frame = frame_bytes + 24 if frame_bytes <= 2000 else -(-(frame_bytes + 16) // page) * page
    return capacity * 2 * (frame + 64) + (64 << 20)   # x2: half-full pages, copy-on-write free pages


class LMDBReplayMemory(_ReplayBase):
    """Replay memory backed by LMDB in directory ``path``; same interface and sampling as
    :class:`ReplayMemory`.

    Frames live only in LMDB (one record per slot); the small per-slot metadata is in RAM and
    persisted with them. Writes are buffered and committed in one transaction every
    ``flush_every`` frames, on :meth:`flush` and on :meth:`close` (a crash loses only the
    unflushed tail; a commit is an fsync, which is why steps are not committed one by one).
    Reopening ``path`` with the same capacity, frame_shape and history gives the contents as of
    the last flush, including the open episode (``add`` may continue it); the sampling
    Generator is ``default_rng(seed)`` at open, so a reopened memory samples exactly as a fresh
    :class:`ReplayMemory` with the same contents and seed. Priorities (``alpha`` > 0) are not persisted: a
    reopened memory starts every sampleable transition at priority 1.0, as a fresh :class:`ReplayMemory` filled
    with the same steps. Use as a context manager or call close().
    """

    def __init__(self, path: str | Path, capacity: int, frame_shape: tuple[int, int], history: int = 4,
                 seed: int | None = None, alpha: float = 0.0, priority_eps: float = 0.01, *,
                 flush_every: int = 1000) -> None:
        super().__init__(capacity, frame_shape, history, seed, alpha, priority_eps)
        if not _is_int(flush_every) or flush_every < 1:
            raise ValueError(f"flush_every must be a positive integer, got {flush_every!r}")
        self.path = Path(path)
        self.flush_every = int(flush_every)
        self._pending: dict[int, bytes] = {}   # slot -> frame bytes not yet committed
        self._dirty: set[int] = set()          # slots whose metadata is not yet committed
        self._frame_bytes = self.frame_shape[0] * self.frame_shape[1]
        self.path.mkdir(parents=True, exist_ok=True)
        self._env: lmdb.Environment | None = lmdb.open(
            str(self.path), map_size=_map_size(self.capacity, self._frame_bytes), max_dbs=3,
            readahead=False, meminit=False)
        self._frames_db = self._env.open_db(b"frames")
        self._meta_db = self._env.open_db(b"meta")
        self._info_db = self._env.open_db(b"info")
        try:
            self._open_contents()
        except BaseException:
            self._env.close()
            self._env = None
            raise

    def _config(self) -> dict:
        return {"format": _FORMAT, "capacity": self.capacity, "frame_shape": list(self.frame_shape),
                "history": self.history}

    def _open_contents(self) -> None:
        with self._env.begin(db=self._info_db) as txn:
            raw, state = txn.get(b"config"), txn.get(b"state")
        if raw is None:
            self.flush()
            return
        stored = json.loads(raw)
        if stored != self._config():
            raise ValueError(f"{self.path} holds a replay memory with capacity={stored.get('capacity')}, "
                             f"frame_shape={tuple(stored.get('frame_shape', ()))}, history={stored.get('history')} "
                             f"(format {stored.get('format')}); it was opened with capacity={self.capacity}, "
                             f"frame_shape={self.frame_shape}, history={self.history}")
        st = json.loads(state)
        self._total, self._episode, self._open = st["total"], st["episode"], st["open"]
        with self._env.begin(db=self._meta_db) as txn:
            items = list(txn.cursor().iternext())
        if len(items) != self.stored_frames:
            raise ValueError(f"{self.path}: replay memory is corrupt ({len(items)} metadata records "
                             f"for {self.stored_frames} frames)")
        slots = np.array([_KEY.unpack(k)[0] for k, _ in items], np.int64)
        meta = np.frombuffer(b"".join(v for _, v in items), _META_DTYPE)
        for name, arr in (("ep_start", self._ep_start), ("action", self._action), ("reward", self._reward),
                          ("terminal", self._terminal), ("linked", self._linked)):
            arr[slots] = meta[name]
        self._n_linked = int(np.count_nonzero(self._linked))
        self._reset_priorities()

    def _usable(self) -> lmdb.Environment:
        if self._env is None:
            raise ValueError(f"replay memory {self.path} is closed")
        return self._env

    def _store(self, slot: int, frame: np.ndarray) -> None:
        self._usable()
        self._pending[slot] = frame.tobytes()

    def _mark(self, slot: int) -> None:
        self._dirty.add(slot)

    def _stepped(self) -> None:
        if len(self._pending) >= self.flush_every:
            self.flush()

    def _load(self, slots: np.ndarray) -> np.ndarray:
        env = self._usable()
        uniq, inv = np.unique(slots.ravel(), return_inverse=True)   # read each frame once
        with env.begin(db=self._frames_db, buffers=True) as txn:
            bufs = [self._pending.get(s) or txn.get(_KEY.pack(s)) for s in uniq.tolist()]
            if None in bufs:
                raise ValueError(f"{self.path}: replay memory is corrupt (frame missing in slot "
                                 f"{uniq[bufs.index(None)]})")
            data = np.frombuffer(b"".join(bufs), np.uint8).reshape(len(uniq), *self.frame_shape)
        return data[inv.reshape(-1)].reshape(*slots.shape, *self.frame_shape)

    def flush(self) -> None:
        """Commit pending frames, dirty metadata and the counters in one transaction; a reopened
        memory sees everything flushed."""
        env = self._usable()
        frames = [(_KEY.pack(s), b) for s, b in sorted(self._pending.items())]
        meta = [(_KEY.pack(s), _META.pack(int(self._ep_start[s]), int(self._action[s]), float(self._reward[s]),
                                          bool(self._terminal[s]), bool(self._linked[s])))
                for s in sorted(self._dirty)]
        state = json.dumps({"total": self._total, "episode": self._episode, "open": self._open}).encode()
        while True:
            try:
                with env.begin(write=True) as txn:
                    txn.cursor(db=self._frames_db).putmulti(frames)
                    txn.cursor(db=self._meta_db).putmulti(meta)
                    txn.put(b"config", json.dumps(self._config()).encode(), db=self._info_db)
                    txn.put(b"state", state, db=self._info_db)
                break
            except lmdb.MapFullError:   # estimate too small (unusual page use): grow and retry
                env.set_mapsize(2 * env.info()["map_size"])
        self._pending.clear()
        self._dirty.clear()

    def close(self) -> None:
        """Flush and close the environment (idempotent)."""
        if self._env is not None:
            self.flush()
            self._env.close()
            self._env = None

    def __enter__(self) -> LMDBReplayMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
