"""pytest plugin (registered through the pytest11 entry point).

Parametrisation: the parameters are the planner's work items (conformance/plan.py), for the
stages whose pytest column in the stage table (conformance/stages.py) names the fixture:
- a test that asks for ``static_combo`` runs once per case x capability fixture
  of that case's arch (parse and argv together), with ids such as ``teaming-q35[4.2.0-x86_64]``;
- a test that asks for ``live_combo`` runs once per case that lists boot x QEMU binary
  of that case's arch (default: the host's qemu-system-x86_64 and -aarch64),
  with ids such as ``teaming-q35[x86_64]``; it is marked ``live``, and ``smoke`` for a case that
  cases.toml marks ``smoke = true``;
- a test that asks for ``migrate_combo`` runs once per case that lists migrate x (source,
  destination) pair of QEMU binaries of one arch, each binary with itself
  included, with ids such as ``teaming-q35[7.2.22-x86_64->10.0.2-x86_64]``
  (``[...@pc-q35-7.2]`` per machine type under ``--conformance-machines all``);
  it is marked ``live``, and ``smoke`` for a smoke case from a build to itself (and for one cross-build pair
  with 10.0, when 10.0 is under test).
- a test that asks for ``vmstate_combo`` runs the static migration prediction (conformance/vmstate.py)
  once per case that lists vmstate x the same (source, destination) pairs and machine types as
  ``migrate_combo``, with the same ids (``teaming-q35[7.2.22-x86_64->10.0.2-x86_64@pc-q35-7.2]``); no guest
  boots, but each build answers from paused QEMUs (its answers cached by the build: a cold cache starts
  them), so it is marked ``live``, and ``smoke`` where the migration is.

Options:

    --conformance-cases GLOB   only these cases (repeatable)
    --conformance-caps GLOB    only fixtures whose file name matches (repeatable)
    --conformance-qemu PATH    QEMU binaries for live tests (repeatable)
    --conformance-output DIR   keep live artefacts and results.jsonl here (default: pytest's temp folder)
    --conformance-machines newest|all|REGEX
                               machine types each migration runs under (conformance/machines.py; default newest)
    --conformance-shard I/N    (or --shard) only shard I of N of the parametrised tests: the stable split of
                               conformance/shard.py over (case, kind, build, peer) read from each id

Process hygiene: every pytest process, xdist workers included, dies with its
parent (PR_SET_PDEATHSIG), and every QEMU dies with the process that started
it, so killing a run leaves no QEMU behind.

Markers: ``live`` (starts real QEMU guests), ``smoke`` (the live smoke set), ``slow``.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported lazily at run time: loading the plugin stays cheap
    from conformance.caps.model import Capabilities
    from conformance.cases import Catalogue
    from conformance.live.boot import BootRun, Target
    from conformance.plan import WorkItem
    from conformance.results.records import StageResult
    from conformance.static import StaticOutcome, StaticRunner


def _path_option(value: str) -> str:
    """``type=`` of the path options: absolute (against the working folder pytest started in), as a str
    (pytest-xdist sends the options to its workers, and execnet cannot send Path objects)."""
    from conformance.cli import path_arg

    return str(path_arg(value))


def _binary_option(value: str) -> str:
    """A QEMU binary option: a bare name looked up in $PATH, a path made absolute (as a str, see above)."""
    from conformance.cli import binary_arg

    return str(binary_arg(value))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qemu-conformance")
    group.addoption("--conformance-cases", action="append", default=[], metavar="GLOB",
                    help="run only the cases matching GLOB (repeatable)")
    group.addoption("--conformance-caps", action="append", default=[], metavar="GLOB",
                    help="use only the capsdata/ fixtures whose file name matches GLOB (repeatable)")
    group.addoption("--conformance-qemu", action="append", default=[], metavar="PATH", type=_binary_option,
                    help="QEMU binaries for live tests (repeatable; default: the host's)")
    group.addoption("--conformance-output", metavar="DIR", type=_path_option,
                    help="folder for live artefacts and results.jsonl (default: pytest's temp folder)")
    group.addoption("--conformance-machines", metavar="newest|all|REGEX", default="newest", type=_machines_option,
                    help="machine types each migration runs under: newest (default), all (every versioned type of "
                         "the case's family both builds have, one test each) or a regular expression among those")
    group.addoption("--conformance-shard", "--shard", dest="conformance_shard", metavar="I/N", type=_shard_option,
                    help="run only shard I of N of the parametrised conformance tests (CI matrices)")


def _shard_option(value: str) -> str:
    """``type=`` of --conformance-shard: checked here, kept as a str (xdist sends options to its workers)."""
    from conformance.shard import shard_arg

    return str(shard_arg(value))


def _machines_option(value: str) -> str:
    """``type=`` of --conformance-machines: checked here, kept as a str (xdist sends options to its workers)."""
    import argparse

    from conformance.machines import machine_arg

    choice = machine_arg(value)
    if choice.classes:  # ClassPlanner reads the builds' property values: `qemu-conformance run` only
        raise argparse.ArgumentTypeError(f"{value} is for `qemu-conformance run` only (docs/machines.md); "
                                         "use newest, all or a regular expression here")
    return choice.spec


def item_of(kind: str, test_id: str) -> WorkItem:
    """The work item a parametrised test id names: ``CASE[BUILD]``, ``CASE[SOURCE->DESTINATION]`` or
    ``CASE[SOURCE->DESTINATION@MACHINE]`` of ``kind``."""
    from conformance.plan import WorkItem

    case, _, inside = test_id.partition("[")
    on, _, machine = inside.removesuffix("]").partition("@")
    build, _, peer = on.partition("->")
    return WorkItem(case, kind, build, peer, machine)


def _in_shard(config: pytest.Config, kind: str, test_id: str) -> bool:
    """Whether the test ``CASE[BUILD]`` / ``CASE[SOURCE->DESTINATION(@MACHINE)]`` of ``kind`` belongs to the
    chosen shard."""
    from conformance.shard import Shard

    if not config.option.conformance_shard:
        return True
    return Shard.parse(config.option.conformance_shard).owns(item_of(kind, test_id))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: boots real QEMU guests (seconds each)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "smoke: the live smoke set, one case per feature (the README's test command "
                                       "runs it; `nox -s live` runs every live test)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from conformance.qemu.process import die_with_parent_self

        die_with_parent_self()


@dataclass(frozen=True)
class StaticCombo:
    """One case on one capability fixture."""

    case_name: str
    fixture: Path

    def run(self) -> list[StaticOutcome]:
        from conformance.caps.store import load

        return _static_runner().run(_catalogue().get(self.case_name), load(self.fixture))


@functools.cache
def _static_runner() -> StaticRunner:
    """One StaticRunner per process, so render/parse are shared by the fixtures of a case."""
    from conformance.static import StaticRunner

    return StaticRunner(_catalogue())


def _catalogue() -> Catalogue:
    from conformance.cases import load_catalogue

    return load_catalogue()


def _matches(name: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def static_combos(case_globs: list[str], caps_globs: list[str]) -> list[tuple[str, StaticCombo]]:
    """One test per case x fixture that has planned static items (conformance/plan.py): the stages whose
    pytest fixture is ``static_combo`` run together, parse and argv."""
    from conformance.caps.store import fixture_files, load
    from conformance.plan import plan

    fixtures = [(p, load(p)) for p in fixture_files() if _matches(p.name, caps_globs)]
    cases = [c for c in _catalogue().cases.values() if _matches(c.name, case_globs)]
    groups = {(p.case.name, p.build[0]): p.item.build
              for p in plan(cases, fixtures, _stages_of("static_combo"), lambda f: (f[1].label, f[1].arch))}
    order = {c.name: i for i, c in enumerate(cases)}  # case by case, each on its fixtures
    return [(f"{case}[{label}]", StaticCombo(case, path))
            for (case, path), label in sorted(groups.items(), key=lambda kv: order[kv[0][0]])]


def live_binaries(config: pytest.Config) -> list[Path]:
    import shutil

    given = [Path(p) for p in config.option.conformance_qemu]
    if given:
        return given
    return [Path(w) for w in map(shutil.which, ("qemu-system-x86_64", "qemu-system-aarch64")) if w]


def _binary_arch(binary: Path) -> str:
    return binary.name.removeprefix("qemu-system-")


def _binary_label(binary: Path) -> str:
    """x86_64 for /usr/bin/qemu-system-x86_64, x86_64-qemu-10.0 for a build folder's wrapper."""
    arch = _binary_arch(binary)
    return arch if binary.parent in (Path("/usr/bin"), Path("/bin")) else f"{arch}-{binary.parent.parent.name}"


@dataclass(frozen=True)
class LiveCombo:
    """One bootable case on one QEMU binary."""

    case_name: str
    binary: Path

    def run(self, output: Path) -> BootRun:
        from conformance.live.boot import run_boot
        from conformance.results.records import ResultWriter

        run = run_boot(_catalogue().get(self.case_name), _live_target(self.binary), _catalogue(), output)
        ResultWriter(output).write(run.result)
        return run


@dataclass(frozen=True)
class MigrateCombo:
    """One bootable case migrated from one QEMU binary to another (or the same) of one arch."""

    case_name: str
    source: Path
    destination: Path
    machine: str = ""  # --conformance-machines all/REGEX: the machine type both sides run under

    def run(self, output: Path) -> StageResult:
        from conformance.live.migrate import run_migrate
        from conformance.results.records import ResultWriter

        result = run_migrate(_catalogue().get(self.case_name), _live_target(self.source),
                             _live_target(self.destination), _catalogue(), output, machine=self.machine)
        ResultWriter(output).write(result)
        return result


@dataclass(frozen=True)
class VmstateCombo:
    """The static migration prediction of one case from one QEMU binary to another (or the same) of one arch."""

    case_name: str
    source: Path
    destination: Path
    machine: str = ""  # --conformance-machines all/REGEX: the machine type judged ("": the newest both have)

    def run(self, output: Path) -> StageResult:
        from conformance.avocado.work import run_item  # one item, as avocado runs it: writes results.jsonl

        return run_item(self.case_name, "vmstate", self.source, self.destination, output, machine=self.machine)


def check_verdict(result: StageResult, evidence: dict[str, Any] | None = None) -> None:
    """A result as a pytest outcome, by the verdict table: skip -> skipped with its reason, known-bug ->
    xfail naming the bug, fail/error -> a failure with the reason and artefacts; pass and
    not-reproduced return (the caller goes on checking)."""
    from conformance.results.verdicts import verdict

    action = verdict(result.verdict).pytest
    if action == "skip":
        pytest.skip(result.reason)
    if action == "xfail":
        pytest.xfail(result.reason)
    if action == "fail":
        pytest.fail(f"{result.verdict}: {result.reason}\nartifacts: {result.artifacts}\n{evidence or {}}")


@functools.cache
def _binary_version(binary: Path) -> str:
    """``7.2.22`` from ``BINARY --version`` (cheap: ids are made at collection, in every worker)."""
    import re
    import subprocess

    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return _binary_label(binary)
    found = re.search(r"version (\d+\.\d+\.\d+)", out)
    return found[1] if found else _binary_label(binary)


def _stages_of(fixture: str) -> list[str]:
    """The stages whose tests ask for ``fixture`` (the stage table's pytest column)."""
    from conformance.stages import TABLE

    return [s.name for s in TABLE if s.pytest == fixture]


def _binary_names(binary: Path) -> tuple[str, str]:
    """A binary as the planner names builds: (VERSION-ARCH, arch)."""
    return f"{_binary_version(binary)}-{_binary_arch(binary)}", _binary_arch(binary)


def boot_params(binaries: list[Path], case_globs: list[str]) -> list[Any]:
    """The planned boot items: ids such as ``teaming-q35[x86_64]`` (``[x86_64-qemu-10.0]`` for a build's)."""
    from conformance.plan import plan

    cases = [c for c in _catalogue().cases.values() if _matches(c.name, case_globs)]
    return [pytest.param(LiveCombo(p.case.name, p.build), id=f"{p.case.name}[{_binary_label(p.build)}]",
                         marks=[pytest.mark.live, *([pytest.mark.smoke] if p.case.smoke else [])])
            for p in plan(cases, binaries, _stages_of("live_combo"), _binary_names)]


def migrate_params(binaries: list[Path], case_globs: list[str], machines: str = "newest") -> list[Any]:
    """The planned migrate items, every same-arch (source, destination) pair, the same binary included:
    ids such as ``teaming-q35[7.2.22-x86_64->10.0.2-x86_64]``; under ``machines`` all or a REGEX one per
    machine type both binaries have (their capabilities, probed once and cached on disk):
    ``teaming-q35[7.2.22-x86_64->10.0.2-x86_64@pc-q35-7.2]``."""
    from conformance.machines import MachineChoice, planner_machines
    from conformance.plan import plan

    cases = [c for c in _catalogue().cases.values() if _matches(c.name, case_globs)]
    chosen = planner_machines(MachineChoice.parse(machines), _binary_caps)
    planned = [p for p in plan(cases, binaries, _stages_of("migrate_combo"), _binary_names, machines=chosen)
               if p.peer is not None]
    smoke = _smoke_migrations(planned)
    return [pytest.param(MigrateCombo(p.case.name, p.build, p.peer, p.item.machine),
                         id=f"{p.case.name}[{p.item.build}->{p.item.peer}"
                            f"{'@' + p.item.machine if p.item.machine else ''}]",
                         marks=[pytest.mark.live, *([pytest.mark.smoke] if i in smoke else [])])
            for i, p in enumerate(planned)]


def vmstate_params(binaries: list[Path], case_globs: list[str], machines: str = "newest") -> list[Any]:
    """The planned vmstate items: the pairs and machine types of migrate_params, with its ids."""
    from conformance.machines import MachineChoice, planner_machines
    from conformance.plan import plan

    cases = [c for c in _catalogue().cases.values() if _matches(c.name, case_globs)]
    chosen = planner_machines(MachineChoice.parse(machines), _binary_caps)
    planned = [p for p in plan(cases, binaries, _stages_of("vmstate_combo"), _binary_names, machines=chosen)
               if p.peer is not None]
    smoke = _smoke_migrations(planned)  # the predictions of the migrations in the smoke set
    return [pytest.param(VmstateCombo(p.case.name, p.build, p.peer, p.item.machine),
                         id=f"{p.case.name}[{p.item.build}->{p.item.peer}"
                            f"{'@' + p.item.machine if p.item.machine else ''}]",
                         marks=[pytest.mark.live, *([pytest.mark.smoke] if i in smoke else [])])
            for i, p in enumerate(planned)]


def _smoke_migrations(planned: list[Any]) -> set[int]:
    """Which planned migrations (their indexes) are in the smoke set: those of the cases marked ``smoke`` in
    cases.toml from a build to itself, one machine type each, and one cross-build pair with a 10.0 build
    on a side (the first such of a smoke case), where 10.0 is under test."""
    chosen: set[int] = set()
    seen: set[tuple[str, str, str]] = set()
    cross = False
    for i, p in enumerate(planned):
        key = (p.case.name, p.item.build, p.item.peer)
        if not p.case.smoke or key in seen:
            continue
        if p.item.build == p.item.peer:
            chosen.add(i)
            seen.add(key)
        elif not cross and any(side.startswith("10.0.") for side in (p.item.build, p.item.peer)):
            chosen.add(i)
            seen.add(key)
            cross = True
    return chosen


def _binary_caps(binary: Path) -> Capabilities:
    """A binary's capabilities for planning machine types: probed once, cached on disk (by path, size, mtime)."""
    from conformance.avocado.work import cached_caps

    return cached_caps(binary)


@functools.cache
def _live_target(binary: Path) -> Target:
    """Probe, accelerator and guest for a binary: once per pytest process."""
    from conformance.runner import make_target

    return make_target(binary, lambda _text: None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each fixture's parameters are planned items (conformance/plan.py); a shard keeps its own, by the
    test's id and its kind (``static`` for parse and argv together, ``boot``, ``migrate``, ``vmstate``)."""
    opts = metafunc.config.option
    if "static_combo" in metafunc.fixturenames:
        combos = [(i, c) for i, c in static_combos(opts.conformance_cases, opts.conformance_caps)
                  if _in_shard(metafunc.config, "static", i)]
        metafunc.parametrize("static_combo", [c for _, c in combos], ids=[i for i, _ in combos])
    if "live_combo" in metafunc.fixturenames:
        metafunc.parametrize("live_combo", [p for p in boot_params(live_binaries(metafunc.config),
                                                                   opts.conformance_cases)
                                            if _in_shard(metafunc.config, "boot", p.id)])
    if "migrate_combo" in metafunc.fixturenames:
        metafunc.parametrize("migrate_combo", [p for p in migrate_params(live_binaries(metafunc.config),
                                                                         opts.conformance_cases,
                                                                         opts.conformance_machines)
                                               if _in_shard(metafunc.config, "migrate", p.id)])
    if "vmstate_combo" in metafunc.fixturenames:
        metafunc.parametrize("vmstate_combo", [p for p in vmstate_params(live_binaries(metafunc.config),
                                                                         opts.conformance_cases,
                                                                         opts.conformance_machines)
                                               if _in_shard(metafunc.config, "vmstate", p.id)])


@pytest.fixture(scope="session")
def conformance_output(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where live tests keep their VM folders and results.jsonl."""
    given = request.config.option.conformance_output
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.getbasetemp() / "conformance"
