"""The HTML report: merged results, a decision per build, the matrices, known bugs, drift, escaping."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

from conformance.report.html import write_report
from conformance.results.records import QemuBuild, ResultWriter, StageResult
from conformance.results.verdicts import TABLE
from tests.helpers import ROOT
from tests.helpers.results import every_verdict

BUILD = QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", "Debian 1:7.2", "x86_64")
NEW = QemuBuild("/opt/qemu-10.0/bin/qemu-system-x86_64", "10.0.2", "Debian 1:10.0.2", "x86_64")
FIXTURE = QemuBuild("fixture qemu-4.2.0-x86_64.xml", "4.2.0", "v4.2.0", "x86_64")
BUG = {"id": "vfio-irqchip-notifier-unplug-segv", "title": "QEMU segfaults when a VF is unplugged",
       "fixed": "0446f81217 (4.2.1, 5.0.0)", "affected": "4.2.0..4.2.0", "concerns": "a <hostdev> with <teaming>"}

WIDE = {"id": "vfio-realize-error-path-segv", "title": "a failing device_add vfio-pci kills QEMU",
        "fixed": "357bd7932a", "affected": "4.2.0..8.0.99", "concerns": "an assigned PCI device (<hostdev>)"}


def _write(folder: Path, *results: StageResult) -> Path:
    writer = ResultWriter(folder)
    for r in results:
        writer.write(r)
    return writer.path


def _text(page: str) -> str:
    """The page's text, tags dropped and entities decoded (what a reader sees)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_report_merges_shards_and_links_artifacts(tmp_path: Path) -> None:
    shard1, shard2 = tmp_path / "shard1", tmp_path / "shard2"
    (shard1 / "live/teaming-q35").mkdir(parents=True)
    (shard1 / "live/teaming-q35/console.log").write_text("BOOT-OK\n")
    _write(shard1,
           StageResult(case="teaming-q35", stage="boot", verdict="fail", arch="x86_64", qemu=BUILD, accel="tcg",
                       duration_s=2.0, reason="NIC net0: not in the guest",
                       artifacts={"console": "live/teaming-q35/console.log"},
                       details={"substitutions": {"hostdev0": "0000:03:07.1 -> vmxnet3"}}),
           StageResult(case="net-user-virtio", stage="boot", verdict="fail", arch="x86_64", qemu=BUILD,
                       reason="the first run failed"))
    # a later shard re-ran net-user-virtio: its record replaces the first
    _write(shard2, StageResult(case="net-user-virtio", stage="boot", verdict="pass", arch="x86_64", qemu=BUILD))
    page = write_report([shard1 / "results.jsonl", shard2 / "results.jsonl"], tmp_path / "out").read_text()
    assert 'href="../shard1/live/teaming-q35/console.log"' in page
    assert "substituted: hostdev0: 0000:03:07.1 -&gt; vmxnet3" in page
    assert "the first run failed" not in page, "the re-run replaced the failure"
    assert "BOOT-OK" in page, "a failure's console tail is inline"
    assert (tmp_path / "out" / "junit.xml").is_file()


def test_summary_decides_per_build_and_lists_new_failures_first(tmp_path: Path) -> None:
    results = _write(
        tmp_path / "run",
        StageResult(case="q35-minimal", stage="boot", verdict="pass", arch="x86_64", qemu=BUILD, accel="tcg"),
        StageResult(case="q35-minimal", stage="boot", verdict="fail", arch="x86_64", qemu=NEW, accel="tcg",
                    reason="guest never reported"),
        StageResult(case="teaming-q35", stage="boot", verdict="known-bug", arch="x86_64", qemu=BUILD,
                    reason="known bug x", details={"known_bug": BUG}),
        StageResult(case="teaming-q35", stage="argv", verdict="pass", arch="x86_64", qemu=FIXTURE,
                    details={"known_bugs": [BUG], "fixture": "4.2.0-x86_64"}))
    page = write_report([results], tmp_path / "out").read_text()
    text = _text(page)
    assert "NOT QUALIFIED: 10.0.2 x86_64" in text
    summary = text[text.index("NOT QUALIFIED"):text.index("Compatibility matrix")]
    assert re.search(r"QUALIFIED\s+7\.2\.22 x86_64", summary), "a known bug does not disqualify a build"
    assert re.search(r"NOT QUALIFIED\s+1 failure\(s\)\s+10\.0\.2 x86_64", summary)
    assert "STATIC: OK" in summary and "stored fixture" in summary
    assert "1 of 2 build(s) qualified" in summary
    assert re.search(r"7\.2\.22 x86_64 .*vfio-irqchip-notifier-unplug-segv\s+\(reproduced\)", summary, re.S)
    assert re.search(r"4\.2\.0 x86_64 .*vfio-irqchip-notifier-unplug-segv\s+\(flagged by version\)", summary, re.S)
    failures = summary[summary.index("New failures (1)"):]
    assert "guest never reported" in failures and "known bug x" not in failures
    assert page.index('id="summary"') < page.index('id="matrix"') < page.index('id="bugs"') < page.index('id="drift"')


def test_matrix_chips_and_known_bug_panel(tmp_path: Path) -> None:
    results = _write(
        tmp_path / "run",
        StageResult(case="teaming-q35-hostdev", stage="parse", verdict="pass", arch="x86_64", qemu=FIXTURE,
                    details={"fixture": "4.2.0-x86_64"}),
        StageResult(case="teaming-q35-hostdev", stage="argv", verdict="pass", arch="x86_64", qemu=FIXTURE,
                    details={"known_bugs": [WIDE, BUG], "fixture": "4.2.0-x86_64",
                             "argv": ["qemu", "-device", "vfio-pci"]}),
        StageResult(case="teaming-q35", stage="migrate", verdict="known-bug", arch="x86_64", qemu=NEW, peer=BUILD,
                    reason="known bug slirp", details={"known_bug": "slirp-instance-id-backward-migration"}),
        StageResult(case="teaming-q35", stage="boot", verdict="not-reproduced", arch="x86_64", qemu=BUILD,
                    reason="did not show", details={"not_reproduced": [BUG]}))
    page = write_report([results], tmp_path / "out").read_text()
    # a chip per stage, named by its letter, the known bug named in its own chip
    cell = page[page.index("<td class=\"case\">teaming-q35-hostdev"):]
    cell = cell[:cell.index("</tr>")]
    assert re.search(r'<span class="chip v-pass" title="parse: PASS">P</span>', cell)
    assert 'class="chip v-pass flag"' in cell and ">vfio-irqchip-notifier-unplug-segv<" in cell, \
        "the bug of 4.2.0 alone is named before one of 4.2.0 to 8.0"
    assert ">+1<" in cell and "failing device_add" in cell
    assert "qemu -device vfio-pci" in cell, "an argv without an artefact is inline"
    bugs = _text(page[page.index('id="bugs"'):page.index('id="drift"')])
    assert re.search(r"vfio-irqchip-notifier-unplug-segv .*fixed: 0446f81217", bugs, re.S)
    assert re.search(r"4\.2\.0 x86_64 fixture\s+teaming-q35-hostdev", bugs), "flagged by version on the fixture"
    assert re.search(r"7\.2\.22 x86_64\s+teaming-q35", bugs), "not reproduced on 7.2.22"
    assert "slirp-instance-id-backward-migration" in bugs and "10.0.2 x86_64 -> 7.2.22 x86_64" in bugs
    # the migration matrix: source x destination, per case
    migration = _text(page[page.index('id="migration"'):page.index('id="bugs"')])
    assert "-> 7.2.22 x86_64" in migration and "KNOWN BUG 1" in migration


def test_every_verdict_coloured_and_labelled_from_the_table(tmp_path: Path) -> None:
    results = _write(tmp_path / "run", *(
        StageResult(case=f"case-{v.name}", stage="boot", verdict=v.name, arch="x86_64", qemu=BUILD) for v in TABLE))
    page = write_report([results], tmp_path / "out").read_text()
    for v in TABLE:
        assert f".v-{v.name} {{ background: {v.colour}; }}" in page
        assert f'class="chip v-{v.name}' in page and v.label in page and html.escape(v.meaning) in page
    # the report spells no verdict out: it reads the table
    names = re.compile("[\"'](" + "|".join(re.escape(v.name) for v in TABLE) + ")[\"']")
    for source in (ROOT / "conformance" / "report").glob("*.*"):
        if source.suffix in (".py", ".j2"):
            code = [line for line in source.read_text().splitlines() if "pytest outcome" not in line]
            found = names.findall("\n".join(code))
            assert not found, f"{source.name} names verdicts {found}: use the verdict table"


def test_everything_from_the_data_is_escaped_and_nothing_can_run_or_load(tmp_path: Path) -> None:
    evil = "<script>window.pwned = 1</script> & <img src=x onerror=alert(1)>"
    folder = tmp_path / "run"
    (folder / "live").mkdir(parents=True)
    (folder / "live" / "console.log").write_text(f"boot\n{evil}\n\x1b[31mred\x1b[0m \x00nul\n")
    results = _write(
        folder,
        StageResult(case="teaming-q35", stage="boot", verdict="fail", arch="x86_64", accel="tcg",
                    qemu=QemuBuild("/usr/bin/qemu", "7.2.22", f"pkg {evil}", "x86_64"), reason=evil,
                    artifacts={"console": "live/console.log", "evil": 'live/a"b<c>#d?e%f g'},
                    details={"known_bug": {**BUG, "title": evil}, "checked": [evil]}),
        StageResult(case="caps-vs-stored", stage="caps", verdict="fail", arch="x86_64", reason=evil,
                    qemu=BUILD, details={"lost": {"devices": [evil]}, "diff": evil}))
    page = write_report([results], tmp_path / "out").read_text()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt; &amp; &lt;img" in page
    assert "\x1b" not in page and "\x00" not in page and "red" in page
    assert 'href="../run/live/a%22b%3Cc%3E%23d%3Fe%25f%20g"' in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp and "script-src 'none'" in csp.group(1) and "default-src 'none'" in csp.group(1)
    # self-contained: nothing is fetched (no src, no stylesheet link, no url() in the CSS)
    assert not re.search(r"<(script|link|iframe|object|embed|img)\b", page)
    assert "url(" not in page and "@import" not in page


def test_capability_drift_in_plain_words(tmp_path: Path) -> None:
    results = _write(
        tmp_path / "run",
        StageResult(case="probe", stage="probe", verdict="pass", arch="x86_64", qemu=BUILD,
                    details={"flags": 102, "machines": 59, "types": 614}),
        StageResult(case="caps-vs-stored", stage="caps", verdict="fail", arch="x86_64", qemu=BUILD,
                    reason="against 7.2.22: 1 device removed (qxl-vga)", artifacts={"diff": "caps/diff.txt"},
                    details={"lost": {"devices": ["qxl-vga"]}, "diff": "devices: +0 -1\n  - qxl-vga",
                             "not_compared": []}),
        StageResult(case="caps-vs-previous", stage="caps", verdict="pass", arch="x86_64", qemu=BUILD,
                    reason="since 7.2.0: 1 property added", details={"lost": {}, "diff": "+ hpet"}))
    text = _text(write_report([results], tmp_path / "out").read_text())
    drift = text[text.rindex("Capability drift"):]
    assert "102 capability flags" in drift and "59 machine types" in drift
    assert re.search(r"against the stored fixture of this version:\s+against 7.2.22: 1 device removed", drift)
    assert "lost devices: qxl-vga" in drift
    assert re.search(r"against the previous version:\s+since 7.2.0: 1 property added", drift)
    assert drift.index("stored fixture of this version") < drift.index("the previous version")


def test_a_build_that_ran_nothing_is_not_qualified(tmp_path: Path) -> None:
    results = _write(
        tmp_path / "run",
        StageResult(case="q35-minimal", stage="boot", verdict="skip", arch="x86_64", qemu=NEW, reason="no guest"),
        StageResult(case="probe", stage="probe", verdict="error", reason="ProbeFailed: no QMP greeting",
                    qemu=QemuBuild("/opt/broken/qemu-system-x86_64")))
    text = _text(write_report([results], tmp_path / "out").read_text())
    assert re.search(r"NOT TESTED\s+10\.0\.2 x86_64", text)
    assert re.search(r"NOT QUALIFIED\s+1 failure\(s\)\s+qemu-system-x86_64", text), "a failed probe names its binary"
    assert "0 of 2 build(s) qualified" in text


def test_new_failures_with_the_same_reason_share_a_row(tmp_path: Path) -> None:
    same = "destination exit code 1: error while loading state for instance 0x0 of device 'cpu'"
    results = _write(tmp_path / "run", *(
        StageResult(case=case, stage="migrate", verdict="fail", arch="x86_64", qemu=BUILD, peer=NEW, reason=same)
        for case in ("balloon-rng", "disk-scsi-raw", "virt-minimal")),
        StageResult(case="pc-minimal", stage="boot", verdict="fail", arch="x86_64", qemu=NEW, reason="no heartbeat"))
    page = write_report([results], tmp_path / "out").read_text()
    table = page[page.index('<table class="failures">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 3, "a header and two causes"
    assert table.index("x3") < table.index("no heartbeat"), "the biggest cause first"
    assert all(f">{case}</a>" in table for case in ("balloon-rng", "disk-scsi-raw", "virt-minimal"))
    assert table.count("7.2.22 x86_64 -&gt; 10.0.2 x86_64</a>") == 1


class _Balance(HTMLParser):
    """Every element the page opens, it closes, in order (void elements aside)."""

    VOID = frozenset({"meta", "br", "input", "img", "hr", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, tuple[int, int]]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append((tag, self.getpos()))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        opened, where = self.stack.pop() if self.stack else ("nothing", (0, 0))
        if opened != tag:
            self.errors.append(f"</{tag}> at {self.getpos()} closes <{opened}> of {where}")


def test_page_is_well_formed(tmp_path: Path) -> None:
    page = write_report([every_verdict(tmp_path / "results")], tmp_path / "out").read_text()
    checker = _Balance()
    checker.feed(page)
    assert not checker.errors and not checker.stack, (checker.errors[:3], checker.stack[:3])


def test_a_record_line_is_the_same_as_a_deep_copy_would_write() -> None:
    """StageResult.to_json writes its fields without copying them (the copy cost a cached vmstate run a third
    of its time): the line is what asdict gave, a dataclass inside details included, and details untouched."""
    import json
    from dataclasses import asdict

    from conformance.results.records import QemuBuild, StageResult

    build = QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", arch="x86_64")
    details = {"pair": [1, 2], "nested": {"peer": QemuBuild("/q", "10.0.2")}}
    result = StageResult("c", "vmstate", "fail", "two\nlines", arch="x86_64", qemu=build, details=details,
                         duration_s=1.23456)
    line = json.loads(result.to_json())
    expected = asdict(result) | {"duration_s": 1.235}
    assert line == json.loads(json.dumps(expected))
    assert line["details"]["nested"]["peer"]["version"] == "10.0.2"
    assert isinstance(details["nested"]["peer"], QemuBuild)  # the caller's details are not rewritten
