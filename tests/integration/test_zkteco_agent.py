"""The ZKTeco PUSH driver in the agent, end to end: simulated terminals
(``edge_agent.simulators.zkteco``, written from the wire) push over real HTTP on
127.0.0.1 to the agent's server; what the platform gets is read from a real mosquitto.

Records arrive exactly once and in order (also when a terminal misses an ``OK`` and
resends), a terminal catches up after the agent was stopped while it kept recording, one
person keeps one pseudonym across the restart, a refused commit (clock not synchronised)
leaves the records on the terminal, the device goes offline when its terminal is silent
and back online, garbage is logged once, and ``door_open`` runs through the terminal's
command queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.simulators.zkteco import ZkTerminal
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.http_helpers import request
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber, publish

pytestmark = pytest.mark.integration

SITE = "zk-school"
ROOT = f"campus/{SITE}/gw1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_agent(
    tmp_path: Path,
    broker: MqttBroker,
    port: int,
    devices: list[dict[str, Any]],
    *,
    clock: dict[str, Any] | None = None,
) -> Agent:
    cfg: dict[str, Any] = {
        "site": {"id": SITE, "gateway_id": "gw1", "pseudonym_secret": "${ZK_TEST_SECRET}"},
        "mqtt": {"host": broker.host, "port": broker.port, "protocol": broker.protocol},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": clock or {"sync_check": "none"},
        "http": {"bind": f"127.0.0.1:{port}"},
        "devices": devices,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Agent(load_config(path), path)


def terminal_cfg(dev_id: str, sn: str, **extra: Any) -> dict[str, Any]:
    return {"id": dev_id, "kind": "zkteco", "sn": sn, "delay_s": 1, **extra}


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZK_TEST_SECRET", "test-secret")


@pytest.fixture
async def agents() -> AsyncIterator[Callable[[Agent], asyncio.Task[None]]]:
    running: list[tuple[Agent, asyncio.Task[None]]] = []

    def start(agent: Agent) -> asyncio.Task[None]:
        task = asyncio.create_task(agent.run())
        running.append((agent, task))
        return task

    yield start
    for agent, task in running:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def stop(agent: Agent, task: asyncio.Task[None]) -> None:
    agent.stop()
    await asyncio.wait_for(task, 15)


async def until(pred: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


def events_of(sub: Any, device: str) -> list[dict[str, Any]]:
    topic = f"{ROOT}/events/{device}"
    return [check_envelope(m.payload, "event", device) for m in sub.messages if m.topic == topic]


async def wait_events(sub: Any, device: str, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    topic = f"{ROOT}/events/{device}"
    got: list[Received] = await asyncio.to_thread(
        sub.wait_for_count, n, lambda m: m.topic == topic, timeout
    )
    return [check_envelope(m.payload, "event", device) for m in got]


def states_of(sub: Any, device: str) -> list[dict[str, Any]]:
    topic = f"{ROOT}/devices/{device}/state"
    return [
        json.loads(p) for p in dict.fromkeys(m.payload for m in sub.messages if m.topic == topic)
    ]


async def test_punches_arrive_exactly_once_in_order_even_when_an_ok_is_lost(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any
) -> None:
    port = free_port()
    agent = make_agent(tmp_path, mqtt_broker, port, [terminal_cfg("gate-a", "ZK1")])
    term = ZkTerminal("ZK1", ("127.0.0.1", port), poll_s=0.2)
    term.add_user("1001", "0006154410")  # as a terminal prints it: zero-padded
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
        agents(agent)
        async with term:
            for i in range(10):
                term.punch("1001" if i % 2 else "2002", verify="face" if i % 3 else "card")
            await until(lambda: term.backlog() == 0)
            term.ignore_acks(1)  # the next OK never reaches the terminal: it resends
            for _ in range(5):
                term.punch("1001", verify="fingerprint", status=1)
            await until(lambda: term.backlog() == 0)
            got = await wait_events(sub, "gate-a", 15)
            await asyncio.sleep(0.5)  # a doubled record would arrive meanwhile
            assert len(events_of(sub, "gate-a")) == 15
    assert term.stats.uploads > term.stats.ok  # one upload really was sent twice
    assert [e["type"] for e in got] == ["card_read"] * 15
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs)
    times = [e["ts"] for e in got]
    assert times == sorted(times)
    cards = [e["data"]["card"] for e in got]
    # one person, one pseudonym: the PIN 1001 has the card 6154410 (zeros are no digits)
    assert len({c for i, c in enumerate(cards[:10]) if i % 2}) == 1
    assert len({c for i, c in enumerate(cards[:10]) if not i % 2}) == 1
    assert cards[1] != cards[0]
    assert set(cards[10:]) == {cards[1]}
    assert all(c.startswith("h:") and len(c) == 18 for c in cards)
    assert [e["data"]["direction"] for e in got[10:]] == ["out"] * 5
    assert {e["data"]["reader"] for e in got} == {"gate-a"}
    assert got[0]["data"]["context"] == "attendance"
    assert "Student" not in json.dumps([m.payload.decode() for m in sub.messages])


async def test_catch_up_after_the_agent_was_stopped_exactly_once_same_pseudonym(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any
) -> None:
    port = free_port()
    devices = [terminal_cfg("gate-b", "ZK2")]
    term = ZkTerminal("ZK2", ("127.0.0.1", port), poll_s=0.2)
    term.add_user("7", "123456")
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/events/gate-b") as sub:
        agent = make_agent(tmp_path, mqtt_broker, port, devices)
        task = agents(agent)
        async with term:
            for _ in range(5):
                term.punch("7")
            await until(lambda: term.backlog() == 0)
            before = await wait_events(sub, "gate-b", 5)
            await stop(agent, task)
            for _ in range(10):  # the agent is off; the terminal keeps recording
                term.punch("7", verify="card")
            await until(lambda: term.stats.errors > 0)
            assert term.backlog() == 10
        # the terminal reboots too: it resends from the stamps the new agent hands it
        agent = make_agent(tmp_path, mqtt_broker, port, devices)
        agents(agent)
        async with term:
            await until(lambda: term.backlog() == 0)
            got = await wait_events(sub, "gate-b", 15)
            await asyncio.sleep(0.5)
            assert len(events_of(sub, "gate-b")) == 15
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    assert len({e["msg_id"] for e in got}) == 15
    # the USER line was committed by the first agent only: the second knew the card anyway
    assert {e["data"]["card"] for e in got} == {before[0]["data"]["card"]}
    assert {e["data"]["credential"] for e in got} == {"card"}
    assert term.stats.acked.count(("OPERLOG", "1")) == 1


async def test_a_refused_commit_leaves_the_records_on_the_terminal(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any
) -> None:
    port = free_port()
    synced = tmp_path / "synced"
    agent = make_agent(
        tmp_path,
        mqtt_broker,
        port,
        [terminal_cfg("gate-c", "ZK3")],
        clock={"sync_check": "file", "sync_file": str(synced)},
    )
    term = ZkTerminal("ZK3", ("127.0.0.1", port), poll_s=0.2)
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
        agents(agent)
        async with term:
            for _ in range(3):
                term.punch("42")
            await until(lambda: term.stats.refused > 0)
            assert term.backlog() == 3  # answered with an error: the terminal keeps them
            await until(lambda: any(s["state"] == "degraded" for s in states_of(sub, "gate-c")))
            synced.touch()
            await until(lambda: term.backlog() == 0)
            await wait_events(sub, "gate-c", 3)
            await asyncio.sleep(0.3)
            assert len(events_of(sub, "gate-c")) == 3
    degraded = next(s for s in states_of(sub, "gate-c") if s["state"] == "degraded")
    assert "terminal" in degraded["last_error"]


async def test_offline_when_the_terminal_is_silent_then_online_again(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any
) -> None:
    port = free_port()
    agent = make_agent(
        tmp_path, mqtt_broker, port, [terminal_cfg("gate-d", "ZK4", offline_after=2)]
    )
    term = ZkTerminal("ZK4", ("127.0.0.1", port), poll_s=0.2)
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/devices/gate-d/state") as sub:
        agents(agent)
        async with term:
            await until(lambda: [s["state"] for s in states_of(sub, "gate-d")][-1:] == ["online"])
            term.unplug()
            await until(lambda: states_of(sub, "gate-d")[-1]["state"] == "offline")
            term.punch("9")  # recorded while unplugged
            term.plug()
            await until(lambda: states_of(sub, "gate-d")[-1]["state"] == "online")
            await until(lambda: term.backlog() == 0)
    states = states_of(sub, "gate-d")
    offline = [s for s in states if s["state"] == "offline"]
    assert "no request from terminal ZK4" in offline[-1]["last_error"]
    assert [s["state"] for s in states][-3:] == ["online", "offline", "online"]


async def test_garbage_is_logged_once_and_the_records_after_it_arrive(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    agent = make_agent(tmp_path, mqtt_broker, port, [terminal_cfg("gate-e", "ZK5")])
    term = ZkTerminal("ZK5", ("127.0.0.1", port), poll_s=0.2)
    caplog.set_level(logging.WARNING, logger="edge_agent.drivers.zkteco")
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/events/gate-e") as sub:
        agents(agent)
        async with term:
            for body in (b"\xff\xfe garbage\n", b"junk\n1\tnot-a-time\n", b"\x00" * 300):
                term.garble("ATTLOG", body)
            term.punch("5")
            await wait_events(sub, "gate-e", 1)
            await until(lambda: term.backlog() == 0 and not term._garbage)
            # requests no terminal would send: no SN, an SN that is no serial number
            for path in ("/iclock/cdata?table=ATTLOG", "/iclock/getrequest?SN=%0Abad"):
                status, _h, _b = await request(port, "POST" if "table" in path else "GET", path)
                assert status == 400
    unreadable = [r for r in caplog.records if "unreadable line" in r.getMessage()]
    assert len(unreadable) == 1, [r.getMessage() for r in unreadable]
    unusable = [r for r in caplog.records if "unusable request" in r.getMessage()]
    assert len(unusable) == 1
    assert agent.hubs["zkteco"].malformed == 2
    assert agent.drivers["gate-e"].skipped_lines >= 4


async def test_door_open_goes_through_the_terminal_and_an_unknown_sn_is_counted(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any
) -> None:
    port = free_port()
    readers = [{"door": 1, "direction": "in", "name": "lib-in", "context": "library"}]
    agent = make_agent(
        tmp_path,
        mqtt_broker,
        port,
        [terminal_cfg("lib-door", "ZK6", readers=readers, command_timeout_s=3)],
    )
    term = ZkTerminal("ZK6", ("127.0.0.1", port), access=True, poll_s=0.2)
    stranger = ZkTerminal("NOBODY1", ("127.0.0.1", port), poll_s=0.2)
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
        agents(agent)
        async with term, stranger:
            stranger.punch("1")
            term.ignore_acks(1, "rtlog")  # the first rtlog upload's OK is lost
            term.add_user("31", "99")
            term.punch("31", verify="card")
            term.deny(reason="unregistered", inout=1)
            term.door("opened")
            term.door("exit_button")
            await wait_events(sub, "lib-door", 4)
            publish(
                mqtt_broker,
                f"{ROOT}/cmd/door_open",
                json.dumps({"request_id": "open-1", "device": "lib-door", "door": 1, "by": "t"}),
            )
            answer = await asyncio.to_thread(
                sub.wait_for, lambda m: m.topic == f"{ROOT}/cmd_result/open-1", 15
            )
            everything = await wait_events(sub, "lib-door", 6)  # and the command's audit
            await until(lambda: stranger.stats.refused > 0)
            await asyncio.sleep(0.3)  # a doubled rtlog event would arrive meanwhile
            assert len(events_of(sub, "lib-door")) == 6
    got = [e for e in everything if e["type"] != "command_audit"]
    assert len(got) == 5
    assert term.stats.uploads - term.stats.ok >= 1  # an rtlog batch really went twice
    assert json.loads(answer.payload)["ok"] is True, answer.payload
    assert [cmd for _id, cmd, _code in term.ran] == ["CONTROL DEVICE 01010105"]
    kinds = [(e["type"], e["data"].get("input"), e["data"].get("result")) for e in got]
    assert kinds == [
        ("card_read", None, "granted"),
        ("card_read", None, "denied"),
        ("door_opened", None, None),
        ("digital_input", "exit_button", None),
        ("digital_input", "lock", None),
    ]
    assert got[0]["data"]["reader"] == "lib-in"
    assert got[0]["data"]["context"] == "library"
    assert got[1]["data"]["reason"] == "unregistered"
    assert got[4]["data"]["by"] == "remote"
    hub = agent.hubs["zkteco"]
    assert "NOBODY1" in hub.unclaimed_by
    assert stranger.backlog() == 1  # refused, so the stranger keeps its record
    assert stranger.stats.options.get("Delay") == "300"  # told to poll rarely


async def test_door_open_times_out_once_and_is_withdrawn_when_the_terminal_is_away(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any
) -> None:
    port = free_port()
    agent = make_agent(
        tmp_path, mqtt_broker, port, [terminal_cfg("lab-door", "ZK7", command_timeout_s=1.5)]
    )
    term = ZkTerminal("ZK7", ("127.0.0.1", port), access=True, poll_s=0.2)
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/cmd_result/#") as sub:
        agents(agent)
        async with term:
            await until(lambda: term.stats.getrequests > 0)
            term.unplug()
            await asyncio.sleep(0.5)
            publish(
                mqtt_broker,
                f"{ROOT}/cmd/door_open",
                json.dumps({"request_id": "open-2", "device": "lab-door", "door": 1, "by": "t"}),
            )
            answer = await asyncio.to_thread(sub.wait_for, None, 15)
            term.plug()
            n = term.stats.getrequests
            await until(lambda: term.stats.getrequests > n + 1)
            await asyncio.sleep(0.3)
    result = json.loads(answer.payload)
    assert result["ok"] is False
    assert "withdrawn" in result["error"]
    assert len(sub.messages) == 1  # exactly one answer
    assert term.ran == []  # the door did not open later


async def test_door_open_answers_with_the_terminals_result(
    tmp_path: Path, mqtt_broker: MqttBroker, agents: Any
) -> None:
    port = free_port()
    agent = make_agent(tmp_path, mqtt_broker, port, [terminal_cfg("gym-door", "ZK8")])
    term = ZkTerminal("ZK8", ("127.0.0.1", port), access=True, poll_s=0.2)
    term.refuse["CONTROL"] = -1  # this terminal's lock output is not wired
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/cmd_result/#") as sub:
        agents(agent)
        async with term:
            await until(lambda: term.stats.getrequests > 0)
            publish(
                mqtt_broker,
                f"{ROOT}/cmd/door_open",
                json.dumps({"request_id": "open-3", "device": "gym-door", "door": 2, "by": "t"}),
            )
            answer = await asyncio.to_thread(sub.wait_for, None, 15)
    result = json.loads(answer.payload)
    assert result["ok"] is False
    assert "refused to open door 2" in result["error"]
    assert [(cmd, code) for _id, cmd, code in term.ran] == [("CONTROL DEVICE 01020105", -1)]
