"""Replay memory: stacking against a brute-force reference, episode boundaries, truncation, ring
overwrite, uniform seeded sampling, RAM ≡ LMDB, LMDB persistence, argument errors, footprint.

Frame g (global index over the memory's life) encodes g in its pixels, so a sampled state
decodes to the global indices of its frames.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ddqn.replay import memory as replay
from ddqn.replay.memory import Batch, LMDBReplayMemory, ReplayMemory

SHAPE = (5, 6)
REPO = Path(__file__).resolve().parent.parent


def frame(g: int) -> np.ndarray:
    """Frame number g: pixels (0,0),(0,1) hold g in base 256, the rest a g-dependent pattern."""
    f = ((g * 31 + np.arange(SHAPE[0] * SHAPE[1])) % 251).astype(np.uint8).reshape(SHAPE)
    f[0, 0], f[0, 1] = g % 256, g // 256
    return f


def decode(frames: np.ndarray) -> np.ndarray:
    """(..., H, W) frames → (...) global indices; checks every pixel matches the encoding."""
    ids = frames[..., 0, 0].astype(np.int64) + 256 * frames[..., 0, 1].astype(np.int64)
    expect = np.stack([frame(int(g)) for g in ids.ravel()]).reshape(frames.shape)
    assert np.array_equal(frames, expect), "a frame is not the one its index names"
    return ids


def action_of(g: int) -> int:
    return g % 7


def reward_of(g: int) -> float:
    return g * 0.25 - 3.0


# ---------------------------------------------------------------------------- scripted play
@dataclass(frozen=True)
class Scenario:
    name: str
    capacity: int
    history: int
    frames: int
    max_len: int          # steps per episode drawn from 0 .. max_len
    p_terminal: float     # otherwise the episode is truncated


SCENARIOS = [
    Scenario("no_wrap", 500, 4, 300, 30, 0.5),
    Scenario("wrap", 64, 4, 1000, 20, 0.5),
    Scenario("short_episodes_wrap", 37, 4, 500, 3, 0.5),
    Scenario("history1_wrap", 20, 1, 200, 6, 0.7),
    Scenario("history8_wrap", 30, 8, 300, 12, 0.3),
]


def script(sc: Scenario, seed: int = 0) -> list[tuple]:
    """Ops ("start", g) / ("add", g_next, terminal), writing frames 0 .. sc.frames - 1."""
    rng = np.random.default_rng(seed)
    ops: list[tuple] = []
    g = 0
    while g < sc.frames:
        ops.append(("start", g))
        g += 1
        steps = int(rng.integers(0, sc.max_len + 1))
        terminal_end = rng.random() < sc.p_terminal
        for k in range(steps):
            if g >= sc.frames:
                break
            ops.append(("add", g, bool(terminal_end and k == steps - 1)))
            g += 1
    return ops


def apply(mem, op: tuple) -> None:
    if op[0] == "start":
        mem.start_episode(frame(op[1]))
    else:
        g = op[1]   # the step from frame g - 1 to frame g
        mem.add(action_of(g - 1), reward_of(g - 1), frame(g), op[2])


def replay_script(ops: list[tuple]) -> tuple[dict[int, int], dict[int, bool], int]:
    """The script's frames: frame g → its episode's first frame, transition start g → terminal, frame count."""
    ep_start: dict[int, int] = {}
    steps: dict[int, bool] = {}
    total, ep = 0, -1
    for op in ops:
        if op[0] == "start":
            ep = total
        else:
            steps[total - 1] = op[2]
        ep_start[total] = ep
        total += 1
    return ep_start, steps, total


def reference(ops: list[tuple], capacity: int, history: int) -> dict[int, tuple]:
    """Brute force: start frame g → (state ids, action, reward, next-state ids, terminal)."""
    ep_start, steps, total = replay_script(ops)
    oldest = max(0, total - capacity)
    out = {}
    for g, terminal in steps.items():
        state = tuple(max(ep_start[g], g - history + 1 + j) for j in range(history))
        nxt = tuple(max(ep_start[g], g - history + 2 + j) for j in range(history))
        if min(state) >= oldest:
            assert all(ep_start[i] == ep_start[g] for i in state + nxt)
            out[g] = (state, action_of(g), np.float32(reward_of(g)), nxt, terminal)
    return out


def check_batch(batch: Batch, ref: dict[int, tuple], history: int) -> list[int]:
    """Assert every sampled transition equals the reference one; return their start frames."""
    b = len(batch.actions)
    assert batch.states.shape == batch.next_states.shape == (b, history, *SHAPE)
    assert batch.states.dtype == batch.next_states.dtype == np.uint8
    assert (batch.actions.dtype, batch.rewards.dtype, batch.terminals.dtype) == (np.int64, np.float32, bool)
    assert batch.states.flags.c_contiguous and batch.next_states.flags.c_contiguous
    states, nexts = decode(batch.states), decode(batch.next_states)
    starts = []
    for i in range(b):
        g = int(states[i, -1])
        assert g in ref, f"transition from frame {g} should not be sampleable"
        state, action, reward, nxt, terminal = ref[g]
        assert tuple(states[i]) == state and tuple(nexts[i]) == nxt
        assert (batch.actions[i], batch.rewards[i], batch.terminals[i]) == (action, reward, terminal)
        starts.append(g)
    return starts


def filled(sc: Scenario, seed: int | None = 0) -> tuple[ReplayMemory, list[tuple]]:
    ops = script(sc)
    mem = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=seed)
    for op in ops:
        apply(mem, op)
    return mem, ops


def draw(mem, n: int) -> Batch:
    """n transitions sampled in batches of at most len(mem) (sample refuses larger ones)."""
    parts = [mem.sample(min(len(mem), n - i)) for i in range(0, n, len(mem))]
    return Batch(*(np.concatenate(field) for field in zip(*parts)))


def batches_equal(a: Batch, b: Batch) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------- stacking
@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_sampled_transitions_match_brute_force_reference(sc: Scenario) -> None:
    mem, ops = filled(sc)
    ref = reference(ops, sc.capacity, sc.history)
    assert len(mem) == len(ref) > 0
    assert len(mem) <= sc.capacity - 1
    seen: set[int] = set()
    for _ in range(40):
        seen.update(check_batch(mem.sample(len(ref)), ref, sc.history))
    assert seen == set(ref)   # every sampleable transition shows up


def n_step_reference(ops: list[tuple], one_step: dict[int, tuple], n: int, gamma: float, history: int) -> dict:
    """Brute force n-step: start frame g → (state ids, action, return, next-state ids, terminal, steps), walking
    the script's transitions of g's episode until n are summed, one is terminal, or the episode has no next one."""
    ep_start, steps, _ = replay_script(ops)
    out = {}
    for g, (state, action, reward, _, terminal) in one_step.items():
        ret, m = np.float32(reward), 1
        while m < n and not terminal and g + m in steps and ep_start[g + m] == ep_start[g]:
            ret += np.float32(gamma ** m) * np.float32(reward_of(g + m))
            terminal = steps[g + m]
            m += 1
        end = g + m
        nxt = tuple(max(ep_start[g], end - history + 1 + j) for j in range(history))
        out[g] = (state, action, ret, nxt, terminal, m)
    return out


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_n_step_returns_match_brute_force_reference(sc: Scenario, tmp_path: Path) -> None:
    mem, ops = filled(sc)
    ref = n_step_reference(ops, reference(ops, sc.capacity, sc.history), 3, 0.9, sc.history)
    seen: dict[int, int] = {}
    for _ in range(40):
        b = mem.sample(len(ref), n_step=3, gamma=0.9)
        states, nexts = decode(b.states), decode(b.next_states)
        for i in range(len(b.actions)):
            g = int(states[i, -1])
            state, action, ret, nxt, terminal, m = ref[g]
            assert tuple(states[i]) == state and tuple(nexts[i]) == nxt, g
            assert (b.actions[i], b.terminals[i], b.steps[i]) == (action, terminal, m), g
            assert b.rewards[i] == pytest.approx(ret, rel=1e-6), g
            seen[g] = m
    assert set(seen) == set(ref)
    assert {1, 2, 3} <= set(seen.values()) or sc.max_len < 3  # chains cut by ends and by n both occur
    disk = LMDBReplayMemory(tmp_path / "d", sc.capacity, SHAPE, sc.history, seed=5)
    ram = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=5)
    for op in ops:
        apply(disk, op)
        apply(ram, op)
    with disk:
        k = min(16, len(ram))
        assert batches_equal(ram.sample(k, n_step=3, gamma=0.9), disk.sample(k, n_step=3, gamma=0.9))


def test_one_step_sample_is_the_n_step_sample_with_n_1() -> None:
    a, _ = filled(SCENARIOS[1], seed=3)
    b, _ = filled(SCENARIOS[1], seed=3)
    for _ in range(5):
        x, y = a.sample(32), b.sample(32, n_step=1, gamma=0.5)
        assert batches_equal(x, y) and set(x.steps.tolist()) == {1}


def test_episode_start_repeats_first_frame() -> None:
    mem = ReplayMemory(10, SHAPE, 4, seed=0)
    mem.start_episode(frame(0))
    mem.add(2, 1.5, frame(1), False)
    b = mem.sample(1)
    assert decode(b.states)[0].tolist() == [0, 0, 0, 0]
    assert decode(b.next_states)[0].tolist() == [0, 0, 0, 1]
    assert (b.actions[0], b.rewards[0], b.terminals[0]) == (2, np.float32(1.5), False)
    mem.add(3, 0.0, frame(2), False)
    mem.add(3, 0.0, frame(3), False)
    mem.add(3, 0.0, frame(4), False)
    states = {tuple(s) for s in decode(draw(mem, 200).states)}
    assert states == {(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 2), (0, 1, 2, 3)}


def test_no_stacking_across_episode_boundary() -> None:
    mem = ReplayMemory(50, SHAPE, 4, seed=1)
    mem.start_episode(frame(0))
    for g in (1, 2, 3):
        mem.add(0, 0.0, frame(g), g == 3)
    mem.start_episode(frame(4))
    for g in (5, 6):
        mem.add(0, 0.0, frame(g), False)
    b = draw(mem, 300)
    rows = {tuple(s) for s in decode(b.states)} | {tuple(s) for s in decode(b.next_states)}
    assert (4, 4, 4, 4) in rows and (4, 4, 4, 5) in rows and (4, 4, 5, 6) in rows
    for row in rows:
        assert all(i < 4 for i in row) or all(i >= 4 for i in row), row


# ---------------------------------------------------------------------------- terminal / truncation
def test_terminal_flags_and_truncated_episode() -> None:
    mem = ReplayMemory(50, SHAPE, 2, seed=2)
    mem.start_episode(frame(0))
    mem.add(1, 1.0, frame(1), False)
    mem.add(1, 1.0, frame(2), False)      # time limit here: truncated, not terminal
    mem.start_episode(frame(3))
    mem.add(1, -1.0, frame(4), True)      # death
    mem.start_episode(frame(5))
    assert len(mem) == 3
    b = draw(mem, 300)
    got = {(tuple(s), tuple(n), bool(t)) for s, n, t in
           zip(decode(b.states), decode(b.next_states), b.terminals)}
    assert got == {((0, 0), (0, 1), False),
                   ((0, 1), (1, 2), False),   # truncated episode's last step: own next state
                   ((3, 3), (3, 4), True)}
    # no transition starts at an episode's last frame, nor uses the next episode's first frame
    assert not any(n[-1] in (3, 5) and s[-1] in (2, 4) for s, n, _ in got)


def test_add_after_terminal_needs_start_episode() -> None:
    mem = ReplayMemory(10, SHAPE, 4)
    with pytest.raises(ValueError, match="start_episode"):
        mem.add(0, 0.0, frame(0), False)
    mem.start_episode(frame(0))
    mem.add(0, 0.0, frame(1), True)
    with pytest.raises(ValueError, match="start_episode"):
        mem.add(0, 0.0, frame(2), False)


# ---------------------------------------------------------------------------- ring
def test_ring_overwrite_excludes_transitions_with_lost_history() -> None:
    mem = ReplayMemory(10, SHAPE, 4, seed=3)
    mem.start_episode(frame(0))
    for g in range(1, 25):
        mem.add(action_of(g - 1), reward_of(g - 1), frame(g), False)
    # frames 15..24 stored; φ_g needs g-3..g, so g = 18..23 (24 has no next frame)
    assert mem.stored_frames == 10 and len(mem) == 6
    starts = set(decode(draw(mem, 500).states)[:, -1].tolist())
    assert starts == set(range(18, 24))


def test_ring_keeps_padded_transitions_while_episode_start_is_stored() -> None:
    mem = ReplayMemory(6, SHAPE, 4, seed=4)
    mem.start_episode(frame(0))
    mem.add(0, 0.0, frame(1), True)
    mem.start_episode(frame(2))           # episode 2 starts at global 2
    for g in range(3, 8):
        mem.add(0, 0.0, frame(g), False)
    # frames 2..7 stored; transitions 2..6 all have their (padded) history
    assert len(mem) == 5
    mem.add(0, 0.0, frame(8), False)      # overwrites frame 2, episode 2's first frame
    # now 3..8 stored; 3, 4 and 5 would need frame 2 → excluded; 6, 7 remain
    assert len(mem) == 2
    assert set(decode(draw(mem, 100).states)[:, -1].tolist()) == {6, 7}


# ---------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("max_len", [12, 0], ids=["dense", "sparse"])
def test_sampling_is_uniform(max_len: int) -> None:
    if max_len:   # mostly long episodes: rejection sampling
        sc = Scenario("uniform", 120, 4, 400, max_len, 0.5)
        ops = script(sc, seed=5)
    else:         # many empty episodes (resets): the explicit candidate list is used
        sc = Scenario("uniform_sparse", 200, 4, 0, 0, 0.0)
        ops = [("start", g) for g in range(150)] + [("start", 150)] + [("add", g, False) for g in range(151, 181)]
    mem = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=6)
    for op in ops:
        apply(mem, op)
    ref = reference(ops, sc.capacity, sc.history)
    n = len(ref)
    assert len(mem) == n
    if not max_len:
        assert 4 * n < mem.stored_frames - 1
    draws = 400 * n
    starts = np.concatenate([check_batch(mem.sample(n), ref, sc.history) for _ in range(8)]
                            + [decode(draw(mem, draws).states)[:, -1]])
    counts = np.array([np.count_nonzero(starts[8 * n:] == g) for g in sorted(ref)])
    assert counts.sum() == draws
    expected = draws / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = n - 1
    assert chi2 < df + 6 * np.sqrt(2 * df), (chi2, df)


def test_same_seed_same_batches_other_seed_differs() -> None:
    sc = SCENARIOS[1]
    a, _ = filled(sc, seed=11)
    b, _ = filled(sc, seed=11)
    c, _ = filled(sc, seed=12)
    for _ in range(5):
        ba, bb, bc = a.sample(32), b.sample(32), c.sample(32)
        assert batches_equal(ba, bb)
    assert not batches_equal(ba, bc)


def test_sample_errors() -> None:
    mem = ReplayMemory(10, SHAPE, 4)
    with pytest.raises(ValueError, match="holds only 0"):
        mem.sample(1)
    mem.start_episode(frame(0))
    mem.add(0, 0.0, frame(1), False)
    with pytest.raises(ValueError, match="batch_size=2.*only 1"):
        mem.sample(2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            mem.sample(bad)
    assert len(mem.sample(1).actions) == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_step"):
            mem.sample(1, n_step=bad)


# ---------------------------------------------------------------------------- RAM ≡ LMDB
@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_ram_and_lmdb_give_identical_batches(sc: Scenario, tmp_path: Path) -> None:
    ram = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=7)
    with LMDBReplayMemory(tmp_path / "db", sc.capacity, SHAPE, sc.history, seed=7, flush_every=13) as disk:
        compared = 0
        for i, op in enumerate(script(sc)):
            apply(ram, op)
            apply(disk, op)
            assert len(ram) == len(disk)
            if i % 17 == 0 and len(ram) >= 8:
                assert batches_equal(ram.sample(8), disk.sample(8))
                compared += 1
        assert compared > 5
        assert batches_equal(draw(ram, 256), draw(disk, 256))


def test_lmdb_persists_across_close_and_reopen(tmp_path: Path) -> None:
    sc = SCENARIOS[1]
    ops = script(sc)
    half = len(ops) // 2
    path = tmp_path / "db"
    with LMDBReplayMemory(path, sc.capacity, SHAPE, sc.history, seed=1, flush_every=10_000) as disk:
        for op in ops[:half]:
            apply(disk, op)
        disk.sample(16)   # consumes the generator; reopening reseeds it
    assert (path / "data.mdb").stat().st_size >= sc.capacity * SHAPE[0] * SHAPE[1]
    ram = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=9)
    for op in ops[:half]:
        apply(ram, op)
    with LMDBReplayMemory(path, sc.capacity, SHAPE, sc.history, seed=9) as disk:
        assert len(disk) == len(ram) and disk.stored_frames == ram.stored_frames
        assert batches_equal(draw(ram, 64), draw(disk, 64))
        for op in ops[half:]:   # continues the open episode exactly as the RAM memory does
            apply(ram, op)
            apply(disk, op)
        assert batches_equal(draw(ram, 64), draw(disk, 64))


def test_lmdb_reopen_sees_flushed_writes_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "db"
    code = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_replay import frame, SHAPE
from ddqn.replay.memory import LMDBReplayMemory
m = LMDBReplayMemory({str(path)!r}, 20, SHAPE, 4, flush_every=1000)
m.start_episode(frame(0))
for g in range(1, 8):
    m.add(0, 0.0, frame(g), False)
m.flush()
for g in range(8, 12):
    m.add(0, 0.0, frame(g), False)
os._exit(0)   # no close(): the last 4 steps are lost
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    with LMDBReplayMemory(path, 20, SHAPE, 4, seed=0) as disk:
        assert disk.stored_frames == 8 and len(disk) == 7
        assert set(decode(draw(disk, 200).states)[:, -1].tolist()) == set(range(7))
        disk.add(0, 0.0, frame(8), True)   # the episode is still open
        assert len(disk) == 8


@pytest.mark.parametrize("kwargs", [dict(capacity=21), dict(frame_shape=(6, 5)), dict(history=3)])
def test_lmdb_reopen_with_other_config_fails(tmp_path: Path, kwargs: dict) -> None:
    args = dict(capacity=20, frame_shape=SHAPE, history=4)
    with LMDBReplayMemory(tmp_path, **args) as disk:
        disk.start_episode(frame(0))
    with pytest.raises(ValueError, match="holds a replay memory with capacity=20, frame_shape=\\(5, 6\\), history=4"):
        LMDBReplayMemory(tmp_path, **{**args, **kwargs})
    with LMDBReplayMemory(tmp_path, **args) as disk:   # the failed open left it usable
        assert disk.stored_frames == 1


def test_lmdb_closed_memory_refuses_use(tmp_path: Path) -> None:
    disk = LMDBReplayMemory(tmp_path, 20, SHAPE, 4)
    disk.start_episode(frame(0))
    disk.add(0, 0.0, frame(1), False)
    disk.close()
    disk.close()
    with pytest.raises(ValueError, match="closed"):
        disk.sample(1)
    with pytest.raises(ValueError, match="closed"):
        disk.start_episode(frame(2))


def test_lmdb_grows_its_map_when_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "_map_size", lambda capacity, frame_bytes: 1 << 16)
    big = (64, 64)
    with LMDBReplayMemory(tmp_path, 200, big, 4, seed=0, flush_every=50) as disk:
        disk.start_episode(np.full(big, 0, np.uint8))
        for g in range(1, 200):
            disk.add(0, 0.0, np.full(big, g % 256, np.uint8), False)
        assert disk.sample(4).states.shape == (4, 4, *big)
    with LMDBReplayMemory(tmp_path, 200, big, 4) as disk:
        assert len(disk) == 199


# ---------------------------------------------------------------------------- arguments, footprint
@pytest.mark.parametrize("args, name", [
    ((4, SHAPE, 4), "capacity"), ((0, SHAPE, 4), "capacity"), ((10.0, SHAPE, 4), "capacity"),
    ((10, SHAPE, 0), "history"), ((10, SHAPE, 2.0), "history"),
    ((10, (0, 6), 4), "frame_shape"), ((10, (5,), 4), "frame_shape"), ((10, 5, 4), "frame_shape"),
    ((10, (5, 6, 1), 4), "frame_shape"), ((10, (5, -6), 4), "frame_shape"),
])
def test_constructor_rejects_bad_arguments(args: tuple, name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"^{name} must"):
        ReplayMemory(*args)
    with pytest.raises(ValueError, match=f"^{name} must"):
        LMDBReplayMemory(tmp_path, *args)
    with pytest.raises(ValueError, match="^flush_every must"):
        LMDBReplayMemory(tmp_path, 10, SHAPE, 4, flush_every=0)


def test_bad_frames_and_steps_are_rejected() -> None:
    mem = ReplayMemory(10, SHAPE, 4)
    for bad in (frame(0).astype(np.float32), frame(0).T, frame(0)[None], frame(0).tolist()):
        with pytest.raises(ValueError, match="^frame must be a uint8 array of shape \\(5, 6\\)"):
            mem.start_episode(bad)
    mem.start_episode(frame(0))
    with pytest.raises(ValueError, match="^next_frame must"):
        mem.add(0, 0.0, frame(1).astype(np.int16), False)
    with pytest.raises(ValueError, match="^action must"):
        mem.add(-1, 0.0, frame(1), False)
    with pytest.raises(ValueError, match="^reward must"):
        mem.add(0, float("nan"), frame(1), False)
    with pytest.raises(ValueError, match="^terminal must"):
        mem.add(0, 0.0, frame(1), None)
    assert mem.stored_frames == 1 and len(mem) == 0   # nothing half-written
    mem.add(np.int64(1), np.float32(0.5), frame(1), np.bool_(False))
    assert len(mem) == 1


def test_ram_footprint_is_one_copy_of_each_frame() -> None:
    capacity, shape = 30_000, (16, 16)
    mem = ReplayMemory(capacity, shape, 4)
    assert mem.frames.dtype == np.uint8 and mem.frames.shape == (capacity, *shape)
    assert mem.frames.nbytes == capacity * 16 * 16
    assert mem.nbytes == mem.frames.nbytes + mem.metadata_nbytes
    assert mem.metadata_nbytes <= 24 * capacity   # ≈ 22 bytes per slot, nothing per state
