"""A real MQTT broker for tests, and a subscriber that collects what it receives.

The broker is mosquitto, either in Docker through testcontainers (``eclipse-mosquitto:2``)
when a Docker engine answers, or as a local process (:class:`edge_agent.tools.localbroker.
LocalBroker`) on an ephemeral loopback port. ``EDGE_AGENT_TEST_BROKER=docker|local``
forces one. When neither works, the fixture fails with a message saying what to install:
integration tests are never skipped for want of a broker.

Usage in a test::

    def test_something(mqtt_broker):
        with mqtt_subscriber(mqtt_broker, "campus/#") as sub:
            ...  # make the agent publish
            msg = sub.wait_for(lambda m: m.topic.endswith("/state"), timeout=5)
            assert msg.json()["online"] is True
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties

from edge_agent.mqtt.client import stop_network_thread
from edge_agent.tools.localbroker import (
    BrokerError,
    LocalBroker,
    find_mosquitto,
    free_port,
    mqtt_ping,
)

log = logging.getLogger(__name__)

NO_BROKER_MESSAGE = (
    "The integration tests need a real MQTT broker, and none is available.\n"
    "Install mosquitto: sudo apt-get install -y mosquitto   (./scripts/test does this when run "
    "as root), or start a Docker engine so testcontainers can run eclipse-mosquitto:2.\n"
    "集成测试需要真实的 MQTT 代理，但当前没有可用的代理。\n"
    "请安装 mosquitto：sudo apt-get install -y mosquitto"
    "（以 root 运行 ./scripts/test 会自动安装），"
    "或启动 Docker 引擎以便 testcontainers 运行 eclipse-mosquitto:2。"
)


class MqttBroker(Protocol):
    """What the ``mqtt_broker`` fixtures hand to a test."""

    host: str

    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def restart(self) -> None: ...
    def close(self) -> None: ...


#: Older name of :class:`MqttBroker`, kept for tests that import it.
TestBroker = MqttBroker
# Classes named Test* are collected by pytest when imported into a test module; this one
# is a Protocol, not a test. Set after the class body so it is no protocol member.
MqttBroker.__test__ = False  # type: ignore[attr-defined]


# -- Docker (testcontainers) --------------------------------------------------------------


def docker_engine_available(timeout_s: float = 3.0) -> bool:
    """True when a Docker engine answers a ping; cheap and quick when there is none."""
    host = os.environ.get("DOCKER_HOST", "")
    sockets = [Path("/var/run/docker.sock")]
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        sockets.append(Path(runtime) / "docker.sock")
    if not host and not any(s.exists() for s in sockets):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import docker

            client = docker.from_env(timeout=int(timeout_s))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as err:  # any failure means "no usable engine"
        log.info("Docker engine does not answer: %s", err)
        return False


class DockerMosquitto:
    """mosquitto in an ``eclipse-mosquitto:2`` container, published on 127.0.0.1:<port>.

    The host port is fixed at creation so that stop/start keeps it (outage tests).
    """

    image = "eclipse-mosquitto:2"

    def __init__(
        self, workdir: Path, start_timeout_s: float = 60.0, persistence: bool = False
    ) -> None:
        self.persistence = persistence
        self.host = "127.0.0.1"
        self._port = free_port(self.host)
        self.workdir = workdir
        self.start_timeout_s = start_timeout_s
        self._tc: Any = None  # testcontainers DockerContainer, imported lazily

    @property
    def port(self) -> int:
        return self._port

    @property
    def protocol(self) -> str:
        return "5"

    @property
    def running(self) -> bool:
        if self._tc is None:
            return False
        container = self._tc.get_wrapped_container()
        container.reload()
        return bool(container.status == "running")

    def start(self) -> None:
        if self._tc is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from testcontainers.core.container import DockerContainer

            conf = self.workdir / "mosquitto.conf"
            self.workdir.mkdir(parents=True, exist_ok=True)
            conf.write_text(
                "listener 1883\nallow_anonymous true\nlog_dest stdout\n"
                # as LocalBroker: no QoS 1 drop for a test's slow subscriber
                "max_queued_messages 100000\n"
                + (
                    "persistence true\npersistence_location /mosquitto/data/\n"
                    if self.persistence
                    else "persistence false\n"
                ),
                encoding="utf-8",
            )
            conf.chmod(0o644)
            self._tc = DockerContainer(self.image).with_volume_mapping(
                str(conf), "/mosquitto/config/mosquitto.conf", "ro"
            )
            # Loopback only, on the port we chose (testcontainers' helper binds 0.0.0.0).
            self._tc.ports["1883/tcp"] = (self.host, self._port)
            self._tc.start()
        elif not self.running:
            self._tc.get_wrapped_container().start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not mqtt_ping(self.host, self._port, 1.0):
            if time.monotonic() > deadline:
                logs = self._tc.get_wrapped_container().logs().decode(errors="replace")
                raise BrokerError(
                    f"mosquitto container did not answer on port {self._port}:\n{logs}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self._tc is not None and self.running:
            self._tc.get_wrapped_container().stop(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self._tc is not None:
            self._tc.stop()
            self._tc = None

    def __repr__(self) -> str:
        return f"<DockerMosquitto {self.host}:{self._port}>"


# -- choosing and starting ----------------------------------------------------------------


def start_test_broker(workdir: Path, persistence: bool = False) -> MqttBroker:
    """Start mosquitto for tests (Docker or local process) or fail the test with a hint."""
    mode = os.environ.get("EDGE_AGENT_TEST_BROKER", "auto")
    if mode not in ("auto", "docker", "local"):
        pytest.fail(f"EDGE_AGENT_TEST_BROKER must be auto, docker or local, not {mode!r}")
    if mode == "docker" or (mode == "auto" and docker_engine_available()):
        docker_broker = DockerMosquitto(workdir / "docker", persistence=persistence)
        try:
            docker_broker.start()
        except Exception as err:
            with contextlib.suppress(Exception):
                docker_broker.close()
            if mode == "docker":
                pytest.fail(f"could not start mosquitto in Docker: {err}", pytrace=False)
            log.warning("mosquitto in Docker failed (%s); trying a local mosquitto", err)
        else:
            return docker_broker
    if find_mosquitto() is None:
        pytest.fail(NO_BROKER_MESSAGE, pytrace=False)
    local = LocalBroker(workdir=workdir / "mosquitto", backend="mosquitto", persistence=persistence)
    try:
        local.start()
    except BrokerError as err:
        pytest.fail(f"could not start mosquitto: {err}", pytrace=False)
    return local


# -- subscriber ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message the subscriber got."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttSubscriber:
    """Collects messages on a paho-mqtt client thread; tests wait on them.

    Resubscribes after every reconnect, so it keeps working across a broker restart.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self.connects = 0

    @property
    def messages(self) -> list[Received]:
        """A snapshot of everything received so far, oldest first."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def _add(self, message: Received) -> None:
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[Received], bool] | None = None, timeout: float = 5.0
    ) -> Received:
        """Return the first message (received so far or within ``timeout``) matching."""
        return self.wait_for_count(1, predicate, timeout)[0]

    def wait_for_count(
        self,
        count: int,
        predicate: Callable[[Received], bool] | None = None,
        timeout: float = 5.0,
    ) -> list[Received]:
        """Wait until ``count`` matching messages arrived; return the first ``count``."""
        match = predicate or (lambda _m: True)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self._messages if match(m)]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [f"{m.topic} {m.payload[:80]!r}" for m in self._messages[-20:]]
                    pytest.fail(
                        f"timed out after {timeout} s waiting for {count} matching message(s), "
                        f"got {len(found)}. Last messages received:\n  " + "\n  ".join(seen),
                        pytrace=False,
                    )
                self._cond.wait(remaining)


def _protocol(protocol: int | str) -> MQTTProtocolVersion:
    if str(protocol) == "5":
        return MQTTProtocolVersion.MQTTv5
    if str(protocol) in ("4", "3.1.1", "311"):
        return MQTTProtocolVersion.MQTTv311
    raise ValueError(f"unsupported MQTT protocol {protocol!r}; use 5 or '3.1.1'")


def _login(client: mqtt.Client, broker: MqttBroker) -> None:
    """User name and password for brokers that want them (``tests.rabbitmq_helpers``)."""
    username = getattr(broker, "username", None)
    if username:
        client.username_pw_set(username, getattr(broker, "password", None))


@contextlib.contextmanager
def mqtt_subscriber(
    broker: MqttBroker,
    topic_filter: str | list[str],
    protocol: int | str = 5,
    qos: int = 1,
    timeout: float = 5.0,
) -> Iterator[MqttSubscriber]:
    """Subscribe to ``topic_filter`` (one or several) and collect messages.

    Returns only once the broker acknowledged the subscription, so nothing published
    after entering the block is missed.
    """
    filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
    sub = MqttSubscriber()
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
        protocol=_protocol(protocol),
    )
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    _login(client, broker)

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if rc.is_failure:
            return
        sub.connects += 1
        c.subscribe([(f, qos) for f in filters])

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, _rcs: object, _p: object) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        sub._add(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), props))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        if not subscribed.wait(timeout):
            pytest.fail(
                f"subscriber got no SUBACK from {broker.host}:{broker.port} within {timeout} s",
                pytrace=False,
            )
        yield sub
    finally:
        client.disconnect()
        stop_network_thread(client)


def publish(
    broker: MqttBroker,
    topic: str,
    payload: bytes | str,
    qos: int = 1,
    retain: bool = False,
    protocol: int | str = 5,
    timeout: float = 5.0,
) -> None:
    """Publish one message and wait until the broker acknowledged it (QoS 1/2)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
        protocol=_protocol(protocol),
    )
    _login(client, broker)
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        if not connected.wait(timeout):
            pytest.fail(f"no CONNACK from {broker.host}:{broker.port} within {timeout} s")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            pytest.fail(f"publish to {topic} not acknowledged within {timeout} s", pytrace=False)
    finally:
        client.disconnect()
        stop_network_thread(client)
