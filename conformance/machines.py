"""Which machine types a migration runs under: ``--machines newest|all|REGEX``, read from capabilities.

A VM keeps the machine type it was started with, so every versioned machine type two builds share is a
migration of its own. The family of a case's machine is its versioned types: ``q35`` -> ``pc-q35-X.Y``,
``pc`` -> ``pc-i440fx-X.Y``, ``virt`` -> ``virt-X.Y``, as each build's capabilities (``caps.machines``) list
them; nothing here is a hand list.

- ``newest`` (the default): one migration per (case, pair). Across builds the machine type is pinned to the
  newest versioned type both builds have (``pinned_machine``); one build with itself runs the case's own
  machine alias (``q35``), which is that build's newest.
- ``all``: one migration per versioned type of the family that both builds have (one build with itself: all
  of its own).
- ``classes``: one migration per class of those types that both builds describe alike for the case;
  ``differences``: one per class of types under which the two builds differ alike (one build with itself:
  its newest type). conformance/machine_classes.py says what each does and does not test; the class's newest
  type runs and its result names the types it stands for. ``run`` only (it reads the builds' property
  values, which needs the binaries).
- any other value is a regular expression (``re.search``) that selects among those: ``pc-q35-[5-7]``.

Forward (the older QEMU to the newer) is what every QEMU promises; backward (newer to older) is promised
for the newer build's versioned types that the older build has (``direction``). A machine type deprecated
in a build is a warning there, never a failure (``deprecated_in``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from conformance.caps.model import Capabilities
from conformance.cases import Case

NEWEST = "newest"
ALL = "all"
CLASSES, DIFFERENCES = "classes", "differences"
DIRECTIONS = ("same", "forward", "backward")

#: How a migration's machine type was chosen (``details.machine_from``): the case's own alias on one build,
#: the newest type two builds share, or given by --machines (one migration per machine type).
FROM_CASE, FROM_NEWEST, FROM_GIVEN = "case", "newest shared", "--machines"

_VERSIONED = re.compile(r"^(?P<family>.+?)-(?P<major>\d+)\.(?P<minor>\d+)$")

B = TypeVar("B")


@dataclass(frozen=True)
class MachineChoice:
    """A parsed ``--machines`` value."""

    spec: str = NEWEST

    @classmethod
    def parse(cls, spec: str | None) -> MachineChoice:
        """``newest``, ``all``, ``classes``, ``differences`` or a regular expression; ValueError for one that
        does not compile."""
        spec = (spec or NEWEST).strip() or NEWEST
        if spec not in (NEWEST, ALL, CLASSES, DIFFERENCES):
            try:
                re.compile(spec)
            except re.error as exc:
                raise ValueError(f"--machines {spec!r} is not newest, all, classes, differences or a regular "
                                 f"expression: {exc}") from None
        return cls(spec)

    @property
    def newest(self) -> bool:
        return self.spec == NEWEST

    @property
    def classes(self) -> bool:
        """classes or differences: one migration per class of machine types (conformance/machine_classes.py)."""
        return self.spec in (CLASSES, DIFFERENCES)

    def select(self, shared: Sequence[str]) -> list[str]:
        """The machine types of ``shared`` this choice runs under (``newest``: none, the stage decides;
        ``classes``: all of them, the classifier then keeps one per class)."""
        if self.newest:
            return []
        if self.spec in (ALL, CLASSES, DIFFERENCES):
            return list(shared)
        pattern = re.compile(self.spec)
        return [m for m in shared if pattern.search(m)]


#: The default choice: one migration per (case, pair), as before machine types.
DEFAULT = MachineChoice()


def machine_arg(value: str) -> MachineChoice:
    """argparse ``type=`` of --machines."""
    import argparse

    try:
        return MachineChoice.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version(name: str) -> tuple[int, int] | None:
    hit = _VERSIONED.match(name)
    return (int(hit["major"]), int(hit["minor"])) if hit else None


def family(machine: str, caps: Capabilities) -> str | None:
    """The versioned family of a machine type or alias on a build: ``q35`` -> ``pc-q35``, ``pc`` ->
    ``pc-i440fx``, ``virt`` -> ``virt``; None when the build does not know ``machine``."""
    mine = caps.machine(machine)
    if mine is None:
        return None
    hit = _VERSIONED.match(mine.name)
    return hit["family"] if hit else mine.name


def versioned(caps: Capabilities, fam: str) -> dict[str, tuple[int, int]]:
    """Every versioned machine type of family ``fam`` a build lists (names and aliases) -> its version."""
    found = {}
    for m in caps.machines:
        for name in (m.name, m.alias):
            hit = _VERSIONED.match(name or "")
            if hit and hit["family"] == fam:
                found[name] = (int(hit["major"]), int(hit["minor"]))
    return found


def shared_machines(machine: str, a: Capabilities, b: Capabilities) -> tuple[list[str], str]:
    """Every versioned machine type of ``machine``'s family that both builds have, oldest first, and ''; or
    ([], why not)."""
    fam = family(machine, a)
    if fam is None:
        return [], f"QEMU {a.version} has no machine type {machine}"
    va, vb = versioned(a, fam), versioned(b, fam)
    common = set(va) & set(vb)
    if not common:
        return [], f"no versioned {fam} machine type is known to both QEMU {a.version} and {b.version}"
    return sorted(common, key=lambda n: (va[n], n)), ""


def pinned_machine(machine: str, a: Capabilities, b: Capabilities) -> tuple[str | None, str]:
    """The newest versioned machine type of ``machine``'s family that both builds have: (name, '') or
    (None, why not). ``q35`` on 5.2 and 7.2 -> ``pc-q35-5.2``; ``virt`` on 7.2 and 10.0 -> ``virt-7.2``."""
    shared, why = shared_machines(machine, a, b)
    return (shared[-1], "") if shared else (None, why)


def machines_for(choice: MachineChoice, case: Case, a: Capabilities, b: Capabilities) -> list[str]:
    """The machine types ``case`` migrates under from build ``a`` to build ``b``: ``newest``: [''] (one
    migration, the stage's own choice); ``all``/REGEX: the shared versioned types it selects, or [''] when the
    builds share none (the stage then says why it cannot run)."""
    if choice.newest:
        return [""]
    shared, _ = shared_machines(case.machine_for(a.arch) or "", a, b)
    return choice.select(shared) if shared else [""]


def planner_machines(choice: MachineChoice, caps_of: Callable[[B], Capabilities]
                     ) -> Callable[[Case, B, B], Sequence[str]] | None:
    """The ``machines`` argument of conformance.plan.plan for builds of any kind (``caps_of`` gives their
    capabilities); None for ``newest`` (one item per pair, as before machine types). ``classes`` needs the
    builds' binaries (conformance/machine_classes.py: ClassPlanner), so it is refused here."""
    if choice.newest:
        return None
    if choice.classes:
        from conformance.errors import ConformanceError

        raise ConformanceError(f"--machines {choice.spec} reads the builds' property values, so only "
                               "`qemu-conformance run` takes it", hint="use all or a regular expression here")
    return lambda case, a, b: machines_for(choice, case, caps_of(a), caps_of(b))


def direction(source: Capabilities, destination: Capabilities) -> str:
    """``same`` (one QEMU version), ``forward`` (older to newer: always promised) or ``backward`` (newer to
    older: promised for the newer build's versioned types the older one has)."""
    if source.version == destination.version:
        return "same"
    return "forward" if source.version < destination.version else "backward"


def deprecated_in(machine: str, builds: Sequence[Capabilities]) -> list[str]:
    """The builds (VERSION-ARCH) whose capabilities mark ``machine`` deprecated: QEMU warns on stderr when it
    starts one; a warning, not a failure."""
    out = []
    for caps in builds:
        m = caps.machine(machine)
        if m is not None and m.deprecated and caps.label not in out:
            out.append(caps.label)
    return out


def swept_machine(details: dict[str, Any]) -> str:
    """The machine type a migrate result was planned under (--machines all/REGEX), '' otherwise: what a
    result's JUnit name, its report row and the merge key add."""
    return str(details.get("machine", "")) if details.get("machine_from") == FROM_GIVEN else ""
