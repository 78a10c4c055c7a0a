"""junit.xml: valid against the Apache Ant JUnit schema and readable by a JUnit parser from PyPI."""

from __future__ import annotations

from pathlib import Path

import junitparser
import pytest
from lxml import etree

from conformance.cli import main
from conformance.results import junit
from conformance.results.records import QemuBuild, StageResult
from conformance.results.verdicts import VERDICTS
from tests.helpers import DATA

SCHEMA = etree.XMLSchema(etree.parse(str(DATA / "junit" / "JUnit.xsd")))
Q72 = QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", "Debian 1:7.2+dfsg-7", "x86_64")
Q100 = QemuBuild("/opt/qemu-10.0/bin/qemu-system-x86_64", "10.0.2", "Debian 1:10.0.2", "x86_64")
BUG = {"id": "pcie-native-hotplug-plug-read-as-unplug", "title": "native PCIe hotplug never releases the primary"}


def _records() -> list[StageResult]:
    hostile = "console: <script>alert(1)</script> & \x1b[0m\x00 bell\x07"
    return [
        StageResult("q35-minimal", "boot", "pass", "booted", "x86_64", Q72, duration_s=1.25),
        StageResult("q35-minimal", "boot", "fail", hostile, "x86_64", Q100, duration_s=2.5,
                    artifacts={"console": "live/q35-minimal/console.log"}),
        StageResult("disk-sata", "boot", "error", "cannot prepare the boot: no such image", "x86_64", Q72),
        StageResult("teaming-no-substitute", "boot", "skip", "needs a real SR-IOV VF", "x86_64", Q72),
        StageResult("pc-minimal", "migrate", "interrupted", "interrupted (SIGINT): the run was stopped", "x86_64",
                    Q72, peer=Q72),
        StageResult("teaming-q35", "migrate", "known-bug", f"known bug {BUG['id']} ({BUG['title']}): waited",
                    "x86_64", Q72, peer=Q100, duration_s=17.5, details={"known_bug": BUG}),
        StageResult("teaming-q35", "migrate", "not-reproduced", "did not show with Debian", "x86_64", Q100, peer=Q72),
        StageResult("teaming-q35-hostdev", "argv", "pass", "", "x86_64", Q72, details={"known_bugs": [BUG]}),
    ]


def test_every_verdict_validates_against_the_schema_and_reads_back(tmp_path: Path) -> None:
    records = _records()
    assert {r.verdict for r in records} == set(VERDICTS)
    data = junit.to_junit(records, hostname="ci-host")
    SCHEMA.assertValid(etree.fromstring(data))
    path = tmp_path / "junit.xml"
    path.write_bytes(data)
    suites = {s.name: s for s in junitparser.JUnitXml.fromfile(str(path))}
    assert set(suites) == {"argv", "boot", "migrate"}
    boot = suites["boot"]
    assert (boot.tests, boot.failures, boot.errors, boot.skipped) == (4, 1, 1, 1)
    cases = {c.name: c for s in suites.values() for c in s}
    assert cases["q35-minimal[7.2.22-x86_64]"].is_passed and cases["q35-minimal[7.2.22-x86_64]"].time == 1.25
    failed = cases["q35-minimal[10.0.2-x86_64]"]
    assert isinstance(failed.result[0], junitparser.Failure) and failed.classname == "boot"
    assert "<script>alert(1)</script> &" in failed.result[0].message  # kept as text, escaped in the file
    assert b"<script>" not in data and b"&lt;script&gt;" in data
    assert isinstance(cases["disk-sata[7.2.22-x86_64]"].result[0], junitparser.Error)
    assert cases["teaming-no-substitute[7.2.22-x86_64]"].is_skipped
    known = cases["teaming-q35[7.2.22-x86_64->10.0.2-x86_64]"]
    assert known.is_skipped and BUG["id"] in known.result[0].message and BUG["title"] in known.result[0].message
    assert cases["teaming-q35[10.0.2-x86_64->7.2.22-x86_64]"].is_passed
    props = {(p.name, p.value) for p in suites["migrate"].properties()}
    assert ("known-bug", f"teaming-q35[7.2.22-x86_64->10.0.2-x86_64]: {BUG['id']} ({BUG['title']})") in props
    assert any(p.name == "known-bug-by-version" and BUG["id"] in p.value for p in suites["argv"].properties())


@pytest.mark.parametrize(("record", "name"), [
    (StageResult("c", "boot", "pass", "", "x86_64", Q72), "c[7.2.22-x86_64]"),
    (StageResult("c", "migrate", "pass", "", "x86_64", Q72, peer=Q100), "c[7.2.22-x86_64->10.0.2-x86_64]"),
    (StageResult("probe", "probe", "error", "", "aarch64"), "probe[aarch64]"),
])
def test_testcase_names(record: StageResult, name: str) -> None:
    assert junit.testcase_name(record) == name


def test_run_on_fixtures_writes_a_valid_junit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["run", "--stages", "parse,argv", "--caps", "4.2.0:x86_64", "--cases", "teaming-q35*", "-o", str(out)])
    doc = etree.parse(str(out / "junit.xml"))
    SCHEMA.assertValid(doc)
    names = doc.xpath("//testsuite[@name='argv']/testcase/@name")
    assert "teaming-q35-hostdev[4.2.0-x86_64]" in names
    flags = doc.xpath("//property[@name='known-bug-by-version']/@value")
    assert any("vfio-irqchip-notifier-unplug-segv" in v for v in flags)
