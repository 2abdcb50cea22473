"""The Dahua camera driver (``kind: dahua``): a camera's or NVR's alarms from its
``eventManager.cgi?action=attach`` stream, as contract events.

The stream is read by the pure layer ``drivers/dahua/events.py`` (:class:`EventStream`:
records the moment their line or JSON ends, Content-Length never trusted) and mapped by its
:func:`camera_event`. Dahua says ``Start`` and ``Stop``: motion and tamper are explicit
states (a repeated ``Start`` is a repeat, a ``Stop`` ends it; a ``Pulse`` is held for
``hold_s``); each ``Start`` of a line rule is one crossing. The stream loop (digest,
heartbeat silence, backoff, the log-once) is
:class:`~edge_agent.drivers.camera_stream.CameraStreamDriver`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from edge_agent.driver import DriverContext, SnapshotSource
from edge_agent.drivers.camera_edges import Contract
from edge_agent.drivers.camera_stream import CameraStreamDriver
from edge_agent.drivers.dahua.config import DahuaDevice
from edge_agent.drivers.dahua.events import DahuaEvent, EventStream, Heartbeat, camera_event

KIND = "dahua"
SNAPSHOT = "/cgi-bin/snapshot.cgi?channel=1"
ATTACH = "/cgi-bin/eventManager.cgi?action=attach&codes=[{codes}]&heartbeat={heartbeat}"


class DahuaDriver(CameraStreamDriver):
    """One camera or NVR (see the module docstring)."""

    kind: ClassVar[str] = KIND
    Config: ClassVar[type[DahuaDevice]] = DahuaDevice
    config: DahuaDevice

    def __init__(self, config: DahuaDevice, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        self._seen = {"garbage_lines": 0, "oversized": 0, "bad_data": 0}
        self.lines = {(line.channel, line.rule): line for line in config.lines}

    def meta(self) -> dict[str, Any]:
        return {
            "vendor": "Dahua",
            "model": "camera",
            "protocol": "eventManager attach",
            "codes": list(self.config.codes),
        }

    def stream_path(self) -> str:
        return ATTACH.format(codes=",".join(self.config.codes), heartbeat=self.config.heartbeat_s)

    @property
    def snapshot_uri(self) -> str:
        """The JPEG of channel 1 (``/cgi-bin/snapshot.cgi?channel=1``), behind the same digest
        login: for the snapshot service, never fetched here."""
        return self.base + SNAPSHOT

    def snapshot_source(self) -> SnapshotSource:
        return self.snapshot_source_at(self.snapshot_uri)

    def open_parser(self, content_type: str) -> EventStream:
        self._seen = dict.fromkeys(self._seen, 0)
        return EventStream.for_content_type(content_type)

    def parser_problems(self, parser: EventStream) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for key in self._seen:
            now = getattr(parser.stats, key)
            new, self._seen[key] = now - self._seen[key], now
            why = {
                "garbage_lines": f"unreadable line in the event stream ({parser.last_garbage!r})",
                "oversized": "event stream part over its size bound, dropped",
                "bad_data": "event record whose data= is not JSON",
            }[key]
            out += [(key, why)] * new
        return out

    def finish(self, parser: EventStream) -> bool:
        return parser.finish().truncated

    def take(
        self, items: list[Any], now: float
    ) -> tuple[bool, list[tuple[Contract, float | None]]]:
        out: list[tuple[Contract, float | None]] = []
        for item in items:
            if isinstance(item, Heartbeat):
                self.counts["heartbeats"] += 1
                continue
            if isinstance(item, DahuaEvent):
                found = self._edge(item, now)
                if found is not None:
                    out.append((found, None))
        return bool(items), out

    def _edge(self, event: DahuaEvent, now: float) -> Contract | None:
        mapped = camera_event(event)
        if mapped is None:
            if event.code == "CrossLineDetection":
                return None  # the Stop of a crossing
            self._once(f"code:{event.code}", "event code %s is not mapped", event.code)
            return None
        etype, data = mapped
        if etype == "line_crossed":
            rule = self.lines.get((data["channel"], data["line"]))
            if rule is None:
                return mapped
            camera = data["direction"]
            direction = None if camera is None else "in" if camera == rule.in_direction else "out"
            named = {"line": rule.name or rule.rule, "direction": direction}
            return etype, data | named | {"camera_direction": camera}
        state = {k: v for k, v in data.items() if k not in ("active", "action")}
        key = (etype, data["channel"], data.get("zone"), data.get("reason"))
        if not event.active:
            return self.edges.stop(key)
        pulse = (event.action or "").lower() == "pulse"
        return self.edges.start(
            key, etype, state, now, hold_s=self.config.hold_s if pulse else None
        )


__all__ = ["DahuaDriver"]
