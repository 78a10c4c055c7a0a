"""libvirt's x86 CPU map, read at run time: feature names -> CPUID/MSR bits, vendors, CPU models.

The map is libvirt's data (src/cpu_map, installed as /usr/share/libvirt/cpu_map); it is
never copied into this project. The folder is, in this order:

- ``QEMU_CONFORMANCE_CPU_MAP`` (a folder holding index.xml);
- the newer of the map fetched into the cache (``qemu-conformance builds cpu-map``,
  Debian trixie, libvirt 11.3) and the system's /usr/share/libvirt/cpu_map (package
  libvirt0 on Debian bookworm, libvirt 9.0: older, it lacks some features and models).

CPU data is kept as one Python integer: every 32-bit register of every CPUID leaf or MSR
the map mentions gets a slot, so "the data has this feature" is ``data & bits == bits``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lxml import etree

from conformance.errors import UnsupportedByQemu
from conformance.paths import env_path

SYSTEM_CPU_MAP = Path("/usr/share/libvirt/cpu_map")
ENV_CPU_MAP = "QEMU_CONFORMANCE_CPU_MAP"
FETCH_COMMAND = "qemu-conformance builds cpu-map"

_CPUID_REGS = ("eax", "ebx", "ecx", "edx")
_MSR_REGS = ("eax", "edx")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


# --- where the map is ---------------------------------------------------------------------------


def _upstream_version(debian_version: str) -> tuple[int, ...]:
    """'11.3.0-3+deb13u3' -> (11, 3, 0); () when it does not look like a version."""
    m = _VERSION_RE.search(debian_version.split(":", 1)[-1])
    return tuple(int(x or 0) for x in m.groups()) if m else ()


@lru_cache(maxsize=1)
def _system_map_version() -> tuple[int, ...]:
    try:
        proc = subprocess.run(["dpkg-query", "-S", str(SYSTEM_CPU_MAP)], capture_output=True, text=True,
                              timeout=10, check=False)
        package = proc.stdout.split(":", 1)[0].strip() if proc.returncode == 0 else ""
        if not package:
            return ()
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return _upstream_version(proc.stdout) if proc.returncode == 0 else ()


def find_cpu_map() -> Path:
    """The cpu_map folder to use (see the module docstring); UnsupportedByQemu when there is none."""
    folder = env_path(ENV_CPU_MAP)
    if folder is not None:
        if not (folder / "index.xml").is_file():
            raise UnsupportedByQemu(f"{ENV_CPU_MAP}={os.environ[ENV_CPU_MAP]} holds no index.xml", path=folder,
                                    hint="point it at a libvirt cpu_map folder, or unset it")
        return folder
    from conformance.builds import fetched_cpu_map

    candidates: list[tuple[tuple[int, ...], int, Path]] = []
    fetched = fetched_cpu_map()
    if fetched is not None:
        candidates.append((_upstream_version(fetched[1]), 1, fetched[0]))
    if (SYSTEM_CPU_MAP / "index.xml").is_file():
        candidates.append((_system_map_version() if fetched is not None else (), 0, SYSTEM_CPU_MAP))
    if not candidates:
        raise UnsupportedByQemu(
            "<cpu mode='host-model'> needs libvirt's CPU map, and none was found",
            hint=f"run `{FETCH_COMMAND}` (libvirt 11.3's map into the cache), install libvirt0 "
                 f"(/usr/share/libvirt/cpu_map), or set {ENV_CPU_MAP}")
    return max(candidates)[2]


# --- the map -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    name: str
    bits: int
    migratable: bool = True
    qemu_aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Signature:
    family: int
    model: int
    steppings: frozenset[int] | None = None  # None: any stepping

    def matches(self, family: int, model: int, stepping: int) -> bool:
        return self.family == family and self.model == model and \
            (self.steppings is None or stepping in self.steppings)


@dataclass
class Model:
    name: str
    decode_host: bool = True
    decode_guest: bool = True
    vendor: str | None = None
    signatures: tuple[Signature, ...] = ()
    bits: int = 0
    removed: tuple[str, ...] = ()  # features the model lost: always listed as disabled for guests


@dataclass
class X86Map:
    folder: Path
    features: list[Feature] = field(default_factory=list)  # in map order: the order of -cpu features
    models: list[Model] = field(default_factory=list)  # in map order
    vendors: dict[str, int] = field(default_factory=dict)  # name -> bits of the CPUID 0 vendor string
    slots: dict[tuple, int] = field(default_factory=dict)  # (kind, leaf, subleaf, register) -> bit offset
    feature_by_name: dict[str, Feature] = field(default_factory=dict)
    model_by_name: dict[str, Model] = field(default_factory=dict)

    # --- bit slots ---
    def _slot(self, key: tuple) -> int:
        offset = self.slots.get(key)
        if offset is None:
            offset = self.slots[key] = 32 * len(self.slots)
        return offset

    def cpuid_bits(self, leaf: int, subleaf: int, regs: dict[str, int]) -> int:
        bits = 0
        for reg in _CPUID_REGS:
            value = regs.get(reg, 0)
            if value:
                bits |= (value & 0xFFFFFFFF) << self._slot(("cpuid", leaf, subleaf, reg))
        return bits

    def msr_bits(self, index: int, regs: dict[str, int]) -> int:
        bits = 0
        for reg in _MSR_REGS:
            value = regs.get(reg, 0)
            if value:
                bits |= (value & 0xFFFFFFFF) << self._slot(("msr", index, 0, reg))
        return bits

    def is_msr(self, feature: Feature) -> bool:
        return any(key[0] == "msr" and (feature.bits >> off) & 0xFFFFFFFF for key, off in self.slots.items())

    def vendor_of(self, bits: int) -> str | None:
        for name, vbits in self.vendors.items():
            if bits & vbits == vbits:
                return name
        return None

    def feature_names(self, bits: int) -> list[str]:
        """Map features wholly inside ``bits``, in map order, each taking its bits away (libvirt's rule)."""
        names = []
        for feature in self.features:
            if feature.bits and bits & feature.bits == feature.bits:
                bits &= ~feature.bits
                names.append(feature.name)
        return names


def _hex(node: etree._Element, attr: str) -> int:
    text = node.get(attr)
    return int(text, 0) if text else 0


def _steppings(text: str | None) -> frozenset[int] | None:
    if not text:
        return None
    found: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        found.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(found)


def _read(path: Path) -> etree._Element:
    try:
        return etree.parse(str(path), etree.XMLParser(remove_comments=True, resolve_entities=False)).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise UnsupportedByQemu(f"cannot read libvirt's CPU map: {exc}", path=path,
                                hint=f"run `{FETCH_COMMAND}` again or set {ENV_CPU_MAP}") from None


@lru_cache(maxsize=4)
def load_x86_map(folder: Path) -> X86Map:
    """Parse index.xml's x86 section and its includes, in libvirt's order."""
    index = _read(folder / "index.xml")
    arch = index.find("arch[@name='x86']")
    if arch is None:
        raise UnsupportedByQemu("libvirt's CPU map has no x86 section", path=folder / "index.xml")
    cpu_map = X86Map(folder)
    for include in arch.iter("include"):
        root = _read(folder / include.get("filename", ""))
        for node in root.iterfind("vendor"):
            string = node.get("string", "")
            raw = string.encode("latin-1")
            if len(raw) == 12:
                cpu_map.vendors[node.get("name", "")] = cpu_map.cpuid_bits(0, 0, {
                    "ebx": int.from_bytes(raw[0:4], "little"), "edx": int.from_bytes(raw[4:8], "little"),
                    "ecx": int.from_bytes(raw[8:12], "little")})
        for node in root.iterfind("feature"):
            _add_feature(cpu_map, node)
        for node in root.iterfind("model"):
            _add_model(cpu_map, node)
    return cpu_map


def _add_feature(cpu_map: X86Map, node: etree._Element) -> None:
    bits = 0
    for item in node:
        if item.tag == "cpuid":
            bits |= cpu_map.cpuid_bits(_hex(item, "eax_in"), _hex(item, "ecx_in"),
                                       {reg: _hex(item, reg) for reg in _CPUID_REGS})
        elif item.tag == "msr":
            bits |= cpu_map.msr_bits(_hex(item, "index"), {reg: _hex(item, reg) for reg in _MSR_REGS})
    aliases = tuple(a.get("name", "") for a in node.iterfind("alias") if a.get("source") == "qemu")
    feature = Feature(node.get("name", ""), bits, node.get("migratable") != "no", aliases)
    cpu_map.features.append(feature)
    cpu_map.feature_by_name[feature.name] = feature


def _add_model(cpu_map: X86Map, node: etree._Element) -> None:
    model = Model(node.get("name", ""))
    decode = node.find("decode")
    if decode is not None:
        model.decode_host = decode.get("host") == "on"
        model.decode_guest = decode.get("guest") == "on"
    ancestor_node = node.find("model")
    if ancestor_node is not None:
        ancestor = cpu_map.model_by_name.get(ancestor_node.get("name", ""))
        if ancestor is None:
            raise UnsupportedByQemu(f"CPU model {model.name} names an unknown ancestor "
                                    f"{ancestor_node.get('name')!r}", path=cpu_map.folder)
        model.vendor, model.signatures, model.bits = ancestor.vendor, ancestor.signatures, ancestor.bits
    signatures = node.findall("signature")
    if signatures:
        model.signatures = tuple(Signature(int(s.get("family", "0")), int(s.get("model", "0")),
                                           _steppings(s.get("stepping"))) for s in signatures)
    vendor = node.find("vendor")
    if vendor is not None:
        model.vendor = vendor.get("name")
    removed = []
    for feat in node.iterfind("feature"):
        name = feat.get("name", "")
        feature = cpu_map.feature_by_name.get(name)
        if feature is None:
            raise UnsupportedByQemu(f"CPU model {model.name} needs unknown feature {name!r}", path=cpu_map.folder)
        if feat.get("removed") == "yes":
            removed.append(name)
        else:
            model.bits |= feature.bits
    model.removed = tuple(removed)
    cpu_map.models.append(model)
    cpu_map.model_by_name[model.name] = model


_MAP_ARCH = {"x86_64": "x86", "i686": "x86", "aarch64": "arm", "armv7l": "arm", "armv6l": "arm"}


def map_arch(arch: str) -> str | None:
    """The cpu_map section of a domain arch ('x86', 'arm'), or None where libvirt has no feature map."""
    return _MAP_ARCH.get(arch)


@lru_cache(maxsize=4)
def feature_names(folder: Path, section: str) -> frozenset[str]:
    """The names of every <feature> in one arch section of the map (what virCPUValidateFeatures accepts)."""
    index = _read(folder / "index.xml")
    arch = index.find(f"arch[@name='{section}']")
    if arch is None:
        return frozenset()
    return frozenset(node.get("name", "") for include in arch.iter("include")
                     for node in _read(folder / include.get("filename", "")).iterfind("feature"))
