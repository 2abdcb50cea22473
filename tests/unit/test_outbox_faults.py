"""The outbox under corruption and a full disk (issue 3)."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.envelope import Lane
from edge_agent.outbox import Outbox


def put(ob: Outbox, n: int, lane: Lane = Lane.TELEMETRY, size: int = 10) -> None:
    for i in range(n):
        ob.put(
            lane,
            "campus/s/g/telemetry/d",
            device="d",
            kind="telemetry",
            ts=float(i),
            data={"i": i, "pad": "x" * size},
            quality="good",
        )


async def test_corrupt_outbox_is_moved_aside_and_a_new_epoch_starts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    await ob.open()
    old_epoch = ob.epoch
    put(ob, 200, size=200)
    await ob.flush()
    await ob.close()
    # Scribble over the middle of the file, as a dying SD card does.
    raw = bytearray(path.read_bytes())
    for i in range(4096, min(len(raw), 4096 * 4)):
        raw[i] = 0x5A
    path.write_bytes(bytes(raw))

    ob2 = Outbox(path)
    await ob2.open()
    assert ob2.recovered_from is not None
    moved = Path(ob2.recovered_from[0])
    assert moved.exists()
    assert moved.name.startswith("outbox.db.corrupt-")
    assert moved.read_bytes() == bytes(raw)  # moved, never deleted or changed
    assert ob2.epoch != old_epoch
    put(ob2, 1)
    (row,) = await ob2.flush()
    assert row.seq == 1
    assert json.loads(row.payload)["epoch"] == ob2.epoch
    await ob2.close()


async def test_not_a_database_at_all(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not sqlite" * 1000)
    ob = Outbox(path)
    await ob.open()
    assert ob.recovered_from is not None
    assert "not a database" in ob.recovered_from[1]
    await ob.close()


async def test_disk_full_degrades_to_memory_and_recovers(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", memory_max=100)
    await ob.open()
    seen: list[int] = []
    ob.subscribe(lambda rows: seen.extend(r.seq for r in rows))
    put(ob, 5)
    await ob.flush()
    # SQLite's own limit gives exactly the error a full file system gives: SQLITE_FULL.
    pages = (await (await ob.db.execute("PRAGMA page_count")).fetchone())[0]
    await ob.db.execute(f"PRAGMA max_page_count={pages}")
    put(ob, 150, size=500)
    rows = await ob.flush()  # does not raise
    assert ob.mode == "memory"
    assert ob.disk_error
    # the messages still got their seq and went to the publisher
    assert [r.seq for r in rows] == list(range(6, 156))
    assert seen[-1] == 155
    # bounded: the oldest telemetry beyond memory_max is evicted and counted
    assert ob.dropped["telemetry"] == 50
    stats = await ob.stats()
    assert stats["mode"] == "memory"
    assert stats["depth"] == 5 + 100
    # a publisher can still read them as backlog
    backlog = await ob.fetch(Lane.TELEMETRY, 0, ob.next_seq, 1000)
    assert [r.seq for r in backlog] == [1, 2, 3, 4, 5, *range(56, 156)]
    ob.ack(range(56, 66))  # some were delivered meanwhile

    await ob.db.execute("PRAGMA max_page_count=1073741823")  # space is back
    put(ob, 1)
    await ob.flush()
    assert ob.mode == "disk"
    assert ob.disk_error is None
    on_disk = await ob.fetch(Lane.TELEMETRY, 0, ob.next_seq, 1000)
    assert [r.seq for r in on_disk] == [1, 2, 3, 4, 5, *range(66, 157)]
    await ob.close()


async def test_crash_while_disk_full_never_reuses_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    await ob.open()
    put(ob, 3)
    await ob.flush()
    pages = (await (await ob.db.execute("PRAGMA page_count")).fetchone())[0]
    await ob.db.execute(f"PRAGMA max_page_count={pages}")
    put(ob, 50, size=1000)
    await ob.flush()
    assert ob.mode == "memory"
    top = ob.next_seq
    # "crash": the process dies without a successful commit
    await ob.db.close()
    ob._db = None

    ob2 = Outbox(path)
    await ob2.open()
    assert ob2.next_seq == top  # the seqs handed out in memory are never handed out again
    assert ob2.dropped["lost_in_memory"] == top - 4
    put(ob2, 1)
    (row,) = await ob2.flush()
    assert row.seq == top
    await ob2.close()
