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
import io
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.loader import load_config
from edge_agent.simulators.campus import CampusSim
from edge_agent.supervisor import Agent
from edge_agent.tools.bench import _Subscriber
from edge_agent.tools.tail.model import ContractState, run_console
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


async def test_tail_falls_back_to_311_and_shows_what_the_broker_delivers(
    broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # `edge-agent tail` as it ships (MQTT 5) against a broker that refuses MQTT 5: it must
    # get there by itself, like the agent, and say which version it uses.
    caplog.set_level(logging.INFO, "edge_agent.tools.tail.model")
    root = f"campus/tail-{os.urandom(3).hex()}/gw1"
    topic = f"{root}/telemetry/b1-r101-air"
    payload = json.dumps({"v": 1, "msg_id": "t1", "epoch": "ep1", "seq": 1,
                          "ts": "2026-11-29T08:00:00.000Z", "device": "b1-r101-air",
                          "kind": "telemetry", "historical": False,
                          "data": {"co2": 812}, "quality": "good"}).encode()  # fmt: skip
    out = io.StringIO()
    state = ContractState(root)
    console = asyncio.create_task(
        run_console(
            broker.host,
            broker.port,
            root,
            protocol="5",
            out=out,
            state=state,
            username=getattr(broker, "username", None),
            password=getattr(broker, "password", None),
        )
    )
    try:

        async def keep_publishing() -> None:
            # Live messages only reach it once it has subscribed: repeat until one did.
            while "b1-r101-air" not in state.devices:
                await asyncio.to_thread(publish, broker, topic, payload, 1, False, broker.protocol)
                await asyncio.sleep(0.2)

        await asyncio.wait_for(keep_publishing(), 30)
    finally:
        console.cancel()
        with pytest.raises(asyncio.CancelledError):
            await console
    text = out.getvalue()
    assert state.devices["b1-r101-air"].values["co2"].value == 812
    assert "co2=812" in text
    assert "broker connected (MQTT 3.1.1)" in text
    # the refused MQTT 5 attempt is the expected way there, not a disconnection
    assert "broker disconnected" not in text
    assert "does not accept MQTT 5" in caplog.text


def test_bench_subscriber_falls_back_to_311(amqtt_broker: MqttBroker) -> None:
    # bench's subscribers are the agent's client wrapper too: MQTT 5 refused, 3.1.1 works.
    got = threading.Event()
    topic = f"campus/bench-{os.urandom(3).hex()}/gw1/status"

    def on_message(t: str, payload: bytes, retain: bool, now: float) -> None:
        if t == topic and payload == b"hello":
            got.set()

    sub = _Subscriber(amqtt_broker.host, amqtt_broker.port, [topic], on_message, protocol="5")
    sub.start(timeout_s=30)
    try:
        publish(amqtt_broker, topic, b"hello", protocol=amqtt_broker.protocol)
        assert got.wait(10), "the bench subscriber received nothing"
    finally:
        sub.stop()
