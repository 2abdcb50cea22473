"""A push device in the agent (issue 8): the supervisor builds its DeviceLink, publishes
its meta and state like a polled device's, and restarts a crashed push driver with the
same backoff, reporting it offline meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent import registry
from edge_agent.config.loader import load_config
from edge_agent.driver import DeviceLink
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber
from tests.push_fixture_driver import KIND, PushFixtureDriver, RecordDevice

pytestmark = pytest.mark.integration

ROOT = "campus/push-school/gw1"


class CrashingOnce(PushFixtureDriver):
    """The fixture driver with a bug that strikes on its first run only."""

    runs = 0

    async def run(self, link: DeviceLink) -> None:
        type(self).runs += 1
        if type(self).runs == 1:
            raise RuntimeError("driver bug on first run")
        await super().run(link)


@pytest.fixture
def crashing_kind() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    registry.BUILTIN[KIND] = f"{__name__}:CrashingOnce"
    registry._cache = None
    CrashingOnce.runs = 0
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def on(topic: str) -> Any:
    return lambda m: m.topic == topic


async def test_a_push_driver_is_supervised_like_a_polled_one(
    tmp_path: Path, mqtt_broker: MqttBroker, crashing_kind: None
) -> None:
    device = RecordDevice(30)
    cfg = {
        "site": {"id": "push-school", "gateway_id": "gw1"},
        "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "devices": [{"id": "door1", "kind": KIND, "port": device.port, "retry_s": 0.1}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    agent = Agent(load_config(path), path)
    task = asyncio.create_task(agent.run())
    try:
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
            state = f"{ROOT}/devices/door1/state"

            def wait(n: int, pred: Any, timeout: float = 15) -> list[Received]:
                return sub.wait_for_count(n, pred, timeout)

            meta = (await asyncio.to_thread(wait, 1, on(f"{ROOT}/devices/door1/meta")))[0]
            assert json.loads(meta.payload)["kind"] == KIND
            events = await asyncio.to_thread(wait, 30, on(f"{ROOT}/events/door1"))
            states = [json.loads(m.payload) for m in sub.messages if m.topic == state]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        device.close()
    # the crash was reported on the device's state topic, then the restart went online
    assert [s["state"] for s in states][:2] == ["offline", "online"], states
    assert "driver bug on first run" in states[0]["last_error"]
    assert set(states[0]) == {"state", "since", "last_error"}
    records = [check_envelope(m.payload, "event", "door1")["data"]["record"] for m in events]
    assert sorted(records) == list(range(1, 31))
    assert CrashingOnce.runs == 2
