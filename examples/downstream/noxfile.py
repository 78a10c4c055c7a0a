"""A QEMU packaging project's nox file in miniature: qualify the QEMU you built with qemu-conformance.

Copy this folder into your packaging repository. It installs the suite into its own session (a wheel
you give, else the package index's), imports a test guest that travels with it (no apt, no network
needed for the guest), and qualifies one QEMU binary against the previous release's fixture:

1. ``probe`` the binary (its capability fixture, into reports/);
2. ``caps diff`` the previous release's stored fixture against it: exit 1 when the new build lost what a
   user of the previous release would miss;
3. ``run`` a few cases through parse -> argv -> boot -> migrate on it, with this project's own data
   layer (``data/``: a case of its own, known bugs with the distribution's backports);
4. the HTML report and JUnit land in ``reports/qualify/`` (report.html, junit.xml, results.jsonl).

Settings (environment):

    QEMU_CONFORMANCE_WHEEL   the suite's wheel to install (default: ``qemu-conformance`` from the index)
    QEMU_CONFORMANCE_GUEST   a ``qemu-conformance guest export`` tarball to import (default: build the guest)
    QEMU                     the binary to qualify (default: qemu-system-x86_64 on PATH)
    PREVIOUS                 the previous release's fixture, VERSION:ARCH (default: the newest stored
                             fixture of an earlier major.minor than the binary's)

Run:  nox -s qualify                      (the default cases)
      nox -s qualify -- --cases 'net-*'   (the run's options: --cases, --stages, -j ...)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["qualify"]

HERE = Path(__file__).resolve().parent
REPORTS = HERE / "reports"
CASES = ["q35-minimal", "net-user-virtio", "distro-q35-rng"]  # the last one is ours: data/templates/cases.toml

# the newest stored fixture of an earlier major.minor than the probed one (run inside the session's venv)
PREVIOUS_RELEASE = """
import sys
from conformance.caps.store import fixture_files, load
new = load(sys.argv[1])
older = [c for c in map(load, fixture_files())
         if c.arch == new.arch and (c.version.major, c.version.minor) < (new.version.major, new.version.minor)]
print(f"{max(older, key=lambda c: c.version).version}:{new.arch}" if older else "")
"""


@nox.session
def qualify(session: nox.Session) -> None:
    """Qualify $QEMU: caps diff against the previous release, a few cases booted and migrated."""
    session.install(os.environ.get("QEMU_CONFORMANCE_WHEEL") or "qemu-conformance")
    qemu = os.environ.get("QEMU") or shutil.which("qemu-system-x86_64")
    if not qemu:
        session.error("no QEMU to qualify: set QEMU=/path/to/qemu-system-x86_64")
    env = {"QEMU_CONFORMANCE_CACHE": str(HERE / ".cache"),  # this project's own cache (guest, probes)
           "QEMU_CONFORMANCE_DATA": str(HERE / "data")}  # our cases and known bugs over the suite's
    guest = os.environ.get("QEMU_CONFORMANCE_GUEST")
    if guest:
        session.run("qemu-conformance", "guest", "import", guest, env=env)
    REPORTS.mkdir(exist_ok=True)
    probed = REPORTS / "probed.xml"
    session.run("qemu-conformance", "probe", qemu, "-o", str(probed), env=env)
    previous = os.environ.get("PREVIOUS") or str(
        session.run("python", "-c", PREVIOUS_RELEASE, str(probed), silent=True, env=env) or "").strip()
    if previous:
        session.run("qemu-conformance", "caps", "diff", previous, str(probed), env=env)
    else:
        session.log("no stored fixture of an earlier release: no caps diff")
    args = list(session.posargs) or [arg for case in CASES for arg in ("--cases", case)]
    session.run("qemu-conformance", "run", "--qemu", qemu, *args, "-o", str(REPORTS / "qualify"), env=env)
    session.log(f"report: {REPORTS / 'qualify' / 'report.html'}, JUnit: {REPORTS / 'qualify' / 'junit.xml'}")
