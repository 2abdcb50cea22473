"""The Hikvision camera driver (``kind: hikvision_camera``): a camera's or NVR's alarms from
its ISAPI alertStream, as contract events.

Why a kind of its own and not ``kind: hikvision`` with a role: a door terminal's driver is
built around its record log (a ``serialNo`` cursor, AcsEvent catch-up, doors, readers);
a camera keeps no log to ask again and has channels and detection rules instead. Both kinds
read the stream with the same parser (``drivers/hikvision/alerts.py``: multipart once, XML or
JSON parts, pictures dropped as they stream), so a fix to the wire reaches both.

The stream loop (digest, silence, backoff, the log-once) is
:class:`~edge_agent.drivers.camera_stream.CameraStreamDriver`; the mapping is
``drivers/hikvision_camera/alerts.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from edge_agent.driver import DriverContext, SnapshotSource
from edge_agent.drivers.camera_edges import Contract
from edge_agent.drivers.camera_stream import CameraStreamDriver
from edge_agent.drivers.hikvision.alerts import AlertStream
from edge_agent.drivers.hikvision.events import AccessEvent, Heartbeat, Other
from edge_agent.drivers.hikvision_camera.alerts import Line, alarms, ended_keys
from edge_agent.drivers.hikvision_camera.config import HikvisionCameraDevice

KIND = "hikvision_camera"
ALERT_STREAM = "/ISAPI/Event/notification/alertStream"
SNAPSHOT = "/ISAPI/Streaming/channels/101/picture"


class HikvisionCameraDriver(CameraStreamDriver):
    """One camera or NVR (see the module docstring)."""

    kind: ClassVar[str] = KIND
    Config: ClassVar[type[HikvisionCameraDevice]] = HikvisionCameraDevice
    config: HikvisionCameraDevice

    def __init__(self, config: HikvisionCameraDevice, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        self.zones = {(z.channel, z.region): z.name for z in config.zones}
        self.lines = {(r.channel, r.region): Line(r.name, r.direction) for r in config.lines}
        self._seen = {"skipped": 0}

    def meta(self) -> dict[str, Any]:
        return {
            "vendor": "Hikvision",
            "model": "ISAPI camera",
            "protocol": "ISAPI alertStream",
            "zones": sorted({*self.zones.values()}),
            "lines": sorted(line.name for line in self.lines.values()),
        }

    def stream_path(self) -> str:
        return ALERT_STREAM

    @property
    def snapshot_uri(self) -> str:
        """The JPEG of channel 1's main stream (``/ISAPI/Streaming/channels/101/picture``),
        behind the same digest login: for the snapshot service, never fetched here."""
        return self.base + SNAPSHOT

    def snapshot_source(self) -> SnapshotSource:
        return self.snapshot_source_at(self.snapshot_uri)

    def open_parser(self, content_type: str) -> AlertStream:
        self._seen = {"skipped": 0}
        return AlertStream(content_type, self.tz)

    def parser_problems(self, parser: AlertStream) -> list[tuple[str, str]]:
        stats = parser.stats
        now = parser.skipped + stats.oversized + stats.malformed
        new, self._seen["skipped"] = now - self._seen["skipped"], now
        why = parser.last_skip or "malformed"
        return [("part", f"unreadable alertStream part ({why})")] * new

    def finish(self, parser: AlertStream) -> bool:
        return parser.finish().truncated

    def take(
        self, items: list[Any], now: float
    ) -> tuple[bool, list[tuple[Contract, float | None]]]:
        alive = False
        out: list[tuple[Contract, float | None]] = []
        for n in items:
            alive = True
            if isinstance(n, Heartbeat):
                self.counts["heartbeats"] += 1
                continue
            if isinstance(n, AccessEvent):
                self._once("access", "an access record on a camera's stream: use kind hikvision")
                continue
            if not isinstance(n, Other):
                continue
            # the stream is live: an event's time is when it arrived. Camera clocks are often
            # wrong (no NTP on a school VLAN), and an end found by hold_s has no camera time,
            # so both edges of an alarm are stamped by the gateway's clock
            ts = None
            if (n.state or "").lower() == "inactive":
                for key in ended_keys(self.edges.active(), n.event_type, n.channel, n.regions):
                    ended = self.edges.stop(key)
                    if ended is not None:
                        out.append((ended, ts))
                continue
            found = alarms(n.event_type, n.channel, n.regions, self.zones, self.lines)
            if found is None:
                self._once(f"type:{n.event_type}", "alarm type %s is not mapped", n.event_type)
                continue
            for a in found:
                began = self.edges.start(
                    a.key, a.event_type, a.data, now, hold_s=self.config.hold_s, one_shot=a.one_shot
                )
                if began is not None:
                    out.append((began, ts))
        return alive, out


__all__ = ["HikvisionCameraDriver"]
