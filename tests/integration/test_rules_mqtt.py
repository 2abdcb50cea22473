"""Alarm rules through the whole agent and a real mosquitto: a simulated classroom
sensor (Modbus TCP) reads CO2 above a site rule's limit -> an alarm on ``ROOT/alarms``
(retained on ``ROOT/alarms/active/{id}``); it clears once the reading drops below the
limit minus the deadband, not before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.simulators.campus import CampusSim
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.e2e.helpers import agent_config
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber

pytestmark = pytest.mark.integration

ROOT = "campus/rules-school/gw1"


@pytest.fixture
async def sim() -> AsyncIterator[CampusSim]:
    async with CampusSim(classrooms=1, meters=0, speed=0, seed=7) as s:
        yield s


def alarm(state: str) -> Any:
    def match(m: Received) -> bool:
        if m.topic != f"{ROOT}/alarms":
            return False
        return bool(json.loads(m.payload)["data"]["state"] == state)

    return match


async def wait(sub: Any, count: int, pred: Any) -> list[Received]:
    return await asyncio.to_thread(sub.wait_for_count, count, pred, 15)


async def test_a_reading_above_a_rule_raises_and_clears_below_the_deadband(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    air = next(d for d in sim.device_ids if d.endswith("-air"))
    (tmp_path / "site-rules.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "id": "co2_test",
                        "metric": "co2",
                        "above": 2500,
                        "deadband": 300,
                        "severity": "minor",
                        "message": {"en": "{device}: CO2 {value} ppm", "zh": "{device}：{value}"},
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    path = agent_config(
        tmp_path,
        mqtt_broker,
        sim.layout,
        site={"id": "rules-school", "language": "en"},
        device={"interval_s": 0.3, "timeout_s": 0.2},
        outbox={"commit_interval_ms": 50},
        rules={"default": False, "files": ["site-rules.yaml"]},
    )
    device = sim.device(air)
    device.written["co2"] = 1000.0
    agent = Agent(load_config(path), path)
    task = asyncio.create_task(agent.run())
    try:
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
            await wait(sub, 2, lambda m: m.topic == f"{ROOT}/telemetry/{air}")
            assert not [m for m in sub.messages if m.topic == f"{ROOT}/alarms"]
            device.written["co2"] = 3000.0
            raised = (await wait(sub, 1, alarm("active_unacked")))[0]
            data = check_envelope(raised.payload, "alarm")["data"]
            assert (data["rule"], data["device"], data["severity"]) == ("co2_test", air, "minor")
            assert (data["value"], data["threshold"]) == (3000, 2500)
            assert data["message"] == f"{air}: CO2 3000 ppm"
            retained = await wait(
                sub, 1, lambda m: m.topic == f"{ROOT}/alarms/active/{data['alarm_id']}"
            )
            assert json.loads(retained[0].payload)["state"] == "active_unacked"
            # below the limit but inside the deadband: several readings, still active
            device.written["co2"] = 2400.0
            seen = len(sub.messages)
            await wait(
                sub,
                3,
                lambda m: (
                    m.topic == f"{ROOT}/telemetry/{air}"
                    and sub.messages.index(m) >= seen
                    and json.loads(m.payload)["data"]["co2"] == 2400
                ),
            )
            assert not [m for m in sub.messages if alarm("cleared_unacked")(m)]
            device.written["co2"] = 2100.0
            cleared = (await wait(sub, 1, alarm("cleared_unacked")))[0]
            assert json.loads(cleared.payload)["data"]["alarm_id"] == data["alarm_id"]
            counts = (await agent.health())["rules"]
            assert (counts["rules_raised"], counts["rules_cleared"]) == (1, 1)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
