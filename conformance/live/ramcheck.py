"""Guest RAM at the switch: the stopped source against the destination that loaded it and has not run yet.

A migration that loses a guest write leaves the destination's RAM different from the source's. Its
guest may crash at once, much later, or never. So the migrate stage compares the two before the
destination runs (it starts with ``-S``, as libvirt starts one): ``pmemsave`` of each guest RAM
range on both sides, compared page by page. The ranges are the guest RAM regions of the flat view
of the "memory" address space (HMP ``info mtree -f``). The dumps are written in each side's VM
folder and deleted once compared. Up to ``KEEP`` differing pages of both sides stay as evidence in
the destination's folder (``ram-differs/``).

A difference is a failure (upstream's migration tests assert the same: qtest's ``check_guests_ram()``
ends in ``bad == 0``), unless a known bug explains it (the migrate stage's explain step matches the
failure line; seen on QEMU 7.2 under TCG, known bug ``tcg-migration-lost-dirty-pages``: about 4% of
failover migrations lost a few per-CPU pages, and the destination's guest panicked in its timer code).

One exception is learnt, because it is device state that the architecture keeps in guest RAM: a GICv3
redistributor's LPI pending table (one bit per interrupt id, at GICR_PENDBASER, 2^(GICR_PROPBASER.IDbits
+ 1) bits; software must not write it while LPIs are enabled). QEMU's emulated GIC records an LPI that
becomes pending there (``gicv3_redist_process_lpi`` -> ``gicv3_redist_lpi_pending`` ->
``set_pending_table_bit``, an ``address_space_write``). A device that raises an MSI while the
destination loads therefore changes its guest RAM. Seen in every aarch64 failover migration (7.2 and
10.0): loading virtio-net's state sets its features, the failover standby hot-plugs its primary
(``virtio_net_set_features`` -> ``failover_add_primary``), the primary's pcie-root-port signals the
hot-plug by MSI (requester 00:01.1 in the ITS trace), and LPI 8193 becomes pending: 0 -> 2 at byte 0x400
of the pending table. On x86_64 the same interrupt lands in the local APIC's state, not in RAM. The
check reads each redistributor's registers from the destination (HMP ``xp`` on the
``gicv3_redist_region`` frames of the memory map) and accepts a differing page only when every
difference lies in a pending table and only sets bits; the result records those LPIs as a note.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from conformance.qemu.qmp import QmpError

PAGE = 4096
CHUNK = 1 << 20  # compared a MiB at a time, page by page only where a MiB differs
KEEP = 16  # differing pages kept as evidence (both sides)
DEFAULT_RAM = frozenset({"pc.ram", "mach-virt.ram"})  # QEMU's RAM region ids without -machine memory-backend
_FLAT = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ram\): (\S+)")
_REDIST = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, i/o\): gicv3_redist_region\[\d+\]")
_XP = re.compile(r"^[0-9a-f]+:\s+0x([0-9a-f]+)\s*$")
# GICv3 redistributor registers (offsets in a redistributor's RD_base frame) and fields
GICR_CTLR, GICR_TYPER, GICR_PROPBASER, GICR_PENDBASER = 0x0, 0x8, 0x70, 0x78
CTLR_ENABLE_LPIS, TYPER_PLPIS, TYPER_VLPIS, TYPER_LAST = 1, 1 << 0, 1 << 1, 1 << 4
LPI_FIRST = 8192  # the first LPI interrupt id


@dataclass(frozen=True)
class PendingTable:
    """One GICv3 redistributor's LPI pending table: guest RAM that the redistributor owns (one bit per
    interrupt id), where QEMU's emulated GIC records each LPI that becomes pending."""

    cpu: int  # GICR_TYPER.Processor_Number
    start: int
    size: int  # bytes

    def holds(self, addr: int) -> bool:
        return self.start <= addr < self.start + self.size

    def describe(self) -> str:
        return f"redistributor {self.cpu}'s pending table ({self.start:#x}-{self.start + self.size - 1:#x})"


Pending = dict[PendingTable, list[int]]  # LPIs set pending, by table


class RamVerdict(NamedTuple):
    """The comparison's part of a migration's verdict: a ``failure`` line (the migration fails, unless
    a known bug explains it: the explain step matches this line), else a passed ``check`` line, and a
    ``note`` for the reason when an accepted difference was found."""

    failure: str = ""
    check: str = ""
    note: str = ""


@dataclass
class RamComparison:
    """What the comparison found; ``note`` says why it could not compare (then nothing was).
    ``differing``: pages that differ with no explanation; ``pending``: LPIs that became pending in the
    destination's GICv3 pending tables while it loaded (the one difference accepted), by table."""

    compared: int = 0  # bytes
    differing: list[int] = field(default_factory=list)  # guest-physical addresses of differing pages
    seconds: float = 0.0
    note: str = ""
    pending: Pending = field(default_factory=dict)
    explained: list[int] = field(default_factory=list)  # pages whose differences ``pending`` explains

    def record(self) -> dict[str, Any]:
        return {"compared_mib": self.compared >> 20, "differing_pages": len(self.differing),
                "first_differing": [hex(a) for a in self.differing[:KEEP]], "seconds": round(self.seconds, 2),
                **({"note": self.note} if self.note else {}),
                **({"explained_pages": [hex(a) for a in self.explained[:KEEP]],
                    "lpis_set_on_load": {t.describe(): lpis for t, lpis in self.pending.items()},
                    "explained": self.explanation()} if self.explained else {})}

    def problem(self) -> str:
        """The failure line, or "" when both sides hold the same RAM (but for the accepted exception)."""
        if not self.differing:
            return ""
        shown = ", ".join(hex(a) for a in self.differing[:4]) + (", ..." if len(self.differing) > 4 else "")
        return (f"destination RAM differs from the source's at the switch: {len(self.differing)} page(s) "
                f"of {PAGE} bytes ({shown}); see ram-differs/ in the destination's folder")

    def verdict(self) -> RamVerdict:
        """What the comparison adds to the migrate stage's verdict."""
        if self.note:
            return RamVerdict(check=f"RAM: {self.note}")
        if self.differing:
            return RamVerdict(failure=self.problem())
        note = self.explanation()
        return RamVerdict(check=f"RAM: the destination's {self.compared >> 20} MiB equal the source's"
                          + (f" but for {note}" if note else ""), note=note)

    def explanation(self) -> str:
        """The accepted difference in words (a note of the result), or ""."""
        if not self.pending:
            return ""
        tables = "; ".join(f"LPI {', '.join(map(str, lpis))} in {t.describe()}" for t, lpis in self.pending.items())
        return (f"{tables} set pending during the load: QEMU's GICv3 keeps pending interrupts in guest RAM "
                f"(aarch64 failover: the primary's hot-plug MSI)")


def pending_table(pendbaser: int, propbaser: int, cpu: int = 0) -> PendingTable:
    """The LPI pending table that GICR_PENDBASER (its address, bits 51:16) and GICR_PROPBASER (IDbits,
    bits 4:0: 2^(IDbits + 1) interrupt ids, one bit each) describe."""
    start = pendbaser & ((1 << 52) - 1) & ~0xFFFF
    return PendingTable(cpu=cpu, start=start, size=(1 << ((propbaser & 0x1F) + 1)) // 8)


def redistributor_regions(mtree: str) -> list[tuple[int, int]]:
    """(start, size) of each GICv3 redistributor region of the "memory" flat view (``info mtree -f``).
    Seen with QEMU's emulated GICv3 (TCG); under KVM the in-kernel GIC owns the registers (not tried
    here: a read that shows no redistributor with LPIs enabled accepts nothing)."""
    return [(int(m[1], 16), int(m[2], 16) + 1 - int(m[1], 16))
            for line in _memory_view(mtree) if (m := _REDIST.match(line))]


def xp_command(addr: int, size: int) -> str:
    """The HMP command that reads ``size`` (4 or 8) bytes at a guest-physical address."""
    return f"xp /1{'g' if size == 8 else 'w'}x {addr:#x}"


def parse_xp(text: str) -> int | None:
    """The value of a one-unit HMP ``xp`` (``0000000008a0078: 0x00000000421b0780``), None on an error."""
    m = _XP.match(text.strip())
    return int(m[1], 16) if m else None


def pending_tables(mtree: str, read: Callable[[int, int], int | None]) -> list[PendingTable]:
    """The LPI pending tables of the redistributors that have LPIs enabled, found the way a driver finds
    them: walk each redistributor region's frames (two 64 KiB pages each, four with virtual LPIs) until
    GICR_TYPER.Last. ``read(addr, size)``: a guest-physical read of 4 or 8 bytes, None when it failed."""
    tables = []
    for start, size in redistributor_regions(mtree):
        frame = start
        while frame < start + size:
            typer = read(frame + GICR_TYPER, 8)
            if typer is None:
                break
            ctlr, propbaser, pendbaser = (read(frame + GICR_CTLR, 4), read(frame + GICR_PROPBASER, 8),
                                          read(frame + GICR_PENDBASER, 8))
            if typer & TYPER_PLPIS and ctlr is not None and ctlr & CTLR_ENABLE_LPIS and propbaser and pendbaser:
                tables.append(pending_table(pendbaser, propbaser, cpu=(typer >> 8) & 0xFFFF))
            if typer & TYPER_LAST:
                break
            frame += 0x40000 if typer & TYPER_VLPIS else 0x20000
    return tables


def lpis_set(page: int, source: bytes, destination: bytes, tables: list[PendingTable]) -> Pending | None:
    """The LPIs that became pending in the destination's copy of ``page`` (both sides' bytes of it), when
    that accounts for every difference in it: each differing byte lies in a pending table and only gains
    bits, each an LPI (id 8192 or more). None when some difference is anything else."""
    found: Pending = {}
    for offset, (was, now) in enumerate(zip(source, destination, strict=True)):
        if was == now:
            continue
        addr = page + offset
        table = next((t for t in tables if t.holds(addr)), None)
        if table is None or was & ~now:
            return None
        ids = [(addr - table.start) * 8 + bit for bit in range(8) if (now & ~was) >> bit & 1]
        if min(ids) < LPI_FIRST:
            return None
        found.setdefault(table, []).extend(ids)
    return found or None


def ram_region_names(argv: list[str]) -> frozenset[str]:
    """Ids of the guest RAM: the memory backends the command line creates, else QEMU's default RAM ids."""
    ids = set()
    for i, arg in enumerate(argv[:-1]):
        value = argv[i + 1]
        if arg == "-object" and "memory-backend-" in value:
            found = re.search(r'"id"\s*:\s*"([^"]+)"', value) or re.search(r"(?:^|,)id=([^,]+)", value)
            if found:
                ids.add(found[1])
    return frozenset(ids) or DEFAULT_RAM


def _memory_view(mtree: str) -> Iterator[str]:
    """The lines of the "memory" address space's flat view in ``info mtree -f`` text."""
    in_memory = False
    for line in mtree.splitlines():
        if line.startswith("FlatView #"):
            in_memory = False
        elif line.strip().startswith('AS "memory"'):
            in_memory = True
        elif in_memory:
            yield line


def ram_ranges(mtree: str, names: frozenset[str]) -> list[tuple[int, int]]:
    """(guest-physical start, size) of every range of the "memory" flat view that maps guest RAM
    (``info mtree -f`` text), merged where adjacent."""
    ranges: list[tuple[int, int]] = []
    for line in _memory_view(mtree):
        if (m := _FLAT.match(line)) and m[3] in names:
            start, end = int(m[1], 16), int(m[2], 16) + 1
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
            else:
                ranges.append((start, end - start))
    return ranges


def _mtree(vm: Any) -> str:
    return str(vm.process.qmp.cmd("human-monitor-command", **{"command-line": "info mtree -f"}))


def _reader(vm: Any) -> Callable[[int, int], int | None]:
    """A guest-physical read through HMP ``xp`` (an MMIO register is read by its device model)."""
    def read(addr: int, size: int) -> int | None:
        try:
            return parse_xp(vm.process.qmp.cmd("human-monitor-command", **{"command-line": xp_command(addr, size)}))
        except QmpError:
            return None
    return read


def _differing_pages(a: Path, b: Path, base: int) -> list[int]:
    found = []
    with a.open("rb") as fa, b.open("rb") as fb:
        offset = 0
        while chunk := fa.read(CHUNK):
            other = fb.read(CHUNK)
            if chunk != other:
                found += [base + offset + p for p in range(0, len(chunk), PAGE)
                          if chunk[p:p + PAGE] != other[p:p + PAGE]]
            offset += len(chunk)
    return found


def compare_ram(source: Any, destination: Any, names: frozenset[str], *, timeout: float = 120.0) -> RamComparison:
    """Compare the guest RAM of two stopped GuestVms (the source after the switch, the destination
    before it runs). Never raises for a QEMU problem: the comparison then says why it did not run."""
    started = time.monotonic()
    out = RamComparison()
    dumps: list[Path] = []
    try:
        layout = ram_ranges(_mtree(source), names)
        if not layout:
            out.note = f"no guest RAM region ({', '.join(sorted(names))}) in the source's memory map"
            return out
        mtree = _mtree(destination)
        if ram_ranges(mtree, names) != layout:
            out.note = "the two sides map guest RAM differently: not compared"
            return out
        tables = cache(lambda: pending_tables(mtree, _reader(destination)))  # asked at the first difference
        for n, (start, size) in enumerate(layout):
            pair = [vm.process.workdir / f"ram-{n}.bin" for vm in (source, destination)]
            dumps += pair
            with ThreadPoolExecutor(2) as pool:  # both sides at once: QEMU copies 1 KiB at a time
                for done in [pool.submit(vm.process.qmp.cmd, "pmemsave", timeout=timeout, val=start, size=size,
                                         filename=str(dump)) for vm, dump in zip((source, destination), pair,
                                                                                  strict=True)]:
                    done.result()
            sort_pages(out, pair[0], pair[1], start, tables)
            out.compared += size
        _keep_evidence(source, destination, (out.differing + out.explained)[:KEEP])
    except (QmpError, OSError) as exc:
        out.note = f"RAM not compared: {exc}"
    finally:
        for dump in dumps:
            dump.unlink(missing_ok=True)
        out.seconds = time.monotonic() - started
    return out


def sort_pages(out: RamComparison, source: Path, destination: Path, base: int,
               tables: Callable[[], list[PendingTable]]) -> None:
    """Compare two dumps of the guest RAM range at ``base`` (the source's, the destination's) into
    ``out``: a differing page whose differences are all LPIs set pending (``lpis_set``) goes to
    ``out.explained``, any other to ``out.differing``. ``tables()``, the destination's pending
    tables, is asked only when a page differs."""
    for page in _differing_pages(source, destination, base):
        near = [t for t in tables() if t.start < page + PAGE and page < t.start + t.size]
        lpis = lpis_set(page, _page(source, page - base), _page(destination, page - base), near) if near else None
        if lpis is None:
            out.differing.append(page)
            continue
        out.explained.append(page)
        for table, ids in lpis.items():
            out.pending.setdefault(table, []).extend(ids)


def _page(dump: Path, offset: int) -> bytes:
    with dump.open("rb") as f:
        f.seek(offset)
        return f.read(PAGE)


def _keep_evidence(source: Any, destination: Any, pages: list[int]) -> None:
    """Both sides' copy of each differing page, in the destination's folder."""
    if not pages:
        return
    folder = destination.process.workdir / "ram-differs"
    folder.mkdir(exist_ok=True)
    for addr in pages:
        for side, vm in (("source", source), ("destination", destination)):
            vm.process.qmp.cmd("pmemsave", val=addr, size=PAGE, filename=str(folder / f"{addr:#x}.{side}"))
