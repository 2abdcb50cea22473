"""The driver conformance kit (issue 8): what every device kind must do, run against
Modbus (polled) and against the push fixture drivers (tests/push_fixture_driver.py): one
that connects to its device, one whose device sends datagrams to the kind's shared UDP
hub, one whose device POSTs to the route its hub added to the agent's HTTP server.

Each kind brings a device on 127.0.0.1 that can go down, come back and send garbage,
and is run by the real core code: the shared poll loop for a polled kind, a
:class:`~edge_agent.link.OutboxLink` for a push kind, both into a real outbox. A new
kind adds one ``Kind`` subclass here and must pass every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent import registry
from edge_agent.commands import CommandError, door_handler, snapshot_handler, write_handler
from edge_agent.config.models import HttpConfig
from edge_agent.driver import (
    Driver,
    DriverContext,
    HubContext,
    MetricInfo,
    PollingDriver,
    PushDriver,
    Snapshotter,
)
from edge_agent.drivers.camera_analytics.driver import CameraAnalyticsDriver
from edge_agent.drivers.dahua.driver import DahuaDriver
from edge_agent.drivers.hikvision.driver import HikvisionDriver
from edge_agent.drivers.hikvision_camera.driver import HikvisionCameraDriver
from edge_agent.drivers.modbus import ModbusDevice, ModbusDriver, ModbusSettings
from edge_agent.drivers.modbus.profile import clear_profile_cache
from edge_agent.drivers.onvif.driver import OnvifDriver
from edge_agent.drivers.wg.config import WgListen, WgSettings
from edge_agent.drivers.wg.driver import WgDriver
from edge_agent.drivers.wg.hub import WgHub
from edge_agent.drivers.zkteco.driver import ZkHub, ZkTecoDriver
from edge_agent.envelope import Lane
from edge_agent.errors import DeviceError
from edge_agent.http import HttpServer
from edge_agent.link import OutboxLink
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline import ClockGate, Pipeline
from edge_agent.pipeline.sink import OutboxSink
from edge_agent.poll import PollLoop
from edge_agent.simulators import WgController
from edge_agent.simulators.camera import OnvifCamera
from edge_agent.simulators.camera.mjpeg import MjpegServer
from edge_agent.simulators.camera.scenes import Scene, Walker
from edge_agent.simulators.dahua import DahuaCamera
from edge_agent.simulators.hikvision import HikTerminal
from edge_agent.simulators.hikvision_camera import HikCamera
from edge_agent.simulators.zkteco import ZkTerminal
from edge_agent.snapshots.config import SnapshotsConfig
from edge_agent.snapshots.service import SnapshotService
from edge_agent.supervisor import OutboxEmitter
from edge_agent.topics import Topics
from tests.hostile_modbus import HostileModbus
from tests.http_helpers import request
from tests.push_fixture_driver import (
    HTTP_KIND,
    KIND,
    UDP_KIND,
    HttpFixtureDriver,
    HttpFixtureHub,
    PushFixtureDriver,
    UdpFixtureDriver,
    UdpFixtureHub,
    install,
)

pytestmark = pytest.mark.integration

WG_SERIAL = 423187757

ROOT = "campus/s/gw1"
PROFILE = (
    "model: two\nvendor: t\npoints:\n"
    "  - {name: a, fc: 3, address: 0, type: uint16, description: a}\n"
    "  - {name: b, fc: 3, address: 1, type: uint16, description: b}\n"
)


class Synced:
    def wall(self) -> float:
        import time

        return time.time()

    def mono(self) -> float:
        import time

        return time.monotonic()

    def synced(self) -> bool:
        return True


class Kind:
    """One device kind under test: its device, its driver, how the core runs it."""

    name = ""
    #: a door ``door_open`` must refuse: any door for a kind that opens none, a door the
    #: device does not have for a kind that does
    bad_door: int = 1

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.states: list[dict[str, Any]] = []
        self.outbox = Outbox(tmp_path / "outbox.db", commit_interval_s=0.05)
        self.gate = Pipeline(
            [ClockGate(Synced())],
            OutboxSink(OutboxEmitter(self.outbox, ROOT), self.outbox, ROOT, self.sink),
        )
        self.driver: Any = None

    def sink(self, _device: str, payload: dict[str, Any]) -> None:
        self.states.append(payload)

    async def start(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Run the device the way the supervisor does, until cancelled."""
        raise NotImplementedError

    async def down(self) -> None:
        raise NotImplementedError

    async def up(self) -> None:
        raise NotImplementedError

    async def garbage(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def delivered(self) -> int:
        """Messages of this device in the outbox."""
        await self.outbox.flush()
        n = 0
        for lane in (Lane.TELEMETRY, Lane.EVENT):
            n += len(await self.outbox.fetch(lane, 0, 10**9, 10**6))
        return n


class ModbusKind(Kind):
    name = "modbus"

    async def start(self) -> None:
        clear_profile_cache()
        (self.tmp_path / "p.yaml").write_text(PROFILE)
        self.device = HostileModbus(holding={0: 812, 1: 7})
        self.port = await self.device.start()
        config = ModbusDevice.model_validate(
            {
                "kind": "modbus",
                "id": "dev1",
                "profile": "p",
                "host": "127.0.0.1",
                "port": self.port,
                "timeout_s": 0.2,
                "retries": 0,
                "offline_after": 1,
            }
        )
        self.driver = ModbusDriver(
            config, DriverContext({}, ModbusSettings(profile_dirs=[str(self.tmp_path)]))
        )

    async def run(self) -> None:
        await PollLoop(
            self.driver,
            interval_s=0.1,
            read_timeout_s=1,
            offline_after=1,
            emit=self.gate,
            state_sink=self.sink,
        ).run()

    async def down(self) -> None:
        self.device.default = "silent"

    async def up(self) -> None:
        self.device.default = "ok"

    async def garbage(self) -> None:
        self.device.script += ["garbage", "wrong_byte_count"]

    async def close(self) -> None:
        await self.driver.close()
        await self.device.stop()


class PushKind(Kind):
    """The push fixture: a record log that serves ``FROM n`` over TCP."""

    name = KIND

    async def start(self) -> None:
        self.records = [f"{i} v{i}\n".encode() for i in range(1, 6)]
        self.extra: list[bytes] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        config = PushFixtureDriver.Config.model_validate(
            {"kind": KIND, "id": "dev1", "port": self.port, "retry_s": 0.05}
        )
        self.driver = PushFixtureDriver(config, DriverContext({}))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            after = int((await reader.readline()).split()[1])
            writer.write(b"".join(self.extra) + b"".join(self.records[after:]))
            self.extra = []
            await writer.drain()
            await reader.read()  # until the driver or the test closes it
        except (OSError, ValueError, IndexError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def run(self) -> None:
        link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
        await self.driver.run(link)

    async def down(self) -> None:
        self.server.close()
        for w in list(self.writers):
            w.close()
        await self.server.wait_closed()

    async def up(self) -> None:
        self.records += [f"{i} v{i}\n".encode() for i in range(len(self.records) + 1, 9)]
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def garbage(self) -> None:
        self.extra = [b"\xff\xfe not a record\n", b"7\n", b"x y\n"]
        self.records.append(f"{len(self.records) + 1} late\n".encode())
        for w in list(self.writers):
            w.close()  # the driver reconnects and gets the garbage first

    async def close(self) -> None:
        await self.down()


class UdpKind(Kind):
    """The udpfixture kind: the device sends ``<serial> <index> <value>`` datagrams to the
    kind's hub (one UDP socket), which routes them by serial to the driver."""

    name = UDP_KIND

    async def start(self) -> None:
        config = UdpFixtureDriver.Config.model_validate(
            {"kind": UDP_KIND, "id": "dev1", "serial": 7, "silence_s": 0.3}
        )
        self.hub = UdpFixtureHub(HubContext(UDP_KIND, None, [config]))
        self.driver = UdpFixtureDriver(config, DriverContext({}, hub=self.hub))
        self.index = 0
        self.sending = asyncio.Event()
        self.sending.set()
        self.extra: list[bytes] = []
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def _device(self) -> None:
        await self.hub.listening.wait()
        address = self.hub.address
        assert address is not None
        while True:
            await self.sending.wait()
            for data in self.extra:
                self.sender.sendto(data, address)
            self.extra = []
            self.index += 1
            self.sender.sendto(f"7 {self.index} v{self.index}".encode(), address)
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.hub.run())
            tg.create_task(self._device())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        self.sending.clear()

    async def up(self) -> None:
        self.sending.set()

    async def garbage(self) -> None:
        self.extra = [b"\xff\xfe not a record", b"7", b"7 x y z", b"7 notanumber v"]

    async def close(self) -> None:
        self.sender.close()
        await self.hub.close()


class HttpKind(Kind):
    """The httpfixture kind: the device POSTs ``<serial> <index> <value>`` to the route
    its hub added to the agent's one HTTP server."""

    name = HTTP_KIND

    async def start(self) -> None:
        config = HttpFixtureDriver.Config.model_validate(
            {"kind": HTTP_KIND, "id": "dev1", "serial": 7, "silence_s": 0.3}
        )
        self.server = HttpServer(HttpConfig(bind="127.0.0.1:0"))
        self.hub = HttpFixtureHub(HubContext(HTTP_KIND, None, [config], http=self.server))
        self.driver = HttpFixtureDriver(config, DriverContext({}, hub=self.hub))
        self.index = 0
        self.sending = asyncio.Event()
        self.sending.set()
        self.extra: list[bytes] = []

    async def _device(self) -> None:
        while not self.server.addresses:
            await asyncio.sleep(0.01)
        port = self.server.addresses[0][1]
        while True:
            await self.sending.wait()
            for body in self.extra:
                await request(port, "POST", "/fixture/records", body)
            self.extra = []
            self.index += 1
            await request(port, "POST", "/fixture/records", f"7 {self.index} v".encode())
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.server.run())
            tg.create_task(self.hub.run())
            tg.create_task(self._device())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        self.sending.clear()

    async def up(self) -> None:
        self.sending.set()

    async def garbage(self) -> None:
        self.extra = [b"\xff\xfe not a record", b"7", b"7 x y z", b"", b"7 notanumber v"]

    async def close(self) -> None:
        await self.hub.close()


class ZkKind(Kind):
    """The zkteco kind: a simulated terminal (edge_agent.simulators.zkteco) pushes over
    HTTP to the iclock routes its hub added to the agent's one server."""

    name = "zkteco"
    bad_door = 9

    async def start(self) -> None:
        config = ZkTecoDriver.Config.model_validate(
            {"kind": "zkteco", "id": "dev1", "sn": "ZKC1", "delay_s": 1, "offline_after": 2}
        )
        self.server = HttpServer(HttpConfig(bind="127.0.0.1:0"))
        self.hub = ZkHub(HubContext("zkteco", None, [config], http=self.server))
        self.driver = ZkTecoDriver(config, DriverContext({}, hub=self.hub))
        self.terminal: ZkTerminal | None = None

    async def _device(self) -> None:
        while not self.server.addresses:
            await asyncio.sleep(0.01)
        self.terminal = ZkTerminal("ZKC1", ("127.0.0.1", self.server.addresses[0][1]), poll_s=0.1)
        async with self.terminal:
            while True:
                self.terminal.punch("1001")
                await asyncio.sleep(0.1)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.server.run())
            tg.create_task(self.hub.run())
            tg.create_task(self._device())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        assert self.terminal is not None
        self.terminal.unplug()

    async def up(self) -> None:
        assert self.terminal is not None
        self.terminal.plug()

    async def garbage(self) -> None:
        assert self.terminal is not None
        for body in (b"\xff\xfe not a record", b"7", b"", b"1\tnot-a-time\t0\t1\n"):
            self.terminal.garble("ATTLOG", body)
        self.terminal.garble("rtlog", b"time=bad\tevent=x\n")
        self.terminal.garble("OPERLOG", b"USER Name=no pin\n")

    async def close(self) -> None:
        await self.hub.close()


class HikvisionKind(Kind):
    """The hikvision kind in stream mode against the ISAPI terminal simulator: swipes
    every 50 ms, heartbeats every 0.1 s; down = the cable out, garbage = broken parts."""

    name = "hikvision"

    async def start(self) -> None:
        os.environ["HIK_CONFORMANCE_PW"] = "conf-pw"
        self.term = HikTerminal(password="conf-pw", heartbeat_s=0.1)
        await self.term.start()
        config = HikvisionDriver.Config.model_validate(
            {
                "kind": "hikvision",
                "id": "dev1",
                "host": "127.0.0.1",
                "port": self.term.port,
                "password": "${HIK_CONFORMANCE_PW}",
                "silence_s": 0.5,
                "timeout_s": 2,
                "retry_max_s": 1,
            }
        )
        self.driver = HikvisionDriver(config, DriverContext({}))

    async def _swipes(self) -> None:
        n = 0
        while True:
            n += 1
            self.term.swipe(str(6154000 + n))
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._swipes())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        await self.term.unplug()

    async def up(self) -> None:
        await self.term.plug()

    async def garbage(self) -> None:
        self.term.inject(b"--MIME_boundary\r\nContent-Type: application/json\r\n\r\n{not json\r\n")
        self.term.inject(b"\xff\xfe garbage outside any part\r\n")
        self.term.inject(b"--MIME_boundary\r\n\r\n<EventNotificationAlert><x>\r\n")

    async def close(self) -> None:
        await self.term.stop()
        os.environ.pop("HIK_CONFORMANCE_PW", None)


class HikCameraKind(Kind):
    """The hikvision_camera kind against the camera simulator: motion begins and ends
    every 50 ms, heartbeats every 0.1 s; down = the cable out, garbage = broken parts."""

    name = "hikvision_camera"

    async def start(self) -> None:
        os.environ["CAM_CONFORMANCE_PW"] = "conf-pw"
        self.cam = HikCamera(password="conf-pw", heartbeat_s=0.1, repeat_s=0.02)
        await self.cam.start()
        config = HikvisionCameraDriver.Config.model_validate(
            {
                "kind": "hikvision_camera",
                "id": "dev1",
                "host": "127.0.0.1",
                "port": self.cam.port,
                "password": "${CAM_CONFORMANCE_PW}",
                "silence_s": 0.5,
                "timeout_s": 2,
                "retry_max_s": 1,
            }
        )
        self.driver = HikvisionCameraDriver(config, DriverContext({}))

    async def _alarms(self) -> None:
        while True:
            self.cam.begin("VMD")
            await asyncio.sleep(0.05)
            self.cam.end("VMD")
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._alarms())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        await self.cam.unplug()

    async def up(self) -> None:
        await self.cam.plug()

    async def garbage(self) -> None:
        self.cam.inject(b"--boundary\r\nContent-Type: application/xml\r\n\r\n<Event\r\n")
        self.cam.inject(b"\xff\xfe garbage outside any part\r\n")
        self.cam.inject(b"--boundary\r\n\r\n{not json\r\n")

    async def close(self) -> None:
        await self.cam.stop()
        os.environ.pop("CAM_CONFORMANCE_PW", None)


class DahuaKind(Kind):
    """The dahua kind against the camera simulator: VideoMotion Start and Stop every 50 ms,
    Heartbeat every second; down = the cable out, garbage = broken records."""

    name = "dahua"

    async def start(self) -> None:
        os.environ["CAM_CONFORMANCE_PW"] = "conf-pw"
        self.cam = DahuaCamera(password="conf-pw")
        await self.cam.start()
        config = DahuaDriver.Config.model_validate(
            {
                "kind": "dahua",
                "id": "dev1",
                "host": "127.0.0.1",
                "port": self.cam.port,
                "password": "${CAM_CONFORMANCE_PW}",
                "heartbeat_s": 1,
                "silence_s": 2,
                "timeout_s": 2,
                "retry_max_s": 1,
            }
        )
        self.driver = DahuaDriver(config, DriverContext({}))

    async def _alarms(self) -> None:
        while True:
            self.cam.start_event("VideoMotion", 0)
            await asyncio.sleep(0.05)
            self.cam.stop_event("VideoMotion", 0)
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._alarms())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        await self.cam.unplug()

    async def up(self) -> None:
        await self.cam.plug()

    async def garbage(self) -> None:
        self.cam.inject(b"--myboundary\r\nContent-Type: text/plain\r\n\r\nnot a record\r\n")
        self.cam.inject(b"Code=VideoMotion;action=Start;index=0;data={broken\r\n")
        self.cam.inject(b"\xff\xfe garbage\r\n--myboundary\r\n\r\nCode=;;;\r\n")

    async def close(self) -> None:
        await self.cam.stop()
        os.environ.pop("CAM_CONFORMANCE_PW", None)


class WgKind(Kind):
    """The WG door controller driver against a simulated controller (``simulators/wg.py``)
    swiping every 50 ms, through the kind's hub (one UDP socket, frames routed by serial)."""

    name = "wg"
    bad_door = 9

    async def start(self) -> None:
        self.sim = WgController(WG_SERIAL, doors=2, clock=lambda: datetime.now(UTC))
        await self.sim.start()
        config = WgDriver.Config.model_validate(
            {
                "kind": "wg",
                "id": "dev1",
                "serial": WG_SERIAL,
                "host": "127.0.0.1",
                "port": self.sim.port,
                "doors": 2,
                "poll_interval_s": 0.1,
                "timeout_s": 0.1,
                "retries": 0,
                "offline_after": 2,
                "retry_max_s": 0.2,
            }
        )
        settings = WgSettings(wg=WgListen(bind="127.0.0.1:0", listener="127.0.0.1"))
        self.hub = WgHub(HubContext("wg", settings, [config]))
        self.driver = WgDriver(config, DriverContext({}, settings, hub=self.hub))
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def _device(self) -> None:
        card = 1000
        while True:
            card += 1
            self.sim.swipe(card, 1 + card % 2)
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.hub.run())
            tg.create_task(self._device())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        self.sim.unplug()

    async def up(self) -> None:
        self.sim.replug()

    async def garbage(self) -> None:
        address = self.hub.address
        assert address is not None
        ours = WG_SERIAL.to_bytes(4, "little")
        for data in (
            b"\xff\xfe not a frame",
            b"\x17\x20\x00\x00" + ours,
            b"\x17\xee\x00\x00" + ours + bytes(56),
            b"\x17\x20\x00\x00" + ours + b"\xff" * 56,
        ):
            self.sender.sendto(data, address)

    async def close(self) -> None:
        self.sender.close()
        self.sim.close()
        await self.hub.close()


class OnvifKind(Kind):
    """The onvif kind against the ONVIF camera simulator: motion on and off every 50 ms
    through a PullPoint subscription; down = the camera's port refuses (the subscription is
    lost with it), garbage = notifications nobody can read."""

    name = "onvif"

    async def start(self) -> None:
        os.environ["ONVIF_CONFORMANCE_PW"] = "conf-pw"
        self.cam = OnvifCamera(password="conf-pw")
        await self.cam.start()
        config = OnvifDriver.Config.model_validate(
            {
                "kind": "onvif",
                "id": "dev1",
                "host": "127.0.0.1",
                "port": self.cam.port,
                "password": "${ONVIF_CONFORMANCE_PW}",
                "pull_timeout_s": 1,
                "pull_cooldown_s": 0.1,
                "timeout_s": 2,
                "retry_max_s": 1,
            }
        )
        self.driver = OnvifDriver(config, DriverContext({}))

    async def _motion(self) -> None:
        on = False
        while True:
            on = not on
            self.cam.motion(on)
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._motion())
            link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
            await self.driver.run(link)

    async def down(self) -> None:
        await self.cam.stop()

    async def up(self) -> None:
        await self.cam.start()

    async def garbage(self) -> None:
        self.cam.notify("tns1:Vendor/Unknown/Thing", [("Source", "1")], [("State", "true")])
        self.cam.notify(
            "tns1:RuleEngine/CellMotionDetector/Motion", [("Rule", "r")], [("IsMotion", "maybe")]
        )
        self.cam.notify("", [], [])
        self.cam.notify("tns1:RuleEngine/TamperDetector/Tamper", [], [])

    async def close(self) -> None:
        await self.cam.stop()
        os.environ.pop("ONVIF_CONFORMANCE_PW", None)


class CameraAnalyticsKind(Kind):
    """The camera_analytics kind against the MJPEG camera simulator: a walker through the
    zone every 2.5 s (motion events); down = the camera off (port closed), garbage = bytes
    and a broken JPEG in the stream."""

    name = "camera_analytics"

    async def start(self) -> None:
        people = tuple(
            Walker(start_s=1.5 + 2.5 * i, x=60 + 50 * (i % 5), direction="down", speed_px_s=120)
            for i in range(8)
        )
        self.camera = MjpegServer(Scene("conformance", duration_s=24.0, walkers=people))
        await self.camera.start()
        config = CameraAnalyticsDriver.Config.model_validate(
            {
                "kind": "camera_analytics",
                "id": "dev1",
                "analytics": {
                    "stream_url": self.camera.url,
                    "timeout_s": 2,
                    "zones": [
                        {"name": "all", "points": [[0, 0], [1, 0], [1, 1], [0, 1]], "hold_s": 0.5}
                    ],
                },
            }
        )
        self.driver = CameraAnalyticsDriver(config, DriverContext({}))

    async def run(self) -> None:
        link = OutboxLink("dev1", outbox=self.outbox, pipeline=self.gate, state_sink=self.sink)
        await self.driver.run(link)

    async def down(self) -> None:
        await self.camera.stop()

    async def up(self) -> None:
        await self.camera.start()  # the same port

    async def garbage(self) -> None:
        self.camera.inject(b"\x00\x01 not a part at all \r\n" * 20)
        self.camera.inject(
            b"--ipcamera\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8broken\xff\xd9\r\n"
        )

    async def close(self) -> None:
        await self.camera.stop()


KINDS = [
    ModbusKind,
    PushKind,
    UdpKind,
    HttpKind,
    ZkKind,
    HikvisionKind,
    WgKind,
    HikCameraKind,
    DahuaKind,
    OnvifKind,
    CameraAnalyticsKind,
]


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
async def kind(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kind]:
    k: Kind = request.param(tmp_path)
    await k.outbox.open()
    await k.start()
    yield k
    await k.close()
    await k.outbox.close()


@contextlib.asynccontextmanager
async def running(k: Kind) -> AsyncIterator[asyncio.Task[None]]:
    async def flusher() -> None:
        while True:
            await k.outbox.wait_for_work()
            await k.outbox.flush()

    flush = asyncio.create_task(flusher())
    task = asyncio.create_task(k.run())
    try:
        yield task
    finally:
        for t in (task, flush):
            t.cancel()
        await asyncio.gather(task, flush, return_exceptions=True)


async def until(cond: Any, what: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.02)


def last_state(k: Kind) -> str | None:
    return k.states[-1]["state"] if k.states else None


async def test_meta(kind: Kind) -> None:
    d = kind.driver
    assert isinstance(d, Driver)
    assert isinstance(d, PollingDriver) != isinstance(d, PushDriver), "poll or push, not both"
    assert d.device_id == "dev1"
    cls = type(d)
    assert cls.kind == kind.name
    assert "kind" in cls.Config.model_fields
    metrics = d.metrics()
    assert metrics
    assert all(isinstance(m, MetricInfo) for m in metrics)
    assert all(re.fullmatch(r"[a-z0-9_]+", m.name) for m in metrics)
    meta = d.meta()
    assert isinstance(meta, dict)
    json.dumps(meta)  # the retained meta topic must be able to carry it


async def test_state_transitions(kind: Kind) -> None:
    async with running(kind):

        async def online() -> bool:
            return last_state(kind) == "online" and await kind.delivered() > 0

        await until(online, "online with data")
        await kind.down()

        async def offline() -> bool:
            return last_state(kind) == "offline"

        await until(offline, "offline")
        assert kind.states[-1]["last_error"], kind.states[-1]
        await kind.up()

        async def back() -> bool:
            return last_state(kind) == "online"

        await until(back, "online again")
    for payload in kind.states:
        assert set(payload) == {"state", "since", "last_error"}
        assert payload["since"].endswith("Z")


async def test_cancellation(kind: Kind) -> None:
    async with running(kind) as task:

        async def data() -> bool:
            return await kind.delivered() > 0

        await until(data, "data")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()


async def test_bad_input_never_crashes(kind: Kind) -> None:
    async with running(kind) as task:

        async def data() -> bool:
            return await kind.delivered() > 0

        await until(data, "data")
        before = await kind.delivered()
        await kind.garbage()

        async def more() -> bool:
            return await kind.delivered() > before and last_state(kind) == "online"

        await until(more, "data after the garbage")
        assert not task.done()


async def test_commands_are_refused_cleanly(kind: Kind, tmp_path: Path) -> None:
    drivers = {"dev1": kind.driver}
    lookup = drivers.get
    cameras = SnapshotService(SnapshotsConfig(), tmp_path, Topics("c/s/g"), drivers)
    write, door = write_handler(lookup), door_handler(lookup)
    snap = snapshot_handler(cameras.command)
    refused = [
        (write, {"device": "dev1", "point": "a", "value": 1}),
        (door, {"device": "dev1", "door": kind.bad_door, "by": "ops"}),
        (snap, {"device": "nope"}),
        (write, {"device": "nope", "point": "a", "value": 1}),
    ]
    if not isinstance(kind.driver, Snapshotter):
        refused.append((snap, {"device": "dev1"}))
    for handler, args in refused:
        # a door opener that is not running refuses with a DeviceError (not connected)
        with pytest.raises((CommandError, ValueError, DeviceError)):
            await handler(args)
    if isinstance(kind.driver, Snapshotter):
        # a camera either answers with its picture or refuses cleanly (not connected yet)
        try:
            answer = await snap({"device": "dev1"})
        except (CommandError, ValueError, DeviceError):
            pass
        else:
            assert answer["sha256"]
            assert answer["topic"].startswith("c/s/g/snapshots/dev1/")


def test_the_push_fixture_is_not_shipped_but_loads_as_a_third_party_kind() -> None:
    assert KIND not in registry.BUILTIN
    saved = dict(registry.BUILTIN), registry._cache
    try:
        install()
        assert registry.drivers()[KIND] is PushFixtureDriver
    finally:
        registry.BUILTIN.clear()
        registry.BUILTIN.update(saved[0])
        registry._cache = saved[1]
