"""The nrunner runner of kind ``qemu-conformance``: one work item, reported to avocado.

Runnable: ``uri`` is the item's id (``teaming-q35.boot[7.2.22-x86_64]``), kwargs ``case``,
``stage``, ``qemu`` (binary) and, for a migration, ``peer`` (destination binary) and, planned under
``machines`` all or a REGEX, ``machine`` (the machine type both sides run under).

The stage runs in a private scratch folder; its result record and every artefact it
names travel back to the job as avocado file messages, into the test's folder under
``qemu-conformance/`` (the record is ``qemu-conformance/result.json``). Messages go
through avocado's status server, so this works the same in a local process and on a
remote host (remote spawner), whose file system the job cannot see.

Nothing here imports avocado. avocado starts this module once per test
(``avocado-runner-qemu-conformance task-run ...``, or ``python3 -m conformance.avocado.runner
task-run ...`` on a remote host), and importing avocado costs 0.37 s of CPU per process, more
than the suite's budget for avocado's whole overhead per test (0.5 s). So ``task-run`` speaks
nrunner's documented runner interface itself: the ``task-run`` arguments, and one JSON message
per line to each status server (``-s host:port`` or a UNIX socket path), with bytes as
``{"__base64_encoded__": ...}``. The messages are the ones avocado's own runners send
(avocado/core/utils/messages.py); every other command (``capabilities``, ``runnable-run``, ...)
goes to avocado's runner application (conformance.avocado.plugins.RunnerApp). The same message
generator, ``item_messages``, serves both.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conformance.avocado.status import avocado_status
from conformance.results.records import StageResult

KIND = "qemu-conformance"
ARTEFACTS = "qemu-conformance"  # folder in the test's results folder
RESULT_FILE = "result.json"
FILE_LIMIT = 8 << 20  # bytes; a message is one line in avocado's status server (32 MiB buffer), base64 inside
RUNNING_INTERVAL = 0.5  # s between "running" messages, as avocado's runners send them


def message(status: str, **fields: Any) -> dict[str, Any]:
    """An nrunner status message: the fields that are not None, the status and a monotonic time."""
    sent = {k: v for k, v in fields.items() if v is not None}
    sent.update(status=status, time=time.monotonic())
    return sent


def log_message(text: str) -> dict[str, Any]:
    return message("running", type="log", log=text.encode(), encoding="utf-8")


def file_message(data: bytes | str, path: str) -> dict[str, Any]:
    """A file for the test's results folder (``path`` relative to it)."""
    if isinstance(data, str):
        return message("running", type="file", log=data.encode(), encoding="utf-8", path=path)
    return message("running", type="file", log=data, path=path)


def finished_message(result: str, fail_reason: str | None = None) -> dict[str, Any]:
    return message("finished", result=result, fail_reason=fail_reason)


def variant_settings(variant: dict[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """The suite's settings (``QEMU_CONFORMANCE_*``, docs/settings.md) among a variant's parameters
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


def _run(kwargs: dict[str, Any], variant: dict[str, Any] | None, scratch: Path, box: dict[str, Any]) -> None:
    import os

    from conformance.avocado.work import run_item

    settings, ignored = variant_settings(variant)
    os.environ.update(settings)  # this process runs this one test
    box["settings"] = settings
    log = box.setdefault("log", [])
    log += [f"setting {k}={v} (from the variant)" for k, v in sorted(settings.items())]
    log += [f"parameter {k} ignored: the suite reads QEMU_CONFORMANCE_* settings" for k in ignored]
    try:
        machine = {"machine": str(kwargs["machine"])} if kwargs.get("machine") else {}  # --machines all/REGEX
        box["result"] = run_item(kwargs["case"], kwargs["stage"], Path(kwargs["qemu"]),
                                 Path(kwargs["peer"]) if kwargs.get("peer") else None, scratch,
                                 say=log.append, **machine)
    except Exception as exc:  # every failure is the test's result, never a hung runner
        box["error"] = f"suite error: {type(exc).__name__}: {exc}"


def where() -> dict[str, str]:
    """The host a runner runs on: its name and network namespace (which tells test hosts on one machine apart)."""
    import os

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
        yield file_message(path.read_bytes(), f"{ARTEFACTS}/{rel}")
    if left:
        result.details["artefacts_left_behind"] = {"files": left, "why": f"over {FILE_LIMIT >> 20} MiB"}
    yield file_message(result.to_json() + "\n", f"{ARTEFACTS}/{RESULT_FILE}")


def item_messages(uri: str, kwargs: dict[str, Any], variant: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Run one work item and yield its nrunner messages: started, running (every RUNNING_INTERVAL),
    the log, the artefacts and the record as files, finished with our verdict as avocado's status."""
    yield message("started")
    missing = [k for k in ("case", "stage", "qemu") if not kwargs.get(k)]
    if missing:
        yield finished_message("error", f"runnable lacks {', '.join(missing)} (uri {uri})")
        return
    scratch = Path(tempfile.mkdtemp(prefix="qemu-conformance-avocado-"))
    box: dict[str, Any] = {}
    try:
        worker = threading.Thread(target=_run, args=(kwargs, variant, scratch, box), daemon=True)
        worker.start()
        while worker.is_alive():
            yield message("running")
            worker.join(RUNNING_INTERVAL)
        for line in box.get("log", []):
            yield log_message(f"{line}\n")
        result: StageResult | None = box.get("result")
        if result is None:
            yield finished_message("error", box.get("error", "no result"))
            return
        yield log_message(f"{result.stage} {result.case}: {result.verdict} {result.reason}\n")
        result.details["avocado_host"] = where()
        if box.get("settings"):
            result.details["avocado_settings"] = box["settings"]
        yield from artefact_messages(result, scratch)
        yield finished_message(*avocado_status(result.verdict, result.reason))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class StatusPoster:
    """Posts messages to one avocado status server: ``host:port`` (TCP) or a UNIX socket path."""

    CONNECT_TRIES = 60  # a TCP server that is not listening yet: one try a second, as avocado's runners do

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if ":" not in self.uri:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.uri)
            return sock
        host, port = self.uri.rsplit(":", 1)
        for _ in range(self.CONNECT_TRIES - 1):
            try:
                return socket.create_connection((host, int(port)))
            except ConnectionRefusedError:
                time.sleep(1)
        return socket.create_connection((host, int(port)))

    def post(self, status: dict[str, Any]) -> None:
        line = (json.dumps(status, ensure_ascii=True, default=_encode_bytes) + "\n").encode("ascii")
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.sendall(line)
        except BrokenPipeError:  # the server closed the connection: once more on a new one
            self._sock = self._connect()
            self._sock.sendall(line)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def _encode_bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__base64_encoded__": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot send {type(value).__name__} in a status message")


def _kwarg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of the runner interface; ``json:`` before a value means JSON."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f'invalid keyword argument {text!r}: expected KEY=VALUE')
    return key, json.loads(value[5:]) if value.startswith("json:") else value


def task_run(argv: list[str]) -> int:
    """``task-run``: run the task and post its messages to every status server (a line each on stdout too,
    without file contents)."""
    ap = argparse.ArgumentParser(prog="avocado-runner-qemu-conformance task-run")
    ap.add_argument("-i", "--identifier", required=True)
    ap.add_argument("-j", "--job-id")
    ap.add_argument("-t", "--category", default="test")
    ap.add_argument("-s", "--status-uri", action="append", default=[])
    ap.add_argument("-k", "--kind", default=KIND)
    ap.add_argument("-u", "--uri")
    ap.add_argument("-c", "--config", default="{}")
    ap.add_argument("-a", "--arg", action="append", default=[])
    ap.add_argument("kwargs", nargs="*", type=_kwarg, default=[])
    args = ap.parse_args(argv)
    kwargs = dict(args.kwargs)
    variant = kwargs.pop("variant", None)
    output_dir = kwargs.pop("output_dir", None)
    for extra in ("tags", "dependencies", "assets"):
        kwargs.pop(extra, None)
    posters = [StatusPoster(uri) for uri in args.status_uri]
    try:
        for status in item_messages(args.uri or "", kwargs, variant):
            if status["status"] == "started" and output_dir:
                status["output_dir"] = output_dir
            status["id"] = args.identifier
            if args.job_id is not None:
                status["job_id"] = args.job_id
            for poster in posters:
                poster.post(status)
            print(json.dumps({k: v for k, v in status.items() if k != "log" or status.get("type") != "file"},
                             default=_encode_bytes), flush=True)
    finally:
        for poster in posters:
            poster.close()
    return 0


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["task-run"] and "-k" in argv and argv[argv.index("-k") + 1:][:1] == [KIND]:
        sys.exit(task_run(argv[1:]))
    from conformance.avocado.plugins import RunnerApp  # everything else: avocado's runner application

    RunnerApp(print).run()


if __name__ == "__main__":
    main()
