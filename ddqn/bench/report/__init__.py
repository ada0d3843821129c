"""``make report``: regenerate results/REPORT.md from the benchmarks' JSON files (figures embedded).

Every section puts the measured numbers beside the slides' claim, and a measured value beside its goal says
whether the goal was met or missed (:func:`ddqn.bench.report.phrases.versus_goal`); a benchmark that has not been run
is listed as missing with the target that produces it. Each section names the CPU it was measured on
(``common.cpu_label``; results recorded before the CPU's family and model were, as recorded). Minutes to a score
come from the trailing mean of evaluations (``ddqn.bench.stats``); results recorded before that rule say they are
first single evaluations. A section named ``<name>-*`` is one table per CPU model (``bench-scaling --per-cpu``):
each ``results/<name>-<CPU>.json`` is a section of its own, titled with its CPU.

The sections live by kind: ``speed``, ``network``, ``learning``, ``scale_out`` and ``projection``; ``phrases``
holds the sentences they share. This module keeps the order of the sections and writes the file.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddqn.bench.common import cpu_label, machine
from ddqn.bench.report import learning, network, projection, scale_out, speed

SECTIONS: list[tuple[str, str, str, Callable[[dict], list[str]]]] = [
    ("caffe_speed", "Q-network speed: real Caffe beside a PyTorch twin", "make bench-caffe", speed.caffe),
    ("ps_speed", "Parameter-server cost", "make bench-ps", speed.ps),
    ("worker_speed", "Compute/communicate times vs model size", "make bench-worker", speed.worker),
    ("capacity", "Workers one server can serve", "make bench-capacity", speed.capacity),
    ("hostile", "Floods against the server: what an honest worker keeps", "make bench-hostile", network.hostile),
    ("links", "Links with a rate: the job on hosts whose cables are shaped", "make bench-links", network.links),
    ("links_shards", "Shards under a rated link: S = 2 against one server", "make bench-links-shards",
     network.links_shards),
    ("links_model", "The simulator against links with a rate", "make bench-links-model", network.links_model),
    ("shard_cost", "Each shard's cost against S", "make bench-shard-cost", network.shard_cost),
    ("shard_projection", "The sharded server projected to W = 64 (timing-only simulator)",
     "make bench-shard-projection", network.shard_projection),
    ("blas", "Caffe on each BLAS", "make bench-blas", speed.blas),
    ("grad_norms", "Honest gradient norms", "make bench-grad-norms", speed.grad_norms),
    ("scaling", "Serial vs distributed", "make bench-scaling", learning.scaling),
    ("scaling_120-*", "Serial vs distributed in 60 and 120 minutes (`tuned`, issue 30's table)",
     "make bench-scaling-120", learning.scaling),
    ("scaling_120_te2", "Serial vs distributed in 60 and 120 minutes, `tuned` with 2 env steps per gradient "
     "(issue 30's table before `tuned` took 4; kept, not rerunnable: `make bench-scaling-120` runs today's `tuned`)",
     "make bench-scaling-120", learning.scaling),
    ("tuning", "What buys score per minute (variants of tuned)", "make bench-tuning", learning.tuning),
    ("scale_out", "Scale-out beyond this machine (simulated)", "make bench-scale-out", scale_out.section),
    ("scale_projection", "Learning at 64 workers: the projection with seeds (simulated)",
     "make bench-scale-projection", projection.section),
    ("env_speed", "Snake environment speed", "make bench-env", speed.env),
    ("replay_speed", "Replay memory throughput", "make bench-replay", speed.replay),
    ("atari", "Atari (ALE) through the same system", "make bench-atari", learning.atari),
    ("gifs", "Example game play", "make gifs", learning.gifs),
]


def _load(results: Path, name: str, title: str) -> list[tuple[str, dict[str, Any]]]:
    """The section's results with their titles: ``<name>.json``, or for a per-CPU ``<name>-*`` every
    ``<name>-<CPU>.json``, its CPU named in the title; empty when none was written."""
    if not name.endswith("-*"):
        path = results / f"{name}.json"
        return [(title, json.loads(path.read_text()))] if path.exists() else []
    return [(f"{title}, on {path.stem.removeprefix(name[:-1])}", json.loads(path.read_text()))
            for path in sorted(results.glob(f"{name}.json"))]


def still_to_run(r: dict) -> list[str]:
    """The runs of a comparison's plan (``bench-scaling --plan``) that its goals still wait for, e.g. "async-2
    seed 0"."""
    return sorted({f"{mode} seed {seed}" for by_mode in (r.get("goals") or {}).values()
                   for mode, g in by_mode.items() for seed in g.get("to_run", [])})


def _section(title: str, target: str, render: Callable[[dict], list[str]], r: dict[str, Any]) -> list[str]:
    """One section of the report: its heading, where and when it was measured, and ``render(r)``."""
    ran = r.get("machine", {})
    runs = r.get("runs_machine")  # a comparison summarised later names the machine its runs were trained on
    trained = f"; its runs trained on {cpu_label(runs)}" if runs and cpu_label(runs) != cpu_label(ran) else ""
    return [f"## {title}", "", f"`{target}` — measured {ran.get('date', '?')} on {ran.get('cores', '?')} cores "
            f"({cpu_label(ran)}){trained}.", "", *render(r), ""]


def main(argv: list[str] | None = None) -> None:
    """Write ``<results>/REPORT.md``: every section in :data:`SECTIONS` order, the missing ones listed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    args = ap.parse_args(argv)
    results = Path(args.results)
    m = machine()
    lines = ["# ddqn: reproduction report", "",
             f"This file was written {time.strftime('%Y-%m-%d %H:%M %Z')} from the JSON in results/ (on "
             f"{m['cores']} cores, {cpu_label(m)}, Python {m['python']}); the figures were not measured then and "
             "there: each section names the date and CPU its figures were measured on and the target that "
             "regenerates it. Speeds are ratios measured within one run where possible (these machines are shared "
             "and noisy).", ""]
    missing, partial = [], []
    for name, section, target, render in SECTIONS:
        if not (found := _load(results, name, section)):
            missing.append(f"`{target}` ({section})")
        for title, r in found:
            lines += _section(title, target, render, r)
            if to_run := still_to_run(r):
                partial.append(f"`{target}` ({title}): runs of its plan still to train: {', '.join(to_run)}")
    if missing or partial:
        lines += ["## Not yet measured", "", *[f"- {x}" for x in missing + partial], ""]
    path = results / "REPORT.md"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path} ({len(SECTIONS) - len(missing)} of {len(SECTIONS)} sections)")
