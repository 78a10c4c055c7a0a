"""caps diff: gains and losses between two fixtures on the facts both record; exit 1 on a loud loss."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.caps.diff import diff_caps, machine_runs, policy_removed
from conformance.caps.fixture import write_fixture
from conformance.caps.model import FACT_KINDS, NOT_LIBVIRT_FLAGS, Capabilities, QemuVersion
from conformance.caps.store import resolve


def test_4_1_to_4_2_gains_failover() -> None:
    result = diff_caps(resolve("4.1.0:x86_64"), resolve("4.2.0:x86_64"))
    gained_flags, lost_flags = result.sections["flags"]
    assert "virtio-net.failover" in gained_flags and "blockdev" in gained_flags
    assert "virtio-net-pci.failover" in result.sections["properties"][0]
    assert "pc-q35-4.2" in result.sections["machine types"][0]
    assert not lost_flags and not result.lost_anything


def test_loss_is_reported_and_exits_1(tmp_path: Path) -> None:
    a = resolve("7.2:x86_64")
    props = {t: dict(p) for t, p in a.type_properties.items()}
    del props["virtio-net-pci"]["failover"]
    b = dataclasses.replace(a, machines=tuple(m for m in a.machines if m.alias != "q35"), type_properties=props)
    result = diff_caps(a, b)
    assert result.lost_anything
    assert "virtio-net.failover" in result.sections["flags"][1]
    assert any(m.startswith("pc-q35-") for m in result.sections["machine types"][1])
    assert "LOST" in result.format()
    pa, pb = write_fixture(a, tmp_path / "a.xml"), write_fixture(b, tmp_path / "b.xml")
    cli = [sys.executable, "-m", "conformance.cli", "caps", "diff"]
    lost = subprocess.run([*cli, str(pa), str(pb)], capture_output=True, text=True, timeout=60)
    assert lost.returncode == 1 and "- virtio-net.failover" in lost.stdout
    gained = subprocess.run([*cli, str(pb), str(pa)], capture_output=True, text=True, timeout=60)
    assert gained.returncode == 0 and "+ virtio-net.failover" in gained.stdout


def test_caps_list_table() -> None:
    out = subprocess.run([sys.executable, "-m", "conformance.cli", "caps", "list"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["FIXTURE", "VERSION", "ARCH"]
    row = next(line for line in lines if line.startswith("qemu-4.1.0-x86_64.xml"))
    assert " no " in row  # no failover in 4.1.0
    assert any(line.startswith("qemu-4.2.0-aarch64.xml") and " yes " in line for line in lines)


# --- compare only what both fixtures record; loud and quiet losses (issue 7) ----------------------------------

def _without(caps: Capabilities, *, types: set[str] = frozenset(), props: set[str] = frozenset(),
             commands: set[str] = frozenset(), machines: set[str] = frozenset(), **changes) -> Capabilities:
    type_props = {t: {p: v for p, v in ps.items() if f"{t}.{p}" not in props} for t, ps in caps.type_properties.items()}
    return dataclasses.replace(
        caps, qom_types=caps.qom_types - types, type_properties=type_props, commands=caps.commands - commands,
        machines=tuple(m for m in caps.machines if m.name not in machines), **changes)


def test_probed_7_2_22_against_imported_7_2_0_compares_only_what_both_record() -> None:
    imported, probed = resolve("7.2.0:x86_64"), resolve("7.2.22:x86_64")
    assert imported.provenance.source == "libvirt-import" and probed.provenance.source == "probe"
    assert {"acpi-erst", "active-commit", "aio.io_uring"} <= imported.flags  # libvirt names them ...
    result = diff_caps(imported, probed, "7.2.0", "7.2.22")
    compared = {item for gained, lost in result.sections.values() for item in gained + lost}
    # ... and the probe derives them as libvirt does (flags.py): compared, and they agree
    assert not compared & {"acpi-erst", "active-commit", "aio.io_uring", "generic-pc-machine", "none"}
    assert {"acpi-erst", "aio.io_uring"} <= probed.flags
    # the one loss is real: Debian builds 7.2 without the Linux kernel crypto back-end (tests/static/test_caps_flags.py)
    assert result.loud_losses == {"devices and objects": ["cryptodev-backend-lkcf"],
                                  "flags": ["cryptodev-backend-lkcf"]}
    assert "cryptodev-backend-lkcf" not in probed.qom_types
    assert result.summary().startswith("since 7.2.0: ")
    lines = dict(line.split(": ", 1) for line in result.not_compared)
    assert "only libvirt derives" not in lines["flags"]  # the probe derives every flag libvirt's file says
    assert "restored as implied" in lines["flags"]  # inferred by the import, not in libvirt's file
    assert "libvirt does not list the 'none' machine" in lines["machine types"]
    for kind in ("devices and objects", "properties", "commands", "events", "migration capabilities"):
        assert "libvirt has no flag for" in lines[kind], kind
    assert "cpu models" not in lines  # both record every CPU model


def test_imported_10_0_0_against_probed_10_0_2() -> None:
    imported, probed = resolve("10.0.0:x86_64"), resolve("10.0.2:x86_64")
    result = diff_caps(imported, probed)
    assert result.summary().startswith("since 10.0.0: ")
    compared = {item for gained, lost in result.sections.values() for item in gained + lost}
    # import artefacts: a flag only libvirt derives, a type known only from a property flag, an implied flag
    assert not compared & {"acpi-erst", "generic-pc-machine", "sga"}
    assert not result.sections["machine types"][1] and not result.sections["commands"][1]
    # what it does report lost is real: this Debian 10.0.2 build was unpacked without the spice (qxl) and virgl
    # modules, and built without keyctl crypto and libblkio (tests/static/test_caps_flags.py explains each)
    assert {item for items in result.loud_losses.values() for item in items} <= {
        "qxl-vga", "qxl-vga.vgamem_mb", "qxl-vga.vram64_size_mb", "qxl", "qxl.vgamem_mb", "qxl.vram64_size_mb",
        "spice-gl", "spice-rendernode", "virtio-gpu-gl-pci", "virtio-vga-gl", "cryptodev-backend-lkcf",
        "virtio-blk-vhost-vdpa"}


@pytest.mark.parametrize(("change", "section", "item", "words"), [
    ({"types": {"e1000e"}}, "devices and objects", "e1000e", "1 device removed (e1000e)"),
    ({"props": {"virtio-net-pci.mq"}}, "properties", "virtio-net-pci.mq", "1 property removed (virtio-net-pci.mq)"),
    ({"commands": {"announce-self"}}, "commands", "announce-self", "1 QMP command removed (announce-self)"),
    ({"types": {"rng-builtin"}}, "flags", "rng-builtin", "1 capability flag removed (rng-builtin)"),
    ({"machines": {"pc-q35-7.0"}}, "machine types", "pc-q35-7.0",
     "1 machine type removed (pc-q35-7.0; not deprecated in 7.2.22)"),
])
def test_a_lost_device_property_command_flag_or_machine_is_loud(change: dict, section: str, item: str,
                                                                 words: str) -> None:
    a = resolve("7.2.22:x86_64")
    result = diff_caps(a, _without(a, **change))
    assert result.regressed and result.loud_losses[section] == [item]
    assert words in result.summary()
    assert result.summary().startswith("against 7.2.22: ")
    assert "LOST" in result.format()


def test_a_lost_netdev_blockdev_or_chardev_member_is_loud() -> None:
    """Probed 7.2.22 -> 10.0.2: the QAPI members behind -netdev/-blockdev/-chardev are compared (QEMU 10.0
    on Linux has no 'console' chardev backend; 10.0 adds -netdev stream's reconnect-ms)."""
    result = diff_caps(resolve("7.2.22:x86_64"), resolve("10.0.2:x86_64"))
    gained, lost = result.sections["option members"]
    assert "chardev:console" in lost and "netdev:stream.reconnect-ms" in gained
    assert "chardev:console" in result.loud_losses["option members"]
    assert "QAPI members removed (chardev:console" in result.summary()


def test_quiet_losses() -> None:
    a = resolve("7.2.22:x86_64")
    assert a.machine("pc-i440fx-1.4").deprecated and not a.machine("pc-i440fx-2.0").deprecated
    # marked deprecated by the older build
    result = diff_caps(a, _without(a, machines={"pc-i440fx-1.4"}))
    assert result.lost_anything and not result.regressed
    assert result.summary() == "against 7.2.22: 1 machine type removed (pc-i440fx-1.4, deprecated)"
    assert "  - pc-i440fx-1.4  (deprecated)" in result.format()
    # not marked, but older than QEMU's deprecation policy allows when the newer build came out
    old = {f"pc-i440fx-2.{n}" for n in range(4)}
    result = diff_caps(a, _without(a, machines=old, version=QemuVersion(10, 0, 0)))
    assert not result.regressed
    assert result.summary() == "since 7.2.22: 4 machine types removed (pc-i440fx-2.0 ... 2.3, deprecated)"
    # events, migration capabilities and CPU models are reported, never loud
    b = dataclasses.replace(a, events=a.events - {"RTC_CHANGE"}, cpu_models=a.cpu_models[1:],
                            migration_capabilities=a.migration_capabilities - {"xbzrle"})
    result = diff_caps(a, b)
    assert result.lost_anything and not result.regressed
    assert result.summary() == ("against 7.2.22: 1 QMP event removed, 1 migration capability removed, "
                                "1 CPU model removed")


def test_summary_line() -> None:
    a = resolve("10.0.2:x86_64")
    gone = {f"{family}-{v}" for family in ("pc-i440fx", "pc-q35") for v in [*(f"2.{n}" for n in range(4, 13)), "3.0"]}
    b = _without(a, machines=gone, version=QemuVersion(11, 1, 0))
    b = dataclasses.replace(b, qom_types=b.qom_types | {"new-dev-1", "new-dev-2"},
                            commands=b.commands | {"x-a", "x-b", "x-c"})
    result = diff_caps(a, b)
    assert result.summary() == ("since 10.0.2: 20 machine types removed (pc-i440fx-2.4 ... 3.0, pc-q35-2.4 ... 3.0, "
                                "deprecated), 2 devices added, 3 QMP commands added")
    assert not result.regressed and not result.not_compared
    assert diff_caps(a, a).summary() == "against 10.0.2: no change"
    assert diff_caps(resolve("7.2.0:x86_64"), a).summary().startswith("since 7.2.0: ")
    assert diff_caps(a, resolve("7.2.22:x86_64")).summary().startswith("back to 7.2.22 from 10.0.2: ")


def test_machine_runs_and_policy() -> None:
    universe = {"pc-i440fx-2.4", "pc-i440fx-2.5", "pc-i440fx-2.6", "pc-i440fx-3.0", "pc-q35-4.0", "pc-q35-4.0.1",
                "pc-q35-4.1", "isapc", "pc"}
    assert machine_runs({"pc-i440fx-2.4", "pc-i440fx-2.5", "pc-i440fx-2.6", "pc-i440fx-3.0"}, universe) == [
        "pc-i440fx-2.4 ... 3.0"]
    assert machine_runs({"pc-i440fx-2.4", "pc-i440fx-2.6", "isapc"}, universe) == [
        "pc-i440fx-2.4", "pc-i440fx-2.6", "isapc"]  # a gap breaks a run
    assert machine_runs({"pc-q35-4.0", "pc-q35-4.0.1"}, universe) == ["pc-q35-4.0, 4.0.1"]
    assert policy_removed("pc-i440fx-2.4", QemuVersion(10, 0, 0))
    assert policy_removed("virt-3.0", QemuVersion(11, 1, 0))
    assert not policy_removed("pc-q35-5.2", QemuVersion(10, 0, 0))
    assert not policy_removed("isapc", QemuVersion(11, 1, 0))


def test_what_each_fixture_records() -> None:
    probed, imported = resolve("7.2.22:x86_64"), resolve("7.2.0:x86_64")
    assert set(probed.records) == set(imported.records) == set(FACT_KINDS)
    for kind in ("machine types", "devices and objects", "commands", "events", "migration capabilities", "cpu models"):
        assert probed.records[kind].complete, kind
    assert probed.records["properties"].covers("virtio-net-pci.anything")
    assert not probed.records["properties"].covers("usb-tablet.anything")  # a type it lists no properties for
    assert probed.records["flags"].covers("acpi-erst")  # derived as libvirt derives it
    assert not probed.records["flags"].covers("sgx-epc")  # libvirt's, from host SGX facts the probe lacks
    assert not imported.records["machine types"].covers("none")
    assert imported.records["commands"].covers("query-vnc")  # behind libvirt's 'vnc' flag
    assert not imported.records["commands"].covers("announce-self")
    assert not imported.records["events"].covers("MIGRATION")  # libvirt's flag is 'migration-event', not ours
    assert not imported.records["flags"].covers("virtio-net.failover")  # restored as implied: inferred
    assert imported.records["flags"].covers("acpi-erst") and imported.records["cpu models"].complete


def test_not_libvirt_flags_match_libvirt_corpus(corpus: Path) -> None:
    from conformance.caps.flags import LIBVIRT_ALIASES, RULES
    from conformance.caps.libvirt_import import history

    libvirt_names = set()
    for path in (corpus / "caps").glob("*/caps_*.xml"):
        libvirt_names |= set(re.findall(r"<flag name='([^']+)'", path.read_text()))
    ours = {LIBVIRT_ALIASES.get(name, name) for name in libvirt_names | {r["flag"] for r in history()["retired"]}}
    assert not NOT_LIBVIRT_FLAGS & ours
    assert {r.flag for r in RULES} - ours <= NOT_LIBVIRT_FLAGS | {"machine.acpi"}  # machine.acpi: from <machine acpi=>


def test_caps_diff_command_prints_summary_then_what_was_not_compared() -> None:
    cli = [sys.executable, "-m", "conformance.cli", "caps", "diff"]
    out = subprocess.run([*cli, "7.2.0:x86_64", "7.2.22:x86_64"], capture_output=True, text=True, timeout=60)
    # Debian's 7.2 has no kernel-crypto back-end: the one real loss against libvirt's 7.2.0 (exit 1)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ("since 7.2.0: 1 device removed (cryptodev-backend-lkcf), "
                        "1 capability flag removed (cryptodev-backend-lkcf)")
    assert lines[1].startswith("not compared: ")
    assert any(line.startswith("not compared: flags: ") and "restored as implied" in line for line in lines)
    assert "--- 7.2.0:x86_64 (QEMU 7.2.0 x86_64, imported from libvirt 11.3.0)" in lines
    back = subprocess.run([*cli, "10.0.2:x86_64", "7.2.22:x86_64"], capture_output=True, text=True, timeout=60)
    assert back.returncode == 1 and back.stdout.startswith("back to 7.2.22 from 10.0.2: ")
    assert ("14 machine types removed (pc-i440fx-8.0 ... 10.0, pc-q35-8.0 ... 10.0; not deprecated in 10.0.2)"
            in back.stdout)


def test_qualify_fails_only_on_a_loud_loss_against_the_stored_fixture(tmp_path: Path, monkeypatch) -> None:
    from conformance import qualify
    from conformance.results.records import ResultWriter, read_results

    stored = resolve("7.2.22:x86_64")

    def run(probed: Capabilities) -> tuple[bool, list[str], dict[str, object]]:
        monkeypatch.setattr(qualify, "probe_binary", lambda binary: probed)
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        said: list[str] = []
        ok, _ = qualify.qualify_caps(Path("/usr/bin/qemu-system-x86_64"), out, ResultWriter(out), said.append)
        return ok, said, {r.case: r for r in read_results(out / "results.jsonl")}

    ok, said, records = run(stored)
    assert ok and "  against stored qemu-7.2.22-x86_64.xml: PASS (against 7.2.22: no change)" in said
    previous = records["caps-vs-previous"]
    assert previous.verdict == "pass" and previous.reason.startswith("since 7.2.0: ")
    assert "restored as implied" in previous.details["diff"] and previous.artifacts["diff"].startswith("caps/")
    # against the stored fixture nothing is lost; against libvirt's 7.2.0 only what Debian does not build
    assert not any("LOST" in line for line in said)
    assert [line for line in said if "lost" in line.lower()] == [
        "    WARNING: lost, a user of 7.2.0 would miss: device cryptodev-backend-lkcf, "
        "capability flag cryptodev-backend-lkcf"]

    ok, said, records = run(_without(stored, types={"rtl8139"}, commands={"announce-self"},
                                     machines={"pc-i440fx-1.4"}))
    assert not ok
    assert records["caps-vs-stored"].verdict == "fail"
    assert records["caps-vs-stored"].reason == (
        "against 7.2.22: 1 machine type removed (pc-i440fx-1.4, deprecated), 1 device removed (rtl8139), "
        "1 QMP command removed (announce-self), 1 capability flag removed (rtl8139)")
    assert ("    LOST, a user of 7.2.22 would miss: device rtl8139, QMP command announce-self, capability flag rtl8139"
            in said)
    # against the previous version a loss is a warning, not a failure (libvirt's 7.2.0 file has no announce-self)
    assert records["caps-vs-previous"].verdict == "pass"
    assert ("    WARNING: lost, a user of 7.2.0 would miss: device cryptodev-backend-lkcf, device rtl8139, "
            "capability flag cryptodev-backend-lkcf, capability flag rtl8139") in said

    ok, said, records = run(_without(stored, machines={"pc-i440fx-1.4"}))
    assert ok and records["caps-vs-stored"].verdict == "pass"
