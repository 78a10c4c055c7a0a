"""The static prediction on real builds: the host's 7.2 dumped and plugged for real, compared with itself and
with the fetched 10.0 (conformance/vmstate.py). A few seconds cold, each in its own cache folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conformance.builds import find_qemu
from conformance.caps.probe import probe_binary
from conformance.coverage import binary_key
from conformance.vmstate import (
    COMPATIBLE,
    build_dump,
    compare_entry,
    machine_properties,
    make_side,
    not_compared,
    predict,
)

pytestmark = [pytest.mark.live, pytest.mark.xdist_group("vmstate")]


@pytest.fixture(scope="module")
def qemu_10() -> Path:
    binary = find_qemu("10.0")
    if binary is None:
        pytest.skip("QEMU 10.0 is not fetched (qemu-conformance builds fetch 10.0)")
    return binary


def test_the_host_dump_is_cached_and_every_section_loads_into_itself(qemu_x86_64: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    dump = build_dump(qemu_x86_64, "x86_64", root=tmp_path)
    cold = time.monotonic() - started
    started = time.monotonic()
    assert build_dump(qemu_x86_64, "x86_64", root=tmp_path) == dump
    assert time.monotonic() - started < cold + 0.05 and (tmp_path / "vmstate" / "dumps").is_dir()
    assert dump["vmschkmachine"]["Name"].startswith("pc-q35-")
    assert len(dump) > 150 and "virtio-rng-device" in dump
    assert [t for t, e in dump.items() if t != "vmschkmachine" and compare_entry(t, e, dump)] == []


def test_virtio_rng_pci_vectors_read_from_the_device_follow_the_machine_type(qemu_x86_64: Path,
                                                                             tmp_path: Path) -> None:
    """The research file's measurement: class defaults say 4294967295, the device under pc-q35-7.1 reads 0
    (bad9c5a5166f's compat entry, in Debian's 7.2.22) and under pc-q35-7.2 reads 2."""
    key = binary_key(qemu_x86_64)
    old = machine_properties(qemu_x86_64, key, "pc-q35-7.1", ["virtio-rng-pci"], root=tmp_path)
    new = machine_properties(qemu_x86_64, key, "pc-q35-7.2", ["virtio-rng-pci"], root=tmp_path)
    assert old.devices["virtio-rng-pci"]["props"]["vectors"] == "0"
    assert new.devices["virtio-rng-pci"]["props"]["vectors"] == "2"
    assert "virtio-rng-device" in new.devices["virtio-rng-pci"]["children"]
    assert "ICH9-LPC" in (new.machine_devices or {}) and old.compat_props is None  # 7.2 refuses compat-props


def test_7_2_to_10_0_under_pc_q35_7_1_keeps_virtio_rng_pci(qemu_x86_64: Path, qemu_10: Path, tmp_path: Path) -> None:
    """Debian's 7.2.22 has the fix, so 7.2.22 and 10.0.2 agree on virtio-rng-pci under pc-q35-7.1 (0 vectors)."""
    a = make_side(qemu_x86_64, probe_binary(qemu_x86_64), root=tmp_path)
    b = make_side(qemu_10, probe_binary(qemu_10), root=tmp_path)
    argv = ["qemu-system-x86_64", "-device", '{"driver":"virtio-rng-pci","id":"rng0"}']
    devices = predict(a, b, "pc-q35-7.1", argv, argv)
    assert devices["virtio-rng-pci"] == COMPATIBLE
    assert set(devices) >= {"virtio-rng-pci", "ICH9-LPC", "mch"}
    back = predict(b, a, "pc-q35-7.1", argv, argv)
    assert back["virtio-rng-pci"] == COMPATIBLE
    # under pc-q35-6.1, 7.2's root ports have x-native-hotplug=false (ACPI hot-plug) and 10.0's the renamed,
    # inverted x-do-not-expose-native-hotplug-cap=true: the same behaviour (PROPERTY_RENAMES)
    ports = ["qemu-system-x86_64", "-device", '{"driver":"pcie-root-port","id":"pci.1","chassis":1}']
    assert predict(a, b, "pc-q35-6.1", ports, ports)["pcie-root-port"] == COMPATIBLE


def test_run_vmstate_on_two_builds_writes_one_result_per_pair(qemu_x86_64: Path, qemu_10: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --stages vmstate --qemu A --qemu B`: four ordered pairs (each build with itself), the machine type
    pinned as migrate pins it, a device map per result. 10.0 -> 7.2 names the i8259 'ltim' subsection
    (backward only) as conditional: the guest decides whether it is sent. A second run reads every verdict
    from the cache: no QEMU is started for it. Uses the suite's cache (the probes of the other live tests)."""
    import conformance.vmstate
    from conformance.results.records import read_results
    from conformance.runner import run_stages

    out = tmp_path / "out"
    assert run_stages(["vmstate"], [qemu_x86_64, qemu_10], ["balloon-rng"], out, lambda _m: None) == 0
    records = [r for r in read_results(out / "results.jsonl") if r.stage == "vmstate"]
    pairs = {(r.qemu.version, r.peer.version) for r in records if r.qemu and r.peer}
    assert len(records) == 4 and len(pairs) == 4
    for r in records:
        assert r.qemu and r.peer
        newest = "pc-q35-7.2" if "7.2" in (r.qemu.version[:3], r.peer.version[:3]) else "pc-q35-10.0"
        assert r.details["machine"] == newest and r.details["devices"]["virtio-rng-pci"] == COMPATIBLE
        assert r.verdict == "pass" and set(r.artifacts) in (set(), {"source-argv", "destination-argv"})
        backward = r.qemu.version.startswith("10.0") and r.peer.version.startswith("7.2")
        assert ("i8259/ltim" in r.details.get("conditional", {}).get("isa-i8259", "")) == backward
    same = [r for r in records if r.qemu and r.peer and r.qemu.version == r.peer.version]
    assert len(same) == 2 and all(r.verdict == "pass" and r.details["same_build"] for r in same)

    def no_qemu(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a cached prediction started QEMU")

    monkeypatch.setattr(conformance.vmstate, "paused", no_qemu)
    again = tmp_path / "again"
    assert run_stages(["vmstate"], [qemu_x86_64, qemu_10], ["balloon-rng"], again, lambda _m: None) == 0
    cached = [r for r in read_results(again / "results.jsonl") if r.stage == "vmstate"]
    assert [(r.verdict, r.details) for r in cached] == [(r.verdict, r.details) for r in records]


def test_a_machine_type_takes_what_no_compat_entry_tells_apart_from_the_newer_one(qemu_10: Path,
                                                                                 tmp_path: Path) -> None:
    """C1 on 10.0 (which lists its compat entries): pc-i440fx-7.0 differs from 7.1 by entries on
    arm-gicv3-common and nvme-ns only, so every device plugged here is taken from 7.1 without a QEMU, and
    reads what a QEMU under 7.0 reads; 7.1 differs from 7.2 by virtio-device and virtio-rng-pci entries, so
    virtio-rng-pci is read again (vectors 0 under 7.1, bad9c5a5166f) while e1000 is taken. pc-i440fx-2.4's
    fw_cfg entry (no DMA) touches a device the machine adds: everything is read again, and vmgenid refuses."""
    import conformance.vmstate

    types = ["virtio-rng-pci", "e1000", "virtio-net-pci", "vmgenid"]
    side = make_side(qemu_10, probe_binary(qemu_10), root=tmp_path / "chain")
    for machine in ("pc-i440fx-10.0", "pc-i440fx-7.2", "pc-i440fx-7.1"):
        side.props(machine, types)
    seven_one = side.props("pc-i440fx-7.1", types).devices
    assert "same_as" not in seven_one["virtio-rng-pci"] and seven_one["virtio-rng-pci"]["props"]["vectors"] == "0"
    assert seven_one["e1000"]["same_as"] == "pc-i440fx-7.2"
    started = []
    paused = conformance.vmstate.paused

    def counted(*args: object, **kwargs: object) -> object:
        started.append(args[1])
        return paused(*args, **kwargs)  # type: ignore[arg-type]

    conformance.vmstate.paused = counted  # type: ignore[assignment]
    try:
        derived = side.props("pc-i440fx-7.0", types)
    finally:
        conformance.vmstate.paused = paused
    assert started == [] and {d.get("same_as") for d in derived.devices.values()} == {"pc-i440fx-7.1", "pc-i440fx-7.2"}
    read = machine_properties(qemu_10, binary_key(qemu_10), "pc-i440fx-7.0", types, root=tmp_path / "read")
    assert read.machine_devices == derived.machine_devices and derived.compat_props == read.compat_props
    compared = lambda values: {k: v for k, v in values.items() if not not_compared(k)}  # noqa: E731
    for name in types:  # what the probe chose itself (addr, mac) aside: the same values
        mine, theirs = derived.devices[name], read.devices[name]
        assert compared(mine["props"]) == compared(theirs["props"]), name
        assert {c: compared(v) for c, v in mine["children"].items()} == {
            c: compared(v) for c, v in theirs["children"].items()}, name
    side.props("pc-i440fx-2.5", types)
    old = side.props("pc-i440fx-2.4", types).devices
    assert "DMA" in old["vmgenid"]["error"] and not any("same_as" in d for d in old.values())
