"""The agent's one HTTP server (edge_agent/http.py) on real sockets, 127.0.0.1 port 0.

What a push device or an installer notices: routes a kind registered receive its
POSTs, unknown paths are 404, bodies over the limit are 413, a slow request is 408,
a bad request or a handler bug never shows a traceback (and is logged once), and
stopping frees the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge_agent.config.models import HttpConfig
from edge_agent.http import HttpServer
from tests.http_helpers import refused, request


class FakePush:
    """A push kind the way ZKTeco iclock terminals use the gateway: POST records, get 'OK'."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    async def cdata(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append((request.query.get("SN", ""), body))
        return web.Response(text="OK")

    async def broken(self, request: web.Request) -> web.StreamResponse:
        raise KeyError("a driver bug")

    async def slow(self, request: web.Request) -> web.StreamResponse:
        await request.read()  # the client never sends the whole body
        return web.Response(text="never")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/iclock/cdata", self.cdata),
            web.get("/iclock/broken", self.broken),
            web.post("/iclock/slow", self.slow),
        ]


def config(**kw: Any) -> HttpConfig:
    return HttpConfig(bind="127.0.0.1:0", **kw)


@pytest.fixture
async def push_server() -> AsyncIterator[tuple[HttpServer, FakePush, int]]:
    fake = FakePush()
    server = HttpServer(config(max_body_bytes=2048, request_timeout_s=0.3))
    server.add_routes("fakepush", fake.routes())
    await server.start()
    yield server, fake, server.addresses[0][1]
    await server.stop()


async def test_off_by_default_and_wanted_once_a_kind_registers_routes() -> None:
    assert HttpConfig().enabled is False
    assert HttpConfig().address() == ("127.0.0.1", 8080)
    server = HttpServer(HttpConfig(), health=lambda: _health())
    assert not server.wanted  # /healthz alone does not start it
    server.add_routes("fakepush", FakePush().routes())
    assert server.wanted
    assert HttpServer(HttpConfig(enabled=True)).wanted


async def _health() -> dict[str, Any]:
    return {"outbox": {"depth": 3}, "ts": "2026-01-01T00:00:00.000Z"}


async def test_route_registered_by_a_push_kind_receives_a_post_without_access_log(
    push_server: tuple[HttpServer, FakePush, int], caplog: pytest.LogCaptureFixture
) -> None:
    _server, fake, port = push_server
    caplog.set_level(logging.DEBUG)
    status, _h, body = await request(
        port, "POST", "/iclock/cdata?SN=CEXA0001&table=ATTLOG", b"1001\t2026-01-01 08:00:00\t0"
    )
    assert (status, body) == (200, b"OK")
    assert fake.received == [("CEXA0001", b"1001\t2026-01-01 08:00:00\t0")]
    assert caplog.records == []  # no access log line per request (SD card)


async def test_unknown_route_is_404(push_server: tuple[HttpServer, FakePush, int]) -> None:
    _server, fake, port = push_server
    status, _h, _b = await request(port, "POST", "/ISAPI/Event/notification", b"x")
    assert status == 404
    assert fake.received == []


async def test_oversize_body_is_413_declared_or_chunked(
    push_server: tuple[HttpServer, FakePush, int],
) -> None:
    _server, fake, port = push_server
    # Declared too large: refused before the body is read (only part of it is sent).
    status, _h, _b = await request(
        port,
        "POST",
        "/iclock/cdata",
        raw=b"POST /iclock/cdata HTTP/1.1\r\nHost: gw\r\nContent-Length: 50000000\r\n\r\n"
        + b"x" * 100,
    )
    assert status == 413
    # Chunked, no length: refused while reading.
    chunk = b"y" * 3000
    status, _h, _b = await request(
        port,
        "POST",
        "/iclock/cdata",
        raw=b"POST /iclock/cdata HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n0\r\n\r\n",
    )
    assert status == 413
    assert fake.received == []
    # Within the limit: accepted.
    status, _h, _b = await request(port, "POST", "/iclock/cdata", b"z" * 2000)
    assert status == 200


async def test_request_that_never_completes_is_408(
    push_server: tuple[HttpServer, FakePush, int],
) -> None:
    _server, _fake, port = push_server
    status, _h, _b = await request(
        port,
        "POST",
        "/iclock/slow",
        raw=b"POST /iclock/slow HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nshort",
    )
    assert status == 408


async def test_idle_or_half_sent_connection_is_closed() -> None:
    server = HttpServer(config(enabled=True), health=_health, idle_timeout_s=0.2)
    await server.start()
    try:
        port = server.addresses[0][1]
        for sent in (b"", b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"):  # headers never end
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sent)
            try:
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no answer
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    finally:
        await server.stop()


async def test_handler_bug_is_500_without_traceback_and_logged_once(
    push_server: tuple[HttpServer, FakePush, int], caplog: pytest.LogCaptureFixture
) -> None:
    server, _fake, port = push_server
    caplog.set_level(logging.DEBUG, logger="edge_agent.http")
    for _ in range(3):
        status, _h, body = await request(port, "GET", "/iclock/broken")
        assert status == 500
        assert b"Traceback" not in body
        assert b"KeyError" not in body
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "/iclock/broken" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None  # a bug: its traceback once, in the log
    await server.stop()
    assert any("3 times" in r.getMessage() for r in caplog.records)


async def test_bad_request_is_400_one_line_no_traceback(
    push_server: tuple[HttpServer, FakePush, int], caplog: pytest.LogCaptureFixture
) -> None:
    _server, fake, port = push_server
    caplog.set_level(logging.DEBUG)
    bad = b"POST /iclock/cdata HTTP/1.1\r\nHost: gw\r\nContent-Length: nope\r\n\r\n"
    for _ in range(2):
        status, _h, body = await request(port, "POST", "/", raw=bad)
        assert status == 400
        assert b"Traceback" not in body
    assert fake.received == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_healthz_answers_the_health_json_and_503_when_unhealthy() -> None:
    ok = [True]
    server = HttpServer(config(enabled=True), health=_health, healthy=lambda: ok[0])
    await server.start()
    try:
        port = server.addresses[0][1]
        status, headers, body = await request(port, "GET", "/healthz")
        assert status == 200
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body) == await _health()
        ok[0] = False
        status, _h, body = await request(port, "GET", "/healthz")
        assert status == 503
        assert json.loads(body)["outbox"] == {"depth": 3}
    finally:
        await server.stop()


async def test_stop_frees_the_port() -> None:
    server = HttpServer(config(enabled=True), health=_health)
    await server.start()
    port = server.addresses[0][1]
    assert (await request(port, "GET", "/healthz"))[0] == 200
    await server.stop()
    assert server.addresses == []
    assert refused(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # raises EADDRINUSE while the server still listens
        s.listen()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this host")
async def test_ipv6_literal_in_brackets() -> None:
    server = HttpServer(HttpConfig(enabled=True, bind="[::1]:0"), health=_health)
    try:
        await server.start()
    except OSError as err:  # a container without ::1
        pytest.skip(f"::1 not available: {err}")
    try:
        port = server.addresses[0][1]
        assert (await request(port, "GET", "/healthz", host="::1"))[0] == 200
    finally:
        await server.stop()


async def test_two_kinds_cannot_claim_the_same_route_and_routes_come_before_start() -> None:
    server = HttpServer(config())
    server.add_routes("fakepush", FakePush().routes())
    with pytest.raises(ValueError, match="already served by fakepush"):
        server.add_routes("other", [web.post("/iclock/cdata", FakePush().cdata)])
    await server.start()
    try:
        with pytest.raises(RuntimeError, match="before the HTTP server starts"):
            server.add_routes("late", [web.get("/late", FakePush().cdata)])
    finally:
        await server.stop()


async def test_address_in_use_is_retried_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(HttpConfig(enabled=True, bind=f"127.0.0.1:{port}"), health=_health)
        task = asyncio.create_task(server.run())
        async with asyncio.timeout(10):
            while not any("cannot listen" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
        assert not task.done()  # the agent keeps running without its HTTP server
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert server.addresses == []


def test_an_agent_without_http_never_imports_aiohttp(tmp_path: Path) -> None:
    # aiohttp costs about 12 MB of RSS: a gateway with only polled devices must not pay it.
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"site: {{id: school-a, gateway_id: gw1}}\noutbox: {{path: {tmp_path / 'o.db'}}}\n"
    )
    code = (
        "import sys\n"
        "from edge_agent.supervisor import Agent\n"
        "from edge_agent.cli import main\n"
        "from edge_agent.config.loader import load_config\n"
        f"agent = Agent(load_config({str(cfg)!r}), {str(cfg)!r})\n"
        "assert not agent.http.wanted\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
