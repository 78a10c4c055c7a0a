"""Validate domain XML against libvirt's RelaxNG schema (domain.rng) with lxml.

The schema comes from the system (Debian package libvirt0 installs it under
/usr/share/libvirt/schemas) or from $QEMU_CONFORMANCE_SCHEMA_DIR. lxml's own
RelaxNG errors are vague ("Element domain failed to validate content" at the
top element), so on failure we find the culprit by removing one node at a
time from a copy of the document until it validates, descending from the
reported element, and report that element's path and line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lxml import etree

from conformance.errors import DomainInvalid
from conformance.paths import env_path

SYSTEM_SCHEMA_DIR = Path("/usr/share/libvirt/schemas")


def schema_dir() -> Path:
    return env_path("QEMU_CONFORMANCE_SCHEMA_DIR") or SYSTEM_SCHEMA_DIR


@dataclass(frozen=True)
class SchemaStatus:
    available: bool
    path: Path
    why: str = ""  # when unavailable: what to install


def schema_status() -> SchemaStatus:
    path = schema_dir() / "domain.rng"
    if path.exists():
        return SchemaStatus(True, path)
    return SchemaStatus(False, path, f"libvirt's domain schema not found at {path}: install Debian package "
                                     f"libvirt0 (or set QEMU_CONFORMANCE_SCHEMA_DIR); schema validation skipped")


@lru_cache(maxsize=2)
def _relaxng(path: str) -> etree.RelaxNG:
    try:
        return etree.RelaxNG(etree.parse(path))
    except (etree.RelaxNGParseError, etree.XMLSyntaxError, OSError) as exc:
        raise DomainInvalid(f"cannot load libvirt's domain schema: {exc}", path=path) from None


def _valid(rng: etree.RelaxNG, root: etree._Element) -> bool:
    return bool(rng.validate(etree.ElementTree(root)))


def _node_path(node: etree._Element) -> str:
    tree = node.getroottree()
    return tree.getpath(node)


def _locate(rng: etree.RelaxNG, root: etree._Element) -> tuple[etree._Element, str]:
    """(culprit element, what is wrong with it) in an invalid document."""
    current = root
    while True:
        found = None
        for index, child in enumerate(current):
            if not isinstance(child.tag, str):
                continue
            trial = copy.deepcopy(root)
            target = trial.xpath(_node_path(current))[0]
            del target[index]
            if _valid(rng, trial):
                found = child
                break
        if found is None:
            break
        current = found
    for name, value in current.attrib.items():
        trial = copy.deepcopy(root)
        target = trial.xpath(_node_path(current))[0]
        del target.attrib[name]
        if _valid(rng, trial):
            return current, f"attribute {name}='{value}' is not allowed there"
    if current is root:
        return root, "the document does not match (several errors, or a required element is missing)"
    if len(current) == 0 and not current.attrib and not (current.text or "").strip():
        return current, f"element <{current.tag}> is not allowed there"
    return current, f"{_shown(current)} is not allowed there, or a value or required part of it is wrong"


def _shown(node: etree._Element) -> str:
    """<teaming type='persistentx'/> or <vcpu>one</vcpu>: the element as the user wrote it, short."""
    attrs = "".join(f" {k}='{v}'" for k, v in node.attrib.items())
    text = (node.text or "").strip()
    if len(node):
        return f"<{node.tag}{attrs}>...</{node.tag}>"
    return f"<{node.tag}{attrs}>{text[:40]}</{node.tag}>" if text else f"<{node.tag}{attrs}/>"


def validate_schema(xml: bytes | str | etree._Element, *, source: str = "<domain>") -> SchemaStatus:
    """Raise DomainInvalid (path + line of the culprit) when the XML fails libvirt's schema.

    Returns the schema status; when the schema is not installed nothing is
    checked and the status says why.
    """
    status = schema_status()
    if not status.available:
        return status
    rng = _relaxng(str(status.path))
    if isinstance(xml, etree._Element):
        root = xml
    else:
        data = xml.encode() if isinstance(xml, str) else xml
        try:
            root = etree.fromstring(data, etree.XMLParser(resolve_entities=False))
        except etree.XMLSyntaxError as exc:
            raise DomainInvalid(f"malformed XML: {exc.msg}", path=source, line=exc.lineno) from None
    if _valid(rng, root):
        return status
    first = rng.error_log.last_error
    culprit, what = _locate(rng, root)
    where = _node_path(culprit)
    lxml_says = f"; lxml: {first.message}" if first is not None and culprit is root else ""
    raise DomainInvalid(f"fails libvirt's domain schema at {where}: {what}{lxml_says}", path=source,
                        line=culprit.sourceline, hint="see https://libvirt.org/formatdomain.html")
