"""Build real BVLC Caffe's pycaffe (CPU only) into a cache and link it into the running Python.

Run as ``python -m ddqn.net.caffe_build`` (``make install`` does): stdlib only, so it works before ddqn's
own dependencies are importable. Idempotent: a cached, verified build is reused; a fresh machine builds
(minutes on 2 cores). Nothing is reported as done until ``import caffe`` succeeds in a new process.

There is no pycaffe wheel on PyPI and no Caffe package in Debian 12; the PyPI source distribution
``brocolli-caffe==9.0.2`` carries BVLC Caffe master 9b89154, whose CMake project we build directly.

BLAS (``--blas``, ``make install BLAS=…``): ``openblas`` (default) links Debian's OpenBLAS; ``mkl`` installs Intel
MKL from PyPI (pinned, ``pip --prefix`` inside the build directory, so the venv does not grow) and builds with
Caffe's ``BLAS=MKL`` through MKL's single dynamic library, run in its sequential layer (``ddqn.net.caffe_env``).
Each choice is its own cached build; the last one built or named is the one linked into the interpreter.

Patches (``ddqn/net/caffe_patches/*.patch``, applied in name order with ``patch -p1`` to the sha-checked source)
carry what the pinned Caffe needs on newer toolchains (Debian 13: Boost 1.83, GCC 14, Python 3.13), the oneDNN
convolution engine (``0002-onednn-convolution.patch``: ConvolutionLayer's forward and gradients on oneDNN
primitives), and loops for max pooling's forward and ReLU's backward that give the same bits without a branch per
element (``0003-maxpool-forward.patch``, ``0004-relu-backward.patch``). oneDNN 3.2 comes from PyPI, pinned
(``ONEDNN_PINS``: the library built with GNU OpenMP and its headers), installed with ``pip --prefix`` inside the
build directory like MKL, so Debian 12 and 13 build against the same version (Debian's own, 2.6.3 and 3.7.2, differ
in API); it runs one thread (``OMP_NUM_THREADS=1``, ``ddqn.net.caffe_env``). The cache key covers the patches, the
oneDNN pins, the compiler flags and the Debian release whose Boost, protobuf and compiler the build links.
"""
from __future__ import annotations

import argparse
import hashlib
import json
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
BLAS_CHOICES = ("openblas", "mkl")
MKL_PINS = ("mkl==2026.2.0", "mkl-include==2026.2.0")  # PyPI wheels: libmkl_rt.so.3 and mkl.h
# PyPI wheels: oneDNN 3.2.0's libdnnl.so.3 built with GNU OpenMP (needs only libgomp.so.1, GCC's) and its headers.
# PyPI's newer onednn 2026.1 is the SYCL build (libsycl, TBB, Intel's compiler runtime), not a CPU-only library.
ONEDNN_PINS = ("onednn-cpu-gomp==2023.2.0", "onednn-devel-cpu-gomp==2023.2.0")
PTH_NAME = "ddqn-pycaffe.pth"
PATCH_DIR = Path(__file__).with_name("caffe_patches")
# CMake options and C++ flags beside the per-machine paths (numpy's include dir, the link dir): part of the key.
CMAKE_OPTIONS = ("-DCPU_ONLY=ON", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_docs=OFF", "-DBUILD_python=ON",
                 "-Dpython_version=3", "-DUSE_OPENCV=OFF", "-DUSE_LMDB=ON", "-DUSE_LEVELDB=ON", "-DUSE_HDF5=ON")
CXX_FLAGS = "-I/usr/include/hdf5/serial"


class BuildError(RuntimeError):
    """A build step failed; the message names the step and what is missing."""


def cache_root() -> Path:
    """Cache directory outside the repository (``$DDQN_CACHE`` or ``~/.cache/ddqn``)."""
    return Path(os.environ.get("DDQN_CACHE", Path.home() / ".cache" / "ddqn"))


def patches(without: tuple[str, ...] = ()) -> list[Path]:
    """The patch files applied to the Caffe source, in the order they are applied; ``without`` names patches left
    out (a baseline build for benchmarks, e.g. today's Caffe before a speed patch)."""
    every = sorted(PATCH_DIR.glob("*.patch"))
    unknown = sorted(set(without) - {p.name for p in every})
    if unknown:
        raise BuildError(f"no patch named {', '.join(unknown)} in {PATCH_DIR} "
                         f"(there are: {', '.join(p.name for p in every)})")
    return [p for p in every if p.name not in without]


def uses_onednn(applied: list[Path]) -> bool:
    """Whether the applied patches build Caffe against oneDNN (the convolution engine's patch)."""
    return any("onednn" in p.name for p in applied)


def system_release() -> str:
    """``ID VERSION_ID`` from ``/etc/os-release`` (``debian 13``): whose Boost, protobuf and GCC the build links."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            name, _, value = line.partition("=")
            fields[name] = value.strip().strip('"')
    except OSError:
        return "unknown"
    return f"{fields.get('ID', 'unknown')} {fields.get('VERSION_ID', '')}".strip()


def compiler() -> str:
    """The C++ compiler's version (``c++ -dumpfullversion``), or ``none`` before build-essential is installed."""
    try:
        out = subprocess.run(["c++", "-dumpfullversion"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "none"
    return out.strip()


def build_key(blas: str = "openblas", without: tuple[str, ...] = ()) -> dict[str, str]:
    """What the compiled ``_caffe.so`` depends on: the Caffe source and the patches applied to it, the interpreter
    it links (its real path and full version), the numpy C ABI and API it was compiled against, the BLAS
    (``BLAS_CHOICES``), oneDNN (``ONEDNN_PINS``), the CMake options and C++ flags, the compiler and the system
    release. A build without the oneDNN patch has no oneDNN field (the key such builds had before it)."""
    import numpy  # noqa: PLC0415 - only needed at build time
    from numpy._core._multiarray_umath import _get_ndarray_c_version  # noqa: PLC0415

    applied = patches(without)
    key = {
        "caffe": f"{CAFFE_COMMIT} {SDIST_SHA256}",
        "patches": " ".join(f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}" for p in applied),
        "python": f"{os.path.realpath(sys._base_executable)} {sys.version.split()[0]}",
        "numpy": f"abi {_get_ndarray_c_version():#x} {'.'.join(numpy.__version__.split('.')[:2])}",
        "blas": "Open" if blas == "openblas" else f"MKL {' '.join(MKL_PINS)}",  # the openblas key predates mkl
        "onednn": " ".join(ONEDNN_PINS),
        "flags": f"{' '.join(CMAKE_OPTIONS)} CXX {CXX_FLAGS}",
        "compiler": compiler(),
        "system": system_release(),
    }
    if not uses_onednn(applied):
        del key["onednn"]
    return key


def build_dir(key: dict[str, str] | None = None) -> Path:
    """Build location: one directory per distinct :func:`build_key`."""
    key = build_key() if key is None else key
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / f"caffe-{CAFFE_COMMIT}-py{sys.version_info.major}.{sys.version_info.minor}-{digest}"


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


def _unsafe_member(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why ``member`` may not be extracted into ``dest`` (None when it may): only regular files and
    directories, with relative paths that stay inside ``dest``."""
    name = member.name
    if name.startswith(("/", "\\")) or Path(name).is_absolute():
        return "absolute path"
    if ".." in Path(name).parts:
        return "'..' in path"
    if not (member.isfile() or member.isdir()):
        return "link or special file" if (member.issym() or member.islnk()) else "device or special file"
    if not (dest / name).resolve().is_relative_to(dest.resolve()):
        return "path leaves the destination"
    return None


def extract_sdist(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` safely on every supported Python: refuse (before anything is written) any
    member that has an absolute path, ``..``, a link or a device, the same everywhere (tarfile's ``data`` filter
    would strip a leading ``/`` instead), then extract with that filter where the interpreter has it (3.11.4+),
    otherwise dropping setuid/setgid/sticky and group/other write bits by hand."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            why = _unsafe_member(member, dest)
            if why:
                raise BuildError(f"{archive.name}: refused member {member.name!r}: {why}")
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                raise BuildError(f"{archive.name}: refused member: {exc}") from exc
            return
        for member in members:
            member.mode &= 0o755
        tar.extractall(dest, members=members)


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
        others = sorted(p.name for p in libdir.glob("libboost_python3*.so"))
        if name == "libboost_python.so" and not target.exists() and others:
            raise BuildError(f"missing {target}: Debian's Boost.Python is built for its own python3 "
                             f"({', '.join(others)}), not for Python {sys.version.split()[0]}; "
                             "make install PYTHON=/usr/bin/python3")
        if not target.exists():
            raise BuildError(f"missing {target} (install the Debian packages listed in the Makefile)")
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return out


def _numpy_include() -> str:
    import numpy  # noqa: PLC0415 - only needed at build time (main checked that it imports)

    return numpy.get_include()


def _mkl(root: Path, log: Path) -> list[str]:
    """MKL from PyPI under ``root/mkl``; the CMake arguments that build Caffe against its ``libmkl_rt``."""
    prefix = root / "mkl"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--prefix", str(prefix), *MKL_PINS],
         f"install {' '.join(MKL_PINS)} from PyPI", log=log)
    rt = sorted((prefix / "lib").glob("libmkl_rt.so.*"))
    if not rt or not (prefix / "include" / "mkl.h").exists():
        raise BuildError(f"{' '.join(MKL_PINS)} did not install libmkl_rt.so.* and include/mkl.h under {prefix}")
    return ["-DBLAS=MKL", "-DMKL_USE_SINGLE_DYNAMIC_LIBRARY=ON", f"-DMKL_INCLUDE_DIR={prefix / 'include'}",
            f"-DMKL_RT_LIBRARY={rt[0]}"]


def _onednn(root: Path, log: Path) -> list[str]:
    """oneDNN from PyPI under ``root/onednn``; the CMake argument that builds Caffe's convolution engine on it."""
    prefix = root / "onednn"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--prefix", str(prefix), *ONEDNN_PINS],
         f"install {' '.join(ONEDNN_PINS)} from PyPI", log=log)
    lib = prefix / "lib" / "libdnnl.so.3"
    if not lib.is_file() or not (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists():
        raise BuildError(f"{' '.join(ONEDNN_PINS)} did not install lib/libdnnl.so.3 and "
                         f"include/oneapi/dnnl/dnnl.hpp under {prefix}")
    for copy in (lib.with_name("libdnnl.so"), *lib.parent.glob("libdnnl.so.3.*")):  # the wheel has 3 copies
        if copy.is_file() and not copy.is_symlink():
            copy.unlink()
            copy.symlink_to(lib.name)
    return [f"-DONEDNN_ROOT={prefix}"]


def build(root: Path, jobs: int, blas: str = "openblas", without: tuple[str, ...] = ()) -> None:
    """Download, configure and compile ``make pycaffe`` into ``root``, against ``blas`` and (when its patch is
    applied) oneDNN; ``without`` names patches left out."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    log = root / "build.log"
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _fetch_sdist(Path(tmp))
        extract_sdist(sdist, root)
    src = root / SDIST_FILE.removesuffix(".tar.gz")
    src.rename(root / "src")
    src = root / "src"
    applied = patches(without)
    for patch in applied:
        _run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)], f"apply {patch.name}", cwd=src, log=log)
    link = _link_dir(root)
    bld = src / "build"
    bld.mkdir()
    prefix = sysconfig.get_config_var("prefix") or sys.base_prefix
    cxx = f"{CXX_FLAGS} -I{_numpy_include()}"
    ldf = f"-L{link}"
    blas_args = _mkl(root, log) if blas == "mkl" else ["-DBLAS=Open"]
    _run(["cmake", "..", *CMAKE_OPTIONS, *blas_args, *(_onednn(root, log) if uses_onednn(applied) else []),
          f"-DANACONDA_HOME={prefix}", f"-DPYTHON_VERSION=python{sys.version_info.major}.{sys.version_info.minor}",
          f"-DPYTHON_EXECUTABLE={sys.executable}", f"-DCMAKE_CXX_FLAGS={cxx}", f"-DCMAKE_EXE_LINKER_FLAGS={ldf}",
          f"-DCMAKE_SHARED_LINKER_FLAGS={ldf}"], "cmake configure", cwd=bld, log=log)
    _run(["make", f"-j{jobs}", "pycaffe"], f"make pycaffe (-j{jobs}, log {log})", cwd=bld, log=log)
    if not (src / "python/caffe/_caffe.so").exists():
        raise BuildError("make pycaffe finished but python/caffe/_caffe.so is missing")


def link_into_python(root: Path) -> Path:
    """Write a .pth file so this interpreter (e.g. the venv) imports ``caffe`` from the build."""
    site = Path(sysconfig.get_paths()["purelib"])
    pth = site / PTH_NAME
    pth.write_text(f"{python_dir(root)}\n")
    return pth


def python_dir(root: Path) -> Path:
    """The directory holding build ``root``'s ``caffe`` package (what a PYTHONPATH or .pth file names)."""
    return root / "src" / "python"


def import_ok(root: Path) -> tuple[bool, str]:
    """Import build ``root``'s caffe in a fresh process; return (ok, error text)."""
    path = os.pathsep.join(p for p in (str(python_dir(root)), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=path)
    res = subprocess.run([sys.executable, "-c", "import caffe, caffe.proto.caffe_pb2; caffe.set_mode_cpu()"],
                         capture_output=True, text=True, env=env)
    return res.returncode == 0, (res.stderr.strip().splitlines() or [""])[-1]


def ensure(blas: str = "openblas", without: tuple[str, ...] = (), link: bool = True, force: bool = False,
           jobs: int | None = None) -> Path:
    """The verified build of ``blas`` with every patch but ``without``: cached, or built now (then verified by an
    ``import caffe`` in a new process); linked into this interpreter when ``link``. Returns its directory; raises
    :class:`BuildError` (and ImportError when numpy is missing)."""
    key = build_key(blas, without)
    root = build_dir(key)
    stamp = root / "BUILD_OK"
    try:
        ok = False
        if stamp.exists() and not force:
            ok, _ = import_ok(root)  # a cached build that no longer imports is rebuilt
        if not ok:
            build(root, jobs or os.cpu_count() or 2, blas, without)
            ok, err = import_ok(root)
            if not ok:
                raise BuildError(f"import caffe failed after build in {root}: {err}")
        stamp.write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")
    except BuildError:
        stamp.unlink(missing_ok=True)
        raise
    if link:
        link_into_python(root)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ddqn.net.caffe_build", description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if a verified build is cached")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")
    ap.add_argument("--blas", choices=BLAS_CHOICES, default="openblas", help="the BLAS Caffe links (default openblas)")
    ap.add_argument("--without", action="append", default=[], metavar="PATCH",
                    help="leave this patch (a file name in caffe_patches/) out: a baseline build, cached apart")
    ap.add_argument("--no-link", action="store_true",
                    help="build or verify only; the interpreter keeps the Caffe it links (for a baseline build)")
    args = ap.parse_args(argv)
    try:
        root = ensure(args.blas, tuple(args.without), not args.no_link, args.force, args.jobs)
    except ImportError as exc:
        print(f"caffe-build: error: numpy is not importable in {sys.executable} ({exc}); run pip install first",
              file=sys.stderr)
        return 1
    except BuildError as exc:
        print(f"caffe-build: error: {exc}", file=sys.stderr)
        return 1
    print(f"[caffe-build] pycaffe ready: {python_dir(root) / 'caffe'}{' (not linked)' if args.no_link else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
