"""The demo's cameras: scripted scenes played on the camera simulators until cancelled,
like the gate's swipes (:func:`simulators.wg.gate_trickle`).

- :func:`courtyard_trickle` on an ONVIF camera (:class:`.onvif.OnvifCamera`) over the
  courtyard: someone moving there now and then (motion on, a few seconds later off), and now
  and then the lens covered for a few seconds (tamper on, then off);
- :func:`gate_line_trickle` on a Dahua camera (:class:`simulators.dahua.DahuaCamera`) over
  the school gate: people crossing its line rule, mostly in, some out.

Each scene starts once the agent watches (the first event subscription or stream), so the
first motion is not played to nobody. Steps are spaced so that one rule on one camera never
fires three times within a minute (the agent's chattering limit): the live view shows the
alarms themselves.

Nothing here imports ``edge_agent`` or ``drivers``.
演示用摄像机场景：庭院 ONVIF 摄像机间或有人移动、镜头被遮挡；校门大华摄像机有人越线进出。
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..dahua import DahuaCamera
    from .onvif import OnvifCamera

#: one round of the courtyard: each step after about ``every_s`` seconds
COURTYARD_ROUND = ("motion", "tamper", "quiet", "quiet")
#: the gate camera's line rule, as named on the camera (``lines: [{rule: Gate, ...}]``)
GATE_RULE = "Gate"
#: walking into the school crosses the gate's line this way on the camera's picture
GATE_IN = "LeftToRight"
GATE_OUT = "RightToLeft"


async def _watched(watching: Callable[[], bool], poll_s: float = 0.2) -> None:
    """Until ``watching()``: a camera has no hook for its first subscriber, and a check
    every 200 ms until then costs nothing."""
    while not watching():  # noqa: ASYNC110 - the simulators have no event for it
        await asyncio.sleep(poll_s)


async def courtyard_trickle(
    cam: OnvifCamera,
    *,
    every_s: float = 20.0,
    first_s: float = 3.0,
    seed: int = 1,
    motion_s: float = 3.0,
    covered_s: float = 6.0,
    rounds: int | None = None,
) -> int:
    """Play :data:`COURTYARD_ROUND` on ``cam``: the first step ``first_s`` after the first
    event subscription, each next
    after ``every_s`` seconds (jittered ±50 %), until cancelled or ``rounds`` are done;
    returns the steps played. ``motion``: motion for ``motion_s``; ``tamper``: the lens
    covered for ``covered_s``. Same seed, same timing."""
    if every_s <= 0 or first_s < 0 or motion_s < 0 or covered_s < 0:
        raise ValueError("every_s must be > 0, first_s, motion_s and covered_s >= 0")
    rng = random.Random(seed)
    steps = done = 0
    wait = first_s
    await _watched(lambda: bool(cam.subscriptions))
    try:
        while rounds is None or done < rounds:
            for step in COURTYARD_ROUND:
                await asyncio.sleep(wait)
                wait = every_s * rng.uniform(0.5, 1.5)
                if step == "motion":
                    cam.motion(True)
                    await asyncio.sleep(motion_s)
                    cam.motion(False)
                elif step == "tamper":
                    cam.tamper(True, "covered")
                    await asyncio.sleep(covered_s)
                    cam.tamper(False, "covered")
                steps += 1
            done += 1
    finally:
        # a stop in the middle of a step leaves the camera's states as they were at rest
        cam.motion(False)
        cam.tamper(False, "covered")
    return steps


async def gate_line_trickle(
    cam: DahuaCamera,
    *,
    every_s: float = 5.0,
    first_s: float = 2.0,
    seed: int = 2,
    in_share: float = 0.7,
    crossings: int | None = None,
) -> int:
    """People crossing the gate's line rule :data:`GATE_RULE` on ``cam``, one about every
    ``every_s`` seconds (the first ``first_s`` after the first attach), ``in_share`` of them
    in; each is a ``CrossLineDetection`` Start and Stop, as a Dahua camera sends them. Until
    cancelled or ``crossings`` done; returns the crossings played."""
    if every_s <= 0 or first_s < 0 or not 0 <= in_share <= 1:
        raise ValueError("every_s must be > 0, first_s >= 0, in_share 0..1")
    rng = random.Random(seed)
    done = 0
    wait = first_s
    await _watched(lambda: bool(cam.attached))
    while crossings is None or done < crossings:
        await asyncio.sleep(wait)
        wait = every_s * rng.uniform(0.5, 1.5)
        direction = GATE_IN if rng.random() < in_share else GATE_OUT
        data = {"Name": GATE_RULE, "Direction": direction, "ObjectType": "Human"}
        cam.start_event("CrossLineDetection", 0, data)
        cam.stop_event("CrossLineDetection", 0, data)
        done += 1
    return done
