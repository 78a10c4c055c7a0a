"""What libvirt fills in before it builds a command line (post-parse defaults and aliases).

Implicit controllers and devices, default models, drive addresses, USB and
virtio-serial ports, aliases and boot indexes -- all recorded in the Ctx,
never written back into the parsed Domain.
"""

from __future__ import annotations

import copy
import re

from conformance.argv.context import Ctx
from conformance.argv.storage_source import data_store
from conformance.domain.model import (
    Address,
    Chardev,
    Controller,
    Device,
    Disk,
    DiskSource,
    Hostdev,
    Input,
    Interface,
    Iommu,
    Memballoon,
    Video,
    Watchdog,
)
from conformance.errors import DomainInvalid

# libvirt's default number of ports per USB controller model (domain_addr.c)
USB_PORTS = {"piix3-uhci": 2, "piix4-uhci": 2, "vt82c686b-uhci": 2, "ehci": 6, "ich9-ehci1": 6, "pci-ohci": 3,
             "nec-xhci": 4, "qemu-xhci": 4, "ich9-uhci1": 0, "ich9-uhci2": 0, "ich9-uhci3": 0}

# a USB2 set: ICH9's EHCI and its UHCI companions, each companion on its own first port of the EHCI's bus
USB2_MODELS = ("ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3")
USB2_COMPANION_START = {"ich9-uhci1": 0, "ich9-uhci2": 2, "ich9-uhci3": 4}

_DISK_PREFIX = {"ide": "hd", "sata": "sd", "scsi": "sd", "usb": "sd", "virtio": "vd", "fdc": "fd", "xen": "xvd",
                "sd": "mmcblk"}


def disk_index(name: str) -> int:
    """'vda' -> 0, 'sdb' -> 1, 'hdaa' -> 26 (libvirt's virDiskNameToIndex)."""
    m = re.match(r"^(?:hd|sd|vd|fd|xvd|ubd|mmcblk)([a-z]+)", name)
    if not m:
        return 0
    idx = 0
    for ch in m[1]:
        idx = idx * 26 + (ord(ch) - ord("a") + 1)
    return idx - 1


def disk_bus(disk: Disk) -> str:
    if disk.target_bus:
        return disk.target_bus
    dev = disk.target_dev
    if dev.startswith("hd"):
        return "ide"
    if dev.startswith("sd"):
        return "scsi"
    if dev.startswith("vd"):
        return "virtio"
    if dev.startswith("fd"):
        return "fdc"
    return "ide"


def prepare(ctx: Ctx) -> None:
    d = ctx.domain.devices
    _controllers(ctx)
    _disks(ctx)
    ctx.inputs = list(d.inputs)
    if ctx.is_x86 and (ctx.is_i440fx or ctx.is_q35):
        ctx.inputs += [Input(type="mouse", bus="ps2"), Input(type="keyboard", bus="ps2")]
    _chardevs(ctx)
    _verbatim_devices(ctx)
    # the primary video card goes first (libvirt moves the one marked primary='yes' there)
    ctx.videos = sorted(d.videos, key=lambda v: not v.primary)
    if d.graphics and not ctx.videos:
        ctx.videos = [Video(model=None)]
    ctx.watchdogs = list(d.watchdogs)
    if ctx.is_q35 and ctx.modern_libvirt and not any(w.model == "itco" for w in ctx.watchdogs):
        ctx.watchdogs.append(Watchdog(model="itco", action="reset"))
    ctx.memballoon = d.memballoon
    ctx.iommu = d.iommu
    if ctx.iommu is None and ctx.is_q35 and ctx.domain.vcpus > 255 and \
            all(ctx.caps.has(f) for f in ("intel-iommu", "intel-iommu.intremap", "intel-iommu.eim")):
        # more than 255 vCPUs need x2APIC interrupt remapping: an Intel IOMMU (qemuDomainDefAddDefaultDevices)
        ctx.iommu = Iommu(model="intel")
    if ctx.memballoon is None and (ctx.is_x86 or ctx.is_s390):
        ctx.memballoon = Memballoon(model="virtio")
    # a <interface type='hostdev'> is also a host device: libvirt lists those first
    ctx.hostdevs = [n for n in d.interfaces if n.type == "hostdev"] + list(d.hostdevs)
    ctx.audio_id = d.audios[0].id if d.audios else 1
    _usb_ports(ctx)
    _virtio_serial_ports(ctx)
    _memory_slots(ctx)
    _aliases(ctx)
    _boot_indexes(ctx)


# --- controllers ---------------------------------------------------------------------------


def default_usb_model(ctx: Ctx, implicit: bool = False) -> str:
    """libvirt's default USB controller model; on Arm boards other than virt, the one libvirt adds by
    itself keeps the historical OHCI while a <controller type='usb'/> without a model gets XHCI."""
    if ctx.is_i440fx:
        return "piix3-uhci"
    if ctx.arch in ("aarch64", "armv7l") and not ctx.is_arm_virt:
        if implicit and ctx.caps.has("pci-ohci"):
            return "pci-ohci"
        return "qemu-xhci" if ctx.caps.has("qemu-xhci") else "pci-ohci"
    if ctx.caps.has("qemu-xhci") or ctx.is_q35 or ctx.is_arm_virt:
        return "qemu-xhci"
    return "piix3-uhci"


def default_scsi_model(ctx: Ctx) -> str:
    if ctx.is_s390 or ctx.is_arm_virt:
        return "virtio-scsi"
    if ctx.caps.has("lsi"):
        return "lsilogic"
    return "virtio-scsi"


def insert_controller(conts: list[Controller], cont: Controller) -> None:
    """Keep controllers of one type together and ordered by index, a USB2 set's EHCI before its UHCI
    companions (virDomainControllerInsert)."""
    at = len(conts)
    ehci = cont.type == "usb" and cont.model == "ich9-ehci1"
    for i in range(len(conts) - 1, -1, -1):
        cur = conts[i]
        if cur.type != cont.type:
            continue
        if (cur.index or 0) > (cont.index or 0) or (ehci and cur.index == cont.index
                                                     and cur.model in USB2_COMPANION_START):
            at = i
        elif at == len(conts):
            at = i + 1
            break
    conts.insert(at, cont)


def _usb_address(el) -> Address | None:
    addr = next((c for c in el if c.tag == "address"), None)
    if addr is None:
        return None
    bus = addr.get("bus")
    return Address(type=addr.get("type", ""), bus=int(bus) if bus and bus.isdigit() else 0, port=addr.get("port"),
                   controller=int(addr.get("controller", "0")) if addr.get("controller", "0").isdigit() else 0)


def _pci_address(el) -> Address | None:
    addr = next((c for c in el if c.tag == "address"), None)
    if addr is None or addr.get("type") != "pci":
        return None
    return Address(type="pci", **{k: int(addr.get(k), 0) for k in ("domain", "bus", "slot", "function")
                                  if addr.get(k) is not None})


def _verbatim_devices(ctx: Ctx) -> None:
    """USB hubs and smart cards, which the model keeps verbatim; a smart card gets the CCID controller it
    sits on when the domain has none."""
    for el in ctx.domain.devices.other:
        if el.tag == "hub" and el.get("type") == "usb":
            ctx.hubs.append(Device(address=_usb_address(el), line=el.sourceline))
        elif el.tag == "smartcard":
            ctx.smartcards.append((Device(address=_usb_address(el), line=el.sourceline), el))
        elif el.tag == "vsock":
            ctx.vsocks.append((Device(address=_pci_address(el), line=el.sourceline), el))
        elif el.tag == "crypto":
            ctx.cryptos.append((Device(address=_pci_address(el), line=el.sourceline), el))
        elif el.tag == "pstore":
            ctx.pstores.append((Device(address=_pci_address(el), line=el.sourceline), el))
        elif el.tag == "shmem":
            ctx.shmems.append((Device(address=_pci_address(el), line=el.sourceline), el))
    if ctx.smartcards and not any(c.type == "ccid" for c in ctx.controllers):
        insert_controller(ctx.controllers, Controller(type="ccid", index=0))


def _controllers(ctx: Ctx) -> None:
    conts: list[Controller] = []
    next_index: dict[str, int] = {}
    last: Controller | None = None
    for orig in ctx.domain.devices.controllers:
        cont = copy.copy(orig)
        if cont.index is None and cont.type == "usb" and cont.model in USB2_MODELS and last is not None \
                and last.type == "usb" and last.model in USB2_MODELS and not any(
                    c.type == "usb" and c.index == last.index and c.model == cont.model for c in conts):
            cont.index = last.index  # joins the USB2 set just before it (one EHCI and its UHCI companions)
        if cont.index is None:
            used = {c.index for c in conts if c.type == cont.type}
            idx = next_index.get(cont.type, 0)
            while idx in used:
                idx += 1
            cont.index = idx
        next_index[cont.type] = max(next_index.get(cont.type, 0), cont.index + 1)
        if cont.type == "pci" and cont.model is None:
            cont.model = "pcie-root" if cont.index == 0 and (ctx.is_q35 or ctx.is_arm_virt) else (
                "pci-root" if cont.index == 0 else None)
        if cont.type == "usb" and cont.master_startport is None and cont.model in USB2_COMPANION_START:
            cont.master_startport = USB2_COMPANION_START[cont.model]
        insert_controller(conts, cont)
        last = cont
    ctx.controllers = conts

    def have(type_: str, index: int | None = None) -> bool:
        return any(c.type == type_ and (index is None or c.index == index) for c in conts)

    isapc = ctx.is_isapc  # an ISA-only PC: no PCI root, no USB
    if not have("pci", 0) and (ctx.is_q35 or ctx.is_arm_virt):
        insert_controller(conts, Controller(type="pci", index=0, model="pcie-root"))
    elif not have("pci", 0) and not isapc and (ctx.is_x86 or ctx.arch.startswith("ppc") or
                                               ctx.machine_name == "versatilepb"):
        insert_controller(conts, Controller(type="pci", index=0, model="pci-root"))
    if ctx.is_q35 and not have("sata", 0):
        insert_controller(conts, Controller(type="sata", index=0))
    if ctx.is_i440fx and not have("ide", 0):
        insert_controller(conts, Controller(type="ide", index=0))
    # PCs but isapc, and Arm boards that come with USB, get a default controller (qemuDomainDefAddDefaultDevices)
    arm_usb = ctx.is_arm_usb_board
    if ((ctx.is_x86 and not isapc) or arm_usb) and not have("usb"):
        insert_controller(conts, Controller(type="usb", index=0, model=default_usb_model(ctx, implicit=True)))
    # controllers the disks and channels need
    for disk in ctx.domain.devices.disks:
        bus = disk_bus(disk)
        if bus in ("scsi", "sata", "fdc", "ide") and disk.address is None:
            idx = _drive_address(ctx, disk, bus).controller or 0
        elif bus in ("scsi", "sata", "fdc", "ide") and disk.address is not None:
            idx = disk.address.controller or 0
        else:
            continue
        if bus == "fdc" or (bus == "ide" and ctx.is_i440fx and idx == 0) or (bus == "sata" and ctx.is_q35 and idx == 0):
            if not have(bus, idx):
                insert_controller(conts, Controller(type=bus, index=idx))
            continue
        if not have(bus, idx):
            insert_controller(conts, Controller(type=bus, index=idx))
    # SCSI host devices: a drive address each, then every SCSI controller up to the highest they name, of the
    # model of the controller that one is on (virDomainDefMaybeAddHostdevSCSIcontroller)
    scsi_hostdevs = [hd for hd in ctx.domain.devices.hostdevs if hd.mode == "subsystem" and hd.type == "scsi"]
    _scsi_hostdev_addresses(ctx, conts, scsi_hostdevs)
    if scsi_hostdevs:
        top_index, model = -1, None
        for hd in scsi_hostdevs:  # the model of the last controller found while the index grows
            index = ctx.address(hd).controller or 0  # type: ignore[union-attr]
            if index > top_index:
                top_index = index
                model = next((c.model for c in conts if c.type == "scsi" and c.index == index and c.model), model)
        for i in range(top_index + 1):
            if not have("scsi", i):
                insert_controller(conts, Controller(type="scsi", index=i, model=model))
    # every virtio-serial controller a virtio channel or console sits on (no address: the first, index 0)
    for chr_ in [*ctx.domain.devices.channels, *ctx.domain.devices.consoles]:
        if chr_.target_type != "virtio":
            continue
        idx = chr_.address.controller or 0 if chr_.address is not None and chr_.address.type == "virtio-serial" \
            else 0
        if not have("virtio-serial", idx):
            insert_controller(conts, Controller(type="virtio-serial", index=idx))
    vio_regs: set[int] = set()
    for cont in conts:
        if cont.type == "scsi" and cont.model == "ibmvscsi" and cont.address is None:
            reg = 0x2000  # libvirt's default spapr-vio register for SCSI (VIO_ADDR_SCSI)
            while reg in vio_regs:
                reg += 0x1000
            vio_regs.add(reg)
            ctx.addresses[id(cont)] = Address(type="spapr-vio", extra={"reg": hex(reg)})
        if cont.model is None and cont.type == "usb":
            cont.model = default_usb_model(ctx)
        elif cont.type == "scsi" and cont.model in (None, "auto"):  # auto: qemuDomainSetSCSIControllerModel
            cont.model = default_scsi_model(ctx)


# units a SCSI controller model takes (virDomainSCSIDriveAddressIsUsed): the highest, and one reserved
SCSI_MAX_UNIT = {"virtio-scsi": 16383, "virtio-transitional": 16383, "virtio-non-transitional": 16383,
                 "ibmvscsi": 31, "lsisas1068": 1, "lsisas1078": 255, "ncr53c90": 6, "dc390": 6, "am53c974": 6}
SCSI_RESERVED_UNIT = {"ibmvscsi": 7, "lsilogic": 7, "vmpvscsi": 7, "buslogic": 7}
SCSI_BUS_UNITS = 7  # the QEMU driver's units per controller when libvirt picks one (scsiBusMaxUnit)


def _scsi_hostdev_addresses(ctx: Ctx, conts: list[Controller], hostdevs: list[Hostdev]) -> None:
    """virDomainHostdevAssignAddress: a SCSI host device without an address takes the first unit (bus 0,
    target 0) that no SCSI disk or host device uses on controller 0, then 1, ... (libvirt adds no controller
    for it here: the controllers come from the addresses afterwards)."""
    used: set[tuple[int, int, int, int]] = set()

    def key(addr: Address) -> tuple[int, int, int, int]:
        return addr.controller or 0, addr.bus or 0, addr.target or 0, addr.unit or 0

    given = {key(hd.address) for hd in hostdevs if hd.address is not None and hd.address.type == "drive"}
    for disk in ctx.domain.devices.disks:
        if disk_bus(disk) != "scsi":
            continue
        where = key(disk.address if disk.address is not None else _drive_address(ctx, disk, "scsi"))
        if disk.address is None and where in given:  # virDomainDiskDefAssignAddress
            raise DomainInvalid(f"<disk target='{disk.target_dev}'>: unsupported configuration: using disk target "
                                f"name '{disk.target_dev}' conflicts with SCSI host device address "
                                "controller='{}' bus='{}' target='{}' unit='{}".format(*where),
                                path=ctx.domain.source, line=disk.line)
        used.add(where)
    for hd in hostdevs:  # virDomainHostdevDefPostParse
        if hd.address is not None and hd.address.type == "drive" and key(hd.address) in used:
            raise DomainInvalid("<hostdev>: XML error: SCSI host address controller='{}' bus='{}' target='{}' "
                                "unit='{}' in use by a SCSI disk".format(*key(hd.address)),
                                path=ctx.domain.source, line=hd.line)
    seen: set[tuple[int, int, int, int]] = set()
    for hd in hostdevs:  # virDomainDefHostdevValidate: two SCSI host devices on one address
        if hd.address is not None and hd.address.type == "drive":
            if key(hd.address) in seen:
                raise DomainInvalid("<hostdev>: unsupported configuration: SCSI host address controller='{}' "
                                    "bus='{}' target='{}' unit='{}' in use by another SCSI host device"
                                    .format(*key(hd.address)), path=ctx.domain.source, line=hd.line)
            seen.add(key(hd.address))
    used |= given

    def taken(controller: int, unit: int) -> bool:
        model = next((c.model for c in conts if c.type == "scsi" and c.index == controller), None) or ""
        return (controller, 0, 0, unit) in used or unit > SCSI_MAX_UNIT.get(model, unit) \
            or unit == SCSI_RESERVED_UNIT.get(model)

    for hd in hostdevs:
        if hd.address is not None:
            continue
        controller = 0
        while (unit := next((u for u in range(SCSI_BUS_UNITS) if not taken(controller, u)), None)) is None:
            controller += 1
        ctx.addresses[id(hd)] = Address(type="drive", controller=controller, bus=0, target=0, unit=unit)
        used.add((controller, 0, 0, unit))


# --- disks ---------------------------------------------------------------------------------


def _drive_address(ctx: Ctx, disk: Disk, bus: str) -> Address:
    idx = disk_index(disk.target_dev)
    if bus == "ide":
        return Address(type="drive", controller=idx // 4, bus=(idx % 4) // 2, target=0, unit=idx % 2)
    if bus == "sata":
        return Address(type="drive", controller=idx // 6, bus=0, target=0, unit=idx % 6)
    if bus == "fdc":
        return Address(type="drive", controller=0, bus=0, target=0, unit=idx)
    # scsi: 7 units per controller as libvirt maps sdX
    return Address(type="drive", controller=idx // 7, bus=0, target=0, unit=idx % 7)


def _disks(ctx: Ctx) -> None:
    """libvirt's disk order: grouped by bus in order of first appearance, by target index within a bus."""
    order: list[Disk] = []
    for disk in ctx.domain.devices.disks:
        bus = disk_bus(disk)
        at = len(order)
        for i in range(len(order) - 1, -1, -1):
            if disk_bus(order[i]) != bus:
                continue
            if disk_index(order[i].target_dev) > disk_index(disk.target_dev):
                at = i
            elif at == len(order):
                at = i + 1
                break
        order.insert(at, disk)
        if bus in ("ide", "sata", "fdc", "scsi") and disk.address is None:
            ctx.addresses[id(disk)] = _drive_address(ctx, disk, bus)
    seen: dict[tuple, Disk] = {}
    for disk in ctx.domain.devices.disks:  # a derived address may meet one the XML gives
        addr = ctx.address(disk)
        if addr is None or addr.type != "drive":
            continue
        key = (disk_bus(disk), addr.controller or 0, addr.bus or 0, addr.target or 0, addr.unit or 0)
        if key in seen:
            first = seen[key]
            raise DomainInvalid(f"<disk target='{disk.target_dev}'>: unsupported configuration: Found duplicate "
                                f"drive address for disk with target name '{first.target_dev}' "
                                f"controller='{key[1]}' bus='{key[2]}' target='{key[3]}' unit='{key[4]}'",
                                path=ctx.domain.source, line=disk.line)
        seen[key] = disk
    ctx.disks = order
    # node names: libvirt numbers storage sources in reverse order of the disk list, each disk's chain from
    # its top image down through its <backingStore> layers (top n, its backing n + 1, ...)
    with_source = [d for d in order if d.source is not None and (d.source.path or d.type in ("network", "nvme"))
                   and disk_bus(d) != "sd"]
    n = 1
    for disk in reversed(with_source):
        ctx.node_index[id(disk)] = n
        layers = [disk, *backing_chain(disk)[0]]  # each image's qcow2 data store takes the index after it
        n += sum(1 + (data_store(layer) is not None) for layer in layers) + len(throttle_filters(disk))
    for hd in ctx.domain.devices.hostdevs:  # then each SCSI host device's backend, in order
        if hd.mode == "subsystem" and hd.type == "scsi":
            ctx.node_index[id(hd)] = n
            n += 1


def throttle_filters(disk: Disk) -> list[str]:
    """The throttle groups of a disk's <throttlefilters>, in order (each a throttle filter node)."""
    filters = next((e for e in disk.extra if getattr(e, "tag", None) == "throttlefilters"), None)
    return [f.get("group", "") for f in (filters if filters is not None else []) if f.tag == "throttlefilter"]


def backing_chain(disk: Disk) -> tuple[list[Disk], bool]:
    """The <backingStore> layers below a disk's image, top down, each as a read-only Disk of its own type,
    format and source that keeps the disk's cache, io and discard modes (qemuDomainPrepareDiskSourceData:
    detect_zeroes is the top image's alone); and whether the chain ends in an empty <backingStore/> (a
    terminated chain: QEMU must not look for a backing file of the last layer)."""
    layers: list[Disk] = []
    el = next((e for e in disk.extra if getattr(e, "tag", None) == "backingStore"), None)
    inherited = {k: v for k, v in disk.driver.items() if k in ("name", "cache", "io", "discard")}
    while el is not None and el.get("type"):
        fmt = next((c for c in el if c.tag == "format"), None)
        src = next((c for c in el if c.tag == "source"), None)
        source = DiskSource.of(src)
        driver = dict(inherited)
        if fmt is not None and fmt.get("type"):
            driver["type"] = fmt.get("type")
        layers.append(Disk(type=el.get("type", "file"), device=disk.device, source=source, driver=driver,
                           driver_children=[c for c in (fmt if fmt is not None else []) if isinstance(c.tag, str)],
                           target_dev=disk.target_dev, target_bus=disk.target_bus, readonly=True, line=el.sourceline))
        el = next((c for c in el if c.tag == "backingStore"), None)
    return layers, el is not None


# --- character devices ---------------------------------------------------------------------


def console_is_serial(ctx: Ctx, console: Chardev) -> bool:
    target = console.target_type
    if target is None:
        target = "sclp" if ctx.is_s390 else "serial"
    return target == "serial"


def _chardevs(ctx: Ctx) -> None:
    d = ctx.domain.devices
    ctx.serials = list(d.serials)
    ctx.consoles = list(d.consoles)
    if ctx.consoles and console_is_serial(ctx, ctx.consoles[0]) and not ctx.serials:
        serial = copy.copy(ctx.consoles[0])
        serial.kind = "serial"
        serial.target_type = None
        serial.alias = None
        ctx.serials = [serial]


# --- USB and virtio-serial ports -----------------------------------------------------------


def usb_devices(ctx: Ctx) -> list:
    """Devices that sit on a USB port, in libvirt's order (virDomainUSBDeviceDefForeach: host devices, disks,
    CCID controllers, inputs, serial ports, sounds, redirected devices; then USB NICs and MTP filesystems)."""
    d = ctx.domain.devices
    out: list = [h for h in d.hostdevs if h.type == "usb"]
    out += [k for k in ctx.disks if disk_bus(k) == "usb"]
    out += [c for c in ctx.controllers if c.type == "ccid"]
    out += [i for i in ctx.inputs if i.bus == "usb"]
    out += [s for s in ctx.serials if s.target_type == "usb-serial"]
    out += [s for s in d.sounds if s.model == "usb"]
    out += [r for r in d.redirdevs if r.attrs.get("bus", "usb") == "usb"]
    out += [n for n in d.interfaces if n.model == "usb-net"]
    out += [f for f in d.filesystems if f.attrs.get("model") == "mtp" or f.driver.get("type") == "mtp"]
    return out


USB_HUB_PORTS = 8


def _has_port(dev: Device) -> bool:
    return dev.address is not None and dev.address.type == "usb" and bool(dev.address.port)


def _usb_ports(ctx: Ctx) -> None:
    usb = [c for c in ctx.controllers if c.type == "usb" and c.model != "none"]
    if not usb:
        return
    _add_usb_hubs(ctx, usb)
    taken: dict[int, set[str]] = {}
    hub_at: dict[int, set[str]] = {}  # the ports hubs sit on, per controller
    for dev in [*ctx.hubs, *usb_devices(ctx)]:
        if _has_port(dev):
            taken.setdefault(dev.address.bus or 0, set()).add(dev.address.port)
    for hub in ctx.hubs:
        if _has_port(hub):
            hub_at.setdefault(hub.address.bus or 0, set()).add(hub.address.port)
    # hubs first, each one's ports open for what follows (qemuDomainAssignUSBHubs), then the other devices
    for dev in [*ctx.hubs, *usb_devices(ctx)]:
        if _has_port(dev):
            continue
        for cont in usb:
            bus = cont.index or 0
            nports = int(cont.attrs.get("ports", 0)) or USB_PORTS.get(cont.model or "", 4)
            port = _free_usb_port([str(p) for p in range(1, nports + 1)], taken.setdefault(bus, set()),
                                  hub_at.setdefault(bus, set()))
            if port is not None:
                taken[bus].add(port)
                if dev in ctx.hubs:
                    hub_at[bus].add(port)
                ctx.addresses[id(dev)] = Address(type="usb", bus=bus, port=port)
                break
        else:
            raise DomainInvalid("no free USB port for a USB device", path=ctx.domain.source, line=dev.line,
                                hint="add a USB hub or a controller with more ports")


def _free_usb_port(ports: list[str], taken: set[str], hubs: set[str]) -> str | None:
    """The first free port of a hub, else the first free port below its hubs, in port order
    (virDomainUSBAddressFindFreePort)."""
    port = next((p for p in ports if p not in taken), None)
    if port is not None:
        return port
    for p in ports:
        if p in hubs:
            found = _free_usb_port([f"{p}.{k}" for k in range(1, USB_HUB_PORTS + 1)], taken, hubs)
            if found is not None:
                return found
    return None


def _add_usb_hubs(ctx: Ctx, usb: list[Controller]) -> None:
    """More USB devices than ports: libvirt adds hubs, each costing one port and bringing eight
    (qemuDomainUSBAddressAddHubs)."""
    if ctx.hubs:
        return
    count = len(usb_devices(ctx))
    available = sum(int(c.attrs.get("ports", 0)) or USB_PORTS.get(c.model or "", 4) for c in usb)
    if count > available:
        for _ in range(-(-(count - available + 1) // (USB_HUB_PORTS - 1))):
            ctx.hubs.append(Device())


def _virtio_serial_ports(ctx: Ctx) -> None:
    conts = sorted((c for c in ctx.controllers if c.type == "virtio-serial"), key=lambda c: c.index or 0)
    if not conts:
        return
    used: dict[int, set[int]] = {c.index or 0: set() for c in conts}
    chans = [c for c in ctx.domain.devices.channels if c.target_type == "virtio"]
    for chan in chans:
        if chan.address is not None and chan.address.port:
            used.setdefault(chan.address.controller or 0, set()).add(int(chan.address.port))
    for chan in chans:
        if chan.address is not None and chan.address.port:
            continue
        want = chan.address.controller if chan.address is not None else None
        for cont in conts:
            if want is not None and cont.index != want:
                continue
            nports = int(cont.attrs.get("ports", 31))
            ports = used[cont.index or 0]
            port = next((p for p in range(1, nports) if p not in ports), None)
            if port is not None:
                ports.add(port)
                ctx.addresses[id(chan)] = Address(type="virtio-serial", controller=cont.index or 0, bus=0,
                                                  port=str(port))
                break
        else:
            if want is not None:
                continue
            # every controller is full: libvirt adds one at the lowest free index and takes its first
            # port (virDomainVirtioSerialAddrNext, virDomainDefMaybeAddController)
            index = next(i for i in range(len(conts) + 1) if i not in used)
            cont = Controller(type="virtio-serial", index=index)
            insert_controller(ctx.controllers, cont)
            conts.append(cont)
            used[index] = {1}
            ctx.addresses[id(chan)] = Address(type="virtio-serial", controller=index, bus=0, port="1")


# --- aliases -------------------------------------------------------------------------------


def controller_alias(ctx: Ctx, cont: Controller) -> str:
    t, i = cont.type, cont.index or 0
    if t == "pci":
        if cont.model == "pcie-root":
            return "pcie.0"
        return f"pci.{i}"
    if t == "ide" and i == 0 and ctx.is_i440fx:
        return "ide"
    if t == "sata" and i == 0 and ctx.is_q35:
        return "ide"
    if t == "usb" and i == 0:
        return "usb"
    return f"{t}{i}"


def disk_alias(ctx: Ctx, disk: Disk) -> str:
    bus = disk_bus(disk)
    addr = ctx.address(disk)
    if bus in ("ide", "sata", "fdc", "scsi") and addr is not None:
        prefix = {"fdc": "fdc"}.get(bus, bus)
        if bus == "scsi":
            cont = ctx.controller("scsi", addr.controller or 0)
            if cont is not None and cont.model == "lsilogic":
                return f"scsi{addr.controller or 0}-{addr.bus or 0}-{addr.unit or 0}"
            return f"scsi{addr.controller or 0}-{addr.bus or 0}-{addr.target or 0}-{addr.unit or 0}"
        return f"{prefix}{addr.controller or 0}-{addr.bus or 0}-{addr.unit or 0}"
    if bus == "usb":
        return f"usb-disk{disk_index(disk.target_dev)}"
    return f"{bus}-disk{disk_index(disk.target_dev)}"


def _aliases(ctx: Ctx) -> None:
    d = ctx.domain.devices
    a = ctx.aliases
    for disk in ctx.disks:
        a[id(disk)] = disk.alias if _user_alias(disk.alias) else disk_alias(ctx, disk)
    for cont in ctx.controllers:
        a[id(cont)] = cont.alias if _user_alias(cont.alias) and cont.type != "pci" else controller_alias(ctx, cont)
    _numbered(ctx, d.filesystems, "fs")
    net_index = 0
    for net in d.interfaces:
        if net.type == "hostdev":
            continue
        a[id(net)] = net.alias if _user_alias(net.alias) else f"net{net_index}"
        net_index += 1
    _numbered(ctx, ctx.hostdevs, "hostdev")
    _numbered(ctx, ctx.serials, "serial")
    _numbered(ctx, d.parallels, "parallel")
    _numbered(ctx, d.channels, "channel")
    # with a serial port, console 0 is always that serial (libvirt adds one when the first console is not):
    # the others count from 1
    shift = 1 if ctx.serials and ctx.consoles and not console_is_serial(ctx, ctx.consoles[0]) else 0
    for i, con in enumerate(ctx.consoles):
        if i == 0 and console_is_serial(ctx, con) and ctx.serials:
            a[id(con)] = "serial0"
        else:
            a[id(con)] = f"console{i + shift}"
    _numbered(ctx, ctx.inputs, "input")
    _numbered(ctx, d.sounds, "sound")
    _numbered(ctx, ctx.videos, "video")
    _numbered(ctx, ctx.watchdogs, "watchdog")
    _numbered(ctx, d.redirdevs, "redir")
    _numbered(ctx, d.rngs, "rng")
    _numbered(ctx, ctx.hubs, "hub")
    _numbered(ctx, [dev for dev, _ in ctx.smartcards], "smartcard")
    _numbered(ctx, [dev for dev, _ in ctx.vsocks], "vsock")
    _numbered(ctx, [dev for dev, _ in ctx.cryptos], "crypto")
    _numbered(ctx, [dev for dev, _ in ctx.pstores], "pstore")
    _numbered(ctx, [dev for dev, _ in ctx.shmems], "shmem")
    _numbered(ctx, d.tpms, "tpm")
    if ctx.memballoon is not None:
        a[id(ctx.memballoon)] = "balloon0"
    if ctx.iommu is not None:
        a[id(ctx.iommu)] = "iommu0"
    counters: dict[str, int] = {}
    for mem in d.memories:
        prefix = {"nvdimm": "nvdimm", "virtio-pmem": "virtiopmem", "virtio-mem": "virtiomem"}.get(mem.model, "dimm")
        n = counters.get(prefix, 0)
        slot = ctx.mem_slots.get(id(mem))
        if slot is not None:  # a DIMM is named after its slot (qemuAssignDeviceMemoryAlias)
            n = slot
        counters[prefix] = n + 1
        a[id(mem)] = mem.alias if _user_alias(mem.alias) else f"{prefix}{n}"


def _memory_slots(ctx: Ctx) -> None:
    """DIMM slots (qemuDomainAssignMemorySlots): with memory hotplug, each (nv)dimm without a slot takes the
    first slot no other device names; without, only the given slots."""
    dimms = [m for m in ctx.domain.devices.memories if m.model in ("dimm", "nvdimm")]
    for mem in dimms:
        if mem.address is not None and mem.address.type == "dimm" and mem.address.slot is not None:
            ctx.mem_slots[id(mem)] = mem.address.slot
    if not ctx.domain.max_memory_kib:
        return
    taken = set(ctx.mem_slots.values())
    for mem in dimms:
        if id(mem) not in ctx.mem_slots:
            slot = next(i for i in range(len(dimms) + len(taken) + 1) if i not in taken)
            ctx.mem_slots[id(mem)] = slot
            taken.add(slot)


def _user_alias(alias: str | None) -> bool:
    return bool(alias and alias.startswith("ua-"))


def _numbered(ctx: Ctx, devices: list, prefix: str) -> None:
    for i, dev in enumerate(devices):
        ctx.aliases[id(dev)] = dev.alias if _user_alias(dev.alias) else f"{prefix}{i}"


# --- boot order ----------------------------------------------------------------------------


def _boot_indexes(ctx: Ctx) -> None:
    """<boot order=> per device, or <os><boot dev=> turned into bootindex on the first device of each kind."""
    devices = [*ctx.disks, *ctx.domain.devices.interfaces, *ctx.hostdevs, *ctx.domain.devices.redirdevs,
               *ctx.domain.devices.filesystems]
    explicit = [dev for dev in devices if dev.boot_order is not None]
    if explicit:
        for dev in explicit:
            ctx.boot_index[id(dev)] = dev.boot_order  # type: ignore[assignment]
        return
    boot_devs = ctx.domain.os.boot_devs
    if not boot_devs and ctx.domain.os.type == "hvm":
        boot_devs = ["hd"]  # libvirt's default boot device (also with a direct kernel boot)
    # a kind's bootindex is its place in <os><boot dev=>, even where an earlier kind has no device
    # (qemuProcessPrepareDeviceBootorder)
    for n, dev in enumerate(boot_devs, 1):
        target = None
        if dev == "hd":
            target = next((k for k in ctx.disks if k.device in ("disk", "lun") and disk_bus(k) != "fdc"), None)
        elif dev == "cdrom":
            target = next((k for k in ctx.disks if k.device == "cdrom"), None)
        elif dev == "fd":
            target = next((k for k in ctx.disks if k.device == "floppy"), None)
        elif dev == "network":
            target = next((i for i in ctx.domain.devices.interfaces if isinstance(i, Interface)), None)
        if target is not None and id(target) not in ctx.boot_index:
            ctx.boot_index[id(target)] = n
