"""Controllers: PCI controllers first (by index), then USB, SCSI, IDE, SATA, FDC, virtio-serial, CCID."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx
from conformance.argv.disk import iothread_mapping
from conformance.argv.pci import PCI_MODEL_NAMES
from conformance.domain.model import Controller
from conformance.errors import DomainInvalid, UnsupportedByQemu

USB_DRIVERS = {
    "piix3-uhci": "piix3-usb-uhci", "piix4-uhci": "piix4-usb-uhci", "ehci": "usb-ehci",
    "ich9-ehci1": "ich9-usb-ehci1", "ich9-uhci1": "ich9-usb-uhci1", "ich9-uhci2": "ich9-usb-uhci2",
    "ich9-uhci3": "ich9-usb-uhci3", "vt82c686b-uhci": "vt82c686b-usb-uhci", "pci-ohci": "pci-ohci",
    "nec-xhci": "nec-usb-xhci", "qemu-xhci": "qemu-xhci",
}
SCSI_DRIVERS = {
    "virtio-scsi": "virtio-scsi-pci", "virtio-transitional": "virtio-scsi-pci-transitional",
    "virtio-non-transitional": "virtio-scsi-pci-non-transitional", "lsilogic": "lsi", "lsisas1068": "mptsas1068",
    "lsisas1078": "megasas", "vmpvscsi": "pvscsi", "ibmvscsi": "spapr-vscsi", "buslogic": "lsi",
    # libvirt (qemuBuildControllerSCSIDevStr, 11.3 as 9.0) writes "dc-390", a name QEMU has never had
    # (its type is dc390, the name libvirt probes for the capability): such a domain cannot start under
    # libvirt, and the argv stage refuses it on a probed fixture ("no device type 'dc-390'"), as QEMU would
    "am53c974": "am53c974", "dc390": "dc-390",
}
# CCID readers sit on a USB port: they come after the USB hubs (ccid_controllers)
_ORDER = ("usb", "scsi", "ide", "sata", "fdc", "virtio-serial", "isa")


def _bad_model(ctx: Ctx, cont: Controller) -> DomainInvalid:
    return DomainInvalid(f"unknown {cont.type} controller model {cont.model!r}", path=ctx.domain.source,
                         line=cont.line)


def _new_bus_nr(ctx: Ctx, cont: Controller) -> int:
    """An expander bus without busNr gets one below every other expander's and below the buses behind it
    (qemuDomainAddressFindNewBusNr): counting down from 255."""
    lowest = 256
    for other in ctx.controllers:
        if other is cont:
            break
        if other.model in ("pci-expander-bus", "pcie-expander-bus"):
            lowest = min(lowest, int(other.target.get("busNr") or 0) or lowest)
    behind = sum(1 for c in ctx.controllers if c.type == "pci" and (a := ctx.address(c)) is not None
                 and a.type == "pci" and a.bus == cont.index)
    return lowest - 2 - behind


def _pci(ctx: Ctx, cont: Controller) -> None:
    if cont.model in ("pci-root", "pcie-root"):
        return
    driver = cont.model_name or PCI_MODEL_NAMES.get(cont.model or "")
    if cont.model == "pcie-root-port" and not cont.model_name:
        driver = "pcie-root-port" if ctx.caps.has("pcie-root-port") else "ioh3420"
    if driver is None:
        raise _bad_model(ctx, cont)
    t = cont.target
    props: dict[str, Any] = {"driver": driver}
    if cont.model == "pci-bridge":
        props["chassis_nr"] = int(t.get("chassisNr", cont.index or 0))
    elif cont.model in ("pcie-root-port", "pcie-switch-downstream-port"):
        props["port"] = int(t.get("port", "0"), 0)
        props["chassis"] = int(t.get("chassis", cont.index or 0))
    elif cont.model in ("pci-expander-bus", "pcie-expander-bus"):
        props["bus_nr"] = int(t["busNr"]) if t.get("busNr") else _new_bus_nr(ctx, cont)
        if cont.target_node is not None:
            props["numa_node"] = cont.target_node
    props["id"] = ctx.alias(cont)
    if t.get("hotplug") in ("on", "off"):
        props["hotplug"] = t["hotplug"] == "on"
    props.update(ctx.address_props(cont))
    ctx.device(props)


def _other(ctx: Ctx, cont: Controller) -> None:
    t = cont.type
    props: dict[str, Any]
    if t == "usb":
        if cont.model == "none":
            return
        driver = USB_DRIVERS.get(cont.model or "")
        if driver is None:
            raise _bad_model(ctx, cont)
        props = {"driver": driver}
        ports = cont.attrs.get("ports")
        if ports and cont.model in ("qemu-xhci", "nec-xhci"):
            props.update({"p2": int(ports), "p3": int(ports)})
        if cont.master_startport is not None:  # a companion: on its master's bus, without an id of its own
            master = next((c for c in ctx.controllers if c.type == "usb" and c.index == cont.index
                           and c.master_startport is None), None)
            bus = ctx.alias(master) if master else "usb" if cont.index == 0 else f"usb{cont.index}"
            props["masterbus"] = f"{bus}.0"
            props["firstport"] = cont.master_startport
        else:
            props["id"] = ctx.alias(cont)
    elif t == "scsi":
        driver = SCSI_DRIVERS.get(cont.model or "")
        if driver is None:
            raise _bad_model(ctx, cont)
        addr = ctx.address(cont)
        if cont.model == "virtio-scsi" and addr is not None and addr.type == "ccw":
            driver = "virtio-scsi-ccw"
        props = {"driver": driver}
        drv = cont.driver
        if drv.get("iothread"):
            props["iothread"] = f"iothread{drv['iothread']}"
        mapping = iothread_mapping(cont.driver_children)
        if mapping:
            props["iothread-vq-mapping"] = mapping
        props["id"] = ctx.alias(cont)
        if drv.get("queues"):
            props["num_queues"] = int(drv["queues"])
        if drv.get("cmd_per_lun"):
            props["cmd_per_lun"] = int(drv["cmd_per_lun"])
        if drv.get("max_sectors"):
            props["max_sectors"] = int(drv["max_sectors"])
        if drv.get("ioeventfd"):
            props["ioeventfd"] = drv["ioeventfd"] == "on"
    elif t == "sata":
        if ctx.is_q35 and cont.index == 0:
            return
        props = {"driver": "ahci", "id": ctx.alias(cont)}
    elif t == "ide":
        if ctx.is_i440fx and cont.index == 0:
            return
        raise UnsupportedByQemu("only the i440fx machine's built-in IDE controller is supported",
                                path=ctx.domain.source, line=cont.line)
    elif t == "fdc":
        return
    elif t == "ccid":  # a USB CCID reader: smart cards plug into it
        props = {"driver": "usb-ccid", "id": ctx.alias(cont)}
    elif t == "virtio-serial":
        suffix = f"-{cont.model.removeprefix('virtio-')}" if cont.model in ("virtio-transitional",
                                                                          "virtio-non-transitional") else ""
        props = {"driver": f"virtio-serial-pci{suffix}", "id": ctx.alias(cont)}
        if cont.attrs.get("ports"):
            props["max_ports"] = int(cont.attrs["ports"])
        if cont.attrs.get("vectors"):
            props["vectors"] = int(cont.attrs["vectors"])
    else:
        raise UnsupportedByQemu(f"<controller type='{t}'> is not supported by the argv builder",
                                path=ctx.domain.source, line=cont.line)
    props.update(ctx.address_props(cont))
    ctx.device(props, virtio=cont if str(props["driver"]).startswith("virtio") else None)


def pci_hole64(ctx: Ctx) -> None:
    """<pcihole64> of the PCI root: the host bridge's 64-bit PCI hole (qemuBuildGlobalControllerCommandLine)."""
    for cont in ctx.controllers:
        hole = next((e for e in cont.extra if getattr(e, "tag", None) == "pcihole64"), None)
        if cont.type != "pci" or hole is None or cont.model not in ("pci-root", "pcie-root"):
            continue
        unit = (hole.get("unit") or "KiB").lower()
        kib = int((hole.text or "0").strip()) * {"kib": 1, "k": 1, "mib": 1024, "m": 1024, "gib": 1 << 20,
                                                  "g": 1 << 20, "b": 1 / 1024}.get(unit, 1)
        host = "i440FX-pcihost" if cont.model == "pci-root" else "q35-pcihost"
        ctx.add("-global", f"{host}.pci-hole64-size={int(kib)}K")


def controllers(ctx: Ctx) -> None:
    pci_hole64(ctx)
    for cont in sorted((c for c in ctx.controllers if c.type == "pci"), key=lambda c: c.index or 0):
        _pci(ctx, cont)
    for kind in _ORDER:
        for cont in ctx.controllers:
            if cont.type == kind:
                _other(ctx, cont)
    for cont in ctx.controllers:
        if cont.type not in _ORDER and cont.type not in ("pci", "ccid"):
            _other(ctx, cont)


def ccid_controllers(ctx: Ctx) -> None:
    """USB CCID readers, after the USB hubs they may sit on (qemuBuildCommandLine)."""
    for cont in ctx.controllers:
        if cont.type == "ccid":
            _other(ctx, cont)
