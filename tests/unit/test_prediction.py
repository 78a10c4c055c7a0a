"""Predicted against observed (conformance/prediction.py): the join of migrate and vmstate results, the
classification of each row and the rules' record, on a small set of recorded results."""

from __future__ import annotations

import json
from pathlib import Path

from conformance.prediction import classify, hazards, join, rule_record, summary
from conformance.report.html import write_report
from conformance.results.records import ResultWriter
from tests.helpers.results import NEW, OLD, P1, V5, migrate_result, prediction_records


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
