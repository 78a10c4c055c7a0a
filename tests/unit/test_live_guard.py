"""The guard of tests/conftest.py: a test without the ``live`` marker that starts a real QEMU fails, with a
message that says what to do, even when the code under test swallows the refusal; a fake binary and a
live test are let through. Run as an inner pytest on a test file of its own; no QEMU starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, code_under_test

CONFTEST = """\
from tests.conftest import _qemu_only_in_live_tests, pytest_runtest_makereport, pytest_runtest_protocol, qemu_x86_64
"""

TESTS = """\
import contextlib
from pathlib import Path

import pytest

from conformance.qemu.process import QemuProcess

ARGS = ["-machine", "none", "-display", "none", "-nodefaults"]


def test_unmarked_start(qemu_x86_64: Path, tmp_path: Path) -> None:
    with QemuProcess(qemu_x86_64, ARGS, tmp_path, name="unmarked"):
        pass


def test_unmarked_start_swallowed(qemu_x86_64: Path, tmp_path: Path) -> None:
    with contextlib.suppress(BaseException), QemuProcess(qemu_x86_64, ARGS, tmp_path, name="swallowed"):
        pass


def test_unmarked_fake_binary(tmp_path: Path) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\\nexit 0\\n")
    fake.chmod(0o755)
    QemuProcess(fake, ARGS, tmp_path, name="fake", qmp=False).start().proc.wait(10)


@pytest.mark.live
def test_marked_is_not_refused(qemu_x86_64: Path) -> None:
    assert QemuProcess.start.__name__ == "guarded"  # the guard is on, and lets a live test through
"""


def test_an_unmarked_test_that_starts_qemu_fails_saying_mark_it_live(tmp_path: Path, qemu_x86_64: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(TESTS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")], capture_output=True,
                          text=True, timeout=120, env=code_under_test(), cwd=ROOT)
    out = proc.stdout
    assert "2 failed, 2 passed" in out, out[-3000:]
    for name in ("test_unmarked_start", "test_unmarked_start_swallowed"):
        assert f"test_inner.py::{name}: this test starts QEMU: mark it live" in out, out[-3000:]
    assert f"it started {qemu_x86_64} for unmarked" in out
