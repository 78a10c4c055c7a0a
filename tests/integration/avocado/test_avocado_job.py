"""A real avocado job on the host's QEMU: a static case and a boot case, statuses and artefacts checked,
then merged with a `qemu-conformance run` into one report."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from conformance.results.records import read_results

pytestmark = pytest.mark.live


def avocado_job(avocado_cli: str, tmp_path: Path, reference: str, qemu: list[Path], stages: list[str],
                *extra: str) -> Path:
    """Run ``avocado run REFERENCE``; the job's results folder."""
    conf = tmp_path / "avocado.conf"
    conf.write_text(f"[qemu_conformance]\nqemu = {json.dumps([str(q) for q in qemu])}\n"
                    f"stages = {json.dumps(stages)}\n")
    out = subprocess.run([avocado_cli, "--config", str(conf), "run", "--job-results-dir", str(tmp_path / "jobs"),
                          "--max-parallel-tasks", "2", *extra, reference],
                         capture_output=True, text=True, timeout=600)
    assert "JOB LOG" in out.stdout, out.stdout + out.stderr
    (job,) = [p for p in (tmp_path / "jobs").iterdir() if p.name.startswith("job-")]
    return job


def test_avocado_job_runs_static_and_boot_cases(avocado_cli: str, qemu_x86_64: Path, tmp_path: Path) -> None:
    job = avocado_job(avocado_cli, tmp_path, "qemu-conformance:q35-minimal,teaming-no-substitute", [qemu_x86_64],
                      ["parse", "argv", "boot"], "-p", "QEMU_CONFORMANCE_MIGRATE_TIMEOUT=45")
    tests = {t["id"].split("-", 1)[1]: t for t in json.loads((job / "results.json").read_text())["tests"]}
    build = next(iter(tests)).split("[")[1].rstrip("]")
    assert sorted(tests) == sorted(f"{case}.{stage}[{build}]" for case in ("q35-minimal", "teaming-no-substitute")
                                   for stage in ("parse", "argv", "boot"))
    statuses = {name: t["status"] for name, t in tests.items()}
    assert statuses[f"q35-minimal.boot[{build}]"] == "PASS", tests[f"q35-minimal.boot[{build}]"]
    assert statuses[f"q35-minimal.argv[{build}]"] == "PASS"
    skipped = tests[f"teaming-no-substitute.boot[{build}]"]
    assert skipped["status"] == "SKIP" and "needs PCI device 0000:03:07.1" in skipped["fail_reason"]
    assert (job / "results.xml").exists()  # avocado's own xunit beside ours

    # our records: one per test, artefacts inside the job folder
    records = list(read_results(job / "results.jsonl"))
    assert sorted(f"{r.case}.{r.stage}[{r.qemu.version}-{r.arch}]" for r in records if r.qemu) == sorted(tests)
    boot = next(r for r in records if r.case == "q35-minimal" and r.stage == "boot")
    assert boot.verdict == "pass" and boot.accel in ("tcg", "kvm")
    assert all(r.details["avocado_settings"] == {"QEMU_CONFORMANCE_MIGRATE_TIMEOUT": "45"} for r in records)
    assert {"console", "qmp", "stderr", "cmdline"} <= set(boot.artifacts)
    for rel in boot.artifacts.values():
        assert (job / rel).exists(), rel
    assert "END-OF-BOOT-REPORT" in (job / boot.artifacts["console"]).read_text(errors="replace")  # the guest's
    argv = next(r for r in records if r.case == "q35-minimal" and r.stage == "argv")
    assert (job / argv.artifacts["argv"]).read_text().startswith(str(qemu_x86_64))
    assert json.loads((job / "shard.json").read_text())["shard"] == "1/1"

    # merged with a run of our own into one report; every link of the avocado cells works
    own = tmp_path / "own"
    subprocess.run(["qemu-conformance", "run", "--stages", "parse,argv", "--qemu", str(qemu_x86_64), "--cases",
                    "virt-minimal", "--cases", "pc-minimal", "-o", str(own)], check=True, capture_output=True,
                   timeout=300)
    report = tmp_path / "report"
    subprocess.run(["qemu-conformance", "report", str(job / "results.jsonl"), str(own / "results.jsonl"),
                    "-o", str(report)], check=True, capture_output=True, timeout=120)
    page = (report / "report.html").read_text()
    assert "pc-minimal" in page and "q35-minimal" in page
    links = [unquote(html.unescape(h)) for h in re.findall(r'href="([^"#]+)"', page) if "test-results" in h]
    assert links, "no link into the avocado job"
    for link in links:
        assert (report / link).exists(), link
