"""CI shards: a deterministic split of the work (case x build x stage x peer) into n parts.

A work item (conformance/plan.py, which plans them) is one stage result to be: a case, a stage, the
build it runs on (``VERSION-ARCH``, as ``Capabilities.label``) and, for a migration, the peer build.
Its shard is a stable hash (SHA-256, not Python's salted ``hash``) of those names, modulo n: the same
item lands in the same shard on every machine and every run, and the n shards cover every item
exactly once.

Each sharded run writes OUTPUT/shard.json (its shard and a fingerprint of
the case catalogue it ran); ``check_merge`` refuses to merge shards of
different catalogues or of different splits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from conformance.cases import Catalogue
from conformance.errors import ConformanceError
from conformance.plan import Planned, WorkItem

MANIFEST = "shard.json"
P = TypeVar("P", bound="Planned[Any]")


class ShardError(ConformanceError):
    """A bad --shard value, or shards that cannot be merged."""


def shard_of(item: WorkItem, count: int) -> int:
    """The shard (1..count) that owns ``item``."""
    digest = hashlib.sha256(item.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not found:
            raise ShardError(f"--shard {text!r} is not I/N", hint="e.g. --shard 2/4: the second of four shards")
        index, count = int(found[1]), int(found[2])
        if count < 1 or not 1 <= index <= count:
            raise ShardError(f"--shard {text!r}: I must be between 1 and N", hint="e.g. --shard 1/4 ... --shard 4/4")
        return cls(index, count)

    def owns(self, item: WorkItem) -> bool:
        return self.count == 1 or shard_of(item, self.count) == self.index

    def mine(self, planned: Iterable[P]) -> list[P]:
        """The planned items this shard owns."""
        return [p for p in planned if self.owns(p.item)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(1, 1)


def shard_arg(value: str) -> Shard:
    """argparse ``type=`` of --shard."""
    import argparse

    try:
        return Shard.parse(value)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split(items: Iterable[WorkItem], count: int) -> dict[int, list[WorkItem]]:
    """Every item in its shard: {1: [...], ..., count: [...]}."""
    parts: dict[int, list[WorkItem]] = {i: [] for i in range(1, count + 1)}
    for item in items:
        parts[shard_of(item, count)].append(item)
    return parts


# --- the manifest and the merge check ---------------------------------------------------

def catalogue_fingerprint(catalogue: Catalogue) -> str:
    """SHA-256 (first 16 hex digits) of the catalogue's files (every data layer's): shards of one commit agree."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in catalogue.files)).hexdigest()[:16]


def write_manifest(output: Path, shard: Shard, catalogue: Catalogue) -> Path:
    """OUTPUT/shard.json: which shard this run is and which catalogue it ran."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / MANIFEST
    path.write_text(json.dumps({"shard": str(shard), "catalogue": catalogue_fingerprint(catalogue),
                                "catalogue_file": str(catalogue.path), "cases": len(catalogue.cases)},
                               indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(results_file: Path) -> dict[str, str] | None:
    path = results_file.parent / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ShardError(f"unreadable shard manifest: {exc}", path=path,
                         hint="re-run the shard, or remove the file to merge without the check") from None


def check_merge(results_files: Sequence[Path]) -> list[str]:
    """Refuse shards of different catalogues or of different splits; notes on missing shards.

    Only shards (I/N with N > 1, read from the shard.json beside each file) are checked: whole runs (1/1:
    unsharded, avocado jobs) and older runs without a manifest merge with anything, as before."""
    manifests = [(f, m) for f in results_files if (m := read_manifest(f)) is not None]
    split_runs = [(f, m) for f, m in manifests if m.get("shard", "1/1").split("/")[-1] != "1"]
    if not split_runs:
        return []
    first_file, first = split_runs[0]
    for path, manifest in split_runs[1:]:
        if manifest.get("catalogue") != first.get("catalogue"):
            raise ShardError(
                f"cannot merge shards of different case catalogues: {first_file} (shard {first.get('shard')}) ran "
                f"catalogue {first.get('catalogue')}, {path} (shard {manifest.get('shard')}) ran "
                f"{manifest.get('catalogue')}",
                hint="run every shard from the same commit of templates/cases.toml")
    counts = {m["shard"].split("/")[1] for _, m in split_runs}
    if len(counts) > 1:
        given = ", ".join(sorted(m["shard"] for _, m in split_runs))
        raise ShardError(f"cannot merge shards of different splits ({given})",
                         hint="give the shards of one --shard I/N split")
    notes = []
    if counts:
        count = int(counts.pop())
        have = {int(m["shard"].split("/")[0]) for _, m in split_runs}
        missing = sorted(set(range(1, count + 1)) - have)
        if missing:
            notes.append(f"note: shard(s) {', '.join(f'{i}/{count}' for i in missing)} not given: "
                         "their results are missing from the report")
    return notes
