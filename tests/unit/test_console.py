"""The console's contract model and renderers, fed with crafted contract messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest

from edge_agent.tools.tail.model import ContractState
from edge_agent.tools.tail.view import render_dashboard, render_line

ROOT = "campus/s1/gw1"
NOW = 1_795_852_800.0  # 2026-11-28T08:00:00Z
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _iso(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def envelope(
    kind: str,
    device: str,
    seq: int,
    data: dict[str, Any],
    *,
    msg_id: str | None = None,
    epoch: str = "ep1",
    ts: float = NOW,
    **extra: Any,
) -> bytes:
    doc: dict[str, Any] = {
        "v": 1,
        "msg_id": msg_id or f"msg-{epoch}-{seq}",
        "epoch": epoch,
        "seq": seq,
        "ts": _iso(ts),
        "device": device,
        "kind": kind,
        "historical": False,
        "data": data,
    }
    doc.update(extra)
    return json.dumps(doc).encode()


AIR_META = json.dumps(
    {
        "kind": "modbus",
        "model": "air7in1",
        "location": {"building": "b1", "room": "r101"},
        "metrics": [
            {"name": "co2", "unit": "ppm", "description": "CO2"},
            {"name": "temperature", "unit": "°C", "description": "Air temperature"},
            {"name": "humidity", "unit": "%RH", "description": "Relative humidity"},
        ],
    }
).encode()

ALARM = {
    "alarm_id": "a-co2-1",
    "rule": "co2_high",
    "device": "b1-r101-air",
    "severity": "major",
    "state": "active_unacked",
    "value": 1650,
    "threshold": 1500,
    "message": "CO2 high in r101",
    "raised_at": _iso(NOW),
    "acked_by": None,
    "snapshot": None,
}


@pytest.fixture
def state() -> ContractState:
    return ContractState(ROOT, clock=lambda: NOW + 5)


def feed_air(state: ContractState) -> None:
    state.feed(f"{ROOT}/devices/b1-r101-air/meta", AIR_META, True)
    state.feed(
        f"{ROOT}/devices/b1-r101-air/state",
        json.dumps({"state": "online", "since": _iso(NOW - 60), "last_error": None}).encode(),
        True,
    )
    state.feed(
        f"{ROOT}/telemetry/b1-r101-air",
        envelope(
            "telemetry",
            "b1-r101-air",
            1,
            {"co2": 812, "temperature": 23.4, "humidity": 41.0},
            quality="good",
        ),
    )


def test_meta_and_telemetry_give_latest_values_with_units(state: ContractState) -> None:
    feed_air(state)
    dev = state.devices["b1-r101-air"]
    assert (dev.kind, dev.model, dev.building, dev.room) == ("modbus", "air7in1", "b1", "r101")
    assert dev.units == {"co2": "ppm", "temperature": "°C", "humidity": "%RH"}
    assert dev.state == "online"
    assert dev.values["co2"].value == 812
    assert dev.values["temperature"].value == 23.4
    assert dev.values["co2"].quality == "good"
    assert dev.values["co2"].ts == pytest.approx(NOW)
    assert dev.telemetry == 1

    # A newer reading replaces the value; an older one (backlog replay) does not.
    state.feed(
        f"{ROOT}/telemetry/b1-r101-air",
        envelope("telemetry", "b1-r101-air", 2, {"co2": 900}, ts=NOW + 30, quality="uncertain"),
    )
    state.feed(
        f"{ROOT}/telemetry/b1-r101-air",
        envelope("telemetry", "b1-r101-air", 3, {"co2": 500}, ts=NOW - 600, historical=True),
    )
    assert dev.values["co2"].value == 900
    assert dev.values["co2"].quality == "uncertain"
    assert dev.telemetry == 3
    assert state.historical == 1
    assert state.messages == 5


def test_status_and_health_are_kept(state: ContractState) -> None:
    state.feed(
        f"{ROOT}/status",
        json.dumps(
            {
                "state": "online",
                "ts": _iso(NOW - 3600),
                "agent_version": "0.1.0",
                "epoch": "ep1",
                "devices": 3,
            }
        ).encode(),
        True,
    )
    state.feed(
        f"{ROOT}/health",
        json.dumps(
            {
                "outbox": {
                    "depth": 42,
                    "bytes": 123456,
                    "oldest_age_s": 12.5,
                    "dropped": {"telemetry": 7, "event": 1},
                },
                "publish_rate": 3.5,
                "uptime_s": 3600,
            }
        ).encode(),
        True,
    )
    assert state.status == "online"
    gw = state.gateway
    assert gw is not None
    assert (gw.agent_version, gw.device_count) == ("0.1.0", 3)
    health = state.health
    assert health is not None
    assert (health.depth, health.bytes, health.oldest_age_s) == (42, 123456, 12.5)
    assert health.dropped_total == 8
    assert health.publish_rate == 3.5

    state.feed(f"{ROOT}/status", b'{"state":"offline","reason":"lost"}', True)
    assert state.status == "offline"
    assert state.gateway is not None
    assert state.gateway.reason == "lost"


def test_seq_gap_is_counted_and_filled_by_a_late_message(state: ContractState) -> None:
    topic = f"{ROOT}/telemetry/b1-r101-air"
    for seq in (10, 11, 14):  # 12 and 13 missing
        state.feed(topic, envelope("telemetry", "b1-r101-air", seq, {"co2": seq}))
    assert state.gaps == 2
    # Lanes drain in priority order, so a missing seq may still arrive: it is no longer a gap.
    state.feed(f"{ROOT}/events/door-1", envelope("event", "door-1", 12, {}, type="door_opened"))
    assert state.gaps == 1
    # A new epoch (outbox created anew) starts its own sequence: no gap across epochs.
    state.feed(topic, envelope("telemetry", "b1-r101-air", 1, {"co2": 1}, epoch="ep2"))
    state.feed(topic, envelope("telemetry", "b1-r101-air", 2, {"co2": 2}, epoch="ep2"))
    assert state.gaps == 1
    assert state.duplicates == 0


def test_an_announced_seq_skip_is_not_a_gap(state: ContractState) -> None:
    # After an unclean stop the agent goes on above its seq reservation and says so with a
    # seq_skipped event (contract 1.1, docs/mqtt.md): the platform's view has no loss there.
    topic = f"{ROOT}/telemetry/b1-r101-air"
    for seq in (40, 41, 42, 43):
        state.feed(topic, envelope("telemetry", "b1-r101-air", seq, {"co2": seq}))
    skip = {"from": 44, "to": 1003, "count": 960, "reason": "unclean_stop"}
    state.feed(f"{ROOT}/events/gw1", envelope("event", "gw1", 1004, skip, type="seq_skipped"))
    state.feed(topic, envelope("telemetry", "b1-r101-air", 1005, {"co2": 1}))
    assert state.gaps == 0
    # a real hole next to the announced range still counts
    state.feed(topic, envelope("telemetry", "b1-r101-air", 1008, {"co2": 2}))
    assert state.gaps == 2


def test_duplicate_msg_id_is_counted_once_per_retransmission(state: ContractState) -> None:
    topic = f"{ROOT}/telemetry/b1-r101-air"
    first = envelope("telemetry", "b1-r101-air", 5, {"co2": 800}, msg_id="01JDAAA")
    state.feed(topic, first)
    state.feed(topic, envelope("telemetry", "b1-r101-air", 6, {"co2": 801}))
    state.feed(topic, first)  # QoS 1 redelivery: same msg_id
    state.feed(topic, first)
    assert state.duplicates == 2
    assert state.gaps == 0
    assert state.seq_reused == 0
    # The retransmission (same ts as the newer reading) does not overwrite the value.
    assert state.devices["b1-r101-air"].values["co2"].value == 801
    # Same seq in the same epoch but another msg_id: a contract violation, not a duplicate.
    state.feed(topic, envelope("telemetry", "b1-r101-air", 6, {"co2": 1}, msg_id="other"))
    assert state.seq_reused == 1
    assert state.duplicates == 2


def test_retained_active_alarm_then_empty_payload_removes_it(state: ContractState) -> None:
    topic = f"{ROOT}/alarms/active/a-co2-1"
    state.feed(topic, envelope("alarm", "b1-r101-air", 7, ALARM), True)
    alarm = state.active_alarms["a-co2-1"]
    assert (alarm.severity, alarm.state, alarm.device) == ("major", "active_unacked", "b1-r101-air")
    assert alarm.value == 1650

    # A plain alarm object (not wrapped in an envelope) is understood too.
    state.feed(topic, json.dumps({**ALARM, "state": "cleared_unacked"}).encode(), True)
    assert state.active_alarms["a-co2-1"].state == "cleared_unacked"

    state.feed(topic, b"", True)
    assert state.active_alarms == {}
    assert state.malformed == 0


def test_alarm_transition_and_event_go_to_recent_list(state: ContractState) -> None:
    state.feed(f"{ROOT}/alarms", envelope("alarm", "b1-r101-air", 1, ALARM))
    state.feed(
        f"{ROOT}/events/b1-door-1",
        envelope(
            "event",
            "b1-door-1",
            2,
            {"card": "h:0123456789abcdef", "reader": "r1", "result": "granted", "direction": "in"},
            type="card_read",
        ),
    )
    kinds = [(e.kind, e.type, e.device_id) for e in state.events]
    assert kinds == [("alarm", "co2_high", "b1-r101-air"), ("event", "card_read", "b1-door-1")]
    assert state.devices["b1-door-1"].events == 1


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (f"{ROOT}/telemetry/b1-r101-air", b"{not json"),
        (f"{ROOT}/telemetry/b1-r101-air", b"[1, 2]"),
        (f"{ROOT}/telemetry/b1-r101-air", b'{"v":1,"seq":3}'),  # no data object
        (f"{ROOT}/status", b"\xff\xfe"),
        (f"{ROOT}/devices/x/meta", b"nul"),
    ],
)
def test_malformed_payload_is_counted_never_raised(
    state: ContractState, topic: str, payload: bytes
) -> None:
    assert state.feed(topic, payload, False) == "malformed"
    assert state.malformed == 1
    assert state.malformed_log[-1][0] == topic
    text = render_dashboard(state, 80, 24)
    assert "malformed 1" in text
    assert "MALFORMED" in render_line(topic, payload, state=state)


def test_snapshots_are_counted_and_foreign_topics_ignored(state: ContractState) -> None:
    assert state.feed(f"{ROOT}/snapshots/cam-1/snap-1", b"\xff\xd8\xff\xe0jpeg") == "snapshot"
    assert state.feed("campus/other/gw9/telemetry/x", b"{}") == "foreign"
    assert state.snapshots == 1
    assert state.devices["cam-1"].snapshots == 1
    assert state.messages == 1
    assert state.malformed == 0


@pytest.mark.parametrize("language", ["en", "zh"])
def test_an_alarm_with_a_picture_shows_its_snapshot_topic(
    state: ContractState, language: str
) -> None:
    # the demo's courtyard alarm: the live view says which picture goes with it, so a
    # user can find it on ROOT/snapshots/... (the bytes arrive on their own topic)
    picture = {"topic": f"{ROOT}/snapshots/courtyard-cam/01m8n6e3w0nqf", "sha256": "ab" * 32}
    alarm = {**ALARM, "device": "courtyard-cam", "rule": "courtyard_intrusion", "snapshot": picture}
    raised = envelope("alarm", "courtyard-cam", 1, alarm)
    state.feed(f"{ROOT}/alarms/active/a-court-1", raised, True)
    text = render_dashboard(state, 120, 24, language)  # type: ignore[arg-type]
    label = "picture" if language == "en" else "抓图"
    assert f"{label} snapshots/courtyard-cam/01m8n6e3w0nqf" in text
    line = render_line(f"{ROOT}/alarms", envelope("alarm", "courtyard-cam", 2, alarm), state=state)
    assert line.endswith(" picture=snapshots/courtyard-cam/01m8n6e3w0nqf")
    # an alarm without a picture (snapshot: null) says nothing about one
    state.feed(f"{ROOT}/alarms/active/a-co2-1", envelope("alarm", "b1-r101-air", 3, ALARM), True)
    plain = render_line(f"{ROOT}/alarms", envelope("alarm", "b1-r101-air", 4, ALARM))
    assert "picture" not in plain
    assert render_dashboard(state, 120, 24, language).count(label) == 1  # type: ignore[arg-type]


def test_wildcard_root_keys_devices_by_gateway() -> None:
    state = ContractState("campus/+/+", clock=lambda: NOW)
    for site in ("s1", "s2"):
        state.feed(
            f"campus/{site}/gw1/telemetry/b1-r101-air",
            envelope("telemetry", "b1-r101-air", 1, {"co2": 700}, epoch=site),
        )
        state.feed(f"campus/{site}/gw1/status", b'{"state":"online"}', True)
    assert set(state.devices) == {"campus/s1/gw1/b1-r101-air", "campus/s2/gw1/b1-r101-air"}
    assert set(state.gateways) == {"campus/s1/gw1", "campus/s2/gw1"}
    # Same msg_id prefix and seq on two gateways with their own epochs: no duplicate, no gap.
    assert (state.duplicates, state.gaps) == (0, 0)
    assert "campus/s2/gw1/b1-r101-air" in render_dashboard(state, 100, 30)


def test_invalid_root_is_refused() -> None:
    with pytest.raises(ValueError, match="root"):
        ContractState("campus/#")


def _cells(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in line)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_dashboard_fits_80x24_and_shows_devices(state: ContractState, language: str) -> None:
    feed_air(state)
    for i in range(30):  # more devices than fit: the screen is cut, not overflowed
        state.feed(
            f"{ROOT}/telemetry/b2-meter-{i:02d}",
            envelope("telemetry", f"b2-meter-{i:02d}", 100 + i, {"power_total": 1200.5 + i}),
        )
    state.feed(f"{ROOT}/alarms/active/a-co2-1", json.dumps(ALARM).encode(), True)
    text = render_dashboard(state, 80, 24, language, color=False, tz=UTC)  # type: ignore[arg-type]
    lines = text.split("\n")
    assert len(lines) <= 24
    assert all(_cells(line) <= 80 for line in lines), [ln for ln in lines if _cells(ln) > 80]
    assert "b1-r101-air" in text
    assert "co2=812ppm" in text
    assert "temp=23.4°C" in text
    assert "co2_high" in text  # the active alarm is on screen
    assert ("more" if language == "en" else "更多") in text
    assert ("online" if language == "en" else "在线") in text
    assert "\x1b[" not in text


def test_dashboard_colours_only_when_asked(state: ContractState) -> None:
    feed_air(state)
    coloured = render_dashboard(state, 80, 24, color=True)
    assert "\x1b[32m" in coloured  # online in green
    plain_lines = ANSI.sub("", coloured).split("\n")
    assert all(_cells(line) <= 80 for line in plain_lines)
    assert ANSI.sub("", coloured) == render_dashboard(state, 80, 24, color=False)


def test_dashboard_tiny_screen_does_not_overflow(state: ContractState) -> None:
    feed_air(state)
    text = render_dashboard(state, 20, 3, "zh")
    lines = text.split("\n")
    assert len(lines) == 3
    assert all(_cells(line) <= 20 for line in lines)


def test_render_line_telemetry_uses_units_from_meta(state: ContractState) -> None:
    state.feed(f"{ROOT}/devices/b1-r101-air/meta", AIR_META, True)
    payload = envelope(
        "telemetry",
        "b1-r101-air",
        1,
        {"co2": 812, "temperature": 23.4, "humidity": 41.0},
        ts=NOW + 1.123,
        quality="good",
    )
    line = render_line(f"{ROOT}/telemetry/b1-r101-air", payload, state=state, tz=UTC)
    assert line == (
        "08:00:01.123 telemetry b1-r101-air co2=812ppm temperature=23.4°C humidity=41%RH [good]"
    )
    # Without meta, values are printed bare.
    bare = render_line(f"{ROOT}/telemetry/b1-r101-air", payload, tz=UTC)
    assert "co2=812 temperature=23.4 " in bare


def test_render_line_other_kinds() -> None:
    alarm = render_line(f"{ROOT}/alarms", envelope("alarm", "b1-r101-air", 1, ALARM), tz=UTC)
    for word in ("alarm", "major", "co2_high", "1650"):
        assert word in alarm
    event = render_line(
        f"{ROOT}/events/door-1",
        envelope("event", "door-1", 2, {"result": "denied", "card": "h:00"}, type="card_read"),
        tz=UTC,
    )
    assert "card_read denied" in event
    # door events read as what happened; a controller's record bookkeeping is left out
    denied = render_line(
        f"{ROOT}/events/gate-main",
        envelope("event", "gate-main", 3, {"result": "denied", "reason": "no_privilege",
                 "reader": "gate-lane-1-in", "card": "h:0123456789abcdef", "record_index": 7},
                 type="card_read"),
        tz=UTC,
    )  # fmt: skip
    assert "card_read denied reason=no_privilege reader=gate-lane-1-in card=h:0123" in denied
    wg_door = {"door": 2, "direction": "in", "record_index": 6, "reason_code": 38}
    forced = render_line(
        f"{ROOT}/events/gate-main",
        envelope("event", "gate-main", 4, wg_door, type="door_forced"),
        tz=UTC,
    )
    assert forced.endswith("gate-main door_forced door=2 direction=in")
    unknown = {"input": "unknown", "record_type": 2, "reason_code": 28, "record_index": 9}
    raw = render_line(
        f"{ROOT}/events/gate-main",
        envelope("event", "gate-main", 5, unknown, type="digital_input"),
        tz=UTC,
    )
    assert "input=unknown record_type=2 reason_code=28 record_index=9" in raw
    state_line = render_line(
        f"{ROOT}/devices/m1/state", b'{"state":"offline","last_error":"timeout"}', tz=UTC
    )
    assert "m1 offline error: timeout" in state_line
    status = render_line(f"{ROOT}/status", b'{"state":"offline","reason":"shutdown"}', tz=UTC)
    assert "status    campus/s1/gw1 offline reason=shutdown" in status
    health = render_line(
        f"{ROOT}/health", b'{"outbox":{"depth":3,"dropped":{"telemetry":2}}}', tz=UTC
    )
    assert "outbox=3 dropped=2" in health
    cleared = render_line(f"{ROOT}/alarms/active/a1", b"", tz=UTC)
    assert "cleared" in cleared
    coloured = render_line(f"{ROOT}/alarms", envelope("alarm", "x", 1, ALARM), color=True)
    assert "\x1b[31m" in coloured


# -- hostile payloads: nothing from the network reaches the terminal as a control sequence ------
#: Retitle the terminal (OSC 0 ... BEL), clear it (CSI 2J), return to column 0, a C1 CSI
#: (U+009B), backspace, and a right-to-left override.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m\x08\u202e"
HOSTILE_SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\r\\x9b31m\\x08\\u202e"
#: Every character a terminal would act on; what the console prints must hold none.
TERMINAL_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _hostile_messages() -> list[tuple[str, bytes]]:
    evil_id = "evil\x1b[31m"
    return [
        (
            f"{ROOT}/devices/{evil_id}/meta",
            json.dumps({"kind": HOSTILE, "model": HOSTILE}).encode(),
        ),
        (
            f"{ROOT}/devices/{evil_id}/state",
            json.dumps({"state": "offline", "last_error": HOSTILE}).encode(),
        ),
        (
            f"{ROOT}/telemetry/{evil_id}",
            envelope("telemetry", evil_id, 1, {"co2": 812, f"k{HOSTILE}": HOSTILE}),
        ),
        (
            f"{ROOT}/events/{evil_id}",
            envelope("event", evil_id, 2, {"zone": [HOSTILE], "active": True}, type=HOSTILE),
        ),
        (
            f"{ROOT}/alarms",
            envelope(
                "alarm",
                evil_id,
                3,
                {"alarm_id": "a1", "rule": HOSTILE, "device": evil_id, "message": HOSTILE},
            ),
        ),
        (f"{ROOT}/status", json.dumps({"state": "online", "reason": HOSTILE}).encode()),
        (f"{ROOT}/cmd/{HOSTILE}", HOSTILE.encode()),
        (f"{ROOT}/telemetry/x", b"not json " + HOSTILE.encode()),
        (f"other/{HOSTILE}", HOSTILE.encode()),
    ]


def test_tail_lines_show_control_characters_escaped() -> None:
    state = ContractState("campus/+/+", clock=lambda: NOW)
    lines = []
    for topic, payload in _hostile_messages():
        state.feed(topic, payload)
        lines.append(render_line(topic, payload, state=state, tz=UTC, received=NOW))
        lines.append(render_line(topic, payload, tz=UTC, received=NOW))  # without state
    text = "\n".join(lines)
    assert not TERMINAL_CONTROL.search(text), [ln for ln in lines if TERMINAL_CONTROL.search(ln)]
    assert HOSTILE_SHOWN in text
    assert "evil\\x1b[31m" in text  # the device id taken from the topic


@pytest.mark.parametrize("color", [False, True])
def test_dashboard_shows_control_characters_escaped(color: bool) -> None:
    state = ContractState(ROOT, clock=lambda: NOW)
    for topic, payload in _hostile_messages():
        state.feed(topic, payload)
    screen = render_dashboard(state, 200, 60, color=color, now=NOW, tz=UTC)
    # Our own colours are the only escape sequences on the screen.
    plain = ANSI.sub("", screen)
    assert not TERMINAL_CONTROL.search(plain.replace("\n", ""))
    assert "evil\\x1b[31m" in plain
    assert "\\x1b]0;pwned\\x07" in plain


# -- rich draws the screen, but never reads markup out of a payload -------------------------------
MARKUP = "[bold red]x[/] [link=https://example.invalid]y[/link] [/]"


def test_rich_markup_in_a_payload_is_shown_literally() -> None:
    state = ContractState(ROOT, clock=lambda: NOW)
    messages = [
        (
            f"{ROOT}/devices/b1-r101-air/state",
            json.dumps({"state": "offline", "last_error": MARKUP}),
        ),
        (f"{ROOT}/telemetry/b1-r101-air", envelope("telemetry", "b1-r101-air", 1, {"co2": MARKUP})),
        (f"{ROOT}/events/door-1", envelope("event", "door-1", 2, {"zone": MARKUP}, type=MARKUP)),
        (f"{ROOT}/alarms/active/a1", json.dumps({**ALARM, "message": MARKUP})),
    ]
    for topic, payload in messages:
        raw = payload if isinstance(payload, bytes) else payload.encode()
        state.feed(topic, raw)
        for color in (False, True):
            line = ANSI.sub("", render_line(topic, raw, state=state, color=color, tz=UTC))
            assert MARKUP in line, line
    for color in (False, True):
        screen = render_dashboard(state, 300, 60, color=color, now=NOW, tz=UTC)
        plain = ANSI.sub("", screen)
        assert plain.count(MARKUP) >= 4, plain  # state error, value, event, alarm message
        assert "\x1b]8;" not in screen  # no hyperlink escape made from [link=...]
    # Our own colours still work: the offline state is red, from our style, not the payload's.
    assert "\x1b[31m" in render_line(messages[0][0], messages[0][1].encode(), color=True)


def test_tail_does_not_import_the_publisher() -> None:
    # `tail` runs on an operator's laptop: it needs paho and rich, not the agent's publisher
    # (and its outbox/SQLite stack).
    code = (
        "import sys, edge_agent.tools.tail.model, edge_agent.tools.tail.view; "
        "print(sorted(m for m in sys.modules if m in "
        "('edge_agent.mqtt.publisher', 'edge_agent.outbox.store')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_dashboard_aligns_cjk_ids_and_cuts_long_values(state: ContractState) -> None:
    feed_air(state)
    long_value = "很热" * 60
    for i, device in enumerate(("b3-门禁-1", "b3-教室空调-二楼")):
        state.feed(f"{ROOT}/devices/{device}/state", b'{"state":"online","last_error":null}', True)
        state.feed(
            f"{ROOT}/telemetry/{device}",
            envelope("telemetry", device, 10 + i, {"温度": long_value}),
        )
    lines = render_dashboard(state, 80, 24, "zh", now=NOW + 5, tz=UTC).split("\n")
    rows = [ln for ln in lines if "在线" in ln]
    assert len(rows) == 3, lines
    # Each id shown whole, and the state column starts at the same screen column on every row.
    assert any(" b3-教室空调-二楼 " in ln for ln in rows)
    starts = {_cells(ln[: ln.index("在线")]) for ln in rows}
    assert len(starts) == 1, rows
    cut = [ln for ln in rows if "很热" in ln]
    assert len(cut) == 2
    assert all(ln.rstrip().endswith("…") and _cells(ln) <= 80 for ln in cut), cut
