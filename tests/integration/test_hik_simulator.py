"""The ISAPI terminal simulator on its own, over real HTTP on 127.0.0.1 with aiohttp's digest
client (not the driver): the login, the search's paging, the remote door, the shape of
its notifications against the DS-K1T342MWX capture in ../shared/fixtures/access/, and the
command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_agent.simulators.hikvision import ACS_EVENT, HikTerminal
from tests import captures

pytestmark = pytest.mark.integration


def session(password: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        middlewares=(aiohttp.DigestAuthMiddleware("admin", password),),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def search(s: aiohttp.ClientSession, base: str, position: int, **cond: Any) -> dict[str, Any]:
    body = {"AcsEventCond": {"searchID": "t1", "searchResultPosition": position,
                             "maxResults": 30, "major": 0, "minor": 0, **cond}}  # fmt: skip
    async with s.post(base + ACS_EVENT + "?format=json", json=body) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = (await resp.json())["AcsEvent"]
        return answer


async def test_login_search_pages_and_remote_door() -> None:
    async with HikTerminal(password="pw-1", doors=2) as term:
        base = f"http://127.0.0.1:{term.port}"
        for i in range(40):
            term.swipe(str(1000 + i))
        async with session("wrong") as s, s.get(base + "/ISAPI/System/deviceInfo") as resp:
            assert resp.status == 401
        async with session("pw-1") as s:
            first = await search(s, base, 0, beginSerialNo=5)
            assert (first["responseStatusStrg"], first["numOfMatches"]) == ("MORE", 30)
            assert first["totalMatches"] == 36
            assert [r["serialNo"] for r in first["InfoList"]] == list(range(5, 35))
            last = await search(s, base, 30, beginSerialNo=5)
            assert (last["responseStatusStrg"], last["numOfMatches"]) == ("OK", 6)
            none = await search(s, base, 0, beginSerialNo=41)
            assert (none["responseStatusStrg"], none["numOfMatches"]) == ("NO MATCH", 0)
            assert "InfoList" not in none
            put = base + "/ISAPI/AccessControl/RemoteControl/door/2"
            xml = "<RemoteControlDoor><cmd>open</cmd></RemoteControlDoor>"
            async with s.put(put, data=xml) as resp:
                assert resp.status == 200
                assert "<statusCode>1</statusCode>" in await resp.text()
            async with s.put(put.replace("/2", "/3"), data=xml) as resp:
                assert resp.status == 400
        assert term.remote_opens == [2]
        # the remote open is in the log: operation 0x400, then the lock released (5/0x15)
        assert [(r["major"], r["minor"]) for r in term.records[-2:]] == [(3, 0x400), (5, 0x15)]


def test_notifications_have_the_shape_of_a_real_terminal() -> None:
    cases = {c["name"]: c for c in captures.load("hik_isapi.json")}
    real = cases["ds_k1t342mwx_alertstream_part_face_granted_5_75"]["decoded"]
    term = HikTerminal()
    ours = term.alert(term.face("E1"))
    assert ours["eventType"] == real["eventType"]
    top = {"dateTime", "eventType", "AccessControllerEvent"}
    assert top <= set(real)
    assert top <= set(ours)
    inner, real_inner = ours["AccessControllerEvent"], real["AccessControllerEvent"]
    for key in ("majorEventType", "subEventType", "serialNo", "employeeNoString", "cardReaderNo"):
        assert key in real_inner
        assert key in inner
    assert (inner["majorEventType"], inner["subEventType"]) == (5, 75)
    # AcsEvent records name the same fields differently (the README's contradiction 4)
    record = term.records[-1]
    assert {"major", "minor", "time", "serialNo"} <= set(record)


async def test_cli_plays_a_script_and_stdin_commands(tmp_path: Path) -> None:
    script = tmp_path / "scenario.txt"
    script.write_text("# the morning's first card\n@0 swipe 4242\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.simulators", "hikvision",
        "--password", "cli-pw", "--doors", "2", "--script", str(script), "--stdin",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while not lines or not lines[-1].startswith("script done"):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, f"the simulator exited: {lines}"
            lines.append(line.decode().strip())
        listening = next(x for x in lines if x.startswith("hikvision terminal listening on"))
        port = int(listening.split()[4].rsplit(":", 1)[1])
        assert "serialNo 1 major 5 minor 1" in lines
        proc.stdin.write(b"door 2 forced\nnonsense\n")
        await proc.stdin.drain()
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(b"serialNo 2")
        assert b"error" in await asyncio.wait_for(proc.stdout.readline(), 30)
        async with session("cli-pw") as s:
            page = await search(s, f"http://127.0.0.1:{port}", 0)
        assert [(r["minor"], r.get("cardNo")) for r in page["InfoList"]] == [
            (1, "4242"),
            (0x1B, None),
        ]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
