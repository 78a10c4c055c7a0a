"""avocado's remote spawner over two test hosts (network namespaces with their own sshd): one job of static,
boot and migrate tests over both slots, statuses and artefacts back through the status server over the hosts'
network, one merged report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.results.records import read_results
from tests.helpers.netns_hosts import Host, free_port, make_hosts, why_not

pytestmark = pytest.mark.live


@pytest.fixture
def hosts(tmp_path: Path) -> list[Host]:
    pytest.importorskip("avocado_spawner_remote",
                        reason="avocado-framework-plugin-spawner-remote not installed (pip install -e '.[avocado]')")
    problem = why_not()
    if problem:
        pytest.skip(f"cannot make test hosts: {problem}")
    with make_hosts(2, tmp_path / "hosts") as made:
        yield made


def netns_of(host: Host) -> str:
    return subprocess.run(["ip", "netns", "exec", host.name, "readlink", "/proc/self/ns/net"], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_one_job_over_two_hosts(avocado_cli: str, hosts: list[Host], qemu_x86_64: Path, tmp_path: Path) -> None:
    conf = tmp_path / "avocado.conf"
    # the hosts share this file system: the setup hook puts this Python (with the package) first in PATH
    conf.write_text(f"[qemu_conformance]\nqemu = {json.dumps([str(qemu_x86_64)])}\n"
                    'stages = ["parse", "argv", "boot", "migrate"]\n\n'
                    f"[spawner.remote]\nslots = {json.dumps([str(h.slot) for h in hosts])}\n"
                    f"setup_hook = export PATH={Path(sys.executable).parent}:$PATH\n")
    status = f"{hosts[0].gateway}:{free_port(hosts[0].gateway)}"  # reached from both hosts over their veths
    out = subprocess.run([avocado_cli, "--config", str(conf), "run", "--job-results-dir", str(tmp_path / "jobs"),
                          "--spawner", "remote", "--max-parallel-tasks", str(len(hosts)),
                          "--status-server-disable-auto", "--status-server-listen", status,
                          "--status-server-uri", status, "qemu-conformance:q35-minimal,pc-minimal"],
                         capture_output=True, text=True, timeout=600)
    assert "RESULTS    : PASS 8 |" in out.stdout, out.stdout + out.stderr
    (job,) = (tmp_path / "jobs").glob("job-*")
    log = (job / "job.log").read_text()
    assert {h.address for h in hosts} <= {line.split("Hostname: ")[1].split()[0] for line in log.splitlines()
                                          if "Hostname: " in line}, "a slot was never used"

    records = list(read_results(job / "results.jsonl"))
    assert len(records) == 8 and all(r.verdict == "pass" for r in records)
    # a migration's id carries its pair with _to_: avocado's remote spawner puts ids unquoted in a shell
    assert f"pc-minimal.migrate[{records[0].qemu.version}-x86_64_to_{records[0].qemu.version}-x86_64]" in out.stdout
    ran_in = {r.details["avocado_host"]["netns"] for r in records}
    assert ran_in == {netns_of(h) for h in hosts}, "every result from one of the two hosts, and both hosts used"
    assert os.readlink("/proc/self/ns/net") not in ran_in
    for boot in (r for r in records if r.stage == "boot"):
        for rel in boot.artifacts.values():
            assert (job / rel).exists(), rel  # came back through the status server
        assert "END-OF-BOOT-REPORT" in (job / boot.artifacts["folder"] / "console.log").read_text()
    for migration in (r for r in records if r.stage == "migrate"):
        assert migration.peer is not None and all((job / rel).exists() for rel in migration.artifacts.values())

    report = tmp_path / "report"
    subprocess.run(["qemu-conformance", "report", str(job / "results.jsonl"), "-o", str(report)], check=True,
                   capture_output=True, timeout=120)
    page = (report / "report.html").read_text()
    assert "pc-minimal" in page and "q35-minimal" in page
