"""Snake rules, frames, Gymnasium API, SnakeBatch (vs SnakeEnv), FrameStack and argument checks."""
from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ddqn.config import make_config
from ddqn.dqn.evaluation import ENDINGS, ending_codes, endings_summary, random_score
from ddqn.game import snake
from ddqn.game.frames import FrameStack
from ddqn.game.snake import (
    APPLE,
    BODY,
    CELL_APPLE,
    CELL_BODY,
    CELL_EMPTY,
    CELL_HEAD,
    EAST,
    HEAD,
    NORTH,
    SOUTH,
    WALL,
    WEST,
    SnakeBatch,
    SnakeEnv,
    game_seeds,
    render_frame,
)

# A 4x4 serpentine covering 15 cells, head (3,1) heading west; the only empty cell is (3,0).
SERPENTINE = [(3, 1), (3, 2), (3, 3), (2, 3), (2, 2), (2, 1), (2, 0), (1, 0), (1, 1), (1, 2), (1, 3),
              (0, 3), (0, 2), (0, 1), (0, 0)]
SQUARE = [(2, 2), (2, 3), (3, 3), (3, 2)]  # head (2,2) heading west, tail (3,2) just south of the head
SQUARE_LOOP = [SOUTH, EAST, NORTH, WEST]  # chases its own tail around the 2x2 square forever


def body_cells(env: SnakeEnv) -> list[tuple[int, int]]:
    return list(env.body)


def test_start_state():
    env = SnakeEnv(size=10)
    obs, info = env.reset(seed=3)
    assert body_cells(env) == [(5, 5), (5, 4)] and env.heading == EAST
    assert info == {"score": 0, "death": False, "wall": False, "starved": False, "win": False}
    assert (env.board == CELL_APPLE).sum() == 1 and (env.board == CELL_HEAD).sum() == 1
    assert (env.board == CELL_BODY).sum() == 1
    assert obs.shape == (16, 16) and obs.dtype == np.uint8
    odd = SnakeEnv(size=7)
    odd.reset(seed=0)
    assert body_cells(odd) == [(3, 3), (3, 2)]


def test_apple_is_uniform_over_empty_cells():
    env = SnakeEnv(size=4)
    seen = set()
    for s in range(300):
        env.reset(seed=s)
        seen.add(tuple(np.argwhere(env.board == CELL_APPLE)[0]))
    assert seen == {(r, c) for r in range(4) for c in range(4)} - {(2, 2), (2, 1)}


def test_reverse_into_neck_keeps_heading():
    env = SnakeEnv(size=10)
    env.reset(seed=0)
    env.set_state([(5, 5), (5, 4)], apple=(0, 0))
    _, reward, term, trunc, _ = env.step(WEST)
    assert body_cells(env) == [(5, 6), (5, 5)] and env.heading == EAST
    assert (reward, term, trunc) == (0.0, False, False)
    env.step(NORTH)
    env.step(SOUTH)  # reversal again: keeps going north
    assert body_cells(env) == [(3, 6), (4, 6)] and env.heading == NORTH


def test_eating_grows_scores_and_moves_apple():
    env = SnakeEnv(size=10)
    env.reset(seed=0)
    env.set_state([(5, 5), (5, 4)], apple=(5, 6))
    _, reward, term, trunc, info = env.step(EAST)
    assert reward == 1.0 and not term and not trunc and info["score"] == 1
    assert body_cells(env) == [(5, 6), (5, 5), (5, 4)]  # tail stayed put
    apples = np.argwhere(env.board == CELL_APPLE)
    assert len(apples) == 1 and tuple(apples[0]) not in env.body
    _, reward, *_ = env.step(NORTH)
    assert reward == 0.0 and body_cells(env) == [(4, 6), (5, 6), (5, 5)]


def test_wall_death():
    env = SnakeEnv(size=10)
    env.reset(seed=0)
    env.set_state([(5, 8), (5, 7)], apple=(0, 0))
    before = env.board_frame()
    env.step(EAST)
    obs, reward, term, trunc, info = env.step(EAST)
    assert (reward, term, trunc) == (-1.0, True, False)
    assert info["death"] and info["wall"] and not info["starved"] and not info["win"]
    assert body_cells(env) == [(5, 9), (5, 8)]  # board left as before the fatal move
    assert not np.array_equal(obs, before)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(EAST)


def test_self_collision_death():
    env = SnakeEnv(size=6)
    env.reset(seed=0)
    env.set_state([(2, 2), (2, 3), (3, 3), (3, 2), (3, 1)], apple=(0, 0))  # heading west
    _, reward, term, _, info = env.step(SOUTH)  # (3,2) is body, not the tail (3,1)
    assert (reward, term, info["death"], info["wall"]) == (-1.0, True, True, False)  # into its body


def test_moving_into_vacating_tail_is_legal():
    env = SnakeEnv(size=6, max_steps_without_apple=None)
    env.reset(seed=0)
    env.set_state(SQUARE, apple=(0, 0))
    for t in range(40):
        _, reward, term, trunc, _ = env.step(SQUARE_LOOP[t % 4])
        assert (reward, term, trunc) == (0.0, False, False)
        assert len(env.body) == 4
    assert body_cells(env) == SQUARE


def test_starvation_truncates():
    env = SnakeEnv(size=6, max_steps_without_apple=10)
    env.reset(seed=0)
    env.set_state(SQUARE, apple=(0, 0))
    for t in range(10):
        _, reward, term, trunc, info = env.step(SQUARE_LOOP[t % 4])
        assert not term and trunc == (t == 9)
    assert info == {"score": 0, "death": False, "wall": False, "starved": True, "win": False}
    assert SnakeEnv(size=6).max_steps == 4 * 36


def test_eating_resets_starvation_counter():
    env = SnakeEnv(size=10, max_steps_without_apple=3)
    env.reset(seed=0)
    env.set_state([(5, 5), (5, 4)], apple=(5, 7))
    _, _, _, trunc1, _ = env.step(EAST)
    _, r, _, trunc2, _ = env.step(EAST)  # eats after 1 empty step
    assert r == 1.0 and not trunc1 and not trunc2 and env.steps_since_apple == 0


def test_win_on_filled_tiny_board():
    env = SnakeEnv(size=4)
    env.reset(seed=0)
    env.set_state(SERPENTINE, apple=(3, 0), score=7)
    obs, reward, term, trunc, info = env.step(WEST)
    assert (reward, term, trunc) == (1.0, True, False)
    assert info == {"score": 8, "death": False, "wall": False, "starved": False, "win": True}
    assert (env.board == CELL_EMPTY).sum() == 0 and len(env.body) == 16
    assert set(np.unique(obs)) == {BODY, HEAD}


def test_frame_values_and_paper_look():
    env = SnakeEnv(size=16, frame_size=16)
    obs, _ = env.reset(seed=1)
    assert set(np.unique(obs)) == {0, BODY, HEAD, APPLE} and (HEAD, BODY, APPLE) == (100, 200, 255)
    assert obs[8, 8] == HEAD and obs[8, 7] == BODY
    paper = SnakeEnv(size=16, frame_size=16, paper_look=True)
    pobs, _ = paper.reset(seed=1)
    assert set(np.unique(pobs)) == {0, BODY, APPLE} and pobs[8, 8] == BODY
    assert np.array_equal(np.where(obs == HEAD, BODY, obs), pobs)


@pytest.mark.parametrize("n,f", [(10, 16), (10, 7), (4, 16), (16, 32), (10, 10), (5, 1)])
def test_nearest_neighbour_scaling(n, f):
    board = np.random.default_rng(n * 100 + f).integers(0, 4, (n, n)).astype(np.int8)
    frame = render_frame(board, f)
    assert frame.shape == (f, f) and frame.dtype == np.uint8
    table = np.array([0, BODY, HEAD, APPLE])
    for i in range(f):
        for j in range(f):
            assert frame[i, j] == table[board[i * n // f, j * n // f]]
    batch = np.stack([board, board[::-1]])
    assert np.array_equal(render_frame(batch, f)[1], render_frame(board[::-1], f))


def test_integer_upscaling_is_blocks():
    board = np.array([[0, 1, 2, 3]] * 4, np.int8)
    frame = render_frame(board, 8)
    assert np.array_equal(frame, np.kron(np.array([[0, BODY, HEAD, APPLE]] * 4), np.ones((2, 2))))


@pytest.mark.parametrize("n,f,k", [(10, 16, 1), (4, 16, 2), (6, 8, 1), (5, 21, 3)])
def test_cells_layout_is_square_blocks_inside_a_wall(n, f, k):
    """Every cell k×k pixels, the board centred, all other pixels wall; the env and the renderer agree."""
    board = np.random.default_rng(n + f).integers(0, 4, (n, n)).astype(np.int8)
    frame = render_frame(board, f, layout="cells")
    off = (f - k * n) // 2
    expect = np.full((f, f), WALL, np.uint8)
    expect[off:off + k * n, off:off + k * n] = np.kron(np.array([0, BODY, HEAD, APPLE])[board], np.ones((k, k)))
    assert np.array_equal(frame, expect) and off >= k  # a wall at least one cell thick on each side
    env = SnakeEnv(size=n, frame_size=f, layout="cells")
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs, render_frame(env.board, f, layout="cells"))
    assert np.array_equal(env.reset(seed=0)[0], obs)


def test_cells_layout_needs_room_for_the_wall():
    with pytest.raises(ValueError, match="at least 12 pixels, got 11"):
        SnakeEnv(size=10, frame_size=11, layout="cells")
    with pytest.raises(ValueError, match="layout"):
        SnakeBatch(2, size=10, layout="tiled")


def run_env(seed: int, actions: list[int], size: int = 6) -> list[np.ndarray]:
    env = SnakeEnv(size=size)
    frames = [env.reset(seed=seed)[0]]
    for a in actions:
        obs, _, term, trunc, _ = env.step(a)
        frames.append(obs)
        if term or trunc:
            frames.append(env.reset()[0])
    return frames


def test_determinism_with_seeds():
    actions = np.random.default_rng(0).integers(0, 4, 200).tolist()
    a, b = run_env(5, actions), run_env(5, actions)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    others = [run_env(s, actions)[0] for s in range(6, 12)]
    assert any(not np.array_equal(a[0], o) for o in others)


def test_render_modes():
    env = SnakeEnv(size=5, render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (80, 80, 3) and img.dtype == np.uint8 and len(np.unique(img.reshape(-1, 3), axis=0)) == 4
    text = SnakeEnv(size=5, render_mode="ansi")
    text.reset(seed=0)
    lines = text.render().splitlines()
    assert lines[0] == lines[6] == "#" * 7 and lines[3][:4] == "#.o@" and len(lines) == 8
    assert sum(line.count("*") for line in lines) == 1 and lines[-1] == "score 0"


def test_gymnasium_registration_and_env_checker():
    env = gymnasium.make("ddqn/Snake-v0", size=6)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (16, 16) and env.unwrapped.size == 6
    snake._register()  # a second registration is a no-op
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gymnasium.make("ddqn/Snake-v0", size=6, render_mode="rgb_array").unwrapped)
    with warnings.catch_warnings():  # a bare SnakeEnv has no spec, so only that warning is allowed
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*not having a spec")
        check_env(SnakeEnv())


def compare_batch_with_envs(num_envs: int, seed: int, steps: int, size: int, max_steps: int,
                            layout: str = "scaled") -> dict[str, int]:
    """Step a SnakeBatch and one SnakeEnv per game with the same actions; all outputs must agree."""
    batch = SnakeBatch(num_envs, size=size, frame_size=16, max_steps_without_apple=max_steps, layout=layout)
    envs = [SnakeEnv(size=size, frame_size=16, max_steps_without_apple=max_steps, layout=layout)
            for _ in range(num_envs)]
    frames = batch.reset(seed=seed)
    for i, s in enumerate(game_seeds(seed, num_envs)):
        assert np.array_equal(frames[i], envs[i].reset(seed=s)[0])
    rng = np.random.default_rng(seed)
    counts = {"eat": 0, "death": 0, "wall": 0, "starved": 0}
    for _ in range(steps):
        actions = rng.integers(0, 4, num_envs)
        frames, rewards, term, trunc, info = batch.step(actions)
        assert rewards.dtype == np.float32 and frames.dtype == np.uint8
        for i, env in enumerate(envs):
            obs, r, t, tr, inf = env.step(actions[i])
            assert (r, t, tr) == (rewards[i], term[i], trunc[i])
            assert {k: inf[k] for k in ("score", "death", "wall", "starved", "win")} == \
                {k: info[k][i] for k in ("score", "death", "wall", "starved", "win")}
            if t or tr:
                assert np.array_equal(info["final_frame"][i], obs)
                obs, _ = env.reset()
            assert np.array_equal(frames[i], obs)
        counts["eat"] += int((rewards > 0).sum())
        counts["death"] += int(info["death"].sum())
        counts["starved"] += int(info["starved"].sum())
        counts["wall"] += int(info["wall"].sum())
    return counts


def test_batch_of_one_matches_env():
    counts = compare_batch_with_envs(1, seed=11, steps=400, size=5, max_steps=25)
    assert counts["eat"] > 0 and counts["death"] > 0


@pytest.mark.parametrize("layout", ["scaled", "cells"])
def test_batch_matches_envs_game_by_game(layout):
    counts = compare_batch_with_envs(8, seed=3, steps=300, size=5, max_steps=12, layout=layout)
    assert min(counts.values()) > 0, counts  # apples, deaths and starvations all happened


def test_batch_tail_chasing_and_win():
    batch = SnakeBatch(3, size=4, max_steps_without_apple=None)
    start = batch.reset(seed=0)
    batch.set_game(0, SERPENTINE, apple=(3, 0), score=5)
    batch.set_game(1, SQUARE, apple=(0, 0))
    for t in range(12):
        frames, rewards, term, trunc, info = batch.step(np.array([WEST, SQUARE_LOOP[t % 4], NORTH]))
        if t == 0:
            assert term[0] and info["win"][0] and rewards[0] == 1.0 and info["score"][0] == 6
            assert set(np.unique(info["final_frame"][0])) == {BODY, HEAD}
            no_apple = [np.where(x == APPLE, 0, x) for x in (frames[0], start[0])]
            assert np.array_equal(*no_apple)  # restarted: same snake as a fresh game
        assert not term[1] and rewards[1] == 0.0 and batch.length[1] == 4


def test_batch_autoreset_semantics():
    batch = SnakeBatch(4, size=10)
    batch.reset(seed=1)
    for i in range(3):
        batch.set_game(i, [(5, 5 + i), (5, 4 + i)], apple=(0, 0), score=i)
    batch.set_game(3, [(5, 5), (5, 4)], apple=(9, 9))
    east = np.full(4, EAST)
    for _ in range(2):
        frames, rewards, term, trunc, info = batch.step(east)
    assert list(term) == [False, False, False, False]
    last = frames.copy()
    frames, rewards, term, trunc, info = batch.step(east)  # game 2 hits the wall at column 10
    assert list(term) == [False, False, True, False] and not trunc.any()
    assert rewards.tolist() == [0.0, 0.0, -1.0, 0.0] and info["death"].tolist() == [False, False, True, False]
    assert info["score"][2] == 2 and batch.score[2] == 0 and batch.length[2] == 2
    assert np.array_equal(info["final_frame"][2], last[2])  # terminal frame = board before the fatal move
    assert np.array_equal(frames[2], batch.frames()[2])
    assert (frames[2] == HEAD).sum() == 4 and frames[2][8, 8] == HEAD  # new episode: head back in the middle
    assert np.array_equal(info["final_frame"][[0, 1, 3]], frames[[0, 1, 3]])


def test_batch_seeding_is_reproducible():
    a, b = SnakeBatch(16, size=8), SnakeBatch(16, size=8)
    fa, fb = a.reset(seed=9), b.reset(seed=9)
    rng = np.random.default_rng(0)
    for _ in range(100):
        act = rng.integers(0, 4, 16)
        fa, fb = a.step(act)[0], b.step(act)[0]
        assert np.array_equal(fa, fb)
    assert not np.array_equal(SnakeBatch(16, size=8).reset(seed=10), SnakeBatch(16, size=8).reset(seed=9))


def test_batch_rejects_bad_actions_and_unreset_use():
    batch = SnakeBatch(2, size=5)
    with pytest.raises(RuntimeError, match="reset"):
        batch.step(np.array([0, 0]))
    batch.reset(seed=0)
    for bad in (np.array([0]), np.array([0, 4]), np.array([0.0, 1.0]), np.array([-1, 0])):
        with pytest.raises(ValueError, match="actions"):
            batch.step(bad)


def test_random_policy_score():
    cfg = make_config({"board_size": 6}, "test")
    s1 = random_score(cfg, 16, episodes=50, seed=0, num_envs=16)
    assert s1 == random_score(cfg, 16, episodes=50, seed=0, num_envs=16)
    assert 0.0 <= s1 < 3.0
    assert random_score(cfg, 16, episodes=3, seed=1, num_envs=64) >= 0.0


def test_frame_stack():
    fs = FrameStack(history=4)
    f = [np.full((3, 3), v, np.uint8) for v in range(6)]
    with pytest.raises(RuntimeError):
        fs.push(f[0])
    s = fs.reset(f[0])
    assert s.shape == (4, 3, 3) and s.dtype == np.uint8 and (s == 0).all()
    for v in range(1, 6):
        s = fs.push(f[v])
    assert [int(x[0, 0]) for x in s] == [2, 3, 4, 5]
    s[:] = 99  # a returned state is a copy
    assert [int(x[0, 0]) for x in fs.push(f[0])] == [3, 4, 5, 0]
    with pytest.raises(ValueError):
        fs.push(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="history"):
        FrameStack(0)


@pytest.mark.parametrize("kwargs,name", [
    ({"size": 3}, "size"), ({"size": 4.5}, "size"), ({"frame_size": 0}, "frame_size"),
    ({"max_steps_without_apple": 0}, "max_steps_without_apple"),
    ({"max_steps_without_apple": -5}, "max_steps_without_apple"),
    ({"max_steps_without_apple": "forever"}, "max_steps_without_apple"),
    ({"render_mode": "human"}, "render_mode"),
])
def test_bad_constructor_args(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        SnakeEnv(**kwargs)
    if name != "render_mode":
        with pytest.raises(ValueError, match=f"^{name} "):
            SnakeBatch(2, **kwargs)


def test_bad_num_envs_and_action():
    with pytest.raises(ValueError, match="^num_envs "):
        SnakeBatch(0)
    env = SnakeEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(4)
    with pytest.raises(TypeError):
        env.step(1.5)


def test_endings_name_how_each_game_ended():
    """Snake's info tells a wall from the body, starving and a win; a game without those keys ends in a game over
    (terminated) or at the step cap (truncated). The summary counts each ending's games and their mean score."""
    t, f = True, False
    info = {"death": np.array([t, t, f, f, f, f]), "wall": np.array([t, f, f, f, f, f]),
            "starved": np.array([f, f, t, f, f, f]), "win": np.array([f, f, f, t, f, f])}
    terminated, truncated = np.array([t, t, f, t, t, f]), np.array([f, f, t, f, f, t])
    assert [ENDINGS[c] for c in ending_codes(terminated, truncated, info)] == list(ENDINGS)
    assert [ENDINGS[c] for c in ending_codes(terminated, truncated, {})] == \
        ["game over", "game over", "step cap", "game over", "game over", "step cap"]
    summary = endings_summary(np.array([3, 5, 7, 16]), np.array([1, 1, 2, 1], np.int8))
    assert summary == {"body": {"games": 3, "mean_score": 8.0}, "starved": {"games": 1, "mean_score": 7.0}}
