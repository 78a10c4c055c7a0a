"""`run --shard I/N` on the real catalogue: the shards' merged results equal the unsharded run, result for
result; `report` refuses shards of different catalogues."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.report.html import merge
from conformance.results.records import StageResult, read_results
from tests.helpers import CLI, ROOT, code_under_test

ENV = code_under_test()  # this checkout's CLI


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*CLI, *args], capture_output=True, text=True,
                         timeout=600, env=ENV)
    if check:
        assert out.returncode in (0, 1), out.stderr  # 1: some case failed, still a run
    return out


def key(r: StageResult) -> tuple[str, ...]:
    peer = f"{r.peer.version}-{r.peer.arch}" if r.peer else ""
    return (r.case, r.stage, f"{r.qemu.version}-{r.qemu.arch}" if r.qemu else "", peer, r.verdict, r.reason)


@pytest.mark.live
def test_shards_of_a_static_run_merge_into_the_unsharded_run(qemu_x86_64: Path, tmp_path: Path) -> None:
    common = ["run", "--stages", "parse,argv", "--qemu", str(qemu_x86_64), "--cases", "teaming*", "--cases",
              "*-minimal", "--cases", "net-*", "--cases", "disk-*"]
    cli(*common, "-o", str(tmp_path / "whole"))
    shards = [tmp_path / f"shard-{i}" for i in (1, 2, 3)]
    for i, folder in enumerate(shards, 1):
        cli(*common, "--shard", f"{i}/3", "-o", str(folder))
    whole = sorted(key(r) for r in read_results(tmp_path / "whole" / "results.jsonl"))
    parts = [sorted(key(r) for r in read_results(f / "results.jsonl")) for f in shards]
    assert all(parts), "a shard with no work: the split is not spreading the catalogue"
    assert sum(len(p) for p in parts) == len(whole) > 30  # no result twice
    merged, origin = merge([f / "results.jsonl" for f in shards])
    assert sorted(key(r) for r in merged) == whole
    # artefact links of the merged records point into the shard that wrote them
    for r in merged:
        for rel in r.artifacts.values():
            assert (origin[id(r)].parent / rel).exists(), rel

    report = cli("report", *(str(f / "results.jsonl") for f in shards), "-o", str(tmp_path / "report"))
    assert report.returncode == 0 and (tmp_path / "report" / "report.html").exists()
    partial = cli("report", str(shards[0] / "results.jsonl"), "-o", str(tmp_path / "partial"))
    assert "shard(s) 2/3, 3/3 not given" in partial.stderr


@pytest.mark.live
def test_report_refuses_shards_of_different_catalogues(qemu_x86_64: Path, tmp_path: Path) -> None:
    other = tmp_path / "data"
    (other / "templates").mkdir(parents=True)
    catalogue = (ROOT / "templates" / "cases.toml").read_text()
    (other / "templates" / "cases.toml").write_text(catalogue + "\n# another commit\n")
    os.symlink(ROOT / "templates" / "domains", other / "templates" / "domains")
    os.symlink(ROOT / "capsdata", other / "capsdata")
    common = ["run", "--stages", "parse", "--qemu", str(qemu_x86_64), "--cases", "q35-minimal"]
    cli(*common, "--shard", "1/2", "-o", str(tmp_path / "a"))
    env = {**ENV, "QEMU_CONFORMANCE_DATA": str(other)}
    subprocess.run([*CLI, *common, "--shard", "2/2", "-o", str(tmp_path / "b")],
                   capture_output=True, text=True, timeout=300, env=env, check=False)
    out = cli("report", str(tmp_path / "a" / "results.jsonl"), str(tmp_path / "b" / "results.jsonl"),
              "-o", str(tmp_path / "report"), check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot merge shards of different case catalogues" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "report" / "report.html").exists()


def test_bad_shard_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = cli("run", "--stages", "parse", "--shard", "4/3", "-o", str(tmp_path), check=False)
    assert out.returncode == 2 and "I must be between 1 and N" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.live
def test_shards_of_a_boot_run_merge_into_the_unsharded_run(qemu_x86_64: Path, tmp_path: Path) -> None:
    common = ["run", "--stages", "boot", "--qemu", str(qemu_x86_64), "--cases", "q35-minimal", "--cases",
              "pc-minimal", "-j", "1"]
    cli(*common, "-o", str(tmp_path / "whole"))
    for i in (1, 2):
        cli(*common, "--shard", f"{i}/2", "-o", str(tmp_path / f"shard-{i}"))
    whole = sorted(key(r)[:5] for r in read_results(tmp_path / "whole" / "results.jsonl"))
    merged, _ = merge([tmp_path / f"shard-{i}" / "results.jsonl" for i in (1, 2)])
    assert sorted(key(r)[:5] for r in merged) == whole and len(whole) == 2


def _collected(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "-p",
                          "no:cacheprovider", str(ROOT / "tests" / "static" / "test_matrix.py"), "--conformance-caps",
                          "qemu-[4-7]*", *args],
                         capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_pytest_shard_option_splits_the_parametrised_tests_exactly() -> None:
    whole = _collected()
    parts = [_collected("--shard", f"{i}/3") for i in (1, 2, 3)]
    assert len(whole) > 100 and all(parts)
    assert sorted(t for p in parts for t in p) == sorted(whole)  # every test once, none twice
    assert _collected("--conformance-shard", "2/3") == parts[1]
