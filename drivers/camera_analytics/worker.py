"""The worker process of one camera: read the substream, analyse, send events to the agent.

Started by :class:`~edge_agent.drivers.camera_analytics.runner.AnalyticsRunner` with the
``spawn`` method (a fresh interpreter: no copy of the agent's event loop, sockets or SQLite
handles), so a camera whose decoder hangs or crashes never stalls the agent. It sends small
tuples through its end of a pipe, and nothing else ever leaves it:

``("state", "online" | "offline", reason)``
    the stream delivers frames / cannot be read (the worker reconnects by itself, waiting
    1 s doubling to 60 s);
``("events", [(type, data, ts), ...])``
    what :class:`~edge_agent.drivers.camera_analytics.engine.Analyzer` found in a frame;
``("stats", {...})``
    every 5 s: the worker's CPU time, frames analysed and skipped, low light, tamper.

No frame, no face, no picture is ever sent: only counts and events. The worker ends when
the pipe breaks (the agent is gone) or it is terminated.

Two readers: ``http(s)://`` MJPEG (multipart/x-mixed-replace, read with the standard
library: only the frames due at ``fps`` are decoded, the others are skipped as bytes), and
anything else (``rtsp://``) through ``cv2.VideoCapture`` (FFmpeg), grabbing every frame and
decoding only those due.

分析子进程：读取子码流，按帧率解码并分析，只通过管道发送事件和统计，从不发送画面。
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, tzinfo
from types import SimpleNamespace
from typing import Any, Protocol
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

#: seconds between ("stats", ...) messages
STATS_EVERY_S = 5.0
#: a multipart buffer larger than this without a complete frame is garbage
MAX_BUFFER = 4 * 1024 * 1024
#: reconnect waits (s)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0


class StreamError(Exception):
    """The stream cannot be opened or stopped delivering frames."""


class Sender(Protocol):
    def send(self, obj: Any) -> None: ...


class Pacer:
    """Which frames are due at ``fps`` (by the time they arrive): the rest are skipped."""

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = 1.0 / fps
        self.clock = clock
        self.next_due = -math.inf
        self.skipped = 0

    def due(self) -> bool:
        now = self.clock()
        if now + 1e-3 < self.next_due:
            self.skipped += 1
            return False
        # a steady grid while we keep up; after a stall, start again from now
        self.next_due = max(self.next_due + self.period, now + self.period * 0.5)
        return True


_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


class MjpegSplitter:
    """Cuts JPEG frames out of a multipart/x-mixed-replace byte stream, whatever the
    boundary: a part's ``Content-Length`` when it has one, else the JPEG's end marker."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.garbage = 0

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        buf = self._buf
        buf += chunk
        while True:
            soi = buf.find(b"\xff\xd8")
            if soi < 0:
                keep = 1 if buf.endswith(b"\xff") else 0
                self.garbage += len(buf) - keep
                del buf[: len(buf) - keep]
                return
            head = bytes(buf[max(0, soi - 512) : soi])
            lengths = _LENGTH.findall(head)
            if lengths:
                end = soi + int(lengths[-1])
                if len(buf) < end:
                    break
            else:
                eoi = buf.find(b"\xff\xd9", soi + 2)
                if eoi < 0:
                    break
                end = eoi + 2
            yield bytes(buf[soi:end])
            del buf[:end]
        if len(buf) > MAX_BUFFER:
            self.garbage += len(buf)
            buf.clear()


def _open_http(url: str, user: str | None, password: str | None, timeout_s: float) -> Any:
    handlers: list[urllib.request.BaseHandler] = []
    if user is not None:
        mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        mgr.add_password(None, url, user, password or "")
        handlers += [
            urllib.request.HTTPDigestAuthHandler(mgr),
            urllib.request.HTTPBasicAuthHandler(mgr),
        ]
    opener = urllib.request.build_opener(*handlers)
    # the config allows only http(s):// here (AnalyticsConfig.check_stream_url)
    request = urllib.request.Request(  # noqa: S310
        url, headers={"User-Agent": "campus-edge-agent analytics"}
    )
    try:
        return opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 401:
            raise StreamError("wrong user or password (HTTP 401) / 用户名或密码错误") from err
        raise StreamError(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise StreamError(f"cannot open the stream: {reason}") from err


def mjpeg_frames(
    url: str, user: str | None, password: str | None, timeout_s: float
) -> Generator[bytes | None, None, None]:
    """Every JPEG of the stream; None now and then while bytes flow but no frame completes
    (so the caller can still send its stats). Raises :class:`StreamError`."""
    resp = _open_http(url, user, password, timeout_s)
    splitter = MjpegSplitter()
    try:
        while True:
            try:
                chunk = resp.read1(65536)
            except TimeoutError as err:
                raise StreamError(f"no data for {timeout_s:g} s") from err
            except (OSError, http.client.HTTPException) as err:
                # a cable pulled or a camera rebooting mid-stream: IncompleteRead of the
                # chunked body, a reset connection
                raise StreamError(f"the stream was cut: {err!r}") from err
            if not chunk:
                raise StreamError("the camera closed the stream")
            got = False
            for jpeg in splitter.feed(chunk):
                got = True
                yield jpeg
            if not got:
                yield None
    finally:
        resp.close()


def jpeg_size(jpeg: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header (SOFn), None when there is none."""
    pos = 2
    while pos + 9 <= len(jpeg):
        if jpeg[pos] != 0xFF:
            return None
        marker = jpeg[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(jpeg[pos + 5 : pos + 7], "big")
            width = int.from_bytes(jpeg[pos + 7 : pos + 9], "big")
            return width, height
        pos += 2 + length
    return None


def first_frame(cfg: Any, password: str | None) -> str:
    """Open the stream, wait for one frame, say what it is (``doctor``; blocking). Raises
    :class:`StreamError`. Needs OpenCV only for RTSP."""
    url = cfg.stream_url
    started = time.monotonic()
    if url.startswith(("http://", "https://")):
        frames = mjpeg_frames(url, cfg.user, password, cfg.timeout_s)
        try:
            for jpeg in frames:
                if jpeg is None:
                    if time.monotonic() - started > cfg.timeout_s:
                        raise StreamError(f"no JPEG frame within {cfg.timeout_s:g} s")
                    continue
                size = jpeg_size(jpeg)
                shown = f"{size[0]}x{size[1]}" if size else "unreadable size"
                took = time.monotonic() - started
                return f"MJPEG {shown}, first frame after {took:.1f} s / 已收到画面"
        finally:
            frames.close()
        raise StreamError("the stream ended before a frame")
    import cv2

    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        ok, frame = cap.read()
        if not ok:
            raise StreamError("cannot read a frame (OpenCV/FFmpeg)")
        h, w = frame.shape[:2]
        return f"{w}x{h} (OpenCV/FFmpeg), first frame after {time.monotonic() - started:.1f} s"
    finally:
        cap.release()


class Worker:
    """The loop of one worker process (in a test it can run in the test's process)."""

    def __init__(
        self,
        conn: Sender,
        cfg: Any,
        *,
        password: str | None = None,
        tz: tzinfo = UTC,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import cv2

        from edge_agent.drivers.camera_analytics.engine import Analyzer

        self.cv2 = cv2
        self.conn = conn
        self.cfg = cfg
        self.password = password
        self.analyzer = Analyzer(cfg, tz=tz)
        self.clock = clock
        self.pacer = Pacer(cfg.fps)
        self.decode_errors = 0
        self.reduce: int | None = None
        self._last_stats = -math.inf
        self._state: str | None = None

    def run(self) -> None:
        """Read, analyse and report until the pipe breaks."""
        wait = RETRY_MIN_S
        while True:
            frames = self.analyzer.frames
            try:
                self._read_stream()
            except StreamError as err:
                self._send_state("offline", str(err))
            if self.analyzer.frames > frames:
                wait = RETRY_MIN_S  # it worked for a while: try again soon
            time.sleep(wait)
            wait = min(RETRY_MAX_S, wait * 2)

    def _send_state(self, state: str, reason: str | None) -> None:
        if state != self._state or state == "offline":
            self.conn.send(("state", state, reason))
        self._state = state

    def _read_stream(self) -> None:
        url = self.cfg.stream_url
        if url.startswith(("http://", "https://")):
            frames: Iterator[Any] = mjpeg_frames(
                url, self.cfg.user, self.password, self.cfg.timeout_s
            )
            for jpeg in frames:
                self._stats()
                if jpeg is not None and self.pacer.due():
                    self._analyse(self._decode(jpeg))
        else:
            self._read_capture(url)

    def _read_capture(self, url: str) -> None:
        cv2 = self.cv2
        if self.cfg.user is not None:
            parts = urllib.parse.urlsplit(url)
            cred = urllib.parse.quote(self.cfg.user, safe="")
            if self.password is not None:
                cred += ":" + urllib.parse.quote(self.password, safe="")
            url = parts._replace(netloc=f"{cred}@{parts.netloc}").geturl()
        ms = int(self.cfg.timeout_s * 1000)
        cap = cv2.VideoCapture(
            url,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
        )
        try:
            if not cap.isOpened():
                raise StreamError("cannot open the stream (OpenCV/FFmpeg)")
            while True:
                self._stats()
                if not cap.grab():
                    raise StreamError("the stream stopped (OpenCV/FFmpeg)")
                if not self.pacer.due():
                    continue
                ok, frame = cap.retrieve()
                if not ok:
                    self.decode_errors += 1
                    continue
                self._analyse(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        finally:
            cap.release()

    def _decode(self, jpeg: bytes) -> Any:
        cv2 = self.cv2
        import numpy as np

        buf = np.frombuffer(jpeg, np.uint8)
        if self.reduce is None:
            full = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
            if full is None:
                self.decode_errors += 1
                return None
            # decode at the smallest of 1/2, 1/4, 1/8 that is still as wide as the analysis:
            # the JPEG decoder then skips most of the work (a 704-pixel substream, 1/4)
            width = full.shape[1]
            self.reduce = 1
            for r in (2, 4, 8):
                if width // r >= self.cfg.analysis_width:
                    self.reduce = r
            return full
        flag = {
            1: cv2.IMREAD_GRAYSCALE,
            2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
            8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
        }[self.reduce]
        gray = cv2.imdecode(buf, flag)
        if gray is None:
            self.decode_errors += 1
        return gray

    def _analyse(self, gray: Any) -> None:
        if gray is None:
            return
        self._send_state("online", None)
        found = self.analyzer.process(gray, self.clock())
        if found:
            self.conn.send(("events", found))

    def _stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_stats < STATS_EVERY_S:
            return
        self._last_stats = now
        a = self.analyzer
        self.conn.send(
            (
                "stats",
                {
                    "cpu_s": time.process_time(),
                    "frames": a.frames,
                    "skipped": self.pacer.skipped,
                    "decode_errors": self.decode_errors,
                    "low_light": a.low_light,
                    "tamper": a.tamper,
                },
            )
        )


def plain(value: Any) -> Any:
    """A config validated by the agent (``AnalyticsConfig.model_dump_json``), read back as
    nested namespaces with the same attribute names: the worker needs no pydantic."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: plain(v) for k, v in value.items()})
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main(conn: Any, cfg_json: str, password: str | None, tz_name: str | None) -> None:
    """The worker process's entry point (``multiprocessing`` spawn target)."""
    # Ctrl-C reaches the whole process group: the agent stops its workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    # one camera is one core at most: OpenCV's thread pool would compete with the agent
    cv2.setNumThreads(1)
    cfg = plain(json.loads(cfg_json))
    tz: tzinfo = ZoneInfo(tz_name) if tz_name else UTC
    try:
        Worker(conn, cfg, password=password, tz=tz).run()
    except (BrokenPipeError, EOFError, OSError) as err:
        # the agent is gone (or closed our pipe): nothing left to report to
        log.debug("analytics worker %d ends: %s", os.getpid(), err)
