"""The wheel works from a fresh virtualenv outside the checkout: its data comes along (caps list, a static run
on a stored fixture), and a live boot. ``nox -s downstream`` does the same through another project's nox file.

The wheel is built here (``python -m build``: the sdist, then the wheel from it) unless QEMU_CONFORMANCE_WHEEL
names one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no site packages) with the wheel and its dependencies only."""
    where = tmp_path_factory.mktemp("wheel")
    wheel = os.environ.get("QEMU_CONFORMANCE_WHEEL")
    if not wheel:
        # the sdist, then the wheel from it (as CI builds them; nothing is written into the checkout)
        subprocess.run([sys.executable, "-m", "build", "--outdir", str(where / "dist"), str(ROOT)], check=True,
                       capture_output=True, timeout=600)
        wheel = str(next((where / "dist").glob("qemu_conformance-*.whl")))
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True, timeout=300)
    subprocess.run([str(where / "venv" / "bin" / "pip"), "install", "-q", wheel], check=True, capture_output=True,
                   timeout=600)
    return where / "venv"


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QEMU_CONFORMANCE_DATA")}
    return subprocess.run([str(venv / "bin" / "qemu-conformance"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False, env=env)


def test_the_wheel_carries_its_data(venv: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import conformance.data as d; "
                            "print(d.base_layer().name, d.base_layer().root)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert where[0] == "packaged" and not Path(where[1]).is_relative_to(ROOT), where
    listed = run(venv, tmp_path, "caps", "list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1 + len(list((ROOT / "capsdata").glob("qemu-*.xml")))
    static = run(venv, tmp_path, "run", "--caps", "7.2:x86_64", "--stages", "parse,argv", "-o", "out")
    assert static.returncode == 0, static.stdout + static.stderr
    verdicts = [json.loads(line)["verdict"] for line in (tmp_path / "out" / "results.jsonl").open()]
    assert verdicts.count("pass") > 50 and not {"fail", "error"} & set(verdicts)
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "junit.xml").is_file()


def test_the_wheel_without_its_data_says_so_on_one_line(venv: Path, tmp_path: Path) -> None:
    data = next((venv / "lib").glob("python3*/site-packages/conformance/_data"))
    hidden = data.with_name("_data.hidden")
    data.rename(hidden)
    try:
        for args in (("caps", "list"), ("bugs", "list"), ("render", "q35-minimal", "--caps", "7.2:x86_64")):
            proc = run(venv, tmp_path, *args)
            assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
            assert proc.stderr.count("\n") == 1 and "no data found" in proc.stderr, proc.stderr
    finally:
        hidden.rename(data)


@pytest.mark.live
def test_the_wheel_boots_a_guest(venv: Path, tmp_path: Path, qemu_x86_64: Path) -> None:
    proc = run(venv, tmp_path, "run", "--qemu", str(qemu_x86_64), "--cases", "q35-minimal",
               "--stages", "parse,argv,boot", "-o", "live")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    boot = [r for r in map(json.loads, (tmp_path / "live" / "results.jsonl").open()) if r["stage"] == "boot"]
    assert [r["verdict"] for r in boot] == ["pass"], boot
    assert boot[0]["qemu"]["package_version"] or not boot[0]["qemu"]["package"]  # dpkg's, when it is a package
