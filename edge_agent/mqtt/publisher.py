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

paho-mqtt's network runs on the asyncio loop (:class:`~edge_agent.mqtt.client.LoopNetwork`:
the socket is read and written there, only the TCP connect and TLS handshake of an attempt
run in a worker thread), so a PUBACK or a publish wakes no other thread. Every callback is
queued and run from the loop (``_call``), so all state here is touched from the event loop
only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.envelope import Lane, iso_ms, mark_historical
from edge_agent.errors import ConfigError
from edge_agent.mqtt.client import (
    RC_BAD_CREDENTIALS,
    RC_NOT_AUTHORIZED,
    RC_SESSION_TAKEN_OVER,
    RC_UNSPECIFIED,
    Client,
    ClientOptions,
    ConnectionReport,
    LoopNetwork,
    VersionChoice,
    Will,
    abort_attempt,
    build_client,
    describe_connect_error,
    host_port,
    protocol_name,
)
from edge_agent.mqtt.tls import TlsFileError, TlsSettings, client_context
from edge_agent.outbox.store import Outbox, Row
from edge_agent.topics import Topics

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


class Publisher:
    """Publishes committed outbox rows and the retained state topics."""

    def __init__(self, settings: MqttSettings, outbox: Outbox) -> None:
        self.s = settings
        self.topics = Topics(settings.root)
        self.outbox = outbox
        self.stats = PublisherStats()
        self.connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Callbacks from paho's thread, run in order on the event loop, many per wake-up.
        self._events: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._events_lock = threading.Lock()
        self._events_scheduled = False
        self._client: mqtt.Client | None = None
        self._net: LoopNetwork | None = None
        self._loop_thread = 0
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
        #: mid -> future of a message sent outside the outbox (a camera snapshot)
        self._blob_acks: dict[int, asyncio.Future[None]] = {}
        self._command_handler: CommandHandler | None = None
        self._device_count = 0
        self._stopping = False
        self._commit_requested = False
        self._tls_context = _tls_context(settings)
        # -- connection state (event loop side) --
        self._report = ConnectionReport(host_port(settings.host, settings.port), logger=log)
        # which MQTT version the next CONNECT uses; the one of the current or last connection
        self._version = VersionChoice(settings.protocol, self._report.where, logger=log)
        self._answered = True  # the current attempt got a CONNACK
        self._overdue = False  # ... or we gave up waiting for it
        self._connack_timer: asyncio.TimerHandle | None = None
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
        sent = self._publish_direct(topic, data, qos=qos, retain=True)
        if payload is not None:
            self._retained[topic] = (data, qos)
        elif sent:
            self._retained.pop(topic, None)
        else:
            # Removed while the link is down (an alarm acknowledged on the console): the
            # broker still holds the old payload, so the removal is sent on connect too.
            self._retained[topic] = (b"", qos)

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

    def publish_blob(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: str,
        user_properties: list[tuple[str, str]],
    ) -> asyncio.Future[None] | None:
        """Send raw bytes that do not go through the outbox (a camera snapshot: its file is
        the durable copy): QoS 1, not retained, with an MQTT 5 content type and user
        properties (left out on 3.1.1). The future is set at the PUBACK; paho sends the
        message again after a reconnect. None when not connected: try again later."""
        client = self._client
        if client is None or self._loop is None or not client.is_connected():
            return None
        props = None
        if self.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = content_type
            props.UserProperty = user_properties
        info = client.publish(topic, data, qos=1, retain=False, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return None
        ack: asyncio.Future[None] = self._loop.create_future()
        self._blob_acks[info.mid] = ack
        return ack

    def inflight_count(self) -> int:
        return len(self._inflight)

    @property
    def protocol(self) -> str | None:
        """MQTT version of the current (or last) connection: ``"5"``, ``"3.1.1"`` or None."""
        return self._version.in_use

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

    def _make_client(self) -> Client:
        s = self.s
        options = ClientOptions(
            client_id=s.client_id,
            protocol=s.protocol,
            username=s.username,
            password=s.password,
            tls=self._tls_context,
            will=Will(self.topics.status, _dumps({"state": "offline", "reason": "lost"})),
            reconnect_min_s=s.reconnect_min_s,
            reconnect_max_s=s.reconnect_max_s,
        )
        client = build_client(
            options,
            on_attempt=lambda c, p: self._call(self._on_attempt, c, p),
            on_attempt_error=lambda c, e: self._call(self._on_attempt_error, c, e),
        )
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
        """Run ``fn(*args)`` on the event loop, after the paho call that raised it
        (called on the loop, or in the worker thread of a connection attempt).

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
            if threading.get_ident() == self._loop_thread:
                loop.call_soon(self._run_events)  # no self-pipe write: nothing to wake
            else:
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
        refused = str(rc) if getattr(rc, "is_failure", False) else None
        self._call(self._on_puback, mid, refused)

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
        self._version.attempting(protocol)
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
        # Close the socket under paho: its read sees the connection end, calls
        # on_disconnect (handled below as "no answer") and the network tries again.
        self._overdue = True
        abort_attempt(client)

    def _cancel_connack_timer(self) -> None:
        if self._connack_timer is not None:
            self._connack_timer.cancel()
            self._connack_timer = None

    def _answer(self) -> None:
        self._answered = True
        self._cancel_connack_timer()

    def _on_attempt_error(self, client: mqtt.Client, err: Exception) -> None:
        if client is not self._client or self._stopping:
            return
        self._answer()
        self._report.failed(*describe_connect_error(err, self._tls_settings()))

    def _on_refused(self, client: mqtt.Client, code: int, reason: str) -> None:
        """The broker answered CONNECT with a failure (or closed without answering)."""
        if self._version.refused(client, code, reason):
            return
        if code in (RC_BAD_CREDENTIALS, RC_NOT_AUTHORIZED):
            who = f"user {self.s.username!r}" if self.s.username else "no user name"
            self._report.failed(
                "credentials", f"bad credentials: the broker answered '{reason}' ({who})"
            )
            return
        self._report.failed("rejected", f"the broker refused the connection: '{reason}'")

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
        # Keeps the version that worked for the next reconnects too.
        self._report.connected(self._version.connected(client))
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
        client.subscribe(self.topics.cmd_subscription, qos=1)
        self._publish_direct(
            self.topics.status, _dumps(self._status_payload("online")), qos=1, retain=True
        )
        for topic, (data, qos) in list(self._retained.items()):
            if self._publish_direct(topic, data, qos=qos, retain=True) and not data:
                del self._retained[topic]  # a removal, done
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
        if from_broker and code == RC_SESSION_TAKEN_OVER:
            self._report.lost(
                "taken_over", f"session taken over by {twins} (two gateways with one config?)"
            )
        elif from_broker:
            self._report.lost("closed", f"the broker closed the connection: '{reason}'")
        elif code == RC_UNSPECIFIED and self._quick_losses >= 2:
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
        why = (
            f"it did not answer within {self.s.connack_timeout_s:g} s"
            if self._overdue
            else "it closed the connection without answering"
        )
        if self._version.unanswered(client, why):
            return
        self._report.failed(
            "closed",
            f"no answer to CONNECT (MQTT {self._version.attempt_name}): {why} ('{reason}')",
        )

    def _on_puback(self, mid: int, refused: str | None = None) -> None:
        blob = self._blob_acks.pop(mid, None)
        if blob is not None:
            if not blob.done():
                # MQTT 5: a PUBACK may say the broker dropped it (not authorised, quota)
                if refused is None:
                    blob.set_result(None)
                else:
                    blob.set_exception(PublishRefused(refused))
            return
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
        command = self.topics.command_of(topic)
        if command is None or self._command_handler is None:
            return
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
        self._loop_thread = threading.get_ident()
        self._client = self._make_client()
        self._net = LoopNetwork(self._client, self._loop)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._net.run(self.s.host, self.s.port, self.s.keepalive_s))
                tg.create_task(self._drain_forever())
        finally:
            await asyncio.shield(self._shutdown())

    async def _shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        self._stopping = True
        if client.is_connected():
            info = client.publish(
                self.topics.status,
                _dumps(self._status_payload("offline", "shutdown")),
                qos=1,
                retain=True,
            )
            deadline = time.monotonic() + 2.0
            # Polled, not awaited on an event: both conditions change inside paho.
            while not info.is_published() and client.is_connected() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            # Give in-flight messages a moment to be acknowledged so they are not sent twice.
            while self._inflight and client.is_connected() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        if self._net is not None:
            await self._net.stop()
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


class PublishRefused(Exception):
    """The broker's PUBACK carried a failure reason code (MQTT 5): the message was dropped."""


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
