"""The rest of the ISA-18.2 lifecycle (issue 10, part 2): acks and shelves that converge,
the audit log, shelves across a restart, out of service and suppression by schedule.
Every test runs on an injected clock (no sleeps); the book is the real one, and where
the database matters, the real outbox."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_agent.alarms.lifecycle import AlarmBook, AlarmError, OutboxAlarmStore
from edge_agent.alarms.rules import FLOOD_N, RuleEngine
from edge_agent.commands import CommandRouter, alarm_ack_handler
from edge_agent.config.rules import RuleFile, RuleSet
from edge_agent.envelope import Lane
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline.base import Message
from tests.outbox_helpers import fill_disk

ROOT = "campus/s/g"
SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock:
    """Wall and monotonic time that the test moves; a restart gets a new monotonic base."""

    def __init__(self, wall: float = 1_800_000_000.0, mono: float = 1000.0) -> None:
        self.w = wall
        self.m = mono

    def wall(self) -> float:
        return self.w

    def mono(self) -> float:
        return self.m

    def advance(self, seconds: float) -> None:
        self.w += seconds
        self.m += seconds


class Sink:
    def __init__(self) -> None:
        self.put: list[dict[str, Any]] = []
        self.retained: dict[str, dict[str, Any] | None] = {}

    def add(self, lane: Lane, topic: str, **kw: Any) -> None:
        assert lane is Lane.ALARM
        self.put.append(kw["data"])

    def retain(self, topic: str, payload: dict[str, Any] | None) -> None:
        self.retained[topic] = payload

    def states(self) -> list[str]:
        return [d["state"] for d in self.put]

    def active(self, alarm_id: str) -> dict[str, Any] | None:
        return self.retained.get(f"{ROOT}/alarms/active/{alarm_id}")


def new_book(
    clock: Clock, store: Any = None, **kw: Any
) -> tuple[AlarmBook, Sink, list[dict[str, Any]]]:
    sink = Sink()
    book = AlarmBook(ROOT, sink.add, sink.retain, "en", store, clock=clock, **kw)
    heard: list[dict[str, Any]] = []
    book.add_listener(heard.append)
    return book, sink, heard


def co2(book: AlarmBook, device: str = "r101-air", origin: str = "rules") -> Any:
    return book.raise_("co2_high", device, "minor", en="CO2 high", zh="CO2 高", origin=origin)


# -- 1. convergence ------------------------------------------------------------------


def test_an_ack_for_an_acknowledged_alarm_answers_its_state_and_changes_nothing() -> None:
    book, sink, heard = new_book(Clock())
    a = co2(book)
    first = book.ack(a.alarm_id, "guard-1", origin="console 10.0.0.5")
    assert first == {
        "alarm_id": a.alarm_id,
        "state": "active_acked",
        "acked_by": "guard-1",
        "changed": True,
    }
    # the uplink was down; the platform's alarm_ack arrives now
    again = book.ack(a.alarm_id, "duty-office", origin="mqtt request_id=r1")
    assert again == {
        "alarm_id": a.alarm_id,
        "state": "active_acked",
        "acked_by": "guard-1",
        "changed": False,
    }
    assert sink.states() == ["active_unacked", "active_acked"]  # no second transition
    assert [h["state"] for h in heard] == ["active_unacked", "active_acked"]
    assert sink.active(a.alarm_id)["acked_by"] == "guard-1"  # type: ignore[index]
    with pytest.raises(AlarmError, match="no active alarm"):
        book.ack("co2-high-never-raised", "duty-office")


async def test_a_late_ack_of_a_finished_alarm_converges_also_after_a_restart(
    tmp_path: Path,
) -> None:
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    clock = Clock()
    book, sink, _ = new_book(clock, OutboxAlarmStore(ob))
    a = co2(book)
    book.clear("co2_high", "r101-air", origin="rules")
    book.ack(a.alarm_id, "guard-1", origin="console 10.0.0.5")  # finished: cleared
    assert sink.active(a.alarm_id) is None
    assert a.alarm_id not in book.alarms
    late = book.ack(a.alarm_id, "duty-office", origin="mqtt request_id=r2")
    assert (late["state"], late["acked_by"], late["changed"]) == ("cleared", "guard-1", False)
    assert sink.states() == ["active_unacked", "cleared_unacked", "cleared"]
    await ob.close()

    ob = Outbox(tmp_path / "outbox.db")  # restart
    await ob.open()
    after, sink2, _ = new_book(clock, OutboxAlarmStore(ob))
    after.load()
    late = after.ack(a.alarm_id, "duty-office", origin="mqtt request_id=r3")
    assert (late["state"], late["acked_by"], late["changed"]) == ("cleared", "guard-1", False)
    assert sink2.put == []
    with pytest.raises(AlarmError):
        after.ack("co2-high-r101-air-unknown1", "x")
    await ob.close()


def test_a_shelve_for_a_shelved_alarm_answers_the_running_shelve() -> None:
    clock = Clock()
    book, sink, _ = new_book(clock)
    a = co2(book)
    first = book.shelve(a.alarm_id, "guard-1", 30, origin="console 10.0.0.5")
    clock.advance(60)
    again = book.shelve(a.alarm_id, "duty-office", 60, origin="mqtt request_id=s1")
    assert again["changed"] is False
    assert again["until"] == first["until"]
    assert again["acked_by"] == "guard-1"
    assert sink.states() == ["active_unacked", "shelved"]
    book.tick(clock.mono() + 29 * 60)
    assert sink.states() == ["active_unacked", "shelved", "active_unacked"]  # 30 min, not 61


# -- 2. the audit log -----------------------------------------------------------------


def test_the_audit_says_who_did_what_when_and_from_where() -> None:
    clock = Clock()
    book, _, _ = new_book(clock)
    a = co2(book)
    clock.advance(5)
    book.ack(a.alarm_id, "guard-1", origin="console 10.0.0.5")
    clock.advance(5)
    book.ack(a.alarm_id, "duty-office", origin="mqtt request_id=r1")
    book.shelve(a.alarm_id, "guard-2", 10, origin="console 10.0.0.6")
    clock.advance(10 * 60)
    book.tick()
    log = book.audit(limit=10)
    assert [(e["action"], e["by"], e["origin"], e["changed"]) for e in log] == [
        ("shelve_expired", None, "shelve expiry", True),
        ("shelve", "guard-2", "console 10.0.0.6", True),
        ("ack", "duty-office", "mqtt request_id=r1", False),
        ("ack", "guard-1", "console 10.0.0.5", True),
        ("raised", None, "rules", True),
    ]
    assert log[3]["state"] == "active_acked"
    assert log[3]["alarm_id"] == a.alarm_id
    assert log[3]["ts"] == datetime.fromtimestamp(1_800_000_005, tz=ZoneInfo("UTC")).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    assert log[0]["state"] == "active_unacked"
    assert book.audit(limit=2) == log[:2]
    assert [e["action"] for e in book.audit(alarm_id="nope")] == []


async def test_the_audit_is_in_the_outbox_with_the_alarm_message_and_bounded(
    tmp_path: Path,
) -> None:
    ob = Outbox(tmp_path / "outbox.db", audit_max_rows=5, audit_max_days=1)
    await ob.open()
    book, _, _ = new_book(Clock(), OutboxAlarmStore(ob))
    book._put = ob.put  # the alarm messages into the same outbox
    await fill_disk(ob.db)
    ob.put_state("pad", "pad", "x" * 20000)  # the disk cannot take this commit
    a = co2(book)
    await ob.flush()
    assert ob.mode == "memory"
    with sqlite3.connect(tmp_path / "outbox.db") as other:
        assert other.execute("SELECT COUNT(*) FROM alarm_audit").fetchone() == (0,)
        assert other.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    await ob.db.execute("PRAGMA max_page_count=1073741823")
    await ob.flush()
    with sqlite3.connect(tmp_path / "outbox.db") as other:  # both, in one commit
        assert other.execute("SELECT alarm_id, action FROM alarm_audit").fetchall() == [
            (a.alarm_id, "raised")
        ]
        assert other.execute("SELECT COUNT(*) FROM outbox").fetchone() == (1,)
        # an old entry goes with the next commit (age), then the count bounds the rest
        other.execute("UPDATE alarm_audit SET ts=?", (time.time() - 2 * 86400,))
    book.ack(a.alarm_id, "guard-1", origin="console 10.0.0.5")
    await ob.flush()
    with sqlite3.connect(tmp_path / "outbox.db") as other:
        assert other.execute("SELECT action FROM alarm_audit").fetchall() == [("ack",)]
    for i in range(8):
        book.ack(a.alarm_id, f"guard-{i}", origin="mqtt")
    await ob.flush()
    with sqlite3.connect(tmp_path / "outbox.db") as other:
        rows = other.execute("SELECT entry FROM alarm_audit ORDER BY id").fetchall()
    assert len(rows) == 5
    assert '"by":"guard-7"' in rows[-1][0]
    await ob.close()

    ob = Outbox(tmp_path / "outbox.db")  # restart: the book's audit() reads them back
    await ob.open()
    after, _, _ = new_book(Clock(), OutboxAlarmStore(ob))
    after.load()
    assert [e["by"] for e in after.audit(limit=2)] == ["guard-7", "guard-6"]
    await ob.close()


async def test_an_mqtt_ack_is_audited_with_its_request_id_and_sender() -> None:
    book, _, _ = new_book(Clock())
    a = co2(book)
    answers: list[dict[str, Any]] = []
    router = CommandRouter(lambda _t, ans, _c: answers.append(ans), root=ROOT)
    router.register("alarm_ack", alarm_ack_handler(book.ack))
    payload = b'{"request_id": "r-17", "alarm_id": "%s", "by": "duty", "sender": "platform-2"}'
    await router.handle("alarm_ack", payload % a.alarm_id.encode(), None, None)
    await router.handle(
        "alarm_ack",
        b'{"request_id": "r-18", "alarm_id": "%s", "by": "duty"}' % a.alarm_id.encode(),
        None,
        None,
    )
    assert [x["ok"] for x in answers] == [True, True]
    assert answers[1]["result"] == {
        "alarm_id": a.alarm_id,
        "state": "active_acked",
        "acked_by": "duty",
        "changed": False,
    }
    origins = [e["origin"] for e in book.audit() if e["action"] == "ack"]
    assert origins == ["mqtt request_id=r-18", "mqtt request_id=r-17 sender='platform-2'"]


# -- 3. shelve across a restart ---------------------------------------------------------


async def _restart_with_shelve(tmp_path: Path, down_s: float, wall_step: float = 0.0) -> Any:
    """Shelve for 30 min, stop, start ``down_s`` later (wall clock also stepped by
    ``wall_step``) on a new monotonic base; returns (book, sink, clock, alarm_id)."""
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    clock = Clock()
    book, _, _ = new_book(clock, OutboxAlarmStore(ob))
    a = co2(book)
    book.shelve(a.alarm_id, "guard-1", 30, origin="console 10.0.0.5")
    await ob.close()
    clock = Clock(wall=clock.wall() + down_s + wall_step, mono=5.0)  # a reboot
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    after, sink, _ = new_book(clock, OutboxAlarmStore(ob))
    after.load()
    return ob, after, sink, clock, a.alarm_id


async def test_a_shelve_goes_on_after_a_restart_for_what_remains(tmp_path: Path) -> None:
    ob, book, sink, clock, alarm_id = await _restart_with_shelve(tmp_path, down_s=10 * 60)
    assert book.alarms[alarm_id].state == "shelved"
    assert sink.active(alarm_id)["state"] == "shelved"  # type: ignore[index]
    book.tick(clock.mono() + 20 * 60 - 1)
    assert sink.put == []
    book.tick(clock.mono() + 20 * 60)
    assert sink.states() == ["active_unacked"]
    expired = book.audit(limit=1)[0]
    assert (expired["action"], expired["origin"]) == ("shelve_expired", "shelve expiry")
    await ob.close()


async def test_a_shelve_that_ended_while_the_agent_was_down_ends_at_start(
    tmp_path: Path,
) -> None:
    ob, book, sink, _, alarm_id = await _restart_with_shelve(tmp_path, down_s=31 * 60)
    assert book.alarms[alarm_id].state == "active_unacked"
    assert sink.states() == ["active_unacked"]
    assert book.audit(limit=1)[0]["action"] == "shelve_expired"
    await ob.close()


async def test_a_clock_set_back_during_the_restart_never_stretches_a_shelve(
    tmp_path: Path,
) -> None:
    ob, book, sink, clock, _ = await _restart_with_shelve(tmp_path, down_s=60, wall_step=-3600)
    book.tick(clock.mono() + 30 * 60)  # at most the 30 minutes it was given
    assert sink.states() == ["active_unacked"]
    await ob.close()


def test_a_condition_that_clears_and_returns_while_shelved_is_not_annunciated() -> None:
    clock = Clock()
    book, sink, _ = new_book(clock)
    a = co2(book)
    book.shelve(a.alarm_id, "guard-1", 30)
    book.clear("co2_high", "r101-air", origin="rules")
    assert co2(book) is a  # back while shelved: the same, still shelved alarm
    book.clear("co2_high", "r101-air", origin="rules")
    assert sink.states() == ["active_unacked", "shelved"]
    clock.advance(30 * 60)
    book.tick()
    assert sink.states() == ["active_unacked", "shelved", "cleared"]  # gone at the end
    assert sink.active(a.alarm_id) is None


# -- 3. out of service ------------------------------------------------------------------


def test_out_of_service_hides_the_alarm_holds_the_condition_and_reraises_it() -> None:
    clock = Clock()
    book, sink, heard = new_book(clock)
    a = co2(book)
    other = co2(book, device="r102-air")
    book.take_out_of_service("co2_high", "tech-1", device="r101-*", origin="console 10.0.0.5")
    # the open alarm leaves view: a cleared transition that says why
    assert sink.put[-1]["alarm_id"] == a.alarm_id
    assert (sink.put[-1]["state"], sink.put[-1]["suppressed"]) == ("cleared", "out_of_service")
    assert heard[-1]["suppressed"] == "out_of_service"
    assert sink.active(a.alarm_id) is None
    assert book.find("co2_high", "r102-air") is other  # another device: untouched
    [listed] = book.out_of_view()
    assert (listed["rule"], listed["device"], listed["reason"], listed["by"]) == (
        "co2_high",
        "r101-*",
        "out_of_service",
        "tech-1",
    )
    assert "suppressed" not in sink.put[0]  # normal alarms carry no such field
    n = len(sink.put)
    co2(book)  # still true, or again: not raised
    assert len(sink.put) == n
    clock.advance(60)
    book.return_to_service("co2_high", "tech-1", device="r101-*", origin="console 10.0.0.5")
    back = sink.put[-1]
    assert (back["state"], back["device"]) == ("active_unacked", "r101-air")
    assert back["alarm_id"] != a.alarm_id
    assert "suppressed" not in back
    actions = [(e["action"], e["by"]) for e in reversed(book.audit(limit=6))]
    assert actions[-4:] == [
        ("out_of_service", "tech-1"),
        ("hidden", "tech-1"),
        ("in_service", "tech-1"),
        ("raised", None),
    ]


def test_back_in_service_raises_nothing_when_the_condition_went_away() -> None:
    book, sink, _ = new_book(Clock())
    book.take_out_of_service("co2_high", "tech-1")
    co2(book)
    book.clear("co2_high", "r101-air", origin="rules")
    book.return_to_service("co2_high", "tech-1")
    assert sink.put == []
    # a late ack of an alarm that left view converges as well
    a = co2(book)
    book.take_out_of_service("co2_high", "tech-1")
    assert book.ack(a.alarm_id, "duty")["changed"] is False


async def test_out_of_service_from_the_config_and_by_a_person_across_a_restart(
    tmp_path: Path,
) -> None:
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    clock = Clock()
    book, sink, _ = new_book(clock, OutboxAlarmStore(ob), out_of_service=["door_held_open"])
    book.raise_("door_held_open", "gate", "major", en="held", zh="未关")
    assert sink.put == []
    with pytest.raises(AlarmError, match="config"):
        book.return_to_service("door_held_open", "tech-1")
    a = co2(book)
    book.take_out_of_service("co2_high", "tech-1", origin="console 10.0.0.5")
    await ob.close()

    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    after, sink2, _ = new_book(clock, OutboxAlarmStore(ob))  # the config entry was removed
    after.load()
    assert a.alarm_id not in after.alarms
    co2(after)
    after.raise_("door_held_open", "gate", "major", en="held", zh="未关")
    assert [(d["rule"], d["state"]) for d in sink2.put] == [("door_held_open", "active_unacked")]
    await ob.close()


# -- 3. suppressed by schedule ----------------------------------------------------------


def at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI).timestamp()


def test_a_suppress_schedule_holds_alarms_and_brings_back_what_is_still_true() -> None:
    parsed = RuleFile.model_validate(
        {
            "schedules": {"maintenance": {"days": ["mon"], "times": ["10:00-11:00"]}},
            "rules": [
                {"id": "co2_high", "metric": "co2", "above": 1500, "suppress": "maintenance"}
            ],
        }
    )
    clock = Clock(wall=at("2026-11-30 09:50"))
    book, sink, _ = new_book(clock)
    engine = RuleEngine(
        RuleSet(parsed.rules, dict(parsed.schedules)), SHANGHAI, book, now=clock.wall
    )

    def read(value: float, device: str = "r101-air") -> None:
        engine.see(Message("telemetry", device, {"co2": value}, ts=clock.wall()))

    read(1600)  # before the window: annunciated
    assert sink.states() == ["active_unacked"]
    first = sink.put[0]["alarm_id"]
    clock.advance(15 * 60)  # 10:05, the window holds
    engine.tick()
    assert (sink.put[-1]["state"], sink.put[-1]["suppressed"]) == ("cleared", "schedule")
    read(1700, "r102-air")  # a new condition inside the window: held
    read(1700, "r103-air")
    read(1200, "r103-air")  # ... and one gone again before the window ends
    for _ in range(5):  # chattering inside the window would still be nobody's business
        read(1200, "r104-air")
        read(1700, "r104-air")
    assert len(sink.put) == 2
    clock.advance(60 * 60)  # 11:05: over
    engine.tick()
    back = {d["device"]: d for d in sink.put[2:]}
    assert set(back) == {"r101-air", "r102-air", "r104-air"}
    assert all(d["state"] == "active_unacked" for d in back.values())
    assert back["r101-air"]["alarm_id"] != first
    audit = [(e["action"], e["origin"]) for e in book.audit(limit=50)]
    assert ("suppressed", "rules: schedule maintenance") in audit
    assert ("unsuppressed", "rules: schedule maintenance") in audit


# -- 2. the audit log from the command line --------------------------------------------


async def test_edge_agent_alarms_audit_prints_the_log_while_the_agent_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.cli import main

    cfg = tmp_path / "agent.yaml"
    cfg.write_text("site: {id: s, gateway_id: g}\noutbox: {path: state/outbox.db}\n")
    assert main(["alarms", "audit", "-c", str(cfg)]) == 1  # no database yet: says so
    assert "no outbox database" in capsys.readouterr().err
    ob = Outbox(tmp_path / "state" / "outbox.db")
    await ob.open()
    book, _, _ = new_book(Clock(), OutboxAlarmStore(ob))
    a = co2(book)
    b = co2(book, device="r102-air")
    book.ack(a.alarm_id, "guard-1", origin="console 10.0.0.5")
    book.ack(a.alarm_id, "duty", origin="mqtt request_id=r9")
    book.take_out_of_service("co2_high", "tech-1", device="r102-air", origin="console 10.0.0.6")
    await ob.flush()  # the database stays open: the agent is running
    assert main(["alarms", "audit", "-c", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("2027-01-15T08:00:00.000Z  raised")
    assert (
        f"ack              {a.alarm_id}  active_acked  by guard-1  (console 10.0.0.5)" in lines[2]
    )
    assert lines[3].endswith("by duty  (mqtt request_id=r9)  [no change]")
    assert "out_of_service   co2_high@r102-air  by tech-1  (console 10.0.0.6)" in lines[4]
    assert main(["alarms", "audit", "-c", str(cfg), "--alarm", b.alarm_id, "--json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["state"]) for e in entries] == [
        ("raised", "active_unacked"),
        ("hidden", "cleared"),
    ]
    assert main(["alarms", "audit", "-c", str(cfg), "--limit", "1"]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    await ob.close()


def test_check_config_reports_out_of_service_and_suppress_mistakes(tmp_path: Path) -> None:
    from edge_agent.config.rules import RulesConfig, load_rules

    rules = tmp_path / "ours.yaml"
    rules.write_text(
        "rules:\n  - id: lab_co2\n    metric: co2\n    above: 1200\n    suppress: maintenence\n"
    )
    cfg = RulesConfig.model_validate(
        {"files": ["ours.yaml"], "out_of_service": ["lab_co2@b2-*", "co2_hihg"]}
    )
    _, config_problems, file_problems = load_rules(cfg, tmp_path)
    assert file_problems == [
        f"{rules}:5  rules[0].suppress  unknown schedule 'maintenence' (known: lessons, "
        "school_day) / 未定义的作息表"
    ]
    rules.write_text("rules:\n  - {id: lab_co2, metric: co2, above: 1200}\n")
    _, config_problems, file_problems = load_rules(cfg, tmp_path)
    assert file_problems == []
    assert config_problems == [
        (("rules", "out_of_service", 1), "no rule 'co2_hihg' to take out of service / 没有该规则")
    ]
    with pytest.raises(ValueError, match="rule@device"):
        RulesConfig.model_validate({"out_of_service": ["lab_co2@"]})


def test_a_rule_out_of_service_neither_chatters_nor_floods() -> None:
    parsed = RuleFile.model_validate(
        {"rules": [{"id": "co2_high", "metric": "co2", "above": 1500, "deadband": 0}]}
    )
    clock = Clock()
    book, sink, _ = new_book(clock, out_of_service=["co2_high@b1-*"])
    engine = RuleEngine(RuleSet(parsed.rules, {}), SHANGHAI, book, now=clock.wall)
    for _ in range(FLOOD_N + 1):
        for room in range(12):  # flapping, and more rooms than a flood needs
            engine.see(Message("telemetry", f"b1-r{room}", {"co2": 1600}, ts=clock.wall()))
            engine.see(Message("telemetry", f"b1-r{room}", {"co2": 1400}, ts=clock.wall()))
        clock.advance(1)
    engine.tick()
    assert sink.put == []
    engine.see(Message("telemetry", "b2-r1", {"co2": 1600}, ts=clock.wall()))
    assert [(d["rule"], d["device"]) for d in sink.put] == [("co2_high", "b2-r1")]
