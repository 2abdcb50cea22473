"""On-device video analytics of one camera (``kind: camera_analytics``, issue #11).

A push driver: :class:`~edge_agent.drivers.camera_analytics.runner.AnalyticsRunner` keeps a
worker process reading the camera's substream, and what it finds is committed through the
device's link: ``motion`` (``zone``, ``active``), ``camera_tamper`` (``reason``, ``active``),
``line_crossed`` (``line``, ``direction``) and ``people_count`` (``line``, ``in``, ``out``,
``period_s``). Telemetry every minute and when low light changes: ``fps`` (frames analysed
a second), ``cpu_percent`` (the worker's share of one core) and ``low_light``. The worker's
CPU share is also on ``ROOT/health`` (``workers``), through :meth:`worker_health`.

The device is ``online`` while frames are analysed, ``offline`` with the reason when the
stream cannot be read or the worker is being restarted.

OpenCV is imported only in the worker process, so this module (which the registry and
``check-config`` import) loads without it.

视频分析驱动：子进程读取子码流，结果以事件提交；每分钟上报分析帧率、CPU 占用和低照度状态。
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from typing import Any, ClassVar

from edge_agent.config.secrets import SecretError, resolve
from edge_agent.driver import DeviceLink, DriverContext, Event, MetricInfo
from edge_agent.drivers.camera_analytics.config import CameraAnalyticsDevice
from edge_agent.drivers.camera_analytics.runner import AnalyticsRunner
from edge_agent.errors import DeviceUnavailable, NotDurableError

log = logging.getLogger(__name__)

# Checked, not imported: OpenCV loads only in the worker processes, but a kind that cannot
# analyse anything is disabled at once (one log line, and check-config says why)
if importlib.util.find_spec("cv2") is None:
    raise ImportError(
        "OpenCV is not installed: pip install 'campus-edge-agent[analytics]' "
        "(opencv-python-headless) / 未安装 OpenCV"
    )

KIND = "camera_analytics"
TELEMETRY_EVERY_S = 60.0
#: events kept in memory while the outbox refuses them (disk full, clock unsynchronised)
MAX_PENDING = 1000


class CameraAnalyticsDriver:
    """One camera's analytics (see the module docstring)."""

    kind: ClassVar[str] = KIND
    Config: ClassVar[type[CameraAnalyticsDevice]] = CameraAnalyticsDevice

    def __init__(self, config: CameraAnalyticsDevice, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx
        self.runner: AnalyticsRunner | None = None
        self._link: DeviceLink | None = None
        self._pending: list[Event] = []
        self._low_light: bool | None = None
        self._last_telemetry = -float("inf")
        self.counts = {"events": 0, "dropped": 0, "not_durable": 0}
        self._refused_logged = False

    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo("fps", "1/s", "frames analysed per second"),
            MetricInfo("cpu_percent", "%", "CPU of the analytics worker, percent of one core"),
            MetricInfo("low_light", "", "the picture is too dark to check for tampering"),
        ]

    def meta(self) -> dict[str, Any]:
        a = self.config.analytics
        return {
            "protocol": "MJPEG" if a.stream_url.startswith("http") else "RTSP",
            "analytics": {
                "fps": a.fps,
                "zones": [z.name for z in a.zones],
                "lines": [line.name for line in a.lines],
                "tamper": a.tamper.enabled,
            },
        }

    def diagnostics(self) -> dict[str, Any]:
        runner = self.runner
        return {**self.counts, "worker": runner.health() if runner else None}

    def worker_health(self) -> dict[str, Any]:
        """This camera's worker for ``ROOT/health``: pid, alive, cpu_percent, fps, restarts."""
        if self.runner is None:
            return {"alive": False, "cpu_percent": None, "fps": None, "restarts": 0}
        return self.runner.health()

    async def check(self) -> str:
        """``doctor``: open the stream and wait for one frame (its size and how long it took)."""
        from edge_agent.drivers.camera_analytics.worker import StreamError, first_frame

        a = self.config.analytics
        try:
            password = resolve(a.password) if a.password is not None else None
            return await asyncio.to_thread(first_frame, a, password)
        except (StreamError, SecretError) as err:
            raise DeviceUnavailable(self.device_id, str(err)) from err

    async def run(self, link: DeviceLink) -> None:
        self._link = link
        a = self.config.analytics
        password = None
        if a.password is not None:
            try:
                password = resolve(a.password)
            except SecretError as err:
                link.state("offline", str(err))
                raise
        self.runner = AnalyticsRunner(
            self.device_id, a, password=password, tz_name=getattr(self.ctx.tz, "key", None)
        )
        link.state("offline", "starting the analytics worker")
        await self.runner.run(self)

    # -- AnalyticsSink -------------------------------------------------------------------------

    async def found(self, events: list[Event]) -> None:
        link = self._link
        assert link is not None
        batch = [*self._pending, *events]
        try:
            await link.commit(batch)
        except NotDurableError as err:
            # analytics cannot ask the camera again: keep a bounded backlog for the next try
            self.counts["not_durable"] += 1
            self._pending = batch[-MAX_PENDING:]
            self.counts["dropped"] += len(batch) - len(self._pending)
            if not self._refused_logged:
                self._refused_logged = True
                log.warning("%s: events held in memory: %s", self.device_id, err)
            link.state("degraded", str(err))
            return
        self._pending = []
        self.counts["events"] += len(batch)
        if self._refused_logged:
            self._refused_logged = False
            log.info("%s: events committed again", self.device_id)
            link.state("online")

    def stream_state(self, online: bool, reason: str | None) -> None:
        link = self._link
        assert link is not None
        link.state("online" if online else "offline", reason)

    async def stats(self, stats: dict[str, Any]) -> None:
        link = self._link
        assert link is not None
        assert self.runner is not None
        low = bool(stats.get("low_light"))
        now = time.monotonic()
        if low != self._low_light or now - self._last_telemetry >= TELEMETRY_EVERY_S:
            if low != self._low_light and self._low_light is not None:
                log.info(
                    "%s: %s / %s",
                    self.device_id,
                    "low light (no tamper checks)" if low else "light is back",
                    "光线不足，暂停防破坏检测" if low else "光线恢复",
                )
            self._low_light = low
            self._last_telemetry = now
            link.telemetry(
                {"fps": self.runner.fps, "cpu_percent": self.runner.cpu_percent, "low_light": low}
            )
        if self._pending:
            await self.found([])  # try the held events again
