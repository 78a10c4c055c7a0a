"""-netdev, -blockdev, -chardev and -object values against the QAPI schema of the fixture's QEMU.

libvirt's test suite checks every JSON ``-blockdev``, ``-netdev``, ``-object`` and ``-chardev`` it writes
against the arguments of ``blockdev-add``, ``netdev_add``, ``object-add`` and ``chardev-add`` in the QEMU's
``query-qmp-schema`` (qemuxmlconftest.c, testCompareXMLToArgvValidateSchemaCommand; the walk is
testutilsqemuschema.c). This does the same against the types a fixture records (``caps.qapi_schema``,
conformance/caps/qapi_record.py), and one line names each problem, the option, the member and the QEMU:

- a member the type does not have (``QEMU 7.2.0 has no property 'discard-no-unref'``);
- a value of another JSON type, or not in the member's enum (``property 'read-only' is boolean in ...``);
- a mandatory member left out (``QEMU 7.2.0 requires property 'addr', the argv has none``);
- a discriminator value the union does not have (``QEMU 5.2.0 has no netdev type 'stream'``);
- a member, enum value or type QEMU marks deprecated or unstable (libvirt's test refuses both).

Comma (keyval) syntax, which libvirt's test skips, is checked too: dotted keys are nested objects (``cache.direct``),
numbered keys array items, and a value is a string that must read as the member's type (``on``/``off`` for a
boolean, digits with an optional size suffix for an integer, an enum's value). A key given more than once is a
list QEMU collects (``hostfwd``): a string is accepted for an array member. ``-chardev``'s comma syntax is QEMU's
own (its keys are spelled otherwise than chardev-add's members, and every backend takes every key): there a key is
a problem only when no backend of this QEMU has it, and the backend must exist.

``-object`` before QEMU 6.0: ``object-add`` took ``qom-type``, ``id`` and an untyped ``props``, so there is no
schema of an object's properties to check: those values are left to the QOM property check
(conformance/argv/schema_check.py), as is every option of a fixture that records no QAPI schema (None).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from conformance.argv.options import parse_props
from conformance.caps.model import Capabilities
from conformance.caps.qapi_record import decode

# the option -> (its root in the record, the key that names its branch, what a branch is called)
OPTIONS: dict[str, tuple[str, str, str]] = {
    "-netdev": ("netdev", "type", "netdev type"), "-blockdev": ("blockdev", "driver", "blockdev driver"),
    "-chardev": ("chardev", "type", "chardev backend"), "-object": ("object", "qom-type", "object type"),
}
# -chardev comma-syntax keys that are no member of a backend (the chardev's id; a multiplexer in front of it)
CHARDEV_NOT_MEMBERS = frozenset({"id", "mux"})
# -chardev comma-syntax keys spelled otherwise than the chardev-add member they fill (QEMU's qemu_chr_parse_*)
_ADDR = {k: f"addr.data.{k}" for k in ("host", "port", "to", "ipv4", "ipv6", "path", "abstract", "tight")}
CHARDEV_KEYS: dict[str, dict[str, str]] = {
    "socket": _ADDR | {"fd": "addr.data.str", "delay": "nodelay"},
    "udp": {"host": "remote.data.host", "port": "remote.data.port", "ipv4": "remote.data.ipv4",
            "ipv6": "remote.data.ipv6", "localaddr": "local.data.host", "localport": "local.data.port"},
    "file": {"path": "out", "input-path": "in"},
    "pipe": {"path": "device"}, "serial": {"path": "device"}, "tty": {"path": "device"},
    "parallel": {"path": "device"}, "parport": {"path": "device"},
    "spicevmc": {"name": "type"}, "spiceport": {"name": "fqdn"},
}
_BUILTIN_KINDS = {"str": "string", "int": "int", "number": "number", "bool": "boolean", "null": "null",
                  "any": "any"}
_BOOL_WORDS = frozenset({"on", "off", "yes", "no", "true", "false"})
_INT_TEXT = re.compile(r"^[+-]?(0[xX][0-9a-fA-F]+|\d+)([kKMGTPE]i?[bB]?|[bB])?$")  # sizes take a suffix
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_FLAG_WORDS = {"d": "deprecated", "u": "unstable"}
_ENUM_SHOWN = 8  # enum values named in a message before "..."


class QapiSchema:
    """One fixture's recorded types (caps/qapi_record.py), with the walk that checks a value against them."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.roots: dict[str, str] = record["roots"]
        self.types: dict[str, dict[str, Any]] = record["types"]
        self._members: dict[str, dict[str, tuple[str, str]]] = {}

    def members(self, ref: str) -> dict[str, tuple[str, str]]:
        """An object type's own members: name -> (type, flags)."""
        found = self._members.get(ref)
        if found is None:
            found = self._members[ref] = {m[0]: (m[1], m[2]) for m in self.types[ref].get("members", [])}
        return found

    def qapified(self, root: str) -> bool:
        """Whether the option's arguments are a union the schema describes: object-add before QEMU 6.0 and
        netdev_add before 5.0 took untyped properties; chardev-add's union is its ``backend``."""
        ref = self.roots.get(root)
        if ref is not None and root == "chardev":
            ref = self.members(ref).get("backend", ("", ""))[0]
        return ref is not None and "tag" in self.types.get(ref, {})

    def kind(self, ref: str) -> str:
        """A type as a message names it: "boolean", "one of 'a', 'b'", "object|string"."""
        if ref in _BUILTIN_KINDS:
            return _BUILTIN_KINDS[ref]
        entry = self.types[ref]
        if "enum" in entry:
            values = entry["enum"]
            shown = ", ".join(repr(v) for v in values[:_ENUM_SHOWN])
            return f"one of {shown}{', ...' if len(values) > _ENUM_SHOWN else ''}"
        if "array" in entry:
            return "array"
        if "alternate" in entry:
            return "|".join(sorted({self.kind(a) if a in _BUILTIN_KINDS or "enum" not in self.types[a]
                                    else "string" for a in entry["alternate"]}))
        return "object"

    def walk(self, value: Any, ref: str, path: str, keyval: bool) -> Iterator[tuple[str, str, str]]:
        """The problems of ``value`` against type ``ref``: (kind, member path, detail); kinds "unknown",
        "type", "missing", "branch", "flagged"."""
        if ref in _BUILTIN_KINDS:
            if not _builtin_ok(value, ref, keyval):
                yield "type", path, ref
            return
        entry = self.types[ref]
        if entry.get("flags"):
            yield "flagged", path, entry["flags"]
        if "enum" in entry:
            if not isinstance(value, str) or value not in entry["enum"]:
                yield "type", path, ref
            elif value in entry.get("vflags", {}):
                yield "flagged", f"{path}={value}" if path else value, entry["vflags"][value]
            return
        if "array" in entry:
            if keyval and isinstance(value, str):
                return  # a key given more than once: QEMU's repeated-key list
            items = list(value.values()) if keyval and isinstance(value, dict) and all(
                k.isdigit() for k in value) else value
            if not isinstance(items, list):
                yield "type", path, ref
                return
            for i, item in enumerate(items):
                yield from self.walk(item, entry["array"], f"{path}.{i}", keyval)
            return
        if "alternate" in entry:
            for choice in entry["alternate"]:
                if next(self.walk(value, choice, path, keyval), None) is None:
                    return
            yield "type", path, ref
            return
        yield from self._object(value, ref, entry, path, keyval)

    def _object(self, value: Any, ref: str, entry: dict[str, Any], path: str,
                keyval: bool) -> Iterator[tuple[str, str, str]]:
        if not isinstance(value, dict):
            yield "type", path, ref
            return
        members = self.members(ref)
        tag = entry.get("tag")
        if tag is not None:
            branch = value.get(tag)
            variant = entry["variants"].get(branch) if isinstance(branch, str) else None
            if variant is None:
                if tag not in value:
                    yield "missing", _join(path, tag), ""
                else:
                    yield "branch", _join(path, tag), str(branch)
                return  # the other members depend on the branch
            members = members | self.members(variant)
        for key, item in value.items():
            member = members.get(key)
            where = _join(path, key)
            if member is None:
                yield "unknown", where, ""
                continue
            mtype, flags = member
            if "d" in flags or "u" in flags:
                yield "flagged", where, flags
            yield from self.walk(item, mtype, where, keyval)
        for key, (_, flags) in members.items():
            if "o" not in flags and key not in value:
                yield "missing", _join(path, key), ""

    def flat(self, ref: str, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
        """Every member path of a type and of all its variants, nested objects followed ("addr.data.path"),
        with its flags."""
        entry = self.types.get(ref, {})
        for variant in [ref, *entry.get("variants", {}).values()]:
            for name, (mtype, flags) in self.members(variant).items():
                yield prefix + name, flags
                if depth < 3 and mtype not in _BUILTIN_KINDS and "members" in self.types[mtype]:
                    yield from self.flat(mtype, f"{prefix}{name}.", depth + 1)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _builtin_ok(value: Any, ref: str, keyval: bool) -> bool:
    if ref == "any":
        return True
    if keyval and isinstance(value, str):  # comma syntax: the text must read as the type
        match ref:
            case "str":
                return True
            case "bool":
                return value in _BOOL_WORDS
            case "int":
                return _INT_TEXT.match(value) is not None
            case "number":
                return _NUMBER_TEXT.match(value) is not None or _INT_TEXT.match(value) is not None
        return False
    match ref:
        case "str":
            return isinstance(value, str)
        case "bool":
            return isinstance(value, bool)
        case "int":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "null":
            return value is None
    return False


def schema_of(caps: Capabilities) -> QapiSchema | None:
    """The fixture's recorded QAPI types, decoded once per fixture; None when it records none."""
    if not caps.qapi_schema:
        return None
    return caps.derived(("qapi-schema",), lambda: QapiSchema(decode(caps.qapi_schema, caps.label)))


def _nest(props: dict[str, Any]) -> dict[str, Any]:
    """Comma syntax's dotted keys as nested objects: {"cache.direct": "on"} -> {"cache": {"direct": "on"}}."""
    nested: dict[str, Any] = {}
    for key, value in props.items():
        *outer, last = key.split(".")
        node = nested
        for part in outer:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = value
    return nested


def qapi_problems(opt: str, value: str, caps: Capabilities) -> list[str] | None:
    """The problems of one -netdev/-blockdev/-chardev/-object value against the fixture's QAPI schema, one line
    each; None when the fixture records no schema for it (or -object before QEMU 6.0): another check's job."""
    schema = schema_of(caps)
    root, tag, noun = OPTIONS[opt]
    if schema is None or not schema.qapified(root):
        return None
    json_form = value.startswith("{")
    props = parse_props(value)
    ref = schema.roots[root]
    if opt == "-chardev":
        if not json_form:
            return _chardev_keys(schema, props, caps)
        backend = props.get("backend")
        branch = backend.get("type") if isinstance(backend, dict) else None
    else:
        if not json_form:
            if "driver" in props:  # the leading bare word
                props[tag] = props.pop("driver")
            props = _nest(props)
        branch = props.get(tag)
    label = f"{opt} {branch}" if isinstance(branch, str) else opt
    version = caps.version
    lines = []
    for kind, where, detail in schema.walk(props, ref, "", not json_form):
        path = where
        if opt == "-chardev" and path.startswith("backend."):  # chardev-add's {"backend": {"type", "data"}}
            path = path.removeprefix("backend.").removeprefix("data.")
        match kind:
            case "unknown":
                lines.append(f"{label}: QEMU {version} has no property {path!r}")
            case "type":
                lines.append(f"{label}: property {path!r} is {schema.kind(detail)} in QEMU {version}, "
                             f"the argv gives {_lookup(props, where)!r}")
            case "missing":
                lines.append(f"{label}: QEMU {version} requires property {path!r}, the argv has none")
            case "branch" if where in (tag, "backend.type"):
                lines.append(f"{label}: QEMU {version} has no {noun} {detail!r}")
            case "branch":
                lines.append(f"{label}: QEMU {version} has no {detail!r} for property {path!r}")
            case "flagged" if "=" in path:  # an enum value: "driver=gluster"
                key, _, word = path.partition("=")
                lines.append(f"{label}: {key} {word!r} is {_words(detail)} in QEMU {version}")
            case "flagged":
                lines.append(f"{label}: property {path!r} is {_words(detail)} in QEMU {version}")
    return lines


def _lookup(props: dict[str, Any], path: str) -> Any:
    node: Any = props
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _chardev_keys(schema: QapiSchema, props: dict[str, Any], caps: Capabilities) -> list[str]:
    """-chardev comma syntax: the backend must exist, and each key must be some backend's (QEMU's -chardev
    parser takes every key with every backend and ignores those the backend does not use)."""
    backend = props.pop("driver", None)
    union = schema.members(schema.roots["chardev"]).get("backend", ("", ""))[0]
    variants = schema.types.get(union, {}).get("variants", {})
    if backend not in variants:
        return [f"-chardev {backend}: QEMU {caps.version} has no chardev backend {backend!r}"]
    keys = caps.derived(("qapi-chardev-keys",), lambda: _chardev_key_sets(schema, union))
    mine, every = keys[backend], keys[""]
    lines = []
    if backend in keys["-flagged"]:
        lines.append(f"-chardev {backend}: backend {backend!r} is {_words(keys['-flagged'][backend])} "
                     f"in QEMU {caps.version}")
    for key in props:
        member = CHARDEV_KEYS.get(backend, {}).get(key, key)
        if member in mine and mine[member].strip("o"):
            lines.append(f"-chardev {backend}: property {key!r} is {_words(mine[member])} in QEMU {caps.version}")
            continue
        if key in CHARDEV_NOT_MEMBERS or member in mine or key in every:
            continue
        parts = key.split(".")
        item = next((i for i, part in enumerate(parts) if part.isdigit()), 0)
        if item and ".".join(parts[:item]) in mine:
            continue  # an array item of a member ("chardevs.0")
        lines.append(f"-chardev {backend}: QEMU {caps.version} has no property {key!r}")
    return lines


def _chardev_key_sets(schema: QapiSchema, union: str) -> dict[str, dict[str, str]]:
    """backend -> the member paths inside its "data" with their flags; "" -> every comma key some backend
    takes; "-flagged" -> the deprecated or unstable backends with their flags."""
    sets: dict[str, dict[str, str]] = {}
    for backend, wrapper in schema.types[union]["variants"].items():
        data = schema.members(wrapper).get("data")
        sets[backend] = dict(schema.flat(data[0])) if data and data[0] in schema.types else {}
    every: dict[str, str] = {}
    for backend, paths in sets.items():
        every |= dict.fromkeys(paths, "")
        every |= {key: "" for key, member in CHARDEV_KEYS.get(backend, {}).items() if member in paths}
    sets[""] = every
    tag = schema.members(union).get(schema.types[union]["tag"], ("", ""))[0]
    sets["-flagged"] = dict(schema.types.get(tag, {}).get("vflags", {}))
    return sets


def _words(flags: str) -> str:
    return " and ".join(_FLAG_WORDS[f] for f in flags if f in _FLAG_WORDS)
