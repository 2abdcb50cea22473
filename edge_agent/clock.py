"""Honest timestamps on a gateway without a real-time clock: is the clock right?

A Raspberry Pi has no RTC: it boots with the time it had at shutdown (or 1970)
and jumps when NTP answers. Until the kernel says the clock is synchronised,
readings and events are held in memory with a monotonic stamp by the pipeline's
clock gate (:mod:`edge_agent.pipeline.clockgate`); once it is synchronised their
``ts`` is computed from the monotonic clock, so it is right. What waits longer
than ``hold_max_s`` is committed with its best-guess ``ts`` and ``quality:
"uncertain"`` rather than held for ever. Alarms are never held: security staff
need them now, so they go out at once, marked uncertain.

``seq`` is assigned at commit, never from a timestamp, so a clock that jumps
backwards changes ``ts`` but never the order of ``seq``.

Asking the kernel needs ``adjtimex(2)`` (glibc calls ``clock_adjtime``), which
systemd's ``ProtectClock=yes`` and ``SystemCallFilter=~@privileged`` refuse with
EPERM even for a read-only call (the filter is by system call, not by argument).
A refused call never counts as "synchronised": the check falls back to
systemd-timesyncd's flag file when timesyncd runs, and otherwise says the clock
is not known to be synchronised, and why (``reason``, shown in ``ROOT/health``).
The shipped unit allows the read-only call (see systemd/edge-agent.service).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger(__name__)

SyncCheck = Literal["adjtimex", "timesyncd", "file", "none"]

TIME_ERROR = 5  # adjtimex(2) return value: clock not synchronised
STA_UNSYNC = 0x0040
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
#: exists while systemd-timesyncd runs (it keeps its state there)
TIMESYNCD_DIR = TIMESYNCD_FLAG.parent


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux); only `modes` (0 = read only) and
    # `status` are used, the padding keeps the kernel's size.
    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    )


class AdjtimexUnavailable(Exception):
    """There is no adjtimex to call here (not Linux, no libc)."""


def read_adjtimex() -> tuple[int, int]:
    """``adjtimex`` with ``modes=0`` (read only): ``(return value, status)``.

    Raises :class:`OSError` with the call's errno when it fails (EPERM under a
    seccomp filter), :class:`AdjtimexUnavailable` where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        raise AdjtimexUnavailable("no C library")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError) as err:
        raise AdjtimexUnavailable(str(err)) from err
    if state < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(state), int(tx.status)


class SystemClock:
    """Wall and monotonic time plus "is the wall clock synchronised?"."""

    def __init__(
        self,
        sync_check: SyncCheck = "adjtimex",
        sync_file: str | Path = TIMESYNCD_FLAG,
        *,
        adjtimex: Callable[[], tuple[int, int]] = read_adjtimex,
        timesyncd_flag: Path = TIMESYNCD_FLAG,
    ) -> None:
        self.sync_check = sync_check
        self.sync_file = Path(sync_file)
        self._adjtimex = adjtimex
        self._timesyncd_flag = timesyncd_flag
        #: why the clock counts as synchronised or not, for ``ROOT/health``
        self.reason = ""
        self._refused_logged = False

    def wall(self) -> float:
        return time.time()

    def mono(self) -> float:
        return time.monotonic()

    def synced(self) -> bool:
        synced, self.reason = self._check()
        return synced

    def _check(self) -> tuple[bool, str]:
        if self.sync_check == "none":
            return True, "clock.sync_check: none (trusted: RTC/GPS)"
        if self.sync_check == "timesyncd":
            return self._timesyncd()
        if self.sync_check == "file":
            found = self.sync_file.exists()
            return found, f"{self.sync_file} {'exists' if found else 'does not exist'}"
        try:
            state, status = self._adjtimex()
        except AdjtimexUnavailable:
            # Where the kernel cannot be asked at all, trust the clock rather than hold data.
            return True, "adjtimex is not available here (not Linux): clock trusted"
        except OSError as err:
            return self._refused(err)
        if state == TIME_ERROR or status & STA_UNSYNC:
            return False, "kernel: not synchronised (adjtimex TIME_ERROR / STA_UNSYNC)"
        return True, "kernel: synchronised (adjtimex)"

    def _timesyncd(self) -> tuple[bool, str]:
        found = self._timesyncd_flag.exists()
        return found, f"systemd-timesyncd: {'synchronised' if found else 'not synchronised yet'}"

    def _refused(self, err: OSError) -> tuple[bool, str]:
        why = f"adjtimex refused: {errno.errorcode.get(err.errno or 0, err.errno)} ({err.strerror})"
        if err.errno == errno.EPERM:
            why += ", a system call filter (systemd ProtectClock=yes?)"
        if not self._refused_logged:
            self._refused_logged = True
            log.warning(
                "cannot ask the kernel whether the clock is synchronised: %s. Using "
                "systemd-timesyncd's flag if it runs, else the clock counts as NOT "
                "synchronised; see docs/reliability.md / 无法查询内核时钟同步状态",
                why,
            )
        if self._timesyncd_flag.parent.is_dir():
            synced, state = self._timesyncd()
            return synced, f"{why}; {state}"
        return False, f"{why}; no other source (timesyncd not running): not trusted"


class Clock(Protocol):
    """What the gate needs from a clock; tests inject a fake one."""

    def wall(self) -> float: ...

    def mono(self) -> float: ...

    def synced(self) -> bool: ...
