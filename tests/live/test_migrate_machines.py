"""Migrations under a given machine type (--machines all/REGEX), on real QEMU builds: the machine type both
sides run, what the result records (machine, direction, deprecation) and that a deprecated machine type only
warns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.cases import load_catalogue
from conformance.live.boot import Target
from conformance.live.migrate import run_migrate
from conformance.machines import FROM_GIVEN

pytestmark = pytest.mark.live



def _machine_arg(result_dir: Path, artifact: str) -> str:
    argv = json.loads((result_dir / artifact).read_text())
    return str(argv[argv.index("-machine") + 1]).split(",")[0]


def test_one_build_migrates_under_an_older_machine_type(x86_target: Target, tmp_path: Path) -> None:
    catalogue = load_catalogue()
    r = run_migrate(catalogue.get("q35-minimal"), x86_target, x86_target, catalogue, tmp_path, machine="pc-q35-5.2")
    assert r.verdict == "pass", r.reason
    assert r.details["machine"] == "pc-q35-5.2" and r.details["machine_from"] == FROM_GIVEN
    assert r.details["direction"] == "same"
    for side in ("source", "destination"):  # both sides ran the older type, not the case's q35 alias
        assert _machine_arg(tmp_path, r.artifacts[f"{side}-cmdline"]) == "pc-q35-5.2"
    assert "pc-q35-5.2" in r.artifacts["source-folder"]  # its own folder beside the pair's other machine types


def test_forward_across_builds_under_the_older_builds_newest_type(x86_target: Target, x86_10_target: Target,
                                                                 tmp_path: Path) -> None:
    catalogue = load_catalogue()
    r = run_migrate(catalogue.get("q35-minimal"), x86_target, x86_10_target, catalogue, tmp_path,
                    machine="pc-q35-7.2")
    assert r.verdict == "pass", r.reason
    assert (r.details["machine"], r.details["direction"]) == ("pc-q35-7.2", "forward")
    assert _machine_arg(tmp_path, r.artifacts["destination-cmdline"]) == "pc-q35-7.2"
    assert "machine_deprecated" not in r.details  # neither build deprecates pc-q35-7.2


def test_a_machine_type_deprecated_in_a_build_warns_and_passes(x86_10_target: Target, tmp_path: Path) -> None:
    catalogue = load_catalogue()
    r = run_migrate(catalogue.get("q35-minimal"), x86_10_target, x86_10_target, catalogue, tmp_path,
                    machine="pc-q35-5.2")
    assert r.verdict == "pass", r.reason
    assert r.details["machine_deprecated"] == ["10.0.2-x86_64"]
    warnings = r.details["machine_deprecated_warnings"]  # QEMU's own stderr line, as the evidence
    assert set(warnings) == {"source", "destination"}
    assert all("pc-q35-5.2" in line and "deprecated" in line for line in warnings.values())


def test_a_machine_type_one_build_lacks_is_a_skip_that_names_it(x86_target: Target, x86_10_target: Target,
                                                              tmp_path: Path) -> None:
    catalogue = load_catalogue()
    r = run_migrate(catalogue.get("q35-minimal"), x86_target, x86_10_target, catalogue, tmp_path,
                    machine="pc-q35-10.0")
    assert r.verdict == "skip" and r.reason == "machine type pc-q35-10.0 unknown to QEMU 7.2.22"
    assert r.details["direction"] == "forward"


def test_failover_under_a_machine_type_with_legacy_virtio_is_a_skip_that_says_why(x86_target: Target,
                                                                                  tmp_path: Path) -> None:
    """pc-q35-2.6 turns virtio-pci's modern interface off (hw_compat_2_6): the standby cannot offer
    VIRTIO_NET_F_STANDBY, so failover is never negotiated. A fact of the machine type, not a migration break."""
    catalogue = load_catalogue()
    r = run_migrate(catalogue.get("teaming-q35"), x86_target, x86_target, catalogue, tmp_path, machine="pc-q35-2.6")
    assert r.verdict == "skip", r.reason
    assert "under pc-q35-2.6: the standby ua-backup0 is a legacy virtio device" in r.reason
    console = (tmp_path / r.artifacts["source-console"]).read_text()
    assert "1af4:1000" in console and "role=failover-master" not in console  # what the guest saw: no failover


def test_the_pytest_plugin_parametrises_one_migration_per_machine_type(qemu_x86_64: Path) -> None:
    from conformance.pytest_plugin import _binary_names, migrate_params

    build = _binary_names(qemu_x86_64)[0]
    params = migrate_params([qemu_x86_64], ["q35-minimal"], r"pc-q35-[57]\.2$")
    assert [p.id for p in params] == [f"q35-minimal[{build}->{build}@pc-q35-{v}.2]" for v in (5, 7)]
    assert [p.values[0].machine for p in params] == ["pc-q35-5.2", "pc-q35-7.2"]
    assert [p.id for p in migrate_params([qemu_x86_64], ["q35-minimal"])] == [f"q35-minimal[{build}->{build}]"]
