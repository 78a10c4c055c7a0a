"""The matrices' rows as HTML, written here rather than in the template: thousands of cells must render
in a fraction of a second. Every text goes through ``escape`` (the standard library's, which escapes
what jinja's autoescape does: & < > " '); the row is Markup, which the template inserts as it is.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from markupsafe import Markup

from conformance.report.model import Chip, Row, View, bug_facts
from conformance.results.verdicts import FAILURES, TABLE


def chip(c: Chip) -> str:
    kind = "" if c.kind == "stage" else f" {c.kind}"
    failure = " failure" if c.kind == "stage" and c.verdict in FAILURES else ""
    return f'<span class="chip v-{c.verdict}{kind}{failure}" title="{escape(c.title)}">{escape(c.text)}</span>'


def verdict_chip(name: str, text: str) -> str:
    failure = " failure" if name in FAILURES else ""
    return f'<span class="chip v-{name}{failure}">{escape(text)}</span>'


def result(v: View, *, full: bool = True) -> str:
    """One result in a drill-down. ``full=False``: a migration shown in full in the migration matrix
    gets a pointer there instead of its timeline, logs and artefacts."""
    r = v.r
    out = [f'<div class="res b-{r.verdict}"><div>{verdict_chip(r.verdict, v.label)} <b>{escape(r.stage)}</b>']
    if r.peer is not None and not full:  # a migration cell's heading names the pair already
        out.append(f' <span class="mono">{escape(v.where)}</span>')
    out.append("</div>")
    if v.reason:
        out.append(f'<div class="reason">{escape(v.reason)}</div>')
    for how, bug in v.bugs:
        out.append(f'<div class="bugline">known bug <b class="mono">{escape(bug["id"])}</b> ({escape(how)})')
        if bug["title"]:
            out.append(f": {escape(bug['title'])}")
        out += [f"; {escape(fact)}" for fact in bug_facts(bug, concerns=False)]
        out.append("</div>")
    if not full and v.anchor:
        out.append(f' <a href="#{v.anchor}">timeline, logs, artefacts</a></div>')
        return "".join(out)
    if v.links:
        out.append('<div class="links">')
        out += [f'<a href="{escape(href)}">{escape(name)}</a> ' for name, href in v.links]
        out.append("</div>")
    if v.facts:
        out.append('<div class="facts">' + "<br>".join(escape(f) for f in v.facts) + "</div>")
    if v.argv:
        out.append(f'<div>argv</div><pre>{escape(v.argv)}</pre>')
    if v.timeline:
        out.append('<div class="timeline">' + "<br>".join(f"<b>{escape(side)}</b> {escape(steps)}"
                                                          for side, steps in v.timeline) + "</div>")
    for name, text in v.excerpts:
        out.append(f"<div>{escape(name)}</div><pre>{escape(text)}</pre>")
    out.append("</div>")
    return "".join(out)


def _quiet_migrations(views: list[View]) -> str:
    counts = Counter(v.verdict for v in views)
    chips = " ".join(verdict_chip(v.name, f"{v.label} {counts[v.name]}") for v in TABLE if counts[v.name])
    pairs = ", ".join(f'<a href="#{v.anchor}">{escape(v.where)}</a>' for v in views)
    return f'<div class="res"><div><b>migrate</b> {chips}</div><div class="facts">{pairs}</div></div>'


def row(r: Row) -> Markup:
    """A matrix row: the case, then one cell per column (a drill-down per cell; one open at a time)."""
    out = [f'<tr class="{"problem" if r.problem else "clean"}"><td class="case">{escape(r.case)}</td>']
    for cell in r.cells:
        if cell is None:
            out.append('<td class="empty"></td>')
            continue
        out.append(f'<td id="{cell.anchor}"><details name="drill"><summary>')
        out += [chip(c) for c in cell.chips]
        out.append(f'</summary><div class="drill"><h4>{escape(cell.heading)}</h4>')
        if cell.full:
            out += [result(v) for v in cell.views]
        else:  # migrations without a problem in one line: the migration matrix shows them in full
            quiet = [v for v in cell.views if v.anchor and not v.notable]
            out += [result(v, full=False) for v in cell.views if v not in quiet]
            if quiet:
                out.append(_quiet_migrations(quiet))
        out.append("</div></details></td>")
    out.append("</tr>\n")
    return Markup("".join(out))
