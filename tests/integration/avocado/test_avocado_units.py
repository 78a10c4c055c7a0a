"""The avocado plugins without a job: status mapping, resolver, runner messages, results collection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conformance.avocado.status import AVOCADO_STATUS, avocado_status
from conformance.results.records import VERDICTS, QemuBuild, StageResult

if TYPE_CHECKING:
    from conformance.avocado.plugins import ConformanceResolver

avocado = pytest.importorskip("avocado", reason="avocado-framework not installed (pip install -e '.[avocado]')")


def test_every_verdict_has_an_avocado_status() -> None:
    assert set(AVOCADO_STATUS) == set(VERDICTS)
    from avocado.core.teststatus import STATUSES  # avocado's own list (it shows them upper-case)

    assert {s.upper() for s in AVOCADO_STATUS.values()} <= set(STATUSES)
    assert AVOCADO_STATUS["interrupted"] == "interrupted"


@pytest.mark.parametrize(("verdict", "status", "message"), [
    ("pass", "pass", None),
    ("fail", "fail", "guest saw no NIC"),
    ("error", "error", "guest saw no NIC"),
    ("skip", "skip", "guest saw no NIC"),
    ("known-bug", "warn", "known-bug: guest saw no NIC"),
    ("not-reproduced", "warn", "not-reproduced: guest saw no NIC"),
])
def test_avocado_status(verdict: str, status: str, message: str | None) -> None:
    assert avocado_status(verdict, "guest saw no NIC") == (status, message)


def _resolver(qemu: list[str], stages: list[str]) -> ConformanceResolver:
    from avocado.core.settings import settings

    from conformance.avocado.plugins import ConformanceResolver

    config = settings.as_dict()
    config.update({"qemu_conformance.qemu": qemu, "qemu_conformance.stages": stages})
    return ConformanceResolver(config=config)


def test_resolver_one_runnable_per_case_stage_build_peer(qemu_x86_64: Path) -> None:
    from avocado.core.resolver import ReferenceResolutionResult

    resolution = _resolver([str(qemu_x86_64)], ["parse", "argv", "boot", "migrate"]).resolve(
        "qemu-conformance:teaming-q35,q35-minimal")
    assert resolution.result == ReferenceResolutionResult.SUCCESS
    uris = sorted(r.uri for r in resolution.resolutions)
    version = uris[0].split("[")[1].split("-")[0]
    build = f"{version}-x86_64"
    expected = [f"{case}.{stage}[{build}]" for case in ("teaming-q35", "q35-minimal")
                for stage in ("parse", "argv", "boot")]
    expected += [f"q35-minimal.migrate[{build}_to_{build}]", f"teaming-q35.migrate[{build}_to_{build}]"]
    assert uris == sorted(expected)
    migrate = next(r for r in resolution.resolutions if r.kwargs["stage"] == "migrate")
    assert migrate.kind == "qemu-conformance"
    assert migrate.kwargs == {"case": migrate.kwargs["case"], "stage": "migrate", "qemu": str(qemu_x86_64),
                              "peer": str(qemu_x86_64)}


def test_resolver_leaves_other_references_and_says_why_nothing_matched(qemu_x86_64: Path) -> None:
    from avocado.core.resolver import ReferenceResolutionResult

    resolver = _resolver([str(qemu_x86_64)], ["parse"])
    assert resolver.resolve("tests/foo.py").result == ReferenceResolutionResult.NOTFOUND
    nothing = resolver.resolve("qemu-conformance:no-such-case*")
    assert nothing.result == ReferenceResolutionResult.NOTFOUND and "no-such-case*" in nothing.info
    bad = _resolver([str(qemu_x86_64)], ["parse", "reboot"]).resolve("qemu-conformance:q35-minimal")
    assert bad.result == ReferenceResolutionResult.ERROR and "reboot" in bad.info


def test_runner_sends_the_record_and_its_artefacts_as_file_messages(tmp_path: Path) -> None:
    from conformance.avocado.runner import artefact_messages

    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "console.log").write_bytes(b"boot\x00report\n")
    result = StageResult(case="q35-minimal", stage="boot", verdict="pass", arch="x86_64",
                         qemu=QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", "", "x86_64"),
                         artifacts={"console": "live/console.log", "gone": "live/missing.log"})
    sent = list(artefact_messages(result, tmp_path))
    assert [m["path"] for m in sent] == ["qemu-conformance/live/console.log", "qemu-conformance/result.json"]
    assert sent[0]["log"] == b"boot\x00report\n" and sent[0]["type"] == "file"
    assert json.loads(sent[1]["log"])["case"] == "q35-minimal"


def test_collect_results_makes_artefacts_relative_to_the_job(tmp_path: Path) -> None:
    from conformance.avocado.plugins import collect_results

    folder = tmp_path / "test-results" / "1-q35-minimal.boot[7.2.22-x86_64]" / "qemu-conformance"
    folder.mkdir(parents=True)
    record = StageResult(case="q35-minimal", stage="boot", verdict="known-bug", reason="known bug X",
                         artifacts={"console": "live/console.log"})
    (folder / "result.json").write_text(record.to_json() + "\n")
    (got,) = collect_results(tmp_path)
    assert got["artifacts"] == {"console": "test-results/1-q35-minimal.boot[7.2.22-x86_64]/qemu-conformance/"
                                           "live/console.log"}
    assert got["details"]["avocado_test"] == "1-q35-minimal.boot[7.2.22-x86_64]"
    assert StageResult.from_dict(got).verdict == "known-bug"


def test_runner_sends_a_folder_artefact_file_by_file_and_leaves_disk_images_behind(tmp_path: Path) -> None:
    from conformance.avocado.runner import FILE_LIMIT, artefact_messages

    vm = tmp_path / "live" / "q35-minimal" / "x86_64-7.2.22-abc"
    vm.mkdir(parents=True)
    (vm / "console.log").write_text("END-OF-BOOT-REPORT\n")
    with (vm / "disk.raw").open("wb") as fh:  # sparse, FILE_LIMIT + 1 bytes long
        fh.truncate(FILE_LIMIT + 1)
    result = StageResult(case="q35-minimal", stage="boot", verdict="pass",
                         artifacts={"folder": "live/q35-minimal/x86_64-7.2.22-abc",
                                    "console": "live/q35-minimal/x86_64-7.2.22-abc/console.log"})
    sent = list(artefact_messages(result, tmp_path))
    assert [m["path"] for m in sent] == ["qemu-conformance/live/q35-minimal/x86_64-7.2.22-abc/console.log",
                                         "qemu-conformance/result.json"]
    record = json.loads(sent[-1]["log"])
    assert record["details"]["artefacts_left_behind"]["files"] == ["live/q35-minimal/x86_64-7.2.22-abc/disk.raw"]


def _run_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, result: StageResult | Exception,
                **kwargs: str) -> list[dict]:
    from avocado.core.nrunner.runnable import Runnable

    import conformance.avocado.work
    from conformance.avocado.plugins import ConformanceRunner

    def fake_run_item(case: str, stage: str, qemu: Path, peer: Path | None, output: Path, say) -> StageResult:
        say(f"running {case} {stage} on {qemu}")
        if isinstance(result, Exception):
            raise result
        (output / "console.log").write_text("boot\n")
        return result

    monkeypatch.setattr(conformance.avocado.work, "run_item", fake_run_item)
    runnable = Runnable("qemu-conformance", "x", config={}, **kwargs)
    return list(ConformanceRunner().run(runnable))


def test_runner_reports_a_known_bug_as_warn_naming_the_bug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    known = StageResult(case="teaming-q35", stage="boot", verdict="known-bug",
                        reason="known bug vfio-unplug-segv (QEMU 4.2.0 segfaults)",
                        artifacts={"console": "console.log"})
    sent = _run_runner(monkeypatch, tmp_path, known, case="teaming-q35", stage="boot", qemu="/usr/bin/qemu")
    assert sent[0]["status"] == "started"
    assert sent[-1]["status"] == "finished" and sent[-1]["result"] == "warn"
    assert sent[-1]["fail_reason"] == "known-bug: known bug vfio-unplug-segv (QEMU 4.2.0 segfaults)"
    files = [m["path"] for m in sent if m.get("type") == "file"]
    assert files == ["qemu-conformance/console.log", "qemu-conformance/result.json"]
    assert any(m.get("type") == "log" and b"running teaming-q35 boot" in m["log"] for m in sent)


def test_runner_turns_a_suite_crash_and_a_bad_runnable_into_errors(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    crashed = _run_runner(monkeypatch, tmp_path, KeyError("boom"), case="q35-minimal", stage="boot", qemu="/q")
    assert crashed[-1]["result"] == "error" and crashed[-1]["fail_reason"] == "suite error: KeyError: 'boom'"
    bad = _run_runner(monkeypatch, tmp_path, KeyError("unused"), case="q35-minimal")
    assert bad[-1]["result"] == "error" and "lacks stage, qemu" in bad[-1]["fail_reason"]


def test_variant_parameters_become_the_suites_settings() -> None:
    """``avocado run -p NAME=VALUE`` as avocado's suite builds the variant (avocado/core/suite.py)."""
    from avocado.core.tree import TreeNode
    from avocado.core.varianter import dump_variant

    from conformance.avocado.runner import variant_settings

    node = TreeNode().get_node("/", True)
    node.value = {"QEMU_CONFORMANCE_MIGRATE_TIMEOUT": "45", "FOO": "1"}
    dumped = dump_variant({"variant": node, "variant_id": None, "paths": ["/"]})
    assert variant_settings(dumped) == ({"QEMU_CONFORMANCE_MIGRATE_TIMEOUT": "45"}, ["FOO"])
    assert variant_settings(None) == ({}, [])


@pytest.mark.smoke
@pytest.mark.live
def test_task_run_posts_avocados_messages_without_importing_avocado(qemu_x86_64: Path, tmp_path: Path) -> None:
    """``task-run`` as avocado's process spawner starts it: the messages reach a status server on a UNIX
    socket, avocado's own decoder reads them, and the runner process never imported avocado (0.37 s)."""
    import socket
    import subprocess
    import sys
    import threading

    from avocado.core.status.utils import json_loads

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "status.sock"))
    server.listen(1)
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        while chunk := conn.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=serve, daemon=True)
    reader.start()
    probe = "import sys, runpy; sys.argv[0] = 'avocado-runner-qemu-conformance'; " \
            "runpy.run_module('conformance.avocado.runner', run_name='__main__')"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", probe, "task-run", "-i", "1-q35-minimal.argv",
                          "-j", "job1", "-k", "qemu-conformance", "-u", "q35-minimal.argv[x]", "case=q35-minimal",
                          "stage=argv", f"qemu={qemu_x86_64}", f"output_dir={tmp_path}",
                          'variant=json:{"variant": [["/", [["/", "QEMU_CONFORMANCE_X", "1"]]]]}',
                          "-s", str(tmp_path / "status.sock")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    reader.join(10)
    server.close()
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")]
    assert "conformance.argv.builder" in imported and not [m for m in imported if m.startswith("avocado")]
    sent = [json_loads(line) for line in received.decode().splitlines()]
    assert sent[0]["status"] == "started" and sent[0]["output_dir"] == str(tmp_path)
    assert all(m["id"] == "1-q35-minimal.argv" and m["job_id"] == "job1" for m in sent)
    assert sent[-1]["status"] == "finished" and sent[-1]["result"] == "pass"
    files = {m["path"]: m["log"] for m in sent if m.get("type") == "file"}
    record = json.loads(files["qemu-conformance/result.json"])
    assert record["case"] == "q35-minimal" and record["verdict"] == "pass"
    assert record["details"]["avocado_settings"] == {"QEMU_CONFORMANCE_X": "1"}
    assert files[f"qemu-conformance/{record['artifacts']['argv']}"].startswith(str(qemu_x86_64).encode())
