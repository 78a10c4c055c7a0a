"""The planner: which work items (case, stage, build, peer) a catalogue, a set of builds and the requested
stages make. ``run``, ``qualify``, shards, the pytest plugin and avocado all plan with ``plan``.

A case runs a stage of scope ``case`` on every build of an arch it targets, and a stage of scope ``pair``
on every ordered (source, destination) pair of such builds of one arch, each build with itself included,
when the case lists the stage in its ``stages`` (templates/cases.toml) and the stage was requested. Only
requested stages are planned: a stage's work may need another's first (argv needs parse's domain), but
the planner never adds a stage that was not asked for, and the runner records only planned items.

Items come in pipeline order (conformance/stages.py), then by build, peer, machine type and case. The
runner runs a live stage's items longest first (``longest_first``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from conformance.cases import Case
from conformance.stages import Stage, order, stage

B = TypeVar("B")


@dataclass(frozen=True, order=True)
class WorkItem:
    """The names of one stage result to be: what shards hash and what ids are made of."""

    case: str
    stage: str
    build: str  # VERSION-ARCH of the build under test (the source of a pair)
    peer: str = ""  # a pair stage: VERSION-ARCH of the destination
    machine: str = ""  # a per-machine stage run under a given machine type ("": the stage's own choice)

    @property
    def key(self) -> str:
        """What a shard hashes; an item without a machine type keeps the key it had before machine types."""
        names = (self.case, self.stage, self.build, self.peer) + ((self.machine,) if self.machine else ())
        return "\x1f".join(names)

    @property
    def id(self) -> str:
        """``teaming-q35.boot[7.2.22-x86_64]``, ``teaming-q35.migrate[7.2.22-x86_64->10.0.2-x86_64]``
        (``...@pc-q35-7.2]`` under a given machine type)."""
        on = f"{self.build}->{self.peer}" if self.peer else self.build
        return f"{self.case}.{self.stage}[{on}{'@' + self.machine if self.machine else ''}]"


@dataclass(frozen=True)
class Planned(Generic[B]):
    """One planned item: the case and stage, the build objects of the caller (a Target, a binary, a
    fixture's capabilities) and the item's names."""

    case: Case
    stage: Stage
    build: B
    peer: B | None
    item: WorkItem


Describe = Callable[[B], tuple[str, str]]  # a build -> (VERSION-ARCH, arch)
Machines = Callable[[Case, B, B], Sequence[str]]  # a case on (source, destination) -> machine types to run under


def plan(cases: Iterable[Case], builds: Sequence[B], stages: Iterable[str | Stage], describe: Describe[B], *,
         machines: Machines[B] | None = None) -> list[Planned[B]]:
    """Every work item of ``cases`` on ``builds`` for the requested ``stages`` (names or table rows).

    ``describe`` names a build (VERSION-ARCH, arch); ``machines``, for a per-machine pair stage, the machine
    types a case runs under on a pair (none given: one item, under the stage's own choice). A stage of
    scope ``build`` is not a case's: ValueError."""
    rows = sorted({s if isinstance(s, Stage) else stage(s) for s in stages}, key=_position)
    for row in rows:
        if row.scope == "build":
            raise ValueError(f"stage {row.name} runs once per build, not per case: it is not planned")
    cases = list(cases)
    named = [(b, *describe(b)) for b in builds]
    items: list[Planned[B]] = []
    for row in rows:
        for build, label, arch in named:
            peers = [(p, pl) for p, pl, pa in named if pa == arch] if row.scope == "pair" else [(None, "")]
            for peer, peer_label in peers:
                for case in cases:
                    if row.name not in case.stages or arch not in case.arches:
                        continue
                    types: Sequence[str] = [""]
                    if row.per_machine and machines is not None and peer is not None:
                        types = machines(case, build, peer)
                    items += [Planned(case, row, build, peer, WorkItem(case.name, row.name, label, peer_label, m))
                              for m in types]
    return items


def _position(row: Stage) -> tuple[int, str]:
    return order(row.name), row.name


def work_items(cases: Iterable[Case], builds: Sequence[tuple[str, str]], stages: Iterable[str]) -> list[WorkItem]:
    """The items' names only, for builds given as (VERSION-ARCH, arch)."""
    return [p.item for p in plan(cases, builds, stages, lambda b: b)]


def longest_first(items: Sequence[Planned[B]], seconds: Callable[[Planned[B]], float]) -> list[Planned[B]]:
    """Items in the order that ends a parallel run soonest: longest first (a long item started last keeps one
    job busy after the others are done). Items of about the same length (within a factor of 1.5) keep
    together by build, so that one build's binary and guest stay warm in the page cache: that order costs
    no parallelism."""
    def bucket(p: Planned[B]) -> int:
        return -round(math.log(max(seconds(p), 0.1), 1.5))

    return sorted(items, key=lambda p: (bucket(p), p.item.build, -seconds(p)))
