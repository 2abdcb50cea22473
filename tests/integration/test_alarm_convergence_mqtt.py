"""An ack converges (issue 10, part 2), end to end through a real mosquitto: a guard
acknowledges on the console while the uplink is down, the platform (which saw the
alarm raised) sends its own ``alarm_ack`` once the link is back. The platform sees one
``active_acked`` transition, the group chat hears of it once, the retained topic says
``active_acked`` and the platform's ack is answered ``ok`` with who acknowledged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.supervisor import Agent
from tests.e2e.helpers import PersistentSubscriber
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber, publish
from tests.notify_helpers import Receiver

pytestmark = pytest.mark.integration

ROOT = "campus/ack-school/gw1"


def make_agent(tmp_path: Path, broker: MqttBroker) -> Agent:
    cfg: dict[str, Any] = {
        "site": {"id": "ack-school", "gateway_id": "gw1", "language": "en"},
        "mqtt": {"host": broker.host, "port": broker.port, "protocol": broker.protocol},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "notify": {
            "robots": [
                {
                    "id": "guards",
                    "kind": "feishu",
                    "url": "${ROBOT_URL}",
                    "secret": "${ROBOT_SECRET}",
                    # the guards' chat hears of acknowledgements too
                    "states": ["active_unacked", "active_acked", "cleared_unacked"],
                }
            ]
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return Agent(load_config(path), path)


async def until(pred: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


def alarm_msgs(platform: PersistentSubscriber) -> list[dict[str, Any]]:
    return [
        json.loads(p)["data"] for _t, topic, p in platform.messages if topic == f"{ROOT}/alarms"
    ]


async def test_an_ack_given_on_the_console_while_the_uplink_was_down_converges(
    tmp_path: Path, persistent_mqtt_broker: MqttBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = persistent_mqtt_broker
    rx = Receiver("feishu", "fs-secret")
    await rx.start()
    monkeypatch.setenv("ROBOT_URL", rx.url)
    monkeypatch.setenv("ROBOT_SECRET", "fs-secret")
    platform = await asyncio.to_thread(PersistentSubscriber, broker, f"{ROOT}/#")
    agent = make_agent(tmp_path, broker)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        alarm = agent.alarms.raise_(
            "door_held_open", "b1-gate", "major", en="East gate held open", zh="东门未关"
        )
        await until(lambda: len(rx.texts) == 1)
        await asyncio.to_thread(
            platform.wait, lambda _m: len(alarm_msgs(platform)) == 1, 15, "the alarm"
        )

        await asyncio.to_thread(broker.stop)
        await until(lambda: not agent.publisher.connected.is_set())
        local = agent.alarms.ack(alarm.alarm_id, "guard-1", origin="console 127.0.0.1")
        assert local["changed"] is True
        await until(lambda: len(rx.texts) == 2)  # the robot does not need the uplink

        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(agent.publisher.connected.wait(), 15)
        await asyncio.to_thread(
            platform.wait, lambda _m: len(alarm_msgs(platform)) == 2, 15, "the local ack"
        )
        # the platform, which only saw the alarm raised, acknowledges it too
        request = {"request_id": "plat-1", "alarm_id": alarm.alarm_id, "by": "duty-office"}
        await asyncio.to_thread(publish, broker, f"{ROOT}/cmd/alarm_ack", json.dumps(request))

        def answered(msgs: list[tuple[float, str, bytes]]) -> bool:
            return any(t == f"{ROOT}/cmd_result/plat-1" for _x, t, _p in msgs)

        await asyncio.to_thread(platform.wait, answered, 15, "the answer to alarm_ack")
        answer = next(
            json.loads(p) for _x, t, p in platform.messages if t == f"{ROOT}/cmd_result/plat-1"
        )
        assert answer["ok"] is True, answer
        assert answer["result"] == {
            "alarm_id": alarm.alarm_id,
            "state": "active_acked",
            "acked_by": "guard-1",
            "changed": False,
        }
        # A later alarm: alarms go out in seq order, so once it is here any transition
        # the platform's ack might have made would be here too (no timed wait).
        agent.alarms.raise_("fire_input", "b2-fire", "major", en="B2 fire input", zh="B2 火警")
        await asyncio.to_thread(
            platform.wait,
            lambda _m: any(d["rule"] == "fire_input" for d in alarm_msgs(platform)),
            15,
            "the later alarm",
        )
        await until(lambda: len(rx.texts) == 3)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await asyncio.to_thread(platform.close)
        await rx.stop()

    ours = [d for d in alarm_msgs(platform) if d["alarm_id"] == alarm.alarm_id]
    assert [(d["state"], d["acked_by"]) for d in ours] == [
        ("active_unacked", None),
        ("active_acked", "guard-1"),
    ]
    # the robot: raised, acknowledged, then the later alarm; never the ack twice
    assert len(rx.texts) == 3
    assert sum("East gate held open" in t for t in rx.texts) == 2
    retained = [
        json.loads(p)
        for _x, t, p in platform.messages
        if t == f"{ROOT}/alarms/active/{alarm.alarm_id}" and p
    ]
    assert retained[-1]["state"] == "active_acked"
    # and the retained topic as a newcomer (the console of another office) finds it
    with mqtt_subscriber(broker, f"{ROOT}/alarms/active/{alarm.alarm_id}") as late:
        msg = await asyncio.to_thread(late.wait_for)
    assert msg.retain
    assert msg.json()["state"] == "active_acked"
    audit = [(e["action"], e["by"], e["origin"], e["changed"]) for e in agent.alarms.audit()]
    assert ("ack", "duty-office", "mqtt request_id=plat-1", False) in audit
    assert ("ack", "guard-1", "console 127.0.0.1", True) in audit


async def test_an_alarm_finished_on_the_console_during_an_outage_leaves_the_broker_too(
    tmp_path: Path, persistent_mqtt_broker: MqttBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cleared before anyone acknowledged it, then acknowledged on the console while the
    uplink is down: once the link is back the retained topic is removed at the broker as
    well, so the platform does not show a finished alarm as open for ever."""
    broker = persistent_mqtt_broker
    rx = Receiver("feishu", "fs-secret")
    await rx.start()
    monkeypatch.setenv("ROBOT_URL", rx.url)
    monkeypatch.setenv("ROBOT_SECRET", "fs-secret")
    platform = await asyncio.to_thread(PersistentSubscriber, broker, f"{ROOT}/#")
    agent = make_agent(tmp_path, broker)
    task = asyncio.create_task(agent.run())
    topic = ""

    def retained_payloads() -> list[bytes]:
        return [p for _x, t, p in platform.messages if t == topic]

    try:
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        alarm = agent.alarms.raise_("door_forced", "b1-gate", "critical", en="forced", zh="强行")
        agent.alarms.clear("door_forced", "b1-gate")  # cleared_unacked: stays visible
        topic = f"{ROOT}/alarms/active/{alarm.alarm_id}"
        await asyncio.to_thread(
            platform.wait, lambda _m: len(retained_payloads()) == 2, 15, "the retained states"
        )
        await asyncio.to_thread(broker.stop)
        await until(lambda: not agent.publisher.connected.is_set())
        assert agent.alarms.ack(alarm.alarm_id, "guard-1", origin="console 127.0.0.1")["state"] == (
            "cleared"
        )
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(
            platform.wait,
            lambda _m: b"" in retained_payloads(),
            15,
            "the removal of the retained topic",
        )
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await asyncio.to_thread(platform.close)
        await rx.stop()
