"""Integration tests: real mosquitto, real sockets, ephemeral ports on 127.0.0.1.

The broker fixtures (``mqtt_broker``, ``fresh_mqtt_broker``) live in ``tests/conftest.py``
so that ``tests/e2e`` shares them; helpers to subscribe and publish are in
``tests/mqtt_helpers.py``. Every test in this folder gets the ``integration`` marker.

Other brokers, one each per session, for the interop tests: ``rabbitmq_broker`` (a
RabbitMQ node of its own with the MQTT plugin, MQTT 3.1.1 only, user and password
required; ``tests/rabbitmq_helpers.py``) and ``amqtt_broker`` (the pure-Python amqtt
broker with its default settings, MQTT 3.1.1 only). Both start on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge_agent.simulators import CampusSim
from edge_agent.tools.localbroker import BrokerError, LocalBroker, amqtt_available
from tests.rabbitmq_helpers import INSTALL_HINT, RabbitMqBroker, find_rabbitmq_server
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


@pytest.fixture(scope="session")
def rabbitmq_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMqBroker]:
    """RabbitMQ with its MQTT plugin, started once per session and stopped at its end."""
    if find_rabbitmq_server() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    broker = RabbitMqBroker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start RabbitMQ: {err}", pytrace=False)
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def amqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The embedded amqtt broker (the demo's fallback) with its default settings."""
    if not amqtt_available():
        pytest.fail(
            "the interop tests need amqtt: pip install -e '.[demo]' (scripts/test does)",
            pytrace=False,
        )
    broker = LocalBroker(workdir=tmp_path_factory.mktemp("amqtt"), backend="amqtt")
    broker.start()
    yield broker
    broker.close()
