"""`qemu-conformance run --caps`: the static stages on stored fixtures, with no QEMU binary, carrying
the known bugs of each fixture's version that the built argv meets."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.caps.store import fixture_files
from conformance.cli import main
from conformance.results.records import read_results


def test_fixtures_of_4_2_0_flag_the_vf_unplug_segfault(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["run", "--stages", "parse,argv", "--caps", "4.2.0:x86_64", "--caps", "4.2.0:aarch64",
               "--cases", "teaming*", "-o", str(out)])
    assert rc == 0
    results = list(read_results(out / "results.jsonl"))
    assert {r.qemu.path for r in results if r.qemu} == {"fixture qemu-4.2.0-x86_64.xml",
                                                        "fixture qemu-4.2.0-aarch64.xml"}
    flagged = {(r.case, r.arch) for r in results if r.stage == "argv"
               and "vfio-irqchip-notifier-unplug-segv" in {b["id"] for b in r.details.get("known_bugs", [])}}
    assert {("teaming-q35-hostdev", "x86_64"), ("teaming-q35", "aarch64")} <= flagged
    assert all(r.verdict == "pass" for r in results if r.stage == "argv" and r.case in {"teaming-q35-hostdev"})


def test_caps_all_runs_every_stored_fixture(tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["run", "--stages", "argv", "--caps", "all", "--cases", "q35-minimal", "--cases", "virt-minimal",
          "-o", str(out)])
    seen = {r.qemu.path.removeprefix("fixture ") for r in read_results(out / "results.jsonl") if r.qemu}
    assert seen == {p.name for p in fixture_files()}


def test_live_stages_on_a_fixture_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--stages", "parse,boot", "--caps", "4.2.0:x86_64", "-o", str(tmp_path / "out")])
    assert rc != 0
    err = capsys.readouterr().err
    assert "--caps runs only the static stages; boot cannot run without a QEMU binary" in err and "--qemu PATH" in err
    assert not (tmp_path / "out").exists()
