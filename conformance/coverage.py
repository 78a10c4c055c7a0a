"""Device coverage: which migratable devices a build offers, and which of them the cases boot and migrate.

Everything is asked of the build itself, per machine family (x86_64 ``q35`` and ``pc``, aarch64 ``virt``):

- **Offered**: the user-creatable device types (``-device help``, which lists only those, with the bus
  type each needs; CPU models, which ``qom-list-types implements=cpu`` names, are left out).
- **Migration state**: ``-dump-vmstate FILE`` is keyed by QOM class name (every device class with a
  state description, inherited ones included; ``Description.name`` is the section name). A description
  with neither fields nor subsections is what an unmigratable device registers (QEMU does not dump the
  ``unmigratable`` flag itself): such a type is *unmigratable*, not offered. A type with no description
  of its own carries state when one of its QOM children does (``device-list-properties``: a
  ``virtio-net-pci`` migrates through its ``virtio-backend``, a ``virtio-net-device``). A type QEMU
  cannot instantiate (a module this build lacks) is *broken*, neither.
- **On the family**: the family takes a type when the bus the type needs is there. The buses are read
  from the family's QOM tree (``-M FAMILY -nodefaults -S``, ``qom-list`` from /machine), after
  cold-plugging the migratable types in rounds (a USB controller brings a ``usb-bus``, a ``usb-ccid`` then
  a ``ccid-bus``): a device QEMU refuses is dropped from the round and the machine started again, and
  one refused on the bus QEMU picked for it is tried on the other buses of its kind. A type whose bus
  the family never has, or a system-bus device the machine refuses ("cannot be handled by this
  machine"), is *not on the family*: not offered there, listed with the reason (``not_on_family``).
- **Migration blockers**: the dump shows neither a description's ``unmigratable`` flag nor a blocker a
  device adds at realize, so the family's QEMU with every migratable type cold-plugged is asked:
  ``query-migrate`` ``blocked-reasons`` (QEMU 6.0+: "non-migratable device: ID/NAME", NAME the
  description's name, or the blocker's text), or on older QEMU a ``migrate`` to nowhere, which fails at
  once naming the first blocker (QEMU started again without it, bounded). Each reason is mapped to the
  types it names (``attribute_blockers``; a reason naming no device: bisection of the command line),
  which are *unmigratable* on the family with QEMU's words. Each case's paused QEMU is asked too: a
  blocked case migrates nothing, so it covers nothing, and the types it blocks on are unmigratable.
- **Covered**: every case that boots (and so migrates) on the family is prepared exactly as the boot
  stage prepares it (conformance/live/boot.py ``prepare_vm``: the same static and live argv), started
  paused, and its QOM composition tree walked: every instantiated type with migration state counts,
  including what the machine adds itself (ICH9-LPC, mch, ...).
- **Not coverable**: the short list in ``coverage_exclusions.toml``: offered types that need host
  hardware, a host service the suite cannot start, KVM, or that the family cannot take for a reason
  the bus check does not see. Each entry has its one-line reason; the reasons are shown to users.
  Coverage = covered / (offered - not coverable).

Results are cached under ``$QEMU_CONFORMANCE_CACHE/coverage/``, keyed by the binary's content (a
build's wrapper script: its text and the version it reports) and, per case, by the live argv: a
re-run costs seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conformance.data import package_file
from conformance.errors import ConformanceError, LiveError
from conformance.paths import cache_dir
from conformance.qemu.process import LaunchFailed, QemuProcess
from conformance.qemu.qmp import QmpCommandFailed, QmpError, QmpMonitorGone, QmpSession

FAMILIES: dict[str, tuple[str, ...]] = {"x86_64": ("q35", "pc"), "aarch64": ("virt",)}
EXCLUSIONS = package_file("coverage_exclusions.toml")  # package data (conformance/data.py)
EXCLUSION_KINDS = ("host hardware", "host service", "TCG", "family")
CACHE_FORMAT = 4  # 4: migration blockers (query-migrate) make a type unmigratable
CODE_KEY = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]  # a cache of other code is not read
MAX_ROUNDS = 4  # cold-plug rounds per family (measured: 2-3 bring every bus)
START_TIMEOUT = 10.0  # s for a paused QEMU's QMP greeting
SKIP_CHILD_TYPES = ("memory-region",)  # QOM children not worth walking (hundreds, never devices)

Say = Callable[[str], None]


class CoverageError(ConformanceError):
    """Coverage cannot be measured for a binary (it does not start, dump or answer)."""


# --- pure parts: what the build said -> what it offers ----------------------------------------------

def parse_device_help(text: str) -> dict[str, str | None]:
    """``-device help`` -> {type: bus type or None}. Only user-creatable types are listed."""
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        match = re.match(r'name "([^"]+)"(?:, bus ([^,\s]+))?', line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def parse_device_categories(text: str) -> dict[str, str]:
    """``-device help`` -> {type: its category as QEMU groups them ("Network", "Storage", "USB", ...)}."""
    found: dict[str, str] = {}
    category = "Uncategorized"
    for line in text.splitlines():
        line = line.strip()
        heading = re.match(r"(.+?) devices:$", line)
        if heading:
            category = heading.group(1)
            continue
        match = re.match(r'name "([^"]+)"', line)
        if match:
            found[match.group(1)] = category
    return found


def parse_vmstate_dump(dump: dict[str, Any]) -> tuple[set[str], set[str]]:
    """A ``-dump-vmstate`` JSON -> (types with a state description, types whose description is empty).

    The keys are QOM class names; ``vmschkmachine`` (the machine type) is not a device."""
    stateful: set[str] = set()
    empty: set[str] = set()
    for name, entry in dump.items():
        if not isinstance(entry, dict) or "Description" not in entry:
            continue
        desc = entry["Description"] or {}
        (stateful if desc.get("Fields") or desc.get("Subsections") else empty).add(name)
    return stateful, empty


def section_names(dump: dict[str, Any]) -> dict[str, str]:
    """A ``-dump-vmstate`` JSON -> {QOM class: its state description's name} (the name QEMU's migration
    code uses for the device's section, the last part of a "non-migratable device" reason)."""
    return {name: str(entry["Description"].get("name", name)) for name, entry in dump.items()
            if isinstance(entry, dict) and isinstance(entry.get("Description"), dict)}


NON_MIGRATABLE = re.compile(r"non-migratable device:? '?([^'\s]+)'?")
BLOCKED = "migration blocked"  # the prefix of a blocked type's reason in ``unmigratable``


def attribute_blockers(reasons: Iterable[str], plugged: Iterable[str], ids: dict[str, str],
                       names: dict[str, str], children: dict[str, list[str]], also: Iterable[str] = ()
                       ) -> tuple[dict[str, str], list[str]]:
    """QEMU's migration blockers (``query-migrate``'s ``blocked-reasons``, or the error of a ``migrate``
    on QEMU < 6.0) -> ({type: the reason}, [reasons naming no type]).

    "non-migratable device: ID/NAME" (``ID/`` when the device has a bus address) names a state
    description that is marked unmigratable: every ``plugged`` or ``also`` type whose own description
    (``names``: class -> description name) or a child's (``children``) is NAME, or whose type is NAME,
    is blocked. Any other reason is a blocker a device added at realize: the plugged device whose id
    (``ids``: covN -> type) or type the text names."""
    blocked: dict[str, str] = {}
    rest: list[str] = []
    plugged = sorted(set(plugged))
    candidates = sorted(set(plugged) | set(also))
    for reason in reasons:
        found: list[str] = []
        match = NON_MIGRATABLE.search(reason)
        if match:
            parts = match.group(1).split("/")
            for i in range(len(parts)):
                section = "/".join(parts[i:])
                found = [t for t in candidates if section in (t, names.get(t))
                         or any(names.get(c) == section for c in children.get(t, []))]
                if found:
                    break
        else:
            found = [ids[i] for i in re.findall(r"\b(cov\d+)\b", reason) if ids.get(i) in plugged]
            found = found or [t for t in plugged if re.search(rf"(?<![\w.-]){re.escape(t)}(?![\w.-])", reason)]
        if not found:
            rest.append(reason)
        for name in found:
            blocked.setdefault(name, f"{BLOCKED} (QEMU: {reason})")
    return blocked, rest


def classify_state(offered: Iterable[str], stateful: set[str], empty: set[str],
                   children: dict[str, list[str]], broken: dict[str, str] | None = None
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """(migratable {type: how}, unmigratable {type: why}) of the offered types.

    ``children``: the child<...> property types of each offered type without a description of its own;
    ``broken``: types QEMU could not even instantiate (their reason): neither."""
    migratable: dict[str, str] = {}
    unmigratable: dict[str, str] = {}
    for name in sorted(offered):
        if name in stateful:
            migratable[name] = "own state"
        elif name in empty:
            unmigratable[name] = "empty state description (the device is unmigratable)"
        elif kids := [c for c in children.get(name, []) if c in stateful]:
            migratable[name] = f"state of its child {kids[0]}"
        elif broken and name in broken:
            continue
        elif kids := [c for c in children.get(name, []) if c in empty]:
            unmigratable[name] = f"its child {kids[0]} has an empty state description (unmigratable)"
    return migratable, unmigratable


def bus_available(bus: str | None, present: set[str], subtypes: dict[str, set[str]]) -> bool:
    """Whether a device needing ``bus`` (a bus type name from ``-device help``) finds one among the
    ``present`` bus types (concrete types seen in the QOM tree); ``subtypes``: bus type -> its subtypes."""
    if bus is None:
        return True
    return bool(({bus} | subtypes.get(bus, set())) & present)


def off_family(family: str, migratable: Iterable[str], buses: dict[str, str | None], present: set[str],
               subtypes: dict[str, set[str]], refused: dict[str, str],
               carriers: dict[str, list[str]] | None = None) -> dict[str, str]:
    """{type: reason} of the migratable types this family cannot take: no bus of the kind the type needs
    (or none with room: QEMU said "No 'B' bus found" when it was cold-plugged), or the machine refused it
    (``refused``: QEMU's words). A type that another migratable type carries as its child (``carriers``:
    virtio-net-device in virtio-net-pci) stays coverable through it when that one is on the family."""
    out: dict[str, str] = {}
    for name in sorted(migratable):
        bus = buses.get(name)
        why = refused.get(name, "")
        if not bus_available(bus, present, subtypes):
            out[name] = (f"not user-creatable on {family}: needs a '{bus}' bus; {family} has none, and none of "
                         "the devices cold-plugged on it added one")
        elif re.search(r"No '[^']+' bus found", why):
            out[name] = f"not user-creatable on {family}: no '{bus}' bus with room for it (QEMU: {why})"
        elif bus in ("System", None) and machine_refusal(why):
            out[name] = f"not user-creatable on {family}: {why}"
    for name in list(out):
        if any(c in migratable and c not in out for c in (carriers or {}).get(name, [])):
            del out[name]
    return out


def tree_types(nodes: dict[str, str]) -> set[str]:
    """The QOM types of a walked composition tree ({path: type})."""
    return set(nodes.values())


@dataclass(frozen=True)
class Exclusion:
    kind: str
    reason: str
    families: tuple[str, ...] = ()  # empty: every family

    def applies(self, family: str) -> bool:
        return not self.families or family in self.families


def load_exclusions(path: Path = EXCLUSIONS) -> dict[str, Exclusion]:
    """coverage_exclusions.toml -> {type: Exclusion}; CoverageError (file:line) on a malformed entry."""
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except OSError as exc:
        raise CoverageError(f"cannot read the exclusions: {exc.strerror}", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise CoverageError(f"malformed TOML: {exc}", path=path) from None
    out: dict[str, Exclusion] = {}
    for name, entry in data.get("devices", {}).items():
        line = next((n for n, t in enumerate(text.splitlines(), 1) if f'"{name}"' in t or f".{name}]" in t), None)
        kind, reason = entry.get("kind"), entry.get("reason")
        if kind not in EXCLUSION_KINDS:
            raise CoverageError(f"device {name}: kind {kind!r} is not one of {', '.join(EXCLUSION_KINDS)}",
                                path=path, line=line, hint="a device that only needs work is not excluded")
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason:
            raise CoverageError(f"device {name}: 'reason' must be one line", path=path, line=line)
        families = tuple(entry.get("families", ()))
        unknown = [f for f in families if not any(f in fams for fams in FAMILIES.values())]
        if unknown:
            raise CoverageError(f"device {name}: unknown family {', '.join(unknown)}", path=path, line=line,
                                hint="families: q35, pc, virt")
        out[name] = Exclusion(kind, reason.strip(), families)
    return out


@dataclass
class FamilyFacts:
    """What one family of one build offers and what the cases put on it."""

    family: str
    present_buses: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # type -> why QEMU refused it cold-plugged
    covered: dict[str, list[str]] = field(default_factory=dict)  # stateful type -> cases
    cases_skipped: dict[str, str] = field(default_factory=dict)  # case -> why it was not walked
    blocked: dict[str, str] = field(default_factory=dict)  # type -> QEMU's migration blocker for it
    blockers: str = ""  # how the blockers were asked, and what could not be attributed
    case_blocked: dict[str, str] = field(default_factory=dict)  # type -> blocker, seen in a case's QEMU
    seconds: float = 0.0


@dataclass
class BuildFacts:
    """What one binary offers (cached per binary content)."""

    binary: str
    key: str
    version: str
    arch: str
    buses: dict[str, str | None]  # offered (user-creatable, not CPU) type -> bus type
    categories: dict[str, str]  # offered type -> its -device help category
    stateful: list[str]  # every type with a non-empty state description (the dump)
    migratable: dict[str, str]
    unmigratable: dict[str, str]
    broken: dict[str, str]  # offered types QEMU cannot instantiate (e.g. a module this build lacks)
    carriers: dict[str, list[str]]  # a stateful child type -> the offered types that carry it
    bus_subtypes: dict[str, list[str]]
    families: dict[str, FamilyFacts]
    seconds: float = 0.0
    sections: dict[str, str] = field(default_factory=dict)  # class -> its state description's name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildFacts:
        fams = {k: FamilyFacts(**v) for k, v in data.pop("families").items()}
        return cls(**data, families=fams)


def family_result(build: BuildFacts, family: str, exclusions: dict[str, Exclusion]) -> dict[str, Any]:
    """The ``--json`` object of one build and family. ``migratable`` is what the family can take;
    ``not_on_family`` the build's other migratable types, each with the reason the build gave."""
    facts = build.families[family]
    subtypes = {k: set(v) for k, v in build.bus_subtypes.items()}
    blocked = {**facts.blocked, **facts.case_blocked}
    candidates = {t: how for t, how in build.migratable.items() if t not in blocked}
    covered = {t: cases for t, cases in sorted(facts.covered.items()) if t not in blocked}
    off = off_family(family, candidates, build.buses, set(facts.present_buses), subtypes,
                     facts.refused, build.carriers)
    off = {t: why for t, why in off.items() if t not in covered}  # a case has it: the family takes it
    migratable = sorted(t for t in candidates if t not in off)
    not_coverable = {}
    for name in migratable:
        rule = exclusions.get(name)
        if rule is not None and rule.applies(family) and name not in covered:
            not_coverable[name] = f"{rule.kind}: {rule.reason}"
    return {"build": build.version, "arch": build.arch, "family": family, "binary": build.binary,
            "migratable": migratable, "covered": covered, "not_coverable": not_coverable,
            "categories": {t: build.categories.get(t, "Uncategorized") for t in migratable},
            "not_on_family": off, "unmigratable": dict(sorted({**build.unmigratable, **blocked}.items())),
            "blockers": facts.blockers,
            "broken": dict(sorted(build.broken.items())),
            "cases_skipped": dict(sorted(facts.cases_skipped.items()))}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Counts of one ``--json`` object: offered, covered, not coverable, uncovered (names), percent."""
    offered = set(result["migratable"])
    covered = offered & set(result["covered"])
    excluded = (offered & set(result["not_coverable"])) - covered
    uncovered = sorted(offered - covered - excluded)
    target = len(offered) - len(excluded)
    return {"offered": len(offered), "covered": len(covered), "not_coverable": len(excluded),
            "uncovered": uncovered, "percent": 100.0 * len(covered) / target if target else 100.0}


def format_table(results: list[dict[str, Any]]) -> str:
    """The text output: a table per build, a row per family, then the uncovered names."""
    lines: list[str] = []
    by_build: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for result in results:
        by_build.setdefault((result["build"], result["arch"], result.get("binary", "")), []).append(result)
    for (version, arch, binary), rows in by_build.items():
        lines.append(f"QEMU {version} {arch} ({binary})")
        lines.append(f"  {'family':8} {'offered':>8} {'covered':>8} {'not cov.':>9} {'uncovered':>10} {'coverage':>9}"
                     f"   (not on the family / unmigratable)")
        for row in rows:
            s = summary(row)
            lines.append(f"  {row['family']:8} {s['offered']:>8} {s['covered']:>8} {s['not_coverable']:>9} "
                         f"{len(s['uncovered']):>10} {s['percent']:>8.1f}%   ({len(row.get('not_on_family', {}))} / "
                         f"{len(row.get('unmigratable', {}))})")
        for row in rows:
            s = summary(row)
            if "not attributed" in row.get("blockers", "") or "stopped" in row.get("blockers", ""):
                lines.append(f"  migration blockers on {row['family']}: {row['blockers']}")
            if s["uncovered"]:
                lines.append(f"  uncovered on {row['family']} ({len(s['uncovered'])}), by -device help's category:")
                groups: dict[str, list[str]] = {}
                for name in s["uncovered"]:
                    groups.setdefault(row.get("categories", {}).get(name, "Uncategorized"), []).append(name)
                for category, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                    lines.append(f"    {category} ({len(names)}): {' '.join(names)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def headline(results: list[dict[str, Any]]) -> str:
    """``7.2.22 q35 N/M (P%), pc ..., virt ...`` per build, builds separated by '; ' (M: offered less not
    coverable)."""
    parts: dict[str, list[str]] = {}
    for row in results:
        s = summary(row)
        target = s["offered"] - s["not_coverable"]
        parts.setdefault(row["build"], []).append(f"{row['family']} {s['covered']}/{target} ({s['percent']:.0f}%)")
    return "; ".join(f"{build} " + ", ".join(items) for build, items in parts.items())


# --- talking to the build ---------------------------------------------------------------------------

def binary_key(binary: Path) -> str:
    """The cache key of a binary: its content; for a script (a build's wrapper), also the version the
    QEMU behind it reports."""
    data = binary.read_bytes()
    digest = hashlib.sha256(data)
    if data.startswith(b"#!"):
        digest.update(_run_qemu(binary, ["--version"]).encode())
    return digest.hexdigest()[:24]


def _run_qemu(binary: Path, args: list[str], timeout: float = 30.0) -> str:
    try:
        proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CoverageError(f"cannot run it: {exc}", path=binary) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CoverageError(f"{' '.join(args)} failed: {last}", path=binary)
    return proc.stdout


def dump_vmstate(binary: Path, machine: str, folder: Path) -> dict[str, Any]:
    """``-M MACHINE -dump-vmstate FILE`` -> the JSON (class-level: one per build and family)."""
    out = folder / f"vmstate-{machine}.json"
    _run_qemu(binary, ["-M", machine, "-nodefaults", "-display", "none", "-dump-vmstate", str(out)])
    try:
        return json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        raise CoverageError(f"-dump-vmstate wrote no JSON: {exc}", path=binary) from None


def paused(binary: Path, machine: str, folder: Path, extra: list[str] | None = None, name: str = "coverage"
           ) -> QemuProcess:
    """A started, paused ``-M MACHINE -nodefaults`` QEMU (TCG, no display) with QMP connected; raises
    LaunchFailed when QEMU refuses its command line."""
    args = ["-M", machine, "-nodefaults", "-S", "-display", "none", "-accel", "tcg", *(extra or [])]
    qemu = QemuProcess(binary, args, folder, name=name, qmp_timeout=START_TIMEOUT)
    qemu.start()
    try:
        _ = qemu.qmp
    except BaseException:
        qemu.stop()
        raise
    return qemu


def walk_tree(session: QmpSession, root: str = "/machine") -> dict[str, str]:
    """The QOM composition tree under ``root``: {path: type}, one pipelined ``qom-list`` per level."""
    nodes: dict[str, str] = {}
    level = [root]
    while level:
        replies = session.cmd_many([("qom-list", {"path": p}) for p in level])
        nxt = []
        for path, reply in zip(level, replies, strict=True):
            if isinstance(reply, QmpCommandFailed):
                continue
            for prop in reply:
                kind = str(prop.get("type", ""))
                if not kind.startswith("child<"):
                    continue
                child_type = kind[len("child<"):-1]
                if child_type in SKIP_CHILD_TYPES:
                    continue
                child = f"{path.rstrip('/')}/{prop['name']}"
                nodes[child] = child_type
                nxt.append(child)
        level = nxt
    return nodes


def _children(binary: Path, machine: str, folder: Path, names: list[str]
              ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """child<...> types of each named type (``device-list-properties``, which loads a module type's
    module where ``qom-list-properties`` does not), and the types that crash QEMU when
    instantiated ({type: QEMU's last line}); one QEMU, started again after a crash."""
    children: dict[str, list[str]] = {}
    broken: dict[str, str] = {}
    todo = list(names)
    while todo:
        qemu = paused(binary, machine, folder / "props", name="coverage device-list-properties")
        try:
            while todo:
                name = todo[0]
                try:
                    props = qemu.qmp.cmd("device-list-properties", typename=name, timeout=10)
                except QmpCommandFailed as exc:
                    broken[name] = exc.desc
                    todo.pop(0)
                    continue
                except QmpMonitorGone:
                    qemu.wait(2)
                    broken[name] = (qemu.stderr_tail(1).strip() or qemu.exit.describe())
                    todo.pop(0)
                    break
                children[name] = [str(p["type"])[6:-1] for p in props if str(p.get("type", "")).startswith("child<")]
                todo.pop(0)
        finally:
            qemu.stop()
    return children, broken


def _plug_args(plugged: list[str], wanted: list[str], buses: dict[str, str | None], root_bus: str | None,
               placement: dict[str, str] | None = None) -> dict[str, list[str]]:
    """One ``-device`` per type, id ``covN`` (N: its place in ``wanted``, stable across rounds); PCI ones
    each at their own function of the root bus, a type with a ``placement`` on that bus (``AUDIO``: its
    own silent audio backend)."""
    specs: dict[str, list[str]] = {}
    slot_fn = 0
    for name in plugged:
        spec = f"{name},id=cov{wanted.index(name)}"
        backend = next((b for prefix, b in PLUG_BACKENDS.items() if name.startswith(prefix)), None)
        objects: list[str] = []
        if backend:
            props, obj = backend
            spec += "," + props.format(n=wanted.index(name))
            objects = ["-object", obj.format(n=wanted.index(name))] if obj else []
        if buses.get(name) == "PCI" and root_bus:
            slot, fn = divmod(slot_fn, 8)
            slot_fn += 1
            if slot + 2 <= 0x1e:
                spec += f",bus={root_bus},addr={slot + 2:#x}.{fn}" + (",multifunction=on" if fn == 0 else "")
        elif placement and name in placement and placement[name] != AUDIO:
            spec += f",bus={placement[name]}"
        if placement and placement.get(name) == AUDIO:
            spec += f",audiodev=covaudio{wanted.index(name)}"
            objects = ["-audiodev", f"none,id=covaudio{wanted.index(name)}"]
        specs[name] = [*objects, "-device", spec]
    return specs


AUDIO = "<audiodev>"  # a placement: a sound device refused for want of an audio backend gets its own
AUDIO_REFUSAL = re.compile(r"no default audio driver")  # QEMU 10.0 picks none without -audiodev


# What a few types need to be cold-plugged at all, so that the build can be asked whether they block
# migration ({type prefix: (properties, an -object or "")}; {n}: the type's covN number). The answer
# still comes from the build; a type refused for want of another backend is asked only in the cases.
PLUG_BACKENDS: dict[str, tuple[str, str]] = {
    "usb-mtp": ("rootdir=/tmp,readonly=on", ""),
    "virtio-crypto-": ("cryptodev=covcrypto{n}", "cryptodev-backend-builtin,id=covcrypto{n}"),
}


def _starts(binary: Path, machine: str, folder: Path, specs: list[list[str]]) -> bool:
    try:
        qemu = paused(binary, machine, folder, [a for spec in specs for a in spec], name="coverage cold-plug")
    except LaunchFailed:
        return False
    qemu.stop()
    return True


def _cold_plug_round(binary: Path, machine: str, folder: Path, wanted: list[str], buses: dict[str, str | None],
                     root_bus: str | None, refused: dict[str, str], placement: dict[str, str],
                     blockers: list[str] | None = None) -> dict[str, str]:
    """Start the family with every ``wanted`` type cold-plugged; each type QEMU refuses is recorded in
    ``refused`` and dropped, and QEMU started again. QEMU names the device it refuses, except when it
    aborts (two VGA devices: "RAMBlock vga.vram already registered"): then the first prefix of the
    command line that fails is found by bisection, and its last device is the one. Returns the family's
    QOM tree ({path: type}) once it starts; ``blockers`` (QEMU 6.0+) is filled with that QEMU's
    ``query-migrate`` blocked-reasons."""
    plugged = [t for t in wanted if t not in refused]
    while True:
        specs = list(_plug_args(plugged, wanted, buses, root_bus, placement).values())
        try:
            qemu = paused(binary, machine, folder / "plug", [a for spec in specs for a in spec],
                          name="coverage cold-plug")
        except LaunchFailed as exc:
            culprit = _culprit(exc.stderr_tail, wanted)
            if culprit not in plugged:
                low, high = 1, len(specs)  # specs[:high] fails
                while low < high:
                    mid = (low + high) // 2
                    if _starts(binary, machine, folder / "bisect", specs[:mid]):
                        low = mid + 1
                    else:
                        high = mid
                culprit = plugged[low - 1]
            why = _reason(exc.stderr_tail, culprit)
            if AUDIO_REFUSAL.search(exc.stderr_tail) and placement.get(culprit) != AUDIO:
                placement[culprit] = AUDIO  # started again with a silent backend of its own
                continue
            refused[culprit] = why
            placement.pop(culprit, None)
            plugged.remove(culprit)
            continue
        try:
            if blockers is not None:
                blockers[:] = _blocked_reasons(qemu, "query-migrate")
            return walk_tree(qemu.qmp)
        finally:
            qemu.stop()


MIGRATE_TO_NOWHERE = "exec:cat > /dev/null"
MAX_BLOCKER_STEPS = 8  # QEMU < 6.0: one migrate per blocker, each on a QEMU started again without it


def _blocked_reasons(qemu: QemuProcess, how: str) -> list[str]:
    """A paused QEMU's migration blockers: all of them (``query-migrate``, QEMU 6.0+), or the first one,
    the error of a ``migrate`` to nowhere (older QEMU: it fails at once on a blocker)."""
    if how == "query-migrate":
        return [str(r) for r in qemu.qmp.cmd("query-migrate").get("blocked-reasons", [])]
    try:
        qemu.qmp.cmd("migrate", uri=MIGRATE_TO_NOWHERE, timeout=10)
    except QmpCommandFailed as exc:
        return [exc.desc]
    return []


def _ask_blockers(binary: Path, machine: str, folder: Path, specs: list[list[str]], how: str) -> list[str] | None:
    """The blockers of the family with these devices cold-plugged; None when it does not start."""
    try:
        qemu = paused(binary, machine, folder, [a for spec in specs for a in spec], name="coverage blockers")
    except LaunchFailed:
        return None
    try:
        return _blocked_reasons(qemu, how)
    finally:
        qemu.stop()


def find_blockers(binary: Path, machine: str, folder: Path, plugged: list[str], wanted: list[str],
                  buses: dict[str, str | None], root_bus: str | None, placement: dict[str, str],
                  candidates: list[str], names: dict[str, str], children: dict[str, list[str]], how: str,
                  first: list[str] | None = None) -> tuple[dict[str, str], str]:
    """({type: QEMU's reason} of the cold-plugged types that block migration, and a line saying how they
    were asked and what was not attributed). ``first``: the blockers the last cold-plug round's QEMU
    already reported (query-migrate). A reason that names no device is attributed to the last device of
    the shortest prefix of the command line that has it (bisection); one the bare machine has too is the
    machine's own."""
    ids = {f"cov{wanted.index(t)}": t for t in plugged}
    blocked: dict[str, str] = {}
    unattributed: list[str] = []
    remaining = list(plugged)
    steps = 0
    while True:
        specs = list(_plug_args(remaining, wanted, buses, root_bus, placement).values())
        reasons = first if first is not None and steps == 0 else _ask_blockers(binary, machine, folder / "ask",
                                                                               specs, how)
        steps += 1
        reasons = [r for r in reasons or [] if r not in unattributed]
        if not reasons:
            break
        found, rest = attribute_blockers(reasons, remaining, ids, names, children, candidates)
        for reason in rest:
            culprit = _bisect_blocker(binary, machine, folder / "bisect", remaining, specs, reason, how)
            if culprit is None:
                unattributed.append(reason)
            else:
                found.setdefault(culprit, f"{BLOCKED} (QEMU: {reason})")
        blocked.update(found)
        remaining = [t for t in remaining if t not in found]
        if how == "query-migrate" or steps >= MAX_BLOCKER_STEPS or not found:
            break
    note = ("query-migrate blocked-reasons" if how == "query-migrate"
            else f"migrate to nowhere, one blocker at a time ({steps} QEMU starts)")
    if how != "query-migrate" and steps >= MAX_BLOCKER_STEPS:
        note += f"; stopped after {MAX_BLOCKER_STEPS} starts: more blockers may remain"
    if unattributed:
        note += "; not attributed to a device: " + " | ".join(unattributed)
    return blocked, note


def _bisect_blocker(binary: Path, machine: str, folder: Path, plugged: list[str], specs: list[list[str]],
                    reason: str, how: str) -> str | None:
    """The last device of the shortest prefix of ``specs`` whose QEMU reports ``reason`` (with ``migrate``,
    which reports one blocker: any); None when the bare machine reports it too (the machine's own)."""
    def has(prefix: list[list[str]]) -> bool:
        got = _ask_blockers(binary, machine, folder, prefix, how) or []
        return reason in got if how == "query-migrate" else bool(got)

    if has([]):
        return None
    low, high = 1, len(specs)  # specs[:high] has it
    while low < high:
        mid = (low + high) // 2
        if has(specs[:mid]):
            high = mid
        else:
            low = mid + 1
    return plugged[low - 1]


NOT_ABOUT_THE_BUS = re.compile(r"propert|must|missing|mandatory|required|not set|specify|expects|chardev|drive|"
                               r"memdev|netdev|No '[^']+' bus found", re.IGNORECASE)
MAX_OTHER_BUSES = 8  # buses of one kind a refused device is tried on


def _retry_elsewhere(binary: Path, machine: str, folder: Path, wanted: list[str], buses: dict[str, str | None],
                     root_bus: str | None, refused: dict[str, str], placement: dict[str, str],
                     nodes: dict[str, str], subtypes: dict[str, set[str]]) -> set[str]:
    """A device QEMU refused on the bus it picked for it (the first of its kind: a full-speed USB device on
    an EHCI port) is tried on the other buses of that kind, each in a machine with only that bus's
    provider; where it starts, it keeps that bus (``placement``) and leaves ``refused``. A refusal that
    names a missing property or backend is not about the bus and is not retried. Returns the types of
    the trees of the machines that started."""
    plugged = [t for t in wanted if t not in refused]
    specs = _plug_args(plugged, wanted, buses, root_bus, placement)
    found: set[str] = set()
    for name, why in sorted(refused.items()):
        bus = buses.get(name)
        if bus in (None, "System", "PCI") or NOT_ABOUT_THE_BUS.search(why):
            continue
        kinds = {bus} | subtypes.get(bus, set())
        options = []
        for path, kind in sorted(nodes.items()):
            parts = path.split("/")  # /machine/peripheral/covN/BUS: a bus of a device we plugged
            if kind in kinds and len(parts) == 5 and parts[2] == "peripheral" and parts[3].startswith("cov"):
                provider = wanted[int(parts[3][3:])]
                if provider in specs and buses.get(provider) == "PCI":
                    options.append((specs[provider], parts[4]))
        for provider_spec, bus_name in options[:MAX_OTHER_BUSES]:
            try:
                qemu = paused(binary, machine, folder / "retry",
                              [*provider_spec, "-device", f"{name},id=retry,bus={bus_name}"], name="coverage retry")
            except LaunchFailed:
                continue
            try:
                found |= set(walk_tree(qemu.qmp).values())
            finally:
                qemu.stop()
            placement[name] = bus_name
            del refused[name]
            break
    return found


def _culprit(stderr: str, plugged: list[str]) -> str | None:
    """The device a QEMU start-up error names: ``-device TYPE,id=covN...: why`` (N: its place in
    ``plugged``), or a quoted type."""
    for line in reversed(stderr.splitlines()):
        match = re.search(r"id=cov(\d+)\b", line)
        if match and int(match.group(1)) < len(plugged):
            return plugged[int(match.group(1))]
        quoted = [t for t in re.findall(r"'([^']+)'", line) if t in plugged]
        if quoted:
            return quoted[0]
        words = re.findall(r"-device ([^,\s:'\"]+)", line)
        if words and words[0] in plugged:
            return words[0]
    return None


def _reason(stderr: str, culprit: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning:" not in line]
    last = lines[-1] if lines else "refused"
    last = re.sub(r"^\S*qemu-system-\S+: ", "", last)
    return re.sub(r"^-device [^:]*: ", "", last).strip()


def machine_refusal(reason: str) -> bool:
    """QEMU's words for a system-bus device this machine does not take."""
    return any(words in reason for words in ("cannot be handled by this machine", "not supported by this machine",
                                             "dynamic sysbus device type for the machine"))


def probe_family(binary: Path, family: str, folder: Path, migratable: list[str], buses: dict[str, str | None],
                 subtypes: dict[str, set[str]], names: dict[str, str] | None = None,
                 children: dict[str, list[str]] | None = None, how: str = "query-migrate") -> FamilyFacts:
    """The buses of a family, bare and after cold-plugging its migratable types in rounds, the
    system-bus types its machine refuses, and the cold-plugged types that block migration (``how``:
    "query-migrate" on QEMU 6.0+, else "migrate"; ``names`` and ``children`` map a blocker to types)."""
    started = time.monotonic()
    facts = FamilyFacts(family)
    qemu = paused(binary, family, folder / "bare", name=f"coverage {family}")
    try:
        nodes = walk_tree(qemu.qmp)
        bus_types = {t["name"] for t in qemu.qmp.cmd("qom-list-types", implements="bus", abstract=True)}
    finally:
        qemu.stop()
    present = {t for t in nodes.values() if t in bus_types}
    pci_like = {"PCI"} | subtypes.get("PCI", set())
    root_bus = next((p.rsplit("/", 1)[1] for p, t in sorted(nodes.items(), key=lambda kv: kv[0].count("/"))
                     if t in pci_like), None)
    refused: dict[str, str] = {}
    placement: dict[str, str] = {}  # type -> the bus it takes where QEMU's own pick refused it
    wanted: list[str] = []  # in the order their bus appeared: a bus's provider comes before its users
    nodes = {}
    asked: list[str] = []  # the last round's query-migrate blocked-reasons
    last_plugged: list[str] = []
    for _ in range(MAX_ROUNDS):
        new = [t for t in migratable if t not in wanted and bus_available(buses.get(t), present, subtypes)]
        if not new and nodes:
            present |= {t for t in _retry_elsewhere(binary, family, folder, wanted, buses, root_bus, refused,
                                                    placement, nodes, subtypes) if t in bus_types}
            new = [t for t in migratable if t not in wanted and bus_available(buses.get(t), present, subtypes)]
        if not new:
            break
        wanted += new
        nodes = _cold_plug_round(binary, family, folder, wanted, buses, root_bus, refused, placement,
                                 asked if how == "query-migrate" else None)
        last_plugged = [t for t in wanted if t not in refused]
        present |= {t for t in nodes.values() if t in bus_types}
    facts.present_buses = sorted(present)
    facts.refused = refused
    plugged = [t for t in wanted if t not in refused]  # a retry elsewhere may have placed more since
    first = asked if how == "query-migrate" and plugged == last_plugged else None
    facts.blocked, facts.blockers = find_blockers(binary, family, folder, plugged, wanted, buses, root_bus,
                                                  placement, migratable, names or {}, children or {}, how, first)
    facts.seconds = round(time.monotonic() - started, 2)
    return facts


def probe_build(binary: Path, folder: Path, say: Say) -> BuildFacts:
    """Everything the build says about its devices, per family (not the cases)."""
    started = time.monotonic()
    help_text = _run_qemu(binary, ["-display", "none", "-device", "help"])
    buses = parse_device_help(help_text)
    qemu = paused(binary, "none", folder / "none", name="coverage types")
    try:
        version = qemu.qmp.cmd("query-version")
        arch = str(qemu.qmp.cmd("query-target")["arch"])
        cpus = {t["name"] for t in qemu.qmp.cmd("qom-list-types", implements="cpu", abstract=False)}
        bus_names = sorted({b for b in buses.values() if b})
        replies = qemu.qmp.cmd_many([("qom-list-types", {"implements": b, "abstract": True}) for b in bus_names])
    finally:
        qemu.stop()
    q = version["qemu"]
    version_text = f"{q['major']}.{q['minor']}.{q['micro']}"
    subtypes = {b: {t["name"] for t in r} for b, r in zip(bus_names, replies, strict=True)
                if not isinstance(r, QmpCommandFailed)}
    buses = {t: b for t, b in buses.items() if t not in cpus}
    categories = {t: c for t, c in parse_device_categories(help_text).items() if t in buses}
    families = FAMILIES.get(arch)
    if not families:
        raise CoverageError(f"QEMU {version_text} is for {arch}: coverage knows the families of "
                            f"{', '.join(FAMILIES)} only", path=binary)
    stateful: set[str] = set()
    empty: set[str] = set()
    names: dict[str, str] = {}
    for family in families:
        dump = dump_vmstate(binary, family, folder)
        s, e = parse_vmstate_dump(dump)
        stateful |= s
        empty |= e
        names.update(section_names(dump))
    need_children = sorted(t for t in buses if t not in stateful and t not in empty)
    children, broken = _children(binary, families[0], folder, need_children)
    migratable, unmigratable = classify_state(buses, stateful, empty, children, broken)
    carriers: dict[str, list[str]] = {}
    for name, kids in sorted(children.items()):
        for kid in kids:
            if name in migratable and kid in stateful:
                carriers.setdefault(kid, []).append(name)
    say(f"  QEMU {version_text} {arch}: {len(buses)} user-creatable device types, {len(migratable)} migratable, "
        f"{len(unmigratable)} unmigratable")
    how = "query-migrate" if int(q["major"]) >= 6 else "migrate"  # blocked-reasons: QEMU 6.0+
    fams = {}
    for family in families:
        fams[family] = probe_family(binary, family, folder / family, sorted(migratable), buses, subtypes,
                                    names, children, how)
        say(f"  {family}: buses {', '.join(fams[family].present_buses)}; "
            f"{len(fams[family].blocked)} block migration ({fams[family].seconds:.1f} s)")
    return BuildFacts(str(binary), "", version_text, arch, buses, categories, sorted(stateful), migratable,
                      unmigratable, broken, carriers, {k: sorted(v) for k, v in subtypes.items()}, fams,
                      round(time.monotonic() - started, 2), names)


# --- the cases ----------------------------------------------------------------------------------------

def case_types(binary: Path, build: BuildFacts, folder: Path, say: Say, *, cases: list[str] | None = None,
               cache: dict[str, Any] | None = None) -> None:
    """Fill each family's ``covered`` and ``cases_skipped``: every case that boots on the family, prepared
    as the boot stage prepares it, started paused, its QOM tree walked and its migration blockers asked
    (QEMU 6.0+). A case whose QEMU reports a blocker does not migrate: its types are not covered by it,
    and the types the blocker names go to the family's ``case_blocked``. ``cache``: {argv hash: {"types":
    [...], "blockers": [...]}}."""
    from conformance.caps.probe import probe_binary
    from conformance.cases import load_catalogue
    from conformance.live.accel import AccelDecision
    from conformance.live.adapt import NeedsHardware
    from conformance.live.boot import Target, boot_skip, prepare_vm
    from conformance.live.guest import build_guest

    cache = cache if cache is not None else {}
    catalogue = load_catalogue()
    caps = probe_binary(binary)
    try:
        guest = build_guest(caps.arch, log=lambda m: None)
        problem = ""
    except ConformanceError as exc:  # the cases are then not walked, each saying why
        guest, problem = None, exc.message
    target = Target(binary, caps, AccelDecision("tcg", "coverage: the machine stays paused"), guest, problem)
    stateful = set(build.stateful) | set(build.migratable)
    selected = catalogue.select(cases) if cases else list(catalogue.cases.values())
    children: dict[str, list[str]] = {}
    for kid, carriers in build.carriers.items():
        for carrier in carriers:
            children.setdefault(carrier, []).append(kid)
    ask = int(build.version.split(".")[0]) >= 6  # query-migrate has blocked-reasons since 6.0
    for family, facts in build.families.items():
        facts.covered, facts.cases_skipped, facts.case_blocked = {}, {}, {}
        for case in selected:
            if case.machine_for(build.arch) != family:
                continue
            skip = boot_skip(case, target)
            if skip:
                facts.cases_skipped[case.name] = skip
                continue
            vm_dir = folder / "cases" / case.name
            vm_dir.mkdir(parents=True, exist_ok=True)
            try:
                prepared = prepare_vm(case, target, catalogue, folder, vm_dir)
            except NeedsHardware as exc:
                facts.cases_skipped[case.name] = exc.message
                continue
            except ConformanceError as exc:
                facts.cases_skipped[case.name] = f"cannot prepare it: {exc.message}"
                continue
            argv = prepared.live.argv[1:]
            key = hashlib.sha256(json.dumps(argv).encode()).hexdigest()
            seen = cache.get(key)
            if not isinstance(seen, dict):
                try:
                    qemu = QemuProcess(binary, argv, vm_dir / "qemu", name=f"coverage {case.name}",
                                       qmp_timeout=START_TIMEOUT)
                    qemu.start()
                    try:
                        seen = {"types": sorted(tree_types(walk_tree(qemu.qmp))),
                                "blockers": _blocked_reasons(qemu, "query-migrate") if ask else []}
                    finally:
                        qemu.stop()
                except (LiveError, QmpError) as exc:
                    facts.cases_skipped[case.name] = f"QEMU did not start paused: {exc.message}"
                    continue
                cache[key] = seen
            types, reasons = seen["types"], seen["blockers"]
            if reasons:
                found, _rest = attribute_blockers(reasons, types, {}, build.sections, children,
                                                 [t for t in build.migratable if t in types])
                for name, why in found.items():
                    facts.case_blocked.setdefault(name, f"{why} in case {case.name}")
                facts.cases_skipped[case.name] = "its migration is blocked: " + " | ".join(reasons)
                continue
            for name in types:
                if name in stateful:
                    facts.covered.setdefault(name, []).append(case.name)


# --- the whole measurement, cached ------------------------------------------------------------------

def coverage_for(binary: Path, say: Say = lambda _m: None, *, use_cache: bool = True,
                 cache_root: Path | None = None) -> BuildFacts:
    """A binary's facts with its cases' coverage, from the cache when the binary and argvs are unchanged.
    One process at a time per binary (a lock file beside the cache entry): runs on one machine (shards,
    pytest workers) share the entry and the cases' folders."""
    root = (cache_root or cache_dir()) / "coverage"
    root.mkdir(parents=True, exist_ok=True)
    key = binary_key(binary)
    path = root / f"{key}.json"
    with open(root / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build: BuildFacts | None = None
        case_cache: dict[str, Any] = {}
        if use_cache and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("format") == CACHE_FORMAT and data.get("code") == CODE_KEY:
                    build = BuildFacts.from_json(data["build"])
                    case_cache = dict(data.get("cases", {}))
            except (OSError, ValueError, TypeError, KeyError):
                build = None
        with tempfile.TemporaryDirectory(prefix="qemu-conformance-coverage-") as tmp:
            if build is None:
                say(f"{binary}: asking the build (cached afterwards)")
                build = probe_build(binary, Path(tmp), say)
            build.binary, build.key = str(binary), key
            case_folder = root / "vms" / key  # a stable folder: the argv (its paths) is the cache key
            case_folder.mkdir(parents=True, exist_ok=True)
            case_types(binary, build, case_folder, say, cache=case_cache)
        with tempfile.NamedTemporaryFile("w", dir=root, prefix=f"{key}.", suffix=".tmp", delete=False) as out:
            json.dump({"format": CACHE_FORMAT, "code": CODE_KEY, "build": build.to_json(), "cases": case_cache}, out)
        Path(out.name).replace(path)
    return build


def measure(binaries: list[Path], say: Say = lambda _m: None, *, use_cache: bool = True,
            cache_root: Path | None = None) -> list[dict[str, Any]]:
    """The ``--json`` list for these binaries: one object per build and family."""
    exclusions = load_exclusions()
    results = []
    for binary in binaries:
        build = coverage_for(binary, say, use_cache=use_cache, cache_root=cache_root)
        results += [family_result(build, family, exclusions) for family in build.families]
    return results


def default_binaries() -> list[Path]:
    """The host's qemu-system-x86_64 and -aarch64, then the prepared builds' (``builds list``)."""
    import shutil

    from conformance.builds import list_builds

    found = [Path(p) for p in (shutil.which("qemu-system-x86_64"), shutil.which("qemu-system-aarch64")) if p]
    for info in list_builds():
        for arch in info.get("arches", []):
            wrapper = Path(info["path"]) / "bin" / f"qemu-system-{arch}"
            if wrapper.is_file():
                found.append(wrapper)
    return found


def write_coverage(results: list[dict[str, Any]], output: Path) -> Path:
    """OUTPUT/coverage.json, read by the report's coverage panel."""
    path = output / "coverage.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path
