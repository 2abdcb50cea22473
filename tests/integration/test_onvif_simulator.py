"""The ONVIF camera simulator alone (simulators/camera/onvif.py), spoken to with SOAP 1.2
envelopes built by hand from the ONVIF Core spec (no onvif library, no driver): the
UsernameToken digest, clock skew, the pull point's life, reboot, the snapshot and the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import aiohttp
import pytest

from edge_agent.simulators.camera import OnvifCamera

pytestmark = pytest.mark.integration

PW = "Sim-Pw-1"
NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
}
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)


def token(password: str, created: datetime | None = None, user: str = "admin") -> str:
    nonce = secrets.token_bytes(16)
    when = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + when.encode() + password.encode()).digest())
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{user}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST}">{digest.decode()}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{when}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


async def soap(url: str, body: str, header: str = "") -> tuple[int, ET.Element]:
    envelope = (
        f'<?xml version="1.0"?><s:Envelope xmlns:s="{NS["env"]}" xmlns:tds="{NS["tds"]}" '
        f'xmlns:trt="{NS["trt"]}" xmlns:tev="{NS["tev"]}" xmlns:wsnt="{NS["wsnt"]}">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=envelope, headers={"Content-Type": "application/soap+xml"}) as resp,
    ):
        assert resp.content_type == "application/soap+xml"
        return resp.status, ET.fromstring(await resp.read())


def fault_subcodes(root: ET.Element) -> list[str]:
    return [v.text or "" for v in root.iter(f"{{{NS['env']}}}Value")][1:]


async def test_clock_without_credentials_and_everything_else_behind_the_digest() -> None:
    async with OnvifCamera(password=PW, clock_skew_s=-600) as cam:
        url = f"{cam.base}/onvif/device_service"
        status, root = await soap(url, "<tds:GetSystemDateAndTime/>")
        assert status == 200
        utc = root.find(".//tt:UTCDateTime", NS)
        assert utc is not None
        year, hour, minute = (
            int(utc.findtext(f".//tt:{t}", "0", NS)) for t in ("Year", "Hour", "Minute")
        )
        camera = datetime(year, 1, 1, hour, minute, tzinfo=UTC)
        true = datetime.now(UTC)
        # ten minutes behind (compared within the hour: the date fields are not needed)
        assert (true.hour * 60 + true.minute - camera.hour * 60 - camera.minute) % 1440 in (
            9,
            10,
            11,
        )
        status, root = await soap(url, "<tds:GetDeviceInformation/>")
        assert (status, fault_subcodes(root)) == (400, ["ter:NotAuthorized"])
        status, root = await soap(url, "<tds:GetDeviceInformation/>", token("wrong"))
        assert (status, fault_subcodes(root)) == (400, ["ter:NotAuthorized"])
        # the right password, but Created by our clock: ten minutes off the camera's
        status, root = await soap(url, "<tds:GetDeviceInformation/>", token(PW))
        assert (status, fault_subcodes(root)) == (400, ["ter:NotAuthorized"])
        skewed = datetime.fromtimestamp(cam.now(), UTC)
        status, root = await soap(url, "<tds:GetDeviceInformation/>", token(PW, skewed))
        assert status == 200
        assert root.findtext(".//tds:Model", None, NS) == cam.model
        assert cam.counters.auth_failures == 3


async def test_get_services_or_its_fault_and_the_capabilities() -> None:
    for with_services in (True, False):
        async with OnvifCamera(password=PW, get_services=with_services) as cam:
            url = f"{cam.base}/onvif/device_service"
            status, root = await soap(url, "<tds:GetServices/>", token(PW))
            if with_services:
                assert status == 200
                spaces = [e.text for e in root.iter(f"{{{NS['tds']}}}Namespace")]
                assert NS["tev"] in spaces
            else:
                assert (status, fault_subcodes(root)) == (500, ["ter:ActionNotSupported"])
            status, root = await soap(url, "<tds:GetCapabilities/>", token(PW))
            assert status == 200
            events = root.findtext(".//tt:Events/tt:XAddr", None, NS)
            assert events == f"{cam.base}/onvif/Events"


async def test_snapshot_uri_and_a_jpeg_behind_http_digest() -> None:
    async with OnvifCamera(password=PW) as cam:
        status, root = await soap(
            f"{cam.base}/onvif/Media",
            "<trt:GetSnapshotUri><trt:ProfileToken>Profile_1</trt:ProfileToken>"
            "</trt:GetSnapshotUri>",
            token(PW),
        )
        assert status == 200
        uri = root.findtext(".//tt:Uri", "", NS)
        async with aiohttp.ClientSession() as session, session.get(uri) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Digest ")
        async with (
            aiohttp.ClientSession(middlewares=(aiohttp.DigestAuthMiddleware("admin", PW),)) as s,
            s.get(uri) as resp,
        ):
            assert resp.status == 200
            assert resp.content_type == "image/jpeg"
            jpeg = await resp.read()
        assert jpeg[:2] == b"\xff\xd8"
        assert jpeg[-2:] == b"\xff\xd9"
        assert b"\xff\xc0" in jpeg  # a baseline frame header


async def test_the_pull_point_life_initialized_then_changed_renew_expiry_unsubscribe() -> None:
    async with OnvifCamera(password=PW, booleans="1") as cam:
        events = f"{cam.base}/onvif/Events"
        status, root = await soap(
            events,
            "<tev:CreatePullPointSubscription><tev:InitialTerminationTime>PT30S"
            "</tev:InitialTerminationTime></tev:CreatePullPointSubscription>",
            token(PW),
        )
        assert status == 200
        address = root.findtext(".//wsa:Address", "", NS)
        assert re.search(r"/PullSubManager_\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ_1$", address)
        pull = (
            "<tev:PullMessages><tev:Timeout>PT1S</tev:Timeout>"
            "<tev:MessageLimit>50</tev:MessageLimit></tev:PullMessages>"
        )
        status, root = await soap(address, pull, token(PW))
        first = [m.get("PropertyOperation") for m in root.iter(f"{{{NS['tt']}}}Message")]
        assert status == 200
        assert first
        assert set(first) == {"Initialized"}
        cam.motion(True)
        status, root = await soap(address, pull, token(PW))
        (msg,) = root.iter(f"{{{NS['tt']}}}Message")
        assert msg.get("PropertyOperation") == "Changed"
        assert root.findtext(".//wsnt:Topic", "", NS) == (
            "tns1:RuleEngine/CellMotionDetector/Motion"
        )
        item = msg.find("tt:Data/tt:SimpleItem", NS)
        assert item is not None
        assert (item.get("Name"), item.get("Value")) == ("IsMotion", "1")
        status, root = await soap(
            address,
            "<wsnt:Renew><wsnt:TerminationTime>PT60S</wsnt:TerminationTime></wsnt:Renew>",
            token(PW),
        )
        assert status == 200
        assert cam.counters.renewals == 1
        # past its TerminationTime the pull point is gone (the camera's clock jumps)
        cam.clock_skew_s = 120
        status, root = await soap(address, pull, token(PW, datetime.fromtimestamp(cam.now(), UTC)))
        assert status == 400
        assert "ter:NoSubscription" in fault_subcodes(root)
        assert cam.counters.expired == 1
        # a new one, unsubscribed
        cam.clock_skew_s = 0
        status, root = await soap(events, "<tev:CreatePullPointSubscription/>", token(PW))
        address = root.findtext(".//wsa:Address", "", NS)
        status, _ = await soap(address, "<wsnt:Unsubscribe/>", token(PW))
        assert status == 200
        status, root = await soap(address, pull, token(PW))
        assert status == 400
        assert cam.counters.unsubscribes == 1


async def test_a_reboot_loses_subscriptions_and_refuses_connections_for_a_while() -> None:
    async with OnvifCamera(password=PW, style="dahua") as cam:
        events = f"{cam.base}/onvif/Events"
        _, root = await soap(events, "<tev:CreatePullPointSubscription/>", token(PW))
        address = root.findtext(".//wsa:Address", "", NS)
        assert address.endswith("/onvif/Subscription?Idx=1")
        reboot = asyncio.create_task(cam.reboot(0.5))
        await asyncio.sleep(0.1)
        with pytest.raises(aiohttp.ClientConnectionError):
            await soap(events, "<tev:GetEventProperties/>", token(PW))
        await reboot
        status, root = await soap(
            address,
            "<tev:PullMessages><tev:Timeout>PT0S</tev:Timeout></tev:PullMessages>",
            token(PW),
        )
        assert status == 400
        status, root = await soap(events, "<tev:GetEventProperties/>", token(PW))
        assert status == 200
        assert cam.counters.reboots == 1


async def test_the_cli_serves_and_takes_commands() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent.simulators",
        "onvif",
        "--password",
        PW,
        "--stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
            port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
            status, _ = await soap(
                f"http://127.0.0.1:{port}/onvif/device_service", "<tds:GetSystemDateAndTime/>"
            )
            assert status == 200
            proc.stdin.write(b"motion on\nbogus\n")
            await proc.stdin.drain()
            assert (await proc.stdout.readline()).decode().strip() == "done: motion on"
            assert "unknown command 'bogus'" in (await proc.stdout.readline()).decode()
            proc.stdin.close()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
