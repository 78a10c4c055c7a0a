"""The Domain model: a typed view of a libvirt domain XML.

The fields that the argv builder and the semantic rules read are typed; the
long tail of libvirt's per-element options is kept as ordered attribute
dicts, and elements this model does not know are kept verbatim (``extra``)
so that parse -> format is lossless for them. ``line`` fields remember the
source line of an element for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Raw = Any  # an lxml element kept verbatim (unknown to this model)
Attrs = dict[str, str]


@dataclass(slots=True, kw_only=True)
class Address:
    """<address type='pci|drive|usb|virtio-serial|ccw|isa|dimm|...'>: ints where libvirt has numbers."""

    type: str
    domain: int | None = None
    bus: int | None = None
    slot: int | None = None
    function: int | None = None
    multifunction: bool | None = None
    controller: int | None = None
    target: int | None = None
    unit: int | None = None
    port: str | None = None
    extra: Attrs = field(default_factory=dict)  # cssid/ssid/devno, reg, iobase, irq, base...
    zpci: Attrs | None = None  # s390's <zpci uid= fid=/> inside a PCI address

    def pci_tuple(self) -> tuple[int, int, int, int]:
        return (self.domain or 0, self.bus or 0, self.slot or 0, self.function or 0)


@dataclass(slots=True, kw_only=True)
class Device:
    """What every device has: alias (<alias name=>), guest address, boot order, source line."""

    alias: str | None = None
    address: Address | None = None
    boot_order: int | None = None
    line: int | None = None
    extra: list[Raw] = field(default_factory=list)


# --- devices -------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class DiskSource:
    attrs: Attrs = field(default_factory=dict)  # file | dev | dir | protocol+name | pool+volume, startupPolicy, index
    hosts: list[Attrs] = field(default_factory=list)
    children: list[Raw] = field(default_factory=list)  # auth, encryption, reservations, ...

    @property
    def path(self) -> str | None:
        a = self.attrs
        return a.get("file") or a.get("dev") or a.get("dir") or a.get("name")

    @classmethod
    def of(cls, el: Any) -> DiskSource:
        """A <source> element (of a disk, a backing layer, a data store or an NVRAM) as a DiskSource: its
        attributes, its <host>s and its other children; None gives an empty source."""
        source = cls(attrs=dict(el.attrib) if el is not None else {})
        for c in el if el is not None else []:
            if c.tag == "host":
                source.hosts.append(dict(c.attrib))
            elif isinstance(c.tag, str):
                source.children.append(c)
        return source


@dataclass(slots=True, kw_only=True)
class Disk(Device):
    type: str = "file"  # file | block | network | volume | dir | nvme | vhostuser
    device: str = "disk"  # disk | cdrom | floppy | lun
    model: str | None = None
    attrs: Attrs = field(default_factory=dict)  # snapshot, rawio, sgio
    driver: Attrs = field(default_factory=dict)  # name, type (format), cache, io, discard, iothread, queues...
    driver_children: list[Raw] = field(default_factory=list)  # metadata_cache, iothreads
    source: DiskSource | None = None
    target_dev: str = ""
    target_bus: str | None = None
    target_attrs: Attrs = field(default_factory=dict)  # tray, removable, rotation_rate
    readonly: bool = False
    shareable: bool = False
    transient: bool = False
    transient_share_backing: bool = False  # <transient shareBacking='yes'/>: hot-plugged after start
    serial: str | None = None
    wwn: str | None = None
    vendor: str | None = None
    product: str | None = None


@dataclass(slots=True, kw_only=True)
class Controller(Device):
    type: str = ""
    index: int | None = None
    model: str | None = None
    attrs: Attrs = field(default_factory=dict)  # ports, vectors, maxGrantFrames, ...
    driver: Attrs = field(default_factory=dict)  # queues, iothread, cmd_per_lun, max_sectors, ioeventfd
    driver_children: list[Raw] = field(default_factory=list)  # <iothreads> of a virtio-scsi controller
    model_name: str | None = None  # <model name='pcie-root-port'/>
    target: Attrs = field(default_factory=dict)  # chassisNr, chassis, port, busNr, index, hotplug
    target_node: int | None = None  # <target><node>: the NUMA node of an expander bus
    master_startport: int | None = None  # <master startport=> of USB companions


@dataclass(slots=True, kw_only=True)
class Teaming:
    type: str  # persistent | transient
    persistent: str | None = None


@dataclass(slots=True, kw_only=True)
class Interface(Device):
    type: str = "user"  # user | ethernet | network | bridge | direct | hostdev | vhostuser | ...
    attrs: Attrs = field(default_factory=dict)  # managed, trustGuestRxFilters
    mac: str | None = None
    mac_attrs: Attrs = field(default_factory=dict)
    source: Attrs = field(default_factory=dict)  # network, bridge, dev, mode, portgroup
    source_address: Address | None = None  # type='hostdev': the host PCI function
    source_children: list[Raw] = field(default_factory=list)
    model: str | None = None
    driver: Attrs = field(default_factory=dict)
    driver_children: list[Raw] = field(default_factory=list)
    target_dev: str | None = None
    target_attrs: Attrs = field(default_factory=dict)
    mtu: int | None = None
    teaming: Teaming | None = None
    link_state: str | None = None
    rom: Attrs = field(default_factory=dict)
    backend: Attrs = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Hostdev(Device):
    mode: str = "subsystem"
    type: str = "pci"  # pci | usb | scsi | scsi_host | mdev
    attrs: Attrs = field(default_factory=dict)  # managed, model, display, ramfb, sgio, rawio
    source_address: Address | None = None
    source_attrs: Attrs = field(default_factory=dict)
    source_children: list[Raw] = field(default_factory=list)
    driver: Attrs = field(default_factory=dict)
    rom: Attrs = field(default_factory=dict)
    readonly: bool = False
    shareable: bool = False
    teaming: Teaming | None = None


@dataclass(slots=True, kw_only=True)
class CharSource:
    attrs: Attrs = field(default_factory=dict)  # mode, path, host, service, append, channel, master
    children: list[Raw] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Chardev(Device):
    """<serial>, <parallel>, <console>, <channel> (kind) with their host side (type, sources)."""

    kind: str = "serial"
    type: str = "pty"  # pty | file | unix | tcp | udp | null | vc | stdio | pipe | dev | spicevmc | ...
    attrs: Attrs = field(default_factory=dict)  # tty
    sources: list[CharSource] = field(default_factory=list)
    protocol: str | None = None
    log: Attrs = field(default_factory=dict)
    target_type: str | None = None
    target_attrs: Attrs = field(default_factory=dict)  # port, name, state, address, ...
    target_model: str | None = None

    def source_attr(self, name: str) -> str | None:
        for src in self.sources:
            if name in src.attrs:
                return src.attrs[name]
        return None


@dataclass(slots=True, kw_only=True)
class Input(Device):
    type: str = "mouse"  # mouse | tablet | keyboard | passthrough | evdev
    bus: str | None = None
    model: str | None = None
    source: Attrs = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Graphics(Device):
    type: str = "vnc"
    attrs: Attrs = field(default_factory=dict)  # port, autoport, listen, keymap, passwd, websocket, ...
    listens: list[Attrs] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Video(Device):
    model: str | None = None  # vga | cirrus | vmvga | qxl | virtio | bochs | ramfb | none
    model_attrs: Attrs = field(default_factory=dict)  # vram, heads, primary, ram, vram64, vgamem, blob
    model_children: list[Raw] = field(default_factory=list)
    driver: Attrs = field(default_factory=dict)

    @property
    def primary(self) -> bool:
        return self.model_attrs.get("primary") == "yes"


@dataclass(slots=True, kw_only=True)
class Sound(Device):
    model: str = "ich6"
    attrs: Attrs = field(default_factory=dict)  # streams, multichannel
    codecs: list[str] = field(default_factory=list)
    audio_id: int | None = None


@dataclass(slots=True, kw_only=True)
class Audio:
    id: int
    type: str
    attrs: Attrs = field(default_factory=dict)
    children: list[Raw] = field(default_factory=list)
    line: int | None = None


@dataclass(slots=True, kw_only=True)
class Watchdog(Device):
    model: str = "i6300esb"
    action: str | None = None


@dataclass(slots=True, kw_only=True)
class Rng(Device):
    model: str = "virtio"
    rate: Attrs = field(default_factory=dict)  # bytes, period
    backend_model: str = "random"  # random | egd | builtin
    backend_path: str | None = None  # random: the host device
    egd: Chardev | None = None  # egd: the chardev it talks to
    driver: Attrs = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Memballoon(Device):
    model: str = "virtio"
    attrs: Attrs = field(default_factory=dict)  # autodeflate, freePageReporting
    stats_period: int | None = None
    driver: Attrs = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Iommu(Device):
    model: str = "intel"
    driver: Attrs = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class MemoryDevice(Device):
    model: str = "dimm"  # dimm | nvdimm | virtio-pmem | virtio-mem | sgx-epc
    attrs: Attrs = field(default_factory=dict)  # access, discard
    source: Attrs = field(default_factory=dict)  # path, pagesize, nodemask, alignsize
    source_pmem: bool = False
    target_attrs: Attrs = field(default_factory=dict)  # dynamicMemslots (virtio-mem)
    target_size_kib: int | None = None
    target_node: int | None = None
    target_label_kib: int | None = None
    target_readonly: bool = False
    target_block_kib: int | None = None  # virtio-mem <block>
    target_requested_kib: int | None = None  # virtio-mem <requested>
    target_base: int | None = None  # virtio-mem / virtio-pmem <address base=>
    target_children: list[Raw] = field(default_factory=list)
    uuid: str | None = None


@dataclass(slots=True, kw_only=True)
class Tpm(Device):
    model: str | None = None  # tpm-tis | tpm-crb | tpm-spapr | spapr-tpm-proxy
    backend_type: str = "passthrough"  # passthrough | emulator | external
    backend_attrs: Attrs = field(default_factory=dict)  # version, persistent_state
    backend_source: Attrs = field(default_factory=dict)  # path (device) / type+path (external)
    backend_children: list[Raw] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Panic(Device):
    model: str | None = None


@dataclass(slots=True, kw_only=True)
class Filesystem(Device):
    type: str = "mount"
    attrs: Attrs = field(default_factory=dict)  # accessmode, multidevs, model
    driver: Attrs = field(default_factory=dict)
    source: Attrs = field(default_factory=dict)  # dir | file | name | socket
    target_dir: str | None = None
    readonly: bool = False


@dataclass(slots=True, kw_only=True)
class Devices:
    emulator: str | None = None
    disks: list[Disk] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)
    filesystems: list[Filesystem] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    serials: list[Chardev] = field(default_factory=list)
    parallels: list[Chardev] = field(default_factory=list)
    consoles: list[Chardev] = field(default_factory=list)
    channels: list[Chardev] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    tpms: list[Tpm] = field(default_factory=list)
    graphics: list[Graphics] = field(default_factory=list)
    sounds: list[Sound] = field(default_factory=list)
    audios: list[Audio] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)
    hostdevs: list[Hostdev] = field(default_factory=list)
    watchdogs: list[Watchdog] = field(default_factory=list)
    redirdevs: list[Chardev] = field(default_factory=list)  # kind 'redirdev', attrs carry bus
    redirfilter: list[Attrs] | None = None  # <redirfilter><usbdev class= vendor= product= version= allow=/>
    memballoon: Memballoon | None = None
    rngs: list[Rng] = field(default_factory=list)
    panics: list[Panic] = field(default_factory=list)
    memories: list[MemoryDevice] = field(default_factory=list)
    iommu: Iommu | None = None
    other: list[Raw] = field(default_factory=list)  # device elements this model does not know


# --- domain-level parts ------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Loader:
    path: str | None = None
    attrs: Attrs = field(default_factory=dict)  # readonly, type, secure, format, stateless


@dataclass(slots=True, kw_only=True)
class Os:
    type: str = "hvm"
    arch: str | None = None
    machine: str | None = None
    firmware: str | None = None
    firmware_children: list[Raw] = field(default_factory=list)
    loader: Loader | None = None
    nvram: Loader | None = None
    boot_devs: list[str] = field(default_factory=list)
    bootmenu: Attrs = field(default_factory=dict)
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    dtb: str | None = None
    bios: Attrs = field(default_factory=dict)
    smbios_mode: str | None = None
    extra: list[Raw] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Feature:
    """One child of <features>: <acpi/>, <gic version='3'/>, <hyperv mode='passthrough'>...</hyperv>."""

    name: str
    attrs: Attrs = field(default_factory=dict)
    children: list[Raw] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class NumaCell:
    id: int | None = None
    cpus: str | None = None
    memory_kib: int = 0
    attrs: Attrs = field(default_factory=dict)  # memAccess, discard
    children: list[Raw] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Cpu:
    mode: str | None = None  # custom | host-model | host-passthrough | maximum
    attrs: Attrs = field(default_factory=dict)  # match, check, migratable
    model: str | None = None
    model_attrs: Attrs = field(default_factory=dict)  # fallback, vendor_id
    vendor: str | None = None
    topology: dict[str, int] = field(default_factory=dict)  # sockets, dies, clusters, cores, threads
    features: list[tuple[str, str]] = field(default_factory=list)  # (policy, name)
    numa: list[NumaCell] = field(default_factory=list)
    numa_extra: list[Raw] = field(default_factory=list)  # <numa> children besides cells: <interconnects>
    extra: list[Raw] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Timer:
    name: str
    attrs: Attrs = field(default_factory=dict)  # present, tickpolicy, track, frequency, mode
    children: list[Raw] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Clock:
    offset: str = "utc"
    attrs: Attrs = field(default_factory=dict)  # adjustment, timezone, basis
    timers: list[Timer] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class MemoryBacking:
    hugepages: list[Attrs] | None = None  # None: no <hugepages>; [] : default page size
    children: list[Raw] = field(default_factory=list)  # nosharepages, locked, source, access, allocation...


@dataclass(slots=True, kw_only=True)
class Numatune:
    memory: Attrs = field(default_factory=dict)  # mode, nodeset, placement
    memnodes: list[Attrs] = field(default_factory=list)  # cellid, mode, nodeset


@dataclass(slots=True, kw_only=True)
class LaunchSecurity:
    type: str
    attrs: Attrs = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # cbitpos, reducedPhysBits, policy, dhCert, session


@dataclass(slots=True, kw_only=True)
class Domain:
    type: str = "qemu"  # qemu | kvm
    name: str = ""
    uuid: str | None = None
    title: str | None = None
    description: str | None = None
    metadata: Raw | None = None
    memory_kib: int | None = None
    memory_dump_core: str | None = None  # <memory dumpCore='on|off'>
    max_memory_kib: int | None = None
    max_memory_slots: int | None = None
    current_memory_kib: int | None = None
    memory_backing: MemoryBacking | None = None
    vcpus: int = 1
    vcpu_attrs: Attrs = field(default_factory=dict)  # placement, cpuset, current
    iothreads: int | None = None
    numatune: Numatune | None = None
    os: Os = field(default_factory=Os)
    features: dict[str, Feature] = field(default_factory=dict)
    cpu: Cpu | None = None
    clock: Clock | None = None
    on_poweroff: str | None = None
    on_reboot: str | None = None
    on_crash: str | None = None
    pm: Attrs = field(default_factory=dict)  # suspend-to-mem, suspend-to-disk -> yes|no
    devices: Devices = field(default_factory=Devices)
    launch_security: LaunchSecurity | None = None
    extra: list[Raw] = field(default_factory=list)  # top-level elements kept verbatim (cputune, sysinfo, ...)
    source: str = "<domain>"
    xml: Raw | None = None  # the parsed <domain> element: the argv stage checks each item it uses is known

    def feature(self, name: str) -> Feature | None:
        return self.features.get(name)

    def all_devices(self) -> list[Device]:
        """Every device with device info, in libvirt's formatting order."""
        d = self.devices
        out: list[Device] = [*d.disks, *d.controllers, *d.filesystems, *d.interfaces, *d.serials, *d.parallels,
                             *d.consoles, *d.channels, *d.inputs, *d.tpms, *d.graphics, *d.sounds, *d.videos,
                             *d.hostdevs, *d.watchdogs]
        if d.memballoon:
            out.append(d.memballoon)
        out += [*d.rngs, *d.panics, *d.memories]
        if d.iommu:
            out.append(d.iommu)
        return out
