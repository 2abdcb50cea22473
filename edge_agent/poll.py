"""The one shared poll loop: interval, jitter, no overlap, timeouts, device state.

Drivers of polling devices implement only ``read()``. This loop calls it on a
fixed grid (``interval_s`` with a random phase so 60 sensors on one bus do not
all fire in the same millisecond), never starts a read while the previous one
runs, bounds every read with a timeout, and turns failures into the device's
``online``/``degraded``/``offline`` state. A device that is offline is retried
with exponential backoff (1 s doubling to 300 s, with jitter) instead of its
interval, so a dead meter costs the bus almost nothing.

Logs live on an SD card, so a device that keeps failing (or fails every other poll)
costs a few lines, not one per poll: the first failure is logged at WARNING with the
reason and the last raw frames, the first recovery at INFO, and everything after that
within the same minute only at DEBUG, followed by one summary line per minute
(:data:`SUMMARY_S`) that counts what happened.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.driver import DeviceStateName, Emit, PollingDriver
from edge_agent.envelope import iso_ms
from edge_agent.errors import DeviceError

log = logging.getLogger(__name__)

StateSink = Callable[[str, dict[str, Any]], None]
#: called when a driver's ``read()`` raises something that is not a DeviceError (a driver
#: bug): the device id, the exception and the seconds until it is polled again
CrashSink = Callable[[str, Exception, float], None]

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 300.0
#: a device's repeated failures are summed up in one log line per this many seconds
SUMMARY_S = 60.0


@dataclass
class DeviceHealth:
    """What the poll loop knows about one device."""

    device_id: str
    state: DeviceStateName | None = None
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    failures: int = 0
    reads: int = 0

    def payload(self) -> dict[str, Any]:
        return {"state": self.state, "since": iso_ms(self.since), "last_error": self.last_error}


#: One generator for every device's jitter: a ``random.Random`` holds 2.5 KB of state, and
#: 90 devices (a poll loop and a supervisor each) would keep 450 KB of it.
SHARED_RNG = random.Random()


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter in the upper half: 1, 2, 4 … 300 s."""
    base = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2.0 ** max(0, attempt))
    return float(base * (0.5 + 0.5 * rng.random()))


class _Expiry:
    """A read's timer: cancels the reading task once, and remembers that it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


class PollLoop:
    """Polls one device until cancelled."""

    def __init__(
        self,
        driver: PollingDriver,
        *,
        interval_s: float,
        read_timeout_s: float,
        offline_after: int,
        emit: Emit,
        state_sink: StateSink,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.interval_s = interval_s
        self.read_timeout_s = read_timeout_s
        self.offline_after = offline_after
        self.emit = emit
        self.state_sink = state_sink
        self.rng = rng or SHARED_RNG
        self.health = DeviceHealth(driver.device_id)
        self._log = _DeviceLog(driver.device_id, clock)

    def _set_state(self, state: DeviceStateName, error: str | None) -> None:
        h = self.health
        if h.state == state and h.last_error == error:
            return
        if h.state != state:
            h.since = time.time()
        h.state = state
        h.last_error = error
        self.state_sink(h.device_id, h.payload())

    async def run(self) -> None:
        # Random phase within the first interval spreads devices over the bus.
        await asyncio.sleep(self.rng.random() * min(self.interval_s, 5.0))
        next_at = time.monotonic()
        task = asyncio.current_task()
        while True:
            delay = await self.poll_once(task)
            if task is not None and task.cancelling():
                # A stop arrived while the driver was reading, and the driver swallowed
                # it: Python 3.11's asyncio.wait_for (which pymodbus uses for every
                # request) returns the result when the answer and the cancellation
                # arrive together. The request is still counted as cancelled, so honour
                # it here; otherwise this device would poll on and the agent never stop.
                raise asyncio.CancelledError
            if delay is None:
                next_at += self.interval_s
                now = time.monotonic()
                if next_at < now:
                    # Overran: skip the missed ticks rather than firing a burst.
                    missed = int((now - next_at) // self.interval_s) + 1
                    next_at += missed * self.interval_s
            else:
                next_at = time.monotonic() + delay
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def poll_once(self, task: asyncio.Task[Any] | None = None) -> float | None:
        """Read once. Returns a backoff delay when the device is offline, else None.

        ``task`` is the task that runs this (the caller's: found when not given).
        """
        h = self.health
        did = h.device_id
        if task is None:
            task = asyncio.current_task()
            assert task is not None, "poll_once runs in a task"
        # The read's bound is asyncio.timeout's steps written out (a timer that cancels the
        # task; uncancel() once it fired; a TimeoutError only when no other stop came),
        # not wait_for: 3.11's wait_for may swallow a cancellation that coincides with the
        # read completing. Written out because asyncio.timeout costs two coroutines and
        # three running-loop look-ups per read (a getpid() system call each on 3.11), on a
        # process that is idle between polls and pays all of it cold.
        loop = task.get_loop()
        cancelling = task.cancelling()
        expiry = _Expiry(task)
        timer = loop.call_at(loop.time() + self.read_timeout_s, expiry.fire)
        try:
            try:
                reading = await self.driver.read()
            finally:
                timer.cancel()
                # our own cancellation, and no stop from anyone else on top of it
                timed_out = expiry.fired and task.uncancel() <= cancelling
        except asyncio.CancelledError:
            if not timed_out:
                raise  # a stop: never swallowed
            return self._failed(f"no complete reading within {self.read_timeout_s:g} s")
        except DeviceError as exc:
            return self._failed(exc.reason)
        h.reads += 1
        problems = []
        if reading.missing:
            by_reason: dict[str, list[str]] = {}
            for name, reason in reading.missing.items():
                by_reason.setdefault(reason, []).append(name)
            problems += [f"not read: {', '.join(n)} ({r})" for r, n in by_reason.items()]
        if reading.out_of_range:
            problems.append("out of range: " + ", ".join(reading.out_of_range))
        error = "; ".join(problems) or None
        self._log.poll(failed=False, error=error if reading.missing else None)
        if h.failures and h.state == "offline":
            self._log.line(
                logging.INFO, "device %s is back online after %d failed polls", did, h.failures
            )
        elif h.failures:
            self._log.line(logging.INFO, "device %s answers again", did)
        h.failures = 0
        self.emit.telemetry(did, reading.data, ts=reading.ts, quality=reading.quality)
        if error is not None:
            if reading.missing and error != h.last_error:
                self._log.line(logging.WARNING, "device %s is degraded: %s", did, error)
            self._set_state("degraded", error)
        else:
            self._set_state("online", None)
        return None

    def _failed(self, reason: str) -> float | None:
        h = self.health
        h.failures += 1
        self._log.poll(failed=True, error=reason)
        if h.failures == 1:
            frames = getattr(self.driver, "last_frames", None)
            raw = ""
            if callable(frames):
                lines = [str(f) for f in frames()]
                if lines:
                    raw = "; last frames: " + " | ".join(lines[-6:])
            self._log.line(logging.WARNING, "device %s failed: %s%s", h.device_id, reason, raw)
        else:
            log.debug("device %s still failing (%d): %s", h.device_id, h.failures, reason)
        if h.failures >= self.offline_after:
            if h.state != "offline":
                self._log.line(
                    logging.WARNING,
                    "device %s is offline after %d failed polls",
                    h.device_id,
                    h.failures,
                )
            self._set_state("offline", reason)
            return max(self.interval_s, backoff_delay(h.failures - self.offline_after, self.rng))
        self._set_state("degraded", reason)
        return None


class SharedTick:
    """Polls the devices of one line (a bus, one Modbus TCP endpoint) from one task.

    The devices of a line take turns on it anyway (one request at a time), so one task
    polls them one after the other instead of one task and one timer per device queueing
    on the bus lock. Each device keeps its own interval, on a grid the line's devices
    share (one random phase per line): the devices due at the same moment are polled back
    to back, in config order, so a line wakes the agent once per round instead of once per
    device, and a round's readings reach the outbox together (fewer group commits).

    Bounds: a device's read is bounded by its own read timeout (waiting for the line no
    longer counts in it); a device later in a round starts late by at most the reads of
    the devices before it, each bounded by its read timeout (a dead device stops at its
    first unanswered request and, once offline, is polled only every backoff delay). An
    offline device is retried after its own backoff, rounded up to its place in a round,
    so it never delays a device before it in the config. A ``read()`` that raises
    something other than a DeviceError (a driver bug) is handed to ``on_crash`` and
    retried after an exponential backoff; the other devices of the line go on.
    """

    def __init__(
        self,
        line_id: str,
        loops: Sequence[PollLoop],
        *,
        on_crash: CrashSink,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not loops:
            raise ValueError(f"line {line_id}: no devices to poll")
        self.line_id = line_id
        self.loops = list(loops)
        self.on_crash = on_crash
        self.rng = rng or SHARED_RNG
        self.clock = clock
        self.sleep = sleep
        #: crashes per device (a driver bug), for its backoff
        self.crashes = [0] * len(self.loops)

    async def run(self) -> None:
        # One random phase for the line spreads the lines, as a device's phase spread the
        # devices: over min(interval, 5 s) for a line of one device, over a share of that
        # for a longer line, whose round already spreads its devices (and whose last
        # device then reads within about one round of the start, not 5 s later).
        shortest = min(p.interval_s for p in self.loops)
        start = self.clock() + self.rng.random() * min(shortest, 5.0) / len(self.loops)
        # (when, config order): equal times keep the config order, every round alike
        heap = [(start, i) for i in range(len(self.loops))]
        task = asyncio.current_task()
        while True:
            at, i = heap[0]
            wait = at - self.clock()
            if wait > 0:
                await self.sleep(wait)
                continue
            heapq.heappop(heap)
            poll = self.loops[i]
            try:
                delay = await poll.poll_once(task)
            except Exception as err:  # a driver bug; CancelledError is no Exception
                delay = backoff_delay(self.crashes[i], self.rng)
                self.crashes[i] += 1
                self.on_crash(poll.health.device_id, err, delay)
            if task is not None and task.cancelling():
                # A stop the driver swallowed: see PollLoop.run.
                raise asyncio.CancelledError
            # The next point of the line's grid after now (or after the backoff): a
            # device polled late in a round keeps its place, one that overran skips the
            # ticks it missed, and one that backs off is retried in its place in a round,
            # so it delays only the devices after it in the config, never the ones before.
            after = self.clock() + (delay or 0.0)
            interval = poll.interval_s
            nxt = start + (math.floor((after - start) / interval) + 1) * interval
            heapq.heappush(heap, (nxt, i))


class _DeviceLog:
    """One device's log lines, limited: a line of each kind (``failed``, ``answers
    again`` ...) at most once per :data:`SUMMARY_S`; repeats go to DEBUG and into one
    summary line per window that counts polls and failures."""

    def __init__(self, device_id: str, clock: Callable[[], float]) -> None:
        self.device_id = device_id
        self.clock = clock
        self.window_start = clock()
        self.logged: set[str] = set()
        self.suppressed = 0
        self.polls = 0
        self.failed = 0
        self.incomplete = 0
        self.last_error: str | None = None

    def poll(self, *, failed: bool, error: str | None) -> None:
        """Count one poll: ``failed``, or with ``error`` when only some points were read.
        Logs the summary of the window before, if it suppressed any line."""
        now = self.clock()
        if now - self.window_start >= SUMMARY_S:
            if self.suppressed:
                log.info(
                    "device %s: %d of %d polls failed, %d incomplete, in the last %.0f s "
                    "(%d log lines suppressed); last error: %s",
                    self.device_id,
                    self.failed,
                    self.polls,
                    self.incomplete,
                    now - self.window_start,
                    self.suppressed,
                    self.last_error,
                )
            self.window_start = now
            self.logged.clear()
            self.suppressed = self.polls = self.failed = self.incomplete = 0
        self.polls += 1
        self.failed += failed
        self.incomplete += error is not None and not failed
        if error is not None:
            self.last_error = error

    def line(self, level: int, msg: str, *args: object) -> None:
        """Log ``msg`` at ``level`` if this kind of line was not logged in this window."""
        if msg in self.logged:
            self.suppressed += 1
            log.debug(msg, *args)
            return
        self.logged.add(msg)
        log.log(level, msg, *args)
