#!/usr/bin/env python3
"""Every static output, dumped to one JSON file, and two dumps compared: the proof that a speed change
changed no verdict, reason or argv.

    python3 benchmarks/static_outputs.py dump OUT.json [--corpus DIR]
    python3 benchmarks/static_outputs.py compare BEFORE.json AFTER.json
    python3 benchmarks/static_outputs.py prove [COMMIT...] [--working PATH...] [--keep DIR]

A dump holds
- ``run``: every result of `qemu-conformance run --stages parse,argv --caps all` (run in this process, into
  a temporary folder), keyed by fixture, case and stage: verdict, reason, argv, known bugs, artifacts;
- ``matrix``: every outcome of benchmarks/static.py's matrix (one StaticRunner across all fixtures, as the
  benchmark runs it);
- ``corpus``: the reply of `python -m conformance.argv.batch` (the generator of `nox -s libvirt-corpus`) to
  every domain + caps pair of libvirt's wide corpus (every tree, every argv/error output with a caps file),
  when the corpus is there.

To compare two code states on the same tree (others change argv behaviour meanwhile), dump both from the
same moment: `prove` copies the working tree's code and data twice, reverts the given commits in the
"before" copy (newest first; ``--working PATH...``: the uncommitted changes of those paths too, to prove a
change before committing it; a new, untracked file stays in both copies), dumps both copies (PYTHONPATH=COPY)
and compares them.
`compare` and `prove` exit 1 when anything differs and print the first differences.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "peer" / "libvirt-corpus-wide"


def run_results() -> dict[str, Any]:
    from conformance.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="static-outputs-") as tmp:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli(["run", "--stages", "parse,argv", "--caps", "all", "-o", tmp])
        out: dict[str, Any] = {"exit": code}
        for line in (Path(tmp) / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            details = dict(r.get("details", {}))
            key = f"{details.get('fixture', r['qemu'] and r['qemu'].get('path'))} {r['case']} {r['stage']}"
            if key in out:
                raise SystemExit(f"two results for {key}")
            out[key] = {"verdict": r["verdict"], "reason": r["reason"], "details": details,
                        "artifacts": r.get("artifacts", {})}
    return out


def matrix_outcomes() -> dict[str, Any]:
    from conformance.caps.store import fixture_files, load
    from conformance.cases import load_catalogue
    from conformance.static import StaticRunner

    catalogue = load_catalogue()
    fixtures = [load(p) for p in fixture_files()]
    runner = StaticRunner(catalogue)
    out: dict[str, Any] = {}
    for case in catalogue.cases.values():
        for caps in fixtures:
            if caps.arch not in case.arches:
                continue
            for o in runner.run(case, caps):
                out[f"{o.caps} {o.case} {o.stage}"] = {"verdict": o.verdict, "reason": o.reason, "argv": o.argv,
                                                        "known_bugs": o.known_bugs}
    return out


def corpus_replies(corpus: Path) -> dict[str, Any]:
    from conformance.argv.batch import answers

    if not (corpus / "index.json").exists():
        return {}
    index = json.loads((corpus / "index.json").read_text())
    pairs = sorted({(str(corpus / var["input"]), str(corpus / out["caps_file"]))
                    for case in index["cases"] for var in case["variants"] for out in var["outputs"]
                    if out["kind"] in ("argv", "error") and out.get("caps_file")})
    lines = [json.dumps({"domain": d, "caps": c}) for d, c in pairs]
    return {f"{Path(d).relative_to(corpus)} {Path(c).name}": json.loads(reply)
            for (d, c), reply in zip(pairs, answers(lines, jobs=1), strict=True)}


def dump(path: Path, corpus: Path) -> int:
    import conformance

    data = {"package": str(Path(conformance.__file__).parent), "run": run_results(), "matrix": matrix_outcomes(),
            "corpus": corpus_replies(corpus)}
    path.write_text(json.dumps(data, indent=0, sort_keys=True))
    print(f"{path}: {len(data['run']) - 1} run results, {len(data['matrix'])} matrix outcomes, "
          f"{len(data['corpus'])} corpus replies (package {data['package']})")
    return 0


def _first_difference(left: Any, right: Any) -> str:
    """Where two outputs part: the first differing argv element, else both values shortened."""
    if isinstance(left, dict) and isinstance(right, dict):
        la = left.get("argv", left.get("details", {}).get("argv"))
        ra = right.get("argv", right.get("details", {}).get("argv"))
        if isinstance(la, list) and isinstance(ra, list) and la != ra:
            i = next((i for i, (x, y) in enumerate(zip(la, ra, strict=False)) if x != y), min(len(la), len(ra)))
            return f"argv[{i}]: before {la[i:i + 2]} after {ra[i:i + 2]} (lengths {len(la)}, {len(ra)})"
        keys = [k for k in left.keys() | right.keys() if left.get(k) != right.get(k)]
        return "; ".join(f"{k}: before {json.dumps(left.get(k))[:300]} after {json.dumps(right.get(k))[:300]}"
                         for k in sorted(keys))
    return f"before {json.dumps(left)[:300]} after {json.dumps(right)[:300]}"


def compare(before: Path, after: Path, show: int = 10) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    bad = 0
    for part in ("run", "matrix", "corpus"):
        left, right = a.get(part, {}), b.get(part, {})
        differ = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
        print(f"{part}: {len(left)} before, {len(right)} after, {len(differ)} differ")
        for k in differ[:show]:
            print(f"  {k}: {_first_difference(left.get(k), right.get(k))}")
        bad += len(differ)
    print("identical" if not bad else f"{bad} outputs differ")
    return 1 if bad else 0


def _copy_tree(root: Path, into: Path) -> None:
    into.mkdir(parents=True)
    for name in ("conformance", "capsdata", "templates", "pyproject.toml"):
        src = root / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, into / name)


def prove(commits: list[str], keep: Path | None, corpus: Path, working: list[str] | None = None) -> int:
    """Dump the working tree as it is now and as it is with ``commits`` reverted (and the uncommitted changes
    of the ``working`` paths, before a commit), and compare."""
    root = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="static-prove-")) if keep is None else keep
    before, after = work / "before", work / "after"
    _copy_tree(root, after)
    shutil.copytree(after, before)
    reverts = [(commit, ["show", "--format=", commit, "--", "conformance", "capsdata", "templates"])
               for commit in reversed(commits)]  # newest first
    if working:
        reverts.insert(0, ("the uncommitted changes", ["diff", "HEAD", "--", *working]))
    for commit, command in reverts:
        diff = subprocess.run(["git", "-C", str(root), *command], check=True, capture_output=True, text=True).stdout
        if diff.strip() and subprocess.run(["git", "apply", "-R", "-"], cwd=before, input=diff, text=True).returncode:
            raise SystemExit(f"cannot revert {commit} in {before}: later changes touch the same lines")
    for tree in (before, after):
        env = dict(os.environ, PYTHONPATH=str(tree))
        subprocess.run([sys.executable, __file__, "dump", str(tree / "outputs.json"), "--corpus", str(corpus)],
                       env=env, cwd=work, check=True)
    code = compare(before / "outputs.json", after / "outputs.json")
    if keep is None:
        shutil.rmtree(work)
    return code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out", type=Path)
    d.add_argument("--corpus", type=Path, default=CORPUS)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    p = sub.add_parser("prove")
    p.add_argument("commits", nargs="*", help="the commits to revert in the 'before' copy, oldest first")
    p.add_argument("--working", nargs="+", metavar="PATH",
                   help="revert the uncommitted changes of these paths too (the proof before a commit)")
    p.add_argument("--keep", type=Path, help="leave the copies and dumps in this (new) folder")
    p.add_argument("--corpus", type=Path, default=CORPUS)
    ns = ap.parse_args()
    if ns.command == "dump":
        return dump(ns.out, ns.corpus)
    if ns.command == "prove":
        if not ns.commits and not ns.working:
            ap.error("prove: give commits, --working paths, or both")
        return prove(ns.commits, ns.keep, ns.corpus, ns.working)
    return compare(ns.before, ns.after)


if __name__ == "__main__":
    sys.exit(main())
