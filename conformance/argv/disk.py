"""Disks: -blockdev node chains (QEMU 4.2+ with libvirt) or -drive, and the front-end -device."""

from __future__ import annotations

from typing import Any

from conformance.argv.chardev import reconnect_option
from conformance.argv.context import Ctx
from conformance.argv.defaults import backing_chain, disk_bus, disk_index, throttle_filters
from conformance.argv.harness import HOST_CDROM_PATHS, VDPA_DISK_FD, domain_dir
from conformance.argv.options import escape_opt_value
from conformance.argv.storage_source import (
    child,
    data_store,
    managed_pr_object,
    network_props,
    qemu_luks,
    slice_of,
    storage_objects,
    uses_managed_pr,
    validate,
)
from conformance.domain.model import Disk, Filesystem
from conformance.errors import DomainInvalid, UnsupportedByQemu

# cache mode -> (cache.direct, cache.no-flush, write-cache)
_CACHE = {
    "none": (True, False, True), "writeback": (False, False, True), "writethrough": (False, False, False),
    "directsync": (True, False, False), "unsafe": (False, True, True),
}


def _storage_props(ctx: Ctx, disk: Disk, node: str, refs: dict[str, Any]) -> dict[str, Any]:
    """The storage node's own properties (qemuBlockStorageSourceGetBackendProps), before node-name."""
    src = disk.source
    assert src is not None
    if disk.type in ("block", "file"):  # qemuBlockStorageSourceGetFileProps
        if disk.type == "block":
            cdrom = disk.device == "cdrom" and src.attrs["dev"] in HOST_CDROM_PATHS
            props: dict[str, Any] = {"driver": "host_cdrom" if cdrom else "host_device", "filename": src.attrs["dev"]}
        else:
            props = {"driver": "file", "filename": src.attrs["file"]}
        io = disk.driver.get("io")
        if io in ("native", "io_uring", "threads"):
            props["aio"] = io
        if refs.get("pr-manager"):
            props["pr-manager"] = refs["pr-manager"]
        props["node-name"] = node
        return props
    if disk.type == "nvme":  # qemuBlockStorageSourceGetNVMeProps
        addr = child(src, "address")
        attrs = dict(addr.attrib) if addr is not None else {}
        try:
            device = (f"{int(attrs.get('domain', '0'), 0):04x}:{int(attrs.get('bus', '0'), 0):02x}:"
                      f"{int(attrs.get('slot', '0'), 0):02x}.{int(attrs.get('function', '0'), 0):x}")
        except ValueError:
            raise DomainInvalid(f"<disk target='{disk.target_dev}'>: the NVMe controller's PCI address is not a "
                                f"number: {attrs}", path=ctx.domain.source, line=disk.line) from None
        return {"driver": "nvme", "device": device, "namespace": int(src.attrs.get("namespace") or 1),
                "node-name": node}
    if disk.type == "dir":
        return {"driver": "vvfat", "dir": src.attrs["dir"], "floppy": disk.device == "floppy", "rw": False,
                "node-name": node}
    if disk.type == "network":
        return {**network_props(ctx, disk, refs), "node-name": node}
    if disk.type == "vhostvdpa":  # qemuBlockStorageSourceGetVhostVdpaProps: the opened device in an fd set
        fdset = ctx.pass_fd(f"{node}-vdpa", VDPA_DISK_FD)
        return {"driver": "virtio-blk-vhost-vdpa", "path": f"/dev/fdset/{fdset}", "node-name": node}
    raise UnsupportedByQemu(f"disk type {disk.type!r} is not supported", path=ctx.domain.source, line=disk.line)


def _readonly(disk: Disk) -> bool:
    return disk.readonly or disk.device == "cdrom"


def cache_mode(disk: Disk) -> str:
    """The disk's cache mode: <driver cache=>, else 'none' for a writable shareable disk
    (qemuDomainPrepareDiskCachemode)."""
    mode = disk.driver.get("cache", "")
    if not mode and disk.shareable and not _readonly(disk):
        return "none"
    return mode


def _luks(disk: Disk) -> bool:
    """The image is LUKS-encrypted for QEMU to decrypt (raw format then means a 'luks' format node)."""
    nodes = [*(disk.source.children if disk.source else []), *disk.extra]
    return any(getattr(n, "tag", None) == "encryption" and qemu_luks(n) for n in nodes)


def needs_format_layer(ctx: Ctx, disk: Disk) -> bool:
    """libvirt (10.x+) gives raw images (an unset format is raw) no format node once QEMU's block jobs can
    mask the protocol layer (blockjob.backing-mask-protocol); LUKS images keep it."""
    raw = disk.driver.get("type", "raw") == "raw" and not _luks(disk)
    return not raw or not ctx.modern_libvirt or not ctx.caps.has("blockjob.backing-mask-protocol")


def _effective_node_props(disk: Disk) -> dict[str, Any]:
    """read-only, discard, detect-zeroes of the node the guest device uses (libvirt's effective node)."""
    props: dict[str, Any] = {"read-only": _readonly(disk)}
    discard = disk.driver.get("discard")
    if discard and discard != "default":
        props["discard"] = discard
    zeroes = disk.driver.get("detect_zeroes")
    if zeroes == "unmap" and discard != "unmap":
        zeroes = "on"  # QEMU unmaps zeroes only where discards are passed down
    if zeroes and zeroes != "default":
        props["detect-zeroes"] = zeroes
    return props


# formats that can have a backing image (virStorageFileFormat after VIR_STORAGE_FILE_BACKING)
_BACKING_FORMATS = ("cow", "qcow", "qcow2", "qed", "vmdk")
_TERMINATED = ""  # the chain below ends here: "backing": null


def blockdev(ctx: Ctx, disk: Disk) -> str | None:
    """Emit the -blockdev chain, the backing layers first (qemuBuildDiskSourceCommandLine); return the node
    name the front-end uses (None: empty drive)."""
    if disk.source is None or id(disk) not in ctx.node_index:
        return None
    n = ctx.node_index[id(disk)]
    chain, terminated = backing_chain(disk)
    layers = chain_indexes(disk, chain, n)
    below: str | None = _TERMINATED if terminated else None
    for layer, index in reversed(layers[1:]):
        below = _layer_blockdev(ctx, layer, index, below, top=False)
    node = _layer_blockdev(ctx, disk, n, below, top=True)
    if disk.driver.get("copy_on_read") == "on":  # a copy-on-read filter on top (qemuBlockStorageGetCopyOnReadProps)
        cor = f"libvirt-CoR-{disk.target_dev}"
        ctx.blockdev_arg({"driver": "copy-on-read", "node-name": cor, "file": node, "discard": "unmap"})
        node = cor
    # one throttle filter per <throttlefilter>, numbered after the chain (qemuBuildThrottleFiltersCommandLine)
    for i, group in enumerate(throttle_filters(disk)):
        name = f"libvirt-{layers[-1][1] + (data_store(layers[-1][0]) is not None) + 1 + i}-filter"
        ctx.blockdev_arg({"driver": "throttle", "node-name": name, "throttle-group": f"throttle-{group}",
                          "file": node})
        node = name
    return node


def chain_indexes(disk: Disk, chain: list[Disk], n: int) -> list[tuple[Disk, int]]:
    """Each image of a disk's chain, top down, with its node index: libvirt numbers an image's data store
    right after the image (qemuDomainPrepareStorageSourceBlockdev)."""
    out = []
    for layer in [disk, *chain]:
        out.append((layer, n))
        n += 1 + (data_store(layer) is not None)
    return out


def _storage_blockdev(ctx: Ctx, disk: Disk, n: int, refs: dict[str, Any], *, layered: bool) -> str:
    """The storage node and, with a <slice>, the raw node that cuts the slice out of it
    (qemuBlockStorageSourceGetBlockdevStorageSliceProps); returns the node the format layer reads."""
    cache = _CACHE.get(cache_mode(disk))
    storage = f"libvirt-{n}-storage"
    props = _storage_props(ctx, disk, storage, refs)
    sliced = slice_of(disk)

    def role(p: dict[str, Any], effective: bool) -> None:
        if effective:  # the node the guest sees: it takes the options of a format node
            p.update(_effective_node_props(disk))
        else:
            p["auto-read-only"] = True
            p["discard"] = "unmap"
        if cache:
            p["cache"] = {"direct": cache[0], "no-flush": cache[1]}

    role(props, not layered and sliced is None)
    ctx.blockdev_arg(props)
    if sliced is None:
        return storage
    node = f"libvirt-{n}-slice-sto"
    try:
        offset, size = int(sliced.get("offset", "")), int(sliced.get("size", ""))
    except ValueError:
        raise DomainInvalid(f"<disk target='{disk.target_dev}'>: <slice offset= size=> must be numbers",
                            path=ctx.domain.source, line=sliced.sourceline) from None
    slice_props: dict[str, Any] = {"driver": "raw", "file": storage, "offset": offset, "size": size, "node-name": node}
    role(slice_props, not layered)
    ctx.blockdev_arg(slice_props)
    return node


def _data_store_blockdev(ctx: Ctx, disk: Disk, n: int) -> str | None:
    """A qcow2 image's external data file: a raw source of its own, storage node only, numbered right after
    the image (qemuBlockStorageSourceGetBlockdevProps 'data-file')."""
    store = data_store(disk)
    if store is None:
        return None
    validate(ctx, store, top=False)
    refs = storage_objects(ctx, store, n + 1, top=False)
    return _storage_blockdev(ctx, store, n + 1, refs, layered=False)


def _layer_blockdev(ctx: Ctx, disk: Disk, n: int, backing: str | None, *, top: bool) -> str:
    """One image of a chain: its data store, its storage node and, unless raw, its format node with the
    effective node of the image below as backing (qemuBlockStorageSourceAttachPrepareBlockdev); returns its
    effective node."""
    fmt = disk.driver.get("type") or "raw"
    if fmt == "fat":
        fmt = "raw"  # a directory shown as a FAT image: vvfat builds the image, the format node is raw
    if backing and fmt not in _BACKING_FORMATS:  # qemuBlockStorageSourceGetFormatProps
        raise UnsupportedByQemu(f"unsupported configuration: storage format '{fmt}' does not support backing "
                                "store", path=ctx.domain.source, line=disk.line)
    validate(ctx, disk, top)
    data_file = _data_store_blockdev(ctx, disk, n)
    cache = _CACHE.get(cache_mode(disk))
    refs = storage_objects(ctx, disk, n, top)
    layered = needs_format_layer(ctx, disk)
    below = _storage_blockdev(ctx, disk, n, refs, layered=layered)
    if not layered:
        return below
    fmt_props: dict[str, Any] = {"node-name": f"libvirt-{n}-format", **_effective_node_props(disk)}
    if cache:
        fmt_props["cache"] = {"direct": cache[0], "no-flush": cache[1]}
    luks = refs.get("key-secret")
    if luks and fmt == "raw":  # qemuBlockStorageSourceGetFormatRawProps: the LUKS layer decrypts
        fmt_props.update({"driver": "luks", "key-secret": luks})
    else:
        fmt_props["driver"] = fmt
    if luks and fmt == "qcow2":  # qemuBlockStorageSourceGetCryptoProps
        fmt_props["encrypt"] = {"format": "luks", "key-secret": luks}
    if fmt == "qcow2" and disk.driver.get("discard_no_unref") in ("on", "off"):
        fmt_props["discard-no-unref"] = disk.driver["discard_no_unref"] == "on"
    if fmt == "qcow2":
        metadata = next((c for c in disk.driver_children if c.tag == "metadata_cache"), None)
        size = next((c for c in (metadata if metadata is not None else []) if c.tag == "max_size"), None)
        if size is not None:
            scale = {"b": 1, "bytes": 1, "kib": 1024, "k": 1024, "mib": 1 << 20, "m": 1 << 20}
            fmt_props["cache-size"] = int((size.text or "0").strip()) * scale.get((size.get("unit") or "b").lower(), 1)
    if data_file:
        fmt_props["data-file"] = data_file
    fmt_props["file"] = below
    if backing is not None and fmt in _BACKING_FORMATS:
        fmt_props["backing"] = backing or None
    ctx.blockdev_arg(fmt_props, keep_null=("backing",))
    return f"libvirt-{n}-format"


# source features built for -blockdev only: a -drive disk using one is refused, never built without it
_BLOCKDEV_ONLY = ("auth", "encryption", "reservations", "slices", "dataStore", "cookies", "ssl", "readahead",
                  "timeout", "initiator", "snapshot", "config", "identity", "reconnect")


def nvram_blockdev(ctx: Ctx, nvram: Disk, fmt: str, *, layered: bool) -> None:
    """pflash1 from an <nvram type='network'|'block'> source (qemuBuildPflashBlockdevCommandLine): the
    objects its nodes name (secrets, TLS credentials), the storage node as a disk's, the format node when
    layered."""
    validate(ctx, nvram, top=False)
    refs = storage_objects(ctx, nvram, "pflash1", top=False)
    storage = "libvirt-pflash1-storage"
    props = _storage_props(ctx, nvram, storage, refs)
    if layered:
        props.update({"auto-read-only": True, "discard": "unmap"})
    else:
        props["read-only"] = False
    ctx.blockdev_arg(props)
    if layered:
        fmt_props: dict[str, Any] = {"node-name": "libvirt-pflash1-format", "read-only": False, "driver": fmt,
                                     "file": storage}
        if fmt == "qcow2":
            fmt_props["backing"] = None
        ctx.blockdev_arg(fmt_props, keep_null=("backing",))


def _drive(ctx: Ctx, disk: Disk) -> str | None:
    """Pre-blockdev QEMU: -drive file=...,format=...,if=none,id=drive-ALIAS."""
    alias = ctx.alias(disk)
    used = [c.tag for c in [*(disk.source.children if disk.source else []), *disk.extra]
            if getattr(c, "tag", None) in _BLOCKDEV_ONLY]
    if used or disk.type == "network" or (disk.source is not None and disk.source.attrs.get("query")):
        what = f"<{used[0]}>" if used else "a network source"
        raise UnsupportedByQemu(f"<disk target='{disk.target_dev}'>: {what} is built for -blockdev (QEMU 4.2+) "
                                "only", path=ctx.domain.source, line=disk.line)
    opts = []
    if disk.source is not None and disk.source.path:
        opts.append(f"file={escape_opt_value(disk.source.path)}")
        if disk.driver.get("type"):
            opts.append(f"format={disk.driver['type']}")
    if cache_mode(disk):
        opts.append(f"cache={cache_mode(disk)}")
    if _readonly(disk) and disk.source is not None:
        opts.append("readonly=on")
    opts += ["if=none", f"id=drive-{alias}"]
    ctx.add("-drive", ",".join(opts))
    return f"drive-{alias}"


def disk_device(ctx: Ctx, disk: Disk, drive: str | None) -> None:
    bus = disk_bus(disk)
    alias = ctx.alias(disk)
    addr = ctx.address(disk)
    props: dict[str, Any]
    cache = _CACHE.get(cache_mode(disk))
    if bus == "ide" or bus == "sata":
        assert addr is not None
        props = {"driver": "ide-cd" if disk.device == "cdrom" else "ide-hd"}
        if bus == "ide":
            cont = ctx.controller("ide", addr.controller or 0)
            # the machine's built-in IDE controller (index 0) keeps QEMU's bus name whatever alias the XML gives it
            builtin = cont is None or (cont.index or 0) == 0
            props["bus"] = f"{'ide' if builtin else ctx.alias(cont)}.{addr.bus or 0}"
            props["unit"] = addr.unit or 0
        else:
            cont = ctx.controller("sata", addr.controller or 0)
            props["bus"] = f"{ctx.alias(cont) if cont else 'ide'}.{addr.unit or 0}"
    elif bus == "fdc":
        assert addr is not None
        props = {"driver": "floppy", "unit": addr.unit or 0}
    elif bus == "scsi":
        assert addr is not None
        cont = ctx.controller("scsi", addr.controller or 0)
        driver = "scsi-cd" if disk.device == "cdrom" else "scsi-block" if disk.device == "lun" else "scsi-hd"
        props = {"driver": driver, "bus": f"{ctx.alias(cont) if cont else 'scsi0'}.{addr.bus or 0}"}
        if cont is not None and cont.model in ("lsilogic", "ncr53c90", "dc390", "am53c974"):
            # qemuBuildDeviceAddressProps: these HBAs take a unit number only (no channel, no lun)
            props["scsi-id"] = addr.unit or 0
        else:
            props.update({"channel": addr.bus or 0, "scsi-id": addr.target or 0, "lun": addr.unit or 0})
        if disk.device != "lun":
            props["device_id"] = disk.serial or f"drive-{alias}"
    elif bus == "virtio" and disk.type == "vhostuser":  # the back-end serves the disk (qemuBuildDiskDeviceProps)
        props = {"driver": "vhost-user-blk-ccw" if addr is not None and addr.type == "ccw" else "vhost-user-blk-pci",
                 "chardev": f"chr-vu-{alias}"}
        if disk.driver.get("queues"):
            props["num-queues"] = int(disk.driver["queues"])
        props.update(ctx.address_props(disk))
    elif bus == "virtio":
        props = {"driver": "virtio-blk-ccw" if addr is not None and addr.type == "ccw" else "virtio-blk-pci"}
        if disk.driver.get("iothread"):
            props["iothread"] = f"iothread{disk.driver['iothread']}"
        mapping = iothread_mapping(disk.driver_children)
        if mapping:
            props["iothread-vq-mapping"] = mapping
        # the legacy 'scsi' property where QEMU has it: on for LUNs (qemuBuildDiskDeviceProps); libvirt before
        # 10 also set it off for other disks unless QEMU already defaults it to off
        # (virtio-blk-pci.scsi.default.disabled, QEMU 5.0+)
        if ctx.caps.has("virtio-blk-pci.scsi"):
            if disk.device == "lun":
                props["scsi"] = True
            elif not ctx.modern_libvirt and not ctx.caps.has("virtio-blk-pci.scsi.default.disabled"):
                props["scsi"] = False
        if disk.driver.get("queues"):
            props["num-queues"] = int(disk.driver["queues"])
        props.update(ctx.address_props(disk))
    elif bus == "usb":
        props = {"driver": "usb-storage"}
        if addr is not None and addr.type == "usb":
            props.update({"bus": f"usb.{addr.bus or 0}" if (addr.bus or 0) == 0 else f"usb{addr.bus}.0",
                          "port": addr.port})
    else:
        raise UnsupportedByQemu(f"disk bus {bus!r} is not supported by the argv builder", path=ctx.domain.source,
                                line=disk.line)
    if disk.shareable:  # other guests may write it too (qemuBuildDiskDeviceProps)
        props["share-rw"] = True
    if drive is not None:
        props["drive"] = drive
    props["id"] = alias
    if id(disk) in ctx.boot_index and bus != "fdc":  # a floppy boots through its controller's bootindexA/B
        props["bootindex"] = ctx.boot_index[id(disk)]
    if bus == "usb":
        props["removable"] = disk.target_attrs.get("removable") == "on"
    if disk.serial:
        props["serial"] = disk.serial.replace(" ", "\\ ")  # libvirt escapes spaces in serials
    if disk.wwn:
        props["wwn"] = int(disk.wwn, 16)
    if cache:
        props["write-cache"] = "on" if cache[2] else "off"
    props.update(_device_options(disk, bus, ctx.domain.source))
    ctx.device(props, virtio=disk if bus == "virtio" else None)


def iothread_mapping(children: list) -> list[dict[str, Any]]:
    """<driver><iothreads><iothread id=N><queue id=Q/>: QEMU's iothread-vq-mapping."""
    group = next((c for c in children if getattr(c, "tag", None) == "iothreads"), None)
    out: list[dict[str, Any]] = []
    for thread in (t for t in (group if group is not None else []) if t.tag == "iothread"):
        entry: dict[str, Any] = {"iothread": f"iothread{thread.get('id')}"}
        queues = [int(q.get("id")) for q in thread if q.tag == "queue"]
        if queues:
            entry["vqs"] = queues
        out.append(entry)
    return out


def _device_options(disk: Disk, bus: str, source: str) -> dict[str, Any]:
    """The front-end options libvirt derives from <driver>, <blockio>, <target>, <vendor>/<product>."""
    props: dict[str, Any] = {}
    drv = disk.driver
    if bus == "virtio":
        for key in ("ioeventfd", "event_idx"):
            if drv.get(key) in ("on", "off"):
                props[key] = drv[key] == "on"
        if drv.get("queue_size"):
            props["queue-size"] = int(drv["queue_size"])
    blockio = next((e for e in disk.extra if getattr(e, "tag", None) == "blockio"), None)
    if blockio is not None:
        for key in ("logical_block_size", "physical_block_size", "discard_granularity"):
            if blockio.get(key) is not None:
                props[key] = int(blockio.get(key))
    if disk.target_attrs.get("rotation_rate"):
        props["rotation_rate"] = int(disk.target_attrs["rotation_rate"])
    if bus == "scsi" and disk.target_attrs.get("removable") == "on":
        props["removable"] = True
    if bus == "scsi":
        if disk.vendor is not None:
            props["vendor"] = disk.vendor
        if disk.product is not None:
            props["product"] = disk.product
    elif bus in ("ide", "sata") and disk.product is not None:
        props["model"] = disk.product
    props.update(_geometry(disk, bus, source))
    werror = drv.get("error_policy")
    rerror = drv.get("rerror_policy") or (werror if werror != "enospace" else None)
    if werror:
        props["werror"] = "enospc" if werror == "enospace" else werror
    if rerror:
        props["rerror"] = rerror
    return props


def _geometry(disk: Disk, bus: str, source: str) -> dict[str, Any]:
    """<geometry cyls= heads= secs= trans=>: the device's cyls, heads, secs and bios-chs-trans
    (qemuBuildDiskDeviceProps); libvirt's disk validation allows a translation mode on IDE disks only."""
    geometry = next((e for e in disk.extra if getattr(e, "tag", None) == "geometry"), None)
    if geometry is None:
        return {}
    props: dict[str, Any] = {}
    for attr in ("cyls", "heads", "secs"):
        try:
            value = int(geometry.get(attr) or 0)
        except ValueError:
            raise DomainInvalid(f"<disk target='{disk.target_dev}'> <geometry {attr}=> is not a number: "
                                f"{geometry.get(attr)!r}", path=source, line=geometry.sourceline) from None
        if value:
            props[attr] = value
    trans = geometry.get("trans")
    if trans and trans != "default":
        if bus != "ide":
            raise DomainInvalid(f"<disk target='{disk.target_dev}'>: unsupported configuration: CHS translation "
                                f"mode can only be set for 'ide' bus not '{bus}'", path=source,
                                line=geometry.sourceline)
        props["bios-chs-trans"] = trans
    return props


def floppy_controller(ctx: Ctx) -> None:
    """The ISA floppy controller's boot order (bootindexA/B per drive): a -global for the built-in one of
    i440fx, an explicit isa-fdc device where the machine has none (q35) (qemuBuildFloppyCommandLine...)."""
    floppies = [k for k in ctx.disks if disk_bus(k) == "fdc"]
    if not floppies:
        return
    boot: dict[str, int] = {}
    for disk in floppies:
        addr = ctx.address(disk)
        if id(disk) in ctx.boot_index:
            boot[f"bootindex{'AB'[(addr.unit or 0) if addr is not None else 0]}"] = ctx.boot_index[id(disk)]
    if ctx.is_q35:
        ctx.device({"driver": "isa-fdc", **boot})
    else:
        for key, value in boot.items():
            ctx.add("-global", f"isa-fdc.{key}={value}")


def _flat(prefix: str, value: Any) -> list[str]:
    """A JSON value as -drive's dotted keys: file.server.0.host=... (qemuBlockStorageSourceGetBackendProps in
    its legacy form, flattened as libvirt's virQEMUBuildCommandLineJSON does)."""
    if isinstance(value, dict):
        return [o for k, v in value.items() for o in _flat(f"{prefix}.{k}", v)]
    if isinstance(value, list):
        return [o for i, v in enumerate(value) for o in _flat(f"{prefix}.{i}", v)]
    if isinstance(value, bool):
        return [f"{prefix}={'on' if value else 'off'}"]
    return [f"{prefix}={escape_opt_value(str(value))}"]


def _sd_source(ctx: Ctx, disk: Disk) -> str:
    """An SD card's image for -drive: file=PATH, or a network source's storage props flattened under file."""
    src = disk.source
    if src is None or disk.type != "network":
        return f"file={escape_opt_value((src.path if src is not None else '') or '')}"
    validate(ctx, disk, top=True)
    used = [c.tag for c in [*src.children, *disk.extra] if getattr(c, "tag", None) in _BLOCKDEV_ONLY
            and c.tag != "reconnect"]
    if used or src.attrs.get("tls") == "yes":  # their objects are built for -blockdev nodes only
        raise UnsupportedByQemu(f"<disk target='{disk.target_dev}'>: an SD card's network source is built "
                                f"without <{used[0] if used else 'source tls'}> only", path=ctx.domain.source,
                                line=disk.line)
    return ",".join(_flat("file", network_props(ctx, disk, {})))


def disks(ctx: Ctx) -> None:
    if ctx.blockdev and uses_managed_pr(ctx.disks):
        managed_pr_object(ctx)
    floppy_controller(ctx)
    for disk in ctx.disks:
        if disk.transient and disk.transient_share_backing:  # hot-plugged once QEMU runs (qemuBuildDisksCommandLine)
            continue
        if disk_bus(disk) == "sd":  # an SD card: the board's own slot, still only as -drive if=sd
            ctx.add("-drive", f"{_sd_source(ctx, disk)},format={disk.driver.get('type', 'raw')},"
                              f"if=sd,index={disk_index(disk.target_dev)}")
            continue
        if disk.source is not None and disk.type == "network" and not disk.source.hosts and \
                disk.source.attrs.get("protocol") not in ("nbd", "rbd"):  # nbd: localhost; rbd: ceph.conf
            raise DomainInvalid("network disk without <host>", path=ctx.domain.source, line=disk.line)
        if disk.type == "vhostuser":  # a UNIX socket chardev instead of block nodes (qemuBuildDiskSourceCommandLine)
            src = disk.source.attrs if disk.source is not None else {}
            rec = next((c for c in (disk.source.children if disk.source is not None else []) if c.tag == "reconnect"),
                       None)
            ctx.add("-chardev", ",".join([f"socket,id=chr-vu-{ctx.alias(disk)}",
                                          f"path={escape_opt_value(src.get('path', ''))}",
                                          *reconnect_option(ctx, rec)]))
            disk_device(ctx, disk, None)
            continue
        drive = blockdev(ctx, disk) if ctx.blockdev else _drive(ctx, disk)
        disk_device(ctx, disk, drive)


def filesystems(ctx: Ctx) -> None:
    for fs in ctx.domain.devices.filesystems:
        alias = ctx.alias(fs)
        driver = fs.driver.get("type", "path")
        if driver == "mtp":  # a USB MTP device sharing the folder
            ctx.device({"driver": "usb-mtp", "id": alias, "rootdir": fs.source.get("dir"), "desc": fs.target_dir,
                        "readonly": fs.readonly, **ctx.address_props(fs)})
            continue
        if driver == "virtiofs":  # vhost-user-fs talking to virtiofsd on a UNIX socket
            sock = fs.source.get("socket") or f"{domain_dir(ctx.domain.name, ctx.modern_libvirt)}/{alias}-fs.sock"
            ctx.add("-chardev", f"socket,id=chr-vu-{alias},path={escape_opt_value(sock)}")
            props: dict[str, Any] = {"driver": "vhost-user-fs-pci", "id": alias, "chardev": f"chr-vu-{alias}"}
            if fs.driver.get("queue"):
                props["queue-size"] = int(fs.driver["queue"])
            props["tag"] = fs.target_dir
            if id(fs) in ctx.boot_index:
                props["bootindex"] = ctx.boot_index[id(fs)]
            ctx.device({**props, **ctx.address_props(fs)}, virtio=fs)
            continue
        opts = _fsdev_options(ctx, fs, driver)
        if fs.driver.get("wrpolicy") == "immediate":
            opts.append("writeout=immediate")
        opts += [f"id=fsdev-{alias}", f"path={escape_opt_value(fs.source.get('dir', ''))}"]
        if fs.readonly:
            opts.append("readonly=on")
        ctx.add("-fsdev", ",".join(opts))
        ctx.device({"driver": "virtio-9p-pci", "id": alias, "fsdev": f"fsdev-{alias}", "mount_tag": fs.target_dir,
                    **ctx.address_props(fs)}, virtio=fs)


# <filesystem accessmode=> -> the local fsdev's security_model (qemuBuildFSStr); the default is passthrough
_SECURITY_MODEL = {"passthrough": "passthrough", "mapped": "mapped", "squash": "none"}


def _fs_mode(ctx: Ctx, fs: Filesystem, attr: str) -> str | None:
    """fmode=/dmode= of a 9p local fsdev: libvirt reads the XML's value as octal (at most 0777) and writes it
    back with four octal digits."""
    text = fs.attrs.get(attr)
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        raise DomainInvalid(f"<filesystem {attr}='{text}'> is not an octal file mode", path=ctx.domain.source,
                            line=fs.line, hint="e.g. 644") from None
    if not 0 <= mode <= 0o777:
        raise DomainInvalid(f"<filesystem {attr}='{text}'> must be at most 0777", path=ctx.domain.source,
                            line=fs.line)
    return f"{mode:04o}" if mode else None


def _fsdev_options(ctx: Ctx, fs: Filesystem, driver: str) -> list[str]:
    """The -fsdev options before writeout, id and path (qemuBuildFSStr): the driver, then for the local driver
    its security model, multidevs, fmode and dmode."""
    if driver == "handle":  # the handle driver has none of them
        return ["handle"]
    opts = ["local", f"security_model={_SECURITY_MODEL.get(fs.attrs.get('accessmode', ''), 'passthrough')}"]
    if fs.attrs.get("multidevs") in ("remap", "forbid", "warn"):
        opts.append(f"multidevs={fs.attrs['multidevs']}")
    for attr in ("fmode", "dmode"):
        mode = _fs_mode(ctx, fs, attr)
        if mode:
            opts.append(f"{attr}={mode}")
    return opts


__all__ = ["disk_index", "disks", "filesystems"]
