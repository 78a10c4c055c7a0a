"""Guest RAM at the switch: the stopped source against the destination that loaded it and has not run yet.

A migration that loses a guest write leaves the destination's RAM different from the source's. Its
guest may crash at once, much later, or never. So the migrate stage compares the two before the
destination runs (it starts with ``-S``, as libvirt starts one): ``pmemsave`` of each guest RAM
range on both sides, compared page by page. The ranges are the guest RAM regions of the flat view
of the "memory" address space (HMP ``info mtree -f``). The dumps are written in each side's VM
folder and deleted once compared. Up to ``KEEP`` differing pages of both sides stay as evidence in
the destination's folder (``ram-differs/``).

A difference is evidence, not a failure by itself: a destination's devices may write guest RAM as
they load (seen: an aarch64 failover pair, one byte of the same page in every run, on 7.2 and 10.0).
When the migration fails (a guest panic, no heartbeat), the failure names the differing pages, which
is what known bugs match on. Seen on QEMU 7.2 under TCG (known bug ``tcg-migration-lost-dirty-pages``):
about 4% of failover migrations lost a few per-CPU pages, and the destination's guest panicked in its
timer code. When the migration passes, its reason carries the difference as a note.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.qemu.qmp import QmpError

PAGE = 4096
CHUNK = 1 << 20  # compared a MiB at a time, page by page only where a MiB differs
KEEP = 16  # differing pages kept as evidence (both sides)
DEFAULT_RAM = frozenset({"pc.ram", "mach-virt.ram"})  # QEMU's RAM region ids without -machine memory-backend
_FLAT = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ram\): (\S+)")


@dataclass
class RamComparison:
    """What the comparison found; ``note`` says why it could not compare (then nothing was)."""

    compared: int = 0  # bytes
    differing: list[int] = field(default_factory=list)  # guest-physical addresses of differing pages
    seconds: float = 0.0
    note: str = ""

    def record(self) -> dict[str, Any]:
        return {"compared_mib": self.compared >> 20, "differing_pages": len(self.differing),
                "first_differing": [hex(a) for a in self.differing[:KEEP]], "seconds": round(self.seconds, 2),
                **({"note": self.note} if self.note else {})}

    def problem(self) -> str:
        """The failure line, or "" when both sides hold the same RAM."""
        if not self.differing:
            return ""
        shown = ", ".join(hex(a) for a in self.differing[:4]) + (", ..." if len(self.differing) > 4 else "")
        return (f"destination RAM differs from the source's at the switch: {len(self.differing)} page(s) "
                f"of {PAGE} bytes ({shown}); see ram-differs/ in the destination's folder")


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


def ram_ranges(mtree: str, names: frozenset[str]) -> list[tuple[int, int]]:
    """(guest-physical start, size) of every range of the "memory" flat view that maps guest RAM
    (``info mtree -f`` text), merged where adjacent."""
    ranges: list[tuple[int, int]] = []
    in_memory = False
    for line in mtree.splitlines():
        if line.startswith("FlatView #"):
            in_memory = False
        elif line.strip().startswith('AS "memory"'):
            in_memory = True
        elif in_memory and (m := _FLAT.match(line)) and m[3] in names:
            start, end = int(m[1], 16), int(m[2], 16) + 1
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
            else:
                ranges.append((start, end - start))
    return ranges


def _layout(vm: Any, names: frozenset[str]) -> list[tuple[int, int]]:
    return ram_ranges(vm.process.qmp.cmd("human-monitor-command", **{"command-line": "info mtree -f"}), names)


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
        layout = _layout(source, names)
        if not layout:
            out.note = f"no guest RAM region ({', '.join(sorted(names))}) in the source's memory map"
            return out
        if _layout(destination, names) != layout:
            out.note = "the two sides map guest RAM differently: not compared"
            return out
        for n, (start, size) in enumerate(layout):
            pair = [vm.process.workdir / f"ram-{n}.bin" for vm in (source, destination)]
            dumps += pair
            with ThreadPoolExecutor(2) as pool:  # both sides at once: QEMU copies 1 KiB at a time
                for done in [pool.submit(vm.process.qmp.cmd, "pmemsave", timeout=timeout, val=start, size=size,
                                         filename=str(dump)) for vm, dump in zip((source, destination), pair,
                                                                                  strict=True)]:
                    done.result()
            out.differing += _differing_pages(pair[0], pair[1], start)
            out.compared += size
        _keep_evidence(source, destination, out.differing[:KEEP])
    except (QmpError, OSError) as exc:
        out.note = f"RAM not compared: {exc}"
    finally:
        for dump in dumps:
            dump.unlink(missing_ok=True)
        out.seconds = time.monotonic() - started
    return out


def _keep_evidence(source: Any, destination: Any, pages: list[int]) -> None:
    """Both sides' copy of each differing page, in the destination's folder."""
    if not pages:
        return
    folder = destination.process.workdir / "ram-differs"
    folder.mkdir(exist_ok=True)
    for addr in pages:
        for side, vm in (("source", source), ("destination", destination)):
            vm.process.qmp.cmd("pmemsave", val=addr, size=PAGE, filename=str(folder / f"{addr:#x}.{side}"))
