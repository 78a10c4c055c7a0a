"""What a booted guest must show, derived from the live argv, and the comparison with its report.

Expectations come from the ``-device`` options QEMU was given (so they hold for
whatever the domain asked for), checked against the guest's own report:

- every PCI device with a known vendor:device id appears on the guest's PCI bus;
- every NIC appears with its MAC and driver when the guest kernel has that driver (else only
  its PCI function is checked, and a note says so);
- disks appear as block devices of the right kind (virtio-blk vdX, SCSI/SATA sdX, CD-ROM srX)
  when the guest can drive their controller, and the guest read the first block of each it sees;
- every device whose Linux driver the guest kernel has (:data:`DRIVER_MODULES`) is bound by it, found
  by its QOM id at the PCI address QMP ``query-pci`` gives (:func:`check_drivers_bound`); a device
  whose driver the kernel lacks is a note naming the module; a sound card bound by its driver has ALSA
  nodes, and the guest opened each;
- serial ports appear as consoles, virtio-serial ports with their names;
- a failover pair (failover=on + failover_pair_id) forms a failover master with the standby
  (ppn=sby) and the primary enslaved.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from conformance.live.guest_report import GuestReport

# QEMU device -> (PCI vendor:device as the guest sees it (virtio: modern/transitional id), guest module)
PCI_DEVICES: dict[str, tuple[str | None, str | None]] = {
    "virtio-net-pci": ("1af4:1000", "virtio_net"),
    "virtio-blk-pci": ("1af4:1001", "virtio_blk"),
    "virtio-balloon-pci": ("1af4:1002", "virtio_balloon"),
    "virtio-serial-pci": ("1af4:1003", "virtio_console"),
    "virtio-scsi-pci": ("1af4:1004", "virtio_scsi"),
    "virtio-rng-pci": ("1af4:1005", "virtio_rng"),
    "virtio-gpu-pci": ("1af4:1050", None),
    "virtio-vga": ("1af4:1050", None),
    "virtio-keyboard-pci": ("1af4:1052", None),
    "virtio-mouse-pci": ("1af4:1052", None),
    "virtio-tablet-pci": ("1af4:1052", None),
    "e1000": ("8086:100e", "e1000"),
    "e1000e": ("8086:10d3", "e1000e"),
    "rtl8139": ("10ec:8139", "8139cp"),
    "vmxnet3": ("15ad:07b0", "vmxnet3"),
    "pcie-root-port": ("1b36:000c", None),
    "qemu-xhci": ("1b36:000d", None),
    "nec-usb-xhci": ("1033:0194", None),
    "ich9-usb-ehci1": ("8086:293a", None),
    "ich9-usb-uhci1": ("8086:2934", None),
    "piix3-usb-uhci": ("8086:7020", None),
    "VGA": ("1234:1111", None),
    "bochs-display": ("1234:1111", None),
    "cirrus-vga": ("1013:00b8", None),
    "qxl-vga": ("1b36:0100", None),
    "i6300esb": ("8086:25ab", None),
    "pci-bridge": ("1b36:0001", None),
    "ich9-ahci": ("8086:2922", "ahci"),
}
# transitional virtio devices show 1af4:10xx (legacy id) or 1af4:1040+N (modern-only)
_VIRTIO_MODERN = {"1000": "1041", "1001": "1042", "1002": "1045", "1003": "1043", "1004": "1048", "1005": "1044"}

# QEMU device -> the Linux module that drives it (virtio: the virtio driver; the guest's PCI line shows it
# as vdrv=). The guest kernel may lack it (Debian's cloud kernel has few): then it is a note, not a failure.
_VIRTIO_MODULES = {"net": "virtio_net", "blk": "virtio_blk", "scsi": "virtio_scsi", "serial": "virtio_console",
                   "rng": "virtio_rng", "balloon": "virtio_balloon", "9p": "9pnet_virtio", "gpu": "virtio_gpu",
                   "vga": "virtio_gpu", "keyboard": "virtio_input", "mouse": "virtio_input",
                   "tablet": "virtio_input", "iommu": "virtio_iommu", "mem": "virtio_mem",
                   "crypto": "virtio_crypto"}
DRIVER_MODULES: dict[str, str] = {
    **{f"virtio-{kind}-pci{suffix}": module for kind, module in _VIRTIO_MODULES.items()
       for suffix in ("", "-transitional", "-non-transitional")},
    "virtio-vga": "virtio_gpu",
    "lsi53c895a": "sym53c8xx", "lsi53c810": "sym53c8xx", "mptsas1068": "mptsas", "megasas": "megaraid_sas",
    "megasas-gen2": "megaraid_sas", "pvscsi": "vmw_pvscsi", "am53c974": "am53c974", "dc390": "am53c974",
    "ich9-ahci": "ahci", "sdhci-pci": "sdhci_pci",
    "e1000": "e1000", "e1000-82544gc": "e1000", "e1000-82545em": "e1000", "e1000e": "e1000e",
    "rtl8139": "8139cp", "ne2k_pci": "ne2k_pci", "pcnet": "pcnet32", "tulip": "tulip", "vmxnet3": "vmxnet3",
    **{name: "uhci_hcd" for name in ("piix3-usb-uhci", "piix4-usb-uhci", *(f"ich9-usb-uhci{i}" for i in range(1, 7)))},
    "usb-ehci": "ehci_pci", "ich9-usb-ehci1": "ehci_pci", "ich9-usb-ehci2": "ehci_pci", "pci-ohci": "ohci_pci",
    "qemu-xhci": "xhci_pci", "nec-usb-xhci": "xhci_pci",
    "AC97": "snd_intel8x0", "ES1370": "snd_ens1370", "intel-hda": "snd_hda_intel", "ich9-intel-hda": "snd_hda_intel",
    "i6300esb": "i6300esb", "pvpanic-pci": "pvpanic_pci", "bochs-display": "bochs", "cirrus-vga": "cirrus",
    "qxl-vga": "qxl", "qxl": "qxl", "vmware-svga": "vmwgfx", "tpci200": "tpci200", "kvaser_pci": "kvaser_pci",
    "ctucan_pci": "ctucan_pci",
}

NIC_MODULES = {"virtio-net-pci": "virtio_net", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "8139cp",
               "vmxnet3": "vmxnet3", "virtio-net-device": "virtio_net"}


@dataclass
class CheckResult:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _pci_ids(report: GuestReport) -> Counter[str]:
    ids: Counter[str] = Counter()
    for dev in report.pci:
        ids[dev.id] += 1
    return ids


def _id_matches(wanted: str, ids: Counter[str]) -> str | None:
    vendor, device = wanted.split(":")
    for candidate in (wanted, f"{vendor}:{_VIRTIO_MODERN.get(device, device)}"):
        if ids[candidate] > 0:
            return candidate
    return None


def failover_team_enslaved(report: GuestReport, mac: str, *, primary_pci_listed: bool = False) -> bool:
    """The guest enslaved both the standby and the primary of the failover team with this MAC. With
    ``primary_pci_listed``, the report must also list the primary's PCI function (the guest lists PCI
    before NICs: a report taken during the hot-plug can have the NIC only)."""
    team = [n for n in report.nets if (n.mac or "").lower() == mac.lower() and n.master]
    if not {"standby", "primary"} <= {n.role for n in team}:
        return False
    return not primary_pci_listed or {n.pci for n in team if n.role == "primary"} <= {p.addr for p in report.pci}


def failover_pairs(devices: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(standby, primary) device pairs: failover=on and the device naming it in failover_pair_id."""
    standbys = {d.get("id"): d for d in devices if d.get("failover") in (True, "on")}
    return [(standbys[d["failover_pair_id"]], d) for d in devices
            if d.get("failover_pair_id") in standbys]


@dataclass(frozen=True)
class MachineFacts:
    """What the argv says beyond -device: machine type, vCPUs, memory, serial ports given by -serial."""

    machine: str = ""
    cpus: int | None = None
    memory_mib: int | None = None
    serial_options: int = 0

    @classmethod
    def from_argv(cls, argv: list[str]) -> MachineFacts:
        from conformance.argv.options import options

        machine, cpus, mem, serials = "", None, None, 0
        for _, opt, value in options(argv):
            if opt == "-machine" and value:
                machine = value.split(",")[0]
            elif opt == "-smp" and value:
                cpus = int(value.split(",")[0])
            elif opt == "-m" and value:
                mem = _mib(value)
            elif opt == "-serial":
                serials += 1
        return cls(machine, cpus, mem, serials)

    @property
    def sata_module(self) -> str:
        """The guest driver behind ide-hd/ide-cd: AHCI on q35, PIIX IDE on i440fx."""
        return "ahci" if "q35" in self.machine else "ata_piix"


def _mib(value: str) -> int | None:
    """-m 256 / -m size=262144k / -m 512M -> MiB."""
    text = value.split(",")[0].removeprefix("size=").lower()
    scale = {"k": 1 / 1024, "m": 1, "g": 1024}
    try:
        return int(float(text[:-1]) * scale[text[-1]]) if text[-1] in scale else int(text)
    except (ValueError, IndexError):
        return None


def _cpu_count(text: str | None) -> int:
    """'0-3' or '0,2-3' -> 4."""
    count = 0
    for part in (text or "").split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            count += int(high) - int(low) + 1 if high.isdigit() else 1
    return count


def check_report(report: GuestReport, devices: list[dict[str, Any]], has_driver: Any,
                 facts: MachineFacts | None = None) -> CheckResult:
    """Compare the guest's report with the argv; ``has_driver(module)`` tells what the guest kernel drives."""
    result = CheckResult()
    facts = facts or MachineFacts()
    _check_system(report, facts, result)
    ids = _pci_ids(report)
    wanted_pci: Counter[str] = Counter()
    for dev in devices:
        pci_id, _ = PCI_DEVICES.get(str(dev.get("driver")), (None, None))
        if pci_id:
            wanted_pci[pci_id] += 1
    for pci_id, count in sorted(wanted_pci.items()):
        seen = _id_matches(pci_id, ids)
        have = ids[seen] if seen else 0
        if have < count:
            result.failures.append(f"PCI {pci_id}: guest sees {have} of {count}")
        else:
            result.checked.append(f"PCI {pci_id} x{count}")
    pairs = failover_pairs(devices)
    primaries = {str(p.get("id")) for _, p in pairs}
    for dev in devices:
        driver = str(dev.get("driver"))
        module = NIC_MODULES.get(driver)
        mac = dev.get("mac")
        if module is None or not mac:
            continue
        if not has_driver(module):
            result.notes.append(f"NIC {dev.get('id')} ({driver}): the guest kernel has no {module} driver; "
                                f"checked by PCI id only")
            continue
        nets = [n for n in report.nets if n.mac and n.mac.lower() == str(mac).lower()]
        drivers = {n.driver for n in nets}
        if not nets:
            result.failures.append(f"NIC {dev.get('id')} ({driver}, {mac}): not in the guest")
        elif dev.get("id") not in primaries and not pairs and module not in drivers:
            result.failures.append(f"NIC {dev.get('id')} ({mac}): driver {sorted(map(str, drivers))}, "
                                   f"expected {module}")
        else:
            result.checked.append(f"NIC {dev.get('id')} {mac} ({module})")
    for standby, primary in pairs:
        _check_failover(report, standby, primary, has_driver, result)
    _check_disks(report, devices, has_driver, facts, result)
    _check_consoles(report, devices, facts, result)
    return result


def _guest_addr(dev: dict[str, Any]) -> str:
    """query-pci's bus/slot/function -> the guest's 0000:BB:SS.F (the bus numbers the guest programmed)."""
    return f"0000:{int(dev['bus']):02x}:{int(dev['slot']):02x}.{int(dev['function']):x}"


def check_drivers_bound(report: GuestReport, devices: list[dict[str, Any]], qmp_pci: list[dict[str, Any]],
                        has_driver: Any) -> CheckResult:
    """Every -device with an id whose Linux driver the guest kernel has is bound by a driver in the guest.

    ``qmp_pci``: query-pci's devices, bridges walked (each with bus, slot, function, qdev_id)."""
    result = CheckResult()
    where = {str(d["qdev_id"]): _guest_addr(d) for d in qmp_pci if d.get("qdev_id")}
    seen = {dev.addr: dev for dev in report.pci}
    lacking: dict[str, list[str]] = {}
    for dev in devices:
        driver, qid = str(dev.get("driver")), dev.get("id")
        module = DRIVER_MODULES.get(driver)
        if module is None or not qid:
            continue
        if not has_driver(module):
            lacking.setdefault(module, []).append(f"{qid} ({driver})")
            continue
        addr = where.get(str(qid))
        if addr is None:
            result.failures.append(f"{qid} ({driver}): QMP query-pci does not list it")
            continue
        pci = seen.get(addr)
        virtio = driver.startswith("virtio-")
        bound = pci and (pci.virtio_driver if virtio else pci.driver)
        if pci is None:
            result.failures.append(f"{qid} ({driver}) at {addr}: not in the guest")
        elif not bound:
            result.failures.append(f"{qid} ({driver}) at {addr}: no driver bound (the guest has {module})")
        else:
            result.checked.append(f"{qid} ({driver}) bound to {bound}")
            if module.startswith("snd_"):
                _check_sound(report, f"{qid} ({driver}) at {addr}", addr, result)
    for module, which in sorted(lacking.items()):
        result.notes.append(f"the guest kernel has no {module}: {', '.join(which)} not driven")
    return result


def _check_sound(report: GuestReport, label: str, addr: str, result: CheckResult) -> None:
    """The sound card at ``addr`` has ALSA nodes (a control, PCMs) and the guest opened each."""
    nodes = [n for n in report.sounds if n.pci == addr]
    failed = [n.name for n in nodes if not n.opened]
    if not nodes:
        result.failures.append(f"{label}: bound, but the guest has no sound card on it")
    elif failed:
        result.failures.append(f"{label}: the guest could not open {', '.join(failed)}")
    else:
        result.checked.append(f"{label}: opened {', '.join(n.name for n in nodes)}")


def _check_system(report: GuestReport, facts: MachineFacts, result: CheckResult) -> None:
    system = report.system
    if system is None:
        result.failures.append("the guest reported no SYS line")
        return
    if facts.cpus is not None:
        online = _cpu_count(system.cpus)
        if online != facts.cpus:
            result.failures.append(f"vCPUs: guest has {online} online, -smp gave {facts.cpus}")
        else:
            result.checked.append(f"vCPUs x{online}")
    if facts.memory_mib and system.mem_kb:
        seen = system.mem_kb / 1024
        # MemTotal is RAM minus what firmware and kernel keep: within 60-100% of -m
        if not 0.6 * facts.memory_mib <= seen <= facts.memory_mib:
            result.failures.append(f"memory: guest MemTotal {seen:.0f} MiB for -m {facts.memory_mib} MiB")
        else:
            result.checked.append(f"memory {seen:.0f}/{facts.memory_mib} MiB")


def _check_failover(report: GuestReport, standby: dict[str, Any], primary: dict[str, Any], has_driver: Any,
                    result: CheckResult) -> None:
    mac = str(standby.get("mac", "")).lower()
    nets = [n for n in report.nets if (n.mac or "").lower() == mac]
    roles = {n.role: n for n in nets}
    label = f"failover {standby.get('id')} + {primary.get('id')}"
    master = roles.get("failover-master")
    if master is None:
        result.failures.append(f"{label}: no failover master with MAC {mac} in the guest")
        return
    sby = roles.get("standby")
    if sby is None or sby.master != master.name:
        result.failures.append(f"{label}: the standby is not enslaved to {master.name}")
    primary_module = NIC_MODULES.get(str(primary.get("driver")), "")
    prim = roles.get("primary")
    if not has_driver(primary_module):
        result.notes.append(f"{label}: the guest has no {primary_module} driver for the primary")
    elif prim is None or prim.master != master.name:
        result.failures.append(f"{label}: the primary ({primary.get('driver')}) is not enslaved to {master.name}")
    if not [f for f in result.failures if f.startswith(label)]:
        result.checked.append(f"{label}: master {master.name}, standby {sby.name if sby else '-'}, "
                              f"primary {prim.name if prim else '-'}")


# disk device -> (kind as the guest reports it, the modules that drive it besides its controller's)
_DISK_KINDS = {"virtio-blk-pci": ("virtio", ()), "virtio-blk-pci-transitional": ("virtio", ()),
               "virtio-blk-pci-non-transitional": ("virtio", ()), "virtio-blk-device": ("virtio", ()),
               "scsi-hd": ("scsi", ("sd_mod",)), "ide-hd": ("ata", ("sd_mod",)), "usb-storage": ("scsi", ("sd_mod",)),
               "ide-cd": ("cdrom", ("sr_mod",)), "scsi-cd": ("cdrom", ("sr_mod",))}
# disk controller (the device its bus belongs to) -> module; usb-storage is its own controller
_DISK_CONTROLLERS = {**{k: v for k, v in DRIVER_MODULES.items() if v in (
    "sym53c8xx", "mptsas", "megaraid_sas", "vmw_pvscsi", "am53c974", "virtio_scsi", "ahci")},
    "usb-storage": "usb_storage", "usb-bot": "usb_storage", "usb-uas": "uas"}


def _disk_modules(dev: dict[str, Any], by_id: dict[str, dict[str, Any]], facts: MachineFacts) -> list[str]:
    """The guest modules a disk device needs: its controller's and its own kind's."""
    driver = str(dev.get("driver"))
    kind, own = _DISK_KINDS[driver]
    if kind == "virtio":
        return ["virtio_blk"]
    if driver == "usb-storage":
        return ["usb_storage", *own]
    bus = str(dev.get("bus") or "")
    owner = by_id.get(bus.rsplit(".", 1)[0]) if bus else None
    if owner is not None:
        controller = _DISK_CONTROLLERS.get(str(owner.get("driver")))
        return [controller or f"(a driver for {owner.get('driver')})", *own]
    if driver.startswith("ide-"):  # the machine's own IDE/SATA buses (ide.N)
        return [facts.sata_module, *own]
    return ["virtio_scsi", *own]


def _check_disks(report: GuestReport, devices: list[dict[str, Any]], has_driver: Any, facts: MachineFacts,
                 result: CheckResult) -> None:
    by_id = {str(d["id"]): d for d in devices if d.get("id")}
    kinds: Counter[str] = Counter()
    undriven: dict[str, list[str]] = {}
    for dev in devices:
        driver = str(dev.get("driver"))
        if driver not in _DISK_KINDS:
            continue
        needed = _disk_modules(dev, by_id, facts)
        kind = _DISK_KINDS[driver][0]
        if all(has_driver(m) for m in needed):
            kinds[kind] += 1
        else:
            undriven.setdefault(", ".join(needed), []).append(str(dev.get("id") or driver))
    names = [d.name for d in report.disks]
    seen = Counter(_disk_kind(d.name, d.hba) for d in report.disks)
    for modules, which in sorted(undriven.items()):
        result.notes.append(f"{len(which)} disk(s) the guest kernel cannot drive ({modules}): "
                            f"{', '.join(which)}; checked over QMP only")
    for kind, count in kinds.items():
        if seen[kind] < count:
            result.failures.append(f"{kind} disks: guest sees {seen[kind]} of {count} ({', '.join(names) or 'none'})")
        else:
            result.checked.append(f"{kind} disks x{count}")
    # every disk the guest sees has a driver (it made the disk): its first block must have been read
    for disk in report.disks:
        if disk.read in ("err", "hung"):
            how = "failed" if disk.read == "err" else "did not finish in time"
            result.failures.append(f"disk {disk.name} ({disk.driver or '?'} on {disk.hba or '?'}"
                                   f"{' at ' + disk.pci if disk.pci else ''}): reading its first block {how}")
    read = [d.name for d in report.disks if d.read == "ok"]
    if read:
        result.checked.append(f"first block read: {', '.join(read)}")


def _disk_kind(name: str, hba: str | None) -> str:
    if name.startswith("vd"):
        return "virtio"
    if name.startswith("sr"):
        return "cdrom"
    return "ata" if hba in ("ahci", "ata_piix") else "scsi"


def _check_consoles(report: GuestReport, devices: list[dict[str, Any]], facts: MachineFacts,
                    result: CheckResult) -> None:
    ports = [d for d in devices if d.get("driver") == "virtserialport" and d.get("name")]
    names = {p.port_name for p in (report.latest.ports if report.latest else [])}
    for port in ports:
        if port["name"] not in names:
            result.failures.append(f"virtio-serial port {port['name']}: not in the guest")
        else:
            result.checked.append(f"virtio-serial port {port['name']}")
    ttys = {c.name for c in report.consoles}
    wanted = [f"ttyS{d.get('index', 0)}" for d in devices if d.get("driver") == "isa-serial"]
    if facts.serial_options and not wanted:  # -serial: COM1 on PCs, the PL011 on Arm virt
        wanted = ["ttyS0" if facts.machine.startswith("pc") else "ttyAMA0"]
    for tty in wanted:
        if tty not in ttys:
            result.failures.append(f"serial {tty}: not in the guest ({', '.join(sorted(ttys)) or 'no consoles'})")
        else:
            result.checked.append(f"serial {tty}")
