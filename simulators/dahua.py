"""Simulated Dahua IP camera serving its event stream.

Written from the Dahua HTTP API ("Event Management": ``eventManager.cgi?action=attach``) and
the stream samples described in ``../shared/fixtures/access/README.md``, never from the
agent's driver. Over HTTP on one port, behind digest authentication (:mod:`.camstream`):

``GET /cgi-bin/snapshot.cgi?channel=N``
    a JPEG of the channel (the snapshot URL).
``GET /cgi-bin/eventManager.cgi?action=attach&codes=[All]&heartbeat=N``
    ``multipart/x-mixed-replace; boundary=myboundary``, endless. Each part is
    ``--myboundary``, ``Content-Type: text/plain``, ``Content-Length`` (counting the
    trailing CRLF, as the API's example does), a blank line, and one record
    ``Code=VideoMotion;action=Start;index=0`` with ``;data={json}`` when the event has data
    (pretty-printed over several lines with a 3-space indent, as the captured samples are).
    ``Heartbeat`` every
    ``heartbeat`` seconds of the request (else :attr:`~StreamCamera.heartbeat_s`). Only the
    codes the request lists are sent (``All``: every one). ``action`` other than ``attach``,
    or no ``codes``: ``400`` with ``Error``.

Scenario hooks: :meth:`DahuaCamera.start_event`, :meth:`~DahuaCamera.stop_event`,
:meth:`~DahuaCamera.pulse`, :meth:`~DahuaCamera.record` (any code and action), plus those of
:class:`.camstream.StreamCamera` (unplug, silence, inject, cut). ``attached`` keeps the codes
each stream asked for.

Nothing here imports ``edge_agent`` or ``drivers``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .camstream import COMMON_COMMANDS, StreamCamera, common_command

BOUNDARY = "myboundary"
EVENT_MANAGER = "/cgi-bin/eventManager.cgi"
SNAPSHOT = "/cgi-bin/snapshot.cgi"


@dataclass
class DahuaCamera(StreamCamera):
    """One camera (see the module docstring)."""

    realm: str = "Login to 4L0C3F7PAZ12345"
    #: the codes each attach asked for
    attached: list[list[str]] = field(default_factory=list)
    #: every record sent: (code, action, index)
    sent: list[tuple[str, str, int]] = field(default_factory=list)

    async def __aenter__(self) -> DahuaCamera:
        await self.start()
        return self

    # -- scenario hooks ------------------------------------------------------------
    def record(self, code: str, action: str, index: int = 0, data: Any = None) -> None:
        """One record to every stream that attached to ``code``."""
        self.sent.append((code, action, index))
        text = f"Code={code};action={action};index={index}"
        if data is not None:
            text += ";data=" + json.dumps(data, indent=3, ensure_ascii=False)
        body = text.encode() + b"\r\n"
        self._broadcast(self.part(body), code)

    def start_event(self, code: str, index: int = 0, data: Any = None) -> None:
        self.record(code, "Start", index, data)

    def stop_event(self, code: str, index: int = 0, data: Any = None) -> None:
        self.record(code, "Stop", index, data)

    def pulse(self, code: str, index: int = 0, data: Any = None) -> None:
        self.record(code, "Pulse", index, data)

    # -- wire ----------------------------------------------------------------------
    @staticmethod
    def part(body: bytes) -> bytes:
        head = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    def stream_content_type(self) -> str:
        return f"multipart/x-mixed-replace; boundary={BOUNDARY}"

    def heartbeat_part(self) -> bytes:
        # the API's example: Content-Length 9, not counting the CRLF
        return f"--{BOUNDARY}\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\n".encode() + (
            b"Heartbeat\r\n"
        )

    async def route(self, request: web.Request) -> web.StreamResponse | None:
        if request.path == SNAPSHOT and request.method == "GET":
            try:
                return self.snapshot(int(request.query.get("channel", "1")))
            except ValueError:
                return web.Response(status=400, text="Error\r\nBad Request!\r\n")
        if request.path != EVENT_MANAGER or request.method != "GET":
            return None
        query = request.query
        codes_text = query.get("codes", "")
        if query.get("action") != "attach" or not (
            codes_text.startswith("[") and codes_text.endswith("]")
        ):
            return web.Response(status=400, text="Error\r\nBad Request!\r\n")
        codes = [c.strip() for c in codes_text[1:-1].split(",") if c.strip()]
        self.attached.append(codes)
        try:
            beat = float(query.get("heartbeat", "")) or None
        except ValueError:
            beat = None
        wanted = None if "All" in codes else set(codes)
        return await self.serve_stream(request, beat, wanted)


COMMANDS = (
    """\
start CODE [INDEX] [JSON]                      Code=CODE;action=Start (VideoMotion,
                                               CrossLineDetection, CrossRegionDetection,
                                               VideoBlind, SceneChange, ...)
stop CODE [INDEX] [JSON]                       action=Stop
pulse CODE [INDEX] [JSON]                      action=Pulse
"""
    + COMMON_COMMANDS
)


async def run_command(cam: DahuaCamera, line: str) -> str:
    """Run one scenario command (see :data:`COMMANDS`); ``ValueError`` for a bad one."""
    words = line.split(maxsplit=3)
    if not words:
        return ""
    cmd, args = words[0], words[1:]
    common = await common_command(cam, cmd)
    if common is not None:
        return common
    actions = {"start": "Start", "stop": "Stop", "pulse": "Pulse"}
    if cmd not in actions:
        raise ValueError(f"unknown command {cmd!r}")
    try:
        index = int(args[1]) if len(args) > 1 else 0
        data = json.loads(args[2]) if len(args) > 2 else None
        cam.record(args[0], actions[cmd], index, data)
    except (IndexError, json.JSONDecodeError) as err:
        raise ValueError(f"bad arguments for {cmd}: {err}") from None
    return f"Code={args[0]};action={actions[cmd]};index={index}"
