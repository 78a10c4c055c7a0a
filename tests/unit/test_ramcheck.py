"""The RAM comparison of the migrate stage, without a QEMU: the memory map, the region ids, where QEMU's
guest RAM is (gpa2hva, /proc/PID/maps), the page diff, and the decision (a difference fails, unless it
is LPIs set pending in a GICv3 pending table), on data recorded from a real aarch64 failover migration
(tests/data/ramcheck/*/README.md). (Both ways of reading RAM on real QEMUs: tests/live/test_ramcheck_qemu.py;
a real comparison runs in every live migration: tests/live/test_migrate_cases.py.)"""

from __future__ import annotations

import ctypes
import json
import os
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conformance.live.ramcheck import (
    KEEP,
    PAGE,
    FastPathUnavailable,
    PendingTable,
    RamComparison,
    Reader,
    covered,
    file_reader,
    gpa2hva,
    lpis_set,
    parse_xp,
    pending_table,
    pending_tables,
    process_reader,
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


def _reader(data: bytes, base: int) -> Reader:
    """A reader of ``data`` as the guest RAM range at ``base`` (what process_reader and file_reader are)."""
    def read(addr: int, buf: bytearray) -> None:
        buf[:] = data[addr - base:addr - base + len(buf)]
    return read


def _sorted(source: bytes, destination: bytes, base: int, tables: Any = list) -> RamComparison:
    out = RamComparison(compared=len(source))
    sort_pages(out, _reader(source, base), _reader(destination, base), base, len(source), tables)
    return out


def test_differing_pages_are_named_by_guest_physical_address() -> None:
    data = bytearray(3 << 20)
    same = bytes(data)
    data[(1 << 20) + 2 * PAGE + 1024] = 2  # one byte of the third page of the second MiB
    data[(3 << 20) - 1] = 7  # the last byte
    base = 0x40000000
    out = _sorted(same, bytes(data), base)
    assert out.differing == [base + (1 << 20) + 2 * PAGE, base + (3 << 20) - PAGE] and out.explained == []
    # both sides' copy of each page is kept for the evidence (ram-differs/)
    assert out.pages[base + (3 << 20) - PAGE] == (bytes(PAGE), bytes(PAGE - 1) + b"\x07")
    assert _sorted(same, same, base).differing == []
    # a range that is not a whole number of MiB: its last piece is compared too
    assert _sorted(same[:PAGE * 3], bytes(data[:PAGE * 2]) + b"\x01" + bytes(PAGE - 1), 0).differing == [2 * PAGE]


def test_evidence_keeps_the_first_pages_of_each_kind_only() -> None:
    many = bytearray(1 << 20)
    for n in range(40):
        many[n * PAGE] = 1
    out = _sorted(bytes(1 << 20), bytes(many), 0)
    assert len(out.differing) == 40 and sorted(out.pages) == [n * PAGE for n in range(KEEP)]


def test_file_reader_reads_a_dump_at_guest_physical_addresses(tmp_path: Path) -> None:
    dump = tmp_path / "ram-0.bin"
    dump.write_bytes(bytes(range(256)) * 64)
    buf = bytearray(4)
    file_reader(dump, 0x1000)(0x1000 + 254, buf)
    assert buf == bytes([254, 255, 0, 1])
    with pytest.raises(OSError, match="shorter than the range"):
        file_reader(dump, 0x1000)(0x1000 + len(dump.read_bytes()) - 2, buf)


MAPS = """55d0c1a00000-55d0c1b00000 r-xp 00000000 fe:01 123  /usr/bin/qemu-system-x86_64
7f4bb8000000-7f4bc0000000 rw-p 00000000 00:00 0
7f4bc0000000-7f4bc8000000 rw-p 00000000 00:00 0
7f4bc8200000-7f4bc8400000 rw-p 00000000 00:00 0
"""


def test_guest_ram_must_lie_in_the_mappings_of_the_process() -> None:
    assert covered(MAPS, 0x7F4BB8000000, 256 << 20)  # two adjacent mappings (madvise splits them)
    assert covered(MAPS, 0x7F4BB8001000, PAGE)
    assert not covered(MAPS, 0x7F4BB8000000, (256 << 20) + PAGE)  # runs into the gap after them
    assert not covered(MAPS, 0x1000, PAGE)


class _Hmp:
    """A QEMU that answers HMP with fixed text (and is "running" as this test's own process)."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.process = SimpleNamespace(pid=os.getpid(), is_running=lambda: True, qmp=self)

    def cmd(self, _name: str, **args: str) -> str:
        return self.replies.get(args["command-line"], "unknown command\r\n")


def test_gpa2hva_gives_the_host_address_or_says_why_not() -> None:
    vm = _Hmp({"gpa2hva 0x100000": "Host virtual address for 0x100000 (pc.ram) is 0x7f0d1ff00000\r\n",
               "gpa2hva 0x40000000": "No memory is mapped at address 0x40000000\r\n"})
    assert gpa2hva(vm, 0x100000) == 0x7F0D1FF00000
    with pytest.raises(FastPathUnavailable, match="gpa2hva 0x40000000: No memory is mapped at address 0x40000000"):
        gpa2hva(vm, 0x40000000)


def test_the_fast_path_is_refused_before_any_work_when_ram_is_not_where_qemu_says() -> None:
    # this test's process as the "QEMU": gpa2hva answers an address it does not map
    vm = _Hmp({"gpa2hva 0x100000": "Host virtual address for 0x100000 (pc.ram) is 0x1000\r\n",
               "gpa2hva 0x1fffff": "Host virtual address for 0x1fffff (pc.ram) is 0x100fff\r\n"})
    with pytest.raises(FastPathUnavailable, match="maps nothing at 0x1000-0x100fff, where QEMU says guest RAM"):
        process_reader(vm, [(0x100000, 0x100000)])
    split = _Hmp({"gpa2hva 0x100000": "Host virtual address for 0x100000 (pc.ram) is 0x1000\r\n",
                  "gpa2hva 0x1fffff": "Host virtual address for 0x1fffff (pc.ram) is 0x900fff\r\n"})
    with pytest.raises(FastPathUnavailable, match="not contiguous in QEMU's memory"):
        process_reader(split, [(0x100000, 0x100000)])


def test_process_reader_reads_this_process_memory_by_guest_physical_address() -> None:
    """process_vm_readv on a process whose layout is known (this one): two pieces, a read across both."""
    first, second = ctypes.create_string_buffer(b"A" * PAGE, PAGE), ctypes.create_string_buffer(b"B" * PAGE, PAGE)
    pages = {0x0: ctypes.addressof(first), 0x1000: ctypes.addressof(second)}
    vm = _Hmp({f"gpa2hva {gpa + off:#x}": f"Host virtual address for {gpa + off:#x} (ram) is {host + off:#x}\r\n"
               for gpa, host in pages.items() for off in (0, PAGE - 1)})
    read = process_reader(vm, [(0x0, PAGE), (0x1000, PAGE)])
    buf = bytearray(8)
    read(PAGE - 4, buf)
    assert buf == b"AAAABBBB"
    with pytest.raises(FastPathUnavailable, match="0x2000 is not guest RAM"):
        read(0x2000, buf)


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


def _ranges(destination_page: bytes) -> tuple[bytes, bytes, int]:
    """Both sides' MiB around the recorded page: the source's, and the destination's with ``destination_page``
    in place of the source's copy; and where that MiB starts."""
    base = PAGE_ADDR & ~0xFFFFF
    source = bytearray(1 << 20)
    source[PAGE_ADDR - base:PAGE_ADDR - base + PAGE] = _page("source")
    destination = bytearray(source)
    destination[PAGE_ADDR - base:PAGE_ADDR - base + PAGE] = destination_page
    return bytes(source), bytes(destination), base


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


def test_a_difference_explained_by_lpis_set_on_load_passes_with_a_note() -> None:
    source, destination, base = _ranges(_page("destination"))
    out = _sorted(source, destination, base, lambda: pending_tables(_hmp()["info mtree -f"], _recorded_read))
    table = PendingTable(cpu=0, start=PAGE_ADDR, size=8192)
    assert out.differing == [] and out.explained == [PAGE_ADDR] and out.pending == {table: [8193]}
    failure, check, note = out.verdict()
    assert failure == "" and out.problem() == ""
    assert note.startswith("LPI 8193 in redistributor 0's pending table (0x421b0000-0x421b1fff) set pending")
    assert check.startswith("RAM: the destination's 1 MiB equal the source's but for LPI 8193")
    assert out.record()["lpis_set_on_load"] == {table.describe(): [8193]}


def test_a_difference_without_a_pending_table_fails_and_the_known_bug_can_match_it() -> None:
    source, destination, base = _ranges(_page("destination"))
    asked: list[int] = []
    out = _sorted(source, destination, base, lambda: asked.append(1) or [])  # x86_64: no GICv3
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


def test_a_difference_outside_the_table_or_beside_it_fails() -> None:
    page = bytearray(_page("destination"))
    page[0x10] = 0x80  # below LPI 8192: not an LPI
    source, destination, base = _ranges(bytes(page))
    out = _sorted(source, destination, base, lambda: [PendingTable(cpu=0, start=PAGE_ADDR, size=8192)])
    assert out.differing == [PAGE_ADDR] and out.verdict().failure
    table = pending_table(0x421B0780, 0x421A078F)
    assert (table.start, table.size) == (PAGE_ADDR, 8192)
    # the same bit in a page of the guest's own memory, next to the table: a lost write, never accepted
    assert lpis_set(PAGE_ADDR + 2 * PAGE, bytes(PAGE), _page("destination"), [table]) is None
