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
- Every process has a private folder; stderr goes to ``stderr.log`` there,
  the QMP transcript to ``qmp.jsonl``, the command line to ``cmdline.json``
  and the pid to ``qemu.pid``. How it ended (exit code or signal) is
  kept as an ``Exit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from conformance.errors import LiveError

PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: own session, die with the parent thread."""
    global _libc
    os.setsid()
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


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


class QmpError(LiveError):
    """A QMP command failed or the monitor went away."""


class QmpSession:
    """Synchronous QMP over qemu.qmp, with a transcript of everything said.

    Events are collected whenever the session talks to QEMU; ``wait_event``
    waits for a named one. Every command, reply and event is appended to the
    transcript file as one JSON line with a monotonic timestamp.
    """

    def __init__(self, sock: socket.socket, transcript: Path | None = None) -> None:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        self._proto = QEMUMonitorProtocol(sock)
        self._transcript = transcript.open("a", encoding="utf-8") if transcript else None
        self.events: list[dict[str, Any]] = []
        self._seen = 0
        self.greeting: dict[str, Any] | None = None

    def _log(self, direction: str, message: object) -> None:
        if self._transcript:
            self._transcript.write(json.dumps({"t": round(time.monotonic(), 4), direction: message}) + "\n")
            self._transcript.flush()

    def connect(self, timeout: float = 5.0) -> dict[str, Any]:
        from qemu.qmp import QMPError

        self._proto.settimeout(timeout)
        try:
            self.greeting = self._proto.connect(negotiate=True) or {}
        except (QMPError, OSError, TimeoutError) as exc:
            raise QmpError(f"QMP handshake failed: {exc or type(exc).__name__}") from None
        self._log("greeting", self.greeting)
        return self.greeting

    def cmd(self, name: str, timeout: float = 30.0, **arguments: Any) -> Any:
        from qemu.qmp import ExecuteError, QMPError

        self._log("execute", {"execute": name, "arguments": arguments} if arguments else {"execute": name})
        self._proto.settimeout(timeout)
        try:
            ret = self._proto.cmd(name, **arguments)
        except ExecuteError as exc:
            self._log("error", {"execute": name, "error": exc.error.desc})
            raise QmpError(f"QMP {name} failed: {exc.error.desc}") from None
        except (QMPError, OSError, TimeoutError, EOFError) as exc:
            self._log("error", {"execute": name, "error": repr(exc)})
            raise QmpError(f"QMP {name}: monitor gone ({exc or type(exc).__name__})") from None
        finally:
            self._collect(0)
        self._log("return", ret)
        return ret

    def _collect(self, wait: float) -> None:
        from qemu.qmp import QMPError

        try:
            new = self._proto.get_events(wait=wait) if wait else self._proto.get_events(wait=False)
        except (QMPError, OSError, TimeoutError, EOFError):
            new = []
        for event in new:
            self._log("event", event)
        self.events.extend(new)

    def poll_events(self) -> list[dict[str, Any]]:
        """Events that arrived since the last poll, without waiting."""
        before = len(self.events)
        self._collect(0)
        return self.events[before:]

    def wait_event(self, names: str | Iterable[str], timeout: float,
                   match: Callable[[dict[str, Any]], bool] | None = None,
                   alive: Callable[[], bool] | None = None) -> dict[str, Any] | None:
        """The first event (not seen by an earlier wait) named in ``names``; None on timeout."""
        wanted = {names} if isinstance(names, str) else set(names)
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._seen, len(self.events)):
                ev = self.events[i]
                if ev.get("event") in wanted and (match is None or match(ev)):
                    self._seen = i + 1
                    return ev
            left = deadline - time.monotonic()
            if left <= 0 or (alive is not None and not alive()):
                return None
            self._collect(min(left, 0.2))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._proto.close()
        if self._transcript:
            self._transcript.close()
            self._transcript = None


class QemuProcess:
    """Start, talk to and always stop one QEMU process.

    Use as a context manager::

        with QemuProcess(binary, args, workdir) as vm:
            vm.qmp.cmd("cont")
    """

    def __init__(self, binary: str | Path, args: Sequence[str], workdir: str | Path, *,
                 name: str = "qemu", env: dict[str, str] | None = None, qmp: bool = True) -> None:
        self.binary = str(binary)
        self.args = list(args)
        self.workdir = Path(workdir)
        self.name = name
        self.env = env
        self.use_qmp = qmp
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
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, pass_fds=pass_fds,
                env=self.env, preexec_fn=_die_with_parent, cwd=self.workdir, close_fds=True,
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
        return self

    @property
    def qmp(self) -> QmpSession:
        """The QMP session, connected on first use."""
        if self._session is None:
            if self.qmp_socket is None:
                raise LiveError(f"{self.name}: started without QMP")
            session = QmpSession(self.qmp_socket, self.transcript_path)
            self._session = session
            try:
                session.connect()
            except QmpError as exc:
                raise QmpError(f"{self.name}: {exc.message}; {self.exit_text()}") from None
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

    def exit_text(self) -> str:
        """'QEMU exited: exit code 1: <last stderr line>' for error messages."""
        ex = self.wait(0.2) if self.proc is not None else Exit(None)
        tail = self.stderr_tail(3).strip().replace("\n", " | ")
        state = "still running" if ex.returncode is None else f"QEMU {ex.describe()}"
        return f"{state}" + (f": {tail}" if tail else "")

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
