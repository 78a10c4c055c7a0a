"""The Capabilities model: what one QEMU binary (version, arch) can do.

Raw facts come from a probe over QMP (conformance/caps/probe.py) or from an
import of libvirt's capability XML (conformance/caps/libvirt_import.py).
Named flags such as ``virtio-net.failover`` are derived from the raw facts by
the rules in conformance/caps/flags.py, so there is one place that says what
a flag means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TypeVar

T = TypeVar("T")
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
    # takes -numa node,mem= (query-machines numa-mem-supported; libvirt's numaMemSupported)
    numa_mem: bool = False
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


# The kinds of fact a fixture can hold (the sections ``caps diff`` compares, plus schema facts)
FACT_KINDS: tuple[str, ...] = (
    "machine types", "devices and objects", "properties", "commands", "events", "schema",
    "migration capabilities", "cpu models", "flags", "option members",
)

# the -OPTION values built from a QAPI union, and the union: option -> (command, argument holding the union
# or "" for the whole arguments); the probe records each union's members (Capabilities.option_members)
QAPI_OPTIONS: dict[str, tuple[str, str]] = {
    "netdev": ("netdev_add", ""), "blockdev": ("blockdev-add", ""), "chardev": ("chardev-add", "backend"),
}

# Flags of the rules in flags.py that libvirt has no capability string for (this project's own names; libvirt
# spells two of the facts differently and they are not aliased: 'migration-event', 'device-del-event'), so an
# imported libvirt file can never say them. Kept with the fact kinds; checked against libvirt's corpus in
# tests/unit/test_caps_diff.py.
NOT_LIBVIRT_FLAGS: frozenset[str] = frozenset({
    "migration.wait-unplug", "event.failover-negotiated", "event.unplug-primary", "migration-events",
    "device.deleted-event",
})


@dataclass(frozen=True)
class Recorded:
    """Which facts of one kind a fixture records: only within this scope does absence mean QEMU lacks it.

    ``only`` None: every fact of the kind; otherwise just these (``"TYPE.*"``: every property of TYPE;
    ``"OPTION:*"``: every type and member of a -OPTION), and
    ``outside`` and ``because`` say in words what falls outside and why: "[205 flags] only libvirt derives",
    "the probe does not derive them". ``never``: groups of facts of the kind this fixture cannot hold (or
    holds only by inference), each ``(facts, outside, because)``.
    """

    only: frozenset[str] | None = None
    outside: str = ""
    because: str = ""
    never: tuple[tuple[frozenset[str], str, str], ...] = ()

    @property
    def complete(self) -> bool:
        return self.only is None and not any(facts for facts, _, _ in self.never)

    def covers(self, fact: str) -> bool:
        return self.left_out(fact) is None

    def left_out(self, fact: str) -> tuple[str, str] | None:
        """Why ``fact`` is outside this record, as (outside, because); None when it is recorded."""
        for facts, outside, because in self.never:
            if fact in facts:
                return outside, because
        if self.only is None or fact in self.only:
            return None
        colon = fact.find(":")
        if colon > 0 and fact[:colon] + ":*" in self.only:  # "netdev:*": every fact of that option
            return None
        dot = fact.find(".")
        while dot > 0:  # "pc-q35-4.0.1-machine.hpet": try every dot as the type/property split
            if fact[:dot] + ".*" in self.only:
                return None
            dot = fact.find(".", dot + 1)
        return self.outside, self.because

    @cached_property
    def property_scope(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
        """Of a property record: (types whose every property is recorded, single recorded "TYPE.PROP" facts,
        types with any); None: it records every property of every type. Kept on the record (the argv's property
        check asks once per argv)."""
        if self.only is None or self.never:
            return None
        whole = frozenset(f[:-2] for f in self.only if f.endswith(".*"))
        single = frozenset(f for f in self.only if not f.endswith(".*"))
        return whole, single, whole | frozenset(f.rpartition(".")[0] for f in single)


def _is_machine_or_cpu_type(qom_type: str) -> bool:
    """QOM types behind machine types and CPU models (``pc-q35-7.2-machine``, ``max-x86_64-cpu``)."""
    return qom_type.endswith(("-machine", "-cpu"))


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
    # the QAPI unions behind -netdev/-blockdev/-chardev (QAPI_OPTIONS), from query-qmp-schema: option ->
    # branch (netdev type, blockdev driver, chardev backend; "": members every branch has) -> member
    # ("cache.direct" inside a nested object) -> JSON type ("string", "int", "boolean", "object|string", ...)
    option_members: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # the QAPI types behind -netdev/-blockdev/-chardev/-object, as the compact text of caps/qapi_record.py
    # ("" when not recorded); decoded only when the argv check first asks (conformance/argv/qapi_check.py)
    qapi_schema: str = ""
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

    def facts(self, kind: str) -> frozenset[str]:
        """The facts of one kind (FACT_KINDS) as strings: names, "TYPE.PROPERTY", schema queries, flags.

        "devices and objects" leaves out the QOM types behind machine types and CPU models (those
        are the "machine types" and "cpu models" kinds); machine types include their aliases.
        """
        match kind:
            case "machine types":
                return frozenset({m.name for m in self.machines} | {m.alias for m in self.machines if m.alias})
            case "devices and objects":
                return frozenset(t for t in self.qom_types if not _is_machine_or_cpu_type(t))
            case "properties":
                return frozenset(f"{t}.{p}" for t, props in self.type_properties.items() for p in props)
            case "commands":
                return self.commands
            case "events":
                return self.events
            case "schema":
                return self.schema
            case "migration capabilities":
                return self.migration_capabilities
            case "cpu models":
                return frozenset(c.name for c in self.cpu_models)
            case "flags":
                return self.flags
            case "option members":
                return frozenset(
                    fact for option, branches in self.option_members.items() for branch in branches if branch
                    for fact in (f"{option}:{branch}",
                                 *(f"{option}:{branch}.{m}" for m in self.members(option, branch) or ())))
        raise ValueError(f"unknown fact kind {kind!r} (one of {', '.join(FACT_KINDS)})")

    @cached_property
    def records(self) -> dict[str, Recorded]:
        """What this fixture records of each fact kind, derived from its provenance and its own contents.

        A probe (``provenance.source == "probe"``, also fixtures of unknown source) records every machine
        type, QOM type, command, event, migration capability and CPU model of the binary, the schema facts
        and flags the rules in flags.py name, and the properties of the types it lists properties for. An
        import of libvirt's caps XML records the machine types (except ``none``) and CPU models libvirt
        lists, the flags libvirt's file says (not those libvirt has no name for or has retired, nor those the
        import restored as implied: inferred, not said), and of the raw facts only those behind the flags it
        records.
        """
        if self.provenance.source == "libvirt-import":
            return self._import_records()
        return self._probe_records()

    def _probe_records(self) -> dict[str, Recorded]:
        from conformance.caps.flags import PROBED_TYPES, RULES

        rule_props = {f"{r.what}.{r.prop}" for r in RULES if r.kind == "property"}
        props: set[str] = set()
        for qom_type in dict.fromkeys([*PROBED_TYPES, *self.type_properties]):
            # a type it listed properties for, or one this binary does not have (so it has no properties)
            if qom_type in self.type_properties or qom_type not in self.qom_types:
                if qom_type.endswith("-cpu"):  # CPU types: only the rules' properties are kept
                    props |= {p for p in rule_props if p.startswith(qom_type + ".")}
                else:
                    props.add(qom_type + ".*")
        return {
            kind: Recorded() for kind in FACT_KINDS
        } | {
            "properties": Recorded(
                only=frozenset(props), outside="of types the probe does not list properties for",
                because="it lists the properties of the types the suite builds argv for"),
            "schema": Recorded(only=frozenset(r.what for r in RULES if r.kind == "schema"),
                               outside="no flag rule asks about",
                               because="the probe evaluates only the rules' schema queries"),
            "option members": Recorded(
                only=frozenset(f"{option}:*" for option in self.option_members),
                outside="of options whose QAPI union the fixture does not record",
                because="a probe records the unions of netdev_add, blockdev-add and chardev-add where the "
                        "schema has them (fixtures probed before that record none)"),
            "flags": Recorded(
                only=frozenset({r.flag for r in RULES} | self.extra_flags),
                outside="only libvirt derives", because="the probe does not derive them",
                # no kvm-accel type: a QEMU for another arch than the probing host's, built without KVM there
                never=() if "kvm" in self.accelerators else (
                    (frozenset({"kvm"}), "(kvm)", "probed on a host of another arch, where this QEMU has no KVM"),)),
        }

    def _import_records(self) -> dict[str, Recorded]:
        from conformance.caps.flags import LIBVIRT_ALIASES, RULES
        from conformance.caps.libvirt_import import history

        writer = self.provenance.libvirt_version
        # flags the import restored because libvirt retired them: inferred, not in libvirt's file
        inferred = {LIBVIRT_ALIASES.get(i.flag, i.flag) for i in self.provenance.implied}
        retired = set()
        for entry in [*history()["retired"], *history().get("retired_before_7_0_0", [])]:
            ours = LIBVIRT_ALIASES.get(entry["flag"], entry["flag"])
            if ours in inferred or ours in self.flags:
                continue
            since = entry.get("retired_in_earliest") or entry.get("retired_in") or entry.get("retired_in_latest")
            # retired by the libvirt that wrote the file (or it may have been): its absence says nothing
            if writer is None or since is None or QemuVersion.parse(writer) >= QemuVersion.parse(since):
                retired.add(ours)
        unsaid = NOT_LIBVIRT_FLAGS | retired | inferred
        recorded_rules = [r for r in RULES if r.flag not in unsaid
                          and (r.min_version is None or self.version >= QemuVersion.parse(r.min_version))]

        def raw(kind: str, fact_kind: str) -> Recorded:
            facts = {f"{r.what}.{r.prop}" if r.kind == "property" else r.what for r in recorded_rules
                     if r.kind == kind}
            return Recorded(only=frozenset(facts), outside="libvirt has no flag for",
                            because=f"libvirt's caps XML names only the {fact_kind} behind its flags")

        return {
            "machine types": Recorded(never=((frozenset({"none"}), "('none')",
                                              "libvirt does not list the 'none' machine"),)),
            "devices and objects": raw("type", "types"),
            "properties": raw("property", "properties"),
            "commands": raw("command", "commands"),
            "events": raw("event", "events"),
            "schema": raw("schema", "schema facts"),
            "migration capabilities": raw("migration", "migration capabilities"),
            "cpu models": Recorded(),
            "option members": Recorded(only=frozenset(), outside="of -netdev/-blockdev/-chardev",
                                       because="libvirt's caps XML carries no QAPI schema"),
            "flags": Recorded(never=(
                (NOT_LIBVIRT_FLAGS, "libvirt has no name for", "libvirt's caps XML cannot say them"),
                (frozenset(retired), "libvirt has retired", "libvirt's caps XML no longer says them"),
                (frozenset(inferred), "restored as implied",
                 "libvirt retired them; the import inferred them, libvirt's file does not say them"),
            )),
        }

    def members(self, option: str, branch: str) -> dict[str, str] | None:
        """The members (name -> JSON type) of one branch of an option's QAPI union ("netdev", "user"); None
        when the union has no such branch."""
        branches = self.option_members.get(option, {})
        own = branches.get(branch) if branch else None
        return None if own is None else branches.get("", {}) | own

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

    @cached_property
    def _cpu_model_names_by_type(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for model in self.cpu_models:
            if model.typename:
                table.setdefault(model.typename, model.name)  # the first, in the canonical order
        return table

    def cpu_model_of_type(self, typename: str) -> str | None:
        """The name of the first CPU model whose QOM type is ``typename`` ('qemu64-x86_64-cpu' -> 'qemu64')."""
        return self._cpu_model_names_by_type.get(typename)

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A fact derived from this fixture alone, computed on first use and kept with it: what every
        combination with this fixture would otherwise derive again. ``key`` names the derivation (with its
        arguments); ``compute`` must read nothing but this fixture and its arguments."""
        memo = self.__dict__.setdefault("_derived", {})
        try:
            return memo[key]
        except KeyError:
            value = memo[key] = compute()
            return value

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
    "option_members", "qapi_schema", "provenance",
)
