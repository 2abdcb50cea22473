"""``edge-agent bench`` part ``alarms``: from a door or fire input to the alarm on the
broker (and to the siren's relay) while a 1,000,000-message backlog drains.

Issue 10: "Security staff must get an alarm within a second, also when the uplink is down".
The worst moment is the uplink coming back after an outage: a day of telemetry queued in the
outbox drains at full speed, and an alarm raised meanwhile must not wait behind it.

The setup, all on loopback:

* the outbox is filled with ``--messages`` telemetry rows (default 1,000,000) before the
  agent starts, as after an outage;
* the agent (``python -m edge_agent run``, a child process, as in the ``campus`` part)
  polls ``MODULES`` simulated Waveshare IO 8CH input modules (every 0.25 s, the profile's
  default) on one Modbus TCP server, and a simulated Waveshare relay module with a siren on
  relay 1 (``sirens:``); input 1 of each module is a door contact (``doors:``, no card
  reader: opening it is ``door_forced``), input 7 the fire panel's relay (``fire``); the
  shipped rules make both critical alarms;
* the simulators run in this process, on its event loop, so the moment of each input change
  is known on this process's ``time.monotonic``; a subscriber on ``ROOT/alarms`` (its own
  thread) stamps each alarm's arrival with the same clock; the relay module's coil writes
  are stamped as the simulator applies them.

Every ``PERIOD_S`` one input changes (doors and fire inputs in turn, module after module:
each rule on each module at most once in ``MODULES * 2 * PERIOD_S`` s, so the rules'
chattering guard, 3 in 60 s, never folds them); when its alarm arrives the bench
acknowledges it (``ROOT/cmd/alarm_ack``, as the platform would) and restores the input, so
the siren stops and the next alarm switches it on again. This goes on until ``ROOT/health``
says the publisher has sent the whole backlog.

The agent also runs its local console (``console:``, a credentials file written with the
console's own :func:`~edge_agent.console.auth.set_password`, ``http.bind`` on a loopback
port the agent picks, read from its log line). The bench logs in as a browser does (the
login token and its cookie, the CSRF header, the session cookie) and reads the console's
alarm event stream (:class:`~edge_agent.tools.bench.ConsoleClient`) on its event loop,
stamping each alarm event with the same clock.

Figures: p50/p99/max of input -> alarm on the broker (the poll interval is part of it: an
input is seen 0-0.25 s after it changes, 0.125 s on average), the same by input kind,
input -> alarm event on the console's stream, and input -> siren relay on (for inputs made
while the siren was off). The first alarm is a warm-up and is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.tools.bench import (
    GATEWAY_ID,
    SITE_ID,
    TOPICS,
    BenchError,
    ConsoleClient,
    ProcSampler,
    _child,
    _fill_outbox,
    _progress,
    _remove_db,
    _Subscriber,
    _tail,
    percentile,
)

#: input modules polled by the agent (each a door contact and a fire input)
MODULES = 24
#: one input change every PERIOD_S seconds
PERIOD_S = 0.7
#: the siren's relay module and point
RELAYS = "siren-relays"
SIREN_POINT = "relay1"
#: how long an input's alarm may take before the bench gives up on it
ALARM_TIMEOUT_S = 30.0
#: ROOT/health every few seconds: the bench learns from it when the backlog is gone
HEALTH_INTERVAL_S = 2.0
#: the console user the bench logs in as, and its credentials file (in the workdir)
CONSOLE_USER = "bench"
CONSOLE_CREDENTIALS = "console-users"
#: the agent's log line naming where its HTTP server listens (edge_agent/http.py)
_LISTENING = re.compile(r"HTTP server listening on (http://127\.0\.0\.1:\d+)")


def module_id(k: int) -> str:
    return f"di-{k + 1:02d}"


def alarm_config(
    *,
    host: str,
    port: int,
    protocol: str,
    outbox_path: str,
    di_port: int,
    relay_port: int,
    console_credentials: str | None = None,
) -> dict[str, Any]:
    """The agent's config for the bench: the input modules, their doors and fire inputs,
    the relay module and its siren, and (with ``console_credentials``) the local console
    on a loopback port the agent picks; every other setting the agent's default."""
    modules = [module_id(k) for k in range(MODULES)]
    devices: list[dict[str, Any]] = [
        {
            "id": dev,
            "kind": "modbus",
            "profile": "waveshare_io8",
            "host": "127.0.0.1",
            "port": di_port,
            "unit": k + 1,
            "timeout_s": 0.1,
            "retries": 0,
        }
        for k, dev in enumerate(modules)
    ]
    devices.append(
        {
            "id": RELAYS,
            "kind": "modbus",
            "profile": "waveshare_relay8",
            "host": "127.0.0.1",
            "port": relay_port,
            "unit": 1,
        }
    )
    cfg: dict[str, Any] = {
        "site": {"id": SITE_ID, "gateway_id": GATEWAY_ID, "name": "Bench School / 基准测试学校"},
        "mqtt": {
            "host": host,
            "port": port,
            "protocol": protocol,
            "health_interval_s": HEALTH_INTERVAL_S,
        },
        "outbox": {"path": outbox_path},
        "clock": {"sync_check": "none"},
        "devices": devices,
        "doors": {
            "doors": [
                {"id": f"door-{dev}", "contact": {"device": dev, "point": "di1"}, "flap_s": 0}
                for dev in modules
            ],
            "inputs": [
                {"device": dev, "point": "di7", "input": "fire", "active_when": 0}
                for dev in modules
            ],
        },
        "sirens": [{"id": "bench-siren", "device": RELAYS, "point": SIREN_POINT, "max_on_s": 1800}],
    }
    if console_credentials is not None:
        cfg["http"] = {"bind": "127.0.0.1:0"}  # loopback only, any free port
        cfg["console"] = {"credentials": console_credentials}
    return cfg


def listening_url(log_text: str) -> str | None:
    """``http://127.0.0.1:PORT`` from the agent's log line saying where it listens."""
    match = _LISTENING.search(log_text)
    return match.group(1) if match else None


@dataclass
class AlarmLog:
    """What the subscriber saw (its own thread): alarms by (rule, device), health, status."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (rule, device) -> [(received, alarm_id, state)]
    alarms: dict[tuple[str, str], list[tuple[float, str, str]]] = field(default_factory=dict)
    depth: int | None = None
    #: backlog messages the publisher has sent (ROOT/health ``publish.backlog_sent``)
    backlog_sent: int = 0
    online: threading.Event = field(default_factory=threading.Event)
    #: devices whose retained state says online (polled once: the door logic knows them)
    devices_online: set[str] = field(default_factory=set)

    def add_alarm(self, data: dict[str, Any], now: float) -> None:
        """An alarm transition (the uplink's ``data``) seen at ``now``."""
        key = (str(data["rule"]), str(data["device"]))
        with self.lock:
            self.alarms.setdefault(key, []).append((now, str(data["alarm_id"]), str(data["state"])))

    def on_console_event(self, name: str, data: dict[str, Any], now: float) -> None:
        """An event of the console's stream: its ``alarm`` events are transitions."""
        if name == "alarm":
            with contextlib.suppress(KeyError, TypeError):
                self.add_alarm(data, now)

    def on_message(self, topic: str, payload: bytes, retain: bool, now: float) -> None:
        if retain:
            return  # an earlier agent's status, health or states: only live ones count
        with contextlib.suppress(ValueError, KeyError, TypeError):
            msg = json.loads(payload)
            if topic == TOPICS.alarms:
                self.add_alarm(msg["data"], now)
            elif topic == TOPICS.health:
                self.depth = int(msg["outbox"]["depth"])
                self.backlog_sent = int(msg["publish"]["backlog_sent"])
            elif topic == TOPICS.status and msg.get("state") == "online":
                self.online.set()
            elif topic.startswith(f"{TOPICS.root}/devices/") and topic.endswith("/state"):
                device = topic.split("/")[-2]
                with self.lock:
                    if msg.get("state") == "online":
                        self.devices_online.add(device)
                    else:
                        self.devices_online.discard(device)

    def raised_after(self, rule: str, device: str, t0: float) -> tuple[float, str] | None:
        with self.lock:
            for received, alarm_id, state in self.alarms.get((rule, device), []):
                if received >= t0 and state == "active_unacked":
                    return received, alarm_id
        return None


class CoilLog:
    """When the relay module's siren coil was switched, stamped as the simulator applies
    the write (the write's own moment, not a poll of it)."""

    def __init__(self, device: Any, point: str) -> None:
        self.changes: list[tuple[float, bool]] = []
        self.on = False
        address = next(p.address for p in device.profile.points if p.name == point)
        write = device._write  # the simulator's write hook, wrapped to stamp it

        def stamped(block: int, start: int, new: list[int]) -> Any:
            result = write(block, start, new)
            if result is None and block == 0 and start <= address < start + len(new):
                self.on = bool(new[address - start])
                self.changes.append((time.monotonic(), self.on))
            return result

        device._write = stamped

    def on_after(self, t0: float) -> float | None:
        for t, on in self.changes:
            if t >= t0 and on:
                return t
        return None


@dataclass
class Sample:
    kind: str  # "door" or "fire"
    device: str
    t_input: float
    siren_was_off: bool
    broker_ms: float | None = None
    console_ms: float | None = None
    siren_ms: float | None = None


async def _until(
    pred: Callable[[], bool],
    timeout_s: float,
    agent: Any,
    logfile: Path,
    console: ConsoleClient | None = None,
) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if agent.poll() is not None:
            raise BenchError(f"the agent exited with code {agent.returncode}:\n{_tail(logfile)}")
        if console is not None and not console.alive:
            raise BenchError(f"{console.ended or 'the console client stopped'}\n{_tail(logfile)}")
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@dataclass
class _Legs:
    """What one input is timed against: the broker's subscriber, the console's stream
    and the siren's coil, and the agent (a child process) they wait on."""

    sim: Any
    broker: AlarmLog
    console: AlarmLog
    client: ConsoleClient
    coil: CoilLog
    sub: _Subscriber
    agent: Any
    logfile: Path


async def _one_input(i: int, legs: _Legs) -> Sample:
    """Change one input, wait for its alarm on the broker and the console, acknowledge
    it, restore the input."""
    sim, log, coil, sub, agent, logfile = (
        legs.sim,
        legs.broker,
        legs.coil,
        legs.sub,
        legs.agent,
        legs.logfile,
    )
    k = i % MODULES
    kind = "door" if (i // MODULES) % 2 == 0 else "fire"
    device = module_id(k)
    point, rule = ("di1", "door_forced") if kind == "door" else ("di7", "fire_input")
    sample = Sample(kind, device, time.monotonic(), siren_was_off=not coil.on)
    sim.set_input(device, point, 0)  # the door opens / the fire panel's relay drops
    got: list[tuple[float, str]] = []

    def arrived() -> bool:
        hit = log.raised_after(rule, device, sample.t_input)
        if hit is not None:
            got.append(hit)
        return hit is not None

    if await _until(arrived, ALARM_TIMEOUT_S, agent, logfile, legs.client):
        received, alarm_id = got[0]
        sample.broker_ms = (received - sample.t_input) * 1000
        # the console's event was stamped when it came (mostly before the broker's): this
        # only waits for one that is late
        shown: list[tuple[float, str]] = []

        def on_console() -> bool:
            hit = legs.console.raised_after(rule, device, sample.t_input)
            if hit is not None:
                shown.append(hit)
            return hit is not None

        if await _until(on_console, ALARM_TIMEOUT_S, agent, logfile, legs.client):
            sample.console_ms = (shown[0][0] - sample.t_input) * 1000
        ack = {"request_id": f"bench-ack-{i}", "alarm_id": alarm_id, "by": "bench"}
        sub.session.client.publish(TOPICS.cmd("alarm_ack"), json.dumps(ack), qos=1)
    if sample.siren_was_off:
        on = coil.on_after(sample.t_input)
        if on is None and await _until(
            lambda: coil.on_after(sample.t_input) is not None, 5.0, agent, logfile
        ):
            on = coil.on_after(sample.t_input)
        if on is not None:
            sample.siren_ms = (on - sample.t_input) * 1000
    sim.set_input(device, point, 1)
    return sample


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(max(values), 1),
    }


async def _run(
    host: str,
    port: int,
    workdir: Path,
    *,
    mqtt_protocol: str,
    messages: int,
    batch: int,
    min_inputs: int = 0,
) -> dict[str, Any]:
    from edge_agent.console.auth import set_password
    from edge_agent.outbox.store import Outbox
    from edge_agent.simulators import DiModuleSim

    db = workdir / "outbox.db"
    outbox = Outbox(db, max_bytes=64 * 1024**3, commit_max_batch=batch)
    await outbox.open()
    _progress(f"alarms: writing a backlog of {messages:,} messages to the outbox")
    try:
        fill_s = await _fill_outbox(outbox, messages, batch)
    finally:
        await outbox.close()
    log = AlarmLog()
    console_log = AlarmLog()
    password = os.urandom(12).hex()
    creds = workdir / CONSOLE_CREDENTIALS
    await asyncio.to_thread(set_password, creds, CONSOLE_USER, password)  # scrypt: ~50 ms
    sub = _Subscriber(
        host,
        port,
        [TOPICS.alarms, TOPICS.health, TOPICS.status, TOPICS.device_state("+")],
        log.on_message,
        protocol=mqtt_protocol,
        client_id="bench-alarms-sub",
    )
    modules = {module_id(k): k + 1 for k in range(MODULES)}
    async with (
        DiModuleSim(modules) as sim,
        DiModuleSim({RELAYS: 1}, model="waveshare_relay8") as relays,
    ):
        coil = CoilLog(relays.devices[RELAYS], SIREN_POINT)
        cfg = alarm_config(
            host=host,
            port=port,
            protocol=mqtt_protocol,
            outbox_path=str(db),
            di_port=sim.port,
            relay_port=relays.port,
            console_credentials=CONSOLE_CREDENTIALS,  # next to the config
        )
        cfg_path = workdir / "agent.yaml"
        cfg_path.write_text(
            "## Generated by `edge-agent bench --only alarms`.\n"
            + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        )
        await asyncio.to_thread(sub.start)
        logfile = workdir / "agent.log"
        argv = [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg_path)]
        samples: list[Sample] = []
        client: ConsoleClient | None = None
        try:
            with _child(argv, logfile, workdir) as agent:
                if not await _until(log.online.is_set, 60, agent, logfile):
                    raise BenchError(f"the agent did not come online:\n{_tail(logfile)}")
                url: list[str] = []

                def listening() -> bool:
                    found = listening_url(logfile.read_text(errors="replace"))
                    if found:
                        url.append(found)
                    return found is not None

                if not await _until(listening, 60, agent, logfile):
                    raise BenchError(f"the agent's console did not start:\n{_tail(logfile)}")
                client = ConsoleClient(url[0], CONSOLE_USER, password, console_log.on_console_event)
                await client.start()
                # every module read once: an input changed before that is "open at start"
                wanted = {*modules, RELAYS}
                if not await _until(lambda: wanted <= log.devices_online, 60, agent, logfile):
                    raise BenchError(
                        f"devices not online: {sorted(wanted - log.devices_online)}"
                        f"\n{_tail(logfile)}"
                    )
                legs = _Legs(sim, log, console_log, client, coil, sub, agent, logfile)
                t_start = time.monotonic()
                warm = await _one_input(0, legs)
                if warm.broker_ms is None or warm.console_ms is None:
                    raise BenchError(f"the warm-up alarm did not arrive:\n{_tail(logfile)}")
                _progress(
                    f"alarms: agent online (pid {agent.pid}); one input every {PERIOD_S:g} s "
                    f"on {MODULES} modules until the backlog is gone"
                )
                ap = ProcSampler(agent.pid)
                cpu0, t0 = ap.cpu_seconds(), time.monotonic()
                tasks: list[asyncio.Task[Sample]] = []
                i = 1
                next_at = time.monotonic()
                # The outbox is never quite empty while inputs change (their events, the
                # audits); the backlog is gone when the publisher has sent all of it.
                # min_inputs: a small backlog (the tests) can be gone before the warm-up
                # alarm is; the figures still need a few inputs
                while log.backlog_sent < messages or len(tasks) < min_inputs:
                    if agent.poll() is not None:
                        raise BenchError(f"the agent exited:\n{_tail(logfile)}")
                    if time.monotonic() - t_start > 3600:
                        raise BenchError(
                            f"the backlog did not drain in an hour ({log.backlog_sent:,} sent)"
                        )
                    tasks.append(asyncio.create_task(_one_input(i, legs)))
                    i += 1
                    next_at += PERIOD_S
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                drained_s = time.monotonic() - t_start
                samples = list(await asyncio.gather(*tasks))
                cpu = (ap.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
                rss = ap.rss_bytes()
                await client.stop()  # before the agent: its stop would end the stream
        finally:
            if client is not None:
                await client.stop()
            await asyncio.to_thread(sub.stop)
            creds.unlink(missing_ok=True)
            _remove_db(db)  # ~300 MB for 1M messages; the config and the agent's log stay
    broker = [s.broker_ms for s in samples if s.broker_ms is not None]
    siren = [s.siren_ms for s in samples if s.siren_ms is not None]
    console = [s.console_ms for s in samples if s.console_ms is not None]
    return {
        "messages": messages,
        "fill_seconds": round(fill_s, 1),
        "drain_seconds": round(drained_s, 1),
        "drain_messages_per_s": round(messages / drained_s, 1),
        "modules": MODULES,
        "poll_interval_s": 0.25,
        "period_s": PERIOD_S,
        "inputs": len(samples),
        "alarms_received": len(broker),
        "input_to_broker": _stats(broker),
        "door_to_broker": _stats(
            [s.broker_ms for s in samples if s.kind == "door" and s.broker_ms]
        ),
        "fire_to_broker": _stats(
            [s.broker_ms for s in samples if s.kind == "fire" and s.broker_ms]
        ),
        "console_received": len(console),
        "input_to_console": _stats(console),
        "input_to_siren": _stats(siren),
        "siren_inputs_while_off": sum(s.siren_was_off for s in samples),
        "agent_cpu_percent": round(cpu, 1),
        "agent_rss_mib": round(rss / 1024 / 1024, 1),
        # the figures the targets and the table read
        "p99_ms": _stats(broker)["p99_ms"],
        "console_p99_ms": _stats(console)["p99_ms"],
        "latencies_ms": [round(v, 1) for v in broker],
        "console_latencies_ms": [round(v, 1) for v in console],
        "siren_latencies_ms": [round(v, 1) for v in siren],
    }


def run_alarm_part(
    host: str,
    port: int,
    workdir: Path,
    *,
    mqtt_protocol: str = "5",
    messages: int = 1_000_000,
    batch: int = 2000,
    min_inputs: int = 0,
) -> dict[str, Any]:
    """Alarm latency while a backlog drains (see the module's docstring); with
    ``min_inputs``, inputs go on after the backlog is gone until that many were made."""
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(
        _run(
            host,
            port,
            workdir,
            mqtt_protocol=mqtt_protocol,
            messages=messages,
            batch=batch,
            min_inputs=min_inputs,
        )
    )


__all__ = ["MODULES", "PERIOD_S", "AlarmLog", "alarm_config", "listening_url", "run_alarm_part"]
