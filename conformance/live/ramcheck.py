"""Guest RAM at the switch: the stopped source against the destination that loaded it and has not run yet.

A migration that loses a guest write leaves the destination's RAM different from the source's. Its
guest may crash at once, much later, or never. So the migrate stage compares the two before the
destination runs (it starts with ``-S``, as libvirt starts one), range by range, a MiB at a time, page
by page only where a MiB differs. The ranges are the guest RAM regions of the flat view of the "memory"
address space (HMP ``info mtree -f``). Up to ``KEEP`` differing pages of both sides stay as evidence in
the destination's folder (``ram-differs/``).

How the RAM is read (``RamComparison.method``, in the result's ``ram`` record):
- ``process_vm_readv``: straight from each QEMU's memory. HMP ``gpa2hva`` (QEMU 2.10 and later) gives
  the host address of each flat range (checked: contiguous, its last byte where its size says, and
  inside the process's mappings, so the pid is the QEMU that answered), and ``process_vm_readv(2)``
  copies a MiB at a time into the suite's buffer: no file, no change to what QEMU runs or migrates,
  whatever backs the RAM (a memory-backend-memfd in the live argv, mmapped by the suite, would spare the
  copy but change the RAM QEMU runs on: shmem, not anonymous memory with transparent huge pages).
  Allowed because each QEMU is the suite's own child (ptrace access rules; a kernel or a seccomp filter
  that refuses it sends the check to pmemsave).
  Linear in the RAM size: a copy and a memcmp per byte, 1 MiB buffers reused (RAM QEMU maps to the zero
  page is cheap to read; after a migration every page is mapped, so /proc/PID/pagemap cannot skip any).
  Measured by benchmarks/migrate.py on the 2-core host under load (load average 8-12), x86_64 TCG, after
  a migration: 0.17-0.20 s per 256 MiB pair (0.05-0.16 s in a 6-build run; the same pairs by pmemsave:
  1.7 s), 0.27-0.45 s per 1 GiB pair (pmemsave: 3.6-5.4 s).
- ``pmemsave``: the fallback, with the reason recorded (``pmemsave_because``): QMP ``pmemsave`` of each
  range on both sides at once into each side's VM folder (QEMU copies 1 KiB at a time), read back the
  same way, deleted once compared.

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

import ctypes
import os
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
_GPA2HVA = re.compile(r"^Host virtual address for 0x[0-9a-f]+ \(.*\) is 0x([0-9a-f]+)\s*$")
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
    method: str = ""  # how the RAM was read: "process_vm_readv" or "pmemsave" (module docstring)
    why_pmemsave: str = ""  # why the fast way was not taken
    pages: dict[int, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)  # evidence: both sides' copy

    def record(self) -> dict[str, Any]:
        return {"compared_mib": self.compared >> 20, "differing_pages": len(self.differing),
                "first_differing": [hex(a) for a in self.differing[:KEEP]], "seconds": round(self.seconds, 3),
                **({"method": self.method} if self.method else {}),
                **({"pmemsave_because": self.why_pmemsave} if self.why_pmemsave else {}),
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


def ram_ranges(mtree: str, names: frozenset[str], *, merge: bool = True) -> list[tuple[int, int]]:
    """(guest-physical start, size) of every range of the "memory" flat view that maps guest RAM
    (``info mtree -f`` text), merged where adjacent unless ``merge`` is false (then each is one piece of
    one RAM region: contiguous in QEMU's memory)."""
    ranges: list[tuple[int, int]] = []
    for line in _memory_view(mtree):
        if (m := _FLAT.match(line)) and m[3] in names:
            start, end = int(m[1], 16), int(m[2], 16) + 1
            if merge and ranges and ranges[-1][0] + ranges[-1][1] == start:
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


Reader = Callable[[int, bytearray], None]  # fills the buffer with one side's guest RAM from a guest-physical address


class FastPathUnavailable(Exception):
    """The guest RAM cannot be read from the QEMU process (the message says why): pmemsave it is."""


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


@cache
def _process_vm_readv() -> Callable[..., int]:
    """libc's process_vm_readv(2) (ctypes releases the GIL while it copies)."""
    try:
        readv = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except AttributeError:
        raise FastPathUnavailable("this libc has no process_vm_readv") from None
    readv.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                      ctypes.c_ulong]
    readv.restype = ctypes.c_ssize_t
    return readv  # type: ignore[no-any-return]


def _read_process(pid: int, address: int, buf: bytearray, at: int, size: int) -> None:
    """Copy ``size`` bytes at ``address`` of process ``pid`` into ``buf[at:]``."""
    readv = _process_vm_readv()
    while size:
        local = _Iovec(ctypes.addressof(ctypes.c_char.from_buffer(buf, at)), size)
        got = readv(pid, ctypes.byref(local), 1, ctypes.byref(_Iovec(address, size)), 1, 0)
        if got <= 0:
            why = os.strerror(ctypes.get_errno()) if got < 0 else "nothing read"
            raise FastPathUnavailable(f"process_vm_readv of QEMU {pid} at {address:#x}: {why}")
        address, at, size = address + got, at + got, size - got


def gpa2hva(vm: Any, addr: int) -> int:
    """The host address, in the QEMU process, of a guest-physical RAM address (HMP ``gpa2hva``)."""
    try:
        reply = str(vm.process.qmp.cmd("human-monitor-command", **{"command-line": f"gpa2hva {addr:#x}"}))
    except QmpError as exc:
        raise FastPathUnavailable(f"gpa2hva {addr:#x}: {exc}") from None
    found = _GPA2HVA.match(reply.strip())
    if not found:
        raise FastPathUnavailable(f"gpa2hva {addr:#x}: {reply.strip() or 'no reply'}")
    return int(found[1], 16)


def process_reader(vm: Any, pieces: list[tuple[int, int]]) -> Reader:
    """A reader of a running QEMU's guest RAM straight from its memory: ``pieces`` are the unmerged RAM
    ranges of its memory map (``ram_ranges(..., merge=False)``), each contiguous in QEMU's memory.
    Raises FastPathUnavailable when QEMU cannot say where they are or they cannot be read."""
    pid = vm.process.pid
    if pid is None or not vm.process.is_running():
        raise FastPathUnavailable("QEMU is not running")
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError as exc:
        raise FastPathUnavailable(f"/proc/{pid}/maps: {exc.strerror}") from None
    mapped = []  # (guest-physical start, size, host address)
    for start, size in pieces:
        host, last = gpa2hva(vm, start), gpa2hva(vm, start + size - 1)
        if last - host != size - 1:
            raise FastPathUnavailable(f"guest RAM {start:#x}-{start + size - 1:#x} is not contiguous in QEMU's memory")
        if not covered(maps, host, size):  # else the pid is not the QEMU that answers QMP (a wrapper that forks)
            raise FastPathUnavailable(f"process {pid} maps nothing at {host:#x}-{host + size - 1:#x}, where QEMU "
                                      f"says guest RAM {start:#x} is")
        mapped.append((start, size, host))

    def read(addr: int, buf: bytearray) -> None:
        at = 0
        while at < len(buf):
            gpa = addr + at
            piece = next((p for p in mapped if p[0] <= gpa < p[0] + p[1]), None)
            if piece is None:
                raise FastPathUnavailable(f"{gpa:#x} is not guest RAM in QEMU {pid}'s memory map")
            size = min(len(buf) - at, piece[0] + piece[1] - gpa)
            _read_process(pid, piece[2] + gpa - piece[0], buf, at, size)
            at += size

    if pieces:
        read(pieces[0][0], bytearray(PAGE))  # refused here (ptrace rules, seccomp): pmemsave before any work
    return read


def covered(maps: str, start: int, size: int) -> bool:
    """Whether the mappings of ``/proc/PID/maps`` text cover ``start``, ``size`` without a gap."""
    spans = sorted(tuple(int(x, 16) for x in line.split(None, 1)[0].split("-")) for line in maps.splitlines() if line)
    end = start + size
    for lo, hi in spans:
        if lo <= start < hi:
            start = hi
        if start >= end:
            return True
    return False


def file_reader(dump: Path, base: int) -> Reader:
    """A reader of a dump (pmemsave) of the guest RAM range that starts at ``base``."""
    def read(addr: int, buf: bytearray) -> None:
        with dump.open("rb") as f:
            f.seek(addr - base)
            if f.readinto(buf) != len(buf):
                raise OSError(f"{dump}: shorter than the range it dumps")
    return read


def compare_ram(source: Any, destination: Any, names: frozenset[str], *, timeout: float = 120.0,
                fast: bool = True) -> RamComparison:
    """Compare the guest RAM of two stopped GuestVms (the source after the switch, the destination
    before it runs), read from both QEMU processes, else (``fast`` false, or that cannot be done) by
    pmemsave. Never raises for a QEMU problem: the comparison then says why it did not run."""
    started = time.monotonic()
    out = RamComparison()
    dumps: list[Path] = []
    try:
        maps = _mtree(source), _mtree(destination)
        layout = ram_ranges(maps[0], names)
        if not layout:
            out.note = f"no guest RAM region ({', '.join(sorted(names))}) in the source's memory map"
            return out
        if ram_ranges(maps[1], names) != layout:
            out.note = "the two sides map guest RAM differently: not compared"
            return out
        tables = cache(lambda: pending_tables(maps[1], _reader(destination)))  # asked at the first difference
        why = "asked for (fast=False)"
        if fast:
            try:
                readers = [process_reader(vm, ram_ranges(m, names, merge=False))
                           for vm, m in zip((source, destination), maps, strict=True)]
                out.method = "process_vm_readv"
                for start, size in layout:
                    sort_pages(out, readers[0], readers[1], start, size, tables)
                    out.compared += size
            except FastPathUnavailable as exc:
                out, why = RamComparison(), str(exc)
        if not out.method:
            out.method, out.why_pmemsave = "pmemsave", why
            for n, (start, size) in enumerate(layout):
                pair = [vm.process.workdir / f"ram-{n}.bin" for vm in (source, destination)]
                dumps += pair
                with ThreadPoolExecutor(2) as pool:  # both sides at once: QEMU copies 1 KiB at a time
                    for done in [pool.submit(vm.process.qmp.cmd, "pmemsave", timeout=timeout, val=start,
                                             size=size, filename=str(dump))
                                 for vm, dump in zip((source, destination), pair, strict=True)]:
                        done.result()
                sort_pages(out, file_reader(pair[0], start), file_reader(pair[1], start), start, size, tables)
                out.compared += size
                for dump in pair:
                    dump.unlink()
        _keep_evidence(destination, out)
    except (QmpError, OSError) as exc:
        out.note = f"RAM not compared: {exc}"
    finally:
        for dump in dumps:
            dump.unlink(missing_ok=True)
        out.seconds = time.monotonic() - started
    return out


def sort_pages(out: RamComparison, source: Reader, destination: Reader, base: int, size: int,
               tables: Callable[[], list[PendingTable]]) -> None:
    """Compare the guest RAM range ``base``, ``size`` of both sides (read a MiB at a time by the readers:
    the source's, the destination's) into ``out``: a differing page whose differences are all LPIs set
    pending (``lpis_set``) goes to ``out.explained``, any other to ``out.differing``; both sides' copy of
    the first ``KEEP`` of each go to ``out.pages``. ``tables()``, the destination's pending tables, is
    asked only when a page differs."""
    buffers: dict[int, tuple[bytearray, bytearray]] = {}  # by length: bytearrays compare with memcmp
    for offset in range(0, size, CHUNK):
        length = min(CHUNK, size - offset)
        if length not in buffers:  # allocated once: a fresh MiB costs page faults
            buffers[length] = bytearray(length), bytearray(length)
        was, now = buffers[length]
        source(base + offset, was)
        destination(base + offset, now)
        if was == now:
            continue
        for p in range(0, length, PAGE):
            before, after = bytes(was[p:p + PAGE]), bytes(now[p:p + PAGE])
            if before == after:
                continue
            page = base + offset + p
            near = [t for t in tables() if t.start < page + PAGE and page < t.start + t.size]
            lpis = lpis_set(page, before, after, near) if near else None
            found = out.differing if lpis is None else out.explained
            found.append(page)
            if len(found) <= KEEP:
                out.pages[page] = (before, after)
            for table, ids in (lpis or {}).items():
                out.pending.setdefault(table, []).extend(ids)


def _keep_evidence(destination: Any, out: RamComparison) -> None:
    """Both sides' copy of the first differing pages, in the destination's folder."""
    pages = (out.differing + out.explained)[:KEEP]
    if not pages:
        return
    folder = destination.process.workdir / "ram-differs"
    folder.mkdir(exist_ok=True)
    for addr in pages:
        for side, data in zip(("source", "destination"), out.pages[addr], strict=True):
            (folder / f"{addr:#x}.{side}").write_bytes(data)
