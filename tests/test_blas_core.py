"""The BLAS under Caffe runs a kernel for the CPU it is on (ddqn.net.blas_core): the choice rule, and real
processes that load Caffe with and without a pre-set OPENBLAS_CORETYPE."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ddqn.net import blas_core
from ddqn.net.blas_core import AVX2_CORES, AVX512_FLAGS, core_for, cpu_flags

AVX2 = {"sse3", "avx", "avx2", "fma"}
CHILD = ("import json; from ddqn.net.caffe_env import caffe; caffe(); "
         "from ddqn.net.blas_core import blas_info; print(json.dumps(blas_info()))")


def loaded_blas(env: dict[str, str]) -> dict[str, str | None]:
    """blas_info() of a fresh process that imported Caffe the way every ddqn process does."""
    res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("detected", "vendor", "flags", "want"), [
    ("Prescott", "GenuineIntel", AVX2 | AVX512_FLAGS, "SkylakeX"),  # Emerald Rapids on OpenBLAS 0.3.21
    ("Sandybridge", "GenuineIntel", AVX2, "Haswell"),
    ("Prescott", "AuthenticAMD", AVX2, "Zen"),
    ("Prescott", "GenuineIntel", AVX2 | {"avx512f"}, "Haswell"),  # AVX-512F alone is not what SkylakeX needs
    ("SkylakeX", "GenuineIntel", AVX2 | AVX512_FLAGS, None),       # already right: keep it
    ("Haswell", "GenuineIntel", AVX2 | AVX512_FLAGS, None),        # AVX2 kernels: not a fallback
    ("SapphireRapids", "GenuineIntel", AVX2 | AVX512_FLAGS, None),
    ("Prescott", "GenuineIntel", {"sse3", "avx"}, None),          # no AVX2: nothing wider to choose
])
def test_the_core_to_force(detected, vendor, flags, want):
    assert core_for(detected, vendor, flags) == want


def test_cpuinfo_is_read():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse3 avx2 fma\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert cpu_flags(text) == ("AuthenticAMD", {"fpu", "sse3", "avx2", "fma"})
    assert cpu_flags("") == ("", set())


def test_a_preset_core_wins():
    env = {**os.environ, "OPENBLAS_CORETYPE": "Prescott"}
    env.pop(blas_core.SOURCE_VAR, None)
    info = loaded_blas(env)
    assert info["core"] == "Prescott" and info["chosen_by"] == "environment", info
    assert blas_core.select_core({"OPENBLAS_CORETYPE": "Prescott"}) is None


def test_no_generic_core_on_an_avx2_cpu():
    """With no pre-set core, a process that loads Caffe never runs OpenBLAS kernels narrower than AVX2 on a CPU
    that has AVX2 (where OpenBLAS would fall back, ddqn chose the core and says so)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", blas_core.SOURCE_VAR)}
    info = loaded_blas(env)
    assert info["library"] and "OpenBLAS" in info["library"], info
    vendor, flags = cpu_flags()
    if {"avx2", "fma"} <= flags:
        assert info["core"].lower() in AVX2_CORES, info
        detected = blas_core.probe_core(env)
        assert info["chosen_by"] == ("openblas" if detected.lower() in AVX2_CORES else
                                     f"ddqn: OpenBLAS picked {detected} on a CPU with "
                                     f"{'AVX-512' if info['core'] == 'SkylakeX' else 'AVX2'}"), info
