"""Camera snapshots through the whole agent and a real mosquitto: what the platform sees.

The camera is a local HTTP endpoint with a digest login (tests/camera_http.py). The
command answers once with the picture's topic and sha256, the JPEG arrives on that topic
(QoS 1, not retained, content type image/jpeg) with exactly those bytes; an alarm of a
rule with ``snapshot:`` carries them; a picture taken while the uplink is down waits on
disk and goes out after, in the same run and across a restart."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.supervisor import Agent
from edge_agent.tools.localbroker import LocalBroker, find_mosquitto
from tests.camera_http import CameraHttp
from tests.e2e.helpers import PersistentSubscriber
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber, publish

pytestmark = pytest.mark.integration

ROOT = "campus/snap-school/gw1"


@pytest.fixture
async def camera() -> AsyncIterator[CameraHttp]:
    async with CameraHttp("digest", password="s3cret-cam") as cam:
        yield cam


def make_agent(
    tmp_path: Path,
    broker: MqttBroker,
    camera: CameraHttp,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str | None = None,
) -> Agent:
    monkeypatch.setenv("GATE_CAM_PW", camera.password)
    monkeypatch.setenv("BAD_CAM_PW", "not-the-password")
    (tmp_path / "site-rules.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "id": "after_hours_motion",
                        "type": "event",
                        "event": "motion",
                        "match": {"active": True},
                        "category": "security",
                        "severity": "major",
                        "snapshot": "gate-cam",
                        "message": {"en": "Motion at {device}", "zh": "{device} 有人活动"},
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    login = {"username": camera.user, "auth": "digest"}
    cfg: dict[str, Any] = {
        "site": {"id": "snap-school", "gateway_id": "gw1", "language": "en"},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "protocol": protocol or broker.protocol,
            "reconnect_max_s": 1,
        },
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "rules": {"default": False, "files": ["site-rules.yaml"]},
        "snapshots": {
            "cameras": [
                {"id": "gate-cam", "url": camera.url, "password": "${GATE_CAM_PW}", **login},
                {"id": "bad-cam", "url": camera.url, "password": "${BAD_CAM_PW}", **login},
            ]
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return Agent(load_config(path), path)


async def until(pred: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


async def wait_for(sub: Any, pred: Callable[[Received], bool], timeout: float = 10) -> Received:
    msg: Received = await asyncio.to_thread(sub.wait_for, pred, timeout)
    return msg


def motion(agent: Agent) -> None:
    """A motion detector says someone is there (what a driver's event looks like)."""
    agent.emitter.event("gate-pir", "motion", {"zone": "gate", "active": True})


async def test_the_command_answers_with_topic_and_sha256_and_the_jpeg_follows(
    tmp_path: Path, mqtt_broker: MqttBroker, camera: CameraHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(tmp_path, mqtt_broker, camera, monkeypatch)
    task = asyncio.create_task(agent.run())
    try:
        with mqtt_subscriber(
            mqtt_broker,
            [f"{ROOT}/cmd_result/#", f"{ROOT}/snapshots/#", f"{ROOT}/events/#"],
        ) as sub:
            await asyncio.wait_for(agent.publisher.connected.wait(), 10)
            for rid, device in (("s1", "gate-cam"), ("s2", "nope"), ("s3", "bad-cam")):
                body = json.dumps({"request_id": rid, "device": device})
                await asyncio.to_thread(publish, mqtt_broker, f"{ROOT}/cmd/camera_snapshot", body)
            answers = {
                rid: (await wait_for(sub, lambda m, r=rid: m.topic.endswith(f"/{r}"))).json()
                for rid in ("s1", "s2", "s3")
            }
            ok = answers["s1"]
            assert ok["ok"] is True, ok
            pic = await wait_for(sub, lambda m: m.topic == ok["result"]["topic"])
            audit = await wait_for(sub, lambda m: m.topic == f"{ROOT}/events/gate-cam")
        assert pic.payload == camera.served[0]
        assert hashlib.sha256(pic.payload).hexdigest() == ok["result"]["sha256"]
        assert (pic.qos, pic.retain) == (1, False)
        assert pic.properties is not None
        assert pic.properties.ContentType == "image/jpeg"
        assert ("sha256", ok["result"]["sha256"]) in pic.properties.UserProperty
        assert answers["s2"] == {
            "request_id": "s2",
            "ok": False,
            "error": "unknown device 'nope'",
        }
        assert answers["s3"]["ok"] is False
        assert "login refused" in answers["s3"]["error"]
        event = audit.json()
        assert (event["type"], event["data"]["command"], event["data"]["result"]) == (
            "command_audit",
            "camera_snapshot",
            "ok",
        )
        assert event["data"]["snapshot"]["sha256"] == ok["result"]["sha256"]
        health = (await agent.health())["snapshots"]
        assert (health["taken"], health["sent"], health["queued"]) == (1, 1, 0)
        snap_dir = tmp_path / "snapshots" / "gate-cam"
        assert [f.name for f in snap_dir.iterdir()] == [ok["result"]["snapshot_id"] + ".jpg"]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def test_an_alarm_that_asks_for_a_picture_carries_its_topic_and_sha256(
    tmp_path: Path, mqtt_broker: MqttBroker, camera: CameraHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(tmp_path, mqtt_broker, camera, monkeypatch)
    task = asyncio.create_task(agent.run())
    try:
        with mqtt_subscriber(mqtt_broker, [f"{ROOT}/alarms", f"{ROOT}/snapshots/#"]) as sub:
            await asyncio.wait_for(agent.publisher.connected.wait(), 10)
            motion(agent)
            alarm = (await wait_for(sub, lambda m: m.topic == f"{ROOT}/alarms")).json()
            ref = alarm["data"]["snapshot"]
            assert alarm["data"]["rule"] == "after_hours_motion"
            assert alarm["data"]["message"] == "Motion at gate-pir"
            pic = await wait_for(sub, lambda m: m.topic == ref["topic"])
        assert hashlib.sha256(pic.payload).hexdigest() == ref["sha256"]
        assert pic.payload == camera.served[0]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


def _arrived(topic: str) -> Callable[[list[tuple[float, str, bytes]]], bool]:
    return lambda msgs: any(t == topic for _x, t, _p in msgs)


def _alarm(platform: PersistentSubscriber) -> dict[str, Any]:
    return next(json.loads(p) for _x, t, p in platform.messages if t == f"{ROOT}/alarms")


async def test_a_picture_taken_while_the_uplink_is_down_goes_out_after(
    tmp_path: Path,
    persistent_mqtt_broker: MqttBroker,
    camera: CameraHttp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = persistent_mqtt_broker
    agent = make_agent(tmp_path, broker, camera, monkeypatch)
    task = asyncio.create_task(agent.run())
    platform = await asyncio.to_thread(PersistentSubscriber, broker, f"{ROOT}/#")
    try:
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        await asyncio.to_thread(broker.stop)
        await until(lambda: not agent.publisher.connected.is_set())
        motion(agent)  # the alarm and its picture, with nobody to send them to
        await until(lambda: agent.snapshots.health()["alarm_attached"] == 1)
        queued = list((tmp_path / "snapshots" / "gate-cam").iterdir())
        assert [f.name.endswith(".q.jpg") for f in queued] == [True]
        await asyncio.to_thread(broker.start)
        alarm_topic = f"{ROOT}/alarms"
        await asyncio.to_thread(platform.wait, _arrived(alarm_topic), 15, "the alarm")
        ref = _alarm(platform)["data"]["snapshot"]
        await asyncio.to_thread(platform.wait, _arrived(ref["topic"]), 15, "the picture")
        await until(lambda: agent.snapshots.health()["sent"] == 1)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await asyncio.to_thread(platform.close)
    payload = next(p for _x, t, p in platform.messages if t == ref["topic"])
    assert hashlib.sha256(payload).hexdigest() == ref["sha256"]
    assert payload == camera.served[0]
    assert [f.name for f in (tmp_path / "snapshots" / "gate-cam").iterdir()] == [
        queued[0].name.removesuffix(".q.jpg") + ".jpg"
    ]


async def test_a_picture_still_queued_at_stop_goes_out_after_the_restart(
    tmp_path: Path,
    persistent_mqtt_broker: MqttBroker,
    camera: CameraHttp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = persistent_mqtt_broker
    agent = make_agent(tmp_path, broker, camera, monkeypatch)
    task = asyncio.create_task(agent.run())
    platform = await asyncio.to_thread(PersistentSubscriber, broker, f"{ROOT}/#")
    try:
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        await asyncio.to_thread(broker.stop)
        await until(lambda: not agent.publisher.connected.is_set())
        motion(agent)
        await until(lambda: agent.snapshots.health()["alarm_attached"] == 1)
        agent.stop()  # the gateway restarts before the uplink is back
        await asyncio.wait_for(task, 15)
        await asyncio.to_thread(broker.start)
        agent = make_agent(tmp_path, broker, camera, monkeypatch)
        task = asyncio.create_task(agent.run())
        await asyncio.to_thread(platform.wait, _arrived(f"{ROOT}/alarms"), 15, "the alarm")
        ref = _alarm(platform)["data"]["snapshot"]
        await asyncio.to_thread(platform.wait, _arrived(ref["topic"]), 15, "the picture")
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await asyncio.to_thread(platform.close)
    payload = next(p for _x, t, p in platform.messages if t == ref["topic"])
    assert hashlib.sha256(payload).hexdigest() == ref["sha256"]
    assert len(camera.served) == 1  # the picture of the alarm, not a new one


class AclBroker(LocalBroker):
    """mosquitto whose ACL lets the gateway publish everything but pictures."""

    def _write_mosquitto_config(self) -> Path:
        conf = super()._write_mosquitto_config()
        acl = self.workdir / "acl"
        acl.write_text("topic readwrite #\ntopic deny campus/+/+/snapshots/#\n", encoding="utf-8")
        acl.chmod(0o644)
        with conf.open("a", encoding="utf-8") as f:
            f.write(f"acl_file {acl}\n")
            if os.geteuid() == 0 and "user root" not in conf.read_text(encoding="utf-8"):
                # as root mosquitto drops to its own user, who cannot read the test's folder
                f.write("user root\n")
        return conf


async def test_a_picture_the_broker_refuses_stays_queued_and_is_said(
    tmp_path: Path,
    camera: CameraHttp,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if find_mosquitto() is None:
        pytest.skip("needs a local mosquitto for its ACL")
    broker = AclBroker(workdir=tmp_path / "acl-broker", backend="mosquitto")
    await asyncio.to_thread(broker.start)
    try:
        agent = make_agent(tmp_path, broker, camera, monkeypatch)
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(agent.publisher.connected.wait(), 10)
            result = await agent.snapshots.command("gate-cam")
            await until(lambda: "broker refused" in (agent.snapshots.stats.last_error or ""))
            health = agent.snapshots.health()
            assert (health["sent"], health["queued"]) == (0, 1)
            assert "Not authorized" in health["last_error"]
            assert "the broker refused snapshot" in caplog.text
            queued = tmp_path / "snapshots" / "gate-cam" / f"{result['snapshot_id']}.q.jpg"
            assert queued.exists()
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
    finally:
        await asyncio.to_thread(broker.close)


async def test_over_mqtt_311_the_picture_goes_without_properties(
    tmp_path: Path, mqtt_broker: MqttBroker, camera: CameraHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(tmp_path, mqtt_broker, camera, monkeypatch, protocol="3.1.1")
    task = asyncio.create_task(agent.run())
    try:
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/snapshots/#") as sub:
            await asyncio.wait_for(agent.publisher.connected.wait(), 10)
            assert agent.publisher.protocol == "3.1.1"
            result = await agent.snapshots.command("gate-cam")
            pic = await wait_for(sub, lambda m: m.topic == result["topic"])
        assert hashlib.sha256(pic.payload).hexdigest() == result["sha256"]
        assert getattr(pic.properties, "ContentType", None) is None
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


@pytest.mark.parametrize(
    ("outbox", "snap_dir", "expected"),
    [
        ("outbox.db", None, "conf/snapshots"),
        ("state/outbox.db", None, "conf/state/snapshots"),
        ("outbox.db", "pics", "conf/pics"),
    ],
)
def test_the_folder_is_beside_the_outbox_or_relative_to_the_config(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    outbox: str,
    snap_dir: str | None,
    expected: str,
) -> None:
    (tmp_path / "conf").mkdir()
    cfg: dict[str, Any] = {
        "site": {"id": "s", "gateway_id": "gw1"},
        "outbox": {"path": outbox},
        "snapshots": {"dir": snap_dir} if snap_dir else {},
    }
    (tmp_path / "conf" / "agent.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # `edge-agent run -c conf/agent.yaml`
    path = Path("conf/agent.yaml")
    agent = Agent(load_config(path), path)
    assert agent.snapshots.store.root == Path(expected)
