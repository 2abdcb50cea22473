"""The push-device link: events and cursor in one transaction, never ahead of the disk
(issue 8, items 1 and 2)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.envelope import Lane
from edge_agent.errors import NotDurableError
from edge_agent.link import Event, OutboxLink
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline import ClockGate, Pipeline, Pseudonymiser
from edge_agent.pipeline.sink import OutboxSink
from tests.outbox_helpers import fill_disk

ROOT = "campus/s/g"


class Clock:
    def __init__(self, synced: bool = True) -> None:
        self.is_synced = synced

    def wall(self) -> float:
        return 1_800_000_000.0

    def mono(self) -> float:
        return 1000.0

    def synced(self) -> bool:
        return self.is_synced


class States:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, device: str, payload: dict[str, Any]) -> None:
        self.seen.append((device, payload))


def make_link(ob: Outbox, clock: Clock | None = None, states: States | None = None) -> OutboxLink:
    states = states or States()
    pipeline = Pipeline(
        [Pseudonymiser(None), ClockGate(clock or Clock(), hold_max_s=60)],
        OutboxSink(_Inner(ob), ob, ROOT, states),
    )
    return OutboxLink("door1", outbox=ob, pipeline=pipeline, state_sink=states)


class _Inner:
    def __init__(self, ob: Outbox) -> None:
        self.ob = ob

    def telemetry(self, device_id: str, data: dict[str, Any], **kw: Any) -> None:
        self.ob.put(
            Lane.TELEMETRY, f"{ROOT}/telemetry/{device_id}", device=device_id, kind="telemetry",
            ts=kw.get("ts") or 0.0, data=data, quality=kw.get("quality", "good"),
        )  # fmt: skip

    def event(self, device_id: str, type_: str, data: dict[str, Any], **kw: Any) -> None:
        raise AssertionError("link events never go through the emitter")


async def committing(ob: Outbox, coro: Any) -> None:
    """Run a commit while a group-commit task flushes, as the agent's outbox task does."""
    task = asyncio.create_task(coro)
    while not task.done():
        await ob.flush()
        await asyncio.sleep(0)
    await task


def records(first: int, n: int) -> list[Event]:
    return [
        Event("card_read", {"record": i}, ts=1_800_000_000.0 + i) for i in range(first, first + n)
    ]


async def on_disk(ob: Outbox) -> list[tuple[int, dict[str, Any]]]:
    rows = await ob.fetch(Lane.EVENT, 0, 10**9, 10**6)
    return [(r.seq, json.loads(r.payload)) for r in rows]


async def test_events_and_cursor_commit_together_and_the_cursor_survives_restart(
    tmp_path: Path,
) -> None:
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    link = make_link(ob)
    assert link.cursor is None
    await committing(ob, link.commit(records(1, 3), cursor="3"))
    # on disk at the moment commit returns: read with a second connection
    import sqlite3

    with sqlite3.connect(tmp_path / "o.db") as other:
        assert other.execute("SELECT value FROM device_state WHERE device='door1'").fetchall() == [
            ("3",)
        ]
        assert other.execute(
            "SELECT COUNT(*) FROM outbox WHERE lane=?", (int(Lane.EVENT),)
        ).fetchone() == (3,)
    assert link.cursor == "3"
    got = await on_disk(ob)
    assert [m["data"]["record"] for _, m in got] == [1, 2, 3]
    assert {m["type"] for _, m in got} == {"card_read"}
    assert got[0][1]["ts"].startswith("2027-01-15T08:")
    await ob.close()

    ob2 = Outbox(tmp_path / "o.db")
    await ob2.open()
    assert make_link(ob2).cursor == "3"
    await ob2.close()


async def test_a_full_disk_refuses_the_commit_and_leaves_no_seq_hole(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", memory_max=1000)
    await ob.open()
    link = make_link(ob)
    await committing(ob, link.commit(records(1, 2), cursor="2"))
    await fill_disk(ob.db)
    # polled telemetry in the same group commit is held in memory as before ...
    for i in range(40):
        link.telemetry({"i": i, "pad": "x" * 400})
    with pytest.raises(NotDurableError):
        await committing(ob, link.commit(records(3, 40), cursor="42"))
    assert ob.mode == "memory"
    # ... the device's records are not: the cursor did not move, memory holds none of them
    assert link.cursor == "2"
    held = await ob.fetch(Lane.EVENT, 0, 10**9, 10**6)
    assert [json.loads(r.payload)["data"]["record"] for r in held] == [1, 2]
    telemetry = await ob.fetch(Lane.TELEMETRY, 0, 10**9, 10**6)
    assert [r.seq for r in telemetry] == list(range(3, 43))  # their seqs were given back

    await ob.db.execute("PRAGMA max_page_count=1073741823")  # space is back: the device resends
    await committing(ob, link.commit(records(3, 40), cursor="42"))
    assert link.cursor == "42"
    got = await on_disk(ob)
    assert [m["data"]["record"] for _, m in got] == list(range(1, 43))
    every = sorted(
        [s for s, _ in got] + [r.seq for r in await ob.fetch(Lane.TELEMETRY, 0, 10**9, 10**6)]
    )
    assert every == list(range(1, len(every) + 1))  # gapless
    await ob.close()


async def test_the_clock_gate_refuses_the_commit_instead_of_holding_it(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    clock = Clock(synced=False)
    link = make_link(ob, clock)
    with pytest.raises(NotDurableError, match="clock"):
        await link.commit(records(1, 1), cursor="1")
    await ob.flush()
    assert link.cursor is None
    assert await on_disk(ob) == []
    await ob.close()


async def test_state_is_published_like_a_polled_device_and_only_on_change(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    await ob.open()
    states = States()
    link = make_link(ob, states=states)
    link.state("online")
    link.state("online")
    link.state("degraded", "reader 2 silent")
    link.state("offline", "no frame for 60 s")
    assert [(d, p["state"], p["last_error"]) for d, p in states.seen] == [
        ("door1", "online", None),
        ("door1", "degraded", "reader 2 silent"),
        ("door1", "offline", "no frame for 60 s"),
    ]
    assert set(states.seen[0][1]) == {"state", "since", "last_error"}
    assert states.seen[0][1]["since"].endswith("Z")
    await ob.close()


async def test_health_counts_push_devices_by_the_state_their_link_reported(
    tmp_path: Path,
) -> None:
    """ROOT/health's device counts cover push devices too, not only polled ones."""
    from edge_agent import registry
    from edge_agent.config.loader import load_config
    from edge_agent.supervisor import Agent
    from tests.push_fixture_driver import install

    saved = dict(registry.BUILTIN), registry._cache
    install()
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        "mqtt: {host: 127.0.0.1}\n"
        "clock: {sync_check: none}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n"
        "devices:\n"
        "  - {id: door-a, kind: pushfixture, port: 9}\n"
        "  - {id: door-b, kind: pushfixture, port: 9}\n"
        "  - {id: door-c, kind: pushfixture, port: 9}\n"
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    await agent.outbox.open()
    try:
        agent.links["door-a"].state("online")
        agent.links["door-b"].state("offline", "no answer")
        devices = (await agent.health())["devices"]
    finally:
        await agent.outbox.close()
        registry.BUILTIN.clear()
        registry.BUILTIN.update(saved[0])
        registry._cache = saved[1]
    assert devices == {"total": 3, "online": 1, "offline": 1, "degraded": 0}
