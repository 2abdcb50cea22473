"""The per-device link through which a push driver talks to the core.

A push device (a door controller sending UDP frames, a terminal that POSTs, a
camera streaming events) decides itself when data arrives, so the core cannot
poll it. Instead the core builds one :class:`OutboxLink` per device and hands it
to :meth:`~edge_agent.driver.PushDriver.run`. Through it the driver

- sends telemetry (``link.telemetry``), through the pipeline (:mod:`edge_agent.pipeline`)
  like polled readings;
- commits events together with its cursor (``await link.commit(events, cursor=...)``):
  through the pipeline's stages (card numbers pseudonymised), then one SQLite
  transaction, returned once it is on disk. It raises
  :class:`~edge_agent.errors.NotDurableError` when only memory would hold them (the
  disk is full, or the clock is not synchronised so the clock gate would hold them):
  then nothing was kept, the cursor did not move, and the device keeps its records;
- reads its last committed cursor at start (``link.cursor``), so it asks the device
  for what came after it;
- reports its state (``link.state("online" | "degraded" | "offline", reason)``) on the
  same retained ``ROOT/devices/{id}/state`` topic, with the same payload, as the poll
  loop does for polled devices.

The driver never sees the outbox, MQTT or SQLite: only this link.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent.driver import DeviceStateName, Event, Quality, Value
from edge_agent.envelope import iso_ms
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline import Pipeline

__all__ = ["Event", "OutboxLink"]

StateSink = Callable[[str, dict[str, Any]], None]


class OutboxLink:
    """The :class:`~edge_agent.driver.DeviceLink` the core builds for one push device."""

    def __init__(
        self,
        device_id: str,
        *,
        outbox: Outbox,
        pipeline: Pipeline,
        state_sink: StateSink,
    ) -> None:
        self.device_id = device_id
        self._outbox = outbox
        self._pipeline = pipeline
        self._state_sink = state_sink
        self._state: DeviceStateName | None = None
        self._reason: str | None = None
        self._since = time.time()

    @property
    def cursor(self) -> str | None:
        """The last committed cursor (None before the first commit of this device)."""
        return self._outbox.cursor(self.device_id)

    def telemetry(
        self, data: dict[str, Value], *, ts: float | None = None, quality: Quality = "good"
    ) -> None:
        """Send one reading (no cursor: a lost reading is superseded by the next)."""
        self._pipeline.telemetry(self.device_id, data, ts=ts, quality=quality)

    async def commit(self, events: Sequence[Event], *, cursor: str | None = None) -> None:
        """Commit ``events`` and ``cursor`` in ONE transaction; return once both are on disk.

        Raises :class:`NotDurableError` (nothing kept, cursor unchanged) while the clock
        is not synchronised or the disk is full: the device keeps its records and the
        driver retries later from :attr:`cursor`."""
        # The clock gate refuses (rather than holds) while the clock is not synchronised:
        # the device is a better place to wait than our RAM.
        await self._pipeline.commit(self.device_id, events, cursor=cursor)

    @property
    def current_state(self) -> DeviceStateName | None:
        """The state last reported (None before the driver reported any)."""
        return self._state

    def state(self, state: DeviceStateName, reason: str | None = None) -> None:
        """Report the device ``online``, ``degraded`` or ``offline`` (with a reason);
        published only when it changes, ``since`` moves only with the state."""
        if state == self._state and reason == self._reason:
            return
        if state != self._state:
            self._since = time.time()
        self._state, self._reason = state, reason
        self._state_sink(
            self.device_id,
            {"state": state, "since": iso_ms(self._since), "last_error": reason},
        )
