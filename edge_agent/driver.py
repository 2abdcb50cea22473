"""The contract between the core and a driver.

A driver is one protocol family (``drivers/<kind>/``). It never imports MQTT or
the outbox: everything it produces goes through :class:`Emit`. Polling devices
implement only :meth:`PollingDriver.read`; the shared poll loop in
:mod:`edge_agent.poll` owns interval, jitter, no-overlap, timeouts, retries and
the online/offline state of the device. Push devices implement
:class:`PushDriver`: ``run(link)`` until cancelled, everything through their
:class:`DeviceLink` (see :mod:`edge_agent.link`). What a device can do beyond
reporting is a capability, a small protocol (:class:`Writable`,
:class:`DoorOpener`, :class:`Snapshotter`, :class:`Diagnosable`, :class:`WorkerProcess`) that the
command handlers check with ``isinstance``.

What a kind brings besides its drivers (all optional class attributes of the driver
class, so the core never names a kind):

- ``Settings``: a pydantic model of kind-wide settings, whose fields are top-level keys
  of the config file (Modbus: ``profile_dirs``); the driver gets it as
  :attr:`DriverContext.settings`;
- ``check_across(devices, ctx)``: checks across the kind's devices (one unit id per
  bus, ...) that ``check-config`` runs; see :class:`AcrossContext`;
- ``Hub``: one shared listener per kind (:class:`Hub`): one UDP socket for every door
  controller, one set of HTTP routes for every terminal. The supervisor builds one per
  kind that has devices, hands it to each driver as :attr:`DriverContext.hub`, runs it
  and closes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

Quality = Literal["good", "uncertain", "bad"]
DeviceStateName = Literal["online", "offline", "degraded"]
Value = float | int | bool | str | None


@dataclass(slots=True)
class Reading:
    """One poll's result: ``data`` maps metric name to value; ``ts`` is UNIX seconds (UTC)."""

    data: dict[str, Value]
    quality: Quality = "good"
    ts: float = field(default_factory=time.time)
    #: metrics whose value was outside the profile's valid range (so quality is "uncertain")
    out_of_range: list[str] = field(default_factory=list)
    #: metrics that could not be read this time (left out of ``data``), with the reason;
    #: the device is then ``degraded`` and ``last_error`` names them
    missing: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """One event for :meth:`DeviceLink.commit`: ``type`` from the contract's event types,
    ``ts`` in UNIX seconds (UTC) when it happened (None: now)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """What the ``meta`` topic says about one metric."""

    name: str
    unit: str
    description: str
    writable: bool = False
    range: tuple[float, float] | None = None


class Emit(Protocol):
    """What a driver may produce. Implemented by the core (the outbox writer)."""

    def telemetry(
        self,
        device_id: str,
        data: dict[str, Value],
        *,
        ts: float | None = None,
        quality: Quality = "good",
    ) -> None: ...

    def event(
        self,
        device_id: str,
        type_: str,
        data: dict[str, Any],
        *,
        ts: float | None = None,
    ) -> None: ...


class Bus:
    """A shared physical line (an RS-485 bus, a serial server, one Modbus TCP endpoint).

    One lock per bus and a minimum gap between frames: a 9600-baud RS-485 line
    carries one request at a time, and many cheap sensors need a quiet gap after
    each answer before they listen again (Home Assistant calls it ``msg_wait``).
    ``resources`` lets the driver that owns the line keep its client object there,
    so devices on the same bus share one connection.
    """

    def __init__(self, bus_id: str, min_gap_s: float = 0.0) -> None:
        self.id = bus_id
        self.min_gap_s = min_gap_s
        self.lock = asyncio.Lock()
        self.resources: dict[str, Any] = {}
        self._last_end = 0.0

    async def __aenter__(self) -> Bus:
        await self.lock.acquire()
        wait = self._last_end + self.min_gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._last_end = time.monotonic()
        self.lock.release()


@dataclass
class DriverContext:
    """What the core hands a driver when it builds it."""

    #: buses by id (from the config's ``buses:`` plus implicit TCP endpoints)
    buses: dict[str, Bus]
    #: the kind's own settings (an instance of the driver class's ``Settings``), None
    #: when the kind has none: the driver then uses its defaults
    settings: Any = None
    #: the config file's folder: relative paths in the kind's settings start there
    config_dir: Path | None = None
    #: the school's time zone (``site.timezone``), for devices that report local time
    tz: tzinfo = UTC
    #: the kind's shared listener (an instance of the driver class's ``Hub``), built by
    #: the supervisor; None for kinds without one and in ``check-config``/``doctor``
    hub: Any = None
    #: the gateway's clock (:class:`edge_agent.clock.Clock`: ``wall()``, ``synced()``), for
    #: drivers that set a device's clock (never from an unsynchronised one); None: the
    #: system time, taken as synchronised
    clock: Any = None
    #: ``meta_changed(device_id)``: the driver learnt something its ``meta()`` shows (a
    #: camera's model and firmware, read once connected); the core publishes the retained
    #: meta again. None in ``check-config``/``doctor`` and tests
    meta_changed: Callable[[str], None] | None = None


#: one problem found by a check: the key path in the config file, and the message
Problem = tuple[tuple[str | int, ...], str]


@dataclass(frozen=True)
class AcrossContext:
    """What ``check_across(devices, ctx)`` of a kind may look at besides its devices."""

    #: ids written in ``buses:`` (valid or not: a bus with a typo still exists)
    bus_ids: frozenset[str]
    #: the kind's settings (``Settings`` instance) or None
    settings: Any = None
    config_dir: Path | None = None


class HttpRoutes(Protocol):
    """The part of the agent's one HTTP server (:class:`edge_agent.http.HttpServer`) a hub
    sees: it adds its routes (aiohttp ``RouteDef``) while it is built, before the server
    starts."""

    def add_routes(
        self, kind: str, routes: Iterable[Any], *, stream: bool = False, start: bool = True
    ) -> None: ...


@dataclass
class HubContext:
    """What the core hands a kind's hub when it builds it (no I/O in the constructor)."""

    kind: str
    #: the kind's settings (``Settings`` instance) or None: where to listen
    settings: Any
    #: the enabled devices of this kind (their validated configs), in config order
    devices: list[Any]
    #: the agent's HTTP server, for a hub whose class sets ``needs_http = True``
    #: (``check-config`` then requires ``http.bind`` in the file); None otherwise
    http: HttpRoutes | None = None
    config_dir: Path | None = None


@runtime_checkable
class Hub(Protocol):
    """One shared listener for every device of a kind (a driver class names it in its
    ``Hub`` class attribute; the class is built as ``Hub(ctx: HubContext)``).

    ``run`` binds and serves until cancelled; it raises when it cannot (an address in
    use): the supervisor logs it once, reports each device of the kind ``offline`` with
    the reason, and runs it again with the devices' backoff (1 s -> 300 s). ``close``
    releases whatever is still open; called once when the agent stops. Drivers register
    with the hub (see :class:`edge_agent.hub.UdpHub`) in their ``run``.
    """

    async def run(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Driver(Protocol):
    """A device driver. ``run`` runs until cancelled and re-raises ``CancelledError``."""

    kind: ClassVar[str]

    @property
    def device_id(self) -> str: ...

    def metrics(self) -> list[MetricInfo]:
        """The metrics this device reports, for its retained ``meta`` topic."""
        ...

    def meta(self) -> dict[str, Any]:
        """Model/profile facts for the ``meta`` topic (model, vendor, protocol)."""
        ...


@runtime_checkable
class PollingDriver(Driver, Protocol):
    """A device that is read on a fixed interval by the shared poll loop."""

    async def read(self) -> Reading:
        """Read every reported metric once. Raise a :class:`~edge_agent.errors.DeviceError`."""
        ...

    async def write(self, point: str, value: float | int | bool) -> None:
        """Write one writable point (``device_write`` command). Validate before touching the bus."""
        ...

    async def close(self) -> None:
        """Release connections. Called when the device task stops."""
        ...


@runtime_checkable
class SharesLine(Protocol):
    """A polled device on a line other devices share (an RS-485 bus, one Modbus TCP
    endpoint): the core polls the devices of one line from one shared tick
    (:class:`edge_agent.poll.SharedTick`). A polled driver without it is a line of its own."""

    @property
    def line_id(self) -> str:
        """The same string for every device on the line."""
        ...


class DeviceLink(Protocol):
    """One per push device, built by the core (:class:`edge_agent.link.OutboxLink`)."""

    device_id: str

    @property
    def cursor(self) -> str | None:
        """The last committed cursor, loaded at start (None before the first commit)."""
        ...

    def telemetry(
        self, data: dict[str, Value], *, ts: float | None = None, quality: Quality = "good"
    ) -> None: ...

    async def commit(self, events: Sequence[Event], *, cursor: str | None = None) -> None:
        """Events and cursor in ONE transaction; returns once durable; raises
        :class:`~edge_agent.errors.NotDurableError` when only memory would hold them."""
        ...

    def state(self, state: DeviceStateName, reason: str | None = None) -> None: ...


@runtime_checkable
class PushDriver(Driver, Protocol):
    """A device that sends on its own; ``run`` runs until cancelled (re-raise
    ``CancelledError``). The supervisor restarts it with backoff when it raises."""

    async def run(self, link: DeviceLink) -> None: ...


@runtime_checkable
class Writable(Protocol):
    """Capability: ``device_write`` (points the profile marks writable)."""

    async def write(self, point: str, value: float | int | bool) -> None: ...


@runtime_checkable
class Switchable(Protocol):
    """Capability: on/off outputs (a relay module's coils) that a siren drives
    (:mod:`edge_agent.alarms.siren`). ``switch_points`` names them (no I/O: check-config
    asks); ``read_switch`` reads one back from the device, to verify a write."""

    def switch_points(self) -> list[str]: ...

    async def write(self, point: str, value: float | int | bool) -> None: ...

    async def read_switch(self, point: str) -> bool: ...


@runtime_checkable
class DoorOpener(Protocol):
    """Capability: ``door_open {device, door, by}``."""

    async def open_door(self, door: str | int) -> None: ...


@dataclass(frozen=True, slots=True)
class SnapshotSource:
    """Where a camera's JPEG snapshot is fetched (:mod:`edge_agent.snapshots`): an HTTP(S)
    URL and how to log in. ``repr`` never shows the password."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: ``digest`` (Hikvision, Dahua and most ONVIF cameras), ``basic`` or ``none``
    auth: Literal["digest", "basic", "none"] = "digest"
    #: False for a camera with a self-signed certificate on an ``https`` URL
    tls_verify: bool = True


@runtime_checkable
class Snapshotter(Protocol):
    """Capability: a camera (``camera_snapshot``, alarms with ``snapshot:``). The core
    fetches, stores and publishes the picture; the driver only says where it is: None
    while it does not know yet (an ONVIF camera before GetSnapshotUri answered)."""

    def snapshot_source(self) -> SnapshotSource | None: ...


@runtime_checkable
class Diagnosable(Protocol):
    """Capability: facts for ``doctor`` and support (Home Assistant's ``diagnostics()``)."""

    def diagnostics(self) -> dict[str, Any]: ...


class DriverFactory(Protocol):
    """What the registry stores per kind: a config model and a constructor."""

    kind: ClassVar[str]
    Config: ClassVar[type[BaseModel]]

    def __call__(self, config: Any, ctx: DriverContext) -> Driver: ...


@runtime_checkable
class WorkerProcess(Protocol):
    """Capability: the device's work runs in a process of its own (camera analytics); its
    line in ``ROOT/health`` ``workers``: ``alive``, ``cpu_percent`` (of one core), ``fps``,
    ``restarts``."""

    def worker_health(self) -> dict[str, Any]: ...


@runtime_checkable
class Checkable(Protocol):
    """Capability: a push device ``doctor`` can try once (a camera's stream delivers a
    frame); returns what it saw, raises a :class:`~edge_agent.errors.DeviceError`."""

    async def check(self) -> str: ...
