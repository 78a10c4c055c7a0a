"""One class owns one QEMU process: QemuProcess.

Guarantees, whatever happens to the caller:
- QEMU dies with the thread that started it (PR_SET_PDEATHSIG=SIGKILL, set
  between fork and exec), so a crashed, interrupted or SIGKILLed runner
  (pytest-xdist workers included) leaves no QEMU behind. Start processes from
  a long-lived thread (the main thread): the signal fires when the *thread*
  that forked exits.
- QEMU runs in its own session, so Ctrl-C at a terminal reaches the runner,
  which then stops QEMU in order: QMP ``quit``, SIGTERM, SIGKILL.
- QMP is a private socketpair (``-chardev socket,fd=N``): no socket file, no
  port, nothing another process can connect to.
- Every process has a private folder (its working directory); stderr goes to ``stderr.log`` there,
  the QMP transcript to ``qmp.jsonl``, the command line to ``cmdline.json``
  and the pid to ``qemu.pid``. How it ended (exit code or signal) is
  kept as an ``Exit``.
- ``halt_all()`` (what Ctrl-C and SIGTERM call, see conformance/interrupt.py) ends every QEMU this
  process started and refuses to start another, so an interrupted run stops within seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from conformance.errors import LiveError
from conformance.qemu.qmp import QmpError, QmpSession

PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None


def _die_with_parent(parent: int) -> None:
    """Runs in the child between fork and exec: own session, die with the parent thread. A parent
    that died before prctl took effect never sends the signal: then the child exits at once (seen:
    pytest SIGKILLed while an xdist worker was forking a QEMU left that QEMU running, adopted by init)."""
    global _libc
    os.setsid()
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


#: util-linux's ``setpriv`` sets the parent-death signal in C and a shell checks, once it is set, that the
#: parent is still the one that forked (what _die_with_parent does): no Python runs between fork and exec, so
#: the spawn needs no copy of this process (a ``preexec_fn`` forces one: 18 ms of CPU per QEMU and 22 ms more
#: in the child, measured with a 300 MB heap; 1,430 QEMUs in a cold vmstate sweep).
_SETPRIV = shutil.which("setpriv")
_SH_CHECK = 'test "$PPID" = "$0" && exec "$@"; exit 1'


def _spawn_argv(argv: list[str], parent: int) -> list[str] | None:
    """``argv`` behind setpriv and the parent check (None without setpriv, or for a binary that is missing or
    not executable: then _die_with_parent runs and Popen says what is wrong, as before)."""
    if _SETPRIV is None or shutil.which(argv[0]) is None:
        return None
    return [_SETPRIV, "--pdeathsig", "SIGKILL", "--", "/bin/sh", "-c", _SH_CHECK, str(parent), *argv]


def die_with_parent_self() -> None:
    """Make the *current* process die when its parent dies (used by pytest-xdist workers)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def file_tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Exit:
    """How a QEMU process ended."""

    returncode: int | None  # None: still running when looked at
    signal: str | None = None  # "SIGSEGV" when killed by a signal
    requested: bool = False  # True when the suite asked it to stop

    @property
    def crashed(self) -> bool:
        return self.signal in {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE"}

    def describe(self) -> str:
        if self.returncode is None:
            return "running"
        if self.signal:
            return f"killed by {self.signal}" + (" (requested stop)" if self.requested else "")
        return f"exit code {self.returncode}" + (" (requested stop)" if self.requested else "")


class Halted(LiveError):
    """A QEMU was not started because the run is stopping (halt_all)."""


class _Running:
    """Every QEMU of this process that has not been stopped yet, and whether new ones may start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processes: set[QemuProcess] = set()
        self.halted = ""  # why new QEMUs are refused ("" while they may start)


_RUNNING = _Running()


def halt_all(why: str, grace: float = 1.0) -> int:
    """Refuse every new QEMU from now on and end the running ones: SIGTERM, then SIGKILL for those still
    alive after ``grace`` s. Safe from a signal handler's thread; returns how many were running."""
    with _RUNNING.lock:
        _RUNNING.halted = why
        procs = [p.proc for p in _RUNNING.processes if p.proc is not None and p.proc.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        end = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < end and any(p.poll() is None for p in procs):
            time.sleep(0.02)
        procs = [p for p in procs if p.poll() is None]
    return len(procs)


def running_count() -> int:
    """How many QEMUs this process started that are still alive."""
    with _RUNNING.lock:
        return sum(1 for p in _RUNNING.processes if p.is_running())


def resume_starting() -> None:
    """Allow new QEMUs again (after a halt, for the next run in the same process, e.g. a test)."""
    with _RUNNING.lock:
        _RUNNING.halted = ""


class LaunchFailed(LiveError):
    """QEMU did not come up: it exited (or never answered QMP) right after start.

    Keeps what QEMUMachine's VMLaunchFailure keeps: how it ended, the command and its output.
    """

    def __init__(self, name: str, exit: Exit, command: list[str], stderr_tail: str, cause: str = "") -> None:
        self.exit = exit
        self.command = command
        self.stderr_tail = stderr_tail
        state = "still running" if exit.returncode is None else f"QEMU {exit.describe()}"
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""
        super().__init__(f"{name}: {cause + '; ' if cause else ''}{state}" + (f": {last}" if last else ""))


class QemuProcess:
    """Start, talk to and always stop one QEMU process.

    Use as a context manager::

        with QemuProcess(binary, args, workdir) as vm:
            vm.qmp.cmd("cont")
    """

    def __init__(self, binary: str | Path, args: Sequence[str], workdir: str | Path, *,
                 name: str = "qemu", env: dict[str, str] | None = None, qmp: bool = True,
                 qmp_timeout: float = 5.0) -> None:
        self.binary = str(binary)
        self.args = list(args)
        self.workdir = Path(workdir)
        self.name = name
        self.env = env
        self.use_qmp = qmp
        self.qmp_timeout = qmp_timeout  # s for the QMP greeting after start
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp_socket: socket.socket | None = None
        self._session: QmpSession | None = None
        self._stop_requested = False
        self.started_at: float | None = None

    # --- paths --------------------------------------------------------------------
    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    @property
    def transcript_path(self) -> Path:
        return self.workdir / "qmp.jsonl"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def argv(self) -> list[str]:
        extra = ["-chardev", "socket,id=qmp,fd=@QMPFD@", "-mon", "chardev=qmp,mode=control"] if self.use_qmp else []
        return [self.binary, *self.args, *extra]

    # --- life cycle ---------------------------------------------------------------
    def start(self) -> QemuProcess:
        if self.proc is not None:
            raise LiveError(f"{self.name}: already started")
        if _RUNNING.halted:
            raise Halted(f"{self.name}: not started: {_RUNNING.halted}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = self.argv
        pass_fds: tuple[int, ...] = ()
        child_sock = None
        if self.use_qmp:
            self.qmp_socket, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            argv = [a.replace("@QMPFD@", str(child_sock.fileno())) for a in argv]
            pass_fds = (child_sock.fileno(),)
        (self.workdir / "cmdline.json").write_text(json.dumps(argv) + "\n")
        stderr = self.stderr_path.open("wb")
        spawned = _spawn_argv(argv, os.getpid())
        try:
            self.proc = subprocess.Popen(
                spawned or argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, pass_fds=pass_fds,
                env=self.env, start_new_session=spawned is not None, cwd=self.workdir, close_fds=True,
                preexec_fn=None if spawned else functools.partial(_die_with_parent, os.getpid()),
            )
        except FileNotFoundError:
            self._close_sockets()
            raise LiveError(f"QEMU binary not found: {self.binary}") from None
        except PermissionError:
            self._close_sockets()
            raise LiveError(f"QEMU binary is not executable: {self.binary}") from None
        finally:
            stderr.close()
            if child_sock is not None:
                child_sock.close()
        self.started_at = time.monotonic()
        (self.workdir / "qemu.pid").write_text(f"{self.proc.pid}\n")
        with _RUNNING.lock:
            _RUNNING.processes.add(self)
            halted = _RUNNING.halted
        if halted:  # halt_all ran while this one was starting: it did not see it
            self.proc.kill()
        return self

    @property
    def qmp(self) -> QmpSession:
        """The QMP session, connected on first use."""
        if self._session is None:
            if self.qmp_socket is None:
                raise LiveError(f"{self.name}: started without QMP")
            session = QmpSession(self.qmp_socket, self.transcript_path, name=self.name)
            self._session = session
            try:
                session.connect(self.qmp_timeout)
            except QmpError as exc:
                raise LaunchFailed(self.name, self.wait(0.5), self.argv, self.stderr_tail(5), exc.message) from None
        return self._session

    @property
    def events(self) -> list[dict[str, Any]]:
        """QMP events seen so far (none when QMP was never connected)."""
        return list(self._session.events) if self._session is not None else []

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> Exit:
        if self.proc is None:
            raise LiveError(f"{self.name}: not started")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        return self.exit

    @property
    def exit(self) -> Exit:
        if self.proc is None or self.proc.returncode is None:
            return Exit(None)
        rc = self.proc.returncode
        sig = signal.Signals(-rc).name if rc < 0 else None
        return Exit(rc, sig, requested=self._stop_requested)

    def stderr_tail(self, lines: int = 20) -> str:
        return file_tail(self.stderr_path, lines)

    def stop(self, timeout: float = 3.0) -> Exit:
        """quit over QMP, then SIGTERM, then SIGKILL; always returns how it ended."""
        if self.proc is None:
            return Exit(None)
        if self.proc.poll() is None:
            self._stop_requested = True
            if self._session is not None:
                with contextlib.suppress(QmpError):
                    self._session.cmd("quit", timeout=timeout)
                self.wait(timeout)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.proc.poll() is not None:
                    break
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    break
                self.wait(timeout)
        self.proc.wait()
        with _RUNNING.lock:
            _RUNNING.processes.discard(self)
        self._close_sockets()
        return self.exit

    def _close_sockets(self) -> None:
        if self._session is not None:
            self._session.close()
        if self.qmp_socket is not None:
            self.qmp_socket.close()
            self.qmp_socket = None

    def __enter__(self) -> QemuProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
