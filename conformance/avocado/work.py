"""One work item (case, stage, build, peer, machine type) through the suite's own stage functions.

What avocado runs per test; nothing here imports avocado. The resolver plans the items with
conformance.plan, and each runs through the runner's own functions (run_static_items for the static
stages, live_stage_runner for boot and migrate), exactly as ``qemu-conformance run`` does.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.caps.model import Capabilities
from conformance.cases import Case, load_catalogue
from conformance.errors import ConformanceError
from conformance.plan import WorkItem
from conformance.results.records import QemuBuild, ResultWriter, StageResult
from conformance.stages import CASE_STAGES as STAGES
from conformance.stages import stage as stage_row


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


def plan_items(cases: list[Case], binaries: list[str], stages: list[str], machines: str = "newest"
               ) -> list[tuple[WorkItem, str, str]]:
    """(item, binary, peer binary) for every work item of ``cases`` on ``binaries``: conformance.plan's plan;
    ``machines`` (newest, all or a REGEX: conformance/machines.py) the machine types each migration runs under,
    read from the binaries' (cached) capabilities."""
    from conformance.machines import MachineChoice, planner_machines
    from conformance.plan import plan

    try:
        choice = MachineChoice.parse(machines)
    except ValueError as exc:
        raise ConformanceError(str(exc), hint="[qemu_conformance] machines: newest, all or a regular expression") \
            from None
    chosen = planner_machines(choice, lambda binary: cached_caps(Path(binary)))
    return [(p.item, p.build, p.peer or "") for p in plan(cases, binaries, stages, describe_binary, machines=chosen)]


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


def run_item(case_name: str, stage: str, qemu: Path, peer: Path | None, output: Path,
             say: Callable[[str], None] = lambda _text: None, machine: str = "") -> StageResult:
    """Run one work item (``machine``: the machine type a migration was planned under, '' for the stage's own
    choice); the result's artefacts are files under ``output`` (paths relative to it)."""
    from conformance.runner import live_stage_runner, make_target, run_static_items

    if stage not in STAGES:
        raise ConformanceError(f"unknown stage {stage!r}", hint=f"stages: {', '.join(STAGES)}")
    catalogue = load_catalogue()
    case = catalogue.get(case_name)
    output.mkdir(parents=True, exist_ok=True)
    caps = cached_caps(qemu)
    build = QemuBuild(str(qemu), str(caps.version), caps.package, caps.arch)
    if stage == "vmstate":  # a pair, judged from the builds' own answers (conformance/vmstate.py): no guest
        return _run_vmstate(case, catalogue, qemu, caps, peer, output, say, machine)
    if not stage_row(stage).live:  # neither a guest nor an accelerator (nor their imports)
        from conformance.plan import plan

        items = plan([case], [caps], [stage], lambda c: (c.label, c.arch))
        if items:
            return run_static_items(items, caps, build, ResultWriter(output), catalogue, say)[0]
        return StageResult(case=case.name, stage=stage, verdict="skip", arch=caps.arch, qemu=build,
                           reason=f"case {case.name} has no {stage} stage on {caps.arch}")
    target = make_target(qemu, say, caps=caps)
    destination = None
    if stage_row(stage).scope == "pair":
        destination = target if peer is None or peer == qemu else make_target(peer, say, caps=cached_caps(peer))
    result = live_stage_runner(stage, catalogue, output)(case, target, destination, machine)
    ResultWriter(output).write(result)
    return result


@dataclass(frozen=True)
class _Build:
    """What the vmstate stage reads of a build: its binary and capabilities (no accelerator, no guest)."""

    binary: Path
    caps: Capabilities

    @property
    def build(self) -> QemuBuild:
        return QemuBuild(str(self.binary), str(self.caps.version), self.caps.package, self.caps.arch)


def _run_vmstate(case: Case, catalogue: Any, qemu: Path, caps: Capabilities, peer: Path | None, output: Path,
                 say: Callable[[str], None], machine: str) -> StageResult:
    """One vmstate item: ``qemu`` to ``peer`` (itself when None) under ``machine`` ('' for the stage's own
    choice, the newest type both builds have)."""
    from conformance.plan import Planned
    from conformance.vmstate import run_items

    source = _Build(qemu, caps)
    destination = source if peer is None or peer == qemu else _Build(peer, cached_caps(peer))
    item = WorkItem(case.name, "vmstate", caps.label, destination.caps.label, machine)
    planned = Planned(case, stage_row("vmstate"), source, destination, item)
    return run_items([planned], ResultWriter(output), catalogue, say)[0]
