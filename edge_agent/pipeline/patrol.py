"""Guard patrol (电子巡更): a checkpoint not visited in time raises a ``patrol_missed`` alarm.

The uplink contract v1.1 has no ``patrol_missed`` event and the agent publishes only the
contract's event types, so a missed checkpoint is an **alarm** (``rule:
"patrol_missed"``, ``device`` = the checkpoint's reader): security staff must see and
acknowledge it, and the ISA-18.2 lifecycle of the alarm book gives exactly that. It is
cleared when a later round of the same route is complete, and stays visible until
acknowledged.

:class:`Patrol` is a tap of the pipeline (:meth:`Patrol.see`): it sees every
``card_read`` once it is in the outbox, pseudonymised and with its time corrected by the
clock gate. A visit is **any** read at the checkpoint's reader, whatever its ``result``
(a guard's card usually opens no door there), of a guard's card when ``patrol.cards``
lists them (as pseudonyms: the pipeline hashed the card before the tap sees it).
Visits count by the event's own ``ts``, so a read a driver catches up from a device's
log after an outage still counts.

:meth:`Patrol.tick` (from the agent's outbox task) checks the deadlines: each stop of a
round is due at the round's start + ``round_min`` + its tolerance. The visits of open
rounds and the last time checked are kept in the outbox database (``device_state``, row
``("", "patrol")``, written with the next group commit like the alarm book), so a restart
in the middle of a round neither forgets a visit nor a deadline that passed while the
agent was down; those are checked ``catchup_s`` after the start (counted from the first
check on a synchronised clock), once the drivers have caught up from the devices' logs.

Imports nothing of MQTT, the drivers or the tools (``tests/unit/test_imports.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from edge_agent.alarms.lifecycle import AlarmSink
from edge_agent.config.patrol import Checkpoint, PatrolConfig, Route
from edge_agent.envelope import iso_ms
from edge_agent.pipeline.base import TICK_S, Message
from edge_agent.pipeline.failures import Failures

log = logging.getLogger(__name__)

RULE = "patrol_missed"
#: ``device_state`` row of the patrol's state: device "" is the gateway itself
PATROL_STATE = ("", "patrol")
#: deadlines that passed while the agent was down wait this long after a start, so
#: that the drivers can catch up the reads the devices kept meanwhile
CATCHUP_S = 120.0


class StateDb(Protocol):
    """What the patrol needs of the outbox: its saved state, and a way to save it."""

    state: dict[tuple[str, str], str]

    def put_state(self, device: str, key: str, value: str) -> None: ...


@dataclass(slots=True)
class _Stop:
    checkpoint: Checkpoint
    tolerance_s: float


@dataclass(slots=True)
class _Round:
    """The visits of one round so far."""

    seen: set[str]
    #: ordered routes: the position of the last stop that counted
    pos: int = -1


class _RouteRun:
    """One route: its schedule in UNIX seconds and the visits of its open rounds."""

    def __init__(self, route: Route, checkpoints: dict[str, Checkpoint], tz: tzinfo) -> None:
        self.route = route
        self.tz = tz
        self.stops = [
            _Stop(
                checkpoints[s.checkpoint],
                60.0 * (route.tolerance_min if s.tolerance_min is None else s.tolerance_min),
            )
            for s in route.stops()
        ]
        self.index = {s.checkpoint.id: i for i, s in enumerate(self.stops)}
        self.length_s = 60.0 * route.length_min()
        self.early_s = 60.0 * route.tolerance_min
        self.offsets = route.start_offsets_min()
        #: round start (UNIX s, as an int) -> visits
        self.rounds: dict[int, _Round] = {}

    @property
    def label(self) -> str:
        return self.route.name or self.route.id

    def starts(self, lo: float, hi: float) -> list[int]:
        """Round starts in [lo, hi], from the local calendar (site.timezone): a start
        written 22:00 is 22:00 on the wall clock of the school, every day."""
        first = datetime.fromtimestamp(lo, self.tz).date() - timedelta(days=2)
        last = datetime.fromtimestamp(hi, self.tz).date() + timedelta(days=1)
        out: list[int] = []
        day = first
        while day <= last:
            midnight = datetime(day.year, day.month, day.day)
            for off in self.offsets:
                start = (midnight + timedelta(minutes=off)).replace(tzinfo=self.tz).timestamp()
                if lo <= start <= hi:
                    out.append(int(start))
            day += timedelta(days=1)
        return sorted(set(out))

    def deadline(self, start: int, stop: _Stop) -> float:
        return start + self.length_s + stop.tolerance_s

    def last_deadline(self, start: int) -> float:
        return start + self.length_s + max(s.tolerance_s for s in self.stops)

    def span_s(self) -> float:
        """From the earliest visit of a round to its last deadline."""
        return self.early_s + self.length_s + max(s.tolerance_s for s in self.stops)

    def rounds_at(self, ts: float) -> list[int]:
        """Starts of the rounds a visit at ``ts`` belongs to (two, within tolerance of both)."""
        return [
            start
            for start in self.starts(ts - self.span_s(), ts + self.early_s)
            if start - self.early_s <= ts
        ]

    def local(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%H:%M")


class Patrol:
    """Checkpoints, routes and their rounds; raises and clears ``patrol_missed`` alarms.

    ``now`` is the wall clock (UNIX seconds; injected in tests), ``synced`` says whether
    it can be trusted: no deadline is checked on a clock that is not synchronised (a Pi
    without RTC boots in the past, and a step forward would look like missed rounds)."""

    def __init__(
        self,
        cfg: PatrolConfig,
        tz: tzinfo,
        alarms: AlarmSink,
        db: StateDb | None = None,
        *,
        now: Callable[[], float],
        synced: Callable[[], bool] = lambda: True,
        catchup_s: float = CATCHUP_S,
    ) -> None:
        self.alarms = alarms
        self.db = db
        self.now = now
        self.synced = synced
        self.catchup_s = catchup_s
        checkpoints = {c.id: c for c in cfg.checkpoints}
        self.routes = [_RouteRun(r, checkpoints, tz) for r in cfg.routes]
        #: reader device -> the (route, stop index) it is a checkpoint of
        self.by_device: dict[str, list[tuple[_RouteRun, int]]] = {}
        for run in self.routes:
            for i, stop in enumerate(run.stops):
                self.by_device.setdefault(stop.checkpoint.device, []).append((run, i))
        #: guards' cards (as card_read carries them); empty: any card
        self.cards = frozenset(cfg.cards)
        #: every deadline up to this time (UNIX s) has been checked
        self.checked_until: float | None = None
        #: after a restart: old deadlines wait until this time (set at the first check,
        #: when the clock is synchronised: at load it may still be in 1970)
        self._hold_until: float | None = None
        self._restarted = False
        #: the first deadline after ``_next_for`` (a ``checked_until``), for :meth:`due_in`
        self._next_for: float | None = None
        self._next: float | None = None
        self.failures = Failures("tap", "the patrol check is tried again / 巡更检查出错，稍后重试")

    # -- state --------------------------------------------------------------------
    def load(self) -> None:
        """Take back the visits and the check mark saved before a restart (call after the
        outbox opened). Without saved state, checking starts now: rounds whose deadlines
        passed before the agent first ran with this patrol are not judged."""
        text = self.db.state.get(PATROL_STATE) if self.db is not None else None
        if text is None:
            if self.synced():  # else at the first check on a synchronised clock
                self.checked_until = self.now()
                self._save()
            return
        try:
            saved = json.loads(text)
            checked = float(saved["checked_until"])
            rounds = saved["rounds"]
            by_id = {r.route.id: r for r in self.routes}
            for route_id, entries in rounds.items():
                run = by_id.get(route_id)
                if run is None:
                    continue  # a route removed from the config
                for start, entry in entries.items():
                    seen = {c for c in entry["seen"] if c in run.index}
                    run.rounds[int(start)] = _Round(seen, int(entry.get("pos", -1)))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.error("the saved patrol state is unreadable and was ignored: %s", err)
            return
        self.checked_until = checked
        self._restarted = True
        log.info(
            "patrol: visits of %d open rounds from before the restart",
            sum(len(r.rounds) for r in self.routes),
        )

    def _save(self) -> None:
        if self.db is None or self.checked_until is None:
            return
        rounds = {
            run.route.id: {
                str(start): {"seen": sorted(rnd.seen), "pos": rnd.pos}
                for start, rnd in sorted(run.rounds.items())
            }
            for run in self.routes
            if run.rounds
        }
        text = json.dumps(
            {"version": 1, "checked_until": self.checked_until, "rounds": rounds},
            ensure_ascii=False,
        )
        self.db.put_state(*PATROL_STATE, text)

    # -- visits (a tap) -----------------------------------------------------------
    def see(self, msg: Message) -> None:
        """A tap: every message after it went out; card reads at checkpoints are visits."""
        if msg.kind != "event" or msg.type != "card_read":
            return
        targets = self.by_device.get(msg.device)
        if not targets or (self.cards and msg.data.get("card") not in self.cards):
            return
        ts = self.now() if msg.ts is None else msg.ts
        # Before the first tick (the clock may not be synchronised yet) every round is open.
        checked = self.checked_until if self.checked_until is not None else float("-inf")
        reader = msg.data.get("reader")
        changed = False
        for run, i in targets:
            want = run.stops[i].checkpoint.reader
            if want is not None and str(reader) != str(want):
                continue
            for start in run.rounds_at(ts):
                if ts > run.deadline(start, run.stops[i]):
                    continue  # late for this round
                if run.last_deadline(start) <= checked:
                    continue  # that round was judged already
                changed |= self._visit(run, start, i)
        if changed:
            self._save()

    def _visit(self, run: _RouteRun, start: int, i: int) -> bool:
        rnd = run.rounds.setdefault(start, _Round(set()))
        cp = run.stops[i].checkpoint.id
        if cp in rnd.seen:
            return False
        if run.route.ordered and i < rnd.pos:
            log.info(
                "patrol route %s: checkpoint %s visited out of order (round of %s) "
                "/ 巡更点顺序错误",
                run.route.id,
                cp,
                run.local(start),
            )
            return False
        rnd.seen.add(cp)
        rnd.pos = max(rnd.pos, i)
        if len(rnd.seen) == len(run.stops):
            self._complete(run, start)
        return True

    def _complete(self, run: _RouteRun, start: int) -> None:
        """A round with every checkpoint visited: the route's missed alarms clear."""
        log.info("patrol route %s: round of %s complete", run.route.id, run.local(start))
        ids = set(run.index)
        for device in {s.checkpoint.device for s in run.stops}:
            alarm = self.alarms.find(RULE, device)
            if alarm is not None and getattr(alarm, "value", None) in ids:
                self.alarms.clear(RULE, device, origin="patrol")

    # -- deadlines ----------------------------------------------------------------
    def tick(self) -> None:
        """Check the deadlines that passed since the last call (never raises)."""
        try:
            self._tick()
        except Exception as err:
            self.failures.failed("patrol", err)
        self.failures.tick()

    def due_in(self) -> float | None:
        """Seconds until :meth:`tick` has a deadline to judge (0: now); None without
        routes. On a clock not yet synchronised it is looked at every :data:`TICK_S`."""
        due = self._deadline_in()
        summary = self.failures.due_in()
        if summary is None:
            return due
        return summary if due is None else min(due, summary)

    def _deadline_in(self) -> float | None:
        if not self.routes:
            return None
        if not self.synced():
            return TICK_S
        if self.checked_until is None or self._restarted:
            return 0.0
        now = self.now()
        if self._hold_until is not None:
            return max(0.0, self._hold_until - now)
        if self._next_for != self.checked_until:
            self._next_for = self.checked_until
            self._next = self._next_deadline(self.checked_until)
        return None if self._next is None else max(0.0, self._next - now)

    def _next_deadline(self, since: float) -> float | None:
        """The first deadline after ``since`` (rounds start every day: two days ahead
        hold it)."""
        found: float | None = None
        for run in self.routes:
            for start in run.starts(since - run.span_s(), since + 2 * 86400):
                for stop in run.stops:
                    deadline = run.deadline(start, stop)
                    if deadline > since and (found is None or deadline < found):
                        found = deadline
        return found

    def _tick(self) -> None:
        if not self.routes or not self.synced():
            return
        now = self.now()
        if self.checked_until is None:
            self.checked_until = now  # first start: rounds before it are not ours to judge
            self._save()
            return
        if self._restarted:
            self._restarted = False
            self._hold_until = now + self.catchup_s
        if self._hold_until is not None:
            if now < self._hold_until:
                return  # the drivers are catching up what the devices kept meanwhile
            self._hold_until = None
        if now <= self.checked_until:
            return
        since = self.checked_until
        due = False
        for run in self.routes:
            for start in run.starts(since - run.span_s(), now):
                for stop in run.stops:
                    deadline = run.deadline(start, stop)
                    if since < deadline <= now:
                        due = True
                        self._judge(run, start, stop, deadline)
            for start in [s for s in run.rounds if run.last_deadline(s) <= now]:
                del run.rounds[start]
        self.checked_until = now
        if due:
            self._save()

    def _judge(self, run: _RouteRun, start: int, stop: _Stop, deadline: float) -> None:
        rnd = run.rounds.get(start)
        cp = stop.checkpoint
        if rnd is not None and cp.id in rnd.seen:
            return
        name = cp.name or cp.id
        self.alarms.raise_(
            RULE,
            cp.device,
            run.route.severity,
            value=cp.id,
            threshold=iso_ms(deadline),
            en=f"Guard patrol: checkpoint {name} of route {run.label} was not visited by "
            f"{run.local(deadline)} (round of {run.local(start)}).",
            zh=f"巡更漏检：路线「{run.label}」{run.local(start)} 这一轮未在 "
            f"{run.local(deadline)} 前到达巡更点「{name}」。",
            origin="patrol",
        )
