"""The slides' "compute/communicate times scale linearly with model size", measured per update.

``python -m ddqn.bench.worker_speed [--members small paper large x64 x128] [--repeats N]`` times, for each
member of the Q-network family, one worker update's gradient computation (targets from Q̂ + forward and
backward on a minibatch of 32, one OpenBLAS thread) and its communication with a real parameter server on
127.0.0.1 (FETCH of a new θ + PUSH of the gradient, authenticated). Fits a line to each against the
parameter count, prints R², and writes results/worker_speed.json and results/worker_speed.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ddqn.bench.common import figure, worker_update_ms, write_result

# the 2015 system's own figures (../shared/FACTS.md): parameters → gradient compute ms, server latency ms
PAPER_2015 = {228_132: (81.7, 5), 621_348: (252.8, 15), 2_194_212: (981.5, 40), 8_484_668: (4044, 116)}


def fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line y = a·x + b and its R²."""
    a, b = np.polyfit(x, y, 1)
    resid = y - (a * x + b)
    r2 = 1 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
    return {"slope_ms_per_mparam": float(a * 1e6), "intercept_ms": float(b), "r2": r2}


def plot(rows: list[dict], fits: dict[str, dict], path: Path) -> Path:
    """Compute and communicate ms per update vs parameters, with the fitted lines and the 2015 system's compute."""
    x = np.array([r["params"] for r in rows]) / 1e6
    with figure(path) as (_, ax):
        for key, label in (("compute_ms", "gradient compute"), ("communicate_ms", "communicate (fetch + push)")):
            f = fits[key]
            ax.plot(x, [r[key] for r in rows], "o", label=f"{label} (R² {f['r2']:.3f})")
            xs = np.linspace(0, x.max(), 50)
            ax.plot(xs, f["slope_ms_per_mparam"] * xs + f["intercept_ms"], "--", lw=1)
        px = np.array(list(PAPER_2015)) / 1e6
        ax.plot(px, [v[0] for v in PAPER_2015.values()], "x", color="grey", label="2015 system: compute")
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel("ms per update")
        ax.set_title("Compute/communicate time per update vs model size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--members", nargs="+", default=["small", "paper", "large", "x64", "x128"])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    rows = []
    for m in args.members:
        rows.append(r := worker_update_ms(m, args.repeats))
        print(f"{m:>6s}: {r['params']:>10,d} params: compute {r['compute_ms']:9.1f} ms, "
              f"communicate {r['communicate_ms']:7.2f} ms per update", flush=True)
    x = np.array([r["params"] for r in rows], float)
    fits = {k: fit(x, np.array([r[k] for r in rows])) for k in ("compute_ms", "communicate_ms")}
    for k, f in fits.items():
        print(f"{k}: {f['slope_ms_per_mparam']:.2f} ms per million parameters + {f['intercept_ms']:.2f} ms, "
              f"R² {f['r2']:.4f}")
    png = plot(rows, fits, Path(args.out) / "worker_speed.png")
    write_result("worker_speed", {"rows": rows, "fits": fits, "paper_2015": PAPER_2015, "png": str(png)}, args.out)


if __name__ == "__main__":
    main()
