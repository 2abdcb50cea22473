"""Alarms with the ISA-18.2 lifecycle, and the gateway's own health alarms.

Every state transition is an envelope on ``ROOT/alarms`` (through the outbox,
alarm lane: committed at once with ``synchronous=FULL`` and drained before
anything else), and the alarm's current state is retained on
``ROOT/alarms/active/{alarm_id}`` while it is active or unacknowledged. An
alarm that clears while unacknowledged stays visible until someone
acknowledges it.

The rule engine for device values (CO₂ too high, door forced …) comes with a
later release; today the raisers are the agent itself (``outbox_corrupt``,
``outbox_disk_full``, ``outbox_data_lost``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .envelope import Lane, iso_ms, new_ulid

log = logging.getLogger(__name__)

Severity = Literal["critical", "major", "minor", "warning"]
AlarmState = Literal["active_unacked", "active_acked", "cleared_unacked", "cleared", "shelved"]

Put = Callable[..., None]
SetRetained = Callable[[str, dict[str, Any] | None], None]


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
            "snapshot": None,
        }


class AlarmBook:
    """The alarms this gateway currently knows, and their transitions."""

    def __init__(
        self,
        root: str,
        put: Put,
        set_retained: SetRetained,
        language: str = "zh",
        store: Path | None = None,
    ) -> None:
        self.root = root
        self._put = put
        self._set_retained = set_retained
        self.language = language
        self.alarms: dict[str, Alarm] = {}
        #: a small JSON file with the alarms that are still active or unacknowledged, so
        #: a restart neither forgets them nor answers "no active alarm" to their ack
        self.store = store
        self._store_failed = False

    # -- persistence -------------------------------------------------------------
    def _save(self) -> None:
        if self.store is None:
            return
        entries = []
        for alarm in self.alarms.values():
            entry = dataclasses.asdict(alarm)
            entry.pop("shelved_until")  # monotonic: meaningless after a restart
            entries.append(entry)
        tmp = self.store.with_name(self.store.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                json.dump({"version": 1, "alarms": entries}, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.store)
            self._store_failed = False
        except OSError as err:  # a full disk: the alarm still goes out, only its copy waits
            if not self._store_failed:
                log.warning("cannot save the active alarms to %s: %s", self.store, err)
            self._store_failed = True

    def load(self) -> int:
        """Take back the alarms saved before a restart; returns how many.

        Their retained topics are set again. A shelve does not outlive a restart: a
        shelved alarm comes back as it would when its shelve ends.
        """
        if self.store is None or not self.store.exists():
            return 0
        try:
            entries = json.loads(self.store.read_text(encoding="utf-8"))["alarms"]
            names = {f.name for f in dataclasses.fields(Alarm)}
            restored = [Alarm(**{k: v for k, v in e.items() if k in names}) for e in entries]
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("the saved alarms in %s are unreadable and were ignored: %s", self.store, err)
            return 0
        for alarm in restored:
            self.alarms[alarm.alarm_id] = alarm
        for alarm in restored:
            if alarm.state == "shelved":
                self._unshelve(alarm)
            else:
                self._set_retained(f"{self.root}/alarms/active/{alarm.alarm_id}", alarm.data())
        if restored:
            log.info("%d alarms from before the restart are still open", len(restored))
        return len(restored)

    def _emit(self, alarm: Alarm) -> None:
        self._put(
            Lane.ALARM,
            f"{self.root}/alarms",
            device=alarm.device,
            kind="alarm",
            ts=time.time(),
            data=alarm.data(),
        )
        visible = alarm.state != "cleared"
        self._set_retained(
            f"{self.root}/alarms/active/{alarm.alarm_id}", alarm.data() if visible else None
        )
        if not visible:
            self.alarms.pop(alarm.alarm_id, None)
        self._save()

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
    ) -> Alarm:
        """Raise ``rule`` on ``device`` unless it is already active."""
        existing = self.find(rule, device)
        if existing is not None:
            return existing
        alarm_id = f"{rule}-{device}-{new_ulid()[-8:].lower()}".replace("_", "-")
        alarm = Alarm(
            alarm_id, rule, device, severity, zh if self.language == "zh" else en, value, threshold
        )
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

    def ack(self, alarm_id: str, by: str) -> dict[str, Any]:
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmError(f"no active alarm {alarm_id!r}")
        if alarm.state in ("active_acked", "cleared"):
            raise AlarmError(f"alarm {alarm_id!r} is already acknowledged")
        alarm.acked_by = by
        alarm.state = "active_acked" if alarm.active else "cleared"
        self._emit(alarm)
        return {"alarm_id": alarm_id, "state": alarm.state}

    def shelve(self, alarm_id: str, by: str, minutes: float) -> dict[str, Any]:
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmError(f"no active alarm {alarm_id!r}")
        if not 0 < minutes <= 24 * 60:
            raise AlarmError("minutes must be between 0 and 1440")
        alarm.acked_by = by
        alarm.state = "shelved"
        alarm.shelved_until = time.monotonic() + minutes * 60
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
