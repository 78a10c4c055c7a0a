"""The HTML report: merged results, every verdict shown, artefacts linked relative to the report."""

from __future__ import annotations

from pathlib import Path

from conformance.report.html import write_report
from conformance.results.records import QemuBuild, ResultWriter, StageResult

BUILD = QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", "Debian 1:7.2", "x86_64")


def test_report_merges_shards_and_links_artifacts(tmp_path: Path) -> None:
    shard1, shard2 = tmp_path / "shard1", tmp_path / "shard2"
    (shard1 / "live/teaming-q35").mkdir(parents=True)
    (shard1 / "live/teaming-q35/console.log").write_text("BOOT-OK\n")
    ResultWriter(shard1).write(StageResult(
        case="teaming-q35", stage="boot", verdict="pass", arch="x86_64", qemu=BUILD, accel="tcg", duration_s=2.0,
        artifacts={"console": "live/teaming-q35/console.log"},
        details={"substitutions": {"hostdev0": "0000:03:07.1 -> vmxnet3"}}))
    ResultWriter(shard1).write(StageResult(case="net-user-virtio", stage="boot", verdict="fail", arch="x86_64",
                                           qemu=BUILD, reason="NIC net0: not in the guest"))
    # a later shard re-ran net-user-virtio: its record replaces the first
    ResultWriter(shard2).write(StageResult(case="net-user-virtio", stage="boot", verdict="pass", arch="x86_64",
                                           qemu=BUILD))
    ResultWriter(shard2).write(StageResult(case="cdrom-sata", stage="boot", verdict="known-bug", arch="x86_64",
                                           qemu=BUILD, reason="known bug x: <script>"))
    page = write_report([shard1 / "results.jsonl", shard2 / "results.jsonl"], tmp_path / "out").read_text()
    assert "QEMU 7.2.22 x86_64 (Debian 1:7.2)" in page
    assert 'href="../shard1/live/teaming-q35/console.log"' in page
    assert "substituted hostdev0: 0000:03:07.1 -&gt; vmxnet3" in page
    assert "NIC net0: not in the guest" not in page, "the re-run replaced the failure"
    assert "known bug x: &lt;script&gt;" in page and "<script>" not in page
    assert "pass 2" in page and "known-bug 1" in page
