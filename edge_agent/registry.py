"""The explicit list of driver kinds, plus third-party kinds from entry points.

In-tree drivers are named here, one line each. Third parties add kinds through
the entry-point group ``edge_agent.drivers`` (``name = "package.module:Class"``).
A driver whose optional dependency is missing disables only its own kind, with
one clear log line; the rest of the agent runs.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

#: kind -> "module:attribute" of the driver class (which has ``kind`` and ``Config``)
BUILTIN: dict[str, str] = {
    "modbus": "edge_agent.drivers.modbus.driver:ModbusDriver",
    "zkteco": "edge_agent.drivers.zkteco.driver:ZkTecoDriver",
    "hikvision": "edge_agent.drivers.hikvision.driver:HikvisionDriver",
    "wg": "edge_agent.drivers.wg.driver:WgDriver",
}

ENTRY_POINT_GROUP = "edge_agent.drivers"

_cache: dict[str, Any] | None = None
#: kind -> reason, for kinds that could not be loaded
unavailable: dict[str, str] = {}


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def drivers() -> dict[str, Any]:
    """kind -> driver class. Loaded once."""
    global _cache
    if _cache is not None:
        return _cache
    found: dict[str, Any] = {}
    targets = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in targets:
            log.warning(
                "driver kind %r from entry point %s ignored: built-in kind", ep.name, ep.value
            )
            continue
        targets[ep.name] = ep.value
    for kind, target in targets.items():
        try:
            cls = _load(target)
        except ImportError as err:
            unavailable[kind] = f"{err}"
            log.warning("driver kind %r disabled: %s (install its optional dependency)", kind, err)
            continue
        if getattr(cls, "kind", None) != kind or not hasattr(cls, "Config"):
            unavailable[kind] = f"{target} has no matching kind/Config"
            log.warning("driver kind %r disabled: %s", kind, unavailable[kind])
            continue
        found[kind] = cls
    _cache = found
    return found
