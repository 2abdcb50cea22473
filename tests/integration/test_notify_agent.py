"""Robots wired into the agent: the supervisor runs one task per robot next to the
publisher, an alarm reaches both the broker and the group chat, the robots stop cleanly
with the agent (leak check), and a restart does not send an alarm twice."""

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
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber
from tests.notify_helpers import Receiver

pytestmark = pytest.mark.integration

ROOT = "campus/notify-school/gw1"


def make_agent(tmp_path: Path, broker: MqttBroker) -> Agent:
    cfg: dict[str, Any] = {
        "site": {"id": "notify-school", "gateway_id": "gw1", "language": "zh", "name": "实验中学"},
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
                    "keyword": "告警",
                }
            ]
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return Agent(load_config(path), path)


async def until(pred: Callable[[], bool]) -> None:
    async with asyncio.timeout(15):
        while not pred():
            await asyncio.sleep(0.02)


async def test_alarm_goes_to_broker_and_robot_once_across_a_restart(
    tmp_path: Path, mqtt_broker: MqttBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = Receiver("feishu", "fs-secret")
    await rx.start()
    monkeypatch.setenv("ROBOT_URL", rx.url)
    monkeypatch.setenv("ROBOT_SECRET", "fs-secret")
    try:
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/alarms") as sub:
            agent = make_agent(tmp_path, mqtt_broker)
            task = asyncio.create_task(agent.run())
            await until(lambda: agent.publisher.stats.connects > 0)
            assert [t.get_name() for t in asyncio.all_tasks() if t.get_name() == "notify:guards"]
            agent.alarms.raise_(
                "door_forced", "b1-gate", "critical", en="East gate forced", zh="东门被强行打开"
            )
            await until(lambda: len(rx.texts) == 1)
            msg = await asyncio.to_thread(sub.wait_for)
            assert json.loads(msg.payload)["data"]["message"] == "东门被强行打开"
            agent.stop()
            await asyncio.wait_for(task, 15)

            agent = make_agent(tmp_path, mqtt_broker)  # the agent restarts
            task = asyncio.create_task(agent.run())
            await until(lambda: agent.publisher.stats.connects > 0)
            agent.alarms.raise_("fire", "b2", "critical", en="Fire alarm B2", zh="B2 火警")
            await until(lambda: len(rx.texts) == 2)
            agent.stop()
            await asyncio.wait_for(task, 15)
        assert rx.bad_signatures == 0
        assert rx.texts[0].splitlines()[0] == "告警 [实验中学] 【紧急·告警】东门被强行打开"
        assert rx.texts[1].splitlines()[0] == "告警 [实验中学] 【紧急·告警】B2 火警"
    finally:
        await rx.stop()
