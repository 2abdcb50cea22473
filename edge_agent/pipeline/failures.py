"""Failures of taps and stages, logged for an SD card: the first one of each with its
traceback, the rest counted and summarised in one line at most every ``summary_s``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.pipeline.base import Message

log = logging.getLogger("edge_agent.pipeline")


@dataclass(slots=True)
class _Count:
    failed: int = 0
    #: failures not yet in a log line
    unreported: int = 0
    last_error: str = ""


class Failures:
    """Failures by name (of a tap, of a stage)."""

    def __init__(
        self,
        what: str,
        outcome: str,
        summary_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: "tap" or "stage"; ``outcome`` says what happened to the message (EN / ZH)
        self.what = what
        self.outcome = outcome
        self.summary_s = summary_s
        self._clock = clock
        self._counts: dict[str, _Count] = {}
        self._summarised_at = clock()

    def total(self) -> int:
        return sum(c.failed for c in self._counts.values())

    def count(self, name: str) -> int:
        c = self._counts.get(name)
        return 0 if c is None else c.failed

    def failed(
        self, name: str, err: Exception, msg: Message | None = None, outcome: str | None = None
    ) -> None:
        c = self._counts.setdefault(name, _Count())
        c.failed += 1
        c.last_error = repr(err)[:300]
        if c.failed > 1:
            c.unreported += 1
            log.debug("pipeline %s %r failed again: %r", self.what, name, err)
            return
        log.warning(
            "pipeline %s %r failed%s: %r; %s. Further failures are counted (one line every %g s)",
            self.what,
            name,
            "" if msg is None else f" on a {msg.kind} of {msg.device}",
            err,
            outcome or self.outcome,
            self.summary_s,
            exc_info=err,
        )

    def tick(self) -> None:
        if self._clock() - self._summarised_at >= self.summary_s:
            self.summary()

    def due_in(self) -> float | None:
        """Seconds until :meth:`tick` has a summary line to write; None: nothing to say."""
        if not any(c.unreported for c in self._counts.values()):
            return None
        return max(0.0, self._summarised_at + self.summary_s - self._clock())

    def summary(self) -> None:
        self._summarised_at = self._clock()
        for name, c in self._counts.items():
            if c.unreported:
                log.warning(
                    "pipeline %s %r failed %d more times (%d in all); last: %s "
                    "/ 数据处理 %r 又出错 %d 次",
                    self.what,
                    name,
                    c.unreported,
                    c.failed,
                    c.last_error,
                    name,
                    c.unreported,
                )
                c.unreported = 0
