"""A user's own libvirt domain (``run --domain FILE.xml``) as a case of the catalogue's kind.

An operator's domains (``virsh dumpxml``, ``virt-install --print-xml``) go through the same planner and
stages as the catalogue's cases: ``domain_case`` makes a :class:`~conformance.cases.Case` whose domain is
this file instead of a template (``Case.domain``), and ``conformance/pipeline.py``'s ``render_case``
asks :meth:`UserDomain.render` for its XML. What the file says is kept wherever this host can run it:

- the static stages (parse, argv) see the domain as written, with two changes only: its ``<emulator>``
  is the build under test, and its machine type the one the stage runs under (the domain's own, or the
  migration's pinned type). A machine type the build lacks is a skip saying so (``cases.plan``);
- the live stages (boot, migrate) see it adapted to boot the suite's test guest here, each change listed
  by :meth:`UserDomain.adapt` (the runner records them as ``details.domain_changes``):

  * every disk with a source becomes a blank image of the test guest's kind in the VM folder (what a
    case's disks are: conformance/live/boot.py ``_create_images``), named after its target, keeping the
    disk's bus, format (raw or qcow2) and driver settings (cache, io, discard);
  * every interface becomes a user-mode netdev with the interface's model and MAC;
  * graphics go (headless), with the SPICE-only devices that need them (spicevmc channels and USB
    redirection, SPICE audio -> none);
  * ``type='kvm'`` runs as ``qemu`` (TCG) when the suite decided KVM does not work here
    (conformance/live/accel.py), and then a host CPU (host-passthrough, host-model) becomes
    ``mode='maximum'`` (-cpu max) and the Hyper-V and KVM features go;
  * firmware and a kernel of its own (loader, nvram, kernel, initrd) give way to the test guest's direct
    kernel boot; host character devices (a host tty, a UNIX or TCP socket) become pty (a file here);
  * what cannot be substituted (host devices, a TPM, virtiofs, vsock, SEV, a SCSI LUN, ...) makes the live
    stage a skip naming each element (NeedsHardware), never a failure.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from conformance.caps.model import Capabilities
from conformance.cases import Case
from conformance.errors import DomainInvalid
from conformance.live.adapt import NeedsHardware
from conformance.results.records import StageResult
from conformance.stages import in_order, required
from conformance.static import STATIC_IMAGE_DIR  # what the static stages render with: any other folder is a VM's

DEFAULT_MACHINES = {"x86_64": "pc", "i686": "pc"}  # libvirt's default when <type> names none
IMAGE_FORMATS = ("raw", "qcow2")  # what the VM folder's blank images are made as
HOST_CHARDEV_TYPES = frozenset({"dev", "file", "pipe", "unix", "tcp", "udp", "nmdm", "dbus", "stdio"})
DISK_CHILDREN_DROPPED = ("backingStore", "auth", "encryption", "reservations", "mirror")
NET_CHILDREN_DROPPED = ("source", "target", "virtualport", "bandwidth", "filterref", "vlan", "script", "ip",
                        "route", "portForward", "backend", "tune", "coalesce", "downscript", "mtu", "port",
                        "portOptions", "teaming_source")


@dataclass(frozen=True)
class Adapted:
    xml: str
    changes: tuple[str, ...]  # every substitution, one line each
    blockers: tuple[str, ...]  # what cannot be substituted: the live stages skip, naming each


@dataclass(frozen=True)
class UserDomain:
    """One domain file: its text, and what the planner needs to know of it (arch, machine type)."""

    path: Path
    text: bytes
    name: str  # the case name: the file's stem
    arch: str
    machine: str
    type: str

    def render(self, variables: dict[str, Any]) -> str:
        """The XML a stage runs: the pipeline's render step for a user domain. ``variables`` are a case's
        (conformance/cases.py ``case_variables``): emulator, machine, domain_type, image_dir. A render for a
        VM folder (live) adapts the domain and raises NeedsHardware naming what cannot run here."""
        live = str(variables.get("image_dir", STATIC_IMAGE_DIR)) != STATIC_IMAGE_DIR
        adapted = self.adapt(emulator=str(variables["emulator"]), machine=str(variables["machine"]),
                             domain_type=str(variables.get("domain_type", "qemu")),
                             image_dir=str(variables["image_dir"]), live=live)
        if live and adapted.blockers:
            raise NeedsHardware(f"cannot run here: {'; '.join(adapted.blockers)}", path=self.path,
                                hint="these need the host's own hardware or helpers; the static stages still ran")
        return adapted.xml

    def adapt(self, *, emulator: str, machine: str, domain_type: str = "qemu", image_dir: str = STATIC_IMAGE_DIR,
              live: bool = True) -> Adapted:
        """The domain for a stage (see the module docstring): ``live`` adapts it to boot the test guest here
        under ``domain_type`` ('kvm' when the suite decided KVM works, else 'qemu'), with its disks in
        ``image_dir``; otherwise only the emulator and the machine type change."""
        root = _parse(self.text, self.path)
        changes: list[str] = []
        blockers: list[str] = []
        _retarget(root, emulator, machine, changes)
        if live:
            _live(root, domain_type, image_dir, changes, blockers)
        etree.indent(root, space="  ")
        xml = etree.tostring(root, encoding="unicode") + "\n"
        return Adapted(xml, tuple(changes), tuple(blockers))


def load_domain(path: Path) -> UserDomain:
    """Read a domain file; DomainInvalid (one line: the file, the line, the fix) when it cannot be one."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise DomainInvalid(f"cannot read the domain: {exc.strerror}", path=path,
                            hint="give --domain a libvirt domain XML file (virsh dumpxml NAME > FILE.xml)") from None
    root = _parse(text, path)
    if root.tag != "domain":
        raise DomainInvalid(f"the root element is <{root.tag}>, not <domain>", path=path, line=root.sourceline,
                            hint="give --domain a libvirt domain XML file (virsh dumpxml NAME > FILE.xml)")
    os_type = root.find("os/type")
    arch = os_type.get("arch") if os_type is not None else None
    if not arch:
        raise DomainInvalid("the domain names no architecture", path=path,
                            line=os_type.sourceline if os_type is not None else root.sourceline,
                            hint="add arch='x86_64' (or 'aarch64') to <os><type>")
    machine = (os_type.get("machine") if os_type is not None else None) or DEFAULT_MACHINES.get(arch)
    if not machine:
        raise DomainInvalid(f"the domain names no machine type, and {arch} has no default one", path=path,
                            line=os_type.sourceline if os_type is not None else root.sourceline,
                            hint="add machine='virt' (or the type the domain runs under) to <os><type>")
    name = re.sub(r"[^A-Za-z0-9_.+-]", "-", path.stem)
    return UserDomain(path, text, name, arch, machine, root.get("type", ""))


def domain_case(user: UserDomain, stages: tuple[str, ...]) -> Case:
    """The case a user domain is: the file's stem as its name, its arch and machine type as its target, the
    given stages (a stage builds on the ones before it: conformance/stages.py). It boots the cloud test guest,
    as cases do by default: the generic one has drivers for more emulated hardware (e1000, AHCI) but took
    28-56 s to boot on the loaded 2-core host against 5-13 s (docs/guest.md), and a device without a driver in
    the guest is only not checked from inside. A failed boot or migration is bisected to the devices that
    make it fail (conformance/live/bisect.py), as for the catalogue's device-rich cases."""
    wanted = set(stages)
    for name in stages:
        wanted.update(required(name))
    return Case(name=user.name, template=str(user.path), description=f"your domain {user.path}", bisect=True,
                targets=((user.arch, user.machine),), stages=tuple(in_order(wanted)),
                source=str(user.path), domain=user)


def domain_cases(paths: list[Path], stages: tuple[str, ...], taken: set[str] | None = None) -> list[Case]:
    """A case per --domain file, in order; DomainInvalid when two files (or a file and a catalogue case in
    ``taken``) would share a name."""
    cases: list[Case] = []
    seen = dict.fromkeys(taken or (), "the case catalogue")
    for path in paths:
        user = load_domain(path)
        if user.name in seen:
            raise DomainInvalid(f"a domain named {user.name!r} comes from {seen[user.name]} already", path=path,
                                hint="rename one of the files: a domain's results are named after its file")
        seen[user.name] = str(path)
        cases.append(domain_case(user, stages))
    return cases


# --- the adaptation -------------------------------------------------------------------------------

def _parse(text: bytes, path: Path) -> etree._Element:
    try:
        return etree.fromstring(text, etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise DomainInvalid(f"malformed XML: {exc.msg}", path=path, line=exc.lineno,
                            hint="fix the XML (xmllint --noout FILE shows where)") from None


def _describe(el: etree._Element, *attrs: str) -> str:
    """``<hostdev mode='subsystem' type='pci'>`` (the given attributes, those present)."""
    shown = " ".join(f"{a}='{el.get(a)}'" for a in attrs if el.get(a) is not None)
    return f"<{el.tag}{' ' + shown if shown else ''}>"


def _retarget(root: etree._Element, emulator: str, machine: str, changes: list[str]) -> None:
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    el = devices.find("emulator")
    if el is None:
        el = etree.Element("emulator")
        devices.insert(0, el)
    if (el.text or "").strip() != emulator:
        changes.append(f"<emulator> {(el.text or '(none)').strip()} -> {emulator} (the build under test)")
        el.text = emulator
    os_type = root.find("os/type")
    if os_type is not None and os_type.get("machine") != machine:
        changes.append(f"machine type {os_type.get('machine') or '(default)'} -> {machine}")
        os_type.set("machine", machine)


def _live(root: etree._Element, domain_type: str, image_dir: str, changes: list[str], blockers: list[str]) -> None:
    tcg = False
    kind = root.get("type", "")
    if kind not in ("qemu", "kvm"):
        blockers.append(f"<domain type='{kind}'>: not a QEMU domain")
    elif kind == "kvm" and domain_type != "kvm":
        root.set("type", "qemu")
        changes.append("type kvm -> qemu: KVM does not work here, the guest runs under TCG")
        tcg = True
    else:
        tcg = kind == "qemu"
    if tcg:
        _tcg_cpu(root, changes)
    _os(root, changes)
    _host_side(root, changes, blockers)
    devices = root.find("devices")
    assert devices is not None  # _retarget made one
    for el in list(devices):
        tag = el.tag
        if tag in ("serial", "parallel", "console", "channel") and el.find("log") is not None:
            el.remove(el.find("log"))  # type: ignore[arg-type]
            changes.append(f"{_describe(el, 'type')} <log> removed: libvirt opens the log file on the host")
        if tag == "disk":
            _disk(el, image_dir, changes, blockers)
        elif tag == "interface":
            _interface(el, changes, blockers)
        elif tag == "graphics":
            devices.remove(el)
            changes.append(f"{_describe(el, 'type')} removed: headless")
        elif tag in ("channel", "redirdev", "smartcard") and el.get("type") == "spicevmc":
            devices.remove(el)
            changes.append(f"{_describe(el, 'type', 'bus')} removed: it needs SPICE graphics")
        elif tag == "audio" and el.get("type") in ("spice", "pulseaudio", "alsa", "pipewire", "jack", "sdl",
                                                    "coreaudio", "oss", "dbus"):
            changes.append(f"{_describe(el, 'id', 'type')} -> type='none': no host audio here")
            for child in list(el):
                el.remove(child)
            for attr in [a for a in el.attrib if a not in ("id", "type")]:
                del el.attrib[attr]
            el.set("type", "none")
        elif tag in ("serial", "parallel", "console", "channel") and el.get("type") in HOST_CHARDEV_TYPES:
            _chardev_to_pty(el, changes)
        elif tag == "hostdev":
            blockers.append(f"{_describe(el, 'mode', 'type')}{_hostdev_source(el)}: a host device")
        elif tag == "smartcard":
            blockers.append(f"{_describe(el, 'mode')}: a host smartcard")
        elif tag == "tpm":
            backend = el.find("backend")
            blockers.append(f"{_describe(el, 'model')} backend {backend.get('type') if backend is not None else '?'}: "
                            "libvirt runs swtpm (or passes the host's TPM), the suite does not")
        elif tag == "filesystem":
            driver = el.find("driver")
            blockers.append(f"{_describe(el, 'type')} driver {driver.get('type') if driver is not None else 'path'}"
                            ": a host folder")
        elif tag == "video" and el.find("driver") is not None and el.find("driver").get("name") == "vhostuser":
            blockers.append(f"<video> {_describe(el.find('model'), 'type') if el.find('model') is not None else ''} "
                            "<driver name='vhostuser'>: libvirt runs the vhost-user GPU backend, the suite does not")
        elif tag == "vsock":
            blockers.append("<vsock>: needs /dev/vhost-vsock, which libvirt opens")
        elif tag == "input" and el.get("type") in ("passthrough", "evdev"):
            blockers.append(f"{_describe(el, 'type')}: a host input device")
        elif tag == "redirdev":
            blockers.append(f"{_describe(el, 'type', 'bus')}: a USB redirection server")
        elif tag == "shmem" and el.find("server") is not None:
            blockers.append(f"{_describe(el, 'name')} with a server: ivshmem-server runs on the host")
        elif tag == "memory" and el.get("model") in ("nvdimm", "virtio-pmem"):
            blockers.append(f"{_describe(el, 'model')}: backed by a host file")
        elif tag == "rng":
            backend = el.find("backend")
            if backend is not None and backend.get("model") == "egd":
                el.remove(backend)
                etree.SubElement(el, "backend", model="random").text = "/dev/urandom"
                changes.append("<rng> backend egd -> random /dev/urandom")


def _tcg_cpu(root: etree._Element, changes: list[str]) -> None:
    cpu = root.find("cpu")
    if cpu is not None and cpu.get("mode") in ("host-passthrough", "host-model"):
        changes.append(f"<cpu mode='{cpu.get('mode')}'> -> mode='maximum' (-cpu max): there is no host CPU under TCG")
        cpu.set("mode", "maximum")
        for attr in ("check", "match"):
            cpu.attrib.pop(attr, None)
        for child in [c for c in cpu if c.tag in ("model", "vendor", "feature", "cache")]:
            cpu.remove(child)
    features = root.find("features")
    for name in ("hyperv", "kvm"):
        el = features.find(name) if features is not None else None
        if el is not None:
            features.remove(el)
            changes.append(f"<features><{name}> removed: KVM-only enlightenments, the guest runs under TCG")
    clock = root.find("clock")
    for timer in clock.findall("timer") if clock is not None else []:
        if timer.get("name") in ("hypervclock", "kvmclock") and clock is not None:
            clock.remove(timer)
            changes.append(f"<timer name='{timer.get('name')}'> removed: KVM-only, the guest runs under TCG")


def _os(root: etree._Element, changes: list[str]) -> None:
    os_el = root.find("os")
    if os_el is None:
        return
    dropped = [c.tag for c in os_el if c.tag in ("loader", "nvram", "kernel", "initrd", "cmdline", "dtb", "firmware")]
    for child in [c for c in os_el if c.tag in dropped]:
        os_el.remove(child)
    if os_el.get("firmware"):
        dropped.insert(0, f"firmware='{os_el.get('firmware')}'")
        del os_el.attrib["firmware"]
    if dropped:
        changes.append(f"<os> {', '.join(dropped)} removed: the test guest boots its kernel directly")
    os_type = os_el.find("type")
    features = root.find("features")
    acpi = features.find("acpi") if features is not None else None
    firmware = any(d.startswith("firmware=") or d == "loader" for d in dropped)
    if firmware and acpi is not None and os_type is not None and os_type.get("arch") in ("aarch64", "armv7l"):
        features.remove(acpi)  # type: ignore[union-attr]
        changes.append("<features><acpi> removed: ACPI on Arm needs UEFI, which gave way to the direct kernel boot")
    smbios = os_el.find("smbios")
    if smbios is not None and smbios.get("mode") == "host":
        os_el.remove(smbios)
        changes.append("<smbios mode='host'> removed: the host's SMBIOS is not the guest's business here")


def _host_side(root: etree._Element, changes: list[str], blockers: list[str]) -> None:
    """Host resources the domain pins: what libvirt sets up on the host rather than in QEMU."""
    backing = root.find("memoryBacking")
    if backing is not None and backing.find("hugepages") is not None:
        backing.remove(backing.find("hugepages"))
        changes.append("<memoryBacking><hugepages> removed: ordinary memory here")
    access = bool(root.findall("cpu/numa/cell[@memAccess]") or root.findall("memoryBacking/access")
                  or root.findall("devices/memory[@access]"))
    source = backing.find("source") if backing is not None else None
    kind = source.get("type") if source is not None else None
    if kind == "file" or (access and kind in (None, "anonymous")):
        # libvirt backs such memory with files in its memory_backing_dir on the host; memfd shares as well
        if backing is None:
            backing = etree.SubElement(root, "memoryBacking")
        if source is None:
            source = etree.SubElement(backing, "source")
        source.attrib.clear()
        source.set("type", "memfd")
        changes.append("guest memory in files of libvirt's memory_backing_dir -> <memoryBacking><source type='memfd'>"
                       " (its access modes kept)")
    discard = root.find("memoryBacking/discard")
    if discard is not None:
        root.find("memoryBacking").remove(discard)  # type: ignore[union-attr]
        changes.append("<memoryBacking><discard> removed: libvirt keeps such memory in files on the host")
    for dimm in root.findall("devices/memory[@discard='yes']"):
        del dimm.attrib["discard"]
        changes.append(f"{_describe(dimm, 'model')} discard='yes' removed: libvirt keeps such memory in a host file")
    for dimm in root.findall("devices/memory"):
        host = [c for c in dimm.findall("source/*") if c.tag in ("pagesize", "nodemask")]
        for child in host:
            dimm.find("source").remove(child)  # type: ignore[union-attr]
        if host:
            changes.append(f"{_describe(dimm, 'model')} <source> {', '.join(c.tag for c in host)} removed: "
                           "ordinary memory of any host node here")
    for table in root.findall("os/acpi/table"):
        blockers.append(f"<acpi><table type='{table.get('type')}'> {table.text or ''}: a host file")
    for entry in root.findall("sysinfo/entry[@file]"):
        blockers.append(f"<sysinfo><entry name='{entry.get('name')}' file='{entry.get('file')}'>: a host file")
    numatune = root.find("numatune")
    if numatune is not None:
        root.remove(numatune)
        changes.append("<numatune> removed: the host's NUMA nodes are not this host's")
    security = root.find("launchSecurity")
    if security is not None:
        blockers.append(f"{_describe(security, 'type')}: confidential computing needs the host's hardware")


def _disk(el: etree._Element, image_dir: str, changes: list[str], blockers: list[str]) -> None:
    target = el.find("target")
    dev = target.get("dev") if target is not None else None
    bus = target.get("bus") if target is not None else None
    if el.get("device") == "lun":
        blockers.append(f"<disk device='lun'> {dev}: a host SCSI LUN")
        return
    if el.get("type") in ("nvme", "vhostuser", "dir", "vhostvdpa"):
        blockers.append(f"<disk type='{el.get('type')}'> {dev}: "
                        + {"nvme": "a host NVMe controller", "vhostuser": "a vhost-user block server",
                           "dir": "a host folder as a FAT disk",
                           "vhostvdpa": "a host vDPA device"}[str(el.get("type"))])
        return
    source = el.find("source")
    if source is None or not dev:
        return  # an empty drive (a CD-ROM without media) stays empty
    driver = el.find("driver")
    if driver is None:
        driver = etree.Element("driver", name="qemu")
        el.insert(0, driver)
    fmt = driver.get("type") or "raw"
    was = _disk_source_text(el, source)
    if fmt not in IMAGE_FORMATS:
        changes.append(f"disk {dev}: format {fmt} -> raw (the blank images here are raw or qcow2)")
        fmt = "raw"
    driver.set("type", fmt)
    path = os.path.join(image_dir, f"{dev}.{'qcow2' if fmt == 'qcow2' else 'img'}")
    for child in [c for c in el if c.tag in DISK_CHILDREN_DROPPED or c.tag == "source"]:
        el.remove(child)
    new = etree.Element("source", file=path)
    driver.addnext(new)
    el.set("type", "file")
    kept = ", ".join(f"{k}={v}" for k, v in driver.attrib.items() if k not in ("name",))
    changes.append(f"disk {dev} ({bus or 'default bus'}; {kept}): {was} -> {Path(path).name} in the VM folder, "
                   "a blank image as the test guest's disks are")


def _disk_source_text(el: etree._Element, source: etree._Element) -> str:
    kind = el.get("type", "file")
    if kind == "network":
        name = source.get("name") or ""
        return f"network disk {source.get('protocol', '')}:{name}"
    if kind == "volume":
        return f"volume {source.get('pool', '')}/{source.get('volume', '')}"
    return source.get("file") or source.get("dev") or "(no path)"


def _interface(el: etree._Element, changes: list[str], blockers: list[str]) -> None:
    mac_el = el.find("mac")
    mac = mac_el.get("address") if mac_el is not None else "(no MAC)"
    kind = el.get("type", "")
    if kind == "hostdev":
        source = el.find("source")
        blockers.append(f"<interface type='hostdev'> {mac}{_hostdev_source(el) if source is not None else ''}: "
                        "a host network function")
        return
    teaming = el.find("teaming")
    if teaming is not None and teaming.get("type") == "transient":
        blockers.append(f"<interface type='{kind}'> {mac} <teaming type='transient'>: the failover's host network "
                        "function (libvirt accepts only type='hostdev' there)")
        return
    model_el = el.find("model")
    if model_el is None and kind in ("vhostuser", "vdpa"):
        model_el = etree.SubElement(el, "model", type="virtio")  # implied by those types
    model = model_el.get("type") if model_el is not None else "(the default)"
    for child in [c for c in el if c.tag in NET_CHILDREN_DROPPED]:
        el.remove(child)
    driver = el.find("driver")
    if driver is not None:
        for attr in ("name", "queues", "txmode", "ioeventfd", "rx_queue_size", "tx_queue_size"):
            driver.attrib.pop(attr, None)
        if not driver.attrib and not len(driver):
            el.remove(driver)
    if kind != "user":
        changes.append(f"interface {mac}: type {kind} -> user netdev (model {model}, MAC kept)")
    el.set("type", "user")
    for attr in [a for a in el.attrib if a not in ("type",)]:
        del el.attrib[attr]


def _hostdev_source(el: etree._Element) -> str:
    address = el.find("source/address")
    if address is not None and address.get("bus") is not None and address.get("slot") is not None:
        def num(name: str) -> int:
            return int(address.get(name) or "0", 0)

        return f" {num('domain'):04x}:{num('bus'):02x}:{num('slot'):02x}.{num('function'):x}"
    vendor, product = el.find("source/vendor"), el.find("source/product")
    if vendor is not None and product is not None:
        return f" {vendor.get('id')}:{product.get('id')}"
    adapter = el.find("source/adapter")
    if adapter is not None:
        return f" {adapter.get('name')}"
    return ""


def _chardev_to_pty(el: etree._Element, changes: list[str]) -> None:
    was = el.get("type")
    source = el.find("source")
    path = source.get("path") or source.get("host") or "" if source is not None else ""
    for child in [c for c in el if c.tag in ("source", "protocol", "log", "reconnect")]:
        el.remove(child)
    el.set("type", "pty")
    changes.append(f"<{el.tag} type='{was}'>{' ' + path if path else ''} -> pty (a file in the VM folder): "
                   "a host character device")


def domain_details(case: Case, *, emulator: str, machine: str = "", accel: str = "tcg",
                   live: bool = False) -> dict[str, Any]:
    """What a result of a user domain records beside its verdict: the file, and every change the stage made
    to it (``domain_changes``) with what could not be substituted (``domain_blockers``). {} for a case."""
    user = case.domain
    if user is None:
        return {}
    adapted = user.adapt(emulator=emulator, machine=machine or user.machine,
                         domain_type="kvm" if accel == "kvm" else "qemu", live=live)
    found: dict[str, Any] = {"domain": str(user.path), "domain_changes": list(adapted.changes)}
    if adapted.blockers:
        found["domain_blockers"] = list(adapted.blockers)
    return found


def without_builds(cases: list[Case], arches: set[str], stages: list[str]) -> list[StageResult]:
    """A skip per requested stage of each user domain whose arch no build under test has: a domain given is
    never dropped in silence (the planner plans a case only on builds of its arch)."""
    found = []
    for case in cases:
        if case.domain is None or case.domain.arch in arches:
            continue
        reason = (f"the domain is {case.domain.arch}, and no {case.domain.arch} build is under test "
                  f"(builds: {', '.join(sorted(arches)) or 'none'})")
        found += [StageResult(case=case.name, stage=name, verdict="skip", reason=reason, arch=case.domain.arch,
                              details={"domain": str(case.domain.path)}) for name in stages if name in case.stages]
    return found


def own_machine(case: Case, caps: Capabilities) -> str:
    """The versioned machine type a user's domain names (``pc-q35-6.2``) when these capabilities know it by
    that name, else '' (a catalogue case, an alias such as ``q35``, or a type the build lacks: the stage then
    chooses, or says why not). libvirt keeps a domain's machine type when it migrates; so does the suite."""
    if case.domain is None:
        return ""
    found = caps.machine(case.domain.machine)
    return case.domain.machine if found is not None and found.name == case.domain.machine else ""
