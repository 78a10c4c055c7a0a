"""What capabilities B gained and lost against A.

A release qualification diffs a freshly probed build against the stored
fixture of the previous (or the same) version: anything lost is a regression
candidate, so ``caps diff`` exits 1 when B lost something A had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conformance.caps.flags import RULES
from conformance.caps.model import Capabilities


@dataclass
class CapsDiff:
    a: str
    b: str
    # section -> (gained, lost), each sorted
    sections: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    @property
    def lost_anything(self) -> bool:
        return any(lost for _, lost in self.sections.values())

    @property
    def changed(self) -> bool:
        return any(gained or lost for gained, lost in self.sections.values())

    def format(self, limit: int = 40) -> str:
        lines = [f"--- {self.a}", f"+++ {self.b}"]
        for name, (gained, lost) in self.sections.items():
            if not gained and not lost:
                continue
            lines.append(f"{name}: +{len(gained)} -{len(lost)}")
            for sign, items in (("+", gained), ("-", lost)):
                for item in items[:limit]:
                    lines.append(f"  {sign} {item}")
                if len(items) > limit:
                    lines.append(f"  {sign} ... and {len(items) - limit} more")
        if not self.changed:
            lines.append("no differences")
        elif self.lost_anything:
            lost = sum(len(lost) for _, lost in self.sections.values())
            lines.append(f"LOST {lost} capabilities that {self.a} had")
        return "\n".join(lines)


def _machine_names(caps: Capabilities) -> set[str]:
    return {m.name for m in caps.machines} | {m.alias for m in caps.machines if m.alias}


def _properties(caps: Capabilities) -> set[str]:
    return {f"{t}.{p}" for t, props in caps.type_properties.items() for p in props}


def diff_caps(a: Capabilities, b: Capabilities, a_name: str = "A", b_name: str = "B") -> CapsDiff:
    """Compare two fixtures section by section (property lists only where both probed the type)."""
    # properties: compare the types both recorded, plus the properties the flag rules name
    # (an imported fixture records only those), so 4.1.0 -> 4.2.0 shows virtio-net-pci.failover
    common_types = set(a.type_properties) & set(b.type_properties)
    named = {f"{r.what}.{r.prop}" for r in RULES if r.kind == "property"}
    props_a = {p for p in _properties(a) if p.split(".", 1)[0] in common_types or p in named}
    props_b = {p for p in _properties(b) if p.split(".", 1)[0] in common_types or p in named}
    pairs = {
        "flags": (set(a.flags), set(b.flags)),
        "machine types": (_machine_names(a), _machine_names(b)),
        "devices and objects": (set(a.qom_types), set(b.qom_types)),
        "properties": (props_a, props_b),
        "commands": (set(a.commands), set(b.commands)),
        "events": (set(a.events), set(b.events)),
        "migration capabilities": (set(a.migration_capabilities), set(b.migration_capabilities)),
        "cpu models": ({c.name for c in a.cpu_models}, {c.name for c in b.cpu_models}),
    }
    result = CapsDiff(a_name, b_name)
    for name, (sa, sb) in pairs.items():
        # an imported fixture may not record a whole section: an empty B section is no loss
        result.sections[name] = (sorted(sb - sa), sorted(sa - sb) if sb else [])
    return result
