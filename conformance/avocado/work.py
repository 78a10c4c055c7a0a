"""One work item (case, stage, build, peer) through the suite's own stage functions.

What avocado runs per test; nothing here imports avocado. The static stages use
conformance.runner.run_static, boots conformance.live.boot.run_boot, migrations
conformance.live.migrate.run_migrate, exactly as ``qemu-conformance run`` does.
A probe of a binary is cached on disk (keyed by its path, size and mtime): every
avocado test is its own process, and probing per test would cost 0.2 s each.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from conformance.caps.model import Capabilities
from conformance.cases import Case, Catalogue, load_catalogue
from conformance.errors import ConformanceError
from conformance.results.records import QemuBuild, ResultWriter, StageResult
from conformance.shard import STATIC_STAGES, WorkItem

STAGES = ("parse", "argv", "boot", "migrate")


@functools.cache
def describe_binary(binary: str) -> tuple[str, str]:
    """(VERSION-ARCH, arch) of a QEMU binary from ``--version`` (cheap: the resolver names tests with it)."""
    arch = Path(binary).name.removeprefix("qemu-system-")
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConformanceError(f"cannot run {binary} --version: {exc}", hint="give a qemu-system-* binary") from None
    found = re.search(r"version (\d+\.\d+\.\d+)", out)
    if not found:
        raise ConformanceError(f"{binary} --version does not name a QEMU version: {out.strip()[:80]!r}")
    return f"{found[1]}-{arch}", arch


def host_binaries() -> list[str]:
    import shutil

    return [w for w in map(shutil.which, ("qemu-system-x86_64", "qemu-system-aarch64")) if w]


def plan_items(catalogue: Catalogue, cases: list[Case], binaries: list[str], stages: list[str]
               ) -> list[tuple[WorkItem, str, str]]:
    """(item, binary, peer binary) for every work item of ``cases`` on ``binaries``: conformance.shard's plan."""
    from conformance.shard import work_items

    labels = {b: describe_binary(b) for b in binaries}
    by_label = {label: b for b, (label, _) in labels.items()}
    items = work_items(catalogue, list(labels.values()), stages, [c.name for c in cases])
    return [(i, by_label[i.build], by_label[i.peer] if i.peer else "") for i in items]


def _cache_dir() -> Path:
    from conformance.paths import cache_dir

    return cache_dir() / "probes"


def cached_caps(binary: Path) -> Capabilities:
    """probe_binary, cached on disk per (path, size, mtime) of the binary."""
    from conformance.caps.store import load

    stat = binary.stat()
    key = hashlib.sha256(f"{binary.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    path = _cache_dir() / f"{key}.xml"
    if path.exists():
        try:
            return load(path)
        except ConformanceError:
            path.unlink(missing_ok=True)
    from conformance.caps.fixture import write_fixture
    from conformance.caps.probe import probe_binary  # QMP and asyncio: only on a miss

    caps = probe_binary(binary)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    write_fixture(caps, tmp)
    tmp.replace(path)  # atomic: parallel tests may probe the same binary
    return caps


class _Keep(ResultWriter):
    """A ResultWriter that also keeps the records of one stage."""

    def __init__(self, output: Path, stage: str) -> None:
        super().__init__(output)
        self.stage = stage
        self.kept: list[StageResult] = []

    def write(self, result: StageResult) -> None:
        if result.stage == self.stage:
            self.kept.append(result)
            super().write(result)


def run_item(case_name: str, stage: str, qemu: Path, peer: Path | None, output: Path,
             say: Callable[[str], None] = lambda _text: None) -> StageResult:
    """Run one work item; the result's artefacts are files under ``output`` (paths relative to it)."""
    from conformance.runner import make_target, run_static_caps

    catalogue = load_catalogue()
    case = catalogue.get(case_name)
    output.mkdir(parents=True, exist_ok=True)
    caps = cached_caps(qemu)
    build = QemuBuild(str(qemu), str(caps.version), caps.package, caps.arch)
    if stage in STATIC_STAGES:  # neither a guest nor an accelerator (nor their imports)
        writer = _Keep(output, stage)
        run_static_caps([case], caps, build, writer, catalogue, say)
        if writer.kept:
            return writer.kept[0]
        why = (f"the parse stage expects the error {case.expect_error!r}: there is no {stage} stage"
               if case.expect_error and stage in case.stages and caps.arch in case.arches
               else f"case {case.name} has no {stage} stage on {caps.arch}")
        return StageResult(case=case.name, stage=stage, verdict="skip", reason=why, arch=caps.arch, qemu=build)
    target = make_target(qemu, say, caps=caps)
    if stage == "boot":
        from conformance.live.boot import run_boot

        result = run_boot(case, target, catalogue, output).result
    elif stage == "migrate":
        from conformance.live.migrate import run_migrate

        destination = target if peer is None or peer == qemu else make_target(peer, say, caps=cached_caps(peer))
        result = run_migrate(case, target, destination, catalogue, output)
    else:
        raise ConformanceError(f"unknown stage {stage!r}", hint=f"stages: {', '.join(STAGES)}")
    ResultWriter(output).write(result)
    return result
