"""Alarms with the ISA-18.2 lifecycle, and the gateway's own health alarms.

Every state transition is an envelope on ``ROOT/alarms`` (through the outbox,
alarm lane: committed at once with ``synchronous=FULL`` and drained before
anything else), and the alarm's current state is retained on
``ROOT/alarms/active/{alarm_id}`` while it is active or unacknowledged. An
alarm that clears while unacknowledged stays visible until someone
acknowledges it.

The raisers are the agent itself (``outbox_corrupt``, ``outbox_disk_full``,
``outbox_data_lost``), the guard patrol and the rule engine for device values
(:mod:`edge_agent.alarms.rules`: CO₂ too high, door forced …).

Beyond raise, clear, ack and shelve (docs/alarms.md, "Lifecycle"):

- **Convergence.** An ack or shelve for an alarm that is already in that state (the
  console acknowledged it while the uplink was down, then the platform's ``alarm_ack``
  arrives) answers with the current state and who acknowledged, and changes nothing:
  no transition, so no second notification. Finished alarms are remembered
  (:data:`FINISHED_MAX`) so a late ack of one still converges; an id never seen is
  refused.
- **Audit.** Every transition and every action (also one that changed nothing) is an
  audit entry: who, when, from where (``origin``); kept in the outbox database in the
  same transaction as the alarm message (:class:`AuditStore`), readable with
  :meth:`AlarmBook.audit`.
- **Shelve** outlives a restart: its end is saved on the wall clock and taken back as
  what remains of it (never more than it was given).
- **Out of service / suppressed by schedule.** A rule (or rule on some devices) out of
  service, or inside its ``suppress:`` schedule, raises nothing: the condition is held
  by the book, an open alarm leaves view (a ``cleared`` transition whose ``suppressed``
  says why), and when it is back the held conditions are raised anew.

Time comes from an injected clock (``wall``, ``mono``).
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from edge_agent.envelope import Lane, iso_ms, new_ulid
from edge_agent.topics import Topics

log = logging.getLogger(__name__)

Severity = Literal["critical", "major", "minor", "warning"]
AlarmState = Literal["active_unacked", "active_acked", "cleared_unacked", "cleared", "shelved"]

Put = Callable[..., None]
SetRetained = Callable[[str, dict[str, Any] | None], None]
#: called with an alarm's ``data()`` after each transition is in the outbox
Listener = Callable[[dict[str, Any]], None]
#: why an alarm is out of view without being acknowledged (the ``suppressed`` data field)
Suppressed = Literal["out_of_service", "schedule"]

#: finished alarms (cleared and acknowledged) remembered for late acks and shelves;
#: after a restart those of the last :data:`AUDIT_MEMORY` audit entries
FINISHED_MAX = 500
#: audit entries kept in memory for :meth:`AlarmBook.audit` (the database keeps more)
AUDIT_MEMORY = 1000
#: the longest shelve, minutes
SHELVE_MAX_MIN = 24 * 60


class AlarmError(ValueError):
    """An alarm command that cannot be carried out (unknown id, wrong state)."""


@dataclass
class Alarm:
    alarm_id: str
    rule: str
    device: str
    severity: Severity
    message: str
    value: Any = None
    threshold: Any = None
    state: AlarmState = "active_unacked"
    raised_at: float = field(default_factory=time.time)
    acked_by: str | None = None
    active: bool = True
    #: when the shelve ends, on the monotonic clock: a clock step (NTP at boot, a
    #: wrong manual setting) must not shorten or stretch a 30-minute shelve
    shelved_until: float | None = None
    #: the shelve's end on the wall clock and its length, saved: after a restart the
    #: shelve goes on for what remains of it, never longer than it was given
    shelved_until_wall: float | None = None
    shelve_s: float | None = None
    #: set on the transition that takes an alarm out of view unacknowledged
    suppressed: Suppressed | None = None
    #: the picture a rule with ``snapshot:`` attached: ``{"topic", "sha256"}``
    snapshot: dict[str, str] | None = None

    def data(self) -> dict[str, Any]:
        return {
            "alarm_id": self.alarm_id,
            "rule": self.rule,
            "device": self.device,
            "severity": self.severity,
            "state": self.state,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
            "raised_at": iso_ms(self.raised_at),
            "acked_by": self.acked_by,
            "snapshot": self.snapshot,
        } | ({"suppressed": self.suppressed} if self.suppressed else {})


class AlarmStore(Protocol):
    """Where the alarm book keeps its open alarms (a JSON text)."""

    def load(self) -> str | None: ...

    def save(self, text: str) -> None: ...


@runtime_checkable
class AuditStore(Protocol):
    """A store that also keeps the audit log (the outbox database does)."""

    def audit(self, entry: dict[str, Any]) -> None:
        """Save ``entry`` with the next commit (the one of the alarm message it explains)."""

    def recent_audit(self, limit: int) -> list[dict[str, Any]]:
        """The newest saved entries, newest first."""


class TimeSource(Protocol):
    """Wall and monotonic time (:class:`edge_agent.clock.SystemClock`; tests inject one)."""

    def wall(self) -> float: ...

    def mono(self) -> float: ...


class _SystemTime:
    def wall(self) -> float:
        return time.time()

    def mono(self) -> float:
        return time.monotonic()


class StateDb(Protocol):
    """What :class:`OutboxAlarmStore` needs from the outbox."""

    state: dict[tuple[str, str], str]

    def put_state(self, device: str, key: str, value: str) -> None: ...


class AlarmSink(Protocol):
    """What a source of alarms (the rule engine, the guard patrol) needs of
    :class:`AlarmBook`: a small surface, so it can be tested with a fake."""

    def raise_(
        self,
        rule: str,
        device: str,
        severity: Any,
        *,
        en: str,
        zh: str,
        value: Any = None,
        threshold: Any = None,
        origin: str = ...,
    ) -> Any: ...

    def clear(self, rule: str, device: str, *, origin: str = ...) -> None: ...

    def find(self, rule: str, device: str) -> Any: ...

    def suppress(self, rule: str, on: bool, *, origin: str = ...) -> None: ...

    def is_suppressed(self, rule: str, device: str) -> bool: ...


#: ``device_state`` row of the alarm book: device "" is the gateway itself
ALARM_STATE = ("", "alarms")


class OutboxAlarmStore:
    """The open alarms in the outbox database (``device_state``), saved in the same
    transaction as the alarm messages that changed them: a crash can never keep a
    transition on the uplink and lose it from the book, or the other way round.

    ``legacy`` is the JSON file of earlier versions (``outbox.db.alarms.json``): read
    once when the database has no alarm state yet, and deleted at the start after,
    once its content is known to be in the database."""

    def __init__(self, db: StateDb, legacy: Path | None = None) -> None:
        self.db = db
        self.legacy = legacy

    def load(self) -> str | None:
        saved = self.db.state.get(ALARM_STATE)
        if self.legacy is None or not self.legacy.exists():
            return saved
        if saved is not None:
            # Migrated at an earlier start (the database has it now): the file goes.
            try:
                self.legacy.unlink()
                log.info("removed %s: the alarms are in the outbox database now", self.legacy)
            except OSError as err:
                log.warning("cannot remove %s: %s", self.legacy, err)
            return saved
        try:
            text = self.legacy.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            log.error(
                "the saved alarms in %s are unreadable and were ignored: %s", self.legacy, err
            )
            return None
        log.info(
            "moving the saved alarms from %s into the outbox database / 告警状态迁移到缓存数据库",
            self.legacy,
        )
        self.db.put_state(*ALARM_STATE, text)
        return text

    def save(self, text: str) -> None:
        self.db.put_state(*ALARM_STATE, text)

    # The outbox (edge_agent/outbox/store.py) has the audit table; a database without
    # one (an older fake) keeps the book working, with its audit in memory only.
    def audit(self, entry: dict[str, Any]) -> None:
        put = getattr(self.db, "put_audit", None)
        if put is not None:
            put(entry)

    def recent_audit(self, limit: int) -> list[dict[str, Any]]:
        recent: list[dict[str, Any]] = getattr(self.db, "audit_recent", [])
        return list(recent[:limit])


@dataclass
class Suppression:
    """A rule (on the devices ``device`` matches, a shell pattern) that raises nothing:
    out of service (config or a person) or inside its ``suppress:`` schedule."""

    rule: str
    device: str
    reason: Suppressed
    by: str | None = None
    origin: str = ""
    since: float = 0.0
    #: from the config: not saved, and not put back in service by a method
    configured: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.reason, self.rule, self.device)

    def matches(self, rule: str, device: str) -> bool:
        return rule == self.rule and fnmatch.fnmatchcase(device, self.device)

    def data(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "device": self.device,
            "reason": self.reason,
            "by": self.by,
            "origin": self.origin,
            "since": iso_ms(self.since),
            "configured": self.configured,
        }


def parse_target(text: str) -> tuple[str, str]:
    """``rule`` or ``rule@device`` (the device may be a shell pattern) -> (rule, device)."""
    rule, _, device = text.partition("@")
    return rule, device or "*"


class AlarmBook:
    """The alarms this gateway currently knows, and their transitions."""

    def __init__(
        self,
        root: str,
        put: Put,
        set_retained: SetRetained,
        language: str = "zh",
        store: AlarmStore | None = None,
        *,
        clock: TimeSource | None = None,
        out_of_service: Iterable[str] = (),
    ) -> None:
        self.root = root
        self.topics = Topics(root)
        self._put = put
        self._set_retained = set_retained
        self.language = language
        self.clock: TimeSource = clock or _SystemTime()
        self.alarms: dict[str, Alarm] = {}
        #: where the alarms that are still active or unacknowledged are kept, so a
        #: restart neither forgets them nor answers "no active alarm" to their ack
        self.store = store
        self._listeners: list[Listener] = []
        self._audit_listeners: list[Listener] = []
        #: alarm id -> its last data, for alarms that finished (a late ack converges)
        self._finished: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        #: what is out of service or suppressed, by (reason, rule, device pattern)
        self.suppressions: dict[tuple[str, str, str], Suppression] = {}
        #: conditions raised while suppressed, by (rule, device): raised when it ends
        self._held: dict[tuple[str, str], Alarm] = {}
        self._audit: collections.deque[dict[str, Any]] = collections.deque(maxlen=AUDIT_MEMORY)
        for target in out_of_service:
            rule, device = parse_target(target)
            sup = Suppression(
                rule, device, "out_of_service", None, "config", self.clock.wall(), configured=True
            )
            self.suppressions[sup.key] = sup

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with the alarm's data after every transition (the local
        console, the siren). A listener that raises is logged and never stops the
        transition or the other listeners."""
        self._listeners.append(listener)

    def add_audit_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every new audit entry (the console shows them live,
        also the actions that change no alarm: out of service, a converging ack)."""
        self._audit_listeners.append(listener)

    def _tell(self, data: dict[str, Any], listeners: list[Listener] | None = None) -> None:
        for listener in self._listeners if listeners is None else listeners:
            try:
                listener(data)
            except Exception:
                log.exception("alarm listener %r failed", listener)

    # -- the audit log -------------------------------------------------------------
    def _record(
        self,
        action: str,
        *,
        alarm: Alarm | None = None,
        rule: str | None = None,
        device: str | None = None,
        by: str | None = None,
        origin: str = "",
        changed: bool = True,
        note: str | None = None,
        alarm_id: str | None = None,
        state: str | None = None,
    ) -> None:
        entry = {
            "ts": iso_ms(self.clock.wall()),
            "action": action,
            "alarm_id": alarm.alarm_id if alarm is not None else alarm_id,
            "rule": alarm.rule if alarm is not None else rule,
            "device": alarm.device if alarm is not None else device,
            "state": alarm.state if alarm is not None else state,
            "acked_by": alarm.acked_by if alarm is not None else None,
            "by": by,
            "origin": origin,
            "changed": changed,
            "note": note,
        }
        self._audit.append(entry)
        if isinstance(self.store, AuditStore):
            self.store.audit(entry)
        self._tell(dict(entry), self._audit_listeners)

    def audit(self, limit: int = 100, *, alarm_id: str | None = None) -> list[dict[str, Any]]:
        """The newest audit entries, newest first (at most :data:`AUDIT_MEMORY`; the
        database keeps more: ``edge-agent alarms audit``). Each is a dict: ``ts``,
        ``action``, ``alarm_id``, ``rule``, ``device``, ``state`` (after it), ``by``,
        ``origin``, ``changed`` (False: it found the state already so), ``note``."""
        out: list[dict[str, Any]] = []
        for entry in reversed(self._audit):
            if alarm_id is None or entry["alarm_id"] == alarm_id:
                out.append(dict(entry))
                if len(out) >= limit:
                    break
        return out

    # -- persistence -------------------------------------------------------------
    def _save(self) -> None:
        if self.store is None:
            return
        entries = []
        for alarm in self.alarms.values():
            entry = dataclasses.asdict(alarm)
            entry.pop("shelved_until")  # monotonic: meaningless after a restart
            entries.append(entry)
        doc = {
            "version": 2,
            "alarms": entries,
            "out_of_service": [
                s.data() | {"since": s.since}
                for s in self.suppressions.values()
                if s.reason == "out_of_service" and not s.configured
            ],
        }
        self.store.save(json.dumps(doc, ensure_ascii=False))

    def load(self) -> int:
        """Take back the alarms saved before a restart; returns how many.

        Their retained topics are set again. A shelve goes on for what remains of it
        (on the wall clock, never longer than it was given); one that ended while the
        agent was down ends now. What a person took out of service stays out.
        """
        if isinstance(self.store, AuditStore):
            self._audit.extend(reversed(self.store.recent_audit(AUDIT_MEMORY)))
            # Finished alarms, for late acks, from the audit (it is in the same
            # transactions): saving them with the open alarms would rewrite them all
            # on every transition, on an SD card.
            for e in self._audit:
                if e.get("state") == "cleared" and e.get("changed") and e.get("alarm_id"):
                    self._remember_finished(
                        str(e["alarm_id"]), e.get("rule"), e.get("device"), e.get("acked_by")
                    )
        text = self.store.load() if self.store is not None else None
        if text is None:
            return 0
        try:
            doc = json.loads(text)
            entries = doc["alarms"]
            names = {f.name for f in dataclasses.fields(Alarm)}
            restored = [Alarm(**{k: v for k, v in e.items() if k in names}) for e in entries]
            oos = [
                Suppression(
                    o["rule"], o["device"], "out_of_service", o.get("by"), o.get("origin", "")
                )
                for o in doc.get("out_of_service", [])
            ]
            since = [float(o.get("since", 0.0)) for o in doc.get("out_of_service", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.error("the saved alarms are unreadable and were ignored: %s", err)
            return 0
        for sup, t in zip(oos, since, strict=True):
            sup.since = t
            self.suppressions.setdefault(sup.key, sup)
        for alarm in restored:
            self.alarms[alarm.alarm_id] = alarm
        now = self.clock.wall()
        for alarm in restored:
            if alarm.state == "shelved":
                remaining = -1.0
                if alarm.shelved_until_wall is not None:
                    remaining = alarm.shelved_until_wall - now
                    if alarm.shelve_s is not None:
                        # a clock set back while the agent was down never stretches it
                        remaining = min(remaining, alarm.shelve_s)
                if remaining <= 0:
                    self._unshelve(alarm)
                    continue
                alarm.shelved_until = self.clock.mono() + remaining
            self._set_retained(self.topics.alarm_active(alarm.alarm_id), alarm.data())
        for sup in list(self.suppressions.values()):
            self._hide(sup, origin=sup.origin)
        if restored:
            log.info("%d alarms from before the restart are still open", len(restored))
        return len(restored)

    def _emit(self, alarm: Alarm) -> None:
        self._put(
            Lane.ALARM,
            self.topics.alarms,
            device=alarm.device,
            kind="alarm",
            ts=self.clock.wall(),
            data=alarm.data(),
        )
        visible = alarm.state != "cleared"
        self._set_retained(
            self.topics.alarm_active(alarm.alarm_id), alarm.data() if visible else None
        )
        if not visible:
            self.alarms.pop(alarm.alarm_id, None)
            self._remember_finished(alarm.alarm_id, alarm.rule, alarm.device, alarm.acked_by)
        self._save()
        self._tell(alarm.data())

    def _remember_finished(self, alarm_id: str, rule: Any, device: Any, acked_by: Any) -> None:
        self._finished[alarm_id] = {
            "rule": rule,
            "device": device,
            "state": "cleared",
            "acked_by": acked_by,
        }
        self._finished.move_to_end(alarm_id)
        while len(self._finished) > FINISHED_MAX:
            self._finished.popitem(last=False)

    def find(self, rule: str, device: str) -> Alarm | None:
        for alarm in self.alarms.values():
            if alarm.rule == rule and alarm.device == device and alarm.active:
                return alarm
        return None

    def _suppressed_by(self, rule: str, device: str) -> Suppression | None:
        for sup in self.suppressions.values():
            if sup.matches(rule, device):
                return sup
        return None

    def is_suppressed(self, rule: str, device: str) -> bool:
        """True while ``rule`` on ``device`` is out of service or suppressed."""
        return self._suppressed_by(rule, device) is not None

    def raise_(
        self,
        rule: str,
        device: str,
        severity: Severity,
        *,
        en: str,
        zh: str,
        value: Any = None,
        threshold: Any = None,
        origin: str = "agent",
        snapshot: dict[str, str] | None = None,
    ) -> Alarm:
        """Raise ``rule`` on ``device`` unless it is already active. ``origin`` says
        who raised it (``rules``, ``patrol``, ``agent``), for the audit; ``snapshot`` is
        the picture it carries (edge_agent/snapshots).

        While the rule is out of service or suppressed the alarm is not raised: the
        condition is held (the returned alarm is in no list) and raised when that ends.
        """
        existing = self.find(rule, device)
        if existing is not None:
            return existing
        held = self._held.get((rule, device))
        if held is not None:
            return held
        for alarm in self.alarms.values():
            if alarm.rule == rule and alarm.device == device and alarm.state == "shelved":
                # cleared and back while shelved: still shelved, nothing to annunciate
                alarm.active = True
                alarm.value = value
                self._record("raised", alarm=alarm, origin=origin, changed=False, note="shelved")
                self._save()
                return alarm
        alarm_id = f"{rule}-{device}-{new_ulid()[-8:].lower()}".replace("_", "-")
        alarm = Alarm(
            alarm_id,
            rule,
            device,
            severity,
            zh if self.language == "zh" else en,
            value,
            threshold,
            raised_at=self.clock.wall(),
        )
        alarm.snapshot = snapshot
        sup = self._suppressed_by(rule, device)
        if sup is not None:
            self._held[(rule, device)] = alarm
            self._record(
                "raised", alarm=alarm, origin=origin, changed=False, note=f"held: {sup.reason}"
            )
            log.info("alarm %s not raised: %s %s", alarm_id, rule, sup.reason.replace("_", " "))
            return alarm
        self.alarms[alarm_id] = alarm
        log.warning("alarm %s raised: %s", alarm_id, en)
        self._record("raised", alarm=alarm, origin=origin)
        self._emit(alarm)
        return alarm

    def clear(self, rule: str, device: str, *, origin: str = "agent") -> None:
        """The condition is gone: cleared, and removed once acknowledged."""
        held = self._held.pop((rule, device), None)
        if held is not None:
            self._record("cleared", alarm=held, origin=origin, changed=False, note="was held")
            return
        alarm = self.find(rule, device)
        if alarm is None:
            return
        alarm.active = False
        if alarm.state == "shelved":
            # not annunciated while shelved: it ends as cleared when the shelve ends
            self._record("cleared", alarm=alarm, origin=origin, changed=False, note="shelved")
            self._save()
            return
        alarm.state = "cleared" if alarm.state == "active_acked" else "cleared_unacked"
        log.info("alarm %s cleared", alarm.alarm_id)
        self._record("cleared", alarm=alarm, origin=origin)
        self._emit(alarm)

    def _already(self, action: str, alarm_id: str, by: str, origin: str) -> dict[str, Any] | None:
        """A finished alarm: the answer to a late ack or shelve, and its audit entry."""
        done = self._finished.get(alarm_id)
        if done is None:
            return None
        self._record(
            action,
            by=by,
            origin=origin,
            changed=False,
            note="finished already",
            rule=done.get("rule"),
            device=done.get("device"),
            alarm_id=alarm_id,
            state=done["state"],
        )
        return {"alarm_id": alarm_id, "state": done["state"], "acked_by": done.get("acked_by"),
                "changed": False}  # fmt: skip

    def ack(self, alarm_id: str, by: str, *, origin: str = "") -> dict[str, Any]:
        """Acknowledge; ``origin`` says from where (``mqtt``, ``console 10.0.0.5``).

        An alarm acknowledged already (by the console while the uplink was down, then
        the platform's ``alarm_ack``) answers its state and who acknowledged it, with
        ``changed: false``: no transition, no second notification."""
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            late = self._already("ack", alarm_id, by, origin)
            if late is None:
                raise AlarmError(f"no active alarm {alarm_id!r}")
            return late
        if alarm.state in ("active_acked", "cleared"):
            self._record("ack", alarm=alarm, by=by, origin=origin, changed=False)
            return {
                "alarm_id": alarm_id,
                "state": alarm.state,
                "acked_by": alarm.acked_by,
                "changed": False,
            }
        alarm.acked_by = by
        alarm.state = "active_acked" if alarm.active else "cleared"
        alarm.shelved_until = alarm.shelved_until_wall = alarm.shelve_s = None  # ends a shelve
        log.info("alarm %s acknowledged by %s%s", alarm_id, by, f" ({origin})" if origin else "")
        self._record("ack", alarm=alarm, by=by, origin=origin)
        self._emit(alarm)
        return {"alarm_id": alarm_id, "state": alarm.state, "acked_by": by, "changed": True}

    def shelve(self, alarm_id: str, by: str, minutes: float, *, origin: str = "") -> dict[str, Any]:
        """Shelve for ``minutes`` (at most a day). A shelve of a shelved alarm answers
        the running shelve (``changed: false``) and does not extend it."""
        if not 0 < minutes <= SHELVE_MAX_MIN:
            raise AlarmError("minutes must be between 0 and 1440")
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            late = self._already("shelve", alarm_id, by, origin)
            if late is None:
                raise AlarmError(f"no active alarm {alarm_id!r}")
            return late
        if alarm.state == "shelved":
            self._record("shelve", alarm=alarm, by=by, origin=origin, changed=False)
            return {
                "alarm_id": alarm_id,
                "state": alarm.state,
                "until": iso_ms(alarm.shelved_until_wall or self.clock.wall()),
                "acked_by": alarm.acked_by,
                "changed": False,
            }
        alarm.acked_by = by
        alarm.state = "shelved"
        alarm.shelve_s = minutes * 60
        alarm.shelved_until = self.clock.mono() + alarm.shelve_s
        alarm.shelved_until_wall = self.clock.wall() + alarm.shelve_s
        log.info(
            "alarm %s shelved for %g min by %s%s",
            alarm_id,
            minutes,
            by,
            f" ({origin})" if origin else "",
        )
        self._record("shelve", alarm=alarm, by=by, origin=origin, note=f"{minutes:g} min")
        self._emit(alarm)
        return {
            "alarm_id": alarm_id,
            "state": alarm.state,
            "until": iso_ms(alarm.shelved_until_wall),
            "acked_by": by,
            "changed": True,
        }

    def tick(self, now: float | None = None) -> None:
        """Unshelve alarms whose time is up (called from the agent's outbox task, at the
        latest when :meth:`due_in` says so); ``now`` is on the monotonic clock."""
        now = self.clock.mono() if now is None else now
        for alarm in list(self.alarms.values()):
            if alarm.state == "shelved" and alarm.shelved_until and now >= alarm.shelved_until:
                self._unshelve(alarm)

    def due_in(self) -> float | None:
        """Seconds until the next shelve ends (0: now); None while nothing is shelved."""
        ends = [
            a.shelved_until
            for a in self.alarms.values()
            if a.state == "shelved" and a.shelved_until
        ]
        return max(0.0, min(ends) - self.clock.mono()) if ends else None

    def _unshelve(self, alarm: Alarm) -> None:
        alarm.shelved_until = None
        alarm.shelved_until_wall = None
        alarm.shelve_s = None
        alarm.state = "active_unacked" if alarm.active else "cleared"
        log.info("alarm %s: its shelve ended / 告警搁置到期", alarm.alarm_id)
        self._record("shelve_expired", alarm=alarm, origin="shelve expiry")
        self._emit(alarm)

    # -- out of service, suppressed by schedule -----------------------------------
    def take_out_of_service(
        self, rule: str, by: str, *, device: str = "*", origin: str = ""
    ) -> dict[str, Any]:
        """Take ``rule`` (on the devices ``device`` matches) out of service: it raises
        nothing, its open alarms leave view, until :meth:`return_to_service`. Kept
        across restarts."""
        sup = Suppression(rule, device, "out_of_service", by, origin, self.clock.wall())
        if sup.key in self.suppressions:
            self._record("out_of_service", rule=rule, device=device, by=by, origin=origin,
                         changed=False)  # fmt: skip
            return self.suppressions[sup.key].data() | {"changed": False}
        self.suppressions[sup.key] = sup
        log.info(
            "rule %s@%s out of service (%s%s)", rule, device, by, f", {origin}" if origin else ""
        )
        self._record("out_of_service", rule=rule, device=device, by=by, origin=origin)
        self._hide(sup, origin=origin, by=by)
        self._save()
        return sup.data() | {"changed": True}

    def return_to_service(
        self, rule: str, by: str, *, device: str = "*", origin: str = ""
    ) -> dict[str, Any]:
        """Put ``rule`` back in service: conditions that still hold are raised anew."""
        key = ("out_of_service", rule, device)
        sup = self.suppressions.get(key)
        if sup is None:
            self._record("in_service", rule=rule, device=device, by=by, origin=origin,
                         changed=False)  # fmt: skip
            return {"rule": rule, "device": device, "changed": False}
        if sup.configured:
            raise AlarmError(
                f"{rule}@{device} is out of service by the config (rules.out_of_service): "
                "change the config / 该规则在配置中停用，请修改配置"
            )
        del self.suppressions[key]
        log.info(
            "rule %s@%s back in service (%s%s)", rule, device, by, f", {origin}" if origin else ""
        )
        self._record("in_service", rule=rule, device=device, by=by, origin=origin)
        self._release(origin=origin)
        self._save()
        return {"rule": rule, "device": device, "changed": True}

    def out_of_view(self) -> list[dict[str, Any]]:
        """What is out of service or suppressed now (for the console): rule, device
        pattern, reason, by, origin, since, configured."""
        return [sup.data() for sup in self.suppressions.values()]

    def suppress(self, rule: str, on: bool, *, origin: str = "rules") -> None:
        """Inside (``on``) or outside the rule's ``suppress:`` schedule (the rule engine)."""
        key = ("schedule", rule, "*")
        if on and key not in self.suppressions:
            sup = Suppression(rule, "*", "schedule", None, origin, self.clock.wall())
            self.suppressions[key] = sup
            self._record("suppressed", rule=rule, device="*", origin=origin)
            self._hide(sup, origin=origin)
        elif not on and key in self.suppressions:
            del self.suppressions[key]
            self._record("unsuppressed", rule=rule, device="*", origin=origin)
            self._release(origin=origin)

    def _hide(self, sup: Suppression, *, origin: str, by: str | None = None) -> None:
        """Open alarms of ``sup``'s rule leave view: a ``cleared`` transition that says
        why (``suppressed``); a condition still active is held for later."""
        for alarm in list(self.alarms.values()):
            if not sup.matches(alarm.rule, alarm.device):
                continue
            if alarm.active:
                held = dataclasses.replace(alarm, state="active_unacked", acked_by=None)
                self._held[(alarm.rule, alarm.device)] = held
            alarm.active = False
            alarm.state = "cleared"
            alarm.suppressed = sup.reason
            alarm.shelved_until = alarm.shelved_until_wall = alarm.shelve_s = None
            self._record("hidden", alarm=alarm, by=by, origin=origin, note=sup.reason)
            self._emit(alarm)

    def _release(self, *, origin: str) -> None:
        """Raise the held conditions that nothing suppresses any more."""
        for key, held in list(self._held.items()):
            if self._suppressed_by(*key) is not None:
                continue
            del self._held[key]
            alarm = dataclasses.replace(
                held,
                alarm_id=f"{held.rule}-{held.device}-{new_ulid()[-8:].lower()}".replace("_", "-"),
                state="active_unacked",
                active=True,
                acked_by=None,
                suppressed=None,
                raised_at=self.clock.wall(),
            )
            self.alarms[alarm.alarm_id] = alarm
            log.warning("alarm %s raised: %s (held while suppressed)", alarm.alarm_id, alarm.rule)
            self._record("raised", alarm=alarm, origin=origin, note="still true after suppression")
            self._emit(alarm)
