"""The stage table: every stage a result can have, in pipeline order, and what each means elsewhere.

This is the one place that says which stages exist, in which order, on what they run (their scope),
whether they start QEMU, which stage's work they build on, and how they show in JUnit, the report and
pytest. The catalogue (templates/cases.toml), the planner (conformance/plan.py), ``run``, ``qualify``,
shards, the pytest plugin, avocado, the report and JUnit read it; nothing else spells stages out.

Scopes:

- ``build``: once per QEMU build, not per case (``qualify``'s probe and capability check);
- ``case``: a case on one build (parse, argv, boot);
- ``pair``: a case on an ordered (source, destination) pair of builds of one arch, each build with itself
  included (migrate).

A stage of scope ``case`` or ``pair`` runs for a case when the case lists it in its ``stages``. A stage
may run once per machine type both builds of a pair share (``per_machine``): the planner takes the list
of machine types from its caller, and without one it plans a single item (the newest shared type, as the
stage decides). A new stage is one row: ``vmstate``, the static prediction of migration breaks, is a static
stage of scope ``pair`` and ``per_machine`` (conformance/vmstate.py; the runner's ``run_vmstate``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SCOPES = ("build", "case", "pair")


@dataclass(frozen=True)
class Stage:
    name: str
    scope: str  # "build", "case" or "pair" (see the module's docstring)
    live: bool  # runs a QEMU binary (the probe with -machine none; boot and migrate start guests)
    meaning: str  # one line for the report's legend and --help
    requires: str = ""  # the stage whose work this one builds on: running it does that work first
    chip: str = ""  # letter of its chip in the report's compatibility cell ("": no chip, not in the matrix)
    pytest: str = ""  # the parametrised pytest fixture whose tests run it ("": none)
    per_machine: bool = False  # a pair stage that may run once per shared machine type (--machines)

    @property
    def junit_name(self) -> str:
        """The JUnit testcase name's pattern; the classname and the testsuite are the stage's name."""
        return "{case}[{build}->{peer}]" if self.scope == "pair" else "{case}[{build}]"

    @property
    def static(self) -> bool:
        return not self.live


#: Pipeline order: results, JUnit suites, report columns and work run in this order.
TABLE: tuple[Stage, ...] = (
    Stage("probe", "build", live=True, meaning="the build answers QMP: its capabilities, stored as a fixture"),
    Stage("caps", "build", live=False,
          meaning="the capabilities against the stored fixtures: nothing a user had is lost"),
    Stage("parse", "case", live=False, chip="P", pytest="static_combo",
          meaning="render, schema, parse and the semantic rules of the case's domain XML"),
    Stage("argv", "case", live=False, requires="parse", chip="A", pytest="static_combo",
          meaning="the QEMU command line libvirt would build, checked against the build's capabilities"),
    Stage("vmstate", "pair", live=False, requires="argv", chip="V", pytest="vmstate_combo", per_machine=True,
          meaning="predicted before any boot: the case's devices' migration state and property values under the "
                  "machine type match between the source build and the destination"),
    Stage("boot", "case", live=True, requires="argv", chip="B", pytest="live_combo",
          meaning="the case's guest boots on the build and shows what the domain asked for"),
    Stage("migrate", "pair", live=True, requires="boot", chip="M", pytest="migrate_combo", per_machine=True,
          meaning="the booted guest migrates from the source build to the destination and keeps running"),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in TABLE}
STAGES: tuple[str, ...] = tuple(BY_NAME)  # every stage, pipeline order
CASE_STAGES: tuple[str, ...] = tuple(s.name for s in TABLE if s.scope != "build")  # a case's `stages`, --stages
BUILD_STAGES: tuple[str, ...] = tuple(s.name for s in TABLE if s.scope == "build")
STATIC_STAGES: tuple[str, ...] = tuple(s for s in CASE_STAGES if not BY_NAME[s].live)
LIVE_STAGES: tuple[str, ...] = tuple(s for s in CASE_STAGES if BY_NAME[s].live)
MATRIX_STAGES: tuple[str, ...] = tuple(s.name for s in TABLE if s.chip)  # chips of a report cell, in order


def stage(name: str) -> Stage:
    """The table's row for ``name``; ValueError for a name that is not a stage."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"stage {name!r} is not one of {', '.join(STAGES)}") from None


def order(name: str) -> int:
    """Pipeline position of a stage; a name the table does not know (an older run's) sorts last."""
    return STAGES.index(name) if name in BY_NAME else len(STAGES)


def in_order(names: Iterable[str]) -> list[str]:
    """These stage names, each once, in pipeline order (unknown names last, sorted)."""
    return sorted(set(names), key=lambda n: (order(n), n))


def required(name: str) -> list[str]:
    """Every stage whose work ``name`` builds on, nearest first (argv -> [parse]; migrate -> [boot, argv, parse])."""
    chain = []
    while (name := stage(name).requires):
        chain.append(name)
    return chain


def unknown_case_stages(names: Iterable[str]) -> list[str]:
    """The names that are not stages a case or --stages can ask for."""
    return sorted(set(names) - set(CASE_STAGES))


def parse_stage_list(values: Iterable[str]) -> list[str]:
    """``--stages a,b --stages c`` -> the stage names in pipeline order (all case stages when none given);
    ValueError naming the unknown ones."""
    names = [s.strip() for s in ",".join(values).split(",") if s.strip()]
    bad = unknown_case_stages(names)
    if bad:
        raise ValueError(f"unknown stage(s): {', '.join(bad)}")
    return in_order(names) if names else list(CASE_STAGES)
