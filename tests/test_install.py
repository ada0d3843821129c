"""The install recipe's choices (Makefile): which Pythons it accepts and which Java it takes per Debian release,
and the one-line errors for the rest. Runs make's own logic with a stand-in interpreter or os-release file;
nothing is installed."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True,
                          timeout=120)


def variable(name: str, *args: str) -> str:
    """The value make gives ``name`` (with ``args`` as extra make arguments)."""
    res = make(*args, "--eval", f"print-var: ; @echo '$({name})'", "print-var")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def os_release(tmp_path: Path, text: str) -> str:
    path = tmp_path / "os-release"
    path.write_text(text)
    return f"OS_RELEASE={path}"


@pytest.mark.parametrize(("release", "java"), [
    ('ID=debian\nVERSION_ID="12"\n', "openjdk-17-jre-headless"),
    ('ID=debian\nVERSION_ID="13"\n', "openjdk-21-jre-headless"),
])
def test_java_is_the_one_the_release_ships(tmp_path, release, java):
    arg = os_release(tmp_path, release)
    assert variable("JAVA_PACKAGE", arg) == java
    assert java in variable("DEB_PACKAGES", arg).split()


def test_an_unknown_system_gets_one_line(tmp_path):
    arg = os_release(tmp_path, 'ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04 LTS"\n')
    res = make(arg, "deb-deps")
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[0] == (
        "install: error: Ubuntu 24.04 LTS is not supported (supported: Debian 12 and Debian 13; see docs/install.md)")
    assert "apt-get" not in res.stdout + res.stderr


def test_the_default_python_is_debians(tmp_path):
    """Debian's /usr/bin/python3, not a pyenv python3 that comes first on PATH."""
    if Path("/usr/bin/python3").exists():
        assert variable("PYTHON") == "/usr/bin/python3"


@pytest.mark.parametrize("version", ["3.10.12", "3.14.0"])
def test_an_unsupported_python_gets_one_line(tmp_path, version):
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho /opt/python/bin/python {version}\n")
    fake.chmod(0o755)
    res = make(f"PYTHON={fake}", "venv")  # deb-deps first: a no-op where make install already ran
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("make")]
    assert lines == [f"install: error: {fake} is Python {version}; ddqn supports Python 3.11, 3.12 and 3.13 "
                     "(make install PYTHON=/path/to/python3.13)"], res.stderr
    assert not (tmp_path / ".venv").exists()
