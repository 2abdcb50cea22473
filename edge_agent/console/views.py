"""What the console's pages show, read from the running agent without touching it.

Device values and states come from a pipeline tap (:class:`DeviceBoard`): the console
sees exactly what went out to the outbox, for polled and push devices alike, and costs
one dict update per message. Raw frames and counters come from the drivers that keep
them (``last_frames()``, ``diagnostics()``), through plain attribute checks: the console
imports no driver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from edge_agent.envelope import iso_ms
from edge_agent.pipeline.base import Message

#: raw frames shown per device, at most
FRAMES_MAX = 8


class DeviceBoard:
    """The last values, state and event of every device, fed by a pipeline tap."""

    def __init__(self, devices: Iterable[Any]) -> None:
        self._devices: dict[str, dict[str, Any]] = {}
        for dev in devices:
            loc = getattr(dev, "location", None)
            self._devices[dev.id] = {
                "id": dev.id,
                "kind": dev.kind,
                "name": dev.name,
                "enabled": getattr(dev, "enabled", True),
                "location": loc.model_dump() if loc is not None else None,
                "state": None,
                "since": None,
                "last_error": None,
                "values": {},
                "values_ts": None,
                "quality": None,
                "last_event": None,
            }

    def see(self, msg: Message) -> None:
        """The tap: returns at once, keeps copies."""
        row = self._devices.get(msg.device)
        if row is None:
            return  # the gateway's own messages (alarms, audit) are not devices
        ts = iso_ms(msg.ts if msg.ts is not None else time.time())
        if msg.kind == "telemetry":
            row["values"].update(msg.data)
            row["values_ts"] = ts
            row["quality"] = msg.quality
        elif msg.kind == "state":
            row["state"] = msg.data.get("state")
            row["since"] = msg.data.get("since")
            row["last_error"] = msg.data.get("last_error")
        elif msg.kind == "event":
            row["last_event"] = {"type": msg.type, "ts": ts}

    def rows(self, drivers: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        for dev_id, row in self._devices.items():
            item = dict(row, values=dict(row["values"]))
            driver = drivers.get(dev_id)
            item["frames"], item["diagnostics"] = _driver_facts(driver)
            item["units"] = _units(driver)
            out.append(item)
        return out


def _driver_facts(driver: Any) -> tuple[list[str] | None, dict[str, Any] | None]:
    """(last raw frames or None when the driver keeps none, its diagnostics or None)."""
    if driver is None:
        return None, None
    frames: list[str] | None = None
    diagnostics: dict[str, Any] | None = None
    last_frames = getattr(driver, "last_frames", None)
    if callable(last_frames):
        try:
            frames = [str(f) for f in last_frames()][-FRAMES_MAX:]
        except Exception:  # a driver bug must not take the page down
            frames = None
    diag = getattr(driver, "diagnostics", None)
    if callable(diag):
        try:
            diagnostics = dict(diag())
        except Exception:
            diagnostics = None
    if diagnostics is not None and "last_frames" in diagnostics:
        raw = diagnostics.pop("last_frames")
        if frames is None and isinstance(raw, list):
            frames = [str(f) for f in raw][-FRAMES_MAX:]
    return frames, _jsonable(diagnostics)


def _units(driver: Any) -> dict[str, str]:
    """metric -> unit, from the driver's ``metrics()`` (the same as its meta topic)."""
    metrics = getattr(driver, "metrics", None)
    if not callable(metrics):
        return {}
    try:
        return {str(m.name): str(m.unit) for m in metrics() if getattr(m, "unit", None)}
    except Exception:  # a driver bug must not take the page down
        return {}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return str(value)


async def check_config(path: Path) -> dict[str, Any]:
    """``check-config`` on the file as it is on disk now (an installer edits it, then
    looks here before restarting the agent), in a thread: it reads files and builds
    every driver once."""
    from edge_agent.config.loader import load_config
    from edge_agent.errors import ConfigError

    def run() -> dict[str, Any]:
        notes: list[str] = []
        warnings: list[str] = []
        try:
            cfg = load_config(path, notes=notes, warnings=warnings)
        except ConfigError as err:
            return {"ok": False, "problems": list(err.problems), "notes": [], "warnings": []}
        return {
            "ok": True,
            "problems": [],
            "notes": notes,
            "warnings": warnings,
            "devices": len(getattr(cfg, "devices", [])),
        }

    result = await asyncio.to_thread(run)
    result["file"] = str(path)
    result["checked_at"] = iso_ms(time.time())
    return result


def uplink(publisher: Any, host: str, port: int) -> dict[str, Any]:
    connected = getattr(publisher, "connected", None)
    return {
        "connected": bool(connected is not None and connected.is_set()),
        "protocol": getattr(publisher, "protocol", None),
        "broker": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
    }


Uplink = Callable[[], dict[str, Any]]
