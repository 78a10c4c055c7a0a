"""--machines newest|all|REGEX (conformance/machines.py): the machine types a migration runs under, read from
the builds' capabilities, and how the machine type travels into ids, shard keys, JUnit names and the report."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from conformance.caps.model import Capabilities
from conformance.caps.store import resolve
from conformance.cases import load_catalogue
from conformance.machines import (
    FROM_CASE,
    FROM_GIVEN,
    FROM_NEWEST,
    MachineChoice,
    deprecated_in,
    direction,
    pinned_machine,
    planner_machines,
    shared_machines,
    swept_machine,
)
from conformance.plan import WorkItem, plan
from conformance.pytest_plugin import _machines_option, item_of
from conformance.report.html import write_report
from conformance.results import junit
from conformance.results.records import QemuBuild, ResultWriter, StageResult, read_results
from conformance.shard import Shard

VERSIONED = re.compile(r"^(pc-q35|pc-i440fx|virt)-\d+\.\d+$")


def _caps(spec: str) -> Capabilities:
    return resolve(spec)


def _types(caps: Capabilities, family: str) -> set[str]:
    """The fixture's versioned machine types of a family, from its raw machine list (names and aliases)."""
    return {n for m in caps.machines for n in (m.name, m.alias or "") if VERSIONED.match(n) and
            n.rsplit("-", 1)[0] == family}


def _migrations(case: str, builds: list[Capabilities], spec: str) -> dict[tuple[str, str], list[str]]:
    """(source, destination) -> the machine types the planner gives ``case`` under --machines ``spec``."""
    cases = [load_catalogue().get(case)]
    out: dict[tuple[str, str], list[str]] = {}
    for p in plan(cases, builds, ["migrate"], lambda c: (c.label, c.arch),
                  machines=planner_machines(MachineChoice.parse(spec), lambda c: c)):
        out.setdefault((p.item.build, p.item.peer), []).append(p.item.machine)
    return out


def test_all_plans_the_versioned_types_both_fixtures_share_and_nothing_else() -> None:
    old, new = _caps("5.2.0:x86_64"), _caps("7.2.22:x86_64")
    planned = _migrations("q35-minimal", [old, new], "all")
    shared = _types(old, "pc-q35") & _types(new, "pc-q35")
    assert "pc-q35-7.2" in _types(new, "pc-q35") and "pc-q35-7.2" not in shared  # 5.2 has no 7.2 type
    for pair in (("5.2.0-x86_64", "7.2.22-x86_64"), ("7.2.22-x86_64", "5.2.0-x86_64")):
        assert set(planned[pair]) == shared and len(planned[pair]) == len(shared) == 17
    # one build with itself: every versioned q35 type it has; never an alias (q35) nor another family
    assert set(planned[("7.2.22-x86_64", "7.2.22-x86_64")]) == _types(new, "pc-q35")
    assert all(m.startswith("pc-q35-") for ms in planned.values() for m in ms)
    # oldest first, by version (2.12 after 2.4, 5.2 last of the shared)
    assert planned[("5.2.0-x86_64", "7.2.22-x86_64")][0] == "pc-q35-2.4"
    assert planned[("5.2.0-x86_64", "7.2.22-x86_64")][-1] == "pc-q35-5.2"


def test_a_pc_case_takes_the_i440fx_family_and_virt_the_virt_family() -> None:
    new, newest = _caps("7.2.22:x86_64"), _caps("10.0.2:x86_64")
    planned = _migrations("pc-minimal", [new, newest], "all")[("7.2.22-x86_64", "10.0.2-x86_64")]
    assert set(planned) == _types(new, "pc-i440fx") & _types(newest, "pc-i440fx")
    assert "pc-i440fx-1.4" not in planned  # 10.0 removed the 1.x types: only what both builds have
    arm72, arm100 = _caps("7.2.22:aarch64"), _caps("10.0.2:aarch64")
    virt = _migrations("virt-minimal", [arm72, arm100], "all")[("10.0.2-aarch64", "7.2.22-aarch64")]
    assert set(virt) == _types(arm72, "virt") & _types(arm100, "virt") and "virt-10.0" not in virt


def test_newest_is_one_item_per_pair_with_the_key_it_always_had() -> None:
    old, new = _caps("5.2.0:x86_64"), _caps("7.2.22:x86_64")
    planned = _migrations("q35-minimal", [old, new], "newest")
    assert planned and all(ms == [""] for ms in planned.values())
    assert pinned_machine("q35", old, new) == ("pc-q35-5.2", "")
    assert WorkItem("q35-minimal", "migrate", "5.2.0-x86_64", "7.2.22-x86_64").key == \
        "\x1f".join(("q35-minimal", "migrate", "5.2.0-x86_64", "7.2.22-x86_64"))


def test_a_regex_selects_among_the_shared_types_and_a_bad_one_is_refused() -> None:
    old, new = _caps("5.2.0:x86_64"), _caps("7.2.22:x86_64")
    planned = _migrations("q35-minimal", [old, new], r"[^0-9](4|5)\.\d+$")
    assert planned[("5.2.0-x86_64", "7.2.22-x86_64")] == ["pc-q35-4.0", "pc-q35-4.1", "pc-q35-4.2", "pc-q35-5.0",
                                                          "pc-q35-5.1", "pc-q35-5.2"]
    assert _migrations("q35-minimal", [old, new], "nothing-matches") == {}
    with pytest.raises(ValueError, match="not newest, all, classes, differences or a regular expression"):
        MachineChoice.parse("pc-q35-(")


def test_builds_without_a_shared_type_keep_one_item_that_says_why() -> None:
    x86, arm = _caps("7.2.22:x86_64"), _caps("7.2.22:aarch64")
    assert shared_machines("q35", x86, arm)[1] == "no versioned pc-q35 machine type is known to both QEMU 7.2.22 " \
                                                  "and 7.2.22"
    assert shared_machines("nosuch", x86, x86) == ([], "QEMU 7.2.22 has no machine type nosuch")


def test_direction_and_deprecation_come_from_the_capabilities() -> None:
    old, new, newest = _caps("5.2.0:x86_64"), _caps("7.2.22:x86_64"), _caps("10.0.2:x86_64")
    assert [direction(a, b) for a, b in ((new, new), (old, newest), (newest, new))] == ["same", "forward", "backward"]
    assert deprecated_in("pc-q35-5.2", [new, newest]) == ["10.0.2-x86_64"]  # 10.0 deprecates the pre-7.1 types
    assert deprecated_in("pc-i440fx-1.4", [old, new]) == ["7.2.22-x86_64"]
    assert deprecated_in("pc-q35-7.2", [new, newest]) == []


def test_ids_shard_keys_and_junit_names_carry_the_machine_type() -> None:
    item = WorkItem("teaming-q35", "migrate", "7.2.22-x86_64", "10.0.2-x86_64", "pc-q35-7.2")
    assert item.id == "teaming-q35.migrate[7.2.22-x86_64->10.0.2-x86_64@pc-q35-7.2]"
    assert item.key.endswith("\x1fpc-q35-7.2")
    # the pytest id names the same item, so the plugin's shard split is the planner's
    assert item_of("migrate", "teaming-q35[7.2.22-x86_64->10.0.2-x86_64@pc-q35-7.2]") == item
    assert item_of("migrate", "teaming-q35[7.2.22-x86_64->10.0.2-x86_64]").machine == ""
    # machine types spread over the shards (one shard does not get a whole pair)
    items = [WorkItem("q35-minimal", "migrate", "7.2.22-x86_64", "10.0.2-x86_64", f"pc-q35-{v}.{m}")
             for v in range(2, 8) for m in range(3)]
    assert len({next(i for i in range(1, 5) if Shard(i, 4).owns(it)) for it in items}) == 4
    q72 = QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", "", "x86_64")
    q100 = QemuBuild("/b/qemu-system-x86_64", "10.0.2", "", "x86_64")
    swept = StageResult("teaming-q35", "migrate", "pass", "", "x86_64", q72, peer=q100,
                        details={"machine": "pc-q35-7.2", "machine_from": FROM_GIVEN})
    pinned = StageResult("teaming-q35", "migrate", "pass", "", "x86_64", q72, peer=q100,
                         details={"machine": "pc-q35-7.2", "machine_from": FROM_NEWEST})
    assert junit.testcase_name(swept) == "teaming-q35[7.2.22-x86_64->10.0.2-x86_64@pc-q35-7.2]"
    assert junit.testcase_name(pinned) == "teaming-q35[7.2.22-x86_64->10.0.2-x86_64]"  # the default keeps its name
    assert swept_machine(pinned.details) == "" and swept_machine({"machine": "q35", "machine_from": FROM_CASE}) == ""


def test_the_report_keeps_one_result_per_machine_type_and_a_row_for_each(tmp_path: Path) -> None:
    q72 = QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", "Debian 1:7.2", "x86_64")
    q100 = QemuBuild("/b/qemu-system-x86_64", "10.0.2", "Debian 1:10.0.2", "x86_64")
    writer = ResultWriter(tmp_path)
    for machine, verdict in (("pc-q35-5.2", "pass"), ("pc-q35-7.2", "fail")):
        writer.write(StageResult("q35-minimal", "migrate", verdict, f"under {machine}", "x86_64", q100, peer=q72,
                                 details={"machine": machine, "machine_from": FROM_GIVEN, "direction": "backward",
                                          "machine_deprecated": ["10.0.2-x86_64"] if machine == "pc-q35-5.2"
                                          else []}))
    assert len(list(read_results(writer.path))) == 2
    page = write_report([writer.path], tmp_path).read_text()
    assert "q35-minimal @ pc-q35-5.2" in page and "q35-minimal @ pc-q35-7.2" in page
    assert "under pc-q35-7.2" in page and "under pc-q35-5.2" in page  # neither result replaced the other
    assert ">backward<" in page and "machine type deprecated in 10.0.2-x86_64 (a warning)" in page
    junit = (tmp_path / "junit.xml").read_text()
    assert "q35-minimal[10.0.2-x86_64-&gt;7.2.22-x86_64@pc-q35-5.2]" in junit


def test_the_machine_a_migration_records_whichever_way_it_was_chosen() -> None:
    from conformance.live.migrate import _migration_machine

    case = load_catalogue().get("q35-minimal")
    old, new = _caps("5.2.0:x86_64"), _caps("7.2.22:x86_64")
    assert _migration_machine(case, new, new, "", cross=False) == ("pc-q35-7.2", "")  # the alias q35, resolved
    assert _migration_machine(case, old, new, "", cross=True) == ("pc-q35-5.2", "")  # the newest both have
    assert _migration_machine(case, old, new, "pc-q35-4.2", cross=True) == ("pc-q35-4.2", "")
    assert _migration_machine(case, new, old, "pc-q35-7.2", cross=True) == \
        (None, "machine type pc-q35-7.2 unknown to QEMU 5.2.0")


@pytest.mark.parametrize("spec", ["classes", "differences"])
def test_the_pytest_plugin_refuses_class_sampling_as_a_usage_error(spec: str) -> None:
    """classes/differences need `qemu-conformance run`'s ClassPlanner: the option says so, not a collection error."""
    with pytest.raises(argparse.ArgumentTypeError, match=f"{spec} is for `qemu-conformance run` only"):
        _machines_option(spec)
    assert _machines_option("all") == "all"
