"""The local web console (edge_agent/console) on real sockets, 127.0.0.1 port 0.

What an installer or a guard notices: nothing without a login, a password set with
``edge-agent console-passwd``, sessions that expire, POSTs without the CSRF token
refused, too many failed logins locked out (logged once), device names shown as text,
the alarm stream resumed where it left off, and streams that end when the agent stops.
A real alarm book, a real HTTP server, aiohttp's client; time is an injected clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from edge_agent.alarms.lifecycle import AlarmBook
from edge_agent.config.models import HttpConfig, Location
from edge_agent.console.app import COOKIE, SECURITY_HEADERS, Console
from edge_agent.console.auth import hash_password, set_password, verify_password
from edge_agent.console.config import ConsoleConfig
from edge_agent.console.sse import RING_MAX
from edge_agent.console.views import DeviceBoard
from edge_agent.driver import MetricInfo
from edge_agent.http import HttpServer
from edge_agent.pipeline.base import Message

ROOT = "campus/s1/gw1"
XSS = "<img src=x onerror=alert(1)>"
PASSWORD = "correct horse 电池 staple"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Dev:
    id: str
    kind: str = "modbus"
    name: str | None = None
    location: Location | None = None
    enabled: bool = True


class FramesDriver:
    """A driver that keeps raw frames, as the Modbus driver does."""

    def metrics(self) -> list[MetricInfo]:
        return [MetricInfo("co2", "ppm", "CO2"), MetricInfo(XSS, "<b>", "markup")]

    def last_frames(self) -> list[str]:
        return ["08:00:01.123Z >> 01 03 00 00 00 02 c4 0b", "08:00:01.140Z << 01 03 04 <b>"]


@dataclass
class Env:
    port: int
    book: AlarmBook
    board: DeviceBoard
    clock: Clock
    console: Console
    server: HttpServer
    retained: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def raise_alarm(self, device: str = "b1-r101-air", rule: str = "co2_high") -> str:
        return self.book.raise_(
            rule, device, "major", en=f"{rule} on {device}", zh="二氧化碳过高"
        ).alarm_id


async def _health() -> dict[str, Any]:
    return {"outbox": {"depth": 3}, "clock": {"synced": True}, "devices": {"online": 1}}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    creds = tmp_path / "console-users"
    set_password(creds, "alice", PASSWORD)
    retained: dict[str, Any] = {}
    book = AlarmBook(
        ROOT, lambda *a, **kw: None, retained.__setitem__, "en", out_of_service=["door_forced"]
    )
    board = DeviceBoard(
        [Dev("b1-r101-air", name=XSS, location=Location(building="B1", room=XSS)), Dev("meter-1")]
    )
    clock = Clock()
    server = HttpServer(HttpConfig(bind="127.0.0.1:0"))
    console = Console(
        ConsoleConfig(credentials=str(creds), session_s=600, login_failures_max=3),
        book=book,
        board=board,
        drivers={"b1-r101-air": FramesDriver()},
        health=_health,
        uplink=lambda: {"connected": False, "protocol": None, "broker": "127.0.0.1:1"},
        config_dir=tmp_path,
        language="en",
        now=clock,
        rules=lambda: ["co2_high", "pm25_high", "door_forced"],
    )
    console.attach(server)
    await server.start()
    env = Env(server.addresses[0][1], book, board, clock, console, server, retained)
    try:
        yield env
    finally:
        await server.stop()


def client() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies of an IP address host (127.0.0.1), as a browser does
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(
    http: aiohttp.ClientSession, env: Env, user: str = "alice", password: str = PASSWORD
) -> aiohttp.ClientResponse:
    async with http.get(env.url("/console/api/login")) as r:
        token = (await r.json())["csrf"]
    async with http.post(
        env.url("/console/api/login"),
        json={"user": user, "password": password},
        headers={"X-CSRF-Token": token},
    ) as r:
        await r.read()
        return r


async def csrf(http: aiohttp.ClientSession, env: Env) -> str:
    async with http.get(env.url("/console/api/session")) as r:
        assert r.status == 200
        return str((await r.json())["csrf"])


GETS = [
    "/console/api/session",
    "/console/api/alarms",
    "/console/api/devices",
    "/console/api/health",
    "/console/api/check",
    "/console/api/events",
    "/console/api/audit",
    "/console/api/out_of_view",
]
POSTS = [
    "/console/api/alarms/x/ack",
    "/console/api/alarms/x/shelve",
    "/console/api/logout",
    "/console/api/out_of_service",
    "/console/api/in_service",
]


async def test_every_page_and_api_needs_a_login(env: Env) -> None:
    async with client() as http:
        async with http.get(env.url("/console/"), allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/console/login"
        for path in GETS:
            async with http.get(env.url(path)) as r:
                assert r.status == 401, path
                assert r.headers["X-Frame-Options"] == "DENY"
        for path in POSTS:
            async with http.post(env.url(path), json={"minutes": 5}) as r:
                assert r.status == 401, path
        # a cookie that is no session is nothing
        http.cookie_jar.update_cookies({COOKIE: "guessed"})
        async with http.get(env.url("/console/api/alarms")) as r:
            assert r.status == 401
        # the login page itself, with the security headers
        async with http.get(env.url("/console/login")) as r:
            assert r.status == 200
            for name, value in SECURITY_HEADERS.items():
                assert r.headers[name] == value
            assert "'unsafe-inline'" not in r.headers["Content-Security-Policy"]
            assert "<script>" not in await r.text()  # no inline script: the CSP forbids it


async def test_console_passwd_writes_a_0600_file_and_that_password_logs_in(
    env: Env, tmp_path: Path
) -> None:
    creds = Path(env.console.credentials)
    creds.unlink()
    async with client() as http:
        assert (await login(http, env)).status == 503  # no users: no default password
    for user, password in (("bob", "first"), ("bob", "second 密码")):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "console-passwd",
                user,
                "-f",
                str(creds),
                "--password-stdin",
            ],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "second" not in creds.read_text()
    assert creds.read_text().count("bob:scrypt$") == 1
    async with client() as http:
        assert (await login(http, env, "bob", "first")).status == 401  # the old one is gone
        r = await login(http, env, "bob", "second 密码")
        assert r.status == 200
        cookie = r.cookies[COOKIE]
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        async with http.get(env.url("/console/api/session")) as s:
            assert (await s.json())["user"] == "bob"
        async with http.get(env.url("/console/")) as page:
            assert page.status == 200
            assert "alarms" in await page.text()


def test_hashes_are_salted_scrypt_and_malformed_ones_never_match() -> None:
    a, b = hash_password("pw", n=2**10), hash_password("pw", n=2**10)
    assert a != b
    assert a.startswith("scrypt$1024$8$1$")
    assert verify_password("pw", a)
    assert not verify_password("pw ", a)
    assert not verify_password("pw", "scrypt$1024$8$1$not-base64$AAAA")
    assert not verify_password("pw", "scrypt$1073741824$8$1$AAAA$AAAA")  # too costly
    assert not verify_password("pw", "md5$x")


async def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    alarm_id = env.raise_alarm()
    ack = env.url(f"/console/api/alarms/{alarm_id}/ack")
    async with client() as http:
        assert (await login(http, env)).status == 200
        token = await csrf(http, env)
        for headers in (
            {},
            {"X-CSRF-Token": "wrong"},
            {"X-CSRF-Token": token, "Origin": "http://evil.example"},
        ):
            async with http.post(ack, json={}, headers=headers) as r:
                assert r.status == 403, headers
        assert env.book.alarms[alarm_id].state == "active_unacked"
        # the login POST needs its own token too (login CSRF)
        async with http.post(
            env.url("/console/api/login"), json={"user": "alice", "password": PASSWORD}
        ) as r:
            assert r.status == 403
        caplog.set_level(logging.INFO, logger="edge_agent.alarms")
        async with http.post(
            ack, json={}, headers={"X-CSRF-Token": token, "Origin": f"http://127.0.0.1:{env.port}"}
        ) as r:
            assert r.status == 200
            assert (await r.json())["state"] == "active_acked"
        async with http.post(
            env.url("/console/api/alarms/no-such-alarm/ack"),
            json={},
            headers={"X-CSRF-Token": token},
        ) as r:
            assert r.status == 409  # the book's refusal is said, not a 500
            assert "no-such-alarm" in (await r.json())["error"]
    alarm = env.book.alarms[alarm_id]
    assert (alarm.state, alarm.acked_by) == ("active_acked", "alice")
    assert env.retained[f"{ROOT}/alarms/active/{alarm_id}"]["state"] == "active_acked"
    assert any("(console 127.0.0.1)" in r.getMessage() for r in caplog.records)


async def test_shelve_calls_the_book_with_the_user_and_minutes(env: Env) -> None:
    alarm_id = env.raise_alarm()
    async with client() as http:
        await login(http, env)
        token = await csrf(http, env)
        url = env.url(f"/console/api/alarms/{alarm_id}/shelve")
        async with http.post(url, json={"minutes": 0}, headers={"X-CSRF-Token": token}) as r:
            assert r.status == 409
        async with http.post(url, json={"minutes": 30}, headers={"X-CSRF-Token": token}) as r:
            assert r.status == 200
    assert env.book.alarms[alarm_id].state == "shelved"
    assert env.book.alarms[alarm_id].acked_by == "alice"


async def test_a_session_expires(env: Env) -> None:
    async with client() as http:
        await login(http, env)
        async with http.get(env.url("/console/api/alarms")) as r:
            assert r.status == 200
        env.clock.t += 599
        async with http.get(env.url("/console/api/alarms")) as r:
            assert r.status == 200
        env.clock.t += 2
        async with http.get(env.url("/console/api/alarms")) as r:
            assert r.status == 401
        async with http.get(env.url("/console/"), allow_redirects=False) as r:
            assert r.status == 303
    assert len(env.console.sessions) == 0


async def test_logout_ends_the_session(env: Env) -> None:
    async with client() as http:
        await login(http, env)
        token = await csrf(http, env)
        cookie = http.cookie_jar.filter_cookies(URL(env.url("/console/")))[COOKIE].value
        async with http.post(
            env.url("/console/api/logout"), json={}, headers={"X-CSRF-Token": token}
        ) as r:
            assert r.status == 200
    async with client() as other:  # the old cookie, replayed
        other.cookie_jar.update_cookies({COOKIE: cookie})
        async with other.get(env.url("/console/api/alarms")) as r:
            assert r.status == 401


async def test_failed_logins_lock_the_address_out_logged_once_then_summed_up(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.console")
    async with client() as http:
        for _ in range(3):
            assert (await login(http, env, password="guess")).status == 401
        for _ in range(4):  # locked: even the right password is refused
            r = await login(http, env)
            assert r.status == 429
            assert int(r.headers["Retry-After"]) > 0
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "127.0.0.1" in warnings[0].getMessage()
        env.clock.t += 301
        assert (await login(http, env)).status == 200
    summary = [r.getMessage() for r in caplog.records if "more login attempts" in r.getMessage()]
    assert summary
    assert "4 more" in summary[0]


async def test_device_names_and_frames_are_json_text_never_html(env: Env) -> None:
    env.board.see(Message("telemetry", "b1-r101-air", {"co2": 812, XSS: 1}, ts=1.0))
    env.board.see(Message("state", "b1-r101-air", {"state": "degraded", "last_error": XSS}))
    async with client() as http:
        await login(http, env)
        async with http.get(env.url("/console/api/devices")) as r:
            assert r.headers["Content-Type"].startswith("application/json")
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            devices = {d["id"]: d for d in (await r.json())["devices"]}
        async with http.get(env.url("/console/")) as page:
            html = await page.text()
    air = devices["b1-r101-air"]
    assert air["name"] == XSS
    assert air["location"]["room"] == XSS
    assert air["values"] == {"co2": 812, XSS: 1}
    assert air["units"] == {"co2": "ppm", XSS: "<b>"}
    assert (air["state"], air["last_error"]) == ("degraded", XSS)
    assert air["frames"][0].startswith("08:00:01.123Z >> 01 03")
    assert devices["meter-1"]["frames"] is None  # no driver frames: said, not faked
    assert XSS not in html  # pages are static: data only arrives as JSON


# -- the alarm stream -----------------------------------------------------------------


class Sse:
    """Reads server-sent events from an open response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, *, skip: tuple[str, ...] = ("audit",)) -> dict[str, Any]:
        """The next event whose name is not in ``skip`` (audit entries by default)."""
        while True:
            event = await self._next()
            if event.get("event") not in skip:
                return event

    async def _next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        async with asyncio.timeout(10):
            while True:
                line = (await self.response.content.readline()).decode()
                if line == "":
                    raise EOFError
                line = line.rstrip("\n")
                if line == "":
                    if "data" in event:
                        return event
                    event = {}
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                event[key] = json.loads(value) if key == "data" else value


async def test_the_stream_resumes_with_last_event_id_else_sends_a_snapshot(env: Env) -> None:
    first = env.raise_alarm(rule="co2_high")
    async with client() as http:
        await login(http, env)
        async with http.get(env.url("/console/api/events")) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            sse = Sse(r)
            snap = await sse.next()
            assert snap["event"] == "snapshot"
            assert [a["alarm_id"] for a in snap["data"]] == [first]
            second = env.raise_alarm(rule="pm25_high")
            got = await sse.next()
            assert (got["event"], got["data"]["alarm_id"]) == ("alarm", second)
            last_id = got["id"]
        # away: two transitions it did not see
        env.book.ack(first, "bob", origin="mqtt")
        third = env.raise_alarm(rule="noise_high")
        async with http.get(
            env.url("/console/api/events"), headers={"Last-Event-ID": last_id}
        ) as r:
            sse = Sse(r)
            missed = [await sse.next(), await sse.next()]
            assert [e["event"] for e in missed] == ["alarm", "alarm"]
            assert [(e["data"]["alarm_id"], e["data"]["state"]) for e in missed] == [
                (first, "active_acked"),
                (third, "active_unacked"),
            ]
        # an id of another run of the agent: the whole book again
        async with http.get(
            env.url("/console/api/events"), headers={"Last-Event-ID": "0badc0de-2"}
        ) as r:
            snap = await Sse(r).next()
            assert snap["event"] == "snapshot"
            assert {a["alarm_id"] for a in snap["data"]} == {first, second, third}


async def test_a_browser_away_longer_than_the_ring_gets_a_snapshot(env: Env) -> None:
    env.raise_alarm(rule="r0")
    async with client() as http:
        await login(http, env)
        async with http.get(env.url("/console/api/events")) as r:
            last_id = (await Sse(r).next())["id"]
        for i in range(1, RING_MAX + 1):  # more than the ring keeps
            env.raise_alarm(rule=f"r{i}")
        async with http.get(
            env.url("/console/api/events"), headers={"Last-Event-ID": last_id}
        ) as r:
            snap = await Sse(r).next()
    assert snap["event"] == "snapshot"
    assert len(snap["data"]) == RING_MAX + 1


async def test_stopping_the_server_ends_open_streams_cleanly(env: Env) -> None:
    async with client() as http:
        await login(http, env)
        async with http.get(env.url("/console/api/events")) as r:
            await Sse(r).next()
            assert env.console.stream.streams == 1
            await env.server.stop()
            # the handler returned (a complete chunked body), rather than being cancelled
            # after the stop timeout with the connection cut
            rest = await asyncio.wait_for(r.content.read(), 10)
            assert b"event:" not in rest
    assert env.console.stream.streams == 0


async def test_open_streams_are_capped(env: Env) -> None:
    env.console.max_streams = 1
    async with client() as http:
        await login(http, env)
        async with http.get(env.url("/console/api/events")) as first:
            await Sse(first).next()
            async with http.get(env.url("/console/api/events")) as second:
                assert second.status == 503
                assert second.headers["Retry-After"] == "10"
        await until_streams(env, 0)
        async with http.get(env.url("/console/api/events")) as again:  # freed when it closed
            assert (await Sse(again).next())["event"] == "snapshot"


async def until_streams(env: Env, n: int) -> None:
    async with asyncio.timeout(10):
        while env.console.stream.streams != n:
            await asyncio.sleep(0.01)


async def test_nothing_runs_while_nobody_is_connected(env: Env) -> None:
    def console_tasks() -> list[asyncio.Task[Any]]:
        found = []
        for task in asyncio.all_tasks():
            code = getattr(task.get_coro(), "cr_code", None)
            if not task.done() and code is not None and "/console/" in code.co_filename:
                found.append(task)
        return found

    for i in range(5):
        env.raise_alarm(rule=f"r{i}")
    await asyncio.sleep(0)
    assert console_tasks() == []  # no polling loop of its own, started or not
    assert env.console.stream.streams == 0
    assert len(env.console.stream.start(None)[0]) == 1  # the ring has them for later


# -- check-config ---------------------------------------------------------------------


def _write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "site: {id: s1, gateway_id: gw1}\nclock: {sync_check: none}\n" + extra, encoding="utf-8"
    )
    return path


def test_check_config_wants_http_bind_and_the_credentials_file(tmp_path: Path) -> None:
    from edge_agent.config.loader import load_config
    from edge_agent.errors import ConfigError

    path = _write(tmp_path, "console:\n  credentials: users\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = err.value.problems
    assert any(line.startswith(f"{path}:3  console  ") and "http.bind" in line for line in lines)
    assert any("console.credentials" in line and "console-passwd" in line for line in lines)
    set_password(tmp_path / "users", "alice", "pw")
    path = _write(tmp_path, "http: {bind: '127.0.0.1:0'}\nconsole:\n  credentials: users\n")
    cfg = load_config(path)
    assert cfg.console is not None
    assert cfg.console.session_s == 8 * 3600
    assert load_config(_write(tmp_path, "")).console is None  # off unless written


def test_the_password_is_never_in_the_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "users"
    assert set_password(path, "alice", "hunter2-长城") is True
    assert set_password(path, "carol", "x") is True
    assert set_password(path, "alice", "hunter3") is False
    text = path.read_text()
    assert "hunter" not in text
    assert [line.split(":")[0] for line in text.splitlines()] == ["alice", "carol"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_root_updating_the_file_keeps_its_owner_so_the_agent_can_still_read_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users"
    set_password(path, "alice", "one")
    os.chown(path, 65534, 65534)  # the agent's user (chown edge-agent: FILE)
    set_password(path, "alice", "two")
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_console_passwd_with_the_config_on_the_first_run(tmp_path: Path) -> None:
    """The first user is created before the credentials file exists, which check-config
    would refuse: the command reads only console.credentials of the config."""
    path = _write(tmp_path, "http: {bind: '0.0.0.0:8080'}\nconsole:\n  credentials: users\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "console-passwd",
            "guard",
            "-c",
            str(path),
            "--password-stdin",
        ],
        input="s3cret 密码\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "guard added" in done.stdout
    users = (tmp_path / "users").read_text()
    assert users.startswith("guard:scrypt$")
    from edge_agent.config.loader import load_config

    assert load_config(path).console is not None  # and now the config checks
    bare = _write(tmp_path, "")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "console-passwd",
            "guard",
            "-c",
            str(bare),
            "--password-stdin",
        ],
        input="x\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "console.credentials" in done.stderr


def test_a_console_nobody_can_log_in_to_says_so_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def make(creds: Path) -> Console:
        return Console(
            ConsoleConfig(credentials=str(creds)),
            book=AlarmBook(ROOT, lambda *a, **kw: None, lambda t, p: None),
            board=DeviceBoard([]),
            drivers={},
            health=_health,
            uplink=dict,
            config_dir=tmp_path,
        )

    caplog.set_level(logging.WARNING, logger="edge_agent.console")
    make(tmp_path / "missing")
    (tmp_path / "empty").write_text("# nobody yet\n")
    make(tmp_path / "empty")
    set_password(tmp_path / "users", "alice", "pw")
    make(tmp_path / "users")
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_agent.console.app"]
    assert len(lines) == 2
    assert "missing" in lines[0]
    assert "no users in it" in lines[1]
    assert all("console-passwd" in line for line in lines)


# -- the alarm lifecycle on the console: audit, out of service, shelve ends ---------------


async def post(
    http: aiohttp.ClientSession, env: Env, path: str, body: dict[str, Any], token: str
) -> tuple[int, Any]:
    async with http.post(env.url(path), json=body, headers={"X-CSRF-Token": token}) as r:
        return r.status, await r.json()


async def get(http: aiohttp.ClientSession, env: Env, path: str) -> Any:
    async with http.get(env.url(path)) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        return await r.json()


async def test_a_rule_taken_out_of_service_on_the_console_and_back(env: Env) -> None:
    alarm_id = env.raise_alarm(rule="co2_high")
    topic = f"{ROOT}/alarms/active/{alarm_id}"
    async with client() as http:
        await login(http, env)
        token = await csrf(http, env)
        listed = await get(http, env, "/console/api/out_of_view")
        assert {"co2_high", "pm25_high", "door_forced"} <= set(listed["rules"])
        assert [(o["rule"], o["configured"]) for o in listed["items"]] == [("door_forced", True)]
        # a typo takes nothing out of service: said, not silently accepted
        status, body = await post(
            http, env, "/console/api/out_of_service", {"rule": "co2_hihg"}, token
        )
        assert status == 400
        assert "co2_hihg" in body["error"]
        status, body = await post(
            http,
            env,
            "/console/api/out_of_service",
            {"rule": "co2_high", "device": "b1-r101-air"},
            token,
        )
        assert status == 200, body
        assert (body["by"], body["origin"], body["changed"]) == ("alice", "console 127.0.0.1", True)
        # its open alarm leaves view, on the console and on the broker's retained topic
        assert (await get(http, env, "/console/api/alarms"))["alarms"] == []
        assert env.retained[topic] is None
        items = (await get(http, env, "/console/api/out_of_view"))["items"]
        ours = [o for o in items if o["rule"] == "co2_high"]
        assert [(o["device"], o["reason"], o["by"]) for o in ours] == [
            ("b1-r101-air", "out_of_service", "alice")
        ]
        # the config's entry can only be removed in the config
        status, body = await post(
            http, env, "/console/api/in_service", {"rule": "door_forced"}, token
        )
        assert status == 409
        assert "config" in body["error"]
        status, body = await post(
            http,
            env,
            "/console/api/in_service",
            {"rule": "co2_high", "device": "b1-r101-air"},
            token,
        )
        assert (status, body["changed"]) == (200, True)
        # the condition still holds (nothing cleared it): raised anew, with a new id
        again = (await get(http, env, "/console/api/alarms"))["alarms"]
        assert [(a["rule"], a["state"]) for a in again] == [("co2_high", "active_unacked")]
        assert again[0]["alarm_id"] != alarm_id
        items = (await get(http, env, "/console/api/out_of_view"))["items"]
        assert [o["rule"] for o in items] == ["door_forced"]


async def test_out_of_service_posts_need_the_csrf_token(env: Env) -> None:
    alarm_id = env.raise_alarm(rule="co2_high")
    async with client() as http:
        await login(http, env)
        token = await csrf(http, env)
        for path in ("/console/api/out_of_service", "/console/api/in_service"):
            for headers in (
                {},
                {"X-CSRF-Token": "wrong"},
                {"X-CSRF-Token": token, "Origin": "http://evil.example"},
            ):
                async with http.post(
                    env.url(path), json={"rule": "co2_high"}, headers=headers
                ) as r:
                    assert r.status == 403, (path, headers)
    assert list(env.book.alarms) == [alarm_id]
    assert [s.rule for s in env.book.suppressions.values()] == ["door_forced"]
    assert all(e["action"] not in ("out_of_service", "in_service") for e in env.book.audit())


async def test_the_audit_says_who_did_what_from_where_newest_first_as_json_text(
    env: Env,
) -> None:
    alarm_id = env.raise_alarm(device=XSS)
    other = env.raise_alarm(rule="pm25_high")
    # the platform acknowledges first, by a name that is markup
    env.book.ack(alarm_id, XSS, origin=f"mqtt request_id=p1 sender='{XSS}'")
    async with client() as http:
        await login(http, env)
        token = await csrf(http, env)
        # the console's ack comes second: it converges, an answer and no error
        status, body = await post(http, env, f"/console/api/alarms/{alarm_id}/ack", {}, token)
        assert (status, body["changed"], body["acked_by"]) == (200, False, XSS)
        entries = (await get(http, env, "/console/api/audit"))["entries"]
        assert [(e["action"], e["alarm_id"], e["by"], e["changed"]) for e in entries[:2]] == [
            ("ack", alarm_id, "alice", False),
            ("ack", alarm_id, XSS, True),
        ]
        assert entries[0]["origin"] == "console 127.0.0.1"
        assert entries[1]["origin"] == f"mqtt request_id=p1 sender='{XSS}'"
        assert entries[-1]["action"] == "raised"  # newest first
        assert {e["device"] for e in entries} == {XSS, "b1-r101-air"}
        one = (await get(http, env, f"/console/api/audit?alarm_id={other}"))["entries"]
        assert [(e["action"], e["alarm_id"]) for e in one] == [("raised", other)]
        assert len((await get(http, env, "/console/api/audit?limit=1"))["entries"]) == 1
        async with http.get(env.url("/console/api/audit?limit=many")) as r:
            assert r.status == 400
        async with http.get(env.url("/console/")) as page:
            assert XSS not in await page.text()  # data only ever arrives as JSON


async def test_audit_entries_arrive_over_the_alarm_stream(env: Env) -> None:
    """Also those of actions that change no alarm (a rule with nothing open taken out of
    service, a converging ack): the audit page follows without polling."""
    alarm_id = env.raise_alarm(rule="co2_high")
    async with client() as http:
        await login(http, env)
        token = await csrf(http, env)
        async with http.get(env.url("/console/api/events")) as r:
            sse = Sse(r)
            assert (await sse.next(skip=()))["event"] == "snapshot"
            status, _ = await post(
                http, env, "/console/api/out_of_service", {"rule": "pm25_high"}, token
            )
            assert status == 200
            got = await sse.next(skip=())
            assert got["event"] == "audit"
            assert (got["data"]["action"], got["data"]["rule"], got["data"]["by"]) == (
                "out_of_service",
                "pm25_high",
                "alice",
            )
            env.book.ack(alarm_id, "duty-office", origin="mqtt request_id=p2")
            names = [(await sse.next(skip=()))["event"] for _ in range(2)]
            assert names == ["audit", "alarm"]  # the entry, then the transition
            env.book.ack(alarm_id, "platform-again", origin="mqtt request_id=p3")
            late = await sse.next(skip=())
            assert (late["event"], late["data"]["changed"], late["data"]["by"]) == (
                "audit",
                False,
                "platform-again",
            )


async def test_a_shelved_alarm_says_when_its_shelve_ends(env: Env) -> None:
    alarm_id = env.raise_alarm()
    async with client() as http:
        await login(http, env)
        token = await csrf(http, env)
        async with http.get(env.url("/console/api/events")) as r:
            sse = Sse(r)
            await sse.next()
            status, body = await post(
                http, env, f"/console/api/alarms/{alarm_id}/shelve", {"minutes": 30}, token
            )
            assert status == 200
            event = await sse.next()
        listed = (await get(http, env, "/console/api/alarms"))["alarms"]
    until = env.book.alarms[alarm_id].shelved_until_wall
    assert until is not None
    from edge_agent.envelope import iso_ms

    assert body["until"] == iso_ms(until)
    assert (event["data"]["state"], event["data"]["shelved_until"]) == ("shelved", iso_ms(until))
    assert [(a["state"], a["shelved_until"]) for a in listed] == [("shelved", iso_ms(until))]
