"""conformance/live/bisect.py without QEMU: the device graph, ddmin, the subset argv, the reason's tail."""

from __future__ import annotations

from pathlib import Path

from conformance.live.adapt import LiveArgv
from conformance.live.bisect import Bisection, closure, ddmin, device_graph, keep_devices, pinned, signature, summary
from conformance.results.records import StageResult

ARGV = ["qemu", "-serial", "chardev:charserial0",
        "-device", '{"driver":"pcie-root-port","id":"pci.1","bus":"pcie.0","multifunction":true,"addr":"0x1"}',
        "-device", '{"driver":"pcie-root-port","id":"pci.2","bus":"pcie.0","addr":"0x1.0x1"}',
        "-device", '{"driver":"qemu-xhci","id":"usb","bus":"pci.1","addr":"0x0"}',
        "-device", '{"driver":"usb-kbd","id":"input0","bus":"usb.0","port":"1"}',
        "-device", "virtio-rng-pci,id=rng0,bus=pci.2,addr=0x0",
        "-device", "pci-serial,id=serial1,chardev=other"]


def test_graph_follows_buses_and_function_zero() -> None:
    graph = {d.key: d for d in device_graph(ARGV)}
    assert graph["input0"].needs == {"usb"}
    assert graph["usb"].needs == {"pci.1"}
    assert graph["pci.2"].needs == {"pci.1"}  # function 1 needs function 0 of slot 1
    assert closure({"rng0"}, list(graph.values())) == {"rng0", "pci.2", "pci.1"}
    assert pinned(ARGV) == set()  # the console is -serial, not a device


def test_keep_devices_leaves_out_the_rest(tmp_path: Path) -> None:
    live = keep_devices(LiveArgv(ARGV, tmp_path / "c.log"), frozenset({"rng0", "pci.2", "pci.1"}))
    assert [d for d in live.argv if "driver" in d or d.startswith("virtio")] == [ARGV[4], ARGV[6], ARGV[12]]
    assert "bisect: left out 3 devices (usb, input0, serial1)" in live.changes


def test_ddmin_finds_one_culprit_and_a_pair() -> None:
    units = [f"d{i}" for i in range(16)]
    assert ddmin(units, lambda s: "d11" in s) == (("d11",), True)
    found, done = ddmin(units, lambda s: "d2" in s and "d13" in s)
    assert sorted(found) == ["d13", "d2"] and done


def test_ddmin_stops_on_the_budget() -> None:
    calls = []

    def fails(subset: tuple[str, ...]) -> bool | None:
        calls.append(subset)
        return None if len(calls) > 2 else "d7" in subset

    found, done = ddmin([f"d{i}" for i in range(16)], fails)
    assert not done and "d7" in found and len(found) == 8


def test_bisection_names_the_device_and_dedupes_runs(tmp_path: Path) -> None:
    graph = device_graph(ARGV)
    runs: list[frozenset[str]] = []

    def run_stage(keep: frozenset[str], _where: Path) -> StageResult:
        runs.append(keep)
        verdict = "fail" if "input0" in keep else "pass"
        return StageResult(case="c", stage="boot", verdict=verdict, reason="scsi disks: guest sees 0 of 1")

    record = Bisection(graph, set(), run_stage, tmp_path, "scsi disks").run()
    assert record["culprits"] == ["usb-kbd"] and record["culprit_ids"] == ["input0"]
    assert record["on"] == ["qemu-xhci usb"]
    assert len(runs) == len(set(runs)) == record["runs"]
    assert summary(record).startswith("bisect: fails with usb-kbd input0 (on qemu-xhci usb) alone (")


def test_another_failure_is_not_the_same_failure(tmp_path: Path) -> None:
    def run_stage(keep: frozenset[str], _where: Path) -> StageResult:
        return StageResult(case="c", stage="boot", verdict="fail", reason="source failed its boot checks: x")

    record = Bisection(device_graph(ARGV), set(), run_stage, tmp_path,
                       signature("source: QEMU did not start (exit code 1): no")).run()
    assert record["runs"] >= 1 and record["culprits"] and not record.get("finding")
    assert signature("source: QEMU did not start (exit code 1): -device a: no") == \
        "source: QEMU did not start (exit code N): -device a: no"
    assert signature("scsi disks: guest sees 3 of 8 (sda, sdb)") == "scsi disks"
    assert signature("the source QEMU died (killed by SIGSEGV); destination exit code 1: x") == \
        signature("the source QEMU died (killed by SIGSEGV); source killed by SIGSEGV")
    assert signature("source failed its boot checks: PCI 1af4:1052") == "source failed its boot checks"


def test_the_catalogue_key(tmp_path: Path) -> None:
    import pytest

    from conformance.cases import load_catalogue
    from conformance.errors import CaseError

    case = '[cases.c]\ntemplate = "minimal.xml.j2"\ndescription = "d"\ntargets = ["aarch64:virt"]\nstages = ["parse"]\n'
    (tmp_path / "good.toml").write_text(case + "bisect = true\n")
    assert load_catalogue(tmp_path / "good.toml").get("c").bisect
    (tmp_path / "bad.toml").write_text(case + 'bisect = "yes"\n')
    with pytest.raises(CaseError, match="bisect = 'yes' is not a boolean"):
        load_catalogue(tmp_path / "bad.toml")
    catalogue = load_catalogue()  # the product catalogue: the device-rich virt cases bisect
    assert catalogue.get("virt-misc-rich").bisect and not catalogue.get("virt-minimal").bisect
