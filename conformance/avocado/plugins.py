"""avocado plugins: settings, the ``qemu-conformance:CASE_GLOB`` resolver, the runner of our kind as avocado
loads it, and our results.jsonl per job.

Settings, in avocado's configuration (``avocado --config FILE run ...`` or ~/.config/avocado/avocado.conf):

    [qemu_conformance]
    qemu = ["/usr/bin/qemu-system-x86_64", "/root/.cache/qemu-conformance/builds/qemu-10.0/bin/qemu-system-x86_64"]
    stages = ["parse", "argv", "boot"]
    machines = all

Defaults: the host's qemu-system-x86_64 and -aarch64, every stage a case can list (conformance/stages.py),
machines ``newest`` (one migration per pair; ``all`` or a regular expression: one per shared machine type,
conformance/machines.py).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from avocado.core.nrunner.app import BaseRunnerApp
from avocado.core.nrunner.runnable import Runnable
from avocado.core.nrunner.runner import BaseRunner
from avocado.core.plugin_interfaces import Init, Resolver, Result
from avocado.core.resolver import ReferenceResolution, ReferenceResolutionResult
from avocado.core.settings import settings

from conformance.avocado.runner import ARTEFACTS, KIND, RESULT_FILE, item_messages
from conformance.plan import WorkItem
from conformance.stages import CASE_STAGES

PREFIX = "qemu-conformance:"
SECTION = "qemu_conformance"


class ConformanceInit(Init):
    name = "qemu-conformance"
    description = "qemu-conformance settings ([qemu_conformance] qemu, stages, machines)"

    def initialize(self) -> None:
        settings.register_option(section=SECTION, key="qemu", key_type=list, default=[],
                                 help_msg="QEMU binaries to run the cases on (default: the host's)")
        settings.register_option(section=SECTION, key="stages", key_type=list, default=list(CASE_STAGES),
                                 help_msg=f"stages to run: {', '.join(CASE_STAGES)}")
        settings.register_option(section=SECTION, key="machines", key_type=str, default="newest",
                                 help_msg="machine types each migration runs under: newest, all, or a regular "
                                          "expression among the versioned types both builds have")


class ConformanceResolver(Resolver):
    """``qemu-conformance:GLOB[,GLOB...]`` -> one runnable per (case, stage, build, peer)."""

    name = "qemu-conformance"
    description = "qemu-conformance cases (qemu-conformance:CASE_GLOB)"

    def resolve(self, reference: str) -> ReferenceResolution:
        if not reference.startswith(PREFIX):
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND)
        from conformance.avocado.work import STAGES, host_binaries, plan_items
        from conformance.cases import load_catalogue
        from conformance.errors import ConformanceError

        globs = [g for g in reference[len(PREFIX):].split(",") if g] or ["*"]
        binaries = [str(b) for b in self.config.get(f"{SECTION}.qemu") or host_binaries()]
        stages = list(self.config.get(f"{SECTION}.stages") or STAGES)
        try:
            bad = sorted(set(stages) - set(STAGES))
            if bad:
                raise ConformanceError(f"unknown stage(s) {', '.join(bad)} in [{SECTION}] stages",
                                       hint=f"stages: {', '.join(STAGES)}")
            if not binaries:
                raise ConformanceError("no QEMU binary", hint=f"install qemu-system-x86 or set [{SECTION}] qemu")
            catalogue = load_catalogue()
            cases = [c for c in catalogue.cases.values() if any(fnmatch.fnmatchcase(c.name, g) for g in globs)]
            planned = plan_items(cases, binaries, stages, str(self.config.get(f"{SECTION}.machines") or "newest"))
        except ConformanceError as exc:
            return ReferenceResolution(reference, ReferenceResolutionResult.ERROR, info=str(exc))
        if not planned:
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND,
                                       info=f"no work item: no case matches {', '.join(globs)} on these builds")
        runnables = []
        for item, binary, peer in planned:
            kwargs: dict[str, Any] = {"case": item.case, "stage": item.stage, "qemu": binary}
            if peer:
                kwargs["peer"] = peer
            if item.machine:
                kwargs["machine"] = item.machine
            runnables.append(Runnable(KIND, avocado_id(item), config={}, **kwargs))
        return ReferenceResolution(reference, ReferenceResolutionResult.SUCCESS, runnables)


def avocado_id(item: WorkItem) -> str:
    """The test name: the item's id with ``_to_`` for ``->`` (teaming-q35.migrate[7.2.22-x86_64_to_10.0.2-x86_64]).
    avocado's remote spawner puts the test id unquoted into a shell command (``pgrep -r R,S -f ID``), where
    ``>`` would redirect."""
    return item.id.replace("->", "_to_")


def collect_results(job_dir: Path) -> list[dict[str, Any]]:
    """Our records from every test folder of a job, artefact paths made relative to the job folder."""
    records = []
    for record_file in sorted(job_dir.glob(f"test-results/*/{ARTEFACTS}/{RESULT_FILE}")):
        base = record_file.parent.relative_to(job_dir)
        for line in record_file.read_text().splitlines():
            if not line.strip():
                continue
            data = json.loads(line)
            data["artifacts"] = {k: str(base / v) for k, v in data.get("artifacts", {}).items()}
            data.setdefault("details", {})["avocado_test"] = record_file.parent.parent.name
            records.append(data)
    return records


class ConformanceResult(Result):
    """JOB/results.jsonl (and JOB/shard.json): ``qemu-conformance report`` merges avocado jobs with other runs."""

    name = "qemu-conformance"
    description = "qemu-conformance results.jsonl in the job results folder"

    def render(self, result: Any, job: Any) -> None:
        job_dir = Path(job.logdir)
        records = collect_results(job_dir)
        if not records:
            return
        (job_dir / "results.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        from conformance.cases import load_catalogue
        from conformance.shard import WHOLE, write_manifest

        write_manifest(job_dir, WHOLE, load_catalogue())


class ConformanceRunner(BaseRunner):
    """Runs one (case, stage, build, peer) of qemu-conformance with the suite's stage functions, for avocado's
    in-process uses (``runnable-run``, ``task-run`` of a kind avocado resolves through its entry point). A
    spawned test goes through conformance.avocado.runner's own ``task-run``, with the same messages."""

    name = KIND
    description = "Runs a qemu-conformance work item (case x stage x QEMU build x peer)"
    CONFIGURATION_USED: ClassVar[list[str]] = []

    def run(self, runnable: Any) -> Iterator[dict[str, Any]]:
        yield from item_messages(runnable.uri, runnable.kwargs, runnable.variant)


class RunnerApp(BaseRunnerApp):
    PROG_NAME = "avocado-runner-qemu-conformance"
    PROG_DESCRIPTION = "nrunner application for qemu-conformance work items"
    RUNNABLE_KINDS_CAPABLE: ClassVar[list[str]] = [KIND]
