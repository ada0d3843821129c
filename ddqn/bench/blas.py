"""Caffe's forward+backward on each BLAS a registry provides, in one run (the faster-learner issue's table).

``python -m ddqn.bench.blas [--rounds 3] [--repeats 40]`` times the paper and large nets (batch 32, one BLAS
thread) with the Caffe that ``make install`` built, once per candidate BLAS, in interleaved rounds:

* Debian's OpenBLAS 0.3.21 — what Caffe links;
* OpenBLAS 0.3.3x from PyPI (``scipy-openblas32``, symbols prefixed ``scipy_``): a trampoline library that
  maps each ``cblas_*`` symbol Caffe imports to its ``scipy_cblas_*`` twin is compiled and preloaded;
* Intel MKL from PyPI (``mkl``, sequential layer);
* BLIS from Debian (``libblis4-pthread``, which has a CBLAS interface).

A candidate is swapped in by symbol interposition (``LD_PRELOAD``): Caffe's calls to ``cblas_*`` resolve to
the preloaded library, so the same Caffe binary runs each BLAS's kernels, each pinned to one thread. The
candidates are installed into ``$DDQN_CACHE/blas`` (pip ``--prefix``, where wheels put their libraries;
BLIS from Debian by ``make bench-blas``). Writes results/blas.json: ms per candidate (median over rounds),
and the winner's share of the ≈ 12 ms physical limit of the paper net (≈ 1 GFLOP at one core's ≈ 80
GFLOP/s FP32 peak). The tables of other CPUs (model and vector ISA) already in it are kept, one per CPU, since
a BLAS's rank depends on the CPU it runs on.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ddqn.bench.common import machine, write_result
from ddqn.net.caffe_build import cache_root

PYPI = {"scipy-openblas32": "scipy-openblas32==0.3.34.481.3", "mkl": "mkl==2026.2.0"}
BLIS = Path("/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4")
PAPER_LIMIT_MS = 12.0  # ≈ 1 GFLOP per forward+backward at batch 32 / ≈ 80 GFLOP/s one-core FP32 peak
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BLIS_NUM_THREADS": "1",
              "MKL_THREADING_LAYER": "SEQUENTIAL", "OMP_NUM_THREADS": "1"}
TIMER = ("import json, sys; from ddqn.bench.common import net_spec, time_net; "
         "print(json.dumps({m: time_net(net_spec(m), int(sys.argv[1])) for m in ('paper', 'large')}))")


def _pip_target(name: str, root: Path) -> Path:
    """``PYPI[name]`` installed (once) under the prefix ``root/<name>``."""
    target = root / name
    if not (target / ".ok").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--prefix", str(target),
                        PYPI[name]], check=True)
        (target / ".ok").touch()
    return target


def _caffe_cblas_symbols() -> list[str]:
    """The ``cblas_*`` symbols the built ``_caffe.so`` imports."""
    import caffe  # noqa: PLC0415 - only to find the compiled module

    so = Path(caffe.__file__).parent / "_caffe.so"
    out = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=True)
    return sorted({line.split()[-1] for line in out.stdout.splitlines() if line.split()[-1].startswith("cblas_")})


def _scipy_openblas_shim(root: Path) -> Path:
    """A library whose every ``cblas_X`` jumps to ``scipy_cblas_X`` in scipy-openblas32's library."""
    lib = next(_pip_target("scipy-openblas32", root).rglob("libscipy_openblas*.so"))
    shim = root / "libcblas_to_scipy_openblas.so"
    if not shim.exists():
        asm = "".join(f".globl {s}\n.type {s},@function\n{s}:\n  jmp scipy_{s}@PLT\n" for s in _caffe_cblas_symbols())
        src = root / "shim.S"
        src.write_text(asm + '.section .note.GNU-stack,"",@progbits\n')
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(shim), str(src), f"-L{lib.parent}",
                        f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"], check=True)
    return shim


def candidates(root: Path) -> dict[str, dict[str, str]]:
    """Environment overrides that swap each available BLAS in (empty: Caffe's own link)."""
    out: dict[str, dict[str, str]] = {"OpenBLAS 0.3.21 (Debian, linked)": {}}
    out["OpenBLAS 0.3.34 (PyPI scipy-openblas32)"] = {"LD_PRELOAD": str(_scipy_openblas_shim(root))}
    mkl = next(_pip_target("mkl", root).rglob("libmkl_rt.so.*"))
    out["MKL 2026.2 (PyPI mkl, sequential)"] = {"LD_PRELOAD": str(mkl), "LD_LIBRARY_PATH": str(mkl.parent)}
    if BLIS.exists():
        out["BLIS 0.9.0 (Debian libblis4-pthread)"] = {"LD_PRELOAD": str(BLIS)}
    return out


def time_candidate(env: dict[str, str], repeats: int) -> dict[str, dict[str, float]]:
    """The paper and large nets' timings in a fresh process with ``env``."""
    res = subprocess.run([sys.executable, "-c", TIMER, str(repeats)], env={**os.environ, **ONE_THREAD, **env},
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the candidates")
    ap.add_argument("--repeats", type=int, default=40, help="minibatches timed per net and round")
    args = ap.parse_args(argv)
    root = cache_root() / "blas"
    root.mkdir(parents=True, exist_ok=True)
    envs = candidates(root)
    runs: dict[str, list[dict]] = {name: [] for name in envs}
    for r in range(args.rounds):
        for name, env in envs.items():
            runs[name].append(t := time_candidate(env, args.repeats))
            print(f"round {r + 1}: {name:<40s} paper {t['paper']['forward_backward_ms']:6.2f} ms, "
                  f"large {t['large']['forward_backward_ms']:6.2f} ms", flush=True)
    table = {name: {net: float(np.median([t[net]["forward_backward_ms"] for t in ts])) for net in ("paper", "large")}
             for name, ts in runs.items()}
    base = table["OpenBLAS 0.3.21 (Debian, linked)"]
    winner = min(table, key=lambda n: table[n]["paper"])
    for name, t in table.items():
        print(f"{name:<40s} paper {t['paper']:6.2f} ms ({base['paper'] / t['paper']:.2f}x), "
              f"large {t['large']:6.2f} ms ({base['large'] / t['large']:.2f}x)")
    share = PAPER_LIMIT_MS / table[winner]["paper"]
    print(f"fastest on the paper net: {winner}, {100 * share:.0f} % of the ≈ {PAPER_LIMIT_MS:g} ms limit")
    this = {"table_ms": table, "runs": runs, "winner": winner, "winner_share_of_limit": share,
            "rounds": args.rounds, "repeats": args.repeats, "machine": machine()}
    write_result("blas", {"limit_ms": PAPER_LIMIT_MS, "cpus": {**other_cpus(Path(args.out) / "blas.json"),
                                                               cpu_label(this["machine"]): this}}, args.out)


def cpu_label(m: dict) -> str:
    """A CPU as a BLAS sees it: model name and widest vector ISA."""
    return f"{m.get('cpu', '?')}, {m.get('isa', '?')}"


def other_cpus(path: Path) -> dict[str, dict]:
    """The tables of ``path`` (an earlier blas.json) measured on CPUs other than this one."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    here = cpu_label(machine())
    return {label: t for label, t in old.get("cpus", {}).items() if label != here}


if __name__ == "__main__":
    main()
