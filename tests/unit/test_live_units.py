"""Units of the live stage that need no QEMU: argv adaptation and the report checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.argv.options import devices, format_props, parse_props
from conformance.live.adapt import NeedsHardware, adapt_for_live
from conformance.live.checks import MachineFacts, check_report
from conformance.live.guest_report import parse_report

STATIC = [
    "/usr/bin/qemu-system-x86_64", "-machine", "pc-q35-7.2,usb=off", "-accel", "tcg", "-m", "size=262144k",
    "-smp", "1,sockets=1,cores=1,threads=1", "-nodefaults",
    "-chardev", "pty,id=charserial0",
    "-device", '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
    "-chardev", "socket,id=charchannel0,fd=1729,server=on,wait=off",
    "-netdev", '{"type":"user","id":"hostua-backup0"}',
    "-device", '{"driver":"virtio-net-pci","failover":true,"netdev":"hostua-backup0","id":"ua-backup0",'
               '"mac":"52:54:00:fa:11:01","bus":"pci.1","addr":"0x0"}',
    "-device", '{"driver":"vfio-pci","host":"0000:03:07.1","id":"hostdev0","failover_pair_id":"ua-backup0",'
               '"bus":"pci.2","addr":"0x0"}',
]


def test_props_both_syntaxes() -> None:
    assert parse_props("virtio-net-pci,mac=52:54:00:00:00:01,romfile=,x=a,,b") == {
        "driver": "virtio-net-pci", "mac": "52:54:00:00:00:01", "romfile": "", "x": "a,b"}
    assert parse_props('{"driver":"e1000","id":"n"}') == {"driver": "e1000", "id": "n"}
    props = {"driver": "vmxnet3", "failover_pair_id": "ua", "x": "a,b"}
    assert parse_props(format_props(props, "comma")) == props
    assert json.loads(format_props(props, "{")) == props


def test_adapt_substitutes_records_and_keeps_the_rest(tmp_path: Path) -> None:
    live = adapt_for_live(STATIC, binary="/opt/qemu", accel="kvm", vm_dir=tmp_path,
                          boot_args=["-kernel", "K", "-initrd", "I", "-append", "console=ttyS0"],
                          substitutes={"0000:03:07.1": "vmxnet3"}, macs={"0000:03:07.1": "52:54:00:fa:11:01"})
    argv = live.argv
    assert argv[0] == "/opt/qemu" and argv[argv.index("-accel") + 1] == "kvm"
    devs = {d["id"]: d for d in devices(argv) if "id" in d}
    primary = devs["hostdev0"]
    assert primary["driver"] == "vmxnet3" and primary["failover_pair_id"] == "ua-backup0"
    assert primary["mac"] == "52:54:00:fa:11:01" and primary["bus"] == "pci.2" and primary["romfile"] == ""
    assert devs["ua-backup0"]["romfile"] == "" and devs["ua-backup0"]["failover"] is True
    assert f"file,id=charserial0,path={tmp_path}/charserial0.log" in argv
    assert "socket,id=charchannel0,path=charchannel0.sock,server=on,wait=off" in argv
    assert live.console_log == tmp_path / "charserial0.log"
    assert live.substitutions == {"hostdev0": "0000:03:07.1 -> vmxnet3"}
    assert any("hostdev 0000:03:07.1" in c for c in live.changes) and any("-accel" in c for c in live.changes)
    assert argv[-2:] == ["-S", "-no-reboot"] and "-kernel" in argv


def test_adapt_without_substitute_needs_the_hardware(tmp_path: Path) -> None:
    with pytest.raises(NeedsHardware, match=r"needs PCI device 0000:03:07\.1"):
        adapt_for_live(STATIC, binary="q", accel="tcg", vm_dir=tmp_path, boot_args=[])


def test_adapt_adds_a_console_when_there_is_none(tmp_path: Path) -> None:
    live = adapt_for_live(["/usr/bin/qemu-system-aarch64", "-machine", "virt"], binary="q", accel="tcg",
                          vm_dir=tmp_path, boot_args=[])
    assert live.console_log == tmp_path / "console.log"
    assert "chardev:conformance-console" in live.argv


REPORT = """\
GUEST-INIT start version=1-x
BOOT-OK uptime=1.44
SYS kernel=6.1.0 cpus=0 mem=223632
PCI 0000:01:00.0 1af4:1041 class=020000 drv=virtio-pci vdrv=virtio_net
PCI 0000:02:00.0 15ad:07b0 class=020000 drv=vmxnet3 vdrv=-
NET eth0 addr=52:54:00:fa:11:01 master=- dev=0000:01:00.0 drv=net_failover ppn=- role=failover-master state=down
NET eth1 addr=52:54:00:fa:11:01 master=eth0 dev=0000:01:00.0 drv=virtio_net ppn=sby role=standby state=unknown
NET eth2 addr=52:54:00:fa:11:01 master=eth0 dev=0000:02:00.0 drv=vmxnet3 ppn=- role=primary state=down
CON ttyS0 drv=serial
END-OF-BOOT-REPORT
"""
DEVICES = [
    {"driver": "virtio-net-pci", "failover": True, "id": "ua-backup0", "mac": "52:54:00:fa:11:01"},
    {"driver": "vmxnet3", "failover_pair_id": "ua-backup0", "id": "hostdev0", "mac": "52:54:00:fa:11:01"},
    {"driver": "isa-serial", "id": "serial0", "index": 0},
]
FACTS = MachineFacts("pc-q35-7.2", cpus=1, memory_mib=256)


def test_checks_pass_on_a_good_failover_report() -> None:
    result = check_report(parse_report(REPORT.splitlines()), DEVICES, lambda _m: True, FACTS)
    assert result.ok, result.failures
    assert any(c.startswith("failover ua-backup0 + hostdev0: master eth0") for c in result.checked)


def test_checks_fail_without_the_enslaved_primary() -> None:
    broken = REPORT.replace("master=eth0 dev=0000:02:00.0", "master=- dev=0000:02:00.0")
    result = check_report(parse_report(broken.splitlines()), DEVICES, lambda _m: True, FACTS)
    assert any("primary (vmxnet3) is not enslaved" in f for f in result.failures)


def test_checks_fail_on_missing_pci_wrong_cpus_and_console() -> None:
    report = parse_report(REPORT.replace("PCI 0000:02:00.0 15ad:07b0", "PCI 0000:02:00.0 15ad:0000")
                          .replace("CON ttyS0 drv=serial\n", "").splitlines())
    result = check_report(report, DEVICES, lambda _m: True, MachineFacts("pc-q35-7.2", cpus=2, memory_mib=256))
    text = "\n".join(result.failures)
    assert "PCI 15ad:07b0: guest sees 0 of 1" in text
    assert "vCPUs: guest has 1 online, -smp gave 2" in text
    assert "serial ttyS0: not in the guest" in text


def test_missing_driver_is_a_note_not_a_pass_of_nothing() -> None:
    devs = [{"driver": "e1000e", "id": "net0", "mac": "52:54:00:00:00:09"}]
    report = parse_report(REPORT.splitlines())
    result = check_report(report, devs, lambda m: m != "e1000e", FACTS)
    assert any("no e1000e driver" in n for n in result.notes)
    assert any("PCI 8086:10d3" in f for f in result.failures), "the PCI function must still be there"


RELEASED = """\
REPORT 1 uptime=4.89
SYS kernel=6.1.0 cpus=0 mem=223632
PCI 0000:01:00.0 1af4:1041 class=020000 drv=virtio-pci vdrv=virtio_net
NET eth0 addr=52:54:00:fa:11:01 master=- dev=0000:01:00.0 drv=net_failover ppn=- role=failover-master state=up
NET eth1 addr=52:54:00:fa:11:01 master=eth0 dev=0000:01:00.0 drv=virtio_net ppn=sby role=standby state=up
CON ttyS0 drv=serial
END-OF-REPORT 1
"""


def _source_with_console(tmp_path: Path, text: str) -> object:
    """A stand-in source VM: its console file and the reader the migrate stage polls."""
    from types import SimpleNamespace

    from conformance.live.guest_report import ReportReader

    console = tmp_path / "console.log"
    console.write_text(text)
    reader = ReportReader()
    return SimpleNamespace(console=console, reader=reader, report=reader.report)


def test_failover_without_wait_unplug_takes_the_guests_word(tmp_path: Path) -> None:
    """QEMU skips wait-unplug when the guest released the primary before setup ended; the primary stays
    realized on the source (for a re-plug), so the evidence is the guest's report on the source console."""
    from conformance.live.migrate import Migration, _note_release_without_wait

    pairs = [({"id": "ua-backup0", "mac": "52:54:00:fa:11:01"}, {"id": "hostdev0"})]
    mig = Migration()
    source = _source_with_console(tmp_path, REPORT + RELEASED)
    _note_release_without_wait(source, pairs, "hostdev0", mig)  # type: ignore[arg-type]
    assert "released before setup ended" in mig.checks[-1], mig.checks
    late = Migration()
    _note_release_without_wait(_source_with_console(tmp_path, REPORT), pairs, "hostdev0", late)  # type: ignore[arg-type]
    assert "only after the switch" in late.checks[-1], late.checks


def test_a_passed_stage_where_a_known_bug_should_show_is_not_reproduced() -> None:
    """5.2's native-hotplug bug should stop a failover migration: if that passed, the package may carry a
    fix, so the verdict says not-reproduced and names the package string."""
    from types import SimpleNamespace

    from conformance.caps.model import QemuVersion
    from conformance.live.boot import explain

    argv = ["qemu", "-machine", "pc-q35-5.2", "-device", "virtio-net-pci,failover=on,id=n",
            "-device", "vmxnet3,id=hostdev0,failover_pair_id=n"]
    vm = SimpleNamespace(process=SimpleNamespace(argv=argv))
    caps = SimpleNamespace(version=QemuVersion(5, 2, 0), package="Debian 1:5.2+dfsg-11+deb11u5", arch="x86_64")
    details: dict[str, object] = {}
    verdict, reason = explain("pass", "migrated", [vm], caps, "migrate", details, side="source")  # type: ignore[arg-type]
    assert verdict == "not-reproduced", reason
    assert "pcie-native-hotplug-plug-read-as-unplug" in reason and "Debian 1:5.2+dfsg-11+deb11u5" in reason
    assert [b["id"] for b in details["not_reproduced"]] == ["pcie-native-hotplug-plug-read-as-unplug"]
    later = SimpleNamespace(version=QemuVersion(7, 2, 22), package="Debian", arch="x86_64")
    assert explain("pass", "migrated", [vm], later, "migrate", {}, side="source")[0] == "pass"  # type: ignore[arg-type]


def test_migrate_skip_keeps_a_case_out_on_purpose_and_across_arches() -> None:
    """A case the catalogue keeps out (live.migrate = false) says why; two arches never pair."""
    import dataclasses
    from types import SimpleNamespace

    from conformance.cases import load_catalogue
    from conformance.live.migrate import migrate_skip

    case = load_catalogue().get("q35-minimal")
    x86 = SimpleNamespace(caps=SimpleNamespace(arch="x86_64"))
    arm = SimpleNamespace(caps=SimpleNamespace(arch="aarch64"))
    kept = dataclasses.replace(case, live={"migrate": False, "migrate_why": "a guest panic under research"})
    assert migrate_skip(kept, x86, x86) == "kept out of migration on purpose: a guest panic under research"  # type: ignore[arg-type]
    assert migrate_skip(case, x86, arm) == "x86_64 cannot migrate to aarch64"  # type: ignore[arg-type]


def test_a_rerun_into_the_same_output_replaces_a_migrations_folders(tmp_path: Path) -> None:
    """A second `run -o SAME` once stopped every migration with FileExistsError on the destination folder."""
    from types import SimpleNamespace

    from conformance.cases import load_catalogue
    from conformance.live.migrate import pair_folders

    case = load_catalogue().get("q35-minimal")
    side = SimpleNamespace(binary=Path("/usr/bin/qemu-system-x86_64"),
                           caps=SimpleNamespace(version="7.2.22", arch="x86_64"))
    first = pair_folders(tmp_path, case, side, side)  # type: ignore[arg-type]
    (first[1] / "console.log").write_text("old run\n")
    again = pair_folders(tmp_path, case, side, side)  # type: ignore[arg-type]
    assert again == first and [p.name for p in again] == ["source", "destination"]
    assert all(p.is_dir() and not any(p.iterdir()) for p in again)


@pytest.mark.parametrize(("given", "live"), [
    ("unix:/very/long/folder/vnc.sock,audiodev=audio1", "unix:vnc.sock,audiodev=audio1"),
    ("vnc=unix:/very/long/folder/vnc.sock,audiodev=audio1", "vnc=unix:vnc.sock,audiodev=audio1"),
    ("vnc=unix:/we ird,, =dir/vnc.sock", "vnc=unix:vnc.sock"),
    ("127.0.0.1:0", "127.0.0.1:0"),
])
def test_a_vnc_socket_is_made_relative_to_the_vm_folder(given: str, live: str) -> None:
    """UNIX socket paths are limited to 107 bytes: the live argv names the socket relative to the VM
    folder QEMU runs in, whichever form the static argv used."""
    from conformance.live.adapt import _relative_vnc

    assert _relative_vnc(given, Path("/very/long/folder")) == live


def test_a_qemu_that_did_not_start_is_still_explained_by_a_known_bug() -> None:
    """No VM, only the reason with QEMU's last stderr line: the 5.2 aarch64 boots stayed plain fails before."""
    from types import SimpleNamespace

    from conformance.caps.model import QemuVersion
    from conformance.live.boot import explain

    caps = SimpleNamespace(version=QemuVersion(5, 2, 0), arch="aarch64", package="")
    reason = ("QEMU did not start (exit code 1): qemu-system-aarch64: -device pcie-root-port,port=8: "
              "MSI-X is not supported by interrupt controller")
    argv = ["qemu-system-aarch64", "-machine", "virt-5.2,gic-version=3", "-device", "pcie-root-port,port=8,id=pci.1"]
    details: dict = {}
    verdict, why = explain("fail", reason, [], caps, "boot", details, accel="tcg", argv=argv)  # type: ignore[arg-type]
    assert verdict == "known-bug" and details["known_bug"]["id"] == "arm-tcg-gicv3-no-its", why
    assert explain("fail", "QEMU did not start (exit code 1): no such file", [], caps, "boot", {},  # type: ignore[arg-type]
                   accel="tcg", argv=argv)[0] == "fail"
    # the bug concerns the machine type and the root port: without the argv QEMU was given it cannot apply
    assert explain("fail", reason, [], caps, "boot", {}, accel="tcg")[0] == "fail"  # type: ignore[arg-type]
    assert explain("fail", reason, [], caps, "boot", {}, accel="kvm", argv=argv)[0] == "fail"  # type: ignore[arg-type]
