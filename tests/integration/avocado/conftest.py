"""avocado tests need the [avocado] extra; without it they skip and say so."""

from __future__ import annotations

# the avocado_cli fixture is in tests/conftest.py (tests/live/test_interrupt.py uses it too)
