"""PCI addresses the way libvirt assigns them when the XML has none.

The rules (libvirt's qemu_domain_address.c and conf/domain_addr.c): every
device gets "connect flags" (conventional PCI, PCI Express, a controller
kind); buses accept some flags; the first pass runs "dry" and grows the bus
list (pci-bridge on pci-root machines, pcie-root-port on pcie-root machines,
pcie-root-port + pcie-to-pci-bridge for a conventional device on a pure PCIe
machine); the auto-added controllers join the domain and a second pass
assigns the real addresses in libvirt's device order. pcie-root-ports share
a slot (functions 0-7) when they are auto-placed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from conformance.argv.context import Ctx
from conformance.argv.defaults import disk_bus, insert_controller
from conformance.argv.net import nic_model
from conformance.domain.model import Address, Controller, Device
from conformance.errors import DomainInvalid

HOTPLUGGABLE, AUTOASSIGN, AGGREGATE, INTEGRATED = 1, 2, 4, 8
PCI_DEVICE, PCIE_DEVICE, ROOT_PORT, SWITCH_UP, SWITCH_DOWN = 16, 32, 64, 128, 256
DMI_BRIDGE, PXB, PXB_PCIE, PCI_BRIDGE, PCIE_TO_PCI = 512, 1024, 2048, 4096, 8192
TYPES = (PCI_DEVICE | PCIE_DEVICE | ROOT_PORT | SWITCH_UP | SWITCH_DOWN | DMI_BRIDGE | PXB | PXB_PCIE | PCI_BRIDGE
         | PCIE_TO_PCI)
ENDPOINT = PCI_DEVICE | PCIE_DEVICE

CONTROLLER_CONNECT = {
    "pci-bridge": PCI_BRIDGE, "pci-expander-bus": PXB, "pcie-expander-bus": PXB_PCIE,
    "dmi-to-pci-bridge": DMI_BRIDGE, "pcie-to-pci-bridge": PCIE_TO_PCI, "pcie-root-port": ROOT_PORT | AGGREGATE,
    "pcie-switch-upstream-port": SWITCH_UP, "pcie-switch-downstream-port": SWITCH_DOWN,
}

# controller model -> the QEMU device libvirt uses for it
PCI_MODEL_NAMES = {
    "pci-bridge": "pci-bridge", "dmi-to-pci-bridge": "i82801b11-bridge", "pcie-to-pci-bridge": "pcie-pci-bridge",
    "pcie-switch-upstream-port": "x3130-upstream", "pcie-switch-downstream-port": "xio3130-downstream",
    "pci-expander-bus": "pxb", "pcie-expander-bus": "pxb-pcie",
}


@dataclass
class Bus:
    model: str
    flags: int
    min_slot: int
    max_slot: int
    functions: list[int] = field(default_factory=lambda: [0] * 32)
    aggregate: list[bool] = field(default_factory=lambda: [False] * 32)


def _bus(model: str, hotplug: bool = True) -> Bus:
    hp = HOTPLUGGABLE if hotplug else 0
    if model == "pci-root":
        return Bus(model, AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | PXB | hp, 1, 31)
    if model == "pci-bridge":
        return Bus(model, AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | hp, 1, 31)
    if model == "pci-expander-bus":
        return Bus(model, AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | hp, 0, 31)
    if model == "pcie-root":
        return Bus(model, PCIE_DEVICE | ROOT_PORT | DMI_BRIDGE | PXB_PCIE, 1, 31)
    if model == "dmi-to-pci-bridge":
        return Bus(model, PCI_DEVICE | PCI_BRIDGE, 0, 31)
    if model == "pcie-to-pci-bridge":
        return Bus(model, AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | hp, 1, 31)
    if model in ("pcie-root-port", "pcie-switch-downstream-port"):
        return Bus(model, AUTOASSIGN | PCIE_DEVICE | SWITCH_UP | PCIE_TO_PCI | hp, 0, 0)
    if model == "pcie-switch-upstream-port":
        return Bus(model, SWITCH_DOWN, 0, 31)
    if model == "pcie-expander-bus":
        return Bus(model, ROOT_PORT | DMI_BRIDGE, 0, 31)
    raise DomainInvalid(f"unknown PCI controller model {model!r}",
                        hint="use pci-root, pcie-root, pci-bridge, pcie-root-port, dmi-to-pci-bridge, ...")


def _mismatch(bus_no: int, bus_flags: int, dev_flags: int, from_config: bool) -> tuple[str, int] | None:
    """Why a bus does not take a device of these connect flags (virDomainPCIAddressFlagsCompatible, its checks in
    its order): ("integrated" | "autoassign" | "hotplug" | "type", the device's flags as the last check saw them),
    or None when it does. Returns a key, not libvirt's message: the hot path of PCI assignment asks for every
    device of every combination (_incompatibility words a refusal)."""
    if dev_flags & INTEGRATED:
        if bus_no != 0:
            return "integrated", dev_flags
        bus_flags |= AUTOASSIGN | PCI_DEVICE  # the root bus takes an integrated device of either kind
    if from_config:
        if bus_flags & ENDPOINT:
            bus_flags |= ENDPOINT
        if dev_flags & PCI_BRIDGE:
            dev_flags |= PCI_DEVICE
    elif dev_flags & AUTOASSIGN and not bus_flags & AUTOASSIGN:
        return "autoassign", dev_flags
    if dev_flags & HOTPLUGGABLE and not bus_flags & HOTPLUGGABLE:
        return "hotplug", dev_flags
    return None if dev_flags & bus_flags & TYPES else ("type", dev_flags)


# what a device of each connect type needs, for libvirt's refusal (virDomainPCIAddressFlagsCompatible), in the order
# it tests them
_CONNECT_NAMES = ((PCI_DEVICE, "standard PCI device"), (PCIE_DEVICE, "PCI Express device"),
                  (ROOT_PORT, "pcie-root-port"), (SWITCH_UP, "pcie-switch-upstream-port"),
                  (SWITCH_DOWN, "pcie-switch-downstream-port"), (DMI_BRIDGE, "dmi-to-pci-bridge"),
                  (PCIE_TO_PCI, "pcie-to-pci-bridge"), (PXB, "pci-expander-bus"), (PXB_PCIE, "pcie-expander-bus"),
                  (PCI_BRIDGE, "pci-bridge"))
# the controller that a device of these connect flags is, for libvirt's refusal when no bus can be added for it
# (virDomainPCIControllerConnectTypeToModel)
_CONNECT_MODELS = ((ROOT_PORT, "pcie-root-port"), (SWITCH_UP, "pcie-switch-upstream-port"),
                   (SWITCH_DOWN, "pcie-switch-downstream-port"), (DMI_BRIDGE, "dmi-to-pci-bridge"),
                   (PXB, "pci-expander-bus"), (PXB_PCIE, "pcie-expander-bus"), (PCI_BRIDGE, "pci-bridge"))


def _incompatibility(addr: Address, bus_flags: int, dev_flags: int, from_config: bool) -> str:
    """libvirt's message for a device whose connect flags the bus at its address does not take (_mismatch); an XML
    error for an address from the domain, an internal error for one libvirt picked."""
    kind = "XML error: " if from_config else "internal error: "
    where, b = _where(addr), addr.bus or 0
    why, dev_flags = _mismatch(b, bus_flags, dev_flags, from_config) or ("type", dev_flags)
    if why == "integrated":
        return f"{kind}The device at PCI address {where} needs to be an integrated device (bus=0)"
    if why == "autoassign":
        return (f"{kind}The device at PCI address {where} was auto-assigned this address, but the PCI controller "
                f"with index='{b}' doesn't allow auto-assignment")
    if why == "hotplug":
        return (f"{kind}The device at PCI address {where} requires hotplug capability, but the PCI controller with "
                f"index='{b}' doesn't support hotplug")
    needs = next((name for flag, name in _CONNECT_NAMES if dev_flags & flag), "device")
    return (f"{kind}The device at PCI address {where} cannot be plugged into the PCI controller with index='{b}'. "
            f"It requires a controller that accepts a {needs}.")


def _where(addr: Address) -> str:
    """0000:00:1f.2 (formatted only for an error: reserve runs for every device of every combination)."""
    return f"{addr.domain or 0:04x}:{addr.bus or 0:02x}:{addr.slot or 0:02x}.{addr.function or 0}"


class AddressSet:
    def __init__(self, ctx: Ctx, dry_run: bool, pcie_to_pci_ok: bool) -> None:
        self.ctx = ctx
        self.dry_run = dry_run
        self.pcie_to_pci_ok = pcie_to_pci_ok
        self.buses: list[Bus] = []
        # connect flags -> the first bus that may still take such a device: a bus that had no place for it
        # never gets one (addresses are only ever taken, compatibility does not change, buses are appended)
        self._first_free: dict[int, int] = {}

    def fail(self, message: str) -> DomainInvalid:
        return DomainInvalid(message, path=self.ctx.domain.source)

    def grow(self, addr: Address, flags: int) -> None:
        add = (addr.bus or 0) - len(self.buses) + 1
        if add <= 0:
            return
        need_dmi = need_p2p = False
        if flags & PCI_DEVICE:
            model = "pci-bridge"
            if not any(b.flags & PCI_BRIDGE for b in self.buses):
                need_dmi, need_p2p = not self.pcie_to_pci_ok, self.pcie_to_pci_ok
                if add == 1:
                    add += 1
                    addr.bus = (addr.bus or 0) + 1
        elif flags & (PCIE_DEVICE | SWITCH_UP):
            model = "pcie-root-port"
        else:  # virDomainPCIAddressSetGrow
            model = next((name for flag, name in _CONNECT_MODELS if flags & flag), None)
            raise self.fail(f"internal error: a PCI slot is needed to connect a PCI controller model='{model}', but "
                            "none is available, and it cannot be automatically added" if model else
                            f"internal error: Cannot automatically add a new PCI bus for a device with connect flags "
                            f"{flags & TYPES:02x}")
        new: list[Bus] = []
        if need_dmi:
            new.append(_bus("dmi-to-pci-bridge", hotplug=False))
        if need_p2p:
            port = _bus("pcie-root-port")
            port.flags = PCIE_TO_PCI
            new += [port, _bus("pcie-to-pci-bridge")]
        while len(new) < add:
            new.append(_bus(model))
        self.buses += new

    def reserve(self, addr: Address, flags: int, from_config: bool) -> None:
        b = addr.bus or 0
        if self.dry_run and b >= len(self.buses):
            self.grow(addr, flags)
            b = addr.bus or 0
        slot, fn = addr.slot or 0, addr.function or 0
        if b >= len(self.buses):
            raise self.fail(f"invalid PCI address {_where(addr)}: only PCI buses up to {len(self.buses) - 1} "
                            "are available")
        bus = self.buses[b]
        if _mismatch(b, bus.flags, flags, from_config):
            raise self.fail(_incompatibility(addr, bus.flags, flags, from_config))
        if slot < bus.min_slot or slot > bus.max_slot:
            raise self.fail(f"invalid PCI address {_where(addr)}: slot must be {bus.min_slot}..{bus.max_slot}")
        if bus.functions[slot] & (1 << fn):
            # virDomainPCIAddressReserveAddrInternal: an XML error for an address the domain gave
            raise self.fail(f"{'XML' if from_config else 'internal'} error: Attempted double use of PCI Address "
                            f"{_where(addr)}")
        if not bus.functions[slot] and flags & AGGREGATE:
            bus.aggregate[slot] = True
        bus.functions[slot] |= 1 << fn

    def _find_on_bus(self, b: int, flags: int) -> Address | None:
        bus = self.buses[b]
        if _mismatch(b, bus.flags, flags, False):
            return None
        if not flags & AGGREGATE:  # the first free slot
            try:
                slot = bus.functions.index(0, bus.min_slot, bus.max_slot + 1)
            except ValueError:
                return None
            return Address(type="pci", domain=0, bus=b, slot=slot, function=0)
        for slot in range(bus.min_slot, bus.max_slot + 1):
            if bus.functions[slot] == 0:
                return Address(type="pci", domain=0, bus=b, slot=slot, function=0)
            if bus.aggregate[slot]:
                for fn in range(8):
                    if not bus.functions[slot] & (1 << fn):
                        return Address(type="pci", domain=0, bus=b, slot=slot, function=fn)
        return None

    def next_addr(self, flags: int) -> Address:
        for b in range(self._first_free.get(flags, 0), len(self.buses)):
            found = self._find_on_bus(b, flags)
            if found is not None:
                self._first_free[flags] = b
                return found
        self._first_free[flags] = len(self.buses)
        if self.dry_run:
            addr = Address(type="pci", domain=0, bus=len(self.buses), slot=0, function=0)
            self.grow(addr, flags)
            addr.slot = self.buses[addr.bus or 0].min_slot
            return addr
        raise self.fail("no more available PCI slots")

    def reserve_next(self, flags: int) -> Address:
        addr = self.next_addr(flags)
        self.reserve(addr, flags, False)
        return addr

    def slot_in_use(self, bus: int, slot: int) -> bool:
        return bool(self.buses[bus].functions[slot])


# --- device connect flags ----------------------------------------------------------------------


def _device_flags(ctx: Ctx) -> list[tuple[Device, int]]:
    """Devices that want a PCI address with their connect flags, in libvirt's assignment order."""
    pcie = (PCIE_DEVICE if ctx.has_pcie_root else PCI_DEVICE) | AUTOASSIGN
    pci = PCI_DEVICE | AUTOASSIGN
    virtio = pcie
    d = ctx.domain.devices
    out: list[tuple[Device, int]] = []
    for cont in ctx.controllers:
        if cont.type == "pci" and cont.model not in ("pci-root", "pcie-root"):
            out.append((cont, CONTROLLER_CONNECT.get(cont.model or "", 0)))
    # transitional virtio models only work in conventional PCI slots (qemuDomainDeviceCalculatePCIConnectFlags)
    out += [(fs, pci if fs.attrs.get("model") == "virtio-transitional" and fs.driver.get("type") != "virtiofs"
             else virtio) for fs in d.filesystems if fs.driver.get("type") != "mtp"]
    for net in d.interfaces:
        if net.type == "hostdev" or net.model == "usb-net":
            continue
        model = nic_model(ctx, net)
        if model in ("virtio", "virtio-non-transitional"):
            flags = virtio
        elif model == "virtio-transitional":
            flags = pci
        elif model in ("e1000e", "igb") or model.lower() not in _LIBVIRT_NIC_MODELS:
            flags = pcie  # a model libvirt has no name for (ne2k_pci, pcnet, tulip...) is placed as PCIe
        else:
            flags = pci
        out.append((net, flags))
    for snd in d.sounds:
        if snd.model not in ("sb16", "pcspk", "usb", "ich7"):
            out.append((snd, pci))
    for cont in ctx.controllers:
        if cont.type in ("pci", "fdc", "ccid") or (cont.type == "usb" and cont.model == "none"):
            continue
        if cont.type == "ide" and cont.index == 0:
            continue
        flags = pci
        if cont.type == "usb" and cont.model in ("nec-xhci", "qemu-xhci"):
            flags = pcie
        elif cont.type == "scsi":
            if cont.model in ("virtio-scsi", "virtio-non-transitional"):
                flags = virtio
            elif cont.model in (None, "ncr53c90", "ibmvscsi"):
                continue
        elif cont.type == "virtio-serial":
            flags = pci if cont.model == "virtio-transitional" else virtio
        elif cont.type not in ("usb", "sata", "ide"):
            continue
        out.append((cont, flags))
    for disk in ctx.disks:
        if disk_bus(disk) == "virtio":
            out.append((disk, pci if disk.model == "virtio-transitional" else virtio))
    for hd in ctx.hostdevs:
        if getattr(hd, "type", "") == "scsi_host":  # vhost-scsi follows the virtio rules
            out.append((hd, pci if hd.attrs.get("model") == "virtio-transitional" else virtio))
        elif getattr(hd, "type", "") in ("pci", "hostdev", "mdev"):
            out.append((hd, pcie))
    mb = ctx.memballoon
    if mb is not None and mb.model in ("virtio", "virtio-non-transitional", "virtio-transitional"):
        out.append((mb, pci if mb.model == "virtio-transitional" else virtio))
    out += [(rng, pci if rng.model == "virtio-transitional" else virtio) for rng in d.rngs]
    out += [(wd, pci) for wd in ctx.watchdogs if wd.model == "i6300esb"]
    for vid in ctx.videos:
        model = video_model(ctx, vid)
        if model in ("none", "ramfb"):
            continue
        out.append((vid, virtio if model == "virtio" else pcie if model == "bochs" else pci))
    out += [(shmem, pci) for shmem, _ in ctx.shmems]  # after the videos (qemuDomainAssignDevicePCISlots)
    for inp in ctx.inputs:
        if inp.bus == "virtio":
            out.append((inp, pci if inp.model == "virtio-transitional" else virtio))
    for ser in ctx.serials:
        if ser.target_type == "pci-serial" or ser.target_model == "pci-serial":
            out.append((ser, pci))
    if ctx.iommu is not None and ctx.iommu.model == "virtio":
        out.append((ctx.iommu, virtio | INTEGRATED))
    out += [(vsock, pci if el.get("model") == "virtio-transitional" else virtio) for vsock, el in ctx.vsocks]
    for mem in d.memories:
        if mem.model in ("virtio-pmem", "virtio-mem"):
            out.append((mem, virtio))
    out += [(crypto, virtio) for crypto, _ in ctx.cryptos]
    for panic in d.panics:
        if panic.model == "pvpanic":
            out.append((panic, pci | INTEGRATED))
    out += [(pstore, pci) for pstore, _ in ctx.pstores]
    return out


# libvirt's named NIC models (virDomainNetModel, the same in 9.0 and 11.3 but igb, added in 9.3): any other
# model string is "unknown", which qemuDomainDeviceCalculatePCIConnectFlags places as a PCIe device (libvirt
# 9.0 puts ne2k_pci, pcnet and tulip on pcie-root-ports: the libvirt oracle, conformance/libvirt_oracle.py)
_LIBVIRT_NIC_MODELS = {
    "netfront", "rtl8139", "virtio", "e1000", "e1000e", "igb", "virtio-transitional", "virtio-non-transitional",
    "usb-net", "spapr-vlan", "lan9118", "scm91c111", "vlance", "vmxnet", "vmxnet2", "vmxnet3", "am79c970a",
    "am79c973", "82540em", "82545em", "82543gc",
}


def video_model(ctx: Ctx, vid) -> str:
    if vid.model:
        return vid.model
    if ctx.is_arm_virt or ctx.is_s390:
        return "virtio"
    return "cirrus"


# --- the two passes ------------------------------------------------------------------------------


def _new_set(ctx: Ctx, dry_run: bool, nbuses: int) -> AddressSet:
    addrs = AddressSet(ctx, dry_run, ctx.caps.has("pcie-pci-bridge"))
    root_model = "pcie-root" if ctx.has_pcie_root else "pci-root"
    buses: list[Bus | None] = [None] * nbuses
    for cont in ctx.controllers:
        if cont.type == "pci" and cont.index is not None and cont.index < nbuses:
            buses[cont.index] = _bus(cont.model or "pci-bridge", cont.target.get("hotplug") != "off")
    default = "pcie-root-port" if ctx.has_pcie_root else "pci-bridge"
    if nbuses and buses[0] is None:
        buses[0] = _bus(root_model)
    addrs.buses = [b if b is not None else _bus(default) for b in buses]
    return addrs


def _collect(ctx: Ctx, addrs: AddressSet, wanted: list[tuple[Device, int]]) -> None:
    """Reserve the addresses the XML gives (libvirt: qemuDomainCollectPCIAddress)."""
    flags_of = {id(dev): flags for dev, flags in wanted}
    for dev in _all_with_info(ctx):
        addr = dev.address
        if addr is None or addr.type != "pci":
            continue
        if isinstance(dev, Controller) and (addr.bus or 0) == 0 and addr.slot == 1 and (
                (dev.type == "ide" and dev.index == 0 and addr.function == 1)
                or (dev.type == "usb" and dev.index == 0 and dev.model == "piix3-uhci" and addr.function == 2)):
            continue
        full = Address(type="pci", domain=addr.domain, bus=addr.bus, slot=addr.slot, function=addr.function)
        addrs.reserve(full, flags_of.get(id(dev)) or PCI_DEVICE, True)


def _all_with_info(ctx: Ctx) -> list[Device]:
    d = ctx.domain.devices
    out: list[Device] = [*ctx.disks, *ctx.controllers, *d.filesystems, *d.interfaces, *ctx.serials, *d.channels,
                         *ctx.inputs, *d.sounds, *ctx.videos, *d.hostdevs, *ctx.watchdogs, *d.rngs, *d.memories,
                         *d.panics]
    if ctx.memballoon is not None:
        out.append(ctx.memballoon)
    if ctx.iommu is not None:
        out.append(ctx.iommu)
    out += [vsock for vsock, _ in ctx.vsocks]
    out += [dev for dev, _ in (*ctx.cryptos, *ctx.pstores, *ctx.shmems)]
    return out


def _chipset(ctx: Ctx, addrs: AddressSet) -> None:
    """Fixed addresses of the i440fx/q35 integrated devices and the primary video card."""
    flags = AUTOASSIGN | PCI_DEVICE
    if ctx.is_i440fx:
        for cont in ctx.controllers:
            fixed = None
            if cont.type == "ide" and cont.index == 0:
                fixed = 1
            elif cont.type == "usb" and cont.index == 0 and cont.model == "piix3-uhci":
                fixed = 2
            if fixed is None:
                continue
            if cont.address is None:
                ctx.addresses[id(cont)] = Address(type="pci", domain=0, bus=0, slot=1, function=fixed)
            if addrs.buses:
                addrs.reserve(Address(type="pci", domain=0, bus=0, slot=1, function=fixed), flags, True)
        if addrs.buses:
            addrs.reserve(Address(type="pci", domain=0, bus=0, slot=1, function=0), flags, True)
            addrs.reserve(Address(type="pci", domain=0, bus=0, slot=1, function=3), flags, True)
        _primary_video(ctx, addrs, 2, flags)
    elif ctx.is_q35:
        flags = PCIE_DEVICE
        for cont in ctx.controllers:
            if cont.type == "sata" and cont.index == 0 and cont.address is None:
                ctx.addresses[id(cont)] = Address(type="pci", domain=0, bus=0, slot=0x1F, function=2)
            elif cont.type == "pci" and cont.model == "dmi-to-pci-bridge" and cont.address is None \
                    and not addrs.slot_in_use(0, 0x1E):
                addrs.reserve(Address(type="pci", domain=0, bus=0, slot=0x1E, function=0), flags, True)
                ctx.addresses[id(cont)] = Address(type="pci", domain=0, bus=0, slot=0x1E, function=0)
        # the first USB2 set goes where real ICH9 has it, 00:1d (EHCI at .7), when that slot is free
        # and the second at 00:1a (qemuDomainValidateDevicePCISlotsQ35)
        for index, slot in ((0, 0x1D), (1, 0x1A)):
            usb2 = [c for c in ctx.controllers if c.type == "usb" and c.index == index and c.model in USB2_FUNCTIONS]
            if not (addrs.buses and usb2 and all(c.address is None for c in usb2)) or addrs.slot_in_use(0, slot):
                continue
            for cont in usb2:
                addr = Address(type="pci", domain=0, bus=0, slot=slot, function=USB2_FUNCTIONS[cont.model or ""])
                addrs.reserve(addr, flags, True)
                ctx.addresses[id(cont)] = addr
        if addrs.buses:
            for cont in ctx.controllers:
                if cont.type == "sata" and cont.index == 0 and cont.address is None:
                    addrs.reserve(Address(type="pci", domain=0, bus=0, slot=0x1F, function=2), flags, True)
            addrs.reserve(Address(type="pci", domain=0, bus=0, slot=0x1F, function=0), flags, True)
            addrs.reserve(Address(type="pci", domain=0, bus=0, slot=0x1F, function=3), flags, True)
        _primary_video(ctx, addrs, 1, flags)
        _ich9_sound(ctx, addrs, flags)


def _ich9_sound(ctx: Ctx, addrs: AddressSet, flags: int) -> None:
    """q35: the first ICH9 sound card without an address goes where real ICH9 has its HD audio, 00:1b.0,
    unless that slot is taken."""
    if not addrs.buses or addrs.slot_in_use(0, 0x1B):
        return
    for snd in ctx.domain.devices.sounds:
        if snd.model != "ich9" or not _wants(ctx, snd):
            continue
        addr = Address(type="pci", domain=0, bus=0, slot=0x1B, function=0)
        addrs.reserve(addr, flags, True)
        ctx.addresses[id(snd)] = addr
        return


def _primary_video(ctx: Ctx, addrs: AddressSet, slot: int, flags: int) -> None:
    if not ctx.videos or not addrs.buses:
        return
    vid = ctx.videos[0]
    if video_model(ctx, vid) in ("none", "ramfb") or vid.address is not None or id(vid) in ctx.addresses:
        return
    if addrs.slot_in_use(0, slot):
        return  # assigned with the other videos later
    addr = Address(type="pci", domain=0, bus=0, slot=slot, function=0)
    addrs.reserve(addr, flags, True)
    ctx.addresses[id(vid)] = addr


def _wants(ctx: Ctx, dev: Device) -> bool:
    return dev.address is None and id(dev) not in ctx.addresses


# the function of each USB2 controller in its shared slot: EHCI at 7, its UHCI companions at 0-2
USB2_FUNCTIONS = {"ich9-ehci1": 7, "ich9-uhci1": 0, "ich9-uhci2": 1, "ich9-uhci3": 2}


def _usb2_slot(ctx: Ctx, cont: Controller) -> Address | None:
    """The slot an earlier controller of the same USB2 set (same index) already has."""
    for other in ctx.controllers:
        if other is cont:
            return None
        if other.type == "usb" and other.index == cont.index and other.model in USB2_FUNCTIONS:
            addr = ctx.address(other)
            if addr is not None and addr.type == "pci":
                return addr
    return None


def _assign(ctx: Ctx, addrs: AddressSet, wanted: list[tuple[Device, int]], record: bool) -> None:
    for dev, flags in wanted:
        if not flags or not _wants(ctx, dev):
            continue
        if isinstance(dev, Controller) and dev.type == "usb" and dev.model in USB2_FUNCTIONS:
            # one USB2 set shares a slot (qemuDomainAssignDevicePCISlots): the first takes a whole slot
            fn = USB2_FUNCTIONS[dev.model]
            shared = _usb2_slot(ctx, dev) or addrs.next_addr(flags)
            addr = Address(type="pci", domain=0, bus=shared.bus, slot=shared.slot, function=fn)
            addrs.reserve(addr, flags, True)
            ctx.addresses[id(dev)] = addr
            continue
        addr = addrs.reserve_next(flags)
        if record:
            ctx.addresses[id(dev)] = addr


def _prime_virtio_mmio(ctx: Ctx) -> None:
    """qemuDomainAssignVirtioMMIOAddresses: an Arm virt guest that already has a virtio-mmio device gets
    virtio-mmio for every virtio device without an address (qemuDomainPrimeVirtioDeviceAddresses' list)."""
    everything = _all_with_info(ctx)
    if not ctx.is_arm_virt or not any((a := ctx.address(dev)) is not None and a.type == "virtio-mmio"
                                      for dev in everything):
        return
    d = ctx.domain.devices
    primed: list[Device] = [disk for disk in ctx.disks if disk_bus(disk) == "virtio"]
    primed += [net for net in d.interfaces if net.type != "hostdev" and nic_model(ctx, net).startswith("virtio")]
    primed += [vid for vid in ctx.videos if video_model(ctx, vid) == "virtio"]
    primed += [inp for inp in ctx.inputs if inp.bus == "virtio"]
    primed += [c for c in ctx.controllers if c.type in ("virtio-serial", "scsi")]
    primed += [hd for hd in ctx.hostdevs if getattr(hd, "type", "") == "scsi_host"]
    if ctx.memballoon is not None and ctx.memballoon.model != "none":
        primed.append(ctx.memballoon)
    primed += [*d.rngs, *(m for m in d.memories if m.model in ("virtio-pmem", "virtio-mem"))]
    for dev in primed:
        if _wants(ctx, dev):
            ctx.addresses[id(dev)] = Address(type="virtio-mmio")


def assign_pci_addresses(ctx: Ctx) -> None:
    _prime_virtio_mmio(ctx)
    if not (ctx.has_pcie_root or ctx.has_pci_root) or not ctx.supports_pci:
        return
    max_idx = max((c.index or 0 for c in ctx.controllers if c.type == "pci"), default=-1)
    nbuses = max_idx + 1
    wanted = _device_flags(ctx)
    primary_before = dict(ctx.addresses)
    # pass 1 (dry run): how many buses are needed
    addrs = _new_set(ctx, True, nbuses)
    _collect(ctx, addrs, wanted)
    _chipset(ctx, addrs)
    if ctx.has_pci_root and any(any(f == 0 for f in b.functions[b.min_slot:b.max_slot + 1]) for b in addrs.buses):
        addrs.reserve_next(AUTOASSIGN | PCI_DEVICE)  # keep a slot free for a future bridge
    _assign(ctx, addrs, wanted, record=False)
    if max_idx <= 0 and len(addrs.buses) > max_idx + 1 and ctx.has_pcie_root:
        addrs.reserve_next(AUTOASSIGN | PCIE_DEVICE)  # one spare hotpluggable root port
    for i in range(1, len(addrs.buses)):
        if ctx.controller("pci", i) is not None:
            continue
        cont = Controller(type="pci", index=i, model=addrs.buses[i].model)
        insert_controller(ctx.controllers, cont)
        ctx.aliases[id(cont)] = f"pci.{i}"
        addrs.reserve_next(CONTROLLER_CONNECT.get(cont.model or "", 0))
    # pass 2: the real addresses
    ctx.addresses = primary_before
    addrs = _new_set(ctx, False, len(addrs.buses))
    wanted = _device_flags(ctx)
    _collect(ctx, addrs, wanted)
    _chipset(ctx, addrs)
    _assign(ctx, addrs, wanted, record=True)
    _set_multifunction(ctx)
    _controller_defaults(ctx)


def _set_multifunction(ctx: Ctx) -> None:
    """multifunction=on at function 0 of every slot that has other functions in use, unless set off."""
    used: dict[tuple[int, int], list[tuple[Device, Address]]] = {}
    for dev in _all_with_info(ctx):
        addr = ctx.address(dev)
        if addr is not None and addr.type == "pci":
            used.setdefault((addr.bus or 0, addr.slot or 0), []).append((dev, addr))
    for pairs in used.values():
        if len(pairs) > 1 and any(a.function for _, a in pairs):  # a lone device in its slot stays as it is
            for dev, a in pairs:
                if not a.function and a.multifunction is None:
                    ctx.addresses[id(dev)] = replace(a, multifunction=True)


def _controller_defaults(ctx: Ctx) -> None:
    """QEMU model, chassis and port of PCI controllers (qemuDomainAssignPCIAddresses' last loop)."""
    for cont in ctx.controllers:
        if cont.type != "pci":
            continue
        addr = ctx.address(cont)
        extra: dict[str, str] = {}
        if cont.model == "pci-bridge" and "chassisNr" not in cont.target:
            extra["chassisNr"] = str(cont.index)
        elif cont.model in ("pcie-root-port", "pcie-switch-downstream-port"):
            if "chassis" not in cont.target:
                extra["chassis"] = str(cont.index)
            if "port" not in cont.target and addr is not None:
                port = ((addr.slot or 0) << 3) + (addr.function or 0) if cont.model == "pcie-root-port" \
                    else (addr.slot or 0)
                extra["port"] = hex(port)
        if extra:
            cont.target = {**cont.target, **extra}  # cont is the build's own copy
