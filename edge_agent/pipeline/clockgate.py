"""The clock gate: honest timestamps on a gateway without a real-time clock.

Until the clock (:mod:`edge_agent.clock`) says the wall clock is synchronised, readings
and events are held in memory with a monotonic stamp; once it is synchronised their
``ts`` is computed from the monotonic clock, so it is right. What waits longer than
``hold_max_s`` goes on with its best-guess ``ts`` and ``quality: "uncertain"`` (events,
which have no quality, get ``"ts_uncertain": true`` in their data) rather than being
held for ever. Device states pass at once.

A push device's commit (``durable=True``) is never held: the gate would keep the events
in memory while the device's cursor moved on. It raises
:class:`~edge_agent.errors.NotDurableError` instead, and the device keeps its records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_agent.clock import Clock
from edge_agent.driver import Quality
from edge_agent.errors import NotDurableError
from edge_agent.pipeline.base import TICK_S, Message, Stage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Held:
    msg: Message
    mono: float
    wall: float


class ClockGate(Stage):
    """Holds telemetry and events until the wall clock is known to be right."""

    name = "clockgate"

    def __init__(self, clock: Clock, hold_max_s: float = 120.0) -> None:
        super().__init__()
        self.clock = clock
        self.hold_max_s = hold_max_s
        self._held: list[_Held] = []
        self._synced = bool(clock.synced())
        if not self._synced:
            log.warning(
                "the system clock is not synchronised (no NTP yet?): readings are held up to "
                "%g s, then sent with quality 'uncertain'. If this clock is right (RTC, GPS), "
                "set clock.sync_check: none / 系统时钟未同步：数据最多暂存 %g 秒",
                hold_max_s,
                hold_max_s,
            )
        #: held messages sent on with a corrected ``ts`` / after ``hold_max_s`` as uncertain
        self.corrected = 0
        self.uncertain = 0

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def held(self) -> int:
        return len(self._held)

    def process(self, msg: Message, *, durable: bool) -> Message | None:
        if self._synced or msg.kind == "state":
            return msg
        if durable:
            # Holding them here while the cursor moved on could lose them: refuse both,
            # the device is a better place to wait than our RAM.
            raise NotDurableError(f"{msg.device}: clock not synchronised, events held back")
        wall, mono = self.clock.wall(), self.clock.mono()
        if msg.ts is None:
            self._held.append(_Held(msg, mono, wall))
        else:
            # The message's own wall stamp, translated to the monotonic scale.
            self._held.append(_Held(msg, mono - (wall - msg.ts), msg.ts))
        return None

    def tick(self) -> None:
        """Releases held messages on sync, or after ``hold_max_s``."""
        synced = bool(self.clock.synced())
        if synced != self._synced:
            self._synced = synced
            log.info(
                "system clock %s",
                "synchronised" if synced else "NOT synchronised: holding readings until it is",
            )
        if not self._held:
            return
        mono_now = self.clock.mono()
        if synced:
            offset = self.clock.wall() - mono_now
            held, self._held = self._held, []
            for h in held:
                self._release(h, offset + h.mono, h.msg.quality)
                self.corrected += 1
            return
        keep: list[_Held] = []
        due: list[_Held] = []
        for h in self._held:
            (due if mono_now - h.mono >= self.hold_max_s else keep).append(h)
        self._held = keep
        for h in due:
            self._release(h, h.wall, "uncertain")
            self.uncertain += 1

    def due_in(self) -> float | None:
        """While messages are held, the clock is looked at every :data:`TICK_S` (a sync
        is only seen by asking); with nothing held there is nothing to release."""
        if not self._held:
            return None
        if self._synced:
            return 0.0
        oldest = min(h.mono for h in self._held)
        return max(0.0, min(TICK_S, oldest + self.hold_max_s - self.clock.mono()))

    def _release(self, h: _Held, ts: float, quality: Quality) -> None:
        msg = h.msg
        msg.ts = ts
        if msg.kind == "telemetry":
            msg.quality = quality
        elif quality != "good":
            # Events carry no quality field: say it in the data instead.
            msg.data = {**msg.data, "ts_uncertain": True}
        self.emit(msg)

    def flush(self) -> None:
        """On shutdown: send on whatever is held, with the best time we have."""
        held, self._held = self._held, []
        for h in held:
            self._release(h, h.wall, "uncertain" if not self._synced else h.msg.quality)
