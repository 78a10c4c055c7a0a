"""Capability fixtures on disk: one XML file per QEMU version and arch.

Format (``<qemu-capabilities format="1">``), every list sorted so files diff well::

  <qemu-capabilities format="1">
    <provenance source="probe" binary="/usr/bin/qemu-system-x86_64" package="..." .../>
      <implied flag="virtio-net.failover" reason="..."/>      (imports only)
    </provenance>
    <version major="7" minor="2" micro="22" package="Debian 1:7.2+dfsg-7+deb12u18"/>
    <arch>x86_64</arch>
    <accelerators><accel name="tcg"/></accelerators>
    <machines><machine name="pc-q35-7.2" alias="q35" .../></machines>
    <types><type name="e1000"/>...</types>
    <properties><type name="virtio-net-pci"><property name="failover" type="bool"/></type></properties>
    <commands>, <events>, <schema> (<fact query="device_add/$json-cli-hotplug"/>),
    <migration-capabilities>, <cpu-models> (<cpu name= accel= usable=><blocker name=/></cpu>),
    <host-cpus> (optional: QEMU's host CPU expansion per accelerator, for host-model CPUs)
      <host-cpu accel="kvm" model="base" migratability="yes">
        <property name="aes" type="boolean" value="true" migratable="yes"/>
      </host-cpu>
    </host-cpus>
    <sev cbitpos="51" reduced-phys-bits="1"/>                (optional: AMD SEV platform)
    <option-members>       (optional: the QAPI unions behind -netdev/-blockdev/-chardev, from the schema)
      <option name="blockdev">
        <member name="cache.direct" type="boolean"/>         (every branch has it)
        <branch name="file"><member name="filename" type="string"/></branch>
      </option>
    </option-members>
    <qapi-schema>          (optional: the QAPI types behind -netdev/-blockdev/-chardev/-object, compact JSON
      {"roots": ..., "types": ...}                         text: conformance/caps/qapi_record.py)
    </qapi-schema>
    <flags> (extra flags from an import)
  </qemu-capabilities>

Fixtures written before host CPUs, SEV, CPU blockers, accelerators, option members and the QAPI schema were recorded
still load (those parts are optional; same format version).

Flags derived from the raw facts are written as a comment for readers and
recomputed on load, never read back.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from conformance.caps.model import (
    Capabilities,
    CpuModel,
    CpuProperty,
    HostCpu,
    Implied,
    MachineType,
    Provenance,
    QemuVersion,
    SevInfo,
)
from conformance.errors import FixtureError

FORMAT_VERSION = "1"
ROOT_TAG = "qemu-capabilities"


def _yesno(value: bool) -> str:
    return "yes" if value else "no"


def _opt_bool(text: str | None) -> bool | None:
    return None if text is None else text == "yes"


def to_xml(caps: Capabilities) -> bytes:
    root = etree.Element(ROOT_TAG, format=FORMAT_VERSION)
    prov = caps.provenance
    pattrs = {k: v for k, v in (
        ("source", prov.source), ("binary", prov.binary), ("package", prov.package), ("accel", prov.accel),
        ("host", prov.host), ("created", prov.created), ("tool", prov.tool),
        ("imported-from", prov.imported_from), ("libvirt-version", prov.libvirt_version),
    ) if v is not None}
    pnode = etree.SubElement(root, "provenance", pattrs)
    for imp in prov.implied:
        etree.SubElement(pnode, "implied", flag=imp.flag, reason=imp.reason)
    v = caps.version
    etree.SubElement(root, "version", major=str(v.major), minor=str(v.minor), micro=str(v.micro),
                     package=caps.package)
    etree.SubElement(root, "arch").text = caps.arch
    _names(root, "accelerators", "accel", caps.accelerators)
    machines = etree.SubElement(root, "machines")
    for m in sorted(caps.machines, key=lambda m: m.name):
        attrs = {"name": m.name}
        if m.alias:
            attrs["alias"] = m.alias
        if m.is_default:
            attrs["default"] = "yes"
        if m.deprecated:
            attrs["deprecated"] = "yes"
        if m.acpi is not None:
            attrs["acpi"] = _yesno(m.acpi)
        if m.default_ram_id:
            attrs["default-ram-id"] = m.default_ram_id
        if m.max_cpus is not None:
            attrs["max-cpus"] = str(m.max_cpus)
        if m.default_cpu:
            attrs["default-cpu"] = m.default_cpu
        if m.default_cpu_tcg:
            attrs["default-cpu-tcg"] = m.default_cpu_tcg
        if m.hotplug_cpus:
            attrs["hotplug-cpus"] = "yes"
        if m.numa_mem:
            attrs["numa-mem"] = "yes"
        etree.SubElement(machines, "machine", attrs)
    _names(root, "types", "type", caps.qom_types)
    props = etree.SubElement(root, "properties")
    for tname in sorted(caps.type_properties):
        tnode = etree.SubElement(props, "type", name=tname)
        for pname, ptype in sorted(caps.type_properties[tname].items()):
            etree.SubElement(tnode, "property", name=pname, type=ptype)
    _names(root, "commands", "command", caps.commands)
    _names(root, "events", "event", caps.events)
    _names(root, "schema", "fact", caps.schema, attr="query")
    _names(root, "migration-capabilities", "capability", caps.migration_capabilities)
    cpus = etree.SubElement(root, "cpu-models")
    for c in sorted(caps.cpu_models, key=lambda c: (c.name, c.accel or "")):
        attrs = {"name": c.name}
        if c.accel:
            attrs["accel"] = c.accel
        if c.typename:
            attrs["typename"] = c.typename
        if c.usable is not None:
            attrs["usable"] = _yesno(c.usable)
        if c.deprecated:
            attrs["deprecated"] = "yes"
        cnode = etree.SubElement(cpus, "cpu", attrs)
        for blocker in c.blockers:
            etree.SubElement(cnode, "blocker", name=blocker)
    if caps.host_cpus:
        hosts = etree.SubElement(root, "host-cpus")
        for h in caps.host_cpus:
            hnode = etree.SubElement(hosts, "host-cpu", accel=h.accel, model=h.model,
                                     migratability=_yesno(h.migratability))
            for prop in sorted(h.properties, key=lambda p: p.name):
                pattrs = {"name": prop.name, "type": prop.type, "value": prop.value}
                if prop.migratable is not None:
                    pattrs["migratable"] = _yesno(prop.migratable)
                etree.SubElement(hnode, "property", pattrs)
    if caps.sev is not None:
        etree.SubElement(root, "sev", cbitpos=str(caps.sev.cbitpos),
                         **{"reduced-phys-bits": str(caps.sev.reduced_phys_bits)})
    if caps.option_members:
        options = etree.SubElement(root, "option-members")
        for option, branches in sorted(caps.option_members.items()):
            onode = etree.SubElement(options, "option", name=option)
            for branch, members in sorted(branches.items()):  # "" (every branch's members) first
                parent = onode if not branch else etree.SubElement(onode, "branch", name=branch)
                for name, kind in sorted(members.items()):
                    etree.SubElement(parent, "member", name=name, type=kind)
    if caps.qapi_schema:
        etree.SubElement(root, "qapi-schema").text = "\n" + caps.qapi_schema + "\n  "
    _names(root, "flags", "flag", caps.extra_flags)
    derived = sorted(caps.flags - caps.extra_flags)
    root.append(etree.Comment(" derived flags (recomputed on load): " + " ".join(derived) + " "))
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _names(parent: etree._Element, group: str, tag: str, values: frozenset[str] | set[str],
           attr: str = "name") -> None:
    node = etree.SubElement(parent, group)
    for value in sorted(values):
        etree.SubElement(node, tag, {attr: value})


def write_fixture(caps: Capabilities, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(to_xml(caps))
    tmp.replace(path)
    return path


def read_fixture(path: str | Path) -> Capabilities:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FixtureError("capability fixture not found", path=path,
                           hint="see `qemu-conformance caps list` for the stored ones") from None
    except OSError as exc:
        raise FixtureError(f"cannot read capability fixture: {exc.strerror}", path=path) from None
    return from_xml(data, path)


def parse_caps_xml(data: bytes, path: str | Path) -> etree._Element:
    """Capability XML (ours or libvirt's) -> root element; FixtureError naming file and line when malformed."""
    try:
        return etree.fromstring(data, etree.XMLParser(remove_comments=True, resolve_entities=False))
    except etree.XMLSyntaxError as exc:
        raise FixtureError(f"malformed XML: {exc.msg}", path=path, line=exc.lineno) from None


def from_xml(data: bytes, path: str | Path = "<fixture>") -> Capabilities:
    root = parse_caps_xml(data, path)
    if root.tag != ROOT_TAG:
        hint = ("this looks like libvirt's capability XML: convert it with `qemu-conformance caps import`"
                if root.tag == "qemuCaps" else f"expected <{ROOT_TAG}>")
        raise FixtureError(f"not a capability fixture: root element <{root.tag}>", path=path,
                           line=root.sourceline, hint=hint)
    fmt = root.get("format")
    if fmt != FORMAT_VERSION:
        raise FixtureError(f"unknown fixture format {fmt!r}", path=path, line=root.sourceline,
                           hint=f"this qemu-conformance reads format {FORMAT_VERSION}; re-probe or re-import it")
    reader = _Reader(root, path)
    return reader.capabilities()


class _Reader:
    def __init__(self, root: etree._Element, path: str | Path) -> None:
        self.root = root
        self.path = path

    def fail(self, node: etree._Element, message: str, hint: str | None = None) -> FixtureError:
        return FixtureError(message, path=self.path, line=node.sourceline, hint=hint)

    def one(self, tag: str) -> etree._Element:
        node = self.root.find(tag)
        if node is None:
            raise self.fail(self.root, f"missing <{tag}> element",
                            hint="every fixture needs version, arch and provenance")
        return node

    def attr(self, node: etree._Element, name: str) -> str:
        value = node.get(name)
        if value is None:
            raise self.fail(node, f"<{node.tag}> lacks the '{name}' attribute")
        return value

    def names(self, group: str, tag: str, attr: str = "name") -> frozenset[str]:
        node = self.root.find(group)
        if node is None:
            return frozenset()
        return frozenset(self.attr(child, attr) for child in node.iterfind(tag))

    def integer(self, node: etree._Element, name: str) -> int:
        text = self.attr(node, name)
        try:
            return int(text)
        except ValueError:
            raise self.fail(node, f"<{node.tag} {name}={text!r}> is not a number") from None

    def capabilities(self) -> Capabilities:
        vnode = self.one("version")
        version = QemuVersion(self.integer(vnode, "major"), self.integer(vnode, "minor"),
                              self.integer(vnode, "micro"))
        if version.major < 1 or version.major > 99:
            raise self.fail(vnode, f"unknown QEMU version {version}", hint="expected 1.0.0 .. 99.x")
        arch = (self.one("arch").text or "").strip()
        if not arch:
            raise self.fail(self.one("arch"), "empty <arch>")
        pnode = self.one("provenance")
        provenance = Provenance(
            source=self.attr(pnode, "source"), binary=pnode.get("binary"), package=pnode.get("package"),
            accel=pnode.get("accel"), host=pnode.get("host"), created=pnode.get("created"),
            tool=pnode.get("tool"), imported_from=pnode.get("imported-from"),
            libvirt_version=pnode.get("libvirt-version"),
            implied=tuple(Implied(self.attr(i, "flag"), self.attr(i, "reason"))
                          for i in pnode.iterfind("implied")),
        )
        machines = []
        for m in self.root.iterfind("machines/machine"):
            machines.append(MachineType(
                name=self.attr(m, "name"), alias=m.get("alias"), is_default=m.get("default") == "yes",
                deprecated=m.get("deprecated") == "yes", acpi=_opt_bool(m.get("acpi")),
                default_ram_id=m.get("default-ram-id"),
                max_cpus=self.integer(m, "max-cpus") if m.get("max-cpus") is not None else None,
                default_cpu=m.get("default-cpu"), hotplug_cpus=m.get("hotplug-cpus") == "yes",
                numa_mem=m.get("numa-mem") == "yes", default_cpu_tcg=m.get("default-cpu-tcg"),
            ))
        props: dict[str, dict[str, str]] = {}
        for t in self.root.iterfind("properties/type"):
            props[self.attr(t, "name")] = {self.attr(p, "name"): p.get("type", "")
                                           for p in t.iterfind("property")}
        cpus = tuple(
            CpuModel(name=self.attr(c, "name"), typename=c.get("typename"), usable=_opt_bool(c.get("usable")),
                     deprecated=c.get("deprecated") == "yes",
                     blockers=tuple(self.attr(b, "name") for b in c.iterfind("blocker")), accel=c.get("accel"))
            for c in self.root.iterfind("cpu-models/cpu")
        )
        return Capabilities(
            version=version, arch=arch, package=vnode.get("package", ""),
            accelerators=self.names("accelerators", "accel"),
            machines=tuple(sorted(machines, key=lambda m: m.name)),
            qom_types=self.names("types", "type"), type_properties=props,
            commands=self.names("commands", "command"), events=self.names("events", "event"),
            schema=self.names("schema", "fact", "query"),
            migration_capabilities=self.names("migration-capabilities", "capability"),
            cpu_models=cpus, host_cpus=self.host_cpus(), sev=self.sev(), option_members=self.option_members(),
            qapi_schema=(self.root.findtext("qapi-schema") or "").strip(),
            extra_flags=self.names("flags", "flag"), provenance=provenance,
        )

    def host_cpus(self) -> tuple[HostCpu, ...]:
        hosts = []
        for h in self.root.iterfind("host-cpus/host-cpu"):
            props = []
            for p in h.iterfind("property"):
                ptype = self.attr(p, "type")
                if ptype not in ("boolean", "number", "string"):
                    raise self.fail(p, f"<property type={ptype!r}> is not boolean, number or string")
                props.append(CpuProperty(name=self.attr(p, "name"), type=ptype, value=self.attr(p, "value"),
                                         migratable=_opt_bool(p.get("migratable"))))
            hosts.append(HostCpu(accel=self.attr(h, "accel"), model=self.attr(h, "model"),
                                 migratability=h.get("migratability") == "yes", properties=tuple(props)))
        return tuple(hosts)

    def option_members(self) -> dict[str, dict[str, dict[str, str]]]:
        record: dict[str, dict[str, dict[str, str]]] = {}
        for option in self.root.iterfind("option-members/option"):
            branches = {"": self.members(option)}
            for branch in option.iterfind("branch"):
                branches[self.attr(branch, "name")] = self.members(branch)
            record[self.attr(option, "name")] = branches
        return record

    def members(self, node: etree._Element) -> dict[str, str]:
        return {self.attr(m, "name"): self.attr(m, "type") for m in node.iterfind("member")}

    def sev(self) -> SevInfo | None:
        node = self.root.find("sev")
        if node is None:
            return None
        return SevInfo(cbitpos=self.integer(node, "cbitpos"), reduced_phys_bits=self.integer(node, "reduced-phys-bits"))


def fixture_name(caps: Capabilities) -> str:
    """The file name a fixture is stored under in capsdata/."""
    return f"qemu-{caps.version}-{caps.arch}.xml"
