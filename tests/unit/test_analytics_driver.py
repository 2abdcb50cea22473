"""The camera_analytics driver's side of the link: events the outbox refuses are held (the
camera cannot be asked again) and committed with the next ones; telemetry on low light."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_agent.driver import DriverContext, Event
from edge_agent.drivers.camera_analytics.driver import CameraAnalyticsDriver
from edge_agent.drivers.camera_analytics.runner import AnalyticsRunner
from edge_agent.errors import NotDurableError


class Link:
    device_id = "cam"
    cursor = None

    def __init__(self) -> None:
        self.refuse = 0
        self.committed: list[list[Event]] = []
        self.states: list[tuple[str, str | None]] = []
        self.readings: list[dict[str, Any]] = []

    def telemetry(self, data: dict[str, Any], **_: Any) -> None:
        self.readings.append(data)

    async def commit(self, events: Sequence[Event], *, cursor: str | None = None) -> None:
        if self.refuse:
            self.refuse -= 1
            raise NotDurableError("disk full")
        self.committed.append(list(events))

    def state(self, state: str, reason: str | None = None) -> None:
        self.states.append((state, reason))


def driver() -> tuple[CameraAnalyticsDriver, Link]:
    cfg = CameraAnalyticsDriver.Config.model_validate(
        {"id": "cam", "kind": "camera_analytics", "analytics": {"stream_url": "http://x/s"}}
    )
    d = CameraAnalyticsDriver(cfg, DriverContext({}))
    d.runner = AnalyticsRunner("cam", cfg.analytics)
    link = Link()
    d._link = link
    return d, link


async def test_refused_events_are_held_and_committed_with_the_next() -> None:
    d, link = driver()
    link.refuse = 1
    first = Event("motion", {"zone": "yard", "active": True}, 1.0)
    await d.found([first])
    assert link.committed == []
    assert link.states == [("degraded", "disk full")]
    # the next stats message tries again, before any new event
    await d.stats({"low_light": False})
    assert link.committed == [[first]]
    assert link.states[-1] == ("online", None)
    second = Event("motion", {"zone": "yard", "active": False}, 5.0)
    await d.found([second])
    assert link.committed == [[first], [second]]


async def test_the_backlog_is_bounded() -> None:
    d, link = driver()
    link.refuse = 10**6
    for i in range(1500):
        await d.found([Event("line_crossed", {"line": "gate", "direction": "in"}, float(i))])
    assert len(d._pending) == 1000
    assert d.counts["dropped"] == 500
    assert d._pending[0].ts == 500.0  # the oldest went first


async def test_low_light_is_sent_at_once_when_it_changes() -> None:
    d, link = driver()
    await d.stats({"low_light": False})
    await d.stats({"low_light": False})
    await d.stats({"low_light": True})
    assert [r["low_light"] for r in link.readings] == [False, True]
