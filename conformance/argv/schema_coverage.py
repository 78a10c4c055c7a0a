"""libvirt's domain schema, item by item: what the argv builder does with each element and attribute.

Every element, attribute and enumerated attribute value libvirt's domain RelaxNG schema
(``domain.rng`` and its includes) lets a domain carry is an *item*, named by its path::

    /domain/devices/input                  an element
    /domain/devices/input/@bus             an attribute
    /domain/devices/input[@type='evdev']   one value of an attribute the schema enumerates
    /domain/on_reboot[.='destroy']         one value of an element's text the schema enumerates

``schema_classes.toml`` (beside this module) classifies every item by rule, in one of four classes:

- ``a``: it shapes the argv; the builder implements it (the rule cites libvirt's ``qemuBuild*``);
- ``b``: it has no argv effect (the rule says why);
- ``c``: libvirt refuses it for QEMU on x86_64/aarch64 (the rule paraphrases libvirt's refusal);
- ``d``: not supported yet.

The rules are the suite's own data: they need no schema at run time. ``check_domain`` walks a
parsed domain and refuses, with one ``unsupported`` line naming the path, the first element or
attribute of class ``d`` (and of class ``c`` that no earlier rule refused): nothing the builder does
not know is dropped in silence. ``qemu-conformance argv --schema-coverage`` prints the table.

A rule's ``path`` is an item path in which ``*`` matches one name (or part of one) and ``/**`` any
number of steps, none included; of the rules that match an item, the most specific (most literal
characters) wins, and of two as specific the earlier in the file.
A value item that no value rule matches takes its attribute's (or element's) class.

Values are items only where the schema enumerates them (``<value>``s, a ``<choice>`` of them): an attribute
or element text the schema types as data (a number, a path, a name) is one item, its attribute or element,
whatever the value; a yes/no or on/off switch is its attribute too.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lxml import etree

from conformance.errors import DomainInvalid, UnsupportedByQemu

RNG_NS = "http://relaxng.org/ns/structure/1.0"
CLASSES_FILE = Path(__file__).with_name("schema_classes.toml")
CLASS_NAMES = {
    "a": "shapes the argv (implemented)",
    "b": "no argv effect",
    "c": "libvirt refuses it (QEMU, x86_64/aarch64)",
    "d": "unsupported yet (refused here)",
}
# the namespaces of libvirt's per-driver domain extensions, as the schema's prefixes name them
NAMESPACES = {
    "http://libvirt.org/schemas/domain/qemu/1.0": "qemu",
    "http://libvirt.org/schemas/domain/lxc/1.0": "lxc",
    "http://libvirt.org/schemas/domain/bhyve/1.0": "bhyve",
    "http://libvirt.org/schemas/domain/xen/1.0": "xen",
    "http://libvirt.org/schemas/domain/vmware/1.0": "vmware",
}


# --- the schema's items ------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    path: str
    kind: str  # element | attribute | value


def _q(tag: str) -> str:
    return f"{{{RNG_NS}}}{tag}"


class _Grammar:
    """domain.rng with its includes: the defines (combine='choice' merged) and the start pattern."""

    def __init__(self, top: Path) -> None:
        self.defines: dict[str, list[etree._Element]] = {}
        self.start: list[etree._Element] = []
        self._load(top, set())

    def _load(self, path: Path, seen: set[Path]) -> None:
        if path in seen:
            return
        seen.add(path)
        root = etree.parse(str(path)).getroot()
        for el in root:
            if el.tag == _q("include"):
                self._load(path.parent / el.get("href", ""), seen)
            elif el.tag == _q("define"):
                name = el.get("name", "")
                if el.get("combine"):
                    self.defines.setdefault(name, []).append(el)
                else:  # a plain define replaces what an included grammar said (domainoverrides.rng)
                    self.defines[name] = [el, *[d for d in self.defines.get(name, []) if d.get("combine")]]
            elif el.tag == _q("start"):
                self.start.append(el)


def _name_of(el: etree._Element) -> str:
    """An <element>/<attribute>'s name as the item path spells it (a namespace as its prefix)."""
    name = el.get("name")
    ns = el.get("ns") or ""
    if el.tag == _q("element") and not ns:  # an element's namespace is inherited from the nearest pattern naming one
        ns = next((a.get("ns") for a in el.iterancestors() if a.get("ns") is not None), "")
    if name is None:
        child = el.find(_q("name"))
        if child is None:
            return "*"  # anyName / nsName: any element (e.g. <metadata>'s content)
        name, ns = (child.text or "").strip(), child.get("ns") or ns
    prefix = NAMESPACES.get(ns)
    return f"{prefix}:{name}" if prefix else name


def _text_values(el: etree._Element, grammar: _Grammar, refs: tuple[str, ...] = ()) -> list[str]:
    """The literal values an element's own text may take (its <value>s, not its attributes' or children's)."""
    values: list[str] = []
    for c in el:
        tag = c.tag
        if not isinstance(tag, str) or tag in (_q("element"), _q("attribute")):
            continue
        if tag == _q("value"):
            values.append((c.text or "").strip())
        elif tag == _q("ref"):
            name = c.get("name", "")
            if name not in refs and len(refs) < 8:
                for d in grammar.defines.get(name, []):
                    values += _text_values(d, grammar, (*refs, name))
        else:
            values += _text_values(c, grammar, refs)
    return values


def _literal_values(el: etree._Element, grammar: _Grammar, depth: int = 0) -> list[str] | None:
    """The literal values an attribute's content enumerates (<value> or a choice of them), else None."""
    values: list[str] = []
    for c in el:
        tag = c.tag
        if tag == _q("value"):
            values.append((c.text or "").strip())
        elif tag == _q("choice"):
            sub = _literal_values(c, grammar, depth + 1)
            if sub is None:
                return None
            values += sub
        elif tag == _q("ref") and depth < 4:
            for d in grammar.defines.get(c.get("name", ""), []):
                sub = _literal_values(d, grammar, depth + 1)
                if sub is None:
                    return None
                values += sub
        elif tag == _q("name") or not isinstance(tag, str):
            continue
        else:
            return None
    return values or None


_SWITCHES = {"on", "off", "yes", "no"}


def schema_items(domain_rng: Path) -> list[Item]:
    """Every item of the domain schema, in schema order (each path once)."""
    grammar = _Grammar(domain_rng)
    found: dict[str, Item] = {}
    values: dict[tuple[str, str], list[str]] = {}  # (element path, @attribute or . for its text) -> literal values

    def add(path: str, kind: str) -> None:
        found.setdefault(path, Item(path, kind))

    def walk(el: etree._Element, path: str, refs: tuple[str, ...]) -> None:
        for c in el:
            tag = c.tag
            if not isinstance(tag, str):
                continue
            if tag == _q("element"):
                name = _name_of(c)
                sub = f"{path}/{name}"
                add(sub, "element")
                if name != "*":
                    values.setdefault((sub, "."), []).extend(_text_values(c, grammar))
                    walk(c, sub, refs)
            elif tag == _q("attribute"):
                name = _name_of(c)
                add(f"{path}/@{name}", "attribute")
                values.setdefault((path, f"@{name}"), []).extend(_literal_values(c, grammar) or [])
            elif tag == _q("ref"):
                name = c.get("name", "")
                if name in refs:  # recursion (a backing chain's <backingStore>): walked once
                    continue
                for d in grammar.defines.get(name, []):
                    walk(d, path, (*refs, name))
            elif tag in (_q("value"), _q("data"), _q("text"), _q("empty"), _q("notAllowed"), _q("name"),
                         _q("anyName"), _q("nsName"), _q("param"), _q("except")):
                continue
            else:  # group, interleave, choice, optional, zeroOrMore, oneOrMore, mixed, list
                walk(c, path, refs)

    for start in grammar.start:
        walk(start, "", ())
    for (path, key), allowed in values.items():  # an attribute's or a text's values, when the schema enumerates them
        unique = list(dict.fromkeys(allowed))
        if len(unique) > 1 and not set(unique) <= _SWITCHES:  # a yes/no or on/off switch is its attribute
            for value in unique:
                add(f"{path}[{key}='{value}']", "value")
    return list(found.values())


# --- the rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    path: str
    cls: str  # a | b | c | d
    why: str  # (a) libvirt's qemuBuild* function; (b) the reason; (c) libvirt's refusal; (d) what is missing
    regex: re.Pattern[str]
    weight: int  # literal characters: the most specific matching rule wins
    except_arches: tuple[str, ...] = ()  # guest arches on which the builder implements it (class a there)
    order: int = 0  # its place in the file: of two rules as specific, the earlier wins


def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    for part in re.split(r"(/\*\*|\*\*|\*)", pattern):
        if part == "/**":  # any number of steps, none included
            out.append(r"(?:/.*)?")
        elif part == "**":
            out.append(r".*")
        elif part == "*":
            out.append(r"[^/\[\]@]*")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + r"\Z")


@lru_cache(maxsize=4)
def load_rules(path: Path = CLASSES_FILE) -> tuple[Rule, ...]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DomainInvalid(f"cannot read the schema classes: {exc}", path=path) from None
    rules = []
    for i, entry in enumerate(data.get("rule", [])):
        pattern, cls, why = entry.get("path"), entry.get("class"), entry.get("why", "")
        if not pattern or cls not in CLASS_NAMES or not why:
            raise DomainInvalid(f"rule {i + 1} needs path, class (a, b, c or d) and why: {entry}", path=path)
        rules.append(Rule(pattern, cls, why, _compile(pattern), len(pattern.replace("*", "")),
                          tuple(entry.get("except_arches", ())), i))
    return tuple(rules)


# a value item: ``elem[@attr='v']`` (group 2 is ``@attr``) or ``elem[.='v']`` (group 2 is ``.``, the text)
_VALUE_ITEM = re.compile(r"(.*)\[(@[^=\]]+|\.)='.*'\]", re.S)


def _unvalued(value: re.Match[str]) -> str:
    """The item a value item's value belongs to: its attribute, or for a text value its element."""
    return value[1] if value[2] == "." else f"{value[1]}/{value[2]}"


class Classifier:
    """Item path -> the rule that classifies it (memoised: a domain's walk repeats the same paths)."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self._memo: dict[str, Rule | None] = {}
        # rules by the folder their literal start names ("/domain/devices/" for "/domain/devices/*/alias"): an
        # item is matched only against the rules of its own ancestor folders
        self._buckets: dict[tuple[bool, str], list[Rule]] = {}
        for r in rules:
            literal = re.split(r"\[[@.]", r.path.split("*", 1)[0], maxsplit=1)[0]
            valued = _VALUE_ITEM.fullmatch(r.path) is not None
            self._buckets.setdefault((valued, literal[:literal.rfind("/") + 1]), []).append(r)
        # value rules, by the attribute (``elem/@attr``) or element text (``elem/.``) they are about: only those
        # look at values at run time
        self._valued = [_compile(f"{m[1]}/{m[2]}") for r in rules if (m := _VALUE_ITEM.fullmatch(r.path))]
        self._valued_memo: dict[str, bool] = {}

    def valued(self, apath: str) -> bool:
        """Whether some rule names values of this attribute (``elem/@attr``) or element text (``elem/.``): its
        values are then classified one by one."""
        try:
            return self._valued_memo[apath]
        except KeyError:
            found = self._valued_memo[apath] = any(v.match(apath) for v in self._valued)
            return found

    def rule(self, path: str) -> Rule | None:
        """The most specific rule for an item; a value item (``elem[@attr='v']``, ``elem[.='v']``) is classified
        by the value rules, else as its attribute (or element)."""
        try:
            return self._memo[path]
        except KeyError:
            pass
        value = _VALUE_ITEM.fullmatch(path)
        best: Rule | None = None
        steps = (value[1] if value else path).split("/")
        for i in range(1, len(steps)):
            for r in self._buckets.get((value is not None, "/".join(steps[:i]) + "/"), ()):
                if r.regex.match(path) and (best is None or (r.weight, -r.order) > (best.weight, -best.order)):
                    best = r
        if best is None and value:
            best = self.rule(_unvalued(value))
        self._memo[path] = best
        return best

    def classify(self, items: list[Item]) -> list[tuple[Item, Rule | None]]:
        return [(it, self.rule(it.path)) for it in items]


@lru_cache(maxsize=1)
def classifier() -> Classifier:
    return Classifier(load_rules())


# --- the table ---------------------------------------------------------------------------------


def default_schema() -> Path | None:
    """libvirt 11.3's domain schema in ../shared (the corpus's), else the system's (libvirt0)."""
    from conformance.domain.schema import schema_dir
    from conformance.paths import libvirt_corpus_dir

    for folder in (libvirt_corpus_dir() / "schemas", schema_dir()):
        if (folder / "domain.rng").exists():
            return folder / "domain.rng"
    return None


@dataclass(frozen=True)
class Coverage:
    schema: Path
    rows: list[tuple[Item, Rule | None]]

    def counts(self) -> Counter[str]:
        return Counter(r.cls if r else "?" for _, r in self.rows)

    def share_abc(self) -> float:
        c = self.counts()
        return (c["a"] + c["b"] + c["c"]) / len(self.rows) if self.rows else 0.0

    def unclassified(self) -> list[Item]:
        return [it for it, r in self.rows if r is None]

    def headline(self) -> str:
        c = self.counts()
        total = len(self.rows)
        return (f"libvirt domain schema: {total} items, {c['a'] + c['b'] + c['c']} in (a)+(b)+(c) "
                f"({self.share_abc():.1%}): a {c['a']}, b {c['b']}, c {c['c']}; d {c['d']} unsupported yet"
                + (f"; {c['?']} UNCLASSIFIED" if c["?"] else ""))


def coverage(schema: Path | None = None) -> Coverage:
    path = schema or default_schema()
    if path is None:
        raise UnsupportedByQemu("libvirt's domain schema not found", hint="install Debian package libvirt0, or "
                                "keep ../shared/peer/libvirt-corpus-wide beside the checkout")
    return Coverage(path, classifier().classify(schema_items(path)))


def format_table(cov: Coverage, *, only: str | None = None) -> str:
    lines = [f"# {cov.schema}", f"{'class':5}  {'item':70}  rule / why"]
    for item, rule in cov.rows:
        cls = rule.cls if rule else "?"
        if only and cls not in only:
            continue
        why = f"{rule.path}: {rule.why}" if rule else "NO RULE (add one to conformance/argv/schema_classes.toml)"
        lines.append(f"{cls:5}  {item.path:70}  {why}")
    lines.append(cov.headline())
    return "\n".join(lines)


# --- no silent drops ---------------------------------------------------------------------------


def _tag(el: etree._Element) -> str:
    tag = el.tag
    if tag[0] == "{":
        ns, _, name = tag[1:].partition("}")
        prefix = NAMESPACES.get(ns)
        return f"{prefix}:{name}" if prefix else "*"  # another namespace: only <metadata> allows it
    return tag


def domain_items(root: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """The item paths a domain uses, each with the element it is on, in document order: elements and
    attributes, an attribute some rule names by value as its value item (``elem[@attr='value']``), and an
    element whose text some rule names by value also as its text's value item (``elem[.='value']``)."""
    valued = classifier().valued
    items: list[tuple[str, etree._Element]] = []  # listed by a plain recursion: no generator chain per level
    add = items.append

    def walk(el: etree._Element, path: str) -> None:
        add((path, el))
        if el.text is not None and valued(f"{path}/.") and el.text.strip():
            add((f"{path}[.='{el.text.strip()}']", el))
        for key, value in el.attrib.items():
            apath = f"{path}/@{key}"
            add(((f"{path}[@{key}='{value}']" if valued(apath) else apath), el))
        for c in el:
            if isinstance(c.tag, str):
                walk(c, f"{path}/{_tag(c)}")

    walk(root, f"/{_tag(root)}")
    return iter(items)


def refusal(root: etree._Element) -> tuple[str, etree._Element, Rule | None] | None:
    """The first item the domain uses that the builder refuses: of class d or c, or classified by no rule
    (outside libvirt's schema): its path, element and rule."""
    cl = classifier()
    os_type = root.find("os/type")
    arch = os_type.get("arch", "") if os_type is not None else ""
    for path, el in domain_items(root):
        rule = cl.rule(path)
        if rule is None or (rule.cls in "cd" and arch not in rule.except_arches):
            return path, el, rule
    return None


@lru_cache(maxsize=64)
def _cached_refusal(root: etree._Element) -> tuple[str, etree._Element, Rule | None] | None:
    return refusal(root)  # the static stages build one parsed domain for many fixtures: walked once


def check_domain(root: etree._Element | None, source: str) -> None:
    """Refuse a domain that uses an item of class d or c, or one no rule knows: one line naming its path."""
    found = _cached_refusal(root) if root is not None else None
    if found is None:
        return
    path, el, rule = found
    if rule is None:
        raise UnsupportedByQemu(f"unsupported: {path} is not in libvirt's domain schema", path=source,
                                line=el.sourceline, hint="check the element's spelling and place (virt-xml-validate)")
    if rule.cls == "d":
        raise UnsupportedByQemu(f"unsupported: {path} is not supported by the argv builder yet ({rule.why})",
                                path=source, line=el.sourceline)
    raise UnsupportedByQemu(f"unsupported configuration: {path}: {rule.why}", path=source, line=el.sourceline)
