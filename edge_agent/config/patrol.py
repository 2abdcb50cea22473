"""The ``patrol:`` section: guard patrol (电子巡更) checkpoints and routes (issue 9, item 5).

A checkpoint is a card reader (a device, optionally one reader of a multi-door
controller); a route lists checkpoints and when its rounds start, in ``site.timezone``.
The runtime is :mod:`edge_agent.pipeline.patrol`; checks that need the device list
are in :func:`check_patrol` (``check-config`` prints them at their lines).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.models import Id, Strict

Path_ = tuple[str | int, ...]

#: a round's length, a tolerance: bounded so that a round's window stays within a day
ROUND_MAX_MIN = 720
TOLERANCE_MAX_MIN = 120
#: a card as the pseudonymiser publishes it
PSEUDONYM = re.compile(r"h:[0-9a-f]{16}")


def parse_hhmm(text: str) -> int:
    """``"22:00"`` -> minutes after midnight; ValueError in the installer's words."""
    hh, sep, mm = str(text).strip().partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2 or len(hh) > 2:
        raise ValueError(
            f"{text!r}: write a time of day as HH:MM, e.g. 22:00 / 时间请写成 HH:MM，例如 22:00"
        )
    h, m = int(hh), int(mm)
    if h > 23 or m > 59:
        raise ValueError(f"{text!r}: no such time of day / 无效的时间")
    return h * 60 + m


class Checkpoint(Strict):
    """A place a guard must visit: a card reader."""

    id: Id = Field(description="Checkpoint id, named by routes, e.g. 'gate-north'")
    device: Id = Field(description="The reader device (its id in devices:) / 巡更点读卡器设备")
    reader: str | int | None = Field(
        default=None,
        description="Only this reader of a multi-door device (the 'reader' of its card_read "
        "events); unset: any reader of the device",
    )
    name: str | None = Field(
        default=None, description="Name for the alarm message, e.g. '北门' / 名称"
    )


class RouteStop(Strict):
    """A checkpoint of a route with its own tolerance."""

    checkpoint: Id = Field(description="Checkpoint id (patrol.checkpoints[].id)")
    tolerance_min: float | None = Field(
        default=None,
        ge=0,
        le=TOLERANCE_MAX_MIN,
        description="Minutes after the round's end this checkpoint may still be visited; "
        "default: the route's tolerance_min",
    )


class Route(Strict):
    """A patrol route: its checkpoints and when its rounds start (site.timezone).

    Rounds start at ``start_times`` every day, or every ``every_min`` minutes from
    ``window_start`` until ``window_end`` (a window may cross midnight)."""

    id: Id = Field(description="Route id, e.g. 'night'")
    name: str | None = Field(default=None, description="Name for the alarm message / 名称")
    checkpoints: list[Id | RouteStop] = Field(
        min_length=1,
        description="Checkpoint ids (or {checkpoint, tolerance_min}) a guard visits each round",
    )
    ordered: bool = Field(
        default=False,
        description="Visits count only in the listed order (a checkpoint visited after a "
        "later one counts as missed); false: any order",
    )
    start_times: list[str] = Field(
        default_factory=list,
        description="Daily start times of a round, HH:MM in site.timezone, e.g. [22:00, 02:00]",
    )
    every_min: float | None = Field(
        default=None,
        gt=0,
        le=1440,
        description="Instead of start_times: a round every this many minutes within the window",
    )
    window_start: str | None = Field(
        default=None, description="With every_min: the first round starts at this HH:MM"
    )
    window_end: str | None = Field(
        default=None,
        description="With every_min: no round starts at or after this HH:MM (before "
        "window_start: the next day)",
    )
    round_min: float | None = Field(
        default=None,
        gt=0,
        le=ROUND_MAX_MIN,
        description="Minutes a round takes: every checkpoint is due by its start + round_min "
        "(+ tolerance); default: every_min (required with start_times)",
    )
    tolerance_min: float = Field(
        default=5,
        ge=0,
        le=TOLERANCE_MAX_MIN,
        description="Minutes of slack: a visit counts from this long before the round's start "
        "until this long after its end",
    )
    severity: Literal["critical", "major", "minor", "warning"] = Field(
        default="major", description="Severity of its patrol_missed alarms"
    )

    @field_validator("start_times")
    @classmethod
    def check_start_times(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_hhmm(text)
        return value

    @field_validator("window_start", "window_end")
    @classmethod
    def check_window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hhmm(value)
        return value

    @model_validator(mode="after")
    def check_schedule(self) -> Route:
        if bool(self.start_times) == (self.every_min is not None):
            raise ValueError(
                "give either start_times or every_min (with window_start and window_end) "
                "/ 请设置 start_times 或 every_min（及 window_start、window_end）之一"
            )
        if self.every_min is not None and (self.window_start is None or self.window_end is None):
            raise ValueError("every_min needs window_start and window_end / 需要设置时间窗口")
        if self.every_min is None and self.round_min is None:
            raise ValueError("start_times needs round_min / 请设置每轮时长 round_min")
        return self

    def stops(self) -> list[RouteStop]:
        """Every checkpoint as a :class:`RouteStop`."""
        return [RouteStop(checkpoint=s) if isinstance(s, str) else s for s in self.checkpoints]

    def length_min(self) -> float:
        """The round's length in minutes."""
        return self.round_min if self.round_min is not None else float(self.every_min or 0)

    def start_offsets_min(self) -> list[float]:
        """Round starts as minutes after the midnight of a day (over 1440 for a window
        that crosses midnight: those rounds belong to the night that began that day)."""
        if self.start_times:
            return sorted(float(parse_hhmm(t)) for t in self.start_times)
        assert self.every_min is not None
        assert self.window_start is not None
        assert self.window_end is not None
        first, end = parse_hhmm(self.window_start), parse_hhmm(self.window_end)
        if end <= first:
            end += 1440
        out: list[float] = []
        t = float(first)
        while t < end:
            out.append(t)
            t += self.every_min
        return out


class PatrolConfig(Strict):
    """Guard patrol (电子巡更): a missed checkpoint raises a ``patrol_missed`` alarm."""

    checkpoints: list[Checkpoint] = Field(
        default_factory=list, description="Readers a guard swipes a card at / 巡更点"
    )
    routes: list[Route] = Field(default_factory=list, description="Routes and their schedules")
    cards: list[str] = Field(
        default_factory=list,
        description="Guards' cards: only reads of these count as visits, written as the card "
        "appears in card_read events ('h:' + 16 hex; `edge-agent pseudonym CARD` prints it). "
        "Empty: a read of any card counts",
    )


def _items(raw: Any, key: str) -> list[tuple[int, dict[str, Any]]]:
    items = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(items, list):
        return []
    return [(i, it) for i, it in enumerate(items) if isinstance(it, dict)]


def check_patrol(raw: Any, device_ids: set[str], site: Any = None) -> list[tuple[Path_, str]]:
    """What the models alone cannot see: a checkpoint naming a device that does not
    exist, duplicate ids, a route naming an unknown checkpoint or one twice, guards' cards
    that can never match the site's card rule (``site``: the raw ``site:`` section). Works
    on the raw sections, so one pass of check-config reports these with any other error."""
    problems: list[tuple[Path_, str]] = _check_cards(raw, site)
    known: dict[str, int] = {}
    for i, cp in _items(raw, "checkpoints"):
        cp_id, device = cp.get("id"), cp.get("device")
        if isinstance(cp_id, str):
            if cp_id in known:
                problems.append(
                    (
                        ("patrol", "checkpoints", i, "id"),
                        f"duplicate checkpoint id {cp_id!r} (first at patrol.checkpoints"
                        f"[{known[cp_id]}]) / 巡更点编号重复",
                    )
                )
            known.setdefault(cp_id, i)
        if isinstance(device, str) and device not in device_ids:
            problems.append(
                (
                    ("patrol", "checkpoints", i, "device"),
                    f"no device {device!r} in devices: / 设备列表中没有该设备",
                )
            )
    route_ids: set[str] = set()
    for r, route in _items(raw, "routes"):
        route_id = route.get("id")
        if isinstance(route_id, str) and route_id in route_ids:
            problems.append(
                (("patrol", "routes", r, "id"), f"duplicate route id {route_id!r} / 路线编号重复")
            )
        route_ids.add(str(route_id))
        stops = route.get("checkpoints")
        if not isinstance(stops, list):
            continue
        seen: set[str] = set()
        for s, stop in enumerate(stops):
            where: Path_ = ("patrol", "routes", r, "checkpoints", s)
            if isinstance(stop, dict):
                where, stop = (*where, "checkpoint"), stop.get("checkpoint")
            if not isinstance(stop, str):
                continue  # reported by the model
            if stop not in known:
                choices = ", ".join(sorted(known)) or "none"
                problems.append(
                    (where, f"unknown checkpoint {stop!r} (known: {choices}) / 未定义的巡更点")
                )
            elif stop in seen:
                problems.append((where, f"checkpoint {stop!r} twice in one route / 巡更点重复"))
            seen.add(stop)
    return problems


def _check_cards(raw: Any, site: Any) -> list[tuple[Path_, str]]:
    cards = raw.get("cards") if isinstance(raw, dict) else None
    if not isinstance(cards, list) or not cards or not isinstance(site, dict):
        return []
    if site.get("raw_card_ids") is True:
        return []  # card_read carries the number itself: any text may be one
    if not site.get("pseudonym_secret"):
        return [
            (
                ("patrol", "cards"),
                "no card can match: without site.pseudonym_secret (or raw_card_ids) card_read "
                "events carry no card / 未设置 site.pseudonym_secret，刷卡事件不含卡号，无法匹配",
            )
        ]
    return [
        (
            ("patrol", "cards", i),
            f"{card!r} is not a pseudonym: write 'h:' + 16 hex digits, as printed by "
            "`edge-agent pseudonym -c FILE CARD` / 请填写 edge-agent pseudonym 输出的 h:… 值",
        )
        for i, card in enumerate(cards)
        if not (isinstance(card, str) and PSEUDONYM.fullmatch(card))
    ]
