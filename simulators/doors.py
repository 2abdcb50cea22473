"""Simulated digital-input modules: door contacts, exit buttons, fire and emergency inputs.

A Waveshare "Modbus RTU IO 8CH"-style module (profile ``waveshare_io8``: discrete inputs
0-7 read with function 02, coils 0-7) on one Modbus TCP listener, like an RS-485 line of
door modules behind a serial server. A test or a demo sets what each input reads; a
client polling with function 02 sees it, packed LSB first as on the wire (written from the
Modbus Application Protocol, 6.2, and the vendor's manual, never from the agent's driver).

Usage::

    async with DiModuleSim({"b1-doors": 1}) as sim:
        sim.port                                   # where it listens
        sim.set_input("b1-doors", "di1", 0)        # the contact opens (NC contact: 0 = open)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from .faults import FaultBoard
from .modbus import BusServer, DeviceInfo, SimulatedDevice
from .profiles import load_profiles
from .timetable import SimClock

DEFAULT_MODEL = "waveshare_io8"


def _source(values: dict[str, float]) -> Callable[[float], Mapping[str, float]]:
    """What the module's inputs read at any simulated time: what the test set last."""
    return lambda _t: values


class DiModuleSim:
    """DI modules on one Modbus TCP server: ``{device id: unit}``.

    Every input starts at ``initial`` (1: an NC door contact on a closed door reads 1).
    """

    def __init__(
        self,
        modules: Mapping[str, int],
        *,
        model: str = DEFAULT_MODEL,
        host: str = "127.0.0.1",
        port: int = 0,
        framer: str = "socket",
        initial: int = 1,
        profiles_dir: Path | str | None = None,
    ) -> None:
        profiles = load_profiles(profiles_dir)
        if model not in profiles:
            raise ValueError(f"profile {model!r} not found")
        self.profile = profiles[model]
        self.clock = SimClock(speed=0)
        self.faults = FaultBoard()
        self.values: dict[str, dict[str, float]] = {}
        self.devices: dict[str, SimulatedDevice] = {}
        for device_id, unit in modules.items():
            values = {p.name: float(initial) for p in self.profile.points if p.fc == 2}
            self.values[device_id] = values
            self.devices[device_id] = SimulatedDevice(
                DeviceInfo(device_id, model, unit, {}),
                self.profile,
                _source(values),
                self.clock,
                self.faults,
            )
        self.server = BusServer(
            "di-modules", list(self.devices.values()), host=host, port=port, framer=framer
        )

    @property
    def port(self) -> int:
        return self.server.port

    def set_input(self, device: str, point: str, value: int | bool) -> None:
        """What input ``point`` of ``device`` reads from now on (0 or 1)."""
        values = self.values[device]
        if point not in values:
            raise KeyError(f"{device} has no input {point!r} (inputs: {', '.join(values)})")
        values[point] = 1.0 if value else 0.0

    def inputs(self, device: str) -> dict[str, int]:
        """What each input of ``device`` reads now."""
        return {k: int(v) for k, v in self.values[device].items()}

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.stop()

    async def __aenter__(self) -> DiModuleSim:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
