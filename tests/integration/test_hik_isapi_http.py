"""The Hikvision ISAPI layer over real HTTP on loopback, with digest authentication as a
DS-K1T asks for it: the alertStream read as the network chunks it, and the AcsEvent catch-up
page by page. The server here is written from the ISAPI wire (RFC 7616 digest, ``qop=auth``,
MD5; the multipart stream), not from drivers/hikvision; it stands for the terminal until the
ISAPI simulator exists. It also pins what the driver will rely on: aiohttp's
``DigestAuthMiddleware`` (aiohttp >= 3.12)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web

from edge_agent.drivers.hikvision.acsevent import AcsEventSearch
from edge_agent.drivers.hikvision.alerts import AlertStream
from edge_agent.drivers.hikvision.events import AccessEvent, Heartbeat, to_event

USER, PASSWORD, REALM = "admin", "Campus-2026!", "DS-6E392E44"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # the digest scheme's own hash


@dataclass
class Terminal:
    """A digest-protected ISAPI terminal: what it answers and what it saw."""

    records: list[dict[str, Any]]
    nonces: set[str] = field(default_factory=set)
    #: (method, path with query, authorised?) of every request
    seen: list[tuple[str, str, bool]] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)

    def authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        f = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]*))', header[7:])}
        if f.get("nonce") not in self.nonces or f.get("username") != USER:
            return False
        if f.get("uri") != request.path_qs or f.get("qop") != "auth":
            return False
        ha1 = _md5(f"{USER}:{REALM}:{PASSWORD}")
        ha2 = _md5(f"{request.method}:{f['uri']}")
        want = _md5(f"{ha1}:{f['nonce']}:{f['nc']}:{f['cnonce']}:auth:{ha2}")
        return secrets.compare_digest(want, f.get("response", ""))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ok = self.authorised(request)
        self.seen.append((request.method, request.path_qs, ok))
        if not ok:
            nonce = secrets.token_hex(16)
            self.nonces.add(nonce)
            challenge = f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm="MD5"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        if request.path == "/ISAPI/Event/notification/alertStream":
            return await self.stream(request)
        if request.path == "/ISAPI/AccessControl/AcsEvent":
            return self.search(await request.json())
        return web.Response(status=404)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "multipart/mixed; boundary=MIME_boundary"}
        )
        await resp.prepare(request)
        parts = [
            (b"application/json", json.dumps({"eventType": "heartBeat"}).encode()),
            *(
                (b'application/json; charset="UTF-8"', json.dumps(self.alert(r)).encode())
                for r in self.records
            ),
            (b"image/jpeg", b"\xff\xd8\xff\xe0" + b"\x00face" * 50_000),
        ]
        wire = b"".join(
            b"--MIME_boundary\r\nContent-Type: "
            + ctype
            + b"\r\nContent-Length: 1\r\n\r\n"
            + body
            + b"\r\n"
            for ctype, body in parts
        )
        for at in range(0, len(wire), 977):  # odd chunks: boundaries cut anywhere
            await resp.write(wire[at : at + 977])
        return resp

    @staticmethod
    def alert(record: dict[str, Any]) -> dict[str, Any]:
        return {
            "ipAddress": "192.0.2.10",
            "dateTime": record["time"],
            "eventType": "AccessControllerEvent",
            "AccessControllerEvent": {
                "majorEventType": record["major"],
                "subEventType": record["minor"],
                "serialNo": record["serialNo"],
                "name": "Li Si",
                **{k: v for k, v in record.items() if k in ("cardNo", "doorNo")},
            },
        }

    def search(self, body: dict[str, Any]) -> web.Response:
        cond = body["AcsEventCond"]
        self.searches.append(cond)
        start, n = cond["searchResultPosition"], cond["maxResults"]
        page = [r for r in self.records if r["serialNo"] >= cond.get("beginSerialNo", 0)]
        chunk = page[start : start + n]
        status = "MORE" if start + n < len(page) else "OK" if chunk else "NO MATCH"
        return web.json_response(
            {
                "AcsEvent": {
                    "searchID": cond["searchID"],
                    "totalMatches": len(page),
                    "responseStatusStrg": status,
                    "numOfMatches": len(chunk),
                    "InfoList": [{**r, "name": "Li Si"} for r in chunk],
                }
            }
        )


RECORDS = [
    {
        "major": 5,
        "minor": 0x01,
        "time": "2026-11-29T07:30:00+08:00",
        "serialNo": 100 + i,
        "cardNo": f"{6154410 + i:010d}",
        "doorNo": 1,
    }
    for i in range(7)
] + [{"major": 5, "minor": 0x1B, "time": "2026-11-29T07:31:00+08:00", "serialNo": 107, "doorNo": 1}]


@pytest.fixture
async def terminal() -> AsyncIterator[tuple[Terminal, str]]:
    term = Terminal(RECORDS)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", term.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield term, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _session(password: str = PASSWORD) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        middlewares=(aiohttp.DigestAuthMiddleware(USER, password),),
        timeout=aiohttp.ClientTimeout(total=20),
    )


async def test_the_alert_stream_over_http_with_digest(terminal: tuple[Terminal, str]) -> None:
    term, base = terminal
    found: list[Any] = []
    async with (
        _session() as session,
        session.get(base + "/ISAPI/Event/notification/alertStream") as resp,
    ):
        assert resp.status == 200
        stream = AlertStream(resp.headers["Content-Type"], SHANGHAI)
        held = 0
        async for chunk in resp.content.iter_any():
            found += stream.feed(chunk)
            held = max(held, stream.parser.buffered)
        end = stream.finish()
    assert not end.truncated
    assert found[0] == Heartbeat()
    events = [to_event(n, {}) for n in found if isinstance(n, AccessEvent)]
    assert [e[1]["serial_no"] for e in events] == [r["serialNo"] for r in RECORDS]
    assert events[0][1]["card"] == "6154410"
    assert events[-1][0] == "door_forced"
    assert "Li Si" not in json.dumps(events)
    assert stream.stats.pictures == 1
    assert held < 4096  # a partial event at most, never the 250 kB picture
    # one challenge, then the authorised request
    assert [ok for _, _, ok in term.seen] == [False, True]


async def test_the_catch_up_pages_over_http_with_digest(terminal: tuple[Terminal, str]) -> None:
    term, base = terminal
    start = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
    search = AcsEventSearch(
        "catch-up-1", start, start + timedelta(days=1), SHANGHAI, begin_serial=102, max_results=3
    )
    got: list[AccessEvent] = []
    cursor = None
    async with _session() as session:
        while not search.done:
            path, body = search.request()
            async with session.post(base + path, json=body) as resp:
                assert resp.status == 200
                page = search.accept(await resp.read(), SHANGHAI)
            got += page.events
            cursor = page.last_serial if page.last_serial is not None else cursor
    assert [e.serial_no for e in got] == [102, 103, 104, 105, 106, 107]
    assert cursor == 107
    assert [c["searchResultPosition"] for c in term.searches] == [0, 3]
    assert {c["searchID"] for c in term.searches} == {"catch-up-1"}
    assert term.searches[0]["startTime"] == "2026-11-29T00:00:00+08:00"
    # every POST was authorised in the end: the JSON body is sent again after a challenge
    assert sum(ok for _, _, ok in term.seen) == len(term.searches) == 2


async def test_a_wrong_password_is_one_refusal_not_a_loop(terminal: tuple[Terminal, str]) -> None:
    # a DS-K1T342MWX locks the account after a few failed logins: one 401 per request
    term, base = terminal
    async with _session("wrong") as session, session.get(base + "/ISAPI/System/deviceInfo") as resp:
        assert resp.status == 401
    assert [ok for _, _, ok in term.seen] == [False, False]
