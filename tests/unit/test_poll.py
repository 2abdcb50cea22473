"""The shared poll loop stops when asked, even if a driver swallows the cancellation; the
shared tick of a line polls each device at its own interval, one after the other."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest

from edge_agent.driver import Reading
from edge_agent.errors import DeviceTimeout
from edge_agent.poll import PollLoop, SharedTick


class Sink:
    def __init__(self) -> None:
        self.readings: list[dict[str, Any]] = []

    def telemetry(self, device: str, data: dict[str, Any], **_kw: Any) -> None:
        self.readings.append(data)

    def event(self, *_a: Any, **_kw: Any) -> None:
        pass


class SwallowingDriver:
    """Reads like pymodbus under Python 3.11: a cancellation that arrives together with
    the answer is swallowed (``asyncio.wait_for``) and the answer returned."""

    device_id = "d1"

    def __init__(self) -> None:
        self.reads = 0
        self.in_read = asyncio.Event()
        self.swallowed = 0
        self.swallow = True

    async def read(self) -> Reading:
        self.reads += 1
        self.in_read.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if not self.swallow:
                raise
            self.swallowed += 1  # the answer came in at the same moment: return it
        return Reading({"n": self.reads})


async def test_a_swallowed_cancellation_still_stops_the_loop() -> None:
    driver = SwallowingDriver()
    sink = Sink()
    loop = PollLoop(
        driver,  # type: ignore[arg-type]
        interval_s=0.01,
        read_timeout_s=1.0,
        offline_after=3,
        emit=sink,  # type: ignore[arg-type]
        state_sink=lambda _d, _p: None,
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(driver.in_read.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    for _ in range(100):  # the loop polled on: stop it (each cancel may be swallowed too)
        if task.done():
            break
        driver.swallow = False
        task.cancel()
        await asyncio.sleep(0.01)
    assert done, "the poll loop ignored the stop"
    assert driver.swallowed == 1
    with pytest.raises(asyncio.CancelledError):
        task.result()


class HangingDriver:
    """A read that never ends (a device that keeps the line busy forever)."""

    device_id = "h1"

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def read(self) -> Reading:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("never")


def hanging_loop(driver: HangingDriver, read_timeout_s: float, states: list[Any]) -> PollLoop:
    return PollLoop(
        driver,  # type: ignore[arg-type]
        interval_s=10.0,
        read_timeout_s=read_timeout_s,
        offline_after=3,
        emit=Sink(),  # type: ignore[arg-type]
        state_sink=lambda _d, payload: states.append(payload),
    )


async def test_a_read_past_its_timeout_fails_the_poll_and_leaves_the_task_running() -> None:
    states: list[Any] = []
    loop = hanging_loop(HangingDriver(), 0.05, states)
    assert await loop.poll_once() is None  # one failure: degraded, polled again on time
    assert states[-1]["state"] == "degraded"
    assert states[-1]["last_error"] == "no complete reading within 0.05 s"
    # the timeout's own cancellation is taken back: this task is not being stopped
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation pending either


async def test_a_stop_during_a_read_is_never_taken_for_its_timeout() -> None:
    """A stop while the read waits raises CancelledError, also when the read's timer fires
    in the same loop pass (both cancel the task; only the timer's is taken back)."""
    for read_timeout_s in (5.0, 0.0):  # the timer far away; the timer due right now
        driver = HangingDriver()
        states: list[Any] = []
        loop = hanging_loop(driver, read_timeout_s, states)
        task = asyncio.create_task(loop.poll_once())
        await driver.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert states == [], read_timeout_s  # not counted as a failed poll


# -- the shared tick of a line (edge_agent.poll.SharedTick) ------------------------------


class VirtualTime:
    """The tick's clock and sleep, in virtual seconds: no timed assertion, exact figures."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        await asyncio.sleep(0)


class LineDevice:
    """A device on a shared line: each read takes ``cost`` virtual seconds; while
    ``dead`` it takes ``dead_cost`` (its requests time out) and fails; ``bug`` makes the
    read raise a driver bug."""

    def __init__(self, device_id: str, t: VirtualTime, cost: float = 0.03) -> None:
        self.device_id = device_id
        self.t = t
        self.cost = cost
        self.dead = False
        self.dead_cost = 2.0
        self.bug = False
        self.starts: list[float] = []

    async def read(self) -> Reading:
        self.starts.append(self.t.now)
        await asyncio.sleep(0)
        if self.bug:
            raise RuntimeError("a driver bug")
        if self.dead:
            self.t.now += self.dead_cost
            raise DeviceTimeout(self.device_id, "no answer from unit 1 within 1 s")
        self.t.now += self.cost
        return Reading({"n": len(self.starts)})


def line_loop(driver: LineDevice, interval_s: float, sink: Sink) -> PollLoop:
    return PollLoop(
        driver,  # type: ignore[arg-type]
        interval_s=interval_s,
        read_timeout_s=interval_s,
        offline_after=2,
        emit=sink,  # type: ignore[arg-type]
        state_sink=lambda _d, _p: None,
    )


async def run_until(t: VirtualTime, tick: SharedTick, until: float) -> None:
    task = asyncio.create_task(tick.run())
    while t.now < until and not task.done():
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def gaps(starts: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(starts)]


async def test_a_shared_tick_polls_each_device_at_its_own_interval() -> None:
    t = VirtualTime()
    sink = Sink()
    devs = [LineDevice(f"s{i}", t) for i in range(5)]
    meter = LineDevice("meter", t, cost=0.05)
    loops = [line_loop(d, 10.0, sink) for d in devs] + [line_loop(meter, 30.0, sink)]
    started = t.now
    tick = SharedTick(
        "gw",
        loops,
        on_crash=lambda *_a: None,
        rng=random.Random(2),  # a phase near the top of its range
        clock=t.clock,
        sleep=t.sleep,
    )
    await run_until(t, tick, t.now + 200.0)
    # the line's phase is a share of min(interval, 5 s): its round spreads its devices, and
    # the last one reads within about one round of the start, not 5 s later
    assert devs[0].starts[0] - started <= 5.0 / len(loops)
    for d in devs:  # every 10 s, exactly: a device late in the round keeps its place
        assert len(d.starts) >= 19
        assert set(gaps(d.starts)) == {10.0}, d.device_id
    assert set(gaps(meter.starts)) == {30.0}
    # the devices of a round run back to back, in config order, one after the other
    first = [d.starts[0] for d in devs]
    assert gaps(first) == [0.03] * 4
    assert meter.starts[0] == pytest.approx(first[-1] + 0.03)
    # one wake-up per round of the line, not one per device
    rounds = len(devs[0].starts)
    assert t.sleeps <= rounds + 1
    assert len(sink.readings) == sum(len(d.starts) for d in [*devs, meter])


async def test_one_slow_device_delays_the_others_by_its_read_only() -> None:
    t = VirtualTime()
    sink = Sink()
    a, dead, b = LineDevice("a", t), LineDevice("dead", t), LineDevice("b", t)
    dead.dead = True
    tick = SharedTick(
        "gw",
        [line_loop(d, 10.0, sink) for d in (a, dead, b)],
        on_crash=lambda *_a: None,
        clock=t.clock,
        sleep=t.sleep,
    )
    await run_until(t, tick, t.now + 400.0)
    # a, before the dead device in the config, is never delayed; b, after it, starts
    # late by the dead device's failed read (2 s) in the rounds where it is tried, and
    # keeps its place otherwise
    assert set(gaps(a.starts)) == {10.0}
    late = [round(sb - sa - 0.03, 6) for sa, sb in zip(a.starts, b.starts, strict=True)]
    assert set(late) == {0.0, dead.dead_cost}
    assert late.count(dead.dead_cost) == len(dead.starts)
    # once offline, the dead device is tried with its backoff, no longer every round
    assert len(dead.starts) < len(a.starts) // 2
    assert max(gaps(dead.starts)) > 10.0

    # it answers again: polled every round once more, in its place between a and b
    dead.dead = False
    a.starts.clear()
    dead.starts.clear()
    b.starts.clear()
    await run_until(t, tick, t.now + 600.0)
    assert len(dead.starts) >= len(a.starts) - 1 > 50
    assert set(gaps(dead.starts[1:])) == {10.0}
    assert dead.starts[-1] == pytest.approx(a.starts[-1] + 0.03)


async def test_a_driver_bug_backs_off_that_device_only() -> None:
    t = VirtualTime()
    sink = Sink()
    a, buggy = LineDevice("a", t), LineDevice("buggy", t)
    buggy.bug = True
    crashes: list[tuple[str, str, float]] = []
    tick = SharedTick(
        "gw",
        [line_loop(a, 10.0, sink), line_loop(buggy, 10.0, sink)],
        on_crash=lambda dev, err, delay: crashes.append((dev, str(err), delay)),
        clock=t.clock,
        sleep=t.sleep,
    )
    await run_until(t, tick, t.now + 300.0)
    assert set(gaps(a.starts)) == {10.0}
    assert crashes[0][:2] == ("buggy", "a driver bug")
    assert [c[0] for c in crashes] == ["buggy"] * len(buggy.starts)
    # 1, 2, 4 ... s (jittered into the upper half): the delays grow
    delays = [c[2] for c in crashes]
    assert delays[-1] > delays[0]
    assert gaps(buggy.starts)[-1] >= 16.0


async def test_a_swallowed_cancellation_still_stops_the_shared_tick() -> None:
    driver = SwallowingDriver()
    sink = Sink()
    loop = PollLoop(
        driver,  # type: ignore[arg-type]
        interval_s=0.01,
        read_timeout_s=1.0,
        offline_after=3,
        emit=sink,  # type: ignore[arg-type]
        state_sink=lambda _d, _p: None,
    )
    task = asyncio.create_task(SharedTick("line", [loop], on_crash=lambda *_a: None).run())
    await asyncio.wait_for(driver.in_read.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    for _ in range(100):
        if task.done():
            break
        driver.swallow = False
        task.cancel()
        await asyncio.sleep(0.01)
    assert done, "the shared tick ignored the stop"
    assert driver.swallowed == 1
    with pytest.raises(asyncio.CancelledError):
        task.result()
