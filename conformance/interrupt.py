"""Stop when told: SIGINT (Ctrl-C) and SIGTERM (a cancelled CI job) during `run` and `qualify`.

The first signal:
- refuses every new QEMU and ends the running ones (conformance.qemu.process.halt_all), so each running
  work item ends within seconds, whatever it was waiting for;
- sets ``STOP``: the executor cancels the queued items and records the running and queued ones as
  ``interrupted`` (a verdict of its own), and the command writes its results, report and JUnit;
- the command then exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

A second signal ends everything at once: every QEMU is killed and the process exits with the same code,
writing nothing more.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from conformance.qemu.process import halt_all, resume_starting

#: Set by the first SIGINT/SIGTERM of a run: stop starting work.
STOP = threading.Event()
_state: dict[str, int] = {}  # "signal": the number of the first signal received


def signal_name() -> str:
    """The first signal received ('SIGINT'), or '' while none was."""
    number = _state.get("signal")
    return signal.Signals(number).name if number else ""


def exit_code() -> int:
    """128 + the first signal's number (130 for SIGINT, 143 for SIGTERM), or 0 while none was."""
    number = _state.get("signal")
    return 128 + number if number else 0


def reason() -> str:
    """What an interrupted item's result says."""
    return f"interrupted ({signal_name() or 'stopped'}): the run was stopped before this item finished"


def request_stop(signum: int = signal.SIGINT, say: Callable[[str], None] | None = None) -> None:
    """What the first signal does (also callable directly, e.g. from a test)."""
    if STOP.is_set():
        return
    _state["signal"] = signum
    STOP.set()
    if say is not None:
        say(f"{signal.Signals(signum).name}: stopping: no new QEMU starts, running ones end now; "
            "results so far, the report and JUnit will be written (press Ctrl-C again to end at once)")
    # in a thread: SIGTERM's grace period must not block the main thread's handler
    threading.Thread(target=halt_all, args=(f"the run was interrupted ({signal.Signals(signum).name})",),
                     name="halt", daemon=True).start()


@contextmanager
def stop_on_signals(say: Callable[[str], None]) -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for one run (main thread only; elsewhere a no-op), restore the
    previous ones after, and reset the state so that a later run in the same process starts afresh."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if STOP.is_set():  # the second signal: everything at once
            halt_all("the run was interrupted twice", grace=0)
            print(f"\n{signal.Signals(signum).name} again: stopped at once, nothing more written",
                  file=sys.stderr, flush=True)
            os._exit(exit_code() or 128 + signum)
        request_stop(signum, say)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        code = exit_code()
        for sig, old in previous.items():
            # after an interruption the process is on its way out: a second signal while it writes its
            # last lines still ends it with the first signal's code (a shell reads 130 either way)
            signal.signal(sig, (lambda *_: os._exit(code)) if code else old)
        reset()


def reset() -> None:
    """Forget an earlier interruption (the next run in this process may start QEMUs again)."""
    STOP.clear()
    _state.clear()
    resume_starting()
