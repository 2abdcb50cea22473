"""The alarm stream of the console: every transition of the alarm book (event ``alarm``)
and every entry of its audit log (event ``audit``: also the actions that change no
alarm, such as taking a rule out of service) gets an event id and goes into a bounded
ring; each connected browser waits on it.

Ids are ``<run>-<n>``: ``run`` is random per start of the agent, ``n`` counts the
transitions. A browser that reconnects sends the last id it saw (``Last-Event-ID``):
when that id is of this run and still in the ring, it gets exactly the transitions it
missed; otherwise (an agent restart, a browser away too long) a full snapshot of the
book. Nothing runs while nobody is connected: the book's listener appends to the ring,
and a stream sleeps on an event until there is news (or its heartbeat is due).
"""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: events kept for browsers that reconnect (a transition is two: its audit entry too)
RING_MAX = 1000


@dataclass(frozen=True)
class StreamEvent:
    id: str
    name: str  # "alarm", "audit" or "snapshot"
    data: str  # JSON

    def encode(self) -> bytes:
        # JSON has no raw newlines, so one data: line is enough
        return f"id: {self.id}\nevent: {self.name}\ndata: {self.data}\n\n".encode()


class AlarmStream:
    """Transitions of the alarm book as numbered events, and who waits for them."""

    def __init__(
        self, snapshot: Callable[[], list[dict[str, Any]]], ring_max: int = RING_MAX
    ) -> None:
        self._snapshot = snapshot
        self.run_id = secrets.token_hex(4)
        self._n = 0
        self._ring: collections.deque[tuple[int, StreamEvent]] = collections.deque(maxlen=ring_max)
        self._waiters: set[asyncio.Event] = set()
        self.closed = False

    # -- from the alarm book (a listener: returns at once) -------------------------------
    def on_transition(self, data: dict[str, Any]) -> None:
        self._push("alarm", data)

    def on_audit(self, entry: dict[str, Any]) -> None:
        self._push("audit", entry)

    def _push(self, name: str, data: dict[str, Any]) -> None:
        self._n += 1
        event = StreamEvent(f"{self.run_id}-{self._n}", name, json.dumps(data, ensure_ascii=False))
        self._ring.append((self._n, event))
        for waiter in self._waiters:
            waiter.set()

    # -- for a stream ---------------------------------------------------------------------
    @property
    def last_id(self) -> str:
        return f"{self.run_id}-{self._n}"

    def snapshot_event(self) -> StreamEvent:
        return StreamEvent(
            self.last_id,
            "snapshot",
            json.dumps(self._snapshot(), ensure_ascii=False),
        )

    def start(self, last_event_id: str | None) -> tuple[list[StreamEvent], int]:
        """What a stream sends first, and the number it has seen up to: the missed
        transitions when ``last_event_id`` can be resumed, else a snapshot."""
        if last_event_id:
            run, _, n_text = last_event_id.strip().rpartition("-")
            if run == self.run_id and n_text.isdigit():
                n = int(n_text)
                oldest = self._ring[0][0] if self._ring else self._n + 1
                # resumable when nothing after n has left the ring
                if n <= self._n and (n + 1 >= oldest or n == self._n):
                    return [e for i, e in self._ring if i > n], self._n
        return [self.snapshot_event()], self._n

    def after(self, n: int) -> tuple[list[StreamEvent], int]:
        """Transitions after ``n``; a snapshot when some of them left the ring already."""
        if n >= self._n:
            return [], n
        if self._ring and self._ring[0][0] > n + 1:
            return [self.snapshot_event()], self._n
        return [e for i, e in self._ring if i > n], self._n

    def waiter(self) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.add(event)
        return event

    def forget(self, event: asyncio.Event) -> None:
        self._waiters.discard(event)

    @property
    def streams(self) -> int:
        return len(self._waiters)

    def close(self) -> None:
        """End every stream (the agent stops)."""
        self.closed = True
        for waiter in self._waiters:
            waiter.set()
