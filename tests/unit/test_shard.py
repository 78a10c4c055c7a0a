"""CI shards (conformance/shard.py): the split is deterministic and n shards cover every item exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conformance.caps.store import fixture_files, load
from conformance.cases import load_catalogue
from conformance.plan import WorkItem, work_items
from conformance.shard import Shard, ShardError, check_merge, shard_of, split, write_manifest
from conformance.stages import CASE_STAGES


@pytest.fixture(scope="module")
def real_items() -> list[WorkItem]:
    """Every work item of the real catalogue on every stored fixture taken as a build (all four stages)."""
    builds = [(caps.label, caps.arch) for caps in map(load, fixture_files())]
    items = work_items(load_catalogue().cases.values(), builds, CASE_STAGES)
    assert len(builds) >= 10 and len(items) > 1000, (len(builds), len(items))
    return items


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16])
def test_shards_cover_every_item_of_the_real_catalogue_exactly_once(real_items: list[WorkItem], count: int) -> None:
    chosen = Counter(item for i in range(1, count + 1) for item in real_items if Shard(i, count).owns(item))
    assert chosen == Counter(real_items)  # every item, and none in two shards
    parts = split(real_items, count)
    assert sum(len(p) for p in parts.values()) == len(real_items)
    mean = len(real_items) / count
    assert all(abs(len(p) - mean) < 0.25 * mean for p in parts.values()), {i: len(p) for i, p in parts.items()}


def test_every_stage_kind_is_among_the_real_items(real_items: list[WorkItem]) -> None:
    stages = Counter(i.stage for i in real_items)
    assert set(stages) == set(CASE_STAGES), stages
    assert any(i.peer and i.peer != i.build for i in real_items), "no cross-build migration item"


def test_split_is_stable_across_processes() -> None:
    """A stable hash, not Python's salted hash(): another interpreter (other PYTHONHASHSEED) agrees."""
    item = WorkItem("teaming-q35", "migrate", "7.2.22-x86_64", "10.0.2-x86_64")
    code = ("from conformance.shard import WorkItem, shard_of;"
            "print(shard_of(WorkItem('teaming-q35', 'migrate', '7.2.22-x86_64', '10.0.2-x86_64'), 7))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())})
    assert int(out.stdout) == shard_of(item, 7)
    assert item.id == "teaming-q35.migrate[7.2.22-x86_64->10.0.2-x86_64]"


@pytest.mark.parametrize(("item", "shards"), [
    (WorkItem("teaming-q35", "migrate", "7.2.22-x86_64", "10.0.2-x86_64"), [2, 2, 2, 3]),
    (WorkItem("q35-minimal", "parse", "10.0.2-x86_64"), [2, 1, 2, 4]),
    (WorkItem("virt-minimal", "boot", "7.2.22-aarch64"), [2, 2, 4, 1]),
    (WorkItem("pc-minimal", "static", "4.2.0-x86_64"), [2, 3, 4, 3]),  # the pytest plugin's static tests
])
def test_shards_of_items_are_those_of_before_the_planner(item: WorkItem, shards: list[int]) -> None:
    """The shard of 2, 3, 4 and 7 that owned each item before machine types joined WorkItem (c22dbe1):
    an item without a machine type keeps its key, so CI matrices split as they did."""
    assert [shard_of(item, n) for n in (2, 3, 4, 7)] == shards
    assert item.key == "\x1f".join((item.case, item.stage, item.build, item.peer))
    with_machine = WorkItem(item.case, item.stage, item.build, item.peer, "pc-q35-7.2")
    assert with_machine.key == item.key + "\x1fpc-q35-7.2" and with_machine.id.endswith("@pc-q35-7.2]")


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "2", "1/-1"])
def test_bad_shard_values_are_refused(text: str) -> None:
    with pytest.raises(ShardError, match="--shard"):
        Shard.parse(text)


def test_shard_parse() -> None:
    assert Shard.parse(" 2/ 4") == Shard(2, 4)
    assert str(Shard(3, 5)) == "3/5"


def _shard_dir(tmp_path: Path, name: str, shard: Shard, catalogue_text: str | None = None) -> Path:
    catalogue = load_catalogue()
    out = tmp_path / name
    write_manifest(out, shard, catalogue)
    (out / "results.jsonl").write_text("")
    if catalogue_text is not None:  # the same file, another commit: only the fingerprint differs
        manifest = json.loads((out / "shard.json").read_text())
        manifest["catalogue"] = catalogue_text
        (out / "shard.json").write_text(json.dumps(manifest))
    return out / "results.jsonl"


def test_merge_check_refuses_shards_of_different_catalogues(tmp_path: Path) -> None:
    a = _shard_dir(tmp_path, "a", Shard(1, 2))
    b = _shard_dir(tmp_path, "b", Shard(2, 2), catalogue_text="0123456789abcdef")
    with pytest.raises(ShardError, match="different case catalogues") as err:
        check_merge([a, b])
    assert str(a) in str(err.value) and str(b) in str(err.value)
    # whole runs (unsharded, avocado jobs) of another catalogue merge as before
    other = _shard_dir(tmp_path, "other", Shard(1, 1), catalogue_text="0123456789abcdef")
    assert check_merge([a, other]) == ["note: shard(s) 2/2 not given: their results are missing from the report"]


def test_merge_check_refuses_different_splits_and_notes_missing_shards(tmp_path: Path) -> None:
    a = _shard_dir(tmp_path, "a", Shard(1, 3))
    b = _shard_dir(tmp_path, "b", Shard(2, 2))
    with pytest.raises(ShardError, match="different splits"):
        check_merge([a, b])
    c = _shard_dir(tmp_path, "c", Shard(3, 3))
    assert check_merge([a, c]) == ["note: shard(s) 2/3 not given: their results are missing from the report"]
    assert check_merge([tmp_path / "none" / "results.jsonl"]) == []
    whole = _shard_dir(tmp_path, "whole", Shard(1, 1))  # an unsharded run or an avocado job joins any split
    assert check_merge([a, whole, c]) == check_merge([a, c])
