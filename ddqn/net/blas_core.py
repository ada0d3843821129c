"""Which kernel the BLAS under Caffe runs, and the right one when OpenBLAS does not know the CPU.

OpenBLAS (``DYNAMIC_ARCH``) picks its kernels from the CPU's family and model when the library loads. A model
newer than the library is not in its table, and it falls back to a generic core without a word: Debian 12's
0.3.21 runs its **Prescott** (SSE3) kernels on an Emerald Rapids Xeon, 3-6x slower on our conv shapes
(``../shared/FACTS.md``). :func:`select_core` runs before Caffe loads (``ddqn.net.caffe_env``): it asks
OpenBLAS, in a child process, which core it would pick; when that core lacks a vector ISA the CPU has, it sets
``OPENBLAS_CORETYPE`` to the OpenBLAS core for that ISA (SkylakeX for AVX-512, Zen or Haswell for AVX2). A value
already in the environment always wins: some machines pre-set it because old OpenBLAS computes wrong results on
their processor. :func:`blas_info` names the library and the core a process really runs, for run headers and
``summary.json``.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

LIBRARY = "libopenblas.so.0"  # what Caffe links with BLAS=Open (Debian's libopenblas-dev)
SOURCE_VAR = "DDQN_BLAS_CORE_SOURCE"  # who chose OPENBLAS_CORETYPE: "ddqn: ..." when select_core set it
# OpenBLAS x86-64 cores that use AVX2 (FMA3) kernels or wider; any other core on an AVX2 CPU is a fallback.
AVX2_CORES = frozenset({"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"})
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})  # what SkylakeX kernels use
_PROBE = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.openblas_get_corename.restype = ctypes.c_char_p; "
          "print(lib.openblas_get_corename().decode())")


def cpu_flags(cpuinfo: str | None = None) -> tuple[str, set[str]]:
    """(vendor id, flags) of the first CPU in ``/proc/cpuinfo`` (or in ``cpuinfo``); ("", set()) if unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "", set()
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags":
            flags = set(value.split())
            break
    return vendor, flags


def core_for(detected: str, vendor: str, flags: set[str]) -> str | None:
    """The OpenBLAS core to force when ``detected`` lacks AVX2 on a CPU that has it (None: keep ``detected``)."""
    if "avx2" not in flags or "fma" not in flags or detected.lower() in AVX2_CORES:
        return None
    if AVX512_FLAGS <= flags:
        return "SkylakeX"
    return "Zen" if vendor == "AuthenticAMD" else "Haswell"


def probe_core(env: dict[str, str] | None = None) -> str | None:
    """The core OpenBLAS picks in a fresh process (with ``env``), or None if the library does not load there."""
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE, LIBRARY], capture_output=True, text=True, timeout=30,
                             env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def select_core(environ: os._Environ[str] | dict[str, str] = os.environ) -> str | None:
    """Before Caffe loads: set ``OPENBLAS_CORETYPE`` in ``environ`` when OpenBLAS would fall back to a core without
    the CPU's AVX2/AVX-512; return the core set, or None when nothing was changed (already set, the right core,
    no OpenBLAS)."""
    if environ.get("OPENBLAS_CORETYPE"):
        return None
    vendor, flags = cpu_flags()
    if "avx2" not in flags:
        return None  # no wider kernel to choose: leave OpenBLAS's choice (and skip the probe)
    detected = probe_core(dict(environ))
    chosen = core_for(detected, vendor, flags) if detected else None
    if chosen:
        environ["OPENBLAS_CORETYPE"] = chosen
        isa = "AVX-512" if chosen == "SkylakeX" else "AVX2"
        environ[SOURCE_VAR] = f"ddqn: OpenBLAS picked {detected} on a CPU with {isa}"
    return chosen


def blas_info() -> dict[str, str | None]:
    """The BLAS this process runs: ``library`` (OpenBLAS's config string, or None when it is not loaded), ``core``
    (the kernel set in use) and ``chosen_by`` (``openblas`` when it picked the core itself, ``environment``
    when OPENBLAS_CORETYPE was pre-set, or ddqn's reason)."""
    try:
        lib = ctypes.CDLL(LIBRARY, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)  # only if Caffe (or anyone) loaded it
    except OSError:
        return {"library": None, "core": None, "chosen_by": None}
    lib.openblas_get_corename.restype = ctypes.c_char_p
    lib.openblas_get_config.restype = ctypes.c_char_p
    chosen_by = "openblas"
    if os.environ.get("OPENBLAS_CORETYPE"):
        chosen_by = os.environ.get(SOURCE_VAR) or "environment"
    return {"library": lib.openblas_get_config().decode(), "core": lib.openblas_get_corename().decode(),
            "chosen_by": chosen_by}


def describe(info: dict[str, str | None]) -> str:
    """One line for a run header: ``BLAS: OpenBLAS 0.3.21 ..., core SkylakeX (chosen by openblas)``."""
    if not info.get("library"):
        return "BLAS: not OpenBLAS (MKL or not loaded)"
    return f"BLAS: {info['library']}, core {info['core']} (chosen by {info['chosen_by']})"
