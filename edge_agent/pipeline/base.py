"""The stage contract: what flows through the pipeline and what a stage may do with it.

A :class:`Message` is one reading (``telemetry``), one event (``event``) or one device
state change (``state``) on its way from a driver to the outbox. A :class:`Stage`
sees every message in list order and, in :meth:`Stage.process`,

- returns it (changed or not) to pass it on,
- returns ``None`` to drop it or to hold it, and
- may send messages on later, or new ones it derives (a held reading once the clock is
  right, a ``door_forced`` after a timeout), with :meth:`Stage.emit`: they go through
  the stages after this one, never through this one again.

``durable=True`` marks the events of a push device's ``commit(events, cursor=...)``: the
driver waits for them to be on disk and then moves its cursor past them, so a stage
must not hold them. It passes, changes or drops them, or raises
:class:`~edge_agent.errors.NotDurableError` to refuse the whole batch (nothing is kept,
the cursor stays, the device keeps its records). Stages run batch by batch (stage 1 on
every message of a commit, then stage 2), so a stage that refuses does so before any
later stage has seen the batch.

:meth:`Stage.tick` is called from the agent's outbox task after each group commit and
when :meth:`Stage.due_in` says a timer of the stage is due (an idle agent sleeps until
then: ask for the time you need); :meth:`Stage.flush` once at stop, to send on whatever
it still holds. All run on the event loop and must not block.

A stage that raises on a message loses that message (it is never sent on unprocessed),
logged once per stage; in a commit the exception reaches the driver and nothing is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from edge_agent.driver import Quality

MessageKind = Literal["telemetry", "event", "state"]

#: how often a stage whose timers are not known (no :meth:`Stage.due_in`) is ticked,
#: and how often a timer that must be polled is looked at (the default commit interval)
TICK_S = 0.5


@dataclass(slots=True)
class Message:
    """One message between a driver and the outbox.

    The runner copies a driver's ``data`` once when the message enters the pipeline,
    so stages may change a message in place (``msg.data["card"] = ...``)."""

    kind: MessageKind
    device: str
    #: telemetry: ``{metric: value}``; event: the event's data; state: the state payload
    #: (``state``, ``since``, ``last_error``)
    data: dict[str, Any]
    #: UNIX seconds (UTC) when measured or when it happened; None: now (stamped by the sink)
    ts: float | None = None
    quality: Quality = "good"
    #: the event type (``card_read``, ``door_opened`` ...), None for telemetry and state
    type: str | None = None


Forward = Callable[[Message], None]


def _unbound(msg: Message) -> None:
    raise RuntimeError("stage is not in a pipeline yet: emit() has nowhere to go")


class Stage:
    """Base of every stage; the defaults pass everything on and hold nothing."""

    #: short name for logs and ``Pipeline.find``
    name: ClassVar[str] = "stage"

    def __init__(self) -> None:
        self._forward: Forward = _unbound

    def bind(self, forward: Forward) -> None:
        """Called once by the pipeline: where :meth:`emit` sends messages."""
        self._forward = forward

    def emit(self, msg: Message) -> None:
        """Send ``msg`` on from after this stage: a message held earlier, or a new one.
        Call it from :meth:`process`, :meth:`tick` or :meth:`flush` (on the event loop)."""
        self._forward(msg)

    def process(self, msg: Message, *, durable: bool) -> Message | None:
        """Return the message to pass it on, None to drop or hold it."""
        return msg

    def tick(self) -> None:
        """Called after each group commit and when :meth:`due_in` is due: release what is due."""

    def due_in(self) -> float | None:
        """Seconds until :meth:`tick` can next change something (0: now), None while only
        a new message can. A stage that overrides :meth:`tick` but not this one is ticked
        every :data:`TICK_S`, as every stage was before the agent learnt to sleep."""
        return TICK_S if type(self).tick is not Stage.tick else None

    def flush(self) -> None:
        """Called once at stop: emit whatever is still held."""

    def stats(self) -> dict[str, int]:
        """Counters for ``ROOT/health`` (``pipeline``); keys unique across stages."""
        return {}


class Sink(Protocol):
    """Where a message goes after the last stage (the outbox, in the agent)."""

    def put(self, msg: Message) -> None:
        """Queue one message; never blocks."""
        ...

    async def commit(self, device: str, msgs: Sequence[Message], cursor: str | None) -> None:
        """``msgs`` (events) and ``cursor`` in one transaction; returns once durable,
        raises :class:`~edge_agent.errors.NotDurableError` when only memory holds them."""
        ...
