#!/usr/bin/env python3
"""The QAPI schema check (conformance/argv/qapi_check.py) over libvirt's wide corpus.

    python benchmarks/qapi_corpus.py --replies DIR [--corpus ../shared/peer/libvirt-corpus-wide] [-v]

For every argv expectation of the corpus, on the QEMU of its caps fixture:
- libvirt's own expected command line (its ``.args``): libvirt's test validated every JSON option of it against
  the same schema, so a problem the check reports there is a bug of the check (comma syntax libvirt does not
  validate: a problem there is the check's or libvirt's, to read);
- the argv the builder writes for the same domain (conformance.argv.batch): a problem there is the builder's.

The corpus keeps libvirt's caps XML without the ``.replies`` files that hold the schema; ``--replies`` names the
folder with them, ``libvirt-X.Y.Z/caps_*.replies`` (from libvirt's release tarballs, tests/qemucapabilitiesdata).
Last line: ``qapi corpus: N problems in libvirt's args, M in the builder's (K argv checked)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections import Counter
from functools import cache
from pathlib import Path

from conformance.argv.batch import answer
from conformance.argv.qapi_check import OPTIONS, qapi_problems
from conformance.caps.libvirt_import import import_libvirt_caps
from conformance.caps.model import Capabilities
from conformance.caps.qapi_record import encode, record_from_schema, schema_from_replies

ROOT = Path(__file__).resolve().parent.parent


def _args(path: Path) -> list[str]:
    return shlex.split(path.read_text().replace("\\\n", " "))


def _kind(line: str) -> str:
    for words, kind in (("has no property", "unknown member"), ("requires property", "missing member"),
                        ("has no netdev type", "unknown branch"), ("has no blockdev driver", "unknown branch"),
                        ("has no chardev backend", "unknown branch"), ("has no object type", "unknown branch"),
                        ("for property", "unknown branch"), ("deprecated", "deprecated/unstable"),
                        ("unstable", "deprecated/unstable"), (" is ", "wrong type")):
        if words in line:
            return kind
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "peer" / "libvirt-corpus-wide")
    ap.add_argument("--replies", type=Path, required=True, help="folder of libvirt-X.Y.Z/caps_*.replies")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every problem")
    ns = ap.parse_args()
    index = json.loads((ns.corpus / "index.json").read_text())

    @cache
    def caps_for(caps_file: str) -> Capabilities | None:
        xml = ns.corpus / caps_file
        replies = ns.replies / Path(caps_file).parent.name / Path(caps_file).with_suffix(".replies").name
        if not replies.exists():
            return None
        caps = import_libvirt_caps(xml)
        return dataclasses.replace(caps, qapi_schema=encode(record_from_schema(schema_from_replies(replies))))

    checked = 0
    kinds: dict[str, Counter[str]] = {"libvirt": Counter(), "builder": Counter()}
    no_schema = set()
    for case in index["cases"]:
        for variant in case["variants"]:
            for out in variant["outputs"]:
                if out["kind"] != "argv" or out["arch"] not in ("x86_64", "aarch64"):
                    continue
                caps = caps_for(out["caps_file"])
                if caps is None:
                    no_schema.add(out["caps_file"])
                    continue
                reply = answer({"domain": str(ns.corpus / variant["input"]), "caps": str(ns.corpus / out["caps_file"])})
                sources = {"libvirt": _args(ns.corpus / out["file"]), "builder": reply.get("argv") or []}
                checked += 1
                for who, argv in sources.items():
                    for i in range(len(argv) - 1):
                        if argv[i] not in OPTIONS:
                            continue
                        for line in qapi_problems(argv[i], argv[i + 1], caps) or []:
                            kinds[who][_kind(line)] += 1
                            if ns.verbose:
                                print(f"{who}: {case['name']} ({caps.version} {caps.arch}): {line}")
    for who, counts in kinds.items():
        print(f"{who}: " + (", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "no problems"))
    if no_schema:
        print(f"not checked (no .replies): {', '.join(sorted(no_schema))}")
    print(f"qapi corpus: {sum(kinds['libvirt'].values())} problems in libvirt's args, "
          f"{sum(kinds['builder'].values())} in the builder's ({checked} argv checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
