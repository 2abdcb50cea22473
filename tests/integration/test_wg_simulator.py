"""The WG short-packet controller simulator, over real UDP on loopback.

Every request is built here by hand with ``struct`` from the protocol description (64 bytes,
start byte 0x17, function, two zero bytes, serial little-endian, data from offset 8, BCD
times), and every answer is decoded by hand: nothing is borrowed from the simulator's own
encoder, so a wrong offset there fails here. The host->device captures of
``../shared/fixtures/access/wg_short_packet.json`` are replayed from that file at test time
(never copied into the project: some are GPL).

Silence is proven by order, not by waiting: a request the controller must ignore is sent
before one it must answer, from the same socket; the first answer that arrives must be the
second request's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest

from edge_agent.simulators import WgController, WgSim
from edge_agent.simulators.wg import (
    GATE_ROUND,
    Reason,
    RecordType,
    gate_trickle,
    run_command,
    run_rush,
    rush_schedule,
)
from tests import captures

SERIAL = 423187757
OTHER = 405419896
#: The host clock the controllers see (injected): a Monday morning before the bell.
HOST_NOW = datetime(2026, 3, 2, 7, 45, 30)
WAIT_S = 5.0  # an answer that does not come within this is a failure, not a measurement
MAGIC = 0x55AAAA55


# -- frames by hand --------------------------------------------------------------------------


def req(fn: int, serial: int, data: bytes = b"", som: int = 0x17) -> bytes:
    return struct.pack("<BBHI", som, fn, 0, serial) + data.ljust(56, b"\0")


def bcd(text: str) -> bytes:
    return bytes.fromhex(text)  # "20260302" -> 20 26 03 02: BCD is the decimal digits as hex


def unbcd(raw: bytes) -> str:
    return raw.hex()


def bcd_time(raw: bytes) -> datetime | None:
    return None if raw == bytes(7) else datetime.strptime(raw.hex(), "%Y%m%d%H%M%S")


def record(frame: bytes) -> dict[str, Any]:
    """The record at offsets 8-27 of a 0x20 or 0xB0 answer."""
    index, rtype, granted, door, direction, card = struct.unpack_from("<IBBBBI", frame, 8)
    return {
        "index": index,
        "type": rtype,
        "granted": granted,
        "door": door,
        "direction": direction,
        "card": card,
        "time": bcd_time(frame[20:27]),
        "reason": frame[27],
    }


def status(frame: bytes) -> dict[str, Any]:
    out = record(frame)
    out.update(
        doors_open=list(frame[28:32]),
        buttons=list(frame[32:36]),
        system_error=frame[36],
        clock=datetime.strptime(unbcd(frame[51:54]) + unbcd(frame[37:40]), "%y%m%d%H%M%S"),
        relays=frame[49],
        inputs=frame[50],
    )
    return out


# -- sockets ---------------------------------------------------------------------------------


class Udp(asyncio.DatagramProtocol):
    """A loopback UDP socket that queues what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.put_nowait(data)

    def error_received(self, exc: Exception) -> None:  # pragma: no cover - loopback
        pass

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, frame: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(frame, ("127.0.0.1", port))

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.received.get(), WAIT_S)

    async def ask(self, frame: bytes, port: int) -> bytes:
        self.send(frame, port)
        return await self.next()

    def empty(self) -> bool:
        return self.received.empty()


@contextlib.asynccontextmanager
async def udp() -> AsyncIterator[Udp]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
    try:
        yield proto
    finally:
        transport.close()


@pytest.fixture
async def sim() -> AsyncIterator[WgSim]:
    controllers = [
        WgController(SERIAL, doors=4, clock=lambda: HOST_NOW),
        WgController(OTHER, doors=2, clock=lambda: HOST_NOW),
    ]
    async with WgSim(controllers) as s:
        yield s


@pytest.fixture
async def host() -> AsyncIterator[Udp]:
    async with udp() as sock:
        yield sock


@pytest.fixture
async def listener() -> AsyncIterator[Udp]:
    async with udp() as sock:
        yield sock


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a datagram in flight has arrived)."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.001)


def set_listener(port: int, interval: int = 0) -> bytes:
    return req(0x90, SERIAL, bytes([127, 0, 0, 1]) + struct.pack("<HB", port, interval))


async def listen(host: Udp, controller: WgController, listener: Udp) -> None:
    answer = await host.ask(set_listener(listener.port), controller.port)
    assert answer[1] == 0x90
    assert answer[8] == 1


# -- discover, status, time ------------------------------------------------------------------


async def test_discover_answers_the_broadcast_serial_0_and_its_own(sim: WgSim, host: Udp) -> None:
    c = sim[SERIAL]
    for asked in (0, SERIAL):
        answer = await host.ask(req(0x94, asked), c.port)
        assert len(answer) == 64
        assert answer[:2] == b"\x17\x94"
        assert struct.unpack_from("<I", answer, 4)[0] == SERIAL
        assert answer[8:12] == bytes([127, 0, 0, 1])  # the address it is bound to
        assert answer[12:16] == bytes([255, 255, 255, 0])
        assert len(set(answer[20:26])) > 1  # a MAC address
        assert answer[26:28] == bcd("0892")  # firmware v8.92
        datetime.strptime(unbcd(answer[28:32]), "%Y%m%d")  # release date, BCD


async def test_each_controller_answers_only_its_own_serial_on_its_own_socket(
    sim: WgSim, host: Udp
) -> None:
    a, b = sim[SERIAL], sim[OTHER]
    assert a.port != b.port
    host.send(req(0x20, OTHER), a.port)  # the wrong controller: silent
    answer = await host.ask(req(0x20, SERIAL), a.port)
    assert struct.unpack_from("<I", answer, 4)[0] == SERIAL
    answer = await host.ask(req(0x20, OTHER), b.port)
    assert struct.unpack_from("<I", answer, 4)[0] == OTHER
    assert a.ignored["serial"] == 1


async def test_status_without_records_then_with_the_last_record(sim: WgSim, host: Udp) -> None:
    c = sim[SERIAL]
    empty = status(await host.ask(req(0x20, SERIAL), c.port))
    assert empty["index"] == 0
    assert empty["type"] == 0
    assert empty["time"] is None
    assert empty["clock"] == HOST_NOW
    c.swipe(6154410, 3, granted=False)
    c.swipe(6154413, 2, direction=2)
    last = status(await host.ask(req(0x20, SERIAL), c.port))
    assert last["index"] == 2
    assert (last["type"], last["granted"], last["door"], last["direction"]) == (1, 1, 2, 2)
    assert (last["card"], last["reason"], last["time"]) == (6154413, 1, HOST_NOW)
    assert last["relays"] == 0b0010  # the grant unlocked door 2


async def test_time_get_and_set_with_a_controller_five_minutes_off(host: Udp) -> None:
    c = WgController(SERIAL, clock=lambda: HOST_NOW, clock_offset_s=300)
    async with WgSim([c]):
        answer = await host.ask(req(0x32, SERIAL), c.port)
        assert answer[:2] == b"\x17\x32"
        assert bcd_time(answer[8:15]) == HOST_NOW + timedelta(minutes=5)
        answer = await host.ask(req(0x30, SERIAL, bcd(f"{HOST_NOW:%Y%m%d%H%M%S}")), c.port)
        assert answer[1] == 0x30
        assert bcd_time(answer[8:15]) == HOST_NOW
        answer = await host.ask(req(0x32, SERIAL), c.port)
        assert bcd_time(answer[8:15]) == HOST_NOW
        # a time that is not BCD is not answered
        host.send(req(0x30, SERIAL, bytes.fromhex("20261a0207453000")), c.port)
        answer = await host.ask(req(0x32, SERIAL), c.port)
        assert answer[1] == 0x32
        assert c.ignored["bcd"] == 1
        # a pinned clock answers the set but does not move
        c.set_clock_offset(-120, pinned=True)
        answer = await host.ask(req(0x30, SERIAL, bcd(f"{HOST_NOW:%Y%m%d%H%M%S}")), c.port)
        assert bcd_time(answer[8:15]) == HOST_NOW - timedelta(minutes=2)


async def test_an_aware_host_clock_and_a_listener_that_is_not_ipv4(host: Udp) -> None:
    aware = HOST_NOW.replace(tzinfo=timezone(timedelta(hours=8)))
    c = WgController(SERIAL, clock=lambda: aware)
    async with WgSim([c]):
        answer = await host.ask(req(0x30, SERIAL, bcd("20260302074600")), c.port)
        assert bcd_time(answer[8:15]) == HOST_NOW + timedelta(seconds=30)
    with pytest.raises(ValueError, match="IPv4"):
        WgController(SERIAL, listener=("localhost", 60001))


# -- doors -----------------------------------------------------------------------------------


async def test_door_mode_and_delay_set_get_and_a_door_it_lacks(sim: WgSim, host: Udp) -> None:
    c = sim[OTHER]  # two doors
    answer = await host.ask(req(0x82, OTHER, bytes([2])), c.port)
    assert answer[1] == 0x82
    assert tuple(answer[8:11]) == (2, 3, 3)
    answer = await host.ask(req(0x80, OTHER, bytes([2, 1, 7])), c.port)
    assert tuple(answer[8:11]) == (2, 1, 7)
    assert status(await host.ask(req(0x20, OTHER), c.port))["relays"] == 0b10  # normally open
    host.send(req(0x82, OTHER, bytes([3])), c.port)  # door 3 of a two-door controller
    answer = await host.ask(req(0x82, OTHER, bytes([2])), c.port)
    assert tuple(answer[8:11]) == (2, 1, 7)
    assert c.ignored["door"] == 1
    await host.ask(req(0x80, OTHER, bytes([2, 3, 7])), c.port)
    assert status(await host.ask(req(0x20, OTHER), c.port))["relays"] == 0  # controlled again


async def test_remote_open_records_and_pushes_open_then_closes_after_the_delay(
    sim: WgSim, host: Udp, listener: Udp
) -> None:
    c = sim[SERIAL]
    await listen(host, c, listener)
    await host.ask(req(0x80, SERIAL, bytes([2, 3, 1])), c.port)  # door 2: controlled, 1 s
    answer = await host.ask(req(0x40, SERIAL, bytes([2])), c.port)
    assert answer[:2] == b"\x17\x40"
    assert answer[8] == 1
    pushed = [status(await listener.next()) for _ in range(2)]
    assert [(p["index"], p["type"], p["reason"], p["door"]) for p in pushed] == [
        (1, 2, 44, 2),  # remote open
        (2, 2, 23, 2),  # door open
    ]
    now = status(await host.ask(req(0x20, SERIAL), c.port))
    assert now["doors_open"] == [0, 1, 0, 0]
    assert now["relays"] == 0b0010
    closed = status(await listener.next())  # after the door's 1 s delay
    assert (closed["index"], closed["type"], closed["reason"]) == (3, 2, 24)
    assert closed["doors_open"] == [0, 0, 0, 0]
    assert closed["relays"] == 0


async def test_without_special_events_only_the_remote_open_is_recorded(host: Udp) -> None:
    c = WgController(SERIAL, clock=lambda: HOST_NOW, record_special_events=False)
    async with WgSim([c]):
        await host.ask(req(0x80, SERIAL, bytes([1, 3, 0])), c.port)  # no delay: shuts at once
        answer = await host.ask(req(0x40, SERIAL, bytes([1])), c.port)
        assert answer[8] == 1
        c.door_contact(2, True)  # forced open is an alarm, recorded all the same
        got = [
            record(await host.ask(req(0xB0, SERIAL, struct.pack("<I", i)), c.port))
            for i in (1, 2, 3)
        ]
    assert [(r["index"], r["reason"]) for r in got] == [(1, 44), (2, 38), (0, 0)]


async def test_a_door_the_controller_lacks_is_not_opened(sim: WgSim, host: Udp) -> None:
    c = sim[SERIAL]
    host.send(req(0x40, SERIAL, bytes([5])), c.port)
    answer = await host.ask(req(0x20, SERIAL), c.port)
    assert answer[1] == 0x20
    assert status(answer)["index"] == 0


# -- listener and pushes ---------------------------------------------------------------------


async def test_listener_set_get_and_pushes_with_increasing_indices(
    sim: WgSim, host: Udp, listener: Udp
) -> None:
    c = sim[SERIAL]
    answer = await host.ask(set_listener(listener.port, interval=0), c.port)
    assert answer[8] == 1
    answer = await host.ask(req(0x92, SERIAL), c.port)
    assert answer[1] == 0x92
    assert answer[8:12] == bytes([127, 0, 0, 1])
    assert struct.unpack_from("<HB", answer, 12) == (listener.port, 0)
    for card in range(1000, 1005):
        c.swipe(card, 1 + card % 4)
    pushed = [await listener.next() for _ in range(5)]
    assert all(len(f) == 64 and f[:2] == b"\x17\x20" for f in pushed)
    assert [record(f)["index"] for f in pushed] == [1, 2, 3, 4, 5]
    assert [record(f)["card"] for f in pushed] == list(range(1000, 1005))


async def test_pushed_events_can_start_with_0x19_like_firmware_v6_62(
    host: Udp, listener: Udp
) -> None:
    c = WgController(SERIAL, clock=lambda: HOST_NOW, event_som=0x19)
    async with WgSim([c]):
        await listen(host, c, listener)
        c.swipe(42, 1)
        frame = await listener.next()
        assert frame[:2] == b"\x19\x20"
        assert record(frame)["card"] == 42
        answer = await host.ask(req(0x20, SERIAL), c.port)
        assert answer[0] == 0x17  # answers keep 0x17


async def test_scenario_hooks_make_the_records_the_controller_makes(
    sim: WgSim, host: Udp, listener: Udp
) -> None:
    c = sim[SERIAL]
    await listen(host, c, listener)

    async def pushed(n: int) -> list[tuple[int, int, int, int]]:
        frames = [record(await listener.next()) for _ in range(n)]
        return [(r["type"], r["granted"], r["reason"], r["door"]) for r in frames]

    c.swipe(77, 1, granted=False, reason=15)
    assert await pushed(1) == [(1, 0, 15, 1)]
    c.door_contact(3, True)  # opened while locked: also forced open
    assert await pushed(2) == [(2, 1, 23, 3), (3, 0, 38, 3)]
    c.held_open(3)
    assert await pushed(1) == [(3, 0, 37, 3)]
    c.door_contact(3, False)
    assert await pushed(1) == [(2, 1, 24, 3)]
    c.exit_button(4)
    assert await pushed(1) == [(2, 1, 20, 4)]
    c.duress(88, 2)
    assert await pushed(1) == [(3, 1, 34, 2)]
    c.fire(True)
    assert await pushed(1) == [(3, 0, 39, 1)]
    now = status(await host.ask(req(0x20, SERIAL), c.port))
    assert now["inputs"] & 0x02
    assert now["relays"] == 0b1111
    c.forced_open(1)
    assert await pushed(2) == [(2, 1, 23, 1), (3, 0, 38, 1)]
    await host.ask(req(0x80, SERIAL, bytes([2, 2, 3])), c.port)  # door 2 normally closed
    c.swipe(99, 2)
    assert await pushed(1) == [(1, 0, 11, 2)]


# -- record index and records ----------------------------------------------------------------


async def test_record_index_set_with_the_magic_word_and_refused_without(
    sim: WgSim, host: Udp
) -> None:
    c = sim[SERIAL]
    for card in range(3):
        c.swipe(card + 1, 1)
    answer = await host.ask(req(0xB4, SERIAL), c.port)
    assert answer[1] == 0xB4
    assert struct.unpack_from("<I", answer, 8)[0] == 0
    answer = await host.ask(req(0xB2, SERIAL, struct.pack("<II", 2, MAGIC)), c.port)
    assert answer[1] == 0xB2
    assert answer[8] == 1
    host.send(req(0xB2, SERIAL, struct.pack("<II", 3, 0x55AAAA56)), c.port)  # wrong word
    answer = await host.ask(req(0xB4, SERIAL), c.port)
    assert answer[1] == 0xB4
    assert struct.unpack_from("<I", answer, 8)[0] == 2
    assert c.ignored["magic_word"] == 1


async def test_read_record_by_index_oldest_newest_past_the_end_and_overwritten(host: Udp) -> None:
    c = WgController(SERIAL, clock=lambda: HOST_NOW, capacity=4)
    async with WgSim([c]):

        async def get(index: int) -> dict[str, Any]:
            answer = await host.ask(req(0xB0, SERIAL, struct.pack("<I", index)), c.port)
            assert len(answer) == 64
            assert answer[:2] == b"\x17\xb0"
            assert struct.unpack_from("<I", answer, 4)[0] == SERIAL
            return record(answer)

        assert (await get(1))["index"] == 0  # no records at all
        for card in range(101, 107):  # six records in a memory of four: 1 and 2 are gone
            c.swipe(card, 1)
        got = await get(5)
        assert (got["index"], got["card"], got["type"], got["time"]) == (5, 105, 1, HOST_NOW)
        assert (await get(0))["index"] == 3  # the oldest kept
        assert (await get(0xFFFFFFFF))["index"] == 6  # the newest
        gone = await get(2)
        assert gone["type"] == 0xFF
        past = await get(7)
        assert past == record(bytes(64))  # all zero, index 0


# -- bad input and an unplugged controller ---------------------------------------------------


async def test_garbage_is_ignored_and_the_controller_keeps_answering(sim: WgSim, host: Udp) -> None:
    c = sim[SERIAL]
    good = req(0x20, SERIAL)
    for junk in (  # (asyncio does not send an empty datagram)
        good[:1],
        good[:10],
        good[:63],
        good + b"\0",
        req(0x20, SERIAL, som=0x19),
        req(0x20, SERIAL, som=0x00),
        req(0x21, SERIAL),
        req(0xFF, SERIAL),
        bytes(range(64)),
        b"\xff" * 64,
    ):
        host.send(junk, c.port)
    answer = await host.ask(good, c.port)
    assert answer[:2] == b"\x17\x20"
    assert c.ignored == {"length": 4, "start_byte": 4, "function": 2}


async def test_unplugged_stays_silent_records_on_and_the_log_catches_up(
    sim: WgSim, host: Udp, listener: Udp
) -> None:
    c = sim[SERIAL]
    await listen(host, c, listener)
    c.swipe(1, 1)
    assert record(await listener.next())["index"] == 1
    c.unplug()
    host.send(req(0x32, SERIAL), c.port)
    c.swipe(2, 1)  # not pushed: the cable is out
    await until(lambda: c.ignored["unplugged"] == 1)  # the get-time has arrived
    c.replug()
    answer = await host.ask(req(0x20, SERIAL), c.port)
    assert answer[1] == 0x20  # the get-time sent while unplugged got no answer
    c.swipe(3, 1)
    assert record(await listener.next())["index"] == 3
    answer = await host.ask(req(0xB0, SERIAL, struct.pack("<I", 2)), c.port)
    assert record(answer)["card"] == 2  # caught up from the log


# -- the captures of ../shared, replayed -----------------------------------------------------


def _captures() -> list[dict[str, Any]]:
    cases = captures.load("wg_short_packet.json")
    return [c for c in cases if c["direction"] == "host->device" and "bytes_hex" in c]


async def test_replay_the_host_requests_of_the_captures(host: Udp) -> None:
    cases = _captures()
    assert len(cases) >= 8
    serials = sorted({struct.unpack_from("<I", bytes.fromhex(c["bytes_hex"]), 4)[0] for c in cases})
    controllers = [WgController(s, clock=lambda: HOST_NOW) for s in serials]
    async with WgSim(controllers) as sim:
        for c in controllers:
            for card in range(1, 31):  # thirty records, so index 29 exists and 200 does not
                c.swipe(card, 1 + card % 4)
        fns = set()
        for case in cases:
            frame = bytes.fromhex(case["bytes_hex"])
            serial = struct.unpack_from("<I", frame, 4)[0]
            controller = sim[serial]
            answer = await host.ask(frame, controller.port)
            name = case["name"]
            assert len(answer) == 64, name
            assert answer[0] == 0x17, name
            assert answer[1] == frame[1], name
            assert struct.unpack_from("<I", answer, 4)[0] == serial, name
            fns.add(frame[1])
            if frame[1] == 0x20:
                got = status(answer)
                assert got["clock"] == HOST_NOW, name
                assert got["index"] >= 30, name
            elif frame[1] == 0x32:
                assert bcd_time(answer[8:15]) == HOST_NOW, name
            elif frame[1] == 0xB0:
                asked = struct.unpack_from("<I", frame, 8)[0]
                got = record(answer)
                assert got["index"] == (asked if asked <= 30 else 0), name
                if got["index"]:
                    assert got["card"] == asked, name
                    assert got["time"] == HOST_NOW, name
            elif frame[1] in (0x40, 0x90):
                assert answer[8] == 1, name
            if frame[1] == 0x90:
                # the controller now reports the capture's listener, byte for byte
                answer = await host.ask(req(0x92, serial), controller.port)
                assert answer[8:15] == frame[8:15], name
        assert {0x20, 0x32, 0x40, 0x90, 0xB0} <= fns
        # the captures name a LAN listener (192.168.1.100): nothing is ever sent there
        for c in controllers:
            c.swipe(9, 1)
            assert c.listener == ("192.168.1.100", 60001 if c.serial == OTHER else 40000)
            assert c.ignored["push_not_loopback"] >= 1
            assert not c.pushed


async def test_a_listener_interval_also_sends_the_status_every_n_seconds(
    sim: WgSim, host: Udp, listener: Udp
) -> None:
    c = sim[SERIAL]
    answer = await host.ask(set_listener(listener.port, interval=1), c.port)
    assert answer[8] == 1
    got = status(await listener.next())  # no record: the status alone, after a second
    assert got["index"] == 0
    assert got["clock"] == HOST_NOW


# -- the morning rush and the CLI ------------------------------------------------------------


def test_rush_schedule_is_sorted_within_its_window_and_repeatable() -> None:
    rush = rush_schedule(1000, 600, 8, seed=3)
    assert len(rush) == 1000
    assert rush == rush_schedule(1000, 600, 8, seed=3)
    assert [s.at_s for s in rush] == sorted(s.at_s for s in rush)
    assert 0 <= rush[0].at_s
    assert rush[-1].at_s <= 600
    assert {s.lane for s in rush} == set(range(8))
    assert len({s.card for s in rush}) == 1000  # one swipe a student
    assert 0 < sum(not s.granted for s in rush) < 100
    # arrivals bunch up before the bell: the busiest minute is well above the average
    per_minute = [sum(1 for s in rush if m * 60 <= s.at_s < (m + 1) * 60) for m in range(10)]
    assert max(per_minute) > 1.3 * 100


async def test_a_small_rush_reaches_the_listener_complete_and_in_order(
    host: Udp, listener: Udp
) -> None:
    controllers = [WgController(SERIAL + i, clock=lambda: HOST_NOW) for i in range(2)]
    async with WgSim(controllers) as sim:
        for c in controllers:
            frame = set_listener(listener.port)
            await host.ask(frame[:4] + struct.pack("<I", c.serial) + frame[8:], c.port)
        rush = rush_schedule(40, 2000, 8, seed=5)  # played at real speed: past the timeout
        assert await run_rush(sim, rush, speed=10_000) == 40
        frames = [await listener.next() for _ in range(40)]
    by_serial: dict[int, list[int]] = {}
    for f in frames:
        by_serial.setdefault(struct.unpack_from("<I", f, 4)[0], []).append(record(f)["index"])
    for indices in by_serial.values():
        assert indices == list(range(1, len(indices) + 1))
    assert sorted(record(f)["card"] for f in frames) == sorted(s.card for s in rush)
    assert sum(record(f)["granted"] for f in frames) == sum(s.granted for s in rush)


async def test_a_rush_played_at_once_still_reaches_a_listener_on_the_same_loop(
    host: Udp, listener: Udp
) -> None:
    # more pushes than a UDP receive buffer holds: the rush must let the listener read
    c = WgController(SERIAL, clock=lambda: HOST_NOW)
    async with WgSim([c]) as sim:
        await listen(host, c, listener)
        rush = rush_schedule(600, 1, 4, seed=2)
        await run_rush(sim, rush, speed=1e9)
        indices = [record(await listener.next())["index"] for _ in range(600)]
    assert indices == list(range(1, 601))


async def test_run_command_drives_the_hooks_and_refuses_nonsense(sim: WgSim) -> None:
    assert (await run_command(sim, f"swipe {SERIAL} 2 555 timezone out")).startswith("record 1")
    last = sim[SERIAL].records.last
    assert last is not None
    assert (last.card, last.door, last.granted, last.reason, last.direction) == (555, 2, 0, 15, 2)
    await run_command(sim, f"fire {SERIAL} on")
    assert sim[SERIAL].inputs & 0x02
    for bad in ("swipe", f"swipe {SERIAL} 9 1", "swipe 1 1 1", f"dance {SERIAL}", f"held {SERIAL}"):
        with pytest.raises(ValueError):  # noqa: PT011 - every kind of bad command
            await run_command(sim, bad)


async def test_cli_runs_controllers_a_script_and_stdin_commands(
    tmp_path: Path, host: Udp, listener: Udp
) -> None:
    layout_path = tmp_path / "layout.json"
    script = tmp_path / "scenario.txt"
    script.write_text(f"# a card at door 1\n@0 swipe {SERIAL} 1 4242\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent.simulators", "wg",
        "--controllers", "2", "--doors", "2", "--serial", str(SERIAL),
        "--listener", f"127.0.0.1:{listener.port}", "--event-som", "0x19",
        "--layout-out", str(layout_path), "--script", str(script), "--stdin",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        lines = []
        while not lines or not lines[-1].startswith("script done"):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, f"the simulator exited: {lines}"
            lines.append(line.decode().strip())
        assert any(line.startswith("wg ready: 2 controllers") for line in lines)
        layout = json.loads(layout_path.read_text(encoding="utf-8"))
        ports = {c["serial"]: c["port"] for c in layout["controllers"]}
        assert set(ports) == {SERIAL, SERIAL + 1}
        first = await listener.next()
        assert first[:2] == b"\x19\x20"
        assert record(first)["card"] == 4242
        proc.stdin.write(f"duress {SERIAL + 1} 2 777\nnonsense\n".encode())
        await proc.stdin.drain()
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(b"record 1")
        assert b"error" in await asyncio.wait_for(proc.stdout.readline(), 30)
        answer = await host.ask(req(0x20, SERIAL + 1), ports[SERIAL + 1])
        got = status(answer)
        assert (got["card"], got["reason"], got["door"]) == (777, 34, 2)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_gate_trickle_plays_swipes_refusals_a_forced_and_a_held_door() -> None:
    # the demo's school gate: one round, as fast as the loop goes (no listener: records only)
    ctl = WgController(doors=2)
    try:
        steps = await gate_trickle(ctl, every_s=0.001, open_s=0, rounds=1)
    finally:
        ctl.close()
    assert steps == len(GATE_ROUND)
    records = list(ctl.records)
    swipes = [r for r in records if r.type == RecordType.SWIPE]
    granted = [r for r in swipes if r.granted]
    assert len(granted) == GATE_ROUND.count("in") + GATE_ROUND.count("out")
    assert sum(r.direction == 2 for r in granted) == GATE_ROUND.count("out")
    assert {r.door for r in granted} == {1}
    denied = [r for r in swipes if not r.granted]
    assert len(denied) == GATE_ROUND.count("denied")
    alarms = [(r.reason, r.door) for r in records if r.type == RecordType.ALARM]
    assert alarms == [(Reason.FORCED_OPEN, 2), (Reason.HELD_OPEN, 2)]
    # the side door is closed again after each
    contacts = [r.reason for r in records if r.type == RecordType.DOOR and r.door == 2]
    assert contacts == [Reason.DOOR_OPEN, Reason.DOOR_CLOSED] * 2
    assert not ctl.doors[2].open


async def test_the_gate_trickle_needs_the_side_door() -> None:
    ctl = WgController(doors=1)
    with pytest.raises(ValueError, match="no door 2"):
        await gate_trickle(ctl, rounds=1)


def test_the_cli_refuses_a_trickle_without_a_side_door(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_agent.simulators.__main__ import main

    assert main(["wg", "--doors", "1", "--trickle", "1"]) == 2
    err = capsys.readouterr().err
    assert "--trickle needs" in err
    assert "Traceback" not in err
