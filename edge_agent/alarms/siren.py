"""A siren or strobe on a relay output, switched by alarms (issue 10, docs/alarms.md#siren).

The siren listens to the alarm book (:meth:`AlarmBook.add_listener`): an alarm that
matches it (its severities, its rules) asks for it while it is unacknowledged
(``active_unacked``, or ``cleared_unacked``: ISA-18.2's audible alarm sounds until someone
acknowledges, and a door_forced or duress alarm clears the moment it is raised). It rings
while at least one such alarm asks, and stops when

* every matching alarm is acknowledged (``active_acked``, ``cleared``) or shelved, or
* it has rung ``max_on_s`` since the last new matching alarm: then it stays off until a
  **new** matching alarm asks (the alarms that were ringing it are spent; an installer hears
  it once, not for ever).

The listener only updates sets and wakes the siren's task: a dead relay module never
delays an alarm. The task writes the coil through the driver's :class:`Switchable`
capability (the same driver and bus lock as ``device_write``), reads it back, and
publishes every switch as the ``command_audit`` event ``device_write`` publishes, with
``by: "siren"``. A write that fails, or reads back wrong, is logged once (then at DEBUG,
and once at INFO when it works again), reported as a ``siren_fault`` alarm on the relay
module, and retried with backoff (1 s doubling to ``RETRY_MAX_S``).

At start the siren is switched to what the alarm book asks: off, unless a matching alarm
is open and unacknowledged. A restart does not renew ``max_on_s``: since when it rings and
which alarms have rung their time are kept in the outbox database (:class:`OutboxSirenStore`).
At a clean stop it is switched off: no one would enforce ``max_on_s`` while the agent is down.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from edge_agent.alarms.rules import CHATTER_RULE
from edge_agent.config.sirens import SirenConfig
from edge_agent.driver import Switchable
from edge_agent.envelope import iso_ms
from edge_agent.errors import DeviceError

log = logging.getLogger(__name__)

#: the alarm a siren raises on its relay module when it cannot be switched
FAULT_RULE = "siren_fault"
#: the gateway's own alarms (its database, its disk, a siren): they ring a siren only when
#: its ``rules`` name them; a corrupt database at 3 a.m. is not a matter for the school yard
GATEWAY_RULES = frozenset({"outbox_corrupt", "outbox_disk_full", "outbox_data_lost"})
#: retries of a failed switch: 1 s, 2 s, 4 s … at most this
RETRY_MAX_S = 30.0
#: one switch (write + read back) takes at most this long, whatever the driver's timeouts
SWITCH_TIMEOUT_S = 10.0
#: a clean stop waits this long for the siren to be switched off
STOP_TIMEOUT_S = 3.0

#: ``audit(device, data)``: publish a ``command_audit`` event on ``device``
Audit = Callable[[str, dict[str, Any]], None]


class SirenError(Exception):
    """A switch that did not take: the read-back disagrees with what was written."""


class SirenStore(Protocol):
    """Where a siren keeps, across restarts, since when it rings and which alarms have
    used up their ``max_on_s`` (a JSON text)."""

    def load(self) -> str | None: ...

    def save(self, text: str) -> None: ...


class StateDb(Protocol):
    """What :class:`OutboxSirenStore` needs from the outbox."""

    state: dict[tuple[str, str], str]

    def put_state(self, device: str, key: str, value: str) -> None: ...


class OutboxSirenStore:
    """A siren's state in the outbox database (``device_state`` row ``("", "siren:<id>")``),
    written with the next group commit."""

    def __init__(self, db: StateDb, siren_id: str) -> None:
        self.db = db
        self.key = ("", f"siren:{siren_id}")

    def load(self) -> str | None:
        return self.db.state.get(self.key)

    def save(self, text: str) -> None:
        self.db.put_state(*self.key, text)


class Siren:
    """One siren: which alarms ask for it, and a task that keeps the relay in step."""

    def __init__(
        self,
        config: SirenConfig,
        driver: Switchable,
        *,
        audit: Audit | None = None,
        alarms: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        store: SirenStore | None = None,
    ) -> None:
        self.config = config
        self.driver = driver
        self._audit = audit
        #: the alarm book (``raise_``/``clear``): where a dead relay module is reported
        self._alarms = alarms
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        #: matching alarms that are unacknowledged (active or cleared) and not shelved
        self.asking: set[str] = set()
        #: matching alarms that rang the siren for ``max_on_s``: they do not ring it again
        self.spent: set[str] = set()
        #: what the relay was last verified to be; None: unknown (start, or a failed switch)
        self.relay_on: bool | None = None
        #: when the relay was switched on (``clock``), for ``max_on_s``
        self.on_since: float | None = None
        #: the same on the wall clock, saved: a restart does not give it a new max_on_s
        self._on_since_wall: float | None = None
        #: seconds it already rang before a restart, counted at the next switch on
        self._carry: float | None = None
        #: when (``clock``) a new matching alarm came: it rings for its own max_on_s
        self._new_at: float | None = None
        self.store = store
        self.switches = 0
        self.failures = 0
        self._failing = False
        self._attempt = 0
        self._retry_at = 0.0
        self._wake = asyncio.Event()
        self._seq = 0

    # -- what the alarms ask ----------------------------------------------------------
    @property
    def id(self) -> str:
        return self.config.id

    def matches(self, data: dict[str, Any]) -> bool:
        """Whether an alarm (its ``data()``) is one that switches this siren."""
        rule = str(data.get("rule", ""))
        if rule == FAULT_RULE:
            return False  # a siren never rings for a siren that does not work
        if data.get("severity") not in self.config.severities:
            return False
        if rule == CHATTER_RULE:  # a rule raised too often: judged as that rule
            rule = str(data.get("value", ""))
        if rule in GATEWAY_RULES:
            return rule in self.config.rules
        return not self.config.rules or any(
            fnmatch.fnmatchcase(rule, pattern) for pattern in self.config.rules
        )

    def see(self, data: dict[str, Any]) -> None:
        """The alarm book's listener: called after every transition. Never blocks."""
        if not self.matches(data):
            return
        alarm_id = str(data.get("alarm_id"))
        state = data.get("state")
        if state in ("active_unacked", "cleared_unacked"):
            if alarm_id not in self.asking and alarm_id not in self.spent:
                self._new_at = self._clock()
            self.asking.add(alarm_id)
        else:
            self.asking.discard(alarm_id)
            if state == "cleared":  # gone from the book: its id will not come back
                self.spent.discard(alarm_id)
        self._wake.set()

    def load(self, alarms: Iterable[dict[str, Any]]) -> None:
        """The alarms the book kept over a restart (their ``data()``), and what the siren
        saved: alarms that rang their ``max_on_s`` stay silent; a siren that was ringing
        rings only for what is left of it (after a crash, the relay rang on meanwhile)."""
        for data in alarms:
            self.see(data)
        self._new_at = None  # not new: they were open before the restart
        text = self.store.load() if self.store is not None else None
        if not text:
            return
        try:
            saved = json.loads(text)
            spent = {str(a) for a in saved.get("spent", [])}
            on_since, rung_s = saved.get("on_since"), saved.get("rung_s")
        except (ValueError, TypeError, AttributeError) as err:
            log.warning("siren %s: its saved state is unreadable and was ignored: %s", self.id, err)
            return
        self.spent |= spent & self.asking
        if isinstance(rung_s, int | float):  # a clean stop switched it off: it rang this long
            rung: float | None = float(rung_s)
        elif isinstance(on_since, int | float):  # a crash: the relay went on ringing
            rung = self._wall() - on_since
            if rung < 0:
                rung = None  # the clock was set back (a Pi without RTC): a full max_on_s
        else:
            rung = None
        if rung is None or not self.wanted:
            return
        if rung >= self.config.max_on_s:
            log.info(
                "siren %s rang its max_on_s before the restart: off until a new alarm", self.id
            )
            self.spent |= self.asking
        else:
            self._carry = rung

    def _save(self, *, rung_s: float | None = None) -> None:
        if self.store is None:
            return
        state = {"on_since": self._on_since_wall, "rung_s": rung_s, "spent": sorted(self.spent)}
        self.store.save(json.dumps(state))

    @property
    def wanted(self) -> bool:
        """Ring now? Some matching alarm asks and has not used up its ``max_on_s``."""
        return bool(self.asking - self.spent)

    def poke(self) -> None:
        """Look again now (after the clock moved, in tests)."""
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            "on": self.relay_on,
            "asking": len(self.asking),
            "switches": self.switches,
            "failures": self.failures,
            "failing": self._failing,
        }

    # -- the task ------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the relay in step with the alarms until cancelled."""
        while True:
            self._wake.clear()
            now = self._clock()
            if self._new_at is not None:
                if self.relay_on and self.on_since is not None and self._new_at > self.on_since:
                    # ringing already: the new alarm gets its own max_on_s from now
                    self.on_since = self._new_at
                    self._on_since_wall = self._wall() - (now - self._new_at)
                    self._save()
                self._new_at = None
            want = self.wanted
            if want and self.relay_on and self.on_since is not None:
                if now - self.on_since >= self.config.max_on_s:
                    log.warning(
                        "siren %s rang its max_on_s of %g s: off until a new alarm "
                        "/ 报警器已达最长鸣响时间，新告警前不再鸣响",
                        self.id,
                        self.config.max_on_s,
                    )
                    self.spent |= self.asking
                    want = False
            timeout: float | None = None
            if want != self.relay_on:
                if now >= self._retry_at:
                    await self._switch(want)
                    continue  # look again: alarms may have changed meanwhile
                timeout = self._retry_at - now
            elif want and self.on_since is not None:
                timeout = self.on_since + self.config.max_on_s - now
            try:
                if timeout is None:
                    await self._wake.wait()
                else:
                    async with asyncio.timeout(max(0.0, timeout)):
                        await self._wake.wait()
            except TimeoutError:
                pass

    async def _switch(self, on: bool, *, reason: str | None = None) -> bool:
        """Write the coil and read it back; audit, log and report the outcome."""
        cfg = self.config
        old = self.relay_on
        if reason is None:
            ringing = sorted(self.asking - self.spent)
            if on:
                reason = f"alarms: {', '.join(ringing)}"
            else:
                reason = "max_on_s" if self.asking and not ringing else "no alarm asks"
        error: str | None = None
        # unknown until the read-back: a switch cancelled half way (the agent stopping)
        # must not leave a relay believed off that the write had already switched on
        self.relay_on = None
        try:
            async with asyncio.timeout(SWITCH_TIMEOUT_S):
                await self.driver.write(cfg.point, on)
                got = await self.driver.read_switch(cfg.point)
            if got != on:
                raise SirenError(
                    f"read back {'on' if got else 'off'} after switching it {'on' if on else 'off'}"
                )
        except (DeviceError, OSError, TimeoutError, ValueError, SirenError) as err:
            error = str(err) or type(err).__name__
        self._audit_switch(old, on, reason, error)
        if error is None:
            self.relay_on = on
            rung_s = None
            if not on and reason == "agent stopping" and self.on_since is not None:
                rung_s = self._clock() - self.on_since
            carry, self._carry = (self._carry or 0.0) if on else 0.0, None
            self.on_since = self._clock() - carry if on else None
            self._on_since_wall = self._wall() - carry if on else None
            self._save(rung_s=rung_s)
            self.switches += 1
            self._attempt = 0
            self._retry_at = 0.0
            log.info(
                "siren %s %s (%s) / 报警器%s",
                self.id,
                "on" if on else "off",
                reason,
                "鸣响" if on else "关闭",
            )
            if self._failing:
                self._failing = False
                log.info("siren %s works again / 报警器恢复正常", self.id)
                if self._alarms is not None:
                    self._alarms.clear(FAULT_RULE, cfg.device)
            return True
        self.failures += 1
        self.relay_on = None  # unknown: the next attempt writes again
        self.on_since = None
        delay = min(RETRY_MAX_S, 2.0**self._attempt) * (0.5 + 0.5 * self._rng.random())
        self._attempt += 1
        self._retry_at = self._clock() + delay
        if not self._failing:
            self._failing = True
            log.warning(
                "siren %s cannot be switched %s: %s; retrying with backoff "
                "/ 报警器 %s 无法%s：%s，稍后重试",
                self.id,
                "on" if on else "off",
                error,
                self.id,
                "开启" if on else "关闭",
                error,
            )
            if self._alarms is not None:
                self._alarms.raise_(
                    FAULT_RULE,
                    cfg.device,
                    "major",
                    value=self.id,
                    en=f"Siren {self.id} ({cfg.device}.{cfg.point}) cannot be switched: {error}",
                    zh=f"声光报警器 {self.id}（{cfg.device}.{cfg.point}）无法控制：{error}",
                )
        else:
            log.debug(
                "siren %s still cannot be switched: %s (retry in %.1f s)", self.id, error, delay
            )
        return False

    def _audit_switch(self, old: bool | None, new: bool, reason: str, error: str | None) -> None:
        """The ``command_audit`` event of ``device_write``, ``by: "siren"``. A retry of a
        switch that keeps failing is not audited again (one line, then the recovery)."""
        if error is not None and self._failing:
            return
        self._seq += 1
        cfg = self.config
        data: dict[str, Any] = {
            "command": "device_write",
            "request_id": f"siren-{cfg.id}-{self._seq}",
            "by": "siren",
            "signed": False,
            "point": cfg.point,
            "old": old,
            "new": new,
            "result": "ok" if error is None else "refused",
            "error": error,
            "ts": iso_ms(self._wall()),
            "siren": cfg.id,
            "reason": reason,
        }
        log.info(
            "audit: device_write %s by siren: %s.%s %r -> %r: %s / 写操作审计",
            data["request_id"],
            cfg.device,
            cfg.point,
            old,
            new,
            error or "ok",
        )
        if self._audit is not None:
            self._audit(cfg.device, data)

    async def close(self) -> None:
        """Switch off at a clean stop (call after the task was cancelled)."""
        if self.relay_on is False:
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._switch(False, reason="agent stopping")
        except TimeoutError:
            log.warning("siren %s: not switched off at stop (timed out)", self.id)
