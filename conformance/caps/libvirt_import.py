"""Import libvirt's capability XML (``<qemuCaps>``) as this project's fixture.

libvirt's test fixtures (tests/qemucapabilitiesdata/caps_*.xml) and the cache
libvirt keeps on hosts (/var/cache/libvirt/qemu/capabilities/*.xml) share the
format. Flags become raw facts through the rules in flags.py (run backwards);
flags no rule knows are kept verbatim as extra flags.

The trap: libvirt *retires* a flag once every QEMU it supports has it, so a
newer libvirt's file no longer says ``virtio-net.failover`` even though the
QEMU has the property. The import restores retired flags from the libvirt
release that wrote the file (``<selfvers>``, a ``libvirt-X.Y.Z`` folder in the
path, ``--libvirt-version``, or inferred from which flags are missing) and the
retirement history in libvirt_history.json, and lists them as implied in the
provenance.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree

from conformance import __version__
from conformance.caps.fixture import parse_caps_xml
from conformance.caps.flags import LIBVIRT_ALIASES, apply_flag
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
from conformance.caps.qapi_record import encode, record_from_schema, replies_beside, schema_from_replies
from conformance.data import package_file
from conformance.errors import FixtureError

HISTORY_FILE = package_file("caps", "libvirt_history.json")  # package data (conformance/data.py)
_PATH_VERSION_RE = re.compile(r"libvirt-(\d+\.\d+\.\d+)")


@lru_cache(maxsize=1)
def history() -> dict[str, Any]:
    """libvirt's minimum-QEMU bumps and flag retirements (data with sources)."""
    return json.loads(HISTORY_FILE.read_text())


def _v(text: str) -> QemuVersion:
    return QemuVersion.parse(text)


def min_qemu_for(libvirt_version: str) -> QemuVersion | None:
    """The oldest QEMU the given libvirt release supports."""
    best: tuple[QemuVersion, QemuVersion] | None = None
    lv = _v(libvirt_version)
    for release, qemu in history()["min_qemu"].items():
        rv = _v(release)
        if rv <= lv and (best is None or rv > best[0]):
            best = (rv, _v(qemu))
    return best[1] if best else None


def _arches(retired: dict[str, Any]) -> set[str]:
    """Arches the flag was set on before libvirt retired it ("x86_64 (partial)" counts)."""
    return {a.split()[0] for a in retired.get("arches_in_last_fixtures_before_retirement", [])}


def _first_qemu(retired: dict[str, Any], arch: str) -> QemuVersion | None:
    by_arch = retired.get("first_qemu_by_arch") or {}
    text = by_arch.get(arch) or (retired.get("first_qemu") if not by_arch else None)
    return _v(text) if text else None


def _restorable(retired: dict[str, Any], libvirt_version: str, qemu: QemuVersion, arch: str,
                flags: set[str]) -> bool:
    """The history's rule: retired by this libvirt, restorable, old enough QEMU, right arch and companions."""
    if retired.get("restore_as_implied") != "yes-if-qemu>=first_qemu":
        return False
    earliest = retired.get("retired_in_earliest") or retired.get("retired_in")
    if not earliest or _v(libvirt_version) < _v(earliest):
        return False
    first = _first_qemu(retired, arch)
    if first is None or qemu < first:
        return False
    arches = _arches(retired)
    if arches and arch not in arches:
        return False
    if retired.get("depends_on_flag") and retired["depends_on_flag"] not in flags:
        return False
    return not (retired.get("requires_absent_flag") and retired["requires_absent_flag"] in flags)


def _infer_libvirt_version(flags: set[str], qemu: QemuVersion, arch: str) -> str | None:
    """The newest retirement step whose flags are all missing although this QEMU would have them.

    Every flag retired at release R that this QEMU is new enough to have, yet
    absent from the file, says the writer was libvirt >= R.
    """
    steps: dict[str, list[dict[str, Any]]] = {}
    for r in history()["retired"]:
        first = _first_qemu(r, arch)
        if r.get("restore_as_implied", "").startswith("yes") and r.get("retired_in_earliest") and first \
                and first <= qemu and (not _arches(r) or arch in _arches(r)):
            steps.setdefault(r["retired_in_earliest"], []).append(r)
    newest = None
    for release in sorted(steps, key=_v):
        if all(r["flag"] not in flags for r in steps[release]):
            newest = release
    return newest


def import_libvirt_caps(source: str | Path, *, libvirt_version: str | None = None,
                        replies: str | Path | None = None) -> Capabilities:
    """libvirt's caps XML -> Capabilities; the QAPI schema of -netdev/-blockdev/-chardev/-object comes from
    ``replies`` (libvirt's ``.replies`` file of the same probe), by default the one beside the XML if any."""
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FixtureError(f"cannot read libvirt capabilities: {exc.strerror}", path=path) from None
    root = parse_caps_xml(data, path)
    if root.tag != "qemuCaps":
        raise FixtureError(f"not libvirt capability XML: root element <{root.tag}>", path=path,
                           line=root.sourceline, hint="expected <qemuCaps> as in /var/cache/libvirt/qemu/capabilities")

    def text(tag: str) -> str | None:
        node = root.find(tag)
        return node.text.strip() if node is not None and node.text else None

    vtext = text("version")
    if not vtext or not vtext.isdigit():
        raise FixtureError("missing or malformed <version>", path=path,
                           hint="libvirt writes the QEMU version as an integer, e.g. 4002000 for 4.2.0")
    version = QemuVersion.from_int(int(vtext))
    arch = text("arch")
    if not arch:
        raise FixtureError("missing <arch>", path=path)

    libvirt_flags = {f.get("name", "") for f in root.iterfind("flag")} - {""}
    raw: dict[str, set[str]] = {}
    extra: set[str] = set()
    for flag in libvirt_flags:
        if not apply_flag(raw, flag):
            extra.add(LIBVIRT_ALIASES.get(flag, flag))

    # which libvirt wrote it: explicit > <selfvers> > a libvirt-X.Y.Z folder > inference
    how = "given"
    if not libvirt_version:
        selfvers = text("selfvers")
        if selfvers and selfvers.isdigit() and int(selfvers) > 0:
            libvirt_version, how = str(QemuVersion.from_int(int(selfvers))), "from <selfvers>"
    if not libvirt_version:
        m = _PATH_VERSION_RE.search(str(path.resolve()))
        if m:
            libvirt_version, how = m[1], "from the path"
    if not libvirt_version:
        libvirt_version = _infer_libvirt_version(libvirt_flags, version, arch)
        how = "at least this release, inferred from missing retired flags"

    implied: list[Implied] = []
    if libvirt_version:
        floor = min_qemu_for(libvirt_version)
        for r in history()["retired"]:
            flag = r["flag"]
            if flag in libvirt_flags or not _restorable(r, libvirt_version, version, arch, libvirt_flags):
                continue
            if not apply_flag(raw, flag):
                extra.add(LIBVIRT_ALIASES.get(flag, flag))
            implied.append(Implied(flag, (
                f"retired by libvirt {r.get('retired_in') or r['retired_in_earliest']} (this file: libvirt "
                f"{libvirt_version}, {how}; minimum QEMU {floor or '?'}); QEMU {version} has it")))

    machines: dict[str, MachineType] = {}
    accels = {"kvm" if "kvm" in libvirt_flags else "", "tcg" if "tcg" in libvirt_flags else ""} - {""}
    for m in root.iterfind("machine"):
        accels.add(m.get("type", "kvm"))
        name = m.get("name")
        if not name:
            continue
        if name in machines:
            first = machines[name]
            if m.get("type") == "tcg" and m.get("defaultCPU") and m.get("defaultCPU") != first.default_cpu:
                machines[name] = replace(first, default_cpu_tcg=m.get("defaultCPU"))
            continue
        machines[name] = MachineType(
            name=name, alias=m.get("alias"), is_default=m.get("default") == "yes",
            deprecated=m.get("deprecated") == "yes",
            acpi=None if m.get("acpi") is None else m.get("acpi") == "yes",
            default_ram_id=m.get("defaultRAMid"),
            max_cpus=int(m.get("maxCpus")) if (m.get("maxCpus") or "").isdigit() else None,
            default_cpu=m.get("defaultCPU"), hotplug_cpus=m.get("hotplugCpus") == "yes",
            numa_mem=m.get("numaMemSupported") == "yes",
        )
    cpus: dict[tuple[str, str], CpuModel] = {}
    for c in root.iterfind("cpu"):
        name = c.get("name")
        accel = c.get("type", "kvm")
        if name and (name, accel) not in cpus:
            cpus[name, accel] = CpuModel(
                name=name, typename=c.get("typename"),
                usable=None if c.get("usable") is None else c.get("usable") == "yes",
                deprecated=c.get("deprecated") == "yes",
                blockers=tuple(b.get("name", "") for b in c.iterfind("blocker")), accel=accel)

    props: dict[str, dict[str, str]] = {}
    for item in raw.get("type_properties", set()):
        qom_type, _, prop = item.partition(".")
        props.setdefault(qom_type, {})[prop] = ""
    package = text("package") or ""
    return Capabilities(
        version=version, arch=arch, package=package,
        accelerators=frozenset(accels | raw.get("accelerators", set())),
        machines=tuple(machines.values()),
        qom_types=frozenset(raw.get("qom_types", set()) | set(props)),
        type_properties=props,
        commands=frozenset(raw.get("commands", set())),
        events=frozenset(raw.get("events", set())),
        schema=frozenset(raw.get("schema", set())),
        migration_capabilities=frozenset(raw.get("migration_capabilities", set())),
        cpu_models=tuple(cpus.values()),
        host_cpus=tuple(_host_cpu(node) for node in root.iterfind("hostCPU")),
        sev=_sev(root, path),
        qapi_schema=_qapi_schema(replies if replies is not None else replies_beside(path)),
        extra_flags=frozenset(extra),
        provenance=Provenance(
            source="libvirt-import", binary=text("emulator"), package=package or None,
            tool=f"qemu-conformance {__version__}", imported_from=_display_path(path),
            libvirt_version=libvirt_version, implied=tuple(sorted(implied, key=lambda i: i.flag)),
        ),
    )


def _qapi_schema(replies: str | Path | None) -> str:
    return encode(record_from_schema(schema_from_replies(replies))) if replies is not None else ""


def _host_cpu(node: etree._Element) -> HostCpu:
    """libvirt's <hostCPU type= model= migratability=> with its <property> lines."""
    return HostCpu(
        accel=node.get("type", "kvm"), model=node.get("model", ""), migratability=node.get("migratability") == "yes",
        properties=tuple(
            CpuProperty(name=p.get("name", ""), type=p.get("type", "boolean"), value=p.get("value", ""),
                        migratable=None if p.get("migratable") is None else p.get("migratable") == "yes")
            for p in node.iterfind("property")),
    )


def _sev(root: etree._Element, path: Path) -> SevInfo | None:
    node = root.find("sev")
    if node is None:
        return None
    try:
        return SevInfo(cbitpos=int(node.findtext("cbitpos", "")),
                       reduced_phys_bits=int(node.findtext("reducedPhysBits", "")))
    except ValueError:
        raise FixtureError("malformed <sev>: cbitpos and reducedPhysBits must be numbers", path=path,
                           line=node.sourceline) from None


def _display_path(path: Path) -> str:
    """Where an import came from, relative to the shared corpus when it lives there."""
    resolved = path.resolve()
    parts = resolved.parts
    for top in ("libvirt-corpus", "libvirt-corpus-wide"):
        if top in parts:
            return "/".join(parts[parts.index(top):])
    return str(resolved)
