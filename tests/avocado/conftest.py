"""avocado tests need the [avocado] extra; without it they skip and say so."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def avocado_cli() -> str:
    pytest.importorskip("avocado", reason="avocado-framework not installed (pip install -e '.[avocado]')")
    where = shutil.which("avocado")
    if not where or not shutil.which("avocado-runner-qemu-conformance"):
        pytest.skip("avocado or avocado-runner-qemu-conformance not on PATH (pip install -e '.[avocado]')")
    return where
