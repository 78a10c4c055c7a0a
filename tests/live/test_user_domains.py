"""Users' own domains (run --domain) on real QEMU: a virt-install domain boots the test guest on the host's
build with every substitution named, one that needs host hardware is a skip naming it, and a domain with a
named CPU model migrates from the host's 7.2 to 10.0 through the planner and the runner."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conformance.cases import load_catalogue
from conformance.domain.user import domain_cases
from conformance.live.boot import Target
from conformance.machines import MachineChoice
from conformance.plan import plan
from conformance.results.records import ResultWriter
from conformance.runner import live_machines, run_live, run_stages, target_names
from tests.helpers import DATA

pytestmark = pytest.mark.live

DOMAINS = DATA / "domains"
CENTOS = DOMAINS / "centos7-pc-ide-rtl8139-kvm.xml"  # i440fx, Nehalem, IDE raw cache=none, rtl8139 on a bridge


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.mark.smoke
def test_a_virt_install_domain_boots_here_and_a_hostdev_one_is_a_skip(qemu_x86_64: Path, tmp_path: Path) -> None:
    code = run_stages(["boot"], [qemu_x86_64], [], tmp_path, lambda _line: None,
                      domains=[CENTOS, DOMAINS / "ubuntu22-scsi-hostdev-kvm.xml"], jobs=2)
    by_case = {r["case"]: r for r in records(tmp_path) if r["stage"] == "boot"}
    centos, ubuntu = by_case["centos7-pc-ide-rtl8139-kvm"], by_case["ubuntu22-scsi-hostdev-kvm"]
    assert centos["verdict"] == "pass", centos["reason"]
    assert code == 0
    changes = centos["details"]["domain_changes"]
    if centos["accel"] == "tcg":
        assert "type kvm -> qemu: KVM does not work here, the guest runs under TCG" in changes
    assert "interface 52:54:00:7c:00:07: type bridge -> user netdev (model rtl8139, MAC kept)" in changes
    assert "<graphics type='vnc'> removed: headless" in changes
    argv = json.loads((tmp_path / centos["artifacts"]["cmdline"]).read_text())
    assert any('"driver":"ide-hd"' in a and '"bus":"ide.0"' in a for a in argv)  # its IDE bus, kept
    assert any('"cache":{"direct":true' in a or '"direct":true' in a for a in argv)  # cache=none: O_DIRECT
    assert any('"driver":"rtl8139"' in a and "52:54:00:7c:00:07" in a for a in argv)
    assert "-vnc" not in argv and "Nehalem" in argv[argv.index("-cpu") + 1]
    console = (tmp_path / centos["artifacts"]["console"]).read_text()
    assert "10ec:8139" in console  # the guest saw the domain's NIC model
    assert ubuntu["verdict"] == "skip"
    assert ubuntu["reason"].startswith("cannot run here: <tpm model='tpm-crb'> backend emulator")
    assert "<hostdev mode='subsystem' type='pci'> 0000:03:00.0: a host device" in ubuntu["reason"]
    assert len(ubuntu["details"]["domain_blockers"]) == 2



@pytest.mark.parametrize("machine", ["pc", "pc-i440fx-6.2"])
def test_a_virt_install_domain_migrates_from_7_2_to_10_0(x86_target: Target, x86_10_target: Target,
                                                        tmp_path: Path, machine: str) -> None:
    """virt-install's alias ``pc`` migrates under the newest type both builds have, as cases do; a versioned
    type (the same file, its machine set to pc-i440fx-6.2 as an older host's libvirt wrote it) is kept."""
    catalogue = load_catalogue()
    path = tmp_path / CENTOS.name
    path.write_text(CENTOS.read_text().replace('machine="pc"', f'machine="{machine}"'))
    case, = domain_cases([path], ("migrate",))
    items = [p for p in plan([case], [x86_target, x86_10_target], ["migrate"], target_names,
                             machines=live_machines(MachineChoice.parse("newest")))
             if p.peer is x86_10_target and p.build is x86_target]
    at = "" if machine == "pc" else f"@{machine}"
    assert [p.item.id for p in items] == [f"centos7-pc-ide-rtl8139-kvm.migrate[{x86_target.caps.label}->"
                                          f"{x86_10_target.caps.label}{at}]"]
    counts = run_live(items, ResultWriter(tmp_path), catalogue, tmp_path / "out", lambda _line: None, jobs=1)
    result, = records(tmp_path)
    assert counts == Counter({"pass": 1}), result["reason"]
    newest = f"pc-i440fx-{x86_target.caps.version.major}.{x86_target.caps.version.minor}"
    assert result["details"]["machine"] == (newest if machine == "pc" else machine)
    assert (f"machine type pc -> {newest}" in result["details"]["domain_changes"]) == (machine == "pc")
    assert result["details"]["direction"] == "forward"
