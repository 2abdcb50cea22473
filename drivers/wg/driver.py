"""The WG short-packet door controller driver (``kind: wg``): a push driver on the kind's one
UDP socket (:class:`~edge_agent.drivers.wg.hub.WgHub`).

Per controller, :meth:`WgDriver.run`

1. asks for its status (0x20), checks its clock (0x32; set with 0x30 when it is more than
   ``clock_tolerance_s`` off the gateway's, in ``site.timezone`` local time, and logged), and
   sets its receiving server (0x90) to the gateway when ``wg.listener`` is configured;
2. catches up from ``link.cursor`` (the last committed record index) to the status's newest
   index with 0xB0 reads, committing records in batches together with their index;
3. then takes the controller's pushed events: the next index is committed at once, a gap is
   read back, an index at or below the cursor is a duplicate and dropped. A status poll every
   ``poll_interval_s`` notices silence (offline after ``offline_after`` unanswered polls, then
   retried with backoff; online again with a catch-up once it answers) and reads back pushes
   lost on UDP.

Answers are matched to their request by the codec (function, serial, door, record index;
:meth:`edge_agent.drivers.wg.wire.Request.parse`), with one request in flight per controller,
so a late answer is never taken for the next request. A status frame is the same on the wire
whether pushed or asked for: either way it is news of the newest record.

``door_open`` (:class:`~edge_agent.driver.DoorOpener`) sends 0x40 and checks the answer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from edge_agent.driver import (
    AcrossContext,
    DeviceLink,
    DriverContext,
    Event,
    MetricInfo,
    Problem,
)
from edge_agent.drivers.wg import wire
from edge_agent.drivers.wg.config import DOOR_MODES, WgDevice, WgSettings, parse_listener
from edge_agent.drivers.wg.events import Reader, ReaderMap, event_ts, is_unknown, record_to_event
from edge_agent.drivers.wg.hub import WgHub
from edge_agent.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
    NotDurableError,
)

log = logging.getLogger(__name__)

R = TypeVar("R")

#: malformed frames and unknown records: one line, then a summary at most this often (SD card)
SUMMARY_EVERY_S = 300.0
#: statuses waiting to be handled; past this the oldest is dropped (the next poll reads back)
NEWS_MAX = 1024
#: a gateway clock before this is not set (a Pi without RTC before NTP): never copy it to doors
PLAUSIBLE_SINCE = datetime(2025, 1, 1, tzinfo=UTC).timestamp()


class WgDriver:
    """One WG controller. Build it with its config and the :class:`DriverContext`; the
    constructor does no I/O."""

    kind: ClassVar[str] = "wg"
    Config: ClassVar[type[WgDevice]] = WgDevice
    Settings: ClassVar[type[WgSettings]] = WgSettings
    Hub: ClassVar[type[WgHub]] = WgHub

    @classmethod
    def check_across(
        cls, devices: Sequence[tuple[int, WgDevice]], ctx: AcrossContext
    ) -> list[Problem]:
        """One serial number per controller, one controller per address: the hub routes
        frames by serial, and requests go to the address."""
        problems: list[Problem] = []
        serials: dict[int, str] = {}
        hosts: dict[tuple[str, int], str] = {}
        for i, dev in devices:
            if dev.serial in serials:
                problems.append(
                    (
                        ("devices", i, "serial"),
                        f"serial {dev.serial}: device {serials[dev.serial]!r} has it too "
                        "/ 序列号重复",
                    )
                )
            serials.setdefault(dev.serial, dev.id)
            addr = (dev.host, dev.port)
            if addr in hosts:
                problems.append(
                    (
                        ("devices", i, "host"),
                        f"{dev.host}:{dev.port}: device {hosts[addr]!r} has it too / 地址重复",
                    )
                )
            hosts.setdefault(addr, dev.id)
        return problems

    def __init__(self, config: WgDevice, ctx: DriverContext) -> None:
        self.config = config
        self.tz = ctx.tz
        self._hub: WgHub | None = ctx.hub
        settings = ctx.settings if isinstance(ctx.settings, WgSettings) else WgSettings()
        listener = config.listener or settings.wg.listener
        self._listener = parse_listener(listener) if listener else None
        self._readers: ReaderMap = {
            (r.door, r.direction): Reader(r.name, r.context) for r in config.readers
        }
        self._addr = (config.host, config.port)
        self._lock = asyncio.Lock()
        self._pending: tuple[wire.Request[Any], asyncio.Future[Any]] | None = None
        self._news: collections.deque[wire.Status] = collections.deque(maxlen=NEWS_MAX)
        self._news_ready = asyncio.Event()
        self._cursor: int | None = None
        #: the gateway's clock: wall() and synced() (the agent's; system time otherwise)
        self._clock = ctx.clock
        self._wall = ctx.clock.wall if ctx.clock is not None else time.time
        #: the last raw frames from the controller, printed with the first malformed one
        self.frames: collections.deque[bytes] = collections.deque(maxlen=8)
        #: counters for diagnostics() and the log summaries
        self.counts: collections.Counter[str] = collections.Counter()
        self._unknown_codes: set[tuple[int, int]] = set()
        self._quiet: collections.Counter[str] = collections.Counter()
        self._summary_at = 0.0
        self._logged: set[str] = set()
        #: why the controller is degraded while it answers (its receiving server refused)
        self._problem: str | None = None

    # -- the Driver protocol -----------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo(
                "clock_offset_s",
                "s",
                "Controller clock minus gateway clock at each clock check, before any "
                "correction / 控制器时钟与网关时钟之差（校时前）",
            )
        ]

    def meta(self) -> dict[str, Any]:
        return {
            "model": "WG short-packet access controller",
            "vendor": "Weigeng / UHPPOTE",
            "protocol": "wg-udp",
            "serial": self.config.serial,
            "doors": self.config.doors,
            "readers": [
                {"door": d, "direction": direction, "name": r.name, "context": r.context}
                for (d, direction), r in self._readers.items()
            ],
        }

    def diagnostics(self) -> dict[str, Any]:
        """Counters and the last raw frames, for support."""
        return {
            "cursor": self._cursor,
            "counts": dict(self.counts),
            "last_frames": [f.hex() for f in self.frames],
        }

    # -- door_open ---------------------------------------------------------------------------
    async def open_door(self, door: str | int) -> None:
        """Unlock ``door`` (1 to the controller's door count) for its configured delay."""
        text = str(door).strip()
        if not text.isdigit() or not 1 <= int(text) <= self.config.doors:
            raise ValueError(
                f"door {door!r}: controller {self.config.serial} has doors 1-{self.config.doors}"
            )
        ack = await self._ask(wire.open_door(self.config.serial, int(text)))
        if not ack.ok:
            raise DeviceProtocolError(self.device_id, f"controller refused to open door {text}")
        log.info("%s: door %s opened remotely / 远程开门", self.device_id, text)

    # -- run ---------------------------------------------------------------------------------
    async def run(self, link: DeviceLink) -> None:
        hub = self._hub
        if hub is None:
            raise RuntimeError("the wg driver needs its hub (the supervisor builds it)")
        await hub.listening.wait()
        self._cursor = _parse_cursor(link.cursor)
        unregister = hub.register(self.config.serial, self._on_datagram)
        try:
            await self._serve(link)
        finally:
            unregister()
            pending, self._pending = self._pending, None
            if pending is not None and not pending[1].done():
                pending[1].cancel()
            self._summarise(force=True)

    async def _serve(self, link: DeviceLink) -> None:
        cfg = self.config
        ready = offline = False
        missed = 0
        pause_s = cfg.poll_interval_s
        next_clock = 0.0
        while True:
            try:
                if not ready:
                    status = await self._ask(wire.get_status(cfg.serial))
                    next_clock = await self._check_clock(link)
                    await self._set_listener()
                    await self._set_doors()
                    ready, missed, pause_s = True, 0, cfg.poll_interval_s
                    if offline:
                        log.info("%s: controller answers again / 控制器已恢复", self.device_id)
                        offline = False
                    self._report(link)
                    await self._take(link, [status], polled=True)
                    continue
                if time.monotonic() >= next_clock:
                    next_clock = await self._check_clock(link)
                news = await self._next_news(cfg.poll_interval_s)
                if news:
                    await self._take(link, news)
                else:
                    status = await self._ask(wire.get_status(cfg.serial), retries=0)
                    await self._take(link, [status], polled=True)
                missed = 0
                self._report(link)
            except (DeviceTimeout, DeviceUnavailable) as err:
                missed += 1
                if ready and missed < cfg.offline_after:
                    continue
                ready = False
                reason = (
                    f"no answer from controller {cfg.serial} at {cfg.host}:{cfg.port}"
                    if isinstance(err, DeviceTimeout)
                    else err.reason
                )
                if not offline:
                    offline = True
                    log.warning(
                        "%s: %s; retrying with backoff / 控制器无应答，将退避重试",
                        self.device_id,
                        err.reason,
                    )
                else:
                    log.debug("%s: still offline: %s", self.device_id, err.reason)
                link.state("offline", reason)
                await self._pause(pause_s)
                pause_s = min(pause_s * 2, cfg.retry_max_s)
            except NotDurableError as err:
                # Nothing was kept and the cursor did not move: the controller keeps the
                # records, and the next status poll reads them back.
                self._once(
                    "not_durable",
                    logging.WARNING,
                    "%s: records wait on the controller: %s / 记录暂留在控制器中",
                    self.device_id,
                    err,
                )
                link.state("degraded", f"records wait on the controller: {err}")
                self._news.clear()
                await asyncio.sleep(cfg.poll_interval_s)

    def _report(self, link: DeviceLink) -> None:
        """Online, or degraded while the receiving server could not be set."""
        if self._problem is None:
            link.state("online")
        else:
            link.state("degraded", self._problem)

    async def _start_cursor(self, link: DeviceLink, status: wire.Status) -> None:
        """On the very first start, begin ``initial_backlog`` records before the newest and
        commit that start, so a restart before the first record does not move it."""
        if self._cursor is not None:
            return
        start = max(0, status.last_index - self.config.initial_backlog)
        await link.commit([], cursor=str(start))
        self._cursor = start
        log.info(
            "%s: first start: reading from record %d (controller holds up to %d) "
            "/ 首次启动，从第 %d 条记录开始读取",
            self.device_id,
            start + 1,
            status.last_index,
            start + 1,
        )

    # -- records -----------------------------------------------------------------------------
    async def _take(
        self, link: DeviceLink, statuses: Sequence[wire.Status], *, polled: bool = False
    ) -> None:
        """Commit the records the statuses announce: the next index straight from the frame,
        a gap by reading back; an index at or below the cursor is a duplicate."""
        if self._cursor is None:
            await self._start_cursor(link, statuses[-1])
        cursor = self._cursor or 0
        if polled and statuses and statuses[-1].last_index < cursor:
            newest = statuses[-1].last_index
            log.warning(
                "%s: the controller's newest record is %d, below the committed %d: its log "
                "was cleared or the controller replaced; reading from its first record "
                "/ 控制器记录被清空或已更换，从头读取",
                self.device_id,
                newest,
                cursor,
            )
            self._cursor = cursor = 0
        events: list[Event] = []
        last = cursor
        upto = cursor
        for status in statuses:
            index = status.last_index
            if index <= last:
                if index and not polled:
                    self.counts["duplicates"] += 1
                continue
            record = status.record
            if index == last + 1 and upto <= last and record is not None:
                events.append(self._event(record))
                last = index
                if len(events) >= self.config.batch_max:
                    await self._commit(link, events, last)
                    events = []
            else:
                upto = max(upto, index)
        if events:
            await self._commit(link, events, last)
        if upto > (self._cursor or 0):
            await self._catch_up(link, upto)

    async def _catch_up(self, link: DeviceLink, upto: int) -> None:
        """Read records after the cursor up to ``upto`` (0xB0) and commit them in batches."""
        serial = self.config.serial
        while (self._cursor or 0) < upto:
            index = (self._cursor or 0) + 1
            last = index - 1
            events: list[Event] = []
            end = False
            while index <= upto and len(events) < self.config.batch_max:
                reply = await self._ask(wire.read_record(serial, index))
                record = reply.record
                if record is None:
                    end = True  # the controller holds nothing there (yet)
                    break
                if record.kind is wire.RecordType.OVERWRITTEN:
                    first = await self._first_kept()
                    if first is not None and first > index:
                        events.append(self._lost(index, first))
                        last, index = first - 1, first
                        continue
                self.counts["read_back"] += 1
                events.append(self._event(record))
                last, index = index, index + 1
            if events:
                await self._commit(link, events, last)
            if end or not events:
                return

    async def _first_kept(self) -> int | None:
        """The index of the oldest record the controller still holds (a read of index 0)."""
        reply = await self._ask(wire.read_record(self.config.serial, 0))
        return reply.record.index if reply.record is not None else None

    def _lost(self, first_lost: int, first_kept: int) -> Event:
        count = first_kept - first_lost
        log.warning(
            "%s: %d records (%d-%d) were overwritten on the controller before they were read "
            "/ %d 条记录在读取前已被控制器覆盖",
            self.device_id,
            count,
            first_lost,
            first_kept - 1,
            count,
        )
        return Event(
            "device_fault",
            {"fault": "records_overwritten", "first_lost": first_lost, "count": count},
        )

    async def _commit(self, link: DeviceLink, events: list[Event], last: int) -> None:
        await link.commit(events, cursor=str(last))
        self._cursor = last
        self.counts["committed"] += len(events)
        if self.config.store_index:
            try:
                await self._ask(wire.set_record_index(self.config.serial, last), retries=0)
            except DeviceError as err:  # our own cursor is the truth; this is a courtesy
                log.debug("%s: record index not stored on the controller: %s", self.device_id, err)

    def _event(self, record: wire.Record) -> Event:
        etype, data = record_to_event(record, self._readers)
        if is_unknown(etype, data):
            key = (record.type, record.reason)
            if key not in self._unknown_codes and len(self._unknown_codes) < 256:
                self._unknown_codes.add(key)
                log.log(
                    logging.WARNING if data.get("reason") is None else logging.INFO,
                    "%s: record type %d reason %d (%s) has no event type of its own: "
                    "published as digital_input 'unknown' with its codes "
                    "/ 未知记录类型，按原始代码发布",
                    self.device_id,
                    record.type,
                    record.reason,
                    data.get("reason") or "unknown",
                )
        return Event(etype, data, event_ts(record, self.tz))

    # -- clock and receiving server ----------------------------------------------------------
    async def _check_clock(self, link: DeviceLink) -> float:
        """Keep the controller's clock within ``clock_tolerance_s`` of the gateway's;
        returns when to check again (monotonic): soon while the gateway's own clock is not
        synchronised, else after ``clock_check_s``."""
        serial, tol = self.config.serial, self.config.clock_tolerance_s
        later = time.monotonic() + self.config.clock_check_s
        reply = await self._ask(wire.get_time(serial))
        if reply.time is None:
            self._once("no_time", logging.WARNING, "%s: controller has no time", self.device_id)
            return later
        now = self._wall()
        drift = wire.local_to_utc(reply.time, self.tz).timestamp() - now
        synced = (self._clock.synced() if self._clock is not None else True) and (
            now >= PLAUSIBLE_SINCE
        )
        if synced:  # else it is measured against a wrong clock (and checked at every poll)
            link.telemetry({"clock_offset_s": round(drift, 1)}, ts=now)
        if abs(drift) <= tol:
            return later
        if not synced:
            # A Pi without RTC before NTP: copying its clock would break every door's records.
            self._once(
                "clock_unsynced",
                logging.WARNING,
                "%s: controller clock is %+.0f s off, but the gateway's own clock is not "
                "synchronised: left alone until it is / 网关时钟未同步，暂不校正控制器时钟",
                self.device_id,
                drift,
            )
            return time.monotonic() + self.config.poll_interval_s
        target = wire.utc_to_local(datetime.fromtimestamp(round(self._wall()), UTC), self.tz)
        answer = await self._ask(wire.set_time(serial, target))
        after = (
            wire.local_to_utc(answer.time, self.tz).timestamp() - self._wall()
            if answer.time is not None
            else None
        )
        if after is None or abs(after) > tol:
            self._once(
                "clock_stuck",
                logging.WARNING,
                "%s: controller clock is %+.0f s off and could not be set "
                "/ 控制器时钟偏差 %+.0f 秒，无法校正",
                self.device_id,
                drift,
                drift,
            )
            return later
        log.info(
            "%s: controller clock was %+.0f s off the gateway's; set to %s (%s) "
            "/ 控制器时钟偏差 %+.0f 秒，已校正",
            self.device_id,
            drift,
            target.isoformat(sep=" "),
            self.tz,
            drift,
        )
        return later

    async def _set_listener(self) -> None:
        """Point the controller's receiving server at the gateway (when configured)."""
        if self._listener is None or self._hub is None:
            return
        host, port = self._listener
        if port is None:
            bound = self._hub.address
            if bound is None:
                raise DeviceUnavailable(self.device_id, "wg listener is not running")
            port = bound[1]
        ack = await self._ask(wire.set_listener(self.config.serial, host, port))
        if not ack.ok:
            # Not fatal: the status polls still read every record, only later.
            self._problem = f"controller refused the receiving server {host}:{port}"
            self._once(
                "listener refused",
                logging.WARNING,
                "%s: %s / 控制器拒绝设置接收服务器",
                self.device_id,
                self._problem,
            )
            return
        self._problem = None
        self._once(
            f"listener {host}:{port}",
            logging.INFO,
            "%s: controller pushes its events to %s:%d / 已设置接收服务器",
            self.device_id,
            host,
            port,
        )

    async def _set_doors(self) -> None:
        """Give the doors of ``door_control`` their mode and delay (0x82, then 0x80 when
        they differ), and say so once."""
        serial = self.config.serial
        for control in self.config.door_control:
            mode = wire.DoorMode(DOOR_MODES[control.mode])
            now = await self._ask(wire.get_door_control(serial, control.door))
            if (now.mode, now.delay_s) == (mode, control.delay_s):
                continue
            done = await self._ask(
                wire.set_door_control(serial, control.door, mode, control.delay_s)
            )
            if (done.mode, done.delay_s) != (mode, control.delay_s):
                self._once(
                    f"door {control.door} refused",
                    logging.WARNING,
                    "%s: door %d kept mode %d, delay %d s instead of %s, %d s "
                    "/ 控制器未接受门控制设置",
                    self.device_id,
                    control.door,
                    done.mode,
                    done.delay_s,
                    control.mode,
                    control.delay_s,
                )
                continue
            log.info(
                "%s: door %d set to %s, delay %d s (was mode %d, %d s) / 已设置门控制方式与延时",
                self.device_id,
                control.door,
                control.mode,
                control.delay_s,
                now.mode,
                now.delay_s,
            )

    # -- requests and what comes in ----------------------------------------------------------
    async def _ask(self, request: wire.Request[R], *, retries: int | None = None) -> R:
        """Send ``request`` and return its checked answer; one request in flight."""
        hub = self._hub
        if hub is None:
            raise DeviceUnavailable(self.device_id, "wg listener is not running")
        tries = (self.config.retries if retries is None else retries) + 1
        loop = asyncio.get_running_loop()
        async with self._lock:
            for _ in range(tries):
                future: asyncio.Future[R] = loop.create_future()
                self._pending = (request, future)
                try:
                    try:
                        hub.send(request.frame, self._addr)
                    except OSError as err:
                        raise DeviceUnavailable(
                            self.device_id, f"cannot send to {self._addr[0]}: {err}"
                        ) from err
                    self.counts["requests"] += 1
                    try:
                        async with asyncio.timeout(self.config.timeout_s):
                            return await future
                    except TimeoutError:
                        self.counts["timeouts"] += 1
                finally:
                    self._pending = None
        raise DeviceTimeout(
            self.device_id,
            f"no answer from controller {self.config.serial} at {self._addr[0]}:{self._addr[1]}"
            f" to 0x{request.fn:02x} ({tries} x {self.config.timeout_s:g} s)",
        )

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        """A frame carrying our serial (from the hub, in the event loop; never raises)."""
        self.frames.append(data)
        try:
            fn = wire.check_frame(data)
            if fn is wire.Fn.STATUS:
                status = wire.parse_event(data)
        except wire.WireError as err:
            self._malformed(err, data)
            return
        pending = self._pending
        if fn is wire.Fn.STATUS:
            # Pushed or asked for, a status is news of the newest record: the one asking
            # for a status handles it, else it joins the pushes.
            self.counts["statuses"] += 1
            if pending is not None and pending[0].fn is wire.Fn.STATUS and not pending[1].done():
                pending[1].set_result(status)
                return
            self._news.append(status)
            self._news_ready.set()
            return
        if pending is None or pending[1].done():
            self.counts["late_answers"] += 1
            log.debug("%s: answer 0x%02x without a request (late)", self.device_id, fn)
            return
        try:
            answer = pending[0].parse(data)
        except (
            wire.UnexpectedFunctionError,
            wire.SerialMismatchError,
            wire.FieldMismatchError,
        ) as err:
            self.counts["late_answers"] += 1
            log.debug("%s: answer not for the request in flight: %s", self.device_id, err)
            return
        except wire.WireError as err:
            self._malformed(err, data)
            return
        pending[1].set_result(answer)

    async def _next_news(self, wait_s: float) -> list[wire.Status]:
        """The statuses that came in, waiting up to ``wait_s`` for one; [] when none."""
        if not self._news:
            self._news_ready.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._news_ready.wait()
            except TimeoutError:
                return []
        news = list(self._news)
        self._news.clear()
        return news

    async def _pause(self, seconds: float) -> None:
        """Wait, but stop waiting when the controller sends something (it is back)."""
        self._news_ready.clear()
        if self._news:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._news_ready.wait()
        except TimeoutError:
            pass

    # -- logging once ------------------------------------------------------------------------
    def _malformed(self, err: wire.WireError, data: bytes) -> None:
        self.counts["malformed"] += 1
        if self.counts["malformed"] == 1:
            self._summary_at = time.monotonic()
            log.warning(
                "%s: malformed frame from controller %s (%s): %s; last frames: %s; further "
                "ones are counted / 收到无法解析的报文，之后只计数",
                self.device_id,
                self.config.serial,
                err,
                data[:64].hex(),
                [f.hex() for f in list(self.frames)[:-1]],
            )
        else:
            self._quiet["malformed"] += 1
            log.debug("%s: malformed frame: %s", self.device_id, err)
        self._summarise()

    def _once(self, key: str, level: int, msg: str, *args: Any) -> None:
        if key in self._logged:
            log.debug(msg, *args)
            return
        self._logged.add(key)
        log.log(level, msg, *args)

    def _summarise(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._quiet or (not force and now - self._summary_at < SUMMARY_EVERY_S):
            return
        self._summary_at = now
        log.info(
            "%s: %d more malformed frames since the last report / 又收到 %d 条无法解析的报文",
            self.device_id,
            self._quiet["malformed"],
            self._quiet["malformed"],
        )
        self._quiet.clear()


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return max(0, int(cursor))
    except ValueError:
        log.warning("wg: stored cursor %r is not a record index: starting afresh", cursor)
        return None


__all__ = ["WgDriver"]
