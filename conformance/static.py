"""The static stages: render -> schema -> parse -> semantics (parse stage) and argv (argv stage),
walking conformance/pipeline.py.

Rendering, schema validation, parsing and the semantic rules that do not
read the capabilities depend only on the case and the arch/machine/emulator,
not on the rest of the capabilities, so a StaticRunner does them once per
(case, arch, machine) and runs only the rules that read caps and the argv
builder per fixture: that is what makes the matrix fast. Each rule runs once
per combination at most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.argv.layout_memo import LAYOUTS, LayoutMemo
from conformance.argv.schema_check import property_problems
from conformance.caps.model import Capabilities
from conformance.cases import Case, Catalogue, case_variables, load_catalogue, plan
from conformance.domain.schema import SchemaStatus
from conformance.domain.semantics import validate_domain
from conformance.errors import ConformanceError, DomainInvalid, UnsupportedByQemu
from conformance.knownbugs.matcher import FlagMemo, bugs_concerning
from conformance.pipeline import domain_argv, parse_xml, render_case
from conformance.qemu.host import package_version
from conformance.results.records import QemuBuild, StageResult
from conformance.stages import STATIC_STAGES

STATIC_IMAGE_DIR = "/var/lib/qemu-conformance/images"  # never touched by static stages


@dataclass
class Rendered:
    xml: str
    domain: Any = None  # conformance.domain.model.Domain when parsing succeeded
    error: ConformanceError | None = None  # rendering, the schema or parsing failed
    schema: SchemaStatus | None = None
    # the semantic rules without caps (validate_domain(domain)): what the parse stage says when it parsed
    refused: DomainInvalid | UnsupportedByQemu | None = None


@dataclass
class StaticOutcome:
    case: str
    caps: str
    verdict: str
    stage: str
    reason: str = ""
    argv: list[str] = field(default_factory=list)
    known_bugs: list[dict[str, str]] = field(default_factory=list)  # bugs of this version the argv meets


def _contains(joined: str, wanted: str) -> bool:
    """Whether the argv (joined by newlines) has one of the |-separated alternatives."""
    return any(alternative in joined for alternative in wanted.split("|"))


class StaticRunner:
    """Runs the static stages of cases against fixtures, memoising what does not depend on the fixture."""

    def __init__(self, catalogue: Catalogue | None = None, image_dir: str = STATIC_IMAGE_DIR) -> None:
        self.catalogue = catalogue or load_catalogue()
        self.image_dir = image_dir
        self._rendered: dict[tuple[str, str, str, tuple[str, ...]], Rendered] = {}
        # (case, arch, machine, the fixture's syntax flags) -> the case's qemu_args written for them
        self._written: dict[tuple[str, str, str, tuple[bool, bool]], Any] = {}
        # per fixture (by identity, the fixture kept alive): (option, value) -> its property problems
        self._property_problems: dict[int, tuple[Capabilities, dict[tuple[str, str], list[str]]]] = {}
        # (id(case), id(caps)) -> (case, caps, outcomes) computed ahead by prefetch (the objects kept alive)
        self._ahead: dict[tuple[int, int], tuple[Case, Capabilities, list[StaticOutcome]]] = {}
        self._layouts: Any = None  # conformance.argv.layout_memo.LayoutMemo: layouts reused across fixtures
        self._flags = FlagMemo()  # what the known-bug flags keep across argvs (conformance/knownbugs/matcher.py)

    def prefetch(self, pairs: Sequence[tuple[Case, Capabilities]], jobs: int) -> None:
        """Compute the outcomes of these (case, fixture) pairs ahead in ``jobs`` processes (this one and
        ``jobs - 1`` forked workers); ``run`` then hands each out once. A case's pairs stay in one process, so
        its rendering and parsing are done once per arch as in one process; the processes take the cases in
        turn from a shared counter, those with the most pairs first. The first pair of each arch runs here first,
        so the module caches the processes share (schema coverage rules, CPU maps, templates) are filled once. The
        outcomes are those ``run`` computes (each is a pure function of the case and the fixture): compared by
        benchmarks/static_outputs.py."""
        pairs = [p for key, p in {(id(p[0]), id(p[1])): p for p in pairs}.items() if key not in self._ahead]
        if jobs <= 1 or len(pairs) < 4 * jobs:
            return
        for arch in dict.fromkeys(caps.arch for _, caps in pairs):
            case, caps = next(p for p in pairs if p[1].arch == arch)
            self._ahead[(id(case), id(caps))] = (case, caps, self.run(case, caps))
        groups: dict[int, list[int]] = {}
        for i, (case, caps) in enumerate(pairs):
            if (id(case), id(caps)) not in self._ahead:
                groups.setdefault(id(case), []).append(i)
        # the largest groups first, so the last ones taken are small and the processes end close together
        ordered = sorted(groups.values(), key=len, reverse=True)
        import gc
        import multiprocessing

        global _PREFETCH
        context = multiprocessing.get_context("fork")
        _PREFETCH = (self, pairs, ordered, context.Value("i", 0))
        workers = []
        receiving: list[tuple[Any, Any, list[tuple[int, list[StaticOutcome]]]]] = []  # workers not ended yet
        # no garbage collection while the processes compute (the outcomes and memos they build are kept, little
        # is garbage): a collection would walk the whole heap again and, in a worker, copy its pages
        collecting = gc.isenabled()
        gc.disable()
        try:
            for _ in range(jobs - 1):
                receive, send = context.Pipe(duplex=False)
                _widen(send)
                worker = context.Process(target=_prefetch_worker, args=(send,), daemon=True)
                worker.start()
                send.close()
                workers.append((worker, receive))
            done: list[tuple[int, list[StaticOutcome]]] = []
            receiving += [(worker, receive, done) for worker, receive in workers]
            done += _take_groups(lambda: _receive(receiving, wait=False))
            _receive(receiving, wait=True)
            for i, outcomes in done:
                case, caps = pairs[i]
                self._ahead[(id(case), id(caps))] = (case, caps, outcomes)
        finally:
            _PREFETCH = None
            if collecting:
                if not gc.get_freeze_count():
                    # what the pass built is kept (outcomes, memos): into the oldest generation at once (two
                    # list moves), not walked by the young collection that re-enabling would start next
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()
            for worker, receive in workers:
                receive.close()
                if any(worker is entry[0] for entry in receiving) and worker.is_alive():
                    worker.terminate()  # on an error or Ctrl-C: no worker outlives the call
                    worker.join()
                else:  # it sent its last message and closed its pipe: reaped if it is gone, else by multiprocessing
                    worker.join(0)  # on its next start or at exit (its own exit costs 5-15 ms, not waited for)

    def render(self, case: Case, caps: Capabilities, machine: str, overrides: dict[str, Any] | None = None) -> str:
        return render_case(case, caps, machine, defaults=self.catalogue.defaults, image_dir=self.image_dir,
                           overrides=overrides)

    def prepare(self, case: Case, caps: Capabilities, machine: str) -> Rendered:
        """render + schema + parse + the rules without caps, once per (case, arch, machine, its qemu_args as
        written for this fixture: JSON or comma syntax, groups left out; conformance/domain/commandline.py)."""
        written = None
        layers = (self.catalogue.defaults, case.vars, case.arch_vars.get(caps.arch, {}))
        if any("qemu_args" in layer for layer in layers):  # the variables' other layers hold no qemu_args
            from conformance.domain.commandline import syntax_flags

            # written for this fixture's syntax (all qemu_args_for reads of it when it succeeds)
            syntax = (case.name, caps.arch, machine, syntax_flags(caps))
            if syntax in self._written:
                written = self._written[syntax]
            else:
                try:  # the one part of the variables that may fail
                    written = case_variables(case, caps, machine, image_dir=self.image_dir,
                                             defaults=self.catalogue.defaults).get("qemu_args")
                except ConformanceError as exc:
                    return Rendered("", error=exc)
                self._written[syntax] = written
        key = (case.name, caps.arch, machine, tuple(written) if isinstance(written, list) else ())
        cached = self._rendered.get(key)
        if cached is not None:
            return cached
        source = f"{case.name}.xml (from {case.template})"
        try:
            xml = self.render(case, caps, machine)
        except ConformanceError as exc:
            result = Rendered("", error=exc)
        else:
            result = Rendered(xml)
            try:
                result.domain, result.schema = parse_xml(xml, source)
            except ConformanceError as exc:
                result.error = exc
            else:
                try:
                    validate_domain(result.domain, None)
                except (DomainInvalid, UnsupportedByQemu) as exc:  # a rule may refuse as the emulator would
                    result.refused = exc
        self._rendered[key] = result
        return result

    def run(self, case: Case, caps: Capabilities) -> list[StaticOutcome]:
        """Outcomes of the parse and argv stages (those the case declares) on one fixture."""
        ahead = self._ahead.pop((id(case), id(caps)), None)
        if ahead is not None and ahead[0] is case and ahead[1] is caps:
            return ahead[2]
        label = caps.label
        what = plan(case, caps)
        stages = [s for s in STATIC_STAGES if s in case.stages]
        if not what.run:
            return [StaticOutcome(case.name, label, "skip", s, what.skip_reason) for s in stages]
        assert what.machine is not None
        rendered = self.prepare(case, caps, what.machine)
        outcomes = []
        # parse stage: render, schema, parse, then the semantic rules that need no caps
        parse_error: ConformanceError | None = rendered.error or rendered.refused
        expected = case.expect_error
        if expected is not None:
            if parse_error is None:
                outcomes.append(StaticOutcome(case.name, label, "fail", "parse",
                                              f"expected the error {expected!r}, the domain was accepted"))
            elif expected in parse_error.message:
                outcomes.append(StaticOutcome(case.name, label, "pass", "parse", f"rejected: {parse_error.message}"))
            else:
                outcomes.append(StaticOutcome(case.name, label, "fail", "parse",
                                              f"expected {expected!r}, got: {parse_error}"))
            return outcomes
        if parse_error is not None:
            return [StaticOutcome(case.name, label, "error" if s == "parse" else "skip", s,
                                  str(parse_error) if s == "parse" else "parse stage failed") for s in stages]
        note = "" if rendered.schema is None or rendered.schema.available else rendered.schema.why
        outcomes.append(StaticOutcome(case.name, label, "pass", "parse", note))
        if "argv" in stages:
            outcome = self._argv(case, caps, rendered, what.expect_error)
            if outcome.argv:
                outcome.known_bugs = [b.record() for b in bugs_concerning(  # package: fixed_in_packages
                    caps.version, outcome.argv, caps.arch, package_version(None, caps.package), self._flags)]
            outcomes.append(outcome)
        return outcomes

    def _argv(self, case: Case, caps: Capabilities, rendered: Rendered, expect_error: str | None) -> StaticOutcome:
        label = caps.label
        if self._layouts is None:
            self._layouts = LayoutMemo()
        token = LAYOUTS.set(self._layouts)
        try:
            argv = domain_argv(rendered.domain, caps, checked=True)  # the rules without caps passed in prepare
        except (UnsupportedByQemu, DomainInvalid) as exc:
            if expect_error and expect_error in exc.message:
                return StaticOutcome(case.name, label, "pass", "argv", f"rejected as expected: {exc.message}")
            return StaticOutcome(case.name, label, "fail", "argv", str(exc))
        finally:
            LAYOUTS.reset(token)
        if expect_error:
            return StaticOutcome(case.name, label, "fail", "argv",
                                 f"expected the error {expect_error!r}, got an argv", argv)
        joined = "\n".join(argv) if case.argv_contains else ""
        missing = [w for w in case.argv_contains if not _contains(joined, w)]
        if missing:
            return StaticOutcome(case.name, label, "fail", "argv", f"argv lacks {', '.join(missing)}", argv)
        memo = self._property_problems.get(id(caps))
        if memo is None or memo[0] is not caps:
            memo = self._property_problems[id(caps)] = (caps, {})
        unknown = property_problems(argv, caps, memo[1])  # every property must exist in this fixture's QEMU
        if unknown:
            return StaticOutcome(case.name, label, "fail", "argv", "; ".join(unknown), argv)
        return StaticOutcome(case.name, label, "pass", "argv", "", argv)


# what forked workers inherit: the runner, the pairs, the groups of pair indices, the next group to take
_PREFETCH: tuple[StaticRunner, list[tuple[Case, Capabilities]], list[list[int]], Any] | None = None


def _take_groups(between: Callable[[], None] | None = None,
                 send: Any = None) -> list[tuple[int, list[StaticOutcome]]]:
    """The outcomes of the groups of StaticRunner.prefetch this process takes, one after the other, until none
    is left. ``between``: called after each group (the parent reads what the workers sent meanwhile); ``send``:
    a worker's pipe, each group's outcomes sent as soon as they are computed, and none returned."""
    assert _PREFETCH is not None
    runner, pairs, groups, taken = _PREFETCH
    done = []
    while True:
        with taken.get_lock():
            g = taken.value
            taken.value = g + 1
        if g >= len(groups):
            return done
        computed = [(i, runner.run(*pairs[i])) for i in groups[g]]
        if send is not None:  # as plain tuples: a third of the pickling and unpickling of the dataclasses
            send.send((_PART, [(i, [(o.case, o.caps, o.verdict, o.stage, o.reason, o.argv, o.known_bugs)
                                    for o in outcomes]) for i, outcomes in computed]))
        else:
            done += computed
        if between is not None:
            between()


_PART, _END, _FAILED = range(3)  # a prefetch worker's messages: outcomes of a group, the last one, its error


def _widen(send: Any) -> None:
    """A prefetch pipe as wide as Linux lets an unprivileged process make it (1 MiB by default against 64 KiB),
    so a worker sending a group's outcomes never waits for the parent to read them; where it cannot be widened
    the worker waits and the parent reads between its own groups."""
    import contextlib
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(send.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)


def _receive(receiving: list[tuple[Any, Any, list[tuple[int, list[StaticOutcome]]]]], wait: bool) -> None:
    """Read what the prefetch workers sent into their ``done`` lists: what is there (``wait`` false), or until
    each sent its last message; a worker's error is raised here."""
    for entry in list(receiving):
        worker, receive, done = entry
        while wait or receive.poll():
            try:
                kind, what = receive.recv()
            except EOFError:
                worker.join()
                raise RuntimeError(f"a static prefetch worker ended without its outcomes (exit code "
                                   f"{worker.exitcode})") from None
            if kind == _FAILED:
                raise what
            if kind == _END:
                receiving.remove(entry)
                break
            done += [(i, [StaticOutcome(*o) for o in outcomes]) for i, outcomes in what]


def _prefetch_worker(send: Any) -> None:
    """A forked prefetch worker: takes groups and sends each one's outcomes, then that it ended (or what it
    failed with). It dies of SIGTERM (the parent's terminate) and leaves Ctrl-C to its parent: it must not keep
    the handlers of conformance/interrupt.py it inherits, whose first signal only asks the run to stop."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _take_groups(send=send)
        outcome: tuple[int, Any] = (_END, None)
    except Exception as exc:  # the parent raises it
        outcome = (_FAILED, exc)
    try:
        send.send(outcome)
    except Exception as exc:  # one that does not pickle: its words
        send.send((_FAILED, RuntimeError(f"a static prefetch worker failed: {exc!r}")))
    send.close()


def to_result(outcome: StaticOutcome, caps: Capabilities, duration_s: float = 0.0) -> StageResult:
    details: dict[str, Any] = {"fixture": caps.label, "argv": outcome.argv}
    if outcome.known_bugs:
        details["known_bugs"] = outcome.known_bugs
    return StageResult(case=outcome.case, stage=outcome.stage, verdict=outcome.verdict, reason=outcome.reason,
                       arch=caps.arch, qemu=QemuBuild(caps.provenance.binary or "", str(caps.version), caps.package,
                                                      caps.arch),
                       duration_s=duration_s, details=details)
