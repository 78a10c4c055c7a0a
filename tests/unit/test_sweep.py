"""benchmarks/sweep.py's --compare: the proof that a speed change left the static prediction as it was must pair
the same builds whether they live in another folder (a private QEMU_CONFORMANCE_BUILDS) or have another cache
key (a new wrapper format), and must not call two runs equal because it paired nothing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from tests.helpers import ROOT


def _sweep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweep_benchmark", ROOT / "benchmarks" / "sweep.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, builds: str, key: str, verdict: str = "pass") -> Path:
    """A kept run: one prediction of 10.0 -> host under pc-q35-7.2, one property reading of 10.0's."""
    wrapper = f"{builds}/qemu-10.0/bin/qemu-system-x86_64"
    record = {"case": "q35-minimal", "stage": "vmstate", "verdict": verdict, "arch": "x86_64",
              "qemu": {"path": wrapper, "version": "10.0.2"},
              "peer": {"path": "/usr/bin/qemu-system-x86_64", "version": "7.2.22"},
              "details": {"machine": "pc-q35-7.2", "devices": {"e1000": "compatible"}}}
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text(json.dumps(record) + "\n")
    props = folder / "props" / key
    props.mkdir(parents=True)
    (props / "pc-q35-7.2.json").write_text(json.dumps({
        "devices": {"scsi-hd": {"props": {"scsi-id": "0", "removable": "false"}, "children": {}}},
        "machine_devices": {}}))
    (folder / "props" / "builds.json").write_text(json.dumps({key: "qemu-10.0/x86_64"}))
    return folder


def test_compare_pairs_builds_by_name_across_folders_and_cache_keys(tmp_path: Path) -> None:
    sweep = _sweep()
    said: list[str] = []
    old = _run(tmp_path / "old", "/root/.cache/qemu-conformance/builds", "aaaa")
    new = _run(tmp_path / "new", "/tmp/private-builds", "bbbb")
    assert sweep.compare(old / "results.jsonl", new / "results.jsonl", said.append) == 0
    assert "1 equal, 0 differ" in said[-1] and "0 only in the first" in said[-1]
    assert sweep.compare_props(old / "props", new / "props", said.append) == 0
    assert said[-1].startswith("property caches: 1 machine types of a build in both (0 only in the first); "
                               "2 device readings equal")  # scsi-hd and the machine's own
    changed = _run(tmp_path / "changed", "/tmp/private-builds", "cccc", verdict="fail")
    assert sweep.compare(old / "results.jsonl", changed / "results.jsonl", said.append) == 1
    # a kept cache whose builds are not named (kept before builds.json): paired by key, so nothing here
    (changed / "props" / "builds.json").unlink()
    assert sweep.compare_props(old / "props", changed / "props", said.append) == 0
    assert "0 machine types of a build in both (1 only in the first)" in said[-1]
