"""Simulated Modbus devices on pymodbus servers (the simulator API of pymodbus 3.16).

Each device is a :class:`pymodbus.simulator.SimDevice` with four separate blocks (coils,
discrete inputs, holding registers, input registers), so FC03 and FC04 address different
spaces as on real meters (the Eastron SDM630 keeps its measurements at input register 0 while
the classroom sensors use holding register 0). Registers are filled from the simulated world
in the SimDevice ``action`` callback, i.e. only when a client reads: an idle campus costs no
CPU. Faults are applied in the same callback (``exception``, ``slow``) and in the server's
``trace_packet`` hook, which sees the finished frame (``no_answer``, ``garbled``).

Two traits of a Modbus TCP gateway in front of an RS-485 line, both off by default: a
:class:`RequestGate` makes a server answer one request at a time, each after a fixed delay
(the serial exchange behind the gateway), and ``reserved`` registers of a device answer
exception 2 (illegal data address) to any read that spans them, so a client's coalesced read
across them fails and only smaller reads work (set per model by the caller: no shipped
profile says its device does this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .faults import Fault, FaultBoard
from .profiles import Point, Profile
from .registers import EncodeError, clamp_to_range, decode, encode, quantize
from .timetable import SimClock

log = logging.getLogger(__name__)

#: Unused registers between two points are readable (as 0) when the gap is at most this long,
#: so that a client may read a whole map in one request, as the real devices allow; longer
#: gaps answer "illegal data address" like unmapped space does.
GAP_FILL = 32

#: Units the world models use, and factors to the units a profile may ask for.
CANONICAL_UNITS = {
    "power_total": "W",
    "energy_total": "kWh",
    "energy_import": "kWh",
}
_UNIT_FACTORS = {
    ("W", "kW"): 1e-3,
    ("W", "W"): 1.0,
    ("kWh", "Wh"): 1e3,
    ("kWh", "MWh"): 1e-3,
    ("kWh", "kWh"): 1.0,
}

_BLOCK_OF_FC = {1: 0, 5: 0, 15: 0, 2: 1, 3: 2, 6: 2, 16: 2, 22: 2, 23: 2, 4: 3}
_FC_BLOCK = {1: 0, 2: 1, 3: 2, 4: 3}

ValueSource = Callable[[float], Mapping[str, float]]


class RequestGate:
    """One request at a time, each held ``delay_s`` seconds: the RS-485 line behind a gateway.

    ``served`` counts the requests that went through, ``max_busy`` the most that were ever in
    service at once (1 while the gate works: the tests check it).
    """

    def __init__(self, delay_s: float) -> None:
        if not (delay_s >= 0 and delay_s < float("inf")):
            raise ValueError("request delay must be >= 0 s")
        self.delay_s = delay_s
        self.served = 0
        self.max_busy = 0
        self._busy = 0
        self._lock = asyncio.Lock()

    async def pass_through(self, wait: Callable[[float], Awaitable[None]]) -> None:
        """Wait for the line, then hold it for ``delay_s`` (with ``wait``, which may end early)."""
        async with self._lock:
            self._busy += 1
            self.max_busy = max(self.max_busy, self._busy)
            try:
                await wait(self.delay_s)
            finally:
                self._busy -= 1
                self.served += 1


@dataclass(frozen=True)
class DeviceInfo:
    """Where a simulated device is reachable and what it is."""

    id: str
    profile: str
    unit: int
    location: Mapping[str, Any]


class SimulatedDevice:
    """One device: a profile, a source of engineering values, its faults and writes."""

    def __init__(
        self,
        info: DeviceInfo,
        profile: Profile,
        source: ValueSource,
        clock: SimClock,
        faults: FaultBoard,
        stopping: asyncio.Event | None = None,
        *,
        reserved: Iterable[int] = (),
        gate: RequestGate | None = None,
    ) -> None:
        self.info = info
        self.profile = profile
        self.source = source
        self.clock = clock
        self.faults = faults
        self.stopping = stopping
        #: Register addresses (fc 3 and 4) that refuse a read spanning them with exception 2.
        self.reserved = frozenset(reserved)
        used = {a for p in profile.points if p.fc in (3, 4) for a in p.addresses}
        clash = sorted(self.reserved & used)
        if clash:
            raise ValueError(
                f"{info.id}: reserved registers {clash} hold points of {profile.model}"
            )
        #: The server's gate (one request at a time, with a delay), shared by its devices.
        self.gate = gate
        #: Values written by clients to writable points (engineering units).
        self.written: dict[str, float] = {}
        self._blocks: tuple[list[Point], ...] = ([], [], [], [])
        for point in profile.points:
            self._blocks[_FC_BLOCK[point.fc]].append(point)

    @property
    def id(self) -> str:
        """Device id, e.g. ``b1-r101-air``."""
        return self.info.id

    # --- values -----------------------------------------------------------------------------
    def _model_value(self, point: Point, values: Mapping[str, float]) -> float:
        if point.name in self.written:
            return self.written[point.name]
        if point.name == "modbus_address":
            return float(self.info.unit)
        if point.name in values:
            value = values[point.name]
            have = CANONICAL_UNITS.get(point.name)
            if have is not None and point.unit:
                value *= _UNIT_FACTORS.get((have, point.unit), 1.0)
            return value
        if point.range is not None:  # a point the world does not model: a quiet constant
            return point.range[0] if point.is_bit else sum(point.range) / 2
        return 0.0

    def out_of_range(self, fault: Fault) -> tuple[Point, float]:
        """The point and value an ``out_of_range`` fault shows; ``ValueError`` if impossible."""
        candidates = [p for p in self.profile.points if p.range is not None and not p.is_bit]
        if fault.metric is not None:
            try:
                candidates = [self.profile.point(fault.metric)]
            except KeyError as err:
                raise ValueError(f"{self.id}: no metric {fault.metric!r}") from err
        for point in candidates:
            if point.range is None:
                raise ValueError(f"{self.id}: {point.name} has no range to leave")
            low, high = point.range
            span = max(high - low, abs(point.scale))
            tries = (
                [fault.value] if fault.value is not None else [high + span / 10, low - span / 10]
            )
            for value in tries:
                assert value is not None
                try:
                    shown = quantize(point, value)
                except EncodeError:
                    continue
                if not low <= shown <= high:
                    return point, shown
        raise ValueError(f"{self.id}: no metric can show an out-of-range value for {fault}")

    def current_fault(self) -> Fault | None:
        """The fault this device shows now."""
        return self.faults.active(self.id, self.clock.elapsed_real_s())

    def wire_values(self, t: float, fault: Fault | None = None) -> dict[str, float]:
        """What a correct client decodes from each point at simulated time ``t``."""
        values = self.source(t)
        result = {
            p.name: clamp_to_range(p, self._model_value(p, values)) for p in self.profile.points
        }
        if fault is not None and fault.kind == "out_of_range":
            point, shown = self.out_of_range(fault)
            result[point.name] = shown
        return result

    def truth(self) -> dict[str, float]:
        """:meth:`wire_values` now, with the current fault."""
        return self.wire_values(self.clock.now_s(), self.current_fault())

    # --- pymodbus glue ----------------------------------------------------------------------
    def sim_device(self) -> SimDevice:
        """The pymodbus SimDevice for this device."""
        blocks = (
            _bit_block(self._blocks[0]),
            _bit_block(self._blocks[1]),
            _register_block(self._blocks[2]),
            _register_block(self._blocks[3]),
        )
        return SimDevice(id=self.info.unit, simdata=blocks, action=self._action)

    async def _action(
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.gate is not None:
            await self.gate.pass_through(self._delay)
        fault = self.current_fault()
        if fault is not None:
            if fault.kind == "exception":
                return ExcCodes(fault.code)
            if fault.kind == "slow":
                await self._delay(fault.delay_s)
        block = _BLOCK_OF_FC.get(func_code)
        if block is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            return self._write(block, address, list(set_values))
        if (
            block >= 2
            and self.reserved
            and not self.reserved.isdisjoint(range(address, address + count))
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        values = self.wire_values(self.clock.now_s(), fault)
        if block >= 2:
            _fill_registers(self._blocks[block], values, start_address, registers)
        else:
            _fill_bits(self._blocks[block], values, start_address, registers)
        return None

    def _write(self, block: int, address: int, new: list[int]) -> ExcCodes | None:
        end = address + len(new)
        pending: dict[str, float] = {}
        for point in self._blocks[block]:
            if point.address >= end or point.address + point.count <= address:
                continue
            if not point.writable or point.address < address or point.address + point.count > end:
                return ExcCodes.ILLEGAL_ADDRESS
            offset = point.address - address
            words = [int(w) for w in new[offset : offset + point.count]]
            value = decode(point, words)
            if point.range is not None and not point.range[0] <= value <= point.range[1]:
                return ExcCodes.ILLEGAL_VALUE
            pending[point.name] = value
        self.written.update(pending)
        log.debug("%s: written %s", self.id, pending)
        return None

    async def _delay(self, seconds: float) -> None:
        if self.stopping is None:
            await asyncio.sleep(seconds)
            return
        # Returns early when the campus shuts down, so no request task outlives it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)


def _spans(addresses: set[int], writable: set[int]) -> list[tuple[int, int, bool]]:
    """Runs ``(start, count, readonly)`` over used addresses plus short gaps."""
    filled: list[int] = []
    for addr in sorted(addresses):
        if filled and 1 < addr - filled[-1] <= GAP_FILL + 1:
            filled.extend(range(filled[-1] + 1, addr))
        filled.append(addr)
    runs: list[tuple[int, int, bool]] = []
    for addr in filled:
        readonly = addr not in writable
        if runs and runs[-1][0] + runs[-1][1] == addr and runs[-1][2] == readonly:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, readonly)
        else:
            runs.append((addr, 1, readonly))
    return runs


def _register_block(points: Sequence[Point]) -> list[SimData]:
    if not points:
        # pymodbus needs a non-empty block: one invalid register at the top of the map.
        return [SimData(address=0xFFFF, datatype=DataType.INVALID)]
    used = {a for p in points for a in p.addresses}
    writable = {a for p in points if p.writable for a in p.addresses}
    return [
        SimData(address=start, values=[0] * count, datatype=DataType.REGISTERS, readonly=ro)
        for start, count, ro in _spans(used, writable)
    ]


def _bit_block(points: Sequence[Point]) -> list[SimData]:
    if not points:
        return [SimData(address=0xFFF0, values=[False] * 16, datatype=DataType.BITS)]
    used = {p.address for p in points}
    return [
        SimData(address=start, values=[False] * count, datatype=DataType.BITS)
        for start, count, _ in _spans(used, set())
    ]


def _fill_registers(
    points: Sequence[Point], values: Mapping[str, float], start: int, registers: list[int]
) -> None:
    for point in points:
        offset = point.address - start
        words = encode(point, values[point.name])
        if point.is_bit:
            mask = 1 << (point.bit or 0)
            registers[offset] = (registers[offset] & ~mask) | words[0]
        else:
            registers[offset : offset + point.count] = words


def _fill_bits(
    points: Sequence[Point], values: Mapping[str, float], start: int, registers: list[int]
) -> None:
    # Bit blocks are packed 16 to a register; ``start`` counts registers.
    for point in points:
        index, bit = divmod(point.address, 16)
        index -= start
        if encode(point, values[point.name])[0]:
            registers[index] |= 1 << bit
        else:
            registers[index] &= ~(1 << bit)


def garble(frame: bytes, framer: str) -> bytes:
    """Corrupt a reply the way a noisy line or a broken gateway does.

    RTU: the CRC no longer matches. Socket: reads get a byte count two larger than the data,
    other replies an MBAP length two larger than the frame (the client waits, then times out).
    """
    data = bytearray(frame)
    if framer == "rtu":
        data[-1] ^= 0xA5
        return bytes(data)
    if len(data) > 8 and data[7] in (1, 2, 3, 4):
        data[8] = (data[8] + 2) & 0xFF
        return bytes(data)
    length = (int.from_bytes(data[4:6], "big") + 2) & 0xFFFF
    data[4:6] = length.to_bytes(2, "big")
    return bytes(data)


async def _no_such_unit(*_args: Any) -> ExcCodes:
    # Modbus TCP gateways answer 0x0B for a unit that is not on their line.
    return ExcCodes.GATEWAY_NO_RESPONSE


class BusServer:
    """One Modbus TCP listener with several units, like a serial line behind a gateway.

    With ``framer="rtu"`` the frames on the TCP stream are RTU frames (RTU over TCP, as cheap
    serial servers do); a unit that is not on the line then stays silent, as on RS-485.
    """

    def __init__(
        self,
        name: str,
        devices: Sequence[SimulatedDevice],
        *,
        host: str,
        port: int,
        framer: str,
    ) -> None:
        if framer not in ("socket", "rtu"):
            raise ValueError("framer must be 'socket' or 'rtu'")
        self.name = name
        self.devices = {d.info.unit: d for d in devices}
        if len(self.devices) != len(devices):
            raise ValueError(f"{name}: duplicate unit ids")
        self.host = host
        self.port = port
        self.framer = framer
        self._server: ModbusTcpServer | None = None
        self._listener: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and start serving; sets :attr:`port` to the real port."""
        context = [d.sim_device() for d in self.devices.values()]
        context.append(
            SimDevice(
                id=0,
                simdata=[SimData(address=0, count=65536, datatype=DataType.REGISTERS)],
                action=_no_such_unit,
            )
        )
        server = ModbusTcpServer(
            context=context,
            address=(self.host, self.port),
            framer=FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET,
            trace_packet=self._trace_packet,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:
            raise OSError(f"{self.name}: cannot listen on {self.host}:{self.port}") from err
        self._server = server
        # pymodbus keeps the asyncio.Server of a listener in ``transport``.
        listener = cast(asyncio.Server, server.transport)
        self._listener = listener
        self.port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        server, listener = self._server, self._listener
        self._server = self._listener = None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
        if listener is not None:
            listener.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), timeout=5.0)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        unit = data[0] if self.framer == "rtu" else (data[6] if len(data) > 6 else -1)
        device = self.devices.get(unit)
        if device is None:
            return b"" if self.framer == "rtu" else data
        fault = device.current_fault()
        if fault is None:
            return data
        if fault.kind == "no_answer":
            return b""
        if fault.kind == "garbled":
            return garble(data, self.framer)
        return data
