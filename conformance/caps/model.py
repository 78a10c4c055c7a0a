"""The Capabilities model: what one QEMU binary (version, arch) can do.

Raw facts come from a probe over QMP (conformance/caps/probe.py) or from an
import of libvirt's capability XML (conformance/caps/libvirt_import.py).
Named flags such as ``virtio-net.failover`` are derived from the raw facts by
the rules in conformance/caps/flags.py, so there is one place that says what
a flag means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")


@dataclass(frozen=True, order=True)
class QemuVersion:
    major: int
    minor: int
    micro: int = 0

    @classmethod
    def parse(cls, text: str) -> QemuVersion:
        """'4.2.0' or '4.2' -> QemuVersion; ValueError when it is not a version."""
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise ValueError(f"not a QEMU version: {text!r} (expected MAJOR.MINOR[.MICRO])")
        return cls(int(m[1]), int(m[2]), int(m[3] or 0))

    @classmethod
    def from_int(cls, number: int) -> QemuVersion:
        """libvirt's integer form: 4002000 -> 4.2.0."""
        return cls(number // 1_000_000, number // 1_000 % 1_000, number % 1_000)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"


@dataclass(frozen=True)
class MachineType:
    name: str
    alias: str | None = None
    is_default: bool = False
    deprecated: bool = False
    acpi: bool | None = None  # None: this QEMU does not report it (before 8.0)
    default_ram_id: str | None = None
    max_cpus: int | None = None
    default_cpu: str | None = None
    hotplug_cpus: bool = False
    # the default CPU under TCG where it differs from default_cpu (libvirt files list machines per
    # accelerator; s390x: host-s390x-cpu under KVM, qemu-s390x-cpu under TCG)
    default_cpu_tcg: str | None = None

    def default_cpu_for(self, accel: str) -> str | None:
        return self.default_cpu_tcg if accel == "tcg" and self.default_cpu_tcg else self.default_cpu


@dataclass(frozen=True)
class CpuModel:
    name: str
    typename: str | None = None
    usable: bool | None = None
    deprecated: bool = False
    # features QEMU cannot provide for this model here (query-cpu-definitions unavailable-features)
    blockers: tuple[str, ...] = ()
    # the accelerator QEMU answered under; None in fixtures written before it was recorded
    accel: str | None = None


@dataclass(frozen=True)
class CpuProperty:
    """One property of QEMU's host CPU expansion (query-cpu-model-expansion)."""

    name: str
    type: str  # "boolean" | "number" | "string"
    value: str  # as libvirt writes it: "true"/"false", "23", "AuthenticAMD"
    migratable: bool | None = None  # None: QEMU did not say (libvirt: attribute absent)

    @property
    def enabled(self) -> bool:
        return self.type == "boolean" and self.value == "true"


@dataclass(frozen=True)
class HostCpu:
    """QEMU's expansion of its host CPU model under one accelerator ('host' under KVM, 'max' under TCG).

    libvirt computes ``<cpu mode='host-model'>`` from it (libvirt's ``<hostCPU>``).
    """

    accel: str  # "kvm" | "tcg"
    model: str  # the model QEMU expanded to ("base" for a static expansion)
    migratability: bool  # whether each enabled property says if it is migratable
    properties: tuple[CpuProperty, ...] = ()


@dataclass(frozen=True)
class SevInfo:
    """AMD SEV platform facts (query-sev-capabilities; libvirt's ``<sev>``)."""

    cbitpos: int
    reduced_phys_bits: int


@dataclass(frozen=True)
class Implied:
    """A flag restored on import because libvirt retired it, and why."""

    flag: str
    reason: str


@dataclass(frozen=True)
class Provenance:
    source: str  # "probe" or "libvirt-import"
    binary: str | None = None  # probed binary path, or libvirt's <emulator>
    package: str | None = None  # distribution package of the binary, when known
    accel: str | None = None  # accelerator the probe ran with
    host: str | None = None
    created: str | None = None  # ISO 8601
    tool: str | None = None  # qemu-conformance version that wrote it
    imported_from: str | None = None
    libvirt_version: str | None = None
    implied: tuple[Implied, ...] = ()


@dataclass(eq=True)
class Capabilities:
    """Raw capabilities of one QEMU binary plus the flags derived from them."""

    version: QemuVersion
    arch: str
    package: str = ""  # QEMU's own package string, e.g. "Debian 1:7.2+dfsg-7+deb12u18"
    accelerators: frozenset[str] = frozenset()
    machines: tuple[MachineType, ...] = ()
    qom_types: frozenset[str] = frozenset()
    # QOM type -> property -> property type, for the types the suite builds argv for
    type_properties: dict[str, dict[str, str]] = field(default_factory=dict)
    commands: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    # QMP schema facts in libvirt's query syntax that held for this binary,
    # e.g. "device_add/$json-cli-hotplug", "netdev_add/arg-type/type/^dgram"
    schema: frozenset[str] = frozenset()
    migration_capabilities: frozenset[str] = frozenset()
    cpu_models: tuple[CpuModel, ...] = ()
    # QEMU's host CPU expansion per accelerator (host-model CPUs); empty when not probed/imported
    host_cpus: tuple[HostCpu, ...] = ()
    sev: SevInfo | None = None
    # flags that come from an import and are not expressible as raw facts
    extra_flags: frozenset[str] = frozenset()
    provenance: Provenance = field(default_factory=lambda: Provenance(source="unknown"))

    def __post_init__(self) -> None:
        # one canonical order, so that equality does not depend on how the data arrived
        self.machines = tuple(sorted(self.machines, key=lambda m: m.name))
        self.cpu_models = tuple(sorted(self.cpu_models, key=lambda c: (c.name, c.accel or "")))
        self.host_cpus = tuple(sorted(
            (h if list(h.properties) == sorted(h.properties, key=lambda p: p.name)
             else replace(h, properties=tuple(sorted(h.properties, key=lambda p: p.name)))
             for h in self.host_cpus), key=lambda h: h.accel))

    @cached_property
    def flags(self) -> frozenset[str]:
        from conformance.caps.flags import derive_flags

        return derive_flags(self) | self.extra_flags

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def has_type(self, qom_type: str) -> bool:
        return qom_type in self.qom_types

    def has_property(self, qom_type: str, prop: str) -> bool:
        return prop in self.type_properties.get(qom_type, {})

    @cached_property
    def _machines_by_name(self) -> dict[str, MachineType]:
        table: dict[str, MachineType] = {}
        for m in self.machines:
            table[m.name] = m
        for m in self.machines:
            if m.alias and m.alias not in table:
                table[m.alias] = m
        return table

    def machine(self, name: str) -> MachineType | None:
        """A machine type by name or alias ('q35' -> pc-q35-7.2)."""
        return self._machines_by_name.get(name)

    def host_cpu(self, accel: str) -> HostCpu | None:
        """QEMU's host CPU expansion under ``accel`` ("kvm" or "tcg"), when the fixture carries it."""
        return next((h for h in self.host_cpus if h.accel == accel), None)

    def cpu_models_for(self, accel: str) -> tuple[CpuModel, ...]:
        """The CPU models QEMU offers under ``accel`` (models of fixtures that do not say count for any)."""
        mine = tuple(c for c in self.cpu_models if c.accel == accel)
        return mine or tuple(c for c in self.cpu_models if c.accel is None)

    def default_machine(self) -> MachineType | None:
        return next((m for m in self.machines if m.is_default), None)

    @property
    def label(self) -> str:
        return f"{self.version}-{self.arch}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Capabilities):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _EQ_FIELDS)

    __hash__ = None  # type: ignore[assignment]


_EQ_FIELDS = (
    "version", "arch", "package", "accelerators", "machines", "qom_types", "type_properties",
    "commands", "events", "schema", "migration_capabilities", "cpu_models", "host_cpus", "sev", "extra_flags",
    "provenance",
)
