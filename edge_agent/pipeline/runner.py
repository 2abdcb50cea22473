"""The runner: passes every message through the stages, into the sink, then to the taps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from edge_agent.driver import Event, Quality, Value
from edge_agent.pipeline.base import TICK_S, Message, Sink, Stage
from edge_agent.pipeline.failures import Failures
from edge_agent.pipeline.taps import Tap, Taps

S = TypeVar("S", bound=Stage)

_TICK_FAILED = "the other stages go on, it is called again next time / 其他处理照常"
_FLUSH_FAILED = "what it still held is lost / 其暂存的数据丢失"


class Pipeline:
    """``stages`` in order, then ``sink``, then the taps.

    It is also the :class:`~edge_agent.driver.Emit` the poll loop writes to
    (:meth:`telemetry`, :meth:`event`), what a push device's link calls
    (:meth:`telemetry`, :meth:`commit`), and where device states go (:meth:`state`)."""

    def __init__(self, stages: Sequence[Stage], sink: Sink, taps: Taps | None = None) -> None:
        self.stages = list(stages)
        self.sink = sink
        self.taps = taps if taps is not None else Taps()
        #: a stage that raises (a bug) loses that message, not the device task or the agent
        self.stage_failures = Failures(
            "stage",
            "the message is dropped, never sent on unprocessed / 数据处理出错，该条数据被丢弃",
            self.taps.summary_s,
            self.taps.clock,
        )
        #: called when a stage holds (or drops) a message: a held message reaches no
        #: sink, yet may start a timer of its stage (the agent wakes its group commit)
        self.on_hold: Callable[[], None] | None = None
        #: the stages from each position on (no list slice per message)
        self._tails = [tuple(self.stages[i:]) for i in range(len(self.stages) + 1)]
        for i, stage in enumerate(self.stages):
            stage.bind(partial(self._from, i + 1))

    def stage(self, kind: type[S]) -> S:
        """The first stage of class ``kind``; :class:`LookupError` when the list has none."""
        for stage in self.stages:
            if isinstance(stage, kind):
                return stage
        raise LookupError(f"no {kind.__name__} in this pipeline")

    def stats(self) -> dict[str, int]:
        """For ``ROOT/health``: failures of stages and taps, and every stage's counters."""
        out = {
            "stage_errors": self.stage_failures.total(),
            "tap_errors": self.taps.total_failures(),
        }
        for stage in self.stages:
            out.update(stage.stats())
        return out

    def add_tap(self, name: str, tap: Tap) -> None:
        """Let ``tap`` see every message from now on (see :mod:`edge_agent.pipeline.taps`)."""
        self.taps.add(name, tap)

    # -- in ---------------------------------------------------------------------------
    def put(self, msg: Message) -> None:
        """Send one message through every stage (never blocks; may be held)."""
        self._from(0, msg)

    def _from(self, first: int, msg: Message) -> None:
        for stage in self._tails[first]:
            try:
                out = stage.process(msg, durable=False)
            except Exception as err:
                # Skipping the stage could publish what it exists to hide (a card number):
                # drop the message instead, and say so.
                self.stage_failures.failed(stage.name, err, msg)
                return
            if out is None:
                if self.on_hold is not None:
                    self.on_hold()
                return
            msg = out
        self.sink.put(msg)
        if self.taps:
            self.taps.see(msg)

    def telemetry(
        self,
        device_id: str,
        data: dict[str, Value],
        *,
        ts: float | None = None,
        quality: Quality = "good",
    ) -> None:
        self._from(0, Message("telemetry", device_id, dict(data), ts, quality))

    def event(
        self, device_id: str, type_: str, data: dict[str, Any], *, ts: float | None = None
    ) -> None:
        self._from(0, Message("event", device_id, dict(data), ts, type=type_))

    def state(self, device_id: str, payload: dict[str, Any]) -> None:
        """A device's state change (``state``, ``since``, ``last_error``)."""
        self._from(0, Message("state", device_id, dict(payload)))

    async def commit(
        self, device_id: str, events: Sequence[Event], *, cursor: str | None = None
    ) -> None:
        """A push device's events and cursor: through every stage (none may hold them),
        then ONE transaction; returns once durable. Raises
        :class:`~edge_agent.errors.NotDurableError` (nothing kept) when a stage refuses
        or only memory would hold them. Any other exception of a stage reaches the
        caller too: nothing was kept and the device keeps its records."""
        batch = [Message("event", device_id, dict(e.data), e.ts, type=e.type) for e in events]
        for stage in self.stages:
            batch = [out for msg in batch if (out := stage.process(msg, durable=True)) is not None]
        await self.sink.commit(device_id, batch, cursor)
        if self.taps:
            for msg in batch:
                self.taps.see(msg)

    # -- time -------------------------------------------------------------------------
    def tick(self) -> None:
        """About once a group-commit interval: stages release what is due."""
        for stage in self.stages:
            try:
                stage.tick()
            except Exception as err:
                self.stage_failures.failed(f"{stage.name}.tick", err, outcome=_TICK_FAILED)
        self.taps.tick()
        self.stage_failures.tick()

    def due_in(self) -> float | None:
        """Seconds until :meth:`tick` can next change something (the soonest stage or
        failure summary); None while only a new message can."""
        dues = [self.taps.due_in(), self.stage_failures.due_in()]
        for stage in self.stages:
            try:
                dues.append(stage.due_in())
            except Exception as err:
                self.stage_failures.failed(f"{stage.name}.due_in", err, outcome=_TICK_FAILED)
                dues.append(TICK_S)  # as before it could say: looked at every interval
        return min((d for d in dues if d is not None), default=None)

    def flush(self) -> None:
        """At stop: every stage sends on what it holds, in list order."""
        for stage in self.stages:
            try:
                stage.flush()
            except Exception as err:
                self.stage_failures.failed(f"{stage.name}.flush", err, outcome=_FLUSH_FAILED)
        self.taps.summary()
        self.stage_failures.summary()
