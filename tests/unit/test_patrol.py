"""Guard patrol (电子巡更): rounds, deadlines and ``patrol_missed`` alarms, with an injected
clock (no sleeps), the real alarm book and a saved state that survives a restart."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_agent.alarms.lifecycle import AlarmBook, OutboxAlarmStore
from edge_agent.config.loader import load_config
from edge_agent.config.patrol import PatrolConfig
from edge_agent.envelope import Lane
from edge_agent.errors import ConfigError
from edge_agent.pipeline.base import Message
from edge_agent.pipeline.patrol import PATROL_STATE, Patrol

SHANGHAI = ZoneInfo("Asia/Shanghai")
ROOT = "campus/s/gw1"


def at(text: str) -> float:
    """'2026-11-30 22:05' on the school's wall clock (Asia/Shanghai) -> UNIX seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI).timestamp()


class Db:
    """The outbox's device_state as the patrol and the alarm book use it."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], str] = {}

    def put_state(self, device: str, key: str, value: str) -> None:
        self.state[(device, key)] = value


class Campus:
    """A patrol, its alarm book and what they sent, on a clock the test moves."""

    def __init__(
        self,
        cfg: dict[str, Any],
        db: Db | None = None,
        language: str = "en",
        when: str | None = None,
        synced: bool = True,
    ) -> None:
        self.cfg = PatrolConfig.model_validate(cfg)
        self.db = db or Db()
        self.language = language
        self.alarms_sent: list[dict[str, Any]] = []
        self.retained: dict[str, dict[str, Any] | None] = {}
        self.clock = 0.0 if when is None else at(when)
        self.synced = synced
        self.start()

    def start(self) -> None:
        """A (re)start: a new alarm book and patrol from the saved state."""
        self.book = AlarmBook(
            ROOT, self._put, self._retain, self.language, store=OutboxAlarmStore(self.db)
        )
        self.book.load()
        self.patrol = Patrol(
            self.cfg,
            SHANGHAI,
            self.book,
            self.db,
            now=lambda: self.clock,
            synced=lambda: self.synced,
        )
        self.patrol.load()

    def _put(self, lane: Lane, topic: str, **kw: Any) -> None:
        assert lane is Lane.ALARM
        assert topic == f"{ROOT}/alarms"
        self.alarms_sent.append(kw["data"])

    def _retain(self, topic: str, payload: dict[str, Any] | None) -> None:
        self.retained[topic] = payload

    def go(self, when: str) -> None:
        self.clock = at(when)
        self.patrol.tick()

    def swipe(self, device: str, when: str, result: str = "denied", reader: Any = 1) -> None:
        self.clock = max(self.clock, at(when))
        data = {"card": "h:00112233aabbccdd", "reader": reader, "result": result}
        self.patrol.see(Message("event", device, data, at(when), type="card_read"))
        self.patrol.tick()

    def raised(self) -> list[dict[str, Any]]:
        return [a for a in self.alarms_sent if a["state"] == "active_unacked"]


CHECKPOINTS = [
    {"id": "north", "device": "gate-n", "name": "北门"},
    {"id": "lab", "device": "b2-lab", "name": "Lab"},
    {"id": "dorm", "device": "dorm-1", "name": "Dorm"},
]


def route(**kw: Any) -> dict[str, Any]:
    base = {
        "id": "night",
        "name": "Night round",
        "checkpoints": ["north", "lab", "dorm"],
        "start_times": ["22:00"],
        "round_min": 30,
        "tolerance_min": 5,
    }
    base.update(kw)
    return {"checkpoints": [dict(c) for c in CHECKPOINTS], "routes": [base]}


def started(cfg: dict[str, Any], when: str = "2026-11-30 21:00", **kw: Any) -> Campus:
    campus = Campus(cfg, when=when, **kw)  # the agent runs from before the round
    campus.go(when)
    return campus


def test_a_complete_round_raises_nothing() -> None:
    c = started(route())
    c.swipe("gate-n", "2026-11-30 22:03")
    c.swipe("b2-lab", "2026-11-30 22:14", result="granted")
    c.swipe("dorm-1", "2026-11-30 22:33")  # after the round, within the tolerance
    c.go("2026-11-30 22:36")
    c.go("2026-12-01 09:00")
    assert c.alarms_sent == []


def test_a_missed_checkpoint_raises_one_alarm_with_rule_device_severity_message() -> None:
    c = started(route(severity="critical"))
    c.swipe("gate-n", "2026-11-30 22:03")
    c.swipe("dorm-1", "2026-11-30 22:20")
    c.go("2026-11-30 22:34")  # before the deadline (22:30 + 5 min)
    assert c.alarms_sent == []
    c.go("2026-11-30 22:35")
    c.go("2026-11-30 22:50")
    c.go("2026-11-30 23:59")
    [alarm] = c.alarms_sent
    assert alarm["rule"] == "patrol_missed"
    assert alarm["device"] == "b2-lab"
    assert alarm["severity"] == "critical"
    assert alarm["value"] == "lab"
    assert alarm["threshold"] == "2026-11-30T14:35:00.000Z"
    assert alarm["state"] == "active_unacked"
    assert alarm["message"] == (
        "Guard patrol: checkpoint Lab of route Night round was not visited by 22:35 "
        "(round of 22:00)."
    )
    assert c.retained[f"{ROOT}/alarms/active/{alarm['alarm_id']}"]["state"] == "active_unacked"
    assert c.book.audit(limit=1)[0]["origin"] == "patrol"  # the audit says who raised it


def test_the_message_is_in_chinese_for_a_chinese_site_and_severity_defaults_to_major() -> None:
    c = started(route(), language="zh")
    c.swipe("b2-lab", "2026-11-30 22:10")
    c.swipe("dorm-1", "2026-11-30 22:20")
    c.go("2026-11-30 22:40")
    [alarm] = c.raised()
    assert alarm["severity"] == "major"
    assert (
        alarm["message"]
        == "巡更漏检：路线「Night round」22:00 这一轮未在 22:35 前到达巡更点「北门」。"
    )


def test_nothing_visited_raises_one_alarm_per_checkpoint_once_per_round() -> None:
    c = started(route())
    for minute in range(30, 60):
        c.go(f"2026-11-30 22:{minute:02d}")
    assert sorted(a["device"] for a in c.raised()) == ["b2-lab", "dorm-1", "gate-n"]
    assert len(c.alarms_sent) == 3


def test_the_next_complete_round_clears_and_the_alarm_stays_until_acknowledged() -> None:
    c = started(route(start_times=["22:00", "02:00"]))
    c.swipe("gate-n", "2026-11-30 22:03")
    c.swipe("dorm-1", "2026-11-30 22:20")
    c.go("2026-11-30 22:40")
    [alarm] = c.raised()
    topic = f"{ROOT}/alarms/active/{alarm['alarm_id']}"
    c.swipe("gate-n", "2026-12-01 02:01")
    c.swipe("b2-lab", "2026-12-01 02:10")
    assert c.retained[topic]["state"] == "active_unacked"  # round not complete yet
    c.swipe("dorm-1", "2026-12-01 02:20")
    assert c.alarms_sent[-1]["state"] == "cleared_unacked"
    assert c.retained[topic]["state"] == "cleared_unacked"  # visible until acknowledged
    c.book.ack(alarm["alarm_id"], "guard-2")
    assert c.retained[topic] is None


def test_a_read_at_another_device_or_reader_is_no_visit() -> None:
    cfg = route()
    cfg["checkpoints"][1] = {"id": "lab", "device": "b2-lab", "reader": 2, "name": "Lab"}
    c = started(cfg)
    c.swipe("gate-n", "2026-11-30 22:03")
    c.swipe("b2-lab", "2026-11-30 22:05", reader=1)  # the controller's other door
    c.swipe("b2-lab-other", "2026-11-30 22:06")
    c.swipe("dorm-1", "2026-11-30 22:20")
    c.go("2026-11-30 22:40")
    assert [a["device"] for a in c.raised()] == ["b2-lab"]
    c2 = started(cfg)
    c2.swipe("gate-n", "2026-11-30 22:03")
    c2.swipe("b2-lab", "2026-11-30 22:05", reader=2)
    c2.swipe("dorm-1", "2026-11-30 22:20")
    c2.go("2026-11-30 22:40")
    assert c2.alarms_sent == []


def test_a_read_outside_the_round_is_no_visit() -> None:
    c = started(route())
    c.swipe("gate-n", "2026-11-30 21:50")  # before the round and its tolerance
    c.swipe("b2-lab", "2026-11-30 22:10")
    c.swipe("dorm-1", "2026-11-30 22:20")
    c.go("2026-11-30 22:40")
    assert [a["device"] for a in c.raised()] == ["gate-n"]


def test_out_of_order_counts_as_missed_when_the_order_matters() -> None:
    for ordered, expected in ((True, ["b2-lab"]), (False, [])):
        c = started(route(ordered=ordered))
        c.swipe("gate-n", "2026-11-30 22:03")
        c.swipe("dorm-1", "2026-11-30 22:10")
        c.swipe("b2-lab", "2026-11-30 22:20")  # lab comes before dorm on the route
        c.go("2026-11-30 22:40")
        assert [a["device"] for a in c.raised()] == expected, ordered


def test_per_checkpoint_tolerance() -> None:
    cfg = route(checkpoints=["north", "lab", {"checkpoint": "dorm", "tolerance_min": 20}])
    c = started(cfg)
    c.swipe("gate-n", "2026-11-30 22:03")
    c.swipe("b2-lab", "2026-11-30 22:10")
    c.go("2026-11-30 22:45")
    assert c.alarms_sent == []  # dorm is due at 22:50
    c.swipe("dorm-1", "2026-11-30 22:48")
    c.go("2026-11-30 23:30")
    assert c.alarms_sent == []
    c2 = started(cfg)
    c2.swipe("gate-n", "2026-11-30 22:03")
    c2.swipe("b2-lab", "2026-11-30 22:10")
    c2.go("2026-11-30 22:51")
    [alarm] = c2.raised()
    assert alarm["device"] == "dorm-1"
    assert alarm["threshold"] == "2026-11-30T14:50:00.000Z"


def test_a_restart_mid_round_keeps_the_visits_no_false_alarm() -> None:
    c = started(route())
    c.swipe("gate-n", "2026-11-30 22:03")
    c.swipe("b2-lab", "2026-11-30 22:10")
    assert PATROL_STATE in c.db.state
    c.clock = at("2026-11-30 22:15")
    c.start()  # the agent restarts with the same outbox database
    c.swipe("dorm-1", "2026-11-30 22:25")
    for minute in range(30, 60):
        c.go(f"2026-11-30 22:{minute:02d}")
    assert c.alarms_sent == []


def test_a_deadline_passed_while_down_is_checked_after_the_catch_up() -> None:
    c = started(route())
    c.swipe("gate-n", "2026-11-30 22:03")
    c.clock = at("2026-11-30 22:50")  # down from 22:03 to 22:50, past the 22:35 deadline
    c.start()
    c.go("2026-11-30 22:50")
    assert c.alarms_sent == []  # the drivers catch up first (two minutes)
    # a read the controller kept while the agent was down, caught up by its driver
    c.swipe("b2-lab", "2026-11-30 22:20")
    c.go("2026-11-30 22:52")
    assert [a["device"] for a in c.raised()] == ["dorm-1"]  # not forgotten, not doubled
    c.start()
    c.go("2026-11-30 23:30")
    assert len(c.alarms_sent) == 1


def test_an_alarm_raised_before_a_restart_is_not_raised_again() -> None:
    c = started(route())
    c.go("2026-11-30 22:40")
    assert len(c.alarms_sent) == 3
    for a in c.raised():
        c.book.ack(a["alarm_id"], "guard")
    c.clock = at("2026-11-30 22:41")
    c.start()
    c.go("2026-11-30 22:45")
    c.go("2026-11-30 23:45")
    assert [a["state"] for a in c.alarms_sent[3:]] == ["active_acked"] * 3


def test_the_first_start_judges_no_round_before_it() -> None:
    c = Campus(route(), when="2026-11-30 22:50")  # started after the round
    c.go("2026-11-30 22:50")
    c.go("2026-11-30 23:59")
    assert c.alarms_sent == []
    c.go("2026-12-01 22:40")  # the next night's round is judged
    assert len(c.raised()) == 3


def test_a_route_across_midnight_in_shanghai_time() -> None:
    # 23:30 for 60 minutes: the deadline is 00:35 the next day, on the school's wall clock
    c = started(route(start_times=["23:30"], round_min=60))
    c.swipe("gate-n", "2026-11-30 23:40")
    c.swipe("b2-lab", "2026-12-01 00:10")
    c.go("2026-12-01 00:34")
    assert c.alarms_sent == []
    c.go("2026-12-01 00:35")
    [alarm] = c.raised()
    assert alarm["device"] == "dorm-1"
    # Asia/Shanghai is UTC+8 all year (no DST): 00:35 local is 16:35 UTC the day before
    assert alarm["threshold"] == "2026-11-30T16:35:00.000Z"


def test_rounds_every_hour_in_a_window_across_midnight() -> None:
    cfg = route(
        start_times=[],
        round_min=None,
        every_min=120,
        window_start="22:00",
        window_end="04:00",
        tolerance_min=0,
        checkpoints=["north"],
    )
    c = started(cfg)
    c.swipe("gate-n", "2026-11-30 22:30")  # round 22:00
    c.swipe("gate-n", "2026-12-01 00:30")  # round 00:00
    # round 02:00 missed; no round at 04:00 (the window ends)
    for hour in range(1, 12):
        c.go(f"2026-12-01 {hour:02d}:00")
    [alarm] = c.raised()
    assert alarm["threshold"] == "2026-11-30T20:00:00.000Z"  # 04:00 local
    assert "round of 02:00" in alarm["message"]


def test_a_tick_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    c = started(route())

    def broken(*a: Any, **kw: Any) -> None:
        raise RuntimeError("alarm book bug")

    c.book.raise_ = broken  # type: ignore[method-assign]
    c.go("2026-11-30 22:40")
    c.go("2026-11-30 22:41")
    # logged once (then counted), and tried again at the next tick
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    assert c.patrol.failures.count("patrol") == 2


# -- check-config -------------------------------------------------------------------
BASE = """\
site: {id: s, gateway_id: gw1, timezone: Asia/Shanghai}
devices:
  - {id: gate-n, kind: modbus, profile: air7in1, bus: b1, unit: 1}
buses:
  - {id: b1, type: tcp, host: 127.0.0.1, port: 5020}
patrol:
  checkpoints:
    - {id: north, device: gate-n}
    - {id: lab, device: b2-lab}
  routes:
    - id: night
      checkpoints: [north, attic, {checkpoint: north}]
      start_times: ["22:00", "25:10"]
      round_min: 30
    - id: day
      checkpoints: [north]
      every_min: 60
      round_min: 30
"""


def test_check_config_names_a_missing_device_an_unknown_checkpoint_and_bad_times(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError) as err:
        load_config(path, build_drivers=False)
    lines = [line.split("  ", 2) for line in err.value.problems]
    where = {(loc, key): msg for loc, key, msg in lines}
    file = str(path)
    assert "no device 'b2-lab'" in where[(f"{file}:9", "patrol.checkpoints[1].device")]
    assert "unknown checkpoint 'attic'" in where[(f"{file}:12", "patrol.routes[0].checkpoints[1]")]
    assert "twice" in where[(f"{file}:12", "patrol.routes[0].checkpoints[2].checkpoint")]
    assert "'25:10'" in where[(f"{file}:13", "patrol.routes[0].start_times")]
    assert "window_start" in where[(f"{file}:15", "patrol.routes[1]")]


def test_check_config_accepts_a_patrol(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    text = BASE.replace("device: b2-lab", "device: gate-n")
    text = text.replace("attic, {checkpoint: north}", "lab").replace('"25:10"', '"02:10"')
    window = 'every_min: 60\n      window_start: "20:00"\n      window_end: "06:00"\n'
    path.write_text(text.replace("every_min: 60\n", window))
    cfg = load_config(path, build_drivers=False)
    assert [r.id for r in cfg.patrol.routes] == ["night", "day"]
    assert cfg.patrol.routes[1].start_offsets_min()[-1] == 29 * 60  # 05:00 the next day


def test_a_late_visit_does_not_complete_the_round() -> None:
    cfg = route(checkpoints=["north", "lab", {"checkpoint": "dorm", "tolerance_min": 20}])
    c = started(cfg)
    c.swipe("b2-lab", "2026-11-30 22:10")
    c.go("2026-11-30 22:36")
    [alarm] = c.raised()
    assert alarm["device"] == "gate-n"
    c.swipe("gate-n", "2026-11-30 22:40")  # after its deadline (22:35)
    c.swipe("dorm-1", "2026-11-30 22:45")  # in time (22:50)
    c.go("2026-11-30 23:30")
    assert [a["state"] for a in c.alarms_sent] == ["active_unacked"]  # not cleared


def test_a_read_caught_up_after_its_round_was_judged_changes_nothing() -> None:
    c = started(route(checkpoints=["lab"]))
    c.go("2026-11-30 22:36")
    assert len(c.raised()) == 1
    c.swipe("b2-lab", "2026-11-30 22:10")  # arrives at 22:36, after the judgement
    c.go("2026-11-30 23:30")
    assert [a["state"] for a in c.alarms_sent] == ["active_unacked"]


# -- guards' cards ------------------------------------------------------------------
GUARD = "h:00112233aabbccdd"  # what Campus.swipe sends


def test_with_guards_cards_only_their_reads_are_visits() -> None:
    cfg = route()
    cfg["cards"] = [GUARD]
    c = started(cfg)
    c.swipe("gate-n", "2026-11-30 22:03")
    c.swipe("b2-lab", "2026-11-30 22:10")
    c.clock = at("2026-11-30 22:12")  # a student's card at the dorm reader: no visit
    data = {"card": "h:ffffffffffffffff", "reader": 1, "result": "granted"}
    c.patrol.see(Message("event", "dorm-1", data, at("2026-11-30 22:12"), type="card_read"))
    c.go("2026-11-30 22:40")
    assert [a["device"] for a in c.raised()] == ["dorm-1"]


def pseudonym_of(secret: str, number: str) -> str:
    """Written from the contract (HMAC-SHA256, 'h:' + 16 hex), not from the agent's code."""
    import hashlib
    import hmac

    return "h:" + hmac.new(secret.encode(), number.encode(), hashlib.sha256).hexdigest()[:16]


def test_edge_agent_pseudonym_prints_what_card_read_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.cli import main

    monkeypatch.setenv("SITE_SECRET", "k1")
    path = tmp_path / "agent.yaml"
    path.write_text("site: {id: s, gateway_id: gw1, pseudonym_secret: '${SITE_SECRET}'}\n")
    assert main(["pseudonym", "-c", str(path), "093,59562", "0006154410", "nope"]) == 1
    out = capsys.readouterr()
    expected = pseudonym_of("k1", "6154410")
    assert out.out.splitlines() == [
        f"093,59562  6154410  {expected}",  # facility 93, card 59562 (Wiegand 26)
        f"0006154410  6154410  {expected}",
    ]
    assert "nope" in out.err
    path.write_text("site: {id: s, gateway_id: gw1}\n")
    assert main(["pseudonym", "-c", str(path), "1"]) == 1
    assert "pseudonym_secret" in capsys.readouterr().err


def test_check_config_refuses_guards_cards_that_can_never_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent.yaml"
    text = BASE.replace("device: b2-lab", "device: gate-n")
    text = text.replace("attic, {checkpoint: north}", "lab").replace('"25:10"', '"02:10"')
    window = 'every_min: 60\n      window_start: "20:00"\n      window_end: "06:00"\n'
    text = text.replace("every_min: 60\n", window)
    path.write_text(text + "  cards: [h:00112233aabbccdd]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, build_drivers=False)
    assert err.value.problems == [
        f"{path}:21  patrol.cards  no card can match: without site.pseudonym_secret "
        "(or raw_card_ids) card_read events carry no card / 未设置 site.pseudonym_secret，"
        "刷卡事件不含卡号，无法匹配"
    ]
    monkeypatch.setenv("SITE_SECRET", "k1")
    text = text.replace(
        "timezone: Asia/Shanghai}", "timezone: Asia/Shanghai, pseudonym_secret: '${SITE_SECRET}'}"
    )
    path.write_text(text + "  cards: [h:00112233aabbccdd, '6154410']\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, build_drivers=False)
    [problem] = err.value.problems
    assert problem.startswith(f"{path}:21  patrol.cards[1]  '6154410' is not a pseudonym")
    path.write_text(text + "  cards: [h:00112233aabbccdd]\n")
    assert load_config(path, build_drivers=False).patrol.cards == ["h:00112233aabbccdd"]


def test_a_read_before_the_clock_is_synchronised_does_not_start_the_checks_in_the_past() -> None:
    c = Campus(route(), synced=False)  # a Pi without RTC boots in 1970
    c.go("1970-01-01 08:00")
    # the clock gate released a held read (after hold_max_s, with its device's time)
    data = {"card": GUARD, "reader": 1, "result": "denied"}
    c.patrol.see(Message("event", "gate-n", data, at("2026-11-30 20:55"), type="card_read"))
    c.synced = True
    c.go("2026-11-30 21:00")  # synchronised: the first check starts now, not in 1970
    c.go("2026-11-30 21:30")
    assert c.alarms_sent == []


def test_after_a_restart_on_an_unsynchronised_clock_the_catch_up_waits_for_the_real_time() -> None:
    c = started(route())
    c.swipe("gate-n", "2026-11-30 22:03")
    c.clock = 0.0  # restarted without RTC: 1970 until NTP answers
    c.synced = False
    c.start()
    c.go("1970-01-01 08:10")
    c.synced = True
    c.go("2026-11-30 22:50")  # synchronised, past the deadline: the drivers catch up first
    c.swipe("b2-lab", "2026-11-30 22:20")
    c.swipe("dorm-1", "2026-11-30 22:21")
    c.go("2026-11-30 22:53")
    assert c.alarms_sent == []


def test_the_first_start_counts_from_the_agent_start_not_the_first_check() -> None:
    c = Campus(route(), when="2026-11-30 22:30")
    data = {"card": GUARD, "reader": 1, "result": "denied"}
    c.patrol.see(Message("event", "gate-n", data, at("2026-11-30 22:31"), type="card_read"))
    c.go("2026-11-30 22:40")  # the first check comes after the deadline: still judged
    assert sorted(a["device"] for a in c.raised()) == ["b2-lab", "dorm-1"]
