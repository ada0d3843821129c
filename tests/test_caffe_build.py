"""The Caffe build's install-time guards: safe sdist extraction on every Python 3.11, and a cache key that
changes with what the compiled module depends on."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ddqn.net import caffe_build
from ddqn.net.caffe_build import BuildError, build_dir, build_key, extract_sdist


def _archive(path: Path, members: list[tarfile.TarInfo]) -> Path:
    """A .tar.gz of a harmless file plus ``members`` (regular members get 5 bytes of content)."""
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("pkg/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.mode = kind, link, mode
    m.size = 5 if kind == tarfile.REGTYPE else 0
    return m


HOSTILE = {
    "dotdot": _member("pkg/../../escaped.txt"),
    "absolute": _member("/tmp/ddqn-absolute-escape.txt"),
    "symlink": _member("pkg/link", tarfile.SYMTYPE, "/etc/passwd"),
    "hardlink": _member("pkg/hard", tarfile.LNKTYPE, "/etc/passwd"),
    "chardev": _member("pkg/dev", tarfile.CHRTYPE),
    "blockdev": _member("pkg/blk", tarfile.BLKTYPE),
    "fifo": _member("pkg/fifo", tarfile.FIFOTYPE),
}


# The 3.11.2 path, imitated on 3.12+, which warns that 3.14 will filter by default: expected there.
pytestmark = pytest.mark.filterwarnings("ignore:Python 3.14 will, by default, filter:DeprecationWarning")


@pytest.fixture(params=["without data_filter", "as this interpreter is"])
def interpreter(request, monkeypatch):
    """Run each case on the path an interpreter without ``tarfile.data_filter`` (3.11.2-3.11.3) takes, and
    on this interpreter's own path (the same path on Debian's 3.11.2)."""
    if request.param == "without data_filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused(tmp_path, interpreter, case):
    archive = _archive(tmp_path / "evil.tar.gz", [HOSTILE[case]])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BuildError, match=r"evil\.tar\.gz: refused member"):
        extract_sdist(archive, dest)
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/ddqn-absolute-escape.txt").exists()
    if interpreter == "without data_filter":  # validated whole before anything is written
        assert list(dest.iterdir()) == []


def test_plain_archive_extracts_without_special_bits(tmp_path, interpreter):
    members = [_member("pkg/tool.sh", mode=0o6777), _member("pkg/sub/", tarfile.DIRTYPE, mode=0o755)]
    archive = _archive(tmp_path / "good.tar.gz", members)
    dest = tmp_path / "out"
    dest.mkdir()
    extract_sdist(archive, dest)
    assert (dest / "pkg/ok.txt").read_bytes() == b"ok"
    assert (dest / "pkg/sub").is_dir()
    mode = (dest / "pkg/tool.sh").stat().st_mode & 0o7777
    assert mode & 0o7022 == 0, oct(mode)  # no setuid/setgid/sticky, no group/other write
    assert mode & 0o100, oct(mode)        # the owner's execute bit survives


def test_build_key_names_the_interpreter_numpy_blas_and_onednn():
    key = build_key()
    assert key["python"] == f"{os.path.realpath(sys._base_executable)} {sys.version.split()[0]}"
    assert key["numpy"].startswith("abi 0x")
    assert key["blas"] == "Open"  # as before the mkl choice existed: the cached OpenBLAS build is reused
    assert key["system"] == caffe_build.system_release() and key["system"].split()[0] in ("debian", "unknown")
    assert key["compiler"] == caffe_build.compiler() and key["flags"].startswith(" ".join(caffe_build.CMAKE_OPTIONS))
    assert key["patches"].split() == [  # each patch file by name and content
        f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}" for p in caffe_build.patches()]
    assert key["onednn"] == " ".join(caffe_build.ONEDNN_PINS)  # the convolution engine's library and headers
    assert build_key("mkl")["blas"] == "MKL " + " ".join(caffe_build.MKL_PINS)
    assert build_dir(key) == build_dir() != build_dir(build_key("mkl"))
    for field in key:  # any change in what the binary depends on selects another build directory
        assert build_dir({**key, field: key[field] + " other"}) != build_dir(key)


def test_a_baseline_build_leaves_a_patch_out_under_a_key_of_its_own():
    onednn = "0002-onednn-convolution.patch"
    key, base = build_key(), build_key(without=(onednn,))
    assert base["patches"].split() == [p for p in key["patches"].split() if not p.startswith(onednn)]
    assert "onednn" not in base  # without the engine's patch the key is what builds had before it: their cache
    assert build_dir(base) != build_dir(key)
    with pytest.raises(BuildError, match="no patch named nope.patch"):
        build_key(without=("nope.patch",))
    res = subprocess.run([sys.executable, "-m", "ddqn.net.caffe_build", "--no-link", "--without", "nope.patch"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "no patch named nope.patch" in res.stderr
