"""Rate limits: a token bucket per robot, and folding a flood into one summary.

A robot may send ``per_minute`` messages a minute (WeCom and DingTalk throttle a robot
that sends more than 20 for ten minutes; Feishu allows 100 a minute but only 5 a
second). Instead of a queue that delivers an hour late, alarms that do not fit the
tokens available now are folded into one summary message, most severe first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` a second, on an injectable clock."""

    def __init__(
        self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self._tokens = capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self) -> None:
        self._refill()
        self._tokens -= 1

    def wait_s(self) -> float:
        """Seconds until one whole token is there (0 when there is one now)."""
        missing = 1 - self.tokens
        return max(0.0, missing / self.rate)

    def drain(self) -> None:
        """The service said "too fast": our count was wrong, start from empty."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)


class Limits:
    """Every bucket of one robot: 20 a minute, and for Feishu 5 a second as well."""

    def __init__(self, buckets: Sequence[TokenBucket]) -> None:
        self.buckets = list(buckets)

    @classmethod
    def for_kind(
        cls, kind: str, per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> Limits:
        buckets = [TokenBucket(per_minute, per_minute / 60, clock)]
        if kind == "feishu":
            buckets.append(TokenBucket(5, 5, clock))
        return cls(buckets)

    def available(self) -> int:
        return int(min(b.tokens for b in self.buckets))

    def take(self) -> None:
        for b in self.buckets:
            b.take()

    def wait_s(self) -> float:
        return max(b.wait_s() for b in self.buckets)

    def drain(self) -> None:
        for b in self.buckets:
            b.drain()


T = TypeVar("T")


@dataclass
class Plan(Generic[T]):
    """What to send now: the next single message, or a summary of several."""

    single: T | None
    folded: list[T]


def plan(pending: Sequence[T], available: int, key: Callable[[T], tuple[int, int]]) -> Plan[T]:
    """The next message to send with ``available`` tokens (at least 1).

    ``pending`` is every waiting notification, ``key`` orders them (severity rank, then
    seq: critical first, oldest first). When all of them fit the tokens, the first goes
    alone; otherwise the first ``available - 1`` go alone, one by one, and the last
    token carries a summary of all the rest, so a flood costs at most the tokens there
    are and nothing waits behind it."""
    ordered = sorted(pending, key=key)
    if not ordered:
        return Plan(None, [])
    if len(ordered) == 1 or available >= 2:
        return Plan(ordered[0], [])
    return Plan(None, ordered)
