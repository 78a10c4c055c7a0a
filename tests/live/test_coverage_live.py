"""Device coverage of the host's QEMU 7.2 x86_64, measured for real (``qemu-conformance coverage``):
the build is asked, the cases are started paused and their QOM trees walked. About 30 s cold."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from conformance.coverage import measure, summary

pytestmark = [pytest.mark.live, pytest.mark.xdist_group("coverage")]  # one worker measures once


@pytest.fixture(scope="module")
def measured(qemu_x86_64: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache = tmp_path_factory.mktemp("coverage-cache")
    started = time.monotonic()
    cold = measure([qemu_x86_64], cache_root=cache)
    cold_s = time.monotonic() - started
    started = time.monotonic()
    cached = measure([qemu_x86_64], cache_root=cache)
    return {"cold": cold, "cached": cached, "cold_s": cold_s, "cached_s": time.monotonic() - started,
            "by_family": {row["family"]: row for row in cold}}


def test_families_of_the_host_build(measured: dict[str, Any]) -> None:
    families = measured["by_family"]
    assert set(families) == {"q35", "pc"}
    assert {row["build"] for row in measured["cold"]} == {"7.2.22"} or all(
        row["build"].startswith("7.2") for row in measured["cold"])


def test_q35_offers_virtio_net_pci_and_not_what_the_dump_marks_unmigratable(measured: dict[str, Any]) -> None:
    q35 = measured["by_family"]["q35"]
    migratable = set(q35["migratable"])
    assert "virtio-net-pci" in migratable  # its state is its virtio-net-device child's
    assert "e1000e" in migratable and "isa-serial" in migratable
    unmigratable = set(q35["unmigratable"])
    assert {"usb-net", "nvme"} <= unmigratable  # empty state descriptions in 7.2's dump
    assert not migratable & unmigratable
    assert "ICH9-LPC" not in migratable  # not user-creatable


def test_usb_uas_blocks_migration_and_is_unmigratable_on_q35(measured: dict[str, Any]) -> None:
    """7.2 marks usb-uas's state description unmigratable, which -dump-vmstate does not show: the
    cold-plugged family's query-migrate names it, and it leaves the offered types."""
    q35 = measured["by_family"]["q35"]
    assert "usb-uas" not in q35["migratable"] and "usb-uas" not in q35["covered"]
    why = q35["unmigratable"]["usb-uas"]
    assert why.startswith("migration blocked (QEMU: non-migratable device: ") and why.endswith("/usb-uas)"), why
    assert q35["blockers"].startswith("query-migrate"), q35["blockers"]
    for name in ("usb-mtp", "virtio-crypto-pci"):  # cold-plugged with a backend, blocked the same way
        assert q35["unmigratable"].get(name, "").startswith("migration blocked (QEMU: "), name
    assert "virtio-net-pci" not in q35["unmigratable"] and "usb-tablet" in q35["migratable"]


def test_covered_includes_what_the_machine_adds(measured: dict[str, Any]) -> None:
    q35, pc = measured["by_family"]["q35"], measured["by_family"]["pc"]
    assert {"ICH9-LPC", "mch"} <= set(q35["covered"])  # -nodefaults keeps the chipset
    assert "q35-minimal" in q35["covered"]["ICH9-LPC"]
    assert "net-user-virtio" in q35["covered"]["virtio-net-pci"]
    assert "PIIX3" in pc["covered"] and "ICH9-LPC" not in pc["covered"]
    assert "net-user-e1000" in pc["covered"]["e1000"]


def test_not_coverable_stays_under_a_third(measured: dict[str, Any]) -> None:
    for row in measured["cold"]:
        s = summary(row)
        assert s["not_coverable"] * 3 < s["offered"], (row["family"], row["not_coverable"])
        assert s["covered"] + s["not_coverable"] + len(s["uncovered"]) == s["offered"]
    pc = measured["by_family"]["pc"]
    assert "pcie-root-port" in pc["not_coverable"]
    assert "ISA" not in str(pc["not_on_family"])  # pc has an ISA bus


def test_a_rerun_is_served_from_the_cache(measured: dict[str, Any]) -> None:
    assert measured["cached"] == measured["cold"]
    assert measured["cached_s"] < min(10.0, measured["cold_s"] / 2), (measured["cached_s"], measured["cold_s"])
