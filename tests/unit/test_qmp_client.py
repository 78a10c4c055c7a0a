"""The QMP client formats messages for qemu.qmp's debug log only when that log is on."""

from __future__ import annotations

import logging

import pytest
from qemu.qmp.message import Message

from conformance.qemu.qmp import _quiet_client


class _Counting(Message):
    formatted = 0

    def __str__(self) -> str:
        type(self).formatted += 1
        return super().__str__()


@pytest.mark.parametrize("debug", [False, True])
def test_messages_are_formatted_only_for_an_enabled_debug_log(debug: bool, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    client = _quiet_client("t")
    msg = _Counting({"return": {}})
    _Counting.formatted = 0
    with caplog.at_level(logging.DEBUG if debug else logging.WARNING, logger=client.logger.name):
        assert client._cb_inbound(msg) is msg
        assert client._cb_outbound(msg) is msg
    assert _Counting.formatted == (2 if debug else 0)
    assert any('"return"' in r.getMessage() for r in caplog.records) is debug
