#!/usr/bin/env python3
"""libvirt's domain schema classified (conformance/argv/schema_classes.toml), and how often libvirt's visible
x86_64/aarch64 test corpus uses what is still unsupported (class d).

    python3 benchmarks/schema_coverage.py [--corpus ../shared/peer/libvirt-corpus-wide]

Prints the table's headline, then each class-d rule the corpus uses with the number of corpus domains that
use it (the order in which to implement them), and the time the walk took; ``--all-d`` lists every class-d
rule, used or not, with the schema items it classifies and the corpus domains that use it. Needs ../shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from lxml import etree

from conformance.argv.schema_coverage import classifier, coverage, domain_items
from conformance.paths import libvirt_corpus_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=libvirt_corpus_dir())
    ap.add_argument("--all-d", action="store_true",
                    help="every class-d rule (what is still unsupported): schema items, corpus domains using it")
    ns = ap.parse_args()
    if not (ns.corpus / "index.json").exists():
        print(f"libvirt corpus not found at {ns.corpus} (it lives in ../shared beside the checkout)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    cov = coverage(ns.corpus / "schemas" / "domain.rng")
    walked = time.perf_counter() - started
    print(cov.headline())
    print(f"schema walked and classified in {walked:.2f} s")
    cl = classifier()
    used: Counter[str] = Counter()
    domains = refused = 0
    started = time.perf_counter()
    for case in json.loads((ns.corpus / "index.json").read_text())["cases"]:
        for var in case["variants"]:
            if var["tree"] != "libvirt-11.3.0":
                continue
            try:
                root = etree.parse(str(ns.corpus / var["input"])).getroot()
            except etree.XMLSyntaxError:
                continue
            domains += 1
            rules = {rule.path for path, _ in domain_items(root) if (rule := cl.rule(path)) and rule.cls == "d"}
            refused += bool(rules)
            used.update(rules)
    why = {r.path: r.why for r in cl.rules}
    print(f"{domains} corpus domains classified in {time.perf_counter() - started:.2f} s; {refused} use a "
          f"class-d item (refused)")
    if not ns.all_d:
        for path, count in used.most_common():
            print(f"{count:4d}  {path}  ({why[path]})")
        return 0
    items = Counter(rule.path for _, rule in cov.rows if rule is not None and rule.cls == "d")
    print(f"{'domains':>7}  {'items':>5}  class-d rule (still unsupported): why")
    for path in sorted(items, key=lambda p: (-used[p], -items[p], p)):
        print(f"{used[path]:7d}  {items[path]:5d}  {path}: {why[path]}")
    print(f"{len(items)} class-d rules, {sum(items.values())} schema items; {sum(1 for p in items if used[p])} "
          f"rules used by {refused} of {domains} corpus domains")
    return 0


if __name__ == "__main__":
    sys.exit(main())
