"""The group commit's transaction, in one hop to the database thread or statement by
statement (an aiosqlite without the private call it uses): the same all-or-nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from edge_agent.envelope import Lane
from edge_agent.outbox import Outbox
from tests.outbox_helpers import fill_disk


class _PublicOnly:
    """An aiosqlite connection seen through its public API only."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._real = db

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._real, name)


def _put(ob: Outbox, n: int) -> None:
    for i in range(n):
        ob.put(Lane.TELEMETRY, "t/d", device="d", kind="telemetry", ts=1.0, data={"i": i})


async def _on_disk(path: Path) -> tuple[list[int], str]:
    async with aiosqlite.connect(path) as db:
        seqs = [r[0] for r in await db.execute_fetchall("SELECT seq FROM outbox ORDER BY seq")]
        meta = dict(await db.execute_fetchall("SELECT key, value FROM meta"))  # type: ignore[arg-type]
    return seqs, meta["next_seq"]


@pytest.mark.parametrize("api", ["one hop", "statement by statement"])
async def test_a_group_commit_is_all_or_nothing(tmp_path: Path, api: str) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path, memory_max=1000)
    await ob.open()
    if api == "statement by statement":
        ob._db = _PublicOnly(ob.db)  # type: ignore[assignment]
        assert getattr(ob.db, "_execute", None) is None
    _put(ob, 5)
    await ob.flush()
    ob.ack([1, 2])
    _put(ob, 3)
    await ob.flush()  # insert 6..8, delete 1 and 2, next_seq: one transaction
    assert await _on_disk(path) == ([3, 4, 5, 6, 7, 8], "9")

    await fill_disk(ob.db)
    ob.ack([3])
    _put(ob, 200)
    await ob.flush()  # fails for lack of space: nothing of it may be on disk
    assert ob.mode == "memory"
    assert await _on_disk(path) == ([3, 4, 5, 6, 7, 8], "9")

    await ob.db.execute("PRAGMA max_page_count=1073741823")  # space is back
    await ob.flush()
    assert ob.mode == "disk"
    seqs, next_seq = await _on_disk(path)
    assert seqs == [4, 5, 6, 7, 8, *range(9, 209)]
    assert next_seq == "209"
    await ob.close()


async def test_a_group_commit_is_one_hop_to_the_database_thread(tmp_path: Path) -> None:
    # Each hop wakes aiosqlite's thread and then the event loop: at the gateway90 load the
    # five hops of a commit statement by statement were a fifth of the agent's wake-ups.
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    db = ob.db
    real = db._execute
    hops: list[str] = []

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    db._execute = counting  # type: ignore[method-assign]
    try:
        _put(ob, 5)
        await ob.flush()
        ob.ack([1, 2])
        _put(ob, 3)
        hops.clear()
        await ob.flush()  # rows, next_seq and the deletes
        assert len(hops) == 1, hops
    finally:
        db._execute = real  # type: ignore[method-assign]
        await ob.close()
