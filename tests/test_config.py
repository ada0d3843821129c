"""Configuration: defaults, named configs, overrides and one-line errors for bad values."""
from __future__ import annotations

from pathlib import Path

import pytest

from ddqn.config import NAMED_CONFIGS, Config, load_config, save_config
from ddqn.errors import ConfigError
from ddqn.game import make_batch, make_env


def test_defaults_are_the_papers() -> None:
    cfg = load_config()
    assert (cfg.board_size, cfg.replay_capacity, cfg.replay_warmup) == (10, 30_000, 20_000)
    assert (cfg.eps_start, cfg.eps_end, cfg.eps_decay_steps) == (1.0, 0.1, 50_000)
    assert load_config("paper").net.endswith("snake_paper.prototxt")


@pytest.mark.parametrize("name", sorted(p.stem for p in NAMED_CONFIGS.glob("*.yaml")))
def test_named_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.path("net").is_file() and cfg.path("solver").is_file()


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("board_size: 8\ngamma: 0.9\n")
    cfg = load_config(str(path), ["gamma=0.5", "double_dqn=true", "eps_end=0"])
    assert (cfg.board_size, cfg.gamma, cfg.double_dqn, cfg.eps_end) == (8, 0.5, True, 0.0)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(str(tmp_path / "saved.yaml")) == cfg


@pytest.mark.parametrize("text, words", [
    ("colour: red", "unknown key(s) colour"),
    ("replay_capacity: -5", "replay_capacity: must be > 0"),
    ("eps_start: 1.5", "eps_start: must be in [0, 1]"),
    ("eps_end: -0.1", "eps_end: must be in [0, 1]"),
    ("board_size: 3", "board too small"),
    ("gamma: 1.0", "gamma: must be in [0, 1)"),
    ("n_step: 0", "n_step: must be >= 1"),
    ("server_session_port: 70000", "server_session_port: must be a TCP port"),
    ("server_port: 65535", "server_session_port: must be a TCP port (0 = server_port + 1"),
    ("server_port: 7078\nserver_session_port: 7078", "server_session_port: must differ from server_port"),
    ("frame_layout: tiles", "frame_layout: must be 'scaled' or 'cells'"),
    ("board_size: ten", "board_size: expected int"),
    ("replay_warmup: 50000", "replay_warmup: must be in [1, replay_capacity=30000]"),
    ("net: nowhere.prototxt", "net: file not found"),
    ("- a\n- b", "must be a mapping"),
    ("gamma: [", "not valid YAML"),
    ("replay_alpha: 1.5", "replay_alpha: must be in [0, 1] (0 = uniform sampling)"),
    ("replay_alpha: -0.5", "replay_alpha: must be in [0, 1]"),
    ("replay_beta: 1.2", "replay_beta: must be in [0, 1]"),
    ("replay_beta: -0.1", "replay_beta: must be in [0, 1]"),
    ("replay_beta_steps: 0", "replay_beta_steps: must be > 0"),
    ("replay_beta_steps: 1.5", "replay_beta_steps: expected int"),
    ("replay_priority_eps: 0", "replay_priority_eps: must be a finite number > 0"),
    ("replay_priority_eps: .inf", "replay_priority_eps: must be a finite number > 0"),
])
def test_bad_config_is_one_clear_error(text: str, words: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    msg = str(err.value)
    assert msg.startswith(str(path)) and words in msg and "\n" not in msg, msg


def test_bad_override_and_unknown_named_config() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["gamma"])
    with pytest.raises(ConfigError, match="no such config file or named config"):
        load_config("nonexistent")
    assert Config().path("net").is_file()


def test_cells_layout_too_big_for_the_nets_frames_is_a_config_error() -> None:
    cfg = load_config("small", ["board_size=7", "frame_layout=cells"])  # the small net takes 8x8 frames
    for make in (lambda: make_env(cfg, 8), lambda: make_batch(cfg, 8, 2)):
        with pytest.raises(ConfigError, match=r"frame_layout: 'cells' needs .* at least board_size \+ 2 = 9 pixels"):
            make()
    assert make_env(load_config("small", ["frame_layout=cells"]), 8).reset(seed=0)[0].shape == (8, 8)
