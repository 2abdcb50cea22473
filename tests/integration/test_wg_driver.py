"""The WG driver (``kind: wg``) in the agent, end to end: simulated controllers
(``simulators/wg.py``, written from the wire, not from the driver) on 127.0.0.1 over real
UDP, the agent with its one WG socket, a real outbox and a real mosquitto; what the platform
receives is read from the broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.drivers.wg.driver import WgDriver
from edge_agent.drivers.wg.hub import WgHub
from edge_agent.simulators import WgController, WgSim
from edge_agent.simulators.wg import run_rush, rush_schedule
from edge_agent.supervisor import Agent
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, MqttSubscriber, Received, mqtt_subscriber, publish

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
SERIAL = 423187757
WAIT_S = 20.0


def shanghai_now() -> datetime:
    return datetime.now(ZoneInfo(TZ))


def controllers(count: int = 1, **options: Any) -> WgSim:
    # the controllers' clocks follow the site's local time, as on a campus in Shanghai
    options.setdefault("clock", shanghai_now)
    return WgSim.build(count, first_serial=SERIAL, doors=4, **options)


def write_config(
    tmp_path: Path,
    broker: MqttBroker,
    sim: Iterable[Any],
    site: str,
    *,
    listener: bool = True,
    **device: Any,
) -> Path:
    cfg: dict[str, Any] = {
        "site": {"id": site, "gateway_id": "gw1", "timezone": TZ, "raw_card_ids": True},
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "wg": {"bind": "127.0.0.1:0", **({"listener": "127.0.0.1"} if listener else {})},
        "devices": [
            {
                "id": f"ctl-{i + 1}",
                "kind": "wg",
                "serial": c.serial,
                "host": "127.0.0.1",
                "port": c.port,
                "poll_interval_s": 0.5,
                "timeout_s": 0.3,
                "retries": 1,
                "offline_after": 2,
                "retry_max_s": 1,
                "readers": [
                    {"door": 1, "direction": "in", "name": "gate-1-in", "context": "gate"},
                    {"door": 1, "direction": "out", "name": "gate-1-out", "context": "gate"},
                    {"door": 2, "name": "canteen-till", "context": "canteen"},
                ],
                **device,
            }
            for i, c in enumerate(sim)
        ],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.asynccontextmanager
async def running(path: Path, clock: Any = None) -> AsyncIterator[Agent]:
    agent = Agent(load_config(path), path, clock=clock)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def wait_for(sub: MqttSubscriber, n: int, pred: Callable[[Received], bool]) -> list[Any]:
    return await asyncio.to_thread(sub.wait_for_count, n, pred, WAIT_S)


def events_of(root: str, device: str) -> Callable[[Received], bool]:
    return lambda m: m.topic == f"{root}/events/{device}"


def state_is(root: str, device: str, state: str) -> Callable[[Received], bool]:
    def pred(m: Received) -> bool:
        return m.topic == f"{root}/devices/{device}/state" and m.json()["state"] == state

    return pred


def envelopes(sub: MqttSubscriber, root: str, device: str) -> list[dict[str, Any]]:
    """Every event of ``device`` received so far, in publishing order (by seq)."""
    out = [
        check_envelope(m.payload, "event", device)
        for m in sub.messages
        if m.topic == f"{root}/events/{device}"
    ]
    return sorted(out, key=lambda e: e["seq"])


def cards_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "card_read"]


async def until(cond: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not cond():
            await asyncio.sleep(0.02)


async def test_pushed_swipes_arrive_exactly_once_and_in_order(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-push/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-push")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path) as agent:
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                assert ctl.listener[0] == "127.0.0.1"  # the driver set the receiving server
                sent = []
                for i in range(20):
                    door, direction = (1, 1 + i % 2) if i % 3 else (2, 1)
                    granted = i % 7 != 3
                    ctl.swipe(8165500 + i, door, granted=granted, direction=direction)
                    sent.append((str(8165500 + i), door, granted))
                await wait_for(sub, 20, events_of(root, "ctl-1"))
                await asyncio.sleep(1.5)  # three more polls: nothing may come twice
                driver = agent.drivers["ctl-1"]
                assert isinstance(driver, WgDriver)
        events = envelopes(sub, root, "ctl-1")
    reads = cards_of(events)
    assert [e["data"]["record_index"] for e in reads] == list(range(1, 21))  # once, in order
    got = [(e["data"]["card"], e["data"]["door"], e["data"]["result"] == "granted") for e in reads]
    assert got == sent
    first, second, canteen = reads[1]["data"], reads[2]["data"], reads[0]["data"]
    assert (first["reader"], first["context"], first["direction"]) == ("gate-1-out", "gate", "out")
    assert (second["reader"], second["direction"]) == ("gate-1-in", "in")
    assert (canteen["reader"], canteen["context"]) == ("canteen-till", "canteen")
    assert reads[3]["data"]["reason"] == "no_privilege"
    # the time of the record (controller local time in Asia/Shanghai) in UTC
    ts = datetime.fromisoformat(reads[-1]["ts"].replace("Z", "+00:00")).timestamp()
    assert abs(ts - time.time()) < 30
    # they came as pushes, not read back by index
    assert driver.counts["read_back"] == 0
    assert driver.counts["committed"] == 20


async def test_swipes_made_while_the_agent_was_stopped_arrive_after_restart(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-catchup/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-catchup")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                for i in range(5):
                    ctl.swipe(1000 + i, 1)
                await wait_for(sub, 5, events_of(root, "ctl-1"))
            # the agent is off; students keep swiping (the controller pushes into the void)
            for i in range(5, 40):
                ctl.swipe(1000 + i, 1 + i % 4)
            async with running(path) as agent:
                await wait_for(sub, 40, events_of(root, "ctl-1"))
                ctl.swipe(1040, 3)  # and live pushes go on after the catch-up
                await wait_for(sub, 41, events_of(root, "ctl-1"))
                await asyncio.sleep(1.5)
                driver = agent.drivers["ctl-1"]
                assert isinstance(driver, WgDriver)
        events = envelopes(sub, root, "ctl-1")
    indexes = [e["data"]["record_index"] for e in events]
    assert indexes == list(range(1, 42))  # every record exactly once, in order
    assert [e["data"]["card"] for e in events] == [str(1000 + i) for i in range(41)]
    assert driver.counts["read_back"] == 35  # the missed ones were read back by index


async def test_records_overwritten_before_they_were_read_are_reported_once(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-overwritten/gw1"
    async with controllers(capacity=10) as sim:  # a controller that keeps 10 records
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-overwritten")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                ctl.swipe(1, 1)
                await wait_for(sub, 1, events_of(root, "ctl-1"))
            for card in range(2, 27):  # the agent is off for 25 swipes: 2-16 are overwritten
                ctl.swipe(card, 1)
            async with running(path):
                await wait_for(sub, 12, events_of(root, "ctl-1"))
                await asyncio.sleep(1)
        events = envelopes(sub, root, "ctl-1")
    assert [e["type"] for e in events] == ["card_read", "device_fault"] + ["card_read"] * 10
    fault = events[1]["data"]
    assert fault == {"fault": "records_overwritten", "first_lost": 2, "count": 15}
    assert [e["data"]["card"] for e in events[2:]] == [str(c) for c in range(17, 27)]


async def test_a_controller_clock_five_minutes_off_is_corrected(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.drivers.wg.driver")
    root = "campus/wg-clock/gw1"
    async with controllers(clock_offset_s=300) as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-clock")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                assert abs(ctl.clock_offset_s) <= 2, ctl.clock_offset_s
                ctl.swipe(77, 1)
                event = (await wait_for(sub, 1, events_of(root, "ctl-1")))[0]
                telemetry = (await wait_for(sub, 1, lambda m: "/telemetry/" in m.topic))[0]
    ts = datetime.fromisoformat(event.json()["ts"].replace("Z", "+00:00")).timestamp()
    assert abs(ts - time.time()) < 30  # the record carries the corrected time
    assert 295 <= telemetry.json()["data"]["clock_offset_s"] <= 301
    fixed = [r.getMessage() for r in caplog.records if "clock was" in r.getMessage()]
    assert len(fixed) == 1, fixed
    assert "+300 s off" in fixed[0] or "+299 s off" in fixed[0], fixed


class GatewayClock:
    """The gateway's clock, synchronised or not as the test says (a Pi before NTP)."""

    def __init__(self) -> None:
        self.is_synced = False

    def wall(self) -> float:
        return time.time()

    def mono(self) -> float:
        return time.monotonic()

    def synced(self) -> bool:
        return self.is_synced


async def test_records_wait_on_the_controller_while_the_gateway_clock_is_unsynchronised(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-nosync/gw1"
    clock = GatewayClock()
    async with controllers(clock_offset_s=300) as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-nosync")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path, clock) as agent:
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                for card in (11, 12, 13):
                    ctl.swipe(card, 1)
                degraded = (await wait_for(sub, 1, state_is(root, "ctl-1", "degraded")))[0]
                await asyncio.sleep(1)  # two more polls: still refused, nothing sent
                assert not envelopes(sub, root, "ctl-1")
                # an unsynchronised gateway clock is never copied to the doors
                assert ctl.clock_offset_s == 300
                clock.is_synced = True
                await wait_for(sub, 3, events_of(root, "ctl-1"))
                await until(lambda: abs(ctl.clock_offset_s) <= 2, "clock corrected")
                await wait_for(sub, 2, state_is(root, "ctl-1", "online"))
                await asyncio.sleep(1)
                assert agent.drivers["ctl-1"] is not None
        events = envelopes(sub, root, "ctl-1")
    assert "clock not synchronised" in degraded.json()["last_error"]
    assert [e["data"]["card"] for e in events] == ["11", "12", "13"]  # once, in order


async def test_forced_and_held_doors_and_fire_are_contract_events(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-alarms/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-alarms")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                ctl.forced_open(3)  # contact opens without a grant: door_opened + door_forced
                ctl.held_open(4)  # door_opened + door_held_open
                ctl.fire(True)
                ctl.exit_button(1)
                await wait_for(sub, 6, events_of(root, "ctl-1"))
        events = envelopes(sub, root, "ctl-1")
    got = [(e["type"], e["data"]["door"], e["data"].get("input")) for e in events]
    assert got == [
        ("door_opened", 3, None),
        ("door_forced", 3, None),
        ("door_opened", 4, None),
        ("door_held_open", 4, None),
        ("digital_input", 1, "fire"),
        ("digital_input", 1, "exit_button"),
    ]
    assert events[4]["data"]["severity"] == "critical"


async def test_door_open_command_opens_the_door_and_is_audited(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-open/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-open")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                request = {"request_id": "open-1", "device": "ctl-1", "door": 2, "by": "guard"}
                await asyncio.to_thread(
                    publish, mqtt_broker, f"{root}/cmd/door_open", json.dumps(request)
                )
                result = (await wait_for(sub, 1, lambda m: "/cmd_result/open-1" in m.topic))[0]
                assert ctl.doors[2].unlocked  # the controller's relay is energised
                bad = {"request_id": "open-2", "device": "ctl-1", "door": 7, "by": "guard"}
                await asyncio.to_thread(
                    publish, mqtt_broker, f"{root}/cmd/door_open", json.dumps(bad)
                )
                refused = (await wait_for(sub, 1, lambda m: "/cmd_result/open-2" in m.topic))[0]

                def audit(m: Received) -> bool:
                    return m.topic == f"{root}/events/ctl-1" and m.json()["type"] == "command_audit"

                audits = await wait_for(sub, 2, audit)
                lock = await wait_for(
                    sub,
                    1,
                    lambda m: (
                        events_of(root, "ctl-1")(m) and m.json()["data"].get("input") == "lock"
                    ),
                )
    assert result.json()["ok"] is True, result.json()
    assert result.json()["result"] == {"device": "ctl-1", "door": 2}
    assert refused.json()["ok"] is False
    assert "doors 1-4" in refused.json()["error"]
    first = audits[0].json()["data"]
    audited = (first["command"], first["by"], first["point"], first["result"])
    assert audited == ("door_open", "guard", 2, "ok")
    assert audits[1].json()["data"]["result"] == "refused"
    # the controller's own record of the remote open, as the contract's lock input
    data = lock[0].json()["data"]
    assert (data["input"], data["by"], data["door"]) == ("lock", "remote", 2)


async def test_an_unplugged_controller_goes_offline_and_comes_back_caught_up(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-unplug/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-unplug")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                ctl.swipe(1, 1)
                await wait_for(sub, 1, events_of(root, "ctl-1"))
                ctl.unplug()
                offline = (await wait_for(sub, 1, state_is(root, "ctl-1", "offline")))[0]
                for card in range(2, 12):  # the controller records, but nothing gets out
                    ctl.swipe(card, 2)
                await asyncio.sleep(0.5)
                assert len(envelopes(sub, root, "ctl-1")) == 1
                ctl.replug()
                await wait_for(sub, 2, state_is(root, "ctl-1", "online"))
                await wait_for(sub, 11, events_of(root, "ctl-1"))
                await asyncio.sleep(1)
        events = envelopes(sub, root, "ctl-1")
    assert "no answer from controller 423187757" in offline.json()["last_error"]
    assert [e["data"]["record_index"] for e in events] == list(range(1, 12))
    assert [e["data"]["card"] for e in events] == [str(c) for c in range(1, 12)]


async def test_a_dead_controller_is_retried_with_backoff(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-backoff/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        quick = {"poll_interval_s": 0.1, "timeout_s": 0.1, "retries": 0, "retry_max_s": 10}
        path = write_config(tmp_path, mqtt_broker, sim, "wg-backoff", **quick)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                ctl.unplug()
                await wait_for(sub, 1, state_is(root, "ctl-1", "offline"))
                ctl.ignored.clear()
                await asyncio.sleep(3)
                # waits of 0.1, 0.2, 0.4, 0.8, 1.6 s between tries: at most 5 in 3 s, where
                # a try every poll (0.1 s wait + 0.1 s timeout) would be 15
                tries = ctl.ignored["unplugged"]
                ctl.replug()
                await wait_for(sub, 2, state_is(root, "ctl-1", "online"))
    assert 1 <= tries <= 6, tries


async def test_firmware_v6_62_pushes_with_start_byte_0x19_are_taken(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-v662/gw1"
    async with controllers(event_som=0x19) as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-v662")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path) as agent:
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                for card in (1, 2, 3):
                    ctl.swipe(card, 1)
                await wait_for(sub, 3, events_of(root, "ctl-1"))
                driver = agent.drivers["ctl-1"]
                assert isinstance(driver, WgDriver)
                hub = agent.hubs["wg"]
                assert isinstance(hub, WgHub)
        events = envelopes(sub, root, "ctl-1")
    assert [e["data"]["card"] for e in events] == ["1", "2", "3"]
    assert driver.counts["read_back"] == 0  # taken as pushes, not read back
    assert hub.unclaimed == 0


async def test_garbage_datagrams_are_logged_once_and_never_stop_the_driver(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    root = "campus/wg-garbage/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-garbage")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path) as agent:
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                hub = agent.hubs["wg"]
                assert isinstance(hub, WgHub)
                assert hub.address is not None
                ours = SERIAL.to_bytes(4, "little")
                bad_bcd = bytearray(ctl.status_frame())
                bad_bcd[8] = 99  # a record index far ahead, with a time that is not BCD
                bad_bcd[20:27] = b"\xff" * 7
                garbage = [
                    b"hello",  # not a WG frame: nobody's
                    b"\x17\x20\x00\x00" + ours,  # our serial, 8 bytes long
                    b"\x17\xee\x00\x00" + ours + bytes(56),  # unknown function
                    bytes(bad_bcd),
                ]
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    for _ in range(3):
                        for frame in garbage:
                            s.sendto(frame, hub.address)
                await asyncio.sleep(0.5)
                ctl.swipe(4242, 1)
                await wait_for(sub, 1, events_of(root, "ctl-1"))
                driver = agent.drivers["ctl-1"]
                assert isinstance(driver, WgDriver)
                assert driver.counts["malformed"] == 9
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    unknown = [m for m in messages if "belongs to no configured device" in m]
    malformed = [m for m in messages if "malformed frame from controller" in m]
    assert len(unknown) == 1, unknown  # once per sender
    assert len(malformed) == 1, malformed  # once, then counted
    summary = [m for m in messages if "more malformed frames" in m]
    assert summary, "no summary at stop"
    assert "8 more" in summary[-1], summary


async def test_a_morning_rush_on_eight_lanes_is_complete_and_in_order(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-rush/gw1"
    async with controllers(2) as sim:
        path = write_config(tmp_path, mqtt_broker, sim, "wg-rush")
        schedule = rush_schedule(200, 60, 8, seed=9)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                for device in ("ctl-1", "ctl-2"):
                    await wait_for(sub, 1, state_is(root, device, "online"))
                await run_rush(sim, schedule, sim.lanes(8), speed=120)  # 200 swipes in 0.5 s

                def card_reads(m: Received) -> bool:
                    return "/events/" in m.topic and m.json()["type"] == "card_read"

                await wait_for(sub, 200, card_reads)
                await asyncio.sleep(1)
        per_device = {d: envelopes(sub, root, d) for d in ("ctl-1", "ctl-2")}
    lanes = sim.lanes(8)
    for device, ctl in zip(("ctl-1", "ctl-2"), sim, strict=True):
        events = per_device[device]
        expected = [s.card for s in schedule if lanes[s.lane][0] == ctl.serial]
        assert [int(e["data"]["card"]) for e in events] == expected  # in order, once
        assert [e["data"]["record_index"] for e in events] == list(range(1, len(expected) + 1))
    assert sum(len(v) for v in per_device.values()) == 200


async def test_a_controller_without_a_listener_is_read_by_polling(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-poll/gw1"
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-poll", listener=False, store_index=True)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                for card in range(3):
                    ctl.swipe(card + 1, 1)
                await wait_for(sub, 3, events_of(root, "ctl-1"))
        events = envelopes(sub, root, "ctl-1")
    assert ctl.listener == ("0.0.0.0", 0)  # never set: the gateway reads instead
    assert [e["data"]["record_index"] for e in events] == [1, 2, 3]
    assert ctl.read_index == 3  # store_index: the vendor's tool sees what was committed


async def test_a_replaced_controller_is_read_from_its_first_record(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/wg-replaced/gw1"
    async with controllers() as sim:
        old = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-replaced")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                for card in range(1, 6):
                    old.swipe(card, 1)
                await wait_for(sub, 5, events_of(root, "ctl-1"))
                # the controller is swapped for a new one (its log starts at 1 again) on the
                # same address, and the installer keeps the serial in the config
                old.close()
                new = WgController(SERIAL, doors=4, port=old.port, clock=shanghai_now)
                async with asyncio.timeout(5):
                    while True:  # the old socket closes on a later turn of the loop
                        try:
                            await new.start()
                            break
                        except OSError:
                            await asyncio.sleep(0.01)
                try:
                    new.swipe(6, 1)
                    new.swipe(7, 1)
                    await wait_for(sub, 7, events_of(root, "ctl-1"))
                    await asyncio.sleep(1)
                finally:
                    new.close()
        events = envelopes(sub, root, "ctl-1")
    assert [e["data"]["card"] for e in events] == [str(c) for c in range(1, 8)]
    assert [e["data"]["record_index"] for e in events] == [1, 2, 3, 4, 5, 1, 2]


async def test_a_late_answer_is_never_taken_for_the_next_request(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    """A controller (a hand-written one here) that answers the read of record 2 only after
    the driver gave up and asked again: the late copy must not be taken as record 3."""
    root = "campus/wg-late/gw1"
    sim = WgController(SERIAL, doors=4, clock=shanghai_now)
    await sim.start()
    for card in (501, 502, 503):
        sim.swipe(card, 1)
    sim.close()
    # a proxy in front of the simulated controller's wire logic that delays the first
    # answers: record 2's until after the retry, so that it arrives while the read of
    # record 3 waits for its own (delayed a little, within the timeout)
    delays = {2: 0.45, 3: 0.25}
    loop = asyncio.get_running_loop()

    class Proxy(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            answer = sim.handle(data)
            if answer is None:
                return
            index = int.from_bytes(data[8:12], "little")
            if data[1] == 0xB0 and index in delays:
                loop.call_later(delays.pop(index), self.transport.sendto, answer, addr)
                return
            self.transport.sendto(answer, addr)

    transport, _ = await loop.create_datagram_endpoint(Proxy, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]

    one = [SimpleNamespace(serial=SERIAL, port=port)]
    try:
        path = write_config(tmp_path, mqtt_broker, one, "wg-late", listener=False)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 3, events_of(root, "ctl-1"))
                await asyncio.sleep(1)
            events = envelopes(sub, root, "ctl-1")
    finally:
        transport.close()
    assert [(e["data"]["record_index"], e["data"]["card"]) for e in events] == [
        (1, "501"),
        (2, "502"),
        (3, "503"),
    ]


async def test_one_request_in_flight_per_controller_even_with_a_command_during_catch_up(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    """A controller (the simulator's wire logic behind a proxy that answers after 20 ms)
    with 30 records to catch up; a door_open arrives meanwhile: it waits its turn."""
    root = "campus/wg-inflight/gw1"
    sim = WgController(SERIAL, doors=4, clock=shanghai_now)
    await sim.start()
    for card in range(1, 31):
        sim.swipe(card, 1)
    sim.close()
    loop = asyncio.get_running_loop()
    outstanding = [0, 0]  # now, most at once

    class Proxy(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            answer = sim.handle(data)
            if answer is None:
                return
            outstanding[0] += 1
            outstanding[1] = max(outstanding)
            loop.call_later(0.02, self.answer, answer, addr)

        def answer(self, answer: bytes, addr: Any) -> None:
            outstanding[0] -= 1
            self.transport.sendto(answer, addr)

    transport, _ = await loop.create_datagram_endpoint(Proxy, local_addr=("127.0.0.1", 0))
    one = [SimpleNamespace(serial=SERIAL, port=transport.get_extra_info("sockname")[1])]
    try:
        path = write_config(tmp_path, mqtt_broker, one, "wg-inflight", listener=False)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(path):
                await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                request = {"request_id": "open-9", "device": "ctl-1", "door": 3, "by": "guard"}
                await asyncio.to_thread(
                    publish, mqtt_broker, f"{root}/cmd/door_open", json.dumps(request)
                )
                result = (await wait_for(sub, 1, lambda m: "/cmd_result/open-9" in m.topic))[0]
                await wait_for(sub, 31, events_of(root, "ctl-1"))  # 30 swipes + the audit
                caught_up = len(cards_of(envelopes(sub, root, "ctl-1")))
    finally:
        transport.close()
        sim.close()
    assert result.json()["ok"] is True, result.json()
    assert caught_up == 30
    assert outstanding[1] == 1  # never two requests to one controller at once


async def test_door_mode_and_delay_are_kept_as_the_config_says(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.drivers.wg.driver")
    root = "campus/wg-doors/gw1"
    controls = [
        {"door": 2, "delay_s": 7},
        {"door": 4, "mode": "normally_closed", "delay_s": 3},
        {"door": 1, "mode": "controlled", "delay_s": 3},  # as the controller has it already
    ]
    async with controllers() as sim:
        ctl = sim[SERIAL]
        path = write_config(tmp_path, mqtt_broker, sim, "wg-doors", door_control=controls)
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            for _run in range(2):  # the second start finds them set: no change, no log line
                async with running(path):
                    await wait_for(sub, 1, state_is(root, "ctl-1", "online"))
                    await asyncio.sleep(0.2)
    assert (ctl.doors[2].mode, ctl.doors[2].delay_s) == (3, 7)
    assert (ctl.doors[4].mode, ctl.doors[4].delay_s) == (2, 3)
    assert (ctl.doors[3].mode, ctl.doors[3].delay_s) == (3, 3)  # not listed: left alone
    changed = [r.getMessage() for r in caplog.records if "delay" in r.getMessage()]
    assert len(changed) == 2, changed
    assert "door 2 set to controlled, delay 7 s (was mode 3, 3 s)" in changed[0]
