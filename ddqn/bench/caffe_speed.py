"""Forward+backward time of the Q-network family on real pycaffe (batch 32, one OpenBLAS thread).

``python -m ddqn.bench.caffe_speed [--repeats N]`` prints milliseconds per minibatch for each model
size and writes results/caffe_speed.json. The 2015 system's own figure for the paper net was 81.7 ms
on a dual-core i7 (see ../shared/FACTS.md).
"""
from __future__ import annotations

import argparse

from ddqn.bench.common import net_spec, time_net, write_result

MEMBERS = ("small", "paper", "large")


def time_member(member: str, repeats: int) -> dict[str, float]:
    """Median forward+backward and forward-only milliseconds for one shipped net, prototxt/snake_<member>."""
    return time_net(net_spec(member), repeats)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--members", nargs="+", default=list(MEMBERS), help=f"prototxt/snake_<member> (default {MEMBERS})")
    args = ap.parse_args(argv)
    rows = {}
    for m in args.members:
        rows[m] = r = time_member(m, args.repeats)
        print(f"{m:>6s}: {r['params']:>9,d} params, {r['input']}x{r['input']} input: "
              f"forward+backward {r['forward_backward_ms']:7.2f} ms, forward {r['forward_ms']:6.2f} ms "
              f"(batch {r['batch']})")
    write_result("caffe_speed", {"members": rows}, args.out)


if __name__ == "__main__":
    main()
