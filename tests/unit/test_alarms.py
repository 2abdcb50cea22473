"""The ISA-18.2 alarm lifecycle of the gateway's own alarms."""

from __future__ import annotations

from pathlib import Path
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


def test_open_alarms_survive_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "outbox.db.alarms.json"
    sink = Sink()
    before = AlarmBook("campus/s/g", sink.add, sink.retain, language="en", store=store)
    corrupt = before.raise_("outbox_corrupt", "gw1", "critical", en="corrupt", zh="损坏")
    before.clear("outbox_corrupt", "gw1")  # a one-off: cleared_unacked until acknowledged
    full = before.raise_("outbox_disk_full", "gw1", "major", en="full", zh="满")
    shelved = before.raise_("r", "d1", "minor", en="e", zh="z")
    before.shelve(shelved.alarm_id, "ops", 30)
    gone = before.raise_("r", "d2", "minor", en="e", zh="z")
    before.ack(gone.alarm_id, "ops")
    before.clear("r", "d2")  # acknowledged and cleared: finished, not saved

    sink2 = Sink()  # the agent restarts
    after = AlarmBook("campus/s/g", sink2.add, sink2.retain, language="en", store=store)
    assert after.load() == 3
    assert set(after.alarms) == {corrupt.alarm_id, full.alarm_id, shelved.alarm_id}
    assert after.alarms[corrupt.alarm_id].state == "cleared_unacked"
    # retained topics are set again; the shelve ended with the restart
    topic = f"campus/s/g/alarms/active/{full.alarm_id}"
    assert sink2.retained[topic]["state"] == "active_unacked"
    assert after.alarms[shelved.alarm_id].state == "active_unacked"
    assert [d["state"] for d in sink2.put] == ["active_unacked"]  # the unshelve
    # the alarm raised before the restart can be acknowledged after it
    assert after.ack(corrupt.alarm_id, "ops")["state"] == "cleared"
    # a condition still there is not raised twice
    assert (
        after.raise_("outbox_disk_full", "gw1", "major", en="x", zh="x")
        is after.alarms[full.alarm_id]
    )


def test_unreadable_saved_alarms_are_ignored(tmp_path: Path) -> None:
    store = tmp_path / "alarms.json"
    store.write_text("{not json")
    sink = Sink()
    book = AlarmBook("campus/s/g", sink.add, sink.retain, store=store)
    assert book.load() == 0
    book.raise_("r", "d", "minor", en="e", zh="z")  # and it writes a good file again
    assert AlarmBook("x", sink.add, sink.retain, store=store).load() == 1
