"""Predicted against observed (conformance/prediction.py): the join of migrate and vmstate results, the
classification of each row and the rules' record, on a small set of recorded results."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from conformance.prediction import HeldResults, classify, hazards, join, rule_record, settle, summary
from conformance.report.html import write_report
from conformance.results.records import ResultWriter, read_results
from conformance.results.verdicts import failures
from tests.helpers.results import NEW, OLD, P1, V5, migrate_result, prediction_records, vmstate_result


def test_each_migration_joins_its_prediction_on_case_pair_and_machine() -> None:
    rows = {(r.case, r.migrate.qemu.version, r.migrate.peer.version if r.migrate.peer else "-", r.machine): r
            for r in join(prediction_records())}
    assert len(rows) == 6, "a row per migrate result, nothing else"
    assert rows[("q35-minimal", "10.0.2", "7.2.22", "pc-q35-7.2")].klass == "confirmed"
    assert rows[("q35-minimal", "10.0.2", "7.2.22", "pc-q35-5.2")].klass == "not confirmed"
    assert rows[("net-user", "7.2.22", "10.0.2", "pc-q35-7.2")].klass == "missed"
    assert rows[("q35-minimal", "7.2.22", "10.0.2", "pc-q35-7.2")].klass == "agree"
    assert rows[("q35-minimal", "7.2.22", "-", "pc-q35-7.2")].klass == "agree", "a build with itself joins"
    other = rows[("net-user", "10.0.2", "7.2.22", "pc-q35-7.2")]
    assert other.vmstate is None and other.klass == "unjudged", "another path of the same version is another build"
    confirmed = rows[("q35-minimal", "10.0.2", "7.2.22", "pc-q35-7.2")]
    assert confirmed.rules == ["P1", "V5"] and confirmed.direction == "backward"


def test_classification_table() -> None:
    assert classify("fail", "fail") == classify("known-bug", "known-bug") == "confirmed"
    assert classify("fail", "pass") == classify("fail", "not-reproduced") == "not confirmed"
    assert classify("pass", "fail") == classify("pass", "known-bug") == "missed"
    assert classify("pass", "pass") == "agree"
    assert classify(None, "fail") == classify("skip", "fail") == classify("fail", "skip") == "unjudged"
    assert classify("pass", "error") == "unjudged"


def test_hazards_split_on_rule_tags_only() -> None:
    found = hazards({"a": f"{V5}; {P1}", "b": "compatible", "c": "[V3] x: field y; then z differ"})
    assert [(d, t) for d, t, _ in found] == [("a", "V5"), ("a", "P1"), ("c", "V3")]
    assert found[2][2] == "[V3] x: field y; then z differ", "a ';' inside a reason does not split it"


def test_rule_record_and_summary() -> None:
    rows = join(prediction_records())
    record = {r.rule: (r.predicted, r.confirmed, r.not_confirmed) for r in rule_record(rows)}
    assert record == {"V5": (2, 1, 1), "P1": (1, 1, 0)}
    data = summary(prediction_records())
    assert data["classes"] == {"missed": 1, "not confirmed": 1, "confirmed": 1, "agree": 2, "unjudged": 1}
    assert data["missed"] == 1 and data["rows"] == 6
    assert json.loads(json.dumps(data)) == data, "plain JSON"


def test_report_renders_the_table_and_writes_prediction_json(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "run")
    for r in prediction_records():
        writer.write(r)
    page = write_report([writer.path], tmp_path / "out").read_text()
    section = page[page.index('<section id="prediction">'):]
    section = section[:section.index("</section>")]
    assert "10.0.2 x86_64 &lt;-&gt; 7.2.22 x86_64" in section or "7.2.22 x86_64 &lt;-&gt; 10.0.2 x86_64" in section
    assert section.count('class="k-missed"') == 1 and section.count('class="k-not-confirmed"') == 1
    assert "i8259/ltim" in section and "slirp instance id" in section
    assert "Missed breaks (predicted compatible, broke live): <b>1</b>" in section
    rules = section[section.index("The rules' record"):section.index("Missed breaks")]
    assert '<td class="mono">V5</td><td class="n">2</td><td class="n">1</td><td class="n">1</td>' in rules
    assert 'href="#m' in section, "the observed verdict links the migration matrix cell"
    data = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert data["classes"]["confirmed"] == 1


def test_no_table_without_both_stages(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "run")
    writer.write(migrate_result("q35-minimal", OLD, NEW, "pc-q35-7.2", "pass"))
    page = write_report([writer.path], tmp_path / "out").read_text()
    assert 'id="prediction"' not in page and not (tmp_path / "out" / "prediction.json").exists()


def test_a_hazard_the_live_migration_passed_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    """The verdict (prediction.settle): predicted V5, the same case, pair and machine type migrated and passed:
    a pass keeping its hazards as not confirmed, and its row 'not confirmed'; confirmed (the live run broke)
    or not migrated at all (vmstate alone): the hazard stays a fail."""
    held = [vmstate_result("q35-minimal", NEW, OLD, "pc-q35-5.2", {"isa-i8259": V5}),  # migrated, passed
            vmstate_result("q35-minimal", NEW, OLD, "pc-q35-7.2", {"isa-i8259": V5}),  # migrated, broke
            vmstate_result("q35-minimal", NEW, OLD, "pc-q35-6.2", {"isa-i8259": V5}),  # not migrated
            vmstate_result("q35-minimal", OLD, NEW, "pc-q35-5.2", {"isa-i8259": "compatible"})]
    live = [migrate_result("q35-minimal", NEW, OLD, "pc-q35-5.2", "pass"),
            migrate_result("q35-minimal", NEW, OLD, "pc-q35-7.2", "fail", "Unknown subsection i8259/ltim"),
            migrate_result("q35-minimal", OLD, NEW, "pc-q35-5.2", "pass")]
    writer = ResultWriter(tmp_path / "run")
    for r in live:
        writer.write(r)
    said: list[str] = []
    counts = HeldResults(writer)
    for r in held:
        counts.write(r)
    assert not (writer.path.read_text().count('"vmstate"')), "held until the live results are in"
    assert counts.flush(said.append) == Counter({"pass": 2, "fail": 2}) and failures(counts.flush()) == 0
    assert said == ["  vmstate: 1 predicted hazards not confirmed (the live migration passed): warnings, see the "
                    "report's predicted-against-observed table"]
    settled = {r.details["machine"] + r.qemu.version: r for r in read_results(writer.path) if r.stage == "vmstate"}
    warned = settled["pc-q35-5.210.0.2"]
    assert warned.verdict == "pass" and V5 in warned.details["not_confirmed"] and "not confirmed" in warned.reason
    assert settled["pc-q35-7.210.0.2"].verdict == "fail" and settled["pc-q35-6.210.0.2"].verdict == "fail"
    rows = {(r.machine, r.migrate.qemu.version): r for r in join(read_results(writer.path))}
    assert rows["pc-q35-5.2", "10.0.2"].klass == "not confirmed" and rows["pc-q35-5.2", "10.0.2"].rules == ["V5"]
    assert rows["pc-q35-7.2", "10.0.2"].klass == "confirmed" and rows["pc-q35-5.2", "7.2.22"].klass == "agree"
    assert settle([held[2]], live)[0].verdict == "fail", "no live migration for it: still a failure"


def test_conditional_subsections_are_shown_and_counted_apart() -> None:
    note = f"{V5} (conditional: sent only if the guest programmed the PIC level-triggered (ICW1 LTIM); ...)"
    v = vmstate_result("q35-minimal", NEW, OLD, "pc-q35-5.2", {"isa-i8259": "compatible"})
    v.details["conditional"] = {"isa-i8259": note}
    rows = join([v, migrate_result("q35-minimal", NEW, OLD, "pc-q35-5.2", "pass")])
    assert rows[0].klass == "agree" and rows[0].hazards == []
    assert rows[0].prediction_text.startswith("compatible; conditional (a break only if sent): isa-i8259: [V5]")
    assert [(r.rule, r.predicted, r.conditional) for r in rule_record(rows)] == [("V5", 0, 1)]


def test_each_hazard_names_the_known_bug_that_explains_it() -> None:
    """A row whose hazards two entries explain (the real pc-misc-rich 5.2.0 -> 7.2.22 prediction under
    pc-i440fx-2.4, tests/data/knownbugs/vmgenid-needs-fw-cfg-dma/) names each hazard's own bug, and a hazard no
    entry explains names none: one bug does not stand for the row."""
    import dataclasses

    from conformance.knownbugs.cli import read_records
    from tests.helpers import DATA

    record = next(r for r in read_records(DATA / "knownbugs" / "vmgenid-needs-fw-cfg-dma" / "results.jsonl")
                  if r.stage == "vmstate" and r.case == "pc-misc-rich" and r.verdict == "known-bug")
    other = "[P1] x-made-up: on on 5.2.0-x86_64, off on 7.2.22-x86_64 under pc-i440fx-2.4"
    devices = {**record.details["devices"], "pci-serial": other}
    unexplained = dataclasses.replace(record, case="pc-misc-rich-2", verdict="fail",
                                      details={**record.details, "devices": devices})
    assert record.qemu is not None and record.peer is not None
    lives = [migrate_result(c, record.qemu, record.peer, "pc-i440fx-2.4", "known-bug", "source: QEMU did not start")
             for c in ("pc-misc-rich", "pc-misc-rich-2")]
    rows = {r.case: r for r in join([record, unexplained, *lives])}
    named = {h["device"]: h["known_bug"] for h in rows["pc-misc-rich"].as_dict()["hazards"]}
    assert named == {"i2c-ddc": "edid-default-resolution-changed-no-compat", "vmcoreinfo": "vmgenid-needs-fw-cfg-dma",
                     "vmgenid": "vmgenid-needs-fw-cfg-dma"}
    assert rows["pc-misc-rich"].klass == rows["pc-misc-rich-2"].klass == "confirmed"
    text = rows["pc-misc-rich-2"].prediction_text
    assert "(known bug edid-default-resolution-changed-no-compat)" in text
    assert text.split("pci-serial: ")[1].startswith(other) and not text.endswith(")"), "its own hazard, no bug"
