"""Video analytics on scripted scenes (issue #11): exact people counts, tamper within 30 s of
scene time, nothing at all on a static noisy scene with illumination drift, lights off as low
light, zone schedules.

Every frame goes the way a camera's would: drawn by the simulator, JPEG-encoded, decoded by
the worker's decoder at half size in gray, then analysed with its scene time (frame index /
fps) as its time stamp. No wall clock anywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.drivers.camera_analytics.config import AnalyticsConfig, Window
from edge_agent.drivers.camera_analytics.engine import Analyzer, armed
from edge_agent.drivers.camera_analytics.worker import MjpegSplitter, Pacer, jpeg_size
from edge_agent.drivers.camera_analytics.worker import plain as worker_plain
from edge_agent.simulators.camera import scenes
from edge_agent.simulators.camera.mjpeg import part

#: scene time 0 of most tests: Monday 7 September 2026, 22:00 UTC (after hours)
NIGHT = datetime(2026, 9, 7, 22, 0, tzinfo=UTC).timestamp()
#: Monday 10:00 UTC (school hours)
DAY = datetime(2026, 9, 7, 10, 0, tzinfo=UTC).timestamp()

YARD = {"name": "yard", "points": [[0, 0.45], [1, 0.45], [1, 1], [0, 1]]}
GATE = {"name": "gate", "points": [[0, 0.5], [1, 0.5]], "count_period_s": 60}


def config(**analytics: Any) -> AnalyticsConfig:
    return AnalyticsConfig.model_validate({"stream_url": "http://127.0.0.1/stream", **analytics})


FULL = config(zones=[YARD], lines=[GATE])


def jpeg_gray(frame: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    gray = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_2)
    assert gray is not None
    return gray


@cache
def _frames(scene: scenes.Scene) -> tuple[np.ndarray, ...]:
    return tuple(jpeg_gray(scene.frame(i)) for i in range(scene.frame_count))


def analyse(
    scene: scenes.Scene, cfg: Any = FULL, t0: float = NIGHT
) -> tuple[Analyzer, list[tuple[float, str, dict[str, Any]]]]:
    """Run ``scene`` through a fresh analyzer; its events with their scene time."""
    analyzer = Analyzer(cfg)
    found = []
    for i, gray in enumerate(_frames(scene)):
        for type_, data, ts in analyzer.process(gray, t0 + scene.time_of(i)):
            found.append((round(ts - t0, 2), type_, data))
    return analyzer, found


def of_type(found: list[tuple[float, str, dict[str, Any]]], type_: str) -> list[Any]:
    return [f for f in found if f[1] == type_]


# -- people counting ---------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n_in", "n_out"), [(1, 5, 3), (2, 3, 6), (7, 4, 4)])
def test_walkers_are_counted_exactly(seed: int, n_in: int, n_out: int) -> None:
    scene = scenes.walkers(seed=seed, n_in=n_in, n_out=n_out)
    analyzer, found = analyse(scene)
    crossed = of_type(found, "line_crossed")
    assert [d["direction"] for _, _, d in crossed].count("in") == n_in, crossed
    assert [d["direction"] for _, _, d in crossed].count("out") == n_out, crossed
    assert analyzer.totals() == {"gate": (n_in, n_out)}
    # each crossing is reported when its walker is on the line, within a second
    expected = sorted(w.crossing_s(scene.line_y) for w in scene.walkers)
    assert [t for t, _, _ in crossed] == pytest.approx(expected, abs=1.0)
    assert not of_type(found, "camera_tamper")


def test_people_count_periods_add_up_and_end_on_the_clock() -> None:
    scene = scenes.walkers(seed=1, n_in=5, n_out=3)
    t0 = NIGHT - 30  # a period ends 30 s into the scene, at 22:00:00
    _, found = analyse(scene, t0=t0)
    counts = of_type(found, "people_count")
    assert [t for t, _, _ in counts] == [30.0]
    for t, _, data in counts:
        assert data["period_s"] == 60
        assert (t0 + t) % 60 == 0
    assert 0 < counts[0][2]["in"] + counts[0][2]["out"] < 8  # crossings on both sides
    crossed_before = of_type([f for f in found if f[0] < counts[-1][0]], "line_crossed")
    assert sum(d["in"] for _, _, d in counts) == sum(
        1 for _, _, d in crossed_before if d["direction"] == "in"
    )
    assert sum(d["out"] for _, _, d in counts) == sum(
        1 for _, _, d in crossed_before if d["direction"] == "out"
    )


def test_swapping_a_lines_points_swaps_in_and_out() -> None:
    scene = scenes.walkers(seed=1, n_in=5, n_out=3)
    swapped = {**GATE, "points": [[1, 0.5], [0, 0.5]]}
    analyzer, _ = analyse(scene, config(lines=[swapped]))
    assert analyzer.totals() == {"gate": (3, 5)}


def test_a_line_covering_half_the_width_counts_only_walkers_that_cross_it() -> None:
    scene = scenes.walkers(seed=1, n_in=5, n_out=3)
    left = {**GATE, "points": [[0, 0.5], [0.6, 0.5]]}
    analyzer, _ = analyse(scene, config(lines=[left]))
    end = scene.width * 0.6
    n_in = sum(1 for w in scene.walkers if w.x < end and w.direction == "down")
    n_out = sum(1 for w in scene.walkers if w.x < end and w.direction == "up")
    assert (n_in, n_out) != (5, 3)
    assert analyzer.totals() == {"gate": (n_in, n_out)}


# -- tamper ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "reason"),
    [(scenes.covered, "covered"), (scenes.defocused, "defocused"), (scenes.shifted, "moved")],
)
def test_tamper_is_reported_after_its_hold_and_within_30_s(build: Any, reason: str) -> None:
    scene = build(seed=3)
    hold = 15.0
    _, found = analyse(scene, config(zones=[YARD], lines=[GATE], tamper={"hold_s": hold}))
    tamper = of_type(found, "camera_tamper")
    assert tamper, f"no tamper in {scene.name}"
    t, _, data = tamper[0]
    assert data == {"reason": reason, "active": True}
    assert scene.event_at_s + hold <= t <= scene.event_at_s + 30.0
    # the condition lasts to the end of the scene: reported once, never cleared
    assert len(tamper) == 1
    # a blurring or covered lens is not people crossing
    assert not of_type(found, "line_crossed")


def test_the_hold_is_configurable() -> None:
    scene = scenes.covered(seed=3)
    _, found = analyse(scene, config(tamper={"hold_s": 25}))
    (t, _, _), *_ = of_type(found, "camera_tamper")
    assert scene.event_at_s + 25 <= t <= scene.event_at_s + 30


def test_a_moved_view_becomes_the_reference_after_relearn_s() -> None:
    scene = scenes.shifted(seed=3, after_s=60)
    _, found = analyse(scene, config(tamper={"hold_s": 10, "relearn_s": 20}))
    tamper = of_type(found, "camera_tamper")
    assert [d for _, _, d in tamper] == [
        {"reason": "moved", "active": True},
        {"reason": "moved", "active": False},
    ]
    assert tamper[1][0] - tamper[0][0] == pytest.approx(20, abs=0.5)


def test_a_static_noisy_scene_with_illumination_drift_raises_nothing() -> None:
    # five minutes: a whole drift period (±12 %), 1,500 frames of fresh sensor noise
    scene = scenes.courtyard(seed=5, duration_s=300)
    analyzer, found = analyse(scene)
    assert [f for f in found if f[1] != "people_count"] == []
    assert all(d["in"] == d["out"] == 0 for _, _, d in found)
    assert analyzer.tamper is None
    assert not analyzer.low_light
    # the drift was really there: the mean brightness moved by over 10 %
    bright = [float(g.mean()) for g in _frames(scene)]
    assert max(bright) / min(bright) > 1.2


def test_lights_off_is_low_light_not_tamper() -> None:
    scene = scenes.lights_off(seed=3, after_s=60)
    analyzer, found = analyse(scene)
    assert analyzer.low_light
    assert not of_type(found, "camera_tamper")
    assert not of_type(found, "motion")
    assert not of_type(found, "line_crossed")


def test_low_light_is_entered_only_past_its_threshold() -> None:
    # a darker threshold than the scene's night: lights off is then an ordinary dark scene
    scene = scenes.lights_off(seed=3, after_s=30)
    analyzer, _ = analyse(scene, config(tamper={"low_light_luma": 5}))
    assert not analyzer.low_light


# -- zones and schedules -----------------------------------------------------------------------


def test_after_hours_motion_in_the_zone_is_reported() -> None:
    night_only = {**YARD, "schedule": [{"start": "18:00", "end": "07:00"}]}
    scene = scenes.walkers(seed=1, n_in=2, n_out=1)
    _, found = analyse(scene, config(zones=[night_only]), t0=NIGHT)
    motion = of_type(found, "motion")
    assert motion
    assert motion[0][2] == {"zone": "yard", "active": True}
    # active and inactive alternate, and the scene ends quiet
    assert [d["active"] for _, _, d in motion] == [True, False] * (len(motion) // 2)
    assert scene.walkers[0].start_s < motion[0][0] < scene.walkers[0].start_s + 5


def test_motion_outside_the_schedule_is_not_reported() -> None:
    night_only = {**YARD, "schedule": [{"start": "18:00", "end": "07:00"}]}
    scene = scenes.walkers(seed=1, n_in=2, n_out=1)
    _, found = analyse(scene, config(zones=[night_only]), t0=DAY)
    assert of_type(found, "motion") == []
    # the same scene and zone without a schedule: always watched
    _, found = analyse(scene, config(zones=[YARD]), t0=DAY)
    assert of_type(found, "motion")


def test_the_schedule_ending_ends_an_active_motion() -> None:
    scene = scenes.walkers(seed=1, n_in=2, n_out=1)
    # armed until 22:00:13, while the first walker is in the yard
    t0 = NIGHT - 13
    night = {**YARD, "schedule": [{"start": "18:00", "end": "22:00"}], "hold_s": 30}
    _, found = analyse(scene, config(zones=[night]), t0=t0)
    motion = of_type(found, "motion")
    assert [d["active"] for _, _, d in motion] == [True, False]
    assert motion[1][0] == pytest.approx(13, abs=0.3)


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    # 7 September 2026 is a Monday
    return datetime(2026, 9, 7 + day, hour, minute, tzinfo=UTC)


def test_windows_past_midnight_belong_to_the_day_they_start() -> None:
    sunday_night = [Window(days=["sun"], start="22:00", end="06:00")]
    assert armed(sunday_night, _at(6, 23))  # Sunday 23:00
    assert armed(sunday_night, _at(7, 5, 59))  # Monday 05:59
    assert not armed(sunday_night, _at(7, 6))  # Monday 06:00
    assert not armed(sunday_night, _at(0, 23))  # Monday 23:00
    assert not armed(sunday_night, _at(1, 5))  # Tuesday 05:00
    weekday_day = [Window(days=["mon", "tue"], start="08:00", end="17:30")]
    assert armed(weekday_day, _at(1, 17, 29))
    assert not armed(weekday_day, _at(1, 17, 30))
    assert not armed(weekday_day, _at(2, 9))  # Wednesday
    assert armed([], _at(2, 9))


# -- what the worker does with bytes -----------------------------------------------------------


def _jpeg(seed: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", scenes.courtyard(seed=seed).frame(0))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("with_length", [True, False])
def test_mjpeg_splitter_returns_every_frame_whatever_the_chunks(with_length: bool) -> None:
    frames = [_jpeg(1), _jpeg(2), _jpeg(3)]
    if with_length:
        stream = b"".join(part(f) for f in frames)
    else:  # cameras that send no Content-Length: cut at the JPEG's end marker
        stream = b"".join(b"--b\r\nContent-Type: image/jpeg\r\n\r\n" + f + b"\r\n" for f in frames)
    for size in (97, 4096, len(stream)):
        splitter = MjpegSplitter()
        got = [j for i in range(0, len(stream), size) for j in splitter.feed(stream[i : i + size])]
        assert got == frames, size
    # two chunks, cut anywhere in the headers, the markers or between the parts
    first = len(frames[0]) + (100 if with_length else 60)
    for cut in [*range(0, 120), *range(first - 40, first + 120)]:
        splitter = MjpegSplitter()
        got = [*splitter.feed(stream[:cut]), *splitter.feed(stream[cut:])]
        assert got == frames, cut


def test_mjpeg_splitter_skips_garbage_in_bounded_memory() -> None:
    splitter = MjpegSplitter()
    assert list(splitter.feed(b"\x00" * 5_000_000)) == []
    assert splitter.garbage == 5_000_000
    frame = _jpeg(1)
    assert list(splitter.feed(part(frame))) == [frame]


def test_jpeg_size_reads_the_frame_header() -> None:
    assert jpeg_size(_jpeg(1)) == (320, 240)
    _, buf = cv2.imencode(".jpg", np.zeros((90, 160, 3), np.uint8))
    assert jpeg_size(buf.tobytes()) == (160, 90)
    assert jpeg_size(b"\xff\xd8\x00garbage") is None


def test_the_pacer_keeps_five_of_twenty_five_frames_a_second() -> None:
    now = [0.0]
    pacer = Pacer(5.0, clock=lambda: now[0])
    kept = []
    for i in range(250):  # ten seconds at 25 fps
        now[0] = i / 25
        if pacer.due():
            kept.append(now[0])
    assert len(kept) in (50, 51)  # 0.0 s, then every 0.2 s
    assert pacer.skipped == 250 - len(kept)
    assert np.diff(kept)[1:] == pytest.approx(0.2)


# -- scenes ------------------------------------------------------------------------------------


def test_scenes_are_deterministic_frame_by_frame() -> None:
    a, b = scenes.walkers(seed=4), scenes.walkers(seed=4)
    assert np.array_equal(a.frame(90), b.frame(90))
    assert np.array_equal(a.frame(90), a.frame(90))  # in any order
    assert not np.array_equal(a.frame(90), scenes.walkers(seed=5).frame(90))
    assert not np.array_equal(a.frame(90), a.frame(91))  # fresh noise every frame
    assert replace(a, noise_sigma=0).frame(3).shape == (scenes.HEIGHT, scenes.WIDTH, 3)


# -- the runtime without OpenCV ----------------------------------------------------------------


def test_the_agent_runs_without_opencv_and_only_the_kind_is_disabled() -> None:
    code = """
import sys
sys.modules["cv2"] = None  # as if opencv-python-headless were not installed
from edge_agent import registry
import edge_agent.supervisor
assert "modbus" in registry.drivers(["modbus"])
assert registry.drivers(["camera_analytics"]) == {}
print(registry.unavailable["camera_analytics"])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'campus-edge-agent[analytics]'" in out.stdout


def test_the_kind_loads_without_importing_opencv() -> None:
    code = """
import sys
from edge_agent import registry
cls = registry.drivers(["camera_analytics"])["camera_analytics"]
import edge_agent.drivers.camera_analytics.runner
assert "cv2" not in sys.modules and "numpy" not in sys.modules, "imported at load"
print(cls.kind)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "camera_analytics"


def test_someone_swaying_on_the_line_is_counted_once() -> None:
    # stops with the centre on the line for 8 s, swaying 6 px (3 px after scaling): inside
    # the hysteresis band (4 % of the height), so only the crossing as a whole counts
    waiting = scenes.Walker(
        start_s=4.0, x=120, direction="down", speed_px_s=60, pause_s=8.0, sway_px=6.0
    )
    passing = scenes.Walker(start_s=6.0, x=250, direction="up", speed_px_s=60)
    scene = scenes.Scene("waiting", seed=4, duration_s=22.0, walkers=(waiting, passing))
    analyzer, found = analyse(scene, config(lines=[GATE]))
    assert analyzer.totals() == {"gate": (1, 1)}, of_type(found, "line_crossed")


def test_the_worker_reads_its_config_without_pydantic() -> None:
    # what the worker gets: the agent's validated config as JSON, read as plain namespaces
    night_only = {**YARD, "schedule": [{"days": ["mon"], "start": "18:00", "end": "07:00"}]}
    cfg = config(zones=[night_only], lines=[GATE], tamper={"hold_s": 12})
    scene = scenes.walkers(seed=1, n_in=2, n_out=1)
    _, validated = analyse(scene, cfg)
    _, plain = analyse(scene, worker_plain(json.loads(cfg.model_dump_json())))
    assert plain == validated
    assert of_type(plain, "motion")
    code = """
import sys
from edge_agent.drivers.camera_analytics import engine, worker
assert "pydantic" not in sys.modules, "the worker imports pydantic"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
