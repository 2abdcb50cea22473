"""The shared poll loop stops when asked, even if a driver swallows the cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge_agent.driver import Reading
from edge_agent.poll import PollLoop


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
