"""The Modbus driver: reads a device's profile points over RTU or TCP with pymodbus.

Devices on one bus share one pymodbus client (one TCP connection or one serial
port) kept in :attr:`edge_agent.driver.Bus.resources`; every request holds the
bus lock, so an RS-485 line carries one exchange at a time with the bus's quiet
gap between exchanges. All pymodbus errors are turned into the agent's
:class:`~edge_agent.errors.DeviceError` tree at this edge.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.modbus import codec
from drivers.modbus.config import ModbusDevice
from drivers.modbus.plan import ReadRequest, plan_reads
from drivers.modbus.profile import Point, Profile, load_profile
from edge_agent.config_models import SerialBus, TcpBus
from edge_agent.driver import Bus, DriverContext, MetricInfo, Reading, Value
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
#: pymodbus' own per-request timeout; ours (``timeout_s`` via asyncio.timeout) is shorter
#: and is the one that counts, so pymodbus never decides on its own to drop the line
_CLIENT_TIMEOUT_S = 120.0

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

T = TypeVar("T")


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


class _Line:
    """One shared connection on a bus: the pymodbus client and the devices using it."""

    def __init__(self, settings: LineSettings) -> None:
        self.settings = settings
        self.client: ModbusBaseClient | None = None
        self.users = 0
        self.timeouts = 0
        #: frame buffer of the device that holds the bus right now
        self.sink: collections.deque[Frame] | None = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if self.sink is not None:
            self.sink.append(Frame(datetime.now(UTC).timestamp(), sending, bytes(data)))
        return data

    def _make_client(self) -> ModbusBaseClient:
        s = self.settings
        # reconnect_delay=0: pymodbus must not start its own reconnect task; we reconnect
        # on the next request, under the bus lock and with our timeout
        if s.type == "serial":
            return AsyncModbusSerialClient(
                s.target,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                parity=s.parity,
                stopbits=s.stopbits,
                bytesize=s.bytesize,
                timeout=_CLIENT_TIMEOUT_S,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace,
            )
        return AsyncModbusTcpClient(
            s.target,
            port=s.port,
            framer=FramerType.SOCKET if s.framer == "socket" else FramerType.RTU,
            timeout=_CLIENT_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )

    async def connected_client(self, device_id: str, timeout_s: float) -> ModbusBaseClient:
        """The client, (re)connected if needed. Call with the bus held."""
        if self.client is None:
            self.client = self._make_client()
        if not self.client.connected:
            try:
                async with asyncio.timeout(timeout_s):
                    ok = await self.client.connect()
            except TimeoutError as err:
                self.drop()
                raise DeviceUnavailable(
                    device_id,
                    f"cannot connect to {self.settings.describe()}: timed out",
                ) from err
            except (OSError, ModbusException) as err:
                self.drop()
                raise DeviceUnavailable(
                    device_id,
                    f"cannot open {self.settings.describe()}: {err}",
                ) from err
            if not ok:
                self.drop()
                raise DeviceUnavailable(device_id, f"cannot connect to {self.settings.describe()}")
            log.debug("modbus line %s connected", self.settings.describe())
        return self.client

    def drop(self) -> None:
        """Close the connection; the next request reconnects."""
        if self.client is not None:
            self.client.close()
            self.client = None
        self.timeouts = 0


def device_error(err: ModbusException | OSError, device_id: str, what: str) -> DeviceError:
    """The :class:`DeviceError` for a pymodbus or socket error during one request
    (``what``); the driver and ``edge-agent probe`` report the same way."""
    if isinstance(err, ConnectionException):
        return DeviceUnavailable(device_id, f"{what}: connection lost: {err}")
    if isinstance(err, ModbusIOException):
        if "no response" in str(err).lower():
            return DeviceTimeout(device_id, f"{what}: no answer: {err}")
        return DeviceProtocolError(device_id, f"{what}: {err}")
    if isinstance(err, ModbusException):
        return DeviceProtocolError(device_id, f"{what}: {err}")
    return DeviceUnavailable(device_id, f"{what}: {err}")


class ModbusDriver:
    """A Modbus device read through its profile. Implements ``PollingDriver``."""

    kind: ClassVar[str] = "modbus"
    Config: ClassVar[type[ModbusDevice]] = ModbusDevice

    def __init__(self, config: ModbusDevice, ctx: DriverContext) -> None:
        """Build the driver without I/O; ValueError for a profile or setting that cannot work."""
        self.config = config
        self.profile: Profile = load_profile(config.profile, ctx.profile_dirs)
        unknown = sorted(set(config.scale_overrides) - {p.name for p in self.profile.points})
        if unknown:
            raise ValueError(
                f"scale_overrides: {', '.join(unknown)} not in profile '{config.profile}' "
                f"(points: {', '.join(p.name for p in self.profile.points)})",
            )
        self._points = {p.name: self._effective(p) for p in self.profile.points}
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
        self._frames: collections.deque[Frame] = collections.deque(maxlen=FRAME_HISTORY)

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
        return [str(f) for f in self._frames]

    async def read(self) -> Reading:
        data: dict[str, Value] = {}
        bad: list[str] = []
        out_of_range: list[str] = []
        for request in self._plan:
            block = await self._read_block(request)
            for point in request.points:
                offset = point.address - request.start
                value: Value
                if point.is_bit_fc:
                    value = bool(block[offset])
                else:
                    value = codec.decode(
                        point, [int(w) for w in block[offset : offset + point.count]]
                    )
                data[point.name] = value
                if value is None:
                    bad.append(point.name)
                elif point.range is not None and not isinstance(value, bool):
                    low, high = point.range
                    if not low <= value <= high:
                        out_of_range.append(point.name)
        if bad and len(bad) == len(data):
            quality: Literal["good", "uncertain", "bad"] = "bad"
        elif bad or out_of_range:
            quality = "uncertain"
        else:
            quality = "good"
        return Reading(data=data, quality=quality, out_of_range=out_of_range)

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
            bit = codec.encode_bit(p, value)
            await self._call(what, lambda c: c.write_coil(p.address, bit, device_id=unit))
            return
        registers = codec.encode(p, value)
        if len(registers) == 1:
            await self._call(
                what, lambda c: c.write_register(p.address, registers[0], device_id=unit)
            )
        else:
            await self._call(
                what, lambda c: c.write_registers(p.address, registers, device_id=unit)
            )
        log.info("%s: wrote %s = %r (registers %s)", self.device_id, point, value, registers)

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

    async def _read_block(self, request: ReadRequest) -> list[int] | list[bool]:
        unit, start, count = self.config.unit, request.start, request.count
        calls: dict[int, Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]] = {
            1: lambda c: c.read_coils(start, count=count, device_id=unit),
            2: lambda c: c.read_discrete_inputs(start, count=count, device_id=unit),
            3: lambda c: c.read_holding_registers(start, count=count, device_id=unit),
            4: lambda c: c.read_input_registers(start, count=count, device_id=unit),
        }
        what = f"read {_FC_NAMES[request.fc]} {start}+{count}"
        response = await self._call(what, calls[request.fc])
        if request.fc in (1, 2):
            bits = list(response.bits)
            if len(bits) < count:  # bits arrive padded to whole bytes
                raise DeviceProtocolError(
                    self.device_id,
                    f"{what}: got {len(bits)} bits, expected {count}",
                )
            return bits[:count]
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceProtocolError(
                self.device_id,
                f"{what}: got {len(registers)} registers, expected {count}",
            )
        return registers

    async def _call(
        self,
        what: str,
        request: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        """Run one request with the bus held, the device's timeout and retries."""
        if self._closed:
            raise DeviceUnavailable(self.device_id, "driver is closed")
        attempts, attempt = self.config.retries + 1, 1
        while True:
            try:
                return await self._attempt(what, request)
            except (DeviceTimeout, DeviceUnavailable) as err:
                # exception responses are not retried: the device answered and will again
                if attempt >= attempts:
                    raise
                log.debug(
                    "%s: %s (attempt %d of %d)", self.device_id, err.reason, attempt, attempts
                )
                attempt += 1

    async def _attempt(
        self,
        what: str,
        request: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        line, bus = self._line, self._bus
        timeout_s, device_id = self.config.timeout_s, self.device_id
        if line is None or bus is None:
            raise DeviceUnavailable(
                device_id,
                f"bus '{self.config.bus_id}' is not defined or has no settings",
            )
        async with bus:
            line.sink = self._frames
            try:
                client = await line.connected_client(device_id, timeout_s)
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that arrives as the request completes, and a device
                # task that ignores its cancellation never lets the agent stop.
                async with asyncio.timeout(timeout_s):
                    response = await request(client)
            except TimeoutError as err:
                line.timeouts += 1
                if line.settings.type == "tcp" and line.timeouts >= TCP_TIMEOUTS_BEFORE_RECONNECT:
                    line.drop()
                raise DeviceTimeout(
                    device_id,
                    f"{what}: no answer from unit {self.config.unit} within {timeout_s:g} s",
                ) from err
            except (ModbusException, OSError) as err:
                if isinstance(err, ConnectionException | OSError):
                    line.drop()
                raise device_error(err, device_id, what) from err
            finally:
                line.sink = None
        line.timeouts = 0
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            message = f"{what}: exception {code} {name}"
            if code == 11:
                # a gateway/serial server answers for a device behind it that stayed silent
                raise DeviceTimeout(device_id, message)
            raise DeviceProtocolError(device_id, message)
        return response


__all__ = ["EXCEPTION_NAMES", "Frame", "LineSettings", "ModbusDriver"]
