"""Native camera events end to end (issue 11): the simulated Hikvision camera
(simulators/hikvision_camera.py, ISAPI alertStream) and Dahua camera (simulators/dahua.py,
eventManager attach), each over HTTP with digest on 127.0.0.1 -> the agent (supervisor,
pipeline, outbox) -> a real mosquitto. Alarms arrive as edges (one active, one inactive, never
the camera's repeats); a wrong password, a garbled part, a stream cut in the middle of a part
and a hung camera are each reported and recovered from; the real Dahua captures of
``../shared/fixtures/access/`` pass through the driver at test time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.drivers.dahua.driver import DahuaDriver
from edge_agent.drivers.hikvision_camera.driver import HikvisionCameraDriver
from edge_agent.simulators.dahua import DahuaCamera
from edge_agent.simulators.hikvision_camera import HikCamera
from edge_agent.supervisor import Agent
from tests import captures
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, MqttSubscriber, Received, mqtt_subscriber

pytestmark = pytest.mark.integration

PASSWORD = "Cam-Pw-2026"
DEVICE = "cam1"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PW", PASSWORD)


def agent_for(tmp_path: Path, broker: MqttBroker, site: str, device: dict[str, Any]) -> Agent:
    cfg = {
        "site": {"id": site, "gateway_id": "gw1"},
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "devices": [
            {
                "id": DEVICE,
                "host": "127.0.0.1",
                "password": "${CAM_PW}",
                "timeout_s": 3,
                "retry_max_s": 1,
                **device,
            }
        ],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Agent(load_config(path), path)


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


def events_of(sub: MqttSubscriber, root: str) -> list[dict[str, Any]]:
    return [
        check_envelope(m.payload, "event", DEVICE)
        for m in sub.messages
        if m.topic == f"{root}/events/{DEVICE}"
    ]


def brief(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(type, zone/line/reason, active) of each event."""
    out = []
    for e in events:
        d = e["data"]
        what = d.get("zone") or d.get("line") or d.get("reason")
        out.append((e["type"], what, d.get("active")))
    return out


async def wait_events(sub: MqttSubscriber, root: str, n: int, timeout: float = 20) -> None:
    def pred(m: Received) -> bool:
        return m.topic == f"{root}/events/{DEVICE}"

    await asyncio.to_thread(sub.wait_for_count, n, pred, timeout)


def states_of(sub: MqttSubscriber, root: str) -> list[dict[str, Any]]:
    payloads = dict.fromkeys(
        m.payload for m in sub.messages if m.topic == f"{root}/devices/{DEVICE}/state"
    )
    return [json.loads(p) for p in payloads]


async def wait_state(sub: MqttSubscriber, root: str, state: str, after: int = 0) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            found = [s for s in states_of(sub, root)[after:] if s["state"] == state]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)


async def until(cond: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def hik(port: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "hikvision_camera", "port": port, "silence_s": 1, "hold_s": 0.5, **extra}


def dahua(port: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "dahua", "port": port, "silence_s": 3, "heartbeat_s": 1, **extra}


# -- Hikvision ------------------------------------------------------------------------------


async def test_hik_camera_alarms_arrive_as_edges_never_as_repeats(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hikcam-edges/gw1"
    device = hik(
        0,
        zones=[{"channel": 1, "name": "courtyard"}, {"channel": 1, "region": 2, "name": "shed"}],
        lines=[{"channel": 1, "region": 1, "name": "east-gate", "direction": "in"}],
    )
    async with HikCamera(password=PASSWORD, heartbeat_s=0.2, repeat_s=0.05) as cam:
        device["port"] = cam.port
        agent = agent_for(tmp_path, mqtt_broker, "hikcam-edges", device)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                cam.begin("VMD")  # posted every 50 ms
                await until(lambda: len(cam.posts) >= 8)
                cam.end("VMD")  # an explicit inactive
                cam.begin("linedetection", regions=(1,))  # one crossing, posted 6 times
                await until(lambda: sum(p[0] == "linedetection" for p in cam.posts) >= 6)
                cam.end("linedetection", regions=(1,), inactive=False)
                cam.begin("fielddetection", regions=(2,))
                await until(lambda: sum(p[0] == "fielddetection" for p in cam.posts) >= 4)
                # no inactive: the firmware never says; it ends hold_s after the last post
                cam.end("fielddetection", regions=(2,), inactive=False)
                await wait_events(sub, root, 5)
                cam.begin("shelteralarm")
                await until(lambda: sum(p[0] == "shelteralarm" for p in cam.posts) >= 3)
                cam.end("shelteralarm")
                await wait_events(sub, root, 7)
                await asyncio.sleep(0.8)  # nothing more may come (past hold_s)
    events = events_of(sub, root)
    assert brief(events) == [
        ("motion", "courtyard", True),
        ("motion", "courtyard", False),
        ("line_crossed", "east-gate", None),
        ("motion", "shed", True),
        ("motion", "shed", False),
        ("camera_tamper", "covered", True),
        ("camera_tamper", "covered", False),
    ]
    assert events[2]["data"]["direction"] == "in"
    assert events[0]["data"]["channel"] == 1
    # the default rules: one tamper alarm for one covering, none for its end
    raised = [
        json.loads(m.payload)["data"]
        for m in sub.messages
        if m.topic == f"{root}/alarms" and json.loads(m.payload)["data"]["rule"] == "camera_tamper"
    ]
    assert [a["state"] for a in raised if a["state"] == "active_unacked"] == ["active_unacked"]
    driver = agent.drivers[DEVICE]
    assert isinstance(driver, HikvisionCameraDriver)
    assert driver.edges.repeats >= 10
    assert driver.counts["heartbeats"] >= 1


async def test_hik_camera_pictures_on_the_stream_never_leave_the_gateway(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hikcam-pictures/gw1"
    async with HikCamera(password=PASSWORD, heartbeat_s=0.2, pictures=True) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "hikcam-pictures", hik(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                cam.post("linedetection", regions=(1,))  # an XML part, then a JPEG part
                cam.post("fielddetection", regions=(2,))
                await wait_events(sub, root, 3)  # the intrusion ends hold_s later
    assert brief(events_of(sub, root)) == [
        ("line_crossed", "ch1-line1", None),
        ("motion", "ch1-field2", True),
        ("motion", "ch1-field2", False),
    ]
    for m in sub.messages:
        assert b"JFIF" not in m.payload
        assert b"person0" not in m.payload
    driver = agent.drivers[DEVICE]
    assert isinstance(driver, HikvisionCameraDriver)
    assert driver.counts["skipped"] == 0


async def test_hik_camera_wrong_password_is_offline_with_the_reason(
    tmp_path: Path, mqtt_broker: MqttBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAM_PW", "wrong")
    root = "campus/hikcam-401/gw1"
    async with HikCamera(password=PASSWORD, heartbeat_s=0.2) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "hikcam-401", hik(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                off = await wait_state(sub, root, "offline")
    assert "wrong user or password (HTTP 401)" in off["last_error"]
    assert cam.seen
    assert not any(ok for _m, _p, ok in cam.seen)


async def test_hik_camera_garbage_is_logged_once_and_a_cut_stream_reconnects(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent.drivers")
    root = "campus/hikcam-cut/gw1"
    async with HikCamera(password=PASSWORD, heartbeat_s=0.2, repeat_s=0.05) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "hikcam-cut", hik(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                for _ in range(3):
                    cam.inject(b"--boundary\r\nContent-Type: application/xml\r\n\r\n<Event")
                    cam.inject(b"NotificationAlert><broken>\r\n")
                cam.begin("VMD")
                await wait_events(sub, root, 1)
                # the camera dies in the middle of a part: the alarm ends as lost
                n = len(states_of(sub, root))
                cam.cut(b"--boundary\r\nContent-Type: application/xml\r\nContent-Len")
                off = await wait_state(sub, root, "offline", after=n)
                await wait_events(sub, root, 2)
                n = len(states_of(sub, root))
                await wait_state(sub, root, "online", after=n)
                await wait_events(sub, root, 3)  # still moving: a new edge
                cam.end("VMD")
                await wait_events(sub, root, 4)
    assert "closed" in off["last_error"] or "broke" in off["last_error"]
    assert cam.streams_opened >= 2
    events = events_of(sub, root)
    assert brief(events) == [
        ("motion", "ch1", True),
        ("motion", "ch1", False),
        ("motion", "ch1", True),
        ("motion", "ch1", False),
    ]
    assert events[1]["data"]["ended"] == "stream_lost"
    assert "ended" not in events[3]["data"]
    driver = agent.drivers[DEVICE]
    assert isinstance(driver, HikvisionCameraDriver)
    assert driver.counts["skipped"] == 3
    assert driver.counts["truncated"] == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("unreadable alertStream part" in w for w in warned) == 1, warned
    assert any("part x2" in r.getMessage() for r in caplog.records)


async def test_hik_camera_silent_goes_offline_and_comes_back(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hikcam-silent/gw1"
    async with HikCamera(password=PASSWORD, heartbeat_s=0.2) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "hikcam-silent", hik(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                cam.silence()
                off = await wait_state(sub, root, "offline")
                cam.resume()
                n = len(states_of(sub, root))
                await wait_state(sub, root, "online", after=n)
                cam.post("shelteralarm")
                await wait_events(sub, root, 1)
    assert "heartbeat" in off["last_error"]
    assert brief(events_of(sub, root)) == [("camera_tamper", "covered", True)]


# -- Dahua ----------------------------------------------------------------------------------


async def test_dahua_start_stop_become_edges_and_each_crossing_one_event(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/dahua-edges/gw1"
    async with DahuaCamera(password=PASSWORD) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "dahua-edges", dahua(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                region = {"RegionName": ["Courtyard"], "Id": [0]}
                cam.start_event("VideoMotion", 0, region)
                cam.start_event("VideoMotion", 0, region)  # a repeat
                cam.stop_event("VideoMotion", 0, region)
                cam.stop_event("VideoMotion", 0, region)  # a repeat
                line = {"Name": "Gate", "Direction": "LeftToRight"}
                cam.start_event("CrossLineDetection", 1, line)
                cam.stop_event("CrossLineDetection", 1, line)
                cam.start_event("CrossLineDetection", 1, line)  # a second person
                cam.start_event("CrossRegionDetection", 0, {"Name": "Shed", "Action": "Cross"})
                cam.stop_event("CrossRegionDetection", 0, {"Name": "Shed", "Action": "Cross"})
                cam.start_event("VideoBlind", 0)
                cam.stop_event("VideoBlind", 0)
                cam.pulse("SceneChange", 0)  # ends hold_s later
                cam.start_event("NTPAdjustTime", 0, {"Address": "ntp"})  # not mapped
                await wait_events(sub, root, 10)
                await asyncio.sleep(0.3)
    assert cam.attached == [["All"]]
    events = events_of(sub, root)
    assert brief(events) == [
        ("motion", "Courtyard", True),
        ("motion", "Courtyard", False),
        ("line_crossed", "Gate", None),
        ("line_crossed", "Gate", None),
        ("motion", "Shed", True),
        ("motion", "Shed", False),
        ("camera_tamper", "covered", True),
        ("camera_tamper", "covered", False),
        ("camera_tamper", "scene_change", True),
        ("camera_tamper", "scene_change", False),
    ]
    assert events[2]["data"] == {
        "channel": 2,
        "index": 1,
        "code": "CrossLineDetection",
        "line": "Gate",
        "direction": "LeftToRight",
    }


async def test_dahua_attaches_to_the_codes_asked_for(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/dahua-codes/gw1"
    async with DahuaCamera(password=PASSWORD) as cam:
        device = dahua(cam.port, codes=["VideoMotion", "VideoBlind"])
        agent = agent_for(tmp_path, mqtt_broker, "dahua-codes", device)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                cam.start_event("SceneChange", 0)  # not asked for: never sent
                cam.start_event("VideoBlind", 0)
                await wait_events(sub, root, 1)
    assert cam.attached == [["VideoMotion", "VideoBlind"]]
    assert any("codes=[VideoMotion,VideoBlind]&heartbeat=1" in p for _m, p, _ok in cam.seen)
    assert brief(events_of(sub, root)) == [("camera_tamper", "covered", True)]


async def test_dahua_wrong_password_cut_stream_and_heartbeat_silence(
    tmp_path: Path, mqtt_broker: MqttBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = "campus/dahua-faults/gw1"
    async with DahuaCamera(password=PASSWORD) as cam:
        monkeypatch.setenv("CAM_PW", "wrong")
        agent = agent_for(tmp_path, mqtt_broker, "dahua-faults", dahua(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                off = await wait_state(sub, root, "offline")
                assert "wrong user or password (HTTP 401)" in off["last_error"]
            monkeypatch.setenv("CAM_PW", PASSWORD)
            agent = agent_for(tmp_path, mqtt_broker, "dahua-faults", dahua(cam.port))
            async with running(agent):
                n = len(states_of(sub, root))
                await wait_state(sub, root, "online", after=n)
                cam.start_event("VideoBlind", 0)
                await wait_events(sub, root, 1)
                # cut inside a record's JSON: the record is lost with the part, the
                # tamper ends as lost, the driver reconnects
                n = len(states_of(sub, root))
                cam.cut(b"--myboundary\r\nContent-Type: text/plain\r\n\r\nCode=VideoMotion;ac")
                cut = await wait_state(sub, root, "offline", after=n)
                n = len(states_of(sub, root))
                await wait_state(sub, root, "online", after=n)
                cam.silence()  # no Heartbeat for silence_s
                n = len(states_of(sub, root))
                silent = await wait_state(sub, root, "offline", after=n)
                cam.resume()
                n = len(states_of(sub, root))
                await wait_state(sub, root, "online", after=n)
                cam.start_event("VideoMotion", 0)
                await wait_events(sub, root, 3)
    assert "closed" in cut["last_error"] or "broke" in cut["last_error"]
    assert "heartbeat" in silent["last_error"]
    events = events_of(sub, root)
    assert brief(events) == [
        ("camera_tamper", "covered", True),
        ("camera_tamper", "covered", False),
        ("motion", "ch1", True),
    ]
    assert events[1]["data"]["ended"] == "stream_lost"
    driver = agent.drivers[DEVICE]
    assert isinstance(driver, DahuaDriver)
    assert driver.counts["truncated"] == 1


async def test_dahua_garbled_parts_are_logged_once_and_never_stop_the_stream(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent.drivers")
    root = "campus/dahua-garbled/gw1"
    async with DahuaCamera(password=PASSWORD) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "dahua-garbled", dahua(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                for i in range(3):
                    cam.inject(b"--myboundary\r\nContent-Type: text/plain\r\n\r\n\xff\xfe junk\r\n")
                    cam.start_event("VideoBlind", i)
                await wait_events(sub, root, 3)
    assert brief(events_of(sub, root)) == [("camera_tamper", "covered", True)] * 3
    assert [e["data"]["channel"] for e in events_of(sub, root)] == [1, 2, 3]
    driver = agent.drivers[DEVICE]
    assert isinstance(driver, DahuaDriver)
    assert driver.counts["skipped"] == 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("unreadable line in the event stream" in w for w in warned) == 1, warned
    assert any("garbage_lines x2" in r.getMessage() for r in caplog.records)


#: what each real capture of ../shared/fixtures/access/dahua_events.json gives as contract
#: events: (type, zone/line/reason, active); an access or traffic code gives none
CAPTURED = {
    "rroller_event_split_across_two_chunks_then_heartbeat": [],  # TrafficParking: not mapped
    "rroller_heartbeat_without_blank_line_then_event": [("line_crossed", "ch1-line", None)],
    "rroller_part_boundary_split_inside_delimiter": [("line_crossed", "ch1-line", None)],
    "rroller_lf_framed_event_with_json_data": [("motion", "Region1", True)],
    "rroller_semicolon_inside_data_json": [("motion", "Drive; Gate", True)],
    "rroller_three_line_header_block_thermal_channel": [("line_crossed", "ch2-line", None)],
    "rroller_block_cut_inside_headers": [],
    "dahua_http_api_doc_attach_example": [
        ("motion", "ch1", True),
        ("camera_tamper", "covered", True),
    ],
    "vto_stream_invite_doorstatus_accesscontrol_split": [],  # a door station's codes
}


@pytest.mark.parametrize("case", captures.params("dahua_events.json"))
async def test_real_dahua_stream_captures_through_the_driver(
    case: dict[str, Any], tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    """Each capture's bytes, as the camera sent them, injected into a live stream, then one
    record of ours: what comes out before it is what the capture's own decode says."""
    expected = CAPTURED[case["name"]]
    site = "dahua-cap-" + case["name"].replace("_", "-")[:40]
    root = f"campus/{site}/gw1"
    async with DahuaCamera(password=PASSWORD) as cam:
        agent = agent_for(tmp_path, mqtt_broker, site, dahua(cam.port))
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                raw = case["text"].encode()
                if not raw.endswith(b"\n"):
                    raw += b"\r\n"  # the next part would end its last line
                cam.inject(raw)
                cam.start_event("VideoBlind", 7)  # the end of the capture's events
                await wait_events(sub, root, len(expected) + 1)
    events = events_of(sub, root)
    assert brief(events) == [*expected, ("camera_tamper", "covered", True)]
    assert events[-1]["data"]["channel"] == 8


async def test_each_camera_driver_names_its_snapshot_url() -> None:
    """For the snapshot service: the URL a driver names answers a JPEG behind the same
    digest login (the driver itself never fetches it)."""
    import aiohttp

    from edge_agent.driver import DriverContext

    async with HikCamera(password=PASSWORD) as hcam, DahuaCamera(password=PASSWORD) as dcam:
        drivers = [
            HikvisionCameraDriver(
                HikvisionCameraDriver.Config.model_validate(
                    {"id": "c1", **hik(hcam.port), "host": "127.0.0.1", "password": "${CAM_PW}"}
                ),
                DriverContext({}),
            ),
            DahuaDriver(
                DahuaDriver.Config.model_validate(
                    {"id": "c2", **dahua(dcam.port), "host": "127.0.0.1", "password": "${CAM_PW}"}
                ),
                DriverContext({}),
            ),
        ]
        for d in drivers:  # one login per camera (a digest session keeps its realm)
            auth = aiohttp.DigestAuthMiddleware("admin", PASSWORD)
            async with aiohttp.ClientSession(middlewares=(auth,)) as s:
                async with s.get(d.snapshot_uri) as resp:
                    assert resp.status == 200, d.snapshot_uri
                    assert resp.content_type == "image/jpeg"
                    body = await resp.read()
                assert body[:2] == b"\xff\xd8"
                assert body[-2:] == b"\xff\xd9"
    assert (hcam.snapshots, dcam.snapshots) == (1, 1)
    assert drivers[0].snapshot_uri.endswith("/ISAPI/Streaming/channels/101/picture")
    assert drivers[1].snapshot_uri.endswith("/cgi-bin/snapshot.cgi?channel=1")
