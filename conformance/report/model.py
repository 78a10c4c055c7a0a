"""What the report shows, as plain data: builds, the matrices, known bugs, capability drift.

Merged results go in; the page model comes out; the HTML is elsewhere (fragments.py for the cells,
report.html.j2 for the page). Verdict order, labels and failures are the verdict table's.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from conformance import prediction
from conformance.machines import swept_machine
from conformance.results.records import QemuBuild, StageResult, read_results
from conformance.results.verdicts import BY_NAME, FAILURES, TABLE, VERDICTS, worst
from conformance.stages import BUILD_STAGES, MATRIX_STAGES, STAGES, order
from conformance.stages import stage as stage_row

QUALIFY_STAGES = BUILD_STAGES  # about a build, not a case: summary and capability drift
FIXTURE_PREFIX = "fixture "  # QemuBuild.path of a static result on a stored fixture (no binary)
BUG_HOWS = ("reproduced", "not reproduced", "flagged by version", "fixed in package")  # how a result names a known bug
PYTEST_NOT_RUN = "skip"  # a pytest outcome, not a verdict: the verdict table's pytest column for "did not run"

EXCERPT_CHARS = 1500  # an inline excerpt: the tail of a log, console or transcript
EXCERPT_LINES = 20
LINE_CHARS = 240  # a longer line of an excerpt (a QMP reply) is cut
EXCERPT_RESULTS = 200  # at most this many results get excerpts read from disk (generation stays fast)
EXCERPT_ARTIFACTS = ("stderr", "console", "qmp")  # in this order, each with its source-/destination- forms
# a result without a problem links these artefacts (with their source-/destination- forms), when it has
# a VM folder: the folder holds the rest; a migration, shown twice as often, links fewer
QUIET_LINKS = ("argv", "domain", "console", "folder")
QUIET_MIGRATION_LINKS = ("console", "folder")
FAILURE_ROWS = 200  # rows of new failures in the summary before "N more in the matrix"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_URL_SAFE = "/:@!$&'()*+,;=-._~"  # kept as they are in an href; '#', '?', '%', spaces, quotes are encoded
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._+,=@~-]*")


# ---------------------------------------------------------------- builds


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:4]) or (0,)


def is_fixture(q: QemuBuild | None) -> bool:
    return q is not None and q.path.startswith(FIXTURE_PREFIX)


def build_key(q: QemuBuild | None, arch: str) -> str:
    """A build's identity: version, arch and package (the path when there is no package); a stored
    fixture is its own build, never merged with a binary of the same version."""
    if q is None:
        return arch or "?"
    label = f"QEMU {q.version or '?'} {q.arch or arch}".strip()
    if is_fixture(q):
        return f"{label} ({q.path})"
    return f"{label} ({q.package})" if q.package else f"{label} {q.path}".strip()


@dataclass
class Build:
    key: str
    version: str
    arch: str
    package: str
    path: str
    fixture: bool
    label: str = ""  # "7.2.22 x86_64", made unique among the report's builds
    short: str = ""  # the label without the arch (within one arch's migration tables)
    accels: set[str] = field(default_factory=set)
    accel_reason: str = ""
    stages: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    anchor: str = ""
    bugs: dict[str, tuple[set[str], int]] = field(default_factory=dict)  # bug id -> (how results named it, span)

    @property
    def bug_list(self) -> list[tuple[str, str]]:
        """(id, how) for each known bug of this build: the worst way first (reproduced, not reproduced,
        flagged), then the narrowest affected range."""
        ranked = sorted(self.bugs.items(), key=lambda kv: (min(BUG_HOWS.index(h) for h in kv[1][0]), kv[1][1], kv[0]))
        return [(bug, min(hows, key=BUG_HOWS.index)) for bug, (hows, _) in ranked]

    @property
    def sort_key(self) -> tuple[Any, ...]:
        return (self.fixture, self.arch, _version_key(self.version), self.package, self.path)

    @property
    def live(self) -> bool:
        return any(stage_row(s).live for s in self.stages if s in STAGES)  # a real binary ran

    @property
    def tested(self) -> bool:
        """Some stage ran (a build whose every result is a skip was not tested)."""
        return any(BY_NAME[name].pytest != PYTEST_NOT_RUN for name in self.counts)

    @property
    def qualified(self) -> bool:
        return not self.failures and self.tested

    @property
    def decision(self) -> str:
        if not self.failures and not self.tested:
            return "NOT TESTED"
        if self.live:
            return "QUALIFIED" if self.qualified else "NOT QUALIFIED"
        return "STATIC: OK" if self.qualified else "STATIC: FAILS"

    @property
    def chips(self) -> list[tuple[str, int]]:
        return [(v.name, self.counts[v.name]) for v in TABLE if self.counts[v.name]]

    @property
    def title(self) -> str:
        what = "stored fixture (static stages only, no binary)" if self.fixture else self.path
        return f"QEMU {self.version or '?'} {self.arch}\n{self.package or 'no package string'}\n{what}"


def _new_build(key: str, q: QemuBuild | None, arch: str) -> Build:
    q = q or QemuBuild(path="")
    fixture = is_fixture(q)
    return Build(key=key, version=q.version, arch=q.arch or arch, package=q.package,
                 path=q.path.removeprefix(FIXTURE_PREFIX) if fixture else q.path, fixture=fixture)


def _label_builds(builds: list[Build]) -> None:
    """``7.2.22 x86_64``; builds sharing that get their package (or path) too."""
    base = Counter((b.version, b.arch, b.fixture) for b in builds)
    for i, b in enumerate(builds):
        version = b.version or posixpath.basename(b.path) or "unknown build"  # a probe that failed: its binary
        other = b.package or b.path
        extra = f" ({other})" if other and b.version and base[(b.version, b.arch, b.fixture)] > 1 else ""
        b.short = version + extra
        b.label = " ".join(x for x in (version, b.arch) if x) + extra
        b.anchor = f"b{i}"


# ---------------------------------------------------------------- merge


def merge(result_files: list[Path]) -> tuple[list[StageResult], dict[int, Path]]:
    """All records, deduplicated by (case, build, peer build, stage, fixture, machine type); remembers which
    file each came from. A migration keys on its pair, so cross-build results never collapse into one, and
    on the machine type --machines gave it (one result per machine type); a vmstate prediction on the
    machine type it judged."""
    latest: dict[tuple[str, str, str, str, str, str], tuple[StageResult, Path]] = {}
    for path in result_files:
        for r in read_results(path):
            peer = build_key(r.peer, r.arch) if r.peer else ""
            # a prediction names the machine type it judged, however it was chosen: one per type
            machine = str(r.details.get("machine", "")) if r.stage == "vmstate" else swept_machine(r.details)
            latest[(r.case, build_key(r.qemu, r.arch), peer, r.stage, str(r.details.get("fixture", "")),
                    machine)] = (r, path)
    records = [r for r, _ in latest.values()]
    origin = {id(r): p for r, p in latest.values()}
    return records, origin


# ---------------------------------------------------------------- text and links


def clean(text: object) -> str:
    """Log text fit for a page: terminal escapes dropped, control characters shown as U+FFFD.
    (HTML escaping comes later, where the text is put in the page.)"""
    text = str(text)
    if not _CONTROL.search(text):  # most reasons: nothing to do
        return text
    text = _ANSI.sub("", text.replace("\r\n", "\n")).replace("\r", "\n")  # serial consoles end lines with CR LF
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", text)


def tail_text(text: str) -> str:
    """The last lines of a text, long lines cut, at most EXCERPT_CHARS."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")[-EXCERPT_LINES:]
    out = "\n".join(line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " ..." for line in lines)
    return ("..." + out[-EXCERPT_CHARS:]) if len(out) > EXCERPT_CHARS else out


def _tail_file(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4 * EXCERPT_CHARS))
            data = fh.read()
    except OSError:
        return None
    return tail_text(data.decode("utf-8", "replace"))


class Links:
    """Artefact paths (relative to their results file's folder) as hrefs relative to the report."""

    def __init__(self, report_dir: Path) -> None:
        self.report_dir = report_dir.resolve()
        self._prefix: dict[Path, str] = {}
        self._folder: dict[Path, str] = {}

    def folder(self, source: Path) -> str:
        """The results file's folder on disk (for reading excerpts)."""
        if source not in self._folder:
            self._folder[source] = str(source.parent.resolve())
        return self._folder[source]

    def href(self, source: Path, rel: str) -> str:
        if os.path.isabs(rel):
            path = os.path.relpath(rel, self.report_dir)
        else:
            prefix = self._prefix.get(source)
            if prefix is None:
                prefix = self._prefix[source] = os.path.relpath(self.folder(source), self.report_dir)
            path = posixpath.normpath(posixpath.join(prefix, rel))
        path = path.replace(os.sep, "/")
        href = path if _PLAIN_PATH.fullmatch(path) else quote(path, safe=_URL_SAFE)
        # a first segment with ':' would read as a URL scheme
        return f"./{href}" if ":" in href.split("/", 1)[0] else href


# ---------------------------------------------------------------- one result, as a drill-down shows it


def _bug(value: object) -> dict[str, str]:
    """A known bug as a result records it (a dict; older results: its id)."""
    if isinstance(value, dict):
        return {k: str(value.get(k, "")) for k in ("id", "title", "fixed", "affected", "concerns", "layer", "package")}
    return {"id": str(value), "title": "", "fixed": "", "affected": "", "concerns": "", "layer": "", "package": ""}


def bugs_of(r: StageResult) -> list[tuple[str, dict[str, str]]]:
    """(how, bug) for every known bug a result names: reproduced, not reproduced, flagged by version."""
    d = r.details
    out = []
    if d.get("known_bug"):
        out.append((BUG_HOWS[0], _bug(d["known_bug"])))
        also = d["known_bug"].get("also") if isinstance(d["known_bug"], dict) else None
        out += [(BUG_HOWS[0], _bug(b)) for b in also or []]  # other bugs that explain it as well
    out += [(BUG_HOWS[1], _bug(b)) for b in d.get("not_reproduced") or []]
    out += [(BUG_HOWS[2], _bug(b)) for b in d.get("known_bugs") or []]
    out += [(BUG_HOWS[3], _bug(b)) for b in d.get("fixed_in_package") or []]  # a distribution's backport
    return out


def bug_span(bug: dict[str, str]) -> int:
    """How many versions a bug's affected range spans (roughly): the narrower, the more it says about a
    version, so it is named first ("4.2.0..4.2.0" before "4.2.0..99.0.0"); unknown ranges last."""
    ends = [_version_key(v) for v in bug.get("affected", "").split("..") if v.strip()]
    if len(ends) != 2:
        return 1 << 30

    def number(v: tuple[int, ...]) -> int:
        v = (*v, 0, 0, 0)
        return v[0] * 10_000 + v[1] * 100 + v[2]

    return number(ends[1]) - number(ends[0])


def bug_facts(bug: dict[str, str], *, concerns: bool = True) -> list[str]:
    """A known bug's versions, fix and (optionally) configuration, as short phrases."""
    facts = [f"affects {bug['affected']}" if bug["affected"] else "", f"fixed: {bug['fixed']}" if bug["fixed"] else ""]
    if concerns and bug["concerns"]:
        facts.append(f"concerns {bug['concerns']}")
    facts += [f"fixed in package {bug['package']}" if bug.get("package") else "",
              f"data layer {bug['layer']}" if bug.get("layer") else ""]
    return [f for f in facts if f]


def bug_title(how: str, bug: dict[str, str]) -> str:
    parts = [f"known bug {bug['id']} ({how})", bug["title"], *bug_facts(bug)]
    return "\n".join(p for p in parts if p)


@dataclass
class View:
    """What a drill-down shows of one result (plain text; escaped when it is put in the page)."""

    r: StageResult
    where: str  # build label, or "source -> destination" for a migration
    label: str  # the verdict's label
    reason: str
    notable: bool  # a failure or a known bug: every artefact, excerpts, every fact
    links: list[tuple[str, str]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    bugs: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    excerpts: list[tuple[str, str]] = field(default_factory=list)
    argv: str = ""
    timeline: list[tuple[str, str]] = field(default_factory=list)  # (side, its steps in one line)
    anchor: str = ""  # the migration cell that shows it in full

    @property
    def verdict(self) -> str:
        return self.r.verdict

    @property
    def title(self) -> str:
        """One line for a chip's hover text."""
        head = f"{self.r.stage} {self.where}" if self.r.peer else self.r.stage
        return f"{head}: {self.label}" + (f" - {self.r.reason}" if self.r.reason else "")

    @property
    def short_title(self) -> str:
        """One line among several (a migrate chip's pairs): the reason only for a problem."""
        return f"{self.where}: {self.label}" + (f" - {self.r.reason}" if self.notable and self.r.reason else "")


def _facts(r: StageResult, notable: bool) -> list[str]:
    """Short lines: how it ran, what was checked (and, for a problem, what the live run changed)."""
    d = r.details
    how = []
    if r.accel:
        how.append(f"accelerator {r.accel}")
    if r.duration_s:
        how.append(f"took {r.duration_s:.1f} s")
    if d.get("machine"):
        how.append(f"machine type {d['machine']}" + (f" ({d['machine_from']})" if d.get("machine_from") else ""))
    if d.get("direction"):
        how.append(f"direction {d['direction']}")
    if d.get("layer"):  # a case of a user's data layer (--data, docs/data.md)
        how.append(f"case from data layer {d['layer']}")
    if d.get("machine_deprecated"):
        how.append(f"machine type deprecated in {', '.join(map(str, d['machine_deprecated']))} (a warning)")
    if notable:
        how += [f"{key} {d[key]}" for key in ("exit", "signal") if d.get(key)]
        how += [f"{side} {what}" for side, what in (d.get("exits") or {}).items()]
    facts = ["; ".join(str(h) for h in how)] if how else []
    stats = d.get("stats")
    if isinstance(stats, dict) and stats.get("total-time") is not None:
        ram = stats.get("ram-transferred")
        facts.append(f"total time {stats['total-time']} ms, downtime {stats.get('downtime', '?')} ms, "
                     f"setup {stats.get('setup-time', '?')} ms"
                     + (f", {ram / 2**20:.1f} MiB RAM sent" if isinstance(ram, int | float) else ""))
    lists: list[tuple[str, Any]] = [
        ("substituted", [f"{k}: {v}" for k, v in (d.get("substitutions") or {}).items()]),
        ("checked", d.get("checked")), ("checks", d.get("checks")), ("notes", d.get("notes"))]
    if notable:
        lists.append(("changed for the live run", d.get("changes")))
    if d.get("domain"):  # a user's own domain (run --domain): its file, what the stage changed, what it could not
        lists += [(f"domain {d['domain']}, changed", d.get("domain_changes") or ["nothing"]),
                  ("could not be substituted", d.get("domain_blockers"))]
    for label, items in lists:
        if items:
            facts.append(f"{label}: " + "; ".join(str(i) for i in items))
    bisect = d.get("bisect")
    if isinstance(bisect, dict) and bisect.get("tried"):  # conformance/live/bisect.py: the runs that named it
        facts.append(f"bisect ({bisect.get('runs')} runs, {bisect.get('seconds', '?')} s, folder "
                     f"{bisect.get('folder', '?')}): " + "; ".join(
                         f"{'+'.join(t.get('devices') or ['none'])}: {t.get('verdict')}" for t in bisect["tried"]))
    return [clean(f) for f in facts]


def _timeline(d: dict[str, Any]) -> list[tuple[str, str]]:
    """Each side's statuses and events in time order, one line per side."""
    steps: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for step in d.get("timeline") or []:
        if isinstance(step, dict) and isinstance(step.get("t"), int | float):
            steps[str(step.get("side", ""))].append((step["t"], str(step.get("status", ""))))
    for side, events in (d.get("events") or {}).items():
        for e in events or []:
            if not isinstance(e, dict) or e.get("event") == "MIGRATION" or not isinstance(e.get("t"), int | float):
                continue  # MIGRATION events are the statuses above
            what = str(e.get("event", ""))
            data = e.get("data")
            if isinstance(data, dict) and data:
                what += "(" + ", ".join(f"{k}={v}" for k, v in data.items()) + ")"
            steps[str(side)].append((e["t"], what))
    return [(side, clean(", ".join(f"{what} {t:.3f}" for t, what in sorted(steps[side], key=lambda s: s[0]))))
            for side in sorted(steps, key=lambda s: (s != "source", s))]


class Viewer:
    """Turns results into drill-down views; reads excerpts for the results that need them."""

    def __init__(self, origin: dict[int, Path], links: Links, labels: dict[str, str]) -> None:
        self.origin = origin
        self.links = links
        self.labels = labels  # build key -> label
        self.excerpted = 0
        self._views: dict[int, View] = {}

    def where(self, r: StageResult) -> str:
        label = self.labels.get(build_key(r.qemu, r.arch), "?")
        if not r.peer:
            return label
        machine = swept_machine(r.details)
        return f"{label} -> {self.labels.get(build_key(r.peer, r.arch), '?')}" + (f" @ {machine}" if machine else "")

    def view(self, r: StageResult) -> View:
        found = self._views.get(id(r))
        if found is not None:
            return found
        source = self.origin[id(r)]
        bugs = bugs_of(r)
        notable = r.verdict in FAILURES or any(how != BUG_HOWS[2] for how, _ in bugs)
        v = View(r=r, where=self.where(r), label=BY_NAME[r.verdict].label, notable=notable,
                 reason=clean(r.details.get("full_reason") or r.reason), facts=_facts(r, notable), bugs=bugs)
        names = sorted(r.artifacts)
        if not notable and any(n.endswith("folder") for n in names):  # a problem links every artefact
            names = [n for n in names if n.endswith(QUIET_MIGRATION_LINKS if r.peer else QUIET_LINKS)]
        v.links = [(name, self.links.href(source, r.artifacts[name])) for name in names]
        argv = r.details.get("argv")
        if argv and isinstance(argv, list) and not any(n.endswith("argv") for n in r.artifacts):
            v.argv = tail_text(shlex.join(str(a) for a in argv))
        if r.stage == "migrate":
            v.timeline = _timeline(r.details)
        if notable and self.excerpted < EXCERPT_RESULTS:
            self.excerpted += 1
            v.excerpts = self._excerpts(r, source)
        self._views[id(r)] = v
        return v

    def _excerpts(self, r: StageResult, source: Path) -> list[tuple[str, str]]:
        out = []
        for what in EXCERPT_ARTIFACTS:
            for name in (what, f"source-{what}", f"destination-{what}"):
                text = r.details.get(f"{name.replace('-', '_')}_tail")
                if text is None and name in r.artifacts:
                    text = _tail_file(os.path.join(self.links.folder(source), r.artifacts[name]))
                if text and str(text).strip():
                    out.append((f"{name} (last lines)", clean(tail_text(str(text)))))
        return out[:4]


# ---------------------------------------------------------------- the page's parts


@dataclass
class Chip:
    text: str
    verdict: str  # a verdict name: its class gives the colour
    title: str
    kind: str = "stage"  # stage | bug | flag


@dataclass
class Cell:
    """One cell of a matrix: its chips and the results its drill-down shows."""

    anchor: str
    heading: str
    chips: list[Chip]
    views: list[View]
    problem: bool
    full: bool = False  # migration cells show migrations in full; compatibility cells point to them


@dataclass
class Row:
    case: str
    cells: list[Cell | None]  # one per column

    @property
    def problem(self) -> bool:
        return any(c is not None and c.problem for c in self.cells)


@dataclass
class Pair:
    source: Build
    destination: Build
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def direction(self) -> str:
        """``same`` (one QEMU version), ``forward`` (older to newer: always promised) or ``backward`` (newer to
        older: promised for the machine types both have), as conformance/machines.py says."""
        src, dst = _version_key(self.source.version), _version_key(self.destination.version)
        return "same" if src == dst else "forward" if src < dst else "backward"

    @property
    def direction_title(self) -> str:
        return DIRECTION_TITLES[self.direction]


DIRECTION_TITLES = {
    "same": "same QEMU version on both sides",
    "forward": "forward: older QEMU to newer, promised by every QEMU",
    "backward": "backward: newer QEMU to older, promised for the newer build's versioned machine types the older has",
}


def _bug_chips(views: Iterable[View]) -> list[Chip]:
    """One chip per known bug a cell's results name, the worst first (reproduced, not reproduced, flagged)."""
    chips: dict[str, tuple[Chip, int]] = {}
    for v in views:
        for how, bug in v.bugs:
            if bug["id"] not in chips:
                chips[bug["id"]] = (Chip(bug["id"], v.verdict, bug_title(how, bug),
                                         "flag" if how == BUG_HOWS[2] else "bug"), bug_span(bug))
    ranked = [c for c, _ in sorted(chips.values(), key=lambda cs: (cs[0].kind == "flag",
                                                                  VERDICTS.index(cs[0].verdict), cs[1]))]
    if len(ranked) > 1:  # a cell stays compact: the first bug and a count
        rest = ranked[1:]
        ranked = [ranked[0], Chip(f"+{len(rest)}", rest[0].verdict, "\n\n".join(c.title for c in rest), rest[0].kind)]
    return ranked


def _is_problem(views: Iterable[View]) -> bool:
    return any(v.verdict in FAILURES or v.bugs for v in views)


@dataclass
class FailureGroup:
    """New failures of one stage with the same reason (one cause, as far as the text tells): one row,
    the cases and the builds (or pairs) it hit, each with the anchor of its first cell."""

    view: View  # the first
    count: int = 0
    cases: dict[str, str] = field(default_factory=dict)  # case -> anchor
    where: dict[str, str] = field(default_factory=dict)  # build or pair -> anchor


@dataclass
class PredictionRow:
    """One live migration beside its prediction (conformance/prediction.py), as the table shows it."""

    row: prediction.Row
    pair: str  # "source -> destination" (build labels)
    anchor: str  # the migration matrix cell of the live result


@dataclass
class PredictionGroup:
    """The predicted-against-observed table of one pair of builds, both directions (or one build with itself)."""

    title: str
    arch: str
    rows: list[PredictionRow]

    @property
    def counts(self) -> list[tuple[str, int]]:
        found = Counter(r.row.klass for r in self.rows)
        return [(c, found[c]) for c in prediction.CLASSES if found[c]]


@dataclass
class Page:
    builds: list[Build]
    matrix_builds: list[Build]
    stages: list[str]
    rows: list[Row]
    pairs: dict[tuple[str, str], Pair]
    pair_groups: list[dict[str, Any]]
    failures: list[FailureGroup]
    failures_total: int  # results, not groups
    known: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    totals: list[tuple[str, int]]
    count: int
    predictions: list[PredictionGroup] = field(default_factory=list)  # predicted against observed, per pair
    rules: list[prediction.RuleRecord] = field(default_factory=list)  # each vmstate rule's record
    prediction_classes: list[tuple[str, int]] = field(default_factory=list)  # rows per class, the table's order

    @property
    def matrix_groups(self) -> list[tuple[str, int]]:
        """The matrix's columns in runs of one arch (binaries, then stored fixtures): (label, columns)."""
        groups: list[tuple[str, int]] = []
        for b in self.matrix_builds:
            label = f"{b.arch} stored fixtures" if b.fixture else b.arch
            if groups and groups[-1][0] == label:
                groups[-1] = (label, groups[-1][1] + 1)
            else:
                groups.append((label, 1))
        return groups

    @property
    def missed(self) -> int:
        """Live breaks the prediction did not see."""
        return dict(self.prediction_classes).get("missed", 0)

    @property
    def live_builds(self) -> list[Build]:
        return [b for b in self.builds if not b.fixture]

    @property
    def fixture_builds(self) -> list[Build]:
        return [b for b in self.builds if b.fixture]


def build_page(records: list[StageResult], origin: dict[int, Path], output: Path) -> Page:
    """Everything the page shows, computed once."""
    keys = {id(r): build_key(r.qemu, r.arch) for r in records}
    peers = {id(r): build_key(r.peer, r.arch) for r in records if r.peer}
    builds: dict[str, Build] = {}
    for r in records:
        if keys[id(r)] not in builds:
            builds[keys[id(r)]] = _new_build(keys[id(r)], r.qemu, r.arch)
        if r.peer and peers[id(r)] not in builds:
            builds[peers[id(r)]] = _new_build(peers[id(r)], r.peer, r.arch)
    ordered = sorted(builds.values(), key=lambda b: b.sort_key)
    _label_builds(ordered)
    viewer = Viewer(origin, Links(output), {b.key: b.label + (" fixture" if b.fixture else "") for b in ordered})

    # per build: what ran, counts over every result it took part in (a migration counts for both sides)
    for r in records:
        for key in {keys[id(r)], peers.get(id(r), keys[id(r)])}:
            b = builds[key]
            b.stages.add(r.stage)
            b.counts[r.verdict] += 1
            if r.accel:
                b.accels.add(r.accel)
                b.accel_reason = b.accel_reason or str(r.details.get("accel_reason", ""))
            for how, bug in bugs_of(r):
                b.bugs.setdefault(bug["id"], (set(), bug_span(bug)))[0].add(how)
    for b in ordered:
        b.failures = sum(n for name, n in b.counts.items() if name in FAILURES)

    # the matrices: case -> build -> stage -> results; case -> (source, destination) -> result
    grid: dict[str, dict[str, dict[str, list[StageResult]]]] = \
        defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    # a migration row: the case, and the machine type --machines gave it ('' for the default choice)
    migrations: dict[tuple[str, str], dict[tuple[str, str], StageResult]] = defaultdict(dict)
    for r in records:
        if r.stage in QUALIFY_STAGES:
            continue
        src = keys[id(r)]
        grid[r.case][src][r.stage].append(r)
        if r.stage == "migrate":
            dst = peers.get(id(r), src)
            migrations[(r.case, swept_machine(r.details))][(src, dst)] = r
            if dst != src:
                grid[r.case][dst][r.stage].append(r)
    in_grid = {key for row in grid.values() for key in row}
    matrix_builds = [b for b in ordered if b.key in in_grid]
    ran = {r.stage for r in records}
    stages = [s for s in MATRIX_STAGES if s in ran]

    # migration cells first: the compatibility cells point to them
    pairs: dict[tuple[str, str], Pair] = {}
    for case_row in migrations.values():
        for (src, dst), r in case_row.items():
            pairs.setdefault((src, dst), Pair(builds[src], builds[dst])).counts[r.verdict] += 1
    pair_groups = _pair_groups(sorted(pairs, key=lambda p: (builds[p[0]].sort_key, builds[p[1]].sort_key)), builds)
    anchors: dict[int, str] = {}
    n = 0
    for g in pair_groups:
        for case, machine in sorted(migrations, key=lambda cm: (cm[0], _machine_key(cm[1]))):
            found = migrations[(case, machine)]
            if found.keys().isdisjoint(g["pairs"]):
                continue
            cells: list[Cell | None] = []
            for pair in g["pairs"]:
                r = found.get(pair)
                if r is None:
                    cells.append(None)
                    continue
                n += 1
                v = viewer.view(r)
                v.anchor = anchors[id(r)] = f"m{n}"
                chips = _bug_chips([v])
                if chips and chips[0].kind == "bug":  # the bug it names says more than its time
                    chips[0].title = f"{v.title}\n\n{chips[0].title}"
                else:  # the column names the pair
                    stats = r.details.get("stats") or {}
                    total = stats.get("total-time") if isinstance(stats, dict) else None
                    text = f"{total / 1000:.1f} s" if isinstance(total, int | float) else v.label
                    chips.insert(0, Chip(text, r.verdict, v.label + (f" - {r.reason}" if r.reason else "")))
                cells.append(Cell(v.anchor, f"{case}: {v.where}", chips, [v], _is_problem([v]), full=True))
            g["rows"].append(Row(f"{case} @ {machine}" if machine else case, cells))
            g["machines"] |= {machine} - {""}

    predictions, rules, classes = _predictions(records, builds, keys, peers, anchors)

    rows = []
    n = 0
    for case in sorted(grid):
        cells = []
        for b in matrix_builds:
            by_stage = grid[case].get(b.key)
            if not by_stage:
                cells.append(None)
                continue
            n += 1
            views, chips = [], []
            for stage in stages:
                results = by_stage.get(stage)
                if not results:
                    continue
                stage_views = [viewer.view(r) for r in results]
                views += stage_views
                title = "\n".join(v.title for v in stage_views) if stage != "migrate" else \
                    "migrate\n" + "\n".join(v.short_title for v in stage_views)
                chips.append(Chip(stage_row(stage).chip, worst(r.verdict for r in results), title))
            chips += _bug_chips(views)
            heading = f"{case} on {b.label}" + (" (stored fixture)" if b.fixture else "")
            cell = Cell(f"c{n}", heading, chips, views, _is_problem(views))
            for v in views:
                anchors.setdefault(id(v.r), cell.anchor)
            cells.append(cell)
        rows.append(Row(case, cells))

    # new failures: the verdict table's failures (a failure a known bug explains is not one)
    failures = sorted((r for r in records if r.verdict in FAILURES),
                      key=lambda r: (VERDICTS.index(r.verdict), r.case,  # a case's failures together
                                     order(r.stage),
                                     builds[keys[id(r)]].sort_key))
    groups: dict[tuple[str, str, str], FailureGroup] = {}
    for r in failures:
        v = viewer.view(r)
        group = groups.setdefault((r.verdict, r.stage, r.reason), FailureGroup(v))
        group.count += 1
        group.cases.setdefault(r.case, anchors.get(id(r), ""))
        group.where.setdefault(v.where, anchors.get(id(r), ""))
    # worst verdict first, then the cause that hit most
    verdicts = Counter(r.verdict for r in records)
    return Page(
        builds=ordered, matrix_builds=matrix_builds, stages=stages, rows=rows, pairs=pairs, pair_groups=pair_groups,
        failures=sorted(groups.values(), key=lambda g: (VERDICTS.index(g.view.verdict), -g.count))[:FAILURE_ROWS],
        failures_total=len(failures), known=_known_bugs(records, viewer, builds, keys, anchors),
        drift=_drift(records, builds, keys, viewer),
        totals=[(v.name, verdicts[v.name]) for v in TABLE if verdicts[v.name]], count=len(records),
        predictions=predictions, rules=rules, prediction_classes=classes)


def _predictions(records: list[StageResult], builds: dict[str, Build], keys: dict[int, str], peers: dict[int, str],
                 anchors: dict[int, str]) -> tuple[list[PredictionGroup], list[prediction.RuleRecord],
                                                   list[tuple[str, int]]]:
    """Predicted against observed, when the results hold both stages: a table per pair of builds (both
    directions; a build with itself on its own), rows by case, machine type, direction; the rules' record."""
    if not any(r.stage == "vmstate" for r in records) or not any(r.stage == "migrate" for r in records):
        return [], [], []
    joined = prediction.join(records)
    groups: dict[tuple[str, ...], list[PredictionRow]] = defaultdict(list)
    for row in joined:
        src = keys[id(row.migrate)]
        dst = peers.get(id(row.migrate), src)
        pair = f"{builds[src].short} -> {builds[dst].short}"
        groups[tuple(sorted({src, dst}, key=lambda k: builds[k].sort_key))].append(
            PredictionRow(row, pair, anchors.get(id(row.migrate), "")))
    out = []
    for members in sorted(groups, key=lambda m: (-len(m), [builds[k].sort_key for k in m])):  # pairs first
        title = " <-> ".join(builds[k].label for k in members) if len(members) > 1 else \
            f"{builds[members[0]].label} with itself"
        rows = sorted(groups[members], key=lambda r: (prediction.CLASSES.index(r.row.klass), r.row.case,
                                                       _machine_key(r.row.machine), r.pair))
        out.append(PredictionGroup(title, builds[members[0]].arch, rows))
    counts = Counter(r.klass for r in joined)
    return out, prediction.rule_record(joined), [(c, counts[c]) for c in prediction.CLASSES if counts[c]]


def _machine_key(machine: str) -> tuple[str, tuple[int, ...]]:
    """Machine types in family, then version order (pc-q35-2.4 before pc-q35-10.0)."""
    family, _, version = machine.rpartition("-")
    return (family, _version_key(version)) if family else (machine, ())


def _pair_groups(pair_order: list[tuple[str, str]], builds: dict[str, Build]) -> list[dict[str, Any]]:
    """Per arch: its sources (rows of the pair summary), destinations (columns) and pairs (per-case columns)."""
    groups: dict[str, dict[str, Any]] = {}
    for src, dst in pair_order:
        g = groups.setdefault(builds[src].arch, {"arch": builds[src].arch, "sources": [], "destinations": [],
                                                 "pairs": [], "rows": [], "machines": set()})
        for key, where in ((src, "sources"), (dst, "destinations")):
            if builds[key] not in g[where]:
                g[where].append(builds[key])
        g["pairs"].append((src, dst))
    for g in groups.values():
        g["destinations"].sort(key=lambda b: b.sort_key)
    return [groups[a] for a in sorted(groups)]


@dataclass
class BugRow:
    where: list[str]  # builds (or migration pairs) with the same cases
    cases: dict[str, list[tuple[str, str]]]  # how -> [(case, anchor of its cell)]


def _known_bugs(records: list[StageResult], viewer: Viewer, builds: dict[str, Build], keys: dict[int, str],
                anchors: dict[int, str]) -> list[dict[str, Any]]:
    """Per bug: its facts and, per build (or migration pair), the cases where it was reproduced, not
    reproduced, or flagged by version; builds with the same cases share a row."""
    bugs: dict[str, dict[str, Any]] = {}
    for r in records:
        for how, bug in bugs_of(r):
            entry = bugs.setdefault(bug["id"], {"bug": bug, "where": {}, "hows": Counter()})
            if not entry["bug"]["title"] and bug["title"]:
                entry["bug"] = bug
            sort = (builds[keys[id(r)]].sort_key, bool(r.peer), viewer.where(r))
            entry["where"].setdefault(sort, defaultdict(set))[how].add((r.case, anchors.get(id(r), "")))
            entry["hows"][how] += 1
    out = []
    for entry in bugs.values():
        rows: dict[tuple[Any, ...], BugRow] = {}
        for sort in sorted(entry["where"]):
            found = entry["where"][sort]
            cases = {how: sorted(found[how]) for how in BUG_HOWS if found.get(how)}
            same = tuple((how, tuple(c for c, _ in listed)) for how, listed in cases.items())
            rows.setdefault(same, BugRow([], cases)).where.append(sort[-1])
        out.append({"bug": entry["bug"], "rows": list(rows.values()),
                    "hows": [(how, entry["hows"][how]) for how in BUG_HOWS if entry["hows"][how]]})
    # reproduced bugs first, then not reproduced, then those only flagged by version; narrow ranges first
    out.sort(key=lambda e: (min(BUG_HOWS.index(how) for how, _ in e["hows"]), bug_span(e["bug"]), e["bug"]["id"]))
    return out


def _drift(records: list[StageResult], builds: dict[str, Build], keys: dict[int, str],
           viewer: Viewer) -> list[dict[str, Any]]:
    """Per build: the probe's counts and the capability comparisons, in plain words."""
    per: dict[str, dict[str, Any]] = {}
    against = {"caps-vs-stored": "the stored fixture of this version", "caps-vs-previous": "the previous version"}
    for r in records:
        if r.stage not in QUALIFY_STAGES:
            continue
        entry = per.setdefault(keys[id(r)], {"build": builds[keys[id(r)]], "probe": None, "diffs": []})
        v = viewer.view(r)
        if r.stage == "probe":
            entry["probe"] = v
            continue
        lost = r.details.get("lost") or {}
        entry["diffs"].append({
            "view": v, "against": against.get(r.case, r.case),
            "lost": [(clean(k), [clean(i) for i in items]) for k, items in lost.items()] if isinstance(lost, dict)
            else [],
            "not_compared": [clean(x) for x in r.details.get("not_compared") or []],
            "diff": clean(r.details.get("diff", "")),
        })
    for entry in per.values():
        entry["diffs"].sort(key=lambda d: d["view"].r.case, reverse=True)  # against the stored fixture first
    return [per[k] for k in sorted(per, key=lambda k: builds[k].sort_key)]
