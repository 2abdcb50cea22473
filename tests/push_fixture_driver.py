"""Small push drivers and the devices they talk to, for the conformance kit, the
cursor crash test and the shared-listener tests. Registered in tests only
(``install()``), never in the shipped registry.

The device keeps numbered records, as a door controller keeps its event log: a
client connects over TCP, says ``FROM <n>``, and gets every record after ``n`` as
``<index> <value>`` lines, then new ones as they happen. The driver commits what
it received together with the last index as its cursor, so after any restart it
asks for exactly what is not committed yet.

The second kind, ``udpfixture``, is a door-controller-like device that sends datagrams
``<serial> <index> <value>`` to the gateway: every device of the kind sends to one
UDP port, so the kind has a hub (:class:`UdpFixtureHub`, one socket) that routes each
datagram by the serial number in it. The third kind, ``httpfixture``, is the same
device POSTing the same lines to one route on the agent's HTTP server, which its hub
adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edge_agent.config.models import DeviceBase, Strict
from edge_agent.driver import (
    AcrossContext,
    DeviceLink,
    DriverContext,
    Event,
    HubContext,
    MetricInfo,
    Problem,
)
from edge_agent.errors import NotDurableError
from edge_agent.hub import Addr, KeyedHub, UdpHub

if TYPE_CHECKING:
    from aiohttp import web

KIND = "pushfixture"
UDP_KIND = "udpfixture"
HTTP_KIND = "httpfixture"


def install(*kinds: str) -> None:
    """Register the kinds (default: ``pushfixture``) as a third-party entry point would
    (the registry's own table)."""
    from edge_agent import registry

    targets = {
        KIND: "tests.push_fixture_driver:PushFixtureDriver",
        UDP_KIND: "tests.push_fixture_driver:UdpFixtureDriver",
        HTTP_KIND: "tests.push_fixture_driver:HttpFixtureDriver",
    }
    for kind in kinds or (KIND,):
        registry.BUILTIN[kind] = targets[kind]
    registry._cache = None


class PushFixtureConfig(DeviceBase):
    """A record-log device on a TCP port of this machine."""

    kind: Literal["pushfixture"] = Field(description="This kind")
    host: str = Field(default="127.0.0.1", description="Device address")
    port: int = Field(ge=1, le=65535, description="Device TCP port")
    batch_max: int = Field(default=20, ge=1, description="Records per commit at most")
    retry_s: float = Field(default=0.5, gt=0, description="Wait after a refused commit")


class PushFixtureDriver:
    """The push driver for :class:`RecordDevice`."""

    kind: ClassVar[str] = KIND
    Config: ClassVar[type[PushFixtureConfig]] = PushFixtureConfig

    def __init__(self, config: PushFixtureConfig, ctx: DriverContext) -> None:
        self.config = config
        self.bad_lines = 0

    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [MetricInfo("backlog", "", "records the device still holds for us")]

    def meta(self) -> dict[str, Any]:
        return {"model": "record-log fixture", "protocol": "tcp lines"}

    async def run(self, link: DeviceLink) -> None:
        while True:
            try:
                await self._session(link)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
                link.state("offline", f"device unreachable: {err}")
            except NotDurableError as err:
                # Nothing was kept: the device still has the records; ask again later.
                link.state("degraded", f"records wait on the device: {err}")
            await asyncio.sleep(self.config.retry_s)

    async def _session(self, link: DeviceLink) -> None:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
        try:
            writer.write(f"FROM {link.cursor or 0}\n".encode())
            await writer.drain()
            link.state("online")
            buf = b""
            while True:
                async with asyncio.timeout(30):
                    chunk = await reader.read(65536)
                if not chunk:
                    raise OSError("device closed the connection")
                *lines, buf = (buf + chunk).split(b"\n")
                for i in range(0, len(lines), self.config.batch_max):
                    events, last = self._parse(lines[i : i + self.config.batch_max])
                    if events:
                        await link.commit(events, cursor=str(last))
                        link.state("online")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _parse(self, lines: list[bytes]) -> tuple[list[Event], int | None]:
        events: list[Event] = []
        last = None
        for raw in lines:
            try:
                index_s, value = raw.decode("ascii").split()
                index = int(index_s)
            except (UnicodeDecodeError, ValueError):
                self.bad_lines += 1  # bad input never crashes the driver
                continue
            events.append(Event("digital_input", {"record": index, "value": value}))
            last = index
        return events, last


class UdpFixtureListen(Strict):
    """Where the kind's one UDP socket listens."""

    bind: str = Field(default="127.0.0.1:0", description="host:port of the shared socket")


class UdpFixtureSettings(Strict):
    """The kind's top-level key: ``udpfixture: {bind: ...}``."""

    udpfixture: UdpFixtureListen = Field(
        default_factory=UdpFixtureListen, description="The udpfixture kind's listener"
    )


class UdpFixtureHub(UdpHub):
    """One socket for every udpfixture device; a datagram goes to the serial in it."""

    kind = UDP_KIND
    default_bind = "127.0.0.1:0"

    def bind_of(self, settings: object) -> str | None:
        return settings.udpfixture.bind if isinstance(settings, UdpFixtureSettings) else None

    def key_of(self, data: bytes, addr: Addr) -> Hashable | None:
        return int(data.split(b" ", 1)[0])  # raises on garbage: counted as unclaimed


class UdpFixtureConfig(DeviceBase):
    """A device that sends ``<serial> <index> <value>`` datagrams to the gateway."""

    kind: Literal["udpfixture"] = Field(description="This kind")
    serial: int = Field(ge=1, description="The serial number its datagrams carry")
    silence_s: float = Field(default=5, gt=0, description="Offline after this long without one")


class UdpFixtureDriver:
    """The push driver of one udpfixture device: its datagrams come from the hub."""

    kind: ClassVar[str] = UDP_KIND
    Config: ClassVar[type[UdpFixtureConfig]] = UdpFixtureConfig
    Settings: ClassVar[type[UdpFixtureSettings]] = UdpFixtureSettings
    Hub: ClassVar[type[UdpFixtureHub]] = UdpFixtureHub

    @classmethod
    def check_across(
        cls, devices: Sequence[tuple[int, UdpFixtureConfig]], ctx: AcrossContext
    ) -> list[Problem]:
        seen: dict[int, str] = {}
        problems: list[Problem] = []
        for i, dev in devices:
            if dev.serial in seen:
                problems.append(
                    (("devices", i, "serial"), f"serial {dev.serial} is {seen[dev.serial]!r}'s")
                )
            seen.setdefault(dev.serial, dev.id)
        return problems

    def __init__(self, config: UdpFixtureConfig, ctx: DriverContext) -> None:
        self.config = config
        self.hub: KeyedHub | None = ctx.hub
        self.bad = 0

    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [MetricInfo("records", "", "records received")]

    def meta(self) -> dict[str, Any]:
        return {"model": "udp fixture", "protocol": "udp datagrams", "serial": self.config.serial}

    async def run(self, link: DeviceLink) -> None:
        if self.hub is None:
            raise RuntimeError("udpfixture needs its hub")
        with self.hub.inbox(self.config.serial) as inbox:
            while True:
                try:
                    async with asyncio.timeout(self.config.silence_s):
                        batch = [await inbox.get()]
                except TimeoutError:
                    link.state("offline", f"no datagram for {self.config.silence_s:g} s")
                    continue
                while not inbox.empty() and len(batch) < 50:
                    batch.append(inbox.get_nowait())
                events, last = self._parse(batch, link.cursor)
                if not events:
                    continue
                try:
                    await link.commit(events, cursor=str(last))
                except NotDurableError as err:
                    link.state("degraded", f"datagrams not kept: {err}")
                    continue
                link.state("online")

    def _parse(
        self, batch: list[tuple[bytes, Addr]], cursor: str | None
    ) -> tuple[list[Event], int]:
        events: list[Event] = []
        last = int(cursor or 0)
        for data, _addr in batch:
            try:
                _serial, index_s, value = data.decode("ascii").split()
                index = int(index_s)
            except (UnicodeDecodeError, ValueError):
                self.bad += 1  # bad input never crashes the driver
                continue
            if index <= last:
                continue  # a datagram sent twice
            events.append(Event("digital_input", {"record": index, "value": value}))
            last = index
        return events, last


class HttpFixtureHub(KeyedHub):
    """The httpfixture kind's route, ``POST /fixture/records``, on the agent's one HTTP
    server; a body goes to the serial in it, 404 when no device has that serial."""

    kind = HTTP_KIND
    needs_http = True

    def __init__(self, ctx: HubContext) -> None:
        super().__init__(ctx)
        from aiohttp import web

        assert ctx.http is not None  # needs_http: the supervisor hands the server
        ctx.http.add_routes(HTTP_KIND, [web.post("/fixture/records", self._post)])

    def key_of(self, data: bytes, addr: Addr) -> Hashable | None:
        return int(data.split(b" ", 1)[0])

    async def _post(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if self.dispatch(await request.read(), (request.remote or "?", 0)):
            return web.Response(text="OK")
        return web.Response(status=404, text="unknown device")


class HttpFixtureConfig(UdpFixtureConfig):
    """A device that POSTs ``<serial> <index> <value>`` to the gateway."""

    kind: Literal["httpfixture"] = Field(description="This kind")  # type: ignore[assignment]


class HttpFixtureDriver(UdpFixtureDriver):
    """The udpfixture driver, fed by the HTTP hub instead."""

    kind: ClassVar[str] = HTTP_KIND
    Config: ClassVar[type[HttpFixtureConfig]] = HttpFixtureConfig  # type: ignore[assignment]
    Hub: ClassVar[type[HttpFixtureHub]] = HttpFixtureHub  # type: ignore[assignment]
    Settings = None  # type: ignore[assignment]  # it listens on http.bind


class RecordDevice:
    """The device: a thread with a listening socket on 127.0.0.1, ``count`` records made
    one every ``every_s`` seconds (all at once when 0)."""

    def __init__(self, count: int, every_s: float = 0.0) -> None:
        self.count = count
        self.every_s = every_s
        self.started = time.monotonic()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.asked: list[int] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="record-device", daemon=True)
        self._accept.start()

    def made(self) -> int:
        if self.every_s <= 0:
            return self.count
        return min(self.count, int((time.monotonic() - self.started) / self.every_s))

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._client, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                first = conn.makefile("rb").readline().decode()
                after = int(first.split()[1])
                self.asked.append(after)
                sent = after
                while not self._stop.is_set():
                    upto = self.made()
                    if upto > sent:
                        conn.sendall(
                            b"".join(f"{i} v{i}\n".encode() for i in range(sent + 1, upto + 1))
                        )
                        sent = upto
                    time.sleep(0.01)
            except (OSError, ValueError, IndexError):
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
