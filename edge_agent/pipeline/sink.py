"""The end of the pipeline in the agent: the outbox (and the retained state topic)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent.driver import Emit
from edge_agent.envelope import Lane
from edge_agent.outbox.store import CURSOR, Outbox
from edge_agent.pipeline.base import Message
from edge_agent.topics import Topics

StateSink = Callable[[str, dict[str, Any]], None]


#: events security staff must see within a second (docs/mqtt.md "Door and card events")
SECURITY_EVENTS = frozenset({"door_forced", "door_held_open", "reader_tamper", "camera_tamper"})


def is_security_event(msg: Message) -> bool:
    """A forced or held door, a tamper, or a critical input (fire, duress, emergency)."""
    if msg.type in SECURITY_EVENTS:
        return True
    return msg.type == "digital_input" and msg.data.get("severity") == "critical"


class OutboxSink:
    """Puts readings and events into the outbox through ``emitter`` (the supervisor's
    :class:`~edge_agent.supervisor.OutboxEmitter`), commits a push device's events with
    its cursor in one transaction, and hands device states to ``state``."""

    def __init__(self, emitter: Emit, outbox: Outbox, root: str, state: StateSink) -> None:
        self.emitter = emitter
        self.outbox = outbox
        self.topics = Topics(root)
        self.state = state

    def put(self, msg: Message) -> None:
        if msg.kind == "telemetry":
            self.emitter.telemetry(msg.device, msg.data, ts=msg.ts, quality=msg.quality)
        elif msg.kind == "event":
            self.emitter.event(msg.device, msg.type or "", msg.data, ts=msg.ts)
            if is_security_event(msg):
                self.outbox.request_commit()  # like an alarm: not at the end of the interval
        else:
            self.state(msg.device, msg.data)

    # -- StateStore (the door logic's state across restarts) ----------------------------
    def get_state(self, device: str, key: str) -> str | None:
        """A ``device_state`` value as committed (loaded when the outbox opened)."""
        return self.outbox.state.get((device, key))

    def put_state(self, device: str, key: str, value: str) -> None:
        """Saved with the next commit, in the transaction of the messages put before it."""
        self.outbox.put_state(device, key, value)

    async def commit(self, device: str, msgs: Sequence[Message], cursor: str | None) -> None:
        now = time.time()
        messages = [
            Outbox.message(
                Lane.EVENT,
                self.topics.events(m.device),
                device=m.device,
                kind="event",
                ts=now if m.ts is None else m.ts,
                data=m.data,
                type_=m.type,
            )
            for m in msgs
        ]
        state = {} if cursor is None else {(device, CURSOR): str(cursor)}
        await self.outbox.commit(messages, state)
