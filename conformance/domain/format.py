"""Domain model -> libvirt-style domain XML.

Elements come out in libvirt's order (virDomainDefFormat) with single-quoted
attributes and two-space indentation, so the output diffs well against
libvirt's own xml2xml files. format(parse(format(parse(x)))) == format(parse(x)).
"""

from __future__ import annotations

import copy

from lxml import etree

from conformance.domain.model import (
    Address,
    Attrs,
    Chardev,
    Controller,
    Device,
    Disk,
    Domain,
    Filesystem,
    Graphics,
    Hostdev,
    Input,
    Interface,
    Loader,
    MemoryDevice,
    Rng,
    Sound,
    Teaming,
    Tpm,
    Video,
)

_E = etree._Element
_BEFORE_OS = ("sysinfo", "bootloader", "bootloader_args", "genid", "resource", "idmap")
_AFTER_MEMORY = ("blkiotune", "memtune")
_AFTER_VCPU = ("vcpus", "iothreadids", "cputune")


def format_domain(domain: Domain) -> str:
    """The domain as libvirt-style XML text (ends with a newline)."""
    root = etree.Element("domain", type=domain.type)
    d = domain
    _text_el(root, "name", d.name)
    if d.uuid:
        _text_el(root, "uuid", d.uuid)
    if d.title is not None:
        _text_el(root, "title", d.title)
    if d.description is not None:
        _text_el(root, "description", d.description)
    if d.metadata is not None:
        root.append(copy.deepcopy(d.metadata))
    if d.max_memory_kib is not None:
        el = _text_el(root, "maxMemory", str(d.max_memory_kib))
        if d.max_memory_slots is not None:
            el.set("slots", str(d.max_memory_slots))
        el.set("unit", "KiB")
    if d.memory_kib is not None:
        el = _text_el(root, "memory", str(d.memory_kib))
        if d.memory_dump_core is not None:
            el.set("dumpCore", d.memory_dump_core)
        el.set("unit", "KiB")
    if d.current_memory_kib is not None:
        _text_el(root, "currentMemory", str(d.current_memory_kib), unit="KiB")
    _extras(root, d.extra, _AFTER_MEMORY)
    if d.memory_backing is not None:
        mb = etree.SubElement(root, "memoryBacking")
        if d.memory_backing.hugepages is not None:
            hp = etree.SubElement(mb, "hugepages")
            for page in d.memory_backing.hugepages:
                etree.SubElement(hp, "page", page)
        _raw(mb, d.memory_backing.children)
    _text_el(root, "vcpu", str(d.vcpus), **d.vcpu_attrs)
    if d.iothreads is not None:
        _text_el(root, "iothreads", str(d.iothreads))
    _extras(root, d.extra, _AFTER_VCPU)
    if d.numatune is not None:
        nt = etree.SubElement(root, "numatune")
        if d.numatune.memory:
            etree.SubElement(nt, "memory", d.numatune.memory)
        for node in d.numatune.memnodes:
            etree.SubElement(nt, "memnode", node)
    _extras(root, d.extra, _BEFORE_OS)
    _os(root, d)
    if d.features:
        feats = etree.SubElement(root, "features")
        for f in d.features.values():
            _raw(etree.SubElement(feats, f.name, f.attrs), f.children)
    if d.cpu is not None:
        _cpu(root, d)
    if d.clock is not None:
        clock = etree.SubElement(root, "clock", offset=d.clock.offset, **d.clock.attrs)
        for t in d.clock.timers:
            _raw(etree.SubElement(clock, "timer", name=t.name, **t.attrs), t.children)
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        if getattr(d, tag):
            _text_el(root, tag, getattr(d, tag))
    if d.pm:
        pm = etree.SubElement(root, "pm")
        for tag, enabled in d.pm.items():
            etree.SubElement(pm, tag, enabled=enabled)
    _devices(root, d)
    _extras(root, d.extra, None)
    if d.launch_security is not None:
        ls = etree.SubElement(root, "launchSecurity", type=d.launch_security.type, **d.launch_security.attrs)
        for tag, value in d.launch_security.values.items():
            _text_el(ls, tag, value)
    out: list[str] = []
    _serialise(root, 0, out)
    return "".join(out)


# --- helpers -------------------------------------------------------------------------


def _text_el(parent: _E, tag: str, text: str, **attrs: str) -> _E:
    el = etree.SubElement(parent, tag, attrs)
    el.text = text
    return el


def _raw(parent: _E, elements: list) -> None:
    for el in elements:
        parent.append(copy.deepcopy(el))


def _extras(root: _E, extra: list, tags: tuple[str, ...] | None) -> None:
    """Kept top-level elements: those named in tags here, or (tags None) all the others."""
    known = _AFTER_MEMORY + _AFTER_VCPU + _BEFORE_OS
    for el in extra:
        if (tags is None and el.tag not in known) or (tags is not None and el.tag in tags):
            root.append(copy.deepcopy(el))


def _escape(text: str, quote: bool) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("'", "&apos;") if quote else text


def _serialise(el: _E, depth: int, out: list[str]) -> None:
    pad = "  " * depth
    tag = el.tag
    if not isinstance(tag, str):
        return
    if tag.startswith("{") or any(k.startswith("{") for k in el.attrib):
        # namespaced (metadata): lxml writes the prefixes; re-indent its lines
        text = etree.tostring(el, encoding="unicode", pretty_print=True).rstrip("\n")
        out.extend(pad + line + "\n" for line in text.split("\n"))
        return
    attrs = "".join(f" {k}='{_escape(v, True)}'" for k, v in el.attrib.items())
    children = [c for c in el if isinstance(c.tag, str)]
    if children:
        out.append(f"{pad}<{tag}{attrs}>\n")
        for c in children:
            _serialise(c, depth + 1, out)
        out.append(f"{pad}</{tag}>\n")
    elif el.text:
        out.append(f"{pad}<{tag}{attrs}>{_escape(el.text, False)}</{tag}>\n")
    else:
        out.append(f"{pad}<{tag}{attrs}/>\n")


def _hex(value: int | None, width: int) -> str:
    return f"0x{(value or 0):0{width}x}"


def _address(parent: _E, addr: Address, tag: str = "address") -> None:
    attrs: Attrs = {"type": addr.type} if addr.type else {}
    if addr.type == "pci":
        attrs.update(domain=_hex(addr.domain, 4), bus=_hex(addr.bus, 2), slot=_hex(addr.slot, 2),
                     function=_hex(addr.function, 1))
        if addr.multifunction is not None:
            attrs["multifunction"] = "on" if addr.multifunction else "off"
    else:
        for key in ("controller", "bus", "target", "unit", "domain", "slot", "function"):
            value = getattr(addr, key)
            if value is not None:
                attrs[key] = str(value)
        if addr.port is not None:
            attrs["port"] = addr.port
        if addr.multifunction is not None:
            attrs["multifunction"] = "on" if addr.multifunction else "off"
    attrs.update(addr.extra)
    el = etree.SubElement(parent, tag, attrs)
    if addr.zpci is not None:
        etree.SubElement(el, "zpci", addr.zpci)


def _info(parent: _E, dev: Device, *, boot: bool = True) -> None:
    """The trailing common children: boot order, alias, address (libvirt's order), then kept extras."""
    if boot and dev.boot_order is not None:
        etree.SubElement(parent, "boot", order=str(dev.boot_order))
    _raw(parent, dev.extra)
    if dev.alias:
        etree.SubElement(parent, "alias", name=dev.alias)
    if dev.address is not None:
        _address(parent, dev.address)


def _teaming(parent: _E, teaming: Teaming | None) -> None:
    if teaming is not None:
        attrs = {"type": teaming.type}
        if teaming.persistent:
            attrs["persistent"] = teaming.persistent
        etree.SubElement(parent, "teaming", attrs)


# --- sections ------------------------------------------------------------------------


def _loader(parent: _E, tag: str, loader: Loader) -> None:
    el = etree.SubElement(parent, tag, loader.attrs)
    if loader.path and tag == "nvram" and loader.attrs.get("type") == "file":
        etree.SubElement(el, "source", file=loader.path)
    elif loader.path:
        el.text = loader.path


def _os(root: _E, d: Domain) -> None:
    o = d.os
    attrs = {"firmware": o.firmware} if o.firmware else {}
    os_el = etree.SubElement(root, "os", attrs)
    if o.firmware_children:
        _raw(etree.SubElement(os_el, "firmware"), o.firmware_children)
    tattrs = {k: v for k, v in (("arch", o.arch), ("machine", o.machine)) if v}
    _text_el(os_el, "type", o.type, **tattrs)
    if o.loader is not None:
        _loader(os_el, "loader", o.loader)
    if o.nvram is not None:
        _loader(os_el, "nvram", o.nvram)
    for tag in ("kernel", "initrd", "cmdline", "dtb"):
        if getattr(o, tag) is not None:
            _text_el(os_el, tag, getattr(o, tag))
    for dev in o.boot_devs:
        etree.SubElement(os_el, "boot", dev=dev)
    if o.bootmenu:
        etree.SubElement(os_el, "bootmenu", o.bootmenu)
    if o.smbios_mode:
        etree.SubElement(os_el, "smbios", mode=o.smbios_mode)
    if o.bios:
        etree.SubElement(os_el, "bios", o.bios)
    _raw(os_el, o.extra)


def _cpu(root: _E, d: Domain) -> None:
    cpu = d.cpu
    assert cpu is not None
    attrs = {"mode": cpu.mode} if cpu.mode else {}
    el = etree.SubElement(root, "cpu", {**attrs, **cpu.attrs})
    if cpu.model is not None or cpu.model_attrs:
        m = etree.SubElement(el, "model", cpu.model_attrs)
        if cpu.model:
            m.text = cpu.model
    if cpu.vendor:
        _text_el(el, "vendor", cpu.vendor)
    if cpu.topology:
        etree.SubElement(el, "topology", {k: str(v) for k, v in cpu.topology.items()})
    _raw(el, [x for x in cpu.extra if x.tag != "cache"])
    for policy, name in cpu.features:
        etree.SubElement(el, "feature", policy=policy, name=name)
    _raw(el, [x for x in cpu.extra if x.tag == "cache"])
    if cpu.numa:
        numa = etree.SubElement(el, "numa")
        for cell in cpu.numa:
            attrs = {"id": str(cell.id)} if cell.id is not None else {}
            if cell.cpus is not None:
                attrs["cpus"] = cell.cpus
            attrs.update(memory=str(cell.memory_kib), unit="KiB", **cell.attrs)
            _raw(etree.SubElement(numa, "cell", attrs), cell.children)
        _raw(numa, cpu.numa_extra)


def _devices(root: _E, d: Domain) -> None:
    dv = d.devices
    el = etree.SubElement(root, "devices")
    if dv.emulator:
        _text_el(el, "emulator", dv.emulator)
    for disk in dv.disks:
        _disk(el, disk)
    for cont in dv.controllers:
        _controller(el, cont)
    for fs in dv.filesystems:
        _filesystem(el, fs)
    for net in dv.interfaces:
        _interface(el, net)
    for chr_ in (*dv.serials, *dv.parallels, *dv.consoles, *dv.channels):
        _chardev(el, chr_)
    for inp in dv.inputs:
        _input(el, inp)
    for tpm in dv.tpms:
        _tpm(el, tpm)
    for gr in dv.graphics:
        _graphics(el, gr)
    for snd in dv.sounds:
        _sound(el, snd)
    for audio in dv.audios:
        _raw(etree.SubElement(el, "audio", id=str(audio.id), type=audio.type, **audio.attrs), audio.children)
    for vid in dv.videos:
        _video(el, vid)
    for hd in dv.hostdevs:
        _hostdev(el, hd)
    for wd in dv.watchdogs:
        attrs = {"model": wd.model}
        if wd.action:
            attrs["action"] = wd.action
        _info(etree.SubElement(el, "watchdog", attrs), wd)
    for redir in dv.redirdevs:
        _chardev(el, redir)
    if dv.redirfilter is not None:
        rf = etree.SubElement(el, "redirfilter")
        for usbdev in dv.redirfilter:
            etree.SubElement(rf, "usbdev", usbdev)
    if dv.memballoon is not None:
        mb = dv.memballoon
        m = etree.SubElement(el, "memballoon", model=mb.model, **mb.attrs)
        if mb.stats_period is not None:
            etree.SubElement(m, "stats", period=str(mb.stats_period))
        if mb.driver:
            etree.SubElement(m, "driver", mb.driver)
        _info(m, mb)
    for rng in dv.rngs:
        _rng(el, rng)
    for panic in dv.panics:
        _info(etree.SubElement(el, "panic", {"model": panic.model} if panic.model else {}), panic)
    for mem in dv.memories:
        _memory(el, mem)
    if dv.iommu is not None:
        io = etree.SubElement(el, "iommu", model=dv.iommu.model)
        if dv.iommu.driver:
            etree.SubElement(io, "driver", dv.iommu.driver)
        _info(io, dv.iommu)
    _raw(el, dv.other)


def _disk(parent: _E, disk: Disk) -> None:
    attrs = {"type": disk.type, "device": disk.device}
    if disk.model:
        attrs["model"] = disk.model
    el = etree.SubElement(parent, "disk", {**attrs, **disk.attrs})
    if disk.driver or disk.driver_children:
        _raw(etree.SubElement(el, "driver", disk.driver), disk.driver_children)
    if disk.source is not None:
        src = etree.SubElement(el, "source", disk.source.attrs)
        for host in disk.source.hosts:
            etree.SubElement(src, "host", host)
        _raw(src, disk.source.children)
    tattrs = {"dev": disk.target_dev}
    if disk.target_bus:
        tattrs["bus"] = disk.target_bus
    etree.SubElement(el, "target", {**tattrs, **disk.target_attrs})
    if disk.readonly:
        etree.SubElement(el, "readonly")
    if disk.shareable:
        etree.SubElement(el, "shareable")
    if disk.transient:
        etree.SubElement(el, "transient", {"shareBacking": "yes"} if disk.transient_share_backing else {})
    for tag in ("serial", "wwn", "vendor", "product"):
        if getattr(disk, tag) is not None:
            _text_el(el, tag, getattr(disk, tag))
    _info(el, disk)


def _controller(parent: _E, cont: Controller) -> None:
    attrs = {"type": cont.type}
    if cont.index is not None:
        attrs["index"] = str(cont.index)
    if cont.model:
        attrs["model"] = cont.model
    el = etree.SubElement(parent, "controller", {**attrs, **cont.attrs})
    if cont.model_name:
        etree.SubElement(el, "model", name=cont.model_name)
    if cont.driver or cont.driver_children:
        _raw(etree.SubElement(el, "driver", cont.driver), cont.driver_children)
    if cont.target or cont.target_node is not None:
        target = etree.SubElement(el, "target", cont.target)
        if cont.target_node is not None:
            _text_el(target, "node", str(cont.target_node))
    if cont.master_startport is not None:
        etree.SubElement(el, "master", startport=str(cont.master_startport))
    _info(el, cont)


def _filesystem(parent: _E, fs: Filesystem) -> None:
    el = etree.SubElement(parent, "filesystem", type=fs.type, **fs.attrs)
    if fs.driver:
        etree.SubElement(el, "driver", fs.driver)
    if fs.source:
        etree.SubElement(el, "source", fs.source)
    if fs.target_dir is not None:
        etree.SubElement(el, "target", dir=fs.target_dir)
    if fs.readonly:
        etree.SubElement(el, "readonly")
    _info(el, fs)


def _interface(parent: _E, net: Interface) -> None:
    el = etree.SubElement(parent, "interface", type=net.type, **net.attrs)
    if net.mac:
        etree.SubElement(el, "mac", address=net.mac, **net.mac_attrs)
    if net.source or net.source_address or net.source_children:
        src = etree.SubElement(el, "source", net.source)
        if net.source_address is not None:
            _address(src, net.source_address)
        _raw(src, net.source_children)
    if net.backend:
        etree.SubElement(el, "backend", net.backend)
    if net.target_dev or net.target_attrs:
        etree.SubElement(el, "target", {**({"dev": net.target_dev} if net.target_dev else {}), **net.target_attrs})
    if net.model:
        etree.SubElement(el, "model", type=net.model)
    if net.driver or net.driver_children:
        _raw(etree.SubElement(el, "driver", net.driver), net.driver_children)
    if net.link_state:
        etree.SubElement(el, "link", state=net.link_state)
    if net.mtu is not None:
        etree.SubElement(el, "mtu", size=str(net.mtu))
    _teaming(el, net.teaming)
    if net.rom:
        etree.SubElement(el, "rom", net.rom)
    _info(el, net)


def _hostdev(parent: _E, hd: Hostdev) -> None:
    el = etree.SubElement(parent, "hostdev", mode=hd.mode, type=hd.type, **hd.attrs)
    if hd.driver:
        etree.SubElement(el, "driver", hd.driver)
    src = etree.SubElement(el, "source", hd.source_attrs)
    if hd.source_address is not None:
        _address(src, hd.source_address)
    _raw(src, hd.source_children)
    if hd.readonly:
        etree.SubElement(el, "readonly")
    if hd.shareable:
        etree.SubElement(el, "shareable")
    _teaming(el, hd.teaming)
    if hd.rom:
        etree.SubElement(el, "rom", hd.rom)
    _info(el, hd)


def _chardev_body(el: _E, chr_: Chardev) -> None:
    for src in chr_.sources:
        _raw(etree.SubElement(el, "source", src.attrs), src.children)
    if chr_.protocol:
        etree.SubElement(el, "protocol", type=chr_.protocol)
    if chr_.log:
        etree.SubElement(el, "log", chr_.log)


def _chardev(parent: _E, chr_: Chardev) -> None:
    el = etree.SubElement(parent, chr_.kind, type=chr_.type, **chr_.attrs)
    _chardev_body(el, chr_)
    if chr_.target_type is not None or chr_.target_attrs or chr_.target_model:
        attrs = {"type": chr_.target_type} if chr_.target_type else {}
        t = etree.SubElement(el, "target", {**attrs, **chr_.target_attrs})
        if chr_.target_model:
            etree.SubElement(t, "model", name=chr_.target_model)
    _info(el, chr_)


def _input(parent: _E, inp: Input) -> None:
    attrs = {"type": inp.type}
    if inp.bus:
        attrs["bus"] = inp.bus
    if inp.model:
        attrs["model"] = inp.model
    el = etree.SubElement(parent, "input", attrs)
    if inp.source:
        etree.SubElement(el, "source", inp.source)
    _info(el, inp)


def _tpm(parent: _E, tpm: Tpm) -> None:
    el = etree.SubElement(parent, "tpm", {"model": tpm.model} if tpm.model else {})
    if tpm.backend_type:
        be = etree.SubElement(el, "backend", type=tpm.backend_type, **tpm.backend_attrs)
        if tpm.backend_source:
            src = dict(tpm.backend_source)
            etree.SubElement(be, src.pop("element", "device"), src)
        _raw(be, tpm.backend_children)
    _info(el, tpm)


def _graphics(parent: _E, gr: Graphics) -> None:
    el = etree.SubElement(parent, "graphics", type=gr.type, **gr.attrs)
    for listen in gr.listens:
        etree.SubElement(el, "listen", listen)
    _info(el, gr)


def _sound(parent: _E, snd: Sound) -> None:
    el = etree.SubElement(parent, "sound", model=snd.model, **snd.attrs)
    for codec in snd.codecs:
        etree.SubElement(el, "codec", type=codec)
    if snd.audio_id is not None:
        etree.SubElement(el, "audio", id=str(snd.audio_id))
    _info(el, snd)


def _video(parent: _E, vid: Video) -> None:
    el = etree.SubElement(parent, "video")
    if vid.driver:
        etree.SubElement(el, "driver", vid.driver)
    if vid.model is not None or vid.model_attrs:
        attrs = {"type": vid.model} if vid.model else {}
        _raw(etree.SubElement(el, "model", {**attrs, **vid.model_attrs}), vid.model_children)
    _info(el, vid)


def _rng(parent: _E, rng: Rng) -> None:
    el = etree.SubElement(parent, "rng", model=rng.model)
    if rng.driver:
        etree.SubElement(el, "driver", rng.driver)
    if rng.rate:
        etree.SubElement(el, "rate", rng.rate)
    if rng.backend_model == "egd" and rng.egd is not None:
        be = etree.SubElement(el, "backend", model="egd", type=rng.egd.type)
        _chardev_body(be, rng.egd)
    else:
        be = etree.SubElement(el, "backend", model=rng.backend_model)
        if rng.backend_path:
            be.text = rng.backend_path
    _info(el, rng)


def _memory(parent: _E, mem: MemoryDevice) -> None:
    el = etree.SubElement(parent, "memory", model=mem.model, **mem.attrs)
    if mem.uuid:
        _text_el(el, "uuid", mem.uuid)
    if mem.source or mem.source_pmem:
        src = etree.SubElement(el, "source")
        for tag, value in mem.source.items():
            _text_el(src, tag, value, **({"unit": "KiB"} if tag in ("pagesize", "alignsize") else {}))
        if mem.source_pmem:
            etree.SubElement(src, "pmem")
    tgt = etree.SubElement(el, "target", **mem.target_attrs)
    if mem.target_size_kib is not None:
        _text_el(tgt, "size", str(mem.target_size_kib), unit="KiB")
    if mem.target_node is not None:
        _text_el(tgt, "node", str(mem.target_node))
    if mem.target_label_kib is not None:
        _text_el(etree.SubElement(tgt, "label"), "size", str(mem.target_label_kib), unit="KiB")
    if mem.target_readonly:
        etree.SubElement(tgt, "readonly")
    for tag, kib in (("block", mem.target_block_kib), ("requested", mem.target_requested_kib)):
        if kib is not None:
            _text_el(tgt, tag, str(kib), unit="KiB")
    if mem.target_base is not None:
        etree.SubElement(tgt, "address", base=f"0x{mem.target_base:x}")
    _raw(tgt, mem.target_children)
    _info(el, mem)
