"""caps diff: gains and losses between two fixtures, exit 1 on loss."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from conformance.caps.diff import diff_caps
from conformance.caps.fixture import write_fixture
from conformance.caps.store import resolve


def test_4_1_to_4_2_gains_failover() -> None:
    result = diff_caps(resolve("4.1.0:x86_64"), resolve("4.2.0:x86_64"))
    gained_flags, lost_flags = result.sections["flags"]
    assert "virtio-net.failover" in gained_flags and "blockdev" in gained_flags
    assert "virtio-net-pci.failover" in result.sections["properties"][0]
    assert "pc-q35-4.2" in result.sections["machine types"][0]
    assert not lost_flags and not result.lost_anything


def test_loss_is_reported_and_exits_1(tmp_path: Path) -> None:
    a = resolve("7.2:x86_64")
    props = {t: dict(p) for t, p in a.type_properties.items()}
    del props["virtio-net-pci"]["failover"]
    b = dataclasses.replace(a, machines=tuple(m for m in a.machines if m.alias != "q35"), type_properties=props)
    result = diff_caps(a, b)
    assert result.lost_anything
    assert "virtio-net.failover" in result.sections["flags"][1]
    assert any(m.startswith("pc-q35-") for m in result.sections["machine types"][1])
    assert "LOST" in result.format()
    pa, pb = write_fixture(a, tmp_path / "a.xml"), write_fixture(b, tmp_path / "b.xml")
    cli = [sys.executable, "-m", "conformance.cli", "caps", "diff"]
    lost = subprocess.run([*cli, str(pa), str(pb)], capture_output=True, text=True, timeout=60)
    assert lost.returncode == 1 and "- virtio-net.failover" in lost.stdout
    gained = subprocess.run([*cli, str(pb), str(pa)], capture_output=True, text=True, timeout=60)
    assert gained.returncode == 0 and "+ virtio-net.failover" in gained.stdout


def test_caps_list_table() -> None:
    out = subprocess.run([sys.executable, "-m", "conformance.cli", "caps", "list"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["FIXTURE", "VERSION", "ARCH"]
    row = next(line for line in lines if line.startswith("qemu-4.1.0-x86_64.xml"))
    assert " no " in row  # no failover in 4.1.0
    assert any(line.startswith("qemu-4.2.0-aarch64.xml") and " yes " in line for line in lines)
