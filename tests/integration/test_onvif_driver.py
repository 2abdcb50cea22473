"""The onvif driver end to end (issue 11): the ONVIF camera simulator
(simulators/camera/onvif.py, SOAP 1.2 with WS-UsernameToken digest on 127.0.0.1) -> the agent
(supervisor, pipeline, outbox) -> a real mosquitto. Events arrive once, edge-triggered; a wrong
password is reported; the subscription is renewed before it expires, re-created after a
reboot without repeating a state, left to expire at stop; the camera's clock skew is
measured and corrected; a camera without GetServices works through GetCapabilities."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.driver import DriverContext
from edge_agent.drivers.onvif.driver import OnvifDriver
from edge_agent.errors import NotDurableError
from edge_agent.simulators.camera import OnvifCamera
from edge_agent.supervisor import Agent
from tests import captures
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, MqttSubscriber, Received, mqtt_subscriber

pytestmark = pytest.mark.integration

PASSWORD = "Cam-Pw-2026"
DEV = "cam1"


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
                "id": DEV,
                "kind": "onvif",
                "host": "127.0.0.1",
                "password": "${CAM_PW}",
                "pull_timeout_s": 2,
                "pull_cooldown_s": 0.2,
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
        check_envelope(m.payload, "event", DEV)
        for m in sub.messages
        if m.topic == f"{root}/events/{DEV}"
    ]


def brief(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], e["data"]) for e in events]


async def wait_events(sub: MqttSubscriber, root: str, n: int, timeout: float = 20) -> None:
    def pred(m: Received) -> bool:
        return m.topic == f"{root}/events/{DEV}"

    await asyncio.to_thread(sub.wait_for_count, n, pred, timeout)


def states_of(sub: MqttSubscriber, root: str) -> list[dict[str, Any]]:
    payloads = dict.fromkeys(
        m.payload for m in sub.messages if m.topic == f"{root}/devices/{DEV}/state"
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
            await asyncio.sleep(0.05)


async def test_hikvision_style_events_reach_the_broker_once_each_with_the_camera_meta(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/onvif-hik/gw1"
    async with OnvifCamera(password=PASSWORD, style="hikvision") as cam:
        agent = agent_for(
            tmp_path,
            mqtt_broker,
            "onvif-hik",
            {
                "port": cam.port,
                "names": {"MyMotionDetectorRule": "courtyard"},
                "ignore_topics": ["tns1:VideoSource/Motion*"],
            },
        )
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                cam.motion(True)
                cam.motion(True)  # a repeat of the same state is no event
                # a Hikvision tells each motion twice; the site ignores the second topic
                cam.notify("tns1:VideoSource/MotionAlarm", [("Source", "VideoSource_1")],
                           [("State", "true")])  # fmt: skip
                cam.tamper(True)
                cam.line_crossed("gate-line")
                cam.line_crossed("gate-line")
                cam.digital_input(1, True)
                cam.motion(False)
                cam.tamper(False, "covered")
                await wait_events(sub, root, 7)
                driver = agent.drivers[DEV]
                snapshot = driver.snapshot_uri  # type: ignore[attr-defined]
                stream = driver.stream_uri  # type: ignore[attr-defined]
                await asyncio.sleep(0.5)  # nothing more may come
        assert brief(events_of(sub, root)) == [
            ("motion", {"zone": "courtyard", "active": True}),
            ("camera_tamper", {"reason": "covered", "active": True}),
            ("line_crossed", {"line": "gate-line", "direction": None}),
            ("line_crossed", {"line": "gate-line", "direction": None}),
            ("digital_input", {"input": "AlarmIn_1", "active": True}),
            ("motion", {"zone": "courtyard", "active": False}),
            ("camera_tamper", {"reason": "covered", "active": False}),
        ]
        # meta: published again once GetDeviceInformation answered
        metas = [json.loads(m.payload) for m in sub.messages if m.topic.endswith(f"{DEV}/meta")]
        assert metas[-1]["vendor"] == "HIKVISION"
        assert metas[-1]["model"] == cam.model
        assert metas[-1]["firmware"] == cam.firmware
        assert snapshot == f"{cam.base}/onvif/snapshot.jpg"
        assert stream is not None
        assert stream.startswith("rtsp://")
        # stop: the subscription was left to expire, never unsubscribed
        assert cam.counters.unsubscribes == 0
        assert len(cam.subscriptions) == 1


async def test_dahua_style_with_1_booleans_clock_skew_and_no_get_services(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/onvif-dahua/gw1"
    async with OnvifCamera(
        password=PASSWORD, style="dahua", booleans="1", get_services=False, clock_skew_s=3600
    ) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "onvif-dahua", {"port": cam.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                motion = cam.motion(True)
                cam.digital_input(1, True)
                cam.tamper(True, "defocused")
                await wait_events(sub, root, 3)
        events = events_of(sub, root)
        assert brief(events) == [
            ("motion", {"zone": "000", "active": True}),
            ("digital_input", {"input": "000", "active": True}),
            ("camera_tamper", {"reason": "defocused", "active": True}),
        ]
        # the camera's clock is an hour ahead: every signed request was accepted (Created
        # shifted by the skew measured first) and event times are back on true time
        assert cam.counters.auth_failures == 0
        assert cam.counters.operations["GetCapabilities"] >= 1
        offsets = [
            json.loads(m.payload)["data"]["clock_offset_s"]
            for m in sub.messages
            if m.topic == f"{root}/telemetry/{DEV}"
        ]
        assert offsets
        assert abs(offsets[0] - 3600) <= 2
        ts = datetime.fromisoformat(events[0]["ts"].replace("Z", "+00:00")).timestamp()
        assert abs(ts - motion.true_time) <= 2  # seconds resolution on both clocks


async def test_a_wrong_password_is_reported_offline_and_logged_once(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    root = "campus/onvif-pw/gw1"
    caplog.set_level(logging.DEBUG, logger="edge_agent.drivers.onvif")
    async with OnvifCamera(password="another-password") as cam:
        agent = agent_for(tmp_path, mqtt_broker, "onvif-pw", {"port": cam.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                state = await wait_state(sub, root, "offline")
                await until(lambda: cam.counters.auth_failures >= 3)
    assert "wrong user or password" in state["last_error"]
    assert "NotAuthorized" in state["last_error"]
    warnings = [
        r
        for r in caplog.records
        if r.name.startswith("edge_agent.drivers.onvif") and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert cam.counters.creates == 0


async def test_the_subscription_is_renewed_before_it_expires(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/onvif-renew/gw1"
    # the camera grants 3 s whatever is asked: renewals every 2.4 s (80 % of what it granted)
    async with OnvifCamera(password=PASSWORD, max_lifetime_s=3) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "onvif-renew", {"port": cam.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                await until(lambda: cam.counters.renewals >= 3)
                cam.motion(True)
                await wait_events(sub, root, 1)
    assert cam.counters.creates == 1
    assert cam.counters.expired == 0
    assert [s["state"] for s in states_of(sub, root)] == ["online"]


async def test_after_a_reboot_the_subscription_is_recreated_and_no_state_is_repeated(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/onvif-reboot/gw1"
    async with OnvifCamera(password=PASSWORD) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "onvif-reboot", {"port": cam.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                cam.motion(True)
                await wait_events(sub, root, 1)
                seen = len(states_of(sub, root))
                await cam.reboot(1.0)
                down = await wait_state(sub, root, "offline", after=seen)
                await wait_state(sub, root, "online", after=seen)
                await until(lambda: cam.counters.creates == 2)
                # the new subscription's Initialized burst says motion is still on: not
                # repeated; the end of it is an event
                cam.line_crossed("gate-line")
                cam.motion(False)
                await wait_events(sub, root, 3)
        assert brief(events_of(sub, root)) == [
            ("motion", {"zone": "MyMotionDetectorRule", "active": True}),
            ("line_crossed", {"line": "gate-line", "direction": None}),
            ("motion", {"zone": "MyMotionDetectorRule", "active": False}),
        ]
        assert down["last_error"]


async def test_a_restarted_agent_does_not_repeat_an_active_state(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/onvif-restart/gw1"
    async with OnvifCamera(password=PASSWORD) as cam:
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            agent = agent_for(tmp_path, mqtt_broker, "onvif-restart", {"port": cam.port})
            async with running(agent):
                await wait_state(sub, root, "online")
                cam.tamper(True)
                await wait_events(sub, root, 1)
            agent = agent_for(tmp_path, mqtt_broker, "onvif-restart", {"port": cam.port})
            async with running(agent):
                await until(lambda: cam.counters.creates == 2)
                cam.tamper(False)
                await wait_events(sub, root, 2)
        assert brief(events_of(sub, root)) == [
            ("camera_tamper", {"reason": "covered", "active": True}),
            ("camera_tamper", {"reason": "covered", "active": False}),
        ]


async def test_a_camera_that_ignores_the_pull_timeout_is_not_hammered(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/onvif-cool/gw1"
    async with OnvifCamera(password=PASSWORD, max_pull_timeout_s=0) as cam:
        agent = agent_for(
            tmp_path, mqtt_broker, "onvif-cool", {"port": cam.port, "pull_cooldown_s": 1}
        )
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                start = cam.counters.pulls
                await asyncio.sleep(2)
                pulls = cam.counters.pulls - start
                cam.motion(True)
                await wait_events(sub, root, 1)
    # about one pull a second; without the cooldown it is hundreds
    assert pulls <= 6, pulls


async def test_a_dropped_subscription_is_degraded_then_recreated_and_unknown_topics_told_once(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    root = "campus/onvif-drop/gw1"
    caplog.set_level(logging.DEBUG, logger="edge_agent.drivers.onvif")
    async with OnvifCamera(password=PASSWORD) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "onvif-drop", {"port": cam.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                for _ in range(3):
                    cam.notify("tns1:Vendor/tnsxyz:Gadget", [("Token", "1")], [("On", "true")])
                driver = agent.drivers[DEV]
                await until(lambda: driver.counts["unknown_topics"] == 3)  # type: ignore[attr-defined]
                # the camera forgets its subscribers (as when its limit of five is reached)
                for s in list(cam.subscriptions.values()):
                    s.termination = 0
                degraded = await wait_state(sub, root, "degraded")
                await wait_state(sub, root, "online", after=1)
                cam.digital_input(1, True)
                await wait_events(sub, root, 1)
                diagnostics = driver.diagnostics()  # type: ignore[attr-defined]
    assert "subscription lost" in degraded["last_error"]
    assert cam.counters.creates == 2
    assert brief(events_of(sub, root)) == [
        ("digital_input", {"input": "AlarmIn_1", "active": True})
    ]
    assert diagnostics["unknown_topics_seen"] == {"tns1:Vendor/tnsxyz:Gadget": 3}
    told = [r for r in caplog.records if "tns1:Vendor/tnsxyz:Gadget" in r.getMessage()]
    # once at WARNING, then DEBUG, and the repeats summed up when the driver stops
    assert [r.levelno for r in told] == [
        logging.WARNING,
        logging.DEBUG,
        logging.DEBUG,
        logging.INFO,
    ]
    assert "Gadget x2" in told[-1].getMessage()


#: real PullMessages answers (../shared/fixtures/onvif/, read at test time), replayed by the
#: simulator byte for byte: what reaches the broker after zeep parsed them
REPLAYS = {
    # the Initialized burst of a Hikvision: 8 states, every one inactive -> no event
    "hikvision_pullmessages_1.xml": [],
    # a Dahua (inferred) burst: 5 messages, motion Initialized false -> no event
    "dahua_pullmessages_1.xml": [],
    # Pelco D6230L: 10 messages with topics padded by whitespace, CellMotionDetector/Motion
    # Value="True" without a Source -> motion active
    "pelco_pullmessages_1.xml": [("motion", {"zone": "default", "active": True})],
    # TRENDnet TV-IP320PI (Hikvision OEM): ProcessorUsage Changed -> nothing
    "trendnet_pullmessages_1.xml": [],
}


@pytest.mark.parametrize("name", captures.onvif_params(sorted(REPLAYS)))
async def test_real_pull_answers_read_through_zeep_reach_the_broker_as_contract_events(
    tmp_path: Path, mqtt_broker: MqttBroker, name: str
) -> None:
    body = captures.onvif_xml(name)
    count = next(c for c in captures.onvif_cases() if c["file"] == name)["expected"][
        "notification_count"
    ]
    root = "campus/onvif-replay/gw1"
    async with OnvifCamera(password=PASSWORD) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "onvif-replay", {"port": cam.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                driver = agent.drivers[DEV]
                # the simulator's own burst first (motion, tamper, one input)
                await until(lambda: driver.counts["notifications"] >= 3)  # type: ignore[attr-defined]
                before = driver.counts["notifications"]  # type: ignore[attr-defined]
                cam.replay.append(body)
                await until(lambda: not cam.replay)  # answered to the driver's next pull
                cam.notify(
                    "tns1:RuleEngine/LineDetector/Crossed", [("Rule", "end")], [("ObjectId", "7")]
                )
                # the pull after the replayed one brings the crossing: both were read
                await wait_events(sub, root, len(REPLAYS[name]) + 1)
                seen = driver.counts["notifications"] - before  # type: ignore[attr-defined]
                unknown = dict(driver.unknown_topics)  # type: ignore[attr-defined]
    assert brief(events_of(sub, root)) == [
        *REPLAYS[name],
        ("line_crossed", {"line": "end", "direction": None}),
    ]
    assert seen == count + 1
    assert unknown == {}


class RefusingLink:
    """A DeviceLink whose first commit is refused (the disk is full, the clock unsynced)."""

    device_id = DEV

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.refusals = 1
        self.events: list[Any] = []
        self.states: list[tuple[str, str | None]] = []

    def telemetry(self, data: dict[str, Any], **_: Any) -> None:
        pass

    async def commit(self, events: Any, *, cursor: str | None = None) -> None:
        if self.refusals:
            self.refusals -= 1
            raise NotDurableError("the outbox is full")
        self.events += events
        self.cursor = cursor

    def state(self, state: str, reason: str | None = None) -> None:
        self.states.append((state, reason))


async def test_a_refused_commit_moves_no_state_and_the_next_subscription_tells_it_again() -> None:
    async with OnvifCamera(password=PASSWORD) as cam:
        config = OnvifDriver.Config.model_validate(
            {"kind": "onvif", "id": DEV, "host": "127.0.0.1", "port": cam.port,
             "password": "${CAM_PW}", "pull_timeout_s": 1, "timeout_s": 3, "retry_max_s": 1}
        )  # fmt: skip
        driver = OnvifDriver(config, DriverContext({}))
        link = RefusingLink()
        task = asyncio.create_task(driver.run(link))  # type: ignore[arg-type]
        try:
            await until(lambda: ("online", None) in link.states)
            cam.tamper(True)
            await until(lambda: bool(link.events))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # refused: degraded, then a new session whose Initialized burst still says covered
    assert any(s == "degraded" and "events wait" in (r or "") for s, r in link.states)
    assert [(e.type, e.data) for e in link.events] == [
        ("camera_tamper", {"reason": "covered", "active": True})
    ]
    assert cam.counters.creates == 2
    assert link.cursor is not None
    assert "TamperDetector" in link.cursor


async def test_a_camera_that_caps_the_pull_wait_is_asked_within_its_limit(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/onvif-cap/gw1"
    # the camera refuses waits over 1 s with a PullMessagesFaultResponse (MaxTimeout PT1S)
    async with OnvifCamera(password=PASSWORD, pull_timeout_limit_s=1) as cam:
        agent = agent_for(tmp_path, mqtt_broker, "onvif-cap", {"port": cam.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                await until(lambda: cam.counters.pull_faults >= 1)
                await until(lambda: cam.counters.pulls >= 3)
                cam.motion(True)
                await wait_events(sub, root, 1)
                max_pull = agent.drivers[DEV].max_pull_s  # type: ignore[attr-defined]
    assert max_pull == 1
    assert cam.counters.pull_faults == 1  # told once, then asked within the limit
    assert cam.counters.creates == 1  # the subscription was never given up
    assert [s["state"] for s in states_of(sub, root)] == ["online"]
