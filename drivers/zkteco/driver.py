"""The ZKTeco PUSH (iclock/ADMS) driver: terminals POST their records to the agent.

One :class:`ZkHub` per agent adds the ``/iclock/...`` routes to the agent's HTTP server
and hands each request to the device whose serial number (``SN``) it carries; a request
from an unknown SN is counted, logged once, and answered so that the terminal waits long
between tries and keeps its records. Each :class:`ZkTecoDriver` (one per terminal):

- answers the handshake with the stamps it has *committed* (``link.cursor``), so the
  terminal resends exactly what is not committed;
- commits each upload's records with the new cursor (``link.commit``) and answers ``OK``
  only after the commit returned; on :class:`NotDurableError` it answers 503, so the
  terminal keeps its records and sends them again;
- keeps the PIN → card table from the terminal's USER lines in the cursor, so one person
  keeps one pseudonym across restarts;
- opens doors (``door_open``) through the command queue: the terminal fetches the command
  at its next poll and confirms it on devicecmd; the command is answered when the
  confirmation comes or with a timeout error, exactly once, and a command the terminal has
  not fetched by then is withdrawn (a late door open would surprise whoever stands there);
- is ``online`` while the terminal polls, ``offline`` with the reason after
  ``offline_after`` poll intervals without a request.

The protocol itself is in :mod:`.iclock` (pure), the mapping to events in :mod:`.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from edge_agent.driver import DeviceLink, DriverContext, Event, HubContext, MetricInfo
from edge_agent.drivers.cards import CardError, canonical, parse_printed
from edge_agent.drivers.zkteco import events as zkevents
from edge_agent.drivers.zkteco import iclock
from edge_agent.drivers.zkteco.config import ZkTecoDevice
from edge_agent.errors import DeviceProtocolError, DeviceTimeout, NotDurableError
from edge_agent.hub import Addr, KeyedHub

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

#: what a terminal nobody configured is told: poll rarely, retry rarely, keep its records
_STRANGER = iclock.HandshakeOptions(delay_s=300, error_delay_s=300, realtime=False)
#: how often the driver sends its counters as telemetry
TELEMETRY_INTERVAL_S = 60.0


class ZkHub(KeyedHub):
    """The iclock routes on the agent's one HTTP server, shared by every terminal."""

    kind = "zkteco"
    needs_http = True

    def __init__(self, ctx: HubContext) -> None:
        super().__init__(ctx)
        from aiohttp import web

        self._devices: dict[str, ZkTecoDriver] = {}
        #: requests that were not iclock requests or had no usable SN
        self.malformed = 0
        if ctx.http is not None:  # None in check-config and unit tests
            ctx.http.add_routes(
                self.kind,
                [
                    web.get("/iclock/cdata", self._handle),
                    web.post("/iclock/cdata", self._handle),
                    web.get("/iclock/registry", self._handle),
                    web.post("/iclock/registry", self._handle),
                    web.get("/iclock/getrequest", self._handle),
                    web.post("/iclock/devicecmd", self._handle),
                    web.get("/iclock/ping", self._handle),
                ],
            )

    @contextlib.contextmanager
    def attach(self, sn: str, driver: ZkTecoDriver) -> Iterator[None]:
        """Route the requests of ``sn`` to ``driver`` while the block runs."""
        if sn in self._devices:
            raise ValueError(f"zkteco: SN {sn!r} is already used by another device")
        self._devices[sn] = driver
        try:
            yield
        finally:
            if self._devices.get(sn) is driver:
                del self._devices[sn]

    def key_of(self, data: bytes, addr: Addr) -> Hashable | None:
        return None  # requests are routed in _handle, by the SN of the query

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        remote = request.remote or "?"
        try:
            req = iclock.classify(request.method, request.path, request.query_string)
        except iclock.IclockError as err:
            self.malformed += 1
            if self.malformed == 1:
                log.warning(
                    "zkteco: unusable request from %s: %s; further ones are counted "
                    "/ 收到无法识别的 iclock 请求，之后只计数",
                    remote,
                    err,
                )
            return web.Response(status=400, text="ERROR")
        body = await request.read()
        driver = self._devices.get(req.sn)
        if driver is None:
            self._unclaimed(body, (remote, 0), req.sn)
            return web.Response(text=_stranger_reply(req))
        status, text = await driver.handle(req, body)
        return web.Response(status=status, text=text)

    async def close(self) -> None:
        if self.malformed > 1:
            log.info("zkteco: %d unusable requests / 共 %d 个无法识别的请求", *[self.malformed] * 2)
        await super().close()


def _stranger_reply(req: iclock.Request) -> str:
    """An unknown terminal: a handshake that makes it poll every 5 minutes; its uploads
    are refused (``ERROR``) so that it keeps the records for when it is configured."""
    if req.endpoint is iclock.Endpoint.HANDSHAKE:
        return iclock.handshake_reply(req, iclock.Cursor(), _STRANGER)
    if req.endpoint is iclock.Endpoint.UPLOAD:
        return "ERROR: unknown terminal"
    return "OK"


class _Once:
    """A problem logged once at WARNING, then at DEBUG, and a count at stop (SD card)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.counts: dict[str, int] = {}

    def report(self, key: str, msg: str, *args: object) -> None:
        n = self.counts[key] = self.counts.get(key, 0) + 1
        text = msg % args if args else msg
        if n == 1:
            log.warning("%s: %s", self.device, text)
        else:
            log.debug("%s: %s", self.device, text)

    def summary(self) -> None:
        for key, n in self.counts.items():
            if n > 1:
                log.info("%s: %s happened %d times / 共发生 %d 次", self.device, key, n, n)


class ZkTecoDriver:
    """One ZKTeco terminal (attendance or security PUSH)."""

    kind: ClassVar[str] = "zkteco"
    Config: ClassVar[type[ZkTecoDevice]] = ZkTecoDevice
    Hub: ClassVar[type[ZkHub]] = ZkHub

    def __init__(self, config: ZkTecoDevice, ctx: DriverContext) -> None:
        self.config = config
        self.hub: ZkHub | None = ctx.hub
        self.tz = ctx.tz
        offset = datetime.now(ctx.tz).utcoffset()
        self.options = iclock.HandshakeOptions(
            tz_offset_min=int(offset.total_seconds() // 60) if offset else 0,
            delay_s=config.delay_s,
            crlf=config.crlf,
        )
        self.reader = zkevents.Reader(config.reader or config.id, config.context)
        self.readers: zkevents.ReaderMap = {
            (r.door, r.direction): zkevents.Reader(r.name, r.context) for r in config.readers
        }
        # Ids above every id an earlier run handed out (seconds since 1970 grow faster
        # than commands are sent), so a late confirmation never matches a new command.
        self.queue = iclock.CommandQueue(next_id=int(time.time()))
        self._waiting: dict[int, asyncio.Future[iclock.Confirmation]] = {}
        self._link: DeviceLink | None = None
        self._cursor = iclock.Cursor()
        self._lock = asyncio.Lock()
        self._last_request: float | None = None
        #: until when a refused commit keeps the device degraded (monotonic)
        self._degraded_until = 0.0
        self._problems = _Once(config.id)
        #: counters (telemetry and diagnostics)
        self.records = 0
        self.resent = 0
        self.skipped_lines = 0
        self.refused_commits = 0

    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo("records", "", "records committed since the agent started"),
            MetricInfo("skipped_lines", "", "upload lines that could not be read"),
        ]

    def meta(self) -> dict[str, Any]:
        return {"vendor": "ZKTeco", "protocol": "PUSH (iclock/ADMS)", "sn": self.config.sn}

    def diagnostics(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "resent": self.resent,
            "skipped_lines": self.skipped_lines,
            "refused_commits": self.refused_commits,
            "commands_waiting": len(self.queue.waiting()),
            "commands_unanswered": len(self.queue.unanswered()),
        }

    # -- the device task -------------------------------------------------------------
    async def run(self, link: DeviceLink) -> None:
        if self.hub is None:
            raise RuntimeError("zkteco needs its hub (the agent's HTTP server)")
        try:
            self._cursor = iclock.Cursor.decode(link.cursor)
        except iclock.CursorError as err:
            # Starting over makes the terminal resend what it holds: duplicates, not loss.
            log.error("%s: %s; asking the terminal for everything it holds", self.device_id, err)
            self._cursor = iclock.Cursor()
        self._link = link
        self._last_request = None
        started = time.monotonic()
        silent_after = self.config.offline_after * self.config.delay_s
        next_telemetry = started + TELEMETRY_INTERVAL_S
        try:
            with self.hub.attach(self.config.sn, self):
                while True:
                    await asyncio.sleep(min(1.0, self.config.delay_s / 2))
                    now = time.monotonic()
                    last = self._last_request if self._last_request is not None else started
                    if now - last > silent_after:
                        link.state(
                            "offline",
                            f"no request from terminal {self.config.sn} for "
                            f"{int(now - last)} s (it polls every {self.config.delay_s} s)",
                        )
                    if now >= next_telemetry:
                        next_telemetry = now + TELEMETRY_INTERVAL_S
                        link.telemetry(
                            {"records": self.records, "skipped_lines": self.skipped_lines}
                        )
        finally:
            self._link = None
            for fut in self._waiting.values():
                fut.cancel()
            self._problems.summary()

    # -- requests (called by the hub) ------------------------------------------------
    async def handle(self, req: iclock.Request, body: bytes) -> tuple[int, str]:
        """Answer one request of this terminal: (HTTP status, body)."""
        link = self._link
        if link is None:  # between restarts of the device task
            return 503, "ERROR: not ready"
        self._last_request = time.monotonic()
        ep = req.endpoint
        if ep is iclock.Endpoint.UPLOAD:
            return await self._upload(link, req, body)
        if ep is iclock.Endpoint.DEVICECMD:
            self._confirm(body)
        if self._degraded_until <= time.monotonic():  # a refused commit stays visible a while
            link.state("online")
        if ep is iclock.Endpoint.HANDSHAKE:
            return 200, iclock.handshake_reply(req, self._cursor, self.options)
        if ep is iclock.Endpoint.REGISTRY:
            return 200, iclock.registry_reply(req)
        if ep is iclock.Endpoint.GETREQUEST:
            return 200, self.queue.getrequest_reply()
        return 200, "OK"

    async def _upload(self, link: DeviceLink, req: iclock.Request, body: bytes) -> tuple[int, str]:
        upload = iclock.parse_upload(req, body)
        if upload.skipped:
            self.skipped_lines += upload.skipped
            self._problems.report(
                "unreadable lines",
                "%d unreadable line(s) in a %s upload, skipped: %r / 无法解析的记录行已跳过",
                upload.skipped,
                upload.table or "?",
                list(upload.samples),
            )
        async with self._lock:  # one commit at a time: the cursor of one moves the next
            plan = iclock.plan_commit(self._cursor, upload)
            cursor = plan.cursor.with_users(tuple(self._canonical_user(u) for u in plan.users))
            events = self._events(plan, cursor)
            self.resent += plan.resent
            if events or cursor != self._cursor:
                try:
                    await link.commit(events, cursor=cursor.encode())
                except NotDurableError as err:
                    self.refused_commits += 1
                    self._degraded_until = time.monotonic() + 2 * self.config.delay_s
                    link.state("degraded", f"records wait on the terminal: {err}")
                    return 503, "ERROR: not stored, send again"
                self._cursor = cursor
                self.records += len(events)
        self._degraded_until = 0.0
        link.state("online")
        return 200, iclock.upload_reply(req, upload.received)

    def _canonical_card(self, card: str | None) -> str | None:
        """The canonical card number (drivers/cards.py); as printed when it is not one."""
        if not card:
            return None
        try:
            return canonical(parse_printed(card, hex_digits=self.config.card_hex))
        except CardError:
            return card

    def _canonical_user(self, user: iclock.User) -> iclock.User:
        return replace(user, card=self._canonical_card(user.card))

    def _events(self, plan: iclock.Commit, cursor: iclock.Cursor) -> list[Event]:
        out = []
        for punch in plan.punches:
            etype, data = zkevents.punch_event(punch, self.reader, cursor.cards)
            out.append(Event(etype, data, zkevents.event_ts(punch.time, self.tz)))
        for rt in plan.rtlog:
            if not zkevents.known(rt.event):
                self._problems.report(
                    f"unknown event code {rt.event}",
                    "rtlog event code %d is unknown; published as digital_input 'unknown' "
                    "/ 未知事件代码",
                    rt.event,
                )
            rt = replace(rt, card=self._canonical_card(rt.card))
            etype, data = zkevents.rtlog_event(rt, self.readers, cursor.cards)
            out.append(Event(etype, data, zkevents.event_ts(rt.time, self.tz)))
        return out

    # -- commands --------------------------------------------------------------------
    def _confirm(self, body: bytes) -> None:
        before = self.queue.malformed
        for conf, _cmd in self.queue.confirm(body):
            fut = self._waiting.pop(conf.id, None)
            if fut is not None and not fut.done():
                fut.set_result(conf)
        if self.queue.malformed > before:
            self._problems.report("malformed results", "a devicecmd body held malformed results")

    async def open_door(self, door: str | int) -> None:
        """``door_open``: queue ``CONTROL DEVICE`` and wait for the terminal's result."""
        try:
            number = int(door)
            cmd = iclock.open_door_command(number, self.config.open_door_s)
        except (ValueError, iclock.CommandError) as err:
            raise ValueError(f"door {door!r}: {err}") from None
        if self._link is None:
            raise DeviceTimeout(self.device_id, "the driver is not running")
        try:
            cmd_id = self.queue.add(cmd)
        except iclock.CommandError as err:
            raise DeviceTimeout(self.device_id, str(err)) from None
        fut: asyncio.Future[iclock.Confirmation] = asyncio.get_running_loop().create_future()
        self._waiting[cmd_id] = fut
        try:
            async with asyncio.timeout(self.config.command_timeout_s):
                conf = await fut
        except TimeoutError:
            if self.queue.cancel(cmd_id):
                raise DeviceTimeout(
                    self.device_id,
                    f"the terminal did not poll within {self.config.command_timeout_s:g} s; "
                    "the command was withdrawn, the door was not opened",
                ) from None
            raise DeviceTimeout(
                self.device_id,
                f"the terminal fetched the command but sent no result within "
                f"{self.config.command_timeout_s:g} s; the door may have opened",
            ) from None
        finally:
            self._waiting.pop(cmd_id, None)
            if not fut.done():
                fut.cancel()
        if not conf.ok:
            raise DeviceProtocolError(
                self.device_id, f"the terminal refused to open door {number}: {conf.meaning}"
            )


__all__ = ["ZkHub", "ZkTecoDriver"]
