"""The supervisor: one TaskGroup runs the outbox, the publisher, health and every device.

Data flows one way: driver -> emit() -> outbox (SQLite) -> publisher (MQTT).
A device task that fails for an unexpected reason (a driver bug) restarts with
exponential backoff; it never takes the agent down. Only a core bug ends the
process, and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent import __version__, registry
from edge_agent.alarms.lifecycle import AlarmBook, OutboxAlarmStore
from edge_agent.alarms.rules import RuleEngine
from edge_agent.alarms.siren import OutboxSirenStore, Siren
from edge_agent.clock import Clock, SystemClock
from edge_agent.commands import (
    CommandRouter,
    alarm_ack_handler,
    alarm_shelve_handler,
    door_handler,
    ping_handler,
    snapshot_handler,
    write_handler,
)
from edge_agent.config.loader import AgentConfigBase, kind_settings
from edge_agent.config.models import SerialBus, TcpBus, site_tz
from edge_agent.config.rules import load_rules
from edge_agent.driver import (
    Bus,
    DriverContext,
    Hub,
    HubContext,
    PushDriver,
    Quality,
    SharesLine,
    Value,
    WorkerProcess,
)
from edge_agent.envelope import Lane, iso_ms
from edge_agent.errors import OutboxError
from edge_agent.http import HttpServer
from edge_agent.link import OutboxLink
from edge_agent.mqtt.publisher import MqttSettings, Publisher, response_properties
from edge_agent.notify.worker import Notifier
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline import ClockGate, build_pipeline
from edge_agent.pipeline.base import TICK_S
from edge_agent.pipeline.patrol import Patrol
from edge_agent.pipeline.sink import OutboxSink
from edge_agent.poll import SHARED_RNG, PollLoop, SharedTick, backoff_delay
from edge_agent.procstats import ProcessStats
from edge_agent.sdnotify import SystemdNotifier, watchdog_loop
from edge_agent.snapshots.alarms import SnapshotAlarms
from edge_agent.snapshots.service import SnapshotService
from edge_agent.topics import Topics, root_of

log = logging.getLogger(__name__)


class OutboxEmitter:
    """The :class:`~edge_agent.driver.Emit` that drivers get: puts envelopes into the outbox."""

    def __init__(self, outbox: Outbox, root: str) -> None:
        self.outbox = outbox
        self.root = root
        self.topics = Topics(root)
        #: the last value of every metric by device: the "old" value of a write's audit
        self.last: dict[str, dict[str, Value]] = {}

    def telemetry(
        self,
        device_id: str,
        data: dict[str, Value],
        *,
        ts: float | None = None,
        quality: Quality = "good",
    ) -> None:
        self.last.setdefault(device_id, {}).update(data)
        self.outbox.put(
            Lane.TELEMETRY,
            self.topics.telemetry(device_id),
            device=device_id,
            kind="telemetry",
            ts=time.time() if ts is None else ts,
            data=dict(data),
            quality=quality,
        )

    def event(
        self, device_id: str, type_: str, data: dict[str, Any], *, ts: float | None = None
    ) -> None:
        self.outbox.put(
            Lane.EVENT,
            self.topics.events(device_id),
            device=device_id,
            kind="event",
            ts=time.time() if ts is None else ts,
            data=dict(data),
            type_=type_,
        )


def mqtt_settings(cfg: AgentConfigBase) -> MqttSettings:
    m = cfg.mqtt
    tls = m.tls
    return MqttSettings(
        host=m.host,
        port=m.port or (8883 if tls else 1883),
        root=root_of(m.topic_prefix, cfg.site.id, cfg.site.gateway_id),
        client_id=m.client_id or f"edge-{cfg.site.id}-{cfg.site.gateway_id}",
        protocol=m.protocol,
        username=m.username,
        password=m.password,
        tls=tls is not None,
        ca_file=tls.ca_file if tls else None,
        cert_file=tls.cert_file if tls else None,
        key_file=tls.key_file if tls else None,
        key_password=tls.key_password if tls else None,
        tls_insecure=tls.insecure if tls else False,
        keepalive_s=m.keepalive_s,
        inflight_max=m.inflight_max,
        reconnect_min_s=m.reconnect_min_s,
        reconnect_max_s=m.reconnect_max_s,
        drain_rate_max=cfg.publish.backlog_rate_max,
        agent_version=__version__,
    )


#: a clean stop takes a second or two; past this, say what it is waiting for
STOP_REPORT_S = 15.0
#: the group-commit task wakes at least this often when nothing is queued and no timer
#: is due (it feeds the watchdog's health check; a wall-clock step delays a timer by
#: this much at most)
IDLE_WAKE_S = 5.0
#: the sleep for a timer due now; after DUE_NOW_MAX of them in a row, TICK_S (no spin)
MIN_WAIT_S = 0.01
DUE_NOW_MAX = 3


def _report_slow_stop() -> None:
    """Log what the agent is still waiting for when a stop takes too long, so a hang
    under systemd (which kills it after TimeoutStopSec) leaves a trace in the journal."""
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    log.error(
        "still stopping after %g s; %d tasks pending / 停止超时，仍在等待:",
        STOP_REPORT_S,
        len(tasks),
    )
    for task in tasks:
        log.error("  task %s: %s", task.get_name(), " -> ".join(_awaiting(task)))


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The chain of coroutines a task is suspended in, outermost first, and what the
    innermost one awaits (``Task.get_stack`` shows only the outermost frame)."""
    parts: list[str] = []
    obj: Any = task.get_coro()
    while obj is not None and len(parts) < 20:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            parts.append(repr(obj)[:120])
            break
        parts.append(
            f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}:{frame.f_lineno}"
        )
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return parts or ["(not started)"]


class Agent:
    """Builds everything from a validated config and runs it until stopped."""

    def __init__(
        self, cfg: AgentConfigBase, config_path: str | Path, clock: Clock | None = None
    ) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path)
        self.settings = mqtt_settings(cfg)
        self.root = self.settings.root
        self.topics = Topics(self.root)
        o = cfg.outbox
        self.outbox = Outbox(
            (self.config_path.parent / o.path) if not Path(o.path).is_absolute() else o.path,
            max_bytes=o.max_bytes,
            commit_interval_s=o.commit_interval_ms / 1000,
            commit_max_batch=o.commit_max_batch,
            audit_max_rows=o.audit_max_rows,
            audit_max_days=o.audit_max_days,
        )
        self.publisher = Publisher(self.settings, self.outbox)
        self.clock: Clock = clock or SystemClock(cfg.clock.sync_check, cfg.clock.sync_file)
        self.outbox_emitter = OutboxEmitter(self.outbox, self.root)
        #: drivers -> pipeline (pseudonymiser, clock gate, taps) -> outbox (edge_agent/pipeline)
        self.emitter = build_pipeline(
            cfg,
            self.clock,
            OutboxSink(self.outbox_emitter, self.outbox, self.root, self._publish_state),
        )
        self.gate = self.emitter.stage(ClockGate)
        self.emitter.on_hold = self.outbox.nudge  # a held reading's timer (issue 8 item 9)
        self.stats = ProcessStats()
        self.notifier = SystemdNotifier()
        self.drivers: dict[str, Any] = {}  # filled by _build_drivers, shared by reference
        #: one shared listener per kind that declares a ``Hub`` and has devices
        self.hubs: dict[str, Hub] = {}
        #: the DeviceLink of every push device, built with its driver
        self.links: dict[str, OutboxLink] = {}
        #: device configs by id, for meta and poll settings
        self.devices: dict[str, Any] = {d.id: d for d in getattr(cfg, "devices", [])}
        self.loops: dict[str, PollLoop] = {}
        c = cfg.commands
        self.router = CommandRouter(
            self._reply,
            root=self.root,
            key=c.key,
            queue_max=c.queue_max,
            deadline_s=c.deadline_s,
            wall=self.clock.wall,
            audit=lambda device, data: self.emitter.event(device, "command_audit", data),
            last_values=self.outbox_emitter.last,
        )
        self.alarms = AlarmBook(
            self.root,
            self.outbox.put,
            self.publisher.set_retained,
            cfg.site.language,
            store=OutboxAlarmStore(
                self.outbox, self.outbox.path.with_name(self.outbox.path.name + ".alarms.json")
            ),
            clock=self.clock,
            out_of_service=cfg.rules.out_of_service,
        )
        #: alarm delivery to people (edge_agent/notify): one task per robot, reading the
        #: outbox's copy of the alarm messages with its own cursor
        self.notify = Notifier(
            cfg.notify,
            self.outbox,
            language=cfg.site.language,
            tz=site_tz(cfg.site.timezone),
            site=cfg.site.name,
        )
        #: guard patrol: a tap counting visits, deadlines checked with the outbox's tick
        self.patrol: Patrol | None = None
        if cfg.patrol.routes:
            self.patrol = Patrol(
                cfg.patrol,
                site_tz(cfg.site.timezone),
                self.alarms,
                self.outbox,
                now=self.clock.wall,
                synced=lambda: self.gate.synced,
            )
            self.emitter.add_tap("patrol", self.patrol.see)
        #: camera snapshots (edge_agent/snapshots): camera_snapshot and alarm pictures
        snap_dir = self.outbox.path.parent / "snapshots"  # beside the outbox by default
        if cfg.snapshots.dir is not None:
            snap_dir = Path(cfg.snapshots.dir)
            if not snap_dir.is_absolute():
                snap_dir = self.config_path.parent / snap_dir
        self.snapshots = SnapshotService(cfg.snapshots, snap_dir, self.topics, self.drivers)
        #: alarm rules over every reading, event and device state (docs/alarms.md)
        ruleset, _, _ = load_rules(cfg.rules, self.config_path.resolve().parent)
        self.rules: RuleEngine | None = None
        self.snapshot_alarms: SnapshotAlarms | None = None
        if ruleset.rules:
            cameras = {r.id: r.snapshot for r in ruleset.rules if r.snapshot is not None}
            if cameras:
                self.snapshot_alarms = SnapshotAlarms(
                    self.alarms, cameras, self.snapshots, wait_s=cfg.snapshots.alarm_wait_s
                )
            self.rules = RuleEngine(
                ruleset,
                site_tz(cfg.site.timezone),
                self.snapshot_alarms or self.alarms,
                now=self.clock.wall,
                gateway=cfg.site.gateway_id,
            )
            self.emitter.add_tap("rules", self.rules.see)
        self._stop = asyncio.Event()
        self._last_flush_ok = time.monotonic()
        self._due_failed = False  # a due_in raised (logged once)
        self._due_now = 0  # wakes in a row on a timer that said "now"
        #: the longest sleep of the group-commit task with nothing to do (tests lengthen it)
        self.idle_wake_s = IDLE_WAKE_S
        #: sirens on relay outputs, switched by the alarm book (edge_agent/alarms/siren.py)
        self.sirens: list[Siren] = []
        self._started = time.monotonic()
        self._memory_lost_seen = 0
        #: one HTTP server for push devices and the console; parts add routes before run()
        self.http = HttpServer(cfg.http, health=self.health, healthy=self._healthy)
        #: the local web console (edge_agent/console), only when ``console:`` is written;
        #: imported only then (it loads aiohttp)
        self.console: Any = None
        if cfg.console is not None:
            from edge_agent.console.app import Console

            self.console = Console.for_agent(self)
        self._build_drivers()
        self._register_commands()
        self._build_sirens()

    def _build_sirens(self) -> None:
        for cfg in self.cfg.sirens:
            driver = self.drivers.get(cfg.device)
            if driver is None:  # check-config made sure it exists: it is disabled
                log.warning(
                    "siren %s: device %s is disabled; the siren is not used", cfg.id, cfg.device
                )
                continue
            siren = Siren(
                cfg,
                driver,
                audit=lambda device, data: self.emitter.event(device, "command_audit", data),
                alarms=self.alarms,
                wall=self.clock.wall,
                store=OutboxSirenStore(self.outbox, cfg.id),
            )
            self.alarms.add_listener(siren.see)
            self.sirens.append(siren)

    # -- building ----------------------------------------------------------------
    def _build_drivers(self) -> None:
        buses: dict[str, Bus] = {}
        for b in self.cfg.buses:
            if isinstance(b, SerialBus | TcpBus):
                buses[b.id] = Bus(b.id, b.min_gap_ms / 1000)
                buses[b.id].resources["config"] = b
        base = self.config_path.resolve().parent
        ctx = DriverContext(
            buses=buses,
            config_dir=base,
            tz=site_tz(self.cfg.site.timezone),
            clock=self.clock,
            meta_changed=self._meta_changed,
        )
        kinds = registry.drivers({dev.kind for dev in self.devices.values()})
        enabled = [dev for dev in self.devices.values() if dev.enabled]
        contexts: dict[str, DriverContext] = {}
        for kind in dict.fromkeys(dev.kind for dev in enabled):
            cls = kinds[kind]
            kctx = replace(ctx, settings=kind_settings(cls, self.cfg))
            hub_cls = getattr(cls, "Hub", None)
            if hub_cls is not None:
                # One listener for every device of the kind; it adds its HTTP routes now,
                # before the server starts (check-config made sure http.bind is set).
                hub = hub_cls(
                    HubContext(
                        kind=kind,
                        settings=kctx.settings,
                        devices=[dev for dev in enabled if dev.kind == kind],
                        http=self.http if getattr(hub_cls, "needs_http", False) else None,
                        config_dir=base,
                    )
                )
                self.hubs[kind] = hub
                kctx = replace(kctx, hub=hub)
            contexts[kind] = kctx
        for dev in enabled:
            driver = self.drivers[dev.id] = kinds[dev.kind](dev, contexts[dev.kind])
            if isinstance(driver, PushDriver):
                self.links[dev.id] = OutboxLink(
                    dev.id,
                    outbox=self.outbox,
                    pipeline=self.emitter,
                    state_sink=self._state_sink,
                )
        self.publisher.set_device_count(len(self.drivers))

    def _register_commands(self) -> None:
        r = self.router
        r.register(
            "agent_ping",
            ping_handler(
                lambda: {
                    "agent_version": __version__,
                    "epoch": self.outbox.epoch,
                    "uptime_s": round(time.monotonic() - self._started, 1),
                    "devices": len(self.drivers),
                }
            ),
        )
        r.register("device_write", write_handler(self.drivers.get))
        r.register("door_open", door_handler(self.drivers.get))
        r.register("alarm_ack", alarm_ack_handler(self.alarms.ack))
        r.register("alarm_shelve", alarm_shelve_handler(self.alarms.shelve))
        r.register("camera_snapshot", snapshot_handler(self.snapshots.command))
        self.publisher.set_command_handler(r.handle)
        if not r.signing:
            log.info(
                "commands.key is not set: device_write, door_open, alarm_ack and alarm_shelve "
                "are accepted unsigned / 未设置 commands.key，写命令无需签名"
            )

    def _reply(self, topic: str, answer: dict[str, Any], correlation: bytes | None) -> None:
        self.publisher.publish_direct(
            topic, answer, qos=1, properties=response_properties(correlation)
        )

    def _meta(self, dev_id: str, driver: Any) -> dict[str, Any]:
        dev = self.devices[dev_id]
        meta: dict[str, Any] = {"kind": dev.kind, "name": dev.name, "ts": iso_ms(time.time())}
        meta.update(driver.meta())
        meta["location"] = dev.location.model_dump() if dev.location else None
        meta["metrics"] = {
            m.name: {
                "unit": m.unit,
                "description": m.description,
                "writable": m.writable,
                "range": list(m.range) if m.range else None,
            }
            for m in driver.metrics()
        }
        return meta

    def _meta_changed(self, dev_id: str) -> None:
        """A driver learnt more about its device (a camera's model): publish meta again."""
        driver = self.drivers.get(dev_id)
        if driver is not None:
            self.publisher.set_retained(self.topics.device_meta(dev_id), self._meta(dev_id, driver))

    def _state_sink(self, device_id: str, payload: dict[str, Any]) -> None:
        self.emitter.state(device_id, payload)  # through the pipeline: taps see states

    def _publish_state(self, device_id: str, payload: dict[str, Any]) -> None:
        self.publisher.set_retained(self.topics.device_state(device_id), payload)
        # a state commits nothing, but may start a timer (an offline rule's delay, seen
        # by the taps right after this): the sleeping group commit looks at them again
        self.outbox.nudge()

    # -- running ------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the agent to stop cleanly (flush, say offline, disconnect)."""
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests) or not supported
        await self.outbox.open()
        await self.snapshots.open()
        self.alarms.load()
        for siren in self.sirens:
            siren.load(alarm.data() for alarm in self.alarms.alarms.values())
        if self.patrol is not None:
            self.patrol.load()
        gw = self.cfg.site.gateway_id
        if self.outbox.recovered_from is not None:
            moved, why = self.outbox.recovered_from
            # A one-off condition: raised and cleared at once, so it stays visible
            # (cleared_unacked) until someone acknowledges it.
            self.alarms.raise_(
                "outbox_corrupt",
                gw,
                "critical",
                value=moved,
                en=f"Outbox database was unusable ({why}); moved to {moved}, new epoch "
                f"{self.outbox.epoch}. Unsent data may be in the moved file.",
                zh=f"本地缓存数据库损坏（{why}），已移至 {moved} 并启用新 epoch "
                f"{self.outbox.epoch}；未发送的数据可能仍在旧文件中。",
            )
            self.alarms.clear("outbox_corrupt", gw)
        self._report_outbox_start(gw)
        try:
            for dev_id, driver in self.drivers.items():
                self.publisher.set_retained(
                    self.topics.device_meta(dev_id), self._meta(dev_id, driver)
                )
            async with asyncio.TaskGroup() as tg:
                main = [
                    tg.create_task(self._run_outbox(), name="outbox"),
                    tg.create_task(self.publisher.run(), name="publisher"),
                    tg.create_task(self._health_loop(), name="health"),
                    tg.create_task(watchdog_loop(self.notifier, self._healthy), name="watchdog"),
                ]
                hubs = [
                    tg.create_task(self._hub_task(kind, hub), name=f"hub:{kind}")
                    for kind, hub in self.hubs.items()
                ]
                for dev_id, driver in self.drivers.items():
                    if isinstance(driver, PushDriver):
                        main.append(
                            tg.create_task(
                                self._device_task(dev_id, driver), name=f"device:{dev_id}"
                            )
                        )
                for line_id, loops in self._poll_lines().items():
                    tick = SharedTick(line_id, loops, on_crash=self._poll_crashed)
                    main.append(tg.create_task(tick.run(), name=f"poll:{line_id}"))
                http = tg.create_task(self.http.run(), name="http") if self.http.wanted else None
                snaps = tg.create_task(self.snapshots.run(self.publisher), name="snapshots")
                robots = [
                    tg.create_task(w.run(), name=f"notify:{w.robot.id}")
                    for w in self.notify.workers
                ]
                sirens = [tg.create_task(s.run(), name=f"siren:{s.id}") for s in self.sirens]
                self.notifier.ready(
                    f"{len(self.drivers)} devices, outbox epoch {self.outbox.epoch}"
                )
                log.info(
                    "agent started: %d devices, root %s, outbox %s (epoch %s, next seq %d)",
                    len(self.drivers),
                    self.root,
                    self.outbox.path,
                    self.outbox.epoch,
                    self.outbox.next_seq,
                )
                await self._stop.wait()
                self.notifier.stopping()
                log.info("stopping: flushing the outbox and saying goodbye to the broker")
                slow_stop = loop.call_later(STOP_REPORT_S, _report_slow_stop)
                # Commands first (each still gets its answer), then devices, so their
                # last readings are committed before the outbox and the publisher stop.
                await self.router.close()
                for t in sirens:  # then switched off, while their devices still run
                    t.cancel()
                await asyncio.gather(*sirens, return_exceptions=True)
                for siren in self.sirens:
                    await siren.close()
                if http is not None:  # no new pushes or console requests while stopping
                    http.cancel()
                    await asyncio.gather(http, return_exceptions=True)
                for t in main[4:]:
                    t.cancel()
                await asyncio.gather(*main[4:], return_exceptions=True)
                for t in robots:  # a cursor not yet saved repeats one message at the next start
                    t.cancel()
                await asyncio.gather(*robots, return_exceptions=True)
                for t in hubs:  # after their devices: a device never sees its hub vanish
                    t.cancel()
                await asyncio.gather(*hubs, return_exceptions=True)
                if self.snapshot_alarms is not None:  # waiting alarms go, without pictures
                    await self.snapshot_alarms.close()
                await self.snapshots.close()
                self.emitter.flush()
                await self.outbox.flush()
                snaps.cancel()  # a picture not acknowledged yet is sent at the next start
                for t in main[:4]:
                    t.cancel()
            slow_stop.cancel()
        finally:
            for driver in self.drivers.values():
                close = getattr(driver, "close", None)
                if close is not None:
                    try:
                        await close()
                    except Exception as err:
                        log.debug("closing %s: %s", getattr(driver, "device_id", "?"), err)
            for kind, hub in self.hubs.items():
                try:
                    await hub.close()
                except Exception as err:
                    log.debug("closing the %s hub: %s", kind, err)
            await self.outbox.close()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _report_outbox_start(self, gw: str) -> None:
        """What the outbox found at start: seqs skipped after an unclean stop (an event,
        so the platform can tell the hole from a loss) and messages lost from memory."""
        ob = self.outbox
        if ob.skipped is not None:
            first, last = ob.skipped
            self.outbox_emitter.event(
                gw,
                "seq_skipped",
                {"from": first, "to": last, "count": last - first + 1, "reason": "unclean_stop"},
            )
        if ob.lost_at_start:
            self.alarms.raise_(
                "outbox_data_lost",
                gw,
                "major",
                value=ob.lost_at_start,
                en=f"{ob.lost_at_start} messages held in memory while the disk was full were "
                "lost when the agent stopped.",
                zh=f"磁盘满时暂存内存的 {ob.lost_at_start} 条消息在网关停止时丢失。",
            )
            self.alarms.clear("outbox_data_lost", gw)  # one-off: stays until acknowledged

    def _check_memory_losses(self, gw: str) -> None:
        """The memory queue of a full disk evicts when it is full: say so while it lasts."""
        lost = self.outbox.evicted_in_memory
        if lost > self._memory_lost_seen:
            self._memory_lost_seen = lost
            alarm = self.alarms.raise_(
                "outbox_data_lost",
                gw,
                "major",
                value=lost,
                en=f"Disk full and the memory queue is full: {lost} oldest messages were "
                "dropped (counted in health 'dropped').",
                zh=f"磁盘已满且内存队列已满：已丢弃 {lost} 条最早的消息（见 health 的 dropped）。",
            )
            alarm.value = lost  # the platform sees the count with the next transition
        elif self.outbox.mode == "disk":
            self.alarms.clear("outbox_data_lost", gw)

    def _healthy(self) -> bool:
        # Fed only while the group commit works: a wedged database gets us restarted.
        return time.monotonic() - self._last_flush_ok < max(
            60.0, self.outbox.commit_interval_s * 20
        )

    def _timers_due_s(self) -> float:
        """Seconds until a timer of the ticks below can change something: the group
        commit sleeps until then (or until something is queued) instead of waking every
        interval for nothing (issue 8 item 9). At most ``idle_wake_s``: the watchdog is
        fed, and a step of the wall clock delays a wall-clock timer no longer."""
        due = self.idle_wake_s
        for source in (self.emitter, self.alarms, self.patrol, self.rules):
            if source is not None:
                try:
                    d = source.due_in()
                except Exception as err:  # a timer that cannot say: ticked as before
                    if not self._due_failed:
                        self._due_failed = True
                        log.error("%s.due_in failed: %r", type(source).__name__, err)
                    d = TICK_S
                if d is not None and d < due:
                    due = d
        if due > MIN_WAIT_S:
            self._due_now = 0
            return due
        # due now: the tick right after makes it later. A ticker that keeps saying "now"
        # (a bug, a clock that stands still) is ticked every TICK_S, as before, not spun.
        self._due_now += 1
        return MIN_WAIT_S if self._due_now <= DUE_NOW_MAX else TICK_S

    async def _run_outbox(self) -> None:
        failing = False
        gw = self.cfg.site.gateway_id
        while True:
            try:
                await self.outbox.wait_for_work(self._timers_due_s())
                self.emitter.tick()
                await self.outbox.flush()
                self._last_flush_ok = time.monotonic()
                self.alarms.tick()
                if self.patrol is not None:
                    self.patrol.tick()
                if self.rules is not None:
                    self.rules.tick()
                if self.outbox.mode == "memory":
                    self.alarms.raise_(
                        "outbox_disk_full",
                        gw,
                        "major",
                        value=self.outbox.disk_error,
                        en="Outbox cannot be written (disk full): data is held in memory "
                        "and is lost if the gateway restarts.",
                        zh="本地缓存无法写入（磁盘已满）：数据暂存内存，网关重启将丢失。",
                    )
                else:
                    self.alarms.clear("outbox_disk_full", gw)
                self._check_memory_losses(gw)
                if failing:
                    log.info("outbox commits work again")
                    failing = False
            except OutboxError as err:
                if not failing:
                    log.error("%s; keeping messages in memory and retrying", err)
                    failing = True

    async def _device_task(self, dev_id: str, driver: PushDriver) -> None:
        link = self.links[dev_id]
        await self._supervise(dev_id, lambda: driver.run(link))

    def _poll_lines(self) -> dict[str, list[PollLoop]]:
        """A poll loop per polled device, grouped by line (config order): one shared
        tick per line (edge_agent/poll.py ``SharedTick``)."""
        lines: dict[str, list[PollLoop]] = {}
        for dev_id, driver in self.drivers.items():
            if isinstance(driver, PushDriver):
                continue
            dev = self.devices[dev_id]
            interval = float(dev.interval_s or driver.meta().get("default_interval_s") or 30.0)
            poll = self.loops[dev_id] = PollLoop(
                driver,
                interval_s=interval,
                read_timeout_s=min(interval, max(5.0, dev.timeout_s * (dev.retries + 1) * 8)),
                offline_after=dev.offline_after,
                emit=self.emitter,
                state_sink=self._state_sink,
            )
            line = driver.line_id if isinstance(driver, SharesLine) else f"device:{dev_id}"
            lines.setdefault(line, []).append(poll)
        return lines

    def _poll_crashed(self, dev_id: str, err: Exception, delay: float) -> None:
        """A polled driver raised something else than a DeviceError: a driver bug."""
        log.error(
            "device %s task crashed (%r); restarting in %.0f s",
            dev_id,
            err,
            delay,
            exc_info=err,
        )
        self._offline(dev_id, f"driver error: {err!r}")

    async def _supervise(self, dev_id: str, make: Any) -> None:
        attempt = 0
        rng = SHARED_RNG
        while True:
            try:
                await make()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = backoff_delay(attempt, rng)
                attempt += 1
                log.error(
                    "device %s task crashed (%r); restarting in %.0f s",
                    dev_id,
                    err,
                    delay,
                    exc_info=err,
                )
                self._offline(dev_id, f"driver error: {err!r}")
                await asyncio.sleep(delay)

    async def _hub_task(self, kind: str, hub: Hub) -> None:
        """Run a kind's hub; when it fails (its address in use), log it once, report each
        of its devices offline with the reason, and run it again with the devices' backoff."""
        devices = [d for d, dev in self.devices.items() if dev.kind == kind and d in self.drivers]
        attempt = 0
        rng = SHARED_RNG
        while True:
            try:
                await hub.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = backoff_delay(attempt, rng)
                attempt += 1
                reason = f"{kind} listener failed: {err}"
                if attempt == 1:
                    log.error(
                        "%s; its %d devices are offline; retrying in %.0f s "
                        "/ %s 共享监听失败，其设备离线，稍后重试",
                        reason,
                        len(devices),
                        delay,
                        kind,
                    )
                else:
                    log.debug("%s (attempt %d); retrying in %.0f s", reason, attempt, delay)
                for dev_id in devices:
                    self._offline(dev_id, reason)
                await asyncio.sleep(delay)

    def _offline(self, dev_id: str, reason: str) -> None:
        """Report a device offline from outside its driver: through its link when it has
        one, so the driver's next ``online`` is published again."""
        link = self.links.get(dev_id)
        if link is not None:
            link.state("offline", reason)
        else:
            self._state_sink(
                dev_id, {"state": "offline", "since": iso_ms(time.time()), "last_error": reason}
            )

    async def health(self) -> dict[str, Any]:
        proc = self.stats.sample()
        # polled devices report through their loop, push devices through their link
        states = [p.health.state for p in self.loops.values()]
        states += [link.current_state for link in self.links.values()]
        out = await self.outbox.stats()
        return {
            "ts": iso_ms(time.time()),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "outbox": {
                k: out[k]
                for k in (
                    "depth",
                    "bytes",
                    "oldest_age_s",
                    "epoch",
                    "next_seq",
                    "mode",
                    "disk_error",
                    "skipped",
                )
            },
            "dropped": out["dropped"],
            "lost": {
                "in_memory_at_last_stop": self.outbox.lost_at_start,
                "evicted_from_memory": self.outbox.evicted_in_memory,
            },
            "publish": {
                "rate_per_s": self.publisher.stats.rate(),
                "published": self.publisher.stats.published,
                "acked": self.publisher.stats.acked,
                "backlog_sent": self.publisher.stats.backlog,
                "inflight": self.publisher.inflight_count(),
                "connects": self.publisher.stats.connects,
                "protocol": self.publisher.protocol,
            },
            "devices": {
                "total": len(self.drivers),
                "online": states.count("online"),
                "offline": states.count("offline"),
                "degraded": states.count("degraded"),
            },
            "commands": self.router.stats.as_dict(),
            "clock": {
                "synced": self.gate.synced,
                "check": self.cfg.clock.sync_check,
                "reason": getattr(self.clock, "reason", None),
                "held": self.gate.held,
                "corrected": self.gate.corrected,
                "uncertain": self.gate.uncertain,
            },
            "pipeline": self.emitter.stats(),
            "rules": self.rules.stats() if self.rules is not None else None,
            "snapshots": self.snapshots.health(),
            "sirens": {s.id: s.stats() for s in self.sirens} or None,
            "cpu_percent": proc.get("cpu_percent"),
            "rss_bytes": proc.get("rss_bytes"),
            # devices with a process of their own (camera analytics): CPU share, fps, restarts
            "workers": {
                dev_id: driver.worker_health()
                for dev_id, driver in self.drivers.items()
                if isinstance(driver, WorkerProcess)
            },
        }

    async def _health_loop(self) -> None:
        topic = self.topics.health
        while True:
            await asyncio.sleep(min(5.0, self.settings.keepalive_s))
            try:
                self.publisher.set_retained(topic, await self.health(), qos=0)
            except OutboxError as err:
                log.warning("health: %s", err)
            await asyncio.sleep(max(0.0, self.cfg.mqtt.health_interval_s - 5.0))
