"""nox sessions: how CI and people run the suite.

    nox -s tests            the suite's own tests (pytest-xdist, all cores): every test that starts no QEMU,
                            and the live smoke set (pytest -m "not live or smoke"; tests/README.md)
    nox -s lint             ruff
    nox -s static           the static matrix: every case x every fixture in capsdata/
    nox -s live             every live test (pytest -m live): each case booted and migrated on the host's
                            QEMU (TCG here), the failure scenarios, the real builds, avocado, interrupts
    nox -s libvirt-corpus   score the argv builder against libvirt's own expectations (needs ../shared)
    nox -s libvirt          the host's real libvirt (a private libvirtd, root) runs every case: its argv against
                            the suite's after written rules, validation parity, a few boots (reports/libvirt-oracle)
    nox -s qualify          qualify the host's QEMU builds and write an HTML report to reports/host
    nox -s "shard(build='all', shard='2/4')"
                            one CI job: shard 2 of 4 of the qualification of the builds
                            (host: the host's QEMU; all: the host's + 10.0 + 5.2, cross-version migrations
                            included); results in reports/shards/BUILD-2-of-4/
    nox -s shards-report    merge reports/shards/*/results.jsonl into one report (reports/merged)
    nox -s downstream       build the wheel and sdist, run examples/downstream/ (another project's nox file) from
                            a temporary folder against the host's QEMU; its reports in reports/downstream/
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
CORPUS = ROOT.parent / "shared" / "peer" / "libvirt-corpus-wide"  # libvirt's whole x86_64/aarch64 corpus


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test,avocado]")


@nox.session
def tests(session: nox.Session) -> None:
    """The suite's own tests in parallel, but of the live ones (which start QEMU) only the smoke set; extra
    arguments go to pytest."""
    _install(session)
    session.run("pytest", "-n", "auto", "--dist", "loadgroup", "-m", "not live or smoke", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "conformance", "tests", "benchmarks", "noxfile.py")


@nox.session
def static(session: nox.Session) -> None:
    """Every case x every capability fixture through render -> validate -> parse -> argv."""
    _install(session)
    session.run("pytest", "-n", "auto", "tests/static", *session.posargs)


@nox.session
def live(session: nox.Session) -> None:
    """Every test that starts QEMU (pytest -m live): every bootable case booted and migrated on the host's
    QEMU binaries (--conformance-qemu adds builds), and the live tests of tests/live and tests/integration."""
    _install(session)
    session.run("pytest", "-n", "auto", "--dist", "loadgroup", "-m", "live", "tests", *session.posargs)


@nox.session
def libvirt(session: nox.Session) -> None:
    """The host's real libvirt as a second oracle (docs/libvirt-oracle.md): a private libvirtd (Debian's
    libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients; root) starts every case paused on the host's
    QEMU, its argv against the suite's after the written rules, a few boots checked (reports/libvirt-oracle/);
    then validation parity and the daemon's clean-up (tests/live/test_libvirt_oracle.py)."""
    _install(session)
    session.run("python", "-m", "conformance.libvirt_oracle", "-o", str(ROOT / "reports" / "libvirt-oracle"))
    session.run("pytest", "-m", "live", "tests/live/test_libvirt_oracle.py", "-k", "not every_case", *session.posargs)


CORPUS_GOAL = 0.85  # share of scored cases that must PASS


@nox.session(name="libvirt-corpus")
def libvirt_corpus(session: nox.Session) -> None:
    """Score the argv builder against libvirt's own domain XML -> argv expectations (whole wide corpus).

    The generator is the batch mode (one Python process, forked workers): the whole corpus in seconds.
    """
    import json

    if not (CORPUS / "index.json").exists():
        session.skip(f"libvirt corpus not found at {CORPUS}")
    _install(session)
    summary = ROOT / "reports" / "libvirt-corpus.json"
    summary.parent.mkdir(exist_ok=True)
    session.run("python", str(CORPUS.parent.parent / "tools" / "libvirt_argv_compare.py"), "--corpus", str(CORPUS),
                "--summary-json", str(summary), "-q", "--batch", *session.posargs,
                "--", "python", "-m", "conformance.argv.batch", "--harness-firmware", success_codes=[0, 1])
    scored = [r for r in json.loads(summary.read_text()) if r["status"] != "SKIP"]
    passed = sum(r["status"] == "PASS" for r in scored)
    ratio = passed / len(scored) if scored else 0.0
    errors = [r for r in scored if r["status"] == "FAIL" and r["detail"].startswith("expected an error")]
    unbuilt = sorted(r["case"] for r in scored if r["status"] == "ERROR" and "is not supported" in r["detail"])
    session.log(f"libvirt corpus: {passed}/{len(scored)} PASS ({ratio:.1%}; goal {CORPUS_GOAL:.0%}); "
                f"{len(errors)} configurations libvirt rejects were accepted; {len(unbuilt)} inputs the "
                f"builder does not support (docs/libvirt-corpus.md, 'Out of scope'): {', '.join(unbuilt) or 'none'}")
    if ratio < CORPUS_GOAL:
        session.error(f"below the goal of {CORPUS_GOAL:.0%}")


@nox.session
def qualify(session: nox.Session) -> None:
    """Qualify the host's QEMU builds; the report lands in reports/host/."""
    _install(session)
    session.run("qemu-conformance", "qualify", "-o", "reports/host", *session.posargs)


SHARDS = int(os.environ.get("QEMU_CONFORMANCE_SHARDS", "4"))  # jobs per build set in a CI matrix
BUILD_SETS = {"host": [], "all": ["10.0", "5.2"]}  # extra builds (qemu-conformance builds fetch) beside the host's


@nox.session
@nox.parametrize("shard", [f"{i}/{SHARDS}" for i in range(1, SHARDS + 1)])
@nox.parametrize("build", list(BUILD_SETS))
def shard(session: nox.Session, build: str, shard: str) -> None:
    """One CI job: shard I/N of the qualification of a set of builds (reports/shards/BUILD-I-of-N/); extra
    arguments go to `qemu-conformance qualify` (e.g. -- --no-boot)."""
    _install(session)
    qemu = [f"qemu-system-{arch}" for arch in ("x86_64", "aarch64")]
    for name in BUILD_SETS[build]:
        found = session.run("python", "-c", "import sys; from conformance.builds import find_qemu; "
                            "print(*(find_qemu(sys.argv[1], a) or '' for a in ('x86_64', 'aarch64')))", name,
                            silent=True)
        qemu += (found or "").split()
    out = ROOT / "reports" / "shards" / f"{build}-{shard.replace('/', '-of-')}"
    session.run("qemu-conformance", "qualify", "--shard", shard, *(a for q in qemu for a in ("--qemu", q)),
                "-o", str(out), *session.posargs)


@nox.session(name="shards-report")
def shards_report(session: nox.Session) -> None:
    """Merge the shards in reports/shards/ into one report: reports/merged/report.html."""
    _install(session)
    results = sorted(str(p) for p in (ROOT / "reports" / "shards").glob("*/results.jsonl"))
    if not results:
        session.error("no reports/shards/*/results.jsonl: run the shard sessions first")
    session.run("qemu-conformance", "report", *results, "-o", str(ROOT / "reports" / "merged"))


@nox.session
def downstream(session: nox.Session) -> None:
    """Another project's nox session, for real: build our wheel and sdist (python -m build), export the cached
    test guest, copy examples/downstream/ to a temporary folder outside the checkout and run its nox file there
    against the host's QEMU (a few cases; extra arguments go to its `qemu-conformance run`). Its reports stay
    in reports/downstream/."""
    import shutil
    import tempfile

    session.install("build", "nox")
    with tempfile.TemporaryDirectory(prefix="qemu-conformance-downstream-") as tmp:
        dist = Path(tmp) / "dist"
        session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT), silent=True)  # its log on failure
        wheel = next(dist.glob("qemu_conformance-*.whl"))
        session.install(str(wheel))  # this session's own copy, to export the guest with
        guest = Path(tmp) / "guest.tar"
        session.run("qemu-conformance", "guest", "export", str(guest))
        project = Path(tmp) / "packaging"
        shutil.copytree(ROOT / "examples" / "downstream", project)
        try:
            session.chdir(project)
            session.run("nox", "-s", "qualify", "--", *session.posargs,
                        env={"QEMU_CONFORMANCE_WHEEL": str(wheel), "QEMU_CONFORMANCE_GUEST": str(guest)})
        finally:
            session.chdir(ROOT)
            if (project / "reports").is_dir():
                shutil.copytree(project / "reports", ROOT / "reports" / "downstream", dirs_exist_ok=True)
