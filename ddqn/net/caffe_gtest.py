"""Caffe's own convolution, pooling and neuron (ReLU) layer tests, gradient checks included, against the patched build:
``make test-caffe``.

Run as ``python -m ddqn.net.caffe_gtest [--root BUILD]``. Compiles ``src/caffe/test/test_convolution_layer.cpp``
``test_pooling_layer.cpp`` and ``test_neuron_layer.cpp`` (ReLU's, among the other neuron layers': the layers
ddqn's patches change) with Caffe's test main and its bundled gtest, links them with the pycaffe
target's own Caffe objects (every one but the Python module's), ``libproto.a`` and oneDNN (Caffe's CMake test
target links a ``caffe`` library this CMake project does not define, so the link is made here), then runs them
with ``ONEDNN_VERBOSE=1``. It passes when every test passed and oneDNN executed convolutions: the patched engine
was under test, not Caffe's im2col path. Objects go to ``BUILD/gtest`` and are reused while newer than their
sources. Stdlib only, like ``caffe_build``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from ddqn.net.caffe_build import build_dir, build_key

SOURCES = ("src/caffe/test/test_convolution_layer.cpp", "src/caffe/test/test_pooling_layer.cpp",
           "src/caffe/test/test_neuron_layer.cpp",
           "src/caffe/test/test_caffe_main.cpp", "src/gtest/gtest-all.cpp")
LIBS = ("-lglog", "-lgflags", "-lprotobuf", "-lboost_thread", "-lboost_system", "-lboost_filesystem",
        "-lboost_regex", "-lhdf5_hl", "-lhdf5", "-lopenblas", "-lpthread")
TIMEOUT_S = 1800  # one compile or the test run; the compiles take minutes on 2 cores, the run seconds


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    print(f"[caffe-gtest] {what}", flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, **kw)
    if res.returncode:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"caffe-gtest: error: {what} failed (exit {res.returncode}):\n{tail}")
    return res


def build_tests(root: Path) -> Path:
    """Compile (when stale) and link the test binary of build ``root``; returns its path."""
    src, bld, out = root / "src", root / "src" / "build", root / "gtest"
    out.mkdir(exist_ok=True)
    flags = ["-std=c++14", "-O2", "-DNDEBUG", "-DCPU_ONLY=1", "-DCAFFE_VERSION=1.0.0", f"-I{bld}/include",
             f"-I{bld}", f"-I{src}/include", f"-I{src}/src", "-I/usr/include/hdf5/serial"]
    objs = []
    for rel in SOURCES:
        obj = out / (Path(rel).stem + ".o")
        if not obj.exists() or obj.stat().st_mtime < (src / rel).stat().st_mtime:
            _run(["c++", *flags, "-c", str(src / rel), "-o", str(obj)], f"compile {rel}")
        objs.append(str(obj))
    caffe_objs = sorted(str(p) for p in (bld / "python/CMakeFiles/pycaffe.dir/__").rglob("*.o"))
    if not caffe_objs:
        raise SystemExit(f"caffe-gtest: error: no Caffe objects under {bld}/python/CMakeFiles (run make install)")
    onednn = root / "onednn" / "lib"
    binary = out / "test_patched_layers"
    _run(["c++", "-o", str(binary), *objs, *caffe_objs, str(bld / "lib/libproto.a"), f"-L{root / 'linkdir'}",
          f"-Wl,-rpath,{onednn}", str(onednn / "libdnnl.so.3"), *LIBS], f"link {binary}")
    return binary


def run_tests(binary: Path) -> tuple[int, int]:
    """Run the tests on one thread with oneDNN's verbose log; returns (tests passed, oneDNN convolutions run)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    res = _run([str(binary)], f"run {binary.name} (ONEDNN_VERBOSE=1)", env=env)
    passed = re.search(r"\[  PASSED  \] (\d+) tests?", res.stdout)
    convs = sum(1 for line in res.stdout.splitlines() if line.startswith("onednn_verbose") and ",exec," in line
                and "convolution" in line)
    if not passed or "FAILED" in res.stdout:
        raise SystemExit("caffe-gtest: error: tests failed:\n" + "\n".join(
            ln for ln in res.stdout.splitlines() if "FAILED" in ln or "Failure" in ln))
    return int(passed.group(1)), convs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ddqn.net.caffe_gtest", description=__doc__.splitlines()[0] + " "
                                 + __doc__.splitlines()[1])
    ap.add_argument("--root", type=Path, help="a caffe_build directory (default: the build this interpreter links)")
    args = ap.parse_args(argv)
    root = args.root or build_dir(build_key())
    if not (root / "BUILD_OK").exists():
        print(f"caffe-gtest: error: {root} is not a verified Caffe build (run make install)", file=sys.stderr)
        return 1
    if not (root / "onednn" / "lib" / "libdnnl.so.3").exists():
        print(f"caffe-gtest: error: {root} has no oneDNN: a build without the convolution patch", file=sys.stderr)
        return 1
    passed, convs = run_tests(build_tests(root))
    if convs == 0:
        print("caffe-gtest: error: every test passed but oneDNN ran no convolution: the patched engine was not "
              "under test", file=sys.stderr)
        return 1
    print(f"caffe-gtest: {passed} convolution, pooling and neuron layer tests passed (Caffe's own, gradient "
          "checks included); "
          f"oneDNN ran {convs} convolution primitives")
    return 0


if __name__ == "__main__":
    sys.exit(main())
