"""[qemu_conformance] machines: avocado plans one migration per machine type, named like the planner's items."""

from __future__ import annotations

from pathlib import Path

import pytest

avocado = pytest.importorskip("avocado", reason="avocado-framework not installed (pip install -e '.[avocado]')")

pytestmark = pytest.mark.live  # the resolver reads the machine types from the binary (a probe, cached on disk)


def test_the_machines_setting_makes_one_runnable_per_machine_type(qemu_x86_64: Path) -> None:
    from avocado.core.resolver import ReferenceResolutionResult
    from avocado.core.settings import settings

    from conformance.avocado.plugins import ConformanceResolver

    config = settings.as_dict()
    config.update({"qemu_conformance.qemu": [str(qemu_x86_64)], "qemu_conformance.stages": ["migrate"],
                   "qemu_conformance.machines": r"pc-q35-[57]\.2$"})
    resolution = ConformanceResolver(config=config).resolve("qemu-conformance:q35-minimal")
    assert resolution.result == ReferenceResolutionResult.SUCCESS
    runnables = sorted(resolution.resolutions, key=lambda r: r.uri)
    build = runnables[0].uri.split("[")[1].split("_to_")[0]
    assert [r.uri for r in runnables] == [f"q35-minimal.migrate[{build}_to_{build}@pc-q35-{v}.2]" for v in (5, 7)]
    assert [r.kwargs["machine"] for r in runnables] == ["pc-q35-5.2", "pc-q35-7.2"]
    config["qemu_conformance.machines"] = "pc-q35-("  # a bad value is the reference's error, in one line
    bad = ConformanceResolver(config=config).resolve("qemu-conformance:q35-minimal")
    assert bad.result == ReferenceResolutionResult.ERROR and "not newest, all or a regular expression" in bad.info
