"""A push device in the agent (issue 8): the supervisor builds its DeviceLink, publishes
its meta and state like a polled device's, and restarts a crashed push driver with the
same backoff, reporting it offline meanwhile. Devices of a kind with a hub share one
listener: two udpfixture devices, one UDP socket."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent import registry
from edge_agent.config.loader import load_config
from edge_agent.driver import DeviceLink
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber
from tests.push_fixture_driver import (
    KIND,
    UDP_KIND,
    PushFixtureDriver,
    RecordDevice,
    UdpFixtureHub,
    install,
)

pytestmark = pytest.mark.integration

ROOT = "campus/push-school/gw1"


class CrashingOnce(PushFixtureDriver):
    """The fixture driver with a bug that strikes on its first run only."""

    runs = 0

    async def run(self, link: DeviceLink) -> None:
        type(self).runs += 1
        if type(self).runs == 1:
            raise RuntimeError("driver bug on first run")
        await super().run(link)


class CrashingWhenOnline(PushFixtureDriver):
    """A bug that strikes after the first run reported the device online."""

    runs = 0

    async def run(self, link: DeviceLink) -> None:
        type(self).runs += 1
        if type(self).runs == 1:
            link.state("online")
            raise RuntimeError("driver bug while online")
        await super().run(link)


@pytest.fixture
def crashing_kind() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    registry.BUILTIN[KIND] = f"{__name__}:CrashingOnce"
    registry._cache = None
    CrashingOnce.runs = 0
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def on(topic: str) -> Any:
    return lambda m: m.topic == topic


async def test_a_push_driver_is_supervised_like_a_polled_one(
    tmp_path: Path, mqtt_broker: MqttBroker, crashing_kind: None
) -> None:
    device = RecordDevice(30)
    cfg = {
        "site": {"id": "push-school", "gateway_id": "gw1"},
        "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "devices": [{"id": "door1", "kind": KIND, "port": device.port, "retry_s": 0.1}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    agent = Agent(load_config(path), path)
    task = asyncio.create_task(agent.run())
    try:
        with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
            state = f"{ROOT}/devices/door1/state"

            def wait(n: int, pred: Any, timeout: float = 15) -> list[Received]:
                return sub.wait_for_count(n, pred, timeout)

            meta = (await asyncio.to_thread(wait, 1, on(f"{ROOT}/devices/door1/meta")))[0]
            assert json.loads(meta.payload)["kind"] == KIND
            events = await asyncio.to_thread(wait, 30, on(f"{ROOT}/events/door1"))
            # a retained state published while the subscription is made arrives twice
            payloads = dict.fromkeys(m.payload for m in sub.messages if m.topic == state)
            states = [json.loads(p) for p in payloads]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        device.close()
    # the crash was reported on the device's state topic, then the restart went online
    assert [s["state"] for s in states][:2] == ["offline", "online"], states
    assert "driver bug on first run" in states[0]["last_error"]
    assert set(states[0]) == {"state", "since", "last_error"}
    records = [check_envelope(m.payload, "event", "door1")["data"]["record"] for m in events]
    assert sorted(records) == list(range(1, 31))
    assert CrashingOnce.runs == 2


async def test_a_push_device_that_crashed_while_online_is_reported_online_again(
    tmp_path: Path, mqtt_broker: MqttBroker, crashing_kind: None
) -> None:
    registry.BUILTIN[KIND] = f"{__name__}:CrashingWhenOnline"
    registry._cache = None
    CrashingWhenOnline.runs = 0
    device = RecordDevice(3)
    cfg = {
        "site": {"id": "push-crash-school", "gateway_id": "gw1"},
        "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "devices": [{"id": "door1", "kind": KIND, "port": device.port, "retry_s": 0.1}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    agent = Agent(load_config(path), path)
    topic = "campus/push-crash-school/gw1/devices/door1/state"
    with mqtt_subscriber(mqtt_broker, topic) as sub:
        task = asyncio.create_task(agent.run())
        try:

            def states() -> list[str]:
                payloads = dict.fromkeys(m.payload for m in sub.messages)
                return [json.loads(p)["state"] for p in payloads]

            def online_again(_m: Received) -> bool:
                # (the first "online" may be superseded by the crash before it is sent)
                seen = states()
                return "offline" in seen and "online" in seen[seen.index("offline") :]

            await asyncio.to_thread(sub.wait_for_count, 1, online_again, 15)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
            device.close()
    assert CrashingWhenOnline.runs == 2


# -- one shared listener per kind ---------------------------------------------------------
@pytest.fixture
def udp_kind() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    install(UDP_KIND)
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def udp_agent(tmp_path: Path, broker: MqttBroker, bind: str, site: str) -> Agent:
    """Two udpfixture devices; each test its own site, so no retained state of another
    test's devices is taken for this one's."""
    cfg = {
        "site": {"id": site, "gateway_id": "gw1"},
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        UDP_KIND: {"bind": bind},
        "devices": [
            {"id": "door-a", "kind": UDP_KIND, "serial": 11},
            {"id": "door-b", "kind": UDP_KIND, "serial": 22},
        ],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Agent(load_config(path), path)


def records(sub: Any, root: str, device: str) -> list[int]:
    return sorted(
        check_envelope(m.payload, "event", device)["data"]["record"]
        for m in sub.messages
        if m.topic == f"{root}/events/{device}"
    )


async def test_devices_of_a_kind_share_one_udp_socket(
    tmp_path: Path, mqtt_broker: MqttBroker, udp_kind: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.hub")
    root = "campus/udp-one/gw1"
    agent = udp_agent(tmp_path, mqtt_broker, "127.0.0.1:0", "udp-one")
    hub = agent.hubs[UDP_KIND]
    assert isinstance(hub, UdpFixtureHub)
    assert {d.device_id for d in agent.drivers.values()} == {"door-a", "door-b"}
    assert all(d.hub is hub for d in agent.drivers.values())  # ONE hub for the kind
    task = asyncio.create_task(agent.run())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with asyncio.timeout(10):
                await hub.listening.wait()
            address = hub.address
            assert address is not None
            # a controller nobody configured (twice), and a datagram no kind could read
            for data in (b"99 1 x", b"99 2 y", b"\xff garbage"):
                sender.sendto(data, address)
            for data in (b"11 1 a", b"22 1 b", b"11 2 c", b"11 2 c"):  # the last one twice
                sender.sendto(data, address)

            def both(m: Received) -> bool:
                return m.topic.startswith(f"{root}/events/")

            await asyncio.to_thread(sub.wait_for_count, 3, both, 15)
            assert records(sub, root, "door-a") == [1, 2]
            assert records(sub, root, "door-b") == [1]
            states = {
                json.loads(m.payload)["state"]
                for m in sub.messages
                if m.topic == f"{root}/devices/door-b/state"
            }
            assert states == {"online"}
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        sender.close()
    # datagrams sent before the known ones were handled before them: all counted
    assert hub.unclaimed == 3
    assert hub.unclaimed_by == {99: 2, "127.0.0.1 (unreadable)": 1}
    unknown = [r for r in caplog.records if "belongs to no configured device" in r.getMessage()]
    assert len(unknown) == 2, [r.getMessage() for r in unknown]  # once per sender
    assert all(r.levelno == logging.WARNING for r in unknown)
    summary = [r.getMessage() for r in caplog.records if "were ignored" in r.getMessage()]
    assert summary
    assert "3 messages from 2 unknown senders" in summary[0]
    # the hub's socket is closed at stop: its port can be bound again
    assert hub.address is None
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        again.bind(address)
    finally:
        again.close()


async def test_a_hub_that_cannot_listen_takes_its_devices_offline_until_it_can(
    tmp_path: Path, mqtt_broker: MqttBroker, udp_kind: None, caplog: pytest.LogCaptureFixture
) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    root = "campus/udp-two/gw1"
    agent = udp_agent(tmp_path, mqtt_broker, f"127.0.0.1:{port}", "udp-two")
    hub = agent.hubs[UDP_KIND]
    task = asyncio.create_task(agent.run())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:

            def state_of(device: str, state: str) -> Any:
                def pred(m: Received) -> bool:
                    return (
                        m.topic == f"{root}/devices/{device}/state"
                        and json.loads(m.payload)["state"] == state
                    )

                return pred

            for device in ("door-a", "door-b"):
                got = await asyncio.to_thread(
                    sub.wait_for_count, 1, state_of(device, "offline"), 15
                )
                reason = json.loads(got[0].payload)["last_error"]
                assert reason.startswith(f"{UDP_KIND} listener failed:"), reason
            taken.close()  # the port is free: the hub's next attempt binds it
            async with asyncio.timeout(15):
                await hub.listening.wait()
            sender.sendto(b"22 1 b", ("127.0.0.1", port))
            await asyncio.to_thread(sub.wait_for_count, 1, state_of("door-b", "online"), 15)
            await asyncio.to_thread(sub.wait_for_count, 1, on(f"{root}/events/door-b"), 15)
            assert records(sub, root, "door-b") == [1]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        taken.close()
        sender.close()
    failures = [r for r in caplog.records if "listener failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # logged once
    assert failures[0].levelno == logging.ERROR
