"""Door logic on the pipeline (issue 9 item 4): contact edges, door_forced without a grant,
door_held_open once per opening, grants by card and by exit button, a grant of another
door, a flapping contact, a restart with a door open, and the config checks. A fake clock
drives every timer: no sleeps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.loader import load_config
from edge_agent.config.models import DoorsConfig
from edge_agent.errors import ConfigError
from edge_agent.pipeline import DoorLogic, Message, Pipeline, build_pipeline

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.now - T0

    def synced(self) -> bool:
        return True


class Sink:
    """A recording sink that keeps state like the outbox's ``device_state``."""

    def __init__(self, state: dict[tuple[str, str], str] | None = None) -> None:
        self.out: list[Message] = []
        self.state = state if state is not None else {}

    def put(self, msg: Message) -> None:
        self.out.append(msg)

    async def commit(self, device: str, msgs: Sequence[Message], cursor: str | None) -> None:
        self.out.extend(msgs)

    def get_state(self, device: str, key: str) -> str | None:
        return self.state.get((device, key))

    def put_state(self, device: str, key: str, value: str) -> None:
        self.state[(device, key)] = value

    def events(self) -> list[Message]:
        return [m for m in self.out if m.kind == "event"]

    def types(self) -> list[str | None]:
        return [m.type for m in self.events()]


DOORS: dict[str, Any] = {
    "doors": [
        {
            "id": "b1-east",
            "name": "B1 east door",
            "contact": {"device": "b1-di", "point": "di1", "closed_when": 1},
            "rex": {"device": "b1-di", "point": "di2"},
            "grants": [{"device": "ctrl", "door": 1}],
            "grant_window_s": 5,
            "held_open_s": 30,
        },
        {
            "id": "b1-west",
            "contact": {"device": "b1-di", "point": "di3", "closed_when": 0},
            "grants": [{"device": "ctrl", "door": 2}],
        },
    ],
    "inputs": [
        {"device": "b1-di", "point": "di7", "input": "fire", "active_when": 0},
        {"device": "b1-di", "point": "di8", "input": "emergency"},
    ],
}

#: every input at rest: doors closed, buttons up, no fire (di7 reads 1 = relay at rest)
REST = {f"di{i}": False for i in range(1, 9)} | {"di1": True, "di7": True}


class Rig:
    def __init__(self, doors: dict[str, Any] = DOORS, state: dict[Any, str] | None = None):
        self.clock = Clock()
        self.sink = Sink(state)
        self.stage = DoorLogic(DoorsConfig.model_validate(doors), self.clock, self.sink)
        self.pipe = Pipeline([self.stage], self.sink)
        self.inputs = dict(REST)

    def poll(self, **changes: bool) -> None:
        self.inputs.update(changes)
        self.pipe.telemetry("b1-di", self.inputs, ts=self.clock.now)

    def wait(self, seconds: float) -> None:
        """Time passes with a poll every 0.25 s and a tick every 0.5 s, as in the agent."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + 0.25)
            self.poll()
            if round((self.clock.now - T0) / 0.25) % 2 == 0:
                self.pipe.tick()

    def card(self, door: int, result: str = "granted", device: str = "ctrl") -> None:
        self.pipe.event(
            device,
            "card_read",
            {
                "card": "h:0123456789abcdef",
                "reader": f"door{door}-in",
                "door": door,
                "result": result,
                "direction": "in",
                "context": "access",
            },
            ts=self.clock.now,
        )

    def of(self, type_: str) -> list[Message]:
        return [m for m in self.sink.events() if m.type == type_]


def started() -> Rig:
    rig = Rig()
    rig.poll()  # the first reading: all closed, nothing to say
    assert rig.sink.events() == []
    return rig


def test_an_opening_without_a_grant_is_forced_at_once_and_each_edge_is_one_event() -> None:
    rig = started()
    rig.wait(2)
    rig.poll(di1=False)  # NC contact: 0 = open
    rig.poll(di1=False)
    rig.poll(di1=False)  # repeated polls say nothing more
    assert rig.sink.types() == ["door_opened", "door_forced"]
    opened, forced = rig.sink.events()
    assert opened.device == forced.device == "b1-di"  # under the contact's device
    assert opened.data["door"] == forced.data["door"] == "b1-east"
    assert opened.data["granted"] is False
    assert forced.data["input"] == {"device": "b1-di", "point": "di1"}
    assert forced.data["last_grant"] is None
    assert forced.ts == opened.ts == rig.clock.now
    rig.wait(1)
    rig.poll(di1=True)
    assert rig.sink.types() == ["door_opened", "door_forced", "door_closed"]
    assert rig.of("door_closed")[0].data["open_s"] == pytest.approx(1.0)
    # the module's telemetry goes on when a value changed: the first, open, closed
    telemetry = [m for m in rig.sink.out if m.kind == "telemetry"]
    assert [m.data["di1"] for m in telemetry] == [True, False, True]
    assert telemetry[-1].data == rig.inputs


def test_a_granted_card_within_the_window_makes_a_normal_opening() -> None:
    rig = started()
    rig.card(1)
    rig.wait(3)
    rig.poll(di1=False)
    rig.wait(4)
    rig.poll(di1=True)
    assert rig.sink.types() == ["card_read", "door_opened", "door_closed"]
    opened = rig.of("door_opened")[0]
    assert opened.data["granted"] is True
    assert opened.data["granted_by"]["device"] == "ctrl"
    assert opened.data["granted_by"]["before_s"] == pytest.approx(3.0)


def test_a_grant_older_than_the_window_or_denied_does_not_count() -> None:
    rig = started()
    rig.card(1)
    rig.wait(6)  # window 5 s
    rig.card(1, result="denied")
    rig.poll(di1=False)
    forced = rig.of("door_forced")
    assert len(forced) == 1
    assert forced[0].data["last_grant"]["before_s"] == pytest.approx(6.0)


def test_a_grant_for_another_door_or_device_does_not_count() -> None:
    rig = started()
    rig.card(2)  # the controller's door 2 is b1-west
    rig.card(1, device="other-ctrl")  # not a grant source of b1-east
    rig.wait(1)
    rig.poll(di1=False)
    assert len(rig.of("door_forced")) == 1
    assert rig.of("door_forced")[0].data["door"] == "b1-east"
    # and b1-west (closed_when 0: reads 1 when open) is granted by its door-2 card
    rig.poll(di3=True)
    west = [m for m in rig.of("door_opened") if m.data["door"] == "b1-west"]
    assert west[0].data["granted"] is True
    assert len(rig.of("door_forced")) == 1


def test_the_exit_button_grants_the_door_and_is_a_digital_input() -> None:
    rig = started()
    rig.poll(di2=True)  # REX pressed
    rig.poll(di2=True)
    rig.poll(di2=False)
    rig.wait(1)
    rig.poll(di1=False)
    assert rig.sink.types() == ["digital_input", "door_opened"]
    rex = rig.of("digital_input")[0]
    assert rex.data == {"input": "exit_button", "active": True, "door": "b1-east", "point": "di2"}
    assert rig.of("door_opened")[0].data["granted_by"]["input"] == "exit_button"


def test_a_rex_pressed_in_the_same_poll_as_the_opening_grants_it() -> None:
    rig = started()
    rig.poll(di2=True, di1=False)
    assert rig.of("door_forced") == []


def test_a_controllers_exit_button_event_grants_its_door() -> None:
    rig = started()
    rig.pipe.event("ctrl", "digital_input", {"input": "exit_button", "active": True, "door": 1})
    rig.poll(di1=False)
    assert rig.of("door_forced") == []


def test_held_open_once_per_opening_then_closed_says_so() -> None:
    rig = started()
    rig.card(1)
    rig.poll(di1=False)
    rig.wait(29.5)
    assert rig.of("door_held_open") == []
    rig.wait(1)
    rig.wait(60)
    held = rig.of("door_held_open")
    assert len(held) == 1
    assert held[0].data["held_open_s"] == 30
    assert held[0].data["open_s"] == pytest.approx(30.0, abs=0.5)
    assert held[0].ts == pytest.approx(T0 + 30)
    rig.poll(di1=True)
    closed = rig.of("door_closed")[0]
    assert closed.data["held_open"] is True
    assert closed.data["open_s"] == pytest.approx(90.5)
    # the next opening is a new one: held open again after 30 s
    rig.card(1)
    rig.wait(5)
    rig.poll(di1=False)
    rig.wait(31)
    assert len(rig.of("door_held_open")) == 2


def test_a_flapping_contact_is_one_opening() -> None:
    rig = started()
    rig.poll(di1=False)  # forced
    for _ in range(5):  # bounces every 0.25 s
        rig.clock.now += 0.25
        rig.poll(di1=True)
        rig.clock.now += 0.25
        rig.poll(di1=False)
    assert rig.sink.types().count("door_opened") == 6  # every edge is reported
    assert rig.sink.types().count("door_closed") == 5
    assert len(rig.of("door_forced")) == 1  # but it was forced once
    rig.wait(28)
    assert len(rig.of("door_held_open")) == 1  # the held time ran from the first opening
    rig.poll(di1=True)
    rig.clock.now += 3  # longer than flap_s (2 s): a new opening
    rig.poll(di1=False)
    assert len(rig.of("door_forced")) == 2


def test_a_late_grant_within_grant_late_s_prevents_forced() -> None:
    doors = json.loads(json.dumps(DOORS))
    doors["doors"][0]["grant_late_s"] = 1.0
    rig = Rig(doors)
    rig.poll()
    rig.poll(di1=False)
    rig.clock.now += 0.5
    rig.card(1)  # the reader's event came after the contact's
    rig.wait(2)
    assert rig.of("door_forced") == []
    rig.poll(di1=True)
    rig.clock.now += 10
    rig.poll(di1=False)  # no grant this time: forced once the second passed
    assert rig.of("door_forced") == []
    rig.wait(1)
    assert len(rig.of("door_forced")) == 1


def test_fire_and_emergency_inputs_are_critical_digital_inputs_on_change() -> None:
    rig = started()
    rig.poll(di7=False)  # fire relay (active_when 0)
    rig.poll(di7=False)
    rig.poll(di8=True)
    rig.poll(di7=True)
    data = [m.data for m in rig.of("digital_input")]
    assert data == [
        {"input": "fire", "active": True, "severity": "critical", "point": "di7"},
        {"input": "emergency", "active": True, "severity": "critical", "point": "di8"},
        {"input": "fire", "active": False, "severity": "critical", "point": "di7"},
    ]
    assert {m.device for m in rig.of("digital_input")} == {"b1-di"}


def test_a_restart_with_the_door_open_does_not_report_it_again_and_held_runs_on() -> None:
    rig = started()
    rig.card(1)
    rig.poll(di1=False)
    rig.wait(10)
    state = rig.sink.state
    assert json.loads(state[("b1-east", "door")])["open"] is True
    # the agent restarts 5 s later; the door is still open
    again = Rig(state=state)
    again.clock.now = rig.clock.now + 5
    again.inputs = dict(rig.inputs)
    again.poll()
    assert again.sink.events() == []  # published before the restart
    again.wait(14)
    assert again.of("door_held_open") == []
    again.wait(2)  # 31 s after the real opening
    assert len(again.of("door_held_open")) == 1
    again.poll(di1=True)
    assert again.of("door_closed")[0].data["open_s"] == pytest.approx(31.0)


def test_a_door_opened_while_the_agent_was_down_is_reported_but_never_forced() -> None:
    rig = started()
    rig.wait(1)
    restart = Rig(state=rig.sink.state)
    restart.poll(di1=False)
    assert restart.sink.types() == ["door_opened"]
    opened = restart.of("door_opened")[0]
    assert opened.data["at_start"] is True
    assert opened.data["granted"] is None
    # and a door closed while the agent was down gets its door_closed
    restart.poll(di1=False)
    third = Rig(state=restart.sink.state)
    third.poll()
    assert third.sink.types() == ["door_closed"]
    assert third.of("door_closed")[0].data["at_start"] is True


def test_an_active_fire_input_at_start_is_reported_once_across_restarts() -> None:
    rig = Rig()
    rig.poll(di7=False)
    assert [m.data["at_start"] for m in rig.of("digital_input")] == [True]
    again = Rig(state=rig.sink.state)
    again.poll(di7=False)
    assert again.sink.events() == []


def test_an_unreadable_input_is_skipped() -> None:
    rig = started()
    rig.pipe.telemetry("b1-di", {"di1": None}, ts=rig.clock.now)
    assert rig.sink.events() == []


def test_stats_count_what_the_platform_was_told() -> None:
    rig = started()
    rig.poll(di1=False)
    rig.wait(31)
    assert rig.stage.stats() == {
        "doors_opened": 1,
        "doors_forced": 1,
        "doors_held_open": 1,
        "doors_critical": 0,
        "doors_telemetry_skipped": 124,  # the polls of the 31 s the door stood open
    }


def test_input_telemetry_on_change_sends_changes_and_a_heartbeat() -> None:
    rig = started()
    rig.wait(59.75)  # 239 polls, nothing new
    rig.pipe.telemetry("b1-di", rig.inputs, ts=rig.clock.now, quality="uncertain")
    rig.wait(60.25)  # the heartbeat: one reading a minute
    rig.pipe.telemetry("other", {"x": 1}, ts=rig.clock.now)  # not an input module: untouched
    rig.pipe.telemetry("other", {"x": 1}, ts=rig.clock.now)
    sent = [(m.device, m.quality, round(m.ts - T0, 2)) for m in rig.sink.out]
    assert sent == [
        ("b1-di", "good", 0.0),
        ("b1-di", "uncertain", 59.75),  # a change of quality is news
        ("b1-di", "good", 60.0),
        ("b1-di", "good", 120.0),
        ("other", "good", 120.0),
        ("other", "good", 120.0),
    ]


def test_input_telemetry_every_poll_sends_every_reading() -> None:
    doors = {**DOORS, "input_telemetry": "every_poll"}
    rig = Rig(doors)
    rig.poll()
    rig.wait(2)
    assert len([m for m in rig.sink.out if m.kind == "telemetry"]) == 9


# -- config -------------------------------------------------------------------------------
BASE = """\
site: {id: s, gateway_id: g}
buses: [{id: tcp1, type: tcp, host: 127.0.0.1, port: 1502}]
devices:
  - {id: b1-di, kind: modbus, profile: waveshare_io8, bus: tcp1, unit: 1,
     timeout_s: 0.1, retries: 0}
"""


def test_build_pipeline_adds_the_stage_only_when_doors_are_configured(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(BASE)
    pipe = build_pipeline(load_config(plain), Clock(), Sink())
    with pytest.raises(LookupError):
        pipe.stage(DoorLogic)
    doors = tmp_path / "doors.yaml"
    doors.write_text(
        BASE + "doors:\n  doors:\n    - {id: d1, contact: {device: b1-di, point: di1}}\n"
    )
    sink = Sink()
    stage = build_pipeline(load_config(doors), Clock(), sink).stage(DoorLogic)
    assert stage.store is sink


def test_check_config_names_an_unknown_device_or_point_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        BASE
        + "doors:\n"
        + "  doors:\n"
        + "    - id: d1\n"
        + "      contact: {device: b1-di, point: di9}\n"
        + "      rex: {device: b2-di, point: di2}\n"
        + "      grants: [{device: nowhere}]\n"
        + "    - id: d1\n"
        + "      contact: {device: b1-di, point: di1}\n"
        + "  inputs:\n"
        + "    - {device: b1-di, point: di1, input: fire}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = err.value.problems
    name = str(path)
    assert f"{name}:9  doors.doors[0].contact.point  device 'b1-di' has no point 'di9'" in (
        "\n".join(lines)
    )
    text = "\n".join(lines)
    assert f"{name}:10  doors.doors[0].rex.device  unknown device 'b2-di'" in text
    assert f"{name}:11  doors.doors[0].grants[0].device  unknown device 'nowhere'" in text
    assert f"{name}:12  doors.doors[1].id  duplicate door id 'd1'" in text
    assert f"{name}:15  doors.inputs[0].point  b1-di.di1 is already the contact of door" in text
    assert len(lines) == 5


def test_an_emergency_exit_without_grants_is_forced_even_after_a_card_elsewhere() -> None:
    doors = {"doors": [{"id": "exit", "contact": {"device": "b1-di", "point": "di4"}}]}
    rig = Rig(doors)
    rig.poll(di4=True)  # closed (NC contact)
    rig.card(1)  # a grant the exit does not listen to
    rig.poll(di4=False)
    assert rig.sink.types() == ["card_read", "door_opened", "door_forced"]
