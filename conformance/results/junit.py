"""JUnit XML for CI systems: one testcase per result, one testsuite per stage.

A testcase is named ``case[build]`` (``case[source->destination]`` for a migration) with the stage
as its classname; what a verdict becomes (failure, error, skipped, passed) comes from the verdict
table. A known bug is a skip whose message names the bug, and a suite property as well (the common
JUnit schemas have no per-testcase properties). The output validates against the Apache Ant JUnit
schema (tests/data/junit/JUnit.xsd).
"""

from __future__ import annotations

import re
import socket
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from conformance.machines import swept_machine
from conformance.results.records import QemuBuild, StageResult
from conformance.results.verdicts import verdict
from conformance.stages import BY_NAME, in_order

_NOT_XML = re.compile(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: object) -> str:
    """Text XML can hold: consoles and stderr carry control characters that XML 1.0 forbids."""
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", str(value))


def _build(q: QemuBuild | None, arch: str) -> str:
    return f"{q.version or '?'}-{q.arch or arch}" if q else arch or "?"


def testcase_name(r: StageResult) -> str:
    """By the stage table's pattern: ``teaming-q35[7.2.22-x86_64]``, or
    ``teaming-q35[7.2.22-x86_64->10.0.2-x86_64]`` for a pair stage (a migration), with ``@pc-q35-7.2`` when
    it ran under a machine type --machines gave; a static result on a
    stored fixture names the fixture's version. A stage the table does not know (an older run's) shows its
    peer when it has one."""
    row = BY_NAME.get(r.stage)
    pattern = row.junit_name if row else "{case}[{build}->{peer}]" if r.peer is not None else "{case}[{build}]"
    name = pattern.format(case=r.case, build=_build(r.qemu, r.arch), peer=_build(r.peer, r.arch))
    machine = swept_machine(r.details)  # planned per machine type (--machines all/REGEX): as the work item's id
    return f"{name.removesuffix(']')}@{machine}]" if machine else name


def to_junit(records: list[StageResult], *, hostname: str | None = None, when: datetime | None = None) -> bytes:
    """The JUnit document for these results (UTF-8 bytes)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S")
    host = hostname or socket.gethostname() or "localhost"
    by_stage: dict[str, list[StageResult]] = defaultdict(list)
    for r in records:
        by_stage[r.stage].append(r)
    order = in_order(by_stage)  # the stage table's pipeline order, then stages it does not know
    root = etree.Element("testsuites")
    for index, stage in enumerate(order):
        results = by_stage[stage]
        kinds = [verdict(r.verdict).junit for r in results]
        suite = etree.SubElement(root, "testsuite", {
            "name": stage, "package": "qemu-conformance", "id": str(index), "timestamp": stamp, "hostname": host,
            "tests": str(len(results)), "failures": str(kinds.count("failure")), "errors": str(kinds.count("error")),
            "skipped": str(kinds.count("skipped")), "time": f"{sum(r.duration_s for r in results):.3f}"})
        properties = etree.SubElement(suite, "properties")
        for r in results:
            _case(suite, r)
            bug = r.details.get("known_bug")
            if r.verdict == "known-bug" and isinstance(bug, dict):
                for one in [bug, *bug.get("also", [])]:  # the primary, then the others that explain it too
                    etree.SubElement(properties, "property", name="known-bug",
                                     value=_text(f"{testcase_name(r)}: {one['id']} ({one['title']})"))
            for flag in r.details.get("known_bugs", []):
                etree.SubElement(properties, "property", name="known-bug-by-version",
                                 value=_text(f"{testcase_name(r)}: {flag['id']} ({flag['title']})"))
        etree.SubElement(suite, "system-out").text = ""
        etree.SubElement(suite, "system-err").text = ""
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _case(suite: etree._Element, r: StageResult) -> None:
    case = etree.SubElement(suite, "testcase", name=_text(testcase_name(r)), classname=r.stage,
                            time=f"{r.duration_s:.3f}")
    kind = verdict(r.verdict).junit
    message = _text(r.reason or r.verdict)
    if kind == "failure":
        etree.SubElement(case, "failure", message=message, type=r.verdict).text = _text(_evidence(r))
    elif kind == "error":
        etree.SubElement(case, "error", message=message, type=r.verdict).text = _text(_evidence(r))
    elif kind == "skipped":
        etree.SubElement(case, "skipped", message=message)


def _evidence(r: StageResult) -> str:
    """The failure's body: the full reason and where its artefacts are."""
    lines = [str(r.details.get("full_reason") or r.reason)]
    lines += [f"{name}: {path}" for name, path in sorted(r.artifacts.items())]
    return "\n".join(lines)


def write_junit(records: list[StageResult], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_junit(records))
    return path
