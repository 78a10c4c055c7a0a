"""Errors a user sees.

Every error the suite raises on bad input derives from ConformanceError. Its
message is one line that names the file (and line when known), the problem
and the fix; the CLI prints it and exits with code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ConformanceError(Exception):
    """Base class: a clear, one-line, user-facing error."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        text = f"{where}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split("\n"))


class FixtureError(ConformanceError):
    """A capability fixture is malformed, of an unknown version or missing a field."""


class ProbeFailed(ConformanceError):
    """A QEMU binary could not be probed: missing, not QEMU, crashed or hung."""


class TemplateError(ConformanceError):
    """A domain template does not render (syntax error, undefined variable)."""


class DomainInvalid(ConformanceError):
    """Domain XML is malformed, fails the schema or a semantic rule."""


class UnsupportedByQemu(ConformanceError):
    """The domain asks for something these QEMU capabilities cannot do."""


class CaseError(ConformanceError):
    """A case catalogue entry is malformed or names something unknown."""


class GuestBuildError(ConformanceError):
    """The test guest (kernel + initramfs) cannot be built here."""


class QemuBuildError(ConformanceError):
    """An extra QEMU build (e.g. 10.0 from backports) cannot be prepared or found."""


class LiveError(ConformanceError):
    """A live stage cannot run (e.g. QEMU refused to start)."""
