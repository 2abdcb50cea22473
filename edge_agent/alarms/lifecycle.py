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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from edge_agent.envelope import Lane, iso_ms, new_ulid
from edge_agent.topics import Topics

log = logging.getLogger(__name__)

Severity = Literal["critical", "major", "minor", "warning"]
AlarmState = Literal["active_unacked", "active_acked", "cleared_unacked", "cleared", "shelved"]

Put = Callable[..., None]
SetRetained = Callable[[str, dict[str, Any] | None], None]
#: called with an alarm's ``data()`` after each transition is in the outbox
Listener = Callable[[dict[str, Any]], None]


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
        }


class AlarmStore(Protocol):
    """Where the alarm book keeps its open alarms (a JSON text)."""

    def load(self) -> str | None: ...

    def save(self, text: str) -> None: ...


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
    ) -> Any: ...

    def clear(self, rule: str, device: str) -> None: ...

    def find(self, rule: str, device: str) -> Any: ...


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


class AlarmBook:
    """The alarms this gateway currently knows, and their transitions."""

    def __init__(
        self,
        root: str,
        put: Put,
        set_retained: SetRetained,
        language: str = "zh",
        store: AlarmStore | None = None,
    ) -> None:
        self.root = root
        self.topics = Topics(root)
        self._put = put
        self._set_retained = set_retained
        self.language = language
        self.alarms: dict[str, Alarm] = {}
        #: where the alarms that are still active or unacknowledged are kept, so a
        #: restart neither forgets them nor answers "no active alarm" to their ack
        self.store = store
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with the alarm's data after every transition (the local
        console, the siren). A listener that raises is logged and never stops the
        transition or the other listeners."""
        self._listeners.append(listener)

    def _tell(self, data: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(data)
            except Exception:
                log.exception("alarm listener %r failed", listener)

    # -- persistence -------------------------------------------------------------
    def _save(self) -> None:
        if self.store is None:
            return
        entries = []
        for alarm in self.alarms.values():
            entry = dataclasses.asdict(alarm)
            entry.pop("shelved_until")  # monotonic: meaningless after a restart
            entries.append(entry)
        self.store.save(json.dumps({"version": 1, "alarms": entries}, ensure_ascii=False))

    def load(self) -> int:
        """Take back the alarms saved before a restart; returns how many.

        Their retained topics are set again. A shelve does not outlive a restart: a
        shelved alarm comes back as it would when its shelve ends.
        """
        text = self.store.load() if self.store is not None else None
        if text is None:
            return 0
        try:
            entries = json.loads(text)["alarms"]
            names = {f.name for f in dataclasses.fields(Alarm)}
            restored = [Alarm(**{k: v for k, v in e.items() if k in names}) for e in entries]
        except (ValueError, KeyError, TypeError) as err:
            log.error("the saved alarms are unreadable and were ignored: %s", err)
            return 0
        for alarm in restored:
            self.alarms[alarm.alarm_id] = alarm
        for alarm in restored:
            if alarm.state == "shelved":
                self._unshelve(alarm)
            else:
                self._set_retained(self.topics.alarm_active(alarm.alarm_id), alarm.data())
        if restored:
            log.info("%d alarms from before the restart are still open", len(restored))
        return len(restored)

    def _emit(self, alarm: Alarm) -> None:
        self._put(
            Lane.ALARM,
            self.topics.alarms,
            device=alarm.device,
            kind="alarm",
            ts=time.time(),
            data=alarm.data(),
        )
        visible = alarm.state != "cleared"
        self._set_retained(
            self.topics.alarm_active(alarm.alarm_id), alarm.data() if visible else None
        )
        if not visible:
            self.alarms.pop(alarm.alarm_id, None)
        self._save()
        self._tell(alarm.data())

    def find(self, rule: str, device: str) -> Alarm | None:
        for alarm in self.alarms.values():
            if alarm.rule == rule and alarm.device == device and alarm.active:
                return alarm
        return None

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
        snapshot: dict[str, str] | None = None,
    ) -> Alarm:
        """Raise ``rule`` on ``device`` unless it is already active; ``snapshot`` is the
        picture it carries (edge_agent/snapshots)."""
        existing = self.find(rule, device)
        if existing is not None:
            return existing
        alarm_id = f"{rule}-{device}-{new_ulid()[-8:].lower()}".replace("_", "-")
        alarm = Alarm(
            alarm_id, rule, device, severity, zh if self.language == "zh" else en, value, threshold
        )
        alarm.snapshot = snapshot
        self.alarms[alarm_id] = alarm
        log.warning("alarm %s raised: %s", alarm_id, en)
        self._emit(alarm)
        return alarm

    def clear(self, rule: str, device: str) -> None:
        """The condition is gone: cleared, and removed once acknowledged."""
        alarm = self.find(rule, device)
        if alarm is None:
            return
        alarm.active = False
        alarm.state = "cleared" if alarm.state == "active_acked" else "cleared_unacked"
        log.info("alarm %s cleared", alarm.alarm_id)
        self._emit(alarm)

    def ack(self, alarm_id: str, by: str, *, origin: str = "") -> dict[str, Any]:
        """Acknowledge; ``origin`` says from where (``mqtt``, ``console 10.0.0.5``)."""
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmError(f"no active alarm {alarm_id!r}")
        if alarm.state in ("active_acked", "cleared"):
            raise AlarmError(f"alarm {alarm_id!r} is already acknowledged")
        alarm.acked_by = by
        alarm.state = "active_acked" if alarm.active else "cleared"
        log.info("alarm %s acknowledged by %s%s", alarm_id, by, f" ({origin})" if origin else "")
        self._emit(alarm)
        return {"alarm_id": alarm_id, "state": alarm.state}

    def shelve(self, alarm_id: str, by: str, minutes: float, *, origin: str = "") -> dict[str, Any]:
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmError(f"no active alarm {alarm_id!r}")
        if not 0 < minutes <= 24 * 60:
            raise AlarmError("minutes must be between 0 and 1440")
        alarm.acked_by = by
        alarm.state = "shelved"
        alarm.shelved_until = time.monotonic() + minutes * 60
        log.info(
            "alarm %s shelved for %g min by %s%s",
            alarm_id,
            minutes,
            by,
            f" ({origin})" if origin else "",
        )
        self._emit(alarm)
        return {
            "alarm_id": alarm_id,
            "state": alarm.state,
            "until": iso_ms(time.time() + minutes * 60),
        }

    def tick(self, now: float | None = None) -> None:
        """Unshelve alarms whose time is up (called from the health loop); ``now`` is
        on the monotonic clock."""
        now = time.monotonic() if now is None else now
        for alarm in list(self.alarms.values()):
            if alarm.state == "shelved" and alarm.shelved_until and now >= alarm.shelved_until:
                self._unshelve(alarm)

    def _unshelve(self, alarm: Alarm) -> None:
        alarm.shelved_until = None
        alarm.state = "active_unacked" if alarm.active else "cleared"
        self._emit(alarm)
