"""The simulated campus as tests use it in-process: a fixed school time and addresses."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from edge_agent.simulators import CampusSim

# Tuesday 2025-03-04 08:30 China Standard Time: the first lesson is on.
LESSON = datetime(2025, 3, 4, 8, 30, tzinfo=timezone(timedelta(hours=8)))


def where(campus: CampusSim, device_id: str) -> tuple[str, int, int]:
    """Host, port and unit of a simulated device."""
    entry = next(d for d in campus.layout["devices"] if d["id"] == device_id)
    return entry["host"], entry["port"], entry["unit"]


async def assert_no_leaked_tasks() -> None:
    """Closing the campus left no task of its own behind."""
    for _ in range(5):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not pending, f"leaked tasks: {pending}"
