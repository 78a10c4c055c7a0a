"""Network interfaces: -netdev (JSON from QEMU 7.2) and the NIC -device."""

from __future__ import annotations

from typing import Any

from conformance.argv.chardev import reconnect_option
from conformance.argv.context import Ctx, rom_props
from conformance.argv.harness import DOMAIN_ID, PASST_STATE_DIR, TAP_FD_BRIDGE, TAP_FD_ETHERNET, VDPA_FD, VHOST_FD
from conformance.argv.options import escape_opt_value
from conformance.domain.model import Interface
from conformance.errors import UnsupportedByQemu

# libvirt NIC model -> QEMU device; unknown models are passed through as libvirt does
NIC_DRIVERS = {"virtio": "virtio-net-pci", "virtio-transitional": "virtio-net-pci-transitional",
               "virtio-non-transitional": "virtio-net-pci-non-transitional", "usb-net": "usb-net"}



def default_nic_model(ctx: Ctx) -> str:
    if ctx.is_s390 or ctx.is_arm_virt:
        return "virtio"
    if ctx.arch in ("aarch64", "armv7l") and ctx.machine_name.startswith("vexpress"):
        return "lan9118"  # the board's own NIC
    if ctx.arch in ("aarch64", "armv7l") and ctx.machine_name.startswith("versatile"):
        return "smc91c111"
    for model, flag in (("rtl8139", "rtl8139"), ("e1000", "e1000"), ("virtio", "virtio-net")):
        if ctx.caps.has(flag):
            return model
    return "rtl8139"


def nic_model(ctx: Ctx, net: Interface) -> str:
    """The NIC model, known names matched without case as libvirt does; others passed through. vDPA and
    vhost-user interfaces default to virtio (qemuDomainDeviceNetDefPostParse)."""
    if not net.model:
        return "virtio" if net.type in ("vdpa", "vhostuser") else default_nic_model(ctx)
    lower = net.model.lower()
    return lower if lower in KNOWN_NIC_MODELS else net.model


KNOWN_NIC_MODELS = {
    "virtio", "virtio-transitional", "virtio-non-transitional", "e1000", "e1000e", "igb", "rtl8139", "vmxnet3",
    "ne2k_pci", "pcnet", "netfront", "i82551", "i82557b", "i82559er", "ne2k_isa", "lan9118", "smc91c111",
    "spapr-vlan", "usb-net",
}


PASST_RECONNECT_SECONDS = 5  # QEMU_PASST_RECONNECT_TIMEOUT


def _passt_socket(ctx: Ctx, alias: str) -> str:
    """The passt process's socket: passtStateDir/SHORTNAME-ALIAS.socket (qemuPasstCreateSocketPath)."""
    return f"{PASST_STATE_DIR}/{DOMAIN_ID}-{ctx.domain.name[:20]}-{alias}.socket"


def netdev_props(ctx: Ctx, net: Interface, ident: str) -> dict[str, Any]:
    alias = ident.removeprefix("host")
    if net.type == "user" and net.backend.get("type") == "passt":
        # a stream netdev that connects to the passt process; reconnect where QEMU has it (qemuPasstAddNetProps)
        props = {"type": "stream", "addr": {"type": "unix", "path": _passt_socket(ctx, alias)}, "server": False}
        if ctx.caps.has("netdev-stream-reconnect-miliseconds"):
            props["reconnect-ms"] = PASST_RECONNECT_SECONDS * 1000
        elif ctx.caps.has("netdev.stream.reconnect"):
            props["reconnect"] = PASST_RECONNECT_SECONDS
        return {**props, "id": ident}
    if net.type == "user":
        props = {"type": "user"}
        for ip in (c for c in net.extra if getattr(c, "tag", None) == "ip"):
            if ip.get("family", "ipv4") == "ipv4":
                props["net"] = f"{ip.get('address')}/{ip.get('prefix', '24')}"
            else:
                props.update({"ipv6-prefix": ip.get("address"), "ipv6-prefixlen": int(ip.get("prefix", "64"))})
        return {**props, "id": ident}
    if net.type in ("bridge", "network", "ethernet"):
        fd = TAP_FD_ETHERNET if net.type == "ethernet" else TAP_FD_BRIDGE
        virtio = nic_model(ctx, net) == "virtio"
        # a multiqueue virtio NIC gets one tap fd and one vhost fd per queue, the harness's fds counting up
        # from its first (qemuBuildInterfaceConnect, qemuBuildHostNetProps: fds/vhostfds joined by ':')
        queues = int(net.driver.get("queues") or 1) if virtio else 1
        if queues > 1:
            props: dict[str, Any] = {"type": "tap", "fds": ":".join(str(fd + i) for i in range(queues))}
        else:
            props = {"type": "tap", "fd": str(fd)}
        if virtio and net.driver.get("name") != "qemu":
            props["vhost"] = True
            if queues > 1:
                props["vhostfds"] = ":".join(str(VHOST_FD + i) for i in range(queues))
            else:
                props["vhostfd"] = str(VHOST_FD)
        tune = next((c for c in net.extra if getattr(c, "tag", None) == "tune"), None)
        sndbuf = next((c for c in tune if c.tag == "sndbuf"), None) if tune is not None else None
        if sndbuf is not None:  # <tune><sndbuf>: the tap's send buffer (qemuBuildHostNetProps)
            props["sndbuf"] = int((sndbuf.text or "0").strip() or 0)
        props["id"] = ident
        return props
    if net.type == "vhostuser" and net.source.get("type", "unix") == "unix":
        # the vhost-user back-end's UNIX socket as a chardev, then the netdev on it
        chardev = f"char{alias}"
        passt = net.backend.get("type") == "passt"
        # passt's socket path is derived, and it always reconnects after 5 s (qemuPasstPrepareVhostUser)
        path = _passt_socket(ctx, alias) if passt else net.source.get("path", "")
        opts = ["socket", f"id={chardev}", f"path={escape_opt_value(path)}"]
        if net.source.get("mode") == "server" and not passt:
            opts.append("server=on")
        rec = next((c for c in net.source_children if getattr(c, "tag", None) == "reconnect"), None)
        if passt:
            opts.append(f"reconnect-ms={PASST_RECONNECT_SECONDS * 1000}"
                        if ctx.caps.has("chardev-reconnect-miliseconds") else f"reconnect={PASST_RECONNECT_SECONDS}")
        else:
            opts += reconnect_option(ctx, rec)
        ctx.add("-chardev", ",".join(opts))
        props = {"type": "vhost-user", "chardev": chardev}
        queues = int(net.driver.get("queues", "1") or 1)
        if queues > 1:
            props["queues"] = queues
        return {**props, "id": ident}
    if net.type == "vdpa":  # qemuBuildHostNetProps: the opened vhost-vdpa device passed in an fd set
        fdset = ctx.pass_fd(f"{ident.removeprefix('host')}-vdpa", VDPA_FD)
        props = {"type": "vhost-vdpa", "vhostdev": f"/dev/fdset/{fdset}"}
        queues = int(net.driver.get("queues", "1") or 1)
        if queues > 1:
            props["queues"] = queues
        return {**props, "id": ident}
    if net.type in ("server", "client", "mcast", "udp"):  # QEMU's socket netdev
        where = f"{net.source.get('address', '')}:{net.source.get('port', '')}"
        key = {"server": "listen", "client": "connect"}.get(net.type, net.type)
        props = {"type": "socket", key: where}
        local = next((c for c in net.source_children if getattr(c, "tag", None) == "local"), None)
        if net.type == "udp" and local is not None:
            props["localaddr"] = f"{local.get('address', '')}:{local.get('port', '')}"
        return {**props, "id": ident}
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
        if model in ("lan9118", "smc91c111"):  # on-board NICs: only the legacy -net nic reaches them
            ctx.add("-net", f"nic,macaddr={net.mac or _generated_mac(ctx, net)},netdev={ident},model={model},"
                            f"id={alias}")
            continue
        addr = ctx.address(net)
        driver = NIC_DRIVERS.get(model, model)
        if model == "virtio" and addr is not None and addr.type == "ccw":
            driver = "virtio-net-ccw"
        props: dict[str, Any] = {"driver": driver}
        if model.startswith("virtio"):
            props.update(_virtio_net_driver(net))
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


# <driver><host .../><guest .../></driver> offloads -> virtio-net-pci properties
_HOST_OFFLOADS = {"csum": "csum", "gso": "gso", "tso4": "host_tso4", "tso6": "host_tso6", "ecn": "host_ecn",
                  "ufo": "host_ufo", "mrg_rxbuf": "mrg_rxbuf"}
_GUEST_OFFLOADS = {"csum": "guest_csum", "tso4": "guest_tso4", "tso6": "guest_tso6", "ecn": "guest_ecn",
                   "ufo": "guest_ufo"}


def _virtio_net_driver(net: Interface) -> dict[str, Any]:
    """virtio-net options from <driver>: TX mode, RSS, offloads (qemuBuildNicDevProps)."""
    props: dict[str, Any] = {}
    txmode = net.driver.get("txmode")
    if txmode in ("iothread", "timer"):
        props["tx"] = "bh" if txmode == "iothread" else "timer"
    for child, table in (("host", _HOST_OFFLOADS), ("guest", _GUEST_OFFLOADS)):
        el = next((c for c in net.driver_children if getattr(c, "tag", None) == child), None)
        for xml, prop in table.items():
            if el is not None and el.get(xml) in ("on", "off"):
                props[prop] = el.get(xml) == "on"
    for key in ("ioeventfd", "event_idx"):
        if net.driver.get(key) in ("on", "off"):
            props[key] = net.driver[key] == "on"
    if net.driver.get("rss") in ("on", "off"):
        props["rss"] = net.driver["rss"] == "on"
    if net.driver.get("rss_hash_report") in ("on", "off"):
        props["hash"] = net.driver["rss_hash_report"] == "on"
    return props


def _generated_mac(ctx: Ctx, net: Interface) -> str:
    """libvirt generates 52:54:00:xx:xx:xx; derive it from the domain so the argv stays reproducible."""
    import hashlib

    seed = hashlib.sha256(f"{ctx.domain.uuid}{ctx.domain.name}{ctx.alias(net)}".encode()).digest()
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*seed[:3])
