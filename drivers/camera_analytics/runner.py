"""The agent's side of one camera's analytics: start its worker process, read what it finds,
restart it when it dies (issue #11).

This is the small surface a camera kind uses: build ``AnalyticsRunner(device_id, cfg, ...)``
with an :class:`~edge_agent.drivers.camera_analytics.config.AnalyticsConfig` (an ONVIF or
native camera kind fills ``stream_url`` with the substream URI it found) and
``await runner.run(sink)`` in its own ``run``; ``runner.health()`` is the worker's line in
``ROOT/health``. Nothing here imports OpenCV: only the worker process does, so an agent
without analytics never loads it.

- The worker is a ``multiprocessing`` ``spawn`` process (a fresh interpreter, one per
  camera); its messages come through a pipe watched by the event loop (``add_reader``), so
  no thread waits on it and a slow camera never holds the loop.
- A worker that dies (or sends nothing for ``silence_s``: a decoder stuck in a library) is
  restarted with backoff 1 s → 300 s; logged once at WARNING, then at DEBUG while it keeps
  dying, and at INFO once it runs again; a worker that ran a minute starts the backoff over.
- CPU share: the worker's own CPU time (``time.process_time`` in it) over wall time between
  two of its stats messages, in percent of one core.

分析进程管理：每台摄像机一个 spawn 子进程，通过管道接收事件；子进程退出或无响应时退避重启，
只记录一次警告；CPU 占用按子进程自身的 CPU 时间计算。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge_agent.driver import Event
from edge_agent.drivers.camera_analytics.config import AnalyticsConfig

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 300.0
#: a worker that lived this long starts the backoff over when it dies
STABLE_S = 60.0


class AnalyticsSink(Protocol):
    """Where a runner delivers what its worker reports (the camera's driver)."""

    async def found(self, events: list[Event]) -> None:
        """Events found in a frame (motion, tamper, crossings, counts)."""
        ...

    def stream_state(self, online: bool, reason: str | None) -> None:
        """The substream delivers frames (True) or cannot be read / the worker is down."""
        ...

    async def stats(self, stats: dict[str, Any]) -> None:
        """The worker's periodic statistics (low light, frames, CPU)."""
        ...


class AnalyticsRunner:
    """One camera's worker process, kept running until cancelled."""

    def __init__(
        self,
        device_id: str,
        cfg: AnalyticsConfig,
        *,
        password: str | None = None,
        tz_name: str | None = None,
        silence_s: float | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device_id = device_id
        self.cfg = cfg
        self.password = password
        self.tz_name = tz_name
        # the worker sends stats every 5 s and reconnects within its own timeouts
        self.silence_s = silence_s if silence_s is not None else max(30.0, 3 * cfg.timeout_s)
        self.rng = rng or random.Random()
        self.clock = clock
        self.restarts = 0
        self.process: Any = None
        self.frames = 0
        #: when ``frames`` was last reported (the runner's clock)
        self.frames_at: float | None = None
        self.cpu_percent: float | None = None
        self.fps: float | None = None
        self._last_cpu: tuple[float, float, int] | None = None  # (wall, cpu_s, frames)
        self._down_logged = False
        self._failures = 0

    @property
    def pid(self) -> int | None:
        proc = self.process
        return None if proc is None else proc.pid

    def health(self) -> dict[str, Any]:
        """The worker's line for ``ROOT/health``."""
        proc = self.process
        return {
            "pid": self.pid,
            "alive": bool(proc is not None and proc.is_alive()),
            "cpu_percent": self.cpu_percent,
            "fps": self.fps,
            "frames": self.frames,
            "restarts": self.restarts,
        }

    async def run(self, sink: AnalyticsSink) -> None:
        """Run the worker, restarting it with backoff, until cancelled."""
        attempt = 0
        while True:
            started = self.clock()
            reason = await self._run_once(sink)
            lived = self.clock() - started
            if lived >= STABLE_S:
                attempt = 0
            delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2.0**attempt)
            delay *= 0.5 + 0.5 * self.rng.random()
            attempt += 1
            self.restarts += 1
            self._failures += 1
            message = f"analytics worker {reason}"
            sink.stream_state(False, message)
            if not self._down_logged:
                self._down_logged = True
                log.warning(
                    "%s: %s; restarting in %.0f s / 分析进程异常退出，稍后重启",
                    self.device_id,
                    message,
                    delay,
                )
            else:
                log.debug(
                    "%s: %s (%d times); restarting in %.1f s",
                    self.device_id,
                    message,
                    self._failures,
                    delay,
                )
            await asyncio.sleep(delay)

    async def _run_once(self, sink: AnalyticsSink) -> str:
        """Start a worker and relay its messages until it dies; the reason it ended."""
        from edge_agent.drivers.camera_analytics import worker

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=worker.main,
            args=(child, self.cfg.model_dump_json(), self.password, self.tz_name),
            name=f"analytics-{self.device_id}",
            daemon=True,
        )
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        reader_added = False
        try:
            proc.start()
            self.process = proc
            child.close()
            self._last_cpu = None

            def readable() -> None:
                try:
                    while parent.poll():
                        inbox.put_nowait(parent.recv())
                except (EOFError, OSError):
                    loop.remove_reader(parent.fileno())
                    inbox.put_nowait(None)

            loop.add_reader(parent.fileno(), readable)
            reader_added = True
            while True:
                try:
                    msg = await asyncio.wait_for(inbox.get(), timeout=self.silence_s)
                except TimeoutError:
                    return f"stuck (silent for {self.silence_s:g} s), killed"
                if msg is None:
                    await self._reap(proc)
                    return f"exited (code {proc.exitcode})"
                await self._handle(msg, sink)
        finally:
            if reader_added:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(parent.fileno())
            parent.close()
            with contextlib.suppress(OSError):
                child.close()
            await self._reap(proc)

    async def _handle(self, msg: Any, sink: AnalyticsSink) -> None:
        kind = msg[0]
        if kind == "events":
            await sink.found([Event(t, dict(data), ts) for t, data, ts in msg[1]])
        elif kind == "state":
            online = msg[1] == "online"
            if online and self._down_logged:
                self._down_logged = False
                self._failures = 0
                log.info("%s: analytics worker running again / 分析进程已恢复", self.device_id)
            sink.stream_state(online, msg[2])
        elif kind == "stats":
            stats = msg[1]
            now = self.clock()
            cpu, frames = float(stats["cpu_s"]), int(stats["frames"])
            if self._last_cpu is not None:
                wall0, cpu0, frames0 = self._last_cpu
                if now > wall0:
                    self.cpu_percent = round(100.0 * max(0.0, cpu - cpu0) / (now - wall0), 1)
                    self.fps = round((frames - frames0) / (now - wall0), 2)
            self._last_cpu = (now, cpu, frames)
            self.frames, self.frames_at = frames, now
            await sink.stats(stats)

    async def _reap(self, proc: Any) -> None:
        """Stop ``proc`` if it still runs and wait for it without blocking the loop."""
        if proc is None or proc.pid is None:
            return
        if proc.is_alive():
            proc.terminate()
            for _ in range(100):
                if not proc.is_alive():
                    break
                await asyncio.sleep(0.02)
            else:
                proc.kill()
                for _ in range(500):  # SIGKILL cannot be refused: gone within moments
                    if not proc.is_alive():
                        break
                    await asyncio.sleep(0.02)
        proc.join(0)

    def kill_worker(self) -> None:
        """Kill the worker (SIGKILL), as the kernel's OOM killer would: for tests and
        ``doctor``; the runner restarts it."""
        proc = self.process
        if proc is not None and proc.is_alive():
            proc.kill()
