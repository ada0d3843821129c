"""Atari through the same system, on the real ALE and real Caffe with tiny budgets: the env wrapper (shapes, raw
score, lives, truncation, seeds), AtariBatch, replay across a lost life, the experience loop, nets and configs,
the Spark job on Breakout and a Breakout GIF of the real screen."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import assert_action_twins
from gymnasium import spaces

from ddqn.config import PROTOTXT_DIR, load_config
from ddqn.distributed.cluster import spark_submit_env, spark_submit_path
from ddqn.dqn.loop import ExperienceLoop
from ddqn.errors import ConfigError
from ddqn.game import game_actions, make_batch
from ddqn.game.atari import SCREEN, AtariEnv
from ddqn.game.seeds import game_seeds
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.replay import ReplayMemory
from ddqn.replay.transition import learning_reward, store_step

ROOT = Path(__file__).resolve().parent.parent
BREAKOUT, PONG = "ALE/Breakout-v5", "ALE/Pong-v5"


def random_steps(env: AtariEnv, seed: int, n: int, action_seed: int = 0) -> list[tuple]:
    """``n`` uniformly random steps from ``reset(seed)``: [(frame, reward, terminated, truncated, info)]."""
    frame, info = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    out = [(frame, 0.0, False, False, info)]
    for _ in range(n):
        out.append(env.step(int(rng.integers(env.num_actions))))
        if out[-1][2] or out[-1][3]:
            break
    return out


@pytest.mark.timeout(60)
def test_observation_action_space_and_real_screen() -> None:
    env = AtariEnv(BREAKOUT, render_mode="rgb_array")
    frame, info = env.reset(seed=0)
    assert frame.shape == (84, 84) and frame.dtype == np.uint8 and env.observation_space.shape == (84, 84)
    assert env.action_space == spaces.Discrete(4) and info["score"] == 0 and info["life_lost"] is False
    screen = env.render()
    assert screen.shape == SCREEN == (210, 160, 3) and screen.dtype == np.uint8
    assert AtariEnv(PONG).action_space == spaces.Discrete(6)
    assert game_actions(load_config("breakout")) == 4 and game_actions(load_config("pong")) == 6
    assert game_actions(load_config("paper")) == 4
    with pytest.raises(ValueError, match="rgb_array"):
        AtariEnv(BREAKOUT, render_mode="ansi")


@pytest.mark.timeout(60)
def test_score_is_raw_and_learning_clips_rewards() -> None:
    """Space Invaders pays 5..30 points per alien: the score sums the raw points, learning stores them clipped."""
    steps = random_steps(AtariEnv("ALE/SpaceInvaders-v5"), seed=1, n=400)
    rewards = [r for _, r, *_ in steps[1:]]
    assert max(rewards) > 1  # raw points, unclipped
    assert steps[-1][4]["score"] == sum(rewards)
    cfg = load_config("breakout")
    assert [learning_reward(cfg, r) for r in (30.0, 1.0, 0.0, -5.0)] == [1.0, 1.0, 0.0, -1.0]
    assert learning_reward(load_config("paper"), 30.0) == 30.0  # reward_clip 0: off
    replay = ReplayMemory(100, (84, 84), history=4, seed=0)
    replay.start_episode(steps[0][0])
    for frame, _, term, trunc, info in steps[1:5]:
        store_step(replay, cfg, 0, 30.0, frame, term, trunc, info["life_lost"])
    assert set(replay.sample(4).rewards.tolist()) == {1.0}


@pytest.mark.timeout(60)
def test_lives_game_over_and_truncation() -> None:
    env = AtariEnv(BREAKOUT)
    steps = random_steps(env, seed=3, n=5000)
    lost = [i for i, s in enumerate(steps) if s[4]["life_lost"]]
    lives = [s[4]["lives"] for s in steps]
    assert len(lost) == 4 and lives[0] == 5 and lives[-1] == 0  # 5 lives: 4 losses in play, the 5th is game over
    for i in lost:
        assert lives[i] == lives[i - 1] - 1 and not steps[i][2] and not steps[i][3]
    assert steps[-1][2] and not steps[-1][3] and not steps[-1][4]["life_lost"]  # game over: terminated only
    assert not any(s[2] for s in steps[:-1])
    short = AtariEnv(BREAKOUT, max_episode_steps=7)
    cut = random_steps(short, seed=3, n=100)
    assert len(cut) == 8 and cut[-1][3] and not cut[-1][2]


@pytest.mark.timeout(60)
def test_same_seed_same_game_and_no_op_starts_differ() -> None:
    a, b = random_steps(AtariEnv(BREAKOUT), 11, 300), random_steps(AtariEnv(BREAKOUT), 11, 300)
    assert len(a) == len(b) and all(np.array_equal(x[0], y[0]) and x[1:4] == y[1:4] for x, y in zip(a, b))
    starts = {AtariEnv(BREAKOUT).reset(seed=s)[1]["episode_frame_number"] for s in range(8)}
    assert len(starts) > 1  # 1..30 no-op frames, drawn from the seed


@pytest.mark.timeout(60)
def test_atari_batch_shapes_autoreset_and_seeds() -> None:
    cfg = load_config("breakout", ["max_episode_steps=6"])
    batch = make_batch(cfg, 84, 3)
    frames = batch.reset(seed=5)
    assert frames.shape == (3, 84, 84) and frames.dtype == np.uint8 and batch.num_actions == 4
    singles = [AtariEnv(BREAKOUT, max_episode_steps=6) for _ in range(3)]
    first = [env.reset(seed=s)[0] for env, s in zip(singles, game_seeds(5, 3))]
    assert all(np.array_equal(f, g) for f, g in zip(frames, first))
    rng = np.random.default_rng(0)
    for _ in range(6):
        actions = rng.integers(0, 4, 3)
        frames, rewards, terminated, truncated, info = batch.step(actions)
        assert rewards.dtype == np.float32 and info["score"].shape == info["life_lost"].shape == (3,)
        expected = [env.step(int(a)) for env, a in zip(singles, actions)]
        assert all(np.array_equal(info["final_frame"][i], e[0]) for i, e in enumerate(expected))
    assert truncated.all() and not terminated.any()  # the 6-step cap
    restarted = [env.reset()[0] for env in singles]  # autoreset within the step, without a seed
    assert all(np.array_equal(f, g) for f, g in zip(frames, restarted))
    with pytest.raises(ValueError, match="0..3"):
        batch.step(np.array([0, 1, 4]))


def stacked(xs: list[np.ndarray], j: int, history: int) -> np.ndarray:
    """φ_j of a segment's frames: the ``history`` frames ending at j, its first frame repeated before it."""
    return np.stack([xs[max(k, 0)] for k in range(j - history + 1, j + 1)])


def expected_transitions(segments: list[list[tuple]], history: int) -> set[bytes]:
    """Every transition a replay memory may sample, as bytes: per segment [(x_0, None, ...), (x_t, a, r, term)]."""
    out = set()
    for seg in segments:
        xs = [s[0] for s in seg]
        for t in range(1, len(seg)):
            _, a, r, term = seg[t]
            out.add(stacked(xs, t - 1, history).tobytes() + stacked(xs, t, history).tobytes() + bytes([a, int(term)])
                    + np.float32(r).tobytes())
    return out


@pytest.mark.timeout(60)
def test_replay_round_trip_across_a_lost_life() -> None:
    """84x84 frames stored once; a lost life ends its segment with a terminal transition and the next segment starts
    at the frame after the loss (4 copies of it), no history reaching back across the loss."""
    cfg = load_config("breakout")
    env = AtariEnv(BREAKOUT)
    replay = ReplayMemory(5000, (84, 84), history=4, seed=0)
    frame, _ = env.reset(seed=3)
    replay.start_episode(frame)
    segments, rng, after = [[(frame, None, None, None)]], np.random.default_rng(0), None
    while after is None or len(segments[-1]) < after:
        a = int(rng.integers(4))
        frame, r, term, trunc, info = env.step(a)
        cut = store_step(replay, cfg, a, r, frame, term, trunc, info["life_lost"])
        segments[-1].append((frame, a, learning_reward(cfg, r), term or cut))
        if cut:
            segments.append([(frame, None, None, None)])
            after = 6
    assert [s[3] for s in segments[0][1:]].count(True) == 1 and segments[0][-1][3]  # the loss is its terminal
    n = sum(len(s) for s in segments)
    assert replay.stored_frames == n and len(replay) == n - 2  # x' stored twice; each segment's last frame starts none
    batches = [replay.sample(len(replay)) for _ in range(20)]  # 20 draws of each transition on average
    batch = type(batches[0])(*(np.concatenate(field) for field in zip(*batches)))
    got = {batch.states[i].tobytes() + batch.next_states[i].tobytes() + bytes([int(batch.actions[i]), int(batch.terminals[i])])
           + batch.rewards[i].tobytes() for i in range(len(batch.actions))}
    assert got == expected_transitions(segments, 4)
    x = segments[1][0][0]
    terminal = np.flatnonzero(batch.terminals)
    assert (batch.next_states[terminal, -1] == x).all()  # the terminal transition's next state ends at x'
    starts = [i for i in range(len(batch.actions)) if (batch.states[i] == x).all()]
    assert starts and all(np.array_equal(batch.next_states[i][:3], np.stack([x] * 3)) for i in starts)


@pytest.mark.timeout(120)
def test_experience_loop_cuts_replay_at_lost_lives_and_keeps_the_game() -> None:
    cfg = load_config("breakout", ["eps_start=1.0", "eps_end=1.0", "replay_capacity=10000", "replay_warmup=100"])
    spec = load_netspec(PROTOTXT_DIR / "atari_nips.prototxt", game_actions(cfg))
    q, q_hat = QNetwork(spec, seed=0), QNetwork(spec, seed=0)
    replay = ReplayMemory(cfg.replay_capacity, (84, 84), 4, seed=0)
    loop = ExperienceLoop(cfg, q, q_hat, replay, np.random.default_rng(0), env_seed=7)
    assert loop.warm_up(cfg.replay_warmup) >= cfg.replay_warmup  # whole games of 8 Breakout envs
    losses, game_scores, score = 0, [], 0
    while len(game_scores) < 2:
        lives = loop.env.lives if loop.phi is not None else 5
        before = len(replay)
        due = loop.step()
        score = max(score, loop.env.score)
        if loop.env.lives < lives and loop.env.lives > 0:  # a lost life, the game going on
            losses += 1
            assert (loop.phi == loop.phi[-1]).all()  # φ restarted at the frame after the loss
            assert len(replay) == before + 1 and loop.episodes == len(game_scores)
        if loop.episodes > len(game_scores):  # game over: one episode, its raw score
            game_scores.append(score)
            score = 0
        if due and len(game_scores) == 0:
            loss, grad = loop.gradient()
            assert np.isfinite(loss) and grad.shape == (spec.num_params,)
    assert losses == 8 and loop.episodes == 2 and loop.take_scores() == game_scores


@pytest.mark.timeout(60)
def test_nets_and_their_6_action_twins() -> None:
    """Each *_6a net is its 4-action twin but for the action dims (Input's action_mask/target, q's num_output)."""
    for fam, params in (("nips", 677_172), ("nature", 1_686_180)):
        four, six = (PROTOTXT_DIR / f"atari_{fam}.prototxt", PROTOTXT_DIR / f"atari_{fam}_6a.prototxt")
        assert load_netspec(four, 4).num_params == params and load_netspec(six, 6).num_actions == 6
        assert f"{params:,} learnable parameters" in four.read_text()
        assert_action_twins(four, six, 4, 6)


@pytest.mark.timeout(60)
def test_net_for_the_wrong_action_count_and_bad_configs_are_one_line(tmp_path: Path) -> None:
    cfg = load_config("pong", ["net=prototxt/atari_nips.prototxt"])
    with pytest.raises(ConfigError) as err:
        load_netspec(cfg.path("net"), game_actions(cfg))
    assert "atari_nips.prototxt" in str(err.value) and "6 actions" in str(err.value) and "\n" not in str(err.value)
    for override, words in ((["game=Breakout"], ("game", "ALE/Breakout-v5")), (["game=ALE/NoSuchGame-v5"], ("game", "no game")),
                            (["sticky_actions=1.5"], ("sticky_actions", "[0, 1]")), (["eval_epsilon=-0.1"], ("eval_epsilon",)),
                            (["frame_skip=0"], ("frame_skip",)), (["reward_clip=-1"], ("reward_clip",))):
        with pytest.raises(ConfigError) as err:
            load_config("breakout", override)
        assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "train", "--config", "pong", "--set",
                          "net=prototxt/atari_nips.prototxt", "--steps", "1", "--no-progress", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "atari_nips.prototxt" in lines[0], res.stderr


QUICK = ["--set", "replay_warmup=500", "--set", "replay_capacity=4000", "--set", "eval_episodes=2",
         "--set", "eval_every=100000", "--set", "log_every=100", "--set", "max_episode_steps=1000"]


@pytest.fixture(scope="module")
def breakout_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``spark-submit spark_jobs/train.py --config breakout --steps 300`` with 2 workers, shrunk: its out dir."""
    out = tmp_path_factory.mktemp("atari") / "run"
    cmd = [str(spark_submit_path()), "--master", "local[2,4]", str(ROOT / "spark_jobs" / "train.py"),
           "--config", "breakout", *QUICK, "--workers", "2", "--steps", "300", "--out", str(out), "--quiet"]
    res = subprocess.run(cmd, env={**os.environ, **spark_submit_env(sys.executable)},
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "snapshot:" in res.stdout
    return out


@pytest.mark.timeout(300)
def test_spark_job_on_breakout_ends_with_a_snapshot(breakout_run: Path) -> None:
    summary = json.loads((breakout_run / "summary.json").read_text())
    assert summary["env_steps"] >= 300 and summary["updates"] > 0 and summary["dropped"] == {}
    state = json.loads((breakout_run / "server_state.json").read_text())
    assert (breakout_run / state["model"]).is_file()
    gif = iio.imread(breakout_run / "agent.gif")
    assert gif.shape[1:3] == (210, 160)


@pytest.mark.timeout(300)
def test_play_writes_a_gif_of_the_real_breakout_screen(breakout_run: Path, tmp_path: Path) -> None:
    state = json.loads((breakout_run / "server_state.json").read_text())
    weights, gif = breakout_run / state["model"], tmp_path / "breakout.gif"
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "play", "--weights", str(weights), "--gif", str(gif),
                          "--set", "max_episode_steps=300"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    frames = iio.imread(gif)
    assert frames.ndim == 4 and frames.shape[1:3] == (210, 160) and 2 <= len(frames) <= 301
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "play", "--weights", str(weights)],
                         capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "--gif" in lines[-1] and "Traceback" not in res.stderr, res.stderr
