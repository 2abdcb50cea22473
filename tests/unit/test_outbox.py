"""The SQLite outbox: seq/epoch rules of the contract, group commit, acks, retention."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path

import pytest

from edge_agent.envelope import Lane, iso_ms, mark_historical, new_ulid
from edge_agent.outbox.store import Outbox, Row


def put_telemetry(ob: Outbox, n: int, device: str = "b1-r101-air") -> None:
    for i in range(n):
        ob.put(
            Lane.TELEMETRY,
            f"campus/s/g/telemetry/{device}",
            device=device,
            kind="telemetry",
            ts=1_790_000_000.0 + i,
            data={"co2": 400 + i},
            quality="good",
        )


async def test_seq_is_gapless_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    await ob.open()
    epoch = ob.epoch
    put_telemetry(ob, 5)
    rows = await ob.flush()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    ob.ack([1, 2, 3, 4, 5])
    await ob.flush()  # deletes them: the table is empty now
    await ob.close()

    ob2 = Outbox(path)
    await ob2.open()
    assert ob2.epoch == epoch
    put_telemetry(ob2, 2)
    rows = await ob2.flush()
    # never reused, even though every earlier row was deleted
    assert [r.seq for r in rows] == [6, 7]
    await ob2.close()


async def test_new_database_gets_new_epoch(tmp_path: Path) -> None:
    a, b = Outbox(tmp_path / "a.db"), Outbox(tmp_path / "b.db")
    await a.open()
    await b.open()
    assert re.fullmatch(r"[0-9a-f]{16}", a.epoch)
    assert a.epoch != b.epoch
    await a.close()
    await b.close()


async def test_envelope_fields_follow_the_contract(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    put_telemetry(ob, 1)
    (row,) = await ob.flush()
    msg = json.loads(row.payload)
    assert msg == {
        "v": 1,
        "msg_id": msg["msg_id"],
        "epoch": ob.epoch,
        "seq": 1,
        "ts": "2026-09-21T14:13:20.000Z",
        "device": "b1-r101-air",
        "kind": "telemetry",
        "historical": False,
        "data": {"co2": 400},
        "quality": "good",
    }
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", msg["msg_id"])
    hist = json.loads(mark_historical(row.payload))
    assert hist["historical"] is True
    assert hist["data"] == msg["data"]
    await ob.close()


async def test_unacked_rows_are_there_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    await ob.open()
    put_telemetry(ob, 3)
    ob.put(
        Lane.ALARM,
        "campus/s/g/alarms",
        device="b1-r101-air",
        kind="alarm",
        ts=1.0,
        data={"alarm_id": "a1"},
    )
    committed = await ob.flush()
    ob.ack([committed[0].seq])
    await ob.close()  # close commits the pending ack

    ob2 = Outbox(path)
    await ob2.open()
    tele = await ob2.fetch(Lane.TELEMETRY, 0, ob2.next_seq, 100)
    alarms = await ob2.fetch(Lane.ALARM, 0, ob2.next_seq, 100)
    assert [r.seq for r in tele] == [2, 3]
    assert [r.seq for r in alarms] == [4]
    # the same bytes, so the same msg_id and seq on retransmission
    assert tele[0].payload == committed[1].payload
    await ob2.close()


async def test_listeners_see_committed_rows_only_after_commit(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    seen: list[list[Row]] = []
    ob.subscribe(seen.append)
    put_telemetry(ob, 4)
    assert seen == []  # put() alone publishes nothing
    await ob.flush()
    assert [r.seq for r in seen[0]] == [1, 2, 3, 4]
    await ob.close()


async def test_cap_evicts_oldest_telemetry_first_and_counts(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=1024 * 1024)
    await ob.open()
    ob.put(Lane.ALARM, "campus/s/g/alarms", device="d", kind="alarm", ts=1.0, data={"x": 1})
    big = "x" * 900
    for i in range(3000):
        ob.put(
            Lane.TELEMETRY,
            "campus/s/g/telemetry/d",
            device="d",
            kind="telemetry",
            ts=float(i),
            data={"blob": big, "i": i},
            quality="good",
        )
    await ob.flush()  # a commit checks the cap
    evicted = ob.dropped["telemetry"]
    assert evicted > 0
    assert await ob.size_bytes() <= 1024 * 1024
    assert await ob.enforce_cap() == 0  # under the cap now: nothing more to do
    assert ob.dropped["telemetry"] == evicted
    assert ob.dropped["alarm"] == 0
    left = await ob.fetch(Lane.TELEMETRY, 0, ob.next_seq, 10_000)
    # the oldest went first: what is left is one contiguous tail
    assert [r.seq for r in left] == list(range(left[0].seq, ob.next_seq))
    assert len(await ob.fetch(Lane.ALARM, 0, ob.next_seq, 10)) == 1
    stats = await ob.stats()
    assert stats["dropped"]["telemetry"] == evicted
    await ob.close()
    # the count survives a restart, so health keeps reporting it
    ob2 = Outbox(tmp_path / "o.db", max_bytes=1024 * 1024)
    await ob2.open()
    assert ob2.dropped["telemetry"] == evicted
    await ob2.close()


async def test_unencodable_data_does_not_poison_the_batch(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    put_telemetry(ob, 1)
    ob.put(Lane.TELEMETRY, "t", device="d", kind="telemetry", ts=1.0, data={"v": float("nan")})
    put_telemetry(ob, 1)
    rows = await ob.flush()
    assert [r.seq for r in rows] == [1, 2, 3]
    bad = json.loads(rows[1].payload)
    assert bad["quality"] == "bad"
    assert "error" in bad["data"]
    await ob.close()


def test_ulid_and_iso_timestamps() -> None:
    ids = {new_ulid(1.0) for _ in range(1000)}
    assert len(ids) == 1000
    assert new_ulid(1.0) < new_ulid(2.0)
    assert iso_ms(0.1234) == "1970-01-01T00:00:00.123Z"


@pytest.mark.parametrize("lane", list(Lane))
async def test_alarm_lane_commits_without_waiting(tmp_path: Path, lane: Lane) -> None:
    ob = Outbox(tmp_path / "o.db", commit_interval_s=3600)
    await ob.open()
    ob.put(lane, "t", device="d", kind=lane.name.lower(), ts=1.0, data={})
    # only alarms wake the commit loop at once
    assert ob._wake.is_set() is (lane is Lane.ALARM)
    await ob.close()


async def test_a_clock_stepped_back_does_not_stop_the_size_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_agent.outbox.store as outbox_mod

    clock = {"wall": 1_790_000_000.0, "mono": 100.0}
    monkeypatch.setattr(outbox_mod.time, "time", lambda: clock["wall"])
    monkeypatch.setattr(outbox_mod.time, "monotonic", lambda: clock["mono"])
    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    checks: list[float] = []

    async def counting_cap() -> int:
        checks.append(clock["mono"])
        return 0

    monkeypatch.setattr(ob, "enforce_cap", counting_cap)
    try:
        put_telemetry(ob, 1)
        await ob.flush()
        assert len(checks) == 1
        clock["wall"] -= 3600  # someone sets the clock an hour back
        clock["mono"] += 11  # while real time goes on
        put_telemetry(ob, 1)
        await ob.flush()
        assert len(checks) == 2  # the cap is still checked every 10 s
    finally:
        await ob.close()


async def test_concurrent_flushes_take_turns(tmp_path: Path) -> None:
    import asyncio

    ob = Outbox(tmp_path / "outbox.db")
    await ob.open()
    try:
        put_telemetry(ob, 3)
        first = asyncio.create_task(ob.flush())  # the group-commit task, mid-commit ...
        await asyncio.sleep(0)
        put_telemetry(ob, 2)
        second = await ob.flush()  # ... when the agent's stop flushes too
        assert [r.seq for r in await first] == [1, 2, 3]
        assert [r.seq for r in second] == [4, 5]
        assert (await ob.stats())["depth"] == 5
    finally:
        await ob.close()


async def test_a_waiting_commit_is_committed_soon_not_at_the_end_of_the_interval(
    tmp_path: Path,
) -> None:
    """A door controller waits in commit() for its records to be durable: the group commit
    comes within commit_soon_s, not after a whole commit_interval_s."""
    ob = Outbox(tmp_path / "o.db", commit_interval_s=3600)
    await ob.open()

    async def commit_loop() -> None:  # what the supervisor runs
        while True:
            await ob.wait_for_work()
            await ob.flush()

    loop = asyncio.create_task(commit_loop())
    try:
        msg = Outbox.message(Lane.EVENT, "t", device="d", kind="event", ts=1.0, data={})
        # a deadline far below the hour-long interval, far above commit_soon_s
        await asyncio.wait_for(ob.commit([msg], {("d", "cursor"): "1"}), 30)
        assert ob.cursor("d") == "1"
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await ob.close()
