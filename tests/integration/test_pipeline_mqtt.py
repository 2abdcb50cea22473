"""A raw card number never reaches the broker (issue 8 item 3, contract `card_read`):
the agent runs with a push card reader and a real mosquitto, and nothing on ``ROOT/#``
(events, states, meta, status) holds a card number; with a site secret every card is
the contract's pseudonym, without one it is null."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent import registry
from edge_agent.config.loader import load_config
from edge_agent.driver import Event
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber
from tests.push_fixture_driver import KIND, PushFixtureDriver, RecordDevice

pytestmark = pytest.mark.integration

ROOT = "campus/card-school/gw1"
SECRET = "d41c9e07a5b38f62e1a0c7d95b24f8a3"
RECORDS = 20


def raw_card(index: int) -> str:
    """What the reader reports for record ``index``: zero-padded, as Wiegand readers do."""
    return f"00{7391446600 + index}"


PUT_CARD = "0073914466999"  # sent through the poll loop's emitter instead of a commit


class CardReader(PushFixtureDriver):
    """The fixture driver, its records turned into card reads."""

    def _parse(self, lines: list[bytes]) -> tuple[list[Event], int | None]:
        events, last = super()._parse(lines)
        return [
            Event(
                "card_read",
                {
                    "card": raw_card(e.data["record"]),
                    "reader": "r1",
                    "context": "access",
                    "direction": "in",
                    "result": "granted",
                    "record": e.data["record"],
                },
            )
            for e in events
        ], last


@pytest.fixture
def card_kind() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    registry.BUILTIN[KIND] = f"{__name__}:CardReader"
    registry._cache = None
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def pseudonym(number: str) -> str:
    mac = hmac.new(SECRET.encode(), number.lstrip("0").encode(), hashlib.sha256)
    return "h:" + mac.hexdigest()[:16]


@pytest.mark.parametrize("with_secret", [True, False], ids=["secret", "no-secret"])
async def test_no_raw_card_number_reaches_the_broker(
    tmp_path: Path,
    mqtt_broker: MqttBroker,
    card_kind: None,
    monkeypatch: pytest.MonkeyPatch,
    with_secret: bool,
) -> None:
    device = RecordDevice(RECORDS)
    site: dict[str, Any] = {"id": "card-school", "gateway_id": "gw1"}
    if with_secret:
        monkeypatch.setenv("EDGE_TEST_CARD_SECRET", SECRET)
        site["pseudonym_secret"] = "${EDGE_TEST_CARD_SECRET}"
    cfg = {
        "site": site,
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
            events = f"{ROOT}/events/door1"
            await asyncio.to_thread(sub.wait_for_count, RECORDS, lambda m: m.topic == events, 15)
            agent.emitter.event("door1", "card_read", {"card": PUT_CARD, "reader": "r2"})
            await asyncio.to_thread(
                sub.wait_for_count, RECORDS + 1, lambda m: m.topic == events, 15
            )
            everything = list(sub.messages)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        device.close()
    raw = [raw_card(i) for i in range(1, RECORDS + 1)] + [PUT_CARD]
    for msg in everything:
        for number in raw:
            assert number.lstrip("0").encode() not in msg.payload, (msg.topic, number)
    reads = [
        check_envelope(m.payload, "event", "door1")["data"]
        for m in everything
        if m.topic == f"{ROOT}/events/door1"
    ]
    by_record = {d["record"]: d["card"] for d in reads if "record" in d}
    assert sorted(by_record) == list(range(1, RECORDS + 1))
    (put,) = [d for d in reads if d["reader"] == "r2"]
    if with_secret:
        assert by_record == {i: pseudonym(raw_card(i)) for i in range(1, RECORDS + 1)}
        assert put["card"] == pseudonym(PUT_CARD)
    else:
        assert set(by_record.values()) == {None}
        assert put["card"] is None
    assert any(m.topic == f"{ROOT}/devices/door1/state" for m in everything)
    assert json.loads(next(m.payload for m in everything if m.topic.endswith("/meta")))
