"""Scriptable device faults: set at run time or from a schedule file.

Kinds:

``no_answer``
    The device never replies; the client times out.
``exception``
    Every request gets a Modbus exception response, ``code`` (default 4, device failure;
    2 illegal address, 6 busy, ...).
``garbled``
    The reply bytes are corrupted: wrong CRC with RTU framing, a wrong byte count (reads) or a
    wrong MBAP length (other replies) with socket framing.
``slow``
    The reply comes after ``delay_s`` seconds (default 2.0).
``out_of_range``
    ``metric`` (default: the device's first point that can show it) reports ``value``
    (default: 10 % of the range span above the maximum, or below the minimum when the
    register type cannot carry that).

A schedule is a YAML or JSON list of ``{device, fault, from_s, to_s, ...params}``; ``from_s``
and ``to_s`` are *real* seconds since the simulator started (``to_s`` may be omitted: until the
end). A fault set at run time with :meth:`FaultBoard.set` takes precedence over the schedule
for that device until :meth:`FaultBoard.clear`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Exception codes of the Modbus application protocol spec (v1.1b3, section 7).
EXCEPTION_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 10, 11})
FAULT_KINDS = ("no_answer", "exception", "garbled", "slow", "out_of_range")
_PARAMS: dict[str, set[str]] = {
    "no_answer": set(),
    "exception": {"code"},
    "garbled": set(),
    "slow": {"delay_s"},
    "out_of_range": {"metric", "value"},
}


@dataclass(frozen=True)
class Fault:
    """One fault and its parameters."""

    kind: str
    code: int = 4
    delay_s: float = 2.0
    metric: str | None = None
    value: float | None = None

    @classmethod
    def make(cls, kind: str, **params: Any) -> Fault:
        """Validate ``kind`` and its parameters; ``ValueError`` when they make no sense."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        extra = set(params) - _PARAMS[kind]
        if extra:
            raise ValueError(f"fault {kind!r} takes no parameter(s) {sorted(extra)}")
        typed: dict[str, Any] = {}
        try:
            if "code" in params:
                typed["code"] = int(params["code"])
            if "delay_s" in params:
                typed["delay_s"] = float(params["delay_s"])
            if params.get("metric") is not None:
                typed["metric"] = str(params["metric"])
            if params.get("value") is not None:
                typed["value"] = float(params["value"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"fault {kind!r}: bad parameter: {err}") from err
        fault = cls(kind=kind, **typed)
        if fault.code not in EXCEPTION_CODES:
            raise ValueError(f"exception code must be one of {sorted(EXCEPTION_CODES)}")
        if not (math.isfinite(fault.delay_s) and fault.delay_s >= 0):
            raise ValueError("delay_s must be >= 0")
        if fault.value is not None and not math.isfinite(fault.value):
            raise ValueError("value must be finite")
        return fault


@dataclass(frozen=True)
class ScheduledFault:
    """A fault active on ``device`` from ``from_s`` until ``to_s`` (real seconds)."""

    device: str
    fault: Fault
    from_s: float = 0.0
    to_s: float | None = None

    def active(self, elapsed_s: float) -> bool:
        """Whether the fault applies ``elapsed_s`` seconds after start."""
        return self.from_s <= elapsed_s and (self.to_s is None or elapsed_s < self.to_s)


def parse_schedule(items: Iterable[Mapping[str, Any]]) -> list[ScheduledFault]:
    """Turn schedule entries into :class:`ScheduledFault`; ``ValueError`` names the bad entry."""
    schedule: list[ScheduledFault] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, Mapping):
                raise ValueError("entry must be a mapping")
            entry = dict(item)
            device = str(entry.pop("device"))
            kind = str(entry.pop("fault"))
            from_s = float(entry.pop("from_s", 0.0))
            to_raw = entry.pop("to_s", None)
            to_s = None if to_raw is None else float(to_raw)
            if to_s is not None and to_s < from_s:
                raise ValueError("to_s before from_s")
            fault = Fault.make(kind, **entry)
        except KeyError as err:
            raise ValueError(f"fault schedule entry {index}: missing {err.args[0]!r}") from err
        except (TypeError, ValueError) as err:
            raise ValueError(f"fault schedule entry {index}: {err}") from err
        schedule.append(ScheduledFault(device, fault, from_s, to_s))
    return schedule


def load_schedule(path: Path | str) -> list[ScheduledFault]:
    """Read a schedule file (``.json``, or YAML for anything else)."""
    file = Path(path)
    text = file.read_text(encoding="utf-8")
    data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{file}: a fault schedule is a list of entries")
    return parse_schedule(data)


class FaultBoard:
    """Which fault each device shows, from run-time settings and a schedule."""

    def __init__(self, schedule: Iterable[ScheduledFault] = ()) -> None:
        self.schedule = list(schedule)
        self._manual: dict[str, Fault] = {}

    def set(self, device: str, fault: Fault) -> None:
        """Force ``fault`` on ``device`` until :meth:`clear`."""
        self._manual[device] = fault

    def clear(self, device: str) -> None:
        """Drop the run-time fault of ``device`` (its schedule still applies)."""
        self._manual.pop(device, None)

    def active(self, device: str, elapsed_s: float) -> Fault | None:
        """The fault ``device`` shows ``elapsed_s`` real seconds after start, if any."""
        fault = self._manual.get(device)
        if fault is not None:
            return fault
        for entry in self.schedule:
            if entry.device == device and entry.active(elapsed_s):
                return entry.fault
        return None
