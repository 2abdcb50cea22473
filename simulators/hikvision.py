"""Simulated Hikvision ISAPI access terminal (DS-K1T… face terminals, DS-K2… controllers).

Written from the public ISAPI description ("ISAPI Access Control", the developer guide's
event chapter) and the captures described in ``../shared/fixtures/access/README.md``, never
from the agent's driver. What it speaks, all over HTTP on one port, every request behind
HTTP digest authentication (RFC 7616, ``qop="auth"``, MD5, as a DS-K1T342 asks for it; a
wrong user or password gets ``401`` again):

``GET /ISAPI/Event/notification/alertStream``
    a ``multipart/mixed; boundary=MIME_boundary`` stream that never ends: a JSON part
    ``{"eventType": "heartBeat", ...}`` every ``heartbeat_s`` seconds, one
    ``AccessControllerEvent`` JSON part per new record (``majorEventType``/
    ``subEventType``/``dateTime``), and, with ``pictures``, an ``image/jpeg`` part after a
    face event (a real terminal sends the captured face there).
``POST /ISAPI/AccessControl/AcsEvent?format=json``
    the record search: ``{"AcsEventCond": {searchID, searchResultPosition, maxResults,
    major, minor, startTime, endTime, beginSerialNo, endSerialNo}}``; the answer
    ``{"AcsEvent": {searchID, responseStatusStrg: MORE|OK|NO MATCH, numOfMatches,
    totalMatches, InfoList: [{major, minor, time, serialNo, ...}]}}``, serialNo increasing,
    at most :data:`SEARCH_PAGE_MAX` records a page (a DS-K1T342 caps pages at 30).
``PUT /ISAPI/AccessControl/RemoteControl/door/{n}``
    ``<RemoteControlDoor><cmd>open|close|alwaysOpen|alwaysClose</cmd></RemoteControlDoor>``;
    the answer is a ``<ResponseStatus>`` with ``statusCode`` 1 (OK) or an error.
httpHosts push
    with ``push_url`` set (what an installer types into the terminal's "HTTP listening" /
    httpHosts page) the terminal POSTs each new record there as ``multipart/form-data``
    (an ``event_log`` JSON part, and a ``Picture`` part with ``pictures``), in order, and
    sends a record again until it gets ``200``.

Times are the terminal's local time with its offset (``2026-09-01T07:40:00+08:00``).
Scenario hooks: :meth:`HikTerminal.swipe`, :meth:`~HikTerminal.face`,
:meth:`~HikTerminal.exit_button`, :meth:`~HikTerminal.door`, :meth:`~HikTerminal.unplug`
/ :meth:`~HikTerminal.plug`, :meth:`~HikTerminal.silence` / :meth:`~HikTerminal.resume`,
:meth:`~HikTerminal.inject` (raw bytes into the stream).

Nothing here imports ``edge_agent`` or ``drivers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, FormData, web

log = logging.getLogger(__name__)

BOUNDARY = "MIME_boundary"
ALERT_STREAM = "/ISAPI/Event/notification/alertStream"
ACS_EVENT = "/ISAPI/AccessControl/AcsEvent"
REMOTE_DOOR = "/ISAPI/AccessControl/RemoteControl/door/{door}"
#: records per search page at most (a DS-K1T342MWX, firmware V3.16.1, answers 30)
SEARCH_PAGE_MAX = 30
DEFAULT_USER = "admin"
DEFAULT_REALM = "DS-K1T342MWX"
#: the terminal's time zone when none is given (China Standard Time)
CST = timezone(timedelta(hours=8))

# Major types and minor codes of the Hikvision SDK / ISAPI access-control event table.
MAJOR_ALARM, MAJOR_EXCEPTION, MAJOR_OPERATION, MAJOR_EVENT = 1, 2, 3, 5
MINOR_REMOTE_OPEN_DOOR = 0x400  # operation
MINOR_CARD_PASS = 0x01
MINOR_CARD_NO_RIGHT = 0x06
MINOR_CARD_OUT_OF_DATE = 0x08
MINOR_INVALID_CARD = 0x09
MINOR_DOOR_UNLOCK = 0x15  # MINOR_LOCK_OPEN: the lock relay released
MINOR_DOOR_LOCK = 0x16  # MINOR_LOCK_CLOSE
MINOR_EXIT_BUTTON = 0x17  # MINOR_DOOR_BUTTON_PRESS
MINOR_DOOR_OPEN = 0x19  # MINOR_DOOR_OPEN_NORMAL: the door contact
MINOR_DOOR_CLOSE = 0x1A  # MINOR_DOOR_CLOSE_NORMAL
MINOR_DOOR_FORCED = 0x1B  # MINOR_DOOR_OPEN_ABNORMAL
MINOR_DOOR_HELD = 0x1C  # MINOR_DOOR_OPEN_TIMEOUT
MINOR_FINGERPRINT_PASS = 0x26
MINOR_FINGERPRINT_FAIL = 0x27
MINOR_FACE_PASS = 0x4B
MINOR_FACE_FAIL = 0x4C

DENIED = {
    "no_right": MINOR_CARD_NO_RIGHT,
    "expired": MINOR_CARD_OUT_OF_DATE,
    "invalid": MINOR_INVALID_CARD,
}
DOOR_STATES = {
    "open": MINOR_DOOR_OPEN,
    "close": MINOR_DOOR_CLOSE,
    "forced": MINOR_DOOR_FORCED,
    "held": MINOR_DOOR_HELD,
    "unlock": MINOR_DOOR_UNLOCK,
    "lock": MINOR_DOOR_LOCK,
}
#: a JPEG's start: the bytes a picture part begins with
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324  # the digest scheme's own hash


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class HikTerminal:
    """One terminal: its record log, its HTTP server on ``host:port``, what it was asked.

    ``start()`` binds (port 0: an ephemeral one, then :attr:`port` holds it), ``stop()``
    closes everything. Records are made by the scenario hooks; each gets the next serial
    number and goes to every open alertStream and to ``push_url``.
    """

    user: str = DEFAULT_USER
    password: str = "Campus-2026!"  # noqa: S105  # the simulator's default login
    host: str = "127.0.0.1"
    port: int = 0
    heartbeat_s: float = 10.0
    tz: tzinfo = CST
    #: httpHosts: where the terminal POSTs each new record (None: no push)
    push_url: str | None = None
    #: allow ``push_url`` off loopback (never in tests)
    push_anywhere: bool = False
    #: wait before POSTing a record again after a failed POST
    push_retry_s: float = 1.0
    #: send a face picture after face events (alertStream part / push part)
    pictures: bool = False
    picture_bytes: int = 200_000
    doors: int = 1
    name: str = "Campus Gate"
    realm: str = DEFAULT_REALM
    #: the terminal's clock minus the host's, seconds
    clock_offset_s: float = 0.0
    first_serial: int = 1
    records: list[dict[str, Any]] = field(default_factory=list)
    #: what the terminal saw: (method, path with query, authorised?)
    seen: list[tuple[str, str, bool]] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)
    #: door numbers opened by a remote command
    remote_opens: list[int] = field(default_factory=list)
    #: records delivered by push (serial numbers, each once per 200 answer)
    pushed: list[int] = field(default_factory=list)
    push_failures: int = 0

    def __post_init__(self) -> None:
        if self.push_url and not self.push_anywhere and not _loopback(self.push_url):
            raise ValueError(f"push URL {self.push_url!r} is not on loopback (--push-anywhere)")
        self._nonces: set[str] = set()
        self._streams: set[asyncio.Queue[bytes | None]] = set()
        self._runner: web.AppRunner | None = None
        self._silent = False
        self._push_pending: list[dict[str, Any]] = []
        self._push_wake = asyncio.Event()
        self._push_task: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self.streams_opened = 0

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Bind the HTTP server (and start pushing when ``push_url`` is set)."""
        await self._bind()
        if self.push_url and self._push_task is None:
            self._session = ClientSession(timeout=ClientTimeout(total=5))
            self._push_task = asyncio.create_task(self._pusher(), name="hik-sim-push")

    async def stop(self) -> None:
        """Close the server, every stream and the pusher."""
        if self._push_task is not None:
            self._push_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._push_task
            self._push_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._unbind()

    async def __aenter__(self) -> HikTerminal:
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
    def record(self, major: int, minor: int, **fields: Any) -> dict[str, Any]:
        """Make one record (the next serial number), stream and push it; returns it."""
        serial = self.records[-1]["serialNo"] + 1 if self.records else self.first_serial
        now = datetime.fromtimestamp(time.time() + self.clock_offset_s, self.tz)
        rec = {
            "major": major,
            "minor": minor,
            "time": now.isoformat(timespec="seconds"),
            "serialNo": serial,
            **{k: v for k, v in fields.items() if v is not None},
        }
        self.records.append(rec)
        picture = self.pictures and minor in (MINOR_FACE_PASS, MINOR_FACE_FAIL)
        self._broadcast(self._part("application/json", json.dumps(self.alert(rec)).encode()))
        if picture:
            self._broadcast(self._part("image/jpeg", self._jpeg(serial)))
        if self.push_url:
            self._push_pending.append(rec)
            self._push_wake.set()
        return rec

    def swipe(
        self,
        card: str,
        *,
        granted: bool = True,
        reason: str = "invalid",
        door: int = 1,
        reader: int = 1,
    ) -> dict[str, Any]:
        """A card at reader ``reader`` of ``door``; denied with ``reason`` (see ``DENIED``)."""
        minor = MINOR_CARD_PASS if granted else DENIED[reason]
        return self.record(
            MAJOR_EVENT, minor, cardNo=card, cardType=1, doorNo=door, cardReaderNo=reader,
            currentVerifyMode="cardOrFace",
        )  # fmt: skip

    def face(
        self, employee: str, *, granted: bool = True, door: int = 1, reader: int = 1
    ) -> dict[str, Any]:
        """A face verified (or not) at a reader; the picture follows with ``pictures``."""
        minor = MINOR_FACE_PASS if granted else MINOR_FACE_FAIL
        return self.record(
            MAJOR_EVENT, minor, employeeNoString=employee if granted else None,
            name="REDACTED" if granted else None, doorNo=door, cardReaderNo=reader,
            currentVerifyMode="cardOrFace", mask="no",
        )  # fmt: skip

    def fingerprint(self, employee: str, *, granted: bool = True, door: int = 1) -> dict[str, Any]:
        minor = MINOR_FINGERPRINT_PASS if granted else MINOR_FINGERPRINT_FAIL
        return self.record(MAJOR_EVENT, minor, employeeNoString=employee, doorNo=door)

    def exit_button(self, door: int = 1) -> dict[str, Any]:
        """The exit (REX) button of ``door``."""
        return self.record(MAJOR_EVENT, MINOR_EXIT_BUTTON, doorNo=door)

    def door(self, door: int, state: str) -> dict[str, Any]:
        """The door's contact/lock: ``open``, ``close``, ``forced``, ``held``, ``unlock``,
        ``lock``."""
        return self.record(MAJOR_EVENT, DOOR_STATES[state], doorNo=door)

    async def unplug(self) -> None:
        """The network cable out: the server goes away, open streams end."""
        await self._unbind()

    async def plug(self) -> None:
        """The cable back: the same port answers again."""
        if self._runner is None:
            await self._bind()

    def silence(self) -> None:
        """The terminal hangs: streams stay open but nothing (not even a heartbeat) comes."""
        self._silent = True

    def resume(self) -> None:
        self._silent = False

    def inject(self, data: bytes) -> None:
        """Raw bytes into every open stream (a garbled part, a truncated one)."""
        self._broadcast(data)

    # -- wire ----------------------------------------------------------------------
    def alert(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A record as the alertStream / httpHosts notification carries it."""
        body = {k: v for k, v in rec.items() if k not in ("major", "minor", "time")}
        return {
            "ipAddress": self.host,
            "portNo": self.port,
            "protocol": "HTTP",
            "macAddress": "a4:d5:c2:00:00:01",
            "channelID": 1,
            "dateTime": rec["time"],
            "activePostCount": 1,
            "eventType": "AccessControllerEvent",
            "eventState": "active",
            "eventDescription": "Access Controller Event",
            "AccessControllerEvent": {
                "deviceName": self.name,
                "majorEventType": rec["major"],
                "subEventType": rec["minor"],
                **body,
            },
        }

    def heartbeat(self) -> dict[str, Any]:
        now = datetime.fromtimestamp(time.time() + self.clock_offset_s, self.tz)
        return {
            "ipAddress": self.host,
            "portNo": self.port,
            "protocol": "HTTP",
            "dateTime": now.isoformat(timespec="seconds"),
            "activePostCount": 1,
            "eventType": "heartBeat",
            "eventState": "active",
            "eventDescription": "heartBeat",
        }

    def _jpeg(self, serial: int) -> bytes:
        filler = f"face{serial:08d}".encode()
        return JPEG_HEAD + filler * (self.picture_bytes // len(filler)) + b"\xff\xd9"

    @staticmethod
    def _part(ctype: str, body: bytes) -> bytes:
        head = f"--{BOUNDARY}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body + b"\r\n"

    def _broadcast(self, data: bytes) -> None:
        if self._silent:
            return  # a hung terminal: what it records now is only in its log
        for queue in self._streams:
            queue.put_nowait(data)

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        f = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]*))', header[7:])}
        if f.get("nonce") not in self._nonces or f.get("username") != self.user:
            return False
        if f.get("uri") != request.path_qs or f.get("qop") != "auth":
            return False
        ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = _md5(f"{request.method}:{f['uri']}")
        want = _md5(f"{ha1}:{f['nonce']}:{f.get('nc', '')}:{f.get('cnonce', '')}:auth:{ha2}")
        return secrets.compare_digest(want, f.get("response", ""))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ok = self._authorised(request)
        self.seen.append((request.method, request.path_qs, ok))
        if not ok:
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            challenge = f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm="MD5"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        path = request.path
        if path == ALERT_STREAM and request.method == "GET":
            return await self._stream(request)
        if path == ACS_EVENT and request.method == "POST":
            return await self._search(request)
        door = re.fullmatch(r"/ISAPI/AccessControl/RemoteControl/door/(\d+)", path)
        if door and request.method == "PUT":
            return await self._remote(request, int(door[1]))
        return self._status(request, 404, 4, "Invalid Operation", "notSupport")

    @staticmethod
    def _status(request: web.Request, http: int, code: int, text: str, sub: str) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ResponseStatus version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">\n'
            f"<requestURL>{request.path}</requestURL>\n<statusCode>{code}</statusCode>\n"
            f"<statusString>{text}</statusString>\n<subStatusCode>{sub}</subStatusCode>\n"
            "</ResponseStatus>\n"
        )
        return web.Response(status=http, text=body, content_type="application/xml")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": f"multipart/mixed; boundary={BOUNDARY}"})
        await resp.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._streams.add(queue)
        self.streams_opened += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat_s):
                        data = await queue.get()
                except TimeoutError:
                    data = self._part("application/json", json.dumps(self.heartbeat()).encode())
                if data is None:
                    break
                if self._silent:
                    continue
                await resp.write(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(queue)
        return resp

    async def _search(self, request: web.Request) -> web.Response:
        try:
            cond = (await request.json())["AcsEventCond"]
            search_id = str(cond["searchID"])
            position = int(cond["searchResultPosition"])
            limit = min(int(cond["maxResults"]), SEARCH_PAGE_MAX)
        except (ValueError, KeyError, TypeError):
            return self._status(request, 400, 6, "Invalid Content", "badParameters")
        self.searches.append(cond)
        major, minor = int(cond.get("major", 0)), int(cond.get("minor", 0))
        begin = int(cond.get("beginSerialNo", 0))
        end = int(cond.get("endSerialNo", 0)) or None
        start_t = _when(cond.get("startTime"))
        end_t = _when(cond.get("endTime"))
        hits = [
            r
            for r in self.records
            if (not major or r["major"] == major)
            and (not minor or r["minor"] == minor)
            and r["serialNo"] >= begin
            and (end is None or r["serialNo"] <= end)
            and (start_t is None or datetime.fromisoformat(r["time"]) >= start_t)
            and (end_t is None or datetime.fromisoformat(r["time"]) <= end_t)
        ]
        page = hits[position : position + limit]
        status = "MORE" if position + len(page) < len(hits) else "OK" if page else "NO MATCH"
        body: dict[str, Any] = {
            "searchID": search_id,
            "totalMatches": len(hits),
            "responseStatusStrg": status,
            "numOfMatches": len(page),
        }
        if page:
            body["InfoList"] = page
        return web.json_response({"AcsEvent": body})

    async def _remote(self, request: web.Request, door: int) -> web.Response:
        cmd = re.search(r"<cmd>\s*(\w+)\s*</cmd>", await request.text())
        if cmd is None or cmd[1] not in ("open", "close", "alwaysOpen", "alwaysClose"):
            return self._status(request, 400, 6, "Invalid Content", "badXmlContent")
        if not 1 <= door <= self.doors:
            return self._status(request, 400, 4, "Invalid Operation", "badParameters")
        if cmd[1] == "open":
            self.remote_opens.append(door)
            self.record(MAJOR_OPERATION, MINOR_REMOTE_OPEN_DOOR, doorNo=door)
            self.door(door, "unlock")
        return self._status(request, 200, 1, "OK", "ok")

    async def _pusher(self) -> None:
        assert self.push_url is not None
        assert self._session is not None
        while True:
            if not self._push_pending:
                self._push_wake.clear()
                await self._push_wake.wait()
                continue
            rec = self._push_pending[0]
            if self._runner is None:  # unplugged: the terminal cannot reach anything
                await asyncio.sleep(self.push_retry_s)
                continue
            try:
                async with self._session.post(self.push_url, data=self._form(rec)) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (ClientError, TimeoutError, OSError):
                ok = False
            if ok:
                self._push_pending.pop(0)
                self.pushed.append(rec["serialNo"])
            else:
                self.push_failures += 1
                await asyncio.sleep(self.push_retry_s)

    def _form(self, rec: dict[str, Any]) -> FormData:
        form = FormData()
        form.add_field("event_log", json.dumps(self.alert(rec)), content_type="application/json")
        if self.pictures and rec["minor"] in (MINOR_FACE_PASS, MINOR_FACE_FAIL):
            form.add_field(
                "Picture", self._jpeg(rec["serialNo"]), content_type="image/jpeg",
                filename="Picture.jpg",
            )  # fmt: skip
        return form


def _when(text: Any) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text))


COMMANDS = """\
swipe CARD [granted|no_right|expired|invalid] [DOOR]   a card at the door's reader
face EMPLOYEE [granted|denied] [DOOR]                  a face verified / not recognised
exit [DOOR]                                            the exit (REX) button
door DOOR open|close|forced|held|unlock|lock           the door's contact or lock
unplug / plug                                          the network cable out / in
silence / resume                                       hang (no heartbeat) / answer again
records                                                how many records, the last serial
"""


async def run_command(term: HikTerminal, line: str) -> str:
    """Run one scenario command (see :data:`COMMANDS`); ``ValueError`` for a bad one."""
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0], words[1:]
    try:
        if cmd == "swipe":
            how = args[1] if len(args) > 1 else "granted"
            door = int(args[2]) if len(args) > 2 else 1
            rec = term.swipe(args[0], granted=how == "granted", reason=how, door=door)
        elif cmd == "face":
            how = args[1] if len(args) > 1 else "granted"
            door = int(args[2]) if len(args) > 2 else 1
            rec = term.face(args[0], granted=how == "granted", door=door)
        elif cmd == "exit":
            rec = term.exit_button(int(args[0]) if args else 1)
        elif cmd == "door":
            rec = term.door(int(args[0]), args[1])
        elif cmd == "unplug":
            await term.unplug()
            return "unplugged"
        elif cmd == "plug":
            await term.plug()
            return f"listening on {term.host}:{term.port}"
        elif cmd == "silence":
            term.silence()
            return "silent"
        elif cmd == "resume":
            term.resume()
            return "answering"
        elif cmd == "records":
            last = term.records[-1]["serialNo"] if term.records else 0
            return f"{len(term.records)} records, last serialNo {last}"
        else:
            raise ValueError(f"unknown command {cmd!r}")
    except (IndexError, KeyError) as err:
        raise ValueError(f"bad arguments for {cmd}: {err}") from None
    return f"serialNo {rec['serialNo']} major {rec['major']} minor {rec['minor']}"
