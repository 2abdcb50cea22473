"""The agent against a real mosquitto and the simulated campus, in one event loop.

What the platform sees: retained status/meta/state, telemetry envelopes with
gapless seq, device state changes, commands and their answers, and the backlog
after a broker outage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.loader import load_config
from edge_agent.simulators.campus import CampusSim
from edge_agent.supervisor import Agent
from tests.contract import SeqTracker, check_envelope
from tests.e2e.helpers import agent_config
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber, publish
from tests.outbox_helpers import fill_disk

pytestmark = pytest.mark.integration

ROOT = "campus/test-school/gw1"


def write_config(
    tmp_path: Path, broker: MqttBroker, sim: CampusSim, publish: dict[str, Any] | None = None
) -> Path:
    return agent_config(
        tmp_path,
        broker,
        sim.layout,
        site={"id": "test-school"},
        device={"interval_s": 0.5, "timeout_s": 0.2, "offline_after": 2},
        mqtt={"health_interval_s": 1, "reconnect_max_s": 1},
        outbox={"commit_interval_ms": 50},
        publish=publish or {},
    )


@pytest.fixture
async def sim() -> AsyncIterator[CampusSim]:
    async with CampusSim(classrooms=1, meters=2, speed=0, seed=7) as s:
        yield s


class Running:
    def __init__(self, agent: Agent, task: asyncio.Task[None]) -> None:
        self.agent = agent
        self.task = task

    async def stop(self) -> None:
        self.agent.stop()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def running(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> AsyncIterator[Running]:
    cfg_path = write_config(tmp_path, mqtt_broker, sim)
    agent = Agent(load_config(cfg_path), cfg_path)
    task = asyncio.create_task(agent.run())
    r = Running(agent, task)
    yield r
    if not task.done():
        await r.stop()


async def wait(sub: Any, count: int, pred: Any, timeout: float = 10.0) -> list[Received]:
    result: list[Received] = await asyncio.to_thread(sub.wait_for_count, count, pred, timeout)
    return result


def on(topic: str) -> Any:
    return lambda m: m.topic == topic


async def test_platform_sees_status_meta_state_and_gapless_telemetry(
    mqtt_broker: MqttBroker,
    sim: CampusSim,
    running: Running,
) -> None:
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
        devices = sim.device_ids
        await wait(sub, 3 * len(devices), lambda m: "/telemetry/" in m.topic)
        status = (await wait(sub, 1, on(f"{ROOT}/status")))[0]
        st = json.loads(status.payload)
        assert st["state"] == "online"
        assert st["devices"] == len(devices)
        assert st["epoch"] == running.agent.outbox.epoch
        assert st["agent_version"]
        for dev in devices:
            meta = json.loads((await wait(sub, 1, on(f"{ROOT}/devices/{dev}/meta")))[0].payload)
            assert meta["kind"] == "modbus"
            assert meta["location"]["building"]
            assert all("unit" in m and "description" in m for m in meta["metrics"].values())
            state = json.loads((await wait(sub, 1, on(f"{ROOT}/devices/{dev}/state")))[0].payload)
            assert state["state"] == "online"
            assert state["last_error"] is None

        tracker = SeqTracker()
        for m in sub.messages:
            if "/telemetry/" in m.topic:
                assert not m.retain
                assert m.qos == 1
                msg = check_envelope(m.payload, "telemetry", device=m.topic.rsplit("/", 1)[1])
                assert msg["historical"] is False
                tracker.add(msg)
        epoch = running.agent.outbox.epoch
        assert tracker.holes(epoch) == []
        assert min(tracker.seqs[epoch]) == 1

        # the values are the simulated devices' (speed=0 freezes the simulated world)
        air = next(d for d in devices if d.endswith("-air"))
        last = next(m for m in reversed(sub.messages) if m.topic == f"{ROOT}/telemetry/{air}")
        data = json.loads(last.payload)["data"]
        for metric, value in sim.truth(air).items():
            if metric in data:
                assert data[metric] == pytest.approx(value, abs=1e-6), metric

    # a retained status tells a late subscriber the agent is online; a clean stop says so
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/status") as late:
        msg = (await wait(late, 1, lambda m: m.retain))[0]
        assert json.loads(msg.payload)["state"] == "online"
        await running.stop()
        bye = await wait(late, 1, lambda m: json.loads(m.payload)["state"] == "offline")
        assert json.loads(bye[0].payload)["reason"] == "shutdown"


async def test_dead_device_goes_offline_and_comes_back(
    mqtt_broker: MqttBroker,
    sim: CampusSim,
    running: Running,
) -> None:
    dev = next(d for d in sim.device_ids if d.startswith("meter"))
    topic = f"{ROOT}/devices/{dev}/state"
    with mqtt_subscriber(mqtt_broker, topic) as sub:
        await wait(sub, 1, lambda m: json.loads(m.payload)["state"] == "online")
        sim.set_fault(dev, "no_answer")
        off = await wait(sub, 1, lambda m: json.loads(m.payload)["state"] == "offline")
        assert (
            "0.2" in json.loads(off[0].payload)["last_error"]
            or json.loads(off[0].payload)["last_error"]
        )
        sim.clear_fault(dev)
        # backoff after offline starts at 1 s: it is back within a few seconds
        sub.clear()
        await wait(sub, 1, lambda m: json.loads(m.payload)["state"] == "online", timeout=15)
    # the other devices never stalled meanwhile
    other = next(d for d in sim.device_ids if d != dev)
    assert running.agent.loops[other].health.failures == 0


async def test_exception_response_and_out_of_range_are_reported(
    mqtt_broker: MqttBroker,
    sim: CampusSim,
    running: Running,
) -> None:
    air = next(d for d in sim.device_ids if d.endswith("-air"))
    with mqtt_subscriber(
        mqtt_broker, [f"{ROOT}/devices/{air}/state", f"{ROOT}/telemetry/{air}"]
    ) as sub:
        await wait(sub, 1, lambda m: "/telemetry/" in m.topic)
        sim.set_fault(air, "out_of_range", metric="co2", value=9000)
        m = await wait(
            sub,
            1,
            lambda m: "/telemetry/" in m.topic and json.loads(m.payload)["quality"] == "uncertain",
        )
        assert json.loads(m[0].payload)["data"]["co2"] == 9000
        state = await wait(
            sub,
            1,
            lambda m: m.topic.endswith("/state") and json.loads(m.payload)["state"] == "degraded",
        )
        assert "co2" in json.loads(state[0].payload)["last_error"]
        sim.set_fault(air, "exception", code=4)
        state = await wait(
            sub,
            1,
            lambda m: (
                m.topic.endswith("/state")
                and "exception" in (json.loads(m.payload)["last_error"] or "").lower()
            ),
        )
        sim.clear_fault(air)


async def cmd(
    broker: MqttBroker, sub: Any, command: str, payload: bytes | str, request_id: str
) -> dict[str, Any]:
    publish(broker, f"{ROOT}/cmd/{command}", payload)
    got = await wait(sub, 1, on(f"{ROOT}/cmd_result/{request_id}"))
    result: dict[str, Any] = json.loads(got[0].payload)
    return result


async def test_commands_answer_and_bad_ones_change_nothing(
    mqtt_broker: MqttBroker,
    sim: CampusSim,
    running: Running,
) -> None:
    air = next(d for d in sim.device_ids if d.endswith("-air"))
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
        await wait(sub, 1, lambda m: "/telemetry/" in m.topic)
        ping = await cmd(mqtt_broker, sub, "agent_ping", '{"request_id": "p1"}', "p1")
        assert ping["ok"] is True
        assert ping["result"]["pong"] is True

        bad = await cmd(mqtt_broker, sub, "agent_ping", b"{not json", "invalid")
        assert bad["ok"] is False
        assert "JSON" in bad["error"]
        assert bad["request_id"] is None

        unknown = await cmd(mqtt_broker, sub, "agent_reboot", '{"request_id": "u1"}', "u1")
        assert unknown["ok"] is False
        assert "unknown command" in unknown["error"]

        big = json.dumps({"request_id": "big1", "pad": "x" * 70000})
        over = await cmd(mqtt_broker, sub, "agent_ping", big, "big1")
        assert over["ok"] is False
        assert "64 KiB" in over["error"]

        missing = await cmd(
            mqtt_broker,
            sub,
            "device_write",
            json.dumps({"request_id": "w0", "device": air, "point": "co2"}),
            "w0",
        )
        assert missing["ok"] is False
        assert "value" in missing["error"]

        nowhere = await cmd(
            mqtt_broker,
            sub,
            "device_write",
            json.dumps({"request_id": "w1", "device": "no-such", "point": "x", "value": 1}),
            "w1",
        )
        assert nowhere["ok"] is False
        assert "unknown device" in nowhere["error"]

        readonly = await cmd(
            mqtt_broker,
            sub,
            "device_write",
            json.dumps({"request_id": "w2", "device": air, "point": "co2", "value": 500}),
            "w2",
        )
        assert readonly["ok"] is False
        assert "read-only" in readonly["error"]
        assert sim.truth(air)["co2"] != 500

        out_of_range = await cmd(
            mqtt_broker,
            sub,
            "device_write",
            json.dumps(
                {"request_id": "w3", "device": air, "point": "modbus_address", "value": 999}
            ),
            "w3",
        )
        assert out_of_range["ok"] is False

        ok = await cmd(
            mqtt_broker,
            sub,
            "device_write",
            json.dumps({"request_id": "w4", "device": air, "point": "modbus_address", "value": 17}),
            "w4",
        )
        assert ok["ok"] is True, ok

        ack = await cmd(
            mqtt_broker,
            sub,
            "alarm_ack",
            json.dumps({"request_id": "a1", "alarm_id": "nope", "by": "guard"}),
            "a1",
        )
        assert ack["ok"] is False
        assert "nope" in ack["error"]


async def test_broker_outage_backlog_is_delivered_marked_historical(
    tmp_path: Path,
    fresh_mqtt_broker: MqttBroker,
    sim: CampusSim,
) -> None:
    broker = fresh_mqtt_broker
    # A slow drain, so that the backlog is still going out when our subscriber is back.
    cfg_path = write_config(tmp_path, broker, sim, publish={"backlog_rate_max": 10})
    agent = Agent(load_config(cfg_path), cfg_path)
    task = asyncio.create_task(agent.run())
    try:
        with mqtt_subscriber(broker, f"{ROOT}/telemetry/#") as sub:
            await wait(sub, 2, lambda m: True)
        broker.stop()
        await asyncio.sleep(2.5)  # the devices keep being polled meanwhile
        assert not agent.publisher.connected.is_set()
        backlog_top = agent.outbox.next_seq - 1
        broker.start()
        with mqtt_subscriber(broker, f"{ROOT}/telemetry/#") as sub:
            await asyncio.wait_for(agent.publisher.connected.wait(), 10)
            # everything committed during the outage arrives, flagged historical,
            # while live messages already flow (the backlog drains at 10/s)
            await asyncio.to_thread(
                sub.wait_for, lambda m: json.loads(m.payload)["seq"] == backlog_top, 15
            )
            msgs = [check_envelope(m.payload, "telemetry") for m in sub.messages]
        by_seq = {m["seq"]: m for m in msgs}
        hist = sorted(s for s, m in by_seq.items() if m["historical"])
        live = sorted(s for s, m in by_seq.items() if not m["historical"])
        assert hist, "no historical messages after the outage"
        assert max(hist) <= backlog_top < min(live)
        # live traffic was not held back behind the slow backlog
        first_live = next(i for i, m in enumerate(msgs) if not m["historical"])
        last_hist = max(i for i, m in enumerate(msgs) if m["historical"])
        assert first_live < last_hist
        # from the first historical message on, nothing of the backlog is missing
        assert [s for s in range(hist[0], backlog_top + 1) if s not in by_seq] == []
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def test_alarm_raised_during_outage_goes_out_before_the_backlog(
    tmp_path: Path,
    persistent_mqtt_broker: MqttBroker,
    sim: CampusSim,
) -> None:
    from tests.e2e.helpers import PersistentSubscriber

    broker = persistent_mqtt_broker
    cfg_path = write_config(tmp_path, broker, sim, publish={"backlog_rate_max": 20})
    agent = Agent(load_config(cfg_path), cfg_path)
    task = asyncio.create_task(agent.run())
    platform = await asyncio.to_thread(PersistentSubscriber, broker, f"{ROOT}/#")
    try:
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(2)  # telemetry piles up in the outbox
        alarm = agent.alarms.raise_("outbox_disk_full", "gw1", "major", en="test", zh="测试")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.start)

        def arrived(msgs: list[tuple[float, str, bytes]]) -> bool:
            return any(t == f"{ROOT}/alarms" for _x, t, _p in msgs)

        await asyncio.to_thread(platform.wait, arrived, 15, "the alarm")
        await asyncio.sleep(1)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await asyncio.to_thread(platform.close)
    kinds = []
    for _x, topic, payload in platform.messages:
        if topic == f"{ROOT}/alarms":
            kinds.append("alarm")
        elif "/telemetry/" in topic and json.loads(payload)["historical"]:
            kinds.append("historical")
    # the alarm was raised after the backlog had piled up, yet arrives before all of it
    assert kinds.index("alarm") < kinds.index("historical")
    assert kinds.count("historical") > 5
    msg = next(json.loads(p) for _x, t, p in platform.messages if t == f"{ROOT}/alarms")
    check_envelope(json.dumps(msg).encode(), "alarm")
    assert msg["data"]["alarm_id"] == alarm.alarm_id
    assert msg["historical"] is True  # it too waited for the link


async def test_full_disk_holds_messages_in_memory_and_says_so(
    tmp_path: Path,
    persistent_mqtt_broker: MqttBroker,
    sim: CampusSim,
) -> None:
    from tests.e2e.helpers import PersistentSubscriber

    broker = persistent_mqtt_broker
    cfg_path = write_config(tmp_path, broker, sim)
    agent = Agent(load_config(cfg_path), cfg_path)
    task = asyncio.create_task(agent.run())
    platform = await asyncio.to_thread(PersistentSubscriber, broker, f"{ROOT}/#")

    def seen(pred: Any) -> Any:
        return lambda msgs: any(pred(t, p) for _x, t, p in msgs)

    try:
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        # While the link is down nothing is deleted, so every commit needs new pages;
        # SQLite's max_page_count then fails it with SQLITE_FULL, as a full disk does.
        await asyncio.to_thread(broker.stop)
        db = agent.outbox.db
        await fill_disk(db)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if agent.outbox.mode == "memory":
                break
        assert agent.outbox.mode == "memory"
        await asyncio.sleep(1)  # readings go on, into memory
        health = await agent.health()  # what ROOT/health says now
        assert health["outbox"]["mode"] == "memory"
        assert "full" in health["outbox"]["disk_error"]
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(
            platform.wait,
            seen(
                lambda t, p: (
                    t == f"{ROOT}/alarms" and json.loads(p)["data"]["rule"] == "outbox_disk_full"
                )
            ),
            15,
            "the disk-full alarm",
        )
        await db.execute("PRAGMA max_page_count=1073741823")  # space is back
        await asyncio.to_thread(
            platform.wait,
            seen(
                lambda t, p: (
                    t == f"{ROOT}/alarms" and json.loads(p)["data"]["state"] == "cleared_unacked"
                )
            ),
            15,
            "the alarm to clear",
        )
        await asyncio.sleep(1.5)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await asyncio.to_thread(platform.close)
    tracker = SeqTracker()
    for _x, topic, payload in platform.messages:
        if "/telemetry/" in topic or topic == f"{ROOT}/alarms":
            tracker.add(
                check_envelope(payload, "alarm" if topic.endswith("/alarms") else "telemetry")
            )
    (epoch,) = tracker.seqs
    # what was held in memory reached the platform: nothing is missing
    assert tracker.holes(epoch) == []
    assert agent.outbox.dropped["telemetry"] == 0
