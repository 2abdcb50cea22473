"""The agent through brokers that speak only MQTT 3.1.1: RabbitMQ's MQTT plugin and amqtt.

Both refuse an MQTT 5 CONNECT (RabbitMQ 3.x closes the connection without a word, amqtt
answers "unsupported protocol version"). The agent is configured as it ships,
``protocol: 5``, and must get there by itself: it connects with 3.1.1, says so in its
log and on ``ROOT/health``, telemetry arrives on the contract topics, and a command gets
its answer. RabbitMQ also wants a user name and password, and maps ``.`` in topics to
``/`` (contract 1.1 keeps dots out of every topic level).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.loader import load_config
from edge_agent.simulators.campus import CampusSim
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.e2e.helpers import agent_config
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber, publish

SITE = "interop-school"
ROOT = f"campus/{SITE}/gw1"
PASSWORD_ENV = "EDGE_TEST_INTEROP_MQTT_PASSWORD"


@pytest.fixture(params=["rabbitmq", "amqtt"])
def broker(request: pytest.FixtureRequest) -> MqttBroker:
    """Each 3.1.1-only broker in turn (session fixtures: each starts once)."""
    found: MqttBroker = request.getfixturevalue(f"{request.param}_broker")
    return found


@pytest.fixture
async def sim() -> AsyncIterator[CampusSim]:
    async with CampusSim(classrooms=1, meters=1, speed=0, seed=5) as s:
        yield s


async def wait(sub: Any, what: str, pred: Any, timeout: float = 30.0) -> Received:
    try:
        got: list[Received] = await asyncio.to_thread(sub.wait_for_count, 1, pred, timeout)
    except pytest.fail.Exception as err:
        pytest.fail(f"no {what}: {err}", pytrace=False)
    return got[0]


async def test_agent_falls_back_to_311_and_works_through_the_broker(
    tmp_path: Path,
    broker: MqttBroker,
    sim: CampusSim,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, "edge_agent.mqtt.publisher")
    mqtt: dict[str, Any] = {"protocol": "5", "health_interval_s": 1, "reconnect_max_s": 1}
    username = getattr(broker, "username", None)
    if username:
        monkeypatch.setenv(PASSWORD_ENV, getattr(broker, "password", ""))
        mqtt.update(username=username, password=f"${{{PASSWORD_ENV}}}")
    cfg_path = agent_config(
        tmp_path,
        broker,
        sim.layout,
        site={"id": SITE},
        device={"interval_s": 0.5, "timeout_s": 0.3},
        mqtt=mqtt,
        outbox={"commit_interval_ms": 50},
    )
    cfg = load_config(cfg_path)
    assert cfg.mqtt.protocol == "5"
    with mqtt_subscriber(broker, f"{ROOT}/#", protocol=broker.protocol) as sub:
        agent = Agent(cfg, cfg_path)
        task = asyncio.create_task(agent.run())
        try:
            # the version in use is on ROOT/health
            health = await wait(
                sub,
                "health naming the protocol",
                lambda m: (
                    m.topic == f"{ROOT}/health" and json.loads(m.payload)["publish"]["protocol"]
                ),
            )
            assert json.loads(health.payload)["publish"]["protocol"] == "3.1.1"
            # ... and in the log, without a warning for the expected fallback
            assert "does not accept MQTT 5" in caplog.text
            assert f"MQTT connected to {broker.host}:{broker.port} with MQTT 3.1.1" in caplog.text
            publisher_warnings = [
                r.getMessage()
                for r in caplog.records
                if r.name == "edge_agent.mqtt.publisher" and r.levelno >= logging.WARNING
            ]
            assert publisher_warnings == []
            status = await wait(sub, "status", lambda m: m.topic == f"{ROOT}/status")
            assert json.loads(status.payload)["state"] == "online"

            # telemetry of every device on the contract topic, as valid envelopes
            for device in sim.device_ids:
                msg = await wait(
                    sub,
                    f"telemetry of {device}",
                    lambda m, d=device: m.topic == f"{ROOT}/telemetry/{d}",
                )
                check_envelope(msg.payload, "telemetry", device=device)
                meta = await wait(
                    sub,
                    f"meta of {device}",
                    lambda m, d=device: m.topic == f"{ROOT}/devices/{d}/meta",
                )
                assert json.loads(meta.payload)["kind"] == "modbus"

            # a command goes in and its answer comes out (contract 1.1: no dot in the name,
            # which RabbitMQ would deliver as cmd/agent/ping)
            publish(
                broker,
                f"{ROOT}/cmd/agent_ping",
                json.dumps({"request_id": "interop-1"}),
                protocol=broker.protocol,
            )
            answer = await wait(
                sub, "command result", lambda m: m.topic == f"{ROOT}/cmd_result/interop-1"
            )
            body = json.loads(answer.payload)
            assert body["ok"] is True, body
            assert body["result"]["pong"] is True
        finally:
            agent.stop()
            await asyncio.wait_for(task, 30)
