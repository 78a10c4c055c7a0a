"""Shared fixtures of the suite's own tests: real binaries, or a skip that says why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conformance.caps.model import Capabilities
from conformance.paths import capsdata_dir, libvirt_corpus_dir


def _binary(name: str) -> Path:
    where = shutil.which(name)
    if not where:
        pytest.skip(f"{name} not installed (Debian: apt-get install "
                    f"{'qemu-system-x86' if 'x86' in name else 'qemu-system-arm'})")
    return Path(where)


@pytest.fixture(scope="session")
def qemu_x86_64() -> Path:
    return _binary("qemu-system-x86_64")


@pytest.fixture(scope="session")
def qemu_aarch64() -> Path:
    return _binary("qemu-system-aarch64")


@pytest.fixture(scope="session")
def corpus() -> Path:
    path = libvirt_corpus_dir()
    if not (path / "index.json").exists():
        pytest.skip(f"libvirt corpus not found at {path} (it lives in ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def caps_10(corpus: Path) -> Capabilities:
    """libvirt 11.3.0's QEMU 10.0.0 x86_64 capabilities, imported (the corpus' "latest")."""
    from conformance.argv.command import load_caps

    return load_caps(str(corpus / "caps" / "libvirt-11.3.0" / "caps_10.0.0_x86_64.xml"))


@pytest.fixture(scope="session")
def capsdata() -> Path:
    return capsdata_dir()


@pytest.fixture(scope="session")
def avocado_cli() -> str:
    """The avocado command, with our runner beside it (the [avocado] extra); else a skip that says why."""
    pytest.importorskip("avocado", reason="avocado-framework not installed (pip install -e '.[avocado]')")
    where = shutil.which("avocado")
    if not where or not shutil.which("avocado-runner-qemu-conformance"):
        pytest.skip("avocado or avocado-runner-qemu-conformance not on PATH (pip install -e '.[avocado]')")
    return where
