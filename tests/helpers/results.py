"""Results for the report tests (tests/unit/test_report.py, tests/integration/test_report_browser.py)."""

from __future__ import annotations

from pathlib import Path

from conformance.results.records import QemuBuild, ResultWriter, StageResult
from conformance.results.verdicts import TABLE

EVIL = "<script>window.__pwned = true</script> & <img src=x onerror=\"window.__pwned = true\">"

OLD = QemuBuild("/usr/bin/qemu-system-x86_64", "7.2.22", "Debian 1:7.2+dfsg-7+deb12u18+b3", "x86_64")
NEW = QemuBuild("/opt/qemu-10.0/bin/qemu-system-x86_64", "10.0.2", "Debian 1:10.0.2+ds-2", "x86_64")
FIXTURE = QemuBuild("fixture qemu-4.2.0-x86_64.xml", "4.2.0", "v4.2.0", "x86_64")
SEGV = {"id": "vfio-irqchip-notifier-unplug-segv",
        "title": "QEMU segfaults when an assigned device without INTx (SR-IOV VF) is unplugged",
        "fixed": "0446f81217 (4.2.1, 5.0.0)", "affected": "4.2.0..4.2.0",
        "concerns": "a <hostdev> with <teaming type='transient'> (a VF that failover unplugs)"}


def every_verdict(folder: Path) -> Path:
    """A results.jsonl in ``folder``: every verdict (each on a case of its own, the reason carrying <script>
    and &), a known bug flagged by version on a 4.2.0 fixture, a migration pair both ways and one build with
    itself, a boot on a second build; with a console and a stderr log to link to."""
    live = folder / "live" / "q35-minimal"
    live.mkdir(parents=True)
    (live / "console.log").write_text(f"GUEST-INIT start\n{EVIL}\nBOOT-OK\n")
    (live / "stderr.log").write_text("qemu-system-x86_64: warning: <dev> & more\n")
    writer = ResultWriter(folder)
    for v in TABLE:  # every verdict, each on a case of its own, the reason carrying <script> and &
        writer.write(StageResult(
            case=f"case-{v.name}", stage="boot", verdict=v.name, arch="x86_64", qemu=OLD, accel="tcg",
            duration_s=3.2, reason=f"{v.label.lower()}: {EVIL}",
            artifacts={"console": "live/q35-minimal/console.log", "stderr": "live/q35-minimal/stderr.log"},
            details={"known_bug": SEGV} if v.name == "known-bug" else
            {"not_reproduced": [SEGV]} if v.name == "not-reproduced" else {}))
    for stage in ("parse", "argv"):  # the 4.2.0 fixture: the segfault flagged by version
        writer.write(StageResult(
            case="teaming-q35-hostdev", stage=stage, verdict="pass", arch="x86_64", qemu=FIXTURE,
            artifacts={"argv": "argv/x86_64-4.2.0/teaming-q35-hostdev.args"} if stage == "argv" else {},
            details={"fixture": "4.2.0-x86_64", **({"known_bugs": [SEGV]} if stage == "argv" else {})}))
    for src, dst in ((OLD, NEW), (NEW, OLD), (OLD, OLD)):  # a migration pair, both ways, and one build with itself
        writer.write(StageResult(
            case="q35-minimal", stage="migrate", verdict="pass", arch="x86_64", qemu=src, peer=dst, accel="tcg",
            reason="migrated in 0.72 s, downtime 48 ms",
            details={"machine": "pc-q35-7.2", "stats": {"total-time": 724, "downtime": 48, "setup-time": 0},
                     "timeline": [{"side": "source", "status": "active", "t": 0.004},
                                  {"side": "source", "status": "completed", "t": 0.725},
                                  {"side": "destination", "status": "completed", "t": 0.725}]}))
    writer.write(StageResult(case="q35-minimal", stage="boot", verdict="pass", arch="x86_64", qemu=NEW, accel="tcg",
                             reason="booted in 5.0 s; 5 checks passed"))
    return writer.path
