"""argv against the fixture's QEMU: every -device / -object / -netdev / -blockdev / -chardev property the
builder emits must exist, with a compatible type, in that QEMU (libvirt's
testCompareXMLToArgvValidateSchemaCommand).

-device / -object: the QOM properties. A fixture records the properties of some types only (a probe: the
types the suite builds argv for; an import of libvirt's caps XML: the properties behind its flags), so a
property is checked only where the fixture says whether it exists (``caps.records["properties"]``).

-netdev / -blockdev / -chardev / -object: where the fixture records the QAPI schema (every stored fixture does),
conformance/argv/qapi_check.py checks each value against it, as libvirt's test does; what follows is the check
of fixtures that record only the flat members of the unions (probed before the schema was recorded).

-netdev / -blockdev / -chardev: the members of the QAPI union behind each (netdev_add's arguments,
blockdev-add's, chardev-add's backend: ``caps.option_members``), which a probe takes from query-qmp-schema.
A netdev type, blockdev driver or chardev backend the union lacks, a member it lacks, or a JSON value of
another type is a problem. Comma syntax is checked for the keys only (QEMU parses the strings); -chardev's
keys are QEMU's command-line spellings (``path`` of a socket is ``addr.data.path``), and QEMU takes every
-chardev key with every backend, ignoring the ones it does not use, so a key is a problem only when no
backend of this QEMU has it. A libvirt caps XML import carries no QAPI schema, and libvirt's corpus has no
.replies files to import it from: for an imported fixture these options are not checked
(``caps.records["option members"]`` covers nothing).
"""

from __future__ import annotations

from typing import Any

from conformance.argv.options import parse_props
from conformance.argv.qapi_check import CHARDEV_KEYS as _CHARDEV_KEYS
from conformance.argv.qapi_check import CHARDEV_NOT_MEMBERS as _CHARDEV_NOT_MEMBERS
from conformance.argv.qapi_check import OPTIONS as _QAPI_OPTIONS
from conformance.argv.qapi_check import qapi_problems
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


def _head(value: str) -> str | None:
    """The driver / qom-type of a -device/-object value without parsing all of it (None: cannot tell)."""
    for lead in ('{"driver":"', '{"qom-type":"'):
        if value.startswith(lead):  # the builder's JSON leads with it
            end = value.find('"', len(lead))
            return value[len(lead):end] if end > 0 else None
    if value.startswith("{"):
        return None
    return value.split(",", 1)[0]


# what a branch of each option's union is called, and the key that names it
_BRANCH = {"-netdev": ("netdev", "type", "netdev type"), "-blockdev": ("blockdev", "driver", "blockdev driver"),
           "-chardev": ("chardev", "type", "chardev backend")}
# the options property_problems checks
_CHECKED_OPTIONS = frozenset(_BRANCH) | frozenset(_NOT_PROPERTIES)
_JSON_TYPES = ((bool, "boolean"), (int, "int"), (float, "number"), (str, "string"), (dict, "object"),
               (list, "array"), (type(None), "null"))


def _json_compatible(value: Any, kind: str) -> bool:
    """A JSON value against a QAPI member's JSON type ("object|string": either; "value": anything)."""
    kinds = kind.split("|")
    if "value" in kinds:
        return True
    for python, name in _JSON_TYPES:
        if isinstance(value, python):
            return name in kinds or (name == "int" and "number" in kinds)
    return True


def _chardev_key(branches: dict[str, dict[str, str]], key: str) -> bool:
    """Whether some backend of this QEMU takes the -chardev key (QEMU accepts it with every backend)."""
    return any(key in members or _CHARDEV_KEYS.get(backend, {}).get(key) in members
               for backend, members in branches.items())


def _unfollowed(members: dict[str, str], key: str) -> bool:
    """Whether a dotted comma-syntax key lies inside an array or alternate member, which the record does not
    follow ("chardevs.0", "file.filename")."""
    dot = key.find(".")
    while dot > 0:
        kind = members.get(key[:dot], "")
        if kind == "array" or "|" in kind:
            return True
        dot = key.find(".", dot + 1)
    return False


def member_problems(opt: str, value: str, caps: Capabilities) -> list[str]:
    """The problems of one -netdev/-blockdev/-chardev value against the fixture's QAPI union (none when the
    fixture does not record it)."""
    option, tag, noun = _BRANCH[opt]
    if option not in caps.option_members:
        return []
    props = parse_props(value)
    json_form = value.startswith("{")
    if opt == "-chardev" and json_form:  # chardev-add's arguments: {"id", "backend": {"type", "data"}}
        backend = props.get("backend") if isinstance(props.get("backend"), dict) else {}
        branch, props = backend.get("type"), backend.get("data", {})
    else:
        branch = props.pop(tag if json_form else "driver", None)
    if not isinstance(branch, str) or not caps.records["option members"].covers(f"{option}:{branch}"):
        return []
    members = caps.members(option, branch)
    if members is None:
        return [f"{opt} {branch}: QEMU {caps.version} has no {noun} {branch!r}"]
    problems: list[str] = []
    pending = list(props.items())
    while pending:
        key, val = pending.pop(0)
        if opt == "-chardev" and not json_form and (
                key in _CHARDEV_NOT_MEMBERS or _CHARDEV_KEYS.get(branch, {}).get(key, key) in members
                or _chardev_key(caps.option_members[option], key)):
            continue
        kind = members.get(key)
        if kind is None and not json_form and _unfollowed(members, key):
            continue
        if kind is None:
            problems.append(f"{opt} {branch}: QEMU {caps.version} has no property {key!r}")
        elif json_form and not _json_compatible(val, kind):
            problems.append(f"{opt} {branch}: property {key!r} is {kind} in QEMU {caps.version}, "
                            f"the argv gives {val!r}")
        elif json_form and kind == "object" and isinstance(val, dict) and any(
                m.startswith(key + ".") for m in members):  # a nested object the record follows
            pending[:0] = [(f"{key}.{k}", v) for k, v in val.items()]
    return problems


def property_problems(argv: list[str], caps: Capabilities,
                      memo: dict[tuple[str, str], list[str]] | None = None) -> list[str]:
    """One line per -device/-object/-netdev/-blockdev/-chardev property this fixture's QEMU lacks or types
    otherwise. ``memo``: the problems of each (option, value) already checked against these same caps (the
    static stages check the same -device strings for many cases on one fixture)."""
    problems: list[str] = []
    recorded = caps.records["properties"]
    scope = recorded.property_scope
    for i in range(1, len(argv) - 1):
        opt = argv[i]
        if opt not in _CHECKED_OPTIONS:
            continue
        value = argv[i + 1]
        if value.startswith("-"):
            continue
        if memo is None:
            problems += option_problems(opt, value, caps, recorded, scope)
            continue
        found = memo.get((opt, value))
        if found is None:
            found = memo[(opt, value)] = option_problems(opt, value, caps, recorded, scope)
        problems += found
    return problems


def option_problems(opt: str, value: str, caps: Capabilities, recorded: Recorded | None = None,
                    scope: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None) -> list[str]:
    """The problems of one -device/-object/-netdev/-blockdev/-chardev value against the fixture's QEMU
    (``recorded``, ``scope``: the fixture's property record and its property_scope, when the caller has them)."""
    if opt in _QAPI_OPTIONS:  # the fixture's QAPI schema, where it records one (conformance/argv/qapi_check.py)
        found = qapi_problems(opt, value, caps)
        if found is not None:
            return found
    if opt in _BRANCH:  # -netdev, -blockdev, -chardev: the QAPI union's members (fixtures probed before the schema)
        return member_problems(opt, value, caps) if caps.option_members else []
    if recorded is None:
        recorded = caps.records["properties"]
        scope = recorded.property_scope
    checked = scope[2] if scope is not None else None
    head = _head(value)
    if checked is not None and head is not None and head not in checked and "qom-type=" not in value:
        return []  # a type the fixture records nothing of: nothing to check
    props = parse_props(value)
    qom = props.get("qom-type") if opt == "-object" and "qom-type" in props else props.get("driver")
    if not isinstance(qom, str):
        return []
    if checked is not None and qom not in checked:
        return []
    problems: list[str] = []
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
