"""The console inside the agent, with a real mosquitto: an ack given on the console
reaches the broker's retained alarm topic, the console works with the uplink down, and
stopping the agent ends the console's streams."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.console.auth import set_password
from edge_agent.supervisor import Agent
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber

pytestmark = pytest.mark.integration

PASSWORD = "gate-keeper 门卫"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_agent(tmp_path: Path, host: str, port: int, site: str) -> Agent:
    set_password(tmp_path / "console-users", "guard", PASSWORD)
    cfg: dict[str, Any] = {
        "site": {"id": site, "gateway_id": "gw1", "language": "en"},
        "mqtt": {"host": host, "port": port, "reconnect_max_s": 1},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "http": {"bind": "127.0.0.1:0"},
        "console": {"credentials": "console-users"},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Agent(load_config(path), path)


async def until(pred: Callable[[], bool]) -> None:
    async with asyncio.timeout(15):
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


class Browser:
    """aiohttp's client with a cookie jar, logged in to the console of ``port``."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/console"
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def __aenter__(self) -> Browser:
        async with self.http.get(self.base + "/api/login") as r:
            token = (await r.json())["csrf"]
        async with self.http.post(
            self.base + "/api/login",
            json={"user": "guard", "password": PASSWORD},
            headers={"X-CSRF-Token": token},
        ) as r:
            assert r.status == 200
            self.csrf = (await r.json())["csrf"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(
            self.base + path, json=body, headers={"X-CSRF-Token": self.csrf}
        ) as r:
            assert r.status == 200, await r.text()
            return await r.json()


def raise_co2(agent: Agent) -> str:
    return agent.alarms.raise_(
        "co2_high", "b1-r101-air", "major", en="CO2 1800 ppm", zh="二氧化碳 1800 ppm"
    ).alarm_id


async def test_an_ack_on_the_console_reaches_the_retained_alarm_topic(
    tmp_path: Path, mqtt_broker: MqttBroker, run_agent: Any
) -> None:
    agent = make_agent(tmp_path, mqtt_broker.host, mqtt_broker.port, "console-ack")
    run_agent(agent)
    await until(lambda: bool(agent.http.addresses) and agent.publisher.connected.is_set())
    port = agent.http.addresses[0][1]
    alarm_id = raise_co2(agent)
    topic = f"{agent.root}/alarms/active/{alarm_id}"
    with mqtt_subscriber(mqtt_broker, topic) as sub:
        await asyncio.to_thread(sub.wait_for, lambda m: m.json()["state"] == "active_unacked", 10)
        async with Browser(port) as browser:
            alarms = (await browser.get("/api/alarms"))["alarms"]
            assert [a["alarm_id"] for a in alarms] == [alarm_id]
            health = await browser.get("/api/health")
            assert health["uplink"]["connected"] is True
            assert health["uplink"]["protocol"] == "5"
            await browser.post(f"/api/alarms/{alarm_id}/ack", {})
        got = await asyncio.to_thread(
            sub.wait_for, lambda m: m.payload != b"" and m.json()["state"] == "active_acked", 10
        )
    assert got.json()["acked_by"] == "guard"


async def test_the_console_works_with_the_uplink_down(tmp_path: Path, run_agent: Any) -> None:
    agent = make_agent(tmp_path, "127.0.0.1", free_port(), "console-down")  # nobody listens
    run_agent(agent)
    await until(lambda: bool(agent.http.addresses))
    alarm_id = raise_co2(agent)
    async with Browser(agent.http.addresses[0][1]) as browser:
        health = await browser.get("/api/health")
        assert health["uplink"]["connected"] is False
        assert health["outbox"]["depth"] >= 1  # the alarm waits in the outbox
        await browser.post(f"/api/alarms/{alarm_id}/ack", {})
        alarms = (await browser.get("/api/alarms"))["alarms"]
        check = await browser.get("/api/check")
    assert [(a["alarm_id"], a["state"], a["acked_by"]) for a in alarms] == [
        (alarm_id, "active_acked", "guard")
    ]
    assert check["ok"] is True
    assert check["problems"] == []


async def test_stopping_the_agent_ends_the_console_streams(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, "127.0.0.1", free_port(), "console-stop")
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: bool(agent.http.addresses))
        async with Browser(agent.http.addresses[0][1]) as browser:
            async with browser.http.get(browser.base + "/api/events") as r:
                await asyncio.wait_for(r.content.readuntil(b"event: snapshot\n"), 10)
                await until(lambda: agent.console.stream.streams == 1)
                agent.stop()
                rest = await asyncio.wait_for(r.content.read(), 10)  # a clean end
                assert b"event:" not in rest
        await asyncio.wait_for(task, 15)
    finally:
        if not task.done():
            agent.stop()
            await asyncio.wait_for(task, 15)
