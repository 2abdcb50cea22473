"""``edge-agent bench`` parts ``wg``, ``hikvision`` and ``zkteco``: door swipes.

For each protocol the agent (``python -m edge_agent run``, a child process, as in the
``campus`` part) reads simulated door devices on 8 gate lanes; the simulators run in this
process, on its event loop, because the benchmark must know the moment of each swipe:

``wg``
    2 WG controllers of 4 doors (8 lanes), pushing each record to the agent's UDP hub.
``hikvision``
    8 Hikvision terminals (one a lane); ``--hik-mode stream`` (the agent holds each
    terminal's alertStream open) or ``push`` (each terminal POSTs to the agent).
``zkteco``
    8 ZKTeco attendance terminals (one a lane) pushing ATTLOG to the agent's iclock server.

Two phases, one agent:

throughput
    The simulators swipe as fast as the agent takes them: at most ``--door-window``
    swipes in flight (made but not yet seen by a subscriber on the broker; at most 900,
    or mosquitto would drop messages queued for the subscriber), for
    ``--door-duration`` seconds. Figures: swipes/s that arrived, the agent's CPU (% of
    one core) meanwhile, and their ratio, "swipes per second on one core".
rush
    The morning arrival rush (issue 9): 1,000 swipes over 10 minutes at 8 lanes, arrivals
    bunched before the bell, played ``--rush-speed`` times faster. Each swipe's latency is
    the time from the simulator's swipe to the subscriber's receipt (one clock: this
    process's ``time.monotonic``); p50/p99/max. Every swipe must arrive exactly once and,
    lane by lane, in the order it was made.

Card numbers go out raw (``site.raw_card_ids``) so the subscriber can match each event to
its swipe; a ZKTeco punch uses the card number as its PIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from edge_agent.tools.bench import (
    GATEWAY_ID,
    ROOT,
    SITE_ID,
    TOPICS,
    BenchError,
    ProcSampler,
    _child,
    _progress,
    _Subscriber,
    _tail,
    percentile,
)
from edge_agent.topics import RootPattern, classify

DOOR_PARTS = ("wg", "hikvision", "zkteco")
TIMEZONE = "Asia/Shanghai"
LANES = 8
#: the issue's rush: 1,000 swipes in 10 minutes across 8 gate lanes
RUSH_SWIPES = 1000
RUSH_SECONDS = 600.0
RUSH_SEED = 9
#: throughput cards are numbered from here, warm-up cards from WARMUP_CARD, rush cards
#: from the schedule's first card (10,000,001): the three never overlap
THROUGHPUT_CARD = 50_000_001
WARMUP_CARD = 90_000_001
WG_FIRST_SERIAL = 423187757
HIK_PASSWORD_ENV = "BENCH_HIK_PASSWORD"  # noqa: S105 - the name of a variable
HIK_PASSWORD = "Bench-Gate-2026"  # noqa: S105 - the simulated terminals' login, loopback only
#: wait this long for swipes still in flight once a phase has stopped swiping
SETTLE_TIMEOUT_S = 60.0

Swipe = Callable[[int, bool], None]


@dataclass(frozen=True)
class DoorOptions:
    """What the door parts are told (``bench_args``: ``--door-*``, ``--rush-*``)."""

    duration_s: float = 20.0
    #: below mosquitto's max_queued_messages (1000) for the subscriber: more and the
    #: broker drops messages for it, which would look like the agent losing swipes
    window: int = 900
    rush_swipes: int = RUSH_SWIPES
    rush_seconds: float = RUSH_SECONDS
    rush_speed: float = 10.0
    lanes: int = LANES
    hik_mode: str = "stream"
    #: the agent's ``outbox.commit_interval_ms``; None: its default
    commit_interval_ms: int | None = None


@dataclass
class Lane:
    """One gate lane: the agent's device id and how the simulator swipes a card there."""

    device: str
    swipe: Swipe


@dataclass
class DoorSetup:
    """The simulated devices of one protocol: the agent's config for them and the lanes."""

    devices: list[dict[str, Any]]
    lanes: list[Lane]
    extra: dict[str, Any] = field(default_factory=dict)  # top-level config (wg:, http:)
    env: dict[str, str] = field(default_factory=dict)  # the agent's environment (secrets)


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 (the agent's HTTP server for push devices)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shanghai_now() -> datetime:
    return datetime.now(ZoneInfo(TIMEZONE))


def door_config(
    setup: DoorSetup,
    *,
    host: str,
    port: int,
    protocol: str,
    outbox_path: str,
    commit_interval_ms: int | None = None,
) -> dict[str, Any]:
    """The agent's config: the site (raw card numbers), the broker, the devices; every
    other setting the agent's default (the commit interval unless told, health, logging)."""
    outbox: dict[str, Any] = {"path": outbox_path}
    if commit_interval_ms is not None:
        outbox["commit_interval_ms"] = commit_interval_ms
    return {
        "site": {
            "id": SITE_ID,
            "gateway_id": GATEWAY_ID,
            "name": "Bench School / 基准测试学校",
            "timezone": TIMEZONE,
            "raw_card_ids": True,
        },
        "mqtt": {"host": host, "port": port, "protocol": protocol},
        "outbox": outbox,
        "clock": {"sync_check": "none"},
        **setup.extra,
        "devices": setup.devices,
    }


@contextlib.asynccontextmanager
async def door_devices(protocol: str, opts: DoorOptions) -> AsyncIterator[DoorSetup]:
    """Start the simulated devices of ``protocol`` on loopback; stop them on exit."""
    if protocol == "wg":
        async with _wg(opts) as setup:
            yield setup
    elif protocol == "hikvision":
        async with _hik(opts) as setup:
            yield setup
    elif protocol == "zkteco":
        async with _zk(opts) as setup:
            yield setup
    else:
        raise ValueError(f"unknown door protocol {protocol!r}: {', '.join(DOOR_PARTS)}")


@contextlib.asynccontextmanager
async def _wg(opts: DoorOptions) -> AsyncIterator[DoorSetup]:
    from edge_agent.simulators.wg import WgSim

    count = (opts.lanes + 3) // 4
    sim = WgSim.build(count, first_serial=WG_FIRST_SERIAL, doors=4, clock=_shanghai_now)
    async with sim:
        ids = {c.serial: f"wg-{i + 1}" for i, c in enumerate(sim)}
        devices = [
            {
                "id": ids[c.serial],
                "kind": "wg",
                "serial": c.serial,
                "host": "127.0.0.1",
                "port": c.port,
                "readers": [
                    {
                        "door": n,
                        "direction": "in",
                        "name": f"gate-{ids[c.serial]}-{n}",
                        "context": "gate",
                    }
                    for n in c.doors
                ],
            }
            for c in sim
        ]

        def lane(serial: int, door: int) -> Lane:
            ctl = sim[serial]

            def swipe(card: int, granted: bool) -> None:
                ctl.swipe(card, door, granted=granted)

            return Lane(ids[serial], swipe)

        yield DoorSetup(
            devices,
            [lane(s, d) for s, d in sim.lanes(opts.lanes)],
            extra={"wg": {"bind": "127.0.0.1:0", "listener": "127.0.0.1"}},
        )


@contextlib.asynccontextmanager
async def _hik(opts: DoorOptions) -> AsyncIterator[DoorSetup]:
    from edge_agent.simulators.hikvision import HikTerminal

    push = opts.hik_mode == "push"
    http_port = free_port()  # the kind needs the agent's HTTP server, also to stream
    terms = [
        HikTerminal(
            password=HIK_PASSWORD,
            push_url=f"http://127.0.0.1:{http_port}/hik/hik-{k + 1}" if push else None,
            push_retry_s=0.2,
        )
        for k in range(opts.lanes)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for term in terms:
            await stack.enter_async_context(term)
        devices = [
            {
                "id": f"hik-{k + 1}",
                "kind": "hikvision",
                "host": "127.0.0.1",
                "port": term.port,
                "password": f"${{{HIK_PASSWORD_ENV}}}",
                "mode": opts.hik_mode,
                "readers": [
                    {
                        "door": 1,
                        "reader": 1,
                        "name": f"gate-{k + 1}",
                        "context": "gate",
                        "direction": "in",
                    }
                ],
            }
            for k, term in enumerate(terms)
        ]

        def lane(k: int) -> Lane:
            term = terms[k]

            def swipe(card: int, granted: bool) -> None:
                term.swipe(str(card), granted=granted, reason="expired")

            return Lane(f"hik-{k + 1}", swipe)

        yield DoorSetup(
            devices,
            [lane(k) for k in range(opts.lanes)],
            extra={"http": {"bind": f"127.0.0.1:{http_port}"}},
            env={HIK_PASSWORD_ENV: HIK_PASSWORD},
        )


@contextlib.asynccontextmanager
async def _zk(opts: DoorOptions) -> AsyncIterator[DoorSetup]:
    from edge_agent.simulators.zkteco import ZkTerminal

    http_port = free_port()
    # poll_s: a terminal asks for commands every second at most; a new record wakes it
    # at once (Realtime=1), as a real terminal does
    terms = [
        ZkTerminal(f"BENCHZK{k + 1}", ("127.0.0.1", http_port), poll_s=1.0)
        for k in range(opts.lanes)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for term in terms:
            await stack.enter_async_context(term)
        devices = [
            {"id": f"zk-{k + 1}", "kind": "zkteco", "sn": term.sn, "context": "gate"}
            for k, term in enumerate(terms)
        ]

        def lane(k: int) -> Lane:
            term = terms[k]

            def swipe(card: int, granted: bool) -> None:
                # ATTLOG knows no refusal: an attendance terminal records only passes
                term.punch(str(card), verify="card")

            return Lane(f"zk-{k + 1}", swipe)

        yield DoorSetup(
            devices,
            [lane(k) for k in range(opts.lanes)],
            extra={"http": {"bind": f"127.0.0.1:{http_port}"}},
        )


class SwipeLog:
    """What the subscriber saw: each card's receipts and each device's cards in arrival
    order, fed from the subscriber's thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[int, list[float]] = {}
        self.order: dict[str, list[int]] = {}
        self.seqs: list[int] = []
        self.count = 0
        self.online = threading.Event()
        self.unparsed = 0
        #: messages other than card reads (door events, alarms), by kind:type
        self.others: dict[str, int] = {}
        #: devices whose retained state is "online" now
        self.devices_online: set[str] = set()
        self._pattern = RootPattern(ROOT)

    def on_message(self, topic: str, payload: bytes, retain: bool, now: float) -> None:
        if topic == TOPICS.status:
            if b'"online"' in payload:
                self.online.set()
            return
        split = self._pattern.split(topic)
        if not split:
            return
        kind, device = classify(split[1])
        if kind == "state" and device is not None:
            with self.lock:
                if b'"online"' in payload:
                    self.devices_online.add(device)
                else:
                    self.devices_online.discard(device)
            return
        if retain or kind not in ("event", "telemetry", "alarm"):
            return
        try:
            msg = json.loads(payload)
            seq = int(msg["seq"])
            if kind != "event" or msg.get("type") != "card_read" or device is None:
                with self.lock:
                    self.seqs.append(seq)  # a hole in seq is a loss, whatever the message
                    key = f"event:{msg.get('type')}" if kind == "event" else kind
                    self.others[key] = self.others.get(key, 0) + 1
                return
            card = int(msg["data"]["card"])
        except (ValueError, TypeError, KeyError, AttributeError):
            with self.lock:
                self.unparsed += 1
            return
        with self.lock:
            self.received.setdefault(card, []).append(now)
            self.order.setdefault(device, []).append(card)
            self.seqs.append(seq)
            self.count += 1

    def arrived(self, cards: Sequence[int]) -> int:
        with self.lock:
            return sum(1 for c in cards if c in self.received)


@dataclass
class Sent:
    """Swipes made in one phase: card -> (lane's device, monotonic time of the swipe)."""

    cards: list[int] = field(default_factory=list)
    at: dict[int, float] = field(default_factory=dict)
    device_of: dict[int, str] = field(default_factory=dict)

    def swipe(self, lane: Lane, card: int, granted: bool = True) -> None:
        self.at[card] = time.monotonic()
        self.cards.append(card)
        self.device_of[card] = lane.device
        lane.swipe(card, granted)


def check_delivery(sent: Sent, log: SwipeLog) -> dict[str, Any]:
    """Completeness and order of one phase: every swipe exactly once, and each device's
    cards in the order they were swiped there."""
    wanted = set(sent.cards)
    with log.lock:
        counts = {c: len(log.received.get(c, ())) for c in sent.cards}
        arrived_order = {d: [c for c in cards if c in wanted] for d, cards in log.order.items()}
    swiped_order: dict[str, list[int]] = {}
    for card in sent.cards:
        swiped_order.setdefault(sent.device_of[card], []).append(card)
    out_of_order = sorted(
        d for d, cards in swiped_order.items() if arrived_order.get(d, []) != cards
    )
    return {
        "swipes": len(sent.cards),
        "arrived": sum(1 for n in counts.values() if n),
        "missing": sum(1 for n in counts.values() if n == 0),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "devices_out_of_order": out_of_order,
        "complete_in_order": all(n == 1 for n in counts.values()) and not out_of_order,
    }


async def _until(pred: Callable[[], bool], timeout_s: float, agent: Any, logfile: Path) -> bool:
    """Wait for ``pred``; False at the timeout; BenchError when the agent died."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if agent.poll() is not None:
            raise BenchError(f"the agent exited with code {agent.returncode}:\n{_tail(logfile)}")
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _throughput(
    lanes: Sequence[Lane], log: SwipeLog, opts: DoorOptions, ap: ProcSampler, me: ProcSampler
) -> tuple[Sent, dict[str, Any]]:
    """Swipe round-robin over the lanes, at most ``opts.window`` in flight, for
    ``opts.duration_s``; the figures of that window."""
    sent = Sent()
    card = THROUGHPUT_CARD

    with log.lock:
        n0 = log.count

    def in_flight() -> int:
        # only throughput cards arrive now (the warm-up has arrived whole)
        with log.lock:
            return len(sent.cards) - (log.count - n0)

    t0, a0, b0 = time.monotonic(), ap.cpu_seconds(), me.cpu_seconds()
    end = t0 + opts.duration_s
    k = 0
    while time.monotonic() < end:
        made = 0
        while in_flight() < opts.window and made < 32:
            sent.swipe(lanes[k % len(lanes)], card)
            card += 1
            k += 1
            made += 1
        # yield to the simulators' sockets; sleep a little when the window is full
        await asyncio.sleep(0 if made else 0.002)
    t1, a1, b1 = time.monotonic(), ap.cpu_seconds(), me.cpu_seconds()
    with log.lock:
        n1 = log.count
    wall = t1 - t0
    rate = (n1 - n0) / wall
    cpu = 100 * (a1 - a0) / wall
    return sent, {
        "duration_s": round(wall, 2),
        "window": opts.window,
        "swipes_made": len(sent.cards),
        "swipes_per_s": round(rate, 1),
        "agent_cpu_percent": round(cpu, 1),
        # the agent's rate if it had one core to itself: rate / (cpu / 100)
        "swipes_per_s_one_core": round(rate / (cpu / 100), 1) if cpu > 0 else None,
        "bench_cpu_percent": round(100 * (b1 - b0) / wall, 1),
    }


async def _rush(
    lanes: Sequence[Lane], log: SwipeLog, opts: DoorOptions, ap: ProcSampler
) -> tuple[Sent, dict[str, Any]]:
    """Play the rush schedule at ``opts.rush_speed``; returns what was swiped and the
    agent's CPU meanwhile."""
    from edge_agent.simulators.wg import rush_schedule

    schedule = rush_schedule(opts.rush_swipes, opts.rush_seconds, len(lanes), seed=RUSH_SEED)
    sent = Sent()
    loop = asyncio.get_running_loop()
    t0, a0 = time.monotonic(), ap.cpu_seconds()
    start = loop.time()
    for swipe in schedule:
        await asyncio.sleep(max(0.0, start + swipe.at_s / opts.rush_speed - loop.time()))
        sent.swipe(lanes[swipe.lane], swipe.card, swipe.granted)
    wall = time.monotonic() - t0
    return sent, {
        "swipes": len(schedule),
        "denied": sum(1 for s in schedule if not s.granted),
        "rush_s": round(wall, 2),
        "rush_speed": opts.rush_speed,
        "agent_cpu_percent": round(100 * (ap.cpu_seconds() - a0) / wall, 1) if wall else None,
    }


def latencies_ms(sent: Sent, log: SwipeLog) -> list[float]:
    """Swipe -> first receipt, milliseconds, of every swipe that arrived."""
    with log.lock:
        return [1000 * (log.received[c][0] - sent.at[c]) for c in sent.cards if c in log.received]


async def _run_door_part(
    protocol: str,
    host: str,
    port: int,
    workdir: Path,
    *,
    mqtt_protocol: str,
    opts: DoorOptions,
) -> dict[str, Any]:
    log = SwipeLog()
    sub = _Subscriber(
        host,
        port,
        [TOPICS.everything],
        log.on_message,
        protocol=mqtt_protocol,
        client_id=f"bench-{protocol}",
    )
    async with door_devices(protocol, opts) as setup:
        cfg = door_config(
            setup,
            host=host,
            port=port,
            protocol=mqtt_protocol,
            outbox_path=str(workdir / "outbox.db"),
            commit_interval_ms=opts.commit_interval_ms,
        )
        cfg_path = workdir / "agent.yaml"
        cfg_path.write_text(
            "## Generated by `edge-agent bench` for the simulated door devices.\n"
            + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        )
        await asyncio.to_thread(sub.start)
        logfile = workdir / "agent.log"
        argv = [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg_path)]
        try:
            with _child(argv, logfile, workdir, env=setup.env) as agent:
                if not await _until(log.online.is_set, 60, agent, logfile):
                    raise BenchError(f"the agent did not come online:\n{_tail(logfile)}")
                ids = {d["id"] for d in setup.devices}
                if not await _until(lambda: ids <= log.devices_online, 60, agent, logfile):
                    raise BenchError(
                        f"{protocol}: devices not online: {sorted(ids - log.devices_online)}"
                        f"\n{_tail(logfile)}"
                    )
                ap, me = ProcSampler(agent.pid), ProcSampler(os.getpid())
                # warm-up: one swipe a lane; every lane must deliver before measuring
                warm = Sent()
                for k, lane in enumerate(setup.lanes):
                    warm.swipe(lane, WARMUP_CARD + k)
                if not await _until(
                    lambda: log.arrived(warm.cards) == len(warm.cards), 60, agent, logfile
                ):
                    raise BenchError(
                        f"{protocol}: the warm-up swipes did not all arrive "
                        f"({log.arrived(warm.cards)} of {len(warm.cards)}):\n{_tail(logfile)}"
                    )
                _progress(
                    f"{protocol}: agent online (pid {agent.pid}); swiping as fast as it takes "
                    f"them for {opts.duration_s:g} s"
                )
                tp_sent, throughput = await _throughput(setup.lanes, log, opts, ap, me)
                await _until(
                    lambda: log.arrived(tp_sent.cards) == len(tp_sent.cards),
                    SETTLE_TIMEOUT_S,
                    agent,
                    logfile,
                )
                throughput.update(check_delivery(tp_sent, log))
                _progress(
                    f"{protocol}: the rush, {opts.rush_swipes} swipes in "
                    f"{opts.rush_seconds:g} s on {len(setup.lanes)} lanes, "
                    f"{opts.rush_speed:g}x faster"
                )
                rush_sent, rush = await _rush(setup.lanes, log, opts, ap)
                await _until(
                    lambda: log.arrived(rush_sent.cards) == len(rush_sent.cards),
                    SETTLE_TIMEOUT_S,
                    agent,
                    logfile,
                )
                await asyncio.sleep(0.5)  # a doubled event would arrive meanwhile
                rss = ap.rss_bytes()
        finally:
            await asyncio.to_thread(sub.stop)
    rush.update(check_delivery(rush_sent, log))
    lat = latencies_ms(rush_sent, log)
    if lat:
        rush.update(
            p50_ms=round(percentile(lat, 50), 1),
            p99_ms=round(percentile(lat, 99), 1),
            max_ms=round(max(lat), 1),
        )
    with log.lock:
        seqs = sorted(log.seqs)
    return {
        "protocol": protocol,
        "mode": opts.hik_mode if protocol == "hikvision" else None,
        "devices": len(setup.devices),
        "lanes": len(setup.lanes),
        "throughput": throughput,
        "rush": rush,
        # the figures the targets and the table read
        "swipes_per_s": throughput["swipes_per_s"],
        "agent_cpu_percent": throughput["agent_cpu_percent"],
        "swipes_per_s_one_core": throughput["swipes_per_s_one_core"],
        "p99_ms": rush.get("p99_ms"),
        "complete_in_order": throughput["complete_in_order"] and rush["complete_in_order"],
        # seq is gapless per epoch: a hole between the first and last seq seen is a loss
        "seq_gaps": (seqs[-1] - seqs[0] + 1 - len(set(seqs))) if seqs else None,
        "other_messages": dict(sorted(log.others.items())),
        "agent_rss_mib": round(rss / 1024 / 1024, 1),
    }


def run_door_part(
    protocol: str,
    host: str,
    port: int,
    workdir: Path,
    *,
    mqtt_protocol: str = "5",
    opts: DoorOptions | None = None,
) -> dict[str, Any]:
    """One protocol's throughput and rush (see the module's docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(
        _run_door_part(
            protocol, host, port, workdir, mqtt_protocol=mqtt_protocol, opts=opts or DoorOptions()
        )
    )


__all__ = [
    "DOOR_PARTS",
    "DoorOptions",
    "Sent",
    "SwipeLog",
    "check_delivery",
    "door_config",
    "run_door_part",
]
