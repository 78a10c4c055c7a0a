"""Results for the report tests (tests/unit/test_report.py, tests/unit/test_prediction.py,
tests/integration/test_report_browser.py)."""

from __future__ import annotations

from pathlib import Path

from conformance.machines import FROM_GIVEN
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


# ---- predicted against observed (conformance/prediction.py)

# the same version at another path is another build: the join must not mix them
OTHER = QemuBuild("/elsewhere/qemu-system-x86_64", "10.0.2", "", "x86_64")
V5 = "[V5] i8259: subsection i8259/ltim is unknown to the destination"
P1 = "[P1] x-pcie-lnksta-dllla: on under 10.0.2, off under 7.2.22"


def vmstate_result(case: str, src: QemuBuild, dst: QemuBuild, machine: str, devices: dict[str, str]) -> StageResult:
    bad = any(v != "compatible" for v in devices.values())
    return StageResult(case=case, stage="vmstate", verdict="fail" if bad else "pass", arch="x86_64", qemu=src,
                       peer=dst, details={"machine": machine, "devices": devices})


def migrate_result(case: str, src: QemuBuild, dst: QemuBuild | None, machine: str, verdict: str,
             reason: str = "") -> StageResult:
    version = lambda q: tuple(int(n) for n in q.version.split("."))  # noqa: E731
    direction = "same" if dst is None or dst.version == src.version else \
        "forward" if version(src) < version(dst) else "backward"
    return StageResult(case=case, stage="migrate", verdict=verdict, arch="x86_64", qemu=src, peer=dst,
                       reason=reason, details={"machine": machine, "machine_from": FROM_GIVEN, "direction": direction})


def prediction_records() -> list[StageResult]:
    """Predicted against observed (tests/unit/test_prediction.py, the browser test): six migrations, one of each
    class (two agree, one unjudged), their vmstate predictions, and noise the join must ignore."""
    return [
        # backward, predicted V5 + P1, broke: confirmed
        vmstate_result("q35-minimal", NEW, OLD, "pc-q35-7.2",
                       {"isa-i8259": V5, "pcie-root-port": P1, "e1000": "compatible"}),
        migrate_result("q35-minimal", NEW, OLD, "pc-q35-7.2", "fail", "destination: Unknown subsection i8259/ltim"),
        # the same case and pair under another machine type: predicted V5, went through: not confirmed
        vmstate_result("q35-minimal", NEW, OLD, "pc-q35-5.2", {"isa-i8259": V5}),
        migrate_result("q35-minimal", NEW, OLD, "pc-q35-5.2", "pass"),
        # forward, predicted compatible, known bug live: missed
        vmstate_result("net-user", OLD, NEW, "pc-q35-7.2", {"e1000": "compatible"}),
        migrate_result("net-user", OLD, NEW, "pc-q35-7.2", "known-bug", "slirp instance id"),
        # forward, predicted compatible, passed: agree
        vmstate_result("q35-minimal", OLD, NEW, "pc-q35-7.2", {"isa-i8259": "compatible"}),
        migrate_result("q35-minimal", OLD, NEW, "pc-q35-7.2", "pass"),
        # one build with itself: no peer on the migrate result, the prediction's peer is the build
        vmstate_result("q35-minimal", OLD, OLD, "pc-q35-7.2", {"isa-i8259": "compatible"}),
        migrate_result("q35-minimal", OLD, None, "pc-q35-7.2", "pass"),
        # a prediction for another build of the same version: not this migration's
        vmstate_result("net-user", OTHER, OLD, "pc-q35-7.2", {"e1000": P1}),
        migrate_result("net-user", NEW, OLD, "pc-q35-7.2", "error", "QEMU gone"),
        StageResult(case="q35-minimal", stage="boot", verdict="pass", arch="x86_64", qemu=OLD),
    ]
