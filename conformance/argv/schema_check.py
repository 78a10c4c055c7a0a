"""argv against the fixture's QEMU: every -device / -object property the builder emits must exist, with a
compatible type, in that QEMU (libvirt's testCompareXMLToArgvValidateSchemaCommand).

A fixture records the properties of some types only (a probe: the types the suite builds argv for; an
import of libvirt's caps XML: the properties behind its flags), so a property is checked only where the
fixture says whether it exists (``caps.records["properties"]``). -netdev, -blockdev and -chardev would need
the QAPI schema's members, which fixtures do not record yet: they are not checked.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from conformance.argv.options import parse_props
from conformance.caps.model import Capabilities, Recorded

# keys a -device / -object takes that are not QOM properties of the type
_NOT_PROPERTIES = {"-device": {"driver", "id", "bus"}, "-object": {"qom-type", "driver", "id"}}
_BOOL_TYPES = {"bool", "boolean", "OnOffAuto", "OnOffSplit"}
_INT_TYPES = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "int", "size", "number",
              "uint64_t", "uint32_t"}


def _compatible(value: Any, qom_type: str) -> bool:
    """A JSON value against a property type (unknown: an import names no types); comma-syntax strings are
    QEMU's to parse."""
    if not qom_type:
        return True
    if isinstance(value, bool):
        return qom_type in _BOOL_TYPES
    if isinstance(value, int):
        return qom_type not in _BOOL_TYPES - {"OnOffAuto"}
    return True


@lru_cache(maxsize=256)
def _scope(recorded: Recorded) -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """(types whose every property is recorded, single recorded "TYPE.PROP" facts, types with any) of a
    fixture's property record; None: it records every property of every type."""
    if recorded.only is None or recorded.never:
        return None
    whole = frozenset(f[:-2] for f in recorded.only if f.endswith(".*"))
    single = frozenset(f for f in recorded.only if not f.endswith(".*"))
    return whole, single, whole | frozenset(f.rpartition(".")[0] for f in single)


def _head(value: str) -> str | None:
    """The driver / qom-type of a -device/-object value without parsing all of it (None: cannot tell)."""
    for lead in ('{"driver":"', '{"qom-type":"'):
        if value.startswith(lead):  # the builder's JSON leads with it
            end = value.find('"', len(lead))
            return value[len(lead):end] if end > 0 else None
    if value.startswith("{"):
        return None
    return value.split(",", 1)[0]


def property_problems(argv: list[str], caps: Capabilities) -> list[str]:
    """One line per -device/-object property this fixture's QEMU lacks or types otherwise."""
    problems: list[str] = []
    recorded = caps.records["properties"]
    scope = _scope(recorded)
    checked = scope[2] if scope is not None else None
    for i in range(1, len(argv) - 1):
        opt, value = argv[i], argv[i + 1]
        if opt not in _NOT_PROPERTIES or value.startswith("-"):
            continue
        head = _head(value)
        if checked is not None and head is not None and head not in checked and "qom-type=" not in value:
            continue  # a type the fixture records nothing of: nothing to check
        props = parse_props(value)
        qom = props.get("qom-type") if opt == "-object" and "qom-type" in props else props.get("driver")
        if not isinstance(qom, str):
            continue
        if checked is not None and qom not in checked:
            continue
        known = caps.type_properties.get(qom, {})
        whole = scope is not None and qom in scope[0]
        for key, val in props.items():
            if key in _NOT_PROPERTIES[opt]:
                continue
            if scope is None:
                if not recorded.covers(f"{qom}.{key}"):
                    continue
            elif not whole and f"{qom}.{key}" not in scope[1]:
                continue
            if key not in known:
                problems.append(f"{opt} {qom}: QEMU {caps.version} has no property {key!r}")
            elif not _compatible(val, known[key]):
                problems.append(f"{opt} {qom}: property {key!r} is {known[key]} in QEMU {caps.version}, "
                                f"the argv gives {val!r}")
    return problems
