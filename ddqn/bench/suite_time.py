"""The test suite's time per file, from the JUnit XML of one ``make test`` run.

``python -m ddqn.bench.suite_time JUNIT_XML [--wall S]`` sums pytest's per-test times (set-up, call and
tear-down of each test) by test file and writes results/suite_time.json: per file its tests and seconds, the
total, the wall time of ``make test`` when given (``--wall``: with lint, collection and pytest's own start), the 15
slowest tests, the goal (``GOAL_WALL_S``) and whether the wall time met it, the CPU and the date.
``make bench-suite`` runs ``make test`` with a JUnit file and then this; docs/testing.md's budget column is traced
to the JSON (docs/figures.yaml).
"""
from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ddqn.bench.common import write_result

SLOWEST = 15  # as many as make test's --durations lists
GOAL_WALL_S = 720  # make test's wall-time goal on 2 cores, host tests included (12 minutes)


def test_file(classname: str) -> str:
    """``tests.test_hosts`` (pytest's JUnit classname of a module-level test) → ``tests/test_hosts.py``; a test in
    a class (``tests.test_x.TestY``) belongs to its module."""
    parts = classname.split(".")
    module = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
    return "/".join(parts[:module + 1]) + ".py"


def suite_times(junit: Path) -> dict[str, Any]:
    """Per-file tests and seconds (keyed by the file's name, ``test_hosts.py``), the total and the slowest tests of
    one JUnit XML (seconds, one decimal)."""
    cases = [(test_file(tc.get("classname", "")), tc.get("name", ""), float(tc.get("time") or 0.0),
              tc.find("failure") is not None or tc.find("error") is not None)
             for tc in ET.parse(junit).iter("testcase")]
    if not cases:
        raise SystemExit(f"{junit}: no test cases in it")
    files: dict[str, dict[str, Any]] = collections.defaultdict(lambda: {"tests": 0, "seconds": 0.0})
    for path, _, seconds, _ in cases:  # keyed by file name: a figures.yaml key path splits at "/"
        files[Path(path).name]["tests"] += 1
        files[Path(path).name]["seconds"] += seconds
    ordered = dict(sorted(((p, {"tests": v["tests"], "seconds": round(v["seconds"], 1)}) for p, v in files.items()),
                          key=lambda kv: -kv[1]["seconds"]))
    slowest = sorted(cases, key=lambda c: -c[2])[:SLOWEST]
    return {"files": ordered, "tests": len(cases), "failed": sum(c[3] for c in cases),
            "total_s": round(sum(c[2] for c in cases), 1),
            "slowest": [{"test": f"{p}::{n}", "seconds": round(s, 1)} for p, n, s, _ in slowest]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ddqn.bench.suite_time", description=__doc__.splitlines()[0])
    ap.add_argument("junit", type=Path, help="pytest --junitxml output of one make test run")
    ap.add_argument("--wall", type=float, help="make test's wall-clock seconds (with lint and pytest's start)")
    ap.add_argument("--out", default="results", help="results directory")
    args = ap.parse_args(argv)
    met = None if args.wall is None else args.wall <= GOAL_WALL_S
    data = {**suite_times(args.junit), "wall_s": args.wall, "goal_wall_s": GOAL_WALL_S, "goal_met": met,
            "command": "make bench-suite"}
    for path, row in data["files"].items():
        print(f"{row['seconds']:8.1f} s  {row['tests']:4d} tests  tests/{path}")
    print(f"{data['total_s']:8.1f} s  {data['tests']:4d} tests  (wall {args.wall} s; {data['failed']} failed)")
    if met is not None:
        print(f"goal: make test within {GOAL_WALL_S} s wall: {'met' if met else 'missed'}")
    write_result("suite_time", data, args.out)


if __name__ == "__main__":
    main()
