"""Camera alarms as edges: one ``active: true`` when a state begins, one ``active: false``
when it ends, never a stream of repeats. Shared by the native camera kinds
(``hikvision_camera``, ``dahua``); pure, standard library only, time injected.

Cameras say "it is happening" in two ways:

- **Held** (Hikvision ``alertStream``): an ongoing alarm is posted again about every second
  (``activePostCount`` rising) and many firmwares never post its end (``inactive``). A held
  state ends at an explicit stop or ``hold_s`` after its last post.
- **Explicit** (Dahua ``Start``/``Stop``): the state lasts until its ``Stop``; a second
  ``Start`` of an active state is a repeat.

A **one-shot** key (a line crossing) gives one event at its first post and nothing at its
end: a camera that repeats one crossing for two seconds is one crossing.

:meth:`Edges.lost` ends every active state when the stream is lost (a ``Stop`` may have been
missed): the ``active: false`` carries ``"ended": "stream_lost"``, so the platform can tell
it from a camera's own end.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

#: a contract event: ``(type, data)``
Contract = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class _State:
    event_type: str
    data: dict[str, Any]
    #: monotonic time at which a held state ends by itself; None: only at a stop
    until: float | None
    one_shot: bool


class Edges:
    """The active states of one camera, by key (e.g. ``("motion", channel, zone)``)."""

    def __init__(self) -> None:
        self._states: dict[Hashable, _State] = {}
        #: posts that repeated an active state (counted for diagnostics)
        self.repeats = 0

    def __len__(self) -> int:
        return len(self._states)

    def active(self) -> list[Hashable]:
        """The keys active now (one-shot ones included until they lapse)."""
        return list(self._states)

    def start(
        self,
        key: Hashable,
        event_type: str,
        data: Mapping[str, Any],
        now: float,
        *,
        hold_s: float | None,
        one_shot: bool = False,
    ) -> Contract | None:
        """A post saying the state ``key`` holds: its event when it begins (``data`` plus
        ``active: true``, or ``data`` alone for a one-shot), None for a repeat (which
        pushes a held state's end ``hold_s`` further)."""
        until = None if hold_s is None else now + hold_s
        found = self._states.get(key)
        if found is not None:
            self.repeats += 1
            if found.until is not None and until is not None:
                found.until = max(found.until, until)
            return None
        body = dict(data)
        self._states[key] = _State(event_type, body, until, one_shot)
        if one_shot:
            return event_type, body
        return event_type, body | {"active": True}

    def stop(self, key: Hashable) -> Contract | None:
        """A post saying the state ``key`` ended: its ``active: false`` event, or None when it
        was not active (a ``Stop`` after the agent started, an inactive heartbeat) or was a
        one-shot."""
        found = self._states.pop(key, None)
        if found is None or found.one_shot:
            return None
        return found.event_type, found.data | {"active": False}

    def expire(self, now: float) -> list[Contract]:
        """End the held states whose last post is ``hold_s`` old (in the order they began)."""
        out: list[Contract] = []
        for key in [k for k, s in self._states.items() if s.until is not None and s.until <= now]:
            ended = self.stop(key)
            if ended is not None:
                out.append(ended)
        return out

    def next_expiry(self) -> float | None:
        """When the next held state ends by itself (monotonic), None when none will."""
        times = [s.until for s in self._states.values() if s.until is not None]
        return min(times) if times else None

    def lost(self) -> list[Contract]:
        """The stream is gone: every active state ends (``"ended": "stream_lost"``)."""
        out: list[Contract] = []
        for key in list(self._states):
            ended = self.stop(key)
            if ended is not None:
                out.append((ended[0], ended[1] | {"ended": "stream_lost"}))
        return out
