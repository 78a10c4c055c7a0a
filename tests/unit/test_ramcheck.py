"""The RAM comparison of the migrate stage, without a QEMU: the memory map, the region ids, the page diff,
and the decision (a difference fails, unless it is LPIs set pending in a GICv3 pending table), on data
recorded from a real aarch64 failover migration (tests/data/ramcheck/*/README.md).
(A real comparison runs in every live migration: tests/live/test_migrate_cases.py.)"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from conformance.live.ramcheck import (
    PAGE,
    PendingTable,
    RamComparison,
    _differing_pages,
    lpis_set,
    parse_xp,
    pending_table,
    pending_tables,
    ram_ranges,
    ram_region_names,
    redistributor_regions,
    sort_pages,
    xp_command,
)
from tests.helpers import DATA, ROOT

RECORDED = DATA / "ramcheck" / "aarch64-failover-7.2.22"
PAGE_ADDR = 0x421B0000  # the page that differed, redistributor 0's LPI pending table
BUGS = ROOT / "conformance" / "knownbugs" / "bugs.toml"

# HMP `info mtree -f` of QEMU 7.2 (q35, 256 MiB), cut down: the I/O view, then "memory" with a ROM hole
MTREE = """FlatView #0
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan

FlatView #1
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): pc.ram
  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem
  00000000000c0000-00000000000dffff (prio 1, rom): pc.ram @00000000000c0000
  00000000000e0000-00000000000fffff (prio 1, ram): pc.ram @00000000000e0000
  0000000000100000-000000000fffffff (prio 0, ram): pc.ram @0000000000100000
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios

FlatView #2
 AS "pci-bridge", root: bus master container
  0000000000000000-000000000fffffff (prio 0, ram): pc.ram
"""


def test_ram_ranges_are_the_guest_ram_of_the_memory_view_merged() -> None:
    names = frozenset({"pc.ram"})
    assert ram_ranges(MTREE, names) == [(0, 0xa0000), (0xe0000, 0x10000000 - 0xe0000)]
    assert ram_ranges(MTREE, frozenset({"mach-virt.ram"})) == []


def test_region_ids_come_from_the_memory_backends() -> None:
    argv = ["qemu", "-object", '{"qom-type":"memory-backend-ram","id":"ram-node0","size":1}',
            "-object", "memory-backend-file,id=ram-node1,size=1,mem-path=/dev/shm", "-m", "2"]
    assert ram_region_names(argv) == {"ram-node0", "ram-node1"}
    assert ram_region_names(["qemu", "-m", "256"]) == {"pc.ram", "mach-virt.ram"}


def test_differing_pages_are_named_by_guest_physical_address(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    data = bytearray(3 << 20)
    a.write_bytes(bytes(data))
    data[(1 << 20) + 2 * PAGE + 1024] = 2  # one byte of the third page of the second MiB
    data[(3 << 20) - 1] = 7  # the last byte
    b.write_bytes(bytes(data))
    base = 0x40000000
    assert _differing_pages(a, b, base) == [base + (1 << 20) + 2 * PAGE, base + (3 << 20) - PAGE]
    assert _differing_pages(a, a, base) == []


def test_the_failure_line_names_pages_and_a_clean_compare_says_nothing() -> None:
    found = RamComparison(compared=256 << 20, differing=[0xf620000, 0xf605000])
    assert found.problem().startswith("destination RAM differs from the source's at the switch: 2 page(s)")
    assert "0xf620000" in found.problem() and found.record()["differing_pages"] == 2
    assert RamComparison(compared=256 << 20).problem() == ""


# --- the decision, on the recorded aarch64 failover migration -------------------------------------------

def _hmp() -> dict[str, str]:
    return json.loads((RECORDED / "hmp.json").read_text())


def _recorded_read(addr: int, size: int) -> int | None:
    """A read of the destination's registers, answered from its recorded HMP replies."""
    reply = _hmp().get(xp_command(addr, size))
    return None if reply is None else parse_xp(reply)


def _page(side: str) -> bytes:
    return (RECORDED / f"{PAGE_ADDR:#x}.{side}").read_bytes()


def _dumps(tmp_path: Path, destination_page: bytes) -> tuple[Path, Path, int]:
    """Two 1 MiB dumps of the range around the recorded page: the source's, and the destination's with
    ``destination_page`` in place of the source's copy."""
    base = PAGE_ADDR & ~0xFFFFF
    source = bytearray(1 << 20)
    source[PAGE_ADDR - base:PAGE_ADDR - base + PAGE] = _page("source")
    destination = bytearray(source)
    destination[PAGE_ADDR - base:PAGE_ADDR - base + PAGE] = destination_page
    paths = tmp_path / "source.bin", tmp_path / "destination.bin"
    paths[0].write_bytes(bytes(source))
    paths[1].write_bytes(bytes(destination))
    return paths[0], paths[1], base


def test_the_recorded_pending_table_is_found_from_the_redistributor_registers() -> None:
    mtree = _hmp()["info mtree -f"]
    assert redistributor_regions(mtree) == [(0x80A0000, 0x20000)]
    assert ram_ranges(mtree, frozenset({"mach-virt.ram"})) == [(0x40000000, 256 << 20)]
    assert pending_tables(mtree, _recorded_read) == [PendingTable(cpu=0, start=PAGE_ADDR, size=8192)]
    assert parse_xp("Cannot access memory\r\n") is None
    # no redistributor (x86_64, or KVM's in-kernel GIC): nothing to accept
    assert pending_tables(MTREE, _recorded_read) == []
    # a redistributor with LPIs disabled (GICR_CTLR.EnableLPIs = 0) has no table in use
    assert pending_tables(mtree, lambda a, s: 0 if a == 0x80A0000 else _recorded_read(a, s)) == []


def test_a_difference_explained_by_lpis_set_on_load_passes_with_a_note(tmp_path: Path) -> None:
    source, destination, base = _dumps(tmp_path, _page("destination"))
    out = RamComparison(compared=1 << 20)
    sort_pages(out, source, destination, base, lambda: pending_tables(_hmp()["info mtree -f"], _recorded_read))
    table = PendingTable(cpu=0, start=PAGE_ADDR, size=8192)
    assert out.differing == [] and out.explained == [PAGE_ADDR] and out.pending == {table: [8193]}
    failure, check, note = out.verdict()
    assert failure == "" and out.problem() == ""
    assert note.startswith("LPI 8193 in redistributor 0's pending table (0x421b0000-0x421b1fff) set pending")
    assert check.startswith("RAM: the destination's 1 MiB equal the source's but for LPI 8193")
    assert out.record()["lpis_set_on_load"] == {table.describe(): [8193]}


def test_a_difference_without_a_pending_table_fails_and_the_known_bug_can_match_it(tmp_path: Path) -> None:
    source, destination, base = _dumps(tmp_path, _page("destination"))
    out = RamComparison(compared=1 << 20)
    asked: list[int] = []
    sort_pages(out, source, destination, base, lambda: asked.append(1) or [])  # x86_64: no GICv3
    assert out.differing == [PAGE_ADDR] and out.explained == [] and asked
    failure, check, note = out.verdict()
    assert failure.startswith("destination RAM differs from the source's at the switch: 1 page(s)")
    assert check == "" and note == ""
    # the failure line is what the known bug of lost TCG writes matches (it explains it where it applies)
    bug = tomllib.loads(BUGS.read_text())["bugs"]["tcg-migration-lost-dirty-pages"]
    assert any(re.search(p, failure) for p in bug["match"]["text"])


@pytest.mark.parametrize(("offset", "value", "expected"), [
    (0x400, 0x00, None),  # LPI 8193's pending bit cleared: an interrupt lost, not raised
    (0x400, 0x03, [8192]),  # LPI 8192 set as well: only gains bits
    (0x10, 0x01, None),  # interrupt id 128: below the LPIs (ids 0-8191 are not in the table's use)
])
def test_only_lpis_that_became_pending_are_accepted(offset: int, value: int, expected: list[int] | None) -> None:
    before = _page("destination")  # a source that already had LPI 8193 pending
    after = bytearray(before)
    after[offset] = value
    table = PendingTable(cpu=0, start=PAGE_ADDR, size=8192)
    assert lpis_set(PAGE_ADDR, before, bytes(after), [table]) == (None if expected is None else {table: expected})


def test_a_difference_outside_the_table_or_beside_it_fails(tmp_path: Path) -> None:
    page = bytearray(_page("destination"))
    page[0x10] = 0x80  # below LPI 8192: not an LPI
    source, destination, base = _dumps(tmp_path, bytes(page))
    out = RamComparison(compared=1 << 20)
    sort_pages(out, source, destination, base, lambda: [PendingTable(cpu=0, start=PAGE_ADDR, size=8192)])
    assert out.differing == [PAGE_ADDR] and out.verdict().failure
    table = pending_table(0x421B0780, 0x421A078F)
    assert (table.start, table.size) == (PAGE_ADDR, 8192)
    # the same bit in a page of the guest's own memory, next to the table: a lost write, never accepted
    assert lpis_set(PAGE_ADDR + 2 * PAGE, bytes(PAGE), _page("destination"), [table]) is None
