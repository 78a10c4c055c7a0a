"""The QAPI schema behind -netdev, -blockdev, -chardev and -object, recorded compactly in a fixture.

QEMU describes the arguments of ``netdev_add``, ``blockdev-add``, ``chardev-add`` and ``object-add`` in its
``query-qmp-schema`` reply; the command-line options take the same arguments (``-object`` only where
``object-add`` takes the ObjectOptions union, QEMU 6.0 and later; before that its arguments are
``qom-type``, ``id`` and an untyped ``props``). A fixture keeps only the types reachable from those four
commands' arguments, renamed ``0``, ``1``, ... in the order a walk from the roots meets them (QEMU masks its
type names with numbers that change between builds), so two fixtures with the same schema record the same
text. The record is JSON, one type a line::

  {"roots": {"blockdev": "0", "chardev": "57", "netdev": "80", "object": "101"},
   "types": {
    "0": {"members": [["driver", "1", ""], ["node-name", "str", "o"], ...], "tag": "driver",
          "variants": {"file": "2", ...}},
    "1": {"enum": ["file", "qcow2", ...]},
    "5": {"alternate": ["3", "str"]},
    "9": {"array": "str"}
   }}

A member is ``[name, type, flags]``: flags ``o`` optional, ``d`` deprecated, ``u`` unstable; a type's own
features are its ``flags``, an enum value's its ``vflags`` (``{"value": "d"}``). Built-in types
keep QEMU's names: ``str``, ``int``, ``number``, ``bool``, ``null``, ``any``. An object type's ``tag`` is its
discriminator member and ``variants`` maps each value to the type whose members it adds (QEMU lists every
value of the discriminator's enum, an empty type where a value adds none).

Sources: a probe's own ``query-qmp-schema`` (conformance/caps/probe.py), and for fixtures imported from
libvirt, the ``.replies`` file libvirt's test suite keeps beside each capability XML
(tests/qemucapabilitiesdata/caps_*.replies: the QMP conversation of libvirt's probe, query-qmp-schema
included).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conformance.errors import FixtureError

# the option -> the QMP command whose arguments it takes
QAPI_COMMANDS: dict[str, str] = {
    "blockdev": "blockdev-add", "chardev": "chardev-add", "netdev": "netdev_add", "object": "object-add",
}
BUILTINS = frozenset({"str", "int", "number", "bool", "null", "any"})
_NON_SPACE = re.compile(r"\S")


def record_from_schema(schema: list[dict[str, Any]]) -> dict[str, Any]:
    """A query-qmp-schema reply -> the compact record (module docstring) of the four commands' arguments."""
    by_name = {e["name"]: e for e in schema}
    names: dict[str, str] = {}  # QEMU's (masked) type name -> ours
    types: dict[str, dict[str, Any]] = {}

    def ref(name: str) -> str:
        node = by_name.get(name, {})
        if node.get("meta-type") == "builtin":
            return _builtin(node)
        if name in names:
            return names[name]
        ours = names[name] = str(len(names))
        entry: dict[str, Any] = {}
        types[ours] = entry  # placed before recursing, so ids follow the walk
        if _flags(node):
            entry["flags"] = _flags(node)
        match node.get("meta-type"):
            case "enum":
                entry["enum"] = list(node.get("values") or [m["name"] for m in node.get("members", [])])
                flagged = {m["name"]: _flags(m) for m in node.get("members", []) if _flags(m)}
                if flagged:
                    entry["vflags"] = flagged
            case "array":
                entry["array"] = ref(node["element-type"])
            case "alternate":
                entry["alternate"] = [ref(m["type"]) for m in node.get("members", [])]
            case "object":
                entry["members"] = [[m["name"], ref(m["type"]), _flags(m)] for m in node.get("members", [])]
                if node.get("tag"):
                    entry["tag"] = node["tag"]
                    entry["variants"] = {v["case"]: ref(v["type"]) for v in node.get("variants", [])}
            case other:
                raise ValueError(f"query-qmp-schema type {name!r} has an unknown meta-type {other!r}")
        return ours

    roots = {}
    for option, command in sorted(QAPI_COMMANDS.items()):
        arg_type = by_name.get(command, {}).get("arg-type")
        if arg_type is not None:
            roots[option] = ref(arg_type)
    return {"roots": roots, "types": types}


def _builtin(node: dict[str, Any]) -> str:
    """A built-in type by its JSON type: QEMU's ``int`` stands for every sized integer as well."""
    return {"string": "str", "int": "int", "number": "number", "boolean": "bool", "null": "null",
            "value": "any"}[node.get("json-type", "value")]


def _flags(entry: dict[str, Any]) -> str:
    """A member's, type's or enum value's flags: ``o`` optional (members only), ``d`` deprecated, ``u`` unstable."""
    features = entry.get("features", [])
    return ("o" if "default" in entry else "") + ("d" if "deprecated" in features else "") + \
        ("u" if "unstable" in features else "")


def encode(record: dict[str, Any]) -> str:
    """The record as text, one type a line (so a fixture diff shows which types changed)."""
    if not record.get("roots"):
        return ""
    lines = [f'{{"roots": {json.dumps(record["roots"], sort_keys=True)},', ' "types": {']
    items = sorted(record["types"].items(), key=lambda kv: int(kv[0]))
    lines += [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" + ("," if i < len(items) - 1 else "")
              for i, (k, v) in enumerate(items)]
    lines.append(" }}")
    return "\n".join(lines)


def decode(text: str, where: str | Path = "<fixture>") -> dict[str, Any]:
    """The text of a fixture's ``<qapi-schema>`` -> the record; FixtureError when it is not one."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FixtureError(f"<qapi-schema> is not JSON: {exc.msg} (its line {exc.lineno})", path=where,
                           hint="re-probe the binary or re-import the libvirt caps with its .replies") from None
    if not isinstance(record, dict) or not isinstance(record.get("roots"), dict) or \
            not isinstance(record.get("types"), dict):
        raise FixtureError("<qapi-schema> lacks 'roots' or 'types'", path=where)
    return record


def schema_from_replies(path: str | Path) -> list[dict[str, Any]]:
    """The query-qmp-schema reply in a libvirt ``.replies`` file (its JSON documents one after another:
    each command, then QEMU's answer)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FixtureError(f"cannot read libvirt replies: {exc.strerror}", path=path) from None
    decoder = json.JSONDecoder()
    asked = False
    pos = 0
    while (m := _NON_SPACE.search(text, pos)) is not None:
        try:
            doc, pos = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError as exc:
            raise FixtureError(f"malformed JSON in libvirt replies: {exc.msg}", path=path, line=exc.lineno) from None
        if asked and isinstance(doc, dict) and "return" in doc:
            return list(doc["return"])
        asked = isinstance(doc, dict) and doc.get("execute") == "query-qmp-schema"
    raise FixtureError("libvirt replies hold no query-qmp-schema answer", path=path,
                       hint="give the .replies file of the same caps_*.xml (tests/qemucapabilitiesdata)")


def replies_beside(caps_xml: str | Path) -> Path | None:
    """The ``.replies`` file libvirt keeps beside a caps XML (``caps_7.2.0_x86_64.replies``), when present."""
    path = Path(caps_xml).with_suffix(".replies")
    return path if path.is_file() else None
