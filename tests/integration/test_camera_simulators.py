"""The camera simulators on their own (simulators/hikvision_camera.py, simulators/dahua.py),
over real HTTP on 127.0.0.1 with aiohttp's digest client, not the drivers: the login, the
shape of their streams, and the command line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from edge_agent.simulators.dahua import DahuaCamera
from edge_agent.simulators.hikvision_camera import ALERT_STREAM, HikCamera

pytestmark = pytest.mark.integration


def session(password: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        middlewares=(aiohttp.DigestAuthMiddleware("admin", password),),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def read_until(resp: aiohttp.ClientResponse, needle: bytes, got: bytearray) -> bytes:
    async with asyncio.timeout(10):
        while needle not in got:
            got += await resp.content.readany()
    return bytes(got)


async def test_hik_camera_stream_repeats_an_alarm_with_its_count_and_beats_when_idle() -> None:
    async with HikCamera(password="pw", heartbeat_s=0.1, repeat_s=0.02) as cam:
        base = f"http://127.0.0.1:{cam.port}"
        async with session("wrong") as s, s.get(base + ALERT_STREAM) as resp:
            assert resp.status == 401
        async with session("pw") as s, s.get(base + ALERT_STREAM) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "multipart/mixed; boundary=boundary"
            got = bytearray()
            await read_until(resp, b"<eventType>videoloss</eventType>", got)
            cam.begin("linedetection", channel=2, regions=(1, 3))
            await read_until(resp, b"<activePostCount>3</activePostCount>", got)
            cam.end("linedetection", channel=2, regions=(1, 3))
            text = (
                await read_until(resp, b"<eventState>inactive</eventState>\n<event", got)
            ).decode()
    parts = [p for p in text.split("--boundary\r\n") if "linedetection</eventType>" in p]
    head, _, body = parts[0].partition("\r\n\r\n")
    length = int(re.search(r"Content-Length: (\d+)", head)[1])  # type: ignore[index]
    assert len(body.encode()) == length + 2  # the body, then CRLF before the next delimiter
    assert "<channelID>2</channelID>" in body
    assert re.findall(r"<regionID>(\d+)</regionID>", body) == ["1", "3"]
    assert "+08:00</dateTime>" in body
    counts = [int(c) for c in re.findall(r"<activePostCount>(\d+)<", "".join(parts[:3]))]
    assert counts == [1, 2, 3]
    assert cam.seen[0][2] is False


async def test_dahua_camera_sends_the_codes_attached_to_with_heartbeats() -> None:
    async with DahuaCamera(password="pw") as cam:
        base = f"http://127.0.0.1:{cam.port}/cgi-bin/eventManager.cgi"
        url = URL(base + "?action=attach&codes=[VideoMotion]&heartbeat=1", encoded=True)
        async with session("pw") as s:
            async with s.get(base + "?action=list") as resp:
                assert resp.status == 400
            async with s.get(url) as resp:
                assert resp.status == 200
                ctype = resp.headers["Content-Type"]
                assert ctype == "multipart/x-mixed-replace; boundary=myboundary"
                got = bytearray()
                await read_until(resp, b"Heartbeat\r\n", got)
                cam.start_event("VideoBlind", 0)  # not attached to: never on this stream
                cam.start_event("VideoMotion", 1, {"RegionName": ["Yard"]})
                text = (await read_until(resp, b"}\r\n", got)).decode()
    assert cam.attached == [["VideoMotion"]]
    assert "VideoBlind" not in text
    record = text[text.index("Code=VideoMotion") :]
    assert record.startswith("Code=VideoMotion;action=Start;index=1;data={\n")
    assert '"RegionName": [\n      "Yard"\n   ]' in record


async def test_dahua_cli_plays_a_script_and_stdin_commands(tmp_path: Path) -> None:
    script = tmp_path / "scenario.txt"
    script.write_text("# someone at the gate\n@0 start VideoMotion 0\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.simulators", "dahua",
        "--password", "cli-pw", "--heartbeat-s", "0.2", "--script", str(script), "--stdin",
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
        assert "Code=VideoMotion;action=Start;index=0" in lines
        listening = next(x for x in lines if x.startswith("dahua listening on"))
        port = int(listening.split()[3].rsplit(":", 1)[1])
        url = f"http://127.0.0.1:{port}/cgi-bin/eventManager.cgi?action=attach&codes=[All]"
        async with session("cli-pw") as s, s.get(URL(url, encoded=True)) as resp:
            assert resp.status == 200
            got = bytearray()
            await read_until(resp, b"Heartbeat", got)
            proc.stdin.write(b'stop VideoMotion 0 {"RegionName": ["Gate"]}\nnonsense\n')
            await proc.stdin.drain()
            text = (await read_until(resp, b"}\r\n", got)).decode()
        assert "Code=VideoMotion;action=Stop;index=0;data={" in text
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(b"Code=Video")
        assert b"error" in await asyncio.wait_for(proc.stdout.readline(), 30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
