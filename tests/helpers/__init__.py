"""Helpers shared by the suite's own tests (fixtures stay in the conftest.py files).

- ``tests.helpers``: where things are (ROOT, DATA) and how to run this checkout's CLI in a subprocess;
- ``tests.helpers.processes``: finding, waiting for and interrupting the processes (QEMUs) a test started;
- ``tests.helpers.results``: a results.jsonl with every verdict, for the report tests;
- ``tests.helpers.netns_hosts``: test "hosts" in network namespaces, for avocado's remote spawner.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
DATA = ROOT / "tests" / "data"  # recorded evidence, goldens, schemas, transcripts

CLI = [sys.executable, "-m", "conformance.cli"]  # this interpreter's qemu-conformance


def code_under_test() -> dict[str, str]:
    """The environment for a CLI run outside the checkout: this checkout's package, not whichever
    checkout the editable install points at."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
