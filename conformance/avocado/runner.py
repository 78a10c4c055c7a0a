"""The nrunner runner of kind ``qemu-conformance``: one work item, reported to avocado.

Runnable: ``uri`` is the item's id (``teaming-q35.boot[7.2.22-x86_64]``), kwargs ``case``,
``stage``, ``qemu`` (binary) and, for a migration, ``peer`` (destination binary).

The stage runs in a private scratch folder; its result record and every artefact it
names travel back to the job as avocado file messages, into the test's folder under
``qemu-conformance/`` (the record is ``qemu-conformance/result.json``). Messages go
through avocado's status server, so this works the same in a local process and on a
remote host (remote spawner), whose file system the job cannot see.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from avocado.core.nrunner.app import BaseRunnerApp
from avocado.core.nrunner.runner import BaseRunner
from avocado.core.utils import messages

from conformance.avocado.status import avocado_status
from conformance.results.records import StageResult

KIND = "qemu-conformance"
ARTEFACTS = "qemu-conformance"  # folder in the test's results folder
RESULT_FILE = "result.json"
FILE_LIMIT = 8 << 20  # bytes; a message is one line in avocado's status server (32 MiB buffer), base64 inside


def variant_settings(variant: dict[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """The suite's settings (``QEMU_CONFORMANCE_*``, see the README) among a variant's parameters
    (``avocado run -p NAME=VALUE``, or a varianter plugin), and the names of the others."""
    settings: dict[str, str] = {}
    ignored: list[str] = []
    for _path, env in (variant or {}).get("variant") or []:
        for _where, key, value in env:
            if key.startswith("QEMU_CONFORMANCE_"):
                settings[key] = str(value)
            else:
                ignored.append(key)
    return settings, ignored


def _run(runnable: Any, scratch: Path, box: dict[str, Any]) -> None:
    import os

    from conformance.avocado.work import run_item

    settings, ignored = variant_settings(runnable.variant)
    os.environ.update(settings)  # this process runs this one test
    box["settings"] = settings
    log = box.setdefault("log", [])
    log += [f"setting {k}={v} (from the variant)" for k, v in sorted(settings.items())]
    log += [f"parameter {k} ignored: the suite reads QEMU_CONFORMANCE_* settings" for k in ignored]
    kwargs = runnable.kwargs
    try:
        box["result"] = run_item(kwargs["case"], kwargs["stage"], Path(kwargs["qemu"]),
                                 Path(kwargs["peer"]) if kwargs.get("peer") else None, scratch,
                                 say=box.setdefault("log", []).append)
    except Exception as exc:  # every failure is the test's result, never a hung runner
        box["error"] = f"suite error: {type(exc).__name__}: {exc}"


def where() -> dict[str, str]:
    """The host a runner runs on: its name and network namespace (which tells test hosts on one machine apart)."""
    import os
    import socket

    host = {"hostname": socket.gethostname()}
    with contextlib.suppress(OSError):
        host["netns"] = os.readlink("/proc/self/ns/net")
    return host


def artefact_files(result: StageResult, scratch: Path) -> list[Path]:
    """The files the result's artefacts name (a folder artefact: the files in it), each once."""
    found: set[Path] = set()
    for rel in result.artifacts.values():
        path = scratch / rel
        found.update([path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()))
    return sorted(found)


def artefact_messages(result: StageResult, scratch: Path) -> Iterator[dict[str, Any]]:
    """File messages for every artefact the result names, then the record itself. Files over
    FILE_LIMIT (a raw disk image) stay behind: the record says which."""
    left = []
    for path in artefact_files(result, scratch):
        rel = path.relative_to(scratch)
        if path.stat().st_size > FILE_LIMIT:
            left.append(str(rel))
            continue
        yield messages.FileMessage.get(path.read_bytes(), f"{ARTEFACTS}/{rel}")
    if left:
        result.details["artefacts_left_behind"] = {"files": left, "why": f"over {FILE_LIMIT >> 20} MiB"}
    yield messages.FileMessage.get(result.to_json() + "\n", f"{ARTEFACTS}/{RESULT_FILE}")


class ConformanceRunner(BaseRunner):
    """Runs one (case, stage, build, peer) of qemu-conformance with the suite's stage functions."""

    name = KIND
    description = "Runs a qemu-conformance work item (case x stage x QEMU build x peer)"
    CONFIGURATION_USED: ClassVar[list[str]] = []

    def run(self, runnable: Any) -> Iterator[dict[str, Any]]:
        yield messages.StartedMessage.get()
        missing = [k for k in ("case", "stage", "qemu") if not runnable.kwargs.get(k)]
        if missing:
            yield messages.FinishedMessage.get("error", f"runnable lacks {', '.join(missing)} (uri {runnable.uri})")
            return
        scratch = Path(tempfile.mkdtemp(prefix="qemu-conformance-avocado-"))
        box: dict[str, Any] = {}
        try:
            worker = threading.Thread(target=_run, args=(runnable, scratch, box), daemon=True)
            worker.start()
            yield from self.running_loop(lambda: not worker.is_alive())
            worker.join()
            for line in box.get("log", []):
                yield messages.LogMessage.get(f"{line}\n")
            result: StageResult | None = box.get("result")
            if result is None:
                yield messages.FinishedMessage.get("error", box.get("error", "no result"))
                return
            yield messages.LogMessage.get(f"{result.stage} {result.case}: {result.verdict} {result.reason}\n")
            result.details["avocado_host"] = where()
            if box.get("settings"):
                result.details["avocado_settings"] = box["settings"]
            yield from artefact_messages(result, scratch)
            status, reason = avocado_status(result.verdict, result.reason)
            yield messages.FinishedMessage.get(status, reason)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


class RunnerApp(BaseRunnerApp):
    PROG_NAME = "avocado-runner-qemu-conformance"
    PROG_DESCRIPTION = "nrunner application for qemu-conformance work items"
    RUNNABLE_KINDS_CAPABLE: ClassVar[list[str]] = [KIND]


def main() -> None:
    RunnerApp(print).run()


if __name__ == "__main__":
    sys.exit(main())
