"""A QEMU process running the test guest, with its serial console watched.

GuestVm is the unit the boot stage (and, next, migration: a source and a
destination GuestVm of the same domain, each in its own folder) works with:
it starts QEMU paused (-S), connects QMP, starts the CPUs and follows the
guest's report on the console log. It notices a QEMU that exits on its own
and a guest that stops with internal-error or guest-panicked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from conformance.live.guest_report import GuestReport, ReportReader
from conformance.qemu.process import Exit, QemuProcess, file_tail
from conformance.qemu.qmp import EventListener, QmpError

BAD_STATES = {"internal-error", "guest-panicked", "shutdown", "io-error"}
BAD_EVENTS = {"GUEST_PANICKED", "SHUTDOWN"}


@dataclass
class WaitOutcome:
    ok: bool
    reason: str = ""
    seconds: float = 0.0


class GuestVm:
    def __init__(self, binary: str | Path, args: list[str], vm_dir: Path, console: Path, *, name: str = "vm",
                 env: dict[str, str] | None = None) -> None:
        self.process = QemuProcess(binary, args, vm_dir, name=name, env=env)
        self.console = console
        self.reader = ReportReader()
        self.cont_at: float | None = None
        self.trouble: str | None = None  # why the guest stopped running, once seen
        self.expect_stop = False  # a STOP the suite asked for (pause, migration) is no trouble
        self._watch: EventListener | None = None
        self._cpu_at_stop: float | None = None

    @property
    def report(self) -> GuestReport:
        return self.reader.report

    def start(self, *, paused: bool = False) -> GuestVm:
        """Spawn QEMU (it was given -S), connect QMP, and start the CPUs unless ``paused``."""
        self.process.start()
        self.process.qmp  # connect now: a QEMU that does not come up fails here (LaunchFailed)  # noqa: B018
        if not paused:
            self.process.qmp.cmd("cont")
            self.cont_at = time.monotonic()
        return self

    def alive(self) -> bool:
        """Running and not stopped by a panic or an internal error (looks at QMP events, cheaply)."""
        if self.trouble:
            return False
        if not self.process.is_running():
            self.trouble = f"QEMU {self.process.exit.describe()}"
            return False
        if self._watch is None:  # its own queue: other waiters taking events never hide one from it
            self._watch = self.process.qmp.listen({*BAD_EVENTS, "STOP"})
        for event in self._watch.drain():
            name = event.get("event")
            if name in BAD_EVENTS:
                self.trouble = f"guest stopped: {name} {event.get('data', {})}"
                return False
            if name == "STOP" and not self.expect_stop:  # an unrequested stop: find out why
                status = self._status()
                if status in BAD_STATES:
                    self.trouble = f"guest stopped: {status}"
                    return False
        return True

    def _status(self) -> str:
        try:
            return str(self.process.qmp.cmd("query-status", timeout=5).get("status"))
        except QmpError:
            return "unknown"

    def wait_report(self, until: str = "boot", timeout: float = 45.0) -> WaitOutcome:
        """Wait for the boot report ('boot'), or any condition on the report (callable)."""
        started = time.monotonic()
        condition = (lambda r: r.boot_complete) if until == "boot" else until  # type: ignore[assignment]
        waited_before = self.run_queue_wait()
        ok = self.reader.wait_file(self.console, condition, timeout=timeout, alive=self.alive,
                                   starved=lambda: self.run_queue_wait() - waited_before)
        seconds = time.monotonic() - (self.cont_at or started)
        if ok:
            return WaitOutcome(True, seconds=seconds)
        if self.report.panic:
            return WaitOutcome(False, f"guest kernel panic: {self.report.panic}", seconds)
        if self.trouble:
            return WaitOutcome(False, self.trouble, seconds)
        what = "boot report (END-OF-BOOT-REPORT)" if until == "boot" else "the expected report"
        seen = "nothing on the console" if not self.reader.report.init_started else "the guest's init started"
        waited = time.monotonic() - started
        loaded = f", {waited - timeout:.0f} s more given back for the host's load" if waited > timeout + 1 else ""
        return WaitOutcome(False, f"boot timeout: no {what} in {timeout:g} s ({seen}{loaded})", seconds)

    def console_tail(self, lines: int = 30) -> str:
        return file_tail(self.console, lines)

    def run_queue_wait(self) -> float:
        """Seconds QEMU's threads have spent runnable but waiting for a CPU other processes held, summed over
        its threads (the kernel's schedstat run_delay; 0.0 when QEMU is gone or /proc cannot say): the time a
        loaded host took from the guest, which a wait gives back. Summed, not the busiest thread's: under TCG
        the vCPU thread also waits, sleeping, for the main loop's lock while the main loop waits for a CPU
        (measured at load 12: the busiest thread's figure gave back 21-56 s of a boot that needed 50-60 s
        more; the guest's QEMU had used 10-13 of the 14 CPU s it needs)."""
        pid = self.process.pid
        if pid is None:
            return 0.0
        waited = 0
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    waited += int((task / "schedstat").read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        except OSError:
            return 0.0
        return waited / 1e9

    def cpu_seconds(self) -> float:
        """CPU s (user + system) QEMU used so far: read from /proc while it runs, the figure at its stop after
        (0.0 when it never started or /proc could not be read)."""
        if self._cpu_at_stop is not None:
            return self._cpu_at_stop
        pid = self.process.pid
        if pid is None or not self.process.is_running():
            return 0.0
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def stop(self) -> Exit:
        if self._cpu_at_stop is None:
            self._cpu_at_stop = self.cpu_seconds() or None
        return self.process.stop()

    def __enter__(self) -> GuestVm:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
