"""Cheap statistics about the agent's own process for ``ROOT/health`` (no psutil).

On Linux the numbers come from ``/proc/self/stat`` (threads, start time) and
``/proc/self/statm`` (resident memory); CPU time comes from
:func:`time.process_time`, which reads the same kernel counters with
nanosecond rather than 10 ms (clock tick) resolution. Where ``/proc`` is
missing (macOS, a locked-down sandbox) the class falls back to
:func:`resource.getrusage`, whose ``ru_maxrss`` is the *peak* resident size,
and to the number of Python threads.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

__all__ = ["ProcessSample", "ProcessStats"]

log = logging.getLogger(__name__)


class ProcessSample(TypedDict):
    """One sample; keys are the names used in the ``ROOT/health`` payload."""

    cpu_percent: float
    """CPU used since the previous sample, in percent of one core (can exceed 100)."""
    rss_bytes: int
    """Resident memory (peak resident memory where ``/proc`` is missing)."""
    uptime_s: float
    """Seconds since the process started."""
    threads: int
    """Number of OS threads (Python threads where ``/proc`` is missing)."""


class ProcessStats:
    """Samples CPU, memory, uptime and threads of the current process.

    Create it once at start-up; each :meth:`sample` reports the CPU used since
    the previous one (or since construction). The clocks and the ``/proc`` root
    can be injected for tests.
    """

    def __init__(
        self,
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._proc = Path(proc_root)
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._page_size = _sysconf("SC_PAGE_SIZE", 4096)
        self._clock_ticks = _sysconf("SC_CLK_TCK", 100)
        self._fallback_logged = False
        self._last_wall = clock()
        self._last_cpu = cpu_clock()
        self._started = self._last_wall - self._process_age_s()

    def sample(self) -> ProcessSample:
        """Read the current numbers; CPU is averaged since the previous call."""
        now = self._clock()
        cpu = self._cpu_clock()
        elapsed = now - self._last_wall
        used = cpu - self._last_cpu
        self._last_wall, self._last_cpu = now, cpu
        cpu_percent = max(0.0, 100.0 * used / elapsed) if elapsed > 0 else 0.0
        stat = self._read_stat()
        threads = stat[0] if stat is not None else threading.active_count()
        return {
            "cpu_percent": round(cpu_percent, 1),
            "rss_bytes": self._rss_bytes(),
            "uptime_s": round(max(0.0, now - self._started), 1),
            "threads": threads,
        }

    def _read_stat(self) -> tuple[int, int] | None:
        """``(num_threads, starttime in clock ticks after boot)`` from ``/proc/self/stat``."""
        try:
            text = (self._proc / "self" / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            self._log_fallback()
            return None
        # The command name (field 2) is in parentheses and may itself contain
        # spaces and ')', so split after the last ')'. fields[0] is field 3 (state),
        # so field N of proc(5) is fields[N - 3].
        fields = text[text.rfind(")") + 1 :].split()
        try:
            return int(fields[20 - 3]), int(fields[22 - 3])
        except (IndexError, ValueError):
            self._log_fallback()
            return None

    def _rss_bytes(self) -> int:
        try:
            statm = (self._proc / "self" / "statm").read_text(encoding="ascii").split()
            return int(statm[1]) * self._page_size
        except (OSError, IndexError, ValueError):
            self._log_fallback()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports kilobytes, macOS bytes.
        return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024

    def _process_age_s(self) -> float:
        """Seconds the process has been running, from /proc; 0 when unknown."""
        stat = self._read_stat()
        if stat is None:
            return 0.0
        try:
            boot_uptime_s = float((self._proc / "uptime").read_text(encoding="ascii").split()[0])
        except (OSError, IndexError, ValueError):
            return 0.0
        started_after_boot_s = stat[1] / self._clock_ticks
        return max(0.0, boot_uptime_s - started_after_boot_s)

    def _log_fallback(self) -> None:
        if not self._fallback_logged:
            self._fallback_logged = True
            log.debug("%s not readable; using getrusage() for process stats", self._proc)


def _sysconf(name: str, default: int) -> int:
    try:
        value = os.sysconf(name)
    except (AttributeError, ValueError, OSError):
        return default
    return value if value > 0 else default
