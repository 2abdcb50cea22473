"""An agent that sleeps when there is nothing to do (issue 8 item 9): the group commit
waits for something queued or for the next moment a timer can change something, and
every timer still fires on time.

The rules, the alarm book, the pipeline's stages and the patrol each say when their tick
can next change something (``due_in``): those are tested on injected clocks. Through the
whole agent (real event loop, real clock, no broker) the group commit's idle wake is
set to an hour, so an alarm or a commit that arrives at all arrived because a timer or a
producer woke the loop, not because the loop polled."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.alarms.lifecycle import AlarmBook
from edge_agent.alarms.rules import CHATTER_RULE, CHATTER_S, FLOOD_N, FLOOD_S
from edge_agent.config.loader import load_config
from edge_agent.envelope import Lane
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline.base import TICK_S, Message, Stage
from edge_agent.pipeline.clockgate import ClockGate
from edge_agent.pipeline.failures import Failures
from edge_agent.supervisor import Agent
from tests.unit.test_alarm_lifecycle import Clock
from tests.unit.test_rules import MONDAY, Campus, at

CO2 = {"id": "co2", "metric": "co2", "above": 1500, "deadband": 100, "severity": "minor"}


# -- the rules say when their tick can change something ----------------------------------


def test_a_rule_is_due_when_its_on_delay_ends_and_raises_then_not_before() -> None:
    c = Campus([{**CO2, "on_delay_s": 90, "off_delay_s": 30}])
    assert c.engine.due_in() is None  # nothing pending: only a reading can change it
    c.read(1600)
    assert c.engine.due_in() == pytest.approx(90)
    c.advance(89.5)  # no reading meanwhile
    assert c.states() == []
    assert c.engine.due_in() == pytest.approx(0.5)
    c.advance(c.engine.due_in() or 0)
    assert c.states() == ["active_unacked"]
    assert c.engine.due_in() is None  # active, no schedule: nothing until a reading
    c.read(1300)  # below the deadband: the off-delay starts
    assert c.engine.due_in() == pytest.approx(30)
    c.advance(29.5)
    assert c.states() == ["active_unacked"]
    c.advance(c.engine.due_in() or 0)
    assert c.states() == ["active_unacked", "cleared_unacked"]


def test_an_offline_rule_is_due_at_its_delay() -> None:
    c = Campus([{"id": "off", "type": "offline", "on_delay_s": 300, "severity": "major"}])
    c.state("offline")
    assert c.engine.due_in() == pytest.approx(300)
    c.advance(299)
    assert c.states() == []
    c.advance(c.engine.due_in() or 0)
    assert c.states() == ["active_unacked"]


def test_chattering_and_a_flood_are_due_when_they_calm_down() -> None:
    c = Campus([CO2])
    for _ in range(3):  # the third raise within CHATTER_S: chattering
        c.read(1600)
        c.read(1000)
        c.advance(1)
    assert CHATTER_RULE in {a["rule"] for a in c.sent}
    due = c.engine.due_in()
    assert due is not None
    assert CHATTER_S - 3 < due <= CHATTER_S
    c.advance(due)
    assert c.sent[-1]["rule"] == CHATTER_RULE
    assert c.sent[-1]["state"] == "cleared_unacked"  # calm: the chattering alarm clears

    f = Campus([CO2])
    for i in range(FLOOD_N + 1):
        f.read(1600, device=f"r{i}-air")
    assert any(a["rule"].startswith("alarm_flood") for a in f.sent)
    due = f.engine.due_in()
    assert due is not None
    assert due == pytest.approx(FLOOD_S, abs=0.01)
    f.advance(due)  # no alarm meanwhile: the flood is over, its summary clears
    assert [a["state"] for a in f.sent if a["rule"].startswith("alarm_flood")][-1] == (
        "cleared_unacked"
    )


def test_a_schedule_makes_the_rule_due_at_the_next_minute() -> None:
    c = Campus(
        [{**CO2, "only_in": "lessons"}],
        {"lessons": {"days": ["mon"], "times": ["08:00-10:30"]}},
    )
    c.clock = at(f"{MONDAY} 10:29") + 20  # 10:29:20
    c.read(1600)
    assert c.states() == ["active_unacked"]
    assert c.engine.due_in() == pytest.approx(40, abs=0.01)  # the minute the lessons end
    c.advance(c.engine.due_in() or 0)
    assert c.states() == ["active_unacked", "cleared_unacked"]  # disarmed at 10:30


# -- the alarm book: a shelve ends on time --------------------------------------------------


def test_a_shelve_is_due_when_it_ends() -> None:
    clock = Clock()
    states: list[str] = []
    book = AlarmBook(
        "campus/s/g",
        lambda lane, topic, **kw: states.append(kw["data"]["state"]),
        lambda topic, payload: None,
        "en",
        clock=clock,
    )
    assert book.due_in() is None
    alarm = book.raise_("co2_high", "r101-air", "minor", en="CO2 high", zh="CO2 高")
    book.shelve(alarm.alarm_id, "guard", 10)
    assert book.due_in() == pytest.approx(600)
    clock.advance(599)
    book.tick()
    assert states[-1] == "shelved"
    clock.advance(book.due_in() or 0)
    book.tick()
    assert states[-1] == "active_unacked"
    assert book.due_in() is None


# -- the pipeline's stages and the failure summaries ----------------------------------------


class _Unsynced:
    def __init__(self) -> None:
        self.t = 100.0
        self.ok = False

    def wall(self) -> float:
        return 1_800_000_000.0 + self.t

    def mono(self) -> float:
        return self.t

    def synced(self) -> bool:
        return self.ok


def test_the_clock_gate_is_looked_at_while_it_holds_something() -> None:
    clock = _Unsynced()
    gate = ClockGate(clock, hold_max_s=120)  # type: ignore[arg-type]
    gate.bind(lambda msg: None)
    assert gate.due_in() is None  # nothing held: nothing to release
    assert gate.process(Message("telemetry", "d", {"t": 1}, None), durable=False) is None
    assert gate.due_in() == TICK_S  # a sync is only seen by asking
    clock.t += 119.8
    assert gate.due_in() == pytest.approx(0.2)  # the hold's end comes first


def test_a_stage_with_its_own_tick_and_no_due_in_is_ticked_as_before() -> None:
    class Timer(Stage):
        def tick(self) -> None:
            pass

    assert Stage().due_in() is None
    assert Timer().due_in() == TICK_S


def test_a_failure_summary_is_due_only_when_there_is_something_to_say() -> None:
    now = [0.0]
    f = Failures("tap", "x", summary_s=300, clock=lambda: now[0])
    assert f.due_in() is None
    f.failed("t", ValueError("first"))  # logged at once
    assert f.due_in() is None
    f.failed("t", ValueError("second"))  # counted, for the summary
    now[0] = 100.0
    assert f.due_in() == pytest.approx(200)


# -- the group commit ---------------------------------------------------------------------


def _put(ob: Outbox, lane: Lane = Lane.TELEMETRY) -> None:
    ob.put(lane, "t", device="d", kind="telemetry", ts=time.time(), data={"v": 1})


async def test_an_idle_group_commit_sleeps_until_something_is_queued(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", commit_interval_s=0.05)
    await ob.open()
    try:
        wait = asyncio.create_task(ob.wait_for_work())
        await asyncio.sleep(0.3)  # six intervals with nothing queued
        assert not wait.done()
        _put(ob)
        await asyncio.wait_for(wait, 30)  # the interval after the reading
        assert ob.has_work()
        # a timer of the caller ends the sleep too, with nothing queued
        await ob.flush()
        await asyncio.wait_for(ob.wait_for_work(0.01), 30)
    finally:
        await ob.close()


async def test_acknowledged_rows_are_deleted_when_nothing_else_comes(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", commit_interval_s=0.05)
    await ob.open()

    async def commit_loop() -> None:  # what the supervisor runs, no timers of its own
        while True:
            await ob.wait_for_work()
            await ob.flush()

    loop = asyncio.create_task(commit_loop())
    try:
        _put(ob)
        await _until(lambda: ob.committed_total == 1, "the commit")
        assert (await ob.stats())["depth"] == 1
        ob.ack([1])  # the PUBACK, after the commit loop went idle
        await _until_async(lambda: _depth(ob), 0, "the acknowledged row's delete")
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
        await ob.close()


async def _depth(ob: Outbox) -> int:
    return int((await ob.stats())["depth"])


async def _until(cond: Callable[[], object], what: str) -> None:
    for _ in range(600):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _until_async(get: Callable[[], Any], want: object, what: str) -> None:
    for _ in range(600):
        if await get() == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- through the whole agent ------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _idle_agent(tmp_path: Path, rule: dict[str, Any]) -> AsyncIterator[Agent]:
    """A running agent with one rule, no broker, and a group commit whose idle wake is an
    hour: whatever happens, a timer or a producer woke it. Yields once it is idle."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": [rule]}), encoding="utf-8")
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        f"mqtt: {{host: 127.0.0.1, port: {_closed_port()}, reconnect_max_s: 1}}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}, commit_interval_ms: 50}}\n"
        "clock: {sync_check: none}\n"
        "rules: {default: false, files: [rules.yaml]}\n"
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    agent.idle_wake_s = 3600.0
    task = asyncio.create_task(agent.run())
    try:
        await _until(lambda: agent.outbox.epoch, "the agent's start")
        await _until(lambda: not agent.outbox.has_work(), "the start's commits")
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """An idle agent with one rule: CO2 above 1500 for 0.5 s."""
    async with _idle_agent(tmp_path, {**CO2, "on_delay_s": 0.5}) as running:
        yield running


async def test_an_on_delay_ends_and_raises_while_no_reading_arrives(agent: Agent) -> None:
    t0 = time.time()
    agent.emitter.telemetry("r101-air", {"co2": 1800})  # one reading, then none
    await _until(lambda: agent.alarms.find("co2", "r101-air"), "the alarm after its on-delay")
    alarm = agent.alarms.find("co2", "r101-air")
    assert alarm.raised_at >= t0 + 0.5  # not before its delay
    await _until(lambda: agent.outbox.committed_total >= 2, "the alarm's commit")


async def test_a_shelve_ends_on_an_idle_agent(agent: Agent) -> None:
    alarm = agent.alarms.raise_("door_test", "gw1", "major", en="door", zh="门")
    agent.alarms.shelve(alarm.alarm_id, "guard", 0.01)  # 0.6 s
    assert agent.alarms.alarms[alarm.alarm_id].state == "shelved"
    await _until(
        lambda: agent.alarms.alarms[alarm.alarm_id].state == "active_unacked",
        "the end of the shelve",
    )


async def test_a_reading_is_committed_within_the_interval_on_an_idle_agent(
    agent: Agent,
) -> None:
    before = agent.outbox.committed_total
    agent.emitter.telemetry("r101-air", {"co2": 600})
    await _until(lambda: agent.outbox.committed_total == before + 1, "the reading's commit")


# -- doors and the guard patrol ---------------------------------------------------------------


def test_a_door_held_open_is_due_at_its_time() -> None:
    from tests.unit.test_doors import started as doors_started

    rig = doors_started()
    assert rig.pipe.due_in() is None  # all doors closed: nothing can time out
    rig.card(1)
    rig.poll(di1=False)  # opened with a grant
    assert rig.of("door_opened")
    assert rig.pipe.due_in() == pytest.approx(30)  # held_open_s
    rig.clock.now += 29.5
    rig.pipe.tick()
    assert rig.of("door_held_open") == []
    rig.clock.now += rig.pipe.due_in() or 0
    rig.pipe.tick()
    assert len(rig.of("door_held_open")) == 1
    assert rig.pipe.due_in() is None  # said once per opening


def test_a_patrol_deadline_is_due_when_it_passes() -> None:
    from tests.unit.test_patrol import at as patrol_at
    from tests.unit.test_patrol import route
    from tests.unit.test_patrol import started as patrol_started

    c = patrol_started(route())  # 21:00; the round of 22:00 ends 22:30, 5 min tolerance
    assert c.patrol.due_in() == pytest.approx(patrol_at("2026-11-30 22:35") - c.clock)
    c.swipe("gate-n", "2026-11-30 22:03")
    c.clock = patrol_at("2026-11-30 22:34")
    c.patrol.tick()
    assert c.raised() == []
    assert c.patrol.due_in() == pytest.approx(60)
    c.clock += c.patrol.due_in() or 0
    c.patrol.tick()
    assert {a["value"] for a in c.raised()} == {"lab", "dorm"}
    # the next night's round is the next deadline
    assert c.patrol.due_in() == pytest.approx(86400)


async def test_an_offline_delay_started_by_a_state_alone_raises_on_an_idle_agent(
    tmp_path: Path,
) -> None:
    # A device state commits nothing: the group commit is nudged to look at its timers.
    rule = {"id": "off", "type": "offline", "on_delay_s": 0.5, "severity": "major"}
    async with _idle_agent(tmp_path, rule) as agent:
        await asyncio.sleep(0.2)  # the group commit is asleep
        agent._state_sink("r101-air", {"state": "offline", "since": "x", "last_error": "t/o"})
        await _until(lambda: agent.alarms.find("off", "r101-air"), "the offline alarm")


async def test_a_reading_held_for_the_clock_goes_out_once_it_is_synchronised(
    tmp_path: Path,
) -> None:
    # A held reading reaches no sink: the group commit is nudged, then looks at the
    # clock every TICK_S while something is held.
    synced = tmp_path / "synced"
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        f"mqtt: {{host: 127.0.0.1, port: {_closed_port()}, reconnect_max_s: 1}}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}, commit_interval_ms: 50}}\n"
        f"clock: {{sync_check: file, sync_file: {synced}}}\n"
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    agent.idle_wake_s = 3600.0
    task = asyncio.create_task(agent.run())
    try:
        await _until(lambda: agent.outbox.epoch, "the agent's start")
        await _until(lambda: not agent.outbox.has_work(), "the start's commits")
        await asyncio.sleep(0.2)  # the group commit is asleep
        before = agent.outbox.committed_total
        agent.emitter.telemetry("r101-air", {"co2": 600})
        assert agent.gate.held == 1
        await asyncio.sleep(0.2)
        synced.touch()  # NTP has set the clock
        await _until(lambda: agent.gate.held == 0, "the release")
        await _until(lambda: agent.outbox.committed_total == before + 1, "its commit")
        assert agent.gate.corrected == 1
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


def test_a_timer_that_keeps_saying_now_is_ticked_as_before_not_spun(tmp_path: Path) -> None:
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        "mqtt: {host: 127.0.0.1}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n"
        "clock: {sync_check: none}\n"
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    assert agent._timers_due_s() == agent.idle_wake_s  # nothing due: the idle wake

    class Stuck:
        def due_in(self) -> float:
            return 0.0

    agent.patrol = Stuck()  # type: ignore[assignment]
    waits = [agent._timers_due_s() for _ in range(6)]
    assert waits[0] < 0.05  # due now: at once
    assert waits[-1] == TICK_S  # but not a hundred times a second for ever
