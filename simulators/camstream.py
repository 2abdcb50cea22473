"""What the simulated cameras share: one aiohttp server on loopback whose every request needs
HTTP digest authentication (RFC 7616: ``qop="auth"``, MD5, as Hikvision and Dahua cameras ask
for it; a wrong user or password gets ``401`` again), and event streams that never end: a
``multipart`` body to which each open stream gets every part, plus a heartbeat part when
nothing else was sent for ``heartbeat_s``.

Scenario hooks common to both: :meth:`StreamCamera.unplug` / :meth:`~StreamCamera.plug` (the
cable out and back, same port), :meth:`~StreamCamera.silence` / :meth:`~StreamCamera.resume`
(the camera hangs: streams stay open, nothing comes), :meth:`~StreamCamera.inject` (raw bytes
into every stream), :meth:`~StreamCamera.cut` (raw bytes, then every stream closed: a part
cut in the middle).

Nothing here imports ``edge_agent`` or ``drivers``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: a queue item that ends the stream after the bytes before it
_CLOSE = object()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324  # the digest scheme's own hash


@dataclass
class StreamCamera:
    """The server and streams (subclasses add the paths and the wire format)."""

    user: str = "admin"
    password: str = "Cam-2026!"  # noqa: S105  # the simulator's default login
    host: str = "127.0.0.1"
    port: int = 0
    heartbeat_s: float = 10.0
    realm: str = "IP Camera"
    #: what the camera saw: (method, path with query, authorised?)
    seen: list[tuple[str, str, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._nonces: set[str] = set()
        #: each open stream's queue -> the codes it wants (None: all)
        self._streams: dict[asyncio.Queue[Any], set[str] | None] = {}
        self._runner: web.AppRunner | None = None
        self._silent = False
        self.streams_opened = 0

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        await self._bind()

    async def stop(self) -> None:
        await self._unbind()

    async def __aenter__(self) -> StreamCamera:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _bind(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = runner.addresses[0][1]

    async def _unbind(self) -> None:
        for queue in list(self._streams):
            queue.put_nowait(None)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- scenario hooks ------------------------------------------------------------
    @property
    def streams(self) -> int:
        """Streams open now."""
        return len(self._streams)

    async def unplug(self) -> None:
        """The network cable out: the server goes away, open streams end."""
        await self._unbind()

    async def plug(self) -> None:
        """The cable back: the same port answers again."""
        if self._runner is None:
            await self._bind()

    def silence(self) -> None:
        """The camera hangs: streams stay open but nothing (not even a heartbeat) comes."""
        self._silent = True

    def resume(self) -> None:
        self._silent = False

    def inject(self, data: bytes) -> None:
        """Raw bytes into every open stream (a garbled part)."""
        self._broadcast(data)

    def cut(self, data: bytes = b"") -> None:
        """``data`` (the start of a part), then every open stream ends."""
        for queue in self._streams:
            if data:
                queue.put_nowait(data)
            queue.put_nowait(_CLOSE)

    # -- what a subclass says ------------------------------------------------------
    def stream_content_type(self) -> str:
        raise NotImplementedError

    #: snapshots served so far (the vendor's snapshot path)
    snapshots: int = 0

    def snapshot(self, channel: int) -> web.Response:
        """A small JPEG of ``channel`` (SOI ... EOI), as the vendor's snapshot path answers."""
        self.snapshots += 1
        body = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + f"ch{channel}".encode() * 64 + b"\xff\xd9"
        return web.Response(body=body, content_type="image/jpeg")

    def heartbeat_part(self) -> bytes:
        raise NotImplementedError

    async def route(self, request: web.Request) -> web.StreamResponse | None:
        """Answer an authorised request; None: not found."""
        return None

    # -- wire ----------------------------------------------------------------------
    def _broadcast(self, data: bytes, code: str | None = None) -> None:
        """``data`` to every open stream (that wants ``code``, when given)."""
        if self._silent:
            return  # a hung camera: what happens now is lost
        for queue, wanted in self._streams.items():
            if code is None or wanted is None or code in wanted:
                queue.put_nowait(data)

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        f = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]*))', header[7:])}
        if f.get("nonce") not in self._nonces or f.get("username") != self.user:
            return False
        # the uri as the request line carries it (Dahua's codes=[All] keeps its brackets)
        if f.get("uri") not in (request.raw_path, request.path_qs) or f.get("qop") != "auth":
            return False
        ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = _md5(f"{request.method}:{f['uri']}")
        want = _md5(f"{ha1}:{f['nonce']}:{f.get('nc', '')}:{f.get('cnonce', '')}:auth:{ha2}")
        return secrets.compare_digest(want, f.get("response", ""))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ok = self._authorised(request)
        self.seen.append((request.method, request.raw_path, ok))
        if not ok:
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            challenge = f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm="MD5"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        answer = await self.route(request)
        if answer is None:
            return web.Response(status=404, text="not found")
        return answer

    async def serve_stream(
        self,
        request: web.Request,
        heartbeat_s: float | None = None,
        codes: set[str] | None = None,
    ) -> web.StreamResponse:
        """An endless multipart stream of what is broadcast (of ``codes`` only, when given),
        heartbeats when idle."""
        beat = heartbeat_s or self.heartbeat_s
        resp = web.StreamResponse(headers={"Content-Type": self.stream_content_type()})
        await resp.prepare(request)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[queue] = codes
        self.streams_opened += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(beat):
                        data = await queue.get()
                except TimeoutError:
                    data = self.heartbeat_part()
                if data is None:
                    break
                if data is _CLOSE:
                    # a cut: close the connection under the client, mid-part
                    if request.transport is not None:
                        request.transport.close()
                    break
                if self._silent:
                    continue
                await resp.write(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.pop(queue, None)
        return resp


COMMON_COMMANDS = """\
unplug / plug                                  the network cable out / in
silence / resume                               hang (no heartbeat) / answer again
cut                                            close every stream in the middle of a part
"""


async def common_command(cam: StreamCamera, cmd: str) -> str | None:
    """The scenario commands every camera takes; None when ``cmd`` is not one."""
    if cmd == "unplug":
        await cam.unplug()
        return "unplugged"
    if cmd == "plug":
        await cam.plug()
        return f"listening on {cam.host}:{cam.port}"
    if cmd == "silence":
        cam.silence()
        return "silent"
    if cmd == "resume":
        cam.resume()
        return "answering"
    if cmd == "cut":
        cam.cut(b"--cut\r\nContent-Type: text/pl")
        return "streams cut"
    return None
