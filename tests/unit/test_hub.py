"""The reusable hub pieces (edge_agent/hub.py) on real loopback sockets: routing by
sender or by a key in the datagram, what nobody claims, a driver that falls behind or
fails, sending through the shared socket, and the socket closed when the hub stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Hashable, Iterator
from dataclasses import dataclass

import pytest

from edge_agent import hub as hub_module
from edge_agent.driver import HubContext
from edge_agent.hub import Addr, KeyedHub, UdpHub


class ByFirstByte(UdpHub):
    kind = "bytes"
    default_bind = "127.0.0.1:0"

    def key_of(self, data: bytes, addr: Addr) -> Hashable | None:
        if data[0] == 0:
            return None  # "wrong start byte"
        return data[0]


@dataclass
class Settings:
    """A kind's settings with a ``bind``, as UdpHub.bind_of reads them."""

    bind: str


def ctx(bind: str | None = None) -> HubContext:
    return HubContext("t", Settings(bind) if bind else None, [])


def loopback() -> UdpHub:
    return UdpHub(ctx("127.0.0.1:0"))


@contextlib.asynccontextmanager
async def running(hub: UdpHub) -> AsyncIterator[tuple[str, int]]:
    task = asyncio.create_task(hub.run())
    try:
        async with asyncio.timeout(5):
            await hub.listening.wait()
        assert hub.address is not None
        yield hub.address
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await hub.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


async def next_of(queue: asyncio.Queue[tuple[bytes, Addr]]) -> tuple[bytes, Addr]:
    async with asyncio.timeout(5):
        return await queue.get()


async def test_default_key_is_the_sender_address(sender: socket.socket) -> None:
    hub = loopback()
    async with running(hub) as address:
        with hub.inbox("127.0.0.1") as inbox:
            sender.sendto(b"hello", address)
            data, addr = await next_of(inbox)
    assert data == b"hello"
    assert addr[:2] == sender.getsockname()


async def test_each_datagram_goes_to_the_device_its_key_names(sender: socket.socket) -> None:
    hub = ByFirstByte(ctx("127.0.0.1:0"))
    async with running(hub) as address:
        with hub.inbox(1) as one, hub.inbox(2) as two:
            for data in (b"\x01a", b"\x02b", b"\x01c"):
                sender.sendto(data, address)
            got_one = [(await next_of(one))[0], (await next_of(one))[0]]
            got_two = [(await next_of(two))[0]]
    assert (got_one, got_two) == ([b"\x01a", b"\x01c"], [b"\x02b"])
    assert hub.unclaimed == 0


async def test_unclaimed_datagrams_are_counted_and_logged_once_per_sender(
    sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent.hub")
    hub = ByFirstByte(ctx("127.0.0.1:0"))
    async with running(hub) as address:
        with hub.inbox(1) as one:
            for data in (b"\x09x", b"\x09y", b"\x00bad", b"", b"\x09z", b"\x01ok"):
                sender.sendto(data, address)
            await next_of(one)  # sent last: everything before it was handled
    assert hub.unclaimed == 5
    # an empty datagram makes key_of raise: unreadable, like the wrong start byte
    assert hub.unclaimed_by == {9: 3, "127.0.0.1 (unreadable)": 2}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    summary = [r.getMessage() for r in caplog.records if "were ignored" in r.getMessage()]
    assert len(summary) == 1
    assert summary[0].startswith("bytes: 5 messages from 2 unknown senders were ignored")


def test_unknown_senders_are_remembered_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "UNKNOWN_KEYS_MAX", 3)
    hub = KeyedHub(ctx())
    for i in range(10):
        assert not hub.dispatch(b"x", (f"10.0.0.{i}", 60000))
    assert hub.unclaimed == 10
    assert len(hub.unclaimed_by) == 3


def test_one_device_per_key_and_unregister_frees_it() -> None:
    hub = KeyedHub(ctx())
    unregister = hub.register("k", lambda d, a: None)
    with pytest.raises(ValueError, match="already registered"):
        hub.register("k", lambda d, a: None)
    unregister()
    hub.register("k", lambda d, a: None)


def test_a_driver_that_falls_behind_loses_the_oldest_counted() -> None:
    hub = KeyedHub(ctx())
    with hub.inbox("1.2.3.4", maxsize=2) as inbox:
        for n in range(5):
            hub.dispatch(bytes([n]), ("1.2.3.4", 1))
        kept = [inbox.get_nowait()[0] for _ in range(inbox.qsize())]
    assert kept == [b"\x03", b"\x04"]
    assert hub.dropped == 3


def test_a_failing_driver_callback_never_stops_the_hub(caplog: pytest.LogCaptureFixture) -> None:
    hub = KeyedHub(ctx())
    got: list[bytes] = []

    def broken(data: bytes, addr: Addr) -> None:
        raise RuntimeError("driver bug")

    hub.register("a", broken)
    hub.register("b", lambda d, a: got.append(d))
    for _ in range(3):
        assert hub.dispatch(b"x", ("a", 1))
    assert hub.dispatch(b"y", ("b", 1))
    assert got == [b"y"]
    assert hub.handler_errors == 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


async def test_send_goes_out_of_the_shared_socket(sender: socket.socket) -> None:
    hub = loopback()
    with pytest.raises(OSError, match="not running"):
        hub.send(b"early", sender.getsockname())
    async with running(hub) as address:
        hub.send(b"request", sender.getsockname())
        sender.settimeout(5)
        data, source = await asyncio.to_thread(sender.recvfrom, 100)
    assert (data, source[:2]) == (b"request", address)


async def test_the_socket_is_closed_when_the_hub_stops() -> None:
    hub = loopback()
    async with running(hub) as address:
        pass
    assert hub.address is None
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        again.bind(address)  # free again
    finally:
        again.close()


async def test_an_address_in_use_is_an_oserror_from_run() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        hub = UdpHub(ctx(f"127.0.0.1:{taken.getsockname()[1]}"))
        with pytest.raises(OSError, match="in use"):
            await hub.run()
        assert hub.address is None
    finally:
        taken.close()


def test_the_bind_comes_from_the_kinds_settings_else_its_default() -> None:
    hub = UdpHub(ctx("[::1]:6001"))
    assert (hub.host, hub.port) == ("::1", 6001)
    hub = UdpHub(ctx())
    assert (hub.host, hub.port) == ("0.0.0.0", 60000)
