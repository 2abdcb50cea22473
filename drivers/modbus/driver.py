"""The Modbus driver: reads a device's profile points over RTU or TCP.

Devices on one bus share one connection (one TCP socket or one serial port, opened
with pymodbus' serial transport) kept in :attr:`edge_agent.driver.Bus.resources`;
every request holds the bus lock, so an RS-485 line carries one exchange at a time
with the bus's quiet gap between exchanges. The driver frames requests itself
(:mod:`drivers.modbus.wire`) and takes an answer only when its transaction id, unit,
function code and byte count match the request; anything else becomes the agent's
:class:`~edge_agent.errors.DeviceError` tree at this edge, naming what was wrong.
After a request without an answer, an RTU line is flushed: a late answer is thrown
away, never taken for the answer to the next request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from edge_agent.config.models import SerialBus, TcpBus
from edge_agent.driver import (
    AcrossContext,
    Bus,
    DriverContext,
    MetricInfo,
    Problem,
    Reading,
    Value,
)
from edge_agent.drivers.modbus import codec, wire
from edge_agent.drivers.modbus.config import ModbusDevice, ModbusSettings
from edge_agent.drivers.modbus.plan import ReadRequest, plan_reads, split_request
from edge_agent.drivers.modbus.profile import Point, Profile, load_profile, search_dirs
from edge_agent.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
)

log = logging.getLogger(__name__)

#: key of the shared line in ``Bus.resources``
LINE_KEY = "modbus.line"
#: how many raw frames each device keeps for the first-error report
FRAME_HISTORY = 8
#: consecutive timeouts on a TCP line after which the connection is reopened: a serial
#: server that rebooted leaves a half-open socket that would otherwise never answer again
TCP_TIMEOUTS_BEFORE_RECONNECT = 3

#: Modbus exception codes (Modbus Application Protocol V1.1b3, section 7)
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

_FC_NAMES = {1: "coils", 2: "discrete inputs", 3: "holding registers", 4: "input registers"}


@dataclass(frozen=True, slots=True)
class LineSettings:
    """How to open a line; devices that share a bus must agree on it."""

    type: Literal["tcp", "serial"]
    target: str  # host name, or serial device path
    port: int = 0
    framer: Literal["socket", "rtu"] = "rtu"
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @classmethod
    def from_bus(cls, cfg: SerialBus | TcpBus) -> LineSettings:
        if isinstance(cfg, SerialBus):
            return cls(
                "serial",
                cfg.port,
                baudrate=cfg.baudrate,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                bytesize=cfg.bytesize,
            )
        return cls("tcp", cfg.host, cfg.port, cfg.framer)

    def describe(self) -> str:
        if self.type == "serial":
            return f"{self.target} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"
        framing = "Modbus TCP" if self.framer == "socket" else "RTU over TCP"
        return f"{self.target}:{self.port} ({framing})"


@dataclass(frozen=True, slots=True)
class Frame:
    """One raw frame as it went over the wire."""

    ts: float
    sent: bool
    data: bytes

    def __str__(self) -> str:
        clock = datetime.fromtimestamp(self.ts, UTC).strftime("%H:%M:%S.%f")[:-3]
        return f"{clock}Z {'>>' if self.sent else '<<'} {self.data.hex(' ')}"


#: bytes a socket read may bring at once: a Modbus frame is at most 260 bytes
READ_CHUNK = 4096


class _Link(asyncio.BufferedProtocol):
    """The byte stream of one connection (TCP socket or serial port) into a buffer.

    ``buffer_updated`` and ``data_received`` only append and look: whatever a device sends,
    nothing here raises, so asyncio never logs a ``protocol.data_received()`` traceback for
    a hostile device. A buffered protocol because asyncio's plain one reads every answer
    with ``recv(256 KiB)``: a fresh 256 KiB object each time (mmap, mremap, munmap and a
    page fault per answer, about 10 us), where ``recv_into`` a reused buffer costs nothing.
    The serial transport (pymodbus) calls ``data_received``.

    The exchange waiting for an answer parks one future in :attr:`waiter`; the link
    resolves it once the buffer holds a whole frame (or bytes that are none), the
    connection closes, or the request's timer calls :meth:`expire`. An answer that comes
    in three chunks wakes the waiting task once, not three times.
    """

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.made = asyncio.Event()
        #: RTU frames (the line sets it): how to tell that a frame is whole
        self.rtu = False
        #: the exchange waiting for an answer, if any
        self.waiter: asyncio.Future[None] | None = None
        #: the waiting request's time is up
        self.expired = False
        self._chunk = memoryview(bytearray(READ_CHUNK))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.made.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._chunk

    def buffer_updated(self, nbytes: int) -> None:
        self.buffer += self._chunk[:nbytes]
        self._arrived()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._arrived()

    def _arrived(self) -> None:
        if self.waiter is not None and wire.frame_ready(self.buffer, self.rtu):
            self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.wake()

    def wake(self) -> None:
        """Resolve the waiting exchange's future: it looks at the buffer again."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def expire(self) -> None:
        """The waiting request's time is up (its timer calls this)."""
        self.expired = True
        self.wake()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise ConnectionError("connection is closed")
        self.transport.write(data)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class ExceptionResponse(DeviceProtocolError):
    """The device answered with a Modbus exception; ``code`` is its exception code."""

    def __init__(self, device_id: str, message: str, code: int) -> None:
        super().__init__(device_id, message)
        self.code = code


#: a raw frame as the line keeps it: (time.time(), sent, bytes); formatted only when shown
RawFrame = tuple[float, bool, bytes]


def describe(request: wire.Request) -> str:
    """What a request does, for messages: ``read holding registers 0+4``. Built only for
    an error: the hot path passes ``what=None`` and this describes the request itself."""
    pdu = request.pdu
    fc = pdu[0]
    if fc in _FC_NAMES:
        start = int.from_bytes(pdu[1:3], "big")
        return f"read {_FC_NAMES[fc]} {start}+{int.from_bytes(pdu[3:5], 'big')}"
    return f"request fc {fc} to unit {request.unit}"


class _Line:
    """One shared connection on a bus and the devices using it.

    Frames its own requests (:mod:`drivers.modbus.wire`) and takes an answer only when
    it matches the request: transaction id (Modbus TCP), unit, function code, byte count.
    """

    def __init__(self, settings: LineSettings) -> None:
        self.settings = settings
        self.link: _Link | None = None
        self.users = 0
        self.timeouts = 0
        #: raw frames of the device that holds the bus right now (``RawFrame``)
        self.sink: collections.deque[RawFrame] | None = None
        self._tid = 0
        #: Modbus TCP: transaction ids of the last requests; a late (or repeated) answer
        #: to one of them is dropped, never taken for a later request
        self._stale: collections.deque[int] = collections.deque(maxlen=16)
        #: RTU: until when (loop time) whatever arrives is a late answer to throw away
        self._flush_until = 0.0
        #: RTU frames (serial, or a serial server in transparent mode) carry no
        #: transaction id: a late answer looks like the answer to the next request.
        #: (An attribute, not a property: every request asks several times.)
        self.rtu = settings.type == "serial" or settings.framer == "rtu"
        self._loop: asyncio.AbstractEventLoop | None = None

    def _trace(self, sending: bool, data: bytes | bytearray) -> None:
        if self.sink is not None and data:
            self.sink.append((time.time(), sending, bytes(data)))

    async def _open(self) -> _Link:
        s = self.settings
        loop = asyncio.get_running_loop()
        if s.type == "serial":
            # Imported here: pymodbus (40 modules, ~1.4 MiB) serves only serial lines; an
            # agent whose devices are all on Modbus TCP never loads it.
            from pymodbus.transport.serialtransport import create_serial_connection

            _, protocol = await create_serial_connection(
                loop,
                _Link,
                s.target,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=0,
            )
            assert isinstance(protocol, _Link)
            await protocol.made.wait()  # the transport calls connection_made soon
            return protocol
        _, link = await loop.create_connection(_Link, s.target, s.port)
        return link

    async def connect(self, device_id: str, timeout_s: float) -> _Link:
        """The connection, (re)opened if needed. Call with the bus held."""
        if self.link is not None and not self.link.closed:
            return self.link
        self.drop()
        verb = "open" if self.settings.type == "serial" else "connect to"
        try:
            async with asyncio.timeout(timeout_s):
                link = await self._open()
        except TimeoutError as err:
            raise DeviceUnavailable(
                device_id, f"cannot {verb} {self.settings.describe()}: timed out"
            ) from err
        except (OSError, ValueError) as err:  # SerialException is an OSError
            raise DeviceUnavailable(
                device_id, f"cannot {verb} {self.settings.describe()}: {err}"
            ) from err
        link.rtu = self.rtu
        self.link = link
        # the loop of the connection: exchanges need its clock and timers, and asking
        # asyncio for the running loop costs a getpid() system call each time
        self._loop = asyncio.get_running_loop()
        log.debug("modbus line %s connected", self.settings.describe())
        return link

    def drop(self) -> None:
        """Close the connection; the next request reconnects."""
        if self.link is not None:
            self.link.close()
            self.link = None
        self.timeouts = 0
        self._stale.clear()

    def _next_tid(self) -> int:
        # never 0: a device that answers transaction id 0 does not echo ours
        self._tid = self._tid % 0xFFFF + 1
        return self._tid

    async def exchange(
        self, device_id: str, request: wire.Request, what: str | None, timeout_s: float
    ) -> bytes:
        """Send ``request`` and return its checked answer PDU. Call with the bus held.

        ``what`` names the request in messages (None: :func:`describe` it). Raises
        DeviceTimeout (no answer), DeviceProtocolError (an answer that is not the answer
        to this request, saying why), ExceptionResponse, DeviceUnavailable.
        """
        link = self.link
        if link is None or link.closed:
            link = await self.connect(device_id, timeout_s)
        loop = self._loop
        assert loop is not None  # set with the link
        if self.rtu:
            wait = self._flush_until - loop.time()
            if wait > 0:  # a late answer may still be on its way: let it arrive unread
                await asyncio.sleep(wait)
            # on a half-duplex line everything before our request is a late answer
            self._trace(False, link.buffer)
            link.buffer.clear()
            tid = 0
            frame = wire.rtu_frame(request)
        else:
            tid = self._next_tid()
            frame = wire.mbap_frame(tid, request)
        done = False
        timer: asyncio.TimerHandle | None = None
        try:
            try:
                link.write(frame)
            except (OSError, RuntimeError) as err:
                self.drop()
                what = what or describe(request)
                raise DeviceUnavailable(device_id, f"{what}: cannot send: {err}") from err
            self._trace(True, frame)
            # One timer and one future per request, no asyncio.timeout: the timer only
            # marks the link expired and wakes this task, it never cancels it. A stop
            # (task.cancel()) raises CancelledError at the await below, also when the
            # answer came in the same loop pass (asyncio then throws it in when the task
            # resumes): it is never swallowed (3.11's wait_for could swallow it, and a
            # device task that ignores its cancellation never lets the agent stop).
            link.expired = False
            timer = loop.call_at(loop.time() + timeout_s, link.expire)
            while True:
                if link.buffer:
                    try:
                        pdu = self._take(link, request, tid, device_id, what)
                    except (ExceptionResponse, DeviceTimeout):
                        done = True  # a whole exception answer: nothing late to wait for
                        raise
                    if pdu is not None:
                        break
                if link.closed:
                    raise self._closed(link, request, device_id, what)
                if link.expired:
                    raise self._timed_out(link, request, device_id, what, timeout_s) from (
                        TimeoutError(f"no answer within {timeout_s:g} s")
                    )
                waiter = link.waiter = loop.create_future()
                await waiter
            done = True
        finally:
            if timer is not None:
                timer.cancel()
                link.waiter = None
            if not self.rtu:
                self._stale.append(tid)
            elif not done:
                # no answer taken (timeout, error, cancellation): it may still come
                self._flush_until = loop.time() + timeout_s
        self.timeouts = 0
        return pdu

    def _timed_out(
        self,
        link: _Link,
        request: wire.Request,
        device_id: str,
        what: str | None,
        timeout_s: float,
    ) -> DeviceError:
        what = what or describe(request)
        partial = bytes(link.buffer)
        self._trace(False, partial)
        link.buffer.clear()
        if partial:
            if not self.rtu:
                self.drop()  # the stream is out of step
            return DeviceProtocolError(
                device_id,
                f"{what}: incomplete answer within {timeout_s:g} s: {partial.hex(' ')}",
            )
        self.timeouts += 1
        if not self.rtu and self.timeouts >= TCP_TIMEOUTS_BEFORE_RECONNECT:
            self.drop()
        return DeviceTimeout(
            device_id,
            f"{what}: no answer from unit {request.unit} within {timeout_s:g} s",
        )

    def _closed(
        self, link: _Link, request: wire.Request, device_id: str, what: str | None
    ) -> DeviceError:
        what = what or describe(request)
        got = bytes(link.buffer)
        self._trace(False, got)
        self.drop()
        if got:
            return DeviceUnavailable(
                device_id,
                f"{what}: connection closed in the middle of an answer "
                f"({len(got)} bytes: {got.hex(' ')})",
            )
        return DeviceUnavailable(device_id, f"{what}: connection closed without an answer")

    def _take(
        self, link: _Link, request: wire.Request, tid: int, device_id: str, what: str | None
    ) -> bytes | None:
        """The checked answer PDU if the buffer holds it, None to wait for more bytes.

        Takes whole frames off the buffer: a late answer to an earlier request (Modbus
        TCP) is dropped and the next frame looked at; garbage, an answer that is not this
        request's, or an exception answer raises.
        """
        buf = link.buffer
        while True:
            try:
                length = wire.frame_length(buf, self.rtu)
            except wire.GarbageError as err:
                self._trace(False, buf)
                buf.clear()
                if not self.rtu:
                    self.drop()  # no way to find the next frame in the stream
                raise DeviceProtocolError(device_id, f"{what or describe(request)}: {err}") from err
            if length is None or len(buf) < length:
                return None
            if len(buf) == length:  # the usual case: the buffer is the answer
                frame = bytes(buf)
                buf.clear()
            else:
                frame = bytes(buf[:length])
                del buf[:length]
            self._trace(False, frame)
            try:
                if self.rtu:
                    return wire.rtu_answer(frame, request)
                if int.from_bytes(frame[:2], "big") in self._stale:
                    # the late answer of an earlier request (or a repeated one)
                    log.debug("%s: dropped a late answer %s", device_id, frame.hex(" "))
                    if not buf:
                        return None
                    continue
                return wire.mbap_answer(frame, tid, request)
            except wire.ExceptionAnswer as err:
                name = EXCEPTION_NAMES.get(err.code, "unknown exception")
                message = f"{what or describe(request)}: exception {err.code} {name}"
                if err.code == 11:
                    # a gateway/serial server answers for a device behind it that stayed silent
                    raise DeviceTimeout(device_id, message) from err
                raise ExceptionResponse(device_id, message, err.code) from err
            except wire.AnswerError as err:
                raise DeviceProtocolError(device_id, f"{what or describe(request)}: {err}") from err


def _bit(block: Sequence[int], at: int) -> bool:
    """A coil or discrete input (fc 1/2) of a block."""
    return bool(block[at])


class ModbusDriver:
    """A Modbus device read through its profile. Implements ``PollingDriver``."""

    kind: ClassVar[str] = "modbus"
    Config: ClassVar[type[ModbusDevice]] = ModbusDevice
    Settings: ClassVar[type[ModbusSettings]] = ModbusSettings

    @classmethod
    def check_across(
        cls, devices: Sequence[tuple[int, ModbusDevice]], ctx: AcrossContext
    ) -> list[Problem]:
        """A device's ``bus:`` names a bus in ``buses:``; one unit id per line (a bus, or
        a TCP endpoint reached with ``host:``): two devices on one unit id would answer
        each other's requests."""
        problems: list[Problem] = []
        units: dict[tuple[str, int], str] = {}
        for i, dev in devices:
            if dev.bus is not None and dev.bus not in ctx.bus_ids:
                known = ", ".join(sorted(ctx.bus_ids)) or "none defined"
                problems.append(
                    (("devices", i, "bus"), f"unknown bus {dev.bus!r} (buses: {known})")
                )
            line = dev.bus if dev.bus is not None else f"tcp:{dev.host}:{dev.port}"
            if dev.enabled:
                if (line, dev.unit) in units:
                    problems.append(
                        (
                            ("devices", i, "unit"),
                            f"unit {dev.unit} on {line} is already used by "
                            f"{units[(line, dev.unit)]!r}",
                        )
                    )
                else:
                    units[(line, dev.unit)] = dev.id
        return problems

    def __init__(self, config: ModbusDevice, ctx: DriverContext) -> None:
        """Build the driver without I/O; ValueError for a profile or setting that cannot work."""
        self.config = config
        kind = ctx.settings if isinstance(ctx.settings, ModbusSettings) else ModbusSettings()
        dirs = search_dirs(kind.profile_dirs, ctx.config_dir)
        self.profile: Profile = load_profile(config.profile, dirs)
        unknown = sorted(set(config.scale_overrides) - {p.name for p in self.profile.points})
        if unknown:
            raise ValueError(
                f"scale_overrides: {', '.join(unknown)} not in profile '{config.profile}' "
                f"(points: {', '.join(p.name for p in self.profile.points)})",
            )
        self._points = {p.name: self._effective(p) for p in self.profile.points}
        #: each point's decoder, worked out once: (block, where the point starts) -> value
        self._decoders: dict[str, codec.Decoder] = {
            name: _bit if p.is_bit_fc else codec.decoder(p) for name, p in self._points.items()
        }
        self._plan = plan_reads(
            [p for p in self._points.values() if p.report],
            max_registers=config.max_registers,
            max_gap=config.max_gap,
        )
        if config.timeout_s * (config.retries + 1) >= self.interval_s:
            raise ValueError(
                f"timeout_s * (retries + 1) must be less than the poll interval "
                f"{self.interval_s:g} s (the profile's default_interval_s)",
            )
        self._bus = ctx.buses.get(config.bus_id)
        if self._bus is None and config.host is not None:
            # the core creates implicit TCP endpoints too; make one if it did not
            self._bus = ctx.buses[config.bus_id] = Bus(config.bus_id)
        # a bus that is missing or lacks settings (``check-config`` builds drivers without
        # buses) fails at the first request with DeviceUnavailable, not here
        self._line: _Line | None = None
        if self._bus is not None and (settings := self._settings(config, self._bus)):
            line = self._bus.resources.get(LINE_KEY)
            if line is None:
                line = self._bus.resources[LINE_KEY] = _Line(settings)
            elif not isinstance(line, _Line) or line.settings != settings:
                other = line.settings.describe() if isinstance(line, _Line) else repr(line)
                raise ValueError(
                    f"bus {self._bus.id} is already used with other settings ({other})",
                )
            line.users += 1
            self._line = line
        self._closed = False
        self._frames: collections.deque[RawFrame] = collections.deque(maxlen=FRAME_HISTORY)

    # -- construction helpers ---------------------------------------------------------

    def _effective(self, point: Point) -> Point:
        """The point with this device's scale override (its range scales along)."""
        scale = self.config.scale_overrides.get(point.name)
        if scale is None:
            return point
        ratio = scale / point.scale
        rng = point.range
        if rng is not None:
            low, high = sorted(
                (
                    (rng[0] - point.offset) * ratio + point.offset,
                    (rng[1] - point.offset) * ratio + point.offset,
                )
            )
            rng = (low, high)
        return point.model_copy(update={"scale": scale, "range": rng})

    @staticmethod
    def _settings(config: ModbusDevice, bus: Bus) -> LineSettings | None:
        if config.host is not None:
            return LineSettings("tcp", config.host, config.port, config.framer)
        cfg = bus.resources.get("config")  # the core keeps the bus' SerialBus/TcpBus there
        return LineSettings.from_bus(cfg) if isinstance(cfg, SerialBus | TcpBus) else None

    # -- PollingDriver ------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.config.id

    @property
    def line_id(self) -> str:
        """``SharesLine``: the devices of one bus (or one ``host:port``) share a poll tick."""
        return self.config.bus_id

    @property
    def interval_s(self) -> float:
        """Seconds between polls: the config's ``interval_s``, else the profile's default."""
        return self.config.interval_s or self.profile.default_interval_s

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo(p.name, p.unit, p.description, writable=p.writable, range=p.range)
            for p in self._points.values()
            if p.report
        ]

    def meta(self) -> dict[str, Any]:
        settings = [
            {
                "name": p.name,
                "unit": p.unit,
                "description": p.description,
                "range": list(p.range) if p.range else None,
            }
            for p in self._points.values()
            if p.writable and not p.report
        ]
        return {
            "protocol": "modbus",
            "model": self.profile.model,
            "vendor": self.profile.vendor,
            "description": self.profile.description,
            "profile": self.config.profile,
            "unit": self.config.unit,
            "bus": self.config.bus_id,
            "default_interval_s": self.profile.default_interval_s,
            "settings": settings,
        }

    def last_frames(self) -> list[str]:
        """The last raw frames of this device, oldest first: ``'08:00:01.123Z >> 01 03 ..'``."""
        return [str(Frame(*f)) for f in self._frames]

    async def read(self) -> Reading:
        """Read every block of the plan; a block that fails leaves only its own points out.

        A coalesced block the device refuses with exception 2 or 3 (a reserved register
        inside it) is split, down to single points if need be, and the plan that works is
        kept for the next polls. Raises the first DeviceError only when nothing was read.
        """
        data: dict[str, Value] = {}
        bad: list[str] = []
        out_of_range: list[str] = []
        missing: dict[str, str] = {}
        plan: list[ReadRequest] = []
        refused: list[str] = []
        first_error: DeviceError | None = None
        stop: DeviceError | None = None  # the line is down or the device went silent
        timed_out = False
        for request in self._plan:
            if stop is not None:
                plan.append(request)
                missing.update((p.name, stop.reason) for p in request.points)
                continue
            try:
                parts = await self._read_parts(request, refused)
            except DeviceError as err:
                plan.append(request)
                missing.update((p.name, err.reason) for p in request.points)
                first_error = first_error or err
                silent = isinstance(err, DeviceTimeout) and (timed_out or not data)
                if isinstance(err, DeviceUnavailable) or silent:
                    stop = err
                timed_out = timed_out or isinstance(err, DeviceTimeout)
                continue
            for part, block in parts:
                plan.append(part)
                if isinstance(block, DeviceError):
                    missing.update((p.name, block.reason) for p in part.points)
                    first_error = first_error or block
                    continue
                decoders, start = self._decoders, part.start
                for point in part.points:
                    value = decoders[point.name](block, point.address - start)
                    data[point.name] = value
                    if value is None:
                        bad.append(point.name)
                    elif point.range is not None and not isinstance(value, bool):
                        low, high = point.range
                        if not low <= value <= high:
                            out_of_range.append(point.name)
        if refused:
            self._plan = plan
            shown = [f"{_FC_NAMES[r.fc]} {r.start}+{r.count}" for r in plan[:12]]
            log.warning(
                "%s: the device refused %s; reading them in %d requests from now on: %s / "
                "设备拒绝合并读取，已自动拆分为较小的请求",
                self.device_id,
                "; ".join(refused),
                len(plan),
                ", ".join(shown) + (", …" if len(plan) > len(shown) else ""),
            )
        if not data:
            assert first_error is not None  # a plan is never empty: a profile has points
            raise first_error
        if bad and len(bad) == len(data):
            quality: Literal["good", "uncertain", "bad"] = "bad"
        elif bad or out_of_range:
            quality = "uncertain"
        else:
            quality = "good"
        return Reading(data=data, quality=quality, out_of_range=out_of_range, missing=missing)

    async def _read_parts(
        self, request: ReadRequest, refused: list[str]
    ) -> list[tuple[ReadRequest, list[int] | list[bool] | DeviceError]]:
        """Read ``request``, split in halves while the device refuses it (exception 2/3).

        Returns each part read with its values, or with the exception response of a
        single point the device refuses; any other DeviceError is raised.
        """
        fc, count = request.fc, request.count
        try:
            # what=None: the message names the request only if there is one to write
            pdu = await self._call(
                None, wire.read_request(self.config.unit, fc, request.start, count)
            )
        except ExceptionResponse as err:
            halves = split_request(request)
            if err.code not in (2, 3) or not halves:
                return [(request, err)]
            if len(refused) < 5:  # the log line names a few, not a hundred
                refused.append(err.reason)
        else:
            return [(request, wire.bits(pdu, count) if fc in (1, 2) else wire.registers(pdu))]
        parts: list[tuple[ReadRequest, list[int] | list[bool] | DeviceError]] = []
        for half in halves:
            parts += await self._read_parts(half, refused)
        return parts

    async def write(self, point: str, value: float | int | bool) -> None:
        p = self._points.get(point)
        if p is None:
            writable = ", ".join(n for n, q in self._points.items() if q.writable) or "none"
            raise ValueError(
                f"{self.device_id}: no point '{point}' in profile '{self.config.profile}' "
                f"(writable: {writable})",
            )
        if not p.writable:
            raise ValueError(f"{self.device_id}: point '{point}' is read-only / 该点只读")
        unit = self.config.unit
        what = f"write {point}={value!r}"
        if p.fc == 1:
            await self._call(what, wire.write_coil(unit, p.address, codec.encode_bit(p, value)))
            return
        registers = codec.encode(p, value)
        if len(registers) == 1:
            await self._call(what, wire.write_register(unit, p.address, registers[0]))
        else:
            await self._call(what, wire.write_registers(unit, p.address, registers))
        log.info("%s: wrote %s = %r (registers %s)", self.device_id, point, value, registers)

    def switch_points(self) -> list[str]:
        """Writable coils (fc 1): the on/off outputs a siren may drive (``Switchable``)."""
        return [n for n, p in self._points.items() if p.writable and p.fc == 1]

    async def read_switch(self, point: str) -> bool:
        """Read one coil back from the device (fc 1), to verify a siren's write."""
        p = self._points.get(point)
        if p is None or p.fc != 1:
            raise ValueError(
                f"{self.device_id}: '{point}' is not a coil of '{self.config.profile}'"
            )
        pdu = await self._call(
            f"read coil {point}", wire.read_request(self.config.unit, 1, p.address, 1)
        )
        return bool(wire.bits(pdu, 1)[0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        line, bus = self._line, self._bus
        if line is None or bus is None:
            return
        line.users -= 1
        if line.users <= 0:
            line.drop()
            if bus.resources.get(LINE_KEY) is line:
                del bus.resources[LINE_KEY]

    # -- requests -------------------------------------------------------------------------

    async def _call(self, what: str | None, request: wire.Request) -> bytes:
        """Run one request with the bus held, the device's timeout and retries."""
        if self._closed:
            raise DeviceUnavailable(self.device_id, "driver is closed")
        line, bus = self._line, self._bus
        attempts, attempt = self.config.retries + 1, 1
        while True:
            try:
                if line is None or bus is None:
                    raise DeviceUnavailable(
                        self.device_id,
                        f"bus '{self.config.bus_id}' is not defined or has no settings",
                    )
                # One coroutine less per request than an _attempt() of its own.
                async with bus:
                    line.sink = self._frames
                    try:
                        return await line.exchange(
                            self.device_id, request, what, self.config.timeout_s
                        )
                    finally:
                        line.sink = None
            except ExceptionResponse:
                raise  # not retried: the device answered and will again
            except DeviceError as err:
                if attempt >= attempts:
                    raise
                log.debug(
                    "%s: %s (attempt %d of %d)", self.device_id, err.reason, attempt, attempts
                )
                attempt += 1


__all__ = ["EXCEPTION_NAMES", "ExceptionResponse", "Frame", "LineSettings", "ModbusDriver"]
