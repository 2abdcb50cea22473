"""The ISA-18.2 alarm lifecycle of the gateway's own alarms."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edge_agent.alarms.lifecycle import ALARM_STATE, AlarmBook, AlarmError, OutboxAlarmStore
from edge_agent.envelope import Lane
from edge_agent.outbox.store import Outbox
from tests.outbox_helpers import fill_disk


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


async def test_open_alarms_survive_a_restart(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    sink = Sink()
    before = AlarmBook(
        "campus/s/g", sink.add, sink.retain, language="en", store=OutboxAlarmStore(ob)
    )
    corrupt = before.raise_("outbox_corrupt", "gw1", "critical", en="corrupt", zh="损坏")
    before.clear("outbox_corrupt", "gw1")  # a one-off: cleared_unacked until acknowledged
    full = before.raise_("outbox_disk_full", "gw1", "major", en="full", zh="满")
    shelved = before.raise_("r", "d1", "minor", en="e", zh="z")
    before.shelve(shelved.alarm_id, "ops", 30)
    gone = before.raise_("r", "d2", "minor", en="e", zh="z")
    before.ack(gone.alarm_id, "ops")
    before.clear("r", "d2")  # acknowledged and cleared: finished, not saved

    await ob.close()
    ob = Outbox(tmp_path / "outbox.db")  # the agent restarts
    await ob.open()
    sink2 = Sink()
    after = AlarmBook(
        "campus/s/g", sink2.add, sink2.retain, language="en", store=OutboxAlarmStore(ob)
    )
    assert after.load() == 3
    assert set(after.alarms) == {corrupt.alarm_id, full.alarm_id, shelved.alarm_id}
    assert after.alarms[corrupt.alarm_id].state == "cleared_unacked"
    # retained topics are set again; the shelve goes on (tests below: for how long)
    topic = f"campus/s/g/alarms/active/{full.alarm_id}"
    assert sink2.retained[topic]["state"] == "active_unacked"
    assert after.alarms[shelved.alarm_id].state == "shelved"
    assert sink2.retained[f"campus/s/g/alarms/active/{shelved.alarm_id}"]["state"] == "shelved"
    assert sink2.put == []  # a restart is no transition
    # the alarm raised before the restart can be acknowledged after it
    assert after.ack(corrupt.alarm_id, "ops")["state"] == "cleared"
    # a condition still there is not raised twice
    assert (
        after.raise_("outbox_disk_full", "gw1", "major", en="x", zh="x")
        is after.alarms[full.alarm_id]
    )
    await ob.close()


async def test_unreadable_saved_alarms_are_ignored(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    ob.put_state(*ALARM_STATE, "{not json")
    await ob.flush()
    sink = Sink()
    book = AlarmBook("campus/s/g", sink.add, sink.retain, store=OutboxAlarmStore(ob))
    assert book.load() == 0
    book.raise_("r", "d", "minor", en="e", zh="z")  # and it saves a good state again
    await ob.flush()
    assert AlarmBook("x", sink.add, sink.retain, store=OutboxAlarmStore(ob)).load() == 1
    await ob.close()


async def test_alarm_state_is_saved_in_the_same_transaction_as_its_messages(
    tmp_path: Path,
) -> None:
    """Before issue 8 the book was a JSON file written apart from the alarm messages; now
    a commit holds both or neither (here: a full disk holds both back, then writes both)."""
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    book = AlarmBook("campus/s/g", ob.put, lambda *_: None, store=OutboxAlarmStore(ob))
    await fill_disk(ob.db)
    ob.put_state("pad", "pad", "x" * 20000)  # the disk cannot take this commit
    alarm = book.raise_("r", "d", "major", en="e", zh="z")
    await ob.flush()
    assert ob.mode == "memory"
    with sqlite3.connect(tmp_path / "outbox.db") as other:
        assert other.execute("SELECT COUNT(*) FROM device_state").fetchone() == (0,)
        assert other.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    await ob.db.execute("PRAGMA max_page_count=1073741823")
    await ob.flush()
    with sqlite3.connect(tmp_path / "outbox.db") as other:
        saved = other.execute(
            "SELECT value FROM device_state WHERE device=? AND key=?", ALARM_STATE
        ).fetchone()
        (message,) = other.execute("SELECT payload FROM outbox").fetchone()
    assert alarm.alarm_id in saved[0]
    assert alarm.alarm_id in bytes(message).decode()  # the message and the book, together
    assert ob.mode == "disk"
    await ob.close()


async def test_the_json_file_of_earlier_versions_is_migrated_once(tmp_path: Path) -> None:
    legacy = tmp_path / "outbox.db.alarms.json"
    sink = Sink()
    old = AlarmBook("campus/s/g", sink.add, sink.retain, store=_JsonFile(legacy))
    kept = old.raise_("outbox_corrupt", "gw1", "critical", en="corrupt", zh="损坏")

    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    book = AlarmBook("campus/s/g", sink.add, sink.retain, store=OutboxAlarmStore(ob, legacy))
    assert book.load() == 1
    assert legacy.exists()  # kept until the database surely has it
    await ob.close()

    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    book = AlarmBook("campus/s/g", sink.add, sink.retain, store=OutboxAlarmStore(ob, legacy))
    assert book.load() == 1
    assert set(book.alarms) == {kept.alarm_id}
    assert not legacy.exists()
    await ob.close()


class _JsonFile:
    """The alarm file as versions before issue 8 wrote it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        return self.path.read_text(encoding="utf-8") if self.path.exists() else None

    def save(self, text: str) -> None:
        self.path.write_text(text, encoding="utf-8")


def test_listeners_hear_every_transition_and_a_failing_one_stops_nothing(
    book: tuple[AlarmBook, Sink],
) -> None:
    alarms, sink = book
    heard: list[tuple[str, str]] = []

    def broken(data: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    alarms.add_listener(broken)
    alarms.add_listener(lambda d: heard.append((d["alarm_id"], d["state"])))
    a = alarms.raise_("outbox_disk_full", "gw1", "major", en="disk full", zh="磁盘已满")
    alarms.ack(a.alarm_id, "guard")
    alarms.clear("outbox_disk_full", "gw1")
    assert heard == [
        (a.alarm_id, "active_unacked"),
        (a.alarm_id, "active_acked"),
        (a.alarm_id, "cleared"),
    ]
    assert [d["state"] for d in sink.put] == ["active_unacked", "active_acked", "cleared"]
