"""The ``analytics`` part of ``edge-agent bench`` (issue #11): how many cameras can this gateway
analyse?

Two figures:

``frames_per_s_one_core``
    The worker's whole per-frame path (JPEG decode at the reduced size it uses, motion,
    tamper, tracking and line counting on the walkers scene with one zone and one line), run
    as fast as it goes in this process with OpenCV limited to one thread, divided by the CPU
    seconds it took: analysed frames per second per core.
``cameras_half_core``
    ``--cameras`` real worker processes (the agent's
    :class:`~edge_agent.drivers.camera_analytics.runner.AnalyticsRunner`), each reading its
    own simulated camera (:class:`~edge_agent.simulators.camera.mjpeg.MjpegServer` on
    loopback, 320x240 MJPEG at 5 fps, the walkers scene looping) for ``--analytics-duration``
    seconds after a warm-up. Each worker's CPU comes from ``/proc/<pid>/stat``; the figure is
    50 % of one core divided by the mean CPU share of one camera. The cameras' servers run
    in the bench process and are not counted.

OpenCV is needed (``pip install 'campus-edge-agent[analytics]'``); without it the part
reports an error and the others run.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from edge_agent.driver import Event

#: the analytics block of every benchmarked camera
BENCH_ANALYTICS: dict[str, Any] = {
    "fps": 5,
    "zones": [{"name": "yard", "points": [[0, 0.45], [1, 0.45], [1, 1], [0, 1]]}],
    "lines": [{"name": "gate", "points": [[0, 0.5], [1, 0.5]], "count_period_s": 60}],
}


class _Counter:
    """An AnalyticsSink that only counts."""

    def __init__(self) -> None:
        self.events = 0
        self.online = False
        self.reasons: list[str] = []

    async def found(self, events: list[Event]) -> None:
        self.events += len(events)

    def stream_state(self, online: bool, reason: str | None) -> None:
        self.online = online
        if reason:
            self.reasons.append(reason)

    async def stats(self, stats: dict[str, Any]) -> None:
        return None


def frames_per_core(duration_s: float = 10.0) -> dict[str, Any]:
    """Analysed frames per CPU second in this process (OpenCV on one thread)."""
    import cv2
    import numpy as np

    from edge_agent.drivers.camera_analytics.config import AnalyticsConfig
    from edge_agent.drivers.camera_analytics.engine import Analyzer
    from edge_agent.simulators.camera.mjpeg import JpegCache
    from edge_agent.simulators.camera.scenes import walkers

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        scene = walkers(seed=1)
        cache = JpegCache(scene)
        jpegs = [np.frombuffer(cache.jpeg(i), np.uint8) for i in range(scene.frame_count)]
        cfg = AnalyticsConfig.model_validate({"stream_url": "http://127.0.0.1/", **BENCH_ANALYTICS})
        analyzer = Analyzer(cfg)
        frames = 0
        ts = 1.0e9
        cpu0 = time.process_time()
        while time.process_time() - cpu0 < duration_s:
            for buf in jpegs:
                gray = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_2)
                assert gray is not None
                analyzer.process(gray, ts)
                ts += 1 / cfg.fps
                frames += 1
        cpu = time.process_time() - cpu0
    finally:
        cv2.setNumThreads(threads)
    return {
        "frames": frames,
        "cpu_s": round(cpu, 2),
        "frames_per_s_one_core": round(frames / cpu, 1),
        "frame": f"{scene.width}x{scene.height} JPEG, analysed at {cfg.analysis_width} px wide",
    }


async def live_cameras(cameras: int, duration_s: float, warmup_s: float = 10.0) -> dict[str, Any]:
    """``cameras`` workers on simulated MJPEG cameras; their CPU while they analyse at 5 fps."""
    from edge_agent.drivers.camera_analytics.config import AnalyticsConfig
    from edge_agent.drivers.camera_analytics.runner import AnalyticsRunner
    from edge_agent.simulators.camera.mjpeg import MjpegServer
    from edge_agent.simulators.camera.scenes import walkers
    from edge_agent.tools.bench import BenchError, ProcSampler

    scene = walkers(seed=1)
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(MjpegServer(scene)) for _ in range(cameras)]
        for srv in servers[1:]:
            srv.cache = servers[0].cache  # encode the scene once
        sinks = [_Counter() for _ in servers]
        runners = []
        tasks = []
        for i, (srv, sink) in enumerate(zip(servers, sinks, strict=True)):
            cfg = AnalyticsConfig.model_validate({"stream_url": srv.url, **BENCH_ANALYTICS})
            runner = AnalyticsRunner(f"bench-cam-{i + 1}", cfg)
            runners.append(runner)
            tasks.append(asyncio.create_task(runner.run(sink)))
        try:
            deadline = time.monotonic() + 60
            while not all(s.online for s in sinks):
                if time.monotonic() > deadline:
                    reasons = sorted({r for s in sinks for r in s.reasons})
                    raise BenchError(f"analytics workers did not start: {reasons}")
                await asyncio.sleep(0.2)
            await asyncio.sleep(warmup_s)
            samplers = [ProcSampler(r.pid) for r in runners if r.pid is not None]
            cpu0 = [s.cpu_seconds() for s in samplers]
            frames0 = [(r.frames_at, r.frames) for r in runners]
            t0 = time.monotonic()
            await asyncio.sleep(duration_s)
            wall = time.monotonic() - t0
            cpu = [s.cpu_seconds() - c for s, c in zip(samplers, cpu0, strict=True)]
            # frames analysed between two of each worker's reports (every 5 s)
            fps = [
                (r.frames - f0) / (r.frames_at - at0)
                for r, (at0, f0) in zip(runners, frames0, strict=True)
                if r.frames_at is not None and at0 is not None and r.frames_at > at0
            ]
            rss = [s.rss_bytes() for s in samplers]
            pss = [_pss_bytes(r.pid) for r in runners if r.pid is not None]
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    per_camera = [100.0 * c / wall for c in cpu]
    mean = statistics.fmean(per_camera)
    return {
        "cameras": cameras,
        "seconds": round(wall, 1),
        "camera_cpu_percent": round(mean, 2),
        "camera_cpu_percent_max": round(max(per_camera), 2),
        "cameras_cpu_percent_total": round(sum(per_camera), 1),
        "fps_per_camera": round(statistics.fmean(fps), 2) if fps else None,
        "worker_rss_mib": round(statistics.fmean(rss) / 1024 / 1024, 1),
        # RSS counts the OpenCV and numpy libraries in every worker; PSS shares them out
        "worker_pss_mib": round(statistics.fmean(pss) / 1024 / 1024, 1) if all(pss) else None,
        "cameras_half_core": round(50.0 / mean, 1) if mean > 0 else None,
        "events": sum(s.events for s in sinks),
    }


def _pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` (0 where ``/proc/<pid>/smaps_rollup`` is missing)."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    return 0


def run_analytics_part(
    cameras: int = 8, duration_s: float = 30.0, core_s: float = 10.0
) -> dict[str, Any]:
    """Both figures of the part."""
    from edge_agent.tools.bench import BenchError, _progress

    try:
        import cv2  # noqa: F401
    except ImportError as err:
        raise BenchError(
            f"analytics: OpenCV is missing ({err}): pip install 'campus-edge-agent[analytics]'"
        ) from err
    _progress(f"analytics: decode + analysis on one core for {core_s:g} CPU seconds")
    result = frames_per_core(core_s)
    _progress(f"analytics: {cameras} worker processes on simulated cameras at 5 fps, "
              f"{duration_s:g} s")  # fmt: skip
    result.update(asyncio.run(live_cameras(cameras, duration_s)))
    return result


__all__ = ["BENCH_ANALYTICS", "frames_per_core", "live_cameras", "run_analytics_part"]
