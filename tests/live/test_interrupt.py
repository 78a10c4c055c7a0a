"""Stop when told: Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM (a cancelled CI
job) stop `run`, `qualify`, pytest with xdist and an avocado job within seconds, with no QEMU left behind;
`run` and `qualify` keep what they had (results, report, JUnit) and exit 130 or 143."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from conformance.results.records import read_results
from tests.helpers import CLI, ROOT
from tests.helpers.processes import assert_no_qemu_left, interrupt, start, wait_for_qemu

pytestmark = [pytest.mark.live, pytest.mark.smoke]

STOP_WITHIN = 15.0  # s from the signal to the exit: QEMUs end in a second, the report takes a few


def cli(*args: str) -> list[str]:
    return [*CLI, *args]


def test_ctrl_c_stops_a_run_keeps_its_results_and_exits_130(qemu_x86_64: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "run.log"
    proc = start(cli("run", "--stages", "boot,migrate", "--qemu", str(qemu_x86_64), "--cases", "q35-minimal",
                     "--cases", "pc-minimal", "--cases", "serial-console", "--cases", "net-user-virtio",
                     "-o", str(out), "--jobs", "2"), log, str(tmp_path))
    wait_for_qemu(proc, str(tmp_path), log)
    took = interrupt(proc, signal.SIGINT)
    text = log.read_text(errors="replace")
    assert proc.returncode == 130, text[-3000:]
    assert took < STOP_WITHIN, text[-3000:]
    assert_no_qemu_left(str(tmp_path))
    records = list(read_results(out / "results.jsonl"))
    # every planned item has a record: 4 boots + 4 same-build migrations, the unfinished ones interrupted
    assert len(records) == 8, [(r.case, r.stage, r.verdict) for r in records]
    interrupted = [r for r in records if r.verdict == "interrupted"]
    assert interrupted and all("interrupted (SIGINT)" in r.reason for r in interrupted)
    assert {r.verdict for r in records} <= {"pass", "interrupted"}, [(r.case, r.verdict, r.reason) for r in records]
    assert (out / "report.html").exists() and "INTERRUPTED" in (out / "report.html").read_text()
    assert 'type="interrupted"' in (out / "junit.xml").read_text()
    assert "interrupted by SIGINT" in text


def test_sigterm_stops_a_qualification_with_its_report_and_exits_143(qemu_x86_64: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "qualify.log"
    proc = start(cli("qualify", "--qemu", str(qemu_x86_64), "-o", str(out)), log, str(tmp_path))
    wait_for_qemu(proc, str(tmp_path), log)
    took = interrupt(proc, signal.SIGTERM)
    text = log.read_text(errors="replace")
    assert proc.returncode == 143, text[-3000:]
    assert took < STOP_WITHIN, text[-3000:]
    assert_no_qemu_left(str(tmp_path))
    records = list(read_results(out / "results.jsonl"))
    assert any(r.stage == "probe" and r.verdict == "pass" for r in records)
    assert any(r.verdict == "interrupted" and r.stage == "migrate" for r in records)  # never reached
    assert "NOT QUALIFIED" in text and (out / "junit.xml").exists() and (out / "report.html").exists()


def test_a_second_ctrl_c_ends_everything_at_once(qemu_x86_64: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "run.log"
    proc = start(cli("run", "--stages", "boot", "--qemu", str(qemu_x86_64), "--cases", "q35-minimal",
                     "--cases", "pc-minimal", "-o", str(out)), log, str(tmp_path))
    wait_for_qemu(proc, str(tmp_path), log)
    took = interrupt(proc, signal.SIGINT, times=2)
    # 130 either way for a shell: exit(130), or killed by the second SIGINT while the interpreter ends
    assert proc.returncode in (130, -signal.SIGINT), log.read_text(errors="replace")[-3000:]
    assert took < 5.0
    assert_no_qemu_left(str(tmp_path))


def test_ctrl_c_stops_pytest_with_xdist_and_leaves_no_qemu(qemu_x86_64: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "pytest.log"
    proc = start([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
                  str(ROOT / "tests" / "live" / "test_boot_cases.py"), "--conformance-qemu", str(qemu_x86_64),
                  "--conformance-output", str(out), "--rootdir", str(ROOT)], log, str(tmp_path))
    wait_for_qemu(proc, str(tmp_path), log)
    took = interrupt(proc, signal.SIGINT)
    text = log.read_text(errors="replace")
    assert proc.returncode != 0 and took < STOP_WITHIN, text[-3000:]
    assert_no_qemu_left(str(tmp_path))


def test_ctrl_c_stops_an_avocado_job_and_leaves_no_qemu(avocado_cli: str, qemu_x86_64: Path,
                                                        tmp_path: Path) -> None:
    conf, log, jobs = tmp_path / "avocado.conf", tmp_path / "avocado.log", tmp_path / "jobs"
    conf.write_text(f"[qemu_conformance]\nqemu = {json.dumps([str(qemu_x86_64)])}\n"
                    'stages = ["boot", "migrate"]\n')
    proc = start([avocado_cli, "--config", str(conf), "run", "--job-results-dir", str(jobs),
                  "--max-parallel-tasks", "2", "qemu-conformance:teaming-q35,net-user-virtio,serial-console"],
                 log, str(tmp_path))
    wait_for_qemu(proc, str(tmp_path), log)
    took = interrupt(proc, signal.SIGINT)
    text = log.read_text(errors="replace")
    assert took < STOP_WITHIN + 15, text[-3000:]  # avocado gives its tasks time to end on their own
    assert_no_qemu_left(str(tmp_path))
    assert proc.returncode != 0, text[-3000:]
