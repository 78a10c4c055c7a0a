"""The RAM comparison of the migrate stage, without a QEMU: the memory map, the region ids, the page diff.
(A real comparison runs in every live migration: tests/live/test_migrate_cases.py.)"""

from __future__ import annotations

from pathlib import Path

from conformance.live.ramcheck import PAGE, RamComparison, _differing_pages, ram_ranges, ram_region_names

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
