"""Commands no one can abuse: the agent against a real mosquitto and the simulated campus.

Requests are published the way a platform (or an attacker with a broker account)
would: MQTT 5 with response topics, correlation data and message expiry. The
signatures here are computed from the recipe in docs/mqtt.md, not with the
agent's own signing code, so a drift between the two fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config.loader import load_config
from edge_agent.mqtt.client import stop_network_thread
from edge_agent.simulators.campus import CampusSim
from edge_agent.supervisor import Agent
from tests.contract import TS
from tests.e2e.helpers import agent_config
from tests.mqtt_helpers import MqttBroker, MqttSubscriber, Received, mqtt_subscriber

pytestmark = pytest.mark.integration

# A site of its own: retained status/state from these agents must not meet other tests.
ROOT = "campus/test-commands/gw1"
KEY = "correct horse battery staple"


# -- the platform side ---------------------------------------------------------------------


class Platform:
    """One MQTT 5 client that publishes requests, with or without properties."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client

    def send(
        self,
        command: str,
        payload: dict[str, Any] | bytes | str,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        props = None
        if response_topic or correlation or expiry_s:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
            if expiry_s:
                props.MessageExpiryInterval = expiry_s
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        info = self.client.publish(f"{ROOT}/cmd/{command}", data, qos=1, properties=props)
        if wait:
            info.wait_for_publish(5)
            assert info.is_published()
        return info


@contextmanager
def platform(broker: MqttBroker) -> Iterator[Platform]:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-platform-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        assert connected.wait(5), "no CONNACK"
        yield Platform(client)
    finally:
        client.disconnect()
        stop_network_thread(client)


def now_iso(offset_s: float = 0.0) -> str:
    t = datetime.fromtimestamp(time.time() + offset_s, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def signed(command: str, request: dict[str, Any], key: str = KEY, offset_s: float = 0.0) -> dict:
    """Sign as docs/mqtt.md tells a platform developer to."""
    req = {**request, "sig_ts": now_iso(offset_s)}
    body = {k: v for k, v in req.items() if k not in ("request_id", "sig_ts", "sig")}
    canonical = "\n".join(
        [
            "edge-agent-cmd-v1",
            command,
            req["request_id"],
            req["sig_ts"],
            json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        ]
    )
    req["sig"] = hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return req


# -- the agent --------------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[CampusSim]:
    async with CampusSim(classrooms=1, meters=1, speed=0, seed=7) as s:
        yield s


@asynccontextmanager
async def running_agent(
    tmp_path: Path, broker: MqttBroker, sim: CampusSim, **overrides: Any
) -> AsyncIterator[Agent]:
    device = {
        "interval_s": 0.5,
        "timeout_s": 0.2,
        "offline_after": 2,
        **overrides.pop("device", {}),
    }
    cfg_path = agent_config(
        tmp_path,
        broker,
        sim.layout,
        site={"id": "test-commands"},
        device=device,
        mqtt={"health_interval_s": 1, "reconnect_max_s": 1},
        outbox={"commit_interval_ms": 50},
        **overrides,
    )
    agent = Agent(load_config(cfg_path), cfg_path)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def wait(sub: MqttSubscriber, count: int, pred: Any, timeout: float = 10.0) -> list[Received]:
    result: list[Received] = await asyncio.to_thread(sub.wait_for_count, count, pred, timeout)
    return result


def result_for(request_id: str) -> Any:
    return lambda m: m.topic == f"{ROOT}/cmd_result/{request_id}"


async def answer(sub: MqttSubscriber, request_id: str) -> dict[str, Any]:
    got: dict[str, Any] = (await wait(sub, 1, result_for(request_id)))[0].json()
    return got


def air_of(sim: CampusSim) -> str:
    return next(d for d in sim.device_ids if d.endswith("-air"))


# -- contract 1.1 names and times ---------------------------------------------------------


async def test_commands_have_underscore_names_and_answers_iso_times(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    async with running_agent(tmp_path, mqtt_broker, sim):
        with (
            mqtt_subscriber(mqtt_broker, f"{ROOT}/cmd_result/#") as sub,
            platform(mqtt_broker) as p,
        ):
            p.send("agent_ping", {"request_id": "p1"})
            ping = await answer(sub, "p1")
            assert ping["ok"] is True, ping
            assert TS.match(ping["result"]["ts"]), ping  # ISO 8601 UTC, ms, Z; not a float
            p.send("agent.ping", {"request_id": "p2"})
            old = await answer(sub, "p2")
            assert old["ok"] is False
            assert "unknown command" in old["error"]
            for name in ("agent_ping", "device_write", "alarm_ack", "alarm_shelve",
                         "camera_snapshot", "door_open"):  # fmt: skip
                assert name in old["error"]


TIME_KEYS = {"ts", "since", "until", "raised_at"}


def times_in(doc: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every value under a time-like key (``ts``, ``since``, ``*_at`` ...), anywhere in ``doc``."""
    found: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in TIME_KEYS or k.endswith("_at"):
                found.append((f"{path}.{k}", v))
            found += times_in(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += times_in(v, f"{path}[{i}]")
    return found


async def test_every_time_in_every_payload_is_iso_utc_with_ms(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    async with running_agent(tmp_path, mqtt_broker, sim) as agent:
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub, platform(mqtt_broker) as p:
            await wait(sub, 1, lambda m: m.topic == f"{ROOT}/health")
            await wait(sub, 1, lambda m: "/state" in m.topic)
            alarm = agent.alarms.raise_("outbox_disk_full", "gw1", "major", en="t", zh="t")
            p.send("agent_ping", {"request_id": "t1"})
            p.send(
                "alarm_shelve",
                {"request_id": "t2", "alarm_id": alarm.alarm_id, "by": "ops", "minutes": 5},
            )
            await answer(sub, "t1")
            assert (await answer(sub, "t2"))["ok"] is True
            await wait(sub, 2, lambda m: m.topic == f"{ROOT}/alarms")
            msgs = [m for m in sub.messages if m.payload and not m.topic.startswith(f"{ROOT}/cmd/")]
    kinds = {m.topic.split("/")[3] for m in msgs}
    assert {"status", "health", "devices", "telemetry", "alarms", "cmd_result"} <= kinds
    checked = 0
    for m in msgs:
        for where, value in times_in(m.json()):
            assert isinstance(value, str), (m.topic, where, value)
            assert TS.match(value), (m.topic, where, value)
            checked += 1
    assert checked > len(msgs)


# -- where answers go -------------------------------------------------------------------------


async def test_response_topic_outside_cmd_result_is_not_used(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    air = air_of(sim)
    other_gw = "campus/test-commands/gw2/cmd/device_write"
    async with running_agent(tmp_path, mqtt_broker, sim):
        with mqtt_subscriber(mqtt_broker, ["campus/#"]) as sub, platform(mqtt_broker) as p:
            # a request that would make this gateway command another one, or publish
            # onto its own telemetry
            p.send("agent_ping", {"request_id": "r1"}, response_topic=other_gw)
            p.send("agent_ping", {"request_id": "r2"}, response_topic=f"{ROOT}/telemetry/{air}")
            p.send("agent_ping", {"request_id": "r3"}, response_topic=f"{ROOT}/cmd_result/+")
            # ... and one that is honoured, with its correlation data
            p.send(
                "agent_ping",
                {"request_id": "r4"},
                response_topic=f"{ROOT}/cmd_result/platform-7/abc",
                correlation=b"corr-4",
            )
            for rid in ("r1", "r2", "r3"):
                got = await answer(sub, rid)
                assert got["ok"] is True
            honoured = (await wait(sub, 1, lambda m: m.topic.endswith("/platform-7/abc")))[0]
            assert honoured.json()["request_id"] == "r4"
            assert honoured.properties is not None
            assert honoured.properties.CorrelationData == b"corr-4"
            await asyncio.sleep(0.5)  # anything misdirected has arrived by now
            msgs = sub.messages
        assert not [m for m in msgs if m.topic == other_gw]
        assert not [
            m for m in msgs if m.topic == f"{ROOT}/telemetry/{air}" and b"pong" in m.payload
        ]


async def test_every_request_with_an_id_gets_exactly_one_answer(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    air = air_of(sim)
    deep = '{"request_id": "deep1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    digits = '{"request_id": "digits1", "x": 1' + "0" * 5000 + "}"
    nan = f'{{"request_id": "nan1", "device": "{air}", "point": "modbus_address", "value": NaN}}'
    huge = {"request_id": "huge1", "device": air, "point": "modbus_address", "value": 10**400}
    inf = f'{{"request_id": "inf1", "device": "{air}", "point": "modbus_address", "value": 1e400}}'
    async with running_agent(tmp_path, mqtt_broker, sim):
        with (
            mqtt_subscriber(mqtt_broker, f"{ROOT}/cmd_result/#") as sub,
            platform(mqtt_broker) as p,
        ):
            p.send("agent_ping", deep)
            p.send("agent_ping", digits)
            p.send("device_write", nan)
            p.send("device_write", huge)
            p.send("device_write", inf)
            p.send("agent_ping", {"request_id": "last"})
            await answer(sub, "last")
            for rid in ("deep1", "digits1", "nan1", "huge1", "inf1"):
                got = await answer(sub, rid)
                assert got["ok"] is False, got
                assert got["request_id"] == rid
            await asyncio.sleep(0.3)
            topics = [m.topic.rsplit("/", 1)[1] for m in sub.messages]
        assert sorted(topics) == sorted(["deep1", "digits1", "nan1", "huge1", "inf1", "last"])
        assert "modbus_address" not in sim.devices[air].written


async def test_bad_request_id_is_refused_on_the_invalid_topic(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    bad_ids = ["a/b", "+", "x" * 65, "a.b", "", 7]
    async with running_agent(tmp_path, mqtt_broker, sim):
        with (
            mqtt_subscriber(mqtt_broker, f"{ROOT}/cmd_result/#") as sub,
            platform(mqtt_broker) as p,
        ):
            for rid in bad_ids:
                p.send("agent_ping", {"request_id": rid})
            got = await wait(sub, len(bad_ids), lambda m: True)
            await asyncio.sleep(0.3)
            assert len(sub.messages) == len(bad_ids)
        assert {m.topic for m in got} == {f"{ROOT}/cmd_result/invalid"}
        assert all(m.json()["ok"] is False for m in got)
        assert all("request_id" in m.json()["error"] for m in got)


# -- queue, deadline, at most once ------------------------------------------------------------


async def test_writes_to_a_dead_device_are_bounded_and_refused_busy(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    air = air_of(sim)
    lux = air.replace("-air", "-lux")  # the sensor next to it on the same line
    n, queue_max = 60, 3
    async with running_agent(
        tmp_path, mqtt_broker, sim, commands={"queue_max": queue_max}
    ) as agent:
        sim.set_fault(air, "no_answer")
        with (
            mqtt_subscriber(
                mqtt_broker, [f"{ROOT}/cmd_result/#", f"{ROOT}/telemetry/{lux}"]
            ) as sub,
            platform(mqtt_broker) as p,
        ):
            infos = [
                p.send(
                    "device_write",
                    {"request_id": f"b{i}", "device": air, "point": "modbus_address", "value": 9},
                    wait=False,
                )
                for i in range(n)
            ]
            for info in infos:
                info.wait_for_publish(5)
            answers = [
                m.json() for m in await wait(sub, n, lambda m: "/cmd_result/" in m.topic, 15)
            ]
            # the sensor next to it is still read while the dead relay's writes queue
            sub.clear()
            await wait(sub, 2, lambda m: m.topic.endswith(f"/telemetry/{lux}"))
        assert sorted(a["request_id"] for a in answers) == sorted(f"b{i}" for i in range(n))
        busy = [a for a in answers if "busy" in (a.get("error") or "")]
        tried = [a for a in answers if "busy" not in (a.get("error") or "")]
        assert len(tried) <= queue_max + 1, tried  # only these ever reached the bus
        assert len(busy) >= n - queue_max - 1
        assert all(a["ok"] is False for a in answers)
        assert agent.router.stats.busy == len(busy)


async def test_a_request_past_its_message_expiry_is_not_executed(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    air = air_of(sim)
    async with running_agent(
        tmp_path, mqtt_broker, sim, device={"timeout_s": 3.0, "interval_s": 10}
    ):
        sim.set_fault(air, "no_answer")
        with (
            mqtt_subscriber(mqtt_broker, f"{ROOT}/cmd_result/#") as sub,
            platform(mqtt_broker) as p,
        ):
            for i in range(3):  # the first write to the dead device takes its 3 s timeout
                p.send(
                    "device_write",
                    {"request_id": f"e{i}", "device": air, "point": "modbus_address", "value": 9},
                    expiry_s=1,
                )
            behind = [await answer(sub, "e1"), await answer(sub, "e2")]
            first = await answer(sub, "e0")
        assert "no answer" in first["error"], first
        for late in behind:  # waited behind it past their expiry: never sent to the device
            assert late["ok"] is False
            assert "expired" in late["error"], late


async def test_a_request_id_is_executed_at_most_once(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    air = air_of(sim)
    write = {"request_id": "once1", "device": air, "point": "modbus_address"}
    async with running_agent(tmp_path, mqtt_broker, sim):
        with (
            mqtt_subscriber(mqtt_broker, f"{ROOT}/cmd_result/#") as sub,
            platform(mqtt_broker) as p,
        ):
            p.send("device_write", write)  # no value: refused, nothing reached the device
            assert "value" in (await answer(sub, "once1"))["error"]
            sub.clear()
            p.send("device_write", {**write, "value": 17})  # corrected, same id: runs
            first = await answer(sub, "once1")
            assert first["ok"] is True, first
            assert sim.devices[air].written["modbus_address"] == 17
            # the same id again, with another value: the first answer, no second write
            p.send("device_write", {**write, "value": 18})
            again = await wait(sub, 2, result_for("once1"))
        assert again[1].json() == first
        assert sim.devices[air].written["modbus_address"] == 17


# -- signing and audit --------------------------------------------------------------------


async def test_signed_writes_unsigned_forged_stale_and_replayed_ones_refused(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_TEST_CMD_KEY", KEY)
    air = air_of(sim)
    dev = sim.devices[air]

    def write(rid: str, value: int) -> dict[str, Any]:
        return {"request_id": rid, "device": air, "point": "modbus_address", "value": value}

    async with running_agent(tmp_path, mqtt_broker, sim, commands={"key": "${EDGE_TEST_CMD_KEY}"}):
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub, platform(mqtt_broker) as p:
            p.send("device_write", write("u1", 20))
            unsigned = await answer(sub, "u1")
            assert unsigned["ok"] is False
            assert "signed" in unsigned["error"]

            p.send("device_write", signed("device_write", write("f1", 21), key="guessed"))
            assert "bad signature" in (await answer(sub, "f1"))["error"]

            tampered = signed("device_write", write("t1", 22))
            tampered["value"] = 23  # a broker account changes a signed request
            p.send("device_write", tampered)
            assert "bad signature" in (await answer(sub, "t1"))["error"]

            p.send("device_write", signed("device_write", write("s1", 24), offset_s=-120))
            stale = await answer(sub, "s1")
            assert stale["ok"] is False
            assert "sig_ts" in stale["error"]
            assert "modbus_address" not in dev.written  # nothing above touched the device

            good = signed("device_write", {**write("g1", 25), "by": "张老师"})
            p.send("device_write", good)
            ok = await answer(sub, "g1")
            assert ok["ok"] is True, ok
            assert dev.written["modbus_address"] == 25

            # a captured write replayed after someone else changed the value again
            p.send("device_write", signed("device_write", write("g2", 26)))
            assert (await answer(sub, "g2"))["ok"] is True
            p.send("device_write", good)
            replay = await wait(sub, 2, result_for("g1"))
            assert replay[1].json()["request_id"] == "g1"
            assert dev.written["modbus_address"] == 26

            # commands that change nothing in the world need no signature
            p.send("agent_ping", {"request_id": "ping1"})
            assert (await answer(sub, "ping1"))["ok"] is True
            audits = await wait(
                sub,
                2,
                lambda m: m.topic == f"{ROOT}/events/{air}" and m.json()["type"] == "command_audit",
            )
        first, second = (m.json()["data"] for m in audits)
        assert first["by"] == "张老师"
        assert first["signed"] is True
        assert first["point"] == "modbus_address"
        assert first["new"] == 25
        assert first["result"] == "ok"
        assert second["by"] == "unknown"
        assert second["old"] == 25  # the value it replaced
        assert second["new"] == 26
        assert TS.match(first["ts"])


async def test_failed_writes_are_audited_too(
    tmp_path: Path, mqtt_broker: MqttBroker, sim: CampusSim
) -> None:
    air = air_of(sim)
    async with running_agent(tmp_path, mqtt_broker, sim):
        with (
            mqtt_subscriber(
                mqtt_broker, [f"{ROOT}/events/{air}", f"{ROOT}/telemetry/{air}"]
            ) as sub,
            platform(mqtt_broker) as p,
        ):
            await wait(sub, 1, lambda m: "/telemetry/" in m.topic)
            p.send(
                "device_write",
                {"request_id": "a1", "device": air, "point": "co2", "value": 500, "by": "ops"},
            )
            event = (await wait(sub, 1, lambda m: m.json().get("type") == "command_audit"))[0]
        data = event.json()["data"]
        assert data["result"] == "refused"
        assert "read-only" in data["error"]
        assert data["by"] == "ops"
        assert data["point"] == "co2"
        assert data["new"] == 500
        assert data["old"] == sim.truth(air)["co2"]  # the last reading
