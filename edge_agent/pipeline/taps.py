"""Taps: observers that see every message after the pipeline, for the rule engine
(issue #10) and the local console.

A tap is a plain callable ``tap(msg) -> None``, added with
:meth:`~edge_agent.pipeline.runner.Pipeline.add_tap`. It sees a message once it is on its
way to the outbox (after the sink took it; a push device's events only once their
commit is durable), in the order they go out, with the card number already
pseudonymised and the timestamp already corrected by the clock gate. Messages a stage
dropped or still holds are not seen.

A tap must never block or break the flow:

- it runs on the event loop, inside the driver's call: return at once. Work that takes
  time or awaits goes through a :class:`QueueTap` (bounded; the oldest is dropped and
  counted when the consumer is behind);
- it must not change the message (copy what it keeps);
- an exception in a tap is caught: the message still goes on, the first failure of each
  tap is logged with its traceback, the rest are counted and summarised in one line at
  most every ``summary_s`` (and at stop), since logs live on an SD card.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.pipeline.base import Message

log = logging.getLogger(__name__)

Tap = Callable[[Message], None]


@dataclass(slots=True)
class _Entry:
    name: str
    tap: Tap
    failed: int = 0
    #: failures not yet in a log line
    unreported: int = 0
    last_error: str = ""


class Taps:
    """The taps of one pipeline; their failures never reach the caller."""

    def __init__(
        self, summary_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.summary_s = summary_s
        self._clock = clock
        self._entries: list[_Entry] = []
        self._summarised_at = clock()

    def add(self, name: str, tap: Tap) -> None:
        self._entries.append(_Entry(name, tap))

    def __len__(self) -> int:
        return len(self._entries)

    def failures(self, name: str) -> int:
        """How often the tap ``name`` raised so far."""
        return sum(e.failed for e in self._entries if e.name == name)

    def see(self, msg: Message) -> None:
        for entry in self._entries:
            try:
                entry.tap(msg)
            except Exception as err:
                self._failed(entry, msg, err)

    def _failed(self, entry: _Entry, msg: Message, err: Exception) -> None:
        entry.failed += 1
        entry.last_error = repr(err)[:300]
        if entry.failed == 1:
            log.warning(
                "pipeline tap %r failed on a %s of %s: %r; the message still goes on, "
                "further failures are counted (summary every %g s) "
                "/ 数据旁路 %r 出错，数据照常发送",
                entry.name,
                msg.kind,
                msg.device,
                err,
                self.summary_s,
                entry.name,
                exc_info=err,
            )
            return
        entry.unreported += 1
        log.debug("pipeline tap %r failed again: %r", entry.name, err)

    def tick(self) -> None:
        """One summary line per failing tap at most every ``summary_s``."""
        if self._clock() - self._summarised_at >= self.summary_s:
            self.summary()

    def summary(self) -> None:
        self._summarised_at = self._clock()
        for entry in self._entries:
            if entry.unreported:
                log.warning(
                    "pipeline tap %r failed %d more times (%d in all); last: %s "
                    "/ 数据旁路 %r 又出错 %d 次",
                    entry.name,
                    entry.unreported,
                    entry.failed,
                    entry.last_error,
                    entry.name,
                    entry.unreported,
                )
                entry.unreported = 0


class QueueTap:
    """A tap for consumers that await (an SSE stream, a rule engine's task): it only
    appends to a bounded queue, so the flow never waits for the consumer.

    ``await queue.get()`` returns the next message; when the consumer falls more than
    ``maxlen`` behind, the oldest are dropped and counted in ``dropped``."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._queue: collections.deque[Message] = collections.deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self.dropped = 0

    def __call__(self, msg: Message) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(msg)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def get(self) -> Message:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()
