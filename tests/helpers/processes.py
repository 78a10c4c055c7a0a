"""The processes a test started, QEMUs above all: find them, wait for them, interrupt their runner, and
require that none is left.

Two ways to know a QEMU is the test's own:
- a mark in the environment (``start(..., mark)`` sets ``QEMU_CONFORMANCE_TEST_MARK``): every QEMU the
  command starts inherits it, however far down (an xdist worker's, an avocado runner's child) and whoever
  adopted it since; ``qemus(mark)`` finds them;
- a word of the command line (a VM folder under the test's tmp_path): ``qemus_matching(pattern)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

MARK = "QEMU_CONFORMANCE_TEST_MARK"  # set in the environment of the command: every QEMU it starts inherits it


def processes_matching(pattern: str) -> list[str]:
    """Command lines of running processes that contain ``pattern`` (pgrep -f)."""
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def qemus_matching(pattern: str) -> list[str]:
    """QEMU processes (the program itself, not a runner naming it) whose command line contains ``pattern``."""
    return [p for p in processes_matching(pattern) if Path(p.split()[1]).name.startswith("qemu-system")]


def start(command: list[str], log: Path, mark: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """The command in a session of its own, so a signal to its process group reaches what it started;
    its QEMUs carry ``mark`` in their environment."""
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, MARK: mark}, cwd=cwd)


def qemus(mark: str, guests: bool = False) -> list[int]:
    """Running QEMUs (their executable, not a command that names one) started under ``mark``, however far down
    (an avocado runner's child, an xdist worker's) and whoever adopted them since; ``guests``: only those
    that boot the test guest (not a probe)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"qemu-system" in argv[0] and (b"-kernel" in argv or not guests) \
                    and f"{MARK}={mark}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def wait_for_qemu(proc: subprocess.Popen[bytes], mark: str, log: Path, timeout: float = 120.0) -> None:
    """Until a QEMU booting the guest under ``mark`` is running (a failure if ``proc`` ends first)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if qemus(mark, guests=True):
            return
        assert proc.poll() is None, f"ended before any QEMU started:\n{log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no QEMU of the run within {timeout:g} s:\n{log.read_text(errors='replace')[-3000:]}")


def interrupt(proc: subprocess.Popen[bytes], sig: int, times: int = 1) -> float:
    """Send ``sig`` to the process group (``times`` times, 0.2 s apart); the seconds until it ended."""
    sent = time.monotonic()
    for i in range(times):
        if i:
            time.sleep(0.2)
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return time.monotonic() - sent


def assert_no_qemu_left(mark: str, within: float = 0.5) -> None:
    """No QEMU of ``mark`` is running ``within`` seconds from now (a QEMU killed by its parent's death is
    reaped a moment later)."""
    deadline = time.monotonic() + within
    while (left := qemus(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"QEMU processes of the run survived it: {left}"
