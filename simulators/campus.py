"""The simulated campus: buildings of classrooms and a board of energy meters.

Layout:

- one Modbus TCP server per building (like a serial server on each building's RS-485 line),
  with two units per classroom: the ``air7in1`` air sensor (odd unit) and the ``lux_noise``
  sensor (even unit). Device ids are ``b{building}-r{room}-air`` and ``b{building}-r{room}-lux``;
  rooms are numbered 101, 102, ... per floor;
- the energy meters (``meter-{n}``, alternately ``sdm630`` and ``adl400``) on servers of their
  own.

``request_delay_s`` makes every server a gateway in front of a slow serial line (one request
at a time, each answered after the delay); ``reserved`` names registers of a model that refuse
a read spanning them. ``edge-agent bench --only gateway90`` uses both: 45 classrooms (90 units)
behind one server, 20 ms a request, register 1 of ``lux_noise`` reserved.

Usage::

    async with CampusSim(classrooms=4, meters=2, seed=1) as sim:
        print(sim.layout)
        sim.set_fault("b1-r101-air", "exception", code=6)
        sim.truth("meter-1")
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from .faults import Fault, FaultBoard, ScheduledFault, load_schedule
from .modbus import BusServer, DeviceInfo, RequestGate, SimulatedDevice
from .profiles import Profile, load_profiles
from .timetable import SimClock, Timetable
from .world import Meter, Room, Weather

log = logging.getLogger(__name__)

METER_MODELS = ("sdm630", "adl400")


class CampusSim:
    """Async context manager that runs the whole simulated campus.

    Args:
        classrooms: number of classrooms (two devices each).
        meters: number of energy meters.
        host: address to listen on (tests: ``127.0.0.1``).
        base_port: first port; servers take consecutive ports. 0 picks free ephemeral ports.
        framer: ``"socket"`` (Modbus TCP) or ``"rtu"`` (RTU frames over TCP).
        speed: simulated seconds per real second; 0 freezes the clock.
        start: simulated start time (``datetime`` or ISO string); default now.
        seed: makes every value reproducible.
        profiles_dir: folder of profile YAML files; default the shipped Modbus profiles.
        faults: a fault schedule (list of :class:`ScheduledFault`) or a file to read one from.
        units_per_server: devices per server (at most 247; a classroom's two units stay together).
        rooms_per_floor: classrooms per floor.
        request_delay_s: each server answers one request at a time, after this delay (the
            serial line behind a Modbus TCP gateway); 0 answers at once, concurrently.
        reserved: per profile model, register addresses (fc 3/4) whose read answers
            exception 2 (illegal data address) when a request spans them.
    """

    def __init__(
        self,
        classrooms: int = 4,
        meters: int = 2,
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        framer: str = "socket",
        speed: float = 1.0,
        start: datetime | str | None = None,
        seed: int = 1,
        profiles_dir: Path | str | None = None,
        faults: Iterable[ScheduledFault] | Path | str | None = None,
        units_per_server: int = 30,
        rooms_per_floor: int = 5,
        request_delay_s: float = 0.0,
        reserved: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        if classrooms < 0 or meters < 0:
            raise ValueError("classrooms and meters must be >= 0")
        if not 2 <= units_per_server <= 247:
            raise ValueError("units_per_server must be 2..247")
        if rooms_per_floor < 1 or rooms_per_floor > 99:
            raise ValueError("rooms_per_floor must be 1..99")
        if framer not in ("socket", "rtu"):
            raise ValueError("framer must be 'socket' or 'rtu'")
        if not 0 <= base_port <= 65535:
            raise ValueError("base_port must be 0..65535")
        if isinstance(start, str):
            start = datetime.fromisoformat(start)
        self.host = host
        self.base_port = base_port
        self.framer = framer
        self.seed = seed
        self.clock = SimClock(start, speed)
        self.timetable = Timetable()
        self.profiles: dict[str, Profile] = load_profiles(profiles_dir)
        for model in ("air7in1", "lux_noise", *METER_MODELS):
            if meters == 0 and model in METER_MODELS:
                continue
            if classrooms == 0 and model in ("air7in1", "lux_noise"):
                continue
            if model not in self.profiles:
                raise ValueError(
                    f"profile {model!r} not found in {profiles_dir or 'drivers/modbus/profiles'}"
                )
        if not (0 <= request_delay_s < 60):
            raise ValueError("request_delay_s must be 0..60 s")
        self.request_delay_s = request_delay_s
        self.reserved = {model: frozenset(addrs) for model, addrs in (reserved or {}).items()}
        unknown = sorted(set(self.reserved) - set(self.profiles))
        if unknown:
            raise ValueError(f"reserved registers for unknown profile(s) {', '.join(unknown)}")
        if isinstance(faults, (str, Path)):
            faults = load_schedule(faults)
        self.faults = FaultBoard(faults or ())
        self.weather = Weather(seed, self.clock)
        self._stopping: asyncio.Event | None = None
        self.devices: dict[str, SimulatedDevice] = {}
        self.servers: list[BusServer] = []
        self._plan(classrooms, meters, units_per_server, rooms_per_floor)
        for entry in self.faults.schedule:
            self._check_fault(entry.device, entry.fault)

    # --- building the campus ----------------------------------------------------------------
    def _plan(self, classrooms: int, meters: int, per_server: int, per_floor: int) -> None:
        rooms_per_building = per_server // 2
        buildings = math.ceil(classrooms / rooms_per_building) if classrooms else 0
        port = self.base_port
        for b in range(buildings):
            building = b + 1
            gate = self._gate()
            devices: list[SimulatedDevice] = []
            first = b * rooms_per_building
            for i in range(min(rooms_per_building, classrooms - first)):
                floor, index = divmod(i, per_floor)
                room_no = f"{floor + 1}{index + 1:02d}"
                location = {"building": f"B{building}", "floor": floor + 1, "room": room_no}
                room = Room(
                    f"b{building}-r{room_no}", self.seed, self.clock, self.timetable, self.weather
                )
                for unit, suffix, model in (
                    (2 * i + 1, "air", "air7in1"),
                    (2 * i + 2, "lux", "lux_noise"),
                ):
                    info = DeviceInfo(f"b{building}-r{room_no}-{suffix}", model, unit, location)
                    devices.append(self._device(info, room.values, gate))
            self.servers.append(
                BusServer(
                    f"building-{building}", devices, host=self.host, port=port, framer=self.framer
                )
            )
            port = port + 1 if port else 0
        meter_servers = math.ceil(meters / per_server) if meters else 0
        for s in range(meter_servers):
            gate = self._gate()
            devices = []
            for i in range(min(per_server, meters - s * per_server)):
                n = s * per_server + i + 1
                model = METER_MODELS[(n - 1) % len(METER_MODELS)]
                building = (n - 1) % buildings + 1 if buildings else 1
                location = {"building": f"B{building}", "floor": 1, "room": "power-room"}
                # The ADL400 map carries total power as int16 in W·1000: stay well below 32 kW.
                meter = Meter(
                    f"meter-{n}",
                    self.seed,
                    self.clock,
                    self.timetable,
                    self.weather,
                    max_day_kw=20.0,
                )
                info = DeviceInfo(f"meter-{n}", model, i + 1, location)
                devices.append(self._device(info, meter.values, gate))
            self.servers.append(
                BusServer(f"meters-{s + 1}", devices, host=self.host, port=port, framer=self.framer)
            )
            port = port + 1 if port else 0
        if port > 65536:
            raise ValueError("base_port too high for this many servers")

    def _gate(self) -> RequestGate | None:
        return RequestGate(self.request_delay_s) if self.request_delay_s > 0 else None

    def _device(self, info: DeviceInfo, source: Any, gate: RequestGate | None) -> SimulatedDevice:
        device = SimulatedDevice(
            info,
            self.profiles[info.profile],
            source,
            self.clock,
            self.faults,
            reserved=self.reserved.get(info.profile, ()),
            gate=gate,
        )
        self.devices[info.id] = device
        return device

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every server (all or none)."""
        self._stopping = asyncio.Event()
        for device in self.devices.values():
            device.stopping = self._stopping
        try:
            for server in self.servers:
                await server.start()
                log.info(
                    "%s listening on %s:%d (%s)",
                    server.name,
                    server.host,
                    server.port,
                    server.framer,
                )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop every server; requests waiting in a ``slow`` fault end at once."""
        if self._stopping is not None:
            self._stopping.set()
            # Let request tasks that were sleeping in a slow fault finish before the close.
            for _ in range(3):
                await asyncio.sleep(0)
        for server in self.servers:
            await server.stop()

    async def __aenter__(self) -> CampusSim:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- introspection ------------------------------------------------------------------------
    @property
    def layout(self) -> dict[str, Any]:
        """Servers and devices, as written by ``--layout-out`` (ports are real once started)."""
        servers = [
            {"name": s.name, "host": s.host, "port": s.port, "framer": s.framer}
            for s in self.servers
        ]
        devices = [
            {
                "id": d.info.id,
                "profile": d.info.profile,
                "host": s.host,
                "port": s.port,
                "unit": d.info.unit,
                "framer": s.framer,
                "location": dict(d.info.location),
            }
            for s in self.servers
            for d in s.devices.values()
        ]
        return {"servers": servers, "devices": devices}

    def write_layout(self, path: Path | str) -> None:
        """Write :attr:`layout` as JSON, atomically (readers poll for the file to appear)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(self.layout, indent=2, ensure_ascii=False) + "\n", "utf-8")
        os.replace(tmp, target)

    def device(self, device_id: str) -> SimulatedDevice:
        """The simulated device ``device_id``; ``KeyError`` if unknown."""
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(f"unknown device {device_id!r}") from None

    # --- faults and truth ---------------------------------------------------------------------
    def _check_fault(self, device_id: str, fault: Fault) -> None:
        device = self.device(device_id)
        if fault.kind == "out_of_range":
            device.out_of_range(fault)  # raises ValueError when the fault cannot be shown

    def set_fault(self, device_id: str, kind: str, **params: Any) -> Fault:
        """Make ``device_id`` show a fault now (kinds: :mod:`edge_agent.simulators.faults`)."""
        fault = Fault.make(kind, **params)
        self._check_fault(device_id, fault)
        self.faults.set(device_id, fault)
        log.info("fault %s set on %s", fault, device_id)
        return fault

    def clear_fault(self, device_id: str) -> None:
        """Remove the run-time fault of ``device_id`` (scheduled faults still apply)."""
        self.device(device_id)
        self.faults.clear(device_id)

    def truth(self, device_id: str) -> dict[str, float]:
        """Current value of every point of ``device_id``, as a correct client decodes it.

        Values are on the register grid (``raw * scale + offset``) and include an active
        ``out_of_range`` fault. With ``speed=0`` a wire read returns exactly these numbers.
        """
        return self.device(device_id).truth()

    @property
    def device_ids(self) -> Sequence[str]:
        """All device ids, in layout order."""
        return list(self.devices)
