"""The static conformance matrix: every case x every stored fixture of its arch.

render -> schema -> parse -> semantic rules -> argv, expecting success or the
error the case declares (teaming without virtio-net.failover must fail with
libvirt's message; with it, the argv must carry failover and failover_pair_id).
"""

from __future__ import annotations

import pytest

from conformance.pytest_plugin import StaticCombo
from conformance.results.verdicts import is_failure


def test_static(static_combo: StaticCombo) -> None:
    outcomes = static_combo.run()
    assert outcomes, "a case declares at least one static stage"
    failures = [f"{o.stage}: {o.verdict}: {o.reason}" for o in outcomes if is_failure(o.verdict)]
    assert not failures, "\n".join(failures)
    skipped = [o for o in outcomes if o.verdict == "skip"]
    if skipped and len(skipped) == len(outcomes):
        pytest.skip(skipped[0].reason)
