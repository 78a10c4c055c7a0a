"""libvirt domain XML -> Domain model.

Malformed XML and values that cannot be read (a memory size that is not a
number, an unknown unit) raise DomainInvalid naming the source and line.
Elements the model does not know are kept verbatim, never dropped silently.
"""

from __future__ import annotations

from lxml import etree

from conformance.domain.model import (
    Address,
    Attrs,
    Audio,
    Chardev,
    CharSource,
    Clock,
    Controller,
    Cpu,
    Device,
    Devices,
    Disk,
    DiskSource,
    Domain,
    Feature,
    Filesystem,
    Graphics,
    Hostdev,
    Input,
    Interface,
    Iommu,
    LaunchSecurity,
    Loader,
    Memballoon,
    MemoryBacking,
    MemoryDevice,
    NumaCell,
    Numatune,
    Os,
    Panic,
    Rng,
    Sound,
    Teaming,
    Timer,
    Tpm,
    Video,
    Watchdog,
)
from conformance.errors import DomainInvalid

_PARSER = etree.XMLParser(remove_comments=True, remove_blank_text=True, resolve_entities=False, no_network=True)

# unit -> bytes (libvirt's virScaleInteger)
_UNITS = {
    "b": 1, "bytes": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
    "p": 1024**5, "pib": 1024**5, "pb": 1000**5,
    "e": 1024**6, "eib": 1024**6, "eb": 1000**6,
}

_CHARDEV_KINDS = ("serial", "parallel", "console", "channel")


class _Ctx:
    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str, el: etree._Element | None, hint: str | None = None) -> DomainInvalid:
        return DomainInvalid(message, path=self.source, line=el.sourceline if el is not None else None, hint=hint)

    def int(self, text: str | None, el: etree._Element, what: str) -> int:
        try:
            return int(text.strip(), 0) if text and text.strip().lower().startswith("0x") else int(text or "")
        except ValueError:
            raise self.fail(f"<{el.tag}> {what} is not a number: {text!r}", el) from None

    def size_kib(self, el: etree._Element, value: str | None = None, unit_attr: str = "unit") -> int:
        """A scaled size (<memory unit='MiB'>512</memory>) in KiB, rounded up as libvirt does."""
        text = el.text if value is None else value
        unit = (el.get(unit_attr) or "KiB").lower()
        if unit not in _UNITS:
            raise self.fail(f"unknown unit {el.get(unit_attr)!r} in <{el.tag}>", el,
                            hint="use b, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")
        try:
            number = int((text or "").strip())
        except ValueError:
            raise self.fail(f"<{el.tag}> size is not a whole number: {text!r}", el) from None
        return -(-number * _UNITS[unit] // 1024)


def parse_domain(xml: bytes | str, *, source: str = "<domain>") -> Domain:
    """Parse libvirt domain XML; DomainInvalid (with source and line) when it cannot be read."""
    ctx = _Ctx(source)
    data = xml.encode() if isinstance(xml, str) else xml
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        raise DomainInvalid(f"malformed XML: {exc.msg}", path=source, line=line) from None
    if root.tag != "domain":
        raise ctx.fail(f"not a libvirt domain: root element is <{root.tag}>", root, hint="expected <domain type='kvm'>")
    return _domain(ctx, root)


def _a(el: etree._Element) -> Attrs:
    return dict(el.attrib)


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _yes(value: str | None) -> bool | None:
    if value is None:
        return None
    return value in ("yes", "on")


def _domain(ctx: _Ctx, root: etree._Element) -> Domain:
    dom = Domain(type=root.get("type") or "qemu", source=ctx.source, xml=root)
    for el in root:
        tag = el.tag
        if not isinstance(tag, str):
            continue
        if tag == "name":
            dom.name = _text(el)
        elif tag == "uuid":
            dom.uuid = _text(el)
        elif tag == "title":
            dom.title = el.text or ""
        elif tag == "description":
            dom.description = el.text or ""
        elif tag == "metadata":
            dom.metadata = el
        elif tag == "memory":
            dom.memory_kib = ctx.size_kib(el)
            dom.memory_dump_core = el.get("dumpCore")
        elif tag == "maxMemory":
            dom.max_memory_kib = ctx.size_kib(el)
            if el.get("slots"):
                dom.max_memory_slots = ctx.int(el.get("slots"), el, "slots")
        elif tag == "currentMemory":
            dom.current_memory_kib = ctx.size_kib(el)
        elif tag == "memoryBacking":
            dom.memory_backing = _memory_backing(ctx, el)
        elif tag == "vcpu":
            dom.vcpus = ctx.int(_text(el), el, "count")
            dom.vcpu_attrs = _a(el)
        elif tag == "iothreads":
            dom.iothreads = ctx.int(_text(el), el, "count")
        elif tag == "numatune":
            dom.numatune = _numatune(el)
        elif tag == "os":
            dom.os = _os(ctx, el)
        elif tag == "features":
            dom.features = {f.tag: Feature(name=f.tag, attrs=_a(f), children=list(f)) for f in el
                            if isinstance(f.tag, str)}
        elif tag == "cpu":
            dom.cpu = _cpu(ctx, el)
        elif tag == "clock":
            dom.clock = _clock(el)
        elif tag == "on_poweroff":
            dom.on_poweroff = _text(el)
        elif tag == "on_reboot":
            dom.on_reboot = _text(el)
        elif tag == "on_crash":
            dom.on_crash = _text(el)
        elif tag == "pm":
            dom.pm = {c.tag: c.get("enabled", "") for c in el if isinstance(c.tag, str)}
        elif tag == "devices":
            dom.devices = _devices(ctx, el)
        elif tag == "launchSecurity":
            dom.launch_security = LaunchSecurity(
                type=el.get("type", ""), attrs={k: v for k, v in el.attrib.items() if k != "type"},
                values={c.tag: _text(c) for c in el if isinstance(c.tag, str)})
        else:
            dom.extra.append(el)
    if not dom.name:
        raise ctx.fail("the domain has no <name>", root, hint="add <name>guest</name>")
    if not dom.memory_kib and not (dom.cpu and dom.cpu.numa):  # virDomainDefPostParseMemory: no initial memory
        raise ctx.fail("XML error: Memory size must be specified via <memory> or in the <numa> configuration", root,
                       hint="add <memory unit='MiB'>512</memory>")
    return dom


def _memory_backing(ctx: _Ctx, el: etree._Element) -> MemoryBacking:
    mb = MemoryBacking()
    for c in el:
        if c.tag == "hugepages":
            mb.hugepages = [_a(p) for p in c if p.tag == "page"]
        elif isinstance(c.tag, str):
            mb.children.append(c)
    return mb


def _numatune(el: etree._Element) -> Numatune:
    nt = Numatune()
    for c in el:
        if c.tag == "memory":
            nt.memory = _a(c)
            if nt.memory.get("placement") == "auto":  # numad chooses: a nodeset is dropped (virDomainNumatuneParseXML)
                nt.memory.pop("nodeset", None)
        elif c.tag == "memnode":
            nt.memnodes.append(_a(c))
    return nt


def _os(ctx: _Ctx, el: etree._Element) -> Os:
    os_ = Os(firmware=el.get("firmware"))
    for c in el:
        tag = c.tag
        if tag == "type":
            os_.type = _text(c) or "hvm"
            os_.arch = c.get("arch")
            os_.machine = c.get("machine")
        elif tag == "loader":
            os_.loader = Loader(path=_text(c) or None, attrs=_a(c))
        elif tag == "nvram":  # <nvram>PATH</nvram>, or <nvram type='file'><source file=PATH/></nvram>
            source = c.find("source")
            path = _text(c) or (source.get("file") if source is not None else None)
            os_.nvram = Loader(path=path or None, attrs=_a(c))
        elif tag == "boot":
            os_.boot_devs.append(c.get("dev", ""))
        elif tag == "bootmenu":
            os_.bootmenu = _a(c)
        elif tag == "kernel":
            os_.kernel = _text(c)
        elif tag == "initrd":
            os_.initrd = _text(c)
        elif tag == "cmdline":
            os_.cmdline = c.text or ""
        elif tag == "dtb":
            os_.dtb = _text(c)
        elif tag == "bios":
            os_.bios = _a(c)
        elif tag == "smbios":
            os_.smbios_mode = c.get("mode")
        elif tag == "firmware":
            os_.firmware_children = list(c)
        elif isinstance(tag, str):
            os_.extra.append(c)
    return os_


def _cpu(ctx: _Ctx, el: etree._Element) -> Cpu:
    cpu = Cpu(mode=el.get("mode"), attrs={k: v for k, v in el.attrib.items() if k != "mode"})
    for c in el:
        tag = c.tag
        if tag == "model":
            cpu.model = _text(c) or None
            cpu.model_attrs = _a(c)
        elif tag == "vendor":
            cpu.vendor = _text(c)
        elif tag == "topology":
            cpu.topology = {k: ctx.int(v, c, k) for k, v in c.attrib.items()}
        elif tag == "feature":
            cpu.features.append((c.get("policy", "require"), c.get("name", "")))
        elif tag == "numa":
            for cell in c:
                if cell.tag != "cell":
                    if isinstance(cell.tag, str):
                        cpu.numa_extra.append(cell)
                    continue
                attrs = _a(cell)
                cpu.numa.append(NumaCell(
                    id=ctx.int(attrs.pop("id"), cell, "id") if "id" in attrs else None,
                    cpus=attrs.pop("cpus", None),
                    memory_kib=ctx.size_kib(cell, attrs.pop("memory", "0")),
                    attrs={k: v for k, v in attrs.items() if k != "unit"}, children=list(cell)))
        elif isinstance(tag, str):
            cpu.extra.append(c)
    return cpu


def _clock(el: etree._Element) -> Clock:
    clock = Clock(offset=el.get("offset", "utc"), attrs={k: v for k, v in el.attrib.items() if k != "offset"})
    for t in el:
        if t.tag == "timer":
            clock.timers.append(Timer(name=t.get("name", ""), attrs={k: v for k, v in t.attrib.items()
                                                                     if k != "name"}, children=list(t)))
    return clock


# --- devices -------------------------------------------------------------------------


def _devices(ctx: _Ctx, el: etree._Element) -> Devices:
    devs = Devices()
    for c in el:
        tag = c.tag
        if not isinstance(tag, str):
            continue
        parser = _DEVICE_PARSERS.get(tag)
        if tag == "emulator":
            devs.emulator = _text(c)
        elif tag in _CHARDEV_KINDS:
            getattr(devs, {"serial": "serials", "parallel": "parallels", "console": "consoles",
                           "channel": "channels"}[tag]).append(_chardev(ctx, c, tag))
        elif tag == "memballoon":
            devs.memballoon = _memballoon(ctx, c)
        elif tag == "iommu":
            devs.iommu = Iommu(model=c.get("model", "intel"), line=c.sourceline)
            _device_children(ctx, c, devs.iommu, {"driver": lambda e: devs.iommu.driver.update(_a(e))})
        elif tag == "redirdev":
            devs.redirdevs.append(_chardev(ctx, c, "redirdev"))
        elif tag == "redirfilter":
            devs.redirfilter = [_a(u) for u in c if u.tag == "usbdev"]
        elif tag == "audio":
            devs.audios.append(Audio(id=ctx.int(c.get("id", "0"), c, "id"), type=c.get("type", "none"),
                                     attrs={k: v for k, v in c.attrib.items() if k not in ("id", "type")},
                                     children=list(c), line=c.sourceline))
        elif parser is not None:
            target, func = parser
            getattr(devs, target).append(func(ctx, c))
        else:
            devs.other.append(c)
    return devs


def _address(ctx: _Ctx, el: etree._Element) -> Address:
    addr = Address(type=el.get("type", ""))
    for key, value in el.attrib.items():
        if key in ("domain", "bus", "slot", "function", "controller", "target", "unit"):
            setattr(addr, key, ctx.int(value, el, key))
        elif key == "multifunction":
            addr.multifunction = _yes(value)
        elif key == "port":
            addr.port = value
        elif key != "type":
            addr.extra[key] = value
    zpci = el.find("zpci")  # s390 only: <address type='pci'><zpci uid= fid=/></address>
    if zpci is not None:
        addr.zpci = dict(zpci.attrib)
    return addr


USER_ALIAS_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def user_alias(name: str | None) -> str | None:
    """The alias a user's domain keeps: libvirt (virDomainDeviceInfoParseXML, 9.0 to 11.3) keeps a user alias
    ('ua-' and then only letters, digits, '_' and '-') and drops any other, accepting the domain."""
    ok = name is not None and name.startswith("ua-") and USER_ALIAS_CHARS.issuperset(name)
    return name if ok else None


def _device_children(ctx: _Ctx, el: etree._Element, dev: Device, handlers: dict) -> None:
    """Dispatch children: common ones (alias, address, boot) here, the rest to handlers or extra."""
    for c in el:
        tag = c.tag
        if not isinstance(tag, str):
            continue
        handler = handlers.get(tag)
        if handler is not None:
            handler(c)
        elif tag == "alias":
            dev.alias = user_alias(c.get("name"))
        elif tag == "address":
            addr = _address(ctx, c)
            # a PCI address without domain, bus and slot asks for one to be assigned, like no address
            # (virDeviceInfoPCIAddressIsWanted); the element is kept verbatim
            if addr.type == "pci" and not (addr.domain or addr.bus or addr.slot) and addr.zpci is None \
                    and addr.multifunction is None:
                dev.extra.append(c)
            else:
                dev.address = addr
        elif tag == "boot":
            dev.boot_order = ctx.int(c.get("order"), c, "order")
        else:
            dev.extra.append(c)


def _disk(ctx: _Ctx, el: etree._Element) -> Disk:
    disk = Disk(type=el.get("type", "file"), device=el.get("device", "disk"), model=el.get("model"),
                attrs={k: v for k, v in el.attrib.items() if k not in ("type", "device", "model")},
                line=el.sourceline)

    def source(c: etree._Element) -> None:
        disk.source = DiskSource.of(c)

    def target(c: etree._Element) -> None:
        disk.target_dev = c.get("dev", "")
        disk.target_bus = c.get("bus")
        disk.target_attrs = {k: v for k, v in c.attrib.items() if k not in ("dev", "bus")}

    def setter(name: str, value: object):
        return lambda c: setattr(disk, name, value if value is not None else _text(c))

    _device_children(ctx, el, disk, {
        "driver": lambda c: (disk.driver.update(_a(c)),
                             disk.driver_children.extend(x for x in c if isinstance(x.tag, str))),
        "source": source, "target": target,
        "readonly": setter("readonly", True), "shareable": setter("shareable", True),
        "transient": lambda c: (setattr(disk, "transient", True),
                                setattr(disk, "transient_share_backing", c.get("shareBacking") == "yes")),
        "serial": lambda c: setattr(disk, "serial", c.text or ""),  # verbatim: its spaces count
        "wwn": setter("wwn", None),
        "vendor": setter("vendor", None), "product": setter("product", None),
    })
    if not disk.target_dev:
        # virDomainDiskDefValidate (VIR_ERR_NO_TARGET), naming the source
        src = disk.source
        what = (f"pool = '{src.attrs.get('pool')}', volume = '{src.attrs.get('volume')}'" if src is not None and
                src.attrs.get("pool") else f"missing target information for device {src.path if src else ''}".rstrip())
        raise ctx.fail(f"<disk> has no <target dev=...>: {what}", el, hint="add e.g. <target dev='vda' bus='virtio'/>")
    return disk


def _controller(ctx: _Ctx, el: etree._Element) -> Controller:
    cont = Controller(type=el.get("type", ""), model=el.get("model"), line=el.sourceline,
                      attrs={k: v for k, v in el.attrib.items() if k not in ("type", "index", "model")})
    if el.get("index") is not None:
        cont.index = ctx.int(el.get("index"), el, "index")

    def master(c: etree._Element) -> None:
        cont.master_startport = ctx.int(c.get("startport"), c, "startport")

    def target(c: etree._Element) -> None:
        cont.target.update(_a(c))
        node = next((n for n in c if n.tag == "node"), None)
        if node is not None:
            cont.target_node = ctx.int(_text(node), node, "node")

    _device_children(ctx, el, cont, {
        "driver": lambda c: (cont.driver.update(_a(c)),
                             cont.driver_children.extend(x for x in c if isinstance(x.tag, str))),
        "model": lambda c: setattr(cont, "model_name", c.get("name")),
        "target": target, "master": master,
    })
    return cont


def _teaming(c: etree._Element) -> Teaming:
    return Teaming(type=c.get("type", ""), persistent=c.get("persistent"))


def _interface(ctx: _Ctx, el: etree._Element) -> Interface:
    net = Interface(type=el.get("type", "user"), attrs={k: v for k, v in el.attrib.items() if k != "type"},
                    line=el.sourceline)

    def source(c: etree._Element) -> None:
        net.source = _a(c)
        for s in c:
            if s.tag == "address":
                net.source_address = _address(ctx, s)
            elif isinstance(s.tag, str):
                net.source_children.append(s)

    def mac(c: etree._Element) -> None:
        mac = c.get("address")
        net.mac = mac.lower() if mac else mac  # virMacAddrParse + virMacAddrFormat: lower-case hex
        net.mac_attrs = {k: v for k, v in c.attrib.items() if k != "address"}

    def target(c: etree._Element) -> None:
        net.target_dev = c.get("dev")
        net.target_attrs = {k: v for k, v in c.attrib.items() if k != "dev"}

    def driver(c: etree._Element) -> None:
        net.driver = _a(c)
        net.driver_children = [x for x in c if isinstance(x.tag, str)]

    _device_children(ctx, el, net, {
        "source": source, "mac": mac, "target": target, "driver": driver,
        "model": lambda c: setattr(net, "model", c.get("type")),
        "mtu": lambda c: setattr(net, "mtu", ctx.int(c.get("size"), c, "size")),
        "teaming": lambda c: setattr(net, "teaming", _teaming(c)),
        "link": lambda c: setattr(net, "link_state", c.get("state")),
        "rom": lambda c: net.rom.update(_a(c)), "backend": lambda c: net.backend.update(_a(c)),
    })
    return net


def _hostdev(ctx: _Ctx, el: etree._Element) -> Hostdev:
    hd = Hostdev(mode=el.get("mode", "subsystem"), type=el.get("type", "pci"), line=el.sourceline,
                 attrs={k: v for k, v in el.attrib.items() if k not in ("mode", "type")})

    def source(c: etree._Element) -> None:
        hd.source_attrs = _a(c)
        for s in c:
            if s.tag == "address" and hd.type == "pci":
                hd.source_address = _address(ctx, s)
            elif isinstance(s.tag, str):
                hd.source_children.append(s)

    _device_children(ctx, el, hd, {
        "source": source, "driver": lambda c: hd.driver.update(_a(c)), "rom": lambda c: hd.rom.update(_a(c)),
        "readonly": lambda c: setattr(hd, "readonly", True), "shareable": lambda c: setattr(hd, "shareable", True),
        "teaming": lambda c: setattr(hd, "teaming", _teaming(c)),
    })
    return hd


def chardev_from_element(el: etree._Element, kind: str, source: str = "<domain>") -> Chardev:
    """A device element the model keeps verbatim (<smartcard mode='passthrough'>) read as a chardev."""
    return _chardev(_Ctx(source), el, kind)


def _chardev(ctx: _Ctx, el: etree._Element, kind: str) -> Chardev:
    chr_ = Chardev(kind=kind, type=el.get("type", "pty"), line=el.sourceline,
                   attrs={k: v for k, v in el.attrib.items() if k != "type"})

    def source(c: etree._Element) -> None:
        chr_.sources.append(CharSource(attrs=_a(c), children=[x for x in c if isinstance(x.tag, str)]))

    def target(c: etree._Element) -> None:
        chr_.target_type = c.get("type")
        chr_.target_attrs = {k: v for k, v in c.attrib.items() if k != "type"}
        for m in c:
            if m.tag == "model":
                chr_.target_model = m.get("name")

    _device_children(ctx, el, chr_, {
        "source": source, "target": target, "protocol": lambda c: setattr(chr_, "protocol", c.get("type")),
        "log": lambda c: chr_.log.update(_a(c)),
    })
    return chr_


def _input(ctx: _Ctx, el: etree._Element) -> Input:
    inp = Input(type=el.get("type", "mouse"), bus=el.get("bus"), model=el.get("model"), line=el.sourceline)
    _device_children(ctx, el, inp, {"source": lambda c: inp.source.update(_a(c))})
    return inp


def _graphics(ctx: _Ctx, el: etree._Element) -> Graphics:
    gr = Graphics(type=el.get("type", "vnc"), attrs={k: v for k, v in el.attrib.items() if k != "type"},
                  line=el.sourceline)
    _device_children(ctx, el, gr, {"listen": lambda c: gr.listens.append(_a(c))})
    return gr


def _video(ctx: _Ctx, el: etree._Element) -> Video:
    vid = Video(line=el.sourceline)

    def model(c: etree._Element) -> None:
        vid.model = c.get("type")
        vid.model_attrs = {k: v for k, v in c.attrib.items() if k != "type"}
        vid.model_children = [x for x in c if isinstance(x.tag, str)]

    _device_children(ctx, el, vid, {"model": model, "driver": lambda c: vid.driver.update(_a(c))})
    return vid


def _sound(ctx: _Ctx, el: etree._Element) -> Sound:
    snd = Sound(model=el.get("model", "ich6"), line=el.sourceline,
                attrs={k: v for k, v in el.attrib.items() if k != "model"})
    _device_children(ctx, el, snd, {
        "codec": lambda c: snd.codecs.append(c.get("type", "")),
        "audio": lambda c: setattr(snd, "audio_id", ctx.int(c.get("id"), c, "id")),
    })
    return snd


def _watchdog(ctx: _Ctx, el: etree._Element) -> Watchdog:
    wd = Watchdog(model=el.get("model", "i6300esb"), action=el.get("action"), line=el.sourceline)
    _device_children(ctx, el, wd, {})
    return wd


def _rng(ctx: _Ctx, el: etree._Element) -> Rng:
    rng = Rng(model=el.get("model", "virtio"), line=el.sourceline)

    def backend(c: etree._Element) -> None:
        rng.backend_model = c.get("model", "random")
        if rng.backend_model == "egd":
            rng.egd = _chardev(ctx, c, "rng-egd")
            rng.egd.type = c.get("type", "tcp")
            rng.egd.attrs = {}
        else:
            rng.backend_path = _text(c) or None

    _device_children(ctx, el, rng, {
        "rate": lambda c: rng.rate.update(_a(c)), "backend": backend, "driver": lambda c: rng.driver.update(_a(c)),
    })
    return rng


def _memballoon(ctx: _Ctx, el: etree._Element) -> Memballoon:
    mb = Memballoon(model=el.get("model", "virtio"), line=el.sourceline,
                    attrs={k: v for k, v in el.attrib.items() if k != "model"})
    _device_children(ctx, el, mb, {
        "stats": lambda c: setattr(mb, "stats_period", ctx.int(c.get("period"), c, "period")),
        "driver": lambda c: mb.driver.update(_a(c)),
    })
    return mb


def _memory_device(ctx: _Ctx, el: etree._Element) -> MemoryDevice:
    mem = MemoryDevice(model=el.get("model", "dimm"), line=el.sourceline,
                       attrs={k: v for k, v in el.attrib.items() if k != "model"})

    def source(c: etree._Element) -> None:
        for s in c:
            if s.tag == "pmem":
                mem.source_pmem = True
            elif s.tag in ("pagesize", "alignsize"):
                mem.source[s.tag] = str(ctx.size_kib(s))
            elif isinstance(s.tag, str):
                mem.source[s.tag] = _text(s)

    def target(c: etree._Element) -> None:
        mem.target_attrs = _a(c)
        for t in c:
            if t.tag == "size":
                mem.target_size_kib = ctx.size_kib(t)
            elif t.tag == "node":
                mem.target_node = ctx.int(_text(t), t, "node")
            elif t.tag == "label":
                for s in t:
                    if s.tag == "size":
                        mem.target_label_kib = ctx.size_kib(s)
            elif t.tag == "readonly":
                mem.target_readonly = True
            elif t.tag == "block":
                mem.target_block_kib = ctx.size_kib(t)
            elif t.tag == "requested":
                mem.target_requested_kib = ctx.size_kib(t)
            elif t.tag == "address" and t.get("base"):
                mem.target_base = ctx.int(t.get("base"), t, "address base")
            elif isinstance(t.tag, str):
                mem.target_children.append(t)

    _device_children(ctx, el, mem, {"source": source, "target": target,
                                    "uuid": lambda c: setattr(mem, "uuid", _text(c))})
    return mem


def _tpm(ctx: _Ctx, el: etree._Element) -> Tpm:
    tpm = Tpm(model=el.get("model"), line=el.sourceline, backend_type="")  # no <backend>: none

    def backend(c: etree._Element) -> None:
        tpm.backend_type = c.get("type", "passthrough")
        tpm.backend_attrs = {k: v for k, v in c.attrib.items() if k != "type"}
        for s in c:
            if s.tag in ("device", "source"):
                tpm.backend_source = {"element": s.tag, **_a(s)}
            elif isinstance(s.tag, str):
                tpm.backend_children.append(s)

    _device_children(ctx, el, tpm, {"backend": backend})
    return tpm


def _panic(ctx: _Ctx, el: etree._Element) -> Panic:
    panic = Panic(model=el.get("model"), line=el.sourceline)
    _device_children(ctx, el, panic, {})
    return panic


def _filesystem(ctx: _Ctx, el: etree._Element) -> Filesystem:
    fs = Filesystem(type=el.get("type", "mount"), line=el.sourceline,
                    attrs={k: v for k, v in el.attrib.items() if k != "type"})
    _device_children(ctx, el, fs, {
        "driver": lambda c: fs.driver.update(_a(c)), "source": lambda c: fs.source.update(_a(c)),
        "target": lambda c: setattr(fs, "target_dir", c.get("dir")),
        "readonly": lambda c: setattr(fs, "readonly", True),
    })
    return fs


_DEVICE_PARSERS = {
    "disk": ("disks", _disk), "controller": ("controllers", _controller), "interface": ("interfaces", _interface),
    "hostdev": ("hostdevs", _hostdev), "input": ("inputs", _input), "graphics": ("graphics", _graphics),
    "video": ("videos", _video), "sound": ("sounds", _sound), "watchdog": ("watchdogs", _watchdog),
    "rng": ("rngs", _rng), "memory": ("memories", _memory_device), "tpm": ("tpms", _tpm),
    "panic": ("panics", _panic), "filesystem": ("filesystems", _filesystem),
}
