"""How QemuProcess spawns QEMU without a Python ``preexec_fn`` (conformance/qemu/process.py _spawn_argv):
setpriv sets the parent-death signal, a shell runs the command only while its parent is the process that
forked. No QEMU starts: /bin/sh stands in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.qemu import process
from conformance.qemu.process import QemuProcess, _spawn_argv

needs_setpriv = pytest.mark.skipif(process._SETPRIV is None, reason="util-linux setpriv not installed")


@needs_setpriv
def test_the_command_runs_under_its_parent_with_the_death_signal_set() -> None:
    ask = ("import ctypes, os; sig = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0); "
           "print(os.getppid(), sig.value)")  # 2: PR_GET_PDEATHSIG
    argv = _spawn_argv([sys.executable, "-c", ask], os.getpid())
    assert argv is not None
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(os.getpid()), str(int(signal.SIGKILL))]


@needs_setpriv
def test_a_child_whose_parent_is_not_the_forking_process_exits_without_running() -> None:
    argv = _spawn_argv(["/bin/echo", "ran"], 1)  # as if the forking process died before the signal was set
    assert argv is not None
    done = subprocess.run(argv, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (1, "")


def test_a_missing_binary_is_spawned_as_before(tmp_path: Path) -> None:
    assert _spawn_argv([str(tmp_path / "no-such-qemu")], os.getpid()) is None
    with pytest.raises(process.LiveError, match="QEMU binary not found"):
        QemuProcess(tmp_path / "no-such-qemu", [], tmp_path, qmp=False).start()


@needs_setpriv
def test_qemu_runs_in_a_session_of_its_own(tmp_path: Path) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\nset -- $(cat /proc/$$/stat); echo \"$1 $6\" > sid\n")  # pid, session id
    fake.chmod(0o755)
    qemu = QemuProcess(fake, [], tmp_path, qmp=False).start()
    assert qemu.wait(5).returncode == 0
    pid, sid = (tmp_path / "sid").read_text().split()
    assert pid == sid == str(qemu.pid)
