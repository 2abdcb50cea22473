"""Alarm rules (issue 10, part 1): thresholds, delays, deadband, rolling means, schedules,
offline, events and chattering, with an injected clock (no sleeps) and the real alarm
book; rule files and the default set as check-config sees them."""

from __future__ import annotations

import math
import random
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent.alarms.lifecycle import AlarmBook, OutboxAlarmStore
from edge_agent.alarms.rules import (
    BUCKETS,
    CHATTER_RULE,
    COVERAGE,
    FLOOD_N,
    FLOOD_S,
    RollingMean,
    RuleEngine,
)
from edge_agent.config.loader import load_config
from edge_agent.config.rules import RuleFile, RulesConfig, RuleSet, load_rules
from edge_agent.drivers.modbus.profile import load_profile
from edge_agent.envelope import Lane
from edge_agent.errors import ConfigError
from edge_agent.pipeline.base import Message

SHANGHAI = ZoneInfo("Asia/Shanghai")
ROOT = "campus/s/gw1"
#: a Monday
MONDAY = "2026-11-30"


def at(text: str) -> float:
    """'2026-11-30 10:05' on the school's wall clock -> UNIX seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI).timestamp()


class Campus:
    """A rule engine with the real alarm book, on a clock the test moves."""

    def __init__(self, rules: list[dict[str, Any]], schedules: dict[str, Any] | None = None):
        parsed = RuleFile.model_validate({"rules": rules, "schedules": schedules or {}})
        self.sent: list[dict[str, Any]] = []
        self.retained: dict[str, Any] = {}
        self.book = AlarmBook(ROOT, self._put, self._retain, "en")
        self.clock = at(f"{MONDAY} 10:00")
        self.engine = RuleEngine(
            RuleSet(parsed.rules, dict(parsed.schedules)),
            SHANGHAI,
            self.book,
            now=lambda: self.clock,
        )

    def _put(self, lane: Lane, topic: str, **kw: Any) -> None:
        assert lane is Lane.ALARM
        self.sent.append(kw["data"])

    def _retain(self, topic: str, payload: Any) -> None:
        self.retained[topic] = payload

    def read(self, value: float, metric: str = "co2", device: str = "r101-air") -> None:
        self.engine.see(Message("telemetry", device, {metric: value}, ts=self.clock))

    def event(self, type_: str, device: str = "gate", **data: Any) -> None:
        self.engine.see(Message("event", device, data, ts=self.clock, type=type_))

    def state(self, state: str, device: str = "r101-air") -> None:
        self.engine.see(Message("state", device, {"state": state, "last_error": "timeout"}))

    def advance(self, seconds: float) -> None:
        self.clock += seconds
        self.engine.tick()

    def states(self, rule: str | None = None) -> list[str]:
        return [a["state"] for a in self.sent if rule is None or a["rule"] == rule]


CO2 = {"id": "co2", "metric": "co2", "above": 1500, "deadband": 100, "severity": "minor"}


def test_threshold_raises_and_clears_through_the_book_with_deadband() -> None:
    c = Campus([CO2])
    c.read(1400)
    assert c.sent == []
    c.read(1600)
    assert c.states() == ["active_unacked"]
    alarm = c.sent[0]
    assert (alarm["rule"], alarm["device"], alarm["severity"]) == ("co2", "r101-air", "minor")
    assert (alarm["value"], alarm["threshold"]) == (1600, 1500)
    c.read(1450)  # below the limit, inside the deadband: still active
    assert c.states() == ["active_unacked"]
    c.read(1399)
    assert c.states() == ["active_unacked", "cleared_unacked"]
    # stays visible until acknowledged
    assert c.retained[f"{ROOT}/alarms/active/{alarm['alarm_id']}"]["state"] == "cleared_unacked"


def test_an_alarm_open_before_a_restart_is_cleared_by_its_rule() -> None:
    class Db:
        def __init__(self) -> None:
            self.state: dict[tuple[str, str], str] = {}

        def put_state(self, device: str, key: str, value: str) -> None:
            self.state[(device, key)] = value

    db = Db()
    c = Campus([CO2])
    c.book.store = OutboxAlarmStore(db)
    c.read(1600)
    after = Campus([CO2])  # a restart: a new book and engine on the same database
    after.book.store = OutboxAlarmStore(db)
    assert after.book.load() == 1
    after.read(1300)  # the first reading after the restart is fine again
    assert after.states() == ["cleared_unacked"]
    assert after.sent[0]["alarm_id"] == c.sent[0]["alarm_id"]


def test_on_delay_needs_the_condition_to_hold_and_off_delay_to_clear() -> None:
    c = Campus([{**CO2, "on_delay_s": 300, "off_delay_s": 120}])
    c.read(1600)
    c.advance(200)
    c.read(1400)  # dropped before the delay: nothing, and the delay starts over
    c.advance(30)
    c.read(1600)
    c.advance(290)
    assert c.sent == []
    c.advance(10)  # 300 s of the condition, seen by the tick without a new reading
    assert c.states() == ["active_unacked"]
    c.read(1300)
    c.advance(100)
    assert c.states() == ["active_unacked"]
    c.advance(20)
    assert c.states() == ["active_unacked", "cleared_unacked"]


def test_below_and_range_rules() -> None:
    c = Campus([{"id": "temp", "metric": "temperature", "below": 16, "above": 28, "deadband": 1}])
    c.read(20, "temperature")
    c.read(15, "temperature")
    assert c.sent[-1]["threshold"] == [16, 28]
    c.read(16.5, "temperature")  # inside the deadband
    assert c.states() == ["active_unacked"]
    c.read(17, "temperature")
    assert c.states() == ["active_unacked", "cleared_unacked"]


def test_rolling_mean_waits_for_coverage_and_smooths_a_spike() -> None:
    c = Campus([{**CO2, "mean": "1h"}])
    c.read(5000)  # one spike at the start: no mean yet
    for _ in range(20):
        c.advance(60)
        c.read(1000)
    assert c.sent == []  # 20 min of an hour: not judged yet
    for _ in range(15):
        c.advance(60)
        c.read(1000)
    assert c.sent == []  # the mean of 36 readings with one spike is ~1111
    for _ in range(30):
        c.advance(60)
        c.read(2200)
    assert c.states() == ["active_unacked"]
    assert c.sent[0]["value"] > 1500


def test_rolling_mean_memory_is_bounded() -> None:
    mean = RollingMean(3600)
    sizes = []
    for i in range(10_000):
        mean.add(1000.0 + i, 1.0)
        sizes.append(sys.getsizeof(mean._sums) + sys.getsizeof(mean._counts))
    assert mean.buckets() <= BUCKETS + 1
    # the ring grows over the first window (3600 s) and never after
    assert sizes[-1] == max(sizes) == sizes[4000]
    assert mean.mean(11_000.0) == 1.0


class _SpelledOutMean:
    """The rolling mean spelled out with a list of every reading: buckets of
    window/BUCKETS; a bucket counts until it ends before the window's start (as of the
    latest time seen); a reading older than the newest bucket counted is left out; the
    mean is judged once the oldest bucket counted is COVERAGE of the window old."""

    def __init__(self, window_s: float) -> None:
        self.window_s, self.size = window_s, window_s / BUCKETS
        self.readings: list[tuple[int, float]] = []
        self.horizon = -math.inf

    def _kept(self) -> list[tuple[int, float]]:
        start = self.horizon - self.window_s
        self.readings = [(k, v) for k, v in self.readings if (k + 1) * self.size > start]
        return self.readings

    def add(self, ts: float, value: float) -> None:
        self.horizon = max(self.horizon, ts)
        k = math.floor(ts / self.size)
        kept = self._kept()
        if kept and k < max(k for k, _ in kept):
            return
        self.readings.append((k, value))

    def mean(self, now: float) -> float | None:
        self.horizon = max(self.horizon, now)
        kept = self._kept()
        if not kept or now - min(k for k, _ in kept) * self.size < COVERAGE * self.window_s:
            return None
        return sum(v for _, v in kept) / len(kept)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_rolling_mean_matches_the_mean_spelled_out(seed: int) -> None:
    """Readings on a clock that only moves forward, with outages (some longer than the
    window), late readings and bursts: the ring and its running total give the mean of
    the readings in the window, reading after reading."""
    rng = random.Random(seed)
    window = rng.choice([600.0, 3600.0, 8 * 3600.0])
    mean, spelled = RollingMean(window), _SpelledOutMean(window)
    now = 1_700_000_000.0 + rng.random() * 1000
    for i in range(3000):
        r = rng.random()
        if r < 0.01:
            now += window * rng.uniform(0.5, 3)  # an outage: part of, or more than, a window
        else:
            now += rng.uniform(0, window / 50)
        ts = now - rng.uniform(0, window / 10) if r > 0.97 else now  # late, or on time
        value = rng.uniform(300, 3000)
        mean.add(ts, value)
        spelled.add(ts, value)
        if rng.random() < 0.3:
            now += rng.uniform(0, window / 20)  # judged a little later (the rules' tick)
        got, want = mean.mean(now), spelled.mean(now)
        assert (got is None) == (want is None), (i, got, want)
        if got is not None and want is not None:
            assert got == pytest.approx(want, rel=1e-9), i
        assert mean.buckets() <= BUCKETS + 1


def test_school_day_mean_counts_only_the_schedule_and_resets_each_day() -> None:
    sched = {"school_day": {"times": ["08:00-17:00"]}}
    c = Campus([{**CO2, "mean": "school_day", "schedule": "school_day"}], sched)
    c.clock = at(f"{MONDAY} 06:00")
    for _ in range(60):  # before school: very high, not counted
        c.read(4000)
        c.advance(60)
    c.clock = at(f"{MONDAY} 08:00")
    c.read(1400)
    c.advance(60)
    c.read(1500)
    assert c.sent == []
    c.read(1800)  # mean (1400+1500+1800)/3 = 1566
    assert c.states() == ["active_unacked"]
    assert c.sent[0]["value"] == pytest.approx(1566.667, abs=0.01)
    c.clock = at(f"{MONDAY} 16:59")
    c.engine.tick()
    assert c.states() == ["active_unacked"]
    c.clock = at(f"{MONDAY} 17:00")  # the school day is over: cleared, not active all night
    c.engine.tick()
    assert c.states() == ["active_unacked", "cleared_unacked"]
    c.clock = at("2026-12-01 08:00")  # a new day: the mean starts over
    c.read(1000)
    c.read(2000)
    assert c.states() == ["active_unacked", "cleared_unacked"]
    c.read(3000)  # (1000+2000+3000)/3 = 2000: today's own alarm
    assert c.states() == ["active_unacked", "cleared_unacked", "active_unacked"]


def test_rate_of_change() -> None:
    c = Campus([{"id": "warming", "type": "rate", "metric": "temperature", "above": 2}])
    c.read(20, "temperature")
    c.advance(60)
    c.read(21, "temperature")  # 1 °C/min
    assert c.sent == []
    c.advance(60)
    c.read(26, "temperature")  # 6 °C over 2 min: 3 °C/min
    assert c.states() == ["active_unacked"]
    assert c.sent[0]["value"] == 3


SCHED = {
    "school_day": {"times": ["07:30-17:30"], "holidays": ["2026-12-02"]},
    "lessons": {"times": ["08:00-12:00", "14:00-17:30"]},
}


def test_schedule_arms_a_rule_and_a_disarmed_rule_clears() -> None:
    c = Campus([{**CO2, "only_in": "lessons"}], SCHED)
    c.clock = at(f"{MONDAY} 12:30")  # lunch break
    c.read(2000)
    assert c.sent == []
    c.clock = at(f"{MONDAY} 14:00")
    c.read(2000)
    assert c.states() == ["active_unacked"]
    c.clock = at(f"{MONDAY} 17:30")
    c.engine.tick()  # lessons over: the rule is disarmed, its alarm clears
    assert c.states() == ["active_unacked", "cleared_unacked"]


def test_after_hours_motion_and_holidays() -> None:
    rule = {
        "id": "motion_after_hours",
        "type": "event",
        "event": "motion",
        "match": {"active": True},
        "only_outside": "school_day",
        "severity": "major",
        "category": "security",
    }
    c = Campus([rule], SCHED)
    c.clock = at(f"{MONDAY} 10:00")
    c.event("motion", "cam1", zone="hall", active=True)
    assert c.sent == []
    c.clock = at(f"{MONDAY} 22:00")
    c.event("motion", "cam1", zone="hall", active=True)
    assert [(a["rule"], a["severity"]) for a in c.sent] == [("motion_after_hours", "major")] * 2
    c.clock = at("2026-12-02 10:00")  # a Wednesday that is a holiday: armed all day
    c.event("motion", "cam1", zone="hall", active=True)
    assert len(c.sent) == 4
    c.clock = at("2026-12-05 10:00")  # a Saturday
    c.event("motion", "cam1", zone="hall", active=True)
    assert len(c.sent) == 6


def test_device_offline_after_its_delay_and_back() -> None:
    c = Campus([{"id": "offline", "type": "offline", "on_delay_s": 600, "severity": "warning"}])
    c.state("offline")
    c.advance(300)
    c.state("online")  # back within the delay: nothing
    c.advance(600)
    assert c.sent == []
    c.state("offline")
    c.advance(599)
    assert c.sent == []
    c.advance(1)
    assert [(a["rule"], a["state"]) for a in c.sent] == [("offline", "active_unacked")]
    c.state("offline")  # still offline: no second alarm
    c.advance(600)
    assert len(c.sent) == 1
    c.state("online")
    assert c.states() == ["active_unacked", "cleared_unacked"]


def _default_engine() -> Campus:
    c = Campus([])
    ruleset, config_problems, file_problems = load_rules(RulesConfig(), Path())
    assert (config_problems, file_problems) == ([], [])
    c.engine = RuleEngine(ruleset, SHANGHAI, c.book, now=lambda: c.clock)
    return c


def test_default_event_rules_severities() -> None:
    c = _default_engine()
    c.event("door_forced", "gate", door="north")
    c.event("digital_input", "panel", input="fire", active=True, severity="critical")
    c.event("door_held_open", "side", door="side", open_s=120)
    c.event("digital_input", "gate", input="exit_button", active=True)  # no alarm
    got = [(a["rule"], a["device"], a["severity"], a["state"]) for a in c.sent]
    assert got == [
        ("door_forced", "gate", "critical", "active_unacked"),
        ("door_forced", "gate", "critical", "cleared_unacked"),  # one-off: visible until ack
        ("fire_input", "panel", "critical", "active_unacked"),
        ("door_held_open", "side", "major", "active_unacked"),
    ]
    c.event("door_closed", "side")
    c.event("digital_input", "panel", input="fire", active=False)
    assert [(a["rule"], a["state"]) for a in c.sent[4:]] == [
        ("door_held_open", "cleared_unacked"),
        ("fire_input", "cleared_unacked"),
    ]


def test_a_camera_tamper_raises_once_and_its_end_raises_nothing() -> None:
    c = _default_engine()
    c.event("camera_tamper", "yard-cam", reason="covered", active=True)
    c.event("camera_tamper", "yard-cam", reason="covered", active=False)  # the hand is gone
    c.event("camera_tamper", "gate-cam", reason="moved")  # a source that sends starts only
    got = [(a["rule"], a["device"], a["state"]) for a in c.sent]
    assert got == [
        ("camera_tamper", "yard-cam", "active_unacked"),
        ("camera_tamper", "yard-cam", "cleared_unacked"),
        ("camera_tamper", "gate-cam", "active_unacked"),
        ("camera_tamper", "gate-cam", "cleared_unacked"),
    ]


def test_chattering_becomes_one_alarm_not_a_flood() -> None:
    c = Campus([CO2])
    for _ in range(10):  # a sensor flapping around the limit every 5 s
        c.read(1600)
        c.advance(5)
        c.read(1300)
        c.advance(5)
    rules = [a["rule"] for a in c.sent if a["state"] == "active_unacked"]
    assert rules == ["co2", "co2", CHATTER_RULE]
    assert c.book.find(CHATTER_RULE, "r101-air").value == "co2"
    c.read(1600)  # calm for a minute with the condition holding: its own alarm again
    c.advance(61)
    assert c.book.find(CHATTER_RULE, "r101-air") is None
    assert c.book.find("co2", "r101-air") is not None


def test_default_set_metrics_exist_in_the_shipped_profiles() -> None:
    ruleset, _, _ = load_rules(RulesConfig(), Path())
    profiles = Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "profiles"
    metrics = {
        p.name
        for f in profiles.glob("*.yaml")
        for p in load_profile(f.stem, [str(profiles)]).points
    }
    used = {r.metric for r in ruleset.rules if r.metric is not None}
    assert used
    assert used <= metrics
    for rule in ruleset.rules:
        if rule.category == "environment":
            assert "GB/T" in (rule.source or ""), rule.id
            assert rule.message is not None
            assert "indicative" in rule.message.en
            assert "仅供参考" in rule.message.zh


BASE = """\
site: {id: s, gateway_id: gw1, timezone: Asia/Shanghai}
mqtt: {host: 127.0.0.1}
"""


def test_check_config_reports_rule_file_problems_at_their_lines(tmp_path: Path) -> None:
    (tmp_path / "site-rules.yaml").write_text(
        "rules:\n"
        "  - id: ok\n"
        "    metric: co2\n"
        "    above: 1000\n"
        "  - id: bad\n"
        "    metric: co2\n"
        "    abve: 1000\n"
        "  - id: nolimit\n"
        "    metric: co2\n"
        "  - id: sched\n"
        "    type: event\n"
        "    event: motion\n"
        "    only_in: lesons\n",
        encoding="utf-8",
    )
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        BASE + "rules:\n  files: [site-rules.yaml, missing.yaml]\n  disable: [co2_hgh]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg, build_drivers=False)
    text = "\n".join(err.value.problems)
    assert f"{cfg}:4  rules.files[1]  no rule file" in text
    rules_file = tmp_path / "site-rules.yaml"
    assert f"{rules_file}:7  rules[1].abve  unknown key" in text
    assert f"{rules_file}:8  rules[2]  give above or below" in text
    # one pass: the valid rules of a file with broken ones are checked too
    assert f"{rules_file}:13  rules[3].only_in  unknown schedule 'lesons'" in text


def test_unknown_schedule_and_unknown_disable(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        yaml.safe_dump(
            {"rules": [{"id": "m", "type": "event", "event": "motion", "only_in": "lesons"}]}
        ),
        encoding="utf-8",
    )
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(BASE + "rules:\n  files: [r.yaml]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, build_drivers=False)
    assert "unknown schedule 'lesons'" in "\n".join(err.value.problems)
    cfg.write_text(BASE + "rules:\n  disable: [co2_hgh]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, build_drivers=False)
    assert err.value.problems == [
        f"{cfg}:4  rules.disable[0]  no rule 'co2_hgh' to disable / 没有该规则"
    ]


@pytest.mark.parametrize(
    "rule_id", ["chattering", "patrol_missed", "outbox_corrupt", "alarm_flood_x"]
)
def test_a_rule_cannot_take_the_id_of_the_agents_own_alarms(rule_id: str) -> None:
    with pytest.raises(ValueError, match="the agent's own alarm"):
        RuleFile.model_validate({"rules": [{"id": rule_id, "metric": "co2", "above": 1}]})


def test_site_config_disables_rules_and_replaces_schedules(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        BASE + "rules:\n"
        "  disable: [co2_daily_mean]\n"
        "  holidays: [2026-10-01]\n"
        "  schedules:\n"
        "    lessons: {times: ['08:30-11:30']}\n",
        encoding="utf-8",
    )
    loaded = load_config(cfg, build_drivers=False)
    ruleset, _, _ = load_rules(loaded.rules, tmp_path)
    ids = {r.id for r in ruleset.rules}
    assert "co2_daily_mean" not in ids
    assert "co2_school_day" in ids
    assert ruleset.schedules["lessons"].times == ["08:30-11:30"]
    assert all(any(str(d) == "2026-10-01" for d in s.holidays) for s in ruleset.schedules.values())


def test_flood_folds_environment_alarms_and_never_delays_a_security_one() -> None:
    door = {"id": "door_forced", "type": "event", "event": "door_forced"}
    c = Campus([CO2, {**door, "severity": "critical", "category": "security"}])
    for i in range(25):  # the ventilation of a whole building fails at once
        c.read(2000, device=f"r{i:03d}-air")
        if i == 15:
            c.event("door_forced", "gate")
    raised = [(a["rule"], a["device"]) for a in c.sent if a["state"] == "active_unacked"]
    assert raised[:FLOOD_N] == [("co2", f"r{i:03d}-air") for i in range(FLOOD_N)]
    assert raised[FLOOD_N:] == [("alarm_flood_environment", "gateway"), ("door_forced", "gate")]
    before = len(c.sent)
    for i in range(2 * FLOOD_N):  # a security storm is never folded
        c.event("door_forced", f"door{i}")
    forced = [a for a in c.sent[before:] if a["state"] == "active_unacked"]
    assert [a["device"] for a in forced] == [f"door{i}" for i in range(2 * FLOOD_N)]
    c.sent = c.sent[:before]
    c.read(1000, device="r020-air")  # one room recovers while folded: never raised
    c.advance(FLOOD_S + 1)  # calm: the summary clears, what still holds comes one by one
    assert c.book.find("alarm_flood_environment", "gateway") is None
    later = [a["device"] for a in c.sent[len(raised) + 2 :] if a["state"] == "active_unacked"]
    assert later == [f"r{i:03d}-air" for i in range(FLOOD_N, 25) if i != 20]
