"""The explicit list of driver kinds, plus third-party kinds from entry points.

In-tree drivers are named here, one line each. Third parties add kinds through
the entry-point group ``edge_agent.drivers`` (``name = "package.module:Class"``).
A driver whose optional dependency is missing disables only its own kind, with
one clear log line; the rest of the agent runs.

A kind is imported only when asked for: ``drivers(kinds)`` loads the kinds a config
file names, so a Modbus-only site never imports (nor builds the config models of) a
door controller's kind. ``names()`` lists every kind without importing any.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

#: kind -> "module:attribute" of the driver class (which has ``kind`` and ``Config``)
BUILTIN: dict[str, str] = {
    "modbus": "edge_agent.drivers.modbus.driver:ModbusDriver",
    "zkteco": "edge_agent.drivers.zkteco.driver:ZkTecoDriver",
    "hikvision": "edge_agent.drivers.hikvision.driver:HikvisionDriver",
    "wg": "edge_agent.drivers.wg.driver:WgDriver",
    "hikvision_camera": "edge_agent.drivers.hikvision_camera.driver:HikvisionCameraDriver",
    "dahua": "edge_agent.drivers.dahua.driver:DahuaDriver",
    "onvif": "edge_agent.drivers.onvif.driver:OnvifDriver",
    "camera_analytics": "edge_agent.drivers.camera_analytics.driver:CameraAnalyticsDriver",
}

ENTRY_POINT_GROUP = "edge_agent.drivers"

#: every kind, once :func:`drivers` loaded them all (tests reset it to None)
_cache: dict[str, Any] | None = None
#: "module:attribute" -> driver class (None: failed), for kinds loaded one by one
_loaded: dict[str, Any] = {}
_entry_points: dict[str, str] | None = None
#: kind -> reason, for kinds that could not be loaded
unavailable: dict[str, str] = {}


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def _third_party() -> dict[str, str]:
    global _entry_points
    if _entry_points is None:
        found: dict[str, str] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in BUILTIN:
                log.warning(
                    "driver kind %r from entry point %s ignored: built-in kind", ep.name, ep.value
                )
                continue
            found[ep.name] = ep.value
        _entry_points = found
    return _entry_points


def targets() -> dict[str, str]:
    """kind -> "module:attribute", built-in and third-party, nothing imported."""
    return {**BUILTIN, **{k: v for k, v in _third_party().items() if k not in BUILTIN}}


def names() -> set[str]:
    """Every kind this agent knows of (loadable or not), without importing any."""
    return set(targets())


def _load_kind(kind: str, target: str) -> Any:
    if target in _loaded:
        return _loaded[target]
    cls: Any = None
    try:
        cls = _load(target)
    except ImportError as err:
        unavailable[kind] = f"{err}"
        log.warning("driver kind %r disabled: %s (install its optional dependency)", kind, err)
    else:
        if getattr(cls, "kind", None) != kind or not hasattr(cls, "Config"):
            unavailable[kind] = f"{target} has no matching kind/Config"
            log.warning("driver kind %r disabled: %s", kind, unavailable[kind])
            cls = None
    _loaded[target] = cls
    return cls


def drivers(kinds: Iterable[str] | None = None) -> dict[str, Any]:
    """kind -> driver class, for ``kinds`` (those that exist and load; the order of
    ``kinds``) or, with None, for every kind (loaded once). Each kind is imported once."""
    global _cache
    if kinds is None and _cache is not None:
        return _cache
    table = targets()
    wanted = table if kinds is None else {k: table[k] for k in kinds if k in table}
    found: dict[str, Any] = {}
    for kind, target in wanted.items():
        cls = _load_kind(kind, target)
        if cls is not None:
            found[kind] = cls
    if kinds is None:
        _cache = found
    return found
