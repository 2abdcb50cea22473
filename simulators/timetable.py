"""School timetable and the simulated clock.

The default day follows a common Chinese primary/middle school: four 40-minute lessons in the
morning with a 30-minute break for exercises after the second one, a long lunch (with the
nap in the classroom that many schools keep), four lessons in the afternoon, the last a
30-minute activity lesson that ends at 16:30. No lessons at weekends.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

DAY_S = 86_400


class Phase(enum.Enum):
    """What a school building is doing at a given moment."""

    CLOSED = "closed"  # night, weekends
    ARRIVAL = "arrival"  # building open, pupils arriving
    LESSON = "lesson"
    BREAK = "break"  # between lessons
    LUNCH = "lunch"
    AFTER_SCHOOL = "after_school"  # pupils leaving, cleaning


def _hm(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60


DEFAULT_LESSONS: tuple[tuple[str, str], ...] = (
    ("08:00", "08:40"),
    ("08:50", "09:30"),
    ("10:00", "10:40"),
    ("10:50", "11:30"),
    ("13:30", "14:10"),
    ("14:20", "15:00"),
    ("15:10", "15:50"),
    ("16:00", "16:30"),
)


@dataclass(frozen=True)
class PhaseInfo:
    """The phase at a moment, with the lesson number (0-based) during lessons."""

    phase: Phase
    lesson: int | None = None


class Timetable:
    """When lessons, breaks and lunch happen, as seconds of the local day.

    ``lunch`` is the gap between the two lessons that bracket it; every other gap inside the
    school day is a break. The building is open from ``open_at`` to ``close_at`` on school days
    (Monday to Friday unless ``school_days`` says otherwise).
    """

    def __init__(
        self,
        lessons: Sequence[tuple[str, str]] = DEFAULT_LESSONS,
        *,
        lunch: tuple[str, str] = ("11:30", "13:30"),
        open_at: str = "07:00",
        close_at: str = "18:00",
        school_days: Sequence[int] = (0, 1, 2, 3, 4),
    ) -> None:
        self.lessons = tuple((_hm(a), _hm(b)) for a, b in lessons)
        for (start, end), nxt in zip(self.lessons, (*self.lessons[1:], None), strict=True):
            if end <= start or (nxt is not None and nxt[0] < end):
                raise ValueError("lessons must be ordered and must not overlap")
        self.lunch = (_hm(lunch[0]), _hm(lunch[1]))
        self.open_at = _hm(open_at)
        self.close_at = _hm(close_at)
        self.school_days = frozenset(school_days)

    @property
    def first_lesson_s(self) -> int:
        """Second of the day the first lesson starts."""
        return self.lessons[0][0]

    @property
    def last_lesson_end_s(self) -> int:
        """Second of the day the last lesson ends."""
        return self.lessons[-1][1]

    def phase_at(self, weekday: int, second_of_day: float) -> PhaseInfo:
        """Phase for ``weekday`` (Monday = 0) at ``second_of_day`` local time."""
        sod = second_of_day
        if weekday not in self.school_days or not self.open_at <= sod < self.close_at:
            return PhaseInfo(Phase.CLOSED)
        if sod < self.first_lesson_s:
            return PhaseInfo(Phase.ARRIVAL)
        if sod >= self.last_lesson_end_s:
            return PhaseInfo(Phase.AFTER_SCHOOL)
        for index, (start, end) in enumerate(self.lessons):
            if start <= sod < end:
                return PhaseInfo(Phase.LESSON, index)
        if self.lunch[0] <= sod < self.lunch[1]:
            return PhaseInfo(Phase.LUNCH)
        return PhaseInfo(Phase.BREAK)

    def phase(self, when: datetime) -> PhaseInfo:
        """Phase at a (local) datetime."""
        sod = when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6
        return self.phase_at(when.weekday(), sod)


class SimClock:
    """Simulated time: ``start`` plus real elapsed time multiplied by ``speed``.

    Times are handled as POSIX seconds (``float``); the local day of the timetable uses the UTC
    offset of ``start`` (a naive ``start`` is taken as the machine's local time). ``speed`` 0
    freezes the clock, which tests use to compare wire values with :meth:`CampusSim.truth`.
    """

    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        begin = start or datetime.now()
        if begin.tzinfo is None:
            begin = begin.astimezone()  # naive: the machine's local time
        offset = begin.utcoffset() or timedelta(0)
        self.tz = timezone(offset)
        self.start = begin.astimezone(self.tz)
        self.start_s = self.start.timestamp()
        self.utc_offset_s = offset.total_seconds()
        self.speed = speed
        self._monotonic = monotonic
        self._real0 = monotonic()

    def elapsed_real_s(self) -> float:
        """Real seconds since the clock was made."""
        return self._monotonic() - self._real0

    def now_s(self) -> float:
        """Simulated time, POSIX seconds."""
        return self.start_s + self.elapsed_real_s() * self.speed

    def now(self) -> datetime:
        """Simulated time as an aware datetime."""
        return self.to_datetime(self.now_s())

    def to_datetime(self, t: float) -> datetime:
        """POSIX seconds to an aware datetime in the clock's zone."""
        return datetime.fromtimestamp(t, tz=self.tz)

    def local_day(self, t: float) -> tuple[int, int, float]:
        """``(day number, weekday, second of day)`` of POSIX time ``t``, local time."""
        local = t + self.utc_offset_s
        day = int(local // DAY_S)
        # 1970-01-01 was a Thursday (weekday 3).
        return day, (day + 3) % 7, local - day * DAY_S
