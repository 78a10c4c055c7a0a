"""`python -m conformance.argv.batch`: many domain + caps pairs through one Python process.

Speaks the batch protocol of libvirt_argv_compare.py (``--batch``): each stdin line is a JSON object
``{"domain": PATH, "caps": PATH}`` (optionally ``"abi_update": true``: libvirt's output for a new definition,
its .abi-update files; ``"migrate_from": URI``: a start for an incoming migration, -incoming URI);
each stdout line answers one input, in order, with ``{"argv": [...]}`` or
``{"error": "one-line message"}``. ``--jobs N`` forks N workers (default: the
number of cores) that share the parsed capability fixtures; answers keep the input order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from conformance.errors import ConformanceError


def answer(request: dict) -> dict:
    """One request -> one reply; a bug in the builder is an error reply that says so, never a crash."""
    from conformance.argv.command import argv_for_file
    from conformance.argv.firmware import NEW_DEFINITION
    from conformance.argv.harness import INCOMING

    # "abi_update": libvirt's output for a new definition (its .abi-update files), not a loaded one;
    # "migrate_from": a start for an incoming migration (the harness's ARG_MIGRATE_FROM: -incoming URI)
    token = NEW_DEFINITION.set(bool(request.get("abi_update")))
    incoming = INCOMING.set(request.get("migrate_from") or None)
    try:
        return {"argv": argv_for_file(Path(request["domain"]), str(request["caps"]))}
    except ConformanceError as exc:
        return {"error": exc.format()}
    except Exception as exc:  # the batch goes on; the reply names the bug
        return {"error": f"internal error: {type(exc).__name__}: {exc}"}
    finally:
        INCOMING.reset(incoming)
        NEW_DEFINITION.reset(token)


def _answer_line(line: str) -> str:
    try:
        request = json.loads(line)
    except ValueError as exc:
        return json.dumps({"error": f"request is not JSON: {exc}"})
    return json.dumps(answer(request))


def answers(lines: Iterable[str], jobs: int = 1) -> Iterator[str]:
    """Reply lines for request lines, in order."""
    requests = [line for line in lines if line.strip()]
    if jobs <= 1 or len(requests) < 2 * jobs:
        yield from map(_answer_line, requests)
        return
    import multiprocessing

    from conformance.argv.command import load_caps

    for caps in sorted({json.loads(r).get("caps", "") for r in requests if r.lstrip().startswith("{")}):
        with contextlib.suppress(ConformanceError):
            load_caps(str(caps))  # parsed once here, shared with the forked workers
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_answer_line, requests, chunksize=8)


def use_harness_firmware(corpus: Path | None = None) -> Path | None:
    """Point firmware auto-selection at libvirt's test descriptors, if found; say which on stderr."""
    from conformance.argv.firmware import ENV_FIRMWARE_DIRS, find_harness_firmware_data, harness_firmware_dirs
    from conformance.paths import libvirt_corpus_dir

    data = find_harness_firmware_data(corpus or libvirt_corpus_dir())
    if data is None:
        print("batch: libvirt's test firmware descriptors not found: <os firmware> uses the host's "
              "(docs/libvirt-corpus.md)", file=sys.stderr)
        return None
    os.environ[ENV_FIRMWARE_DIRS] = os.pathsep.join(map(str, harness_firmware_dirs(data)))
    print(f"batch: firmware descriptors of libvirt's test harness: {data}", file=sys.stderr)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m conformance.argv.batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--harness-firmware", action="store_true",
                    help="select firmware from libvirt's test descriptors (tests/qemufirmwaredata), as the corpus's "
                         "expectations were made, when a libvirt source is at hand (docs/libvirt-corpus.md)")
    ns = ap.parse_args(argv)
    if ns.harness_firmware:
        use_harness_firmware()
    for reply in answers(sys.stdin, ns.jobs):
        sys.stdout.write(reply + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
