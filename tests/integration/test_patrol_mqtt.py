"""Guard patrol through the whole agent and a real mosquitto: two push readers (the
udpfixture kind, one UDP socket) are the checkpoints of a route; a missed checkpoint
is an alarm on ``ROOT/alarms`` and retained on ``ROOT/alarms/active/{id}``; the next
complete round clears it, across a restart of the agent in the middle of that round.

The agent's wall clock is injected (the school's evening, Asia/Shanghai), so nothing
waits for a real deadline."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent import registry
from edge_agent.config.loader import load_config
from edge_agent.driver import Event
from edge_agent.hub import Addr
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber
from tests.push_fixture_driver import UDP_KIND, UdpFixtureDriver, UdpFixtureHub

pytestmark = pytest.mark.integration

SITE = "patrol-school"
SECRET = "a-school-secret"
#: the guard's card 12345678 as card_read carries it (HMAC-SHA256 from the contract)
GUARD = "h:" + hmac.new(SECRET.encode(), b"12345678", hashlib.sha256).hexdigest()[:16]
ROOT = f"campus/{SITE}/gw1"


def at(text: str) -> float:
    return (
        datetime.strptime(text, "%Y-%m-%d %H:%M")
        .replace(tzinfo=ZoneInfo("Asia/Shanghai"))
        .timestamp()
    )


class SchoolClock:
    """The agent's clock: a wall clock the test sets, synchronised."""

    def __init__(self, wall: float) -> None:
        self.now = wall

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return time.monotonic()

    def synced(self) -> bool:
        return True


class CardReaderDriver(UdpFixtureDriver):
    """The udpfixture device as a card reader: ``<serial> <index> <card>`` is a read
    that the reader refused (a guard's card opens no door at a patrol point)."""

    def _parse(
        self, batch: list[tuple[bytes, Addr]], cursor: str | None
    ) -> tuple[list[Event], int]:
        events, last = super()._parse(batch, cursor)
        reads = [
            Event(
                "card_read",
                {
                    "card": str(e.data["value"]),
                    "reader": "1",
                    "context": "access",
                    "direction": None,
                    "result": "denied",
                },
            )
            for e in events
        ]
        return reads, last


@pytest.fixture
def card_kind() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    registry.BUILTIN[UDP_KIND] = f"{__name__}:CardReaderDriver"
    registry._cache = None
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def write_config(tmp_path: Path, broker: MqttBroker) -> Path:
    cfg = {
        "site": {
            "id": SITE,
            "gateway_id": "gw1",
            "timezone": "Asia/Shanghai",
            "language": "en",
            "pseudonym_secret": "${PATROL_TEST_SECRET}",
        },
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        UDP_KIND: {"bind": "127.0.0.1:0"},
        "devices": [
            {"id": "gate-n", "kind": UDP_KIND, "serial": 11},
            {"id": "b2-lab", "kind": UDP_KIND, "serial": 22},
        ],
        "patrol": {
            "cards": [GUARD],
            "checkpoints": [
                {"id": "north", "device": "gate-n", "name": "North gate"},
                {"id": "lab", "device": "b2-lab", "name": "Lab"},
            ],
            "routes": [
                {
                    "id": "night",
                    "checkpoints": ["north", "lab"],
                    "start_times": ["22:00", "23:00"],
                    "round_min": 30,
                    "tolerance_min": 5,
                }
            ],
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Running:
    """One run of the agent, and a socket to send reads to its UDP hub."""

    def __init__(self, path: Path, clock: SchoolClock) -> None:
        self.agent = Agent(load_config(path), path, clock=clock)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.agent.run())
        hub = self.agent.hubs[UDP_KIND]
        assert isinstance(hub, UdpFixtureHub)
        async with asyncio.timeout(10):
            await hub.listening.wait()
        self.address = hub.address
        return self

    def swipe(self, line: bytes) -> None:
        assert self.address is not None
        self.sender.sendto(line, self.address)

    async def __aexit__(self, *exc: object) -> None:
        self.agent.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)
        self.sender.close()


def alarms(sub: Any) -> list[dict[str, Any]]:
    return [
        check_envelope(m.payload, "alarm")["data"]
        for m in sub.messages
        if m.topic == f"{ROOT}/alarms"
    ]


async def wait(sub: Any, count: int, pred: Any) -> list[Received]:
    return await asyncio.to_thread(sub.wait_for_count, count, pred, 15)


def is_topic(topic: str) -> Any:
    return lambda m: m.topic == topic


def alarm_in(state: str, device: str) -> Any:
    def match(m: Received) -> bool:
        if m.topic != f"{ROOT}/alarms":
            return False
        data = json.loads(m.payload)["data"]
        return data["state"] == state and data["device"] == device

    return match


async def test_a_missed_checkpoint_is_an_alarm_cleared_by_the_next_round(
    tmp_path: Path,
    mqtt_broker: MqttBroker,
    card_kind: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATROL_TEST_SECRET", SECRET)
    path = write_config(tmp_path, mqtt_broker)
    clock = SchoolClock(at("2026-11-30 21:58"))
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
        async with Running(path, clock) as run:
            clock.now = at("2026-11-30 22:05")
            run.swipe(b"11 1 12345678")  # the guard at the north gate, in time
            run.swipe(b"22 1 87654321")  # a student's card at the lab: no visit
            [read] = await wait(sub, 1, is_topic(f"{ROOT}/events/gate-n"))
            await wait(sub, 1, is_topic(f"{ROOT}/events/b2-lab"))
            data = check_envelope(read.payload, "event", "gate-n")["data"]
            assert data["card"] == GUARD  # pseudonymised before the patrol saw it
            clock.now = at("2026-11-30 22:36")  # past the deadline, 22:35
            [raised] = await wait(sub, 1, alarm_in("active_unacked", "b2-lab"))
            alarm = check_envelope(raised.payload, "alarm", "b2-lab")["data"]
            assert alarm["rule"] == "patrol_missed"
            assert alarm["severity"] == "major"
            assert alarm["value"] == "lab"
            assert alarm["message"] == (
                "Guard patrol: checkpoint Lab of route night was not visited by 22:35 "
                "(round of 22:00)."
            )
            active = f"{ROOT}/alarms/active/{alarm['alarm_id']}"
            [retained] = await wait(sub, 1, is_topic(active))
            assert json.loads(retained.payload)["state"] == "active_unacked"
            # the next round: the north gate, then the agent restarts mid-round
            clock.now = at("2026-11-30 23:04")
            run.swipe(b"11 2 12345678")
            await wait(sub, 2, is_topic(f"{ROOT}/events/gate-n"))
        async with Running(path, clock) as run:
            clock.now = at("2026-11-30 23:12")
            run.swipe(b"22 2 12345678")  # the lab: with the north gate before the restart,
            [cleared] = await wait(sub, 1, alarm_in("cleared_unacked", "b2-lab"))
            assert json.loads(cleared.payload)["data"]["alarm_id"] == alarm["alarm_id"]
            # still visible on its retained topic until someone acknowledges it
            await wait(
                sub,
                1,
                lambda m: m.topic == active and json.loads(m.payload)["state"] == "cleared_unacked",
            )
    # one alarm in all: the north gate was visited in time in both rounds
    assert {a["device"] for a in alarms(sub)} == {"b2-lab"}
    assert [a["state"] for a in alarms(sub)] == ["active_unacked", "cleared_unacked"]
