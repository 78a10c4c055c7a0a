"""Machine-type classes: ``--machines classes|differences``, one live migration per class of the machine types
two builds share, for a case (docs/machines.md has the figures).

``--machines all`` migrates a case once per versioned machine type two builds share: for issue 17's sweep
(the device-rich cases over 5.2/7.2/10.0 x86_64 and 7.2/10.0 aarch64) 2,786 migrations from 1,176 booted
source states, about 115 minutes of TCG with both of 2 cores busy. A class groups, for one (case, ordered
pair), shared machine types by what the builds tell about them for the case (``build_signature``):

- the effective property values of every device type of the case's argv (and their device children), as the
  ``vmstate`` stage reads them per (build, machine type, device type) from the live devices (``info qtree``,
  its cache under ``vmstate/props/``; conformance/vmstate.py), without what that stage does not compare, the
  probe's own placement and what the case's argv sets;
- the property values of every device the machine type adds itself (host bridge, LPC, RTC, fw_cfg, ...);
- ``query-machines``' facts about the type in the build's capabilities (ACPI, default RAM id, default CPU,
  hot-pluggable CPUs);
- the compat properties (``query-machines`` ``compat-props``, QEMU 9.1+) of what is no device of the case:
  the CPU, the ``migration`` object, memory backends, the machine. When neither build of a pair lists them
  (before 9.1), the newest build of the arch in the run that can (``reference``) lists them for the type.

``classes`` (CLASSES): types whose signatures agree on both builds (1,014 states, 2,437 migrations for the
sweep). ``differences`` (DIFFERENCES): types under which the two builds differ in the same properties with
the same values; one build with itself runs the types its cross pairs run (their states are booted anyway)
and its newest type, which stands for the rest (621 states, 1,551 migrations).

Each class migrates once, under its representative: its newest type, or a type of the class another pair
of the same source already runs (its checked state is then booted once, conformance/live/checked.py); the
result names the types it stands for (``details.machine_class``).

What a class cannot see, and so what neither tests: machine-class behaviour QEMU keeps in C fields of the
machine class rather than in properties (ACPI table layout, SMBIOS defaults, RAM and device-memory layout),
CPU compat entries before 9.1 that the reference build no longer lists, and anything that depends on what
the guest does. ``differences`` also leaves out a build's own code under a type whose values both builds
agree on, and a same-build migration under a type no cross pair of that build runs (measured, why the
same-build types are there: QEMU 10.0.2 aborts migrating q35-misc-rich under pc-q35-2.10 ... 3.0 to itself
as to 7.2, which the newest type alone did not show).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

CLASSES, DIFFERENCES = "classes", "differences"

#: compat entries of the objects a case's device list does not show: the CPU, the migration object, memory
#: backends, the machine (per arch: an x86_64 build's list also carries arm-cpu entries of hw_compat)
_NON_DEVICE = {
    "x86_64": re.compile(r"(x86_64-cpu|^x86-cpu|^migration$|^memory-backend|-machine$|^host-)"),
    "aarch64": re.compile(r"(^arm-cpu|aarch64-cpu|^migration$|^memory-backend|-machine$|^host-)"),
}
#: query-machines facts of a machine type that a guest or a migration can tell apart (left out: ``max_cpus``,
#: the type's ceiling, which no guest sees: the argv's -smp sets the CPUs and their maximum; ``numa_mem``,
#: whether -numa node,mem= is accepted, which no case uses)
_MACHINE_FACTS = ("acpi", "default_ram_id", "default_cpu", "default_cpu_tcg", "hotplug_cpus")
#: properties whose probed value is the probe's own placement (vmstate.py plugs each type alone and numbers
#: its chassis and ports itself), never the case's: libvirt sets them per device
_PLACEMENT = frozenset({"chassis", "chassis_nr", "port"})


@dataclass(frozen=True)
class MachineClass:
    """Shared machine types one (case, ordered pair) migrates alike: the representative runs, the rest
    take its verdict (``members`` oldest first, the representative included)."""

    representative: str
    members: tuple[str, ...]
    key: str = ""  # a digest of what both builds tell about the members

    def record(self) -> dict[str, Any]:
        return {"representative": self.representative, "members": list(self.members), "size": len(self.members),
                "key": self.key}


@dataclass
class BuildView:
    """One build as the classes read it: its capabilities and how to ask its facts (a vmstate Side's
    ``props``), plus the argv of each case on it."""

    caps: Any
    props: Callable[[str, list[str]], Any]  # machine type, device types -> vmstate.MachineProps
    argv: Callable[[Any], list[str] | None]  # case -> its argv on this build (None: the case does not build)
    memo: dict[tuple[str, str], str] = field(default_factory=dict)


def _clean(values: dict[str, Any], argv: dict[str, str] | None = None) -> dict[str, Any]:
    """Property values as the classes compare them: without those vmstate.py does not compare (backends,
    placement, bookkeeping: its NOT_COMPARED), the probe's placement, and those the case's argv sets (the
    live run has the argv's value whatever the machine type)."""
    from conformance.vmstate import not_compared

    return {k: v for k, v in sorted(values.items())
            if not not_compared(k) and k not in _PLACEMENT and k not in (argv or {})}


def build_signature(case: Any, view: BuildView, machine: str) -> dict[str, Any] | None:
    """Everything one build tells about ``machine`` for ``case`` (see the module docstring); None when the
    case does not build there."""
    from conformance.vmstate import case_devices

    argv = view.argv(case)
    if argv is None:
        return None
    wanted = case_devices(argv, case.substitutes)
    types = sorted(wanted)
    facts = view.props(machine, types)
    missing = [kind for kind in types if kind not in facts.devices]
    if missing or facts.machine_devices is None:
        # what the build says is not known (a cache another run rewrote, a probe that failed): the type is
        # a class of its own, never merged on facts nobody read
        return {"unknown": machine, "devices": {k: {"error": "not read"} for k in missing}, "machine_devices": {},
                "query_machines": {}, "compat": None}
    devices = {}
    for kind in types:
        got = facts.devices.get(kind, {})
        devices[kind] = ({"error": str(got["error"]).replace(machine, "MACHINE")} if "error" in got else
                         {"props": _clean(got.get("props", {}), wanted[kind]),
                          # a child that is a device of the case itself (usb-bot the probe put on qemu-xhci) is
                          # where the probe placed it: it has its own entry
                          "children": {c: _clean(v) for c, v in sorted(got.get("children", {}).items())
                                       if c not in wanted}})
    added = {k: _clean(v) for k, v in sorted((facts.machine_devices or {}).items())}
    mine = view.caps.machine(machine)
    about = {name: getattr(mine, name, None) for name in _MACHINE_FACTS} if mine is not None else {}
    compat = non_device_compat(facts.compat_props, view.caps.arch)
    return {"devices": devices, "machine_devices": added, "query_machines": about, "compat": compat}


def non_device_compat(entries: Sequence[dict[str, str]] | None, arch: str) -> list[list[str]] | None:
    """The compat entries (``query-machines`` compat-props) of the CPU, migration, memory backends and the
    machine, sorted; None where the build cannot list them (before 9.1)."""
    if entries is None:
        return None
    pattern = _NON_DEVICE.get(arch, _NON_DEVICE["x86_64"])
    return sorted([str(e.get("qom-type")), str(e.get("property")), str(e.get("value"))]
                  for e in entries if pattern.search(str(e.get("qom-type", ""))))


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def signature(case: Any, view: BuildView, machine: str) -> str:
    """build_signature as a digest, memoised per (case, machine type) on the view."""
    key = (case.name, machine)
    if key not in view.memo:
        view.memo[key] = _digest(build_signature(case, view, machine))
    return view.memo[key]


def flat(sig: dict[str, Any] | None) -> dict[str, str]:
    """A build signature as {"device.property" or "device/child.property": value} (``machine:TYPE.p`` for a
    device the machine adds, ``query-machines.p``, ``compat``): what DIFFERENCES compares one by one."""
    if sig is None:
        return {"argv": "the case does not build"}
    out: dict[str, str] = {"unknown": sig["unknown"]} if "unknown" in sig else {}
    for kind, got in sig["devices"].items():
        if "error" in got:
            out[f"{kind}.error"] = got["error"]
            continue
        out.update({f"{kind}.{p}": str(v) for p, v in got["props"].items()})
        for child, values in got["children"].items():
            out.update({f"{kind}/{child}.{p}": str(v) for p, v in values.items()})
    for kind, values in sig["machine_devices"].items():
        out.update({f"machine:{kind}.{p}": str(v) for p, v in values.items()})
    out.update({f"query-machines.{p}": str(v) for p, v in sig["query_machines"].items()})
    out["compat"] = json.dumps(sig["compat"])
    return out


def differences(case: Any, source: BuildView, destination: BuildView, machine: str) -> dict[str, list[str]]:
    """What the two builds tell apart about ``machine`` for ``case``: {key: [source's value, destination's]}
    for every property (or fact) whose value differs or that one build lacks ('-')."""
    a, b = (flat(build_signature(case, v, machine)) for v in (source, destination))
    return {k: [a.get(k, "-"), b.get(k, "-")] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def classify(case: Any, source: BuildView, destination: BuildView, machines: Sequence[str],
             reference: BuildView | None = None, *, mode: str = CLASSES) -> list[MachineClass]:
    """The classes of ``machines`` (shared types, oldest first) for ``case`` from ``source`` to
    ``destination``; representative: each class's newest type.

    - CLASSES: types whose signatures on both builds are equal (everything each build tells);
    - DIFFERENCES: types under which the two builds differ in the same properties with the same values
      (``differences``): one build with itself is one class, its newest type.

    Either way, when neither build lists its compat entries (before 9.1), the ``reference`` build's
    non-device entries for the type must be equal too (CPU, migration, memory backends, machine)."""
    groups: dict[str, list[str]] = {}
    for machine in machines:
        if mode == DIFFERENCES:
            parts = [_digest(differences(case, source, destination, machine))]
        else:
            parts = [signature(case, source, machine), signature(case, destination, machine)]
        if reference is not None and all(_compat_of(v, machine) is None for v in (source, destination)):
            parts.append(_digest(non_device_compat(_compat_of(reference, machine), reference.caps.arch)))
        groups.setdefault(_digest(parts), []).append(machine)
    return [MachineClass(members[-1], tuple(members), key) for key, members in groups.items()]


def _compat_of(view: BuildView, machine: str) -> list[dict[str, str]] | None:
    if view.caps.machine(machine) is None:
        return None
    return view.props(machine, []).compat_props


class ClassPlanner:
    """``--machines classes|differences`` for ``run``: the planner's ``machines`` (one representative per
    class) and the writer that names, in each migrate result, the types its representative stands for
    (``details.machine_class``). Classes are computed from the vmstate stage's cache of property values
    (probing what it lacks: the first run on new builds costs the static stage's cold time)."""

    def __init__(self, targets: Sequence[Any], catalogue: Any, mode: str) -> None:
        from conformance.static import StaticRunner
        from conformance.vmstate import make_side

        self.mode = mode
        runner = StaticRunner(catalogue)
        self.views: dict[str, BuildView] = {}
        for target in targets:
            side = make_side(target.binary, target.caps)
            argvs: dict[str, list[str] | None] = {}

            def argv(case: Any, caps: Any = target.caps, argvs: dict[str, list[str] | None] = argvs
                     ) -> list[str] | None:
                if case.name not in argvs:
                    outcome = next((o for o in runner.run(case, caps) if o.stage == "argv"), None)
                    argvs[case.name] = outcome.argv if outcome is not None and outcome.verdict == "pass" else None
                return argvs[case.name]

            self.views[target.caps.label] = BuildView(target.caps, side.props, argv)
        self.reference: dict[str, BuildView] = {}
        for view in sorted(self.views.values(), key=lambda v: v.caps.version, reverse=True):
            newest = max((m.name for m in view.caps.machines), default="")
            if view.caps.arch not in self.reference and newest and view.props(newest, []).compat_props is not None:
                self.reference[view.caps.arch] = view
        self.found: dict[tuple[str, str, str, str], MachineClass] = {}
        self.chosen: dict[tuple[str, str], set[str]] = {}  # (case, source) -> the types it runs under
        self.planned: dict[tuple[str, str, str], list[str]] = {}  # (case, source, destination) -> representatives

    def machines(self, case: Any, source: Any, destination: Any) -> list[str]:
        """The representatives of ``case``'s classes from ``source`` to ``destination`` (targets)."""
        return self._pair(case, self.views[source.caps.label], self.views[destination.caps.label])

    def _pair(self, case: Any, a: BuildView, b: BuildView) -> list[str]:
        from conformance.machines import shared_machines

        memo = (case.name, a.caps.label, b.caps.label)
        if memo in self.planned:
            return self.planned[memo]
        shared, _ = shared_machines(case.machine_for(a.caps.arch) or "", a.caps, b.caps)
        if not shared:
            return [""]  # the stage says why it cannot run
        if a is b and self.mode == DIFFERENCES:
            found = self._same_build(case, a, shared)
        else:
            found = classify(case, a, b, shared, self.reference.get(a.caps.arch), mode=self.mode)
        # a type another pair of this source already runs stands for its class here too: its checked state is
        # booted once and restored per pair (conformance/live/checked.py), so fewer source boots
        booted = self.chosen.setdefault((case.name, a.caps.label), set())
        out = []
        for one in found:
            have = [m for m in one.members if m in booted]
            if have and have[-1] != one.representative:
                one = MachineClass(have[-1], one.members, one.key)
            booted.add(one.representative)
            self.found[(case.name, a.caps.label, b.caps.label, one.representative)] = one
            out.append(one.representative)
        self.planned[memo] = out
        return out

    def _same_build(self, case: Any, a: BuildView, shared: list[str]) -> list[MachineClass]:
        """``differences``, one build with itself: no type differs from another between a build and itself,
        so the newest stands for them all; but every type a cross pair of this source boots anyway also
        migrates to its own build (its state is there: a migration's cost, no boot)."""
        for other in self.views.values():
            if other is not a and other.caps.arch == a.caps.arch:
                self._pair(case, a, other)
        booted = self.chosen.get((case.name, a.caps.label), set())
        alone = [m for m in shared if m in booted and m != shared[-1]]
        rest = tuple(m for m in shared if m not in alone)
        return [*(MachineClass(m, (m,), "same build: a cross pair's type") for m in alone),
                MachineClass(shared[-1], rest, "same build")]

    def annotate(self, result: Any) -> Any:
        """A migrate result with the class its machine type stands for (``details.machine_class``)."""
        if result.stage == "migrate" and result.peer is not None:
            source, destination = (f"{b.version}-{b.arch}" for b in (result.qemu, result.peer))
            key = (result.case, source, destination, str(result.details.get("machine", "")))
            one = self.found.get(key)
            if one is not None:
                result.details["machine_class"] = {**one.record(), "mode": self.mode}
        return result

    def writer(self, writer: Any) -> Any:
        """``writer`` with every result annotated before it is written."""
        return _AnnotatingWriter(writer, self)


class _AnnotatingWriter:
    def __init__(self, inner: Any, planner: ClassPlanner) -> None:
        self.inner, self.planner, self.path = inner, planner, inner.path

    def write(self, result: Any) -> None:
        self.inner.write(self.planner.annotate(result))


def sampling_disagreements(every: Sequence[Any], sampled: Sequence[Any]) -> tuple[int, list[str]]:
    """The check of the sampling itself: ``every`` holds the migrate results of ``--machines all``,
    ``sampled`` those of ``classes``/``differences`` over the same builds. Each type a class stands for
    must have, under ``all``, its representative's verdict (and known bug). Returns (types compared, one
    line per disagreement); a type ``all`` did not run is not compared."""

    def key(r: Any, machine: str) -> tuple[str, str, str, str]:
        return (r.case, f"{r.qemu.version}-{r.qemu.arch}", f"{r.peer.version}-{r.peer.arch}", machine)

    def verdict(r: Any) -> str:
        bug = r.details.get("known_bug") or {}
        return f"{r.verdict} {bug.get('id', '')}".strip()

    runs = {key(r, str(r.details.get("machine", ""))): r for r in every if r.stage == "migrate" and r.peer}
    compared, out = 0, []
    for r in sampled:
        one = r.details.get("machine_class") if r.stage == "migrate" and r.peer else None
        if not one:
            continue
        for machine in one["members"]:
            seen = runs.get(key(r, machine))
            if seen is None:
                continue
            compared += 1
            if verdict(seen) != verdict(r):
                out.append(f"{r.case} {key(r, '')[1]} -> {key(r, '')[2]} @{machine}: {verdict(seen)} under all, "
                           f"{verdict(r)} for its representative {one['representative']}")
    return compared, out
