"""One work item through the suite's stage functions, as the avocado runner calls it (no avocado needed).
Live: its argv stage needs the host QEMU's capabilities, probed on a cold cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.avocado.work import describe_binary, run_item


@pytest.mark.smoke
@pytest.mark.live
def test_static_items_run_alone_and_keep_their_argv(qemu_x86_64: Path, tmp_path: Path) -> None:
    argv = run_item("teaming-q35", "argv", qemu_x86_64, None, tmp_path / "a")
    assert argv.stage == "argv" and argv.verdict == "pass", argv.reason
    assert (tmp_path / "a" / argv.artifacts["argv"]).read_text().startswith(str(qemu_x86_64))
    parse = run_item("teaming-persistent-not-virtio", "parse", qemu_x86_64, None, tmp_path / "b")
    assert parse.verdict == "pass" and "rejected" in parse.reason  # an invalid case, refused as it expects
    none = run_item("teaming-persistent-not-virtio", "argv", qemu_x86_64, None, tmp_path / "c")
    assert none.verdict == "skip" and none.reason == "case teaming-persistent-not-virtio has no argv stage on x86_64"
    label, arch = describe_binary(str(qemu_x86_64))
    assert arch == "x86_64" and label == f"{argv.qemu.version}-x86_64"


@pytest.mark.live
def test_a_vmstate_item_predicts_instead_of_skipping(qemu_x86_64: Path, tmp_path: Path) -> None:
    """The avocado default stages include vmstate: its item is a prediction, not a skip (a build with itself
    asks only what it refuses under the machine type; the machine type is the one the resolver planned)."""
    same = run_item("q35-minimal", "vmstate", qemu_x86_64, None, tmp_path / "a", machine="pc-q35-7.1")
    assert same.stage == "vmstate" and same.verdict == "pass", same.reason
    assert same.details["machine"] == "pc-q35-7.1" and same.details["same_build"]
    assert same.peer is not None and same.peer.path == str(qemu_x86_64)
    default = run_item("q35-minimal", "vmstate", qemu_x86_64, qemu_x86_64, tmp_path / "b")
    assert default.verdict == "pass" and default.details["machine"].startswith("pc-q35-"), default.details
    unknown = run_item("q35-minimal", "vmstate", qemu_x86_64, None, tmp_path / "c", machine="pc-q35-99.0")
    assert unknown.verdict == "skip" and "pc-q35-99.0 unknown" in unknown.reason
