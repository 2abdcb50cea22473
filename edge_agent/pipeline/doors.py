"""Door logic: door contacts, exit buttons and alarm inputs turned into door events.

A door contact is a digital input on one device (a channel of a Modbus DI module, read
as telemetry every poll); what unlocks the door is an event of another device (a granted
``card_read`` of a reader or controller, an exit-button press). Neither device knows the
other, so the rule lives here, on the stream (issue 9 item 4)::

    contact telemetry  ─┐                  door_opened / door_closed   (edges only)
    REX telemetry      ─┼─► DoorLogic ─►   door_forced                 (no grant in the window)
    card_read granted  ─┘   (+ tick)       door_held_open              (open too long, once)
                                           digital_input exit_button / fire / emergency

- **Edges only.** A poll that repeats a value emits nothing. The input modules'
  telemetry passes on only when a value changed, and every ``input_heartbeat_s``
  (``input_telemetry: on_change``, the default; ``every_poll`` passes every reading).
- **Forced.** An opening with no grant (card of a configured reader, exit button)
  within ``grant_window_s`` before it is ``door_forced``; with ``grant_late_s`` the
  decision waits that long for a grant that arrives late.
- **Held open.** Open longer than ``held_open_s`` gives one ``door_held_open`` per
  opening (from :meth:`tick`, on the injected clock); ``door_closed`` follows with the
  time it was open.
- **Flapping.** A door that reopens within ``flap_s`` of closing continues the same
  opening: each edge is still an event, but there is no second ``door_forced`` and the
  held-open time runs on.
- **Restarts.** Each door's and input's last published state is kept in the outbox
  database (``device_state``, written in the same transaction as the events it
  explains). After a restart a door still open is not reported again and its held-open
  time runs on from the real opening; one that changed while the agent was down gets
  its edge, marked ``at_start`` (never ``door_forced``: grants of that time are unknown).

Door events are published under the **contact's device** (``ROOT/events/<DI module>``),
with the door id in ``data.door``: that device has a meta and a state topic, so the
platform knows where it hangs and whether the door is watched at all (an offline DI
module means an unknown door), and no virtual device is invented.

Everything runs on the event loop in plain calls; nothing here blocks or sleeps.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from edge_agent.clock import Clock
from edge_agent.config.models import DoorConfig, DoorsConfig
from edge_agent.pipeline.base import Message, Stage

log = logging.getLogger(__name__)

#: ``device_state`` key of a door (the device column holds the door id) and prefix of an
#: input's key (the device column holds the input's device)
DOOR_KEY = "door"
INPUT_KEY = "input:"

#: ``digital_input`` events that unlock a door like a granted card
GRANT_INPUTS = ("exit_button", "lock")


@runtime_checkable
class StateStore(Protocol):
    """Small values kept across restarts (the outbox's ``device_state``)."""

    def get_state(self, device: str, key: str) -> str | None: ...

    def put_state(self, device: str, key: str, value: str) -> None: ...


def input_value(value: Any) -> int | None:
    """A digital input's reading as 0 or 1; None when it is not one (a bad read)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return 1 if value else 0
    return None


@dataclass(slots=True)
class _Door:
    cfg: DoorConfig
    #: None until the first reading of the contact since start
    open: bool | None = None
    opened_at: float | None = None
    closed_at: float | None = None
    #: the last grant: when, and what it was (evidence in the events)
    granted_at: float | None = None
    grant: dict[str, Any] | None = None
    #: this opening was granted / reported forced / reported held open
    granted: bool = False
    forced: bool = False
    held: bool = False
    #: waiting ``grant_late_s`` for a late grant before door_forced
    pending: bool = False
    rex_active: bool | None = None

    @property
    def contact(self) -> dict[str, str]:
        return {"device": self.cfg.contact.device, "point": self.cfg.contact.point}

    def base(self) -> dict[str, Any]:
        data: dict[str, Any] = {"door": self.cfg.id, "input": self.contact}
        if self.cfg.name:
            data["name"] = self.cfg.name
        return data

    def saved(self) -> str:
        return json.dumps(
            {
                "open": self.open,
                "opened_at": self.opened_at,
                "closed_at": self.closed_at,
                "forced": self.forced,
                "held": self.held,
                "granted": self.granted,
            }
        )


@dataclass(slots=True)
class _Input:
    device: str
    point: str
    active_when: int
    #: the door a REX input grants, or the critical input's kind ('fire', 'emergency')
    door: _Door | None = None
    kind: str = "exit_button"
    name: str | None = None
    active: bool | None = None


@dataclass(slots=True)
class _Watch:
    """What one device's telemetry feeds: contacts and inputs by point."""

    contacts: dict[str, list[_Door]] = field(default_factory=dict)
    inputs: dict[str, list[_Input]] = field(default_factory=dict)


class DoorLogic(Stage):
    """The door stage (see the module docstring); after the clock gate."""

    name = "doors"

    def __init__(self, cfg: DoorsConfig, clock: Clock, store: StateStore | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.store = store
        self.doors = [_Door(d) for d in cfg.doors]
        self._watch: dict[str, _Watch] = {}
        #: grant sources: device -> [(door, GrantSource)]
        self._grants: dict[str, list[tuple[_Door, Any]]] = {}
        for door in self.doors:
            c = door.cfg.contact
            self._w(c.device).contacts.setdefault(c.point, []).append(door)
            if door.cfg.rex is not None:
                r = door.cfg.rex
                self._w(r.device).inputs.setdefault(r.point, []).append(
                    _Input(r.device, r.point, r.active_when, door=door)
                )
            for g in door.cfg.grants:
                self._grants.setdefault(g.device, []).append((door, g))
        for inp in cfg.inputs:
            self._w(inp.device).inputs.setdefault(inp.point, []).append(
                _Input(inp.device, inp.point, inp.active_when, kind=inp.input, name=inp.name)
            )
        self.counts = {
            "opened": 0,
            "forced": 0,
            "held_open": 0,
            "critical": 0,
            "telemetry_skipped": 0,
        }
        self.on_change = cfg.input_telemetry == "on_change"
        self.heartbeat_s = cfg.input_heartbeat_s
        #: the last reading passed on per input device: data, quality, ts
        self._passed: dict[str, tuple[dict[str, Any], str, float]] = {}

    def _w(self, device: str) -> _Watch:
        return self._watch.setdefault(device, _Watch())

    # -- the stream ----------------------------------------------------------------------
    def process(self, msg: Message, *, durable: bool) -> Message | None:
        if msg.kind == "telemetry":
            watch = self._watch.get(msg.device)
            if watch is not None:
                self._telemetry(watch, msg)
                if self.on_change and self._unchanged(msg):
                    self.counts["telemetry_skipped"] += 1
                    return None
        elif msg.kind == "event" and msg.device in self._grants:
            self._maybe_grant(msg)
        return msg

    def _unchanged(self, msg: Message) -> bool:
        """An input module's reading that says nothing new: the same values and quality
        as the last one passed on, less than ``input_heartbeat_s`` ago. A module polled
        every 0.25 s would otherwise send 345,600 identical messages a day; the edges
        are in the door events, and the device's state topic says it is read."""
        ts = self._now(msg.ts)
        last = self._passed.get(msg.device)
        if (
            last is not None
            and last[0] == msg.data
            and last[1] == msg.quality
            and 0 <= ts - last[2] < self.heartbeat_s
        ):
            return True
        self._passed[msg.device] = (dict(msg.data), msg.quality, ts)
        return False

    def _now(self, ts: float | None) -> float:
        return self.clock.wall() if ts is None else ts

    def _telemetry(self, watch: _Watch, msg: Message) -> None:
        ts = self._now(msg.ts)
        # inputs first: an exit button pressed in the same poll as the door opened
        # grants that opening
        for point, inputs in watch.inputs.items():
            value = input_value(msg.data.get(point))
            if value is None:
                continue
            for inp in inputs:
                self._input(inp, value == inp.active_when, ts)
        for point, doors in watch.contacts.items():
            value = input_value(msg.data.get(point))
            if value is None:
                continue
            for door in doors:
                self._contact(door, value != door.cfg.contact.closed_when, ts)

    def _maybe_grant(self, msg: Message) -> None:
        data = msg.data
        if msg.type == "card_read":
            if data.get("result") != "granted":
                return
        elif msg.type != "digital_input" or data.get("input") not in GRANT_INPUTS:
            return
        elif data.get("active") is False:
            return
        now = self.clock.wall()
        # a grant never counts from the future (a reader clock ahead of ours)
        at = now if msg.ts is None else min(msg.ts, now)
        for door, source in self._grants[msg.device]:
            if source.door is not None and str(data.get("door")) != str(source.door):
                continue
            if source.reader is not None and data.get("reader") != source.reader:
                continue
            evidence = {"device": msg.device, "type": msg.type}
            for key in ("reader", "door", "input"):
                if key in data:
                    evidence[key] = data[key]
            self._grant(door, at, evidence)

    def _grant(self, door: _Door, at: float, evidence: dict[str, Any]) -> None:
        door.granted_at, door.grant = at, evidence
        if door.open and door.pending and door.opened_at is not None:
            if at <= door.opened_at + door.cfg.grant_late_s:
                door.pending = False
                door.granted = True
                self._save(door)

    # -- doors -----------------------------------------------------------------------------
    def _contact(self, door: _Door, is_open: bool, ts: float) -> None:
        if door.open is None:
            self._first(door, is_open, ts)
            return
        if is_open == door.open:
            return
        if is_open:
            self._opened(door, ts)
        else:
            self._closed(door, ts)

    def _first(self, door: _Door, is_open: bool, ts: float) -> None:
        """The first reading since start: compare with what was published before."""
        saved = self._load(door)
        was_open = saved.get("open")
        if saved:
            door.opened_at = saved.get("opened_at")
            door.closed_at = saved.get("closed_at")
            door.forced = bool(saved.get("forced"))
            door.held = bool(saved.get("held"))
            door.granted = bool(saved.get("granted"))
        door.open = is_open
        if is_open and was_open is True:
            if door.opened_at is None:
                door.opened_at = ts
            return  # still open: published before the restart, its held time runs on
        if not is_open and was_open is not True:
            return  # closed, as published (or never published: nothing to say)
        data = door.base()
        data["at_start"] = True
        if is_open:
            # Opened while the agent was down (or before its first start): the grants of
            # that time are unknown, so it is never called forced.
            door.opened_at, door.forced, door.held, door.granted = ts, False, False, False
            self.counts["opened"] += 1
            self._event(door, "door_opened", {**data, "granted": None}, ts)
        else:
            door.closed_at = ts
            if door.opened_at is not None:
                data["open_s"] = round(ts - door.opened_at, 3)
            self._event(door, "door_closed", data, ts)
        self._save(door)

    def _opened(self, door: _Door, ts: float) -> None:
        cfg = door.cfg
        door.open = True
        data = door.base()
        flap = (
            door.closed_at is not None
            and door.opened_at is not None
            and ts - door.closed_at <= cfg.flap_s
        )
        if flap:
            # The same opening goes on (a bouncing contact, a door that sprang back).
            assert door.closed_at is not None
            data["reopened_after_s"] = round(ts - door.closed_at, 3)
            data["granted"] = door.granted
            self._event(door, "door_opened", data, ts)
            self._save(door)
            return
        door.opened_at, door.forced, door.held, door.pending = ts, False, False, False
        self.counts["opened"] += 1
        door.granted = door.granted_at is not None and (
            ts - cfg.grant_window_s <= door.granted_at <= ts + cfg.grant_late_s
        )
        data["granted"] = door.granted
        if door.granted:
            data["granted_by"] = {**(door.grant or {}), "before_s": _before(door, ts)}
        self._event(door, "door_opened", data, ts)
        if not door.granted:
            if cfg.grant_late_s > 0:
                door.pending = True
            else:
                self._forced(door)
        self._save(door)

    def _closed(self, door: _Door, ts: float) -> None:
        if door.pending:
            self._forced(door)  # closed again before a late grant came
        door.open, door.closed_at = False, ts
        data = door.base()
        if door.opened_at is not None:
            data["open_s"] = round(ts - door.opened_at, 3)
        if door.held:
            data["held_open"] = True
        self._event(door, "door_closed", data, ts)
        self._save(door)

    def _forced(self, door: _Door) -> None:
        door.pending = False
        if door.forced or door.opened_at is None:
            return
        door.forced = True
        self.counts["forced"] += 1
        data = door.base()
        data["grant_window_s"] = door.cfg.grant_window_s
        data["last_grant"] = (
            None
            if door.grant is None
            else {**door.grant, "before_s": _before(door, door.opened_at)}
        )
        self._event(door, "door_forced", data, door.opened_at)

    # -- inputs ----------------------------------------------------------------------------
    def _input(self, inp: _Input, active: bool, ts: float) -> None:
        if inp.door is not None:
            self._rex(inp, active, ts)
            return
        if inp.active is None:
            saved = self._load_input(inp)
            inp.active = active
            was = saved.get("active")
            if active == was or (not active and was is None):
                return
            self._critical(inp, active, ts, at_start=True)
            return
        if active == inp.active:
            return
        inp.active = active
        self._critical(inp, active, ts, at_start=False)

    def _rex(self, inp: _Input, active: bool, ts: float) -> None:
        first = inp.active is None
        pressed = active and not first and not inp.active
        inp.active = active
        if not pressed:
            return  # released, unchanged, or already pressed at start (when unknown)
        door = inp.door
        assert door is not None
        evidence = {"device": inp.device, "type": "digital_input", "input": "exit_button"}
        self._grant(door, ts, evidence)
        self._emit(
            inp.device,
            "digital_input",
            {
                "input": "exit_button",
                "active": True,
                "door": door.cfg.id,
                "point": inp.point,
            },
            ts,
        )

    def _critical(self, inp: _Input, active: bool, ts: float, *, at_start: bool) -> None:
        data: dict[str, Any] = {
            "input": inp.kind,
            "active": active,
            "severity": "critical",
            "point": inp.point,
        }
        if inp.name:
            data["name"] = inp.name
        if at_start:
            data["at_start"] = True
        if active:
            self.counts["critical"] += 1
        self._emit(inp.device, "digital_input", data, ts)
        if self.store is not None:
            self.store.put_state(inp.device, INPUT_KEY + inp.point, json.dumps({"active": active}))

    # -- time ------------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock.wall()
        for door in self.doors:
            if not door.open or door.opened_at is None:
                continue
            if door.pending and now >= door.opened_at + door.cfg.grant_late_s:
                self._forced(door)
                self._save(door)
            if not door.held and now - door.opened_at >= door.cfg.held_open_s:
                door.held = True
                self.counts["held_open"] += 1
                data = door.base()
                data["open_s"] = round(now - door.opened_at, 3)
                data["held_open_s"] = door.cfg.held_open_s
                self._event(door, "door_held_open", data, door.opened_at + door.cfg.held_open_s)
                self._save(door)

    def due_in(self) -> float | None:
        """Seconds until an open door's late grant or held-open time runs out."""
        due: float | None = None
        for door in self.doors:
            if not door.open or door.opened_at is None:
                continue
            if door.pending:
                due = _earlier(due, door.opened_at + door.cfg.grant_late_s)
            if not door.held:
                due = _earlier(due, door.opened_at + door.cfg.held_open_s)
        return None if due is None else max(0.0, due - self.clock.wall())

    def flush(self) -> None:
        """At stop: a forced decision still waiting for a late grant is made now."""
        for door in self.doors:
            if door.pending:
                self._forced(door)
                self._save(door)

    def stats(self) -> dict[str, int]:
        return {f"doors_{k}": v for k, v in self.counts.items()}

    # -- out -------------------------------------------------------------------------------
    def _event(self, door: _Door, type_: str, data: dict[str, Any], ts: float) -> None:
        self._emit(door.cfg.contact.device, type_, data, ts)

    def _emit(self, device: str, type_: str, data: dict[str, Any], ts: float) -> None:
        self.emit(Message("event", device, data, ts, type=type_))

    def _save(self, door: _Door) -> None:
        # After the events: the outbox writes both in one transaction.
        if self.store is not None:
            self.store.put_state(door.cfg.id, DOOR_KEY, door.saved())

    def _load(self, door: _Door) -> dict[str, Any]:
        return _loads(None if self.store is None else self.store.get_state(door.cfg.id, DOOR_KEY))

    def _load_input(self, inp: _Input) -> dict[str, Any]:
        if self.store is None:
            return {}
        return _loads(self.store.get_state(inp.device, INPUT_KEY + inp.point))


def _before(door: _Door, ts: float) -> float | None:
    return None if door.granted_at is None else round(ts - door.granted_at, 3)


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("door state %r cannot be read; starting from the first reading", text)
        return {}
    return value if isinstance(value, dict) else {}


def _earlier(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
