"""Build real BVLC Caffe's pycaffe (CPU only) into a cache and link it into the running Python.

Run as ``python -m ddqn.caffe_build`` (``make install`` does): stdlib only, so it works before ddqn's
own dependencies are importable. Idempotent: a cached, verified build is reused; a fresh machine builds
(≈ 5 min on 2 cores). Nothing is reported as done until ``import caffe`` succeeds in a new process.

There is no pycaffe wheel on PyPI and no Caffe package in Debian 12; the PyPI source distribution
``brocolli-caffe==9.0.2`` carries BVLC Caffe master 9b89154, whose CMake project we build directly.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

SDIST = "brocolli-caffe==9.0.2"
SDIST_FILE = "brocolli-caffe-9.0.2.tar.gz"
SDIST_SHA256 = "c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a"
CAFFE_COMMIT = "9b89154"
PTH_NAME = "ddqn-pycaffe.pth"


class BuildError(RuntimeError):
    """A build step failed; the message names the step and what is missing."""


def cache_root() -> Path:
    """Cache directory outside the repository (``$DDQN_CACHE`` or ``~/.cache/ddqn``)."""
    return Path(os.environ.get("DDQN_CACHE", Path.home() / ".cache" / "ddqn"))


def build_dir() -> Path:
    """Build location keyed by Caffe commit and Python version."""
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_root() / f"caffe-{CAFFE_COMMIT}-{py}"


def _run(cmd: list[str], step: str, cwd: Path | None = None, log: Path | None = None) -> None:
    print(f"[caffe-build] {step}", flush=True)
    out = open(log, "ab") if log else None
    try:
        rc = subprocess.call(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if out else None)
    finally:
        if out:
            out.close()
    if rc != 0:
        tail = ""
        if log and log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"{step} failed (exit {rc}); log: {log}\n{tail}")


def _fetch_sdist(dest: Path) -> Path:
    """Download the pinned sdist with pip and verify its sha256."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
          "-q", "-d", str(dest), SDIST], f"download {SDIST} from PyPI")
    path = dest / SDIST_FILE
    if not path.exists():
        raise BuildError(f"pip did not produce {SDIST_FILE}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise BuildError(f"{SDIST_FILE}: sha256 {digest} != pinned {SDIST_SHA256}")
    return path


def _link_dir(root: Path) -> Path:
    """Linker search dir whose generic names point at Debian's versioned libraries."""
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    libdir = Path("/usr/lib") / multiarch
    pyver = f"{sys.version_info.major}{sys.version_info.minor}"
    links = {
        "libboost_python.so": libdir / f"libboost_python{pyver}.so",
        "libhdf5.so": libdir / "hdf5/serial/libhdf5.so",
        "libhdf5_hl.so": libdir / "hdf5/serial/libhdf5_hl.so",
    }
    out = root / "linkdir"
    out.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        if not target.exists():
            raise BuildError(f"missing {target} (install the Debian packages listed in the Makefile)")
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return out


def _numpy_include() -> str:
    try:
        import numpy  # noqa: PLC0415 - only needed at build time
    except ImportError as exc:
        raise BuildError("numpy is not installed in this Python (run pip install first)") from exc
    return numpy.get_include()


def build(root: Path, jobs: int) -> None:
    """Download, configure and compile ``make pycaffe`` into ``root``."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    log = root / "build.log"
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _fetch_sdist(Path(tmp))
        with tarfile.open(sdist) as tar:
            tar.extractall(root, filter="data")
    src = root / SDIST_FILE.removesuffix(".tar.gz")
    src.rename(root / "src")
    src = root / "src"
    link = _link_dir(root)
    bld = src / "build"
    bld.mkdir()
    prefix = sysconfig.get_config_var("prefix") or sys.base_prefix
    cxx = f"-I/usr/include/hdf5/serial -I{_numpy_include()}"
    ldf = f"-L{link}"
    _run(["cmake", "..", "-DCPU_ONLY=ON", "-DBLAS=Open", "-DCMAKE_BUILD_TYPE=Release",
          "-DBUILD_docs=OFF", "-DBUILD_python=ON", "-Dpython_version=3",
          f"-DANACONDA_HOME={prefix}", f"-DPYTHON_VERSION=python{sys.version_info.major}.{sys.version_info.minor}",
          f"-DPYTHON_EXECUTABLE={sys.executable}",
          "-DUSE_OPENCV=OFF", "-DUSE_LMDB=ON", "-DUSE_LEVELDB=ON", "-DUSE_HDF5=ON",
          f"-DCMAKE_CXX_FLAGS={cxx}", f"-DCMAKE_EXE_LINKER_FLAGS={ldf}",
          f"-DCMAKE_SHARED_LINKER_FLAGS={ldf}"], "cmake configure", cwd=bld, log=log)
    _run(["make", f"-j{jobs}", "pycaffe"], f"make pycaffe (-j{jobs}, log {log})", cwd=bld, log=log)
    if not (src / "python/caffe/_caffe.so").exists():
        raise BuildError("make pycaffe finished but python/caffe/_caffe.so is missing")


def link_into_python(root: Path) -> Path:
    """Write a .pth file so this interpreter (e.g. the venv) imports ``caffe`` from the build."""
    site = Path(sysconfig.get_paths()["purelib"])
    pth = site / PTH_NAME
    pth.write_text(str(root / "src" / "python") + "\n")
    return pth


def import_ok() -> tuple[bool, str]:
    """Import caffe in a fresh process; return (ok, error text)."""
    env = dict(os.environ, GLOG_minloglevel="2")
    res = subprocess.run([sys.executable, "-c", "import caffe, caffe.proto.caffe_pb2; caffe.set_mode_cpu()"],
                         capture_output=True, text=True, env=env)
    return res.returncode == 0, (res.stderr.strip().splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ddqn.caffe_build", description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if a verified build is cached")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")
    args = ap.parse_args(argv)
    root = build_dir()
    stamp = root / "BUILD_OK"
    try:
        ok = False
        if stamp.exists() and not args.force:
            link_into_python(root)
            ok, _ = import_ok()  # a cached build that no longer imports is rebuilt
        if not ok:
            build(root, args.jobs)
            link_into_python(root)
            ok, err = import_ok()
            if not ok:
                raise BuildError(f"import caffe failed after build in {root}: {err}")
        stamp.write_text(f"{SDIST} {SDIST_SHA256}\n")
    except BuildError as exc:
        stamp.unlink(missing_ok=True)
        print(f"caffe-build: error: {exc}", file=sys.stderr)
        return 1
    print(f"[caffe-build] pycaffe ready: {root / 'src/python/caffe'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
