"""Alarm rules over what the devices report (issue 10, part 1): rule files and the
``rules:`` section of the config.

Rule files are YAML with ``schedules:`` and ``rules:``. The default set ships inside the
package (``edge_agent/alarms/rulesets/default.yaml``, found with importlib.resources);
a site adds its own files with ``rules.files`` (relative to the config file), turns
rules off with ``rules.disable`` and overrides a schedule or adds holidays in the config.
A problem in a rule file is reported at that file's own line, as a Modbus profile's
(:class:`RuleFileProblems`). The runtime is :mod:`edge_agent.alarms.rules`.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from edge_agent.config import yamlsrc
from edge_agent.config.models import Id, Strict
from edge_agent.config.patrol import parse_hhmm

Path_ = tuple[str | int, ...]
Severity = Literal["critical", "major", "minor", "warning"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
#: rolling means: window in seconds
MEANS: dict[str, float] = {"1h": 3600.0, "8h": 8 * 3600.0, "24h": 24 * 3600.0}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_SET = "default.yaml"
#: alarm rules the agent raises itself: a rule of that id would share their alarms
RESERVED = ("chattering", "patrol_missed", "outbox_", "alarm_flood_")


def parse_span(text: str) -> tuple[int, int]:
    """``"08:00-12:00"`` -> minutes after midnight (an end before the start: next day)."""
    start, sep, end = str(text).partition("-")
    if not sep:
        raise ValueError(
            f"{text!r}: write a time span as HH:MM-HH:MM, e.g. 08:00-12:00 "
            "/ 时间段请写成 HH:MM-HH:MM"
        )
    return parse_hhmm(start), parse_hhmm(end)


class Schedule(Strict):
    """When a schedule is "in": on its days, within its times, except on holidays."""

    days: list[Day] = Field(
        default_factory=lambda: list[Day](["mon", "tue", "wed", "thu", "fri"]),
        description="Days of the week it applies to / 适用的星期",
    )
    times: list[str] = Field(
        min_length=1,
        description="Time spans HH:MM-HH:MM in site.timezone, e.g. [08:00-12:00, 14:00-17:30]; "
        "a span whose end is before its start crosses midnight / 时间段",
    )
    holidays: list[dt.date] = Field(
        default_factory=list,
        description="Dates (YYYY-MM-DD) on which the schedule is out all day / 节假日",
    )

    @field_validator("times")
    @classmethod
    def check_times(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_span(text)
        return value


class Message_(Strict):
    """An alarm's text; ``{device}``, ``{metric}``, ``{value}``, ``{threshold}`` are filled in."""

    en: str = Field(description="English text")
    zh: str = Field(description="Chinese text / 中文")


class Rule(Strict):
    """One alarm rule. ``type`` says what it watches:

    - ``threshold``: a metric ``above`` / ``below`` a value (optionally its ``mean``),
      with ``deadband`` and ``on_delay_s`` / ``off_delay_s``;
    - ``rate``: a metric changing faster than ``above`` per minute (over ``window_s``);
    - ``offline``: a device ``offline`` for ``on_delay_s``;
    - ``event``: an event ``event`` whose data matches ``match``."""

    id: Id = Field(description="Rule id: the alarm's 'rule', e.g. 'co2_school_day'")
    type: Literal["threshold", "rate", "offline", "event"] = Field(
        default="threshold", description="What the rule watches"
    )
    severity: Severity = Field(default="minor", description="Severity of its alarms")
    category: Literal["environment", "security", "device"] = Field(
        default="environment",
        description="environment alarms may be folded into summaries in a flood; "
        "security alarms never wait",
    )
    devices: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Device ids it applies to (shell patterns, e.g. 'b1-*-air')",
    )
    metric: str | None = Field(default=None, description="threshold, rate: the metric name")
    mean: Literal["1h", "8h", "24h", "school_day"] | None = Field(
        default=None,
        description="threshold: compare the rolling mean over this window, not each reading",
    )
    above: float | None = Field(default=None, description="Alarm when the value is above this")
    below: float | None = Field(default=None, description="Alarm when the value is below this")
    deadband: float = Field(
        default=0, ge=0, description="Clears only this far back inside the limit"
    )
    on_delay_s: float = Field(
        default=0, ge=0, le=86400, description="The condition must hold this long to raise"
    )
    off_delay_s: float = Field(
        default=0, ge=0, le=86400, description="The clear condition must hold this long to clear"
    )
    window_s: float = Field(
        default=300, gt=0, le=86400, description="rate: the change is measured over this window"
    )
    event: str | None = Field(default=None, description="event: the event type, e.g. door_forced")
    match: dict[str, Any] = Field(
        default_factory=dict,
        description="event: fields the event's data must have, e.g. {input: fire, active: true}",
    )
    clear_event: str | None = Field(
        default=None,
        description="event: the event type that clears it (door_closed); unset: the alarm "
        "clears at once and stays visible until acknowledged",
    )
    clear_match: dict[str, Any] = Field(
        default_factory=dict, description="event: fields of the clearing event's data"
    )
    only_in: str | None = Field(
        default=None, description="Armed only while this schedule is in (lesson hours)"
    )
    only_outside: str | None = Field(
        default=None, description="Armed only while this schedule is out (after hours)"
    )
    schedule: str = Field(
        default="school_day", description="mean: school_day: the schedule of the school day"
    )
    suppress: str | None = Field(
        default=None,
        description="While this schedule is in (a maintenance window, holidays) the rule's "
        "alarms are not annunciated; still true after it, they come back / 按作息表抑制",
    )
    source: str | None = Field(
        default=None, description="The clause the limit comes from, e.g. 'GB/T 18883-2022 表1'"
    )
    message: Message_ | None = Field(default=None, description="Alarm text (en and zh)")
    snapshot: Id | None = Field(
        default=None,
        description="Camera id: the raised alarm carries a picture of it (topic and sha256; "
        "it waits at most snapshots.alarm_wait_s for it, docs/cameras.md) / 告警附带该摄像机抓图",
    )

    @field_validator("id")
    @classmethod
    def check_id(cls, value: str) -> str:
        if any(value == r or (r.endswith("_") and value.startswith(r)) for r in RESERVED):
            raise ValueError(
                f"{value!r} is the agent's own alarm; choose another id / 该编号为系统保留告警"
            )
        return value

    @model_validator(mode="after")
    def check_kind(self) -> Rule:
        if self.type in ("threshold", "rate"):
            if self.metric is None:
                raise ValueError(f"a {self.type} rule needs metric / 请设置 metric")
            if self.above is None and self.below is None:
                raise ValueError("give above or below / 请设置 above 或 below")
            if self.type == "rate" and self.mean is not None:
                raise ValueError("a rate rule has no mean / 变化率规则不能设置 mean")
        if self.type == "event" and self.event is None:
            raise ValueError("an event rule needs event / 请设置 event")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError("below must be less than above / below 应小于 above")
        if self.only_in is not None and self.only_outside is not None:
            raise ValueError("give only_in or only_outside, not both / 二者只能选一")
        return self

    def schedules_used(self) -> list[tuple[str, str]]:
        """(field, schedule name) pairs this rule refers to."""
        out = [(k, v) for k in ("only_in", "only_outside", "suppress") if (v := getattr(self, k))]
        if self.mean == "school_day":
            out.append(("schedule", self.schedule))
        return out


class RuleFile(Strict):
    """A rule file: schedules and rules."""

    schedules: dict[Id, Schedule] = Field(default_factory=dict, description="Named schedules")
    rules: list[Rule] = Field(default_factory=list, description="The rules")


class RulesConfig(Strict):
    """The ``rules:`` section: which rule files run, and the site's schedules."""

    default: bool = Field(default=True, description="Run the shipped default rule set")
    files: list[str] = Field(
        default_factory=list,
        description="Site rule files (relative to this config file) / 本校告警规则文件",
    )
    disable: list[str] = Field(
        default_factory=list, description="Rule ids not to run / 停用的规则编号"
    )
    schedules: dict[Id, Schedule] = Field(
        default_factory=dict,
        description="Schedules that replace those of the rule files of the same name "
        "(school_day, lessons ...) / 作息时间",
    )
    holidays: list[dt.date] = Field(
        default_factory=list,
        description="Dates (YYYY-MM-DD) on which every schedule is out / 节假日（所有作息表）",
    )
    out_of_service: list[str] = Field(
        default_factory=list,
        description="Rules out of service: 'rule' or 'rule@device' (the device may be a "
        "shell pattern, 'co2_high@b1-*'); they raise nothing and their open alarms leave "
        "view until taken out of this list / 停用（退出服务）的规则",
    )

    @field_validator("out_of_service")
    @classmethod
    def check_out_of_service(cls, value: list[str]) -> list[str]:
        for text in value:
            rule, at, device = text.partition("@")
            if not rule or (at and not device):
                raise ValueError(
                    f"{text!r}: write 'rule' or 'rule@device' / 请写成 规则 或 规则@设备"
                )
        return value


class RuleFileProblems(yamlsrc.FileProblems):
    """Problems of a rule file at its own lines (``file:line  key.path  message``)."""


@dataclass
class RuleSet:
    """The rules that run, with the schedules they name."""

    rules: list[Rule] = field(default_factory=list)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    #: rule id -> "file" it came from (for messages)
    origin: dict[str, str] = field(default_factory=dict)


def default_path() -> Path:
    """The shipped default rule set."""
    res = importlib.resources.files("edge_agent.alarms") / "rulesets" / DEFAULT_SET
    return Path(str(res))


def _fmt(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top)"


def parse_rule_file(path: Path) -> tuple[RuleFile, yamlsrc.Lines, list[str], list[int]]:
    """One rule file: its valid schedules and rules, its lines, and the problems of the
    rest as ``file:line  key.path  message``; :class:`RuleFileProblems` when it cannot be
    read at all."""
    try:
        raw, lines = yamlsrc.load(path)
    except OSError as err:
        raise RuleFileProblems(
            path, [f"{path}:1  (file)  cannot read rule file / 无法读取规则文件: {err.strerror}"]
        ) from err
    except yamlsrc.SourceError as err:
        raise RuleFileProblems(path, [f"{path}:{err.line}  {err.where}  {err.message}"]) from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RuleFileProblems(
            path, [f"{path}:1  (top)  a rule file is a mapping with schedules: and rules:"]
        )
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    # Each rule on its own: one broken rule neither hides the problems of the others nor
    # keeps the valid ones from being checked against the schedules.
    items = raw.get("rules")
    problems: list[tuple[int, str]] = []
    top = {**raw, "rules": []}
    parsed = RuleFile()
    try:
        parsed = RuleFile.model_validate(top)
    except ValidationError as err:
        problems += _problems(err, (), lines)
    rules: list[Rule] = []
    index: list[int] = []  # each valid rule's position in the file
    if isinstance(items, list):
        for i, item in enumerate(items):
            try:
                rules.append(Rule.model_validate(item))
                index.append(i)
            except ValidationError as err:
                problems += _problems(err, ("rules", i), lines)
    elif items is not None:
        problems.append((lines.line(("rules",)), "rules  a list of rules / 应为规则列表"))
    problems.sort(key=lambda pr: pr[0])
    found = [f"{path}:{n}  {text}" for n, text in problems]
    return parsed.model_copy(update={"rules": rules}), lines, found, index


def _problems(err: ValidationError, prefix: Path_, lines: yamlsrc.Lines) -> list[tuple[int, str]]:
    out = []
    for e in err.errors(include_url=False):
        loc = (*prefix, *e["loc"])
        # function tags pydantic adds are not keys of the file
        loc = tuple(p for p in loc if isinstance(p, int) or not str(p).startswith("function"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?) / 未知的配置项"
        out.append((lines.line(loc), f"{_fmt(loc)}  {msg}"))
    return out


def load_rules(cfg: RulesConfig, base: Path) -> tuple[RuleSet, list[tuple[Path_, str]], list[str]]:
    """The rule set the config asks for. Returns it with the problems of the ``rules:``
    section (key paths of the config) and the problems of rule files (their own lines)."""
    config_problems: list[tuple[Path_, str]] = []
    file_problems: list[str] = []
    files: list[tuple[Path, Path_ | None]] = []
    if cfg.default:
        files.append((default_path(), None))
    for i, name in enumerate(cfg.files):
        p = Path(name)
        files.append((p if p.is_absolute() else base / p, ("rules", "files", i)))
    out = RuleSet()
    refs: list[tuple[Path, yamlsrc.Lines, int, str, str]] = []
    for path, where in files:
        if where is not None and not path.is_file():
            config_problems.append((where, f"no rule file {path} / 找不到规则文件"))
            continue
        try:
            parsed, lines, found, index = parse_rule_file(path)
        except RuleFileProblems as err:
            file_problems += err.problems
            continue
        file_problems += found
        out.schedules.update(parsed.schedules)
        for i, rule in zip(index, parsed.rules, strict=True):
            if rule.id in out.origin:
                file_problems.append(
                    f"{path}:{lines.line(('rules', i, 'id'))}  rules[{i}].id  duplicate rule id "
                    f"{rule.id!r} (also in {out.origin[rule.id]}) / 规则编号重复"
                )
                continue
            out.origin[rule.id] = str(path)
            out.rules.append(rule)
            refs += [(path, lines, i, key, name) for key, name in rule.schedules_used()]
    out.schedules.update(cfg.schedules)
    for path, lines, i, key, name in refs:
        if name not in out.schedules:
            known = ", ".join(sorted(out.schedules)) or "none"
            file_problems.append(
                f"{path}:{lines.line(('rules', i, key))}  rules[{i}].{key}  unknown schedule "
                f"{name!r} (known: {known}) / 未定义的作息表"
            )
    if not file_problems:
        for j, rule_id in enumerate(cfg.disable):
            if rule_id not in out.origin:
                config_problems.append(
                    (("rules", "disable", j), f"no rule {rule_id!r} to disable / 没有该规则")
                )
        for j, target in enumerate(cfg.out_of_service):
            rule_id = target.partition("@")[0]
            if rule_id not in out.origin:
                config_problems.append(
                    (
                        ("rules", "out_of_service", j),
                        f"no rule {rule_id!r} to take out of service / 没有该规则",
                    )
                )
    if cfg.holidays:
        out.schedules = {
            n: s.model_copy(update={"holidays": [*s.holidays, *cfg.holidays]})
            for n, s in out.schedules.items()
        }
    off = set(cfg.disable)
    out.rules = [r for r in out.rules if r.id not in off]
    return out, config_problems, file_problems


def check_rules(raw: Any, base: Path) -> tuple[list[tuple[Path_, str]], list[str]]:
    """For check-config: the problems of the rules a (valid) ``rules:`` section names."""
    try:
        cfg = RulesConfig.model_validate(raw if isinstance(raw, dict) else {})
    except ValidationError:
        return [], []  # the section itself is reported by the config model
    _, config_problems, file_problems = load_rules(cfg, base)
    return config_problems, file_problems
