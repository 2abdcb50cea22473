"""Camera snapshots without a broker: the fetch against a local camera endpoint (real
sockets, logins checked from the RFCs in tests/camera_http.py), the folder and its cap,
the restart, the command's refusals, alarms that wait for a picture (bounded) and the
config checks. Through mosquitto: tests/integration/test_snapshots_mqtt.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.alarms.lifecycle import AlarmBook
from edge_agent.commands import CommandRouter, snapshot_handler
from edge_agent.config.loader import load_config
from edge_agent.config.rules import Rule
from edge_agent.driver import SnapshotSource
from edge_agent.errors import ConfigError, SnapshotError
from edge_agent.signing import sign
from edge_agent.snapshots.alarms import SnapshotAlarms
from edge_agent.snapshots.config import CameraSnapshotConfig, SnapshotsConfig
from edge_agent.snapshots.fetch import check_jpeg, fetch_jpeg
from edge_agent.snapshots.service import NotACamera, SnapshotService, UnknownCamera
from edge_agent.snapshots.store import SnapshotStore
from edge_agent.topics import Topics
from tests.camera_http import CameraHttp, jpeg

ROOT = "campus/snap-school/gw1"
MB = 1024 * 1024


@pytest.fixture
async def camera() -> AsyncIterator[CameraHttp]:
    async with CameraHttp("digest") as cam:
        yield cam


def source(cam: CameraHttp, **kw: Any) -> SnapshotSource:
    args: dict[str, Any] = {
        "url": cam.url,
        "username": cam.user,
        "password": cam.password,
        "auth": cam.auth,
    }
    args.update(kw)
    return SnapshotSource(**args)


async def fetch(src: SnapshotSource, timeout_s: float = 5.0, max_bytes: int = 4 * MB) -> bytes:
    return await fetch_jpeg("cam1", src, timeout_s=timeout_s, max_bytes=max_bytes)


# -- fetching -------------------------------------------------------------------------
async def test_digest_login_fetches_the_jpeg(camera: CameraHttp) -> None:
    data = await fetch(source(camera))
    assert data == camera.served[-1]
    assert camera.refused == 1  # challenged once, then answered with the digest


async def test_basic_login_fetches_the_jpeg() -> None:
    async with CameraHttp("basic") as cam:
        data = await fetch(source(cam))
        assert data == cam.served[-1]
        assert cam.refused == 0  # basic is sent up front: one request


async def test_a_wrong_password_says_login_refused(camera: CameraHttp) -> None:
    with pytest.raises(SnapshotError, match="login refused") as err:
        await fetch(source(camera, password="wrong"))
    assert "wrong" not in str(err.value)  # the password never appears in a message
    assert err.value.device_id == "cam1"


async def test_a_camera_that_asks_for_basic_is_named_when_digest_is_set() -> None:
    async with CameraHttp("basic") as cam:
        with pytest.raises(SnapshotError, match="asks for Basic; auth is digest"):
            await fetch(source(cam, auth="digest"))


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("html", "not a JPEG"),
        ("truncated", "cut short"),
        ("big", "over snapshots.image_max_bytes"),
        ("error", "HTTP 500"),
    ],
)
async def test_what_is_not_a_whole_jpeg_is_refused(
    camera: CameraHttp, mode: str, message: str
) -> None:
    camera.mode = mode
    with pytest.raises(SnapshotError, match=message):
        await fetch(source(camera))


async def test_a_slow_camera_is_given_up_on(camera: CameraHttp) -> None:
    camera.mode, camera.delay_s = "slow", 30
    with pytest.raises(SnapshotError, match=r"no whole picture within 0\.3 s"):
        await fetch(source(camera), timeout_s=0.3)


async def test_a_camera_that_is_not_there_is_an_error_not_a_crash() -> None:
    cam = CameraHttp("none")
    await cam.start()
    url = cam.url
    await cam.stop()  # the port is closed now
    with pytest.raises(SnapshotError, match=r"cam1: http://127\.0\.0\.1"):
        await fetch(SnapshotSource(url, auth="none"))


def test_check_jpeg_wants_both_markers() -> None:
    check_jpeg(jpeg("x"))
    with pytest.raises(ValueError, match="HTML"):
        check_jpeg(b"<html>login</html>")
    with pytest.raises(ValueError, match="cut short"):
        check_jpeg(jpeg("x")[:-1])


# -- the service: folder, cap, restart ------------------------------------------------
def service(
    tmp_path: Path, cam: CameraHttp | None, drivers: dict[str, Any] | None = None, **cfg: Any
) -> SnapshotService:
    cameras = []
    if cam is not None:
        cameras = [
            {
                "id": "gate-cam",
                "url": cam.url,
                "username": cam.user,
                "password": cam.password,
                "auth": cam.auth,
            }
        ]
    conf = SnapshotsConfig.model_validate({"cameras": cameras, **cfg})
    return SnapshotService(conf, tmp_path / "snaps", Topics(ROOT), drivers or {})


async def test_a_snapshot_is_kept_once_with_its_topic_and_sha256(
    tmp_path: Path, camera: CameraHttp
) -> None:
    svc = service(tmp_path, camera)
    await svc.open()
    snap = await svc.take("gate-cam")
    data = camera.served[-1]
    assert snap.sha256 == hashlib.sha256(data).hexdigest()
    assert snap.topic == f"{ROOT}/snapshots/gate-cam/{snap.snapshot_id}"
    files = list((tmp_path / "snaps" / "gate-cam").iterdir())
    assert [f.name for f in files] == [f"{snap.snapshot_id}.q.jpg"]  # queued, nothing else
    assert files[0].read_bytes() == data
    assert svc.health()["queued"] == 1


async def test_the_cap_evicts_sent_pictures_first_then_unsent_ones_counted(
    tmp_path: Path, camera: CameraHttp
) -> None:
    svc = service(tmp_path, camera, max_count=3)
    await svc.open()
    first = [await svc.take("gate-cam") for _ in range(2)]
    for stored in list(svc.store.items.values()):  # the first two went out
        svc.store.rename_sent(stored)
        stored.sent = True
    later = [await svc.take("gate-cam") for _ in range(3)]
    names = sorted(f.name for f in (tmp_path / "snaps" / "gate-cam").iterdir())
    # the two sent ones made room before any unsent picture was touched
    assert names == sorted(f"{s.snapshot_id}.q.jpg" for s in later)
    health = svc.health()
    assert (health["pruned"], health["dropped"], health["stored"]) == (2, 0, 3)
    await svc.take("gate-cam")  # now an unsent picture has to go: the oldest
    names = sorted(f.name for f in (tmp_path / "snaps" / "gate-cam").iterdir())
    assert f"{later[0].snapshot_id}.q.jpg" not in names
    assert svc.health()["dropped"] == 1
    assert all(f"{s.snapshot_id}.jpg" not in names for s in first)


async def test_the_byte_cap_holds(tmp_path: Path, camera: CameraHttp) -> None:
    camera.image_bytes = 400 * 1024
    svc = service(tmp_path, camera, max_bytes=1 * MB)
    await svc.open()
    for _ in range(4):
        await svc.take("gate-cam")
    on_disk = sum(f.stat().st_size for f in (tmp_path / "snaps" / "gate-cam").iterdir())
    assert on_disk <= 1 * MB
    assert len(svc.store.items) == 2
    assert svc.health()["dropped"] == 2


async def test_queued_pictures_survive_a_restart_and_half_written_ones_do_not(
    tmp_path: Path, camera: CameraHttp
) -> None:
    svc = service(tmp_path, camera)
    await svc.open()
    a = await svc.take("gate-cam")
    b = await svc.take("gate-cam")
    svc.store.rename_sent(svc.store.items[("gate-cam", a.snapshot_id)])
    (tmp_path / "snaps" / "gate-cam" / ".01zzz.tmp").write_bytes(b"\xff\xd8 half")
    again = service(tmp_path, camera)
    await again.open()
    assert [(s.snapshot_id, s.sent) for s in again.store.items.values()] == [
        (a.snapshot_id, True),
        (b.snapshot_id, False),
    ]
    assert [s.snapshot_id for s in again._queue] == [b.snapshot_id]
    assert not (tmp_path / "snaps" / "gate-cam" / ".01zzz.tmp").exists()


def test_the_store_scan_ignores_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "notes.txt").write_text("x")
    (tmp_path / "cam" / "Bad Name.jpg").write_bytes(b"x")
    (tmp_path / "README").write_text("x")
    store = SnapshotStore(tmp_path, max_bytes=MB, max_count=10)
    assert store.scan() == []
    assert store.items == {}


class Thermometer:
    """A device that is not a camera."""


class OnvifLike:
    """A camera driver: it knows its snapshot URL once connected."""

    def __init__(self, src: SnapshotSource | None) -> None:
        self.src = src

    def snapshot_source(self) -> SnapshotSource | None:
        return self.src


async def test_the_command_answers_each_case_once(tmp_path: Path, camera: CameraHttp) -> None:
    drivers: dict[str, Any] = {
        "b1-air": Thermometer(),
        "hall-cam": OnvifLike(source(camera)),
        "new-cam": OnvifLike(None),
    }
    svc = service(tmp_path, None, drivers)
    await svc.open()
    answers: list[dict[str, Any]] = []
    router = CommandRouter(lambda _t, answer, _c: answers.append(answer), root=ROOT)
    router.register("camera_snapshot", snapshot_handler(svc.command))
    for rid, device in [("r1", "hall-cam"), ("r2", "nope"), ("r3", "b1-air"), ("r4", "new-cam")]:
        payload = f'{{"request_id":"{rid}","device":"{device}"}}'.encode()
        await router.handle("camera_snapshot", payload, None, None)
    ok, unknown, not_cam, not_ready = answers
    assert ok["ok"] is True
    assert ok["result"]["sha256"] == hashlib.sha256(camera.served[-1]).hexdigest()
    assert ok["result"]["topic"] == f"{ROOT}/snapshots/hall-cam/{ok['result']['snapshot_id']}"
    assert (unknown["ok"], unknown["error"]) == (False, "unknown device 'nope'")
    assert (not_cam["ok"], not_cam["error"]) == (False, "device 'b1-air' is not a camera")
    assert not_ready["ok"] is False
    assert "has not told its snapshot URL yet" in not_ready["error"]
    assert len(answers) == 4


async def test_the_command_says_why_the_fetch_failed_and_is_audited(
    tmp_path: Path, camera: CameraHttp
) -> None:
    camera.password = "changed-on-the-camera"
    svc = service(tmp_path, None, {"hall-cam": OnvifLike(source(camera, password="cam-pass"))})
    answers: list[dict[str, Any]] = []
    audits: list[tuple[str, dict[str, Any]]] = []
    router = CommandRouter(
        lambda _t, a, _c: answers.append(a),
        root=ROOT,
        audit=lambda device, data: audits.append((device, data)),
    )
    router.register("camera_snapshot", snapshot_handler(svc.command))
    await router.handle("camera_snapshot", b'{"request_id":"f1","device":"hall-cam"}', None, None)
    assert answers[0]["ok"] is False
    assert "login refused" in answers[0]["error"]
    camera.password = "cam-pass"
    await router.handle("camera_snapshot", b'{"request_id":"f2","device":"hall-cam"}', None, None)
    assert answers[1]["ok"] is True
    assert [(d, a["result"], a["snapshot"]) for d, a in audits] == [
        ("hall-cam", "refused", None),
        ("hall-cam", "ok", {k: answers[1]["result"][k] for k in ("topic", "sha256")}),
    ]


async def test_with_a_command_key_the_snapshot_must_be_signed(
    tmp_path: Path, camera: CameraHttp
) -> None:
    svc = service(tmp_path, camera)
    answers: list[dict[str, Any]] = []
    now = 1_800_000_000.0
    router = CommandRouter(
        lambda _t, a, _c: answers.append(a), root=ROOT, key="k", wall=lambda: now
    )
    router.register("camera_snapshot", snapshot_handler(svc.command))
    await router.handle("camera_snapshot", b'{"request_id":"u1","device":"gate-cam"}', None, None)
    req: dict[str, Any] = {
        "request_id": "s1",
        "device": "gate-cam",
        "sig_ts": "2027-01-15T08:00:00.000Z",
    }
    req["sig"] = sign("k", "camera_snapshot", req)
    await router.handle("camera_snapshot", json.dumps(req).encode(), None, None)
    assert answers[0]["ok"] is False
    assert "not authorised" in answers[0]["error"]
    assert len(camera.served) == 1  # the unsigned request never reached the camera
    assert answers[1]["ok"] is True, answers[1]


# -- alarms that ask for a picture ---------------------------------------------------
class Book(AlarmBook):
    def __init__(self) -> None:
        self.puts: list[dict[str, Any]] = []
        super().__init__(ROOT, lambda *_a, **kw: self.puts.append(kw["data"]), lambda *_a: None)


async def settle(sink: SnapshotAlarms) -> None:
    async with asyncio.timeout(10):
        while sink._tasks:
            await asyncio.sleep(0.01)


async def test_an_alarm_carries_the_picture_it_asked_for(
    tmp_path: Path, camera: CameraHttp
) -> None:
    svc = service(tmp_path, camera)
    book = Book()
    sink = SnapshotAlarms(book, {"after_hours_motion": "gate-cam"}, svc, wait_s=5)
    sink.raise_("after_hours_motion", "gate-pir", "major", en="Motion", zh="有人")
    sink.raise_("co2_high", "b1-air", "minor", en="CO2", zh="CO2")  # no camera: at once
    assert [p["rule"] for p in book.puts] == ["co2_high"]
    await settle(sink)
    alarm = book.puts[-1]
    assert alarm["rule"] == "after_hours_motion"
    assert alarm["snapshot"]["sha256"] == hashlib.sha256(camera.served[-1]).hexdigest()
    assert alarm["snapshot"]["topic"].startswith(f"{ROOT}/snapshots/gate-cam/")
    assert book.puts[0]["snapshot"] is None
    assert svc.health()["alarm_attached"] == 1


async def test_a_slow_camera_delays_the_alarm_by_the_bound_only_and_it_says_why(
    tmp_path: Path, camera: CameraHttp, caplog: pytest.LogCaptureFixture
) -> None:
    camera.mode, camera.delay_s = "slow", 30
    svc = service(tmp_path, camera)
    book = Book()
    sink = SnapshotAlarms(book, {"door_forced": "gate-cam"}, svc, wait_s=0.3)
    sink.raise_("door_forced", "gate", "critical", en="Forced", zh="强行打开")
    sink.clear("door_forced", "gate")  # a one-off event rule clears at once
    assert book.puts == []
    await settle(sink)
    assert [(p["state"], p["snapshot"]) for p in book.puts] == [
        ("active_unacked", None),
        ("cleared_unacked", None),
    ]
    health = svc.health()
    assert health["alarm_without"] == 1
    assert "within" in health["last_error"]
    assert "raised without its snapshot" in caplog.text


async def test_an_alarm_whose_camera_fails_goes_at_once_without_a_picture(
    tmp_path: Path, camera: CameraHttp
) -> None:
    camera.mode = "html"
    svc = service(tmp_path, camera)
    book = Book()
    sink = SnapshotAlarms(book, {"door_forced": "gate-cam", "fire": "nowhere"}, svc, wait_s=5)
    sink.raise_("door_forced", "gate", "critical", en="Forced", zh="强行打开")
    sink.raise_("fire", "b2", "critical", en="Fire", zh="火警")
    await settle(sink)
    assert sorted((p["rule"], p["snapshot"]) for p in book.puts) == [
        ("door_forced", None),
        ("fire", None),
    ]
    assert svc.health()["alarm_without"] == 2


async def test_alarms_waiting_at_stop_are_raised_without_their_picture(
    tmp_path: Path, camera: CameraHttp
) -> None:
    camera.mode, camera.delay_s = "slow", 30
    svc = service(tmp_path, camera)
    book = Book()
    sink = SnapshotAlarms(book, {"door_forced": "gate-cam"}, svc, wait_s=20)
    sink.raise_("door_forced", "gate", "critical", en="Forced", zh="强行打开")
    await asyncio.sleep(0.1)
    await sink.close()
    await svc.close()
    assert [(p["rule"], p["snapshot"]) for p in book.puts] == [("door_forced", None)]


async def test_alarms_at_the_same_moment_share_one_picture(
    tmp_path: Path, camera: CameraHttp
) -> None:
    svc = service(tmp_path, camera)
    book = Book()
    sink = SnapshotAlarms(book, {"gate_motion": "gate-cam"}, svc, wait_s=5)
    for pir in ("pir-1", "pir-2", "pir-3"):
        sink.raise_("gate_motion", pir, "major", en="Motion", zh="有人")
    await settle(sink)
    assert len(camera.served) == 1  # one request to the camera, not three
    refs = {json.dumps(p["snapshot"]) for p in book.puts}
    assert len(book.puts) == 3
    assert len(refs) == 1


# -- config ---------------------------------------------------------------------------
def write(tmp_path: Path, snapshots: dict[str, Any]) -> Path:
    cfg = {"site": {"id": "s", "gateway_id": "gw1"}, "snapshots": snapshots}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_camera_password_is_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cam = {"id": "c1", "url": "http://10.0.3.21/x.jpg", "username": "admin"}
    with pytest.raises(ConfigError, match=r"snapshots.cameras\[0\].password  secrets must not"):
        load_config(write(tmp_path, {"cameras": [{**cam, "password": "hunter2"}]}))
    monkeypatch.setenv("CAM_PW", "hunter2")
    cfg = load_config(write(tmp_path, {"cameras": [{**cam, "password": "${CAM_PW}"}]}))
    assert cfg.snapshots.cameras[0].password == "hunter2"


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ({"url": "http://admin:pw@10.0.3.21/x.jpg", "auth": "none"}, "no user name or password"),
        ({"url": "rtsp://10.0.3.21/x", "auth": "none"}, "http:// or https://"),
        ({"url": "http://10.0.3.21/x.jpg"}, "auth digest needs username and password"),
    ],
)
def test_camera_mistakes_are_named(camera: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CameraSnapshotConfig.model_validate({"id": "c1", **camera})


def test_a_camera_listed_twice_is_refused() -> None:
    cam = {"id": "c1", "url": "http://10.0.3.21/x.jpg", "auth": "none"}
    with pytest.raises(ValueError, match="listed twice"):
        SnapshotsConfig.model_validate({"cameras": [cam, cam]})


def test_a_rule_names_its_camera_by_id() -> None:
    rule = Rule.model_validate({"id": "r", "type": "event", "event": "motion", "snapshot": "c1"})
    assert rule.snapshot == "c1"
    with pytest.raises(ValueError, match="pattern"):
        Rule.model_validate({"id": "r", "type": "event", "event": "motion", "snapshot": "C 1"})


def test_unknown_and_not_a_camera_are_value_errors() -> None:
    # the router answers both without using up the request id (nothing reached a camera)
    assert issubclass(UnknownCamera, ValueError)
    assert issubclass(NotACamera, ValueError)


# -- the rule: pictures leave only through the snapshot service ---------------------
def test_only_the_snapshot_service_publishes_pictures() -> None:
    """Face pictures of access terminals are dropped by their drivers; camera pictures go
    out only through edge_agent/snapshots (an alarm's or a command's picture). A new
    caller of the picture topic or of the publisher's raw-bytes path fails here."""
    repo = Path(__file__).resolve().parents[2]
    allowed = {
        "edge_agent/topics.py",  # Topics.snapshot is defined there
        "edge_agent/mqtt/publisher.py",  # publish_blob is defined there
    }
    found = []
    for root in ("edge_agent", "drivers"):
        for path in sorted((repo / root).rglob("*.py")):
            rel = path.relative_to(repo).as_posix()
            if rel.startswith(
                ("edge_agent/snapshots/", "edge_agent/drivers/", "edge_agent/simulators/")
            ):
                continue
            text = path.read_text(encoding="utf-8")
            if re.search(r"\.snapshot\(|publish_blob\(|/snapshots/", text) and rel not in allowed:
                found.append(rel)
    assert found == []


def test_check_config_names_a_rule_whose_camera_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "cams.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "id": "gate_motion",
                        "type": "event",
                        "event": "motion",
                        "snapshot": "gate-cam",
                    },
                    {
                        "id": "hall_motion",
                        "type": "event",
                        "event": "motion",
                        "snapshot": "hal-cam",
                    },
                ]
            }
        ),
        encoding="utf-8",
    )
    cfg = {
        "site": {"id": "s", "gateway_id": "gw1"},
        "rules": {"files": ["cams.yaml"]},
        "snapshots": {
            "cameras": [
                {"id": "gate-cam", "url": "http://10.0.3.21/x.jpg", "auth": "none"},
                {"id": "hall-cam", "url": "http://10.0.3.22/x.jpg", "auth": "none"},
            ]
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    (line,) = err.value.problems
    assert "rules.files[0]  rule 'hall_motion' takes its snapshot from 'hal-cam'" in line


async def test_a_device_id_that_is_no_topic_level_is_refused_but_not_audited(
    tmp_path: Path,
) -> None:
    # ROOT/events/x/# is no topic a broker takes: an audit event there would stop the
    # publisher at the row, for every command that names a device
    svc = service(tmp_path, None)
    answers: list[dict[str, Any]] = []
    audits: list[str] = []
    router = CommandRouter(
        lambda _t, a, _c: answers.append(a), root=ROOT, audit=lambda d, _data: audits.append(d)
    )
    router.register("camera_snapshot", snapshot_handler(svc.command))
    for rid, device in (("b1", "x/#"), ("b2", "cam+1"), ("b3", "nope")):
        payload = json.dumps({"request_id": rid, "device": device}).encode()
        await router.handle("camera_snapshot", payload, None, None)
    assert [a["ok"] for a in answers] == [False, False, False]
    assert audits == ["nope"]
