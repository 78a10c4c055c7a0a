"""libvirt's validation of a domain, rule by rule: the configurations libvirt refuses, with its messages.

Each rule reads the parsed Domain (and, where libvirt asks QEMU, the Capabilities) and returns the first
refusal it finds, or None. The message is libvirt's own (its error class first: "XML error: ...",
"unsupported configuration: ..."), prefixed with the element it is about, so a user sees which element
to fix and a reader can find the check in libvirt (domain_conf.c parse checks, domain_validate.c,
qemu_validate.c, qemu_domain_address.c). Rules are listed in RULES; validate_domain runs them in order.
"""

from __future__ import annotations

import dis
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from conformance.caps.model import Capabilities
from conformance.domain.model import Controller, Device, Disk, Domain
from conformance.errors import DomainInvalid, UnsupportedByQemu

XML = "XML error: "
UNSUPPORTED = "unsupported configuration: "
INTERNAL = "internal error: "


@dataclass(frozen=True)
class Refusal:
    element: str  # '<controller>' or "<disk target='sda'>"
    message: str  # libvirt's, with its error class
    dev: Device | None = None
    line: int | None = None
    by_qemu: bool = False  # refused because of these capabilities (UnsupportedByQemu), not the domain itself

    def error(self, domain: Domain) -> DomainInvalid | UnsupportedByQemu:
        cls = UnsupportedByQemu if self.by_qemu else DomainInvalid
        line = self.line if self.line is not None else (self.dev.line if self.dev is not None else None)
        return cls(f"{self.element}: {self.message}", path=domain.source, line=line)


Rule = Callable[[Domain, "Capabilities | None"], Iterator[Refusal]]
RULES: list[Rule] = []


def _reads_caps(fn: Rule) -> bool:
    """Whether a rule's code reads its ``caps`` argument, itself or in a nested function or comprehension
    (which makes ``caps`` a cell variable)."""
    code = fn.__code__
    if "caps" in code.co_cellvars:
        return True
    return any(ins.opname.startswith("LOAD_FAST") and (ins.argval == "caps" or (
        isinstance(ins.argval, tuple) and "caps" in ins.argval)) for ins in dis.get_instructions(code))


@cache
def caps_rules() -> tuple[Rule, ...]:
    """The rules whose code reads their caps argument, in order: the only ones whose answer can change once
    caps are known (found on first use, not at import)."""
    return tuple(fn for fn in RULES if _reads_caps(fn))


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    caps_rules.cache_clear()
    return fn


def first_refusal(domain: Domain, caps: Capabilities | None, *, caps_only: bool = False) -> Refusal | None:
    """The first refusal of the rules in order. ``caps_only``: the domain already passed every rule without
    caps (``first_refusal(domain, None)`` was None), so only the rules that read caps can refuse it now: run
    just those, in the same order (a rule that never reads caps answers the same with or without them)."""
    for check in caps_rules() if caps_only else RULES:
        for refusal in check(domain, caps):
            return refusal
    return None


# --- helpers ------------------------------------------------------------------------------------------


def machine_name(domain: Domain, caps: Capabilities | None) -> str:
    name = domain.os.machine or ""
    if caps is not None:
        found = caps.machine(name) if name else caps.default_machine()
        if found is not None:
            return found.name
    return name


def is_q35(name: str) -> bool:
    return name == "q35" or name.startswith("pc-q35")


def is_i440fx(name: str) -> bool:
    return name == "pc" or name.startswith(("pc-i440fx", "pc-0.", "pc-1."))


def is_arm_virt(domain: Domain, name: str) -> bool:
    return (domain.os.arch or "").startswith(("aarch64", "arm")) and (name == "virt" or name.startswith("virt-"))


def _on(value: str | None) -> bool:
    return value in ("on", "yes")


def _child(elements: list, tag: str):
    return next((e for e in elements if getattr(e, "tag", None) == tag), None)


def _children(elements: list, tag: str) -> list:
    return [e for e in elements if getattr(e, "tag", None) == tag]


def _ctl(cont: Controller) -> str:
    return f"<controller type='{cont.type}' index='{cont.index}'>"


def _disk(disk: Disk) -> str:
    return f"<disk target='{disk.target_dev}'>"


def _disk_bus(disk: Disk) -> str:
    """A disk's bus as libvirt completes it when <target> names none (virDomainDiskDefPostParse)."""
    if disk.target_bus:
        return disk.target_bus
    if disk.device == "floppy":
        return "fdc"
    prefixes = (("hd", "ide"), ("sd", "scsi"), ("vd", "virtio"), ("xvd", "xen"), ("ubd", "uml"))
    return next((bus for prefix, bus in prefixes if disk.target_dev.startswith(prefix)), "ide")


# --- controllers and PCI addresses --------------------------------------------------------------------


@rule
def controller_indexes(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    seen: set[tuple[str, int]] = set()
    for cont in domain.devices.controllers:
        if cont.index is not None and cont.index < 0:
            yield Refusal("<controller>", f"{XML}Invalid value for attribute 'index' in element 'controller': "
                                          f"'{cont.index}'. Expected non-negative value", cont)
        if cont.index is not None:
            key = (cont.type, cont.index)
            if key in seen and cont.type != "usb":
                yield Refusal(_ctl(cont), f"{XML}Multiple '{cont.type}' controllers with index '{cont.index}'", cont)
            seen.add(key)
        if cont.type == "pci" and cont.model in ("pci-root", "pcie-root") and (cont.index or 0) != 0:
            yield Refusal(_ctl(cont), f"{XML}pci-root and pcie-root controllers should have index 0", cont)
        # virDomainControllerDefValidate
        if cont.type == "pci" and cont.model in ("pci-root", "pcie-root") and \
                (cont.address is not None or _child(cont.extra, "address") is not None):
            yield Refusal(_ctl(cont), f"{UNSUPPORTED}pci-root and pcie-root controllers should not have an address",
                          cont)


@rule
def pci_root_matches_machine(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    name = machine_name(domain, caps)
    want = "pcie-root" if is_q35(name) else "pci-root" if is_i440fx(name) else None
    for cont in domain.devices.controllers:
        if want and cont.type == "pci" and cont.index == 0 and cont.model and cont.model != want:
            yield Refusal(_ctl(cont), f"{XML}The PCI controller with index='0' must be model='{want}' for this "
                                      f"machine type, but model='{cont.model}' was found instead", cont)
        # qemuDomainControllerDefPostParse: expander buses exist on their own machine types only
        if name and cont.type == "pci" and cont.model == "pci-expander-bus" and not is_i440fx(name):
            yield Refusal(_ctl(cont), f"{UNSUPPORTED}pci-expander-bus controllers are only supported on "
                                      "440fx-based machinetypes", cont)
        if name and cont.type == "pci" and cont.model == "pcie-expander-bus" and \
                not (is_q35(name) or is_arm_virt(domain, name)):
            yield Refusal(_ctl(cont), f"{UNSUPPORTED}pcie-expander-bus controllers are not supported with this "
                                      "machine type", cont)


@rule
def pci_address_ranges(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    for dev in domain.all_devices():
        addr = dev.address
        if addr is None or addr.type != "pci":
            continue
        if addr.domain is not None and addr.domain > 0xFFFF:
            yield Refusal("<address type='pci'>", f"{XML}Invalid PCI address domain='0x{addr.domain:x}', "
                                                  "must be <= 0xFFFF", dev)
        if addr.bus is not None and addr.bus > 0xFF:
            yield Refusal("<address type='pci'>", f"{XML}Invalid PCI address bus='0x{addr.bus:x}', must be <= 0xFF",
                          dev)
        if addr.slot is not None and addr.slot > 0x1F:
            yield Refusal("<address type='pci'>", f"{XML}Invalid PCI address slot='0x{addr.slot:x}', "
                                                  "must be <= 0x1F", dev)
        if addr.function is not None and addr.function > 7:
            yield Refusal("<address type='pci'>", f"{XML}Invalid PCI address function=0x{addr.function:x}, "
                                                  "must be <= 7", dev)


@rule
def zpci_needs_s390(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    if (domain.os.arch or (caps.arch if caps else "")).startswith("s390"):
        return
    for dev in domain.all_devices():  # libvirt checks the PCI address of every device
        if dev.address is not None and dev.address.type == "pci" and dev.address.zpci is not None:
            yield Refusal("<zpci>", f"{UNSUPPORTED}This QEMU binary doesn't support zPCI", dev, by_qemu=True)


# --- USB ----------------------------------------------------------------------------------------------

USB_MAX_PORTS = {"nec-xhci": 15, "qemu-xhci": 15}
_USB_COMPANIONS = ("ich9-uhci1", "ich9-uhci2", "ich9-uhci3")


@rule
def usb_controllers(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    usb = [c for c in domain.devices.controllers if c.type == "usb"]
    if any(c.model == "none" for c in usb) and len(usb) > 1:
        yield Refusal("<controller type='usb'>", "Can't add another USB controller: USB is disabled for this domain",
                      usb[1])
    name = machine_name(domain, caps)
    for cont in usb:
        if name == "isapc" and cont.model is None:  # the default model is a PCI device
            yield Refusal(_ctl(cont), f"{XML}No PCI buses available", cont)
        limit = USB_MAX_PORTS.get(cont.model or "")
        if limit and int(cont.attrs.get("ports", 0) or 0) > limit:
            yield Refusal(_ctl(cont), f"{UNSUPPORTED}'{cont.model}' controller only supports up to '{limit}' ports",
                          cont)
        if cont.model in _USB_COMPANIONS:
            masters = [c for c in usb if c.index == cont.index and c.model not in _USB_COMPANIONS]
            if not masters:
                yield Refusal(_ctl(cont), "No master USB controller specified", cont)
        if caps is not None and cont.model == "nec-xhci" and not caps.has("nec-usb-xhci") and \
                not caps.has_type("nec-usb-xhci"):
            yield Refusal(_ctl(cont), f"{UNSUPPORTED}USB controller model 'nec-xhci' not supported in this QEMU "
                                      "binary", cont, by_qemu=True)


def _usb_devices(domain: Domain) -> list[tuple[str, Device | None, object]]:
    """(element, device, address) of everything on a USB port, hubs (kept verbatim) included."""
    d = domain.devices
    out: list[tuple[str, Device | None, object]] = []
    for el in d.other:  # hubs first: the other devices' ports may sit on them
        if el.tag == "hub":
            addr = _child(list(el), "address")
            out.append(("<hub type='usb'>", None, (el, addr)))
    for inp in d.inputs:
        if inp.bus == "usb":
            out.append((f"<input type='{inp.type}' bus='usb'>", inp, inp.address))
    for disk in d.disks:
        if disk.target_bus == "usb":
            out.append((_disk(disk), disk, disk.address))
    return out


def _usb_address(entry: object) -> tuple[str | None, str | None, int | None]:
    """(bus, port, line) of a typed Address or a verbatim (<hub>, <address>) pair."""
    if isinstance(entry, tuple):
        el, addr = entry
        if addr is None or addr.get("type") != "usb":
            return None, None, el.sourceline
        return addr.get("bus", "0"), addr.get("port"), el.sourceline
    if entry is None or getattr(entry, "type", None) != "usb":
        return None, None, None
    return str(entry.bus or 0), entry.port, None


@rule
def usb_devices(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    usb = [c for c in domain.devices.controllers if c.type == "usb"]
    disabled = any(c.model == "none" for c in usb)
    hubs: dict[str, set[str]] = {}
    ports: dict[tuple[str, str], str] = {}
    for element, dev, entry in _usb_devices(domain):
        bus, port, line = _usb_address(entry)
        if disabled:
            if element.startswith("<hub"):
                yield Refusal(element, f"{UNSUPPORTED}Can't add USB hub: USB is disabled for this domain", dev, line)
            elif element.startswith("<input"):
                yield Refusal(element, f"{UNSUPPORTED}Can't add USB input device. USB bus is disabled", dev, line)
        if bus is None:
            continue
        if usb and not any(str(c.index or 0) == bus for c in usb):
            yield Refusal(element, f"{XML}USB bus {bus} requested but no controller with that index is present",
                          dev, line)
        if not port:
            continue
        parts = port.split(".")
        if len(parts) > 4 or not all(p.isdigit() for p in parts):  # a root port and at most 3 hub levels
            yield Refusal(element, f"{INTERNAL}Cannot parse <address> 'port' attribute", dev, line)
            continue
        if (bus, port) in ports:
            yield Refusal(element, f"{XML}Duplicate USB address bus {bus} port {port}", dev, line)
        ports[(bus, port)] = element
        if len(parts) > 1:
            missing = next((".".join(parts[:n]) for n in range(1, len(parts))
                            if ".".join(parts[:n]) not in hubs.get(bus, set())), None)
            if missing is not None:
                yield Refusal(element, f"{XML}there is no hub at port {missing} in USB address bus: {bus} "
                                       f"port: {port}", dev, line)
            elif int(parts[-1]) > 8:
                yield Refusal(element, f"{XML}requested USB port {port} not present on USB bus {bus}", dev, line)
        if element.startswith("<hub"):
            hubs.setdefault(bus, set()).add(port)


@rule
def usb_disks(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    for disk in domain.devices.disks:
        if disk.target_bus != "usb":
            continue
        if disk.address is not None and disk.address.type not in ("usb", ""):
            yield Refusal(_disk(disk), f"{INTERNAL}unexpected address type for usb disk", disk)
        if disk.source is None or not disk.source.path:
            yield Refusal(_disk(disk), f"{UNSUPPORTED}'usb' disk must not be empty", disk)


# --- disks --------------------------------------------------------------------------------------------


def _lun_source(disk: Disk) -> Iterator[Refusal]:
    """virDomainDiskDefSourceLUNValidate: a LUN is an iSCSI network source or a host block device (or a pool
    volume), raw, whole and not encrypted."""
    src = disk.source
    children = src.children if src is not None else []
    if disk.type == "network":
        protocol = src.attrs.get("protocol", "") if src is not None else ""
        if protocol != "iscsi":
            yield Refusal(_disk(disk), f"{UNSUPPORTED}disk device='lun' is not supported for protocol='{protocol}'",
                          disk)
    elif disk.type not in ("block", "volume"):
        yield Refusal(_disk(disk), f"{UNSUPPORTED}disk device='lun' is only valid for block type disk source", disk)
    if disk.driver.get("type") not in (None, "", "raw"):
        yield Refusal(_disk(disk), f"{UNSUPPORTED}disk device 'lun' must use 'raw' format", disk)
    if any(c.tag == "slices" and c.find("slice[@type='storage']") is not None for c in children):
        yield Refusal(_disk(disk), f"{UNSUPPORTED}disk device 'lun' doesn't support storage slice", disk)
    encryption = [e for e in (*children, *disk.extra) if getattr(e, "tag", None) == "encryption"]
    if any(e.get("format", "default") != "default" for e in encryption[:1]):
        yield Refusal(_disk(disk), f"{UNSUPPORTED}disk device 'lun' doesn't support encryption", disk)


@rule
def disks(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    drive_addresses: dict[tuple, Disk] = {}
    for disk in domain.devices.disks:
        fmt = disk.driver.get("type")
        if re.search(r"\d$", disk.target_dev) and disk.target_dev.startswith(("hd", "sd", "vd", "xvd")):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}invalid disk target '{disk.target_dev}', partitions can't "
                                       "appear in disk targets", disk)
        if len(disk.target_dev) > 8 and disk.address is None and disk.target_dev.startswith(("hd", "sd", "vd")):
            yield Refusal(_disk(disk), f"{XML}Unknown disk name '{disk.target_dev}' and no address specified", disk)
        if fmt == "cow":
            yield Refusal(_disk(disk), f"{UNSUPPORTED}'cow' storage format is not supported", disk)
        if fmt in ("dir", "directory"):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}'directory' storage format is not directly supported by QEMU, "
                                       "use 'dir' disk type instead", disk)
        if fmt == "iso":
            yield Refusal(_disk(disk), f"{UNSUPPORTED}storage format 'iso' is not directly supported by QEMU, "
                                       "use 'raw' instead", disk)
        if disk.device == "lun":  # virDomainDiskDefSourceLUNValidate: the domain's own checks come first
            yield from _lun_source(disk)
        if caps is not None and disk.device == "lun" and disk.target_bus == "virtio" and \
                not caps.has("virtio-blk-pci.scsi"):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}This QEMU doesn't support SCSI emulation with 'virtio-blk' "
                                       "device", disk, by_qemu=True)
        bus = disk.target_bus or ""
        # qemuValidateDomainDeviceDefDiskFrontend, on the bus post-parse gives a disk without one
        if disk.vendor is not None and _disk_bus(disk) != "scsi":
            yield Refusal(_disk(disk), f"{UNSUPPORTED}Only scsi disk supports 'vendor'", disk)
        if disk.product is not None and _disk_bus(disk) not in ("ide", "sata", "scsi"):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}Only ide, sata and scsi disk supports 'product'", disk)
        if disk.vendor is not None and len(disk.vendor) > 8:
            yield Refusal(_disk(disk), f"{UNSUPPORTED}disk vendor is more than 8 characters", disk)
        if disk.product is not None and len(disk.product) > 16:
            yield Refusal(_disk(disk), f"{UNSUPPORTED}disk product is more than 16 characters", disk)
        if disk.shareable and fmt and fmt != "raw" and disk.device != "lun":
            yield Refusal(_disk(disk), f"{UNSUPPORTED}shared access for disk '{disk.target_dev}' requires use of "
                                       "supported storage format", disk)
        no_unref = disk.driver.get("discard_no_unref")
        if no_unref == "on" and fmt != "qcow2":  # virDomainDiskDefValidate
            yield Refusal(_disk(disk), f"{UNSUPPORTED}'discard_no_unref' only works with qcow2 disk format", disk)
        elif no_unref == "on" and disk.readonly:
            yield Refusal(_disk(disk), f"{UNSUPPORTED}'discard_no_unref' is not compatible with read-only disk", disk)
        if no_unref in ("on", "off") and caps is not None and not caps.has("qcow2-discard-no-unref"):
            # qemuValidateDomainDeviceDefDisk: set either way, QEMU must have the qcow2 option
            yield Refusal(_disk(disk), f"{UNSUPPORTED}'discard_no_unref' is not supported by this QEMU binary", disk,
                          by_qemu=True)
        addr = disk.address
        # virDomainDiskDefValidate (virDomainDiskAddressDiskBusCompatibility): these buses take a drive address only
        drive_bus = _disk_bus(disk)
        if addr is not None and addr.type not in ("", "none", "drive") and drive_bus in ("ide", "fdc", "scsi", "sata"):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}Invalid address type '{addr.type}' for the disk "
                                       f"'{disk.target_dev}' with the bus type '{drive_bus}'", disk)
        if addr is not None and addr.type == "drive":
            key = (bus, addr.controller or 0, addr.bus or 0, addr.target or 0, addr.unit or 0)
            if key in drive_addresses:
                yield Refusal(_disk(disk), f"{UNSUPPORTED}Found duplicate drive address for disk with target name "
                                           f"'{disk.target_dev}' controller='{key[1]}' bus='{key[2]}' "
                                           f"target='{key[3]}' unit='{key[4]}'", disk)
            drive_addresses[key] = disk
        if _child(disk.extra, "iotune") is not None and _child(disk.extra, "throttlefilters") is not None:
            yield Refusal(_disk(disk), f"Operation not supported: block 'throttlefilters' can't be used together "
                                       f"with 'iotune' for disk '{disk.target_dev}'", disk)


# --- other devices ------------------------------------------------------------------------------------


@rule
def controllers_options(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    for cont in domain.devices.controllers:
        if cont.driver.get("iothread") and not (cont.type == "scsi" and (cont.model or "").startswith("virtio")):
            yield Refusal(_ctl(cont), f"{XML}'iothread' attribute only supported for virtio scsi controllers", cont)


@rule
def interfaces(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    for net in domain.devices.interfaces:
        size = net.driver.get("rx_queue_size")
        if size and size.isdigit() and int(size) & (int(size) - 1):
            yield Refusal("<interface>", f"{UNSUPPORTED}rx_queue_size has to be a power of two", net)
        queues = net.driver.get("queues")
        if queues and queues.lstrip("-").isdigit() and int(queues) < 0:
            yield Refusal("<interface>", f"{XML}Invalid value for attribute 'queues' in element 'driver': "
                                         f"'{queues}'. Expected non-negative integer value", net)
        if net.type == "user" and net.backend.get("type") == "passt" and caps is not None and \
                not caps.has("netdev.stream"):  # qemuValidateDomainDeviceDefNetwork
            yield Refusal("<backend type='passt'>", f"{UNSUPPORTED}the passt network backend is not supported with "
                                                    "this QEMU binary", net, by_qemu=True)
        if net.type == "user" and _child(net.extra, "portForward") is not None and net.backend.get("type") != "passt":
            yield Refusal("<interface type='user'>", f"{UNSUPPORTED}The <portForward> element can only be used with "
                                                     "the 'passt' backend of interface type='user' or "
                                                     "type='vhostuser'", net)


def _shared_memory(domain: Domain) -> bool:
    """Guest RAM a vhost-user back-end can map: shared access (domain-wide or in every NUMA cell), or memfd."""
    mb = domain.memory_backing
    children = mb.children if mb is not None else []
    if any(c.tag == "access" and c.get("mode") == "shared" for c in children) or \
            any(c.tag == "source" and c.get("type") == "memfd" for c in children):
        return True
    cells = domain.cpu.numa if domain.cpu is not None else []
    return bool(cells) and all(c.attrs.get("memAccess") == "shared" for c in cells)


@rule
def vhost_user(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    for net in domain.devices.interfaces:
        if net.type != "vhostuser":
            continue
        if net.backend.get("tap"):
            yield Refusal("<interface type='vhostuser'>", f"{UNSUPPORTED}interface {net.mac} - custom tap device path "
                                                          "is not supported for network interfaces of type vhostuser",
                          net)
        if not _shared_memory(domain):
            yield Refusal("<interface type='vhostuser'>", f"{UNSUPPORTED}'interface' requires shared memory", net)


def _guest_memory_shared(domain: Domain) -> bool:
    """libvirt's test of shared guest RAM for vhost back-ends (qemuValidateDomainDefVhostUserRequireSharedMemory):
    without NUMA cells the domain's <access mode='shared'/>; with cells every cell shared, by its own memAccess or,
    where it has none, by the domain's (a private cell is never shared)."""
    mb = domain.memory_backing
    shared = any(c.tag == "access" and c.get("mode") == "shared" for c in (mb.children if mb is not None else []))
    cells = domain.cpu.numa if domain.cpu is not None else []
    if not cells:
        return shared
    return all(c.attrs.get("memAccess") == "shared" or (not c.attrs.get("memAccess") and shared) for c in cells)


@rule
def vhost_disks(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """qemuValidateDomainDeviceDefDisk on vhost-user and vhost-vdpa disks: QEMU's device, shared guest RAM, and
    for vDPA a cache mode that bypasses the host page cache."""
    for disk in domain.devices.disks:
        if disk.type not in ("vhostuser", "vhostvdpa"):
            continue
        flag = "vhost-user-blk" if disk.type == "vhostuser" else "virtio-blk-vhost-vdpa"
        if caps is not None and not caps.has(flag):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}{disk.type} disk is not supported with this QEMU binary", disk,
                          by_qemu=True)
            continue
        if not _guest_memory_shared(domain):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}'{disk.type}' requires shared memory", disk)
            continue
        if disk.type == "vhostvdpa" and disk.driver.get("cache") not in ("directsync", "none"):
            yield Refusal(_disk(disk), f"{UNSUPPORTED}disk type 'vhostvdpa' requires cache mode 'directsync' or "
                                       "'none'", disk)


@rule
def inputs(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    ps2 = domain.features.get("ps2")
    ps2_off = ps2 is not None and ps2.attrs.get("state") == "off"
    for inp in domain.devices.inputs:
        if ps2_off and inp.bus == "ps2":
            yield Refusal("<input bus='ps2'>", f"{UNSUPPORTED}ps2 bus inputs require the ps2 feature not to be "
                                               "disabled", inp)
        if inp.model in ("virtio-transitional", "virtio-non-transitional") and inp.type not in ("passthrough",):
            yield Refusal(f"<input type='{inp.type}'>", f"{UNSUPPORTED}virtio (non-)transitional models are not "
                                                        f"supported for input type={inp.type}", inp)
    vmport = domain.features.get("vmport")
    if ps2_off and vmport is not None and vmport.attrs.get("state") == "on":
        yield Refusal("<vmport>", f"{UNSUPPORTED}vmport feature requires the ps2 feature not to be disabled")


@rule
def videos(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    vids = domain.devices.videos
    if len(vids) > 1 and any(v.model == "none" for v in vids):
        yield Refusal("<video>", f"{UNSUPPORTED}a 'none' video type must be the only video device defined for the "
                                 "domain", vids[0])
    if sum(v.primary for v in vids) > 1:
        yield Refusal("<video>", f"{UNSUPPORTED}Only one primary video device is supported", vids[1])
    # qemuValidateDomainDeviceDefVideo (9.0 and 11.3): only QXL and virtio can be a secondary video device or
    # have several heads; the primary one is the one marked primary='yes', else the first
    primary = next((v for v in vids if v.primary), vids[0] if vids else None)
    for vid in vids:
        if vid.model in ("qxl", "virtio", "none", None):
            continue
        if vid is not primary:
            yield Refusal(f"<video type='{vid.model}'>", f"{UNSUPPORTED}video type '{vid.model}' is only valid as "
                                                         "primary video device", vid)
        if vid.model_attrs.get("heads", "1") != "1":
            yield Refusal(f"<video type='{vid.model}'>", f"{UNSUPPORTED}video type '{vid.model}' doesn't support "
                                                         "multiple 'heads'", vid)
    for vid in vids:
        if vid.model == "ramfb" and vid.address is not None:
            yield Refusal("<video type='ramfb'>", f"{UNSUPPORTED}address not supported for video type ramfb", vid)


@rule
def acpi_needs_uefi(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """qemuValidateDomainDef: ACPI on a machine type QEMU reports without it, then aarch64's ACPI without UEFI."""
    machine = caps.machine(domain.os.machine) if caps is not None and domain.os.machine else None
    if machine is not None and machine.acpi is False and "acpi" in domain.features:
        yield Refusal("<acpi>", f"{UNSUPPORTED}machine type '{domain.os.machine}' does not support ACPI")
    arch = domain.os.arch or (caps.arch if caps else "")
    loader = domain.os.loader
    uefi = domain.os.firmware == "efi" or (loader is not None and loader.attrs.get("type") == "pflash")
    if arch == "aarch64" and "acpi" in domain.features and not uefi:
        yield Refusal("<acpi>", f"{UNSUPPORTED}ACPI requires UEFI on this architecture")


_SERIAL_TARGETS = {"system-serial": ("aarch64", "armv7l"), "spapr-vio-serial": ("ppc64", "ppc64le")}


@rule
def serial_targets(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    name = machine_name(domain, caps)
    arch = domain.os.arch or (caps.arch if caps else "")
    for ser in domain.devices.serials:
        target = ser.target_type
        ok = {"system-serial": is_arm_virt(domain, name) or arch.startswith("s390"),
              "spapr-vio-serial": name.startswith("pseries")}.get(target or "", True)
        if not ok:
            model = ser.target_model or {"system-serial": "pl011", "spapr-vio-serial": "spapr-vty"}[target or ""]
            yield Refusal(f"<serial><target type='{target}'>", f"{UNSUPPORTED}Serial device with target type "
                                                              f"'{target}' and target model '{model}' not compatible "
                                                              "with guest architecture or machine type", ser)


@rule
def hugepages(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    mb = domain.memory_backing
    if mb is None or not mb.hugepages:
        return
    cells = len(domain.cpu.numa) if domain.cpu is not None else 0
    # without NUMA the whole guest is node 0: a page for node 0 and a default page are both its page size
    masters = [p for p in mb.hugepages if not p.get("nodeset") or (not cells and 0 in (_bitmap(p["nodeset"]) or ()))]
    if len(masters) > 1:
        sizes = [p.get("size", "") for p in masters]
        yield Refusal("<hugepages>", f"two master hugepages detected: {sizes[1]} and {sizes[0]}")
    for page in mb.hugepages:
        nodeset = page.get("nodeset")
        nodes = _bitmap(nodeset) if nodeset else set()
        for node in sorted(nodes or ()):
            if node >= max(cells, 1):
                yield Refusal("<page>", f"hugepages: node {node} not found")


@rule
def cpu_mode_on_tcg(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    arch = domain.os.arch or (caps.arch if caps else "")
    if domain.type == "qemu" and domain.cpu is not None and domain.cpu.mode == "host-passthrough" and \
            arch in ("x86_64", "i686"):
        yield Refusal("<cpu mode='host-passthrough'>", f"{UNSUPPORTED}CPU mode 'host-passthrough' for {arch} qemu "
                                                       f"domain on {arch} host is not supported by hypervisor")


@rule
def cputune(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    tune = _child(domain.extra, "cputune")
    if tune is None:
        return
    for sched in _children(list(tune), "iothreadsched"):
        ids = _bitmap(sched.get("iothreads", "")) or set()
        for n in sorted(ids):
            if n < 1 or n > (domain.iothreads or 0):
                yield Refusal("<iothreadsched>", f"{UNSUPPORTED}Cannot find 'iothread' : {n}",
                              line=sched.sourceline)


@rule
def hostdevs(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    seen: set[tuple] = set()
    ramfb = 0
    for dev in domain.devices.hostdevs:
        element = f"<hostdev type='{dev.type}'>"
        if dev.type != "scsi":
            for attr in ("rawio", "sgio"):
                if dev.attrs.get(attr):
                    yield Refusal(element, f"{XML}{attr} is only supported for scsi host device", dev)
        if dev.type == "scsi_host" and dev.boot_order is not None:
            yield Refusal(element, f"{UNSUPPORTED}booting from assigned devices is not supported by vhost SCSI "
                                   "devices", dev)
        src = next((c for c in dev.source_children if getattr(c, "tag", None) == "address"), None)
        key: tuple | None = None
        if dev.type == "mdev":
            if src is None or not src.get("uuid"):
                yield Refusal(element, f"{UNSUPPORTED}Missing 'uuid' attribute for element <address>", dev)
                continue
            key = ("mdev", src.get("uuid"))
            model = dev.attrs.get("model", "")
            if dev.address is not None and dev.address.type not in ("pci", "") and model == "vfio-pci":
                yield Refusal(element, f"{XML}Unsupported address type '{dev.address.type}' with mediated device "
                                       f"model '{model}'", dev)
        elif dev.type == "pci" and dev.source_address is not None:
            key = ("pci", dev.source_address.pci_tuple())
        elif src is not None:
            key = (dev.type, tuple(sorted(src.attrib.items())))
        if key is not None and key in seen:
            yield Refusal(element, f"{XML}Hostdev already exists in the domain configuration", dev)
        if key is not None:
            seen.add(key)
        if dev.attrs.get("display") == "on" and not domain.devices.graphics:
            yield Refusal(element, f"{UNSUPPORTED}graphics device is needed for attribute value 'display=on' in "
                                   "<hostdev>", dev)
        if dev.attrs.get("ramfb") == "on":
            ramfb += 1
            if ramfb > 1:
                yield Refusal(element, f"{UNSUPPORTED}Only one vgpu device can have 'ramfb' enabled", dev)


@rule
def graphics(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    grs = domain.devices.graphics
    types = {g.type for g in grs}
    if "egl-headless" in types and types - {"egl-headless", "vnc", "spice"}:
        yield Refusal("<graphics type='egl-headless'>", f"{UNSUPPORTED}graphics type 'egl-headless' is only "
                                                        "supported with one of: 'vnc', 'spice' graphics types")
    gl = [g for g in grs if g.type == "egl-headless" or
          any(getattr(c, "tag", None) == "gl" and c.get("enable") == "yes" for c in g.extra)]
    if len(gl) > 1:
        yield Refusal(f"<graphics type='{gl[1].type}'>", f"{UNSUPPORTED}multiple OpenGL displays are not "
                                                         "supported by QEMU", gl[1])


@rule
def iommu(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    dev = domain.devices.iommu
    if dev is None:
        return
    name = machine_name(domain, caps)
    element = f"<iommu model='{dev.model}'>"
    if dev.model == "intel" and not is_q35(name):
        yield Refusal(element, f"{UNSUPPORTED}IOMMU device: 'intel' is only supported with Q35 machines", dev)
    if dev.model == "virtio":
        if dev.driver:
            yield Refusal(element, f"{XML}iommu model 'virtio' doesn't support additional attributes", dev)
        if not (is_q35(name) or is_arm_virt(domain, name)):
            yield Refusal(element, f"{UNSUPPORTED}IOMMU device: 'virtio' is only supported with Q35 and ARM Virt "
                                   "machines", dev)
        if dev.address is not None and dev.address.type != "pci":
            yield Refusal(element, f"{UNSUPPORTED}IOMMU device: 'virtio' needs a PCI address", dev)
        if "acpi" not in domain.features:
            yield Refusal(element, f"{UNSUPPORTED}IOMMU device: 'virtio' requires ACPI", dev)


@rule
def tpms(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    arch = domain.os.arch or (caps.arch if caps else "")
    for tpm in domain.devices.tpms:
        if not tpm.backend_type:
            yield Refusal("<tpm>", f"{XML}missing TPM device backend", tpm)
        version = tpm.backend_attrs.get("version")
        if arch == "aarch64" and tpm.model == "tpm-tis" and version in (None, "1.2"):
            yield Refusal("<tpm model='tpm-tis'>", f"{UNSUPPORTED}TPM 1.2 is not supported on architecture "
                                                   "'aarch64'", tpm)


@rule
def chardevs(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    d = domain.devices
    for chr_ in [*d.serials, *d.parallels, *d.channels, *d.consoles]:
        element = f"<{chr_.kind} type='{chr_.type}'>"
        if chr_.type == "unix" and not chr_.source_attr("path") and chr_.target_type != "virtio":
            yield Refusal(element, f"{INTERNAL}Missing source path attribute for char device", chr_)
        for src in chr_.sources:
            rec = _child(src.children, "reconnect")
            if rec is not None and rec.get("enabled") == "yes":
                generated = chr_.kind == "channel" and \
                    src.attrs.get("path", "").startswith("/var/lib/libvirt/qemu/channel/target/domain-")
                if src.attrs.get("mode", "connect") != "connect" or generated:  # generated paths: bind mode
                    yield Refusal(element, f"{INTERNAL}chardev reconnect is possible only for connect mode", chr_)
                if rec.get("timeout") == "0":
                    yield Refusal(element, "invalid argument: chardev reconnect source timeout cannot be '0'", chr_)
        if chr_.type == "tcp" and chr_.protocol not in (None, "raw", "telnet", "telnets", "tls"):
            yield Refusal(element, f"{UNSUPPORTED}tcp chardev protocol '{chr_.protocol}' not supported", chr_)
        if chr_.type == "tcp" and chr_.protocol == "tls":
            yield Refusal(element, f"{UNSUPPORTED}tcp chardev protocol 'tls' not supported", chr_)


# --- machine features, CPU, memory --------------------------------------------------------------------

_PSERIES_FEATURES = ("hpt", "htm", "nested-hv", "ccf-assist", "cfpc", "sbbc", "ibs")


@rule
def machine_features(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    name = machine_name(domain, caps)
    arch = domain.os.arch or (caps.arch if caps else "")
    gic = domain.features.get("gic")
    if gic is not None:
        version = gic.attrs.get("version")
        if version is not None and version not in ("2", "3", "host"):
            yield Refusal("<gic>", f"{XML}Invalid value for attribute 'version' in element 'gic': '{version}'.")
        elif not is_arm_virt(domain, name):
            yield Refusal("<gic>", f"{UNSUPPORTED}The 'gic' feature is not supported for architecture '{arch}' or "
                                   f"machine type '{name}'")
    for feat in _PSERIES_FEATURES:
        if feat in domain.features and not name.startswith("pseries"):
            yield Refusal(f"<{feat}>", f"{UNSUPPORTED}The '{feat}' feature is not supported for architecture "
                                       f"'{arch}' or machine type '{name}'")
    smm = domain.features.get("smm")
    tseg = _child(smm.children, "tseg") if smm is not None else None
    if tseg is not None:
        if not is_q35(name):
            yield Refusal("<tseg>", f"{UNSUPPORTED}SMM TSEG is only supported with q35 machine type")
        unit = (tseg.get("unit") or "MiB").lower()
        scale = {"b": 1, "bytes": 1, "kib": 1024, "k": 1024, "mib": 1 << 20, "m": 1 << 20, "gib": 1 << 30}.get(unit)
        if scale and (tseg.text or "").strip().isdigit() and int(tseg.text) * scale % (1 << 20):
            yield Refusal("<tseg>", f"{UNSUPPORTED}SMM TSEG size must be divisible by 1 MiB")
    if caps is not None and "acpi" in domain.features:
        found = caps.machine(name) if name else None
        if found is not None and found.acpi is False:
            yield Refusal("<acpi>", f"{UNSUPPORTED}machine type '{name}' does not support ACPI", by_qemu=True)
    timeout = domain.os.bootmenu.get("timeout")
    if timeout is not None and (not timeout.isdigit() or int(timeout) > 65535):
        yield Refusal("<bootmenu>", f"{UNSUPPORTED}invalid value for boot menu timeout, must be in range [0,65535]")


@rule
def cpu(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    cpu = domain.cpu
    if cpu is None:
        return
    cache = _child(cpu.extra, "cache")
    if cache is not None:
        mode = cache.get("mode")
        if mode == "emulate" and cache.get("level") != "3":
            yield Refusal("<cache>", f"{UNSUPPORTED}CPU cache mode 'emulate' can only be used with level='3'")
        if mode == "passthrough" and cpu.mode not in ("host-passthrough", "maximum"):
            yield Refusal("<cache>", f"{UNSUPPORTED}CPU cache mode 'passthrough' can only be used with "
                                     "'host-passthrough' / 'maximum' CPUs")
    phys = _child(cpu.extra, "maxphysaddr")
    if phys is not None and phys.get("mode") == "passthrough" and phys.get("bits"):
        yield Refusal("<maxphysaddr>", f"{UNSUPPORTED}CPU maximum physical address bits number specification "
                                       "cannot be used with mode='passthrough'")
    disabled = {n for p, n in cpu.features if p in ("disable", "forbid")}
    if "sve" in disabled and any(re.fullmatch(r"sve\d+", n) and p in ("require", "force")
                                 for p, n in cpu.features):
        yield Refusal("<feature name='sve'>", f"{UNSUPPORTED}SVE disabled, but SVE vector lengths provided")
    ids = [i if c.id is None else c.id for i, c in enumerate(cpu.numa)]  # no id: the cell's position
    if ids and sorted(ids) != list(range(len(ids))):
        yield Refusal("<cell>", f"{XML}Exactly one 'cell' element per guest NUMA cell allowed, non-contiguous "
                                "ranges or ranges not starting from 0 are not allowed")
    for cell in cpu.numa:
        dist = _child(cell.children, "distances")
        for sib in _children(list(dist) if dist is not None else [], "sibling"):
            if sib.get("id") is not None and int(sib.get("id")) not in ids:
                yield Refusal("<sibling>", f"{XML}'sibling_id {sib.get('id')}' does not refer to a valid cell "
                                           f"within NUMA 'cell id {cell.id}'", line=sib.sourceline)
        access = cell.attrs.get("memAccess")
        if access is not None and access not in ("shared", "private", "default"):
            yield Refusal("<cell>", f"{XML}Invalid value for attribute 'memAccess' in element 'cell': '{access}'.")


@rule
def memory(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    arch = domain.os.arch or (caps.arch if caps else "")
    if domain.max_memory_kib and (domain.cpu is None or not domain.cpu.numa) and not arch.startswith("ppc64"):
        yield Refusal("<maxMemory>", f"{UNSUPPORTED}At least one numa node has to be configured when enabling "
                                     "memory hotplug")
    cells = len(domain.cpu.numa) if domain.cpu is not None else 0
    for mem in domain.devices.memories:
        if mem.target_node is not None and cells and mem.target_node >= cells:
            yield Refusal(f"<memory model='{mem.model}'>", f"can't add memory backend for guest node "
                                                           f"'{mem.target_node}' as the guest has only '{cells}' NUMA "
                                                           "nodes configured", mem)
    nt = domain.numatune
    if nt is not None:
        mode = nt.memory.get("mode")
        if nt.memnodes and not cells:
            yield Refusal("<memnode>", f"{XML}Element 'memnode' is invalid without any guest NUMA cells")
        for node in nt.memnodes:
            if mode == "restrictive" and node.get("mode") != "restrictive":
                yield Refusal("<memnode>", f"{XML}'restrictive' mode is required in memnode element when mode is "
                                           "'restrictive' in memory element")
            if node.get("mode") == "restrictive" and mode != "restrictive":
                yield Refusal("<memnode>", f"{XML}'restrictive' mode is required in memory element when mode is "
                                           "'restrictive' in memnode element")
        if nt.memory.get("placement") == "static" and not nt.memory.get("nodeset") and \
                domain.vcpu_attrs.get("placement") == "auto":
            yield Refusal("<numatune>", f"{UNSUPPORTED}nodeset for NUMA memory tuning must be set if 'placement' "
                                        "is 'static'")
        if nt.memnodes and (nt.memory.get("placement") == "auto" or
                            (not nt.memory.get("placement") and domain.vcpu_attrs.get("placement") == "auto"
                             and not nt.memory.get("nodeset"))):
            yield Refusal("<numatune>", f"{UNSUPPORTED}Per-node binding is not compatible with automatic NUMA "
                                        "placement.")
        nodeset = nt.memory.get("nodeset")
        if nodeset is not None and _bitmap(nodeset) == set():
            yield Refusal("<numatune>", f"{UNSUPPORTED}Invalid value of 'nodeset': {nodeset}")
    cpuset = domain.vcpu_attrs.get("cpuset")
    if cpuset is not None and _bitmap(cpuset) is None:
        yield Refusal("<vcpu>", f"invalid argument: Failed to parse bitmap '{cpuset}'")


# the guest's transparent huge page size, in KiB: a virtio-mem block's floor (virHostMemGetTHPSize; 2 MiB
# on x86 and Arm, libvirt's fallback too)
THP_KIB = 2048
SYSTEM_PAGE_BYTES = 4096


@rule
def memory_device_targets(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """virDomainMemoryDefValidate (domain_validate.c): a virtio-mem's requested size, block size and address
    fit each other; a virtio-pmem's address is page aligned; a virtio memory device's address range does
    not cover another's base address."""
    for mem in domain.devices.memories:
        what = f"<memory model='{mem.model}'>"
        size = mem.target_size_kib or 0
        if mem.model == "virtio-pmem" and mem.target_base is not None and mem.target_base % SYSTEM_PAGE_BYTES:
            yield Refusal(what, f"{UNSUPPORTED}memory address must be aligned to {SYSTEM_PAGE_BYTES} bytes", mem)
        if mem.model == "virtio-mem":
            block = mem.target_block_kib or 0
            requested = mem.target_requested_kib or 0
            if requested > size:
                yield Refusal(what, f"requested size must be smaller than or equal to @size ({size}KiB)", mem)
            if block & (block - 1) or not block:
                yield Refusal(what, "block size must be a power of two", mem)
            elif block < THP_KIB:
                yield Refusal(what, f"block size too small, must be at least {THP_KIB}KiB", mem)
            elif requested % block:
                yield Refusal(what, "requested size must be an integer multiple of block size", mem)
            elif (mem.target_base or 0) % (block * 1024):
                yield Refusal(what, "memory device address must be aligned to blocksize", mem)
        start = mem.target_base if mem.model in ("virtio-mem", "virtio-pmem") else None
        if not start:
            continue
        end = start + size * 1024
        for other in domain.devices.memories:
            if other is mem or other.model not in ("virtio-mem", "virtio-pmem") or not other.target_base:
                continue
            if start <= other.target_base < end:
                yield Refusal(what, f"{UNSUPPORTED}memory device address [0x{start:x}:0x{end:x}] overlaps with "
                                    f"other memory device (0x{other.target_base:x})", mem)


def _bitmap(text: str) -> set[int] | None:
    """libvirt's bitmap syntax ('0-3,^2'): the set, or None when it does not parse."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        neg = part.startswith("^")
        part = part.lstrip("^")
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            return None
        nums = set(range(int(m[1]), int(m[2] or m[1]) + 1))
        out = out - nums if neg else out | nums
    return out


@rule
def sysinfo(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    for el in _children(domain.extra, "sysinfo"):
        if el.get("type") != "smbios":
            continue
        for entry in el.iter("entry"):
            name, value = entry.get("name"), (entry.text or "").strip()
            if name == "date" and entry.getparent().tag == "bios" and \
                    not re.fullmatch(r"\d{2}/\d{2}/(\d{2}|\d{4})", value):
                yield Refusal("<sysinfo>", "Invalid BIOS 'date' format", line=entry.sourceline)
            if name == "uuid" and entry.getparent().tag == "system" and domain.uuid and \
                    value.replace("-", "").lower() != domain.uuid.replace("-", "").lower():
                yield Refusal("<sysinfo>", "UUID mismatch between <uuid> and <sysinfo>", line=entry.sourceline)


@rule
def seclabels(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    labels = _children(domain.extra, "seclabel")
    models = [s.get("model") for s in labels]
    seen: set[str] = set()
    for model in models:  # duplicates while reading the labels, a missing model after (virSecurityLabelDefsParseXML)
        if model is not None and model in seen:
            yield Refusal("<seclabel>", f"seclabel for model {model} is already provided")
        if model is not None:
            seen.add(model)
    if len(labels) > 1 and None in models:
        yield Refusal("<seclabel>", f"{XML}missing security model when using multiple labels",
                      line=labels[0].sourceline)
    for dev in domain.devices.disks:
        nodes = [*(dev.source.children if dev.source else []), *dev.extra]
        dlabels = _children(nodes, "seclabel")
        if len(dlabels) > 1 and any(s.get("model") is None for s in dlabels):
            yield Refusal(_disk(dev), f"{XML}missing security model when using multiple labels", dev)
        for s in dlabels:
            if s.get("relabel") == "yes" and _child(list(s), "label") is None and s.get("model"):
                yield Refusal(_disk(dev), f"{XML}Cannot specify relabel if label is missing. model={s.get('model')}",
                              dev)


@rule
def shmems(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    for el in domain.devices.other:
        if el.tag != "shmem":
            continue
        size = _child(list(el), "size")
        if size is not None:
            unit = (size.get("unit") or "b").lower()
            scale = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
                     "gib": 1 << 30}.get(unit, 1)
            n = int((size.text or "0").strip() or 0) * scale
            if n < (1 << 20) or n & (n - 1):
                yield Refusal("<shmem>", f"{XML}shmem size must be a power of 2 and at least 1 MiB (1024 KiB)",
                              line=el.sourceline)
        addr = _child(list(el), "address")
        if addr is not None and addr.get("type") != "pci":
            yield Refusal("<shmem>", f"{UNSUPPORTED}only 'pci' addresses are supported for the shared memory device",
                          line=el.sourceline)
        msi = _child(list(el), "msi")
        server = _child(list(el), "server")
        if msi is not None and server is None:
            yield Refusal("<shmem>", f"{XML}msi option is only supported with a server", line=el.sourceline)


@rule
def os_type(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """qemuValidateDomainDef: QEMU runs hvm guests only (not Xen's linux/xen/xenpvh, nor a container's exe)."""
    if domain.os.type != "hvm":
        arch = domain.os.arch or (caps.arch if caps is not None else "x86_64")
        emulator = domain.devices.emulator or f"/usr/bin/qemu-system-{arch}"
        yield Refusal("<os><type>", f"{UNSUPPORTED}Emulator '{emulator}' does not support os type '{domain.os.type}'")


@rule
def lifecycle_actions(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """qemuValidateLifecycleAction: rename-restart and (but on a crash) preserve have no meaning in the QEMU
    driver, nor does a power-off that restarts with a reboot that destroys."""
    actions = (domain.on_poweroff, domain.on_reboot, domain.on_crash)
    if "rename-restart" in actions:
        yield Refusal("<on_*>", f"{UNSUPPORTED}qemu driver doesn't support the 'rename-restart' action for "
                                "'on_reboot'/'on_poweroff'/'on_crash'")
    elif "preserve" in actions[:2]:
        yield Refusal("<on_*>", f"{UNSUPPORTED}qemu driver doesn't support the 'preserve' action for "
                                "'on_reboot'/'on_poweroff'")
    elif domain.on_poweroff == "restart" and domain.on_reboot == "destroy":
        yield Refusal("<on_reboot>", f"{UNSUPPORTED}qemu driver doesn't support 'onReboot' set to 'destroy and "
                                     "'onPoweroff' set to 'reboot'")


@rule
def virt_type(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """virQEMUCapsIsVirtTypeSupported: an hvf domain needs a QEMU built with the hvf accelerator (macOS)."""
    if domain.type == "hvf" and caps is not None and not caps.has("hvf"):
        emulator = domain.devices.emulator or f"/usr/bin/qemu-system-{domain.os.arch or caps.arch}"
        yield Refusal("<domain>", f"{UNSUPPORTED}Emulator '{emulator}' does not support virt type 'hvf'")


@rule
def firmware(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    loader, nvram = domain.os.loader, domain.os.nvram
    wanted = {c.get("name"): c.get("enabled") for c in domain.os.firmware_children
              if getattr(c, "tag", None) == "feature"}
    if domain.os.firmware and wanted.get("enrolled-keys") == "yes" and wanted.get("secure-boot") == "no":
        yield Refusal("<firmware>", "firmware feature 'enrolled-keys' cannot be enabled when firmware feature "
                                    "'secure-boot' is disabled")  # virDomainDefOSValidate
    if domain.os.firmware and nvram is not None and domain.os.firmware != "efi":  # virDomainDefOSValidate
        yield Refusal("<nvram>", f"firmware type '{domain.os.firmware}' does not support nvram")
    if loader is None:
        return
    stateless = loader.attrs.get("stateless") == "yes"
    if nvram is not None:
        if loader.attrs.get("type") == "rom":
            yield Refusal("<nvram>", "Only pflash loader type permits NVRAM")
        elif stateless and nvram.path:
            yield Refusal("<nvram>", "NVRAM is not permitted when loader is stateless")
        elif stateless and nvram.attrs.get("template"):
            yield Refusal("<nvram>", "NVRAM template is not permitted when loader is stateless")
    if loader.attrs.get("type", "rom") == "rom" and loader.attrs.get("stateless") == "no":
        yield Refusal("<loader>", "Only pflash loader type permits NVRAM")
    arch = domain.os.arch or (caps.arch if caps else "")
    if loader.attrs.get("type") == "pflash" and arch in ("x86_64", "i686") and "acpi" not in domain.features:
        yield Refusal("<loader>", f"{UNSUPPORTED}UEFI requires ACPI on this architecture")
    if not loader.path and domain.os.firmware is None:
        yield Refusal("<loader>", "no loader path specified and firmware auto selection disabled")


# libvirt's bound on a memory size: the largest signed 64-bit byte count, in KiB (virMemoryMaxValue)
MEMORY_MAX_KIB = (2**63 - 1) >> 10


@rule
def memory_alignment(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """qemuDomainAlignMemorySizes (qemu_domain.c): libvirt rounds each NUMA cell, the initial memory and
    maxMemory up to the alignment (1 MiB off ppc64, as argv.machine.aligned_kib) before building the command
    line, and refuses a size that no longer fits its bound. Only for a new start: an incoming migration keeps
    the sizes unaligned (harness.INCOMING)."""
    from conformance.argv.harness import INCOMING

    if INCOMING.get():
        return

    def aligned_kib(kib: int) -> int:
        return -(-kib // 1024) * 1024

    cells = domain.cpu.numa if domain.cpu is not None else []
    for i, cell in enumerate(cells):
        if aligned_kib(cell.memory_kib) > MEMORY_MAX_KIB:
            yield Refusal(f"<cell id='{i}'>", f"{UNSUPPORTED}memory size of NUMA node '{i}' overflowed after "
                                              "alignment")
    initial = sum(aligned_kib(c.memory_kib) for c in cells) or aligned_kib(domain.memory_kib or 0)
    if initial > MEMORY_MAX_KIB:
        yield Refusal("<memory>", f"{UNSUPPORTED}initial memory size overflowed after alignment")
    if domain.max_memory_kib is not None and aligned_kib(domain.max_memory_kib) > MEMORY_MAX_KIB:
        yield Refusal("<maxMemory>", f"{UNSUPPORTED}maximum memory size overflowed after alignment")


@cache
def _cpu_map() -> Any:
    """conformance.argv.cpu_map, imported at the first use (it imports this module), then kept: an import
    statement in a rule run for every build costs more than the check."""
    from conformance.argv import cpu_map

    return cpu_map


@rule
def cpu_feature_names(domain: Domain, caps: Capabilities | None) -> Iterator[Refusal]:
    """virCPUValidateFeatures (cpu.c, run when a domain starts): every <feature> of <cpu> must be a feature
    of libvirt's CPU map for the guest's arch. Without a map on this host there is nothing to check against."""
    cpu_map = _cpu_map()
    section = cpu_map.map_arch(domain.os.arch or (caps.arch if caps else ""))
    if domain.cpu is None or not domain.cpu.features or section is None:
        return
    try:
        known = cpu_map.feature_names(cpu_map.find_cpu_map(), section)
    except UnsupportedByQemu:
        return
    for _policy, name in domain.cpu.features:
        if known and name not in known:
            yield Refusal(f"<feature name='{name}'>", f"{UNSUPPORTED}unknown CPU feature: {name}")


RULE_NAMES = [r.__name__ for r in RULES]
