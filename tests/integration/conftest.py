"""Integration tests: real mosquitto, real sockets, ephemeral ports on 127.0.0.1.

The broker fixtures (``mqtt_broker``, ``fresh_mqtt_broker``) live in ``tests/conftest.py``
so that ``tests/e2e`` shares them; helpers to subscribe and publish are in
``tests/mqtt_helpers.py``. Every test in this folder gets the ``integration`` marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators import CampusSim
from tests.sim_helpers import LESSON, assert_no_leaked_tasks

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
async def rtu_sim() -> AsyncIterator[CampusSim]:
    """One classroom and one meter speaking RTU frames over TCP (a serial server)."""
    async with CampusSim(
        classrooms=1, meters=1, framer="rtu", speed=0, seed=11, start=LESSON
    ) as campus:
        yield campus
    await assert_no_leaked_tasks()
