"""Your data beside ours: a user data folder (--data, QEMU_CONFORMANCE_DATA) adds a fixture, a case with its own
template and a known bug, and a second folder overrides that bug with ``fixed_in_packages``, which turns a
boot's not-reproduced into a pass fixed in the package (docs/data.md)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from conformance import data
from conformance.caps.model import QemuVersion
from conformance.cases import load_catalogue
from conformance.knownbugs.matcher import Facts, compare_debian_versions, expected_bugs, fixed_by_package, load_bugs
from tests.helpers import CLI, ROOT, code_under_test

BUG = """
[bugs.distro-rng-boot-hang]
title = "a virtio RNG hangs the boot (a made-up example of a distribution's bug)"
affected = ["7.2.0", "7.2.99"]
fixed = "made up"
stages = ["boot"]
reproduce = ["boot"]
concerns = { devices = [{ driver = "virtio-rng-pci" }], says = "a virtio RNG" }
match = { text = ["timed out"] }
"""

CASE = """
[cases.distro-q35-rng]
template = "distro-rng.xml.j2"
description = "a distribution's own case: q35 with a virtio RNG"
targets = ["x86_64:q35"]
stages = ["parse", "argv", "boot"]

[cases.q35-minimal]
template = "minimal.xml.j2"
description = "theirs: replaces ours of the same name"
targets = ["x86_64:q35"]
stages = ["parse", "argv"]
"""

TEMPLATE = """{% extends "base.xml.j2" %}
{% block devices %}
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
{% endblock %}
"""


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    """Folder A: a fixture (7.2.99), a case and its template, a known bug; folder B: that bug fixed in Debian's
    package versions from 1:7.2+dfsg-7+deb12u5 on (a backport)."""
    a, b = tmp_path / "distro", tmp_path / "backports"
    (a / "capsdata").mkdir(parents=True)
    (a / "templates" / "domains").mkdir(parents=True)
    b.mkdir()
    fixture = (ROOT / "capsdata" / "qemu-7.2.22-x86_64.xml").read_text()
    (a / "capsdata" / "qemu-7.2.99-x86_64.xml").write_text(fixture.replace('micro="22"', 'micro="99"', 1))
    (a / "templates" / "cases.toml").write_text(CASE)
    (a / "templates" / "domains" / "distro-rng.xml.j2").write_text(TEMPLATE)
    (a / "bugs.toml").write_text(BUG)
    (b / "bugs.toml").write_text(BUG + 'fixed_in_packages = [">=1:7.2+dfsg-7+deb12u5"]\n')
    return a, b


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, check=False,
                          env={**code_under_test(), **(env or {})})


def results(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_layers_add_and_override_in_process(layers: tuple[Path, Path]) -> None:
    a, b = layers
    data.set_user_dirs([a, b])
    try:
        catalogue = load_catalogue()
        assert catalogue.get("distro-q35-rng").layer == str(a)
        assert catalogue.get("q35-minimal").description.startswith("theirs")  # theirs wins on a name clash
        assert catalogue.get("teaming-q35").layer == "checkout"
        bug = next(x for x in load_bugs() if x.id == "distro-rng-boot-hang")
        assert bug.layer == str(b) and bug.fixed_in_packages == (">=1:7.2+dfsg-7+deb12u5",)
        assert bug.record()["layer"] == str(b)
        facts = Facts(version=QemuVersion.parse("7.2.22"), stage="boot", arch="x86_64", accel="tcg",
                      argv=("qemu-system-x86_64", "-machine", "q35", "-device", "virtio-rng-pci,id=rng0"))
        # the package decides: no package version known, an older one, the backport, a later one
        for package, expected in (("", True), ("1:7.2+dfsg-7+deb12u4", True), ("1:7.2+dfsg-7+deb12u5", False),
                                  ("1:7.2+dfsg-7+deb12u18+b3", False)):
            with_package = replace(facts, package=package)
            assert bool(expected_bugs(with_package)) is expected, package
            assert bool(fixed_by_package(with_package)) is not expected, package
    finally:
        data.set_user_dirs([])
    assert all(x.layer == "checkout" for x in load_bugs())


def test_debian_versions_compare_as_dpkg_does() -> None:
    pairs = [("1:7.2+dfsg-7+deb12u18+b3", "1:7.2+dfsg-7+deb12u5", 1), ("1.0~rc1", "1.0", -1), ("1.0", "1.0-0", 0),
             ("1:10.0.2+ds-2+deb13u1~bpo12+1", "1:10.0.2+ds-2+deb13u1", -1), ("7.2", "1:5.0", -1),
             ("2.30-1", "2.3-1", 1), ("1.0a", "1.0+", -1)]
    for left, right, sign in pairs:
        assert compare_debian_versions(left, right) == sign, (left, right)


def test_static_run_names_the_layer_of_its_case_fixture_and_bug(layers: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = layers
    listed = cli("caps", "list", "--data", str(a))
    assert listed.returncode == 0, listed.stderr
    assert f"qemu-7.2.99-x86_64.xml ({a})" in listed.stdout
    out = tmp_path / "static"
    run = cli("run", "--caps", "7.2.99:x86_64", "--cases", "distro-*", "--stages", "parse,argv", "-o", str(out),
              env={"QEMU_CONFORMANCE_DATA": str(a)})  # the setting, as the command line's --data
    assert run.returncode == 0, run.stdout + run.stderr
    found = results(out)
    assert {r["verdict"] for r in found} == {"pass"} and len(found) == 2
    for r in found:
        assert r["details"]["layer"] == str(a)  # type: ignore[index]
        assert f"data layer {a}" in r["qemu"]["path"]  # type: ignore[index]
    flags = next(r for r in found if r["stage"] == "argv")["details"]["known_bugs"]  # type: ignore[index]
    assert [(f["id"], f["layer"]) for f in flags] == [("distro-rng-boot-hang", str(a))]
    assert f"case from data layer {a}" in (out / "report.html").read_text()
    # B over A: the fixture's package (Debian 1:7.2+dfsg-7+deb12u18+b3) has the fix, so nothing is flagged
    fixed = cli("run", "--caps", "7.2.99:x86_64", "--cases", "distro-*", "--stages", "parse,argv",
                "-o", str(tmp_path / "fixed"), "--data", str(a), "--data", str(layers[1]))
    assert fixed.returncode == 0, fixed.stderr
    argv = next(r for r in results(tmp_path / "fixed") if r["stage"] == "argv")
    assert not argv["details"].get("known_bugs"), argv["details"]  # type: ignore[union-attr]


def test_a_missing_data_folder_is_one_line() -> None:
    proc = cli("bugs", "list", "--data", "/nonexistent/folder")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "data folder not found" in proc.stderr


@pytest.mark.live
def test_a_backport_override_turns_not_reproduced_into_fixed(layers: tuple[Path, Path], tmp_path: Path,
                                                             qemu_x86_64: Path) -> None:
    """The host's QEMU 7.2 (Debian's package, newer than deb12u5) boots the case: with folder A the bug is
    expected by version and does not show (not-reproduced); with B over A it is fixed in the package (pass)."""
    a, b = layers
    common = ["run", "--qemu", str(qemu_x86_64), "--cases", "distro-q35-rng", "--stages", "parse,argv,boot"]
    first = cli(*common, "--data", str(a), "-o", str(tmp_path / "a"))
    boot = next(r for r in results(tmp_path / "a") if r["stage"] == "boot")
    if "7.2" not in str(boot["qemu"]["version"]):  # type: ignore[index]
        pytest.skip(f"the host's QEMU is {boot['qemu']['version']}, not a 7.2 the example bug affects")  # type: ignore[index]
    assert boot["verdict"] == "not-reproduced", (boot["reason"], first.stderr)
    second = cli(*common, "--data", str(a), "--data", str(b), "-o", str(tmp_path / "ab"))
    assert second.returncode == 0, second.stdout + second.stderr
    boot = next(r for r in results(tmp_path / "ab") if r["stage"] == "boot")
    package = boot["qemu"]["package_version"]  # type: ignore[index]
    assert package and compare_debian_versions(str(package), "1:7.2+dfsg-7+deb12u5") >= 0
    assert boot["verdict"] == "pass", boot["reason"]
    assert "fixed in package" in str(boot["reason"])
    fixed = boot["details"]["fixed_in_package"]  # type: ignore[index]
    assert fixed[0]["id"] == "distro-rng-boot-hang" and fixed[0]["layer"] == str(b)
    report = (tmp_path / "ab" / "report.html").read_text()
    assert f"fixed in package {package}" in report and f"data layer {b}" in report  # the bug's facts
