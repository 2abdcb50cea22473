"""The ``analytics`` part of ``edge-agent bench``: its target, its rows, and tiny real runs
(never asserting speed)."""

from __future__ import annotations

from typing import Any

from edge_agent.tools import bench
from edge_agent.tools.bench_analytics import frames_per_core, live_cameras


def test_analytics_is_a_part_with_the_issue_target() -> None:
    assert bench.parse_only("analytics,campus") == ["campus", "analytics"]
    assert "analytics" in bench.parse_only(",".join(bench.PARTS))
    results: dict[str, Any] = {"analytics": {"cameras_half_core": 7.9}}
    (verdict,) = [v for v in bench.evaluate(results) if v.target.part == "analytics"]
    assert verdict.target.limit == 8
    assert verdict.status == "MISS"
    results["analytics"]["cameras_half_core"] = 8.0
    (verdict,) = [v for v in bench.evaluate(results) if v.target.part == "analytics"]
    assert verdict.status == "PASS"


def test_the_report_shows_the_analytics_figures() -> None:
    results = {
        "analytics": {
            "cameras_half_core": 40.0,
            "frames_per_s_one_core": 1200.0,
            "camera_cpu_percent": 1.25,
            "cameras": 8,
            "fps_per_camera": 5.0,
            "worker_rss_mib": 77.0,
            "worker_pss_mib": 40.0,
        }
    }
    report = bench.render_report(results, {})
    assert "analytics: cameras at 5 fps in half a core" in report
    assert "1,200 /s" in report
    assert "CPU of one camera (8 at 5.00 fps)" in report
    assert "77.0 (40.0) MiB" in report


def test_frames_per_core_analyses_frames() -> None:
    result = frames_per_core(0.3)
    assert result["frames"] > 0
    assert result["frames_per_s_one_core"] > 0


async def test_live_cameras_measures_real_workers() -> None:
    result = await live_cameras(1, duration_s=6.0, warmup_s=0.0)
    assert result["cameras"] == 1
    assert result["fps_per_camera"] > 0  # frames were analysed between two reports
    assert result["camera_cpu_percent"] > 0
    assert result["cameras_half_core"] > 0
    assert result["worker_rss_mib"] > 0
