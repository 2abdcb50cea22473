"""The robot senders against local receivers that check signatures the official way
(tests/notify_helpers.py), the token bucket and the folding of a flood, with an
injected clock."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from edge_agent.config.loader import load_config
from edge_agent.errors import ConfigError
from edge_agent.notify.config import NotifyConfig, RobotConfig
from edge_agent.notify.limits import Limits, TokenBucket, plan
from edge_agent.notify.message import format_one, format_summary
from edge_agent.notify.senders import Sender, SendFailed, TooFast
from tests.notify_helpers import Receiver

SECRET = "SEC0123456789abcdef+/="  # the apps show secrets like "SEC..." (DingTalk)
START = 1_764_460_800.0  # 2025-11-30 00:00:00 UTC


class Wall:
    def __init__(self, t: float = START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _receiver(kind: str, secret: str | None, wall: Wall) -> Receiver:
    r = Receiver(kind, secret, wall=wall)
    await r.start()
    return r


def _robot(kind: str, url: str, secret: str | None = None, **kw: Any) -> RobotConfig:
    return RobotConfig(id="r1", kind=kind, url=url, secret=secret, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["dingtalk", "feishu"])
async def test_signed_robots_pass_the_services_own_check(
    kind: str, session: aiohttp.ClientSession
) -> None:
    wall = Wall()
    rx = await _receiver(kind, SECRET, wall)
    try:
        sender = Sender(_robot(kind, rx.url, SECRET), session, wall)
        # Many timestamps, so the base64 signatures carry '+', '/' and '=' (which the
        # query string must encode for DingTalk).
        for i in range(40):
            wall.t = START + i * 61.7
            await sender.send(f"告警 {i}")
        assert rx.bad_signatures == 0
        assert rx.texts == [f"告警 {i}" for i in range(40)]
        assert any(c in s for s in rx.signatures for c in "+/")
    finally:
        await rx.stop()


@pytest.mark.parametrize("kind", ["dingtalk", "feishu"])
async def test_a_wrong_secret_is_an_error_not_a_crash(
    kind: str, session: aiohttp.ClientSession
) -> None:
    wall = Wall()
    rx = await _receiver(kind, SECRET, wall)
    try:
        sender = Sender(_robot(kind, rx.url, "SECwrong"), session, wall)
        with pytest.raises(SendFailed, match=r"310000|19021") as info:
            await sender.send("x")
        assert not isinstance(info.value, TooFast)
        assert rx.bad_signatures == 1
        assert rx.texts == []
    finally:
        await rx.stop()


async def test_a_stale_timestamp_fails_the_signature(session: aiohttp.ClientSession) -> None:
    # The services refuse a timestamp more than an hour from their clock: the signing
    # uses our wall clock, so a gateway with a wrong clock shows up as a refusal.
    rx = await _receiver("feishu", SECRET, Wall())
    try:
        sender = Sender(_robot("feishu", rx.url, SECRET), session, Wall(START - 7200))
        with pytest.raises(SendFailed, match="19021"):
            await sender.send("x")
    finally:
        await rx.stop()


async def test_wecom_sends_text_with_its_key(session: aiohttp.ClientSession) -> None:
    rx = await _receiver("wecom", None, Wall())
    try:
        await Sender(_robot("wecom", rx.url), session).send("门被强行打开")
        assert rx.texts == ["门被强行打开"]
        bad = Sender(_robot("wecom", rx.url.replace("key=k-1", "key=other")), session)
        with pytest.raises(SendFailed, match="93000"):
            await bad.send("x")
    finally:
        await rx.stop()


@pytest.mark.parametrize(
    ("kind", "code"), [("wecom", "45009"), ("dingtalk", "130101"), ("feishu", "11232")]
)
async def test_too_fast_answers_are_recognised(
    kind: str, code: str, session: aiohttp.ClientSession
) -> None:
    wall = Wall()
    secret = None if kind == "wecom" else SECRET
    rx = await _receiver(kind, secret, wall)
    try:
        sender = Sender(_robot(kind, rx.url, secret), session, wall)
        rx.too_fast = 1
        with pytest.raises(TooFast, match=code) as info:
            await sender.send("x")
        assert info.value.retry_after_s > 0
        await sender.send("y")  # the next try goes through
        assert rx.texts == ["y"]
    finally:
        await rx.stop()


async def test_feishu_old_style_answer_is_success(session: aiohttp.ClientSession) -> None:
    # Older Feishu answers carry only StatusCode/StatusMessage.
    from aiohttp import web

    async def old(request: web.Request) -> web.Response:
        return web.json_response({"StatusCode": 0, "StatusMessage": "success"})

    app = web.Application()
    app.router.add_post("/hook", old)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        port = runner.addresses[0][1]
        await Sender(_robot("feishu", f"http://127.0.0.1:{port}/hook"), session).send("x")
    finally:
        await runner.cleanup()


async def test_webhook_signs_the_body_and_honours_retry_after(
    session: aiohttp.ClientSession,
) -> None:
    rx = await _receiver("webhook", None, Wall())
    try:
        sender = Sender(_robot("webhook", rx.url, "hooksecret"), session)
        rx.too_fast = 1
        with pytest.raises(TooFast) as info:
            await sender.send("t", {"alarm_id": "a1"})
        assert info.value.retry_after_s == 7
        await sender.send("t", {"alarm_id": "a1"})
        body = json.dumps(rx.bodies[0], ensure_ascii=False).encode()
        want = "sha256=" + hmac.new(b"hooksecret", body, hashlib.sha256).hexdigest()
        assert rx.headers[0]["X-Signature"] == want
        assert rx.bodies[0]["alarm"] == {"alarm_id": "a1"}
    finally:
        await rx.stop()


async def test_an_unreachable_robot_fails_without_showing_its_key(
    session: aiohttp.ClientSession,
) -> None:
    rx = await _receiver("wecom", None, Wall())
    url = rx.url.replace("k-1", "topsecretkey")
    await rx.stop()  # nobody listens on that port now
    with pytest.raises(SendFailed, match="unreachable") as info:
        await Sender(_robot("wecom", url), session).send("x")
    assert "topsecretkey" not in str(info.value)


# -- limits ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_20_a_minute() -> None:
    clock = Clock()
    limits = Limits.for_kind("dingtalk", 20, clock)
    for _ in range(20):
        assert limits.available() >= 1
        limits.take()
    assert limits.available() == 0
    assert limits.wait_s() == pytest.approx(3.0)
    clock.t += 3.0
    assert limits.available() == 1
    clock.t += 3600
    assert limits.available() == 20  # never more than the bucket holds


def test_feishu_also_keeps_to_5_a_second() -> None:
    clock = Clock()
    limits = Limits.for_kind("feishu", 20, clock)
    assert limits.available() == 5
    for _ in range(5):
        limits.take()
    assert limits.available() == 0
    assert limits.wait_s() == pytest.approx(0.2)
    clock.t += 1
    assert limits.available() == 5
    assert Limits.for_kind("wecom", 20, clock).available() == 20


def test_too_fast_drains_the_bucket() -> None:
    clock = Clock()
    bucket = TokenBucket(20, 20 / 60, clock)
    bucket.drain()
    assert bucket.tokens == 0
    assert bucket.wait_s() == pytest.approx(3.0)


def test_a_flood_is_folded_with_the_most_severe_first() -> None:
    rank = {"critical": 0, "major": 1, "minor": 2}
    items = [(seq, sev) for seq, sev in enumerate(["minor", "major", "critical", "minor"])]

    def key(i: tuple[int, str]) -> tuple[int, int]:
        return (rank[i[1]], i[0])

    assert plan(items, 20, key).single == (2, "critical")  # critical overtakes
    assert plan(items, 2, key).single == (2, "critical")
    one = plan(items, 1, key)  # the last token: everything in one summary
    assert one.single is None
    assert one.folded == [(2, "critical"), (1, "major"), (0, "minor"), (3, "minor")]
    assert plan(items[:1], 1, key).single == (0, "minor")
    assert plan([], 5, key).single is None


def test_messages_follow_the_site_language() -> None:
    alarm = {
        "alarm_id": "door-forced-b1-x",
        "rule": "door_forced",
        "device": "b1-gate",
        "severity": "critical",
        "state": "active_unacked",
        "message": "东门被强行打开",
    }
    tz = ZoneInfo("Asia/Shanghai")
    zh = format_one(alarm, "2026-11-30T00:00:00.000Z", "zh", tz, keyword="告警")
    assert zh.startswith("告警 【紧急·告警】东门被强行打开")
    assert "11-30 08:00:00" in zh  # local time of the site
    en = format_one(alarm, "2026-11-30T00:00:00.000Z", "en", tz)
    assert en.startswith("[CRITICAL ALARM]")
    summary = format_summary([(alarm, None)] * 12, "en", tz)
    assert summary.splitlines()[0] == "12 alarms (folded: the robot's rate limit):"
    assert summary.splitlines()[-1] == "… and 2 more"


def test_robot_config_checks() -> None:
    with pytest.raises(ValueError, match="https"):
        RobotConfig(id="r", kind="wecom", url="ftp://x")
    with pytest.raises(ValueError, match="no signing secret"):
        RobotConfig(id="r", kind="wecom", url="https://x", secret="s")
    with pytest.raises(ValueError, match="duplicate robot id"):
        NotifyConfig.model_validate(
            {"robots": [{"id": "a", "kind": "wecom", "url": "https://x"}] * 2}
        )


def test_robot_urls_and_secrets_are_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_file = tmp_path / "agent.yaml"
    robots = (
        "notify:\n  robots:\n"
        "    - {id: a, kind: dingtalk, url: '${cred:ding-url}', secret: '${DING_SECRET}'}\n"
        "    - {id: b, kind: wecom, url: 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k'}\n"
    )
    cfg_file.write_text("site: {id: s, gateway_id: g}\n" + robots)
    (tmp_path / "ding-url").write_text("https://oapi.dingtalk.com/robot/send?access_token=t\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("DING_SECRET", "SECabc")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    (problem,) = info.value.problems
    assert problem.startswith(f"{cfg_file}:5  notify.robots[1].url  secrets must not be written")
    cfg_file.write_text("site: {id: s, gateway_id: g}\n" + robots.split("    - {id: b")[0])
    (robot,) = load_config(cfg_file).notify.robots  # type: ignore[attr-defined]
    assert robot.url == "https://oapi.dingtalk.com/robot/send?access_token=t"
    assert robot.secret == "SECabc"
