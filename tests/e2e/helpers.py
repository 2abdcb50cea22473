"""Helpers for end-to-end tests: agent configs for the simulated campus, agent processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from edge_agent.mqtt.client import stop_network_thread
from edge_agent.tools.demo import config_from_layout
from tests.mqtt_helpers import MqttBroker, Received

REPO = Path(__file__).resolve().parents[2]
ROOT = "campus/e2e-school/gw1"
CLASSROOMS, METERS = 3, 2


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def agent_config(
    tmp_path: Path, broker: MqttBroker, layout: dict[str, Any], **overrides: Any
) -> Path:
    """An agent config for the simulated campus, built by the demo's own
    ``config_from_layout``; ``overrides`` are merged into top-level sections or, for
    ``device``, into every device."""
    device = {"interval_s": 1, "timeout_s": 0.5, "retries": 0, **overrides.pop("device", {})}
    cfg = config_from_layout(
        layout,
        broker_host=broker.host,
        broker_port=broker.port,
        protocol=broker.protocol,
        outbox_path=str(tmp_path / "outbox.db"),
    )
    cfg["site"]["id"] = "e2e-school"
    cfg["mqtt"]["health_interval_s"] = 2
    cfg["outbox"]["commit_interval_ms"] = 200
    for dev in cfg["devices"]:
        dev.update(device)
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_agent(
    cfg: Path, prefix: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``edge-agent run -c cfg`` as a process; ``prefix`` runs it through a wrapper that
    ends with ``exec`` (so the pid is the agent's), ``env`` adds variables."""
    log = cfg.with_name(f"agent-{time.monotonic_ns()}.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
            cwd=REPO,
            env={**_env(), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen[bytes]) -> str:
    return proc.log.read_text(errors="replace")  # type: ignore[attr-defined,no-any-return]


def payload_json(m: Received) -> Any:
    return json.loads(m.payload) if m.payload else None


class PersistentSubscriber:
    """A platform subscriber with a persistent MQTT 5 session (QoS 1).

    With a broker that keeps sessions (``persistent_mqtt_broker``) nothing the agent
    publishes is missed while this subscriber or the broker was away, so a test can
    count holes and duplicates exactly as a platform would.
    """

    def __init__(self, broker: MqttBroker, topic: str) -> None:
        import threading
        import uuid

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._lock = threading.Condition()
        self.messages: list[tuple[float, str, bytes]] = []
        #: per message (same index): the broker set DUP, i.e. it is sending again a message
        #: it had sent this session before (after its restart, every one it had not seen
        #: acknowledged). The agent's own resends reach us without it: a broker sets
        #: DUP only on its own retransmissions [MQTT-3.3.1-3].
        self.dup: list[bool] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"platform-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.reconnect_delay_set(1, 1)
        subscribed = threading.Event()

        def on_connect(c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
            if not rc.is_failure and not flags.session_present:
                c.subscribe(topic, qos=1)
            elif not rc.is_failure:
                subscribed.set()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload)))
                self.dup.append(bool(msg.dup))
                self._lock.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(
            broker.host, broker.port, keepalive=5, clean_start=False, properties=props
        )
        self.client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError("no SUBACK from the broker")

    def repeats(self, topic: str) -> tuple[int, int]:
        """Copies on ``topic`` of a message (``msg_id``) already received: (the agent's,
        the broker's). A broker's copy has DUP set: after a restart it sends the persistent
        session again everything it had not seen acknowledged, however far the platform
        lags, so only the agent's copies are bounded by its in-flight window (the fault
        tests' ``verdict`` counts the same way)."""
        seen: set[str] = set()
        agent = broker = 0
        with self._lock:
            received = list(zip(self.messages, self.dup, strict=True))
        for (_t, t, payload), dup in received:
            if t != topic:
                continue
            msg_id = json.loads(payload)["msg_id"]
            if msg_id in seen:
                if dup:
                    broker += 1
                else:
                    agent += 1
            seen.add(msg_id)
        return agent, broker

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what}; "
                        f"{len(self.messages)} messages received"
                    )
                self._lock.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.disconnect()
        stop_network_thread(self.client)
