"""The MQTT publisher: drains the outbox to the broker, owns the retained topics.

It knows no device protocol. Envelope messages (telemetry, events, alarms) come
only from the outbox, after commit; retained "current state" topics (status,
device meta and state, health) are kept in memory and published again after
every reconnect.

Order of work after a (re)connect:

* **live**: messages committed after the connection came up go out at once;
* **backlog**: what was committed before (while the link was down or behind)
  drains oldest first, alarms, then events, then telemetry, marked
  ``historical: true``, at most ``drain_rate_max`` per second, using at most
  the part of the in-flight window that live traffic leaves free.

paho-mqtt runs its network loop in its own thread (``loop_start``); every
callback is handed to the asyncio loop with ``call_soon_threadsafe``, so all
state here is touched from the event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .envelope import Lane, iso_ms, mark_historical
from .errors import ConfigError
from .mqttutil import stop_network_thread
from .outbox import Outbox, Row
from .tls import TlsFileError, TlsSettings, client_context
from .tls import describe_error as describe_tls_error

log = logging.getLogger(__name__)

#: ``handler(command, payload, response_topic, correlation_data, message_expiry_s)``
CommandHandler = Callable[[str, bytes, str | None, bytes | None, float | None], Awaitable[None]]


@dataclass
class MqttSettings:
    """What the publisher needs to connect (resolved from the config, secrets included)."""

    host: str
    port: int
    root: str
    client_id: str
    protocol: str = "5"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    tls: bool = False
    tls_insecure: bool = False
    keepalive_s: int = 30
    inflight_max: int = 500
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    drain_rate_max: float = 0.0  # messages/s for the backlog; 0 = as fast as the window allows
    #: a broker that neither answers CONNECT nor closes the connection is given up on after
    #: this long (amqtt 0.12 waits for ever on an MQTT 5 CONNECT that carries a will)
    connack_timeout_s: float = 10.0
    agent_version: str = ""


@dataclass
class PublisherStats:
    published: int = 0
    acked: int = 0
    live: int = 0
    backlog: int = 0
    connects: int = 0
    _rate_mark: tuple[float, int] = (0.0, 0)

    def rate(self) -> float:
        """Acknowledged messages per second since the previous call."""
        now = time.monotonic()
        t0, n0 = self._rate_mark
        self._rate_mark = (now, self.acked)
        if t0 == 0.0:
            return 0.0
        return round((self.acked - n0) / max(now - t0, 1e-6), 1)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- connection: which MQTT version, why an attempt failed, what reaches the log ------------

#: MQTT 5 reason codes (paho maps the 3.1.1 CONNACK return codes onto them).
_RC_UNSUPPORTED_PROTOCOL = 0x84
_RC_BAD_CREDENTIALS = 0x86
_RC_NOT_AUTHORIZED = 0x87
_RC_SESSION_TAKEN_OVER = 0x8E
#: what paho reports when the socket closed under it (not a keep-alive timeout)
_RC_UNSPECIFIED = 0x80

#: Short Chinese for each failure reason, after the English text in the same log line.
_ZH = {
    "refused": "连接被拒绝（代理未运行或端口错误）",
    "dns": "主机名无法解析",
    "unreachable": "网络不可达",
    "timeout": "连接超时",
    "tls": "TLS 证书校验失败",
    "credentials": "用户名或密码错误 / 无权限",
    "taken_over": "另一客户端使用相同的 client_id 接管了会话",
    "closed": "代理关闭了连接",
    "lost": "连接中断",
    "rejected": "代理拒绝连接",
    "error": "连接失败",
}


def protocol_name(protocol: int) -> str:
    """``"5"`` or ``"3.1.1"``, as in the config and on ``ROOT/health``."""
    return "5" if protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"


def describe_connect_error(err: OSError, tls: TlsSettings | None = None) -> tuple[str, str]:
    """``(reason key, text)`` for an exception raised while opening the connection; ``tls``
    (the settings in use) lets a TLS failure name the CA it was checked against."""
    if isinstance(err, ConnectionRefusedError):
        return "refused", "connection refused (no broker listening on that port?)"
    if isinstance(err, socket.gaierror):
        return "dns", f"host name not resolved ({err.strerror or err})"
    if isinstance(err, ssl.SSLError | ssl.CertificateError):
        return "tls", describe_tls_error(err, tls)
    if isinstance(err, TimeoutError):
        return "timeout", "connection timed out"
    if err.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
        return "unreachable", f"network unreachable ({err.strerror or err})"
    return "error", f"{type(err).__name__}: {err}"


class ConnectionReport:
    """What connection trouble writes to the log, sparing the SD card.

    The first failure is one WARNING with its reason; repeats of the same reason go to
    DEBUG, with a WARNING summary at most every ``summary_s``; the recovery is one INFO.
    A connection that ends within ``stable_s`` of coming up (two gateways with the same
    client id taking the session from each other every second) continues the streak
    instead of starting a new one; once the link has stayed up for ``stable_s``,
    :meth:`check_stable` ends the streak and says so if failures went only to DEBUG
    after the recovery line.
    """

    def __init__(
        self,
        where: str,
        *,
        summary_s: float = 300.0,
        stable_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = where
        self.summary_s = summary_s
        self.stable_s = stable_s
        self._clock = clock
        self._key: str | None = None  # reason of the current streak of failures
        self._failures = 0
        self._since = 0.0
        self._summarised_at = 0.0
        self._announced = False  # the recovery INFO of this streak is written
        self._quiet = 0  # failures only at DEBUG since the last WARNING/INFO line
        self._up_since: float | None = None

    @property
    def failing(self) -> bool:
        return self._key is not None

    def failed(self, key: str, text: str) -> None:
        """A connection attempt failed."""
        now = self._clock()
        self._up_since = None
        if key != self._key:
            first = self._key is None
            self._key, self._failures, self._since = key, 1, now
            self._summarised_at, self._announced, self._quiet = now, False, 0
            log.warning(
                "MQTT broker %s: %s%s / MQTT 代理 %s：%s",
                self.where,
                text,
                "" if first else " (reason changed)",
                self.where,
                _ZH.get(key, _ZH["error"]),
            )
            return
        self._failures += 1
        self._quiet += 1
        if now - self._summarised_at >= self.summary_s:
            log.warning(
                "MQTT broker %s: still failing, %d attempts in %.0f s: %s "
                "/ MQTT 代理 %s 仍连接失败（%d 次）：%s",
                self.where,
                self._failures,
                now - self._since,
                text,
                self.where,
                self._failures,
                _ZH.get(key, _ZH["error"]),
            )
            self._summarised_at, self._quiet = now, 0
        else:
            log.debug("MQTT broker %s: %s (attempt %d)", self.where, text, self._failures)

    def lost(self, key: str, text: str) -> None:
        """An established connection ended."""
        if self._up_since is not None and self._clock() - self._up_since >= self.stable_s:
            self._key = None  # it was up long enough: this is new trouble
        self.failed(key, text)

    def connected(self, protocol: str) -> None:
        now = self._clock()
        self._up_since = now
        if self._key is None:
            log.info("MQTT connected to %s with MQTT %s", self.where, protocol)
        elif not self._announced:
            log.info(
                "MQTT connected to %s with MQTT %s after %d failed attempts in %.0f s "
                "/ 已连接 MQTT 代理",
                self.where,
                protocol,
                self._failures,
                now - self._since,
            )
            self._announced, self._quiet = True, 0
        else:
            log.debug("MQTT connected to %s again with MQTT %s", self.where, protocol)

    def check_stable(self) -> None:
        """Called ``stable_s`` after a connect; ends the streak if the link stayed up."""
        up = self._up_since
        if self._key is None or up is None or self._clock() - up < self.stable_s:
            return
        if self._quiet:
            log.info(
                "MQTT connection to %s stable again after %d failed attempts / MQTT 连接已稳定",
                self.where,
                self._failures,
            )
        self._key = None


class _Client(mqtt.Client):
    """paho's client, telling the publisher about every connection attempt.

    paho's own reconnect loop (in its network thread) swallows the exception of a
    failed attempt; :meth:`reconnect` hands it on first. ``next_protocol`` makes the
    next attempt use another MQTT version: paho has no public way to change the version
    of a client, and its CONNACK handler steps down from 3.1.1 to 3.1 the same way
    (setting ``_protocol``).
    """

    def __init__(
        self,
        *args: Any,
        on_attempt: Callable[[_Client, int], None],
        on_attempt_error: Callable[[_Client, OSError], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._on_attempt = on_attempt
        self._on_attempt_error = on_attempt_error
        self.next_protocol: MQTTProtocolVersion | None = None

    def reconnect(self) -> MQTTErrorCode:
        want = self.next_protocol
        if want is not None and want != self._protocol:
            self._protocol = want
            if want != MQTTProtocolVersion.MQTTv5:
                self._clean_session = True  # a 3.1.1 CONNECT needs it; unset for MQTT 5
        self._on_attempt(self, int(self._protocol))
        try:
            return super().reconnect()
        except OSError as err:
            self._on_attempt_error(self, err)
            raise


class Publisher:
    """Publishes committed outbox rows and the retained state topics."""

    def __init__(self, settings: MqttSettings, outbox: Outbox) -> None:
        self.s = settings
        self.outbox = outbox
        self.stats = PublisherStats()
        self.connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Callbacks from paho's thread, run in order on the event loop, many per wake-up.
        self._events: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._events_lock = threading.Lock()
        self._events_scheduled = False
        self._client: mqtt.Client | None = None
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._inflight_seqs: set[int] = set()
        self._acked_seqs: set[int] = set()  # acked, delete not yet committed
        self._live: deque[Row] = deque()
        self._live_max = max(1000, settings.inflight_max * 20)
        self._boundary = 0  # rows with seq < boundary are backlog
        self._cursor: dict[Lane, int] = {lane: 0 for lane in Lane}
        self._buf: deque[Row] = deque()  # backlog rows read ahead
        self._backlog_done = True
        self._work = asyncio.Event()
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._command_handler: CommandHandler | None = None
        self._device_count = 0
        self._stopping = False
        self._commit_requested = False
        self._tls_context = _tls_context(settings)
        # -- connection state (event loop side) --
        self._report = ConnectionReport(host_port(settings.host, settings.port))
        self._protocol_in_use: str | None = None  # of the current or last connection
        self._attempt_protocol = int(_protocol(settings.protocol))
        self._answered = True  # the current attempt got a CONNACK
        self._overdue = False  # ... or we gave up waiting for it
        self._connack_timer: asyncio.TimerHandle | None = None
        self._fallback_announced = False
        self._stable_timer: asyncio.TimerHandle | None = None
        self._connected_at = 0.0
        self._quick_losses = 0  # connections in a row the broker closed soon after CONNACK
        outbox.subscribe(self._on_committed)
        outbox.subscribe_deleted(self._on_deleted)

    # -- public API ----------------------------------------------------------
    @property
    def root(self) -> str:
        return self.s.root

    def set_command_handler(self, handler: CommandHandler) -> None:
        """``handler(command, payload, response_topic, correlation_data, expiry_s)`` for
        ``ROOT/cmd/+``; ``expiry_s`` is the MQTT 5 message expiry interval left, or None."""
        self._command_handler = handler

    def set_device_count(self, n: int) -> None:
        self._device_count = n

    def set_retained(self, topic: str, payload: dict[str, Any] | None, qos: int = 1) -> None:
        """Keep ``topic`` retained with ``payload`` (None clears it); sent now if connected."""
        data = b"" if payload is None else _dumps(payload)
        if payload is None:
            self._retained.pop(topic, None)
        else:
            self._retained[topic] = (data, qos)
        self._publish_direct(topic, data, qos=qos, retain=True)

    def publish_direct(
        self,
        topic: str,
        payload: dict[str, Any],
        *,
        qos: int = 1,
        properties: Properties | None = None,
    ) -> bool:
        """Send a message that does not go through the outbox (command results)."""
        return self._publish_direct(
            topic, _dumps(payload), qos=qos, retain=False, properties=properties
        )

    def inflight_count(self) -> int:
        return len(self._inflight)

    @property
    def protocol(self) -> str | None:
        """MQTT version of the current (or last) connection: ``"5"``, ``"3.1.1"`` or None."""
        return self._protocol_in_use

    # -- paho plumbing -------------------------------------------------------
    def _status_payload(self, state: str, reason: str | None = None) -> dict[str, Any]:
        p: dict[str, Any] = {"state": state, "ts": iso_ms(time.time())}
        if reason:
            p["reason"] = reason
        if state == "online":
            p.update(
                agent_version=self.s.agent_version,
                epoch=self.outbox.epoch,
                devices=self._device_count,
            )
        return p

    def _make_client(self) -> mqtt.Client:
        s = self.s
        proto = _protocol(s.protocol)
        kwargs: dict[str, Any] = {"client_id": s.client_id, "protocol": proto}
        if proto == mqtt.MQTTv311:
            kwargs["clean_session"] = True
        client = _Client(
            CallbackAPIVersion.VERSION2,
            on_attempt=lambda c, p: self._call(self._on_attempt, c, p),
            on_attempt_error=lambda c, e: self._call(self._on_attempt_error, c, e),
            **kwargs,
        )
        if s.username:
            client.username_pw_set(s.username, s.password)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        will = _dumps({"state": "offline", "reason": "lost"})
        client.will_set(f"{s.root}/status", will, qos=1, retain=True)
        client.reconnect_delay_set(int(max(1, s.reconnect_min_s)), int(max(1, s.reconnect_max_s)))
        # Our own window decides what is handed to paho, so paho's is unlimited (0).
        # With a limit, paho 2.2 marks the excess "queued" at a reconnect and its
        # CONNACK handler returns at the first queued message, never re-sending the
        # unacknowledged ones behind it: those rows would wait for ever.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_message = self._cb_message
        return client

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (called on paho's thread).

        During a drain a PUBACK arrives every few hundred microseconds. One wake-up of
        the loop per PUBACK (a pipe write, a callback) costs more CPU than the ack
        itself and queues up in front of everything else the loop has to do, alarms
        included. So events are queued here in arrival order and the loop takes all
        that have arrived in one go.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._events_lock:
            self._events.append((fn, args))
            if self._events_scheduled:
                return
            self._events_scheduled = True
        try:
            loop.call_soon_threadsafe(self._run_events)
        except RuntimeError:  # loop closing during shutdown
            with self._events_lock:
                self._events_scheduled = False

    def _run_events(self) -> None:
        with self._events_lock:
            events = list(self._events)
            self._events.clear()
            self._events_scheduled = False
        for fn, args in events:
            try:
                fn(*args)
            except Exception:  # one bad callback must not drop the acks behind it
                log.exception("MQTT callback %s failed", getattr(fn, "__name__", fn))

    def _cb_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        self._call(self._on_connect, client, rc.is_failure, int(rc.value), str(rc))

    def _cb_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        from_broker = bool(getattr(flags, "is_disconnect_packet_from_server", False))
        self._call(self._on_disconnect, client, from_broker, int(rc.value), str(rc))

    def _tls_settings(self) -> TlsSettings:
        s = self.s
        return TlsSettings(s.ca_file, s.cert_file, s.key_file, None, s.tls_insecure)

    def _cb_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any = None
    ) -> None:
        self._call(self._on_puback, mid)

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        response_topic = None
        correlation = None
        expiry = None
        props = getattr(msg, "properties", None)
        if props is not None:
            response_topic = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
            expiry = getattr(props, "MessageExpiryInterval", None)
        self._call(
            self._on_message, msg.topic, bytes(msg.payload), response_topic, correlation, expiry
        )

    # -- event-loop side -------------------------------------------------------
    def _on_attempt(self, client: mqtt.Client, protocol: int) -> None:
        if client is not self._client:
            return
        self._attempt_protocol = protocol
        self._answered = False
        self._overdue = False
        log.debug("MQTT connecting to %s with MQTT %s", self._report.where, protocol_name(protocol))
        if self._loop is not None:
            self._cancel_connack_timer()
            self._connack_timer = self._loop.call_later(
                self.s.connack_timeout_s, self._connack_overdue, client
            )

    def _connack_overdue(self, client: mqtt.Client) -> None:
        self._connack_timer = None
        if client is not self._client or self._answered or self._stopping:
            return
        # Close the socket under paho: its network thread sees the connection end, calls
        # on_disconnect (handled below as "no answer") and tries again.
        self._overdue = True
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop
                # its SSL object under paho's thread.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _cancel_connack_timer(self) -> None:
        if self._connack_timer is not None:
            self._connack_timer.cancel()
            self._connack_timer = None

    def _answer(self) -> None:
        self._answered = True
        self._cancel_connack_timer()

    def _on_attempt_error(self, client: mqtt.Client, err: OSError) -> None:
        if client is not self._client or self._stopping:
            return
        self._answer()
        self._report.failed(*describe_connect_error(err, self._tls_settings()))

    def _use_protocol(self, client: mqtt.Client, protocol: MQTTProtocolVersion) -> None:
        if isinstance(client, _Client):
            client.next_protocol = protocol

    def _on_refused(self, client: mqtt.Client, code: int, reason: str) -> None:
        """The broker answered CONNECT with a failure (or closed without answering)."""
        v5 = self._attempt_protocol == MQTTProtocolVersion.MQTTv5
        if code == _RC_UNSUPPORTED_PROTOCOL and v5 and self._may_fall_back():
            self._fall_back(client, f"it answered '{reason}'")
            return
        if code in (_RC_BAD_CREDENTIALS, _RC_NOT_AUTHORIZED):
            who = f"user {self.s.username!r}" if self.s.username else "no user name"
            self._report.failed(
                "credentials", f"bad credentials: the broker answered '{reason}' ({who})"
            )
            return
        self._report.failed("rejected", f"the broker refused the connection: '{reason}'")

    def _may_fall_back(self) -> bool:
        # Only when MQTT 5 is configured, and not once 3.1.1 worked for this broker.
        return self.s.protocol == "5" and self._protocol_in_use != "3.1.1"

    def _fall_back(self, client: mqtt.Client, why: str) -> None:
        self._use_protocol(client, MQTTProtocolVersion.MQTTv311)
        if self._fallback_announced:
            log.debug("MQTT broker %s refused MQTT 5 (%s): trying 3.1.1", self._report.where, why)
            return
        self._fallback_announced = True
        log.info(
            "MQTT broker %s does not accept MQTT 5 (%s): trying MQTT 3.1.1 "
            "/ MQTT 代理不支持 MQTT 5，改用 MQTT 3.1.1",
            self._report.where,
            why,
        )

    def _on_connect(self, client: mqtt.Client, failed: bool, code: int, reason: str) -> None:
        if client is not self._client:
            return
        self._answer()
        if failed:
            if not self._stopping:
                self._on_refused(client, code, reason)
            return
        self.stats.connects += 1
        self._connected_at = time.monotonic()
        self._protocol_in_use = protocol_name(self._attempt_protocol)
        # Keep the version that worked for the next reconnects too.
        self._use_protocol(client, _protocol(self._protocol_in_use))
        self._report.connected(self._protocol_in_use)
        if self._loop is not None:
            self._cancel_stable_timer()
            self._stable_timer = self._loop.call_later(
                self._report.stable_s, self._report.check_stable
            )
        # paho re-sends its own unacknowledged QoS 1 messages after a reconnect;
        # everything else committed before now is backlog.
        self._boundary = self.outbox.next_seq
        self._live.clear()
        self._cursor = dict.fromkeys(Lane, 0)
        self._buf.clear()
        self._backlog_done = False
        client.subscribe(f"{self.s.root}/cmd/+", qos=1)
        self._publish_direct(
            f"{self.s.root}/status", _dumps(self._status_payload("online")), qos=1, retain=True
        )
        for topic, (data, qos) in list(self._retained.items()):
            self._publish_direct(topic, data, qos=qos, retain=True)
        self.connected.set()
        self._work.set()

    def _cancel_stable_timer(self) -> None:
        if self._stable_timer is not None:
            self._stable_timer.cancel()
            self._stable_timer = None

    def _on_lost(self, from_broker: bool, code: int, reason: str) -> None:
        """An established connection ended: say why, as precisely as the broker lets us."""
        up_s = time.monotonic() - self._connected_at
        # A twin reconnects after reconnect_min_s and takes the session back at once.
        quick = up_s < max(10.0, 3 * self.s.reconnect_min_s)
        self._quick_losses = self._quick_losses + 1 if quick else 0
        twins = f"another client with the same client id {self.s.client_id!r}"
        if from_broker and code == _RC_SESSION_TAKEN_OVER:
            self._report.lost(
                "taken_over", f"session taken over by {twins} (two gateways with one config?)"
            )
        elif from_broker:
            self._report.lost("closed", f"the broker closed the connection: '{reason}'")
        elif code == _RC_UNSPECIFIED and self._quick_losses >= 2:
            # mosquitto 2.0 and RabbitMQ close the older of two connections with one
            # client id without a word, even over MQTT 5: the sign is a connection that
            # comes up at once and is closed again within seconds, over and over.
            self._report.lost(
                "taken_over",
                f"session taken over by {twins}? The broker closed the connection again "
                f"{up_s:.0f} s after accepting it (two gateways with one config?)",
            )
        else:
            self._report.lost("lost", f"connection lost ({reason})")

    def _on_disconnect(
        self, client: mqtt.Client, from_broker: bool, code: int, reason: str
    ) -> None:
        if client is not self._client:
            return
        was_connected = self.connected.is_set()
        self.connected.clear()
        self._cancel_stable_timer()
        if self._stopping:
            if was_connected:
                log.info("MQTT disconnected from %s", self._report.where)
            return
        if was_connected:
            self._on_lost(from_broker, code, reason)
            return
        if self._answered:
            return  # the CONNACK or the exception already said why
        self._answer()
        # No answer to our CONNECT: RabbitMQ 3.x closes the connection on MQTT 5, amqtt
        # waits for bytes that never come (see connack_timeout_s).
        v5 = self._attempt_protocol == MQTTProtocolVersion.MQTTv5
        why = (
            f"it did not answer within {self.s.connack_timeout_s:g} s"
            if self._overdue
            else "it closed the connection without answering"
        )
        if v5 and self._may_fall_back():
            self._fall_back(client, why)
            return
        if not v5 and self.s.protocol == "5" and self._protocol_in_use is None:
            # 3.1.1 fared no better: try MQTT 5 again next time.
            self._use_protocol(client, MQTTProtocolVersion.MQTTv5)
        self._report.failed(
            "closed",
            f"no answer to CONNECT (MQTT {protocol_name(self._attempt_protocol)}): {why} "
            f"('{reason}')",
        )

    def _on_puback(self, mid: int) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # a direct (non-outbox) message
        self._inflight_seqs.discard(seq)
        self._acked_seqs.add(seq)
        self.outbox.ack((seq,))
        self.stats.acked += 1
        if len(self._acked_seqs) * 4 >= self.s.inflight_max and not self._commit_requested:
            # Half the window holds delivered rows whose delete is not committed yet:
            # commit now rather than at the group-commit timer, while the other half
            # keeps the link busy.
            self._commit_requested = True
            self.outbox.request_commit()
        if self._live or not self._backlog_done:
            # A PUBACK frees no slot of the window (the row stays counted until its
            # delete is committed: _on_deleted wakes the drain), so with nothing waiting
            # a wake-up per message would only spin the drain loop once for nothing.
            self._work.set()

    def _on_message(
        self,
        topic: str,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
        expiry: int | None = None,
    ) -> None:
        prefix = f"{self.s.root}/cmd/"
        if not topic.startswith(prefix) or self._command_handler is None:
            return
        command = topic[len(prefix) :]
        handler = self._command_handler
        expiry_s = None if expiry is None else float(expiry)
        task = asyncio.ensure_future(
            handler(command, payload, response_topic, correlation, expiry_s)
        )
        task.add_done_callback(_log_task_error)

    def _on_committed(self, rows: list[Row]) -> None:
        if self.connected.is_set():
            for row in rows:
                if row.seq >= self._boundary:
                    self._live.append(row)
            if len(self._live) > self._live_max:
                # The link is slower than the producers: let the rest wait in the
                # outbox and go out as backlog, rather than grow memory.
                self._boundary = self._live[-1].seq + 1
                self._live.clear()
                self._backlog_done = False
        self._work.set()

    def _publish_direct(
        self,
        topic: str,
        data: bytes,
        *,
        qos: int,
        retain: bool,
        properties: Properties | None = None,
    ) -> bool:
        client = self._client
        if client is None or not client.is_connected():
            return False  # retained topics are sent again on connect
        info = client.publish(topic, data, qos=qos, retain=retain, properties=properties)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _send_row(self, row: Row, historical: bool) -> bool:
        client = self._client
        if client is None:
            return False
        payload = mark_historical(row.payload) if historical else row.payload
        info = client.publish(row.topic, payload, qos=1, retain=False)
        # NO_CONN: the link dropped a moment ago; paho keeps the message queued and
        # sends it after the reconnect, so it is in flight all the same.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return False
        self._inflight[info.mid] = row.seq
        self._inflight_seqs.add(row.seq)
        self.stats.published += 1
        if historical:
            self.stats.backlog += 1
        else:
            self.stats.live += 1
        return True

    # -- the drain loop ----------------------------------------------------------
    async def run(self) -> None:
        """Connect, then publish until cancelled; on cancel, say offline and disconnect."""
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self._client.connect_async(self.s.host, self.s.port, keepalive=self.s.keepalive_s)
        self._client.loop_start()
        try:
            await self._drain_forever()
        finally:
            await asyncio.shield(self._shutdown())

    async def _shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        self._stopping = True
        if client.is_connected():
            info = client.publish(
                f"{self.s.root}/status",
                _dumps(self._status_payload("offline", "shutdown")),
                qos=1,
                retain=True,
            )
            deadline = time.monotonic() + 2.0
            # Polled, not awaited on an event: both conditions change on paho's thread.
            while not info.is_published() and client.is_connected() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            # Give in-flight messages a moment to be acknowledged so they are not sent twice.
            while self._inflight and client.is_connected() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        client.disconnect()
        await asyncio.to_thread(stop_network_thread, client)
        self.connected.clear()
        self._cancel_stable_timer()
        self._cancel_connack_timer()
        self._client = None

    def _window(self) -> int:
        # A slot is free again only once the outbox has deleted the delivered row:
        # after a crash every row still in the outbox is sent again, so sent-but-
        # not-deleted rows are the duplicates a crash can cause, and that number
        # must stay within the window.
        return self.s.inflight_max - len(self._inflight) - len(self._acked_seqs)

    def _on_deleted(self, seqs: list[int]) -> None:
        self._acked_seqs.difference_update(seqs)
        self._commit_requested = False
        self._work.set()

    async def _drain_forever(self) -> None:
        backlog_tokens = 0.0
        last_refill = time.monotonic()
        while True:
            await self._work.wait()
            self._work.clear()
            if not self.connected.is_set():
                await self.connected.wait()
                continue
            # 1. live first
            while self._live and self._window() > 0 and self.connected.is_set():
                row = self._live.popleft()
                if row.seq in self._inflight_seqs or row.seq in self._acked_seqs:
                    continue
                if not self._send_row(row, historical=False):
                    self._live.appendleft(row)
                    break
            # 2. backlog behind, with part of the window left for live traffic
            if not self._backlog_done and self.connected.is_set():
                reserve = max(1, self.s.inflight_max // 5)
                room = self._window() - reserve
                if self.s.drain_rate_max > 0:
                    now = time.monotonic()
                    backlog_tokens = min(
                        self.s.drain_rate_max,
                        backlog_tokens + (now - last_refill) * self.s.drain_rate_max,
                    )
                    last_refill = now
                    room = min(room, int(backlog_tokens))
                if room > 0:
                    sent = await self._drain_backlog(room)
                    backlog_tokens -= sent
                    if self.s.drain_rate_max > 0 and room < 1 and not self._backlog_done:
                        self._schedule_wake(1.0 / self.s.drain_rate_max)
                elif self.s.drain_rate_max > 0 and not self._backlog_done:
                    self._schedule_wake(1.0 / self.s.drain_rate_max)

    def _schedule_wake(self, delay: float) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_later(delay, self._work.set)

    async def _drain_backlog(self, room: int) -> int:
        """Send up to ``room`` backlog rows: alarms, then events, then telemetry, oldest first."""
        sent = 0
        while room > 0 and self.connected.is_set():
            if not self._buf:
                if not await self._refill():
                    self._backlog_done = True
                    break
                continue
            row = self._buf.popleft()
            if row.seq in self._inflight_seqs or row.seq in self._acked_seqs:
                continue
            if not self._send_row(row, historical=True):
                self._buf.appendleft(row)
                break
            sent += 1
            room -= 1
        return sent

    async def _refill(self) -> bool:
        # Read ahead in large slices: one SQLite round trip per thousand rows, not
        # one per few freed window slots.
        for lane in Lane:
            rows = await self.outbox.fetch(lane, self._cursor[lane], self._boundary, 1000)
            if rows:
                self._cursor[lane] = rows[-1].seq
                self._buf.extend(rows)
                return True
        return False


def _tls_context(s: MqttSettings) -> ssl.SSLContext | None:
    """The client's TLS context, built before the first connect: a CA, certificate or key
    that cannot be used is a configuration error (exit 78), not a crash in the network task."""
    if not (s.tls or s.ca_file or s.cert_file):
        return None
    tls = TlsSettings(s.ca_file, s.cert_file, s.key_file, s.key_password, s.tls_insecure)
    try:
        return client_context(tls)
    except TlsFileError as err:
        raise ConfigError([f"mqtt.tls.{err.key}  {err}"]) from err


def host_port(host: str, port: int) -> str:
    """``host:port`` for logs, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _protocol(name: str) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv5 if name == "5" else MQTTProtocolVersion.MQTTv311


def _log_task_error(task: asyncio.Future[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("command handler failed: %r", exc, exc_info=exc)


def response_properties(correlation: bytes | None) -> Properties | None:
    """MQTT 5 properties that echo the request's correlation data."""
    if correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = correlation
    return props
