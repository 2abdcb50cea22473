"""A camera's HTTP snapshot endpoint on 127.0.0.1, for the snapshot tests.

The logins are checked here from the RFCs, independently of aiohttp's client and of
edge_agent/snapshots: Basic (RFC 7617: base64 of ``user:password``) and Digest (RFC 7616,
MD5 with ``qop=auth``, the way Hikvision and Dahua cameras challenge:
``response = MD5(MD5(user:realm:password):nonce:nc:cnonce:qop:MD5(method:uri))``).

``mode`` scripts what the camera answers: ``ok`` (a JPEG), ``html`` (a login page with
status 200, as a camera that is booting), ``truncated`` (a JPEG without its end), ``big``
(a JPEG over the size cap), ``error`` (HTTP 500), ``slow`` (waits ``delay_s`` first, but
answers when the client gives up waiting).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import struct
from typing import Any

from aiohttp import web


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg(tag: str = "", pad: int = 0) -> bytes:
    """A whole baseline JPEG, 1x1 grey, built marker by marker (ITU T.81): SOI, APP0 JFIF,
    a COM segment holding ``tag`` (so two pictures differ) and ``pad`` filler bytes, DQT,
    SOF0, one DC and one AC Huffman table of a single 1-bit code, SOS, two bits of scan
    data (DC difference 0, end of block), EOI. Any decoder shows it."""
    out = b"\xff\xd8"
    out += _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    comment = tag.encode() + b"." * pad
    while comment:
        out += _segment(0xFE, comment[:65000])
        comment = comment[65000:]
    out += _segment(0xDB, b"\x00" + bytes([1] * 64))  # table 0, all quantisers 1
    out += _segment(0xC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00")  # 8 bit, 1x1, 1 component
    out += _segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")  # DC 0: one code, sym 0
    out += _segment(0xC4, b"\x10" + b"\x01" + b"\x00" * 15 + b"\x00")  # AC 0: one code, EOB
    out += _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    out += b"\x3f"  # bits 0 (DC size 0), 0 (EOB), padded with ones
    return out + b"\xff\xd9"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 7616 MD5, as the cameras use


class CameraHttp:
    """One camera snapshot URL (``url``) with ``auth`` = digest, basic or none."""

    def __init__(
        self, auth: str = "digest", user: str = "admin", password: str = "cam-pass"
    ) -> None:
        self.auth = auth
        self.user = user
        self.password = password
        self.realm = "IP Camera(C1234)"
        self.mode = "ok"
        self.delay_s = 0.0
        self.image_bytes = 0
        #: every picture served, in order
        self.served: list[bytes] = []
        self.requests = 0
        self.refused = 0
        self._nonces: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._gate: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ISAPI/Streaming/channels/101/picture"

    async def start(self) -> None:
        self._gate = asyncio.Event()
        app = web.Application()
        app.router.add_get("/ISAPI/Streaming/channels/101/picture", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._gate is not None:
            self._gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> CameraHttp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- logins, from the RFCs -----------------------------------------------------
    def _challenge(self) -> web.Response:
        self.refused += 1
        if self.auth == "basic":
            value = f'Basic realm="{self.realm}"'
        else:
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            value = f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5'
        return web.Response(status=401, headers={"WWW-Authenticate": value}, text="Unauthorized")

    def _logged_in(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth == "none":
            return True
        if self.auth == "basic":
            want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return header == f"Basic {want}"
        if not header.startswith("Digest "):
            return False
        fields = _parse_digest(header[len("Digest ") :])
        if fields.get("username") != self.user or fields.get("nonce") not in self._nonces:
            return False
        if fields.get("uri") != request.path_qs or fields.get("qop") != "auth":
            return False
        ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = _md5(f"{request.method}:{fields['uri']}")
        want = _md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
        return fields.get("response") == want

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if not self._logged_in(request):
            return self._challenge()
        if self.mode == "slow":
            assert self._gate is not None
            try:
                await asyncio.wait_for(self._gate.wait(), self.delay_s)
            except TimeoutError:
                pass
        if self.mode == "error":
            return web.Response(status=500, text="Internal Server Error")
        if self.mode == "html":
            return web.Response(text="<html><body>Please log in</body></html>")
        picture = jpeg(f"pic-{len(self.served)}", pad=self.image_bytes)
        if self.mode == "truncated":
            picture = picture[: len(picture) // 2]
        if self.mode == "big":
            picture = jpeg("big", pad=8 * 1024 * 1024)
        self.served.append(picture)
        return web.Response(body=picture, content_type="image/jpeg")


def _parse_digest(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in _split(text):
        key, _, value = part.strip().partition("=")
        out[key.strip().lower()] = value.strip().strip('"')
    return out


def _split(text: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return parts
