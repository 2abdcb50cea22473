"""The Hikvision ISAPI push driver (``kind: hikvision``): access terminals and face gates
(DS-K1T…, DS-K2…) with HTTP digest authentication.

Two ways in, one cursor. The cursor is the terminal's ``serialNo`` of the last committed
record; every commit carries it (``link.commit(events, cursor=...)``), so after a crash, a
broker outage or the agent off for an hour the terminal is asked exactly for what came after.

- ``mode: stream``: the driver holds ``GET /ISAPI/Event/notification/alertStream`` open
  (:class:`~edge_agent.drivers.hikvision.alerts.AlertStream` reads it as the socket chunks
  it; picture parts are dropped as they stream by). A heartbeat keeps the device
  ``online``; ``silence_s`` without one: ``offline``, then reconnect with backoff.
- ``mode: push``: the terminal POSTs each record to ``/hik/<device id>`` on the agent's
  HTTP server (the kind's hub adds the route); the answer is ``200`` only once
  ``link.commit`` returned, ``503`` otherwise, so the terminal sends it again.

Catch-up: once the stream is open (so nothing falls between the search and the stream),
at start, and whenever a record's ``serialNo`` is not the cursor + 1, the driver searches
the terminal's log (``POST /ISAPI/AccessControl/AcsEvent``,
:class:`~edge_agent.drivers.hikvision.acsevent.AcsEventSearch`) from the cursor, page by
page, each page committed with its cursor. A record at or below the cursor is a duplicate
and dropped. In push mode the same search every ``silence_s`` without a POST tells
whether the terminal is still there.

``door_open`` is ``PUT /ISAPI/AccessControl/RemoteControl/door/{n}`` with ``<cmd>open</cmd>``;
the answer's ``ResponseStatus`` must say ``statusCode`` 1 for this request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from edge_agent.config.secrets import SecretError, resolve
from edge_agent.driver import DeviceLink, DriverContext, Event, HubContext, MetricInfo
from edge_agent.drivers.device_log import DeviceLog
from edge_agent.drivers.hikvision.acsevent import AcsEventSearch, SearchPage
from edge_agent.drivers.hikvision.alerts import AlertStream
from edge_agent.drivers.hikvision.config import HikvisionDevice
from edge_agent.drivers.hikvision.events import (
    HEARTBEAT_CODE,
    AccessEvent,
    Heartbeat,
    IsapiError,
    Notification,
    Other,
    ReaderMap,
    decode_body,
    event_ts,
    known,
    notification,
    to_event,
)
from edge_agent.drivers.hikvision.multipart import (
    MAX_PART_BYTES,
    MultipartParser,
    boundary_from_content_type,
    header_params,
)
from edge_agent.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
    NotDurableError,
)
from edge_agent.hub import KeyedHub

if TYPE_CHECKING:
    from aiohttp import ClientResponse, ClientSession, web

# aiohttp is imported where it is used: the registry imports every kind's driver, and an
# agent with only polled devices must not pay aiohttp's memory (tests/unit/test_http.py)

log = logging.getLogger(__name__)

KIND = "hikvision"
ALERT_STREAM = "/ISAPI/Event/notification/alertStream"
REMOTE_DOOR = "/ISAPI/AccessControl/RemoteControl/door/{door}"
#: the route terminals in push mode POST to (their httpHosts ``url``)
PUSH_ROUTE = "/hik/{device_id}"
#: the longest answer read from a terminal (a 30-record search page is about 30 KiB)
MAX_ANSWER_BYTES = 4 * 1024 * 1024

Receiver = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class HikvisionHub(KeyedHub):
    """The kind's route on the agent's HTTP server, ``POST /hik/{device_id}``: each POST goes
    to the driver of that device (which answers it once the records are committed); a POST
    for no configured push device is ``404``, counted and logged once per sender."""

    kind = KIND
    needs_http = True

    def __init__(self, ctx: HubContext) -> None:
        super().__init__(ctx)
        self.receivers: dict[str, Receiver] = {}
        if ctx.http is not None:
            from aiohttp import web

            # the server starts for this kind only when a terminal pushes
            push = any(getattr(d, "mode", None) == "push" for d in ctx.devices)
            ctx.http.add_routes(KIND, [web.post(PUSH_ROUTE, self._post)], start=push)

    def attach(self, device_id: str, receiver: Receiver) -> Callable[[], None]:
        """Hand the POSTs for ``device_id`` to ``receiver``; returns the detach function."""
        if device_id in self.receivers:
            raise ValueError(f"{KIND}: {device_id!r} is already attached")
        self.receivers[device_id] = receiver

        def detach() -> None:
            if self.receivers.get(device_id) is receiver:
                del self.receivers[device_id]

        return detach

    async def _post(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        device_id = request.match_info["device_id"]
        receiver = self.receivers.get(device_id)
        if receiver is None:
            self._unclaimed(b"", (request.remote or "?", 0), device_id)
            return web.Response(status=404, text="unknown device")
        return await receiver(request)


class HikvisionDriver(DeviceLog):
    """One terminal (see the module docstring)."""

    _log = log
    _trouble_zh = "终端连接异常"

    kind: ClassVar[str] = KIND
    Config: ClassVar[type[HikvisionDevice]] = HikvisionDevice
    Hub: ClassVar[type[HikvisionHub]] = HikvisionHub

    def __init__(self, config: HikvisionDevice, ctx: DriverContext) -> None:
        self.config = config
        self.tz = ctx.tz
        self.hub: HikvisionHub | None = ctx.hub
        self.readers: ReaderMap = {(r.door, r.reader): r.as_reader() for r in config.readers}
        self.base = config.base_url
        self._session: ClientSession | None = None
        self._link: DeviceLink | None = None
        #: one commit or catch-up at a time (the stream or a POST, and the search)
        self._lock = asyncio.Lock()
        self._pushed = asyncio.Event()
        self._down_since: str | None = None
        self._online = False
        #: log keys already logged once at WARNING, and how often each came again
        self._logged: dict[str, int] = {}
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "records",
                "duplicates",
                "catchups",
                "skipped_parts",
                "pictures_dropped",
                "truncated",
                "pushes",
                "refused_pushes",
            ),
            0,
        )

    # -- the Driver protocol -------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo("records", "", "records committed since the agent started"),
            MetricInfo("duplicates", "", "records dropped as already committed"),
            MetricInfo("catchups", "", "searches of the terminal's log"),
        ]

    def meta(self) -> dict[str, Any]:
        return {
            "vendor": "Hikvision",
            "model": "ISAPI access terminal",
            "protocol": f"ISAPI {self.config.mode}",
            "doors": self.config.doors,
        }

    def diagnostics(self) -> dict[str, Any]:
        return {"mode": self.config.mode, "base": self.base, **self.counts}

    # -- running -------------------------------------------------------------------------
    async def run(self, link: DeviceLink) -> None:
        self._link = link
        detach = None
        if self.config.mode == "push":
            if self.hub is None:
                raise RuntimeError("hikvision push mode needs its hub (http.bind)")
            detach = self.hub.attach(self.device_id, self._receive)
        backoff = 1.0
        try:
            while True:
                healthy = await self._session_once(link)
                if healthy:
                    backoff = 1.0
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.config.retry_max_s)
        finally:
            if detach is not None:
                detach()
            self._summary()

    async def _session_once(self, link: DeviceLink) -> bool:
        """One connection's life; True when it was online at some point."""
        self._online = False
        try:
            password = resolve(
                self.config.password, cred_dir=os.environ.get("CREDENTIALS_DIRECTORY")
            )
        except SecretError as err:
            self._down(link, "offline", f"password not available: {err}")
            return False
        from aiohttp import ClientSession, ClientTimeout, DigestAuthMiddleware, TCPConnector

        # True: aiohttp's default checks; False: a terminal's self-signed certificate
        ssl = self.config.scheme == "http" or self.config.tls_verify
        async with ClientSession(
            connector=TCPConnector(ssl=ssl, limit=4),
            middlewares=(DigestAuthMiddleware(self.config.user, password),),
            timeout=ClientTimeout(total=None, sock_connect=self.config.timeout_s),
        ) as session:
            self._session = session
            try:
                if self.config.mode == "push":
                    await self._push_mode(link)
                else:
                    await self._stream(link)
            except DeviceError as err:
                self._down(link, "offline", err.reason)
            except NotDurableError as err:
                # nothing was kept and the cursor did not move: the terminal keeps its
                # records and the next session searches from the cursor
                self._down(link, "degraded", f"records wait on the terminal: {err}")
            finally:
                self._session = None
        return self._online

    def _up(self, link: DeviceLink) -> None:
        self._online = True
        if self._down_since is not None:
            log.info("%s: terminal answers again / 终端恢复连接", self.device_id)
            self._down_since = None
        link.state("online")

    # -- HTTP to the terminal ------------------------------------------------------------
    async def _call(
        self, method: str, path: str, *, json_body: Any = None, data: str | None = None
    ) -> tuple[ClientResponse, bytes]:
        from aiohttp import ClientError

        session = self._session
        if session is None:
            raise DeviceUnavailable(self.device_id, "not connected to the terminal")
        headers = {"Content-Type": "application/xml"} if data is not None else None
        try:
            async with asyncio.timeout(self.config.timeout_s):
                async with session.request(
                    method, self.base + path, json=json_body, data=data, headers=headers
                ) as resp:
                    body = await _read_capped(resp, MAX_ANSWER_BYTES)
        except TimeoutError as err:
            raise DeviceTimeout(self.device_id, f"no answer to {method} {path}") from err
        except (ClientError, OSError) as err:
            raise DeviceUnavailable(self.device_id, f"cannot reach the terminal: {err}") from err
        self._check_status(resp, method, path)
        if body is None:
            raise DeviceProtocolError(
                self.device_id, f"answer to {method} {path} is longer than {MAX_ANSWER_BYTES}"
            )
        return resp, body

    def _check_status(self, resp: ClientResponse, method: str, path: str) -> None:
        if resp.status == 401:
            raise DeviceError(
                self.device_id,
                "wrong user or password (HTTP 401) / 用户名或密码错误",
            )
        if resp.status != 200:
            raise DeviceProtocolError(self.device_id, f"HTTP {resp.status} for {method} {path}")

    # -- catch-up ------------------------------------------------------------------------
    def _cursor(self, link: DeviceLink) -> int | None:
        text = link.cursor
        try:
            return None if text is None else int(text)
        except ValueError:
            self._once("cursor", "stored cursor %r is not a serial number; starting anew", text)
            return None

    async def _catch_up(self, link: DeviceLink) -> None:
        """Search the terminal's log from the cursor and commit page by page (hold
        :attr:`_lock`)."""
        cursor = self._cursor(link)
        now = datetime.now(UTC)
        if cursor is None:
            if self.config.first_catchup_h <= 0:
                # the very first start: only what comes from now on, counted from the
                # terminal's last serial number (so an outage before the first record
                # still leaves nothing behind)
                await self._baseline(link, now)
                return
            start = now - timedelta(hours=self.config.first_catchup_h)
        else:
            start = now - timedelta(days=self.config.catchup_days)
        self.counts["catchups"] += 1
        search = AcsEventSearch(
            secrets.token_hex(8),
            start,
            now + timedelta(days=1),  # a terminal clock ahead of ours
            self.tz,
            begin_serial=None if cursor is None else cursor + 1,
        )
        while not search.done:
            page = await self._page(search)
            await self._commit_notes(link, list(page.events), from_search=True)

    async def _baseline(self, link: DeviceLink, now: datetime) -> None:
        """Commit the terminal's last serial number as the cursor, without its records: a
        search of one result per page, asked for its last position."""
        search = AcsEventSearch(
            secrets.token_hex(8),
            now - timedelta(days=self.config.catchup_days),
            now + timedelta(days=1),
            self.tz,
            max_results=1,
        )
        page = await self._page(search)
        if page.total > 1:
            search.position = page.total - 1
            search.done = False
            page = await self._page(search)
        last = page.last_serial if page.total else 0
        if last is None:
            raise DeviceProtocolError(self.device_id, "AcsEvent record without a serialNo")
        log.info(
            "%s: first start, taking records after serialNo %d / 首次启动，从流水号 %d 之后开始",
            self.device_id,
            last,
            last,
        )
        await self._commit(link, [], last)

    async def _page(self, search: AcsEventSearch) -> SearchPage:
        path, body = search.request()
        _resp, answer = await self._call("POST", path, json_body=body)
        self._check_search_id(answer, search.search_id)
        try:
            return search.accept(answer, self.tz)
        except IsapiError as err:
            raise DeviceProtocolError(self.device_id, f"AcsEvent answer: {err}") from err

    def _check_search_id(self, answer: bytes, search_id: str) -> None:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            got = json.loads(answer)["AcsEvent"].get("searchID")
            if got is not None and str(got) != search_id:
                raise DeviceProtocolError(
                    self.device_id, f"AcsEvent answer is for search {got!r}, not {search_id!r}"
                )

    # -- records to events ---------------------------------------------------------------
    async def _take(self, link: DeviceLink, notes: Sequence[Notification]) -> None:
        """What a stream chunk or a POST held: heartbeats mark the terminal alive, records
        are committed (a gap in the serial numbers first fetches what is missing)."""
        records: list[AccessEvent] = []
        for n in notes:
            if isinstance(n, Heartbeat):
                continue
            if isinstance(n, Other):
                self._once(f"other:{n.event_type}", "ignored %s notification", n.event_type)
                continue
            records.append(n)
        if records:
            async with self._lock:
                await self._commit_notes(link, records, from_search=False)
        self._up(link)

    async def _commit_notes(
        self, link: DeviceLink, records: list[AccessEvent], *, from_search: bool
    ) -> None:
        top = self._cursor(link)
        batch: list[Event] = []
        caught_up = from_search
        for n in records:
            serial = n.serial_no
            if serial is not None and top is not None:
                if serial <= top:
                    self.counts["duplicates"] += 1
                    continue
                if serial > top + 1 and not caught_up:
                    # a gap: commit what we have, fetch the missing ones from the log
                    await self._commit(link, batch, top)
                    batch = []
                    await self._catch_up(link)
                    caught_up = True
                    top = self._cursor(link)
                    if top is not None and serial <= top:
                        self.counts["duplicates"] += 1
                        continue
            if serial is not None and (top is None or serial > top):
                top = serial
            if (n.major, n.minor) == HEARTBEAT_CODE:
                continue  # a heartbeat record in a search page: only the cursor moves
            if not known(n.major, n.minor):
                self._once(
                    f"code:{n.major}/{n.minor}",
                    "unknown event code major %s minor %s, published with its raw codes "
                    "/ 未知事件代码",
                    n.major,
                    n.minor,
                )
            etype, data = to_event(n, self.readers)
            batch.append(Event(etype, data, ts=event_ts(n)))
        await self._commit(link, batch, top)

    async def _commit(self, link: DeviceLink, batch: list[Event], top: int | None) -> None:
        cursor = None if top is None else str(top)
        if not batch and (cursor is None or cursor == link.cursor):
            return
        await link.commit(batch, cursor=cursor)
        self.counts["records"] += len(batch)

    # -- stream mode ---------------------------------------------------------------------
    async def _stream(self, link: DeviceLink) -> None:
        from aiohttp import ClientError

        session = self._session
        assert session is not None
        try:
            async with asyncio.timeout(self.config.timeout_s):
                resp = await session.get(self.base + ALERT_STREAM)
        except TimeoutError as err:
            raise DeviceTimeout(self.device_id, "no answer to the alertStream request") from err
        except (ClientError, OSError) as err:
            raise DeviceUnavailable(self.device_id, f"cannot reach the terminal: {err}") from err
        try:
            self._check_status(resp, "GET", ALERT_STREAM)
            ctype = resp.headers.get("Content-Type", "")
            try:
                stream = AlertStream(ctype, self.tz)
            except ValueError as err:
                raise DeviceProtocolError(
                    self.device_id, f"alertStream is not multipart ({ctype!r}): {err}"
                ) from err
            # the stream is open: what happens from now on arrives on it, what happened
            # before is in the log
            async with self._lock:
                await self._catch_up(link)
            self._up(link)
            seen: dict[str, int] = {}
            while True:
                try:
                    async with asyncio.timeout(self.config.silence_s):
                        chunk = await resp.content.readany()
                except TimeoutError as err:
                    raise DeviceTimeout(
                        self.device_id,
                        f"no heartbeat for {self.config.silence_s:g} s / 超时无心跳",
                    ) from err
                except (ClientError, OSError) as err:
                    raise DeviceUnavailable(self.device_id, f"alertStream broke: {err}") from err
                if not chunk:
                    if stream.finish().truncated:
                        self.counts["truncated"] += 1
                        self._once("truncated", "alertStream ended inside a part")
                    raise DeviceUnavailable(self.device_id, "the terminal closed the alertStream")
                notes = stream.feed(chunk)
                self._count_stream(stream, seen)
                await self._take(link, notes)
        finally:
            resp.close()

    def _count_stream(self, stream: AlertStream, seen: dict[str, int]) -> None:
        """Add what this stream skipped and dropped since the last call (``seen`` holds the
        stream's own counts so far: a new connection starts from zero)."""
        stats = stream.stats
        now = {
            "pictures_dropped": stats.pictures,
            "skipped_parts": stream.skipped + stats.oversized + stats.malformed,
        }
        for _ in range(now["skipped_parts"] - seen.get("skipped_parts", 0)):
            self._once("part", "unreadable alertStream part (%s)", stream.last_skip or "malformed")
        for key, value in now.items():
            self.counts[key] += value - seen.get(key, 0)
            seen[key] = value

    # -- push mode -----------------------------------------------------------------------
    async def _push_mode(self, link: DeviceLink) -> None:
        while True:
            async with self._lock:
                await self._catch_up(link)  # also: the terminal answers
            self._up(link)
            while True:  # until the terminal has been quiet for silence_s
                self._pushed.clear()
                try:
                    async with asyncio.timeout(self.config.silence_s):
                        await self._pushed.wait()
                except TimeoutError:
                    break

    def _from_terminal(self, remote: str | None) -> bool:
        try:
            want = ipaddress.ip_address(self.config.host)
        except ValueError:
            return True  # a host name: nothing to compare the sender with
        try:
            got = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        mapped = getattr(got, "ipv4_mapped", None)
        return got == want or mapped == want

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        """One POST of the terminal: 200 once its records are committed, else an error so
        that the terminal sends them again."""
        from aiohttp import web

        link = self._link
        assert link is not None
        if not self._from_terminal(request.remote):
            self._once(f"sender:{request.remote}", "POST from %s, not the terminal", request.remote)
            return web.Response(status=403, text="not this terminal")
        self.counts["pushes"] += 1
        self._pushed.set()
        try:
            notes = await self._read_push(request)
        except IsapiError as err:
            self._once("push", "unreadable POST body (%s)", err)
            return web.Response(status=400, text="unreadable")
        if notes is None:
            return web.Response(status=400, text="truncated")
        try:
            await self._take(link, notes)
        except NotDurableError as err:
            self.counts["refused_pushes"] += 1
            self._down(link, "degraded", f"records wait on the terminal: {err}")
            return web.Response(status=503, text="not stored, send again")
        except DeviceError as err:
            # a gap the search could not fill: refuse, the terminal sends it again
            self.counts["refused_pushes"] += 1
            self._once("gap", "records missing and the log cannot be searched: %s", err.reason)
            return web.Response(status=503, text="catch-up failed, send again")
        return web.Response(text="OK")

    async def _read_push(self, request: web.Request) -> list[Notification] | None:
        """The notifications of one POST, read as it arrives (a picture part is dropped
        unread); None when the body ended inside a part."""
        ctype = request.headers.get("Content-Type", "")
        main = header_params(ctype)[0]
        if not main.startswith("multipart/"):
            body = bytearray()
            async for chunk in request.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_PART_BYTES:
                    raise IsapiError(f"body longer than {MAX_PART_BYTES} bytes")
            return [notification(decode_body(bytes(body)), self.tz)]
        try:
            parser = MultipartParser(boundary_from_content_type(ctype))
        except ValueError as err:
            raise IsapiError(str(err)) from err
        parts = []
        async for chunk in request.content.iter_chunked(64 * 1024):
            parts += parser.feed(chunk)
        end = parser.finish()
        self.counts["pictures_dropped"] += parser.stats.pictures
        if end.truncated:
            self.counts["truncated"] += 1
            self._once("truncated", "POST body ended inside a part")
            return None
        notes: list[Notification] = []
        for part in parts:
            try:
                notes.append(notification(decode_body(part.body), self.tz))
            except IsapiError as err:
                self.counts["skipped_parts"] += 1
                self._once("part", "unreadable POST part %s (%s)", part.name or "?", err)
        return notes

    # -- door_open -----------------------------------------------------------------------
    async def open_door(self, door: str | int) -> None:
        """``door_open``: ``PUT /ISAPI/AccessControl/RemoteControl/door/{n}``."""
        try:
            number = int(door)
        except ValueError:
            raise ValueError(f"door {door!r} is not a door number") from None
        if not 1 <= number <= self.config.doors:
            raise ValueError(f"door {number}: the device has doors 1-{self.config.doors}")
        path = REMOTE_DOOR.format(door=number)
        body = (
            '<RemoteControlDoor version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">'
            "<cmd>open</cmd></RemoteControlDoor>"
        )
        _resp, answer = await self._call("PUT", path, data=body)
        status = _xml_fields(answer)
        if status.get("statusCode") != "1":
            raise DeviceProtocolError(
                self.device_id,
                f"door {number} not opened: statusCode {status.get('statusCode')}, "
                f"{status.get('subStatusCode') or status.get('statusString') or 'no reason'}",
            )
        url = status.get("requestURL")
        if url is not None and url.split("?")[0] != path:
            raise DeviceProtocolError(self.device_id, f"answer is for {url!r}, not {path!r}")


async def _read_capped(resp: ClientResponse, limit: int) -> bytes | None:
    """The answer's body; None when it is longer than ``limit`` (not read further)."""
    out = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        out += chunk
        if len(out) > limit:
            return None
    return bytes(out)


_TAG = re.compile(rb"<(requestURL|statusCode|statusString|subStatusCode)>\s*([^<]*?)\s*</\1>")


def _xml_fields(body: bytes) -> dict[str, str]:
    """The fields of an ISAPI ``ResponseStatus`` (XML, or its JSON form)."""
    text = body.strip()
    if text[:1] == b"{":
        with contextlib.suppress(ValueError):
            doc = json.loads(text)
            if isinstance(doc, dict):
                return {k: str(v) for k, v in doc.items() if not isinstance(v, dict | list)}
        return {}
    return {m[1].decode(): m[2].decode(errors="replace") for m in _TAG.finditer(text)}


__all__ = ["HikvisionDriver", "HikvisionHub"]
