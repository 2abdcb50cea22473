"""Reusable pieces for a kind's shared listener (:class:`edge_agent.driver.Hub`).

Door controllers of one kind all send to one UDP port (WG/UHPPOTE controllers: 60000);
one socket on the gateway receives for all of them. :class:`UdpHub` is that socket: a
kind subclasses it, says where to listen (its settings, a default of its own) and how
to tell which device a datagram belongs to (:meth:`UdpHub.key_of`: the source address
by default, or a key in the datagram such as a controller's serial number). Each driver
registers its key in its ``run`` and receives its own datagrams; a datagram no device
claims is counted, logged once per sender (then at DEBUG), and summed up at stop, since
logs live on an SD card.

A kind whose devices POST to the gateway adds its routes to the agent's one HTTP
server instead (``HubContext.http.add_routes``, while the hub is built): see
:mod:`edge_agent.http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Any, ClassVar

from edge_agent.config.models import parse_bind
from edge_agent.driver import HubContext

log = logging.getLogger(__name__)

#: (host, port) of a datagram's sender (IPv6: the first two items of the 4-tuple)
Addr = tuple[Any, ...]
Handler = Callable[[bytes, Addr], None]

#: unknown senders remembered by name for the once-per-sender log line; past this many
#: (a scan of the network) they are only counted
UNKNOWN_KEYS_MAX = 256
#: datagrams a device's inbox holds before the oldest is dropped (and counted)
INBOX_MAX = 256


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, hub: UdpHub) -> None:
        self.hub = hub

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.hub.dispatch(data, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for something we sent (port unreachable): not the socket's end.
        log.debug("%s hub: %s", self.hub.kind, exc)


class KeyedHub:
    """What every shared listener does with what it receives: hand each message (a
    datagram, a POSTed body) to the device it belongs to, by a key the kind extracts
    (:meth:`key_of`), and count what no device claims: logged once per sender at WARNING,
    then at DEBUG, and summed up at :meth:`close`.

    Drivers use :meth:`register` (a callback) or :meth:`inbox` (a queue) with the key
    their device's messages carry. :class:`UdpHub` adds the socket; an HTTP hub adds
    routes (``HubContext.http``) whose handlers call :meth:`dispatch`.
    """

    kind: ClassVar[str] = "hub"
    #: whether the hub adds routes to the agent's HTTP server: ``check-config`` then
    #: requires ``http.bind`` in the file, and the hub gets ``HubContext.http``
    needs_http: ClassVar[bool] = False

    def __init__(self, ctx: HubContext) -> None:
        self.ctx = ctx
        self._handlers: dict[Hashable, Handler] = {}
        #: messages no device claimed, in all, and by sender key (first UNKNOWN_KEYS_MAX)
        self.unclaimed = 0
        self.unclaimed_by: dict[Hashable, int] = {}
        #: messages a driver's callback failed on (a driver bug; the hub goes on)
        self.handler_errors = 0
        #: messages dropped because a device's inbox was full (its driver fell behind)
        self.dropped = 0

    def key_of(self, data: bytes, addr: Addr) -> Hashable | None:
        """Which device a message belongs to (the key a driver registered); None for one
        that cannot belong to any (too short, wrong start byte). Default: the sender's IP
        address. May raise on garbage: it counts as unclaimed."""
        return str(addr[0])

    # -- what drivers use ------------------------------------------------------------
    def register(self, key: Hashable, handler: Handler) -> Callable[[], None]:
        """Deliver the messages of ``key`` to ``handler`` (called in the event loop; it
        must not block). Returns the function that unregisters it. One device per key:
        a second registration is a ``ValueError`` (two devices with one address)."""
        if key in self._handlers:
            raise ValueError(f"{self.kind}: {key!r} is already registered by another device")
        self._handlers[key] = handler

        def unregister() -> None:
            if self._handlers.get(key) is handler:
                del self._handlers[key]

        return unregister

    @contextlib.contextmanager
    def inbox(
        self, key: Hashable, maxsize: int = INBOX_MAX
    ) -> Iterator[asyncio.Queue[tuple[bytes, Addr]]]:
        """The messages of ``key`` as a queue, while the ``with`` block runs; when the
        driver falls behind by ``maxsize``, the oldest are dropped (counted in
        :attr:`dropped`)."""
        queue: asyncio.Queue[tuple[bytes, Addr]] = asyncio.Queue(maxsize)

        def put(data: bytes, addr: Addr) -> None:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait((data, addr))

        unregister = self.register(key, put)
        try:
            yield queue
        finally:
            unregister()

    # -- receiving -------------------------------------------------------------------
    def dispatch(self, data: bytes, addr: Addr) -> bool:
        """Hand a message to its device; False when none claimed it. Nothing a sender
        does makes this raise."""
        try:
            key = self.key_of(data, addr)
        except Exception:
            key = None
        handler = self._handlers.get(key) if key is not None else None
        if handler is None:
            self._unclaimed(data, addr, key)
            return False
        try:
            handler(data, addr)
        except Exception as err:
            self.handler_errors += 1
            if self.handler_errors == 1:
                log.error("%s: a driver failed on a message: %r", self.kind, err, exc_info=err)
            else:
                log.debug("%s: a driver failed on a message: %r", self.kind, err)
        return True

    def _unclaimed(self, data: bytes, addr: Addr, key: Hashable | None) -> None:
        self.unclaimed += 1
        name: Hashable = key if key is not None else f"{addr[0]} (unreadable)"
        n = self.unclaimed_by.get(name)
        if n is None and len(self.unclaimed_by) >= UNKNOWN_KEYS_MAX:
            return  # only counted: a network scan must not grow memory or the log
        self.unclaimed_by[name] = (n or 0) + 1
        if n is None:
            log.warning(
                "%s: message from %s (%r, %d bytes) belongs to no configured device; "
                "further ones are counted / 收到不属于任何已配置设备的报文，之后只计数",
                self.kind,
                addr[0],
                name,
                len(data),
            )
        else:
            log.debug("%s: unclaimed message from %s (%r)", self.kind, addr[0], name)

    # -- the Hub protocol ------------------------------------------------------------
    async def run(self) -> None:
        """Nothing to listen on by itself (an HTTP hub's routes are served by the agent's
        server): wait until cancelled."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Say how many messages nobody claimed."""
        if self.unclaimed:
            log.info(
                "%s: %d messages from %d unknown senders were ignored "
                "/ 共忽略 %d 条来自未知设备的报文",
                self.kind,
                self.unclaimed,
                len(self.unclaimed_by),
                self.unclaimed,
            )


class UdpHub(KeyedHub):
    """One UDP socket for every device of a kind. Subclass it, set :attr:`kind` and
    :attr:`default_bind`, and override :meth:`key_of` (the sender's IP address by
    default) and :meth:`bind_of` (the kind's settings' ``bind``).

    Drivers register their key (see :class:`KeyedHub`) and use :meth:`send` to talk to
    their device through the same socket (a controller answers the port the request
    came from).
    """

    kind: ClassVar[str] = "udp"
    #: where to listen when the kind's settings do not say (``host:port``)
    default_bind: ClassVar[str] = "0.0.0.0:60000"

    def __init__(self, ctx: HubContext) -> None:
        super().__init__(ctx)
        self.bind = self.bind_of(ctx.settings) or self.default_bind
        self.host, self.port = parse_bind(self.bind)
        self._transport: asyncio.DatagramTransport | None = None
        #: set while the socket is bound (tests wait for it to learn the real port)
        self.listening = asyncio.Event()

    def bind_of(self, settings: Any) -> str | None:
        """The ``host:port`` to listen on from the kind's settings; None: the default."""
        return getattr(settings, "bind", None)

    def send(self, data: bytes, addr: Addr) -> None:
        """Send through the shared socket; ``OSError`` while it is not bound."""
        if self._transport is None or self._transport.is_closing():
            raise OSError(f"{self.kind} listener is not running")
        self._transport.sendto(data, addr)

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the socket is bound (the real port when the bind says port 0)."""
        if self._transport is None:
            return None
        sockname = self._transport.get_extra_info("sockname")
        return (sockname[0], sockname[1]) if sockname else None

    async def run(self) -> None:
        """Bind and receive until cancelled; ``OSError`` when the address cannot be
        bound (the supervisor retries with backoff)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        log.info(
            "%s: listening for UDP on %s / 已开始监听 UDP",
            self.kind,
            "{}:{}".format(*(self.address or (self.host, self.port))),
        )
        self.listening.set()
        try:
            await asyncio.Event().wait()
        finally:
            self._close_socket()

    async def close(self) -> None:
        """Close the socket if it is still open; say how many datagrams nobody claimed."""
        self._close_socket()
        await super().close()

    def _close_socket(self) -> None:
        transport, self._transport = self._transport, None
        self.listening.clear()
        if transport is not None:
            transport.close()


__all__ = ["Addr", "KeyedHub", "UdpHub"]
