"""A user's own game (docs/own-game.md): the Catch example, the preprocessing, one-line errors, and training through
spark-submit in local mode and on a standalone cluster, the env's code installed or shipped by ``--py-files``."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium
import imageio.v3 as iio
import numpy as np
import pytest
from conftest import assert_action_twins
from gymnasium.utils.env_checker import check_env

from ddqn.config import ALE_ONLY, PROTOTXT_DIR, load_config
from ddqn.distributed.cluster import LocalCluster, spark_submit_env, spark_submit_path
from ddqn.dqn.evaluation import ENDINGS, evaluate_greedy, play_greedy, random_score
from ddqn.dqn.loop import ExperienceLoop
from ddqn.dqn.play import greedy_episode
from ddqn.errors import ConfigError
from ddqn.game import game_actions, make_batch, make_env
from ddqn.game.examples import CATCH_ID
from ddqn.game.examples.catch import LEFT, RIGHT, STAY, Catch
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.replay import ReplayMemory
from ddqn.sim.cli import main as sim_main

ROOT = Path(__file__).resolve().parent.parent
JOB = str(ROOT / "spark_jobs" / "train.py")
README, DOCS = ROOT / "README.md", ROOT / "docs" / "own-game.md"
BEGIN, END = "<!-- own-game:begin -->", "<!-- own-game:end -->"
# a few hundred env steps: small replay, frequent rows, evaluations and snapshots
FAST = ["--set", "replay_warmup=200", "--set", "replay_capacity=2000", "--set", "eval_every=200",
        "--set", "eval_episodes=10", "--set", "log_every=100", "--set", "snapshot_every=200", "--quiet"]
MYMODULE = '''"""A user's env: Catch drawn 3 pixels a cell, so its 24x24 RGB images are resized to the net's 8x8."""
from ddqn.game.examples.catch import Catch


class MyEnv(Catch):
    def __init__(self, render_mode=None):
        super().__init__(size=8, cell=3, render_mode=render_mode)
'''
# envs of a user's module for the preprocessing and error tests: every pixel shows 10 x the step count
USERGAMES = '''import gymnasium
import numpy as np
from gymnasium import spaces


class Frames(gymnasium.Env):
    obs = spaces.Box(0, 255, (8, 8), np.uint8)
    act = spaces.Discrete(2)

    def __init__(self):
        self.observation_space, self.action_space = self.obs, self.act

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(self.obs.shape, np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full(self.obs.shape, 10 * self.t, np.uint8), 0.4, self.t == 5, False, {"life_lost": True}


class Frames1(Frames):
    obs = spaces.Box(0, 255, (16, 16, 1), np.uint8)


class FramesRGB(Frames):
    obs = spaces.Box(0, 255, (12, 12, 3), np.uint8)


class Vector(Frames):
    obs = spaces.Box(-1.0, 1.0, (4,), np.float32)


class FloatImage(Frames):
    obs = spaces.Box(0.0, 1.0, (8, 8), np.float32)


class Binary(Frames):
    obs = spaces.Box(0, 1, (8, 8), np.uint8)


class Continuous(Frames):
    act = spaces.Box(-1.0, 1.0, (1,), np.float32)


class FromOne(Frames):
    act = spaces.Discrete(2, start=1)


NOT_AN_ENV = 3
'''


@pytest.fixture
def usergames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module ``usergames`` (USERGAMES) importable in this process."""
    (tmp_path / "usergames.py").write_text(USERGAMES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "usergames"


def marked_block(path: Path) -> str:
    """The lines between the own-game markers of ``path`` (empty when it has none)."""
    text = path.read_text()
    if BEGIN not in text:
        return ""
    assert text.count(BEGIN) == 1 and text.count(END) == 1, path
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write_mypkg(where: Path) -> Path:
    """The user's package ``mypkg`` (MYMODULE as mypkg.mymodule) in ``where``."""
    (where / "mypkg").mkdir(parents=True)
    (where / "mypkg" / "__init__.py").write_text("")
    (where / "mypkg" / "mymodule.py").write_text(MYMODULE)
    return where / "mypkg"


def submit_env() -> dict[str, str]:
    """The environment of a user's shell: this venv's python3 and spark-submit first on PATH."""
    path = f"{Path(sys.executable).parent}:{spark_submit_path().parent}:{os.environ['PATH']}"
    return {**os.environ, **spark_submit_env(sys.executable), "PATH": path}


def check_run(out: Path, workers: int, gif_side: int) -> dict:
    """A finished distributed run: every worker pushed, snapshots, metric rows, evaluations and a GIF."""
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["workers"]) == workers and all(w["pushes"] > 0 for w in summary["workers"].values()), summary
    assert summary["updates"] > 0 and summary["dropped"] == {}
    assert -1 <= summary["greedy_score_mean"] <= 1 and -1 <= summary["random_score_mean"] <= 1  # Catch: -1 or +1
    assert Path(summary["model"]).is_file() and list((out / "snapshots").glob("*.caffemodel"))
    with open(out / "train.csv") as f:
        assert len(list(csv.DictReader(f))) >= 1
    with open(out / "eval.csv") as f:
        evals = list(csv.DictReader(f))
    assert evals and all(-1 <= float(e["eval/greedy_score_mean"]) <= 1 for e in evals), evals
    frames = iio.imread(out / "agent.gif")
    assert frames.ndim == 4 and len(frames) >= 2 and frames.shape[1] == frames.shape[2] == gif_side, frames.shape
    return summary


# -- the example env ---------------------------------------------------------------------------------------------
def test_catch_is_a_gymnasium_env_with_its_rules() -> None:
    check_env(Catch(), skip_render_check=True)
    env = Catch(render_mode="rgb_array")
    for target in (0, 7, 3):  # chase the ball: caught, +1 on the 7th step
        for seed in range(50):
            frame, _ = env.reset(seed=seed)
            if env.ball[1] == target:
                break
        assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8 and (env.render() == frame).all()
        rewards = []
        for _ in range(7):
            move = LEFT if env.paddle > target else RIGHT if env.paddle < target else STAY
            frame, reward, terminated, truncated, _ = env.step(move)
            rewards.append(reward)
        assert rewards == [0.0] * 6 + [1.0] and terminated and not truncated
    env.reset(seed=0)
    miss = RIGHT if env.ball[1] < 4 else LEFT
    assert [env.step(miss)[1] for _ in range(7)][-1] == -1.0  # running away from the ball misses it
    with pytest.raises(RuntimeError, match="reset"):
        env.step(STAY)
    registered = gymnasium.make(CATCH_ID)
    assert (registered.reset(seed=5)[0] == Catch().reset(seed=5)[0]).all()


def test_catch_net_is_the_small_snake_net_with_3_outputs() -> None:
    catch, snake = PROTOTXT_DIR / "catch.prototxt", PROTOTXT_DIR / "snake_small.prototxt"
    spec = load_netspec(catch, 3)
    assert spec.state_shape == (4, 8, 8) and f"{spec.num_params:,} learnable parameters" in catch.read_text()
    assert_action_twins(snake, catch, 4, 3)


# -- preprocessing -----------------------------------------------------------------------------------------------
def test_frames_are_gray_at_the_nets_size_whatever_the_image_shape(usergames: str) -> None:
    cfg = load_config("catch")
    env = make_env(cfg, 8, render_mode="rgb_array")  # Catch: 16x16 RGB → grayscale, area-resized to 8x8
    frame, info = env.reset(seed=3)
    assert frame.shape == (8, 8) and frame.dtype == np.uint8 and info == {"score": 0}
    ball, paddle = np.argwhere(frame >= 254), np.argwhere((frame > 0) & (frame < 254))
    assert ball.tolist() == [[0, env.unwrapped.ball[1]]] and paddle.tolist() == [[7, 4]]  # one pixel a cell
    assert env.render().shape == (160, 160, 3)  # the raw 16x16 image, enlarged 10x
    for name in ("Frames", "Frames1", "FramesRGB"):  # (8, 8) as is; (16, 16, 1) and (12, 12, 3) resized
        env = make_env(load_config("catch", [f"game={usergames}:{name}"]), 8, render_mode="rgb_array")
        frame, _ = env.reset(seed=0)
        steps = [env.step(0) for _ in range(5)]
        assert frame.shape == (8, 8) and all(s[0].shape == (8, 8) for s in steps)
        assert [int(s[0].mean() + 0.5) for s in steps] == pytest.approx([10, 20, 30, 40, 50], abs=1)  # luma ±1
        # raw rewards 0.4 a step, the score their sum rounded; no life_lost: lives are ALE's
        assert [s[1] for s in steps] == [0.4] * 5 and [s[4] for s in steps] == [{"score": r} for r in (0, 1, 1, 2, 2)]
        assert steps[-1][2] and env.render().shape[2] == 3 and min(env.render().shape[:2]) >= 160
    cut = make_env(load_config("catch", ["max_episode_steps=3"]), 8)  # TimeLimit: a 7-step game cut at 3
    cut.reset(seed=0)
    assert [cut.step(1)[3] for _ in range(3)] == [False, False, True]


def test_batch_plays_like_its_envs() -> None:
    cfg = load_config("catch")
    batch, env = make_batch(cfg, 8, 3), make_env(cfg, 8)
    frames = batch.reset(seed=11)
    assert frames.shape == (3, 8, 8) and batch.num_actions == 3
    from ddqn.game.seeds import game_seeds

    first, _ = env.reset(seed=game_seeds(11, 3)[1])
    assert (frames[1] == first).all()
    for _ in range(7):
        frames, rewards, terminated, truncated, info = batch.step(np.ones(3, np.int64))
        frame, reward, term, *_ = env.step(1)
        assert (info["final_frame"][1] == frame).all() and rewards[1] == reward and terminated[1] == term
    assert terminated.all() and set(info["score"]) <= {-1, 1} and not info["life_lost"].any()


# -- one-line errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("game, words", [
    ("nosuchpkg.envs:MyEnv", ("cannot import module 'nosuchpkg.envs'", "No module named 'nosuchpkg'")),
    ("ddqn.game.examples.catch:Nope", ("has no attribute 'Nope'",)),
    ("usergames:NOT_AN_ENV", ("not a gymnasium.Env subclass",)),
    ("NoSuchGame-v0", ("no Gymnasium env is registered with id 'NoSuchGame-v0'", "'package.module:Class'")),
    ("nosuchpkg:Game-v0", ("cannot import module 'nosuchpkg'",)),
    ("CartPole-v1", ("observation space Box(shape (4,), dtype float32) is not an image",)),
    ("usergames:Vector", ("is not an image", "uint8 Box of shape (H, W), (H, W, 1) or (H, W, 3)")),
    ("usergames:FloatImage", ("Box(shape (8, 8), dtype float32) is not an image",)),
    ("usergames:Binary", ("pixel bounds 0 and 255",)),
    ("usergames:Continuous", ("action space Box(shape (1,), dtype float32) is not Discrete",)),
    ("usergames:FromOne", ("must number its actions from 0",)),
])
def test_a_game_that_cannot_be_played_is_one_line(game: str, words: tuple[str, ...], usergames: str,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "my_game.yaml"
    path.write_text(f"game: {game}\nnet: prototxt/catch.prototxt\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: game: ") and all(w in msg for w in words) and "\n" not in msg, msg


def test_which_config_keys_apply(tmp_path: Path) -> None:
    cfg = load_config("catch", ["reward_clip=1", "max_episode_steps=50", "eval_epsilon=0.05"])  # these apply
    assert (cfg.reward_clip, cfg.max_episode_steps, cfg.eval_epsilon) == (1.0, 50, 0.05)
    assert load_config("catch", ["game=ddqn/Catch-v0"]).game == CATCH_ID  # the registered id plays too
    changed = {"frame_skip": 2, "noop_max": 0, "sticky_actions": 0.25, "life_loss_terminal": False}
    assert set(changed) == set(ALE_ONLY)
    for key, value in changed.items():
        with pytest.raises(ConfigError) as err:
            load_config("catch", [f"{key}={json.dumps(value)}"])
        msg = str(err.value)
        assert msg.startswith(f"command line: {key}: applies to ALE games only") and "\n" not in msg, msg


def test_a_net_for_another_action_count_is_one_line_before_spark(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"snake_small.prototxt: blob 'q' has 4 outputs but the game has 3 actions"):
        cfg = load_config("catch", ["net=prototxt/snake_small.prototxt"])
        load_netspec(cfg.path("net"), game_actions(cfg))
    res = subprocess.run([str(spark_submit_path()), JOB, "--config", "catch", "--set", "net=prototxt/snake_small.prototxt",
                          "--out", str(tmp_path / "run")], env=submit_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("train.py: error: ") and errors[0].endswith(
        "/prototxt/snake_small.prototxt: blob 'q' has 4 outputs but the game has 3 actions"), res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


# -- one process: loop, evaluation, GIF, simulator ---------------------------------------------------------------
def test_loop_evaluation_and_gif_play_catch() -> None:
    cfg = load_config("catch", ["replay_warmup=100"])
    spec = load_netspec(cfg.path("net"), game_actions(cfg))
    q, q_hat = QNetwork(spec, seed=0), QNetwork(spec, seed=0)
    loop = ExperienceLoop(cfg, q, q_hat, ReplayMemory(1000, (8, 8), 4, seed=0), np.random.default_rng(0), env_seed=1)
    assert loop.warm_up(100) >= 100
    for _ in range(50):
        if loop.step():
            loss, grad = loop.gradient()
            assert np.isfinite(loss) and grad.shape == (spec.num_params,)
    assert loop.episodes == 7 and set(loop.take_scores()) <= {-1, 1}  # 7 steps a game
    scores = evaluate_greedy(q, cfg, 6, seed=0)
    assert scores.shape == (6,) and set(scores.tolist()) <= {-1, 1}
    again, endings = play_greedy(q, cfg, 6, seed=0)  # a game without Snake's endings: each one is a game over
    assert np.array_equal(again, scores) and [ENDINGS[e] for e in endings] == ["game over"] * 6
    assert -1 < random_score(cfg, 8, 200, seed=0) < -0.5  # the random policy misses most balls
    shots, score = greedy_episode(q, cfg, seed=0)
    assert len(shots) == 8 and shots[0].shape == (160, 160, 3) and score in (-1, 1)


def test_simulator_plays_a_users_game(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    summary = sim_main(["--config", "catch", "--set", "replay_warmup=60", "--set", "replay_capacity=400",
                        "--set", "eval_episodes=4", "--set", "log_every=20", "--workers", "2", "--minutes", "0.1",
                        "--fixed-cycle", "--out", str(out), "--no-progress"])
    assert summary["updates"] > 0 and (out / "train.csv").is_file() and (out / "eval.csv").is_file()
    assert -1 <= summary["greedy_score_mean"] <= 1


# -- spark-submit: local mode and a standalone cluster -----------------------------------------------------------
@pytest.mark.timeout(600)
def test_readme_block_runs_in_local_mode(tmp_path: Path) -> None:
    """README's own-game block, as docs/own-game.md has it, run line by line with a step budget for --minutes."""
    block = marked_block(README)
    assert block, f"{README} has no lines between {BEGIN} and {END}"
    assert block == marked_block(DOCS), "README's own-game block differs from docs/own-game.md's"
    assert len(block.splitlines()) <= 10
    fences = dict(re.findall(r"```(\w+)\n(.*?)```", block, re.S))
    lines = [line for line in fences["bash"].splitlines() if line.strip()]
    submit = lines.pop()
    assert submit.startswith("spark-submit ") and " --minutes 10" in submit, submit
    (tmp_path / re.search(r"--config (\S+)", submit).group(1)).write_text(fences["yaml"])
    write_mypkg(tmp_path)
    (tmp_path / "spark_jobs").symlink_to(ROOT / "spark_jobs")
    for line in lines:
        res = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=submit_env(), capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, (line, res.stderr)
    shutil.rmtree(tmp_path / "mypkg")  # from here on only the shipped zip provides mypkg
    cmd = submit.replace(" --minutes 10", " --steps 400") + f" --out {tmp_path / 'run'} " + " ".join(FAST)
    res = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=submit_env(), capture_output=True, text=True,
                         timeout=500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    check_run(tmp_path / "run", workers=2, gif_side=168)  # MyEnv's 24x24 image enlarged 7x


@pytest.mark.timeout(600)
def test_standalone_cluster_gets_the_env_by_py_files(tmp_path: Path) -> None:
    """Executors run in their own work directories: only the zip spark-submit ships provides the user's package."""
    fences = dict(re.findall(r"```(\w+)\n(.*?)```", marked_block(DOCS), re.S))
    config = tmp_path / "my_game.yaml"
    config.write_text(fences["yaml"])
    src = tmp_path / "src"
    write_mypkg(src)
    shipped = tmp_path / "mypkg.zip"
    with zipfile.ZipFile(shipped, "w") as z:
        for f in sorted((src / "mypkg").iterdir()):
            z.write(f, f"mypkg/{f.name}")
    out, cwd = tmp_path / "run", tmp_path / "driver"
    cwd.mkdir()
    with LocalCluster(workers=2) as cluster:
        cmd = cluster.submit_command(["--py-files", str(shipped), JOB, "--config", str(config), "--workers", "2",
                                      "--steps", "400", "--out", str(out), *FAST])
        res = subprocess.run(cmd, env=cluster.env, cwd=cwd, capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    check_run(out, workers=2, gif_side=168)
    results = json.loads((out / "workers.json").read_text())["results"]
    assert len({r["executor_pid"] for r in results}) == 2  # two executor JVMs of the cluster


@pytest.mark.timeout(600)
def test_catch_trains_through_spark_submit_then_evaluates_and_plays(tmp_path: Path) -> None:
    """The shipped example (an installed package): a Spark run, then ``ddqn eval`` and ``ddqn play`` of its
    snapshot with the run's config."""
    out = tmp_path / "catch"
    res = subprocess.run([str(spark_submit_path()), "--master", "local[2,4]", JOB, "--config", "catch",
                          "--steps", "400", "--out", str(out), *FAST], env=submit_env(), capture_output=True,
                         text=True, timeout=500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    summary = check_run(out, workers=2, gif_side=160)
    assert load_config(str(out / "config.yaml")).game == "ddqn.game.examples.catch:Catch"

    def ddqn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ddqn.cli", *args], capture_output=True, text=True, timeout=240)

    res = ddqn("eval", "--weights", summary["model"], "--episodes", "4")
    assert res.returncode == 0 and "over 4 episodes on ddqn.game.examples.catch:Catch" in res.stdout, res.stderr
    gif = tmp_path / "catch.gif"
    res = ddqn("play", "--weights", summary["model"], "--gif", str(gif))
    assert res.returncode == 0, res.stderr
    assert iio.imread(gif).shape[1:] == (160, 160, 3)
    res = ddqn("play", "--weights", summary["model"])
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].endswith(
        "only Snake can be played in the terminal; write a GIF with --gif"), res.stderr
