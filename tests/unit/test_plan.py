"""The stage table (conformance/stages.py) and the one planner (conformance/plan.py): which work items a
catalogue, a set of builds and the requested stages make, and that `run` records exactly those."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conformance.cases import Case, load_catalogue
from conformance.cli import main
from conformance.errors import CaseError
from conformance.plan import WorkItem, plan, work_items
from conformance.results.records import read_results
from conformance.runner import RUN_FILES, RUN_FOLDERS, fresh_output
from conformance.shard import Shard
from conformance.stages import CASE_STAGES, TABLE, Stage, parse_stage_list, required, stage

SMALL = """\
[cases.both]
template = "minimal.xml.j2"
description = "x86_64 and aarch64, every stage"
targets = ["x86_64:q35", "aarch64:virt"]
stages = ["parse", "argv", "boot", "migrate"]

[cases.boots-only]
template = "minimal.xml.j2"
description = "boots, does not migrate"
targets = ["x86_64:q35"]
stages = ["parse", "argv", "boot"]

[cases.invalid]
template = "minimal.xml.j2"
description = "parse only"
targets = ["x86_64:q35"]
stages = ["parse"]
"""
BUILDS = [("7.2.22-x86_64", "x86_64"), ("10.0.2-x86_64", "x86_64"), ("10.0.2-aarch64", "aarch64")]


def _small(tmp_path: Path, text: str = SMALL) -> list[Case]:
    path = tmp_path / "cases.toml"
    path.write_text(text)
    return list(load_catalogue(path).cases.values())


def test_the_planner_items_of_a_small_catalogue(tmp_path: Path) -> None:
    items = [i.id for i in work_items(_small(tmp_path), BUILDS, CASE_STAGES)]
    assert items == [
        # parse: every case on every build of its arch, build by build
        "both.parse[7.2.22-x86_64]", "boots-only.parse[7.2.22-x86_64]", "invalid.parse[7.2.22-x86_64]",
        "both.parse[10.0.2-x86_64]", "boots-only.parse[10.0.2-x86_64]", "invalid.parse[10.0.2-x86_64]",
        "both.parse[10.0.2-aarch64]",
        "both.argv[7.2.22-x86_64]", "boots-only.argv[7.2.22-x86_64]",
        "both.argv[10.0.2-x86_64]", "boots-only.argv[10.0.2-x86_64]",
        "both.argv[10.0.2-aarch64]",
        "both.boot[7.2.22-x86_64]", "boots-only.boot[7.2.22-x86_64]",
        "both.boot[10.0.2-x86_64]", "boots-only.boot[10.0.2-x86_64]",
        "both.boot[10.0.2-aarch64]",
        # migrate: only the case that lists it, every same-arch ordered pair, each build with itself
        "both.migrate[7.2.22-x86_64->7.2.22-x86_64]", "both.migrate[7.2.22-x86_64->10.0.2-x86_64]",
        "both.migrate[10.0.2-x86_64->7.2.22-x86_64]", "both.migrate[10.0.2-x86_64->10.0.2-x86_64]",
        "both.migrate[10.0.2-aarch64->10.0.2-aarch64]",
    ]


def test_only_requested_stages_are_planned(tmp_path: Path) -> None:
    cases = _small(tmp_path)
    assert {i.stage for i in work_items(cases, BUILDS, ["parse"])} == {"parse"}
    assert {i.stage for i in work_items(cases, BUILDS, ["argv", "migrate"])} == {"argv", "migrate"}
    assert work_items(cases, BUILDS, []) == []
    with pytest.raises(ValueError, match="probe runs once per build"):
        work_items(cases, BUILDS, ["probe"])


def test_planned_items_carry_the_callers_build_objects(tmp_path: Path) -> None:
    """Two builds of one VERSION-ARCH (two packages of 7.2.22) stay two builds."""
    a, b = object(), object()
    names = {id(a): ("7.2.22-x86_64", "x86_64"), id(b): ("7.2.22-x86_64", "x86_64")}
    planned = plan(_small(tmp_path)[:1], [a, b], ["boot", "migrate"], lambda x: names[id(x)])
    assert [(p.build is a, p.peer is None) for p in planned if p.stage.name == "boot"] == [(True, True), (False, True)]
    pairs = [(p.build, p.peer) for p in planned if p.stage.name == "migrate"]
    assert pairs == [(a, a), (a, b), (b, a), (b, b)]


def test_shards_split_the_plan_exactly(tmp_path: Path) -> None:
    planned = plan(_small(tmp_path), BUILDS, CASE_STAGES, lambda b: b)
    parts = [Shard(i, 3).mine(planned) for i in (1, 2, 3)]
    assert sorted(p.item for part in parts for p in part) == sorted(p.item for p in planned)


def test_a_static_pair_stage_and_machine_types_are_one_row_and_one_argument(tmp_path: Path) -> None:
    """The next stages of issue 17: a static stage of scope pair (vmstate) and migrations per machine type."""
    vmstate = Stage("vmstate", "pair", live=False, meaning="predicted migration breaks", requires="argv",
                    per_machine=True)
    cases = [dataclasses.replace(c, stages=(*c.stages, "vmstate")) for c in _small(tmp_path) if c.name == "both"]
    shared = {("7.2.22-x86_64", "10.0.2-x86_64"): ["pc-q35-7.2"]}

    def machines(_case: object, a: tuple[str, str], b: tuple[str, str]) -> list[str]:
        return shared.get((a[0], b[0]), [])

    ids = [p.item.id for p in plan(cases, BUILDS[:2], [vmstate, "migrate"], lambda b: b, machines=machines)]
    assert ids == ["both.vmstate[7.2.22-x86_64->10.0.2-x86_64@pc-q35-7.2]",  # pipeline order: before boot
                   "both.migrate[7.2.22-x86_64->10.0.2-x86_64@pc-q35-7.2]"]
    assert [p.item.id for p in plan(cases, BUILDS[:1], ["migrate"], lambda b: b)] == \
        ["both.migrate[7.2.22-x86_64->7.2.22-x86_64]"]  # no machine types given: one item, as today


def test_the_real_catalogue_lists_migrate_exactly_where_it_boots() -> None:
    """cases.toml decides migrate: today every case that boots migrates, as before the planner read it."""
    for case in load_catalogue().cases.values():
        assert ("migrate" in case.stages) == ("boot" in case.stages), case.name


def test_the_catalogue_refuses_a_stage_without_the_one_it_builds_on(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match=r"case both: stage migrate builds on boot, which the case does not") as err:
        _small(tmp_path, SMALL.replace('"parse", "argv", "boot", "migrate"', '"parse", "argv", "migrate"'))
    assert f"{tmp_path / 'cases.toml'}:1" in str(err.value)
    boots = 'stages = ["parse", "argv", "boot"]\n'
    text = SMALL.replace(boots, f"{boots}live.migrate = false\n")
    with pytest.raises(CaseError, match=r"case boots-only: \[live\] migrate is gone") as err:
        _small(tmp_path, text)
    assert "leave 'migrate' out of its stages" in str(err.value) and "cases.toml:7" in str(err.value)


def test_the_stage_table() -> None:
    assert [s.name for s in TABLE] == ["probe", "caps", "parse", "argv", "vmstate", "boot", "migrate"]
    assert CASE_STAGES == ("parse", "argv", "vmstate", "boot", "migrate")
    assert required("migrate") == ["boot", "argv", "parse"] and required("parse") == []
    assert {s.scope for s in TABLE} <= {"build", "case", "pair"}
    assert all(s.requires in CASE_STAGES for s in TABLE if s.requires)  # a stage builds on a case stage
    assert len({s.chip for s in TABLE if s.chip}) == len([s for s in TABLE if s.chip])  # chips tell stages apart
    assert stage("migrate").junit_name == "{case}[{build}->{peer}]"
    assert parse_stage_list(["migrate,parse", " boot"]) == ["parse", "boot", "migrate"]
    assert parse_stage_list([]) == list(CASE_STAGES)
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stage_list(["parse,probe"])


def test_a_rerun_into_the_same_folder_replaces_the_earlier_run(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not the suite's: stays
    first = ["run", "--stages", "parse,argv", "--caps", "10.0.0:x86_64", "--cases", "teaming*", "-o", str(out)]
    assert main(first) == 0
    assert (out / "argv").is_dir() and any(r.case == "teaming-q35" for r in read_results(out / "results.jsonl"))
    assert main(["run", "--stages", "parse", "--caps", "7.2.0:x86_64", "--cases", "q35-minimal", "-o", str(out)]) == 0
    results = list(read_results(out / "results.jsonl"))
    assert [(r.case, r.stage) for r in results] == [("q35-minimal", "parse")]  # nothing of the first run
    assert not (out / "argv").exists() and (out / "notes.txt").read_text() == "mine"
    junit = (out / "junit.xml").read_text()
    assert "teaming" not in junit and "q35-minimal" in junit
    assert "teaming" not in (out / "report.html").read_text()
    help_text = capsys.readouterr().out
    for command in ("run", "qualify"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert all(name in help_text for name in RUN_FILES) and all(f"{d}/" in help_text for d in RUN_FOLDERS)


def test_fresh_output_leaves_a_folder_that_holds_no_run_alone(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "keep").write_text("a user's folder named live")
    assert fresh_output(tmp_path) == [] and (tmp_path / "live" / "keep").exists()
    (tmp_path / "results.jsonl").write_text("")
    (tmp_path / "junit.xml").write_text("")
    assert fresh_output(tmp_path) == ["results.jsonl", "junit.xml", "live/"]
    assert list(tmp_path.iterdir()) == []


def test_work_item_ids() -> None:
    assert WorkItem("c", "boot", "7.2.22-x86_64").id == "c.boot[7.2.22-x86_64]"
    assert WorkItem("c", "migrate", "a", "b").id == "c.migrate[a->b]"
