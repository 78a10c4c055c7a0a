"""Predicted against observed: each live migration result beside the static prediction (stage ``vmstate``) of
the same case, arch, ordered pair of builds and machine type, classified, and each rule's record.

The join key is (case, arch, source build path and version, destination build path and version, machine
type): a migrate result's ``details.machine`` is the type both sides ran under, a vmstate result's the type
it judged. A migration of one build with itself has no ``peer``; it joins its build with itself (where the
prediction is "compatible" by construction, so any break there is ``missed``).

Classification of a row (a live migration result):

- ``confirmed``: predicted fail (a hazard), live fail or known-bug;
- ``not confirmed``: predicted fail, live pass: the guest may not have touched the device (a subsection
  whose ``needed()`` never held), or the rule is wrong;
- ``missed``: predicted pass, live fail or known-bug: a run-time fact the dump cannot show (slirp
  instance ids, the Arm CPU register list), or a rule that is missing;
- ``agree``: both pass;
- ``unjudged``: no prediction for it (the vmstate stage did not run or skipped), or the live run neither
  passed nor failed (skip, error, interrupted).

A known bug that did not reproduce (``not-reproduced``) means the migration went through: it counts as a
live pass. A vmstate ``known-bug`` (a hazard a known bug explains) counts as a predicted fail.

The verdict (``settle``): a predicted hazard does not fail ``run`` or ``qualify`` when the same case, pair
and machine type migrated live in the same run and passed: the vmstate result becomes a ``pass`` that keeps
its hazards (``details.not_confirmed``, a warning), and its row is "not confirmed". With no live pass for it
(``run --stages vmstate`` alone, or the live run failed) the hazard stays a ``fail``; a confirmed hazard is
the live failure itself. Conditional V5 notes (``details.conditional``: a subsection sent only if the guest
or a property makes QEMU send it) are warnings, not hazards: shown beside the prediction, counted apart.

The per-rule record counts hazards (one ``[TAG] reason`` of one device of one row): predicted, and of those
confirmed live (the row broke: the hazard may or may not be the cause) or not confirmed (it went through).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conformance.results.records import QemuBuild, StageResult

CLASSES = ("missed", "not confirmed", "confirmed", "agree", "unjudged")  # the table's order: surprises first
HIGHLIGHT = frozenset({"missed", "not confirmed"})
LIVE_FAIL = frozenset({"fail", "known-bug"})
LIVE_PASS = frozenset({"pass", "not-reproduced"})
PREDICTED_FAIL = frozenset({"fail", "known-bug"})
_TAG = re.compile(r"\[([A-Z]\d+)\]")
_SPLIT = re.compile(r";\s*(?=\[[A-Z]\d+\])")

BuildId = tuple[str, str]  # (path, version)
Key = tuple[str, str, BuildId, BuildId, str]  # (case, arch, source, destination, machine)


def build_id(q: QemuBuild | None) -> BuildId:
    return (q.path, q.version) if q is not None else ("", "")


def join_key(r: StageResult) -> Key:
    """The key a migrate result and its prediction share."""
    source = build_id(r.qemu)
    return (r.case, r.arch, source, build_id(r.peer) if r.peer else source, str(r.details.get("machine", "")))


def hazards(devices: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(device type, rule tag, reason) for every hazard of a vmstate result's ``details.devices``; a hazard
    without a tag (an older result) gets the tag ``?``."""
    out = []
    for device, value in devices.items():
        if value == "compatible":
            continue
        for part in _SPLIT.split(str(value)):
            tag = _TAG.match(part.strip())
            out.append((device, tag.group(1) if tag else "?", part.strip()))
    return out


def classify(predicted: str | None, observed: str) -> str:
    """One row's class from the prediction's verdict (None: no prediction) and the live verdict."""
    if predicted not in PREDICTED_FAIL and predicted != "pass":
        return "unjudged"
    if observed in LIVE_FAIL:
        return "confirmed" if predicted in PREDICTED_FAIL else "missed"
    if observed in LIVE_PASS:
        return "not confirmed" if predicted in PREDICTED_FAIL else "agree"
    return "unjudged"


@dataclass
class Row:
    """One live migration result and its prediction."""

    migrate: StageResult
    vmstate: StageResult | None
    klass: str
    hazards: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def case(self) -> str:
        return self.migrate.case

    @property
    def machine(self) -> str:
        return str(self.migrate.details.get("machine", ""))

    @property
    def direction(self) -> str:
        return str(self.migrate.details.get("direction", ""))

    @property
    def predicted(self) -> str:
        """``pass``, ``fail`` (hazards, also those the live run did not confirm: ``settle``), or what else the
        vmstate stage said (``skip``, ``none``)."""
        if self.vmstate is None:
            return "none"
        return "fail" if predicted_fail(self.vmstate) else self.vmstate.verdict

    @property
    def conditional(self) -> dict[str, str]:
        """Subsections sent only conditionally (warnings): {device: its notes}."""
        return dict(self.vmstate.details.get("conditional") or {}) if self.vmstate is not None else {}

    @property
    def hazard(self) -> bool:
        """The prediction names a hazard."""
        return self.predicted == "fail"

    @property
    def prediction_text(self) -> str:
        """The hazards (device: [TAG] reason), "compatible", or why there is no prediction."""
        if self.vmstate is None:
            return "no vmstate result"
        if self.hazard:
            known = self.explained
            return "; ".join(f"{device}: {reason}" + (f" (known bug {known[device]})" if device in known else "")
                             for device, _, reason in self.hazards) or self.vmstate.reason
        if self.predicted == "pass":
            text = "compatible" + (" (one build with itself)" if self.vmstate.details.get("same_build") else "")
            if self.conditional:
                text += "; conditional (a break only if sent): " + "; ".join(
                    f"{device}: {note}" for device, note in self.conditional.items())
            return text
        return f"{self.vmstate.verdict}: {self.vmstate.reason}"

    @property
    def explained(self) -> dict[str, str]:
        """{device: the known bug that explains its hazard}: each device's hazard is matched on its own (the
        vmstate stage's ``details.explained``), so a row's hazards may name several bugs, or some none."""
        return {str(k): str(v) for k, v in (self.vmstate.details.get("explained") or {}).items()} \
            if self.vmstate is not None else {}

    @property
    def rules(self) -> list[str]:
        return sorted({tag for _, tag, _ in self.hazards})

    def as_dict(self) -> dict[str, Any]:
        known = self.explained
        return {"case": self.case, "arch": self.migrate.arch, "machine": self.machine, "direction": self.direction,
                "source": _build(self.migrate.qemu), "destination": _build(self.migrate.peer or self.migrate.qemu),
                "predicted": self.predicted, "hazards": [{"device": d, "rule": t, "reason": r,
                                                          "known_bug": known.get(d, "")} for d, t, r in self.hazards],
                "observed": self.migrate.verdict, "observed_reason": self.migrate.reason, "class": self.klass,
                "conditional": self.conditional}


def _build(q: QemuBuild | None) -> dict[str, str]:
    return {"path": q.path, "version": q.version} if q is not None else {}


def join(records: Iterable[StageResult]) -> list[Row]:
    """A row per migrate result, with the vmstate result of the same key (the last one read wins)."""
    records = list(records)
    predictions = {join_key(r): r for r in records if r.stage == "vmstate"}
    rows = []
    for r in records:
        if r.stage != "migrate":
            continue
        v = predictions.get(join_key(r))
        found = hazards(v.details.get("devices") or {}) if v is not None else []
        rows.append(Row(r, v, classify(("fail" if predicted_fail(v) else v.verdict) if v is not None else None,
                                       r.verdict), found))
    return rows


def predicted_fail(v: StageResult) -> bool:
    """The vmstate result names a hazard: a fail, a known bug, or a pass that ``settle`` gave a hazard the
    live migration did not confirm."""
    return v.verdict in PREDICTED_FAIL or bool(v.details.get("not_confirmed"))


def settle(held: Iterable[StageResult], observed: Iterable[StageResult]) -> list[StageResult]:
    """The verdict of each vmstate result once the live results of the same run are in (``observed``): a
    ``fail`` whose case, pair and machine type migrated live and passed becomes a ``pass`` with its hazards
    kept under ``details.not_confirmed`` (a warning: the guest did not make QEMU send the state, or a rule is
    wrong); any other result is unchanged (no live run for it, or the live run broke: confirmed)."""
    passed = {join_key(r) for r in observed if r.stage == "migrate" and r.verdict in LIVE_PASS}
    out = []
    for v in held:
        if v.stage == "vmstate" and v.verdict == "fail" and join_key(v) in passed:
            bad = "; ".join(f"{k}: {x}" for k, x in (v.details.get("devices") or {}).items() if x != "compatible")
            v.details["not_confirmed"] = bad or v.reason or "hazards predicted"
            v.verdict = "pass"
            v.reason = f"predicted hazards not confirmed: the live migration passed (a warning): {v.reason or bad}"
        out.append(v)
    return out


class HeldResults:
    """A results writer for the vmstate stage that holds its results until the live stages of the same run
    have written theirs (``flush``: settled, then written): a run's verdict on a prediction needs both."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.path = writer.path
        self.held: list[StageResult] = []

    def write(self, result: StageResult) -> None:
        self.held.append(result)

    def flush(self, say: Any = None) -> Counter[str]:
        """Settle the held results against the live ones written so far, write them; their verdicts' counts."""
        from conformance.results.records import read_results

        observed = list(read_results(self.path)) if self.path.is_file() else []
        settled = settle(self.held, observed)
        for r in settled:
            self.writer.write(r)
        warned = sum(1 for r in settled if r.details.get("not_confirmed"))
        if warned and say is not None:
            say(f"  vmstate: {warned} predicted hazards not confirmed (the live migration passed): warnings, "
                "see the report's predicted-against-observed table")
        self.held = []
        return Counter(r.verdict for r in settled)


@dataclass
class RuleRecord:
    rule: str
    predicted: int = 0
    confirmed: int = 0
    not_confirmed: int = 0
    conditional: int = 0  # notes of subsections sent only if the guest or a property makes QEMU send them

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "predicted": self.predicted, "confirmed": self.confirmed,
                "not_confirmed": self.not_confirmed, "conditional": self.conditional}


def rule_record(rows: Iterable[Row]) -> list[RuleRecord]:
    """Per rule tag: hazards predicted, and how many of them were confirmed live or not (a hazard of an
    unjudged row counts as predicted only)."""
    record: dict[str, RuleRecord] = {}
    for row in rows:
        for _, tag, _ in row.hazards:
            rec = record.setdefault(tag, RuleRecord(tag))
            rec.predicted += 1
            rec.confirmed += row.klass == "confirmed"
            rec.not_confirmed += row.klass == "not confirmed"
        for _, tag, _ in hazards(row.conditional):
            record.setdefault(tag, RuleRecord(tag)).conditional += 1
    return [record[t] for t in sorted(record, key=lambda t: (t[0], int(t[1:]) if t[1:].isdigit() else 0))]


def summary(records: Iterable[StageResult]) -> dict[str, Any]:
    """The whole comparison as plain data (what ``prediction.json`` beside the report holds): counts per
    class, the per-rule record, the missed breaks' count and every row."""
    rows = join(records)
    classes = Counter(r.klass for r in rows)
    return {"rows": len(rows), "classes": {c: classes[c] for c in CLASSES},
            "rules": [r.as_dict() for r in rule_record(rows)], "missed": classes["missed"],
            "table": [r.as_dict() for r in rows]}
