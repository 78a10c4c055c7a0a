"""Driver-bound and per-controller disk checks (conformance/live/checks.py) on recorded guest reports."""

from __future__ import annotations

from conformance.live.checks import MachineFacts, check_drivers_bound, check_report
from conformance.live.guest_report import parse_report

REPORT = """\
GUEST-INIT start version=1-x
BOOT-OK uptime=1.0
SYS kernel=6.1.0 cpus=0 mem=223608
PCI 0000:00:03.0 1000:0012 class=010000 drv=sym53c8xx vdrv=-
PCI 0000:02:01.0 1000:0054 class=010000 drv=- vdrv=-
PCI 0000:02:06.0 1af4:1004 class=010000 drv=virtio-pci vdrv=virtio_scsi
PCI 0000:02:07.0 1af4:1001 class=010000 drv=virtio-pci vdrv=-
BLK sda size=131072 dev=0000:02:06.0 drv=sd hba=virtio_scsi ro=0 rm=0
BLK sdb size=131072 dev=0000:00:03.0 drv=sd hba=sym53c8xx ro=0 rm=0
CON ttyS0 drv=serial
END-OF-BOOT-REPORT
"""
DEVICES = [
    {"driver": "lsi53c895a", "id": "hba-lsi"},
    {"driver": "scsi-hd", "id": "disk-lsi", "bus": "hba-lsi.0"},
    {"driver": "mptsas1068", "id": "scsi0", "bus": "pci.5", "addr": "0x1"},
    {"driver": "scsi-hd", "id": "scsi0-0-0-0", "bus": "scsi0.0"},
    {"driver": "virtio-scsi-pci-transitional", "id": "scsi1"},
    {"driver": "scsi-hd", "id": "scsi1-0-0-0", "bus": "scsi1.0"},
    {"driver": "virtio-blk-pci-transitional", "id": "virtio-disk0"},
]
QMP_PCI = [
    {"bus": 0, "slot": 3, "function": 0, "qdev_id": "hba-lsi"},
    {"bus": 2, "slot": 1, "function": 0, "qdev_id": "scsi0"},
    {"bus": 2, "slot": 6, "function": 0, "qdev_id": "scsi1"},
    {"bus": 2, "slot": 7, "function": 0, "qdev_id": "virtio-disk0"},
]


def test_a_device_the_guest_can_drive_but_did_not_bind_is_named() -> None:
    report = parse_report(REPORT.splitlines())
    result = check_drivers_bound(report, DEVICES, QMP_PCI, lambda _m: True)
    assert result.failures == [
        "scsi0 (mptsas1068) at 0000:02:01.0: no driver bound (the guest has mptsas)",
        "virtio-disk0 (virtio-blk-pci-transitional) at 0000:02:07.0: no driver bound (the guest has virtio_blk)",
    ]
    assert "hba-lsi (lsi53c895a) bound to sym53c8xx" in result.checked
    assert "scsi1 (virtio-scsi-pci-transitional) bound to virtio_scsi" in result.checked


def test_a_driver_the_guest_kernel_lacks_is_a_note_naming_the_device() -> None:
    report = parse_report(REPORT.splitlines())
    result = check_drivers_bound(report, DEVICES, QMP_PCI, lambda m: m not in ("mptsas", "virtio_blk"))
    assert result.ok
    assert "the guest kernel has no mptsas: scsi0 (mptsas1068) not driven" in result.notes


def test_a_device_query_pci_does_not_list_fails() -> None:
    report = parse_report(REPORT.splitlines())
    result = check_drivers_bound(report, DEVICES[:2], [], lambda _m: True)
    assert result.failures == ["hba-lsi (lsi53c895a): QMP query-pci does not list it"]


def test_disks_count_per_controller_driver() -> None:
    report = parse_report(REPORT.splitlines())
    facts = MachineFacts("pc-q35-7.2", cpus=None, memory_mib=None)
    # the guest drives lsi and virtio-scsi but not mptsas: two SCSI disks expected, both seen
    result = check_report(report, DEVICES, lambda m: m != "mptsas", facts)
    assert "scsi disks x2" in result.checked
    assert any("mptsas" in note and "scsi0-0-0-0" in note for note in result.notes)
    # a guest that drives mptsas too must show three
    result = check_report(report, DEVICES, lambda m: m != "virtio_blk", facts)
    assert "scsi disks: guest sees 2 of 3 (sda, sdb)" in result.failures


READS = """\
GUEST-INIT start version=1-x
BOOT-OK uptime=1.0
SYS kernel=6.1.0 cpus=0 mem=223608
PCI 0000:00:03.0 1000:0012 class=010000 drv=sym53c8xx vdrv=-
PCI 0000:00:04.0 8086:2415 class=040100 drv=snd_intel8x0 vdrv=-
PCI 0000:00:05.0 1274:5000 class=040100 drv=snd_ens1370 vdrv=-
PCI 0000:00:06.0 8086:2668 class=040300 drv=snd_hda_intel vdrv=-
BLK sda size=131072 dev=0000:00:03.0 drv=sd hba=sym53c8xx ro=0 rm=0 rd=ok
BLK sdb size=131072 dev=0000:00:03.0 drv=sd hba=sym53c8xx ro=0 rm=0 rd=err
BLK sdc size=131072 dev=0000:00:03.0 drv=sd hba=sym53c8xx ro=0 rm=0 rd=hung
BLK sr0 size=0 dev=0000:00:03.0 drv=sr hba=sym53c8xx ro=0 rm=1 rd=-
SND controlC0 dev=0000:00:04.0 drv=snd_intel8x0 open=ok
SND pcmC0D0p dev=0000:00:04.0 drv=snd_intel8x0 open=ok
SND controlC1 dev=0000:00:05.0 drv=snd_ens1370 open=ok
SND pcmC1D0p dev=0000:00:05.0 drv=snd_ens1370 open=err
END-OF-BOOT-REPORT
"""
SOUNDS = [{"driver": "AC97", "id": "sound0"}, {"driver": "ES1370", "id": "sound1"},
          {"driver": "intel-hda", "id": "sound2"}]
SOUND_PCI = [{"bus": 0, "slot": 4, "function": 0, "qdev_id": "sound0"},
             {"bus": 0, "slot": 5, "function": 0, "qdev_id": "sound1"},
             {"bus": 0, "slot": 6, "function": 0, "qdev_id": "sound2"}]


def test_the_guest_reports_each_disk_read_and_sound_node_opened() -> None:
    report = parse_report(READS.splitlines())
    assert [(d.name, d.read) for d in report.disks] == [("sda", "ok"), ("sdb", "err"), ("sdc", "hung"), ("sr0", None)]
    assert [(n.name, n.pci, n.driver, n.opened) for n in report.sounds][-1] == (
        "pcmC1D0p", "0000:00:05.0", "snd_ens1370", False)


def test_a_disk_whose_first_block_could_not_be_read_fails() -> None:
    report = parse_report(READS.splitlines())
    result = check_report(report, [], lambda _m: True, MachineFacts())
    assert [f for f in result.failures if f.startswith("disk ")] == [
        "disk sdb (sd on sym53c8xx at 0000:00:03.0): reading its first block failed",
        "disk sdc (sd on sym53c8xx at 0000:00:03.0): reading its first block did not finish in time",
    ]
    assert "first block read: sda" in result.checked


def test_a_sound_card_must_have_nodes_the_guest_opened() -> None:
    report = parse_report(READS.splitlines())
    result = check_drivers_bound(report, SOUNDS, SOUND_PCI, lambda _m: True)
    assert "sound0 (AC97) at 0000:00:04.0: opened controlC0, pcmC0D0p" in result.checked
    assert result.failures == [
        "sound1 (ES1370) at 0000:00:05.0: the guest could not open pcmC1D0p",
        "sound2 (intel-hda) at 0000:00:06.0: bound, but the guest has no sound card on it",
    ]
