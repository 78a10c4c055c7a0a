#!/usr/bin/env python3
"""The HTML report at 5,000 results: how long it takes to write, and to load in Chromium.

    python3 benchmarks/report.py [--results 5000] [--repeat 3] [--keep DIR]

Synthetic but shaped like a real qualification of 5 builds (x86_64 7.2, 10.0, 5.2; aarch64 7.2, 10.0)
plus two stored 4.2.0 fixtures: probe and capability drift per build, parse/argv/boot per case and
build, migrations across every same-arch pair, static stages on the fixtures (known bugs flagged by
version), and a mix of every verdict; failing results carry real console and stderr files, so the
report reads its excerpts from disk. Writing is timed as `qemu-conformance report` does it (merge,
junit.xml, report.html). Loading is Chromium (Debian's, driven by Playwright) opening the file:// page
until its load event and the next frame. Each is the best of --repeat runs (the host is shared: other
processes only add time). Last line:
`report: 0.4 s to write, 1.1 s to load (5000 results, 3.2 MB)`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from conformance.report.html import write_report
from conformance.results.records import QemuBuild, ResultWriter, StageResult

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's package
LIVE = [("7.2.22", "x86_64", "Debian 1:7.2+dfsg-7+deb12u18+b3", "/usr/bin/qemu-system-x86_64"),
        ("10.0.2", "x86_64", "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1", "/opt/qemu-10.0/bin/qemu-system-x86_64"),
        ("5.2.0", "x86_64", "Debian 1:5.2+dfsg-11+deb11u5", "/opt/qemu-5.2/bin/qemu-system-x86_64"),
        ("7.2.22", "aarch64", "Debian 1:7.2+dfsg-7+deb12u18+b3", "/usr/bin/qemu-system-aarch64"),
        ("10.0.2", "aarch64", "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1", "/opt/qemu-10.0/bin/qemu-system-aarch64")]
FIXTURES = [("4.2.0", "x86_64"), ("4.2.0", "aarch64")]
BUG = {"id": "vfio-irqchip-notifier-unplug-segv", "title": "QEMU segfaults when an assigned device without INTx "
       "(SR-IOV VF) is unplugged", "fixed": "0446f81217 (4.2.1, 5.0.0)", "affected": "4.2.0..4.2.0",
       "concerns": "a <hostdev> with <teaming type='transient'> (a VF that failover unplugs)"}
SLIRP = {"id": "slirp-instance-id-backward-migration", "title": "a guest with two or more -netdev user cannot "
         "migrate from QEMU 8.2+ to an older QEMU", "fixed": "not fixed", "affected": "8.2.0..99.0.0", "concerns": ""}
CONSOLE = "".join(f"PCI 0000:00:{i:02x}.0 1af4:1041 class=020000 drv=virtio-pci vdrv=virtio_net\n" for i in range(30))
STDERR = "qemu-system-x86_64: warning: netdev sub-hostdev0 has no peer\nqemu: load of migration failed: <&>\n"
FILES = [("folder", ""), ("argv", "/argv.json"), ("cmdline", "/cmdline.json"), ("console", "/console.log"),
         ("domain", "/domain.xml"), ("qmp", "/qmp.jsonl"), ("stderr", "/stderr.log")]  # a VM folder's artefacts
ARGV = ["/usr/bin/qemu-system-x86_64", "-machine", "q35,usb=off,dump-guest-core=off", "-accel", "tcg",
        "-cpu", "qemu64", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
        *(["-device", "virtio-net-pci,netdev=n0,id=net0,mac=52:54:00:00:00:01,bus=pci.1,addr=0x0"] * 8)]


def _verdict(rng: random.Random) -> str:
    roll = rng.random()
    for name, share in (("fail", 0.02), ("error", 0.01), ("known-bug", 0.02), ("not-reproduced", 0.01),
                        ("skip", 0.04)):
        if roll < share:
            return name
        roll -= share
    return "pass"


def synthetic(folder: Path, count: int, seed: int = 9) -> Path:
    """``count`` results in FOLDER/results.jsonl, with the artefact files of the failing ones."""
    rng = random.Random(seed)
    writer = ResultWriter(folder)
    writer.path.unlink(missing_ok=True)
    builds = [QemuBuild(path, version, package, arch) for version, arch, package, path in LIVE]
    fixtures = [QemuBuild(f"fixture qemu-{v}-{a}.xml", v, f"v{v}", a) for v, a in FIXTURES]
    written = 0

    def emit(r: StageResult) -> bool:
        nonlocal written
        if written >= count:
            return False
        if r.verdict in ("fail", "error", "known-bug"):
            for name, text in (("console", CONSOLE), ("stderr", STDERR)):
                if name in r.artifacts:
                    path = folder / r.artifacts[name]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
            if r.verdict == "known-bug":
                r.details["known_bug"] = SLIRP if r.stage == "migrate" else BUG
        if r.verdict == "not-reproduced":
            r.details["not_reproduced"] = [BUG]
        writer.write(r)
        written += 1
        return True

    for b in builds:
        emit(StageResult("probe", "probe", "pass", arch=b.arch, qemu=b, accel="kvm",
                         details={"flags": 100, "machines": 60, "types": 600}))
        for against in ("stored", "previous"):
            emit(StageResult(f"caps-vs-{against}", "caps", "pass", arch=b.arch, qemu=b,
                             reason=f"since 7.2.0: 1 property added, 1 capability flag added ({against})",
                             artifacts={"diff": f"caps/diff-{b.version}-{b.arch}-{against}.txt"},
                             details={"diff": "properties: +1 -0\n  + generic-pc-machine.hpet", "lost": {},
                                      "not_compared": ["events: 52 QMP events were not compared"]}))
    case = 0
    while written < count:
        name = f"case-{case:03d}" if case % 10 else f"teaming-{case:03d}"
        case += 1
        for b in [*builds, *fixtures]:
            tag = f"{b.arch}-{b.version}"
            fixture = b.path.startswith("fixture ")
            for stage in ("parse", "argv"):
                details: dict[str, object] = {"fixture": tag, "argv": ARGV if stage == "argv" else []}
                if fixture and stage == "argv" and name.startswith("teaming"):
                    details["known_bugs"] = [BUG]
                emit(StageResult(name, stage, "pass" if fixture else _verdict(rng), arch=b.arch, qemu=b,
                                 artifacts={"argv": f"argv/{tag}/{name}.args"} if stage == "argv" else {},
                                 details=details))
            if fixture:
                continue
            live = f"live/{name}/{tag}"
            verdict = _verdict(rng)
            emit(StageResult(name, "boot", verdict, arch=b.arch, qemu=b, accel="tcg", duration_s=rng.uniform(2, 8),
                             reason="booted in 5.0 s; 5 checks passed" if verdict == "pass" else
                             "PCI 8086:293a: guest sees 0 of 1 <not & escaped?>",
                             artifacts={k: f"{live}{f}" for k, f in FILES},
                             details={"checked": ["vCPUs x1", "memory 218/256 MiB", "PCI 1b36:000c x2"],
                                      "changes": ["added a serial console (file) for the guest's report"],
                                      "accel_reason": "/dev/kvm is a nested PVM hypervisor"}))
        for src in builds:
            for dst in builds:
                if src.arch != dst.arch:
                    continue
                folder_name = f"live/{name}/migrate-{src.version}-{dst.version}-{src.arch}"
                verdict = _verdict(rng)
                emit(StageResult(
                    name, "migrate", verdict, arch=src.arch, qemu=src, peer=dst, accel="tcg", duration_s=2.5,
                    reason="migrated in 0.72 s, downtime 48 ms" if verdict == "pass" else "destination exit code 1",
                    artifacts={f"{side}-{k}": f"{folder_name}/{side}{f}" for side in ("source", "destination")
                               for k, f in FILES},
                    details={"machine": "pc-q35-7.2", "stats": {"total-time": 724, "downtime": 48, "setup-time": 0,
                                                                 "ram-transferred": 100833253},
                             "timeline": [{"side": s, "status": st, "t": t} for t, s, st in (
                                 (0.0, "destination", "setup"), (0.001, "source", "setup"),
                                 (0.004, "source", "active"), (0.725, "source", "completed"),
                                 (0.725, "destination", "completed"))],
                             "events": {"source": [{"event": "STOP", "t": 0.676}],
                                        "destination": [{"event": "RESUME", "t": 0.725}]},
                             "checks": ["destination: heartbeat HB 1 after HB None"]}))
    return writer.path


def load_times(page: Path, repeat: int) -> list[float] | None:
    """Seconds from navigation to the load event and the next frame, per repetition; None without Chromium."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            for _ in range(repeat):
                tab = browser.new_page(viewport={"width": 1500, "height": 1000})
                started = time.perf_counter()
                tab.goto(page.resolve().as_uri(), wait_until="load")
                tab.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
                times.append(time.perf_counter() - started)
                tab.close()
        finally:
            browser.close()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the results and the report here (kept)")
    ns = ap.parse_args()
    work = ns.keep or Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        results = synthetic(work / "results", ns.results)
        writes = []
        for i in range(ns.repeat):
            started, cpu = time.perf_counter(), time.process_time()
            page = write_report([results], work / "report")
            writes.append(time.perf_counter() - started)
            print(f"write {i + 1}: {writes[-1]:.3f} s ({time.process_time() - cpu:.3f} s CPU)")
        size = page.stat().st_size / 1e6
        print(f"page: {page} ({size:.1f} MB)")
        loads = load_times(page, ns.repeat)
        if loads is None:
            load = f"load not measured ({CHROMIUM} missing: apt-get install chromium)"
        else:
            for i, t in enumerate(loads, 1):
                print(f"load {i}: {t:.3f} s")
            load = f"{min(loads):.1f} s to load"
        # the best of the repetitions: the host is shared, and the others only add other processes' time
        print(f"host load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"report: {min(writes):.1f} s to write, {load} ({ns.results} results, {size:.1f} MB)")
    finally:
        if ns.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
