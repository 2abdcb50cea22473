"""The rule engine: alarms over everything the devices report (issue 10, part 1).

:class:`RuleEngine` is a tap of the pipeline (:meth:`RuleEngine.see`): it sees every
telemetry reading, event and device state once it is on its way to the outbox, and
raises and clears alarms through the :class:`~edge_agent.alarms.lifecycle.AlarmBook`
(rule id, device, severity, value, threshold, message in en and zh).
:meth:`RuleEngine.tick` (from the agent's outbox task) runs the timers: on/off delays,
device offline, schedules arming and disarming, chattering ending.

- ``threshold``: ``above``/``below`` with ``deadband`` (clears only that far back inside)
  and ``on_delay_s``/``off_delay_s``; on a reading or on a rolling ``mean`` (1 h, 8 h,
  24 h: buckets, at most :data:`BUCKETS` per rule and device; ``school_day``: the mean
  of today's readings inside the schedule, reset each day; its alarm clears when the
  school day ends). A mean is judged once its
  window is half covered, so a restart does not raise a 24 h mean on five minutes.
- ``rate``: change per minute over ``window_s``.
- ``offline``: a device ``offline`` for ``on_delay_s``; cleared when it is back.
- ``event``: an event whose data matches; cleared by ``clear_event`` or at once (it then
  stays visible, ``cleared_unacked``, until someone acknowledges it).
- Schedules: ``only_in`` / ``only_outside`` arm a rule; a disarmed rule's alarm clears.
- Flood control: once :data:`FLOOD_N` alarms of one category other than ``security``
  were raised within :data:`FLOOD_S`, the next are folded into one ``alarm_flood_{category}``
  summary on the gateway; when none was folded for :data:`FLOOD_S`, the summary clears and
  the folded conditions that still hold are raised one by one. A security rule (doors,
  fire) never waits behind it.
- Chattering: the :data:`CHATTER_N`-th raise of a rule on a device within
  :data:`CHATTER_S` becomes one ``chattering`` alarm; the rule's own alarm stays quiet
  until it has been calm for :data:`CHATTER_S`.

Time is the injected ``now`` (UNIX seconds); a reading's own ``ts`` places it in a
mean. Imports nothing of MQTT, the drivers or the tools.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from edge_agent.alarms.lifecycle import AlarmSink
from edge_agent.config.rules import DAYS, MEANS, Rule, RuleSet, Schedule, parse_span
from edge_agent.pipeline.base import Message
from edge_agent.pipeline.failures import Failures

log = logging.getLogger(__name__)

#: buckets of a rolling mean: memory per (rule, device) is bounded whatever the rate
BUCKETS = 96
#: a mean is judged once this share of its window has readings
COVERAGE = 0.5
CHATTER_N = 3
CHATTER_S = 60.0
CHATTER_RULE = "chattering"
#: flood control: more than FLOOD_N raises of one non-security category within FLOOD_S
#: are folded into one summary alarm; security rules never pass through it
FLOOD_N = 10
FLOOD_S = 60.0
FLOOD_RULE = "alarm_flood_{category}"
#: the alarm audit's ``origin`` of what the engine raises and clears
ORIGIN = "rules"
#: added to the deadlines the tick checks with ``>``: the wake after it finds them due
_SLACK_S = 0.001


class ScheduleClock:
    """Whether a schedule is in at a time, in the site's timezone."""

    def __init__(self, schedules: dict[str, Schedule], tz: tzinfo) -> None:
        self.tz = tz
        self.schedules = schedules
        self._spans = {name: [parse_span(t) for t in s.times] for name, s in schedules.items()}

    def is_in(self, name: str, ts: float) -> bool:
        sched = self.schedules[name]
        local = datetime.fromtimestamp(ts, self.tz)
        minute = local.hour * 60 + local.minute
        for start, end in self._spans[name]:
            if start < end:
                if start <= minute < end and self._day_on(sched, local):
                    return True
            else:  # crosses midnight: the evening part today, the morning part of yesterday's
                if minute >= start and self._day_on(sched, local):
                    return True
                if minute < end and self._day_on(sched, local - timedelta(days=1)):
                    return True
        return False

    @staticmethod
    def _day_on(sched: Schedule, local: datetime) -> bool:
        return DAYS[local.weekday()] in sched.days and local.date() not in sched.holidays


class RollingMean:
    """Mean over a sliding window in at most :data:`BUCKETS` buckets.

    The buckets are a ring of two flat arrays (sums, counts: 8 bytes a slot each) that
    grows to ``BUCKETS + 1`` slots over the first window and then stays that size, with
    a running total: ``add`` and ``mean`` cost the same whatever the window. A list per
    bucket (three Python objects) made a 24 h mean of a sensor read every 10 s about
    7 KiB after a day and a mean cost a sum over every bucket.
    """

    __slots__ = (
        "_counts",
        "_first",
        "_last",
        "_n",
        "_origin",
        "_sums",
        "_total",
        "bucket_s",
        "window_s",
    )

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.bucket_s = window_s / BUCKETS
        #: bucket numbers (``floor(ts / bucket_s)``): the first ever seen (slot 0), the
        #: oldest still counted, the newest; None while empty
        self._origin = 0
        self._first: int | None = None
        self._last = 0
        self._sums = array("d")
        self._counts = array("d")
        self._total = 0.0
        self._n = 0

    def _slot(self, k: int) -> int:
        return (k - self._origin) % (BUCKETS + 1)

    def add(self, ts: float, value: float) -> None:
        k = math.floor(ts / self.bucket_s)
        if self._first is not None and k < self._last:
            return  # a reading older than the newest bucket (a late one): rare, harmless
        self._expire(ts)
        first = self._first
        if first is None:
            self._reset(k)
            first = k
        while self._last < k:  # the buckets in between had no readings
            self._last += 1
            if self._last - first > BUCKETS:  # its slot is still counted (rounding)
                self._drop_first()
                first += 1
            self._put(self._slot(self._last))
        slot = self._slot(k)
        self._sums[slot] += value
        self._counts[slot] += 1
        self._total += value
        self._n += 1

    def _reset(self, k: int) -> None:
        self._origin = self._first = self._last = k
        del self._sums[:]
        del self._counts[:]
        self._put(0)
        self._total, self._n = 0.0, 0

    def _put(self, slot: int) -> None:
        """An empty bucket in ``slot``; the ring grows a slot at a time over its first window."""
        if slot == len(self._sums):
            self._sums.append(0.0)
            self._counts.append(0.0)
        else:
            self._sums[slot] = self._counts[slot] = 0.0

    def _drop_first(self) -> None:
        assert self._first is not None
        slot = self._slot(self._first)
        self._total -= self._sums[slot]
        self._n -= int(self._counts[slot])
        self._sums[slot] = self._counts[slot] = 0.0
        self._first += 1

    def _expire(self, now: float) -> None:
        # a bucket leaves once it ends before the window's start; empty ones at the head
        # go too, so the oldest bucket kept always has readings
        while self._first is not None and self._first <= self._last:
            first = self._first
            if (first + 1) * self.bucket_s > now - self.window_s and self._counts[
                self._slot(first)
            ]:
                return
            self._drop_first()
        if self._first is not None:  # nothing left
            self._first = None
            self._total, self._n = 0.0, 0

    def buckets(self) -> int:
        """How many buckets are counted now (for tests)."""
        return 0 if self._first is None else self._last - self._first + 1

    def mean(self, now: float) -> float | None:
        """The mean, or None while less than :data:`COVERAGE` of the window has data."""
        self._expire(now)
        if self._first is None or self._n == 0:
            return None
        if now - self._first * self.bucket_s < COVERAGE * self.window_s:
            return None
        return self._total / self._n


class DayMean:
    """Mean of today's readings inside a schedule (the school day); reset each day."""

    def __init__(self, schedule: str, clock: ScheduleClock) -> None:
        self.schedule = schedule
        self.clock = clock
        self.day: Any = None
        self.sum = 0.0
        self.n = 0

    def add(self, ts: float, value: float) -> None:
        if not self.clock.is_in(self.schedule, ts):
            return
        day = datetime.fromtimestamp(ts, self.clock.tz).date()
        if day != self.day:
            self.day, self.sum, self.n = day, 0.0, 0
        self.sum += value
        self.n += 1

    def mean(self, now: float) -> float | None:
        if self.n == 0 or datetime.fromtimestamp(now, self.clock.tz).date() != self.day:
            return None
        return self.sum / self.n


@dataclass(slots=True)
class _Track:
    """One rule on one device: its condition, timers and the alarm's state."""

    active: bool = False
    #: since when the raise (or clear) condition has held, waiting for its delay
    pending_since: float | None = None
    value: float | None = None
    mean: RollingMean | DayMean | None = None
    #: a rate rule's recent readings; the times of the last raises (chattering): made
    #: when first needed (an empty deque is 600 bytes, and most tracks never need one)
    samples: collections.deque[tuple[float, float]] | None = None
    raises: collections.deque[float] | None = None
    chattering: bool = False
    fields: dict[str, Any] = field(default_factory=dict)


def _fmt(value: Any) -> Any:
    """A value for the alarm and its text: 3000.0 reads 3000, a mean 3 decimals at most."""
    if isinstance(value, float):
        value = round(value, 3)
        return int(value) if value.is_integer() else value
    return value


class _Safe(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


class RuleEngine:
    """Runs a :class:`~edge_agent.config.rules.RuleSet` over the pipeline's messages."""

    def __init__(
        self,
        ruleset: RuleSet,
        tz: tzinfo,
        alarms: AlarmSink,
        *,
        now: Callable[[], float],
        gateway: str = "gateway",
    ) -> None:
        self.rules = ruleset.rules
        #: the rules by id (the ticks look a track's rule up by it)
        self._by_id = {r.id: r for r in self.rules}
        self.gateway = gateway
        #: per category: when its last raises were, whether it floods, what was folded
        self._flood_times: dict[str, collections.deque[float]] = {}
        self._flood_last: dict[str, float] = {}
        self._folded: dict[str, set[tuple[str, str]]] = {}
        self.alarms = alarms
        self.now = now
        self.clock = ScheduleClock(ruleset.schedules, tz)
        self.by_metric: dict[str, list[Rule]] = {}
        self.by_event: dict[str, list[Rule]] = {}
        self.offline: list[Rule] = []
        for rule in self.rules:
            if rule.type in ("threshold", "rate") and rule.metric is not None:
                self.by_metric.setdefault(rule.metric, []).append(rule)
            elif rule.type == "event" and rule.event is not None:
                self.by_event.setdefault(rule.event, []).append(rule)
                if rule.clear_event is not None and rule.clear_event != rule.event:
                    self.by_event.setdefault(rule.clear_event, []).append(rule)
            elif rule.type == "offline":
                self.offline.append(rule)
        self.tracks: dict[tuple[str, str], _Track] = {}
        #: rules with a ``suppress:`` schedule, and whether it held when last looked at
        self._suppress = {r.id: r.suppress for r in self.rules if r.suppress is not None}
        self._suppressed: dict[str, bool] = {}
        self._match_cache: dict[tuple[str, str], bool] = {}
        self.failures = Failures("tap", "the alarm rules are tried again / 告警规则出错，稍后重试")
        self.counts = {
            "rules_raised": 0,
            "rules_cleared": 0,
            "rules_chattering": 0,
            "rules_folded": 0,
        }

    # -- helpers ------------------------------------------------------------------
    def _applies(self, rule: Rule, device: str) -> bool:
        key = (rule.id, device)
        hit = self._match_cache.get(key)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(device, pat) for pat in rule.devices)
            self._match_cache[key] = hit
        return hit

    def _armed(self, rule: Rule, ts: float) -> bool:
        if rule.only_in is not None:
            return self.clock.is_in(rule.only_in, ts)
        if rule.only_outside is not None:
            return not self.clock.is_in(rule.only_outside, ts)
        return True

    def _track(self, rule: Rule, device: str) -> _Track:
        track = self.tracks.get((rule.id, device))
        if track is None:
            # An alarm the book took back after a restart is this rule's: it clears once
            # the condition is seen gone, and is not raised a second time.
            track = _Track(active=self.alarms.find(rule.id, device) is not None)
            if rule.mean == "school_day":
                track.mean = DayMean(rule.schedule, self.clock)
            elif rule.mean is not None:
                track.mean = RollingMean(MEANS[rule.mean])
            self.tracks[(rule.id, device)] = track
        return track

    def _threshold(self, rule: Rule) -> Any:
        if rule.above is not None and rule.below is not None:
            return [rule.below, rule.above]
        return rule.above if rule.above is not None else rule.below

    def _text(self, rule: Rule, device: str, track: _Track) -> tuple[str, str]:
        values = _Safe(track.fields)
        values.update(
            device=device,
            metric=rule.metric or rule.event or "",
            value=_fmt(track.value),
            threshold=self._threshold(rule),
        )
        if rule.message is not None:
            return rule.message.en.format_map(values), rule.message.zh.format_map(values)
        what = rule.metric or rule.event or rule.type
        return (
            f"{device}: {what} {_fmt(track.value)} (rule {rule.id}, limit {self._threshold(rule)})",
            f"{device}：{what} {_fmt(track.value)}（规则 {rule.id}，限值 {self._threshold(rule)}）",
        )

    def _check_suppress(self, rule_id: str, now: float) -> None:
        """Tell the book when a rule's ``suppress:`` schedule starts or ends: while it
        holds the book annunciates nothing of the rule and raises what is still true
        when it ends (docs/alarms.md)."""
        schedule = self._suppress.get(rule_id)
        if schedule is None:
            return
        on = self.clock.is_in(schedule, now)
        if self._suppressed.get(rule_id, False) != on:
            self._suppressed[rule_id] = on
            self.alarms.suppress(rule_id, on, origin=f"{ORIGIN}: schedule {schedule}")

    def _raise(
        self, rule: Rule, device: str, track: _Track, now: float, *, fold: bool = True
    ) -> None:
        self._check_suppress(rule.id, now)
        track.active = True
        track.pending_since = None
        # a suppressed rule goes straight to the book, which holds it: it must neither
        # chatter nor count towards a flood while nobody is meant to hear of it
        suppressed = self._suppressed.get(rule.id, False) or self.alarms.is_suppressed(
            rule.id, device
        )
        raises = track.raises
        if not suppressed:
            if raises is None:
                raises = track.raises = collections.deque(maxlen=CHATTER_N)
            raises.append(now)
        if suppressed:
            fold = False
        elif raises is not None and len(raises) == CHATTER_N and now - raises[0] <= CHATTER_S:
            if not track.chattering:
                track.chattering = True
                self.counts["rules_chattering"] += 1
                self.alarms.clear(rule.id, device, origin=ORIGIN)
                self.alarms.raise_(
                    CHATTER_RULE,
                    device,
                    rule.severity,
                    value=rule.id,
                    threshold=CHATTER_N,
                    en=f"{device}: rule {rule.id} raised {CHATTER_N} times within "
                    f"{CHATTER_S:.0f} s (chattering); its alarms are held until it is calm.",
                    zh=f"{device}：规则 {rule.id} 在 {CHATTER_S:.0f} 秒内触发 {CHATTER_N} 次"
                    "（抖动），平稳前不再逐次告警。",
                    origin=ORIGIN,
                )
            return
        if track.chattering:
            return
        if fold and rule.category != "security" and self._fold(rule, device, now):
            return
        en, zh = self._text(rule, device, track)
        self.counts["rules_raised"] += 1
        self.alarms.raise_(
            rule.id,
            device,
            rule.severity,
            en=en,
            zh=zh,
            value=_fmt(track.value),
            threshold=self._threshold(rule),
            origin=ORIGIN,
        )

    def _fold(self, rule: Rule, device: str, now: float) -> bool:
        """Count a raise of the rule's category; True: folded into the flood summary."""
        cat = rule.category
        times = self._flood_times.setdefault(cat, collections.deque(maxlen=FLOOD_N))
        while times and now - times[0] > FLOOD_S:
            times.popleft()
        if cat not in self._folded and len(times) < FLOOD_N:
            times.append(now)
            return False
        if cat not in self._folded:
            self._folded[cat] = set()
            self.alarms.raise_(
                FLOOD_RULE.format(category=cat),
                self.gateway,
                "warning",
                value=cat,
                threshold=FLOOD_N,
                en=f"More than {FLOOD_N} {cat} alarms within {FLOOD_S:.0f} s: the next are "
                "folded into this one until it is calm (see the devices' values).",
                zh=f"{FLOOD_S:.0f} 秒内{cat}类告警超过 {FLOOD_N} 条：后续告警合并为本条，"
                "平稳后逐条发出。",
                origin=ORIGIN,
            )
        self._folded[cat].add((rule.id, device))
        self._flood_last[cat] = now
        self.counts["rules_folded"] += 1
        return True

    def _end_floods(self, now: float) -> None:
        by_id = self._by_id
        for cat in [c for c in self._folded if now - self._flood_last[c] > FLOOD_S]:
            folded = self._folded.pop(cat)
            self._flood_times[cat].clear()
            self.alarms.clear(FLOOD_RULE.format(category=cat), self.gateway, origin=ORIGIN)
            for rule_id, device in sorted(folded):
                track = self.tracks.get((rule_id, device))
                if track is not None and track.active and rule_id in by_id:
                    # the storm is over: each condition that still holds gets its alarm
                    self._raise(by_id[rule_id], device, track, now, fold=False)

    def _clear(self, rule: Rule, device: str, track: _Track) -> None:
        track.active = False
        track.pending_since = None
        if track.chattering:
            return
        self.counts["rules_cleared"] += 1
        self.alarms.clear(rule.id, device, origin=ORIGIN)

    # -- the tap ------------------------------------------------------------------
    def see(self, msg: Message) -> None:
        """A tap: every message after it went out."""
        if msg.kind == "telemetry":
            self._telemetry(msg)
        elif msg.kind == "event":
            self._event(msg)
        elif msg.kind == "state":
            self._state(msg)

    def _telemetry(self, msg: Message) -> None:
        now = self.now()
        ts = now if msg.ts is None else msg.ts
        for metric, raw in msg.data.items():
            rules = self.by_metric.get(metric)
            if not rules or isinstance(raw, bool) or not isinstance(raw, int | float):
                continue
            if msg.quality == "bad":
                continue
            for rule in rules:
                if self._applies(rule, msg.device):
                    self._reading(rule, msg.device, ts, float(raw), now)

    def _reading(self, rule: Rule, device: str, ts: float, value: float, now: float) -> None:
        track = self._track(rule, device)
        if rule.type == "rate":
            samples = track.samples
            if samples is None:
                samples = track.samples = collections.deque(maxlen=64)
            samples.append((ts, value))
            while samples and samples[0][0] < ts - rule.window_s:
                samples.popleft()
            t0, v0 = samples[0]
            if ts - t0 <= 0:
                return
            track.value = abs(value - v0) / ((ts - t0) / 60.0)
        elif track.mean is not None:
            track.mean.add(ts, value)
            track.value = track.mean.mean(ts)
        else:
            track.value = value
        self._judge(rule, device, track, now)

    def _judge(self, rule: Rule, device: str, track: _Track, now: float) -> None:
        if not self._armed(rule, now):
            if track.active:
                self._clear(rule, device, track)
            track.pending_since = None
            return
        v = track.value
        if v is None:
            return
        if not track.active:
            bad = (rule.above is not None and v > rule.above) or (
                rule.below is not None and v < rule.below
            )
            if not bad:
                track.pending_since = None
                return
            if track.pending_since is None:
                track.pending_since = now
            if now - track.pending_since >= rule.on_delay_s:
                self._raise(rule, device, track, now)
        else:
            good = (rule.above is None or v <= rule.above - rule.deadband) and (
                rule.below is None or v >= rule.below + rule.deadband
            )
            if not good:
                track.pending_since = None
                return
            if track.pending_since is None:
                track.pending_since = now
            if now - track.pending_since >= rule.off_delay_s:
                self._clear(rule, device, track)

    @staticmethod
    def _matches(data: dict[str, Any], match: dict[str, Any]) -> bool:
        for key, want in match.items():
            got = data.get(key)
            if isinstance(want, list):
                if got not in want:
                    return False
            elif got != want:
                return False
        return True

    def _event(self, msg: Message) -> None:
        rules = self.by_event.get(msg.type or "")
        if not rules:
            return
        now = self.now()
        for rule in rules:
            if not self._applies(rule, msg.device):
                continue
            track = self._track(rule, msg.device)
            if msg.type == rule.clear_event and self._matches(msg.data, rule.clear_match):
                if track.active:
                    self._clear(rule, msg.device, track)
                continue
            if msg.type != rule.event or not self._matches(msg.data, rule.match):
                continue
            if not self._armed(rule, now):
                continue
            track.fields = {k: v for k, v in msg.data.items() if isinstance(v, str | int | float)}
            track.value = None
            self._raise(rule, msg.device, track, now)
            if rule.clear_event is None:
                # one-off: cleared at once, visible (cleared_unacked) until acknowledged
                self._clear(rule, msg.device, track)

    def _state(self, msg: Message) -> None:
        if not self.offline:
            return
        now = self.now()
        state = msg.data.get("state")
        for rule in self.offline:
            if not self._applies(rule, msg.device):
                continue
            track = self._track(rule, msg.device)
            if state == "offline":
                if not track.active and track.pending_since is None:
                    track.pending_since = now
                    track.fields = {"last_error": str(msg.data.get("last_error") or "")}
            else:
                track.pending_since = None
                if track.active:
                    self._clear(rule, msg.device, track)

    # -- timers -------------------------------------------------------------------
    def tick(self) -> None:
        """Delays, offline, schedules and chattering (never raises)."""
        try:
            self._tick()
        except Exception as err:
            self.failures.failed("rules", err)
        self.failures.tick()

    def _tick(self) -> None:
        now = self.now()
        for rule_id in self._suppress:
            self._check_suppress(rule_id, now)
        if self._folded:
            self._end_floods(now)
        by_id = self._by_id
        for (rule_id, device), track in self.tracks.items():
            if not (track.active or track.chattering or track.pending_since is not None):
                # nothing a timer can change (every branch below needs one of the three):
                # most tracks, most of the time; the tick runs after every group commit
                continue
            rule = by_id[rule_id]
            if track.chattering and track.raises and now - track.raises[-1] > CHATTER_S:
                track.chattering = False
                track.raises.clear()
                self.alarms.clear(CHATTER_RULE, device, origin=ORIGIN)
                if track.active:  # calm, and the condition still holds: its own alarm
                    track.active = False
                    self._raise(rule, device, track, now)
                continue
            if rule.type == "offline":
                if (
                    track.pending_since is not None
                    and not track.active
                    and now - track.pending_since >= rule.on_delay_s
                ):
                    track.value = None
                    self._raise(rule, device, track, now)
            elif (
                rule.mean == "school_day"
                and track.active
                and not self.clock.is_in(rule.schedule, now)
            ):
                # the school day is over: its verdict stays in the alarm (visible until
                # acknowledged), not active all night and weekend
                track.value = None
                self._clear(rule, device, track)
            elif rule.type in ("threshold", "rate"):
                # only what a timer or a schedule can change: a tick every 500 ms must
                # stay cheap with a thousand (rule, device) pairs on a Pi
                scheduled = rule.only_in is not None or rule.only_outside is not None
                if track.pending_since is not None or (scheduled and track.active):
                    self._judge(rule, device, track, now)
            elif rule.type == "event" and track.active and not self._armed(rule, now):
                self._clear(rule, device, track)

    def due_in(self) -> float | None:
        """Seconds until :meth:`tick` can next change something (0: now), None while only
        a new message can: the soonest on- or off-delay, offline delay, end of chattering
        or of a flood, or, when a schedule matters (``suppress:``, an armed rule's active
        or pending alarm, a school day's verdict), the next minute (schedules are written
        in minutes). The agent sleeps until then instead of ticking every interval."""
        now = self.now()
        due = math.inf
        minute = (math.floor(now / 60.0) + 1) * 60.0 + _SLACK_S
        if self._suppress:
            due = minute
        for cat in self._folded:  # the tick ends a flood once ``> FLOOD_S`` passed
            due = min(due, self._flood_last[cat] + FLOOD_S + _SLACK_S)
        fd = self.failures.due_in()
        if fd is not None:
            due = min(due, now + fd)
        by_id = self._by_id
        for (rule_id, _device), track in self.tracks.items():
            if not (track.active or track.chattering or track.pending_since is not None):
                continue  # as in _tick: no timer can change it
            rule = by_id.get(rule_id)
            if rule is None:
                continue
            if track.chattering:
                if track.raises:
                    due = min(due, track.raises[-1] + CHATTER_S + _SLACK_S)
                continue
            scheduled = rule.only_in is not None or rule.only_outside is not None
            if (scheduled or rule.mean == "school_day") and track.active:
                due = min(due, minute)
            if track.pending_since is None:
                continue
            if rule.type == "offline":
                if not track.active:
                    due = min(due, track.pending_since + rule.on_delay_s)
            elif rule.type in ("threshold", "rate"):
                delay = rule.off_delay_s if track.active else rule.on_delay_s
                due = min(due, track.pending_since + delay)
                if scheduled:
                    due = min(due, minute)
        return None if due == math.inf else max(0.0, due - now)

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
