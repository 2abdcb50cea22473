"""Simulated Hikvision IP camera (DS-2CD2xx5 style) serving its ISAPI alertStream.

Written from the ISAPI description of ``/ISAPI/Event/notification/alertStream`` ("event
notification" chapter of the Hikvision ISAPI developer guide) and what camera owners
publish of their streams, never from the agent's driver. Over HTTP on one port, behind
digest authentication (:mod:`.camstream`):

``GET /ISAPI/Streaming/channels/{channel}01/picture``
    a JPEG of the channel (the snapshot URL).
``GET /ISAPI/Event/notification/alertStream``
    ``multipart/mixed; boundary=boundary``, endless. Each part is ``Content-Type:
    application/xml; charset="UTF-8"``, ``Content-Length``, a blank line and one
    ``<EventNotificationAlert>``: ``ipAddress``, ``portNo``, ``protocol``, ``macAddress``,
    ``channelID``, ``dateTime`` (local time with its offset), ``activePostCount``,
    ``eventType``, ``eventState`` (active/inactive), ``eventDescription``, and for line and
    field detection a ``DetectionRegionList`` with one ``DetectionRegionEntry`` (``regionID``,
    ``sensitivityLevel``, ``RegionCoordinatesList``) per rule. When idle the camera sends
    ``videoloss`` ``inactive`` every ``heartbeat_s`` (what real cameras use as keep-alive).

How an alarm goes (as cameras do it): :meth:`HikCamera.begin` posts ``active`` and repeats
it every ``repeat_s`` with ``activePostCount`` rising until :meth:`HikCamera.end`, which posts
``inactive`` only when asked (``inactive=True``; many firmwares never do). One-off posts:
:meth:`HikCamera.post`. Plus the hooks of :class:`.camstream.StreamCamera` (unplug, silence,
inject, cut).

Nothing here imports ``edge_agent`` or ``drivers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo

from aiohttp import web

from .camstream import COMMON_COMMANDS, StreamCamera, common_command

BOUNDARY = "boundary"
ALERT_STREAM = "/ISAPI/Event/notification/alertStream"
CST = timezone(timedelta(hours=8))
#: event types a camera sends a picture with (``pictures``)
PICTURE_TYPES = frozenset({"linedetection", "fielddetection"})
#: a JPEG's start: the bytes a picture part begins with
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
DESCRIPTIONS = {
    "VMD": "Motion alarm",
    "linedetection": "linedetection alarm",
    "fielddetection": "fielddetection alarm",
    "shelteralarm": "Shelter Alarm",
    "videoloss": "videoloss alarm",
}


@dataclass
class HikCamera(StreamCamera):
    """One camera (see the module docstring)."""

    realm: str = "DS-2CD2345G0P-I"
    tz: tzinfo = CST
    #: an ongoing alarm is posted again this often
    repeat_s: float = 1.0
    #: send the captured picture (an ``image/jpeg`` part) after each line or field
    #: detection post, as cameras do whose smart events have "upload picture" enabled
    pictures: bool = False
    picture_bytes: int = 150_000
    #: every post sent: (eventType, eventState, channel, regions)
    posts: list[tuple[str, str, int, tuple[int, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ongoing: dict[tuple[str, int, tuple[int, ...]], asyncio.Task[None]] = {}

    async def stop(self) -> None:
        for task in self._ongoing.values():
            task.cancel()
        for task in self._ongoing.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ongoing.clear()
        await super().stop()

    async def __aenter__(self) -> HikCamera:
        await self.start()
        return self

    # -- scenario hooks ------------------------------------------------------------
    def post(
        self,
        event_type: str,
        state: str = "active",
        *,
        channel: int = 1,
        regions: tuple[int, ...] = (),
        count: int = 1,
    ) -> None:
        """One notification to every open stream."""
        self.posts.append((event_type, state, channel, regions))
        self._broadcast(self.part(self.alert(event_type, state, channel, regions, count)))
        if self.pictures and state == "active" and event_type in PICTURE_TYPES:
            self._broadcast(self.picture(len(self.posts)))

    def begin(self, event_type: str, *, channel: int = 1, regions: tuple[int, ...] = ()) -> None:
        """An alarm starts: ``active`` now and every ``repeat_s`` until :meth:`end`."""
        key = (event_type, channel, regions)
        if key in self._ongoing:
            return
        self._ongoing[key] = asyncio.create_task(self._repeat(key), name="hikcam-sim-alarm")

    def end(
        self,
        event_type: str,
        *,
        channel: int = 1,
        regions: tuple[int, ...] = (),
        inactive: bool = True,
    ) -> None:
        """The alarm is over: the repeats stop; ``inactive`` posts its end."""
        task = self._ongoing.pop((event_type, channel, regions), None)
        if task is not None:
            task.cancel()
        if inactive:
            self.post(event_type, "inactive", channel=channel, regions=regions)

    async def _repeat(self, key: tuple[str, int, tuple[int, ...]]) -> None:
        event_type, channel, regions = key
        count = 0
        while True:
            count += 1
            self.post(event_type, channel=channel, regions=regions, count=count)
            await asyncio.sleep(self.repeat_s)

    # -- wire ----------------------------------------------------------------------
    def alert(
        self, event_type: str, state: str, channel: int, regions: tuple[int, ...], count: int
    ) -> bytes:
        now = datetime.fromtimestamp(time.time(), self.tz).isoformat(timespec="seconds")
        region_xml = ""
        if regions:
            entries = "".join(
                "<DetectionRegionEntry>\n"
                f"<regionID>{r}</regionID>\n<sensitivityLevel>50</sensitivityLevel>\n"
                "<RegionCoordinatesList>\n"
                "<RegionCoordinates>\n<positionX>120</positionX>\n<positionY>300</positionY>\n"
                "</RegionCoordinates>\n"
                "<RegionCoordinates>\n<positionX>860</positionX>\n<positionY>310</positionY>\n"
                "</RegionCoordinates>\n"
                "</RegionCoordinatesList>\n"
                "</DetectionRegionEntry>\n"
                for r in regions
            )
            region_xml = f"<DetectionRegionList>\n{entries}</DetectionRegionList>\n"
        text = (
            '<EventNotificationAlert version="2.0" '
            'xmlns="http://www.hikvision.com/ver20/XMLSchema">\n'
            f"<ipAddress>{self.host}</ipAddress>\n<portNo>{self.port}</portNo>\n"
            "<protocol>HTTP</protocol>\n<macAddress>44:19:b6:00:00:01</macAddress>\n"
            f"<channelID>{channel}</channelID>\n<dateTime>{now}</dateTime>\n"
            f"<activePostCount>{count}</activePostCount>\n<eventType>{event_type}</eventType>\n"
            f"<eventState>{state}</eventState>\n"
            f"<eventDescription>{DESCRIPTIONS.get(event_type, event_type)}</eventDescription>\n"
            f"{region_xml}</EventNotificationAlert>\n"
        )
        return text.encode()

    def picture(self, n: int) -> bytes:
        """An ``image/jpeg`` part (what the camera saw: a person's picture)."""
        filler = f"person{n:08d}".encode()
        body = JPEG_HEAD + filler * (self.picture_bytes // len(filler)) + b"\xff\xd9"
        head = (
            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n"
            'Content-Disposition: attachment; filename="Picture.jpg"\r\n\r\n'
        )
        return head.encode() + body + b"\r\n"

    @staticmethod
    def part(body: bytes) -> bytes:
        head = (
            f'--{BOUNDARY}\r\nContent-Type: application/xml; charset="UTF-8"\r\n'
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body + b"\r\n"

    def stream_content_type(self) -> str:
        return f"multipart/mixed; boundary={BOUNDARY}"

    def heartbeat_part(self) -> bytes:
        return self.part(self.alert("videoloss", "inactive", 1, (), 0))

    async def route(self, request: web.Request) -> web.StreamResponse | None:
        if request.path == ALERT_STREAM and request.method == "GET":
            return await self.serve_stream(request)
        # /ISAPI/Streaming/channels/101/picture: channel 1, main stream (01)
        shot = re.fullmatch(r"/ISAPI/Streaming/channels/(\d+)0(\d)/picture", request.path)
        if shot and request.method == "GET":
            return self.snapshot(int(shot[1]))
        return None


COMMANDS = (
    """\
begin TYPE [CHANNEL] [REGION,...]              an alarm starts (VMD, linedetection,
                                               fielddetection, shelteralarm), repeated
end TYPE [CHANNEL] [REGION,...] [silent]       it ends (silent: no inactive post)
post TYPE [active|inactive] [CHANNEL] [REGION,...]   one post
"""
    + COMMON_COMMANDS
)


def _regions(text: str | None) -> tuple[int, ...]:
    return tuple(int(r) for r in text.split(",") if r) if text else ()


async def run_command(cam: HikCamera, line: str) -> str:
    """Run one scenario command (see :data:`COMMANDS`); ``ValueError`` for a bad one."""
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0], words[1:]
    common = await common_command(cam, cmd)
    if common is not None:
        return common
    try:
        if cmd == "begin":
            channel = int(args[1]) if len(args) > 1 else 1
            cam.begin(
                args[0], channel=channel, regions=_regions(args[2] if len(args) > 2 else None)
            )
        elif cmd == "end":
            rest = [a for a in args[1:] if a != "silent"]
            channel = int(rest[0]) if rest else 1
            regions = _regions(rest[1] if len(rest) > 1 else None)
            cam.end(args[0], channel=channel, regions=regions, inactive="silent" not in args)
        elif cmd == "post":
            state = args[1] if len(args) > 1 else "active"
            channel = int(args[2]) if len(args) > 2 else 1
            cam.post(
                args[0],
                state,
                channel=channel,
                regions=_regions(args[3] if len(args) > 3 else None),
            )
        else:
            raise ValueError(f"unknown command {cmd!r}")
    except (IndexError, KeyError) as err:
        raise ValueError(f"bad arguments for {cmd}: {err}") from None
    return f"{cmd} {' '.join(args)}".strip()
