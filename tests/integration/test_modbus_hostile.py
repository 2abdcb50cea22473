"""The Modbus driver against a hostile device (tests/hostile_modbus.py) on 127.0.0.1.

Every test here was a reviewer's reproduction in issue #7: an answer that does not
belong to the request must never become a value, a late answer must never be taken
for the next request, a reserved register must not take a whole device dark, and a
device that misbehaves for hours must not fill the SD card with log lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.models import SerialBus, TcpBus
from edge_agent.driver import Bus, DriverContext, Value
from edge_agent.drivers.modbus import ModbusDevice, ModbusDriver, ModbusSettings
from edge_agent.drivers.modbus.driver import LineSettings
from edge_agent.drivers.modbus.probe import ProbeRequest, error_message, probe
from edge_agent.drivers.modbus.profile import clear_profile_cache
from edge_agent.errors import DeviceProtocolError, DeviceUnavailable
from edge_agent.poll import SUMMARY_S, PollLoop
from tests.hostile_modbus import HostileModbus, crc16

pytestmark = pytest.mark.integration

TWO_BLOCKS = (
    "model: two\nvendor: t\npoints:\n"
    "  - {name: a, fc: 3, address: 0, type: uint16, description: a}\n"
    "  - {name: b, fc: 3, address: 100, type: uint16, description: b}\n"
)


@pytest.fixture(autouse=True)
def _fresh_profiles() -> None:
    clear_profile_cache()


@pytest.fixture
async def devices() -> AsyncIterator[list[HostileModbus]]:
    made: list[HostileModbus] = []
    yield made
    for dev in made:
        await dev.stop()


@pytest.fixture
async def drivers() -> AsyncIterator[list[ModbusDriver]]:
    made: list[ModbusDriver] = []
    yield made
    for d in made:
        await d.close()


async def hostile(made: list[HostileModbus], **kw: Any) -> tuple[HostileModbus, int]:
    dev = HostileModbus(**kw)
    made.append(dev)
    return dev, await dev.start()


def driver(
    made: list[ModbusDriver],
    tmp_path: Path,
    port: int,
    *,
    profile: str = TWO_BLOCKS,
    framer: str = "socket",
    **cfg: Any,
) -> ModbusDriver:
    (tmp_path / "p.yaml").write_text(profile)
    buses: dict[str, Bus] = {}
    where: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    if framer == "rtu":  # a serial server in transparent mode: RTU frames over TCP
        bus = buses["ss"] = Bus("ss")
        bus.resources["config"] = TcpBus(
            id="ss", type="tcp", host="127.0.0.1", port=port, framer="rtu"
        )
        where = {"bus": "ss"}
    config = ModbusDevice.model_validate(
        {"kind": "modbus", "id": "dev", "profile": "p", "timeout_s": 0.3, "retries": 0}
        | where
        | cfg
    )
    d = ModbusDriver(
        config, DriverContext(buses=buses, settings=ModbusSettings(profile_dirs=[str(tmp_path)]))
    )
    made.append(d)
    return d


class States:
    """The telemetry and device states a poll loop produced."""

    def __init__(self) -> None:
        self.telemetry: list[tuple[dict[str, Value], str]] = []
        self.states: list[dict[str, Any]] = []

    def telemetry_(self, device: str, data: dict[str, Value], **kw: Any) -> None:
        self.telemetry.append((data, kw.get("quality", "good")))

    def event(self, *_a: Any, **_kw: Any) -> None:
        pass

    def sink(self, _device: str, payload: dict[str, Any]) -> None:
        self.states.append(payload)


def poll_loop(d: ModbusDriver, out: States, clock: Any = None) -> PollLoop:
    emit = type("Emit", (), {"telemetry": out.telemetry_, "event": out.event})()
    extra = {"clock": clock} if clock is not None else {}
    return PollLoop(
        d,
        interval_s=10,
        read_timeout_s=5,
        offline_after=3,
        emit=emit,
        state_sink=out.sink,
        **extra,
    )


# -- answers that do not belong to the request -----------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "framer", "message"),
    [
        ("tid0", "socket", "answer has transaction id 0, the request 1"),
        ("wrong_tid", "socket", "answer has transaction id 1001, the request 1"),
        ("wrong_unit", "socket", "answer comes from unit 2, the request went to unit 1"),
        ("wrong_unit", "rtu", "answer comes from unit 2, the request went to unit 1"),
        ("wrong_fc", "socket", "answer has function code 4, the request fc 3"),
        ("wrong_fc", "rtu", "answer has function code 4, the request fc 3"),
        ("wrong_byte_count", "socket", "answer has byte count 6, expected 4"),
        ("wrong_byte_count", "rtu", "answer has byte count 6, expected 4"),
        ("garbage", "socket", "garbage instead of a Modbus TCP answer"),
        ("garbage", "rtu", "answer with a bad CRC|garbage instead of an RTU answer"),
    ],
)
async def test_an_answer_to_another_request_is_never_a_value(
    devices: list[HostileModbus],
    drivers: list[ModbusDriver],
    tmp_path: Path,
    behaviour: Any,
    framer: str,
    message: str,
) -> None:
    one_block = (
        "model: one\nvendor: t\npoints:\n"
        "  - {name: a, fc: 3, address: 0, type: uint16, description: a}\n"
        "  - {name: b, fc: 3, address: 1, type: uint16, description: b}\n"
    )
    dev, port = await hostile(devices, framer=framer, holding={0: 111, 1: 222}, inputs={0: 9, 1: 9})
    dev.default = behaviour
    d = driver(drivers, tmp_path, port, profile=one_block, framer=framer)
    with pytest.raises(DeviceProtocolError, match=message):
        await d.read()
    # the same device, once it answers properly, reads fine on the same line
    dev.default = "ok"
    assert (await d.read()).data == {"a": 111, "b": 222}


async def test_closed_mid_frame_is_reported_as_such(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    dev, port = await hostile(devices, holding={0: 111, 100: 222})
    dev.script = ["close_mid_frame"]
    d = driver(drivers, tmp_path, port)
    with pytest.raises(DeviceUnavailable, match="connection closed in the middle of an answer"):
        await d.read()
    assert (await d.read()).data == {"a": 111, "b": 222}  # reconnected


async def test_a_late_tcp_answer_is_dropped_not_taken_for_the_next_request(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    dev, port = await hostile(devices, holding={0: 111, 100: 222}, late_s=0.6)
    d = driver(drivers, tmp_path, port, timeout_s=0.4)
    dev.script = ["ok", "late"]  # b's answer comes 1.5 x timeout_s late
    first = await d.read()
    assert first.data == {"a": 111}
    assert "b" in first.missing
    # the late answer to b (222) arrives while a is asked again: it must not become a
    second = await d.read()
    assert second.data == {"a": 111, "b": 222}


async def test_a_repeated_tcp_answer_is_dropped(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    dev, port = await hostile(devices, holding={0: 111, 100: 222})
    d = driver(drivers, tmp_path, port)
    dev.script = ["twice"]
    for _ in range(3):
        reading = await d.read()
        assert (reading.data, reading.missing) == ({"a": 111, "b": 222}, {})


@pytest.mark.parametrize("framer", ["socket", "rtu"])
async def test_an_answer_in_three_pieces_is_read_whole(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path, framer: str
) -> None:
    """A serial server forwards an answer as the bytes come off the line: the driver
    waits for the whole frame (its length from the MBAP header or the RTU byte count),
    and the read waiting for it resumes once, not once per piece (CPU on an idle box)."""
    dev, port = await hostile(devices, framer=framer, holding={0: 111, 100: 222})
    d = driver(drivers, tmp_path, port, framer=framer)
    assert (await d.read()).data == {"a": 111, "b": 222}  # connected, answers in one piece
    assert d._line is not None
    assert d._line.link is not None
    link = d._line.link
    wake = link.wake
    wakes = [0]

    def counted() -> None:
        wakes[0] += link.waiter is not None
        wake()

    link.wake = counted  # type: ignore[method-assign]
    dev.default = "chunked"
    for _ in range(2):
        reading = await d.read()
        assert (reading.data, reading.missing) == ({"a": 111, "b": 222}, {})
    # the waiting read is woken once per answer (when it is whole), not once per piece,
    # and not by its timer
    assert wakes[0] == 4
    # each answer is kept as one frame, not as its pieces
    assert [f.split()[1] for f in d.last_frames()] == [">>", "<<"] * 4


@pytest.mark.parametrize("framer", ["socket", "rtu"])
async def test_a_stop_while_waiting_for_an_answer_is_not_swallowed(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path, framer: str
) -> None:
    """Cancelling a read that waits for an answer ends it with CancelledError; the answer
    that comes after the stop is never taken for the next request's."""
    dev, port = await hostile(devices, framer=framer, holding={0: 111, 100: 222}, late_s=0.1)
    d = driver(drivers, tmp_path, port, framer=framer, timeout_s=0.5)
    asked = asyncio.Event()
    dev.on_request = lambda _seen: asked.set()  # returns None: the script decides
    dev.script = ["late"]  # a's answer, 0.1 s after the stop
    task = asyncio.create_task(d.read())
    await asked.wait()  # the request is on the wire, the read waits for its answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    dev.on_request = None
    reading = await d.read()
    assert (reading.data, reading.missing) == ({"a": 111, "b": 222}, {})


@pytest.mark.parametrize("framer", ["socket", "rtu"])
async def test_a_stop_that_comes_with_the_answer_is_not_swallowed(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path, framer: str
) -> None:
    """The answer and the stop in the same loop pass: the read must still end with
    CancelledError (Python 3.11's wait_for returned the result and dropped the stop, and
    a device task that ignores its stop never lets the agent stop)."""
    _, port = await hostile(devices, framer=framer, holding={0: 111, 100: 222})
    d = driver(drivers, tmp_path, port, framer=framer)
    assert (await d.read()).data == {"a": 111, "b": 222}  # connected
    assert d._line is not None
    assert d._line.link is not None
    link = d._line.link
    task = asyncio.create_task(d.read())
    wake = link.wake

    def wake_then_stop() -> None:
        wake()  # the whole answer is in: the waiting read is resolved ...
        task.cancel()  # ... and the stop arrives before the read resumes

    link.wake = wake_then_stop  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await task
    link.wake = wake  # type: ignore[method-assign]
    reading = await d.read()
    assert (reading.data, reading.missing) == ({"a": 111, "b": 222}, {})


async def test_a_late_rtu_answer_is_flushed_not_taken_for_the_next_block(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    """RTU frames carry no transaction id: only flushing the line tells a late answer
    from the answer to the next request (same unit, fc and byte count)."""
    # 1.5 x timeout_s late: well after the timeout, well within the flush (2 x timeout_s)
    dev, port = await hostile(devices, framer="rtu", holding={0: 111, 100: 222}, late_s=0.6)
    d = driver(drivers, tmp_path, port, framer="rtu", timeout_s=0.4)
    dev.script = ["ok", "late"]
    first = await d.read()
    assert first.data == {"a": 111}
    assert first.missing == {
        "b": "read holding registers 100+1: no answer from unit 1 within 0.4 s"
    }
    second = await d.read()
    assert second.data == {"a": 111, "b": 222}
    assert second.quality == "good"


@pytest.mark.skipif(sys.platform != "linux", reason="needs a pseudo-terminal")
async def test_a_late_answer_on_a_serial_line_is_flushed(
    drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    """The same on a real serial port: an RTU responder on the master side of a pty
    answers the request for b 1.5 x timeout_s late, and the next answers queue behind it."""
    import tty

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    loop = asyncio.get_running_loop()
    holding = {0: 111, 100: 222}
    pending = bytearray()
    busy_until = [0.0]
    timers: list[asyncio.TimerHandle] = []
    late = [True]

    def answer() -> None:
        pending.extend(os.read(master, 256))
        while len(pending) >= 8:
            frame, pending[:] = bytes(pending[:8]), pending[8:]
            assert frame[6:] == crc16(frame[:6])
            start = int.from_bytes(frame[2:4], "big")
            body = bytes([frame[0], 3, 2]) + holding[start].to_bytes(2, "big")
            delay = 0.6 if start == 100 and late[0] else 0.0
            late[0] = late[0] and start != 100
            at = max(loop.time() + delay, busy_until[0] + 0.001)
            busy_until[0] = at
            timers.append(loop.call_at(at, os.write, master, body + crc16(body)))

    loop.add_reader(master, answer)
    try:
        (tmp_path / "p.yaml").write_text(TWO_BLOCKS)
        bus = Bus("rs485", 0.0)
        bus.resources["config"] = SerialBus(id="rs485", type="serial", port=os.ttyname(slave))
        config = ModbusDevice.model_validate(
            {"kind": "modbus", "id": "dev", "profile": "p", "bus": "rs485"}
            | {"timeout_s": 0.4, "retries": 0}
        )
        d = ModbusDriver(
            config, DriverContext({"rs485": bus}, ModbusSettings(profile_dirs=[str(tmp_path)]))
        )
        drivers.append(d)
        first = await d.read()
        assert first.data == {"a": 111}
        second = await d.read()
        assert second.data == {"a": 111, "b": 222}
        await d.close()
    finally:
        for timer in timers:
            timer.cancel()
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_probe_checks_answers_as_the_driver_does(devices: list[HostileModbus]) -> None:
    dev, port = await hostile(devices, holding={0: 111, 1: 222})
    request = ProbeRequest(LineSettings("tcp", "127.0.0.1", port, "socket"), count=2, timeout_s=0.3)
    dev.script = ["tid0", "wrong_fc"]
    with pytest.raises(DeviceProtocolError, match="transaction id 0") as info:
        await probe(request)
    assert "设备应答报文有误" in error_message(info.value)
    with pytest.raises(DeviceProtocolError, match="function code 4"):
        await probe(request)
    assert [row.uint16 for row in await probe(request)] == [111, 222]


# -- reserved registers and partial readings -------------------------------------------

RESERVED = (
    "model: gaps\nvendor: t\npoints:\n"
    "  - {name: p0, fc: 3, address: 0, type: uint16, description: p}\n"
    "  - {name: p1, fc: 3, address: 1, type: uint16, description: p}\n"
    "  - {name: p3, fc: 3, address: 3, type: uint16, description: p}\n"
    "  - {name: p4, fc: 3, address: 4, type: uint16, description: p}\n"
    "  - {name: p6, fc: 3, address: 6, type: int32, description: p}\n"
    "  - {name: e0, fc: 4, address: 0, type: uint16, description: e}\n"
)


async def test_a_reserved_register_splits_the_block_and_the_plan_is_kept(
    devices: list[HostileModbus],
    drivers: list[ModbusDriver],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    holding = {0: 10, 1: 11, 3: 13, 4: 14, 6: 0, 7: 16}
    dev, port = await hostile(devices, holding=holding, inputs={0: 5}, reserved={2, 5})
    d = driver(drivers, tmp_path, port, profile=RESERVED)
    caplog.set_level(logging.INFO)
    expected = {"p0": 10, "p1": 11, "p3": 13, "p4": 14, "p6": 16, "e0": 5}

    first = await d.read()
    assert first.data == expected
    assert first.missing == {}
    assert first.quality == "good"

    dev.seen.clear()
    for _ in range(3):
        assert (await d.read()).data == expected
    # the working plan is remembered: no refused request is sent again
    assert all(not {2, 5} & set(range(s.start, s.start + s.count)) for s in dev.seen)
    assert len(dev.seen) == 3 * 5  # 0+2, 3+1, 4+1, 6+2 and the input register
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]
    assert "exception 2 illegal data address" in refused[0].getMessage()


async def test_a_refused_point_leaves_the_others_published_and_the_device_degraded(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    dev, port = await hostile(
        devices, holding={0: 10, 1: 11, 3: 13, 4: 14, 6: 0, 7: 16}, inputs={0: 5}, reserved={4}
    )
    d = driver(drivers, tmp_path, port, profile=RESERVED)
    out = States()
    loop = poll_loop(d, out)
    assert await loop.poll_once() is None

    assert out.telemetry == [({"p0": 10, "p1": 11, "p3": 13, "p6": 16, "e0": 5}, "good")]
    state = out.states[-1]
    assert state["state"] == "degraded"
    assert state["last_error"] == (
        "not read: p4 (read holding registers 4+1: exception 2 illegal data address)"
    )

    # the device serves the register again (firmware update): back online, same plan
    dev.reserved.clear()
    await loop.poll_once()
    assert out.telemetry[-1][0]["p4"] == 14
    assert out.states[-1]["state"] == "online"


async def test_a_block_that_times_out_does_not_discard_the_others(
    devices: list[HostileModbus], drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    dev, port = await hostile(devices, holding={0: 111, 100: 222})
    dev.on_request = lambda seen: "silent" if seen.start == 100 else None
    d = driver(drivers, tmp_path, port)
    out = States()
    await poll_loop(d, out).poll_once()
    assert out.telemetry == [({"a": 111}, "good")]
    assert out.states[-1]["state"] == "degraded"
    assert out.states[-1]["last_error"].startswith("not read: b (read holding registers 100+1")


# -- the SD card ------------------------------------------------------------------------


async def test_a_hostile_device_costs_a_bounded_number_of_log_lines(
    devices: list[HostileModbus],
    drivers: list[ModbusDriver],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many polls of a device that misbehaves in every way, within one minute: a few
    lines, no traceback; one more minute adds one summary line."""
    behaviours: list[Any] = [
        "tid0",
        "ok",
        "ok",
        "wrong_unit",
        "garbage",
        "ok",
        "ok",
        "wrong_fc",
        "close_mid_frame",
        "wrong_byte_count",
        "ok",
        "ok",
    ]
    dev, port = await hostile(devices, holding={0: 111, 100: 222})
    d = driver(drivers, tmp_path, port)
    now = [0.0]
    out = States()
    loop = poll_loop(d, out, clock=lambda: now[0])
    caplog.set_level(logging.INFO)  # every logger: pymodbus, asyncio, ours

    for _ in range(10):
        dev.script = behaviours * 2  # each poll sends two requests
        for _ in range(len(behaviours)):
            await loop.poll_once()
    records = list(caplog.records)
    assert len(out.telemetry) > 10  # the device did answer, in between
    assert any(s["state"] == "degraded" for s in out.states)
    assert not [r for r in records if r.exc_info or r.exc_text], "no tracebacks"
    # first failure, first recovery, first partial reading, perhaps first "offline"
    assert len(records) <= 4, [r.getMessage() for r in records]

    now[0] += SUMMARY_S
    dev.script = ["garbage"]
    await loop.poll_once()
    new = [r.getMessage() for r in caplog.records[len(records) :]]
    summaries = [m for m in new if "polls failed" in m and "in the last 60 s" in m]
    assert len(summaries) == 1, new
    assert len(new) <= 3, new
