"""The siren (issue 10, edge_agent/alarms/siren.py) against a simulated relay module: the
pymodbus simulator with the ``waveshare_relay8`` map on a real socket, driven by the real
Modbus driver; the coil's state is read from the simulator. Max on-time and retries run on
an injected clock. The last test runs the whole agent: a critical rule alarm from a fire
input on a simulated DI module switches the siren on, and the audit reaches the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.alarms.lifecycle import AlarmBook
from edge_agent.alarms.siren import FAULT_RULE, Siren
from edge_agent.config.loader import load_config
from edge_agent.config.sirens import SirenConfig
from edge_agent.driver import DriverContext
from edge_agent.drivers.modbus import ModbusDevice, ModbusDriver, ModbusSettings
from edge_agent.simulators import DiModuleSim
from edge_agent.simulators.faults import Fault
from edge_agent.supervisor import Agent
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber

pytestmark = pytest.mark.integration

RELAYS = "gate-relays"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def relay_sim() -> AsyncIterator[DiModuleSim]:
    async with DiModuleSim({RELAYS: 1}, model="waveshare_relay8") as sim:
        yield sim


def coil(sim: DiModuleSim, point: str = "relay1") -> bool:
    """What the relay module's coil is, on the simulator's side."""
    return bool(sim.devices[RELAYS].written.get(point, 0))


def book() -> tuple[AlarmBook, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    alarms = AlarmBook(
        "campus/s/gw1",
        lambda *a, **kw: sent.append(kw["data"]),
        lambda topic, data: None,
        language="en",
    )
    return alarms, sent


class Rig:
    """A siren on relay1 of the simulated module, its alarm book, audit and task."""

    def __init__(
        self,
        sim: DiModuleSim,
        clock: FakeClock,
        *,
        wall: FakeClock | None = None,
        store: Any = None,
        alarms: AlarmBook | None = None,
        **cfg: Any,
    ) -> None:
        device = ModbusDevice.model_validate(
            {
                "id": RELAYS,
                "kind": "modbus",
                "profile": "waveshare_relay8",
                "host": "127.0.0.1",
                "port": sim.port,
                "unit": 1,
                "timeout_s": 0.3,
                "retries": 0,
            }
        )
        self.driver = ModbusDriver(device, DriverContext(buses={}, settings=ModbusSettings()))
        self.alarms, self.sent = book()
        if alarms is not None:
            self.alarms = alarms
        self.audits: list[dict[str, Any]] = []
        config = SirenConfig.model_validate(
            {"id": "gate-siren", "device": RELAYS, "point": "relay1", "max_on_s": 60, **cfg}
        )
        self.siren = Siren(
            config,
            self.driver,
            audit=lambda device, data: self.audits.append({"device": device, **data}),
            alarms=self.alarms,
            clock=clock,
            wall=wall or FakeClock(),
            store=store,
        )
        self.alarms.add_listener(self.siren.see)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.siren.run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.driver.close()

    def raise_(self, rule: str, severity: Any = "critical", device: str = "b1-di") -> str:
        return self.alarms.raise_(rule, device, severity, en=rule, zh=rule).alarm_id


async def until(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():
            await asyncio.sleep(0.01)


@pytest.fixture
async def rig(relay_sim: DiModuleSim) -> AsyncIterator[tuple[Rig, DiModuleSim, FakeClock]]:
    clock = FakeClock()
    r = Rig(relay_sim, clock)
    try:
        yield r, relay_sim, clock
    finally:
        await r.close()


async def test_a_critical_alarm_rings_the_siren_until_it_is_acknowledged(
    rig: tuple[Rig, DiModuleSim, FakeClock],
) -> None:
    r, sim, _ = rig
    r.start()
    await until(lambda: r.siren.relay_on is False)  # switched off at start: no alarm
    assert not coil(sim)

    r.raise_("co2_high", "major")  # not critical: the siren stays silent
    await asyncio.sleep(0.2)
    assert not coil(sim)

    fire = r.raise_("fire_input")
    await until(lambda: coil(sim))
    r.alarms.clear("fire_input", "b1-di")  # the input is back to normal, nobody has seen it
    await asyncio.sleep(0.2)
    assert coil(sim), "cleared but unacknowledged: it still rings (ISA-18.2)"
    r.alarms.ack(fire, "guard")
    await until(lambda: not coil(sim))
    # a momentary alarm (door_forced is raised and cleared at once) rings until acknowledged
    door = r.raise_("door_forced")
    r.alarms.clear("door_forced", "b1-di")
    assert r.alarms.alarms[door].state == "cleared_unacked"
    await until(lambda: coil(sim))
    r.alarms.shelve(door, "guard", 30)  # shelved: silent
    await until(lambda: not coil(sim))

    switched = [(a["old"], a["new"], a["result"]) for a in r.audits]
    assert switched == [
        (None, False, "ok"),
        (False, True, "ok"),
        (True, False, "ok"),
        (False, True, "ok"),
        (True, False, "ok"),
    ]
    on = r.audits[1]
    assert on["device"] == RELAYS
    assert (on["command"], on["by"], on["point"], on["siren"]) == (
        "device_write",
        "siren",
        "relay1",
        "gate-siren",
    )
    assert fire in on["reason"]


async def test_max_on_time_then_silent_until_a_new_alarm(
    rig: tuple[Rig, DiModuleSim, FakeClock],
) -> None:
    r, sim, clock = rig
    r.start()
    r.raise_("fire_input")
    await until(lambda: coil(sim))
    clock.now += 59
    r.siren.poke()
    await asyncio.sleep(0.2)
    assert coil(sim), "59 s of 60"
    clock.now += 1
    r.siren.poke()
    # the relay is off in the simulator a moment before the siren has read it back and
    # audited the switch: wait for the audit, then check both
    await until(lambda: bool(r.audits) and r.audits[-1]["reason"] == "max_on_s")
    assert not coil(sim)
    assert r.audits[-1]["reason"] == "max_on_s"
    # still active and unacknowledged, but it has rung its time
    clock.now += 600
    r.siren.poke()
    await asyncio.sleep(0.2)
    assert not coil(sim)
    r.raise_("door_forced")  # a new matching alarm rings it again
    await until(lambda: coil(sim))


async def test_a_new_alarm_while_it_rings_gets_its_own_max_on_time(
    rig: tuple[Rig, DiModuleSim, FakeClock],
) -> None:
    r, sim, clock = rig
    r.start()
    r.raise_("fire_input")
    await until(lambda: coil(sim))
    clock.now += 50
    r.raise_("door_forced")  # 10 s before the fire alarm's time is up
    await asyncio.sleep(0.2)
    clock.now += 50  # 100 s since the first alarm, 50 s since the new one
    r.siren.poke()
    await asyncio.sleep(0.2)
    assert coil(sim)
    clock.now += 10
    r.siren.poke()
    # the relay is off in the simulator a moment before the siren has read it back and
    # audited the switch: wait for the audit, then check both
    await until(lambda: bool(r.audits) and r.audits[-1]["reason"] == "max_on_s")
    assert not coil(sim)
    assert r.audits[-1]["reason"] == "max_on_s"


async def test_rules_choose_which_alarms_ring_it(relay_sim: DiModuleSim) -> None:
    r = Rig(relay_sim, FakeClock(), severities=["critical", "major"], rules=["door_*"])
    try:
        r.start()
        await until(lambda: r.siren.relay_on is False)
        r.raise_("fire_input")
        r.raise_("co2_high", "minor")
        await asyncio.sleep(0.2)
        assert not coil(relay_sim)
        r.raise_("door_held_open", "major")
        await until(lambda: coil(relay_sim))
    finally:
        await r.close()


async def test_a_dead_relay_module_is_reported_once_retried_and_never_blocks_alarms(
    rig: tuple[Rig, DiModuleSim, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    r, sim, clock = rig
    r.start()
    await until(lambda: r.siren.relay_on is False)
    sim.faults.set(RELAYS, Fault.make("no_answer"))
    caplog.set_level(logging.DEBUG, logger="edge_agent.alarms.siren")
    fire = r.raise_("fire_input")
    # the alarm went out at once, whatever the relay does
    assert r.sent[-1]["alarm_id"] == fire
    await until(lambda: r.siren.failures >= 1)
    fault = r.alarms.find(FAULT_RULE, RELAYS)
    assert fault is not None
    assert fault.severity == "major"
    for _ in range(3):  # retried with backoff on the injected clock
        failures = r.siren.failures
        clock.now += 31
        r.siren.poke()
        await until(lambda f=failures: r.siren.failures > f)  # type: ignore[misc]
    warnings = [
        x for x in caplog.records if x.levelno == logging.WARNING and x.name.endswith("siren")
    ]
    assert len(warnings) == 1, [x.getMessage() for x in warnings]
    assert "cannot be switched on" in warnings[0].getMessage()
    failed = [a for a in r.audits if a["result"] == "refused"]
    assert len(failed) == 1  # one audit of the failed switch, not one per retry
    assert r.siren.relay_on is None  # no answer: not known to ring

    sim.faults.clear(RELAYS)
    clock.now += 31
    r.siren.poke()
    await until(lambda: r.siren.relay_on is True)
    assert coil(sim)
    assert r.alarms.find(FAULT_RULE, RELAYS) is None  # cleared: visible until acknowledged
    assert any("works again" in x.getMessage() for x in caplog.records)
    assert r.audits[-1]["result"] == "ok"
    assert r.audits[-1]["new"] is True


async def test_the_gateways_own_alarms_ring_it_only_when_named(relay_sim: DiModuleSim) -> None:
    r = Rig(relay_sim, FakeClock())  # every critical alarm, by default
    try:
        r.start()
        await until(lambda: r.siren.relay_on is False)
        r.raise_("outbox_corrupt", device="gw1")  # critical, the gateway's own
        await asyncio.sleep(0.2)
        assert not coil(relay_sim)
    finally:
        await r.close()

    r = Rig(relay_sim, FakeClock(), rules=["fire_*"])
    try:
        r.start()
        await until(lambda: r.siren.relay_on is False)
        # a fire input raised too often becomes 'chattering': still the fire rule
        r.alarms.raise_("chattering", "b1-di", "critical", en="", zh="", value="fire_input")
        await until(lambda: coil(relay_sim))
    finally:
        await r.close()

    r = Rig(relay_sim, FakeClock(), rules=["outbox_corrupt"])
    try:
        r.start()
        await until(lambda: r.siren.relay_on is False)
        r.raise_("outbox_corrupt", device="gw1")
        await until(lambda: coil(relay_sim))
    finally:
        await r.close()


class DroppedWrites:
    """A relay module that answers writes but does not switch (a welded contact, a
    module in manual mode): reads go to the real driver, writes are acknowledged and lost."""

    def __init__(self, driver: ModbusDriver) -> None:
        self.driver = driver

    def switch_points(self) -> list[str]:
        return self.driver.switch_points()

    async def write(self, point: str, value: float | int | bool) -> None:
        return None

    async def read_switch(self, point: str) -> bool:
        return await self.driver.read_switch(point)


async def test_a_switch_is_verified_by_reading_the_coil_back(
    rig: tuple[Rig, DiModuleSim, FakeClock],
) -> None:
    r, _sim, _ = rig
    r.siren.driver = DroppedWrites(r.driver)
    r.start()
    await until(lambda: r.siren.relay_on is False)  # off is what the coil reads: fine
    r.raise_("fire_input")
    await until(lambda: r.siren.failures == 1)
    assert r.siren.relay_on is None
    assert "read back off" in r.audits[-1]["error"]
    assert r.alarms.find(FAULT_RULE, RELAYS) is not None


class SlowReadBack(DroppedWrites):
    """Writes go through; the read-back waits until released (a slow RS-485 line)."""

    def __init__(self, driver: ModbusDriver) -> None:
        super().__init__(driver)
        self.release = asyncio.Event()

    async def write(self, point: str, value: float | int | bool) -> None:
        await self.driver.write(point, value)

    async def read_switch(self, point: str) -> bool:
        await self.release.wait()
        return await self.driver.read_switch(point)


async def test_a_stop_in_the_middle_of_a_switch_still_switches_it_off(
    rig: tuple[Rig, DiModuleSim, FakeClock],
) -> None:
    r, sim, _ = rig
    slow = SlowReadBack(r.driver)
    r.siren.driver = slow
    r.start()
    slow.release.set()
    await until(lambda: r.siren.relay_on is False)
    slow.release.clear()
    r.raise_("fire_input")
    await until(lambda: coil(sim))  # written, not yet read back
    assert r.task is not None
    r.task.cancel()  # the agent stops now
    await asyncio.gather(r.task, return_exceptions=True)
    slow.release.set()
    await r.siren.close()
    assert not coil(sim)


async def test_at_start_it_rings_only_for_an_open_unacknowledged_alarm(
    relay_sim: DiModuleSim,
) -> None:
    relay_sim.devices[RELAYS].written["relay1"] = 1.0  # ringing when the agent died
    r = Rig(relay_sim, FakeClock())
    try:
        r.start()
        await until(lambda: not coil(relay_sim))
    finally:
        await r.close()

    r = Rig(relay_sim, FakeClock())
    acked = r.raise_("door_forced")
    r.alarms.ack(acked, "guard")
    r.siren.load(a.data() for a in r.alarms.alarms.values())
    try:
        r.start()
        await until(lambda: r.siren.relay_on is False)
        assert not coil(relay_sim)
    finally:
        await r.close()

    r = Rig(relay_sim, FakeClock())
    r.raise_("fire_input")
    r.siren.load(a.data() for a in r.alarms.alarms.values())
    try:
        r.start()
        await until(lambda: coil(relay_sim))
    finally:
        await r.close()


class Store:
    """What the outbox keeps of a siren (OutboxSirenStore), in memory."""

    def __init__(self) -> None:
        self.text: str | None = None

    def load(self) -> str | None:
        return self.text

    def save(self, text: str) -> None:
        self.text = text


async def test_a_restart_does_not_give_a_ringing_siren_a_new_max_on_time(
    relay_sim: DiModuleSim,
) -> None:
    clock, wall, store = FakeClock(), FakeClock(), Store()
    first = Rig(relay_sim, clock, wall=wall, store=store)
    first.raise_("fire_input")
    first.start()
    await until(lambda: coil(relay_sim))
    clock.now += 40
    wall.now += 40
    await first.close()  # a crash: nobody switched it off, the relay rings on
    assert coil(relay_sim)
    wall.now += 5

    again = Rig(relay_sim, clock, wall=wall, store=store, alarms=first.alarms)
    again.siren.load(a.data() for a in again.alarms.alarms.values())
    try:
        again.start()
        await until(lambda: again.siren.relay_on is True)
        clock.now += 14  # 40 + 5 + 14 = 59 s of 60
        again.siren.poke()
        await asyncio.sleep(0.2)
        assert coil(relay_sim)
        clock.now += 1
        again.siren.poke()
        await until(lambda: not coil(relay_sim))
    finally:
        await again.close()

    # it rang its time: the same alarm, still unacknowledged, does not ring it after a restart
    third = Rig(relay_sim, clock, wall=wall, store=store, alarms=first.alarms)
    third.siren.load(a.data() for a in third.alarms.alarms.values())
    try:
        third.start()
        await until(lambda: third.siren.relay_on is False)
        assert not coil(relay_sim)
    finally:
        await third.close()


async def test_a_clean_stop_switches_off_and_keeps_the_time_it_rang(
    relay_sim: DiModuleSim,
) -> None:
    clock, wall, store = FakeClock(), FakeClock(), Store()
    first = Rig(relay_sim, clock, wall=wall, store=store)
    first.raise_("fire_input")
    first.start()
    await until(lambda: coil(relay_sim))
    clock.now += 40
    assert first.task is not None
    first.task.cancel()
    await asyncio.gather(first.task, return_exceptions=True)
    await first.siren.close()  # the agent stopping
    assert not coil(relay_sim)
    assert first.audits[-1]["reason"] == "agent stopping"
    await first.close()
    wall.now += 3600  # down for an hour: silent meanwhile, not counted

    again = Rig(relay_sim, clock, wall=wall, store=store, alarms=first.alarms)
    again.siren.load(a.data() for a in again.alarms.alarms.values())
    try:
        again.start()
        await until(lambda: coil(relay_sim))
        clock.now += 19
        again.siren.poke()
        await asyncio.sleep(0.2)
        assert coil(relay_sim), "40 + 19 s of 60"
        clock.now += 1
        again.siren.poke()
        await until(lambda: not coil(relay_sim))
    finally:
        await again.close()


# -- the whole agent ----------------------------------------------------------------------
ROOT = "campus/siren-school/gw1"


def agent_config(
    tmp_path: Path, broker: MqttBroker, di_port: int, relay_port: int, max_on_s: float = 120
) -> Path:
    cfg = {
        "site": {"id": "siren-school", "gateway_id": "gw1", "language": "en"},
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "devices": [
            {
                "id": "b1-di",
                "kind": "modbus",
                "profile": "waveshare_io8",
                "host": "127.0.0.1",
                "port": di_port,
                "unit": 1,
                "timeout_s": 0.1,
                "retries": 0,
            },
            {
                "id": RELAYS,
                "kind": "modbus",
                "profile": "waveshare_relay8",
                "host": "127.0.0.1",
                "port": relay_port,
                "unit": 1,
            },
        ],
        "doors": {"inputs": [{"device": "b1-di", "point": "di7", "input": "fire"}]},
        "sirens": [{"id": "gate-siren", "device": RELAYS, "point": "relay1", "max_on_s": max_on_s}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_a_critical_rule_alarm_switches_the_agents_siren(
    tmp_path: Path, mqtt_broker: MqttBroker, relay_sim: DiModuleSim
) -> None:
    async with DiModuleSim({"b1-di": 1}, initial=0) as di:
        path = agent_config(tmp_path, mqtt_broker, di.port, relay_sim.port)
        agent = Agent(load_config(path), path)
        task = asyncio.create_task(agent.run())
        try:
            with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
                await asyncio.to_thread(
                    sub.wait_for, lambda m: m.topic == f"{ROOT}/telemetry/b1-di", 15
                )
                assert not coil(relay_sim)
                di.set_input("b1-di", "di7", 1)  # the fire panel's relay: fire
                alarm = await asyncio.to_thread(
                    sub.wait_for,
                    lambda m: (
                        m.topic == f"{ROOT}/alarms" and m.json()["data"]["rule"] == "fire_input"
                    ),
                    15,
                )
                assert alarm.json()["data"]["severity"] == "critical"
                await until(lambda: coil(relay_sim), 15)
                audit = await asyncio.to_thread(
                    sub.wait_for,
                    lambda m: (
                        m.topic == f"{ROOT}/events/{RELAYS}"
                        and m.json()["type"] == "command_audit"
                        and m.json()["data"]["new"] is True
                    ),
                    15,
                )
                assert audit.json()["data"]["by"] == "siren"
                # the platform acknowledges it: the siren stops
                agent.alarms.ack(alarm.json()["data"]["alarm_id"], "guard")
                await until(lambda: not coil(relay_sim), 15)
                # a second alarm rings it again, and a clean stop switches it off
                di.set_input("b1-di", "di7", 0)
                await until(lambda: agent.alarms.find("fire_input", "b1-di") is None, 15)
                di.set_input("b1-di", "di7", 1)
                await until(lambda: coil(relay_sim), 15)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
    assert not coil(relay_sim)


async def test_an_alarm_that_rang_its_time_does_not_ring_again_after_an_agent_restart(
    tmp_path: Path, mqtt_broker: MqttBroker, relay_sim: DiModuleSim
) -> None:
    """The siren's state is in the outbox database: a restart (a crash loop, an update)
    does not give an alarm nobody acknowledges a new max_on_s."""
    async with DiModuleSim({"b1-di": 1}, initial=0) as di:
        path = agent_config(tmp_path, mqtt_broker, di.port, relay_sim.port, max_on_s=5)
        agent = Agent(load_config(path), path)
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: bool(agent.sirens) and agent.sirens[0].relay_on is False, 15)
            di.set_input("b1-di", "di7", 1)  # fire, and nobody acknowledges it
            await until(lambda: coil(relay_sim), 15)
            await until(lambda: not coil(relay_sim), 30)  # its 5 s are over
            assert agent.alarms.find("fire_input", "b1-di") is not None
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)

        again = Agent(load_config(path), path)
        task = asyncio.create_task(again.run())
        try:
            siren = again.sirens[0]
            await until(lambda: siren.switches >= 1, 15)
            assert siren.asking, "the alarm is still open and unacknowledged"
            assert siren.relay_on is False  # its first switch at start: off
            await asyncio.sleep(0.5)
            assert not coil(relay_sim)
            assert siren.switches == 1
        finally:
            again.stop()
            await asyncio.wait_for(task, 15)
