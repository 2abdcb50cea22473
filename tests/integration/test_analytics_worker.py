"""Camera analytics over real sockets (issue #11): the worker process reads the simulated
camera's MJPEG stream on loopback, a killed worker is restarted, and in the agent the events,
the device state and the worker's CPU share reach a real mosquitto.

Counts are exact because the scene is scripted; no assertion is about wall-clock speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.driver import Event
from edge_agent.drivers.camera_analytics.config import AnalyticsConfig
from edge_agent.drivers.camera_analytics.runner import AnalyticsRunner
from edge_agent.simulators.camera.mjpeg import MjpegServer
from edge_agent.simulators.camera.scenes import Scene, Walker, courtyard
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber

pytestmark = pytest.mark.integration

#: two people crossing side by side in opposite directions, then the scene ends
CROSSING = Scene(
    "crossing",
    seed=2,
    duration_s=11.0,
    walkers=(
        Walker(start_s=3.0, x=90, direction="down", speed_px_s=80),
        Walker(start_s=3.4, x=230, direction="up", speed_px_s=80),
    ),
)
GATE = {"name": "gate", "points": [[0, 0.5], [1, 0.5]]}


class Sink:
    """What the runner reports, as the camera's driver would get it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.states: list[tuple[bool, str | None]] = []
        self.stats_seen: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def found(self, events: list[Event]) -> None:
        self.events += events
        self.changed.set()

    def stream_state(self, online: bool, reason: str | None) -> None:
        self.states.append((online, reason))
        self.changed.set()

    async def stats(self, stats: dict[str, Any]) -> None:
        self.stats_seen.append(stats)
        self.changed.set()

    async def until(self, check: Any, timeout: float = 60.0) -> None:
        async def wait() -> None:
            while not check():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def running(runner: AnalyticsRunner, sink: Sink) -> AsyncIterator[None]:
    task = asyncio.create_task(runner.run(sink))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_worker_counts_walkers_on_the_mjpeg_stream() -> None:
    async with MjpegServer(CROSSING, loop=False) as camera:
        cfg = AnalyticsConfig.model_validate({"stream_url": camera.url, "lines": [GATE]})
        runner = AnalyticsRunner("gate-cam", cfg)
        sink = Sink()
        async with running(runner, sink):
            # the scene plays once; the camera then closes the stream
            await sink.until(lambda: any(r and "closed" in r for _, r in sink.states))
            assert runner.process is not None
            worker_pid = runner.pid
        assert camera.clients == 1
    crossed = [e.data for e in sink.events if e.type == "line_crossed"]
    assert sorted(d["direction"] for d in crossed) == ["in", "out"]
    assert all(d["line"] == "gate" for d in crossed)
    assert sink.states[0] == (True, None)
    # the worker is a process of its own, and it is gone once the runner stops
    assert worker_pid is not None
    assert runner.process is not None
    assert not runner.process.is_alive()


async def test_a_killed_worker_is_restarted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.drivers.camera_analytics.runner")
    async with MjpegServer(courtyard(duration_s=60)) as camera:
        cfg = AnalyticsConfig.model_validate({"stream_url": camera.url})
        runner = AnalyticsRunner("yard-cam", cfg)
        sink = Sink()
        async with running(runner, sink):
            await sink.until(lambda: sink.states and sink.states[-1][0])
            first = runner.pid
            runner.kill_worker()  # as the OOM killer would
            await sink.until(lambda: runner.restarts == 1 and runner.pid != first)
            await sink.until(lambda: sink.states[-1] == (True, None))
            # and it analyses again: frames counted by the new worker
            await sink.until(lambda: runner.frames > 0 and runner.health()["alive"])
    down = [r for online, r in sink.states if not online]
    assert down == ["analytics worker exited (code -9)"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "exited (code -9)" in warnings[0].getMessage()
    assert any("running again" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_stream_is_reported_and_retried() -> None:
    async with MjpegServer(courtyard(duration_s=60)) as camera:
        url = camera.url
    # the camera is gone: nothing listens on its port any more
    cfg = AnalyticsConfig.model_validate({"stream_url": url})
    runner = AnalyticsRunner("yard-cam", cfg)
    sink = Sink()
    async with running(runner, sink):
        await sink.until(lambda: len([s for s in sink.states if not s[0]]) >= 2)
        assert runner.restarts == 0  # the worker retries the stream itself
    assert all("cannot open the stream" in (r or "") for _, r in sink.states)


async def test_the_agent_publishes_analytics_events_and_the_workers_cpu(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/cam-school/gw1"
    async with MjpegServer(CROSSING) as camera:
        cfg = {
            "site": {"id": "cam-school", "gateway_id": "gw1"},
            "mqtt": {
                "host": mqtt_broker.host,
                "port": mqtt_broker.port,
                "health_interval_s": 6,
            },
            "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
            "clock": {"sync_check": "none"},
            "devices": [
                {
                    "id": "gate-cam",
                    "kind": "camera_analytics",
                    "analytics": {"stream_url": camera.url, "lines": [GATE]},
                }
            ],
        }
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(cfg))
        agent = Agent(load_config(path), path)
        task = asyncio.create_task(agent.run())
        try:
            with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
                events = await asyncio.to_thread(
                    sub.wait_for_count, 2, lambda m: m.topic == f"{root}/events/gate-cam", 60
                )

                def cpu_known(m: Any) -> bool:
                    if m.topic != f"{root}/health":
                        return False
                    worker = json.loads(m.payload).get("workers", {}).get("gate-cam", {})
                    return worker.get("cpu_percent") is not None

                health = await asyncio.to_thread(sub.wait_for_count, 1, cpu_known, 60)
                states = [
                    json.loads(m.payload)["state"]
                    for m in sub.messages
                    if m.topic == f"{root}/devices/gate-cam/state"
                ]
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
    data = [check_envelope(m.payload, "event", "gate-cam") for m in events]
    assert {d["type"] for d in data} == {"line_crossed"}
    assert sorted(d["data"]["direction"] for d in data) == ["in", "out"]
    worker = json.loads(health[0].payload)["workers"]["gate-cam"]
    assert worker["alive"] is True
    assert 0 < worker["cpu_percent"] < 100
    assert worker["restarts"] == 0
    assert "online" in states


class _Pipe:
    """The worker's end of the pipe, kept in a list."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, obj: Any) -> None:
        self.sent.append(obj)


async def test_the_opencv_reader_rtsp_uses_counts_the_same() -> None:
    # rtsp:// goes through cv2.VideoCapture (FFmpeg); FFmpeg reads this MJPEG URL as well,
    # so the same scene proves that path without an RTSP server
    from edge_agent.drivers.camera_analytics.worker import StreamError, Worker

    async with MjpegServer(CROSSING, loop=False) as camera:
        cfg = AnalyticsConfig.model_validate(
            {"stream_url": "rtsp://127.0.0.1/unused", "lines": [GATE], "timeout_s": 5}
        )
        pipe = _Pipe()
        worker = Worker(pipe, cfg)

        def read() -> str:
            try:
                worker._read_capture(camera.url)
            except StreamError as err:
                return str(err)
            return "no error"

        ended = await asyncio.to_thread(read)
    assert ended == "the stream stopped (OpenCV/FFmpeg)"
    assert ("state", "online", None) in pipe.sent
    crossed = [d for kind, *rest in pipe.sent if kind == "events" for t, d, _ in rest[0]
               if t == "line_crossed"]  # fmt: skip
    assert sorted(d["direction"] for d in crossed) == ["in", "out"]


async def test_the_simulator_command_line_serves_a_scene() -> None:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.simulators", "mjpeg", "--scene", "covered",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "scene=covered" in line
        url = line.split()[3]
        host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\xff\xd8"), 30)
        writer.close()
        await writer.wait_closed()
    finally:
        proc.terminate()
        await proc.wait()
    assert b"multipart/x-mixed-replace; boundary=ipcamera" in head
    assert b"Content-Type: image/jpeg" in head


async def test_doctor_tries_the_stream_once(tmp_path: Path) -> None:
    from edge_agent.tools.doctor import check_devices

    def devices(url: str) -> Any:
        cfg = {
            "site": {"id": "cam-school", "gateway_id": "gw1"},
            "mqtt": {"host": "127.0.0.1"},
            "devices": [
                {"id": "yard-cam", "kind": "camera_analytics", "analytics": {"stream_url": url}}
            ],
        }
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return load_config(path), path

    async with MjpegServer(courtyard(duration_s=10)) as camera:
        (row,) = await check_devices(*devices(camera.url))
        url = camera.url
    assert (row.status, row.detail.split(",")[0]) == ("ok", "MJPEG 320x240")
    (row,) = await check_devices(*devices(url))  # the camera is gone
    assert row.status == "fail"
    assert "cannot open the stream" in row.detail


async def test_a_stream_cut_mid_frame_is_reconnected_by_the_worker_itself() -> None:
    async with MjpegServer(courtyard(duration_s=60)) as camera:
        cfg = AnalyticsConfig.model_validate({"stream_url": camera.url})
        runner = AnalyticsRunner("yard-cam", cfg)
        sink = Sink()
        async with running(runner, sink):
            await sink.until(lambda: sink.states and sink.states[-1][0])
            await camera.drop_clients()  # the connection aborted under the chunked body
            await sink.until(lambda: any(not online for online, _ in sink.states))
            await sink.until(lambda: sink.states[-1][0] and camera.clients == 2)
            assert runner.restarts == 0  # the worker survived and reconnected
    down = [r for online, r in sink.states if not online]
    assert len(down) == 1
    assert down[0] is not None
    assert down[0].startswith("the stream was cut")


async def test_a_stuck_worker_is_killed_and_restarted() -> None:
    import os
    import signal

    async with MjpegServer(courtyard(duration_s=60)) as camera:
        cfg = AnalyticsConfig.model_validate({"stream_url": camera.url})
        # a decoder stuck inside a library sends nothing: silent for 3 s means stuck here
        runner = AnalyticsRunner("yard-cam", cfg, silence_s=3)
        sink = Sink()
        async with running(runner, sink):
            await sink.until(lambda: sink.states and sink.states[-1][0])
            stuck = runner.pid
            assert stuck is not None
            os.kill(stuck, signal.SIGSTOP)
            await sink.until(lambda: runner.restarts == 1 and runner.pid != stuck)
            await sink.until(lambda: sink.states[-1] == (True, None))
    assert "analytics worker stuck (silent for 3 s), killed" in [r for _, r in sink.states]
    with pytest.raises(ProcessLookupError):
        os.kill(stuck, 0)  # the stuck one is gone, not left behind


_PARENT = """
import asyncio, sys
from edge_agent.drivers.camera_analytics.config import AnalyticsConfig
from edge_agent.drivers.camera_analytics.runner import AnalyticsRunner

class Sink:
    async def found(self, events): pass
    def stream_state(self, online, reason): pass
    async def stats(self, stats): print("worker", runner.pid, flush=True)

runner = AnalyticsRunner("cam", AnalyticsConfig.model_validate({"stream_url": sys.argv[1]}))
asyncio.run(runner.run(Sink()))
"""


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for a reaper counts: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_worker_ends_when_the_agent_is_killed() -> None:
    import sys

    async with MjpegServer(courtyard(duration_s=60)) as camera:
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PARENT, camera.url, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert agent.stdout is not None
            line = await asyncio.wait_for(agent.stdout.readline(), 60)
            worker = int(line.split()[1])
        finally:
            agent.kill()  # SIGKILL: no clean-up of any kind in the agent
            await agent.wait()
        async with asyncio.timeout(30):  # its next report (every 5 s) finds the pipe closed
            while not _gone(worker):
                await asyncio.sleep(0.2)
