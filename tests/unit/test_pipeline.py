"""The processing pipeline (issue 8 item 3): stages in list order, stages that hold or
derive messages and send them on later, durable commits that are never held, and taps
that see everything but can never break the flow."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge_agent.config.loader import load_config
from edge_agent.driver import Event
from edge_agent.envelope import Lane
from edge_agent.errors import NotDurableError
from edge_agent.pipeline import (
    ClockGate,
    Message,
    Pipeline,
    Pseudonymiser,
    QueueTap,
    Stage,
    Taps,
    build_pipeline,
)
from edge_agent.supervisor import Agent


class Sink:
    def __init__(self) -> None:
        self.out: list[Message] = []
        self.commits: list[tuple[str, list[Message], str | None]] = []
        self.refuse = False

    def put(self, msg: Message) -> None:
        self.out.append(msg)

    async def commit(self, device: str, msgs: Sequence[Message], cursor: str | None) -> None:
        if self.refuse:
            raise NotDurableError("disk full")
        self.commits.append((device, list(msgs), cursor))


class Clock:
    def __init__(self, synced: bool) -> None:
        self.is_synced = synced
        self.now = 1_800_000_000.0

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.now - 1_799_000_000.0

    def synced(self) -> bool:
        return self.is_synced


class Seen(Stage):
    """Records what reaches it and passes it on."""

    name = "seen"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str | None, bool]] = []

    def process(self, msg: Message, *, durable: bool) -> Message | None:
        self.seen.append((msg.type or msg.kind, durable))
        return msg


class DoorTimer(Stage):
    """What door logic (issue 9) will look like: a door that opens and is not closed by the
    next tick gives a derived ``door_held_open`` event, sent on with ``emit``."""

    name = "doors"

    def __init__(self) -> None:
        super().__init__()
        self.open: dict[str, float | None] = {}

    def process(self, msg: Message, *, durable: bool) -> Message | None:
        if msg.type == "door_opened":
            self.open[msg.device] = msg.ts
        elif msg.type == "door_closed":
            self.open.pop(msg.device, None)
        return msg

    def tick(self) -> None:
        for device, ts in self.open.items():
            self.emit(
                Message("event", device, {"door": 1, "card": "777"}, ts, type="door_held_open")
            )
        self.open.clear()


class Drop(Stage):
    name = "drop"

    def process(self, msg: Message, *, durable: bool) -> Message | None:
        return None if msg.type == "noise" else msg


def test_stages_run_in_list_order_and_the_sink_gets_the_result() -> None:
    first, last = Seen(), Seen()
    sink = Sink()
    pipe = Pipeline([first, Pseudonymiser(b"k"), last], sink)
    pipe.event("door", "card_read", {"card": "1"})
    pipe.telemetry("air", {"co2": 500}, ts=12.0, quality="uncertain")
    assert first.seen == last.seen == [("card_read", False), ("telemetry", False)]
    assert sink.out[0].data["card"].startswith("h:")
    assert (sink.out[1].data, sink.out[1].ts, sink.out[1].quality) == (
        {"co2": 500},
        12.0,
        "uncertain",
    )


def test_a_stage_emits_derived_messages_later_through_the_stages_after_it() -> None:
    doors, after = DoorTimer(), Seen()
    sink = Sink()
    pipe = Pipeline([doors, Pseudonymiser(b"k"), after], sink)
    pipe.event("door", "door_opened", {"door": 1}, ts=5.0)
    pipe.tick()
    assert [m.type for m in sink.out] == ["door_opened", "door_held_open"]
    derived = sink.out[1]
    assert derived.ts == 5.0
    assert derived.data["card"].startswith("h:")  # later stages did see it
    assert after.seen == [("door_opened", False), ("door_held_open", False)]
    pipe.tick()  # emitted once, and never through the door stage again
    assert len(sink.out) == 2


def test_held_messages_reach_later_stages_only_when_released() -> None:
    clock = Clock(synced=False)
    gate, after = ClockGate(clock, hold_max_s=60), Seen()
    sink = Sink()
    pipe = Pipeline([gate, after], sink)
    pipe.telemetry("air", {"co2": 500})
    pipe.state("air", {"state": "online", "since": "x", "last_error": None})
    assert after.seen == [("state", False)]  # a state change is never held
    clock.is_synced = True
    pipe.tick()
    assert after.seen == [("state", False), ("telemetry", False)]
    assert [m.kind for m in sink.out] == ["state", "telemetry"]


async def test_a_commit_is_refused_before_any_later_stage_sees_it() -> None:
    clock = Clock(synced=False)
    after = Seen()
    sink = Sink()
    pipe = Pipeline([Pseudonymiser(b"k"), ClockGate(clock), after], sink)
    with pytest.raises(NotDurableError, match="clock"):
        await pipe.commit("door", [Event("card_read", {"card": "1"}), Event("door_opened")])
    assert after.seen == []
    assert sink.commits == []
    clock.is_synced = True
    pipe.tick()
    await pipe.commit("door", [Event("card_read", {"card": "1"})], cursor="7")
    assert after.seen == [("card_read", True)]
    ((device, msgs, cursor),) = sink.commits
    assert (device, cursor) == ("door", "7")
    assert msgs[0].data["card"].startswith("h:")


async def test_a_message_dropped_in_a_commit_still_moves_the_cursor() -> None:
    sink = Sink()
    pipe = Pipeline([Drop()], sink)
    await pipe.commit("door", [Event("noise"), Event("door_opened")], cursor="2")
    ((_, msgs, cursor),) = sink.commits
    assert [m.type for m in msgs] == ["door_opened"]
    assert cursor == "2"


class Buggy(Stage):
    """A stage with a bug on door events and in its timer."""

    name = "buggy"

    def process(self, msg: Message, *, durable: bool) -> Message | None:
        if msg.type == "door_opened":
            raise KeyError("door 3")
        return msg

    def tick(self) -> None:
        raise RuntimeError("timer bug")


def test_a_stage_bug_drops_that_message_only_and_never_reaches_the_driver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(synced=False)
    sink = Sink()
    pipe = Pipeline([Buggy(), ClockGate(clock, hold_max_s=60)], sink)
    with caplog.at_level(logging.WARNING, logger="edge_agent.pipeline"):
        for _ in range(3):
            pipe.event("door", "door_opened", {"card": "12345678"})  # no exception here
            pipe.telemetry("air", {"co2": 500})
        clock.is_synced = True
        pipe.tick()  # the buggy timer does not keep the gate after it from releasing
        pipe.tick()
    assert [m.kind for m in sink.out] == ["telemetry"] * 3
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_agent.pipeline"]
    assert len(lines) == 2, lines  # one for process, one for tick: then counted
    assert "'buggy'" in lines[0]
    assert "dropped" in lines[0]
    assert "'buggy.tick'" in lines[1]
    assert "12345678" not in caplog.text
    assert pipe.stage_failures.count("buggy") == 3
    assert pipe.stage_failures.count("buggy.tick") == 2


async def test_a_stage_bug_in_a_commit_reaches_the_driver_and_keeps_nothing() -> None:
    sink = Sink()
    pipe = Pipeline([Buggy()], sink)
    with pytest.raises(KeyError):
        await pipe.commit("door", [Event("card_read"), Event("door_opened")], cursor="9")
    assert sink.commits == []


# -- taps --------------------------------------------------------------------------------
def test_taps_see_every_message_after_processing_and_not_what_is_held() -> None:
    clock = Clock(synced=False)
    sink = Sink()
    pipe = Pipeline([Pseudonymiser(b"k"), ClockGate(clock, hold_max_s=60)], sink)
    seen: list[Message] = []
    pipe.add_tap("console", seen.append)
    pipe.event("door", "card_read", {"card": "12345678"})
    assert seen == []  # held by the clock gate: not out yet
    clock.is_synced = True
    clock.now += 10
    pipe.tick()
    (msg,) = seen
    assert msg.data["card"].startswith("h:")
    assert msg.ts is not None  # the gate's corrected timestamp
    assert seen == sink.out


def test_a_failing_tap_never_stops_the_flow_and_is_logged_once_then_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    taps = Taps(summary_s=300, clock=lambda: now[0])
    sink = Sink()
    pipe = Pipeline([], sink, taps)
    after: list[Message] = []

    def broken(msg: Message) -> None:
        raise ValueError("rule engine bug")

    pipe.add_tap("rules", broken)
    pipe.add_tap("console", after.append)
    with caplog.at_level(logging.DEBUG, logger="edge_agent.pipeline"):
        for i in range(50):
            pipe.telemetry("air", {"co2": i})
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(sink.out) == len(after) == 50  # every message went on, to every tap
        assert len(warnings) == 1
        assert "'rules'" in warnings[0].getMessage()
        assert warnings[0].exc_info is not None  # the first one with its traceback
        assert taps.failures("rules") == 50
        now[0] = 299
        pipe.tick()
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
        now[0] = 301
        pipe.tick()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2
        assert "49 more times" in warnings[1].getMessage()
        pipe.telemetry("air", {"co2": 1})
        pipe.flush()  # at stop: what is left is summarised
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "1 more times" in warnings[-1].getMessage()
        pipe.flush()  # nothing new: no new line
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 3


async def test_taps_see_a_commit_only_once_it_is_durable() -> None:
    sink = Sink()
    pipe = Pipeline([], sink)
    seen: list[Message] = []
    pipe.add_tap("rules", seen.append)
    sink.refuse = True
    with pytest.raises(NotDurableError):
        await pipe.commit("door", [Event("door_opened")], cursor="1")
    assert seen == []  # the device sends it again: the rules must not count it twice
    sink.refuse = False
    await pipe.commit("door", [Event("door_opened")], cursor="1")
    assert [m.type for m in seen] == ["door_opened"]


async def test_a_queue_tap_never_blocks_and_counts_what_it_dropped() -> None:
    queue = QueueTap(maxlen=3)
    pipe = Pipeline([], Sink())
    pipe.add_tap("console", queue)
    for i in range(5):
        pipe.telemetry("air", {"i": i})
    assert queue.dropped == 2
    got = [(await queue.get()).data["i"] for _ in range(3)]
    assert got == [2, 3, 4]
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    pipe.telemetry("air", {"i": 5})
    assert (await waiter).data == {"i": 5}


# -- built by the supervisor -------------------------------------------------------------
def _config(tmp_path: Path, site_extra: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"site: {{id: school-a, gateway_id: gw1{site_extra}}}\n"
        "mqtt: {host: 127.0.0.1}\n"
        "clock: {sync_check: none}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n"
    )
    return path


def test_build_pipeline_reads_the_site_settings(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, ", raw_card_ids: true"))
    pipe = build_pipeline(cfg, Clock(synced=True), Sink())
    assert [type(s) for s in pipe.stages] == [Pseudonymiser, ClockGate]
    assert pipe.stage(Pseudonymiser).raw is True
    assert pipe.stage(ClockGate).hold_max_s == cfg.clock.hold_max_s
    assert load_config(_config(tmp_path)).site.raw_card_ids is False


async def test_the_agents_states_and_readings_pass_its_taps(tmp_path: Path) -> None:
    path = _config(tmp_path)
    agent = Agent(load_config(path), path)
    seen: list[Message] = []
    agent.emitter.add_tap("console", seen.append)
    await agent.outbox.open()
    try:
        agent.emitter.telemetry("air", {"co2": 500})  # what the poll loop calls
        agent._state_sink("air", {"state": "online", "since": "t", "last_error": None})
        await agent.outbox.flush()
        rows = await agent.outbox.fetch(Lane.TELEMETRY, 0, 10**9, 10)
    finally:
        await agent.outbox.close()
    assert [(m.kind, m.device) for m in seen] == [("telemetry", "air"), ("state", "air")]
    assert [json.loads(r.payload)["data"] for r in rows] == [{"co2": 500}]
    # (the state still reaches its retained topic: tests/integration/test_push_agent.py)


async def test_a_security_event_is_committed_at_once_like_an_alarm(tmp_path: Path) -> None:
    """door_forced, held open, tamper and critical inputs wake the group commit at once;
    a card read waits for the interval (one fsync for the batch)."""
    from edge_agent.outbox.store import Outbox
    from edge_agent.pipeline.base import Message
    from edge_agent.pipeline.sink import OutboxSink
    from edge_agent.supervisor import OutboxEmitter

    ob = Outbox(tmp_path / "o.db", commit_interval_s=3600)
    await ob.open()
    try:
        sink = OutboxSink(OutboxEmitter(ob, "campus/s/g"), ob, "campus/s/g", lambda *_: None)
        woke = []
        for type_, data in (
            ("card_read", {"card": None, "result": "granted"}),
            ("digital_input", {"input": "exit_button", "active": True}),
            ("door_forced", {"door": 1}),
            ("digital_input", {"input": "fire", "active": True, "severity": "critical"}),
        ):
            ob._wake.clear()
            sink.put(Message(kind="event", device="d", data=data, type=type_))
            woke.append(ob._wake.is_set())
        assert woke == [False, False, True, True]
    finally:
        await ob.close()
