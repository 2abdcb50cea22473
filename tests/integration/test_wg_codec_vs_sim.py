"""The WG driver's codec against the WG simulator, over real UDP on loopback.

The codec (``drivers/wg/wire.py``, ``events.py``) and the simulator (``simulators/wg.py``) were
written by different people from the public protocol description, neither reading the other.
Each has its own tests against hand-built frames and third-party captures; this file checks
that they agree with each other on every function the driver will use: a disagreement is a
misreading of the protocol on one side.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from edge_agent.drivers.wg import wire
from edge_agent.drivers.wg.events import record_to_event
from edge_agent.simulators import WgController

SERIAL = 423187757
HOST_NOW = datetime(2026, 3, 2, 7, 45, 30)
WAIT_S = 5.0  # an answer that does not come within this is a failure, not a measurement


class Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.frames.put_nowait(data)


@pytest.fixture
async def rig() -> AsyncIterator[tuple[WgController, asyncio.DatagramTransport, Udp]]:
    ctl = WgController(SERIAL, doors=2, clock=lambda: HOST_NOW)
    await ctl.start()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        Udp, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    try:
        yield ctl, transport, proto
    finally:
        transport.close()
        ctl.close()


async def ask(rig: tuple[WgController, asyncio.DatagramTransport, Udp], request: wire.Request):  # type: ignore[type-arg,no-untyped-def]
    ctl, transport, proto = rig
    transport.sendto(request.frame, ("127.0.0.1", ctl.port))
    answer = await asyncio.wait_for(proto.frames.get(), WAIT_S)
    return request.parse(answer)


async def test_every_request_the_driver_uses_parses_the_simulators_answer(rig) -> None:  # type: ignore[no-untyped-def]
    _ctl, transport, _ = rig
    device = await ask(rig, wire.discover())
    assert device.serial == SERIAL

    clock = await ask(rig, wire.get_time(SERIAL))
    assert clock.time == HOST_NOW
    later = HOST_NOW + timedelta(minutes=5)
    clock = await ask(rig, wire.set_time(SERIAL, later))
    assert clock.time == later

    door = await ask(rig, wire.set_door_control(SERIAL, 2, wire.DoorMode(3), 7))
    assert (door.door, door.mode, door.delay_s) == (2, 3, 7)
    door = await ask(rig, wire.get_door_control(SERIAL, 2))
    assert (door.door, door.mode, door.delay_s) == (2, 3, 7)

    port = transport.get_extra_info("sockname")[1]
    assert (await ask(rig, wire.set_listener(SERIAL, "127.0.0.1", port))).ok
    listener = await ask(rig, wire.get_listener(SERIAL))
    assert (str(listener.address), listener.port) == ("127.0.0.1", port)

    # the answer to 0xB2 says whether the index changed (uhppote calls it "updated")
    assert (await ask(rig, wire.set_record_index(SERIAL, 29))).changed
    assert not (await ask(rig, wire.set_record_index(SERIAL, 29))).changed
    assert (await ask(rig, wire.get_record_index(SERIAL))).index == 29

    status = await ask(rig, wire.get_status(SERIAL))
    assert status.serial == SERIAL
    assert status.last_index == 0
    assert status.record is None


async def test_records_read_and_pushed_agree_and_map_to_contract_events(rig) -> None:  # type: ignore[no-untyped-def]
    ctl, transport, proto = rig
    port = transport.get_extra_info("sockname")[1]
    assert (await ask(rig, wire.set_listener(SERIAL, "127.0.0.1", port))).ok

    ctl.swipe(8165538, door=1)
    ctl.swipe(8165539, door=2, granted=False)
    pushed = [wire.parse_event(await asyncio.wait_for(proto.frames.get(), WAIT_S))]
    while not proto.frames.empty() or len(pushed) < 2:
        pushed.append(wire.parse_event(await asyncio.wait_for(proto.frames.get(), WAIT_S)))
    swipes = [p.record for p in pushed if p.record and p.record.kind is wire.RecordType.SWIPE]
    assert [(r.card, r.door, r.granted) for r in swipes] == [
        (8165538, 1, True),
        (8165539, 2, False),
    ]

    # reading back by index gives the same records the controller pushed
    last = pushed[-1].last_index
    for status in pushed:
        assert status.record is not None
        reply = await ask(rig, wire.read_record(SERIAL, status.record.index))
        assert reply.record == status.record
    past = await ask(rig, wire.read_record(SERIAL, last + 1))
    assert past.record is None

    granted = record_to_event(swipes[0], {})
    denied = record_to_event(swipes[1], {})
    assert granted[0] == denied[0] == "card_read"
    assert (granted[1]["result"], granted[1]["card"]) == ("granted", "8165538")
    assert denied[1]["result"] == "denied"
    assert denied[1]["reason"]


async def test_an_answer_from_another_request_is_refused(rig) -> None:  # type: ignore[no-untyped-def]
    ctl, transport, proto = rig
    ctl.swipe(1, door=1)
    ctl.swipe(2, door=1)
    first, second = wire.read_record(SERIAL, 1), wire.read_record(SERIAL, 2)
    transport.sendto(first.frame, ("127.0.0.1", ctl.port))
    late = await asyncio.wait_for(proto.frames.get(), WAIT_S)
    with pytest.raises(wire.FieldMismatchError):
        second.parse(late)  # a late answer to index 1 is never taken for index 2
