"""One paho-mqtt client for the publisher, ``edge-agent tail`` and bench.

Every MQTT connection of the agent and its tools is made here, so they connect the same
way: client id, MQTT 5 first with the 3.1.1 fallback the uplink contract asks for, TLS
(a context from :mod:`edge_agent.mqtt.tls`), credentials, the last will, a failed attempt
put into words, and a network thread that stops cleanly::

    build_client(ClientOptions)   a paho client (:class:`Client`) set up from the options
    VersionChoice                 which MQTT version the next CONNECT uses (the fallback)
    ConnectionReport              what connection trouble writes to the log (rate-limited)
    LoopNetwork                   drives a client from the asyncio loop: no network thread
    Subscriber                    a client on paho's thread that subscribes on every connect,
                                  falls back to 3.1.1 by itself (``tail``, bench)
    stop_network_thread           ``loop_stop`` without paho 2.x's race

The publisher drives a :class:`Client` from its event loop (:class:`LoopNetwork`: every
PUBACK is read there, every publish written there, no thread woken for either); the
tools use :class:`Subscriber`. This module imports nothing of the agent but the TLS
helpers: ``tail`` runs on an operator's laptop without the publisher's outbox stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from edge_agent.mqtt.tls import TlsSettings
from edge_agent.mqtt.tls import describe_error as describe_tls_error

log = logging.getLogger(__name__)

# -- words: which MQTT version, why an attempt failed, what reaches the log ---------------

#: MQTT 5 reason codes (paho maps the 3.1.1 CONNACK return codes onto them).
RC_UNSUPPORTED_PROTOCOL = 0x84
RC_BAD_CREDENTIALS = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SESSION_TAKEN_OVER = 0x8E
#: what paho reports when the socket closed under it (not a keep-alive timeout)
RC_UNSPECIFIED = 0x80

#: paho's loop_misc runs this long after its keep-alive deadline (see LoopNetwork)
MISC_SLACK_S = 0.05
#: and this often when keep-alive is off (0)
MISC_NO_KEEPALIVE_S = 60.0

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


def protocol_version(name: str) -> MQTTProtocolVersion:
    """paho's version for ``"5"`` or ``"3.1.1"``."""
    return MQTTProtocolVersion.MQTTv5 if name == "5" else MQTTProtocolVersion.MQTTv311


def host_port(host: str, port: int) -> str:
    """``host:port`` for logs, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_connect_error(err: Exception, tls: TlsSettings | None = None) -> tuple[str, str]:
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
    if isinstance(err, OSError) and err.errno in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
    ):
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
        logger: logging.Logger | None = None,
    ) -> None:
        self.where = where
        self._log = logger if logger is not None else log
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
            self._log.warning(
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
            self._log.warning(
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
            self._log.debug("MQTT broker %s: %s (attempt %d)", self.where, text, self._failures)

    def lost(self, key: str, text: str) -> None:
        """An established connection ended."""
        if self._up_since is not None and self._clock() - self._up_since >= self.stable_s:
            self._key = None  # it was up long enough: this is new trouble
        self.failed(key, text)

    def connected(self, protocol: str) -> None:
        now = self._clock()
        self._up_since = now
        if self._key is None:
            self._log.info("MQTT connected to %s with MQTT %s", self.where, protocol)
        elif not self._announced:
            self._log.info(
                "MQTT connected to %s with MQTT %s after %d failed attempts in %.0f s "
                "/ 已连接 MQTT 代理",
                self.where,
                protocol,
                self._failures,
                now - self._since,
            )
            self._announced, self._quiet = True, 0
        else:
            self._log.debug("MQTT connected to %s again with MQTT %s", self.where, protocol)

    def check_stable(self) -> None:
        """Called ``stable_s`` after a connect; ends the streak if the link stayed up."""
        up = self._up_since
        if self._key is None or up is None or self._clock() - up < self.stable_s:
            return
        if self._quiet:
            self._log.info(
                "MQTT connection to %s stable again after %d failed attempts / MQTT 连接已稳定",
                self.where,
                self._failures,
            )
        self._key = None


# -- the client ----------------------------------------------------------------------------


class Client(mqtt.Client):
    """paho's client, telling its owner about every connection attempt.

    paho's own reconnect loop (in its network thread) swallows the exception of a
    failed attempt; :meth:`reconnect` hands it on first. ``next_protocol`` makes the
    next attempt use another MQTT version: paho has no public way to change the version
    of a client, and its CONNACK handler steps down from 3.1.1 to 3.1 the same way
    (setting ``_protocol``).
    """

    def __init__(
        self,
        *args: Any,
        on_attempt: Callable[[Client, int], None] | None = None,
        on_attempt_error: Callable[[Client, Exception], None] | None = None,
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
        if self._on_attempt is not None:
            self._on_attempt(self, int(self._protocol))
        try:
            return super().reconnect()
        except Exception as err:
            # Not only OSError: whatever an attempt raises is a failed attempt, reported
            # like a refused connection, never the end of the network loop.
            if self._on_attempt_error is not None:
                self._on_attempt_error(self, err)
            raise

    def reconnect_delay(self) -> float:
        """How long to wait before the next attempt: paho's own backoff (``loop_forever``'s
        ``_reconnect_wait``), the minimum after a CONNACK, doubling up to the maximum."""
        with self._reconnect_delay_mutex:
            if self._reconnect_delay is None:
                self._reconnect_delay = self._reconnect_min_delay
            else:
                self._reconnect_delay = min(self._reconnect_delay * 2, self._reconnect_max_delay)
            return float(self._reconnect_delay)

    def close_socket(self) -> None:
        """Close the connection without a DISCONNECT and without ``on_disconnect``."""
        self._sock_close()


@dataclass(frozen=True)
class Will:
    """The message the broker publishes when the connection is lost."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class ClientOptions:
    """How to connect: everything but the broker's address."""

    client_id: str
    #: ``"5"`` (MQTT 5 first, 3.1.1 when the broker refuses it) or ``"3.1.1"``
    protocol: str = "5"
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    will: Will | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    #: TCP/TLS connect timeout; None keeps paho's (5 s)
    connect_timeout_s: float | None = None


def build_client(
    options: ClientOptions,
    *,
    on_attempt: Callable[[Client, int], None] | None = None,
    on_attempt_error: Callable[[Client, Exception], None] | None = None,
) -> Client:
    """A paho client set up from ``options``; ``on_attempt(client, protocol)`` and
    ``on_attempt_error(client, err)`` are called on paho's thread at every attempt."""
    proto = protocol_version(options.protocol)
    kwargs: dict[str, Any] = {"client_id": options.client_id, "protocol": proto}
    if proto == MQTTProtocolVersion.MQTTv311:
        kwargs["clean_session"] = True
    client = Client(
        CallbackAPIVersion.VERSION2,
        on_attempt=on_attempt,
        on_attempt_error=on_attempt_error,
        **kwargs,
    )
    if options.username:
        client.username_pw_set(options.username, options.password)
    if options.tls is not None:
        client.tls_set_context(options.tls)
    if options.will is not None:
        w = options.will
        client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
    client.reconnect_delay_set(
        int(max(1, options.reconnect_min_s)), int(max(1, options.reconnect_max_s))
    )
    if options.connect_timeout_s is not None:
        client.connect_timeout = options.connect_timeout_s
    return client


class VersionChoice:
    """Which MQTT version the next CONNECT uses (uplink contract, "Connection").

    MQTT 5 first; a broker that refuses an MQTT 5 CONNECT ("unsupported protocol
    version": amqtt) or drops it unanswered (RabbitMQ 3.x) gets 3.1.1 on the next try, and
    the version that worked is kept for the reconnects after it. Configured ``"3.1.1"``
    never tries MQTT 5. Not thread-safe: call it from one thread, in the order paho
    reports the attempts (the publisher's event loop, or paho's thread).
    """

    def __init__(
        self, configured: str, where: str, *, logger: logging.Logger | None = None
    ) -> None:
        self.configured = configured
        self.where = where
        self._log = logger if logger is not None else log
        #: the version of the attempt under way (or the last one)
        self.attempt = int(protocol_version(configured))
        #: ``"5"`` or ``"3.1.1"`` once a connection came up
        self.in_use: str | None = None
        self._announced = False

    @property
    def attempt_name(self) -> str:
        return protocol_name(self.attempt)

    def attempting(self, protocol: int) -> None:
        self.attempt = protocol

    def connected(self, client: mqtt.Client) -> str:
        """The attempt succeeded: keep its version for the next reconnects too."""
        self.in_use = protocol_name(self.attempt)
        _use_protocol(client, protocol_version(self.in_use))
        return self.in_use

    def refused(self, client: mqtt.Client, code: int, reason: str) -> bool:
        """The broker answered CONNECT with a failure ``code``; True when the next try
        goes with 3.1.1 (then the refusal is expected, not a failure to report)."""
        v5 = self.attempt == MQTTProtocolVersion.MQTTv5
        if code == RC_UNSUPPORTED_PROTOCOL and v5 and self._may_fall_back():
            self._fall_back(client, f"it answered '{reason}'")
            return True
        return False

    def unanswered(self, client: mqtt.Client, why: str) -> bool:
        """The connection ended before any CONNACK; True when the next try goes with 3.1.1."""
        v5 = self.attempt == MQTTProtocolVersion.MQTTv5
        if v5 and self._may_fall_back():
            self._fall_back(client, why)
            return True
        if not v5 and self.configured == "5" and self.in_use is None:
            # 3.1.1 fared no better: try MQTT 5 again next time.
            _use_protocol(client, MQTTProtocolVersion.MQTTv5)
        return False

    def _may_fall_back(self) -> bool:
        # Only when MQTT 5 is configured, and not once 3.1.1 worked for this broker.
        return self.configured == "5" and self.in_use != "3.1.1"

    def _fall_back(self, client: mqtt.Client, why: str) -> None:
        _use_protocol(client, MQTTProtocolVersion.MQTTv311)
        if self._announced:
            self._log.debug("MQTT broker %s refused MQTT 5 (%s): trying 3.1.1", self.where, why)
            return
        self._announced = True
        self._log.info(
            "MQTT broker %s does not accept MQTT 5 (%s): trying MQTT 3.1.1 "
            "/ MQTT 代理不支持 MQTT 5，改用 MQTT 3.1.1",
            self.where,
            why,
        )


def _use_protocol(client: mqtt.Client, protocol: MQTTProtocolVersion) -> None:
    if isinstance(client, Client):
        client.next_protocol = protocol


class LoopNetwork:
    """Runs a :class:`Client`'s network on an asyncio loop instead of paho's thread (the
    way aiomqtt does): the socket is watched with ``add_reader`` and read with
    ``loop_read``, queued packets are written with ``loop_write`` once per pass of the loop,
    ``loop_misc`` (keep-alive: the ping and its timeout) runs when it can next act
    (:meth:`_misc_due_in`), not every second as in paho's thread. Only the blocking
    part of an attempt (TCP connect, TLS handshake, both bounded by the connect timeout)
    runs in a worker thread, as paho's ``reconnect`` does it.

    :meth:`run` connects and reconnects with paho's backoff until cancelled, as
    ``loop_start`` does; :meth:`stop` sends DISCONNECT and closes. Every paho callback
    then runs on the loop's thread, except ``on_attempt`` / ``on_attempt_error`` of
    :class:`Client`, called in the worker thread.
    """

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self._loop = loop
        self._thread = threading.get_ident()
        self._sock: Any = None  # the socket the reader watches
        self._writer = False  # add_writer is on (the socket's buffer was full)
        self._write_soon = False
        self._misc: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()
        self._attempt: asyncio.Future[Any] | None = None
        self._stopping = False
        client.on_socket_close = self._cb_close
        client.on_socket_register_write = self._cb_want_write
        client.on_socket_unregister_write = self._cb_no_write

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._thread

    async def run(self, host: str, port: int, keepalive: int) -> None:
        """Connect, and again after every loss, until cancelled."""
        client = self.client
        client.connect_async(host, port, keepalive=keepalive)
        first = True
        while not self._stopping:
            if not first:
                await asyncio.sleep(client.reconnect_delay())
            first = False
            self._attempt = self._loop.run_in_executor(None, client.reconnect)
            try:
                await asyncio.shield(self._attempt)
            except Exception:  # noqa: S112 - reported by on_attempt_error, retried with backoff
                continue  # reported by Client.reconnect's on_attempt_error
            finally:
                if self._attempt.done():
                    self._attempt = None
            self._attach()
            await self._closed.wait()

    def _attach(self) -> None:
        sock = self.client.socket()
        if sock is None:
            self._closed.set()
            return
        self._closed.clear()
        self._sock = sock
        self._loop.add_reader(sock, self._read)
        self._misc = self._loop.call_later(self._misc_due_in(), self._run_misc)
        if self.client.want_write():  # the CONNECT, queued in the worker thread
            self._write()

    def _detach(self, sock: Any) -> None:
        if sock is None or sock is not self._sock:
            return
        self._loop.remove_reader(sock)
        if self._writer:
            self._loop.remove_writer(sock)
            self._writer = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._sock = None
        self._closed.set()

    # -- paho's socket callbacks ---------------------------------------------------------
    def _cb_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if self._on_loop():
            self._detach(sock)

    def _cb_want_write(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        # Publishes of one pass of the loop go out in one write; in the worker thread
        # (the CONNECT) :meth:`_attach` writes.
        if self._on_loop() and not self._write_soon:
            self._write_soon = True
            self._loop.call_soon(self._write)

    def _cb_no_write(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if self._writer and sock is self._sock:
            self._loop.remove_writer(sock)
            self._writer = False

    # -- the loop's side -----------------------------------------------------------------
    def _read(self) -> None:
        self.client.loop_read()
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            # Decrypted bytes wait in the TLS layer, where epoll does not see them.
            self._loop.call_soon(self._read)

    def _write(self) -> None:
        self._write_soon = False
        if self._sock is None:
            return
        self.client.loop_write()
        sock = self._sock
        if sock is not None and self.client.want_write() and not self._writer:
            # The socket's buffer is full: write again when it drains.
            self._writer = True
            self._loop.add_writer(sock, self._write)

    def _run_misc(self) -> None:
        self._misc = None
        if self._sock is None:
            return
        self.client.loop_misc()  # may close the socket: then _detach ran
        if self._sock is not None:
            self._misc = self._loop.call_later(self._misc_due_in(), self._run_misc)

    def _misc_due_in(self) -> float:
        """Seconds until paho's ``loop_misc`` can next act (paho 2.x ``loop_misc`` and
        ``_check_keepalive``): a PINGREQ once ``keepalive`` passed since the last packet
        out or the last bytes in; the connection given up once ``keepalive`` passed since
        an unanswered PINGREQ (or a CONNECT without its CONNACK). On an idle agent that is
        once a keep-alive instead of every second (issue 8 item 9). Traffic meanwhile
        only moves the moment later: the timer then finds nothing to do and looks again."""
        c: Any = self.client
        keepalive = float(c.keepalive or 0)
        if keepalive <= 0:  # no keep-alive: nothing for loop_misc to do but look now and then
            return MISC_NO_KEEPALIVE_S
        with c._msgtime_mutex:
            due = float(min(c._last_msg_out, c._last_bytes_received)) + keepalive
        ping_t = float(getattr(c, "_ping_t", 0) or 0)
        if ping_t > 0:
            due = min(due, ping_t + keepalive)
        # a little after the deadline: paho compares with ``>=`` on its own reading of
        # the clock (``time.monotonic``), which must not come out a hair early
        return max(0.0, due - time.monotonic()) + MISC_SLACK_S

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Send DISCONNECT (waiting for an attempt under way) and close the socket."""
        self._stopping = True
        if self._attempt is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._attempt)
            self._attempt = None
            self._attach()
        client = self.client
        client.disconnect()
        if client.socket() is not None:
            self._write()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._closed.wait()
        if client.socket() is not None:
            client.close_socket()
        self._detach(self._sock)
        await asyncio.sleep(0)  # the on_disconnect just queued runs before we return


def abort_attempt(client: mqtt.Client) -> None:
    """Close the socket of a connection attempt under paho (a broker that neither answers
    CONNECT nor closes: amqtt 0.12 with an MQTT 5 will). paho's next read (on its network
    thread, or :class:`LoopNetwork`'s) sees the connection end, calls ``on_disconnect`` and
    the client tries again."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop
            # its SSL object under paho's thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def stop_network_thread(client: mqtt.Client) -> None:
    """``client.loop_stop()`` without paho 2.x's race: after a disconnect its thread
    may end on its own and set ``client._thread = None`` between ``loop_stop``'s check
    and its ``join()``, which then raises AttributeError. The thread is finishing
    either way; there is nothing left to stop."""
    try:
        client.loop_stop()
    except AttributeError:
        pass


# -- a subscriber on paho's thread (tail, bench) ---------------------------------------------


class Subscriber:
    """A client that subscribes to ``topics`` on every connect, on its own network thread.

    It reconnects by itself and falls back to MQTT 3.1.1 as the publisher does. Every
    callback runs on paho's thread: ``on_message(msg)`` for each message,
    ``on_up(protocol)`` when a connection comes up, ``on_down(reason)`` when an attempt
    fails or a connection ends (never for the expected MQTT 5 refusal before the
    fallback, nor for our own :meth:`stop`). :attr:`subscribed` is set at the first SUBACK.
    """

    def __init__(
        self,
        options: ClientOptions,
        topics: Sequence[str],
        on_message: Callable[[mqtt.MQTTMessage], None],
        *,
        on_up: Callable[[str], None] | None = None,
        on_down: Callable[[str], None] | None = None,
        qos: int = 1,
        logger: logging.Logger | None = None,
    ) -> None:
        self.topics = list(topics)
        self.qos = qos
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._log = logger if logger is not None else log
        self._options = options
        self.subscribed = threading.Event()
        self._stopping = threading.Event()
        self._answered = True  # the current attempt got a CONNACK (or failed to open)
        self._up = False  # a connection is established
        self._thread: threading.Thread | None = None
        self.version = VersionChoice(options.protocol, "", logger=self._log)
        self.client = build_client(
            options, on_attempt=self._attempt, on_attempt_error=self._attempt_error
        )
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_subscribe = self._cb_subscribe
        self.client.on_message = self._cb_message

    @property
    def protocol(self) -> str | None:
        """MQTT version of the current (or last) connection: ``"5"``, ``"3.1.1"`` or None."""
        return self.version.in_use

    def start(self, host: str, port: int, *, keepalive_s: int = 30) -> None:
        """Connect in the background (paho's thread) and keep reconnecting until :meth:`stop`."""
        self.version.where = host_port(host, port)
        self.client.connect_async(host, port, keepalive=keepalive_s)
        self.client.loop_start()
        # paho names its loop_start thread after the client id; :meth:`stop` waits for it.
        name = f"paho-mqtt-client-{self._options.client_id}"
        self._thread = next((th for th in threading.enumerate() if th.name == name), None)

    def stop(self) -> None:
        """Disconnect and end the network thread (blocks for up to the connect timeout)."""
        self._stopping.set()
        with contextlib.suppress(Exception):
            self.client.disconnect()
        stop_network_thread(self.client)
        if self._thread is not None:
            self._thread.join()
        # paho 2.x leaves the wake-up socket pair of loop_start() (two loopback TCP sockets)
        # to Client.__del__. When the client dies in a reference cycle, the garbage collector
        # may finalise the sockets first: a ResourceWarning at a random later moment (an
        # error in the tests). Its own reset closes them now; private, so looked up
        # defensively.
        reset = getattr(self.client, "_reset_sockets", None)
        if callable(reset):
            with contextlib.suppress(Exception):
                reset()

    def _down(self, reason: str) -> None:
        if not self._stopping.is_set() and self._on_down is not None:
            self._on_down(reason)

    # -- paho's thread -------------------------------------------------------------------------
    def _attempt(self, _client: Client, protocol: int) -> None:
        self.version.attempting(protocol)
        self._answered = False

    def _attempt_error(self, _client: Client, err: Exception) -> None:
        self._answered = True
        self._down(describe_connect_error(err)[1])

    def _cb_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self._answered = True
        if rc.is_failure:
            if not self._stopping.is_set() and not self.version.refused(
                client, int(rc.value), str(rc)
            ):
                self._down(f"refused: {rc}")
            return
        self._up = True
        protocol = self.version.connected(client)
        client.subscribe([(t, self.qos) for t in self.topics])
        if self._on_up is not None:
            self._on_up(protocol)

    def _cb_disconnect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None
    ) -> None:
        was_up, self._up = self._up, False
        if self._stopping.is_set():
            return
        if not was_up:
            if self._answered:
                return  # the CONNACK or the exception already said why
            self._answered = True
            if self.version.unanswered(client, "it closed the connection without answering"):
                return
        self._down(str(rc))

    def _cb_subscribe(self, *_: Any) -> None:
        self.subscribed.set()

    def _cb_message(self, _client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_message(msg)
