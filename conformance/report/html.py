"""Write the HTML report: a release decision at a glance.

Top to bottom: the summary (each build QUALIFIED or not, new failures first), the compatibility
matrix (cases x builds, a chip per stage), the migration matrix (source x destination build), the
known bugs by build, capability drift, and a legend. Every cell opens a drill-down (<details>) with
the reason, the artefacts as links relative to the report, and short excerpts of what went wrong.

Results from several runs (CI shards, machines) merge: later records of the same (case, build,
stage) replace earlier ones. Verdict order, colours, labels and what counts as a failure come from
the verdict table (conformance/results/verdicts.py) only.

The page is one self-contained file: inline CSS, no script at all, and a Content-Security-Policy
that forbids scripts and every network fetch, so nothing in the data can run or load, even if it
slipped past the (automatic) escaping.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from conformance.results.junit import write_junit
from conformance.results.records import QemuBuild, StageResult, read_results
from conformance.results.verdicts import BY_NAME, FAILURES, TABLE, VERDICTS, worst

STAGE_ORDER = ("probe", "caps", "parse", "argv", "boot", "migrate")
MATRIX_STAGES = ("parse", "argv", "boot", "migrate")  # chips of a compatibility cell, in this order
QUALIFY_STAGES = ("probe", "caps")  # about a build, not a case: summary and capability drift
FIXTURE_PREFIX = "fixture "  # QemuBuild.path of a static result on a stored fixture (no binary)

EXCERPT_CHARS = 1500  # an inline excerpt: the tail of a log, console or transcript
EXCERPT_LINES = 20
EXCERPT_RESULTS = 200  # at most this many results get excerpts read from disk (generation stays fast)
EXCERPT_ARTIFACTS = ("stderr", "console", "qmp")  # in this order, with their source-/destination- forms
LIST_LIMIT = 8  # case names shown in a known-bug row before "+N more"
FAILURE_ROWS = 300  # new failures listed in the summary before "N more in the matrix"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_URL_SAFE = "/:@!$&'()*+,;=-._~"  # kept as they are in an href; '#', '?', '%', spaces, quotes are encoded


# ---------------------------------------------------------------- builds


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:4]) or (0,)


def _is_fixture(q: QemuBuild | None) -> bool:
    return q is not None and q.path.startswith(FIXTURE_PREFIX)


def _build_key(r: StageResult) -> str:
    """A build's identity: version, arch and package (the path when there is no package); a stored
    fixture is its own build, never merged with a binary of the same version."""
    return _key(r.qemu, r.arch)


def _key(q: QemuBuild | None, arch: str) -> str:
    if q is None:
        return arch or "?"
    label = f"QEMU {q.version or '?'} {q.arch or arch}".strip()
    if _is_fixture(q):
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
    accels: set[str] = field(default_factory=set)
    accel_reason: str = ""
    stages: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    anchor: str = ""

    @property
    def sort_key(self) -> tuple[Any, ...]:
        return (self.fixture, self.arch, _version_key(self.version), self.package, self.path)

    @property
    def live(self) -> bool:
        return bool(self.stages & {"probe", "boot", "migrate"})

    @property
    def decision(self) -> str:
        if self.live:
            return "NOT QUALIFIED" if self.failures else "QUALIFIED"
        return "STATIC: FAILS" if self.failures else "STATIC: OK"

    @property
    def qualified(self) -> bool:
        return not self.failures

    @property
    def chips(self) -> list[tuple[str, int]]:
        return [(v.name, self.counts[v.name]) for v in TABLE if self.counts[v.name]]

    @property
    def title(self) -> str:
        what = "stored fixture (static stages only, no binary)" if self.fixture else self.path
        return f"QEMU {self.version or '?'} {self.arch}\n{self.package or 'no package string'}\n{what}"


def _new_build(key: str, q: QemuBuild | None, arch: str) -> Build:
    q = q or QemuBuild(path="")
    return Build(key=key, version=q.version, arch=q.arch or arch, package=q.package,
                 path=q.path.removeprefix(FIXTURE_PREFIX) if _is_fixture(q) else q.path, fixture=_is_fixture(q))


def _label_builds(builds: list[Build]) -> None:
    """``7.2.22 x86_64``; builds sharing that get their package (or path) too."""
    base = Counter((b.version, b.arch, b.fixture) for b in builds)
    for i, b in enumerate(builds):
        b.label = f"{b.version or '?'} {b.arch}".strip()
        if base[(b.version, b.arch, b.fixture)] > 1:
            b.label += f" ({b.package or b.path})"
        b.anchor = f"b{i}"


# ---------------------------------------------------------------- merge


def merge(result_files: list[Path]) -> tuple[list[StageResult], dict[int, Path]]:
    """All records, deduplicated by (case, build, peer build, stage, fixture); remembers which file each
    came from. A migration keys on its pair, so cross-build results never collapse into one."""
    latest: dict[tuple[str, str, str, str, str], tuple[StageResult, Path]] = {}
    for path in result_files:
        for r in read_results(path):
            peer = _key(r.peer, r.arch) if r.peer else ""
            latest[(r.case, _build_key(r), peer, r.stage, str(r.details.get("fixture", "")))] = (r, path)
    records = [r for r, _ in latest.values()]
    origin = {id(r): p for r, p in latest.values()}
    return records, origin


# ---------------------------------------------------------------- text and links


def clean(text: object) -> str:
    """Log text fit for a page: terminal escapes dropped, control characters shown as U+FFFD.
    (HTML escaping is jinja's: autoescape is on.)"""
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", _ANSI.sub("", str(text).replace("\r\n", "\n")))


def _tail_text(text: str) -> str:
    lines = text.rstrip("\n").split("\n")[-EXCERPT_LINES:]
    out = "\n".join(lines)
    return ("..." + out[-EXCERPT_CHARS:]) if len(out) > EXCERPT_CHARS else out


def _tail_file(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4 * EXCERPT_CHARS))
            data = fh.read()
    except OSError:
        return None
    return _tail_text(data.decode("utf-8", "replace"))


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
            if source not in self._prefix:
                self._prefix[source] = os.path.relpath(self.folder(source), self.report_dir)
            path = posixpath.normpath(posixpath.join(self._prefix[source], rel))
        href = quote(path.replace(os.sep, "/"), safe=_URL_SAFE)
        # a first segment with ':' would read as a URL scheme
        return f"./{href}" if ":" in href.split("/", 1)[0] else href


# ---------------------------------------------------------------- one result, as the page shows it


def _bug(value: object) -> dict[str, str]:
    """A known bug as a result records it (a dict; older results: its id)."""
    if isinstance(value, dict):
        return {k: str(value.get(k, "")) for k in ("id", "title", "fixed", "affected", "concerns")}
    return {"id": str(value), "title": "", "fixed": "", "affected": "", "concerns": ""}


def bugs_of(r: StageResult) -> list[tuple[str, dict[str, str]]]:
    """(how, bug) for every known bug a result names: reproduced, not reproduced, flagged by version."""
    out = []
    if r.details.get("known_bug"):
        out.append(("reproduced", _bug(r.details["known_bug"])))
    out += [("not reproduced", _bug(b)) for b in r.details.get("not_reproduced") or []]
    out += [("flagged by version", _bug(b)) for b in r.details.get("known_bugs") or []]
    return out


def _bug_title(how: str, bug: dict[str, str]) -> str:
    parts = [f"known bug {bug['id']} ({how})", bug["title"]]
    if bug["affected"]:
        parts.append(f"affects {bug['affected']}")
    if bug["fixed"]:
        parts.append(f"fixed: {bug['fixed']}")
    if bug["concerns"]:
        parts.append(f"concerns {bug['concerns']}")
    return "\n".join(p for p in parts if p)


@dataclass
class View:
    """What a drill-down shows of one result."""

    r: StageResult
    where: str  # build label, or "source -> destination" for a migration
    label: str
    reason: str
    links: list[tuple[str, str]]
    facts: list[str]
    bugs: list[tuple[str, dict[str, str]]]
    excerpts: list[tuple[str, str]] = field(default_factory=list)
    argv: str = ""
    timeline: list[tuple[str, str, str]] = field(default_factory=list)
    anchor: str = ""  # the migration cell that holds the full drill-down

    @property
    def verdict(self) -> str:
        return self.r.verdict

    @property
    def title(self) -> str:
        """One line per result for a chip's hover text."""
        return f"{self.r.stage} {self.where}: {self.label}" + (f" - {self.r.reason}" if self.r.reason else "")


def _facts(r: StageResult) -> list[str]:
    d = r.details
    facts = []
    if r.accel:
        facts.append(f"accelerator {r.accel}" + (f" ({d['accel_reason']})" if d.get("accel_reason") else ""))
    if r.duration_s:
        facts.append(f"took {r.duration_s:.1f} s")
    if d.get("machine"):
        facts.append(f"machine type {d['machine']}")
    stats = d.get("stats") or {}
    if isinstance(stats, dict) and stats.get("total-time") is not None:
        ram = stats.get("ram-transferred")
        facts.append(f"total time {stats['total-time']} ms, downtime {stats.get('downtime', '?')} ms, "
                     f"setup {stats.get('setup-time', '?')} ms"
                     + (f", {int(ram) / 2**20:.1f} MiB RAM sent" if isinstance(ram, int | float) else ""))
    for hostdev, what in (d.get("substitutions") or {}).items():
        facts.append(f"substituted {hostdev}: {what}")
    for key, what in (("exit", "exit"), ("signal", "signal")):
        if d.get(key):
            facts.append(f"{what}: {d[key]}")
    for side, what in (d.get("exits") or {}).items():
        facts.append(f"{side}: {what}")
    facts += [f"checked {c}" for c in d.get("checked") or []]
    facts += [f"check: {c}" for c in d.get("checks") or []]
    facts += [f"note: {n}" for n in d.get("notes") or []]
    facts += [f"changed: {c}" for c in d.get("changes") or []]
    return [clean(f) for f in facts]


def _timeline(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Both sides' statuses and events in time order: (time, side, what)."""
    rows: list[tuple[float, str, str]] = []
    for step in d.get("timeline") or []:
        if isinstance(step, dict) and isinstance(step.get("t"), int | float):
            rows.append((step["t"], str(step.get("side", "")), f"status {step.get('status', '')}"))
    for side, events in (d.get("events") or {}).items():
        for e in events or []:
            if not isinstance(e, dict) or e.get("event") == "MIGRATION" or not isinstance(e.get("t"), int | float):
                continue  # MIGRATION events are the statuses above
            data = e.get("data")
            what = str(e.get("event", ""))
            if data:
                what += " " + ", ".join(f"{k}={v}" for k, v in data.items()) if isinstance(data, dict) else f" {data}"
            rows.append((e["t"], str(side), what))
    rows.sort(key=lambda row: row[0])
    return [(f"{t:.3f} s", side, clean(what)) for t, side, what in rows]


class Viewer:
    """Turns results into drill-down views; reads excerpts for the results that need them."""

    def __init__(self, origin: dict[int, Path], links: Links, labels: dict[str, str]) -> None:
        self.origin = origin
        self.links = links
        self.labels = labels  # build key -> label
        self.excerpted = 0
        self._views: dict[int, View] = {}

    def where(self, r: StageResult) -> str:
        label = self.labels.get(_build_key(r), "?")
        return f"{label} -> {self.labels.get(_key(r.peer, r.arch), '?')}" if r.peer else label

    def view(self, r: StageResult) -> View:
        found = self._views.get(id(r))
        if found is not None:
            return found
        source = self.origin[id(r)]
        links = [(name, self.links.href(source, rel)) for name, rel in sorted(r.artifacts.items())]
        bugs = bugs_of(r)
        v = View(r=r, where=self.where(r), label=BY_NAME[r.verdict].label,
                 reason=clean(r.details.get("full_reason") or r.reason), links=links, facts=_facts(r), bugs=bugs)
        argv = r.details.get("argv")
        if argv and "argv" not in r.artifacts and isinstance(argv, list):
            v.argv = _tail_text(shlex.join(str(a) for a in argv)) if len(argv) < 400 else f"{len(argv)} words"
        if r.stage == "migrate":
            v.timeline = _timeline(r.details)
        if (r.verdict in FAILURES or any(how == "reproduced" for how, _ in bugs)) \
                and self.excerpted < EXCERPT_RESULTS:
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
                if text and text.strip():
                    out.append((f"{name} (last lines)", clean(_tail_text(str(text)))))
        return out[:4]


# ---------------------------------------------------------------- the page's parts


@dataclass
class Chip:
    text: str
    verdict: str  # a verdict name: its class gives the colour
    title: str
    kind: str = "stage"  # stage | bug | flag


@dataclass
class MatrixCell:
    anchor: str
    chips: list[Chip]
    views: list[View]
    problem: bool


@dataclass
class Pair:
    source: Build
    destination: Build
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def verdict(self) -> str:
        return worst(self.counts)


def _bug_chips(views: Iterable[View]) -> list[Chip]:
    """One chip per known bug a cell's results name, the worst way first (reproduced, not reproduced, flagged)."""
    chips: dict[str, Chip] = {}
    for v in views:
        for how, bug in v.bugs:
            if bug["id"] in chips:
                continue
            verdict = v.verdict if how != "flagged by version" else "known-bug"
            chips[bug["id"]] = Chip(bug["id"], verdict, _bug_title(how, bug),
                                    "flag" if how == "flagged by version" else "bug")
    ranked = sorted(chips.values(), key=lambda c: (c.kind == "flag", VERDICTS.index(c.verdict)))
    if len(ranked) > 2:  # a cell stays compact: the first bug and a count
        rest = ranked[1:]
        more = Chip(f"+{len(rest)}", rest[0].verdict, "\n\n".join(c.title for c in rest), rest[0].kind)
        ranked = [ranked[0], more]
    return ranked


def _is_problem(views: Iterable[View]) -> bool:
    return any(v.verdict in FAILURES or v.bugs for v in views)


def build_page(records: list[StageResult], origin: dict[int, Path], output: Path) -> dict[str, Any]:
    """Everything the template shows, computed once (the template only loops)."""
    builds: dict[str, Build] = {}
    for r in records:
        for key, q in ((_build_key(r), r.qemu), (_key(r.peer, r.arch), r.peer) if r.peer else (None, None)):
            if key is not None and key not in builds:
                builds[key] = _new_build(key, q, r.arch)
    ordered = sorted(builds.values(), key=lambda b: b.sort_key)
    _label_builds(ordered)
    viewer = Viewer(origin, Links(output), {b.key: b.label for b in ordered})

    # per build: what ran, counts over every result it took part in (a migration counts for both sides)
    for r in records:
        keys = {_build_key(r)} | ({_key(r.peer, r.arch)} if r.peer else set())
        for key in keys:
            b = builds[key]
            b.stages.add(r.stage)
            b.counts[r.verdict] += 1
            if r.accel:
                b.accels.add(r.accel)
                b.accel_reason = b.accel_reason or str(r.details.get("accel_reason", ""))
    for b in ordered:
        b.failures = sum(n for name, n in b.counts.items() if name in FAILURES)

    # the compatibility matrix: case -> build -> stage -> results
    grid: dict[str, dict[str, dict[str, list[StageResult]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    migrations: dict[str, dict[tuple[str, str], StageResult]] = defaultdict(dict)
    for r in records:
        if r.stage in QUALIFY_STAGES:
            continue
        if r.stage == "migrate":
            src, dst = _build_key(r), _key(r.peer, r.arch) if r.peer else _build_key(r)
            migrations[r.case][(src, dst)] = r
            grid[r.case][src][r.stage].append(r)
            if dst != src:
                grid[r.case][dst][r.stage].append(r)
        else:
            grid[r.case][_build_key(r)][r.stage].append(r)
    matrix_builds = [b for b in ordered if any(b.key in row for row in grid.values())]
    stages = [s for s in MATRIX_STAGES if any(r.stage == s for r in records)]
    cases = sorted(grid)

    # migration cells first: the compatibility cells link to them
    pairs: dict[tuple[str, str], Pair] = {}
    for case_row in migrations.values():
        for (src, dst), r in case_row.items():
            pairs.setdefault((src, dst), Pair(builds[src], builds[dst])).counts[r.verdict] += 1
    pair_order = sorted(pairs, key=lambda p: (builds[p[0]].sort_key, builds[p[1]].sort_key))
    migration_cells: dict[str, dict[tuple[str, str], MatrixCell]] = {}
    n = 0
    for case in sorted(migrations):
        migration_cells[case] = {}
        for pair in pair_order:
            r = migrations[case].get(pair)
            if r is None:
                continue
            n += 1
            v = viewer.view(r)
            v.anchor = f"m{n}"
            stats = r.details.get("stats") or {}
            text = f"{stats['total-time'] / 1000:.1f} s" if isinstance(stats.get("total-time"), int | float) \
                else BY_NAME[r.verdict].label
            chips = [Chip(text, r.verdict, v.title)] + _bug_chips([v])
            migration_cells[case][pair] = MatrixCell(v.anchor, chips, [v], _is_problem([v]))

    rows = []
    n = 0
    for case in cases:
        cells: dict[str, MatrixCell] = {}
        for b in matrix_builds:
            by_stage = grid[case].get(b.key)
            if not by_stage:
                continue
            n += 1
            views, chips = [], []
            for stage in stages:
                results = by_stage.get(stage)
                if not results:
                    continue
                stage_views = [viewer.view(r) for r in results]
                views += stage_views
                chips.append(Chip(stage[0].upper(), worst(r.verdict for r in results),
                                  "\n".join(v.title for v in stage_views)))
            chips += _bug_chips(views)
            cells[b.key] = MatrixCell(f"c{n}", chips, views, _is_problem(views))
        rows.append((case, cells, any(c.problem for c in cells.values())))

    # new failures: failures the verdict table counts, not explained by a known bug
    anchors = {id(v.r): cell.anchor for _, cells, _ in rows for cell in cells.values() for v in cell.views}
    anchors.update({id(c.views[0].r): c.anchor for row in migration_cells.values() for c in row.values()})
    failures = sorted((r for r in records if r.verdict in FAILURES),
                      key=lambda r: (VERDICTS.index(r.verdict), builds[_build_key(r)].sort_key, r.case,
                                     STAGE_ORDER.index(r.stage) if r.stage in STAGE_ORDER else 99))
    failure_rows = [(viewer.view(r), anchors.get(id(r), "")) for r in failures[:FAILURE_ROWS]]

    known = _known_bugs(records, viewer, builds, anchors)
    drift = _drift(records, builds, viewer)
    live = [b for b in ordered if not b.fixture]
    fixtures = [b for b in ordered if b.fixture]
    return {
        "builds": ordered, "live_builds": live, "fixture_builds": fixtures,
        "matrix_builds": matrix_builds, "stages": stages, "rows": rows,
        "pairs": pairs, "pair_order": pair_order, "migration_cells": migration_cells,
        "pair_groups": _pair_groups(pair_order, builds),
        "failures": failure_rows, "failures_total": len(failures),
        "known": known, "drift": drift,
        "totals": [(v.name, n) for v in TABLE if (n := sum(1 for r in records if r.verdict == v.name))],
        "count": len(records),
    }


def _pair_groups(pair_order: list[tuple[str, str]], builds: dict[str, Build]) -> list[dict[str, Any]]:
    """Per arch: the sources (rows) and destinations (columns) of its pairs."""
    groups: dict[str, dict[str, Any]] = {}
    for src, dst in pair_order:
        g = groups.setdefault(builds[src].arch, {"arch": builds[src].arch, "sources": [], "destinations": [],
                                                 "pairs": []})
        for key, where in ((src, "sources"), (dst, "destinations")):
            if builds[key] not in g[where]:
                g[where].append(builds[key])
        g["pairs"].append((src, dst))
    for g in groups.values():
        g["sources"].sort(key=lambda b: b.sort_key)
        g["destinations"].sort(key=lambda b: b.sort_key)
    return [groups[a] for a in sorted(groups)]


@dataclass
class BugRow:
    where: str
    build: Build | None
    cases: dict[str, list[tuple[str, str]]]  # how -> [(case, anchor)]


def _known_bugs(records: list[StageResult], viewer: Viewer, builds: dict[str, Build],
                anchors: dict[int, str]) -> list[dict[str, Any]]:
    """Per bug: its facts and, per build (or migration pair), the cases where it was reproduced, not
    reproduced, or flagged by version."""
    bugs: dict[str, dict[str, Any]] = {}
    for r in records:
        for how, bug in bugs_of(r):
            entry = bugs.setdefault(bug["id"], {"bug": bug, "rows": {}, "hows": Counter()})
            if not entry["bug"]["title"] and bug["title"]:
                entry["bug"] = bug
            where = viewer.where(r)
            sort = (builds[_build_key(r)].sort_key, where)
            row = entry["rows"].setdefault(sort, BugRow(where, builds[_build_key(r)], defaultdict(list)))
            row.cases[how].append((r.case, anchors.get(id(r), "")))
            entry["hows"][how] += 1
    order = ("reproduced", "not reproduced", "flagged by version")
    out = []
    for entry in bugs.values():
        rows = [entry["rows"][k] for k in sorted(entry["rows"])]
        for row in rows:
            row.cases = {how: sorted(set(row.cases[how])) for how in order if row.cases.get(how)}
        out.append({"bug": entry["bug"], "rows": rows, "hows": [(how, entry["hows"][how]) for how in order
                                                                 if entry["hows"][how]]})
    # reproduced bugs first, then not reproduced, then those only flagged by version
    out.sort(key=lambda e: (min(order.index(how) for how, _ in e["hows"]), e["bug"]["id"]))
    return out


def _drift(records: list[StageResult], builds: dict[str, Build], viewer: Viewer) -> list[dict[str, Any]]:
    """Per build: the probe's counts and the capability comparisons, in plain words."""
    per: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.stage not in QUALIFY_STAGES:
            continue
        entry = per.setdefault(_build_key(r), {"build": builds[_build_key(r)], "probe": None, "diffs": []})
        v = viewer.view(r)
        if r.stage == "probe":
            entry["probe"] = v
        else:
            lost = r.details.get("lost") or {}
            entry["diffs"].append({
                "view": v,
                "against": {"caps-vs-stored": "the stored fixture of this version",
                            "caps-vs-previous": "the previous version"}.get(r.case, r.case),
                "lost": [(clean(k), [clean(i) for i in items]) for k, items in lost.items()]
                if isinstance(lost, dict) else [],
                "not_compared": [clean(x) for x in r.details.get("not_compared") or []],
                "diff": clean(r.details.get("diff", "")),
            })
    for entry in per.values():
        entry["diffs"].sort(key=lambda d: d["view"].r.case, reverse=True)  # vs-stored first
    return [per[k] for k in sorted(per, key=lambda k: builds[k].sort_key)]


# ---------------------------------------------------------------- writing


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(records: list[StageResult], origin: dict[int, Path], output: Path, title: str, sources: int) -> str:
    page = build_page(records, origin, output)
    return _ENV.get_template("report.html.j2").render(
        title=title, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), table=TABLE,
        failure_names=FAILURES, stage_names={s[0].upper(): s for s in page["stages"]}, sources=sources, **page)


def write_report(result_files: list[Path], output: Path, title: str = "QEMU compatibility report") -> Path:
    """OUTPUT/report.html and, from the same merged results, OUTPUT/junit.xml; the page's path."""
    records, origin = merge(result_files)
    output.mkdir(parents=True, exist_ok=True)
    write_junit(records, output / "junit.xml")
    target = output / "report.html"
    target.write_text(render(records, origin, output, title, len(result_files)), encoding="utf-8")
    return target
