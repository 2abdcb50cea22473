"""The WG kind's one UDP socket: every controller's answers and pushed events arrive on it,
and every request leaves from it (a controller answers the port a request came from).

A frame goes to the driver of the controller whose serial number it carries (bytes 4-7).
Bytes that cannot be a WG frame (no start byte 0x17 / 0x19, too short to hold a serial)
belong to nobody: :class:`~edge_agent.hub.KeyedHub` counts them and logs each sender once.
A frame with a known serial but garbled otherwise goes to its driver, which logs it once.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, ClassVar

from edge_agent.drivers.wg import wire
from edge_agent.drivers.wg.config import WG_PORT, WgSettings
from edge_agent.hub import Addr, UdpHub


class WgHub(UdpHub):
    """One socket for every ``kind: wg`` controller, keyed by controller serial."""

    kind: ClassVar[str] = "wg"
    default_bind: ClassVar[str] = f"0.0.0.0:{WG_PORT}"

    def bind_of(self, settings: Any) -> str | None:
        return settings.wg.bind if isinstance(settings, WgSettings) else None

    def listener_of(self, settings: Any) -> str | None:
        """The kind-wide receiving-server address (``wg.listener``), None when unset."""
        return settings.wg.listener if isinstance(settings, WgSettings) else None

    def key_of(self, data: bytes, addr: Addr) -> Hashable | None:
        if len(data) < 8 or data[0] not in (wire.SOM, wire.SOM_V6_62):
            return None
        return wire.serial_of(data) or None


__all__ = ["WgHub"]
