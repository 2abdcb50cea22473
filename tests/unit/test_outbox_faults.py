"""The outbox under corruption, a full disk and a power cut (issues 3 and 7)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.alarms.lifecycle import Alarm
from edge_agent.config.loader import load_config
from edge_agent.envelope import Lane
from edge_agent.outbox.store import Outbox
from edge_agent.supervisor import Agent
from tests.e2e import system
from tests.outbox_helpers import fill_disk

REPO = Path(__file__).resolve().parents[2]


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


async def die_with_messages_in_memory(path: Path, held: int) -> int:
    """An outbox whose disk filled up while ``held`` messages came in (memory mode), then
    the process died before a commit worked: returns the seq it would have handed out next."""
    ob = Outbox(path)
    await ob.open()
    put(ob, 3)
    await ob.flush()
    await fill_disk(ob.db)
    put(ob, held, size=1000)
    await ob.flush()
    assert ob.mode == "memory"
    top = ob.next_seq
    await ob.db.close()  # the crash
    ob._db = None
    return top


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
    await fill_disk(ob.db)
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
    # the evictions from memory still explain their seq holes after a restart
    ob2 = Outbox(tmp_path / "o.db")
    await ob2.open()
    assert ob2.dropped["telemetry"] == 50
    await ob2.close()


async def test_crash_while_disk_full_never_reuses_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    top = await die_with_messages_in_memory(path, 50)

    ob2 = Outbox(path)
    await ob2.open()
    # the seqs handed out in memory are never handed out again
    assert ob2.dropped["lost_in_memory"] == top - 4
    assert ob2.lost_at_start == top - 4
    # nor the rest of the reservation: the stop was not clean
    assert ob2.skipped == (top, ob2.next_seq - 1)
    put(ob2, 1)
    (row,) = await ob2.flush()
    assert row.seq == ob2.next_seq - 1 >= top
    await ob2.close()

    # the counts survive the next restart, and a clean stop skips nothing more
    ob3 = Outbox(path)
    await ob3.open()
    assert ob3.dropped["lost_in_memory"] == top - 4
    assert ob3.skipped is None
    assert ob3.next_seq == row.seq + 1
    await ob3.close()


async def test_every_commit_is_synchronous_full(tmp_path: Path) -> None:
    """A committed row survives a power cut: the group commit fsyncs the WAL."""
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    put(ob, 3)  # telemetry, not only alarms
    await ob.flush()
    ((level,),) = await ob.db.execute_fetchall("PRAGMA synchronous")
    assert level == 2  # FULL
    await ob.close()


async def test_a_clean_stop_skips_no_seq(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    await ob.open()
    put(ob, 5)
    await ob.flush()
    await ob.close()
    ob2 = Outbox(path)
    await ob2.open()
    assert ob2.skipped is None
    assert ob2.next_seq == 6
    assert (await ob2.stats())["skipped"] == {"total": 0, "last": None}
    await ob2.close()


# The outbox in a process of its own: numbered batches, each printed once committed
# (the publisher could send it from then on), until the test kills it.
_CHILD = """
import asyncio, json, sys
from edge_agent.supervisor import Agent
from edge_agent.config.loader import load_config
from edge_agent.envelope import Lane
from edge_agent.outbox.store import Outbox

async def main():
    ob = Outbox(sys.argv[1])
    await ob.open()
    for b in range(int(sys.argv[2])):
        for i in range(10):
            ob.put(Lane.TELEMETRY, "campus/s/g/telemetry/d", device="d", kind="telemetry",
                   ts=1.8e9 + b, data={"b": b, "i": i}, quality="good")
        for r in await ob.flush():
            print(json.dumps({"seq": r.seq, "msg_id": json.loads(r.payload)["msg_id"]}),
                  flush=True)
    print("done", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_power_cut_losing_the_wal_tail_never_reuses_a_seq(tmp_path: Path) -> None:
    """kill -9, then the WAL loses its last commits: seqs already handed out (and
    maybe published) are never handed out again with other content, and the skip
    is reported."""
    path = tmp_path / "o.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), "20"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    published: dict[int, str] = {}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "done":
                break
            m = json.loads(line)
            published[m["seq"]] = m["msg_id"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert sorted(published) == list(range(1, 201))
    assert system.drop_last_wal_commits(path.with_name("o.db-wal"), 3) > 0

    ob = Outbox(path)
    await ob.open()
    on_disk = {r.seq for r in await ob.fetch(Lane.TELEMETRY, 0, 10**9, 10**6)}
    lost = set(published) - on_disk
    assert lost == set(range(171, 201))  # the storage really lost three batches
    put(ob, 30)
    new = await ob.flush()
    assert not {r.seq for r in new} & set(published), "a published seq was handed out again"
    assert ob.skipped is not None
    first, last = ob.skipped
    assert lost <= set(range(first, last + 1))  # the platform can tell the skip from a loss
    assert first == 171
    stats = await ob.stats()
    assert stats["skipped"]["total"] == last - first + 1
    assert stats["skipped"]["last"]["from"] == 171
    await ob.close()


# Open an outbox on a filesystem that is completely full, as the agent does at start.
_FULL_CHILD = """
import asyncio, json, sys
from edge_agent.supervisor import Agent
from edge_agent.config.loader import load_config
from edge_agent.envelope import Lane
from edge_agent.outbox.store import Outbox

async def main():
    ob = Outbox(sys.argv[1])
    await ob.open()
    rows = await ob.fetch(Lane.TELEMETRY, 0, ob.next_seq, 1000)
    ob.put(Lane.TELEMETRY, "campus/s/g/telemetry/d", device="d", kind="telemetry",
           ts=1.8e9, data={"new": 1}, quality="good")
    new = await ob.flush()
    print(json.dumps({"epoch": ob.epoch, "recovered_from": ob.recovered_from,
                      "seqs": [r.seq for r in rows], "new": [r.seq for r in new],
                      "mode": ob.mode}))
    await ob.close()

asyncio.run(main())
"""


async def test_a_full_disk_at_start_is_not_corruption(tmp_path: Path) -> None:
    """A healthy outbox with unsent rows on a disk with no byte free: kept, same
    epoch, its rows readable, new messages numbered after them (in memory)."""
    why = system.namespaces_unusable()
    if why is not None:
        pytest.skip(why)
    seed, state = tmp_path / "seed", tmp_path / "state"
    seed.mkdir()
    state.mkdir()
    ob = Outbox(seed / "outbox.db")
    await ob.open()
    epoch = ob.epoch
    put(ob, 27)
    await ob.flush()
    await ob.close()
    res = subprocess.run(
        [
            *system.full_tmpfs_prefix(state, seed, size_kib=256),
            sys.executable,
            "-c",
            _FULL_CHILD,
            str(state / "outbox.db"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["recovered_from"] is None, res.stderr
    assert out["epoch"] == epoch
    assert out["seqs"] == list(range(1, 28))
    assert out["new"][0] >= 28
    assert out["mode"] == "memory"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(cond: Callable[[], object], what: str) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_messages_lost_in_memory_mode_reach_health_and_raise_an_alarm(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    # An earlier run died while the disk was full, with messages held in memory.
    await die_with_messages_in_memory(path, 40)

    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        f"mqtt: {{host: 127.0.0.1, port: {_closed_port()}, reconnect_max_s: 1}}\n"
        f"outbox: {{path: {path}, commit_interval_ms: 50}}\n"
        "clock: {sync_check: none}\n"
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    task = asyncio.create_task(agent.run())

    def lost_alarm() -> list[Alarm]:
        return [a for a in agent.alarms.alarms.values() if a.rule == "outbox_data_lost"]

    try:
        await _until(lambda: agent.outbox.epoch and lost_alarm(), "the data-lost alarm")
        (alarm,) = lost_alarm()
        assert alarm.value == 40
        assert alarm.state == "cleared_unacked"
        health = await agent.health()
        assert health["dropped"]["lost_in_memory"] == 40
        assert health["lost"]["in_memory_at_last_stop"] == 40
        # the seqs skipped after the unclean stop: on health and as an event
        skipped = health["outbox"]["skipped"]["last"]
        assert skipped["from"] == 44
        await _until(lambda: agent.outbox.committed_total > 0, "the event's commit")
        events = await agent.outbox.fetch(Lane.EVENT, 0, agent.outbox.next_seq, 10)
        (event,) = [json.loads(r.payload) for r in events]
        assert event["type"] == "seq_skipped"
        assert event["seq"] == skipped["to"] + 1
        assert (event["data"]["from"], event["data"]["to"]) == (skipped["from"], skipped["to"])

        # Now the disk fills during this run and the memory queue overflows.
        agent.alarms.ack(alarm.alarm_id, "test")
        agent.outbox.memory_max = 10
        db = agent.outbox.db
        await fill_disk(db)
        for i in range(30):
            agent.emitter.telemetry("d", {"i": i, "pad": "x" * 1000})
        await _until(lambda: lost_alarm(), "the alarm for messages dropped from memory")
        (alarm,) = lost_alarm()
        assert alarm.state == "active_unacked"
        health = await agent.health()
        # 30 readings and the two alarms in a queue of 10: the oldest telemetry went
        assert health["lost"]["evicted_from_memory"] == health["dropped"]["telemetry"] >= 20
        await db.execute("PRAGMA max_page_count=1073741823")  # space is back
        await _until(
            lambda: lost_alarm()[0].state == "cleared_unacked",
            "the alarm to clear",
        )
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def test_a_seq_file_from_before_the_reservation_is_understood(tmp_path: Path) -> None:
    """An upgraded gateway: ``outbox.db.seq`` still holds ``epoch next`` (the held seq)."""
    path = tmp_path / "o.db"
    ob = Outbox(path)
    await ob.open()
    put(ob, 5)
    await ob.flush()
    await ob.close()
    guard = path.with_name("o.db.seq")
    guard.write_bytes(f"{ob.epoch} {6:020d}\n".encode().ljust(64))  # a clean stop
    ob2 = Outbox(path)
    await ob2.open()
    assert (ob2.next_seq, ob2.skipped, ob2.lost_at_start) == (6, None, 0)
    await ob2.db.close()  # a crash while 4 messages were held in memory
    ob2._db = None
    guard.write_bytes(f"{ob.epoch} {10:020d}\n".encode().ljust(64))
    ob3 = Outbox(path)
    await ob3.open()
    assert (ob3.next_seq, ob3.skipped, ob3.lost_at_start) == (10, None, 4)
    await ob3.close()


# On a disk with no byte free: messages go to memory and are all delivered, so the
# memory queue runs empty while deletes still fail; then space is freed.
_DRAIN_CHILD = """
import asyncio, json, logging, os, sys
from pathlib import Path
from edge_agent.envelope import Lane
from edge_agent.outbox.store import Outbox

logging.basicConfig(level=logging.INFO, stream=sys.stderr)

async def main():
    state = Path(sys.argv[1])
    ob = Outbox(state / "outbox.db")
    await ob.open()
    seen = []
    ob.subscribe(lambda rows: seen.extend(r.seq for r in rows))
    modes = []
    for _ in range(3):
        for i in range(20):
            ob.put(Lane.TELEMETRY, "campus/s/g/telemetry/d", device="d", kind="telemetry",
                   ts=1.8e9, data={"i": i}, quality="good")
        await ob.flush()
        ob.ack([*seen, 1, 2, 3])  # everything delivered, the old rows too
        seen.clear()
        await ob.flush()  # deletes need space: fails, and the memory queue is empty
        modes.append((ob.mode, len(ob._mem)))
    (state / "filler").unlink()  # space is back
    ob.put(Lane.TELEMETRY, "campus/s/g/telemetry/d", device="d", kind="telemetry",
           ts=1.8e9, data={"i": -1}, quality="good")
    await ob.flush()
    print(json.dumps({"modes": modes, "after": ob.mode, "disk_error": ob.disk_error}))
    await ob.close()

asyncio.run(main())
"""


async def test_back_to_disk_even_when_everything_held_was_delivered(tmp_path: Path) -> None:
    """The publisher delivered everything memory held before space came back: the
    outbox still leaves memory mode (so its alarm clears), and says the disk is full
    once, not each time the memory queue ran empty."""
    why = system.namespaces_unusable()
    if why is not None:
        pytest.skip(why)
    seed, state = tmp_path / "seed", tmp_path / "state"
    seed.mkdir()
    state.mkdir()
    ob = Outbox(seed / "outbox.db")
    await ob.open()
    put(ob, 3)
    await ob.flush()
    await ob.close()
    res = subprocess.run(
        [
            *system.full_tmpfs_prefix(state, seed, size_kib=1024),
            sys.executable,
            "-c",
            _DRAIN_CHILD,
            str(state),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["modes"] == [["memory", 0]] * 3  # the situation this test is about
    assert (out["after"], out["disk_error"]) == ("disk", None), res.stderr
    assert res.stderr.count("cannot be written") == 1, res.stderr
    assert "writes work again" in res.stderr
