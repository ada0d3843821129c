"""Ctrl-C/SIGTERM as a stop flag: the handlers, and each loop stopping at its step boundary."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
from pyspark.accumulators import _start_update_server

from ddqn.config import load_config
from ddqn.distributed.spark import _quiet_when_the_jvm_is_gone
from ddqn.dqn import evaluation, serial
from ddqn.dqn.evaluation import evaluate_greedy, random_score
from ddqn.dqn.play import greedy_episode, play_terminal
from ddqn.dqn.serial import SerialTrainer
from ddqn.errors import DDQNError, Interrupted, run_command
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.stop import GRACE_S, NEVER, StopFlag, sleep_unless

SMALL = ["replay_warmup=300", "eval_episodes=5", "log_every=100", "eval_every=100000"]


class SetAfter:
    """A stop flag that reads as set from its ``n``-th look on (a stop landing mid-loop, deterministically)."""

    def __init__(self, n: int) -> None:
        self.n, self.looks = n, 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self.n


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs in the main thread at its next bytecode boundary


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_first_signal_sets_the_flag_and_prints_one_line(signum: int, capfd: pytest.CaptureFixture) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopFlag("interrupted: testing") as stop:
        assert not stop.is_set()
        _signal_self(signum)
        assert stop.is_set() and stop.signum == signum
    assert {s: signal.getsignal(s) for s in before} == before  # the previous handlers are back
    err = capfd.readouterr().err
    assert err.strip().splitlines() == [f"interrupted: testing ({signal.Signals(signum).name}; "
                                        f"send it again after {GRACE_S:g} s to exit at once)"]


def test_second_signal_exits_at_once_with_130_after_the_grace_period() -> None:
    """A second signal within GRACE_S of the first is the same stop (one line); one after it exits at once."""
    code = textwrap.dedent("""
        import os, signal, time
        from ddqn.stop import GRACE_S, StopFlag
        with StopFlag("interrupted: testing") as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            assert stop.is_set()
            os.kill(os.getpid(), signal.SIGINT)  # within the grace period: the same stop
            time.sleep(GRACE_S)
            print("still running", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        print("not reached")
    """)
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130, res.stderr
    assert res.stdout == "still running\n" and time.monotonic() - start < 10
    assert [line for line in res.stderr.splitlines() if line][-2:] == [
        f"SIGINT again within {GRACE_S:g} s: the same stop (send it later to exit at once)",
        "SIGTERM again: exiting at once (no final snapshot)"]


def test_sleep_unless_returns_early_once_set() -> None:
    stop = StopFlag()
    start = time.monotonic()
    assert sleep_unless(stop, 0.2) is False and time.monotonic() - start >= 0.2
    stop.set()
    start = time.monotonic()
    assert sleep_unless(stop, 10.0) is True and time.monotonic() - start < 0.1


def test_run_command_exit_codes(capsys: pytest.CaptureFixture) -> None:
    def raise_(exc: BaseException):
        def body() -> None:
            raise exc
        return body

    assert run_command("prog", raise_(Interrupted())) == 130
    assert capsys.readouterr().err == "prog: interrupted\n"
    assert run_command("prog", raise_(DDQNError("bad value"))) == 2
    assert capsys.readouterr().err == "prog: error: bad value\n"
    assert run_command("prog", lambda: None) == 0


@pytest.fixture(scope="module")
def small_q():
    cfg = load_config("small", SMALL)
    return cfg, QNetwork(load_netspec(cfg.path("net")), seed=0)


def test_evaluation_loops_stop_at_a_step_boundary(small_q) -> None:
    cfg, q = small_q
    stop = SetAfter(3)
    with pytest.raises(Interrupted):
        evaluate_greedy(q, cfg, 4, seed=0, stop=stop)
    assert stop.looks == 3  # it looked once per step and stopped at the first look that saw the flag
    with pytest.raises(Interrupted):
        random_score(cfg, q.spec.state_shape[1], 10, seed=0, stop=SetAfter(5))
    assert len(evaluate_greedy(q, cfg, 2, seed=0, stop=NEVER)) == 2


def test_play_stops_at_a_step_boundary(small_q, capsys: pytest.CaptureFixture) -> None:
    cfg, q = small_q
    with pytest.raises(Interrupted):
        greedy_episode(q, cfg, seed=0, stop=SetAfter(2))
    looks = SetAfter(10**9)
    shots, _ = greedy_episode(q, cfg, seed=0, render_mode="ansi", stop=looks)
    assert looks.looks == len(shots) - 1  # one look per step
    start = time.monotonic()
    with pytest.raises(Interrupted):  # set while the terminal animation sleeps after its first frame (1 s)
        play_terminal(q, cfg, seed=0, fps=1.0, stop=SetAfter(looks.looks + 2))
    assert time.monotonic() - start < 0.5
    assert capsys.readouterr().out.count("step ") == 1


def _assert_final_snapshot(out: Path) -> dict:
    state = json.loads((out / "trainer_state.json").read_text())
    assert (out / state["model"]).is_file() and (out / state["solverstate"]).is_file()
    assert not (out / "summary.json").exists()
    return state


def test_serial_training_stops_at_a_step_boundary_and_snapshots(tmp_path: Path) -> None:
    trainer = SerialTrainer(load_config("small", SMALL), tmp_path, progress=False)
    stop = SetAfter(3 + 150)  # a look before the warm-up and two in the baseline, then one per env step
    with pytest.raises(Interrupted):
        trainer.train(steps=10_000, stop=stop)
    state = _assert_final_snapshot(tmp_path)
    assert 0 < state["progress"]["env_steps"] < 10_000
    assert state["progress"]["env_steps"] == trainer.state.env_steps
    assert not (tmp_path / "eval.csv").exists()  # the final evaluation is skipped
    assert len((tmp_path / "train.csv").read_text().splitlines()) >= 2  # the CSV was flushed and closed
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_serial_training_stops_inside_an_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop that lands during a periodic evaluation: no eval row, a final snapshot at that step."""
    stop = StopFlag()

    def evaluate_then_stop(q, cfg, stop_arg):
        stop.set()  # as if Ctrl-C came while this evaluation runs
        return evaluation.evaluate(q, cfg, stop_arg)

    monkeypatch.setattr(serial, "evaluate", evaluate_then_stop)
    trainer = SerialTrainer(load_config("small", SMALL + ["eval_every=200"]), tmp_path, progress=False)
    with pytest.raises(Interrupted):
        trainer.train(steps=10_000, stop=stop)
    state = _assert_final_snapshot(tmp_path)
    assert state["progress"]["env_steps"] == 200
    assert not (tmp_path / "eval.csv").exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_accumulator_server_is_quiet_when_the_jvm_goes_first(quiet: bool, capfd: pytest.CaptureFixture) -> None:
    """pyspark's accumulator server (real, without a JVM) prints an EOFError traceback when its peer, the JVM,
    closes first, as spark-submit's JVM does at Ctrl-C; the driver's SparkContext silences just that."""
    server = _start_update_server("token-of-this-test", False)
    if quiet:
        _quiet_when_the_jvm_is_gone(types.SimpleNamespace(_accumulatorServer=server))
    try:
        with socket.create_connection(server.server_address, timeout=5) as peer:
            peer.sendall(b"token-of-this-test")  # authenticated, then gone before its first update
        time.sleep(1.5)  # the handler polls its socket every second
    finally:
        server.shutdown()
    err = capfd.readouterr().err
    assert ("EOFError" in err) is not quiet, err


@pytest.mark.parametrize("closes", [True, False])
def test_a_token_cut_short_by_a_dying_jvm_is_quiet_a_wrong_one_is_not(closes: bool,
                                                                      capfd: pytest.CaptureFixture) -> None:
    """A JVM that dies in the middle of writing its token (Ctrl-C twice, the second within the grace period) leaves
    the server a short token, then EOF: quiet. A live peer that sends a wrong token of the right length is still
    printed."""
    token = "token-of-this-test"
    server = _start_update_server(token, False)
    _quiet_when_the_jvm_is_gone(types.SimpleNamespace(_accumulatorServer=server))
    try:
        with socket.create_connection(server.server_address, timeout=5) as peer:
            if closes:
                peer.sendall(token[:5].encode())  # cut short, then gone
            else:
                peer.sendall(b"x" * len(token))  # wrong, and still connected while the server answers
                time.sleep(1.5)
        time.sleep(1.5)  # the handler polls its socket every second
    finally:
        server.shutdown()
    err = capfd.readouterr().err
    assert ("not correct" in err) is not closes, err


def test_a_doubled_sigint_to_the_process_group_keeps_the_final_snapshot(tmp_path: Path) -> None:
    """GNU timeout and some CI runners forward SIGINT to the process group again: two SIGINTs within 50 ms are
    one stop (a second signal counts only after GRACE_S), so serial training still ends with its final snapshot
    and exit code 130."""
    out = tmp_path / "run"
    sets = [f"--set={s}" for s in [*SMALL, "snapshot_every=1000000000"]]  # no periodic snapshot: only the final one
    proc = subprocess.Popen([sys.executable, "-m", "ddqn.cli", "train", "--config", "small", *sets, "--steps",
                             "1000000", "--out", str(out), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ((out / "train.csv").exists() and len((out / "train.csv").read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)  # the wrapper's copy, 10 ms later
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert (out / "trainer_state.json").is_file(), f"no final snapshot: {err}"
    state = _assert_final_snapshot(out)
    assert state["progress"]["env_steps"] > 0 and "exiting at once" not in err, err


DRIVER_THAT_EXITS_AT_ONCE = r'''
import os, sys, time
from ddqn.config import load_config
from ddqn.distributed.evaluator import BackgroundEvaluator
from ddqn.net.netspec import load_netspec
cfg = load_config("small")
spec = load_netspec(cfg.path("net"))
evaluator = BackgroundEvaluator(spec.text, spec.source, cfg.to_dict())
print(evaluator._proc.pid, flush=True)
time.sleep(float(sys.argv[1]))  # the child imports Caffe meanwhile (or is still starting)
os._exit(130)  # as a second Ctrl-C after the grace period: no close(), no atexit
'''


@pytest.mark.parametrize("lived_s", [0.0, 3.0], ids=["while the child starts", "once it runs"])
def test_the_drivers_evaluator_does_not_outlive_a_driver_that_exits_at_once(lived_s: float) -> None:
    """A driver that exits without closing its BackgroundEvaluator (a second Ctrl-C, a kill -9) takes the
    evaluator's process with it: the kernel kills the child when its parent exits (it used to wait on its queue
    for ever)."""
    proc = subprocess.Popen([sys.executable, "-c", DRIVER_THAT_EXITS_AT_ONCE, str(lived_s)], stdout=subprocess.PIPE,
                            text=True)  # not read to its end: a child that outlives the driver holds the pipe open
    try:
        child = int(proc.stdout.readline())
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()  # by its pid
            proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), f"the evaluator (pid {child}) outlived its driver"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie, which init reaps)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
