"""A camera's MJPEG-over-HTTP substream, serving a synthetic :class:`~.scenes.Scene`.

What it speaks is what IP cameras (Axis ``/axis-cgi/mjpg/video.cgi``, Hikvision
``/ISAPI/Streaming/channels/102/httpPreview``, Dahua ``/cgi-bin/mjpg/video.cgi``) send:

``GET /stream`` (``/video.mjpg`` too)
    ``200``, ``Content-Type: multipart/x-mixed-replace; boundary=<boundary>``, then one part
    per frame, paced at ``fps`` of wall time from the moment the client connected::

        --<boundary>\\r\\n
        Content-Type: image/jpeg\\r\\n
        Content-Length: <n>\\r\\n
        \\r\\n
        <n bytes of JPEG>\\r\\n

    Every client sees the scene from frame 0 (``?start=K`` from frame K); at the scene's end
    the stream loops (``loop=True``) or closes. ``?fps=F`` asks for another rate, as cameras
    accept it on their MJPEG URL.
``GET /snapshot.jpg``
    the frame of the scene time since the server started, one JPEG.

Scenario hooks, for the tests: :meth:`MjpegServer.drop_clients` (the network cut under a
stream), :meth:`MjpegServer.inject` (raw bytes into every open stream, before the next
part), :attr:`MjpegServer.clients` and :attr:`MjpegServer.frames_sent`.

Nothing here imports ``edge_agent`` or ``drivers``.

MJPEG 码流模拟：按帧率以 multipart/x-mixed-replace 发送合成画面，每个连接从第 0 帧开始。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import cv2
from aiohttp import web

from .scenes import Scene

log = logging.getLogger(__name__)

BOUNDARY = "ipcamera"


class JpegCache:
    """The scene's frames as JPEG, encoded once each (a 320x240 frame takes ~15 ms to draw;
    the bench plays the same minute many times)."""

    def __init__(self, scene: Scene, quality: int = 80) -> None:
        self.scene = scene
        self.quality = quality
        self._jpegs: dict[int, bytes] = {}

    def jpeg(self, index: int) -> bytes:
        index %= max(1, self.scene.frame_count)
        data = self._jpegs.get(index)
        if data is None:
            ok, buf = cv2.imencode(
                ".jpg", self.scene.frame(index), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
            )
            if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR image
                raise RuntimeError("JPEG encoding failed")
            data = self._jpegs[index] = buf.tobytes()
        return data


def part(jpeg: bytes, boundary: str = BOUNDARY) -> bytes:
    """One multipart part as a camera writes it."""
    head = (
        f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    ).encode("ascii")
    return head + jpeg + b"\r\n"


class MjpegServer:
    """``async with MjpegServer(scene) as srv:`` serves on ``srv.url`` (127.0.0.1, an
    ephemeral port unless ``port`` is given)."""

    def __init__(
        self,
        scene: Scene,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fps: float | None = None,
        loop: bool = True,
        quality: int = 80,
    ) -> None:
        self.scene = scene
        self.host = host
        self.port = port
        self.fps = fps or scene.fps
        self.loop = loop
        self.cache = JpegCache(scene, quality)
        self.clients = 0
        self.frames_sent = 0
        self._runner: web.AppRunner | None = None
        self._responses: set[web.StreamResponse] = set()
        self._injected: dict[web.StreamResponse, list[bytes]] = {}
        self._started = time.monotonic()

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"http://{self.host}:{self.port}/stream"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/video.mjpg", self._stream)
        app.router.add_get("/snapshot.jpg", self._snapshot)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._started = time.monotonic()

    async def stop(self) -> None:
        await self.drop_clients()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MjpegServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drop_clients(self) -> None:
        """Cut every open stream (a switch port going down under the camera)."""
        for resp in list(self._responses):
            transport = resp._req.transport if resp._req is not None else None
            if transport is not None:
                transport.abort()
        self._responses.clear()
        self._injected.clear()

    def inject(self, data: bytes) -> None:
        """Send ``data`` as it is on every open stream, before its next part (garbage, a
        truncated JPEG, a part with a wrong length)."""
        for resp in self._responses:
            self._injected.setdefault(resp, []).append(data)

    async def _snapshot(self, request: web.Request) -> web.Response:
        index = int((time.monotonic() - self._started) * self.scene.fps)
        return web.Response(body=self.cache.jpeg(index), content_type="image/jpeg")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        try:
            fps = float(request.query.get("fps", self.fps))
            index = int(request.query.get("start", "0"))
        except ValueError:
            return web.Response(status=400, text="bad fps or start")
        if not 0 < fps <= 60:
            return web.Response(status=400, text="fps out of range")
        resp = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Cache-Control": "no-cache",
            }
        )
        await resp.prepare(request)
        self._responses.add(resp)
        self.clients += 1
        # scene frames are drawn at the scene's rate; a client asking for fewer frames a
        # second gets every n-th, as a camera's encoder drops frames for a slower stream
        step = self.scene.fps / fps
        t0 = time.monotonic()
        sent = 0
        position = float(index)
        try:
            while True:
                frame = int(position)
                if frame >= self.scene.frame_count and not self.loop:
                    break
                for data in self._injected.pop(resp, []):
                    await resp.write(data)
                await resp.write(part(self.cache.jpeg(frame)))
                self.frames_sent += 1
                sent += 1
                position += step
                delay = t0 + sent / fps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        except (ConnectionResetError, asyncio.CancelledError) as err:
            self._responses.discard(resp)
            self._injected.pop(resp, None)
            if isinstance(err, asyncio.CancelledError):
                raise
            return resp
        self._responses.discard(resp)
        self._injected.pop(resp, None)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp


__all__ = ["BOUNDARY", "JpegCache", "MjpegServer", "part"]
