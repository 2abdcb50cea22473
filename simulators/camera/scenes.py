"""Synthetic camera scenes for the analytics tests, demos and bench (issue #11).

A :class:`Scene` is a pure function of its parameters and a frame index: the same seed gives
the same pixels on every machine, so a test can say "walker 3 crosses the line at 14.2 s of
scene time" and know it. What a scene can show, as a campus camera would see it:

- a courtyard (buildings with windows, paving, a hedge) with sensor noise (a new noise field
  every frame) and a slow illumination drift (clouds, the sun moving: a few percent a minute);
- walkers crossing the counting line (the middle row, ``line_y``) downwards (``in``) or
  upwards (``out``), one at a time or side by side;
- one event from ``event_at_s`` on: ``cover`` (a hand slides over the lens), ``defocus`` (the
  focus ring turned: blur grows over 2 s), ``shift`` (the camera knocked: the view moves by
  ``shift_px``), ``lights_off`` (the courtyard lights go off: the image falls to a few percent
  of its brightness and the sensor gain raises the noise).

Frames are BGR ``uint8`` arrays (``height, width, 3``), the layout OpenCV's JPEG encoder and
decoders use. :meth:`Scene.frame` gives one frame, :meth:`Scene.frames` all of them with their
scene time; :mod:`simulators.camera.mjpeg` serves them over HTTP. Written from what a camera
shows, never from the agent's analytics: nothing here imports ``edge_agent`` or ``drivers``.

合成摄像机画面：带噪声和缓慢光照变化的静态庭院、按脚本穿越计数线的行人、手遮镜头、失焦、
画面移位、熄灯。同一个种子得到完全相同的画面。
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

#: OpenCV and numpy return loosely typed arrays: one alias for every image here
Frame = npt.NDArray[Any]
FloatImage = npt.NDArray[Any]
EventKind = Literal["cover", "defocus", "shift", "lights_off"]

WIDTH = 320
HEIGHT = 240
#: extra canvas around the view, so a shifted view still shows courtyard, not black
MARGIN = 48
#: sensor noise comes from this many unit fields, each larger than the view by NOISE_PAD
NOISE_FIELDS = 16
NOISE_PAD = 64


@dataclass(frozen=True)
class Walker:
    """One person crossing the view vertically: ``x`` is the centre column, ``start_s`` when
    the head enters the top (``down``) or the feet enter the bottom (``up``)."""

    start_s: float
    x: int
    direction: Literal["down", "up"]
    speed_px_s: float = 60.0
    width: int = 20
    height: int = 50
    shade: int = 40  # dark clothes on light paving; 220 for a white school uniform
    #: seconds the walker stops with the centre on the middle row, swaying ``sway_px`` up
    #: and down (someone waiting at the gate, talking, looking at a phone)
    pause_s: float = 0.0
    sway_px: float = 0.0

    def top(self, t: float, height: int) -> float | None:
        """The walker's top row at scene time ``t``, None when out of view."""
        elapsed = t - self.start_s
        to_middle = (height / 2 + self.height / 2) / self.speed_px_s
        if elapsed <= to_middle:
            travelled = elapsed * self.speed_px_s
        elif elapsed <= to_middle + self.pause_s:
            sway = self.sway_px * math.sin(2 * math.pi * (elapsed - to_middle) / 1.2)
            travelled = to_middle * self.speed_px_s + sway
        else:
            travelled = (elapsed - self.pause_s) * self.speed_px_s
        if elapsed < 0 or travelled > height + self.height:
            return None
        if self.direction == "down":
            return -self.height + travelled
        return height - travelled

    def crossing_s(self, line_y: int) -> float:
        """When the walker's centre is on the line (scene time; the start of a pause)."""
        if self.direction == "down":
            return self.start_s + (line_y + self.height / 2) / self.speed_px_s
        return self.start_s + (HEIGHT - line_y + self.height / 2) / self.speed_px_s


@dataclass(frozen=True)
class Scene:
    """A scripted scene. Change a field with :func:`dataclasses.replace`."""

    name: str
    seed: int = 1
    fps: float = 5.0
    duration_s: float = 60.0
    width: int = WIDTH
    height: int = HEIGHT
    #: sensor noise (standard deviation of the luma, 0..255)
    noise_sigma: float = 4.0
    #: illumination drift: gain 1 ± amplitude, one period in ``drift_period_s``
    drift_amplitude: float = 0.12
    drift_period_s: float = 1200.0
    walkers: tuple[Walker, ...] = ()
    event: EventKind | None = None
    event_at_s: float = 20.0
    shift_px: tuple[int, int] = (36, 20)
    #: the counting line: walkers going down cross it "in", up "out"
    line_y: int = HEIGHT // 2
    description: str = ""
    expected: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def frame_count(self) -> int:
        return round(self.duration_s * self.fps)

    def time_of(self, index: int) -> float:
        """Scene time of frame ``index`` (seconds from the scene's start)."""
        return index / self.fps

    @cached_property
    def _noise(self) -> FloatImage:
        rng = np.random.default_rng((self.seed, 1 << 20))
        shape = (NOISE_FIELDS, self.height + NOISE_PAD, self.width + NOISE_PAD)
        return rng.standard_normal(shape, dtype=np.float32)

    @cached_property
    def _canvas(self) -> FloatImage:
        return _courtyard(self.seed, self.width + 2 * MARGIN, self.height + 2 * MARGIN)

    def frame(self, index: int) -> Frame:
        """Frame ``index`` (0-based), the same pixels for the same scene and index."""
        t = self.time_of(index)
        progress = self._event_progress(t)
        dx = dy = 0
        if self.event == "shift":
            dx = round(self.shift_px[0] * progress)
            dy = round(self.shift_px[1] * progress)
        view = self._canvas[
            MARGIN + dy : MARGIN + dy + self.height, MARGIN + dx : MARGIN + dx + self.width
        ].copy()
        for walker in self.walkers:
            _draw_walker(view, walker, t)
        gain = 1.0 + self.drift_amplitude * math.sin(2 * math.pi * t / self.drift_period_s)
        noise_sigma = self.noise_sigma
        if self.event == "defocus" and progress > 0:
            sigma = 0.3 + 5.0 * progress
            view = cv2.GaussianBlur(view, (0, 0), sigma)
        if self.event == "cover" and progress > 0:
            view = _cover(view, progress)
        if self.event == "lights_off" and progress > 0:
            gain *= 1.0 - 0.93 * progress
            noise_sigma = self.noise_sigma * (1.0 - 0.5 * progress)  # gain up, but less light
        # a new noise field every frame: one of NOISE_FIELDS unit fields, cropped at a
        # place drawn from the frame index (drawing 77k normals a frame took 3 ms)
        rng = np.random.default_rng((self.seed, index))
        k = int(rng.integers(NOISE_FIELDS))
        oy, ox = (int(v) for v in rng.integers(NOISE_PAD, size=2))
        noise = self._noise[k, oy : oy + self.height, ox : ox + self.width] * noise_sigma
        luma = view * gain + noise[:, :, None]
        return np.clip(luma, 0, 255).astype(np.uint8)

    def frames(self) -> Iterator[tuple[float, Frame]]:
        """``(scene time, frame)`` for every frame of the scene."""
        for i in range(self.frame_count):
            yield self.time_of(i), self.frame(i)

    def _event_progress(self, t: float) -> float:
        """0 before the event, rising to 1 over its transition (a hand takes 1 s to cover the
        lens, a turned focus ring 2 s, a knocked camera 0.4 s, lights 1.5 s)."""
        if self.event is None or t < self.event_at_s:
            return 0.0
        ramp = {"cover": 1.0, "defocus": 2.0, "shift": 0.4, "lights_off": 1.5}[self.event]
        return min(1.0, (t - self.event_at_s) / ramp)


def _courtyard(seed: int, width: int, height: int) -> FloatImage:
    """A static courtyard, BGR float32: sky, a school building with windows, paving with joints
    and a hedge. Hard edges (for the focus and position checks), no large uniform areas."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    horizon = height * 2 // 5
    sky = np.linspace(200, 160, horizon, dtype=np.float32)[:, None]
    img[:horizon] = sky[:, :, None] * np.array([1.0, 0.95, 0.85], np.float32)
    # buildings: blocks of different heights, each with a grid of windows
    x = 0
    while x < width:
        w = int(rng.integers(50, 110))
        top = int(rng.integers(horizon // 5, horizon - 10))
        wall = float(rng.uniform(110, 170))
        img[top:horizon, x : x + w] = (wall * 0.9, wall * 0.95, wall)
        for wy in range(top + 6, horizon - 10, 16):
            for wx in range(x + 5, x + w - 10, 14):
                glass = float(rng.uniform(40, 90))
                img[wy : wy + 9, wx : wx + 8] = (glass * 1.2, glass, glass * 0.9)
        x += w + int(rng.integers(0, 12))
    # paving: tiles with dark joints, in perspective rows
    ground = height - horizon
    img[horizon:] = (120, 125, 130)
    row = horizon
    step = 8
    while row < height:
        img[row : row + 1] = (80, 82, 85)
        row += step
        step += 2
    for col in range(0, width, 26):
        img[horizon:, col : col + 2] = (85, 88, 90)
    # a hedge along the building and a few planters
    img[horizon : horizon + 8] = (60, 110, 70)
    for _ in range(6):
        cx = int(rng.integers(0, width))
        cy = int(rng.integers(horizon + ground // 3, height))
        cv2.circle(img, (cx, cy), int(rng.integers(6, 14)), (50, 100, 60), -1)
    # fine static texture (weathered paving, leaves): low-contrast, seeded
    coarse = rng.normal(0, 10, (height // 4 + 1, width // 4 + 1)).astype(np.float32)
    texture: FloatImage = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    img += texture[:, :, None]
    return np.clip(img, 0, 255)


def _draw_walker(view: FloatImage, walker: Walker, t: float) -> None:
    top = walker.top(t, view.shape[0])
    if top is None:
        return
    y0 = round(top)
    head = walker.width // 2
    body_top = y0 + head
    x0 = walker.x - walker.width // 2
    shade = float(walker.shade)
    # body (a rounded block) and head: the silhouette a background subtractor sees
    _fill(view, body_top, y0 + walker.height, x0, x0 + walker.width, shade)
    cv2.circle(
        view,
        (walker.x, y0 + head // 2 + 1),
        head // 2 + 1,
        (shade * 0.8 + 40, shade * 0.8 + 50, shade * 0.8 + 70),
        -1,
    )


def _fill(view: FloatImage, y0: int, y1: int, x0: int, x1: int, v: float) -> None:
    h, w = view.shape[:2]
    y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if y0 < y1 and x0 < x1:
        view[y0:y1, x0:x1] = (v, v * 1.05, v * 1.1)


def _cover(view: FloatImage, progress: float) -> FloatImage:
    """A hand over the lens: out of focus, skin-coloured, lit from one edge, sliding up from
    the bottom until it fills the frame."""
    h, w = view.shape[:2]
    shade = np.linspace(1.1, 0.75, h, dtype=np.float32)[:, None] * np.linspace(
        0.9, 1.05, w, dtype=np.float32
    )
    hand = shade[:, :, None] * np.array([70, 95, 135], np.float32)
    covered_rows = round(h * progress)
    out = view.copy()
    if covered_rows:
        out[h - covered_rows :] = hand[h - covered_rows :]
    return out


#: the tamper reason each event should be reported as (lights off: none, it is low light)
TAMPER_OF = {"cover": "covered", "defocus": "defocused", "shift": "moved"}


# -- the scripted scenes ---------------------------------------------------------------------


def courtyard(seed: int = 1, duration_s: float = 600.0, fps: float = 5.0) -> Scene:
    """Nothing happens: noise and illumination drift only (no event may be raised)."""
    return Scene(
        "courtyard",
        seed=seed,
        fps=fps,
        duration_s=duration_s,
        # a faster drift than the default: ±12 % in 5 minutes, harsher than a passing cloud
        drift_period_s=300.0,
        description="static courtyard, sensor noise, slow illumination drift",
        expected={"in": 0, "out": 0, "tamper": None, "motion": False},
    )


def walkers(
    seed: int = 1, n_in: int = 5, n_out: int = 3, fps: float = 5.0, gap_s: float = 7.0
) -> Scene:
    """``n_in`` walkers down across the line, ``n_out`` up, one every ``gap_s`` seconds from
    10 s on (the first 10 s let a background model learn the empty courtyard); every third
    pair walks side by side in opposite directions."""
    rng = np.random.default_rng(seed)
    people: list[Walker] = []
    directions = ["down"] * n_in + ["up"] * n_out
    order = rng.permutation(len(directions))
    t = 10.0
    for k, i in enumerate(order):
        direction = directions[int(i)]
        x = int(rng.integers(40, WIDTH - 40))
        if k % 3 == 2 and people:
            # side by side with the previous one, far enough apart to stay two blobs
            prev = people[-1]
            x = prev.x + 110 if prev.x < WIDTH / 2 else prev.x - 110
            start = prev.start_s + 0.8
        else:
            start = t
            t += gap_s
        people.append(
            Walker(
                start_s=start,
                x=x,
                direction=direction,  # type: ignore[arg-type]
                speed_px_s=float(rng.uniform(45, 80)),
                shade=int(rng.choice([35, 55, 210])),
            )
        )
    end = max(p.start_s + (HEIGHT + p.height) / p.speed_px_s for p in people) if people else 10
    return Scene(
        "walkers",
        seed=seed,
        fps=fps,
        duration_s=math.ceil(end + 5.0),
        walkers=tuple(people),
        description=f"{n_in} walkers in (down), {n_out} out (up) across the middle row",
        expected={"in": n_in, "out": n_out, "tamper": None},
    )


def _event_scene(
    name: str, event: EventKind, seed: int, at_s: float, after_s: float, fps: float
) -> Scene:
    return Scene(
        name,
        seed=seed,
        fps=fps,
        duration_s=at_s + after_s,
        event=event,
        event_at_s=at_s,
        description=f"courtyard, then {event} at {at_s:g} s",
        expected={
            "tamper": {"cover": "covered", "defocus": "defocused", "shift": "moved"}.get(event)
        },
    )


def covered(seed: int = 1, at_s: float = 20.0, after_s: float = 40.0, fps: float = 5.0) -> Scene:
    """A hand covers the lens at ``at_s``."""
    return _event_scene("covered", "cover", seed, at_s, after_s, fps)


def defocused(seed: int = 1, at_s: float = 20.0, after_s: float = 40.0, fps: float = 5.0) -> Scene:
    """The focus is turned at ``at_s``."""
    return _event_scene("defocused", "defocus", seed, at_s, after_s, fps)


def shifted(seed: int = 1, at_s: float = 20.0, after_s: float = 40.0, fps: float = 5.0) -> Scene:
    """The camera is knocked at ``at_s``: the view moves by ``shift_px``."""
    return _event_scene("shifted", "shift", seed, at_s, after_s, fps)


def lights_off(seed: int = 1, at_s: float = 20.0, after_s: float = 60.0, fps: float = 5.0) -> Scene:
    """The courtyard lights go off at ``at_s`` (low light: no tamper)."""
    return _event_scene("lights_off", "lights_off", seed, at_s, after_s, fps)


#: name -> builder (``seed=`` and ``fps=`` keywords), for the command line and the server
SCENES = {
    "courtyard": courtyard,
    "walkers": walkers,
    "covered": covered,
    "defocused": defocused,
    "shifted": shifted,
    "lights_off": lights_off,
}


def scene(name: str, *, seed: int = 1, fps: float = 5.0) -> Scene:
    """The scene called ``name`` (a key of :data:`SCENES`)."""
    try:
        builder = SCENES[name]
    except KeyError:
        raise ValueError(f"unknown scene {name!r}; one of {', '.join(SCENES)}") from None
    built: Scene = builder(seed=seed, fps=fps)  # type: ignore[operator]
    return built


__all__ = [
    "HEIGHT",
    "SCENES",
    "WIDTH",
    "Scene",
    "Walker",
    "courtyard",
    "covered",
    "defocused",
    "lights_off",
    "replace",
    "scene",
    "shifted",
    "walkers",
]
