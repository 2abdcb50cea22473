"""Integration tests: real mosquitto, real sockets, ephemeral ports on 127.0.0.1.

The broker fixtures (``mqtt_broker``, ``fresh_mqtt_broker``) live in ``tests/conftest.py``
so that ``tests/e2e`` shares them; helpers to subscribe and publish are in
``tests/mqtt_helpers.py``. Every test in this folder gets the ``integration`` marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
