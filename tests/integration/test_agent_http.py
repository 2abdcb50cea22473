"""The agent's HTTP server, wired into the supervisor: off by default, /healthz when
enabled, started by a kind that registers routes (directly, or through its hub), and
closed when the agent stops."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from edge_agent import registry
from edge_agent.config.loader import load_config
from edge_agent.supervisor import Agent
from tests.http_helpers import refused, request
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber
from tests.push_fixture_driver import HTTP_KIND, install

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_agent(tmp_path: Path, broker: MqttBroker, http: dict[str, Any]) -> Agent:
    cfg: dict[str, Any] = {
        # a root of its own: the retained status it leaves must not reach other tests
        "site": {"id": "http-school", "gateway_id": "gw1"},
        "mqtt": {"host": broker.host, "port": broker.port, "protocol": broker.protocol},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "http": http,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Agent(load_config(path), path)


async def until(pred: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not pred():
            await asyncio.sleep(0.02)


@pytest.fixture
async def run_agent() -> AsyncIterator[Callable[[Agent], asyncio.Task[None]]]:
    running: list[tuple[Agent, asyncio.Task[None]]] = []

    def start(agent: Agent) -> asyncio.Task[None]:
        task = asyncio.create_task(agent.run())
        running.append((agent, task))
        return task

    yield start
    for agent, task in running:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def test_off_by_default_nothing_listens(
    tmp_path: Path, mqtt_broker: MqttBroker, run_agent: Any
) -> None:
    port = free_port()
    agent = make_agent(tmp_path, mqtt_broker, {"bind": f"127.0.0.1:{port}"})
    run_agent(agent)
    await until(lambda: agent.publisher.stats.connects > 0)
    assert not any(t.get_name() == "http" for t in asyncio.all_tasks())
    assert agent.http.addresses == []
    assert refused(port)


async def test_enabled_healthz_answers_the_health_json_and_stop_frees_the_port(
    tmp_path: Path, mqtt_broker: MqttBroker, run_agent: Any
) -> None:
    agent = make_agent(tmp_path, mqtt_broker, {"enabled": True, "bind": "127.0.0.1:0"})
    task = run_agent(agent)
    await until(lambda: bool(agent.http.addresses))
    port = agent.http.addresses[0][1]
    status, headers, body = await request(port, "GET", "/healthz")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    health = json.loads(body)
    assert health["outbox"]["epoch"] == agent.outbox.epoch
    assert set(health) >= {"outbox", "publish", "devices", "clock", "uptime_s"}
    agent.stop()
    await asyncio.wait_for(task, 15)
    assert refused(port)


async def test_a_kind_that_registers_routes_starts_the_server_and_gets_its_posts(
    tmp_path: Path, mqtt_broker: MqttBroker, run_agent: Any
) -> None:
    received: list[bytes] = []

    async def cdata(request: web.Request) -> web.StreamResponse:
        received.append(await request.read())
        return web.Response(text="OK")

    agent = make_agent(tmp_path, mqtt_broker, {"bind": "127.0.0.1:0"})  # not enabled
    agent.http.add_routes("fakepush", [web.post("/iclock/cdata", cdata)])
    run_agent(agent)
    await until(lambda: bool(agent.http.addresses))
    port = agent.http.addresses[0][1]
    status, _h, body = await request(port, "POST", "/iclock/cdata?SN=X1", b"1001\t0")
    assert (status, body) == (200, b"OK")
    assert received == [b"1001\t0"]
    assert (await request(port, "GET", "/nothing-here"))[0] == 404


async def test_a_kinds_hub_adds_its_routes_and_routes_each_post_to_its_device(
    tmp_path: Path, mqtt_broker: MqttBroker, run_agent: Any
) -> None:
    saved = dict(registry.BUILTIN), registry._cache
    install(HTTP_KIND)
    try:
        cfg: dict[str, Any] = {
            "site": {"id": "http-hub-school", "gateway_id": "gw1"},
            "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port},
            "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
            "clock": {"sync_check": "none"},
            "http": {"bind": "127.0.0.1:0"},  # not enabled: the kind starts the server
            "devices": [
                {"id": "t1", "kind": HTTP_KIND, "serial": 1},
                {"id": "t2", "kind": HTTP_KIND, "serial": 2},
            ],
        }
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(cfg))
        agent = Agent(load_config(path), path)
    finally:
        registry.BUILTIN.clear()
        registry.BUILTIN.update(saved[0])
        registry._cache = saved[1]
    hub = agent.hubs[HTTP_KIND]
    root = "campus/http-hub-school/gw1"
    with mqtt_subscriber(mqtt_broker, f"{root}/events/#") as sub:
        run_agent(agent)
        await until(lambda: bool(agent.http.addresses))
        port = agent.http.addresses[0][1]
        answers = [
            await request(port, "POST", "/fixture/records", body)
            for body in (b"9 1 x", b"2 1 b", b"1 1 a", b"1 2 c")
        ]
        assert [status for status, _h, _b in answers] == [404, 200, 200, 200]
        got = await asyncio.to_thread(sub.wait_for_count, 3, None, 15)
    by_device = sorted(
        (json.loads(m.payload)["device"], json.loads(m.payload)["data"]["record"]) for m in got
    )
    assert by_device == [("t1", 1), ("t1", 2), ("t2", 1)]
    assert hub.unclaimed_by == {9: 1}
