"""ONVIF notifications -> contract events (drivers/onvif/events.py), on the real camera
captures of ../shared/fixtures/onvif/ (Hikvision, Dahua, Axis, Pelco, TRENDnet), read at test
time and never copied into the repository, and on hand-made notifications for the rules."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.drivers.onvif.events import (
    IGNORE,
    BadNotification,
    EdgeTracker,
    Mapped,
    Notification,
    UnknownTopic,
    classify,
    from_xml,
    parse_bool,
    parse_duration,
)
from tests import captures

#: what each capture with notifications must give, from a fresh start: the contract events
#: and the topics nobody knows. Everything else in them is known and no contract event
#: (CPU load, recording state, PTZ, day/night, storage) or an Initialized inactive state.
EXPECTED: dict[str, tuple[list[tuple[str, dict[str, Any]]], list[str]]] = {
    # Hikvision burst after subscribing: every property Initialized false -> nothing
    "hikvision_pullmessages_1.xml": ([], []),
    "hikvision_pullmessages_2.xml": ([], []),
    "hikvision_pullmessages_3.xml": ([], []),
    "trendnet_pullmessages_1.xml": ([], []),
    # Pelco D6230L: CellMotionDetector/Motion Initialized Value="True" (capital T, no
    # Source): motion is active at subscribe time
    "pelco_pullmessages_1.xml": ([("motion", {"zone": "default", "active": True})], []),
    "dahua_pullmessages_1.xml": ([], []),
    "unknown_pullmessages_1.xml": ([], []),
    **{f"axis_metadataevent_{i}.xml": ([], []) for i in range(1, 23)},
    # Axis PIR sensor Changed state=1
    "axis_metadataevent_3.xml": ([("motion", {"zone": "0", "active": True})], []),
    # Axis VMD 4 profiles Changed active=1
    "axis_metadataevent_10.xml": ([("motion", {"zone": "Camera1Profile1", "active": True})], []),
    "axis_metadataevent_11.xml": (
        [("motion", {"zone": "Camera1ProfileANY", "active": True})],
        [],
    ),
    # Axis Object Analytics: a scenario may be an area or a line; not guessed
    "axis_metadataevent_16.xml": (
        [],
        ["tnsaxis:CameraApplicationPlatform/ObjectAnalytics/Device1Scenario1"],
    ),
}


async def run(
    notes: list[Notification], tracker: EdgeTracker | None = None
) -> tuple[list[tuple[str, dict[str, Any]]], list[str], EdgeTracker]:
    tracker = tracker or EdgeTracker()
    unknown, mapped = [], []
    for n in notes:
        try:
            m = await classify(n)
        except UnknownTopic as err:
            unknown.append(str(err))
            continue
        if m is not IGNORE:
            assert isinstance(m, Mapped)
            mapped.append((n, m))
    events, states = tracker.step(mapped)
    tracker.adopt(states)
    return [(t, d) for t, d, _ in events], unknown, tracker


@pytest.mark.parametrize("name", captures.onvif_params(sorted(EXPECTED)))
async def test_capture_reads_as_its_index_says_and_maps_to_contract_events(name: str) -> None:
    case = next(c for c in captures.onvif_cases() if c["file"] == name)
    expected = case["expected"]
    notes = from_xml(captures.onvif_xml(name))
    # the reader agrees with what the XML plainly says (cases.json, written independently)
    assert len(notes) == expected["notification_count"]
    for n, want in zip(notes, expected.get("notifications") or [], strict=True):
        assert n.topic == want["topic"].strip()
        assert n.operation == want.get("PropertyOperation")
        assert [name for name, _ in n.source] == [s["Name"] for s in want.get("source") or []]
        # SimpleItems only (Pelco's LinkStatus is an ElementItem, which nothing maps)
        simple = [s["Value"] for s in want.get("data") or [] if "Value" in s]
        assert [v for _, v in n.data] == simple
        assert n.utc_time is not None
    events, unknown, _ = await run(notes)
    assert (events, unknown) == EXPECTED[name]
    for kind, data in events:
        assert kind in ("motion", "camera_tamper", "line_crossed", "digital_input")
        assert isinstance(data["active"], bool)


async def test_a_hikvision_burst_after_a_resubscription_repeats_nothing_and_tells_what_ended() -> (
    None
):
    burst = from_xml(captures.onvif_xml("hikvision_pullmessages_1.xml"))
    motion = next(n for n in burst if n.topic == "tns1:RuleEngine/CellMotionDetector/Motion")
    active = Notification(
        motion.topic, "Changed", motion.utc_time, motion.source, (), (("IsMotion", "true"),)
    )
    events, _, tracker = await run([active])
    assert events == [("motion", {"zone": "MyMotionDetectorRule", "active": True})]
    # the camera rebooted while motion was on; the new subscription's burst says false
    events, _, tracker = await run(burst, tracker)
    assert events == [("motion", {"zone": "MyMotionDetectorRule", "active": False})]
    # the same burst again (another re-subscription): nothing new
    events, _, tracker = await run(burst, tracker)
    assert events == []


def note(topic: str, value: str, op: str = "Changed", **source: str) -> Notification:
    name = {
        "tns1:RuleEngine/CellMotionDetector/Motion": "IsMotion",
        "tns1:RuleEngine/TamperDetector/Tamper": "IsTamper",
        "tns1:Device/Trigger/DigitalInput": "LogicalState",
        "tns1:RuleEngine/LineDetector/Crossed": "ObjectId",
    }.get(topic, "State")
    return Notification(topic, op, 1.0, tuple(source.items()), (), ((name, value),))


@pytest.mark.parametrize(
    ("spelling", "want"),
    [("true", True), ("1", True), ("True", True), ("false", False), ("0", False)],
)
async def test_booleans_true_and_1_are_both_accepted(spelling: str, want: bool) -> None:
    for topic in (
        "tns1:RuleEngine/CellMotionDetector/Motion",  # onvif-parsers compares with "true"
        "tns1:VideoSource/MotionAlarm",
        "tnsaxis:CameraApplicationPlatform/VMD/Camera1Profile1",  # our own table
    ):
        m = await classify(note(topic, spelling, Rule="r1", Source="s1"))
        assert isinstance(m, Mapped)
        assert (m.type, m.active) == ("motion", want)
    assert parse_bool(spelling) is want
    assert parse_bool("maybe") is None


async def test_types_reasons_and_names() -> None:
    names = {"MyTamperDetectorRule": "lens", "AlarmIn_1": "fire-door"}
    cases = [
        (
            note("tns1:RuleEngine/TamperDetector/Tamper", "true", Rule="MyTamperDetectorRule"),
            ("camera_tamper", {"reason": "covered"}, True),
        ),
        (
            note("tns1:VideoSource/ImageTooBlurry/ImagingService", "1", Source="0"),
            ("camera_tamper", {"reason": "defocused"}, True),
        ),
        (
            note("tns1:VideoSource/GlobalSceneChange/ImagingService", "true", Source="0"),
            ("camera_tamper", {"reason": "scene_change"}, True),
        ),
        (
            note("tns1:Device/Trigger/DigitalInput", "true", InputToken="000"),
            ("digital_input", {"input": "000"}, True),
        ),
        # onvif-parsers calls tnshik:AlarmIn a "Motion Alarm": it is an input contact
        (
            note("tns1:Device/Trigger/tnshik:AlarmIn", "true", AlarmInToken="AlarmIn_1"),
            ("digital_input", {"input": "fire-door"}, True),
        ),
    ]
    for n, (kind, data, active) in cases:
        m = await classify(n, names)
        assert isinstance(m, Mapped)
        assert (m.type, m.data, m.active) == (kind, data, active), n.topic


async def test_lights_off_is_not_tamper_and_unknown_topics_are_told_apart() -> None:
    dark = note("tns1:VideoSource/ImageTooDark/ImagingService", "true", Source="0")
    assert await classify(dark) is IGNORE
    assert await classify(note("tns1:Monitoring/ProcessorUsage", "75", Token="cpu")) is IGNORE
    with pytest.raises(UnknownTopic):
        await classify(note("tns1:Vendor/Something/New", "true"))
    with pytest.raises(BadNotification):
        await classify(note("tns1:RuleEngine/CellMotionDetector/Motion", "maybe", Rule="r"))


async def test_each_line_crossing_is_an_event_and_a_burst_is_none() -> None:
    cross = note("tns1:RuleEngine/LineDetector/Crossed", "1", Rule="gate-line")
    init = note("tns1:RuleEngine/LineDetector/Crossed", "1", "Initialized", Rule="gate-line")
    events, _, tracker = await run([cross, cross])
    assert events == [("line_crossed", {"line": "gate-line", "direction": None})] * 2
    events, _, _ = await run([init], tracker)
    assert events == []


async def test_states_survive_in_the_cursor_and_a_bad_cursor_starts_empty() -> None:
    on = note("tns1:RuleEngine/TamperDetector/Tamper", "true", "Changed", Rule="t")
    _, _, tracker = await run([on])
    again = EdgeTracker.decode(tracker.encode())
    assert again.states == tracker.states
    init = note("tns1:RuleEngine/TamperDetector/Tamper", "true", "Initialized", Rule="t")
    events, _, _ = await run([init], again)
    assert events == []  # the agent restarted: the camera is still covered, told already
    for bad in (None, "", "not json", "[1]", '{"v": 1, "states": 3}'):
        assert EdgeTracker.decode(bad).states == {}


def test_durations_the_cameras_write() -> None:
    assert parse_duration("PT5S") == 5
    assert parse_duration("PT1M30S") == 90
    assert parse_duration("PT0.5S") == 0.5
    assert parse_duration("P1DT1H") == 90000
    for bad in ("", "P", "PT", "5", "PT-1S", "2026-11-30T02:00:00Z"):
        assert parse_duration(bad) is None
