"""Door inputs end to end (issue 9 item 4): a simulated Modbus DI module (Waveshare IO 8CH
map, read with function 02) -> the agent's poll loop -> door logic -> outbox -> a real
mosquitto. A door opened with no grant gives ``door_forced`` on the contact device's
events topic; one opened after a granted card gives only ``door_opened`` / ``door_closed``;
the fire relay gives a critical ``digital_input``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent import registry
from edge_agent.config.loader import load_config
from edge_agent.simulators import DiModuleSim
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber
from tests.push_fixture_driver import KIND, RecordDevice, install

pytestmark = pytest.mark.integration

ROOT = "campus/door-school/gw1"
EVENTS = f"{ROOT}/events/b1-di"


@pytest.fixture
def push_kind() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    install()
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def door_events(sub: Any) -> list[dict[str, Any]]:
    return [check_envelope(m.payload, "event", "b1-di") for m in sub.messages if m.topic == EVENTS]


def of_type(type_: str) -> Any:
    def match(m: Received) -> bool:
        return m.topic == EVENTS and m.json().get("type") == type_

    return match


def agent_config(
    tmp_path: Path, broker: MqttBroker, sim_port: int, reader_port: int, framer: str = "socket"
) -> Path:
    cfg = {
        "site": {"id": "door-school", "gateway_id": "gw1"},
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "devices": [
            {
                "id": "b1-di",
                "kind": "modbus",
                "profile": "waveshare_io8",
                "host": "127.0.0.1",
                "port": sim_port,
                "framer": framer,
                "unit": 1,
                "timeout_s": 0.1,
                "retries": 0,
            },
            {"id": "ctrl", "kind": KIND, "port": reader_port},
        ],
        "doors": {
            "doors": [
                {
                    "id": "b1-east",
                    "contact": {"device": "b1-di", "point": "di1"},
                    "grants": [{"device": "ctrl", "door": 1}],
                    "flap_s": 0,
                }
            ],
            "inputs": [{"device": "b1-di", "point": "di7", "input": "fire", "active_when": 0}],
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_forced_and_granted_openings_reach_the_broker(
    tmp_path: Path, mqtt_broker: MqttBroker, push_kind: None
) -> None:
    reader = RecordDevice(0)  # the card controller: a device the config can name
    async with DiModuleSim({"b1-di": 1}) as sim:
        path = agent_config(tmp_path, mqtt_broker, sim.port, reader.port)
        agent = Agent(load_config(path), path)
        task = asyncio.create_task(agent.run())
        try:
            with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
                telemetry = f"{ROOT}/telemetry/b1-di"
                first = await asyncio.to_thread(sub.wait_for, lambda m: m.topic == telemetry, 15)
                assert first.json()["data"]["di1"] is True  # FC 02 read: the door is closed

                # 1. opened with no grant: door_forced
                sim.set_input("b1-di", "di1", 0)
                await asyncio.to_thread(sub.wait_for, of_type("door_forced"), 15)
                sim.set_input("b1-di", "di1", 1)
                await asyncio.to_thread(sub.wait_for, of_type("door_closed"), 15)

                # 2. a granted card of the controller's door 1, then the door opens
                agent.emitter.event(
                    "ctrl",
                    "card_read",
                    {
                        "card": "6154410",
                        "reader": "east-in",
                        "door": 1,
                        "result": "granted",
                        "context": "access",
                        "direction": "in",
                    },
                )
                await asyncio.to_thread(
                    sub.wait_for, lambda m: m.topic == f"{ROOT}/events/ctrl", 15
                )
                sim.set_input("b1-di", "di1", 0)
                await asyncio.to_thread(sub.wait_for_count, 2, of_type("door_opened"), 15)
                sim.set_input("b1-di", "di1", 1)
                await asyncio.to_thread(sub.wait_for_count, 2, of_type("door_closed"), 15)

                # 3. the fire panel's relay drops (NC contact, 0 = alarm)
                sim.set_input("b1-di", "di7", 0)
                await asyncio.to_thread(sub.wait_for, of_type("digital_input"), 15)
                events = door_events(sub)

                # 4. twenty polls with nothing new, then one change: only the change is sent
                loop = agent.loops["b1-di"]
                reads = loop.health.reads
                async with asyncio.timeout(30):
                    while loop.health.reads < reads + 20:
                        await asyncio.sleep(0.05)
                sim.set_input("b1-di", "di8", 0)
                await asyncio.to_thread(
                    sub.wait_for, lambda m: m.topic == telemetry and not m.json()["data"]["di8"], 15
                )
                readings = [m.json()["data"] for m in sub.messages if m.topic == telemetry]
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
            reader.close()
    assert [(r["di1"], r["di7"], r["di8"]) for r in readings] == [
        (True, True, True),
        (False, True, True),  # door opened (forced)
        (True, True, True),
        (False, True, True),  # door opened (granted)
        (True, True, True),
        (True, False, True),  # fire
        (True, False, False),  # di8, after 20 polls that were not sent
    ]
    events.sort(key=lambda e: e["seq"])
    assert [e["type"] for e in events] == [
        "door_opened",
        "door_forced",
        "door_closed",
        "door_opened",
        "door_closed",
        "digital_input",
    ]
    forced = events[1]["data"]
    assert forced["door"] == "b1-east"
    assert forced["input"] == {"device": "b1-di", "point": "di1"}
    assert forced["last_grant"] is None
    granted = events[3]["data"]
    assert granted["granted"] is True
    assert granted["granted_by"]["device"] == "ctrl"
    fire = events[5]["data"]
    assert (fire["input"], fire["active"], fire["severity"]) == ("fire", True, "critical")


@pytest.mark.parametrize("framer", ["socket", "rtu"], ids=["modbus-tcp", "rtu-over-tcp"])
async def test_a_door_open_across_an_agent_restart_is_not_reported_twice(
    tmp_path: Path, mqtt_broker: MqttBroker, push_kind: None, framer: str
) -> None:
    """The door's state is in the outbox database: after a restart the agent knows the
    door was open (no second door_opened, no second door_forced) and its door_closed
    counts the time from the real opening. Over Modbus TCP and over RTU frames (the
    framing of the RS-485 line, carried by a serial server)."""
    reader = RecordDevice(0)
    telemetry = f"{ROOT}/telemetry/b1-di"
    async with DiModuleSim({"b1-di": 1}, framer=framer) as sim:
        path = agent_config(tmp_path, mqtt_broker, sim.port, reader.port, framer)
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
            agent = Agent(load_config(path), path)
            task = asyncio.create_task(agent.run())
            try:
                await asyncio.to_thread(sub.wait_for, lambda m: m.topic == telemetry, 15)
                sim.set_input("b1-di", "di1", 0)
                await asyncio.to_thread(sub.wait_for, of_type("door_forced"), 15)
            finally:
                agent.stop()
                await asyncio.wait_for(task, 15)
            seen = len([m for m in sub.messages if m.topic == telemetry])
            agent = Agent(load_config(path), path)
            task = asyncio.create_task(agent.run())
            try:
                # the first reading after the restart (the door still open), then it closes
                await asyncio.to_thread(
                    sub.wait_for_count, seen + 1, lambda m: m.topic == telemetry, 15
                )
                sim.set_input("b1-di", "di1", 1)
                await asyncio.to_thread(sub.wait_for, of_type("door_closed"), 15)
                events = door_events(sub)
            finally:
                agent.stop()
                await asyncio.wait_for(task, 15)
                reader.close()
    events.sort(key=lambda e: e["seq"])
    assert [e["type"] for e in events] == ["door_opened", "door_forced", "door_closed"]
    closed = events[2]["data"]
    assert "at_start" not in closed
    opened_ts = events[0]["ts"]
    assert closed["open_s"] > 0
    assert opened_ts < events[2]["ts"]


async def test_the_di_simulator_answers_function_02_as_the_manual_says() -> None:
    """Frames built by hand from the Modbus spec (not with the driver's encoder): read
    discrete inputs 0-7 of unit 1 -> one data byte, DI1 in bit 0."""
    async with DiModuleSim({"b1-di": 1}, initial=0) as sim:
        sim.set_input("b1-di", "di1", 1)
        sim.set_input("b1-di", "di3", 1)
        sim.set_input("b1-di", "di8", 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            # MBAP: tid 0x0102, protocol 0, length 6, unit 1 | fc 2, start 0, count 8
            writer.write(bytes.fromhex("0102 0000 0006 01 02 0000 0008"))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readexactly(10), 5)
        finally:
            writer.close()
            await writer.wait_closed()
    assert answer == bytes.fromhex("0102 0000 0004 01 02 01") + bytes([0b1000_0101])


async def test_the_di_simulator_answers_the_manuals_rtu_frame() -> None:
    """The read command printed in the Waveshare manual, byte for byte, over RTU framing
    (as a serial server in transparent mode carries it)."""
    async with DiModuleSim({"b1-di": 1}, framer="rtu", initial=0) as sim:
        sim.set_input("b1-di", "di2", 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            writer.write(bytes.fromhex("01 02 00 00 00 08 79 CC"))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readexactly(6), 5)
        finally:
            writer.close()
            await writer.wait_closed()
    assert answer[:4] == bytes.fromhex("01 02 01 02")  # unit, fc, 1 byte, DI2 = bit 1
    # CRC-16/MODBUS of the answer, computed here from the spec, low byte first
    crc = 0xFFFF
    for byte in answer[:4]:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    assert answer[4:] == crc.to_bytes(2, "little")
