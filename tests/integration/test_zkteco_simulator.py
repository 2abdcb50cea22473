"""The ZKTeco terminal simulator on its own, against a server written here from the wire
(the captures of ``shared/fixtures/access/zk_push.json`` and the ADMS descriptions), not
the agent's driver: its requests have the captures' shape, it resends until ``OK``, a
reboot resends from the server's stamp, it runs and confirms commands; and its CLI."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from edge_agent.simulators.zkteco import ZkTerminal

pytestmark = pytest.mark.integration


@dataclass
class Server:
    """A minimal iclock server: records every request, answers as told."""

    port: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    stamp: str = "0"
    upload_status: int = 200
    commands: list[str] = field(default_factory=list)

    def uploads(self, table: str) -> list[tuple[dict[str, str], bytes]]:
        return [
            (q, b)
            for m, p, q, b in self.requests
            if m == "POST" and p == "/iclock/cdata" and q.get("table") == table
        ]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        query = dict(request.query)
        self.requests.append((request.method, request.path, query, body))
        if request.path == "/iclock/cdata" and request.method == "GET" and "DeviceType" in query:
            # a security terminal (the SpeedFace-V3L test: the body starts "registry=ok\n")
            return web.Response(text="registry=ok\nRegistryCode=abc\nDelay=1\n")
        if request.path == "/iclock/cdata" and request.method == "GET":
            return web.Response(
                text=f"GET OPTION FROM: {query['SN']}\nStamp={self.stamp}\nDelay=1\n"
            )
        if request.path == "/iclock/cdata":
            if self.upload_status != 200:
                return web.Response(status=self.upload_status, text="ERROR")
            return web.Response(text=f"OK: {len(body.splitlines())}")
        if request.path == "/iclock/getrequest" and self.commands:
            text = "".join(f"C:{i}:{c}\n" for i, c in enumerate(self.commands, 1))
            self.commands = []
            return web.Response(text=text)
        return web.Response(text="OK")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/iclock/{name}", srv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    yield srv
    await runner.cleanup()


async def until(pred: object, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_requests_have_the_shape_of_the_captures(server: Server) -> None:
    term = ZkTerminal("DEMO01", ("127.0.0.1", server.port), poll_s=0.1)
    term.add_user("1001", "123")
    term.punch("1001", verify="fingerprint", status=1)
    async with term:
        await until(lambda: term.backlog() == 0 and term.stats.getrequests > 0)
    method, path, query, _ = server.requests[0]
    # tanemrahman's handshake sample: GET /iclock/cdata?SN=..&options=all&pushver=2.4.1
    assert (method, path, query) == (
        "GET",
        "/iclock/cdata",
        {"SN": "DEMO01", "options": "all", "pushver": "2.4.1"},
    )
    (q, body), = server.uploads("ATTLOG")  # fmt: skip
    # positional TAB fields, as in the captures: PIN, time, status, verify, workcode...
    assert re.fullmatch(r"1001\t\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\t1\t1\t0(\t0)*\n", body.decode())
    assert q["Stamp"].isdigit()
    (_, users), = server.uploads("OPERLOG")  # fmt: skip
    assert users.decode().startswith("USER PIN=1001\tName=")
    assert "\tCard=123" in users.decode()


async def test_access_terminal_registers_and_sends_keyed_rtlog(server: Server) -> None:
    term = ZkTerminal("CRJP1", ("127.0.0.1", server.port), access=True, poll_s=0.1)
    term.punch("41235478", verify="fingerprint")
    term.deny(reason="unregistered", inout=1)
    async with term:
        await until(lambda: bool(server.uploads("rtlog")))
    assert server.requests[0][:2] == ("POST", "/iclock/registry")
    assert server.requests[0][3].startswith(b"DeviceType=acc,~DeviceName=")
    assert server.requests[1][2]["DeviceType"] == "acc"
    lines = server.uploads("rtlog")[0][1].decode().splitlines()
    first = dict(f.split("=", 1) for f in lines[0].split("\t"))
    # the SpeedFace-V3L frame's keys
    assert {k: first[k] for k in ("pin", "eventaddr", "event", "inoutstatus", "verifytype")} == {
        "pin": "41235478",
        "eventaddr": "1",
        "event": "0",
        "inoutstatus": "0",
        "verifytype": "1",
    }
    second = dict(f.split("=", 1) for f in lines[1].split("\t"))
    assert (second["event"], second["index"]) == ("27", str(int(first["index"]) + 1))


async def test_it_resends_until_ok_and_after_a_reboot_from_the_servers_stamp(
    server: Server,
) -> None:
    term = ZkTerminal("DEMO02", ("127.0.0.1", server.port), poll_s=0.1)
    server.upload_status = 503
    async with term:
        term.punch("1")
        term.punch("2")
        await until(lambda: len(server.uploads("ATTLOG")) >= 2)
        assert term.backlog() == 2
        server.upload_status = 200
        await until(lambda: term.backlog() == 0)
    bodies = [b for _q, b in server.uploads("ATTLOG")]
    assert bodies[0] == bodies[-1]  # the same records again
    # the server committed nothing it tells of: stamp 0, so a reboot sends everything again
    n = len(server.uploads("ATTLOG"))
    async with term:
        await until(lambda: len(server.uploads("ATTLOG")) > n)
    assert server.uploads("ATTLOG")[-1][1] == bodies[-1]
    # a server that hands back the last stamp gets nothing more
    server.stamp = server.uploads("ATTLOG")[-1][0]["Stamp"]
    n = len(server.uploads("ATTLOG"))
    async with term:
        await until(lambda: term.stats.getrequests > 0 and term.stats.handshakes >= 3)
        await asyncio.sleep(0.3)
    assert len(server.uploads("ATTLOG")) == n


async def test_it_runs_commands_and_confirms_them(server: Server) -> None:
    term = ZkTerminal("CRJP2", ("127.0.0.1", server.port), access=True, poll_s=0.1)
    server.commands = [
        "CONTROL DEVICE 01020105",
        "USER ADD PIN=1",
        "DATA UPDATE USERINFO PIN=5\tCard=77",
    ]
    async with term:
        await until(
            lambda: (
                any(p == "/iclock/devicecmd" for _m, p, _q, _b in server.requests)
                and term.backlog("rtlog") == 0
            )
        )
    body = next(b for _m, p, _q, b in server.requests if p == "/iclock/devicecmd")
    assert body.decode().splitlines() == [
        "ID=1&Return=0&CMD=CONTROL",
        "ID=2&Return=-1002&CMD=USER",
        "ID=3&Return=0&CMD=DATA",
    ]
    rt = server.uploads("rtlog")[-1][1].decode()
    assert "eventaddr=2\tevent=8\t" in rt  # remote open on door 2
    assert term.users["5"] == "77"


async def test_the_cli_plays_a_script(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text("user ZK9 8 555\npunch ZK9 8 face\n@0.5 status ZK9\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent.simulators",
        "zkteco",
        "--server",
        f"127.0.0.1:{server.port}",
        "--sn",
        "ZK9",
        "--poll-s",
        "0.2",
        "--script",
        str(script),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            out = b""
            while b"script done" not in out:
                out += await proc.stdout.readline()
            await until(lambda: bool(server.uploads("ATTLOG")))
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert b"zkteco terminal ZK9 attendance" in out
    assert b"ZK9: handshakes=" in out
    assert b"zkteco stopped" in rest
    assert proc.returncode == 0
    assert server.uploads("ATTLOG")[0][1].startswith(b"8\t")
