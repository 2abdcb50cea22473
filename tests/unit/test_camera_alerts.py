"""The pure parts of the native camera kinds (issue 11): alarms as edges
(drivers/camera_edges.py), a Hikvision camera's notifications (drivers/hikvision/events.py
``Other``, drivers/hikvision_camera/alerts.py) and the two kinds' config checks."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.driver import DriverContext
from edge_agent.drivers import camera_edges
from edge_agent.drivers.camera_edges import Edges
from edge_agent.drivers.dahua.config import DahuaDevice
from edge_agent.drivers.dahua.driver import DahuaDriver
from edge_agent.drivers.dahua.events import DahuaEvent
from edge_agent.drivers.hikvision import events
from edge_agent.drivers.hikvision.alerts import AlertStream
from edge_agent.drivers.hikvision.events import Heartbeat, Other
from edge_agent.drivers.hikvision_camera import alerts
from edge_agent.drivers.hikvision_camera.alerts import Line
from edge_agent.drivers.hikvision_camera.config import HikvisionCameraDevice
from edge_agent.drivers.hikvision_camera.driver import HikvisionCameraDriver
from edge_agent.errors import NotDurableError

SHANGHAI = timezone(timedelta(hours=8))


# -- edges ----------------------------------------------------------------------------------


def test_a_held_state_is_one_start_and_one_end_after_its_last_repeat() -> None:
    e = Edges()
    assert e.start("k", "motion", {"zone": "a"}, 0.0, hold_s=5) == (
        "motion",
        {"zone": "a", "active": True},
    )
    for t in (1.0, 2.0, 3.0):  # the camera repeats every second
        assert e.start("k", "motion", {"zone": "a"}, t, hold_s=5) is None
    assert e.repeats == 3
    assert e.next_expiry() == 8.0
    assert e.expire(7.9) == []
    assert e.expire(8.0) == [("motion", {"zone": "a", "active": False})]
    assert e.expire(100.0) == []
    assert e.start("k", "motion", {"zone": "a"}, 101.0, hold_s=5) is not None  # a new edge


def test_an_explicit_state_lasts_until_its_stop_and_a_stray_stop_is_nothing() -> None:
    e = Edges()
    assert e.stop("k") is None  # a Stop for a state begun before the agent started
    assert e.start("k", "camera_tamper", {"reason": "covered"}, 0.0, hold_s=None) is not None
    assert e.next_expiry() is None
    assert e.expire(10**9) == []
    assert e.stop("k") == ("camera_tamper", {"reason": "covered", "active": False})
    assert e.stop("k") is None


def test_a_one_shot_is_one_event_and_no_end() -> None:
    e = Edges()
    assert e.start("l", "line_crossed", {"line": "g"}, 0.0, hold_s=2, one_shot=True) == (
        "line_crossed",
        {"line": "g"},
    )
    assert e.start("l", "line_crossed", {"line": "g"}, 1.0, hold_s=2, one_shot=True) is None
    assert e.expire(3.0) == []  # lapses silently
    assert e.start("l", "line_crossed", {"line": "g"}, 4.0, hold_s=2, one_shot=True) is not None
    assert e.stop("l") is None


def test_a_lost_stream_ends_every_active_state_saying_so() -> None:
    e = Edges()
    e.start("a", "motion", {"zone": "a"}, 0.0, hold_s=None)
    e.start("l", "line_crossed", {"line": "g"}, 0.0, hold_s=2, one_shot=True)
    assert e.lost() == [("motion", {"zone": "a", "active": False, "ended": "stream_lost"})]
    assert len(e) == 0


# -- Hikvision camera notifications ---------------------------------------------------------


def alert(event_type: str, state: str = "active", regions: tuple[int, ...] = ()) -> bytes:
    entries = "".join(
        f"<DetectionRegionEntry><regionID>{r}</regionID><sensitivityLevel>50</sensitivityLevel>"
        "</DetectionRegionEntry>"
        for r in regions
    )
    listed = f"<DetectionRegionList>{entries}</DetectionRegionList>" if regions else ""
    return (
        '<EventNotificationAlert version="2.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">'
        "<ipAddress>192.0.2.64</ipAddress><channelID>2</channelID>"
        "<dateTime>2026-11-30T09:00:00+08:00</dateTime><activePostCount>3</activePostCount>"
        f"<eventType>{event_type}</eventType><eventState>{state}</eventState>"
        f"<eventDescription>x</eventDescription>{listed}</EventNotificationAlert>"
    ).encode()


def test_a_camera_alert_keeps_channel_regions_time_and_count() -> None:
    n = events.notification(events.decode_body(alert("linedetection", regions=(1, 3))), SHANGHAI)
    assert n == Other(
        "linedetection",
        "active",
        channel=2,
        regions=(1, 3),  # two rules that fired: both kept (a repeated tag is a list)
        time=datetime(2026, 11, 30, 1, 0, tzinfo=UTC),
        count=3,
    )
    json_form = {
        "eventType": "fielddetection",
        "eventState": "active",
        "channelID": "1",
        "dateTime": "not a time",  # a camera event is never dropped for its time
        "DetectionRegionList": [{"regionID": 4}, {"RegionID": 6}],
    }
    got = events.notification(json_form, SHANGHAI)
    assert got == Other("fielddetection", "active", channel=1, regions=(4, 6))
    nvr = events.notification({"eventType": "VMD", "dynChannelID": 33}, SHANGHAI)
    assert isinstance(nvr, Other)
    assert nvr.channel == 33


def test_the_videoloss_heartbeat_stays_a_heartbeat_on_a_camera_stream() -> None:
    ctype = "multipart/mixed; boundary=boundary"
    stream = AlertStream(ctype, SHANGHAI)
    body = alert("videoloss", "inactive")
    part = b"--boundary\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n" % len(body)
    found = stream.feed(part + body + b"\r\n" + part + body + b"\r\n--boundary")
    assert found == [Heartbeat(), Heartbeat()]


ZONES = {(1, None): "courtyard", (1, 2): "shed"}
LINES = {(1, 1): Line("east-gate", "in")}


def test_hik_alarm_types_map_to_the_contract_with_the_sites_names() -> None:
    (vmd,) = alerts.alarms("VMD", 1, (), ZONES, LINES) or []
    assert (vmd.event_type, vmd.data["zone"], vmd.one_shot) == ("motion", "courtyard", False)
    fields = alerts.alarms("fielddetection", 1, (2, 5), ZONES, LINES) or []
    assert [(a.event_type, a.data["zone"]) for a in fields] == [
        ("motion", "shed"),
        ("motion", "ch1-field5"),  # a region the site did not name
    ]
    (line,) = alerts.alarms("linedetection", 1, (1,), ZONES, LINES) or []
    assert (line.event_type, line.data["line"], line.data["direction"], line.one_shot) == (
        "line_crossed",
        "east-gate",
        "in",
        True,
    )
    (cover,) = alerts.alarms("shelteralarm", 3, (), ZONES, LINES) or []
    assert (cover.event_type, cover.data["reason"], cover.data["channel"]) == (
        "camera_tamper",
        "covered",
        3,
    )
    tampers = [
        (a.data["reason"], a.key)
        for t in ("tamperdetection", "defocus", "scenechangedetection")
        for a in alerts.alarms(t, 1, (), ZONES, LINES) or []
    ]
    assert tampers == [
        ("covered", ("tamper", 1, "covered")),
        ("defocused", ("tamper", 1, "defocused")),
        ("scene_change", ("tamper", 1, "scene_change")),
    ]
    assert alerts.alarms("videoloss", 1, (), ZONES, LINES) is None
    assert alerts.alarms("PIR", 1, (), ZONES, LINES) is None


def test_an_inactive_post_ends_only_its_own_regions() -> None:
    keys: list[Any] = [("field", 1, 2), ("field", 1, 5), ("motion", 1, None), ("field", 2, 2)]
    assert alerts.ended_keys(keys, "fielddetection", 1, (5,)) == [("field", 1, 5)]
    assert alerts.ended_keys(keys, "fielddetection", 1, ()) == [("field", 1, 2), ("field", 1, 5)]
    assert alerts.ended_keys(keys, "VMD", 1, ()) == [("motion", 1, None)]
    assert alerts.ended_keys(keys, "videoloss", 1, ()) == []
    tampers: list[Any] = [("tamper", 1, "covered"), ("tamper", 1, "defocused")]
    assert alerts.ended_keys(tampers, "defocus", 1, ()) == [("tamper", 1, "defocused")]
    assert alerts.ended_keys(tampers, "shelteralarm", 1, ()) == [("tamper", 1, "covered")]


def test_the_hik_driver_turns_repeats_into_edges_and_inactive_into_the_end() -> None:
    driver = HikvisionCameraDriver(hik_config(), DriverContext({}))
    post = Other("fielddetection", "active", channel=1, regions=(2,))
    alive, out = driver.take([post, post, post], 0.0)
    assert alive
    assert [c for c, _ts in out] == [
        ("motion", {"channel": 1, "code": "fielddetection", "zone": "shed", "region": 2,
                    "active": True}),
    ]  # fmt: skip
    _alive, out = driver.take([Other("fielddetection", "Inactive", channel=1)], 1.0)
    assert [c[1]["active"] for c, _ts in out] == [False]
    _alive, out = driver.take([Heartbeat()], 2.0)
    assert out == []
    assert driver.counts["heartbeats"] == 1
    # a camera whose clock is years off: the event is stamped when the gateway read it
    wrong_clock = Other("VMD", "active", channel=1, time=datetime(2019, 1, 1, tzinfo=UTC))
    _alive, out = driver.take([wrong_clock], 3.0)
    assert [ts for _c, ts in out] == [None]


# -- Dahua edges ------------------------------------------------------------------------------


def test_the_dahua_driver_edges() -> None:
    driver = DahuaDriver(dahua_config(), DriverContext({}))
    motion = DahuaEvent("VideoMotion", "Start", 0, {"RegionName": ["Yard"]})
    stop = DahuaEvent("VideoMotion", "Stop", 0, {"RegionName": ["Yard"]})
    _alive, out = driver.take([motion, motion, stop, stop], 0.0)
    assert [(c[0], c[1]["zone"], c[1]["active"]) for c, _ts in out] == [
        ("motion", "Yard", True),
        ("motion", "Yard", False),
    ]
    counted = DahuaDriver(
        dahua_config(lines=[{"rule": "Gate", "name": "main-gate", "in_direction": "RightToLeft"}]),
        DriverContext({}),
    )
    crossings = [
        DahuaEvent("CrossLineDetection", "Start", 0, {"Name": "Gate", "Direction": d})
        for d in ("RightToLeft", "LeftToRight")
    ] + [
        DahuaEvent("CrossLineDetection", "Start", 0, {"Name": "Other", "Direction": "LeftToRight"})
    ]
    _alive, out = counted.take(crossings, 0.0)
    assert [(c[1]["line"], c[1]["direction"]) for c, _ts in out] == [
        ("main-gate", "in"),
        ("main-gate", "out"),
        ("Other", "LeftToRight"),  # a rule the site did not name: the camera's words
    ]
    assert out[1][0][1]["camera_direction"] == "LeftToRight"
    pulse = DahuaEvent("SceneChange", "Pulse", 0)
    _alive, out = driver.take([pulse], 10.0)
    assert [c[1]["active"] for c, _ts in out] == [True]
    assert driver.edges.expire(10.0 + driver.config.hold_s) == [
        ("camera_tamper", {"channel": 1, "index": 0, "code": "SceneChange",
                           "reason": "scene_change", "active": False}),
    ]  # fmt: skip


# -- config -----------------------------------------------------------------------------------


def hik_config(**extra: Any) -> HikvisionCameraDevice:
    return HikvisionCameraDevice.model_validate(
        {
            "id": "cam1",
            "kind": "hikvision_camera",
            "host": "127.0.0.1",
            "password": "${PW}",
            "zones": [{"channel": 1, "name": "courtyard"}, {"region": 2, "name": "shed"}],
            "lines": [{"region": 1, "name": "east-gate", "direction": "in"}],
            **extra,
        }
    )


def dahua_config(**extra: Any) -> DahuaDevice:
    return DahuaDevice.model_validate(
        {"id": "cam2", "kind": "dahua", "host": "127.0.0.1", "password": "${PW}", **extra}
    )


def test_config_checks() -> None:
    assert hik_config().base_url == "http://127.0.0.1:80"
    with pytest.raises(ValidationError, match="secrets must not be written"):
        hik_config(password="admin12345")
    with pytest.raises(ValidationError, match="region 2 is named twice"):
        hik_config(zones=[{"region": 2, "name": "a"}, {"region": 2, "name": "b"}])
    with pytest.raises(ValidationError, match="line 1 is named twice"):
        hik_config(lines=[{"region": 1, "name": "a"}, {"region": 1, "name": "b"}])
    d = dahua_config()
    assert d.codes == ["All"]
    assert DahuaDriver(d, DriverContext({})).stream_path() == (
        "/cgi-bin/eventManager.cgi?action=attach&codes=[All]&heartbeat=10"
    )
    with pytest.raises(ValidationError, match="shorter than silence_s"):
        dahua_config(heartbeat_s=30, silence_s=30)
    with pytest.raises(ValidationError, match="rule 'Gate' is named twice"):
        dahua_config(lines=[{"rule": "Gate", "in_direction": "LeftToRight"}] * 2)
    with pytest.raises(ValidationError, match="letters, digits"):
        dahua_config(codes=["VideoMotion]&x=[1"])


def test_the_edges_and_hik_camera_mapping_import_only_the_standard_library() -> None:
    for module in (camera_edges, alerts):
        path = Path(module.__file__ or "")
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] in sys.stdlib_module_names, f"{path.name}: {n}"


# -- events the outbox refuses ----------------------------------------------------------------


class RefusingLink:
    """A DeviceLink whose outbox refuses commits while ``refuse`` is set (a full disk)."""

    device_id = "cam2"
    cursor = None

    def __init__(self) -> None:
        self.refuse = True
        self.committed: list[Any] = []
        self.states: list[tuple[str, str | None]] = []

    def telemetry(self, data: Any, *, ts: Any = None, quality: str = "good") -> None:
        raise AssertionError("no telemetry")

    async def commit(self, events: Any, *, cursor: str | None = None) -> None:
        if self.refuse:
            raise NotDurableError("disk full")
        self.committed += list(events)

    def state(self, state: str, reason: str | None = None) -> None:
        self.states.append((state, reason))


async def test_events_the_outbox_refuses_wait_in_memory_and_go_out_with_the_next() -> None:
    driver = DahuaDriver(dahua_config(), DriverContext({}))
    link = RefusingLink()
    driver._open = True
    _alive, found = driver.take([DahuaEvent("VideoBlind", "Start", 0)], 0.0)
    await driver._commit(link, found)  # type: ignore[arg-type]
    assert link.committed == []
    assert link.states[-1][0] == "degraded"
    assert len(driver._pending) == 1
    link.refuse = False
    _alive, found = driver.take([DahuaEvent("VideoBlind", "Stop", 0)], 1.0)
    await driver._commit(link, found)  # type: ignore[arg-type]
    assert [(e.type, e.data["active"]) for e in link.committed] == [
        ("camera_tamper", True),
        ("camera_tamper", False),
    ]
    assert link.states[-1] == ("online", None)
    assert driver._pending == []
