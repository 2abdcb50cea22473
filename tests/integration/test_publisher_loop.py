"""The publisher drives paho from the event loop (issue 8 item 9): a PUBACK is read and a
message written on the loop's thread, so neither wakes another thread. Real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge_agent.envelope import Lane
from edge_agent.mqtt.publisher import MqttSettings, Publisher
from edge_agent.outbox.store import Outbox
from tests.mqtt_helpers import MqttBroker

ROOT = "campus/loop-school/gw1"


@contextlib.asynccontextmanager
async def running_publisher(
    tmp_path: Path, broker: MqttBroker, **settings: Any
) -> AsyncIterator[Publisher]:
    name = uuid.uuid4().hex[:8]
    outbox = Outbox(tmp_path / f"outbox-{name}.db", commit_interval_s=0.05)
    await outbox.open()
    pub = Publisher(
        MqttSettings(
            host=broker.host, port=broker.port, root=ROOT, client_id=f"edge-loop-{name}", **settings
        ),
        outbox,
    )
    task = asyncio.create_task(pub.run())
    try:
        yield pub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await outbox.close()


async def until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        await asyncio.sleep(0.05)


def paho_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client")]


async def test_the_publisher_runs_no_network_thread(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    async with running_publisher(tmp_path, mqtt_broker) as pub:
        await asyncio.wait_for(pub.connected.wait(), 30)
        for i in range(50):
            pub.outbox.put(
                Lane.TELEMETRY,
                f"{ROOT}/telemetry/dev{i}",
                device=f"dev{i}",
                kind="modbus",
                ts=time.time(),
                data={"t": i},
            )
        await pub.outbox.flush()
        await until("50 PUBACKs", lambda: pub.stats.acked >= 50)
        assert paho_threads() == []  # every PUBACK was read on the loop's thread
    assert pub.stats.published == 50


async def test_a_broker_gone_silent_is_noticed_by_keepalive(tmp_path: Path) -> None:
    # A broker that accepts and then never answers (a half-open TCP link: a router that
    # lost its state): the pings (paho's loop_misc, on a timer of the loop) go
    # unanswered, the connection is given up and opened again.
    accepted: list[asyncio.StreamWriter] = []

    async def silent_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(1)  # the CONNECT
        writer.write(bytes([0x20, 0x03, 0x00, 0x00, 0x00]))  # MQTT 5 CONNACK, success
        await writer.drain()
        while await reader.read(4096):
            pass  # SUBSCRIBE, PUBLISH, PINGREQ: never answered

    server = await asyncio.start_server(silent_broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    broker: Any = SimpleNamespace(host="127.0.0.1", port=port)
    try:
        async with running_publisher(tmp_path, broker, keepalive_s=1) as pub:
            await until("a second connection", lambda: pub.stats.connects >= 2)
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_an_idle_connection_looks_at_its_keepalive_once_a_keepalive(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    # paho's loop_misc only acts on the keep-alive (the ping, the ping's timeout): its
    # timer is set for the moment it can next act, not every second (issue 8 item 9).
    async with running_publisher(tmp_path, mqtt_broker, keepalive_s=30) as pub:
        await asyncio.wait_for(pub.connected.wait(), 30)
        net = pub._net
        assert net is not None
        await until("the timer after the CONNACK", lambda: net._misc is not None)
        misc = net._misc
        assert misc is not None
        assert misc.when() - asyncio.get_running_loop().time() > 20  # ~30 s away, not 1 s


async def test_an_idle_connection_still_pings_and_stays_up(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    # mosquitto drops a client that sends nothing for 1.5 keep-alives: without the
    # PINGREQs the publisher would reconnect within this test.
    async with running_publisher(tmp_path, mqtt_broker, keepalive_s=1) as pub:
        await asyncio.wait_for(pub.connected.wait(), 30)
        net = pub._net
        assert net is not None
        pings: list[float] = []
        client = net.client
        send_pingreq = client._send_pingreq  # type: ignore[attr-defined]

        def counted() -> Any:
            pings.append(time.monotonic())
            return send_pingreq()

        client._send_pingreq = counted  # type: ignore[attr-defined]
        await until("three pings", lambda: len(pings) >= 3)  # 3 keep-alives, no traffic
        assert pub.stats.connects == 1
        assert pub.connected.is_set()


async def test_an_unexpected_error_in_a_connect_attempt_is_one_failed_attempt(
    tmp_path: Path, mqtt_broker: MqttBroker, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Whatever paho raises while connecting (not only OSError) is a failed attempt: logged,
    retried with backoff; the publisher never dies of it."""
    import paho.mqtt.client as paho

    original = paho.Client.reconnect
    calls = {"n": 0}

    def flaky(self: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("a bug deep in a connect attempt")
        return original(self)

    monkeypatch.setattr(paho.Client, "reconnect", flaky)
    async with running_publisher(tmp_path, mqtt_broker, reconnect_min_s=0.1) as pub:
        await asyncio.wait_for(pub.connected.wait(), 30)
    assert calls["n"] >= 2
    assert "a bug deep in a connect attempt" in caplog.text
