"""The ISA-18.2 alarm lifecycle of the gateway's own alarms."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.alarms import AlarmBook, AlarmError
from edge_agent.envelope import Lane


class Sink:
    def __init__(self) -> None:
        self.put: list[dict[str, Any]] = []
        self.retained: dict[str, dict[str, Any] | None] = {}

    def add(self, lane: Lane, topic: str, **kw: Any) -> None:
        assert lane is Lane.ALARM
        assert topic == "campus/s/g/alarms"
        self.put.append(kw["data"])

    def retain(self, topic: str, payload: dict[str, Any] | None) -> None:
        self.retained[topic] = payload


@pytest.fixture
def book() -> tuple[AlarmBook, Sink]:
    sink = Sink()
    return AlarmBook("campus/s/g", sink.add, sink.retain, language="en"), sink


def test_cleared_while_unacked_stays_until_acked(book: tuple[AlarmBook, Sink]) -> None:
    alarms, sink = book
    a = alarms.raise_("outbox_disk_full", "gw1", "major", en="disk full", zh="磁盘已满")
    assert alarms.raise_("outbox_disk_full", "gw1", "major", en="x", zh="x") is a  # no duplicate
    topic = f"campus/s/g/alarms/active/{a.alarm_id}"
    assert sink.retained[topic]["state"] == "active_unacked"
    alarms.clear("outbox_disk_full", "gw1")
    assert sink.retained[topic]["state"] == "cleared_unacked"  # still visible
    result = alarms.ack(a.alarm_id, "guard-1")
    assert result["state"] == "cleared"
    assert sink.retained[topic] is None  # empty retained payload removes it
    assert [d["state"] for d in sink.put] == ["active_unacked", "cleared_unacked", "cleared"]
    assert sink.put[-1]["acked_by"] == "guard-1"
    assert set(sink.put[0]) >= {
        "alarm_id",
        "rule",
        "device",
        "severity",
        "state",
        "value",
        "threshold",
        "message",
        "raised_at",
        "acked_by",
        "snapshot",
    }
    with pytest.raises(AlarmError):
        alarms.ack(a.alarm_id, "guard-1")


def test_acked_then_cleared_goes_away(book: tuple[AlarmBook, Sink]) -> None:
    alarms, sink = book
    a = alarms.raise_("r", "gw1", "minor", en="e", zh="z")
    alarms.ack(a.alarm_id, "ops")
    alarms.clear("r", "gw1")
    assert [d["state"] for d in sink.put] == ["active_unacked", "active_acked", "cleared"]
    assert not alarms.alarms


def test_shelve_expires(book: tuple[AlarmBook, Sink]) -> None:
    alarms, _ = book
    a = alarms.raise_("r", "gw1", "warning", en="e", zh="中文")
    alarms.shelve(a.alarm_id, "ops", 5)
    assert a.state == "shelved"
    alarms.tick(now=a.shelved_until - 1)
    assert a.state == "shelved"
    alarms.tick(now=a.shelved_until + 1)
    assert a.state == "active_unacked"
    with pytest.raises(AlarmError):
        alarms.shelve(a.alarm_id, "ops", 0)
    with pytest.raises(AlarmError):
        alarms.ack("nope", "ops")


def test_message_language_follows_the_site() -> None:
    sink = Sink()
    zh = AlarmBook("campus/s/g", sink.add, sink.retain, language="zh")
    zh.raise_("r", "gw1", "minor", en="disk full", zh="磁盘已满")
    assert sink.put[0]["message"] == "磁盘已满"
