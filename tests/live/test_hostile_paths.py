"""Real boots in an output folder whose name has a space, a comma, '=', both quotes and non-ASCII.

The folder reaches QEMU in comma-syntax options (the serial console file, a pty chardev turned into
a file, the VNC socket), libvirt's schema (the qcow2 disk's <source file=...>) and qemu-img.
Given as a relative -o from a working folder (QEMU runs in its VM folder, libvirt rejects relative
disk paths) and as an absolute one. Boots take ~2-3 s each under TCG.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import code_under_test
from tests.helpers.processes import processes_matching

pytestmark = pytest.mark.live

HOSTILE = "we ird, =dir'\"ä"
# a qcow2 disk (schema, qemu-img, -blockdev) with the added console file; a pty serial port turned
# into a file (-chardev path=); a VNC socket (-vnc unix:, made relative to the VM folder)
CASES = ("disk-virtio-qcow2", "serial-console", "graphics-vnc-vga")


def _run(cwd: Path, output: str, cases: tuple[str, ...], qemu: Path, tmp_path: Path) -> list[dict]:
    args = [sys.executable, "-m", "conformance.cli", "run", "--stages", "parse,argv,boot", "--qemu", str(qemu),
            "-j", "2", "-o", output]
    for case in cases:
        args += ["--cases", case]
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**code_under_test(), "LC_ALL": "C.UTF-8"})
    results = (cwd / output) / "results.jsonl"
    assert results.is_file(), (proc.returncode, proc.stdout, proc.stderr)
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    boots = [r for r in records if r["stage"] == "boot"]
    failed = [f"{r['case']}: {r['verdict']}: {r['reason']}" for r in records if r["verdict"] != "pass"]
    assert failed == [], "\n".join([*failed, proc.stdout[-2000:], proc.stderr[-2000:]])
    assert sorted(r["case"] for r in boots) == sorted(cases), proc.stdout
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert processes_matching(str(tmp_path)) == [], "no QEMU outlives the run"
    return boots


@pytest.mark.smoke
def test_relative_hostile_output(tmp_path: Path, qemu_x86_64: Path) -> None:
    boots = _run(tmp_path, f"{HOSTILE}/out", CASES, qemu_x86_64, tmp_path)
    vm_dirs = [tmp_path / HOSTILE / "out" / r["artifacts"]["folder"] for r in boots]
    assert all((d / "cmdline.json").is_file() for d in vm_dirs)
    qcow2 = next(d for d in vm_dirs if "disk-virtio-qcow2" in str(d))
    assert (qcow2 / "vda.qcow2").read_bytes()[:4] == b"QFI\xfb", "qemu-img made the image in the VM folder"


def test_absolute_hostile_output(tmp_path: Path, qemu_x86_64: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    _run(tmp_path / "elsewhere", str(tmp_path / HOSTILE / "out"), CASES[:1], qemu_x86_64, tmp_path)
