"""A camera as ``edge-agent discover`` meets it, on 127.0.0.1 only: a WS-Discovery
responder (UDP, unicast; never multicast) and an ONVIF device service (HTTP, SOAP 1.2).

Written from the specifications, not from edge_agent/tools/discover.py:

- WS-Discovery 2005/04 §5.3: a Probe's ``MessageID`` comes back as the ``RelatesTo`` of
  the ``ProbeMatches``, with the device's ``EndpointReference``, ``Types``, ``Scopes``
  and ``XAddrs``;
- ONVIF Core §5.9.4 / WS-Security UsernameToken Profile 1.0: PasswordDigest =
  Base64(SHA-1(nonce + created + password)); a token whose ``Created`` is far from the
  device's clock is refused, as is a wrong digest, with a SOAP 1.2 fault
  ``env:Sender / ter:NotAuthorized``; GetSystemDateAndTime needs no login.

``skew_s`` puts the camera's clock off the real one; ``stray`` makes the responder send,
before its answer, one answer to another Probe, one datagram of garbage and one with a DTD.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import re
import time
import uuid
from typing import Any

from aiohttp import web

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"


def _env(header: str, body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<env:Envelope xmlns:env="{SOAP}" xmlns:wsa="{WSA}" xmlns:wsd="{WSD}" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
        'xmlns:tt="http://www.onvif.org/ver10/schema" '
        'xmlns:ter="http://www.onvif.org/ver10/error" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
        f"<env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


class FakeCamera(asyncio.DatagramProtocol):
    """One camera: ``wsd_port`` (UDP) answers Probes, ``http_port`` is its device service."""

    def __init__(
        self,
        *,
        manufacturer: str = "HIKVISION",
        model: str = "DS-2CD2143G0-I",
        user: str = "admin",
        password: str = "cam-pass",
        skew_s: float = 0.0,
        stray: bool = False,
    ) -> None:
        self.manufacturer = manufacturer
        self.model = model
        self.user = user
        self.password = password
        self.skew_s = skew_s
        self.stray = stray
        self.endpoint = f"urn:uuid:{uuid.uuid4()}"
        self.probes: list[bytes] = []
        self.soap_actions: list[str] = []
        self.refused = 0
        self.wsd_port = 0
        self.http_port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeCamera:
        app = web.Application()
        app.router.add_post("/onvif/device_service", self._soap)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.http_port = self._runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.wsd_port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.wsd_port}"

    # -- WS-Discovery ----------------------------------------------------------------
    def _matches(self, relates_to: str, endpoint: str | None = None) -> bytes:
        header = (
            f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
            f"<wsa:RelatesTo>{relates_to}</wsa:RelatesTo>"
            f"<wsa:To>{WSA}/role/anonymous</wsa:To>"
            f"<wsa:Action>{WSD}/ProbeMatches</wsa:Action>"
        )
        scopes = " ".join(
            [
                "onvif://www.onvif.org/type/video_encoder",
                f"onvif://www.onvif.org/name/{self.manufacturer}%20{self.model}",
                f"onvif://www.onvif.org/hardware/{self.model}",
                "onvif://www.onvif.org/location/city/shenzhen",
            ]
        )
        body = (
            "<wsd:ProbeMatches><wsd:ProbeMatch>"
            f"<wsa:EndpointReference><wsa:Address>{endpoint or self.endpoint}</wsa:Address>"
            "</wsa:EndpointReference>"
            "<wsd:Types>dn:NetworkVideoTransmitter tds:Device</wsd:Types>"
            f"<wsd:Scopes>{scopes}</wsd:Scopes>"
            # a second interface listed first (not the one that answered; loopback too)
            f"<wsd:XAddrs>http://127.0.0.2:9/onvif/device_service "
            f"http://127.0.0.1:{self.http_port}/onvif/device_service</wsd:XAddrs>"
            "<wsd:MetadataVersion>1</wsd:MetadataVersion>"
            "</wsd:ProbeMatch></wsd:ProbeMatches>"
        )
        return _env(header, body)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.probes.append(data)
        m = re.search(rb"<[\w:]*MessageID>([^<]+)</", data)
        if m is None or b"Probe" not in data or self._transport is None:
            return
        if self.stray:
            other = f"urn:uuid:{uuid.uuid4()}"  # another Probe's answer, another device
            self._transport.sendto(self._matches(other, endpoint=other), addr)
            self._transport.sendto(b"\x00garbage\xff", addr)
            self._transport.sendto(
                b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', addr
            )
        self._transport.sendto(self._matches(m.group(1).decode()), addr)

    # -- the device service --------------------------------------------------------
    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.skew_s, dt.UTC)

    def _authorised(self, text: str) -> bool:
        def field(name: str) -> str | None:
            m = re.search(rf"<[\w:]*{name}[^>]*>([^<]*)</", text)
            return m.group(1) if m else None

        user, digest, nonce, created = (
            field(n) for n in ("Username", "Password", "Nonce", "Created")
        )
        if user is None or digest is None or nonce is None or created is None:
            return False
        want = base64.b64encode(
            hashlib.sha1(  # the profile's digest
                base64.b64decode(nonce) + created.encode() + self.password.encode()
            ).digest()
        ).decode()
        when = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        fresh = abs((when - self._now()).total_seconds()) < 10
        return user == self.user and digest == want and fresh

    def _fault(self) -> web.Response:
        self.refused += 1
        body = (
            "<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode>"
            "<env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code>"
            '<env:Reason><env:Text xml:lang="en">Sender not authorized</env:Text></env:Reason>'
            "</env:Fault>"
        )
        return web.Response(status=400, body=_env("", body), content_type="application/soap+xml")

    async def _soap(self, request: web.Request) -> web.Response:
        text = (await request.read()).decode()
        action = re.search(r"<s:Body><tds:(\w+)", text)
        name = action.group(1) if action else "?"
        self.soap_actions.append(name)
        if name == "GetSystemDateAndTime":
            now = self._now()
            body = (
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
                "<tt:DateTimeType>NTP</tt:DateTimeType><tt:UTCDateTime>"
                f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
                f"<tt:Second>{now.second}</tt:Second></tt:Time>"
                f"<tt:Date><tt:Year>{now.year}</tt:Year><tt:Month>{now.month}</tt:Month>"
                f"<tt:Day>{now.day}</tt:Day></tt:Date>"
                "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
            )
        elif not self._authorised(text):
            return self._fault()
        elif name == "GetDeviceInformation":
            body = (
                "<tds:GetDeviceInformationResponse>"
                f"<tds:Manufacturer>{self.manufacturer}</tds:Manufacturer>"
                f"<tds:Model>{self.model}</tds:Model>"
                "<tds:FirmwareVersion>V5.6.3 build 190923</tds:FirmwareVersion>"
                f"<tds:SerialNumber>{self.model}20190923AACHC{self.http_port}</tds:SerialNumber>"
                "<tds:HardwareId>88</tds:HardwareId>"
                "</tds:GetDeviceInformationResponse>"
            )
        elif name == "GetCapabilities":
            base = f"http://127.0.0.1:{self.http_port}/onvif"
            body = (
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{base}/device_service</tt:XAddr></tt:Device>"
                f"<tt:Events><tt:XAddr>{base}/Events</tt:XAddr></tt:Events>"
                f"<tt:Media><tt:XAddr>{base}/Media</tt:XAddr></tt:Media>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>"
            )
        else:
            return web.Response(status=400, text="unknown")
        return web.Response(body=_env("", body), content_type="application/soap+xml")
