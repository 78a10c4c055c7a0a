"""Shared fixtures of the suite's own tests: real binaries, or a skip that says why; and the guard that
a test which starts QEMU in this process carries the ``live`` marker (tests/README.md)."""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from conformance.caps.model import Capabilities
from conformance.paths import builds_dir, capsdata_dir, libvirt_corpus_dir

_RUNNING: list[pytest.Item] = []  # the test being run in this process (fixtures included), for the guard
_UNMARKED: dict[str, str] = {}  # node id -> what the guard said, in case the code under test caught it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    _RUNNING.append(item)
    try:
        yield
    finally:
        _RUNNING.pop()
        _UNMARKED.pop(item.nodeid, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """A test whose QEMU start the guard refused fails, even if the code under test turned the refusal into
    a result (a runner's thread, a verdict ``error``) and the test passed anyway."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and item.nodeid in _UNMARKED:
        report.outcome = "failed"
        report.longrepr = _UNMARKED[item.nodeid]


def _is_real_qemu(binary: str | Path) -> bool:
    """A QEMU system emulator, not a test's fake: an ELF qemu-system-* or a prepared build's wrapper."""
    path = Path(binary)
    if not path.name.startswith("qemu-system-"):
        return False
    try:
        with path.open("rb") as fh:
            elf = fh.read(4) == b"\x7fELF"
    except OSError:
        return False
    return elf or path.resolve().is_relative_to(builds_dir().resolve())


@pytest.fixture(scope="session", autouse=True)
def _qemu_only_in_live_tests() -> Iterator[None]:
    """A test without the ``live`` marker that starts a real QEMU in this process (itself or through a
    fixture, of any scope: a module fixture is set up inside its first test) fails, naming the binary.
    QEMUs started by a subprocess (the CLI, pytest, avocado) are not seen here: tests/helpers/README.md."""
    from conformance.qemu.process import QemuProcess

    start = QemuProcess.start

    def guarded(self: QemuProcess) -> QemuProcess:
        item = _RUNNING[-1] if _RUNNING else None
        if item is not None and item.get_closest_marker("live") is None and _is_real_qemu(self.binary):
            _UNMARKED[item.nodeid] = (f"{item.nodeid}: this test starts QEMU: mark it live (@pytest.mark.live; "
                                      f"it started {self.binary} for {self.name}; tests/README.md)")
            pytest.fail(_UNMARKED[item.nodeid], pytrace=False)
        return start(self)

    QemuProcess.start = guarded  # type: ignore[method-assign]
    try:
        yield
    finally:
        QemuProcess.start = start  # type: ignore[method-assign]


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
