"""host-model CPUs: the model and features libvirt computes from the probed host CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conformance.errors import UnsupportedByQemu

if TYPE_CHECKING:
    from conformance.argv.context import Ctx


def host_model_cpu(ctx: Ctx) -> tuple[str, list[str]]:
    """(model, ['feature=on', ...]) for <cpu mode='host-model'>."""
    raise UnsupportedByQemu("<cpu mode='host-model'> needs the host CPU model expansion, which these capabilities "
                            "do not carry", path=ctx.domain.source, hint="use mode='custom' with a named model")
