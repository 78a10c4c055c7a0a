"""--machines classes|differences (conformance/machine_classes.py): which shared machine types one (case,
ordered pair) migrates alike, from what the builds tell about them, and how a result names its class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.caps.store import resolve
from conformance.errors import ConformanceError
from conformance.machine_classes import CLASSES, DIFFERENCES, BuildView, ClassPlanner, classify, differences
from conformance.machines import MachineChoice, planner_machines
from conformance.results.records import QemuBuild, StageResult

TYPES = ["pc-q35-5.0", "pc-q35-5.1", "pc-q35-5.2", "pc-q35-6.0"]
ARGV = ["qemu-system-x86_64", "-device", '{"driver":"virtio-rng-pci","id":"rng0","bus":"pci.1","addr":"0x0"}',
        "-device", '{"driver":"pcie-root-port","id":"pci.1","chassis":1,"port":8,"bus":"pcie.0"}']


@dataclass
class Facts:  # what vmstate.MachineProps carries
    devices: dict[str, dict[str, Any]]
    machine_devices: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    compat_props: list[dict[str, str]] | None = None


@dataclass
class Case:
    name: str = "q35-rng"
    substitutes: dict[str, str] = field(default_factory=dict)

    def machine_for(self, _arch: str) -> str:
        return "q35"


def view(values: dict[str, dict[str, str]], *, version: str = "7.2:x86_64",
         compat: dict[str, list[dict[str, str]]] | None = None, chassis: dict[str, str] | None = None) -> BuildView:
    """A build whose virtio-rng-pci reads ``values[type]`` under each machine type (the pcie-root-port's
    chassis as ``chassis`` says: the probe's placement)."""
    caps = resolve(version)

    def props(machine: str, _types: list[str]) -> Facts:
        port = {"chassis": (chassis or {}).get(machine, "1"), "x-speed": "16"}
        return Facts({"virtio-rng-pci": {"props": dict(values.get(machine, {})), "children": {}},
                      "pcie-root-port": {"props": port, "children": {}}},
                     {"mch": {"extended-tseg-mbytes": ["16"]}},
                     None if compat is None else compat.get(machine, []))

    return BuildView(caps, props, lambda _case: ARGV)


def same(values: dict[str, str]) -> dict[str, dict[str, str]]:
    return {m: dict(values) for m in TYPES}


def groups(found: list[Any]) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.representative, c.members) for c in found]


def test_types_both_builds_describe_alike_are_one_class_under_the_newest() -> None:
    a = view(same({"vectors": "2"}) | {"pc-q35-6.0": {"vectors": "4"}})
    b = view(same({"vectors": "2"}) | {"pc-q35-6.0": {"vectors": "4"}}, version="10.0:x86_64")
    assert groups(classify(Case(), a, b, TYPES)) == [
        ("pc-q35-5.2", ("pc-q35-5.0", "pc-q35-5.1", "pc-q35-5.2")), ("pc-q35-6.0", ("pc-q35-6.0",))]


def test_a_value_one_build_changes_splits_a_class_and_placement_does_not() -> None:
    a = view(same({"vectors": "2"}), chassis={"pc-q35-5.1": "17"})  # the probe numbered a chassis differently
    b = view(same({"vectors": "2"}) | {"pc-q35-5.0": {"vectors": "3"}}, version="10.0:x86_64")
    assert groups(classify(Case(), a, b, TYPES)) == [
        ("pc-q35-5.0", ("pc-q35-5.0",)), ("pc-q35-6.0", ("pc-q35-5.1", "pc-q35-5.2", "pc-q35-6.0"))]


def test_differences_groups_types_where_the_builds_disagree_alike() -> None:
    # both builds move vectors from 2 to 4 at 6.0 (a compat entry both have): no disagreement anywhere
    a = view(same({"vectors": "2"}) | {"pc-q35-6.0": {"vectors": "4"}})
    b = view(same({"vectors": "2", "x-new": "on"}) | {"pc-q35-6.0": {"vectors": "4", "x-new": "on"}},
             version="10.0:x86_64")
    found = classify(Case(), a, b, TYPES, mode=DIFFERENCES)
    assert groups(found) == [("pc-q35-6.0", tuple(TYPES))]
    assert differences(Case(), a, b, "pc-q35-5.0")["virtio-rng-pci.x-new"] == ["-", "on"]
    apart = differences(Case(), a, b, "pc-q35-5.0")
    assert not any(k.startswith(("virtio-rng-pci.vectors", "pcie-root-port")) for k in apart)
    # the newer build forgot the compat entry below 6.0 (the virtio-rng-pci MSI-X break): its own class
    b = view(same({"vectors": "4"}), version="10.0:x86_64")
    assert groups(classify(Case(), a, b, TYPES, mode=DIFFERENCES)) == [
        ("pc-q35-5.2", ("pc-q35-5.0", "pc-q35-5.1", "pc-q35-5.2")), ("pc-q35-6.0", ("pc-q35-6.0",))]


def test_builds_without_compat_props_are_split_by_the_reference_builds_cpu_entries() -> None:
    a, b = view(same({"vectors": "2"})), view(same({"vectors": "2"}), version="5.2:x86_64")
    cpu = {"qom-type": "x86_64-cpu", "property": "x-vendor-cpuid-only", "value": "off"}
    device = {"qom-type": "virtio-pci", "property": "x-pcie-flr-init", "value": "off"}
    reference = view(same({"vectors": "2"}), version="10.0:x86_64",
                     compat={"pc-q35-5.0": [cpu, device], "pc-q35-5.1": [cpu, device], "pc-q35-5.2": [device]})
    assert groups(classify(Case(), a, b, TYPES[:3], reference)) == [
        ("pc-q35-5.1", ("pc-q35-5.0", "pc-q35-5.1")), ("pc-q35-5.2", ("pc-q35-5.2",))]
    shared = TYPES[:3]  # 5.2 has no pc-q35-6.0
    assert groups(classify(Case(), a, b, shared)) == [("pc-q35-5.2", tuple(shared))]


def test_classes_and_differences_are_choices_that_only_run_takes() -> None:
    for spec in (CLASSES, DIFFERENCES):
        choice = MachineChoice.parse(spec)
        assert choice.classes and not choice.newest
        assert choice.select(TYPES) == TYPES
        with pytest.raises(ConformanceError, match="only `qemu-conformance run`"):
            planner_machines(choice, lambda caps: caps)
    assert not MachineChoice.parse("all").classes


def test_a_migrate_result_names_the_types_its_representative_stands_for() -> None:
    planner = ClassPlanner.__new__(ClassPlanner)
    planner.mode = DIFFERENCES
    a = view(same({"vectors": "2"}))
    b = view(same({"vectors": "2"}), version="10.0:x86_64")
    found = classify(Case(), a, b, TYPES, mode=DIFFERENCES)
    planner.found = {("q35-rng", a.caps.label, b.caps.label, c.representative): c for c in found}
    result = StageResult(case="q35-rng", stage="migrate", verdict="pass", arch="x86_64",
                         qemu=QemuBuild("/a", str(a.caps.version), arch="x86_64"),
                         peer=QemuBuild("/b", str(b.caps.version), arch="x86_64"),
                         details={"machine": "pc-q35-6.0", "machine_from": "--machines"})
    written: list[StageResult] = []

    class Writer:
        path = None

        def write(self, r: StageResult) -> None:
            written.append(r)

    planner.writer(Writer()).write(result)
    assert written[0].details["machine_class"]["members"] == TYPES
    assert written[0].details["machine_class"]["mode"] == DIFFERENCES


def test_a_type_whose_facts_are_not_read_is_a_class_of_its_own() -> None:
    a = view(same({"vectors": "2"}))
    b = view(same({"vectors": "2"}), version="10.0:x86_64")
    unread = b.props

    def props(machine: str, types: list[str]) -> Facts:
        return Facts({}, {}) if machine == "pc-q35-5.1" else unread(machine, types)

    b.props = props
    for mode in (CLASSES, DIFFERENCES):
        assert groups(classify(Case(), a, b, TYPES[:3], mode=mode)) == [
            ("pc-q35-5.2", ("pc-q35-5.0", "pc-q35-5.2")), ("pc-q35-5.1", ("pc-q35-5.1",))], mode


def test_differences_runs_a_build_with_itself_under_the_types_its_cross_pairs_boot() -> None:
    a = view(same({"vectors": "2"}))  # 7.2: pc-q35-2.4 ... 7.2
    b = view(same({"vectors": "2"}) | {"pc-q35-5.0": {"vectors": "3"}}, version="10.0:x86_64")
    planner = ClassPlanner.__new__(ClassPlanner)
    planner.mode, planner.reference, planner.found, planner.chosen, planner.planned = DIFFERENCES, {}, {}, {}, {}
    planner.views = {a.caps.label: a, b.caps.label: b}
    itself = planner._pair(Case(), a, a)  # asks the cross pairs first, whatever the plan's order
    assert planner._pair(Case(), a, b) == ["pc-q35-7.2", "pc-q35-5.0"]  # where they agree, and 5.0
    assert itself == ["pc-q35-5.0", "pc-q35-7.2"]
    newest = planner.found[("q35-rng", a.caps.label, a.caps.label, "pc-q35-7.2")]
    assert "pc-q35-5.0" not in newest.members and {"pc-q35-2.4", "pc-q35-5.1"} <= set(newest.members)


def test_the_sampling_check_names_a_type_whose_verdict_is_not_its_representatives() -> None:
    from conformance.machine_classes import sampling_disagreements

    def result(machine: str, verdict: str, members: list[str] | None = None) -> StageResult:
        details: dict[str, Any] = {"machine": machine, "machine_from": "--machines"}
        if members:
            details["machine_class"] = {"representative": machine, "members": members}
        return StageResult(case="q35-rng", stage="migrate", verdict=verdict, arch="x86_64",
                           qemu=QemuBuild("/a", "10.0.2", arch="x86_64"), peer=QemuBuild("/a", "10.0.2", arch="x86_64"),
                           details=details)

    every = [result("pc-q35-3.0", "fail"), result("pc-q35-3.1", "pass"), result("pc-q35-10.0", "pass")]
    sampled = [result("pc-q35-10.0", "pass", ["pc-q35-3.0", "pc-q35-3.1", "pc-q35-9.0", "pc-q35-10.0"])]
    compared, bad = sampling_disagreements(every, sampled)
    assert compared == 3  # pc-q35-9.0: not run under all
    assert bad == ["q35-rng 10.0.2-x86_64 -> 10.0.2-x86_64 @pc-q35-3.0: fail under all, pass for its representative "
                   "pc-q35-10.0"]
