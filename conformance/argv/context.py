"""The state of one argv build: the domain, the capabilities, what libvirt derives from them.

Nothing here mutates the parsed Domain: devices libvirt adds implicitly
(controllers, PS/2 inputs, a memballoon, ...) live in the context's own
lists, and derived facts (aliases, addresses, node names) in dicts keyed by
the device object's id().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.argv.options import compact_json, escape_opt_value
from conformance.caps.model import Capabilities, MachineType
from conformance.domain.model import Address, Controller, Device, Domain


def _scalar(value: Any) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    return escape_opt_value(value)


def _ranges(numbers: list[int]) -> list[str]:
    """[0, 1, 2, 5] -> ['0-2', '5']."""
    out: list[str] = []
    for n in sorted(set(numbers)):
        if out and n == int(out[-1].rpartition("-")[2]) + 1:
            out[-1] = f"{out[-1].partition('-')[0]}-{n}"
        else:
            out.append(str(n))
    return out


def comma_syntax(lead: str, props: dict[str, Any], *, bitmap_arrays: bool = False) -> str:
    """{"driver": "x", "id": "y"} -> 'x,id=y' (QEMU's key=value syntax, commas doubled).

    A list repeats its key per item; with ``bitmap_arrays`` (how libvirt writes -object) a list of
    numbers becomes ranges: host-nodes=0-7."""
    parts = [_scalar(props[lead])] if lead in props else []
    for key, value in props.items():
        if key == lead or value is None:
            continue
        if isinstance(value, list):
            if bitmap_arrays and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                value = _ranges(value)
            parts.extend(f"{key}={_scalar(v)}" for v in value)
        else:
            parts.append(f"{key}={_scalar(value)}")
    return ",".join(parts)


# <driver> attribute -> the virtio transport property libvirt sets from it (qemuBuildVirtioOptionsProps)
_VIRTIO_OPTIONS = (("iommu", "iommu_platform"), ("ats", "ats"), ("packed", "packed"), ("page_per_vq", "page-per-vq"))


def driver_attrs(dev: Device) -> dict[str, str]:
    """A device's <driver> attributes, typed where the model has them, else from its verbatim children."""
    attrs = getattr(dev, "driver", None)
    if isinstance(attrs, dict) and attrs:
        return attrs
    for el in dev.extra:
        if getattr(el, "tag", None) == "driver":
            return dict(el.attrib)
    return {}


def virtio_options(dev: Device) -> dict[str, bool]:
    attrs = driver_attrs(dev)
    return {prop: attrs[xml] == "on" for xml, prop in _VIRTIO_OPTIONS if attrs.get(xml) in ("on", "off")}


def rom_props(rom: dict[str, str]) -> dict[str, Any]:
    """<rom bar= file= enabled=> of a PCI device: rombar is a number on QEMU's side; a disabled ROM is an
    empty romfile (qemuBuildRomProps)."""
    props: dict[str, Any] = {}
    if rom.get("enabled") == "no":
        return {"romfile": ""}
    if rom.get("bar") in ("on", "off"):
        props["rombar"] = int(rom["bar"] == "on")
    if rom.get("file") is not None:
        props["romfile"] = rom["file"]
    return props


def to_json(props: dict[str, Any], keep_null: tuple[str, ...] = ()) -> str:
    """Compact JSON of the set properties; a None in ``keep_null`` is written as JSON null."""
    return compact_json({k: v for k, v in props.items() if v is not None or k in keep_null})


def apply_overrides(props: dict[str, Any], overrides: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A -device's properties with the <qemu:frontend> overrides of its alias applied in order: set as string,
    signed/unsigned number or bool, or removed (qemuBuildDeviceCommandlineHandleOverrides)."""
    props = dict(props)
    for name, kind, value in overrides:
        if kind == "remove":
            props.pop(name, None)
        elif kind in ("signed", "unsigned"):
            props[name] = int(value)
        elif kind == "bool":
            props[name] = value == "true"
        else:
            props[name] = value
    return props


def _syntax(caps: Capabilities) -> tuple[bool, bool, bool, bool, bool]:
    """(JSON -device, JSON -netdev, JSON -object, -blockdev, modern libvirt) of a fixture."""
    # behaviour that changed with libvirt itself, not with QEMU: follow the libvirt release that wrote
    # imported capabilities (provenance), the newest behaviour otherwise
    lv = caps.provenance.libvirt_version
    modern = lv is None or tuple(int(x) for x in lv.split(".")[:2]) >= (10, 0)
    return (caps.has("device.json"), caps.has("netdev.json"), caps.has("object.qapified"), caps.has("blockdev"),
            modern)


@dataclass
class Ctx:
    domain: Domain
    caps: Capabilities
    arch: str
    machine_name: str
    machine: MachineType | None
    argv: list[str] = field(default_factory=list)
    # the device lists libvirt works on: the domain's plus implicit ones, in libvirt's order
    controllers: list[Controller] = field(default_factory=list)
    inputs: list = field(default_factory=list)
    serials: list = field(default_factory=list)
    consoles: list = field(default_factory=list)
    videos: list = field(default_factory=list)
    watchdogs: list = field(default_factory=list)
    hostdevs: list = field(default_factory=list)  # (Hostdev | Interface of type hostdev)
    memballoon: Any = None
    iommu: Any = None  # the domain's <iommu>, or the one libvirt adds
    hubs: list = field(default_factory=list)  # <hub type='usb'> (kept verbatim by the model) as Devices
    smartcards: list = field(default_factory=list)  # (Device, <smartcard> element)
    vsocks: list = field(default_factory=list)  # (Device, <vsock> element)
    cryptos: list = field(default_factory=list)  # (Device, <crypto> element)
    pstores: list = field(default_factory=list)  # (Device, <pstore> element)
    shmems: list = field(default_factory=list)  # (Device, <shmem> element)
    # <qemu:override><qemu:device alias=A><qemu:frontend><qemu:property name type value>: A -> [(name, type, value)]
    device_overrides: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    disks: list = field(default_factory=list)
    aliases: dict[int, str] = field(default_factory=dict)
    addresses: dict[int, Address] = field(default_factory=dict)
    boot_index: dict[int, int] = field(default_factory=dict)
    node_index: dict[int, int] = field(default_factory=dict)
    mem_slots: dict[int, int] = field(default_factory=dict)  # DIMM slot per (nv)dimm memory device
    audio_id: int | None = None
    fdsets: int = 0  # fd sets handed out (-add-fd set=N)
    pflash: Any = None  # firmware.Pflash: the pflash images (given or auto-selected firmware)
    bios: str | None = None  # a ROM firmware (-bios)

    def __post_init__(self) -> None:
        (self.json_device, self.json_netdev, self.json_object, self.blockdev,
         self.modern_libvirt) = self.caps.derived("argv-syntax", lambda: _syntax(self.caps))
        name = self.machine_name
        self.is_i440fx = name == "pc" or name.startswith(("pc-i440fx", "pc-0.", "pc-1."))
        self.is_q35 = name == "q35" or name.startswith("pc-q35")
        self.is_x86 = self.arch in ("x86_64", "i686")
        self.is_isapc = self.is_x86 and name == "isapc"  # an ISA-only PC: no PCI root, no USB
        self.is_arm_virt = self.arch in ("aarch64", "armv7l") and (name == "virt" or name.startswith("virt-"))
        self.is_s390 = self.arch.startswith("s390")
        # machines with a PCI bus (qemuDomainSupportsPCI); on Arm only virt has several (multibus)
        arm = self.arch in ("aarch64", "armv7l")
        self.supports_pci = not arm or self.is_arm_virt or name == "versatilepb"
        self.pci_multibus = not arm or self.is_arm_virt
        self.is_arm_usb_board = arm and name.startswith(("realview", "versatile"))  # Arm boards that come with USB

    # --- emitting options --------------------------------------------------------------

    def pass_fd(self, opaque: str, fd: int) -> int:
        """-add-fd for a file libvirt opens itself (fd: the number the harness gives that kind of file):
        the next fd set; returns its number."""
        fdset = self.fdsets
        self.fdsets += 1
        self.add("-add-fd", f"set={fdset},fd={fd},opaque={opaque}")
        return fdset

    def add(self, *args: str) -> None:
        self.argv.extend(args)

    def device(self, props: dict[str, Any], *, virtio: Device | None = None) -> None:
        """One -device; ``virtio``: the domain device whose <driver> virtio options follow the driver name."""
        if virtio is not None and (options := virtio_options(virtio)):
            props = {"driver": props["driver"], **options, **props}
        driver = props.get("driver", "")
        tmodel = getattr(virtio, "model", None) or (getattr(virtio, "attrs", None) or {}).get("model")
        if tmodel in ("virtio-transitional", "virtio-non-transitional") and driver.startswith("virtio-") \
                and driver.endswith("-pci"):  # the (non-)transitional flavour of the same device
            driver = f"{driver}-{tmodel.removeprefix('virtio-')}"
            props = {**props, "driver": driver}
        if self.arch in ("aarch64", "armv7l") and driver.startswith("virtio-") and driver.endswith("-pci") \
                and "bus" not in props:
            # a virtio device without a PCI address on Arm sits on virtio-mmio: the -device flavour
            props = {**props, "driver": driver.removesuffix("-pci") + "-device"}
        props = {k: v for k, v in props.items() if v is not None}
        if self.json_device and props.get("id") in self.device_overrides:
            props = apply_overrides(props, self.device_overrides[props["id"]])
        self.argv += ["-device", to_json(props) if self.json_device else comma_syntax("driver", props)]

    def object(self, props: dict[str, Any]) -> None:
        props = {k: v for k, v in props.items() if v is not None}
        self.argv += ["-object", to_json(props) if self.json_object
                      else comma_syntax("qom-type", props, bitmap_arrays=True)]

    def netdev(self, props: dict[str, Any]) -> None:
        props = {k: v for k, v in props.items() if v is not None}
        self.argv += ["-netdev", to_json(props) if self.json_netdev else comma_syntax("type", props)]

    def blockdev_arg(self, props: dict[str, Any], keep_null: tuple[str, ...] = ()) -> None:
        self.argv += ["-blockdev", to_json(props, keep_null)]

    # --- derived facts ------------------------------------------------------------------

    def alias(self, dev: Device) -> str | None:
        return self.aliases.get(id(dev)) or dev.alias

    def address(self, dev: Device) -> Address | None:
        return self.addresses.get(id(dev)) or dev.address

    def pci_bus_alias(self, bus: int) -> str:
        for cont in self.controllers:
            if cont.type == "pci" and cont.index == bus:
                if cont.model == "pcie-root":
                    return "pcie.0"
                if cont.model == "pci-root":
                    if bus == 0:
                        return "pci.0" if self.pci_multibus else "pci"  # a single bus is just 'pci'
                    return self.alias(cont) or f"pci.{bus}"
                return self.alias(cont) or f"pci.{bus}"
        return f"pci.{bus}"

    def address_props(self, dev: Device) -> dict[str, Any]:
        """bus/addr (PCI), or the CCW/ISA equivalents, as libvirt puts them on -device."""
        addr = self.address(dev)
        if addr is None:
            return {}
        if addr.type == "pci":
            props: dict[str, Any] = {"bus": self.pci_bus_alias(addr.bus or 0)}
            if addr.multifunction is not None:
                props["multifunction"] = addr.multifunction
            slot = f"0x{addr.slot or 0:x}"
            props["addr"] = slot if not addr.function else f"{slot}.0x{addr.function:x}"
            acpi = next((e for e in dev.extra if getattr(e, "tag", None) == "acpi"), None)
            if acpi is not None and acpi.get("index"):
                props["acpi-index"] = int(acpi.get("index"))
            return props
        if addr.type == "ccw":  # libvirt writes CSSID.SSID.DEVNO in hex: fe.0.000a
            cssid, ssid, devno = (int(addr.extra.get(k, d), 0) for k, d in
                                  (("cssid", "0xfe"), ("ssid", "0"), ("devno", "0")))
            return {"devno": f"{cssid:x}.{ssid:x}.{devno:04x}"}
        if addr.type == "usb":
            cont = self.controller("usb", addr.bus or 0)
            return {"bus": f"{self.alias(cont) if cont else 'usb'}.0", "port": addr.port}
        if addr.type == "spapr-vio" and "reg" in addr.extra:
            return {"reg": int(addr.extra["reg"], 0)}
        if addr.type == "isa":
            props = {}
            if "iobase" in addr.extra:
                props["iobase"] = int(addr.extra["iobase"], 0)
            if "irq" in addr.extra:
                props["irq"] = int(addr.extra["irq"], 0)
            return props
        return {}

    def controller(self, type_: str, index: int) -> Controller | None:
        for cont in self.controllers:
            if cont.type == type_ and cont.index == index:
                return cont
        return None

    @property
    def has_pcie_root(self) -> bool:
        return self._has_root("pcie-root")

    @property
    def has_pci_root(self) -> bool:
        return self._has_root("pci-root")

    def _has_root(self, model: str) -> bool:
        return any(c.model == model and c.type == "pci" for c in self.controllers)
