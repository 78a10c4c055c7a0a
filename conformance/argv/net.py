"""Network interfaces: -netdev (JSON from QEMU 7.2) and the NIC -device."""

from __future__ import annotations

from typing import Any

from conformance.argv.context import Ctx, rom_props
from conformance.argv.harness import TAP_FD_BRIDGE, TAP_FD_ETHERNET, VHOST_FD
from conformance.domain.model import Interface
from conformance.errors import UnsupportedByQemu

# libvirt NIC model -> QEMU device; unknown models are passed through as libvirt does
NIC_DRIVERS = {"virtio": "virtio-net-pci", "virtio-transitional": "virtio-net-pci-transitional",
               "virtio-non-transitional": "virtio-net-pci-non-transitional", "usb-net": "usb-net"}



def default_nic_model(ctx: Ctx) -> str:
    if ctx.is_s390 or ctx.is_arm_virt:
        return "virtio"
    for model, flag in (("rtl8139", "rtl8139"), ("e1000", "e1000"), ("virtio", "virtio-net")):
        if ctx.caps.has(flag):
            return model
    return "rtl8139"


def nic_model(ctx: Ctx, net: Interface) -> str:
    """The NIC model, known names matched without case as libvirt does; others passed through."""
    if not net.model:
        return default_nic_model(ctx)
    lower = net.model.lower()
    return lower if lower in KNOWN_NIC_MODELS else net.model


KNOWN_NIC_MODELS = {
    "virtio", "virtio-transitional", "virtio-non-transitional", "e1000", "e1000e", "igb", "rtl8139", "vmxnet3",
    "ne2k_pci", "pcnet", "netfront", "i82551", "i82557b", "i82559er", "ne2k_isa", "lan9118", "smc91c111",
    "spapr-vlan", "usb-net",
}


def netdev_props(ctx: Ctx, net: Interface, ident: str) -> dict[str, Any]:
    if net.type == "user":
        return {"type": "user", "id": ident}
    if net.type in ("bridge", "network"):
        props: dict[str, Any] = {"type": "tap", "fd": str(TAP_FD_BRIDGE)}
        if nic_model(ctx, net) == "virtio" and net.driver.get("name") != "qemu":
            props.update({"vhost": True, "vhostfd": str(VHOST_FD)})
        props["id"] = ident
        return props
    if net.type == "ethernet":
        return {"type": "tap", "fd": str(TAP_FD_ETHERNET), "id": ident}
    if net.type == "mcast" or net.type in ("server", "client", "udp"):
        raise UnsupportedByQemu(f"<interface type='{net.type}'> is not supported by the argv builder",
                                path=ctx.domain.source, line=net.line)
    raise UnsupportedByQemu(f"<interface type='{net.type}'> is not supported by the argv builder",
                            path=ctx.domain.source, line=net.line)


def interfaces(ctx: Ctx) -> None:
    for net in ctx.domain.devices.interfaces:
        if net.type == "hostdev":
            continue  # built with the host devices
        alias = ctx.alias(net) or "net0"
        ident = f"host{alias}"
        ctx.netdev(netdev_props(ctx, net, ident))
        model = nic_model(ctx, net)
        addr = ctx.address(net)
        driver = NIC_DRIVERS.get(model, model)
        if model == "virtio" and addr is not None and addr.type == "ccw":
            driver = "virtio-net-ccw"
        props: dict[str, Any] = {"driver": driver}
        if model.startswith("virtio"):
            if net.driver.get("queues") and int(net.driver["queues"]) > 1:
                props["mq"] = True
                props["vectors"] = 2 * int(net.driver["queues"]) + 2
            if net.driver.get("rx_queue_size"):
                props["rx_queue_size"] = int(net.driver["rx_queue_size"])
            if net.driver.get("tx_queue_size"):
                props["tx_queue_size"] = int(net.driver["tx_queue_size"])
            if net.mtu is not None:
                props["host_mtu"] = net.mtu
            if net.teaming is not None and net.teaming.type == "persistent":
                props["failover"] = True
        props["netdev"] = ident
        props["id"] = alias
        props["mac"] = net.mac or _generated_mac(ctx, net)
        props.update(ctx.address_props(net))
        if id(net) in ctx.boot_index:
            props["bootindex"] = ctx.boot_index[id(net)]
        props.update(rom_props(net.rom))
        ctx.device(props, virtio=net if model.startswith("virtio") else None)


def _generated_mac(ctx: Ctx, net: Interface) -> str:
    """libvirt generates 52:54:00:xx:xx:xx; derive it from the domain so the argv stays reproducible."""
    import hashlib

    seed = hashlib.sha256(f"{ctx.domain.uuid}{ctx.domain.name}{ctx.alias(net)}".encode()).digest()
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*seed[:3])
