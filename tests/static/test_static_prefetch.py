"""The static stages computed ahead on several cores (StaticRunner.prefetch, what `run --caps` does) give the
outcomes one process computes pair after pair. No QEMU."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conformance import static
from conformance.caps.model import Capabilities
from conformance.caps.store import fixture_files, load
from conformance.cases import Case, Catalogue, load_catalogue
from conformance.cli import main
from conformance.results.records import read_results
from conformance.static import StaticRunner

CASES = ("q35-minimal", "virt-minimal", "teaming-q35", "q35-storage-rich", "pc-nic-rich", "virt-misc-rich")


def _pairs(catalogue: Catalogue) -> list[tuple[Case, Capabilities]]:
    """Every (case of CASES, stored fixture of one of its arches)."""
    fixtures = [load(p) for p in fixture_files()]
    return [(catalogue.get(name), caps) for name in CASES for caps in fixtures
            if caps.arch in catalogue.get(name).arches]


def test_prefetched_outcomes_are_those_of_one_process() -> None:
    catalogue = load_catalogue()
    pairs = _pairs(catalogue)
    one = StaticRunner(catalogue)
    alone = [one.run(case, caps) for case, caps in pairs]
    ahead = StaticRunner(catalogue)
    ahead.prefetch(pairs, 2)
    assert len(ahead._ahead) == len(pairs), "every pair computed ahead"
    assert [ahead.run(case, caps) for case, caps in pairs] == alone
    assert not ahead._ahead, "each prefetched outcome is handed out once"
    assert any(o.argv for outcomes in alone for o in outcomes), "the comparison covers built argvs"


def test_run_caps_with_one_job_and_with_two_write_the_same_results(tmp_path: Path) -> None:
    written = {}
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        assert main(["run", "--stages", "parse,argv", "--caps", "all", "--jobs", jobs, "-o", str(out),
                     *(a for name in CASES for a in ("--cases", name))]) == 0
        written[jobs] = sorted((r.case, r.stage, r.qemu.path if r.qemu else "", r.verdict, r.reason,
                                tuple(r.details.get("argv", []))) for r in read_results(out / "results.jsonl"))
        assert sorted(p.name for p in (out / "argv").rglob("*.args")) == sorted(
            f"{r[0]}.args" for r in written[jobs] if r[1] == "argv" and r[5])
    assert written["1"] == written["2"]
    assert len(written["1"]) > 2 * len(CASES) and os.cpu_count()


class _FailsInWorker(StaticRunner):
    """A runner whose pairs fail in a forked prefetch worker (not in the process that made it, which is slow
    once the worker is forked, so the worker takes groups)."""

    parent = os.getpid()

    def run(self, case, caps):  # type: ignore[no-untyped-def]
        if os.getpid() != self.parent:
            raise ValueError(f"failed in the worker on {case.name}")
        if static._PREFETCH is not None:
            time.sleep(0.05)
        return super().run(case, caps)


def test_a_worker_error_is_raised_and_no_worker_is_left() -> None:
    import multiprocessing

    catalogue = load_catalogue()
    pairs = _pairs(catalogue)
    runner = _FailsInWorker(catalogue)
    earlier = set(multiprocessing.active_children())  # a worker of an earlier prefetch may still be exiting
    try:
        runner.prefetch(pairs, 2)
    except ValueError as exc:
        assert "failed in the worker on" in str(exc)
    else:
        raise AssertionError("the worker's error was not raised")
    assert not set(multiprocessing.active_children()) - earlier, "no worker outlives a failed prefetch"
