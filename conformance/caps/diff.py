"""What capabilities B gained and lost against A, among the facts both fixtures record.

A release qualification diffs a freshly probed build against the stored
fixture of the same version (anything a user would miss is a regression) and
against the newest stored older version (what changed since).

Only facts both fixtures record are compared (``Capabilities.records``): a
probed fixture and one imported from libvirt's caps XML hold different facts
(libvirt names only the QOM types and commands it has flags for; its flags
include many our rules do not derive), so a fact one of them cannot hold is
left out of the comparison and ``CapsDiff.not_compared`` says how many and
why, one line per kind.

A loss is *loud* when a user of A would miss it: a device or object, a
property, a QMP command, a capability flag, or a machine type removed without
deprecation. Machine types A marked deprecated, or old enough for QEMU's
deprecation policy (versioned machine types are deprecated after 3 years and
removed after 6), and lost events, migration capabilities and CPU models are
reported but quiet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conformance.caps.model import Capabilities, QemuVersion

# the sections compared, in the order they are reported; schema facts are not a section of their own:
# they are exactly the queries of the flag rules, so the flags say the same
SECTIONS: tuple[str, ...] = (
    "machine types", "devices and objects", "properties", "commands", "events", "migration capabilities",
    "cpu models", "flags", "option members",
)
# sections where any lost fact is loud (machine types: unless deprecated)
LOUD_SECTIONS = frozenset({"machine types", "devices and objects", "properties", "commands", "flags",
                           "option members"})
_NOUNS: dict[str, tuple[str, str]] = {
    "machine types": ("machine type", "machine types"),
    "devices and objects": ("device", "devices"),
    "properties": ("property", "properties"),
    "commands": ("QMP command", "QMP commands"),
    "events": ("QMP event", "QMP events"),
    "migration capabilities": ("migration capability", "migration capabilities"),
    "cpu models": ("CPU model", "CPU models"),
    "flags": ("capability flag", "capability flags"),
    "option members": ("QAPI member", "QAPI members"),  # of -netdev/-blockdev/-chardev: netdev:stream.reconnect-ms
}

# QEMU's deprecation policy for versioned machine types (docs/about/deprecated.rst): deprecated after 3 years,
# removed after 6
POLICY_REMOVAL_YEARS = 6
_VERSIONED_MACHINE_RE = re.compile(r"^(?P<family>.+?)-(?P<version>\d+\.\d+(?:\.\d+)?)$")


def release_year(version: QemuVersion) -> float:
    """Roughly when a QEMU release came out, as a fractional year (good to a few months).

    QEMU releases three times a year since 2.x (April, August, December); 4.0 came out in April 2019.
    """
    major, minor = version.major, version.minor
    if major >= 4:
        return 2015.3 + major + minor / 3
    if major == 3:
        return 2018.6 + minor / 3
    if major == 2:
        return 2014.3 + minor / 3
    if major == 1:
        return 2011.9 + minor * 0.3
    return 2003.0 + minor * 0.5


def _machine_version(name: str) -> tuple[str, QemuVersion] | None:
    m = _VERSIONED_MACHINE_RE.match(name)
    if not m:
        return None
    try:
        return m["family"], QemuVersion.parse(m["version"])
    except ValueError:
        return None


def policy_removed(machine: str, newer: QemuVersion) -> bool:
    """A versioned machine type (``pc-i440fx-2.4``, ``virt-3.0``) older than the deprecation policy's removal
    age when ``newer`` came out."""
    parsed = _machine_version(machine)
    return parsed is not None and release_year(parsed[1]) < release_year(newer) - POLICY_REMOVAL_YEARS


def machine_runs(names: list[str] | set[str], universe: set[str]) -> list[str]:
    """Machine type names as a person lists them: runs of one family's versions as ``first ... last``.

    A run is consecutive in ``universe`` (all machine types of both fixtures), so ``pc-i440fx-2.4 ... 3.0``
    means every pc-i440fx version between those two. Unversioned names are listed as they are.
    """
    chosen = set(names)
    families: dict[str, list[tuple[QemuVersion, str]]] = {}
    plain = []
    for name in universe | chosen:
        parsed = _machine_version(name)
        if parsed is None:
            if name in chosen:
                plain.append(name)
        else:
            families.setdefault(parsed[0], []).append((parsed[1], name))
    runs: list[str] = []
    for family in sorted(families):
        run: list[str] = []
        for _, name in [*sorted(families[family]), (None, None)]:
            if name in chosen:
                run.append(name)
                continue
            if run:
                first, last = run[0], run[-1]
                tail = last.removeprefix(family + "-")
                runs.append(first if len(run) == 1 else f"{first}, {tail}" if len(run) == 2 else f"{first} ... {tail}")
            run = []
    return runs + sorted(plain)


@dataclass
class CapsDiff:
    a: str
    b: str
    # section -> (gained, lost), each sorted; only facts both fixtures record
    sections: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    # section -> lost fact -> why it is quiet ("deprecated", "deprecation policy"); whole quiet sections are absent
    quiet: dict[str, dict[str, str]] = field(default_factory=dict)
    # one line per kind of fact left out of the comparison, saying how many and why
    not_compared: list[str] = field(default_factory=list)
    # section -> how many facts (of either fixture) were left out
    not_compared_counts: dict[str, int] = field(default_factory=dict)
    a_version: QemuVersion | None = None
    b_version: QemuVersion | None = None
    a_arch: str = ""
    b_arch: str = ""
    # every machine type name of both fixtures (for grouping runs)
    machine_universe: set[str] = field(default_factory=set)

    @property
    def lost_anything(self) -> bool:
        """B lacks something A had (loud or quiet)."""
        return any(lost for _, lost in self.sections.values())

    @property
    def changed(self) -> bool:
        return any(gained or lost for gained, lost in self.sections.values())

    @property
    def loud_losses(self) -> dict[str, list[str]]:
        """section -> the lost facts a user of A would miss."""
        loud = {}
        for name, (_, lost) in self.sections.items():
            if name not in LOUD_SECTIONS:
                continue
            quiet = self.quiet.get(name, {})
            items = [item for item in lost if item not in quiet]
            if items:
                loud[name] = items
        return loud

    @property
    def regressed(self) -> bool:
        """B lost something a user of A would miss."""
        return bool(self.loud_losses)

    def _prefix(self) -> str:
        if self.a_version is None or self.b_version is None:
            return f"{self.b} against {self.a}"
        a = f"{self.a_version}{f' {self.a_arch}' if self.a_arch != self.b_arch else ''}"
        if self.b_version > self.a_version:
            return f"since {a}"
        if self.b_version == self.a_version:
            return f"against {a}"
        return f"back to {self.b_version} from {a}"

    def summary(self, prefix: str | None = None) -> str:
        """The drift in one line, e.g. ``since 10.0.2: 10 machine types removed (pc-i440fx-2.4 ... 3.0,
        deprecated), 12 devices added, 3 QMP commands added``."""
        parts = []
        for name, (gained, lost) in self.sections.items():
            one, many = _NOUNS.get(name, (name, name))

            def count(n: int, one: str = one, many: str = many) -> str:
                return f"{n} {one if n == 1 else many}"

            if name == "machine types":
                quiet = self.quiet.get(name, {})
                deprecated = [m for m in lost if m in quiet]
                loud = [m for m in lost if m not in quiet]
                if loud:
                    parts.append(f"{count(len(loud))} removed ({self._machines(loud)}; not deprecated in "
                                 f"{self.a_version or self.a})")
                if deprecated:
                    parts.append(f"{count(len(deprecated))} removed ({self._machines(deprecated)}, deprecated)")
                if gained:
                    parts.append(f"{count(len(gained))} added ({self._machines(gained)})")
                continue
            if lost:
                shown = f" ({_some(lost)})" if name in LOUD_SECTIONS else ""
                parts.append(f"{count(len(lost))} removed{shown}")
            if gained:
                parts.append(f"{count(len(gained))} added")
        prefix = prefix or self._prefix()
        if not parts:
            return f"{prefix}: no change{' in what both record' if self.not_compared else ''}"
        return f"{prefix}: {', '.join(parts)}"

    def _machines(self, names: list[str], most: int = 4) -> str:
        runs = machine_runs(names, self.machine_universe)
        return ", ".join(runs[:most]) + (f" and {len(runs) - most} more" if len(runs) > most else "")

    def not_compared_line(self) -> str:
        """How much was left out, in one line: ``1 machine type, 353 devices, 204 capability flags``."""
        return ", ".join(f"{n} {_NOUNS[name][0] if n == 1 else _NOUNS[name][1]}"
                         for name, n in self.not_compared_counts.items())

    def loud_line(self, limit: int = 12) -> str:
        """The loud losses in one line: ``device qxl-vga, capability flag qxl, ...``."""
        items = []
        for name, lost in self.loud_losses.items():
            one = _NOUNS.get(name, (name, name))[0]
            items += [f"{one} {item}" for item in lost]
        return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")

    def format(self, limit: int = 40) -> str:
        """The itemised diff: every gained (+) and lost (-) fact, quiet losses marked."""
        lines = [f"--- {self.a}", f"+++ {self.b}"]
        for name, (gained, lost) in self.sections.items():
            if not gained and not lost:
                continue
            quiet = self.quiet.get(name, {})
            note = ""
            if lost and name not in LOUD_SECTIONS:
                note = " (losses here are quiet)"
            elif quiet:
                note = f" ({len(quiet)} of the losses quiet: deprecated)"
            lines.append(f"{name}: +{len(gained)} -{len(lost)}{note}")
            for sign, items in (("+", gained), ("-", lost)):
                for item in items[:limit]:
                    why = f"  ({quiet[item]})" if sign == "-" and item in quiet else ""
                    lines.append(f"  {sign} {item}{why}")
                if len(items) > limit:
                    lines.append(f"  {sign} ... and {len(items) - limit} more")
        if not self.changed:
            lines.append("no differences in what both record")
        elif self.regressed:
            loud = sum(len(items) for items in self.loud_losses.values())
            lines.append(f"LOST {loud} capabilities that {self.a} had and a user would miss")
        elif self.lost_anything:
            lines.append("nothing lost that a user would miss (only deprecated or quiet facts)")
        return "\n".join(lines)

    def full_text(self, limit: int = 40) -> str:
        """Summary, what was not compared, then the itemised diff (``caps diff`` prints this)."""
        lines = [self.summary()]
        lines += [f"not compared: {line}" for line in self.not_compared]
        return "\n".join([*lines, "", self.format(limit=limit)])


def origin(caps: Capabilities) -> str:
    """How a fixture was made, in a few words: "probed", "imported from libvirt 11.3.0"."""
    prov = caps.provenance
    if prov.source == "libvirt-import":
        return f"imported from libvirt {prov.libvirt_version or '?'}"
    return "probed" if prov.source == "probe" else f"source {prov.source}"


def _some(items: list[str], most: int = 3) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def diff_caps(a: Capabilities, b: Capabilities, a_name: str = "A", b_name: str = "B") -> CapsDiff:
    """Compare two fixtures kind by kind, on the facts both record (see the module docstring)."""
    result = CapsDiff(a_name, b_name, a_version=a.version, b_version=b.version, a_arch=a.arch, b_arch=b.arch,
                      machine_universe=set(a.facts("machine types") | b.facts("machine types")))
    rec_a, rec_b = a.records, b.records
    for name in SECTIONS:
        fa, fb = a.facts(name), b.facts(name)
        ra, rb = rec_a[name], rec_b[name]
        # facts one of the two cannot hold, by reason (A's reason first)
        left: dict[tuple[str, str], set[str]] = {}
        for fact in fa | fb:
            why = ra.left_out(fact) or rb.left_out(fact)
            if why is not None:
                left.setdefault(why, set()).add(fact)
        skipped = set().union(*left.values()) if left else set()
        sa, sb = fa - skipped, fb - skipped
        result.sections[name] = (sorted(sb - sa), sorted(sa - sb))
        if left:
            one, many = _NOUNS[name]
            result.not_compared.append(f"{name}: " + "; ".join(
                f"{len(facts)} {one if len(facts) == 1 else many} {outside} "
                f"{'was' if len(facts) == 1 else 'were'} not compared ({because})"
                for (outside, because), facts in sorted(left.items(), key=lambda kv: (-len(kv[1]), kv[0]))))
            result.not_compared_counts[name] = len(skipped)
    lost_machines = result.sections["machine types"][1]
    quiet = {}
    for name in lost_machines:
        old = a.machine(name)
        if old is not None and old.deprecated:
            quiet[name] = "deprecated"
        elif policy_removed(name, b.version):
            quiet[name] = f"older than the {POLICY_REMOVAL_YEARS}-year deprecation policy"
    if quiet:
        result.quiet["machine types"] = quiet
    return result
