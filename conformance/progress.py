"""Progress of a long run: a live status line on a terminal, one line per result elsewhere (CI logs).

On a terminal (rich): done/total, the stage, elapsed time, ETA and counts by verdict, redrawn in
place, with every result that is not a pass printed above it. Elsewhere: one line per result, as
before, so a CI log reads top to bottom. ``QEMU_CONFORMANCE_PROGRESS=lines`` or ``live`` overrides
the choice.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from conformance.results.verdicts import TABLE

Say = Callable[[str], None]


def wants_live(stream: IO[str] | None = None) -> bool:
    """A live status line only on a terminal (and not when the environment asks for lines)."""
    choice = os.environ.get("QEMU_CONFORMANCE_PROGRESS", "")
    if choice in ("lines", "live"):
        return choice == "live"
    stream = stream or sys.stdout
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class RunProgress:
    """Report results of one stage as they finish: ``with RunProgress("boot", 44, say) as p: p.done(...)``."""

    def __init__(self, stage: str, total: int, say: Say, *, live: bool | None = None,
                 console: Console | None = None) -> None:
        self.stage, self.total, self.say = stage, total, say
        self.live = wants_live() if live is None else live
        self.counts: Counter[str] = Counter()
        self.finished = 0
        self._console = console
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> RunProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[counts]}"),
                console=self._console or Console(), transient=True, refresh_per_second=2)
            self._bar.start()
            self._task = self._bar.add_task(self.stage, total=self.total, counts="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def counts_text(self) -> str:
        """``pass 12  fail 1``: verdicts in the table's order (worst first)."""
        return "  ".join(f"{v.name} {self.counts[v.name]}" for v in TABLE if self.counts[v.name])

    def done(self, verdict: str, line: str) -> None:
        """One result finished: its verdict and its line (``[3/44] boot q35-minimal on ...: PASS``)."""
        self.finished += 1
        self.counts[verdict] += 1
        if self._bar is None or self._task is None:
            self.say(line)
            return
        if verdict != "pass":
            self._bar.console.print(line, markup=False, highlight=False)
        self._bar.update(self._task, advance=1, counts=self.counts_text())
