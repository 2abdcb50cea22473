"""Card numbers never leave in clear (issue 8 item 3, contract `card_read`): every event's
``card`` becomes ``"h:" + 16 hex`` = HMAC-SHA256(site secret, normalised number)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.loader import load_config
from edge_agent.driver import Event
from edge_agent.envelope import Lane
from edge_agent.pipeline import Message, Pipeline, Pseudonymiser
from edge_agent.supervisor import Agent

SECRET = "3b6e1f0c9a7d4e2b8c5a1f6d0e9b7c3a"  # as a site's credentials file holds it


def expected(secret: str, number: str) -> str:
    """The contract's pseudonym, computed here from the hmac module alone."""
    mac = hmac.new(secret.encode("utf-8"), number.encode("utf-8"), hashlib.sha256)
    return "h:" + mac.hexdigest()[:16]


class Sink:
    def __init__(self) -> None:
        self.out: list[Message] = []

    def put(self, msg: Message) -> None:
        self.out.append(msg)

    async def commit(self, device: str, msgs: Any, cursor: str | None) -> None:
        self.out.extend(msgs)


def pipeline(key: str | None, raw: bool = False) -> tuple[Pipeline, Sink]:
    sink = Sink()
    return Pipeline([Pseudonymiser(key.encode() if key else None, raw=raw)], sink), sink


def card_read(card: Any) -> dict[str, Any]:
    return {"card": card, "reader": "r1", "context": "access", "direction": "in"}


def test_a_card_number_becomes_the_contracts_pseudonym() -> None:
    pipe, sink = pipeline(SECRET)
    pipe.event("b1-door-1", "card_read", card_read("12345678"))
    (msg,) = sink.out
    assert msg.data["card"] == expected(SECRET, "12345678")
    assert len(msg.data["card"]) == 18
    assert msg.data["reader"] == "r1"  # the rest of the event is untouched


@pytest.mark.parametrize(
    ("given", "number"),
    [
        ("0012345678", "12345678"),  # a Wiegand reader's zero-padded number
        (12345678, "12345678"),  # a driver that parsed it as an integer
        (" 1234 5678\n", "12345678"),
        ("0a12b", "0A12B"),  # text that is no number (a PIN with letters) keeps its zero
        ("0", "0"),
    ],
)
def test_one_card_one_pseudonym_whatever_the_reader_writes(given: Any, number: str) -> None:
    pipe, sink = pipeline(SECRET)
    pipe.event("door", "card_read", card_read(given))
    assert sink.out[0].data["card"] == expected(SECRET, number)


def test_same_secret_same_pseudonym_on_every_gateway_of_a_site() -> None:
    gw1, out1 = pipeline(SECRET)
    gw2, out2 = pipeline(SECRET)
    other_site, out3 = pipeline("another-school-secret")
    for pipe in (gw1, gw2, other_site):
        pipe.event("door", "card_read", card_read("87654321"))
    assert out1.out[0].data["card"] == out2.out[0].data["card"] == expected(SECRET, "87654321")
    assert out3.out[0].data["card"] != out1.out[0].data["card"]


def test_every_event_with_a_card_is_pseudonymised_and_nothing_else_changes() -> None:
    pipe, sink = pipeline(SECRET)
    pipe.event("door", "door_forced", {"door": 1, "card": "555"})
    pipe.event("door", "door_opened", {"door": 1})
    pipe.telemetry("meter", {"card": 7, "kwh": 1.5})  # a metric named card is no card number
    pipe.event("door", "card_read", card_read(None))  # no card (a PIN entry): stays null
    assert sink.out[0].data == {"door": 1, "card": expected(SECRET, "555")}
    assert sink.out[1].data == {"door": 1}
    assert sink.out[2].data == {"card": 7, "kwh": 1.5}
    assert sink.out[3].data["card"] is None


def test_the_drivers_dict_is_not_changed() -> None:
    pipe, _ = pipeline(SECRET)
    data = card_read("12345678")
    pipe.event("door", "card_read", data)
    assert data["card"] == "12345678"


def test_raw_card_ids_only_where_the_site_opts_in() -> None:
    pipe, sink = pipeline(SECRET, raw=True)
    pipe.event("door", "card_read", card_read("0012345678"))
    assert sink.out[0].data["card"] == "12345678"


def test_without_secret_and_opt_in_the_number_is_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe, sink = pipeline(None)
    with caplog.at_level(logging.WARNING):
        for n in ("12345678", "23456789", "34567890"):
            pipe.event("b1-door-1", "card_read", card_read(n))
    assert [m.data["card"] for m in sink.out] == [None, None, None]
    assert [m.data["reader"] for m in sink.out] == ["r1"] * 3  # the event itself still goes
    (record,) = [r for r in caplog.records if r.name.startswith("edge_agent.pipeline")]
    text = record.getMessage()
    assert "site.pseudonym_secret" in text
    assert "未设置" in text  # and in Chinese for the installer
    assert "12345678" not in caplog.text  # the log is no way out either


def test_a_card_field_that_is_no_number_goes_out_as_null(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe, sink = pipeline(SECRET)
    with caplog.at_level(logging.WARNING):
        pipe.event("door", "card_read", card_read({"raw": "12345678"}))
        pipe.event("door", "card_read", card_read(1234.5))
    assert [m.data["card"] for m in sink.out] == [None, None]
    assert len(caplog.records) == 1
    assert "12345678" not in caplog.text


async def test_the_agent_pseudonymises_with_the_configured_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built from the config by the supervisor: the poll loop's emitter and a push link's
    commit both pass the pseudonymiser before the outbox."""
    monkeypatch.setenv("EDGE_TEST_PSEUDONYM", SECRET)
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1, pseudonym_secret: '${EDGE_TEST_PSEUDONYM}'}\n"
        "mqtt: {host: 127.0.0.1}\n"
        "clock: {sync_check: none}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n"
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    await agent.outbox.open()
    try:
        agent.emitter.event("door", "card_read", card_read("0012345678"))
        await agent.outbox.flush()
        # the same path a push device's link takes (OutboxLink.commit -> Pipeline.commit)
        commit = agent.emitter.commit("door", [Event("card_read", card_read(99))], cursor="1")
        task = asyncio.ensure_future(commit)
        while not task.done():
            await agent.outbox.flush()
            await asyncio.sleep(0)
        await task
        rows = await agent.outbox.fetch(Lane.EVENT, 0, 10**9, 100)
        health = (await agent.health())["pipeline"]
    finally:
        await agent.outbox.close()
    cards = [json.loads(r.payload)["data"]["card"] for r in rows]
    assert cards == [expected(SECRET, "12345678"), expected(SECRET, "99")]
    assert agent.outbox.cursor("door") == "1"
    assert (health["cards_pseudonymised"], health["cards_nulled"]) == (2, 0)


async def test_health_tells_the_platform_that_cards_go_out_as_null(tmp_path: Path) -> None:
    """The log line stays on the gateway; the platform sees the count in ROOT/health."""
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        "mqtt: {host: 127.0.0.1}\n"
        "clock: {sync_check: none}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n"
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    await agent.outbox.open()
    try:
        for n in ("1", "2", "3"):
            agent.emitter.event("door", "card_read", card_read(n))
        health = (await agent.health())["pipeline"]
    finally:
        await agent.outbox.close()
    assert health == {
        "stage_errors": 0,
        "tap_errors": 0,
        "cards_pseudonymised": 0,
        "cards_raw": 0,
        "cards_nulled": 3,
    }
