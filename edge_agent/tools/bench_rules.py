"""The bench's day of readings through the alarm rules (part of ``gateway90``).

A 60 s window shows the agent's memory after a minute; what grows over a day does not show
in it. The alarm rules keep state per (rule, device): rolling means over 1 h, 8 h and 24 h
fill over their window. This feeds the default rule set with the readings of the bench's
devices (their profiles' metrics, every ``interval_s``, on a simulated clock: a day takes
seconds) and reports the size of the rules' state at each checkpoint, so the bench can say
how much more the agent holds after a day than in its window.

The size is the objects reachable from the engine's per-device state (``sys.getsizeof``
over ``gc.get_referents``), not ``tracemalloc``: that would make the day a minute.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.alarms.lifecycle import AlarmBook
from edge_agent.alarms.rules import RuleEngine
from edge_agent.config.rules import RulesConfig, load_rules
from edge_agent.drivers.modbus.profile import builtin_profiles, load_profile
from edge_agent.pipeline.base import Message

#: plausible classroom values, below every default threshold: the day raises no alarm
#: (an alarm would add the book's state to the figure)
TYPICAL = {
    "co2": 650.0,
    "humidity": 50.0,
    "temperature": 22.0,
    "pm25": 20.0,
    "pm10": 40.0,
    "tvoc": 0.2,
    "hcho": 0.02,
    "noise": 45.0,
    "illuminance": 400.0,
}
#: the default checkpoints: the bench's window, the longest default mean, a second day
CHECKPOINTS_H = (75 / 3600, 1.0, 8.0, 24.0, 48.0)


def deep_size(roots: Iterable[Any]) -> int:
    """Bytes of the objects reachable from ``roots`` (classes, modules, functions not
    followed), each object counted once."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def rules_state_over_day(
    devices: Sequence[tuple[str, str]],
    interval_s: float,
    *,
    checkpoints_h: Sequence[float] = CHECKPOINTS_H,
    seed: int = 1,
) -> dict[str, Any]:
    """Feed the default rules ``devices`` ((id, Modbus profile)) every ``interval_s`` up
    to the last checkpoint; the rules' state in bytes at each, and the CPU per reading."""
    ruleset, config_problems, file_problems = load_rules(RulesConfig(), Path())
    if config_problems or file_problems:
        raise ValueError(f"the default rules do not load: {config_problems + file_problems}")
    alarms: list[Any] = []
    book = AlarmBook("bench/site/gw", lambda *a, **kw: alarms.append(kw), lambda *a: None, "en")
    clock = [1_764_460_800.0]  # a Monday 08:00 in Shanghai
    engine = RuleEngine(ruleset, ZoneInfo("Asia/Shanghai"), book, now=lambda: clock[0])
    dirs = [str(builtin_profiles())]
    metrics = {
        dev: [p.name for p in load_profile(profile, dirs).points if p.name in TYPICAL]
        for dev, profile in devices
    }
    rng = random.Random(seed)
    start = clock[0]
    sizes: dict[str, int] = {}
    readings = 0
    cpu = 0.0
    for hours in sorted(checkpoints_h):
        t0 = time.process_time()
        while clock[0] - start < hours * 3600:
            for dev, names in metrics.items():
                data = {m: TYPICAL[m] * (0.9 + 0.2 * rng.random()) for m in names}
                engine.see(Message("telemetry", dev, data, ts=clock[0]))
                readings += 1
            clock[0] += interval_s
            engine.tick()
        cpu += time.process_time() - t0
        sizes[f"{hours:g}"] = deep_size([engine.tracks])
    return {
        "devices": len(devices),
        "interval_s": interval_s,
        "state_bytes_at_hours": sizes,
        "readings": readings,
        "alarms_raised": len(alarms),
        "cpu_us_per_reading": round(1e6 * cpu / max(1, readings), 1),
    }


__all__ = ["CHECKPOINTS_H", "TYPICAL", "deep_size", "rules_state_over_day"]
