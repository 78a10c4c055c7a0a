"""No silent drops, over libvirt's whole visible x86_64/aarch64 corpus (../shared/peer/libvirt-corpus-wide):
every element and attribute of every domain is classified (conformance/argv/schema_classes.toml), a domain
that uses an item of class c or d is refused by the argv stage naming that item, and a domain the builder
builds uses only items it implements (a) or that have no argv effect (b)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from conformance.argv.batch import answer
from conformance.argv.schema_coverage import classifier, domain_items


@pytest.fixture(scope="module")
def domains(corpus: Path) -> list[tuple[str, Path, list[Path]]]:
    """(case, domain XML, the caps files of its outputs) for every 11.3.0 input."""
    index = json.loads((corpus / "index.json").read_text())
    out = []
    for case in index["cases"]:
        for var in case["variants"]:
            if var["tree"] != "libvirt-11.3.0":
                continue
            caps = sorted({corpus / o["caps_file"] for o in var["outputs"]
                           if o["kind"] in ("argv", "error") and o.get("caps_file")})
            out.append((case["name"], corpus / var["input"], caps))
    return out


def _root(path: Path) -> etree._Element | None:
    try:
        return etree.parse(str(path)).getroot()
    except etree.XMLSyntaxError:  # libvirt's malformed-XML cases: refused by the parser, nothing to classify
        return None


def test_every_item_of_every_domain_is_classified(domains: list[tuple[str, Path, list[Path]]]) -> None:
    cl = classifier()
    assert len(domains) >= 850
    missing = Counter(path for _, xml, _ in domains if (root := _root(xml)) is not None
                      for path, _ in domain_items(root) if cl.rule(path) is None)
    assert not missing, missing.most_common(20)


def test_domains_with_refused_items_fail_naming_the_item(domains: list[tuple[str, Path, list[Path]]]) -> None:
    """A domain that uses an item of class c or d is refused for every capability fixture it is scored on
    (by libvirt's own validation rule when one applies first, else naming the item); no argv is built
    without it."""
    cl = classifier()
    checked = named = 0
    for name, xml, caps_files in domains:
        root = _root(xml)
        if root is None:
            continue
        first = next(((p, cl.rule(p)) for p, _ in domain_items(root) if cl.rule(p).cls in "cd"), None)
        if first is None:
            continue
        for caps in caps_files:
            reply = answer({"domain": xml, "caps": caps})
            assert "error" in reply, f"{name} [{caps.name}] uses {first[0]} ({first[1].cls}) but built an argv"
            checked += 1
            named += first[0] in reply["error"]
    assert checked >= 15  # storage pools, ssh disks, s390/pSeries addresses, ... (fewer as d items get built)
    assert named >= checked // 2


def test_built_domains_use_only_handled_items(domains: list[tuple[str, Path, list[Path]]]) -> None:
    """Whatever the builder turns into an argv used only items of class a or b: the d items the corpus
    uses, with how many domains use each, are the list docs/libvirt-corpus.md keeps."""
    cl = classifier()
    used: Counter[str] = Counter()
    for name, xml, caps_files in domains:
        root = _root(xml)
        if root is None or not caps_files:
            continue
        classes = {p: cl.rule(p) for p, _ in domain_items(root)}
        reply = answer({"domain": xml, "caps": caps_files[-1]})
        if "argv" in reply:
            bad = {p: r.cls for p, r in classes.items() if r.cls in "cd"}
            assert not bad, f"{name}: built an argv though it uses {bad}"
        used.update({r.path for r in classes.values() if r.cls == "d"})
    assert used  # the network disk features and friends: refused, and counted
