"""The analysis of one camera's frames: motion in zones, tamper, people counting (issue #11).

Pure computation on grayscale frames and their time stamps: no I/O, no clock, no process.
The worker (:mod:`.worker`) feeds it decoded frames at ≤ 5 fps with their capture time; the
tests feed it a scripted scene's frames with scene time. It returns events as
``(type, data, ts)``; nothing else ever leaves it, no picture and no face.

How, on a frame scaled to ``analysis_width`` pixels:

- **Moving pixels**: OpenCV's MOG2 background subtractor (a per-pixel Gaussian mixture that
  learns sensor noise and follows slow illumination changes), opened to drop speckle and
  dilated to join a body's parts. A frame where more than half the pixels move is a global
  change (lights switched, a hand, the camera knocked): the model is re-learned from it and
  nothing in it counts as motion or as a person.
- **Zones**: the moving share of each zone's polygon; two frames in a row over
  ``min_area_pct`` while the zone's schedule is on → ``motion`` ``active: true``; ``hold_s``
  without → ``active: false`` (also when the schedule ends).
- **Lines**: moving blobs of a person's size (``min_person_pct`` .. 25 % of the frame) are
  tracked by nearest centroid; a track that was ``hysteresis_pct`` on one side of a line and
  is then as far on the other, within the line's ends, crossed it once (``line_crossed`` with
  ``direction``); ``people_count`` with the period's ``in`` and ``out`` at every multiple of
  ``count_period_s`` (so every camera's periods end at the same clock times).
- **Tamper**, against a reference learned in the first seconds and followed slowly while
  nothing is wrong: mean brightness under ``low_light_luma`` is low light (tamper checks
  rest); sharpness (variance of the Laplacian) under ``defocus_ratio`` of the reference's is
  ``covered`` when the coarse picture no longer correlates with the reference (a hand, a bag)
  and ``defocused`` when it does; a shift found by phase correlation over ``move_pct`` of the
  width is ``moved``; a sharp picture that no longer correlates is ``scene_change``. A
  condition is reported after ``hold_s`` of scene time (``camera_tamper`` ``active: true``)
  and cleared when it is gone for 2 s (a moved view or changed scene becomes the new
  reference after ``relearn_s``).

视频分析核心：背景减除得到运动像素；区域按时间表布防；计数线用质心跟踪和迟滞判断穿越方向；
防破坏检测以学习到的参考画面为基准（遮挡、失焦、移位、场景变化，持续 hold_s 才上报），
平均亮度过低视为低照度而不是破坏。只输出事件，不输出画面。
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, tzinfo
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    # The worker hands the engine the same fields as plain namespaces (worker.plain), so a
    # worker process never imports pydantic and the config models (~15 MiB each)
    from edge_agent.drivers.camera_analytics.config import AnalyticsConfig, Line, Window, Zone

#: OpenCV's functions return loosely typed arrays: one alias for every image here
Gray = npt.NDArray[Any]
FloatImage = npt.NDArray[Any]
#: one finding: (event type, data, ts in UNIX seconds)
Found = tuple[str, dict[str, Any], float]

#: a frame where more than this share of the pixels moves is a global change, not motion
GLOBAL_CHANGE = 0.5
#: the largest blob taken for a person (a share of the frame); bigger is a car, a hand
MAX_PERSON = 0.25
#: seconds of frames averaged into the first tamper reference
LEARN_S = 4.0
#: seconds a tamper condition must be gone before it is cleared
CLEAR_S = 2.0
#: coarse-picture correlation under which the view is no longer the reference's
NCC_CHANGED = 0.5
#: the reference follows the scene with this time constant (s) while nothing is wrong
REF_TAU_S = 120.0
#: tamper is checked at most this often (s of frame time): a condition must hold 10-30 s,
#: so two looks a second lose nothing and spare ~40 % of the CPU at 5 fps
TAMPER_EVERY_S = 0.5


def armed(windows: list[Window], when: datetime) -> bool:
    """Whether a zone with this schedule is watched at ``when`` (local time); no windows:
    always. A window whose end is not after its start runs into the next day."""
    if not windows:
        return True
    day = when.weekday()
    now = when.time()
    for window in windows:
        start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
        days = {("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(d) for d in window.days}
        if start < end:
            if day in days and start <= now < end:
                return True
        else:
            if day in days and now >= start:
                return True
            if (day - 1) % 7 in days and now < end:
                return True
    return False


@dataclass
class _ZoneState:
    zone: Zone
    mask: Gray
    area: int
    active: bool = False
    streak: int = 0
    last_motion: float = -math.inf


@dataclass
class _Track:
    x: float
    y: float
    missed: int = 0
    #: per line: the last side (-1, +1) the track was clearly on, 0 before it was
    sides: dict[str, int] = field(default_factory=dict)


@dataclass
class _LineState:
    line: Line
    a: tuple[float, float]
    b: tuple[float, float]
    hysteresis_px: float
    period_end: float | None = None
    n_in: int = 0
    n_out: int = 0
    total_in: int = 0
    total_out: int = 0


@dataclass
class _TamperState:
    ref: FloatImage | None = None
    ref_coarse: FloatImage | None = None
    ref_sharp: float = 0.0
    learn: list[Gray] = field(default_factory=list)
    learn_start: float | None = None
    pending_since: float | None = None
    pending: Counter[str] = field(default_factory=Counter)
    reported: str | None = None
    reported_at: float = 0.0
    normal_since: float | None = None
    checked: float = -math.inf


class Analyzer:
    """One camera's analysis. ``process(gray, ts)`` for each frame in time order."""

    def __init__(self, cfg: AnalyticsConfig, *, tz: tzinfo = UTC) -> None:
        self.cfg = cfg
        self.tz = tz
        self.low_light = False
        self.frames = 0
        self.global_changes = 0
        #: the last tamper metrics (for diagnostics and the tests' messages)
        self.metrics: dict[str, float] = {}
        self._size: tuple[int, int] | None = None
        self._mog: Any = None
        self._zones: list[_ZoneState] = []
        self._lines: list[_LineState] = []
        self._tracks: list[_Track] = []
        self._tamper = _TamperState()
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._join = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._hann: Any = None
        self._last_ts: float | None = None

    # -- set-up ------------------------------------------------------------------------------

    def _setup(self, width: int, height: int) -> None:
        self._size = (width, height)
        history = max(50, round(self.cfg.fps * 60))
        self._mog = cv2.createBackgroundSubtractorMOG2(
            history=history, varThreshold=25, detectShadows=False
        )
        self._zones = []
        for zone in self.cfg.zones:
            mask = np.zeros((height, width), np.uint8)
            pts = np.array([[x * (width - 1), y * (height - 1)] for x, y in zone.points])
            cv2.fillPoly(mask, [pts.round().astype(np.int32)], 255)
            self._zones.append(_ZoneState(zone, mask, max(1, int(np.count_nonzero(mask)))))
        self._lines = []
        for line in self.cfg.lines:
            (ax, ay), (bx, by) = line.points
            self._lines.append(
                _LineState(
                    line,
                    (ax * (width - 1), ay * (height - 1)),
                    (bx * (width - 1), by * (height - 1)),
                    line.hysteresis_pct / 100 * height,
                )
            )
        self._tracks = []
        self._hann = cv2.createHanningWindow((width, height), cv2.CV_32F)
        self._tamper = _TamperState()

    def prepare(self, gray: Gray) -> Gray:
        """``gray`` scaled to ``analysis_width`` (area averaging: it also lowers the noise)."""
        h, w = gray.shape[:2]
        width = self.cfg.analysis_width
        if w == width:
            return gray
        height = max(1, round(h * width / w))
        return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)

    # -- one frame ---------------------------------------------------------------------------

    def process(self, gray: Gray, ts: float) -> list[Found]:
        """Analyse one grayscale frame taken at ``ts`` (UNIX seconds); the events it ends."""
        small = self.prepare(gray)
        h, w = small.shape[:2]
        if self._size != (w, h):
            self._setup(w, h)
        self.frames += 1
        self._last_ts = ts
        found: list[Found] = []
        fg = self._moving(small)
        self._check_light(small)
        if self.cfg.tamper.enabled and (
            self._tamper.ref is None or ts - self._tamper.checked >= TAMPER_EVERY_S - 1e-6
        ):
            self._tamper.checked = ts
            found += self._tamper_step(small, ts)
            if self._tamper.pending_since is not None or self._tamper.reported is not None:
                # a blurring lens or a hand makes edges move: not people, not intruders
                fg = None
                self._tracks = []
        found += self._zones_step(fg, ts)
        found += self._lines_step(fg, ts)
        return found

    def _moving(self, small: Gray) -> Gray | None:
        fg = self._mog.apply(small)
        if np.count_nonzero(fg) > GLOBAL_CHANGE * fg.size:
            # lights switched, the lens covered, the camera knocked: start the model afresh
            self._mog.apply(small, learningRate=1.0)
            self.global_changes += 1
            self._tracks = []
            return None
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open)
        return cv2.dilate(fg, self._join, iterations=2)

    def _check_light(self, small: Gray) -> None:
        mean = float(small.mean())
        limit = self.cfg.tamper.low_light_luma
        # hysteresis: a picture hovering at the limit does not flap
        self.low_light = bool(mean < (limit * 1.3 if self.low_light else limit))
        self.metrics["luma"] = mean

    # -- zones -------------------------------------------------------------------------------

    def _zones_step(self, fg: Gray | None, ts: float) -> list[Found]:
        out: list[Found] = []
        local = datetime.fromtimestamp(ts, self.tz) if self._zones else None
        for z in self._zones:
            assert local is not None
            on = armed(z.zone.schedule, local)
            moving = False
            if fg is not None and on:
                share = 100.0 * int(np.count_nonzero(cv2.bitwise_and(fg, z.mask))) / z.area
                moving = bool(share >= z.zone.min_area_pct)
            if moving:
                z.streak += 1
                z.last_motion = ts
                if not z.active and z.streak >= 2:
                    z.active = True
                    out.append(("motion", {"zone": z.zone.name, "active": True}, ts))
            else:
                z.streak = 0
                if z.active and (not on or ts - z.last_motion >= z.zone.hold_s):
                    z.active = False
                    out.append(("motion", {"zone": z.zone.name, "active": False}, ts))
        return out

    # -- lines -------------------------------------------------------------------------------

    def _blobs(self, fg: Gray) -> list[tuple[float, float]]:
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        size = fg.shape[0] * fg.shape[1]
        low = self.cfg.min_person_pct / 100 * size
        high = MAX_PERSON * size
        found = []
        for c in contours:
            m = cv2.moments(c)
            if low <= m["m00"] <= high:
                found.append((m["m10"] / m["m00"], m["m01"] / m["m00"]))
        return found

    def _lines_step(self, fg: Gray | None, ts: float) -> list[Found]:
        if not self._lines:
            return []
        out: list[Found] = []
        if fg is not None:
            self._track(self._blobs(fg))
            for track in self._tracks:
                if track.missed:
                    continue
                for ls in self._lines:
                    out += self._crossing(track, ls, ts)
        for ls in self._lines:
            out += self._count_period(ls, ts)
        return out

    def _track(self, blobs: list[tuple[float, float]]) -> None:
        assert self._size is not None
        reach = 0.25 * self._size[0]
        pairs = sorted(
            (math.hypot(t.x - bx, t.y - by), ti, bi)
            for ti, t in enumerate(self._tracks)
            for bi, (bx, by) in enumerate(blobs)
        )
        used_t: set[int] = set()
        used_b: set[int] = set()
        for dist, ti, bi in pairs:
            if dist > reach or ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            track = self._tracks[ti]
            track.x, track.y = blobs[bi]
            track.missed = 0
        for ti, track in enumerate(self._tracks):
            if ti not in used_t:
                track.missed += 1
        max_missed = max(2, round(self.cfg.fps))
        self._tracks = [t for t in self._tracks if t.missed <= max_missed]
        for bi, (bx, by) in enumerate(blobs):
            if bi not in used_b:
                self._tracks.append(_Track(bx, by))

    def _crossing(self, track: _Track, ls: _LineState, ts: float) -> list[Found]:
        (ax, ay), (bx, by) = ls.a, ls.b
        dx, dy = bx - ax, by - ay
        length = math.hypot(dx, dy)
        # signed distance: positive on the right of A->B (image y grows downwards)
        dist = (dx * (track.y - ay) - dy * (track.x - ax)) / length
        along = ((track.x - ax) * dx + (track.y - ay) * dy) / (length * length)
        if not -0.02 <= along <= 1.02:
            return []
        side = 1 if dist > ls.hysteresis_px else -1 if dist < -ls.hysteresis_px else 0
        if side == 0:
            return []
        before = track.sides.get(ls.line.name, 0)
        track.sides[ls.line.name] = side
        if before == 0 or before == side:
            return []
        direction = "in" if side > 0 else "out"
        if direction == "in":
            ls.n_in += 1
            ls.total_in += 1
        else:
            ls.n_out += 1
            ls.total_out += 1
        return [("line_crossed", {"line": ls.line.name, "direction": direction}, ts)]

    def _count_period(self, ls: _LineState, ts: float) -> list[Found]:
        period = ls.line.count_period_s
        if ls.period_end is None:
            ls.period_end = (math.floor(ts / period) + 1) * period
            return []
        out: list[Found] = []
        while ts >= ls.period_end:
            data = {"line": ls.line.name, "in": ls.n_in, "out": ls.n_out, "period_s": period}
            out.append(("people_count", data, ls.period_end))
            ls.n_in = ls.n_out = 0
            ls.period_end += period
        return out

    def totals(self) -> dict[str, tuple[int, int]]:
        """line -> (in, out) since the start."""
        return {ls.line.name: (ls.total_in, ls.total_out) for ls in self._lines}

    # -- tamper ------------------------------------------------------------------------------

    def _sharpness(self, small: Gray) -> float:
        lap = cv2.Laplacian(cv2.GaussianBlur(small, (3, 3), 0), cv2.CV_32F)
        return float(lap.var())

    @staticmethod
    def _coarse(small: Gray) -> FloatImage:
        h, w = small.shape[:2]
        return cv2.resize(
            np.asarray(small, np.float32),
            (max(8, w // 8), max(6, h // 8)),
            interpolation=cv2.INTER_AREA,
        )

    @staticmethod
    def _ncc(a: FloatImage, b: FloatImage) -> float:
        a = a - a.mean()
        b = b - b.mean()
        den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
        return float((a * b).sum()) / den if den > 1e-6 else 0.0

    def _tamper_step(self, small: Gray, ts: float) -> list[Found]:
        st = self._tamper
        cfg = self.cfg.tamper
        if self.low_light:
            # lights off is not tamper: no check, no pending condition, reference kept
            st.pending_since, st.pending = None, Counter()
            return []
        if st.ref is None:
            if st.learn_start is None:
                st.learn_start = ts
            st.learn.append(small.copy())
            if ts - st.learn_start >= LEARN_S and len(st.learn) >= 3:
                self._adopt(np.mean(np.stack(st.learn), axis=0).astype(np.float32), st.learn)
            return []
        assert st.ref_coarse is not None
        cur = small.astype(np.float32)
        sharp = self._sharpness(small)
        ncc = self._ncc(self._coarse(cur), st.ref_coarse)
        # phaseCorrelate windows its inputs in place: hand it copies
        (sx, sy), response = cv2.phaseCorrelate(st.ref.copy(), cur.copy(), self._hann)
        shift_pct = 100.0 * math.hypot(sx, sy) / small.shape[1]
        ratio = sharp / st.ref_sharp if st.ref_sharp > 0 else 1.0
        self.metrics.update(sharp_ratio=ratio, ncc=ncc, shift_pct=shift_pct, response=response)
        reason: str | None = None
        if ratio < cfg.defocus_ratio:
            reason = "covered" if ncc < NCC_CHANGED else "defocused"
        elif shift_pct > cfg.move_pct and response > 0.05:
            reason = "moved"
        elif ncc < NCC_CHANGED:
            reason = "scene_change"
        out: list[Found] = []
        if reason is None:
            st.pending_since, st.pending = None, Counter()
            if st.reported is not None:
                st.normal_since = st.normal_since if st.normal_since is not None else ts
                if ts - st.normal_since >= CLEAR_S:
                    out.append(self._clear(ts))
            else:
                # nothing wrong: follow slow changes (parked cars, seasons, drift)
                dt = max(1.0 / self.cfg.fps, TAMPER_EVERY_S)
                alpha = min(1.0, dt / REF_TAU_S)
                cv2.accumulateWeighted(cur, st.ref, alpha)
                st.ref_coarse = self._coarse(st.ref)
                st.ref_sharp += alpha * (sharp - st.ref_sharp)
            return out
        st.normal_since = None
        if st.reported is not None:
            if st.reported in ("moved", "scene_change") and ts - st.reported_at >= cfg.relearn_s:
                # the camera stays where it was put: that is the view from now on
                out.append(self._clear(ts))
                self._adopt(cur, [small])
            return out
        if st.pending_since is None:
            st.pending_since = ts
        st.pending[reason] += 1
        if ts - st.pending_since >= cfg.hold_s:
            st.reported = st.pending.most_common(1)[0][0]
            st.reported_at = ts
            st.pending_since, st.pending = None, Counter()
            out.append(("camera_tamper", {"reason": st.reported, "active": True}, ts))
        return out

    def _adopt(self, ref: FloatImage, frames: list[Gray]) -> None:
        st = self._tamper
        st.ref = np.ascontiguousarray(ref, np.float32)
        st.ref_coarse = self._coarse(st.ref)
        st.ref_sharp = float(np.median([self._sharpness(f) for f in frames]))
        st.learn = []

    def _clear(self, ts: float) -> Found:
        st = self._tamper
        reason = st.reported
        st.reported = None
        st.normal_since = None
        return ("camera_tamper", {"reason": reason, "active": False}, ts)

    @property
    def tamper(self) -> str | None:
        """The tamper condition reported and not yet cleared."""
        return self._tamper.reported
