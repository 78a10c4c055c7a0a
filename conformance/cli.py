"""The ``qemu-conformance`` command.

Sub-commands import what they need when they run, so ``probe`` starts fast.
Every ConformanceError becomes one line on stderr and exit code 2.

Every path argument may be relative: argparse makes it absolute (``type=``) against the
working folder, here at the edge, so the rest of the code never sees a relative path (QEMU runs
in its VM folder, and libvirt's schema rejects relative disk paths).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from conformance.errors import ConformanceError
from conformance.paths import absolute


def path_arg(value: str) -> Path:
    """``type=`` of every path argument: the path made absolute (conformance.paths.absolute)."""
    try:
        return absolute(value)
    except OSError as exc:  # the working folder was deleted
        raise argparse.ArgumentTypeError(f"cannot make {value!r} absolute: {exc.strerror}") from None


def binary_arg(value: str) -> Path:
    """A QEMU binary: a bare name (qemu-system-x86_64) is looked up in $PATH, as a shell would; a path is
    made absolute."""
    if os.sep not in value:
        found = shutil.which(value)
        if found:
            return path_arg(found)
    return path_arg(value)


def caps_arg(value: str) -> str:
    """A caps argument: a file (fixture or libvirt caps XML) made absolute; VERSION:ARCH as given."""
    path = Path(value)
    return str(path_arg(value)) if path.suffix == ".xml" or path.exists() else value


def _host_binaries() -> list[Path]:
    found = []
    for name in ("qemu-system-x86_64", "qemu-system-aarch64"):
        where = shutil.which(name)
        if where:
            found.append(path_arg(where))
    return found


# --- probe and caps -------------------------------------------------------------------

def cmd_probe(args: argparse.Namespace) -> int:
    from conformance.caps.fixture import to_xml, write_fixture
    from conformance.caps.probe import probe_binary

    # as libvirt probes a binary: under KVM, and under TCG again for the CPU (the TCG host CPU and CPU models)
    caps = probe_binary(args.binary, accel=args.accel, tcg_host_cpu=args.accel is None)
    if args.output:
        write_fixture(caps, args.output)
        print(f"{args.output}: QEMU {caps.version} {caps.arch} ({caps.package or 'no package string'}), "
              f"{len(caps.machines)} machine types, {len(caps.qom_types)} types, {len(caps.flags)} flags",
              file=sys.stderr)
    else:
        sys.stdout.buffer.write(to_xml(caps))
    return 0


def cmd_caps_list(args: argparse.Namespace) -> int:
    from conformance.caps.store import fixture_files, load
    from conformance.data import BASE_NAMES, layer_of

    rows = [("FIXTURE", "VERSION", "ARCH", "SOURCE", "MACHINES", "FLAGS", "FAILOVER", "PACKAGE / ORIGIN")]
    for path in fixture_files(args.dir):
        caps = load(path)
        prov = caps.provenance
        origin = prov.package or ""
        if prov.source == "libvirt-import":
            origin = f"libvirt {prov.libvirt_version or '?'} {Path(prov.imported_from or '').name}"
        layer = "" if args.dir else layer_of(path)
        name = path.name if not layer or layer in BASE_NAMES else f"{path.name} ({layer})"  # a --data layer's
        rows.append((name, str(caps.version), caps.arch, prov.source, str(len(caps.machines)),
                     str(len(caps.flags)), "yes" if caps.has("virtio-net.failover") else "no", origin))
    if len(rows) == 1:  # no data is an error, never a quiet exit 0
        raise ConformanceError("no capability fixtures (qemu-VERSION-ARCH.xml) here", path=args.dir or "capsdata/",
                               hint="give --dir a fixture folder, or reinstall qemu-conformance with its data")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_caps_diff(args: argparse.Namespace) -> int:
    from conformance.caps.diff import diff_caps, origin
    from conformance.caps.store import resolve

    a, b = resolve(args.a), resolve(args.b)
    result = diff_caps(a, b, f"{args.a} (QEMU {a.version} {a.arch}, {origin(a)})",
                       f"{args.b} (QEMU {b.version} {b.arch}, {origin(b)})")
    # the summary line, what was not compared and why, then every gained and lost fact
    print(result.full_text(limit=args.limit))
    return 1 if result.regressed else 0  # only a loss a user of A would miss


def cmd_caps_import(args: argparse.Namespace) -> int:
    from conformance.caps.fixture import fixture_name, to_xml, write_fixture
    from conformance.caps.libvirt_import import import_libvirt_caps
    from conformance.data import layers
    from conformance.paths import capsdata_dir

    for source in args.files:
        caps = import_libvirt_caps(source, libvirt_version=args.libvirt_version)
        if args.output and len(args.files) == 1:
            target: Path | None = args.output
        elif args.capsdata:  # the uppermost data layer's (--data DIR: DIR/capsdata/), else ours
            top = layers()[-1]
            target = (capsdata_dir() if top.is_base else top.capsdata) / fixture_name(caps)
            target.parent.mkdir(parents=True, exist_ok=True)
        else:
            target = None
        if target is None:
            sys.stdout.buffer.write(to_xml(caps))
            continue
        write_fixture(caps, target)
        implied = [i.flag for i in caps.provenance.implied]
        shown = ", ".join(f for f in implied if f in ("virtio-net.failover", "blockdev", "object.qapified"))
        print(f"{target}: QEMU {caps.version} {caps.arch} from libvirt {caps.provenance.libvirt_version or '?'}"
              f"; {len(implied)} retired flags restored as implied{f' (incl. {shown})' if shown else ''}"
              + ("" if caps.qapi_schema else f"; no QAPI schema (no {Path(source).with_suffix('.replies').name}"
                 " beside it): its -netdev/-blockdev/-chardev/-object go unchecked"), file=sys.stderr)
    return 0


def cmd_caps_show(args: argparse.Namespace) -> int:
    from conformance.caps.store import resolve

    caps = resolve(args.caps)
    prov = caps.provenance
    print(f"QEMU {caps.version} {caps.arch} {caps.package}".rstrip())
    print(f"source: {prov.source} {prov.binary or ''} {prov.imported_from or ''}".rstrip())
    default = caps.default_machine()
    print(f"machines: {len(caps.machines)} (default {default.name if default else '-'})")
    for imp in prov.implied:
        print(f"implied: {imp.flag}: {imp.reason}")
    print("flags: " + " ".join(sorted(caps.flags)))
    return 0


# --- domains and argv -------------------------------------------------------------------

def _parse_set(items: list[str]) -> dict[str, object]:
    """--set NAME=VALUE: VALUE is read as a TOML value when it is one (4, true, [..]), else as text."""
    import tomllib

    from conformance.errors import CaseError

    values: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CaseError(f"--set {item!r} is not NAME=VALUE")
        try:
            values[name] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            values[name] = text
    return values


def cmd_render(args: argparse.Namespace) -> int:
    from conformance.caps.store import resolve
    from conformance.cases import load_catalogue
    from conformance.errors import CaseError
    from conformance.static import StaticRunner

    catalogue = load_catalogue()
    case = catalogue.get(args.case)
    caps = resolve(args.caps)
    machine = case.machine_for(caps.arch)
    if machine is None:
        raise CaseError(f"case {case.name} is for {', '.join(case.arches)}, not {caps.arch}", path=case.source)
    sys.stdout.write(StaticRunner(catalogue).render(case, caps, machine, _parse_set(args.set)))
    return 0


def cmd_argv(args: argparse.Namespace) -> int:
    from conformance.argv.command import cli_argv

    return cli_argv(args)


# --- main job ---------------------------------------------------------------------------

def cmd_qualify(args: argparse.Namespace) -> int:
    from conformance.qualify import qualify

    binaries = list(args.qemu) or _host_binaries()
    _shard_manifest(args)
    return _stoppable(lambda say: qualify(binaries, output=args.output, say=say, boot=not args.no_boot,
                                          jobs=args.jobs, shard=args.shard, machines=args.machines))


def _stoppable(job: Callable[[Callable[[str], None]], int]) -> int:
    """Run a long job (``run``, ``qualify``) so that Ctrl-C or SIGTERM stops it within seconds with its
    results, report and JUnit written (conformance/interrupt.py): then exit 130 or 143."""
    from conformance import interrupt

    def say(text: str) -> None:
        print(text, flush=True)

    with interrupt.stop_on_signals(say):
        status = job(say)
        if interrupt.STOP.is_set():
            print(f"qemu-conformance: interrupted by {interrupt.signal_name()}: results so far, report and JUnit "
                  "written; the items it did not finish are recorded as interrupted", file=sys.stderr, flush=True)
            return interrupt.exit_code()
    return status


def _shard_manifest(args: argparse.Namespace) -> None:
    """OUTPUT/shard.json: the shard of a run and the catalogue it ran (``report`` checks them before a merge),
    in a folder rid of an earlier run's files (runner.fresh_output: a re-run replaces)."""
    from conformance.cases import load_catalogue
    from conformance.runner import fresh_output
    from conformance.shard import write_manifest

    fresh_output(args.output)
    write_manifest(args.output, args.shard, load_catalogue())
    (args.output / "results.jsonl").touch()  # a shard with no work item still has results to merge


def cmd_run(args: argparse.Namespace) -> int:
    from conformance.errors import CaseError
    from conformance.runner import run_stages
    from conformance.stages import CASE_STAGES, LIVE_STAGES, STATIC_STAGES, parse_stage_list

    try:
        stages = parse_stage_list(args.stages)
    except ValueError as exc:
        raise CaseError(str(exc), hint=f"stages: {', '.join(CASE_STAGES)}") from None
    live = [s for s in stages if s in LIVE_STAGES or s == "vmstate"]  # vmstate asks the builds themselves
    if args.caps and live and not args.qemu:
        raise CaseError(f"--caps runs only the static stages; {' and '.join(live)} cannot run without a QEMU binary",
                        hint=f"add --qemu PATH, or --stages {','.join(s for s in STATIC_STAGES if s != 'vmstate')}")
    binaries = list(args.qemu) or ([] if args.caps else _host_binaries())
    if not binaries and not args.caps:
        raise CaseError("no QEMU binary found", hint="install qemu-system-x86 / qemu-system-arm, pass --qemu PATH, "
                        "or run the static stages on stored fixtures with --caps VERSION:ARCH")
    _shard_manifest(args)
    return _stoppable(lambda say: run_stages(stages, binaries, args.cases, args.output, say, jobs=args.jobs,
                                             fixtures=args.caps, shard=args.shard, machines=args.machines,
                                             domains=args.domain))


def cmd_guest(args: argparse.Namespace) -> int:
    from conformance.live.guest import build_guest, describe

    def log(text: str) -> None:
        print(f"guest: {text}", file=sys.stderr, flush=True)

    for arch in args.arch or ["x86_64"]:
        for flavour in args.flavour or ["cloud"]:
            guest = build_guest(arch, kernel=args.kernel, modules=args.modules, refresh=args.refresh, log=log,
                                flavour=flavour)
            print(describe(guest))
    return 0


def cmd_guest_move(args: argparse.Namespace) -> int:
    """guest export FILE / guest import FILE (conformance/live/guest.py)."""
    from conformance.live.guest import describe, export_guests, import_guests

    def log(text: str) -> None:
        print(f"guest: {text}", file=sys.stderr, flush=True)

    move = export_guests if args.guest_command == "export" else import_guests
    for guest in move(args.file, log=log):
        print(describe(guest))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from conformance.errors import ConformanceError
    from conformance.report.html import write_report

    missing = [str(p) for p in args.results if not p.exists()]
    if missing:
        raise ConformanceError(f"no such results file: {', '.join(missing)}", hint="give results.jsonl files")
    from conformance.shard import check_merge

    for note in check_merge(args.results):  # raises for shards of different catalogues or splits
        print(f"qemu-conformance: {note}", file=sys.stderr)
    print(write_report(args.results, args.output))
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    import json

    from conformance.coverage import default_binaries, format_table, measure

    binaries = list(args.qemu) or default_binaries()
    if not binaries:
        raise ConformanceError("no QEMU binary found",
                               hint="install qemu-system-x86 / qemu-system-arm or pass --qemu PATH")
    results = measure(binaries, lambda text: print(text, file=sys.stderr, flush=True), use_cache=not args.no_cache)
    print(json.dumps(results, indent=1) if args.json else format_table(results).rstrip())
    return 0


def cmd_builds(args: argparse.Namespace) -> int:
    from conformance.builds import cli_builds

    return cli_builds(args)


def _shard_option(p: argparse.ArgumentParser) -> None:
    from conformance.shard import WHOLE, shard_arg

    p.add_argument("--shard", type=shard_arg, default=WHOLE, metavar="I/N",
                   help="run only shard I of N: a stable split of case x build x stage x peer (CI matrices)")
    _machines_option(p)


def _machines_option(p: argparse.ArgumentParser) -> None:
    from conformance.machines import DEFAULT, machine_arg

    p.add_argument("--machines", type=machine_arg, default=DEFAULT, metavar="newest|all|classes|differences|REGEX",
                   help="machine types each migration runs under: newest (default: the newest versioned type both "
                        "builds have), all (every versioned type of the case's family both have, one migration "
                        "each), classes or differences (run only: one migration per class of those types, "
                        "docs/machines.md), or a regular expression selecting among those (pc-q35-[5-7])")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qemu-conformance",
        description="Capability-aware compatibility and conformance suite for QEMU builds.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("probe", help="probe a QEMU binary over QMP and write its capability fixture")
    p.add_argument("binary", type=binary_arg, help="path of a qemu-system-* binary")
    p.add_argument("-o", "--output", type=path_arg, help="write the fixture here (default: print it)")
    p.add_argument("--accel", choices=["kvm", "tcg"], help="accelerator for the probe (default: kvm if usable)")
    p.set_defaults(func=cmd_probe)

    caps = sub.add_parser("caps", help="stored capability fixtures: list, diff, import, show")
    csub = caps.add_subparsers(dest="caps_command", required=True, metavar="ACTION")
    p = csub.add_parser("list", help="the fixtures in capsdata/ as a table")
    p.add_argument("--dir", type=path_arg, help="another fixture folder")
    p.set_defaults(func=cmd_caps_list)
    p = csub.add_parser("diff", help="what B gained and lost against A; exit 1 when B lost anything")
    p.add_argument("a", type=caps_arg, help="fixture file, libvirt caps XML or VERSION:ARCH")
    p.add_argument("b", type=caps_arg, help="fixture file, libvirt caps XML or VERSION:ARCH")
    p.add_argument("--limit", type=int, default=40, help="items shown per section (default %(default)s)")
    p.set_defaults(func=cmd_caps_diff)
    p = csub.add_parser("import", help="convert libvirt capability XML into this project's fixture")
    p.add_argument("files", nargs="+", type=path_arg, help="libvirt caps XML (test fixture or host cache)")
    p.add_argument("-o", "--output", type=path_arg, help="output file (one input only)")
    p.add_argument("--capsdata", action="store_true",
                   help="write into capsdata/ under the standard name (--data DIR: DIR/capsdata/)")
    p.add_argument("--libvirt-version", help="libvirt release that wrote the file, when the file cannot tell")
    p.set_defaults(func=cmd_caps_import)
    p = csub.add_parser("show", help="summary and flags of one fixture")
    p.add_argument("caps", type=caps_arg, help="fixture file, libvirt caps XML or VERSION:ARCH")
    p.set_defaults(func=cmd_caps_show)

    p = sub.add_parser("render", help="render a case's domain template to libvirt domain XML")
    p.add_argument("case", help="case name (templates/cases.toml)")
    p.add_argument("--caps", type=caps_arg, required=True, help="fixture file, libvirt caps XML or VERSION:ARCH")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a template variable")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("argv", help="the QEMU command line for a libvirt domain XML and capabilities")
    p.add_argument("domain", type=path_arg, nargs="?", help="libvirt domain XML")
    p.add_argument("--caps", type=caps_arg, help="fixture file, libvirt caps XML or VERSION:ARCH (with DOMAIN)")
    p.add_argument("--json", action="store_true", help="print a JSON list of strings (argv[0] = emulator)")
    p.add_argument("--schema-coverage", nargs="?", const="abcd", metavar="CLASSES",
                   help="instead: every item of libvirt's domain schema with its class (a/b/c/d, or only those given) "
                        "and the share the builder handles (docs/libvirt-corpus.md)")
    p.set_defaults(func=cmd_argv)

    from conformance.stages import CASE_STAGES

    p = sub.add_parser("run", help="run stages of cases on QEMU binaries; results to DIR/results.jsonl")
    p.add_argument("--stages", action="append", default=[], metavar="LIST",
                   help=f"comma-separated: {', '.join(CASE_STAGES)} (default: all); only these are run and "
                        "recorded, each for the cases that list it in templates/cases.toml")
    p.add_argument("--qemu", action="append", default=[], type=binary_arg, metavar="PATH",
                   help="QEMU binary (repeatable; default: the host's qemu-system-x86_64 and -aarch64)")
    p.add_argument("--caps", action="append", default=[], type=caps_arg, metavar="FIXTURE",
                   help="static stages on a stored fixture, no binary: VERSION:ARCH (4.2.0:x86_64), a file, "
                        "or 'all' (repeatable)")
    p.add_argument("--cases", action="append", default=[], metavar="GLOB", help="only these cases (repeatable)")
    p.add_argument("--domain", action="append", default=[], type=path_arg, metavar="FILE.xml",
                   help="your own libvirt domain (virsh dumpxml, virt-install --print-xml), run like a case "
                        "(repeatable; alone, without --cases, only the domains run; docs/domains.md)")
    p.add_argument("-o", "--output", type=path_arg, default="reports/run",
                   help="output folder (default %(default)s, in the working folder); a re-run into it first removes "
                        "the earlier run's results.jsonl, report.html, junit.xml, shard.json, coverage.json, "
                        "prediction.json, live/, argv/, caps/")
    p.add_argument("-j", "--jobs", type=int,
                   help="live runs at a time (default: the cores + 2 for migrations; boots: at most the cores)")
    _shard_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("guest", help="the test guest (Debian cloud kernel + busybox initramfs)")
    gsub = p.add_subparsers(dest="guest_command", required=True, metavar="ACTION")
    g = gsub.add_parser("build", help="build (once, cached) the test guest")
    g.add_argument("--arch", action="append", choices=["x86_64", "aarch64"], help="repeatable (default x86_64)")
    g.add_argument("--kernel", type=path_arg, help="your own kernel image instead of Debian's cloud kernel")
    g.add_argument("--modules", type=path_arg, help="its modules folder (lib/modules/VERSION)")
    g.add_argument("--refresh", action="store_true", help="look for a newer kernel package")
    g.add_argument("--flavour", action="append", choices=["cloud", "generic"],
                   help="repeatable (default cloud): generic has drivers for emulated hardware (cases' live.guest)")
    g.set_defaults(func=cmd_guest)
    g = gsub.add_parser("export", help="every guest flavour of the cache (kernel, initramfs, manifest with "
                                       "SHA-256) as one tarball, for a runner without apt or network")
    g.add_argument("file", type=path_arg, help="the tarball to write (.tar, or .tar.gz)")
    g.set_defaults(func=cmd_guest_move)
    g = gsub.add_parser("import", help="verify a `guest export` tarball and put its guests into the cache")
    g.add_argument("file", type=path_arg, help="the tarball")
    g.set_defaults(func=cmd_guest_move)

    p = sub.add_parser("qualify", help="qualify QEMU builds (default: the host's) and write a report")
    p.add_argument("--qemu", action="append", default=[], type=binary_arg, metavar="PATH",
                   help="QEMU binary (repeatable)")
    p.add_argument("-o", "--output", type=path_arg, default="reports/host",
                   help="output folder (default %(default)s, in the working folder); a re-run into it first removes "
                        "the earlier run's results.jsonl, report.html, junit.xml, shard.json, coverage.json, "
                        "prediction.json, live/, argv/, caps/")
    p.add_argument("--no-boot", action="store_true", help="static stages only (no guest boots)")
    p.add_argument("-j", "--jobs", type=int,
                   help="live runs at a time (default: the cores + 2 for migrations; boots: at most the cores)")
    _shard_option(p)
    p.set_defaults(func=cmd_qualify)

    p = sub.add_parser("report", help="merge results.jsonl files (CI shards, machines) into one HTML report")
    p.add_argument("results", nargs="+", type=path_arg, help="results.jsonl files")
    p.add_argument("-o", "--output", type=path_arg, default="reports/merged",
                   help="folder (default %(default)s, in the working folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("coverage", help="the migratable devices each build offers per machine family, and which "
                                        "of them the cases boot and migrate")
    p.add_argument("--qemu", action="append", default=[], type=binary_arg, metavar="PATH",
                   help="QEMU binary (repeatable; default: the host's qemu-system-x86_64 and -aarch64 and the "
                        "builds of 'builds list')")
    p.add_argument("--json", action="store_true", help="one JSON object per build and family")
    p.add_argument("--no-cache", action="store_true", help="ask the builds again (default: cached per binary)")
    p.set_defaults(func=cmd_coverage)

    p = sub.add_parser("builds", help="extra real QEMU builds unpacked beside the host's (10.0, 5.2)")
    bsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = bsub.add_parser("fetch", help="download and unpack builds (default: all known)")
    b.add_argument("names", nargs="*", help="e.g. 10.0 5.2")
    b.add_argument("--dest", type=path_arg, help="folder (default: $QEMU_CONFORMANCE_BUILDS)")
    b.set_defaults(func=cmd_builds)
    b = bsub.add_parser("list", help="the prepared builds")
    b.add_argument("--dest", type=path_arg, help="folder (default: $QEMU_CONFORMANCE_BUILDS)")
    b.set_defaults(func=cmd_builds, names=[])
    b = bsub.add_parser("cpu-map", help="fetch libvirt 11.3's x86 CPU map (host-model CPUs) into the cache")
    b.add_argument("--dest", type=path_arg, help="cache root (default: $QEMU_CONFORMANCE_CACHE)")
    b.set_defaults(func=cmd_builds, names=[])

    from conformance.knownbugs.cli import add_arguments as add_bugs_arguments  # list, explain

    add_bugs_arguments(sub.add_parser("bugs", help="the known-bugs database; earlier results re-matched against it"),
                       path_arg)
    return parser


def _data_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``--data DIR`` / ``--data=DIR`` anywhere on the line (before or after the command): (the rest, the dirs)."""
    rest, dirs, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--data" and i + 1 < len(argv):
            dirs.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--data="):
            dirs.append(argv[i].removeprefix("--data="))
        else:
            rest.append(argv[i])
        i += 1
    return rest, dirs


def main(argv: Sequence[str] | None = None) -> int:
    from conformance.data import check, set_user_dirs

    parser = build_parser()
    parser.add_argument("--data", action="append", default=[], metavar="DIR",
                        help="a data folder layered over the packaged data (repeatable; also QEMU_CONFORMANCE_DATA, "
                             "a :-separated list): capsdata/, templates/cases.toml, templates/domains/, bugs.toml; "
                             "theirs wins on a name clash (docs/data.md)")
    rest, dirs = _data_options(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    try:
        set_user_dirs([path_arg(d) for d in dirs])
        check()  # no data (a broken install): one line and exit 2, for every command
        return int(args.func(args) or 0)
    except ConformanceError as exc:
        print(f"qemu-conformance: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("qemu-conformance: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
