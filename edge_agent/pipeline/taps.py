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
import time
from collections.abc import Callable

from edge_agent.pipeline.base import Message
from edge_agent.pipeline.failures import Failures

Tap = Callable[[Message], None]


class Taps:
    """The taps of one pipeline; their failures never reach the caller."""

    def __init__(
        self, summary_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.summary_s = summary_s
        self.clock = clock
        self._taps: list[tuple[str, Tap]] = []
        self._failures = Failures(
            "tap", "the message still goes on / 数据旁路出错，数据照常发送", summary_s, clock
        )

    def add(self, name: str, tap: Tap) -> None:
        self._taps.append((name, tap))

    def __len__(self) -> int:
        return len(self._taps)

    def failures(self, name: str) -> int:
        """How often the tap ``name`` raised so far."""
        return self._failures.count(name)

    def see(self, msg: Message) -> None:
        for name, tap in self._taps:
            try:
                tap(msg)
            except Exception as err:
                self._failures.failed(name, err, msg)

    def total_failures(self) -> int:
        return self._failures.total()

    def tick(self) -> None:
        """One summary line per failing tap at most every ``summary_s``."""
        self._failures.tick()

    def due_in(self) -> float | None:
        """Seconds until :meth:`tick` has a summary to write (None: nothing to say)."""
        return self._failures.due_in()

    def summary(self) -> None:
        self._failures.summary()


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
