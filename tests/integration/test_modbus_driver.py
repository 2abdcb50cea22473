"""The Modbus driver against a real pymodbus server on 127.0.0.1 (ephemeral ports).

Register contents are written by hand from the datasheets' encodings (IEEE-754
float32 words, scaled integers), never produced with our codec, so a codec bug
shows up here as a wrong value. Task and thread leaks are caught by tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.config.models import SerialBus, TcpBus
from edge_agent.driver import Bus, DriverContext, PollingDriver
from edge_agent.drivers.modbus import ModbusDevice, ModbusDriver, ModbusSettings
from edge_agent.drivers.modbus.driver import LINE_KEY
from edge_agent.drivers.modbus.profile import clear_profile_cache
from edge_agent.errors import DeviceProtocolError, DeviceTimeout, DeviceUnavailable

pytestmark = pytest.mark.integration

SHIPPED = str(Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "profiles")


@pytest.fixture(autouse=True)
def _fresh_profiles() -> None:
    """Profiles are cached per (name, dirs); tests write their own into tmp_path."""
    clear_profile_cache()


def regs(address: int, values: list[int]) -> SimData:
    return SimData(address, values=values, datatype=DataType.REGISTERS)


def bits(values: list[bool]) -> SimData:
    return SimData(0, values=values + [False] * (16 - len(values)), datatype=DataType.BITS)


Action = Callable[[int, int, int, int, list[int], Any], Awaitable[None]]


def sim(
    unit: int,
    *,
    holding: list[SimData] | None = None,
    inputs: list[SimData] | None = None,
    coils: list[bool] | None = None,
    discrete: list[bool] | None = None,
    action: Action | None = None,
) -> SimDevice:
    """A device with separate coil / discrete / holding / input tables."""
    return SimDevice(
        unit,
        simdata=(
            [bits(coils or [False])],
            [bits(discrete or [False])],
            holding or [regs(0, [0])],
            inputs or [regs(0, [0])],
        ),
        action=action,
    )


class Server:
    """A pymodbus TCP server on an ephemeral port; counts the connections since its start."""

    def __init__(self) -> None:
        self.server: ModbusTcpServer | None = None
        self.port = 0
        self.connections = 0

    def _on_connect(self, connected: bool) -> None:
        self.connections += connected

    async def start(self, devices: list[SimDevice], framer: FramerType, port: int = 0) -> int:
        self.connections = 0
        self.server = ModbusTcpServer(
            devices,
            address=("127.0.0.1", port),
            framer=framer,
            trace_connect=self._on_connect,
        )
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    yield s
    await s.stop()


@pytest.fixture
async def drivers() -> AsyncIterator[list[ModbusDriver]]:
    """Drivers made by a test; all closed at the end even when the test fails."""
    made: list[ModbusDriver] = []
    yield made
    for d in made:
        await d.close()


def ctx(buses: dict[str, Bus] | None = None, dirs: list[str] | None = None) -> DriverContext:
    return DriverContext(
        buses={} if buses is None else buses, settings=ModbusSettings(profile_dirs=dirs or [])
    )


def make(made: list[ModbusDriver], context: DriverContext, **cfg: Any) -> ModbusDriver:
    config = ModbusDevice.model_validate({"kind": "modbus", "timeout_s": 0.5, **cfg})
    driver = ModbusDriver(config, context)
    made.append(driver)
    return driver


def tcp_bus(bus_id: str, port: int, framer: str = "rtu") -> Bus:
    bus = Bus(bus_id)
    bus.resources["config"] = TcpBus(
        id=bus_id, type="tcp", host="127.0.0.1", port=port, framer=framer
    )  # type: ignore[arg-type]
    return bus


async def read_holding(
    port: int, address: int, count: int, unit: int, framer: FramerType
) -> list[int]:
    """Read registers with a plain pymodbus client, independent of the driver."""
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=port, framer=framer, timeout=2, retries=0, reconnect_delay=0
    )
    try:
        assert await client.connect()
        rr = await client.read_holding_registers(address, count=count, device_id=unit)
        assert not rr.isError(), rr
        return list(rr.registers)
    finally:
        client.close()


# SDM630 input registers, words as the meter sends them (float32, ABCD):
SDM630_LOW = [0] * 0x4A
SDM630_LOW[0x00:0x02] = [0x4366, 0x199A]  # voltage_l1 230.1 V
SDM630_LOW[0x02:0x04] = [0x4365, 0x8000]  # voltage_l2 229.5 V
SDM630_LOW[0x04:0x06] = [0x4367, 0x0000]  # voltage_l3 231.0 V
SDM630_LOW[0x06:0x08] = [0x40A0, 0x0000]  # current_l1 5.0 A
SDM630_LOW[0x08:0x0A] = [0x4128, 0x0000]  # current_l2 10.5 A
SDM630_LOW[0x0A:0x0C] = [0x0000, 0x0000]  # current_l3 0.0 A
SDM630_LOW[0x34:0x36] = [0x450F, 0xC000]  # power_total 2300.0 W
SDM630_LOW[0x3E:0x40] = [0x3F73, 0x3333]  # power_factor 0.95
SDM630_LOW[0x46:0x48] = [0x4248, 0x0000]  # frequency 50.0 Hz
SDM630_LOW[0x48:0x4A] = [0x4640, 0xE600]  # energy_import 12345.5 kWh


async def test_sdm630_over_modbus_tcp(server: Server, drivers: list[ModbusDriver]) -> None:
    port = await server.start(
        [sim(1, inputs=[regs(0, SDM630_LOW), regs(0x156, [0x7FC0, 0x0000])])],  # total: NaN
        FramerType.SOCKET,
    )
    context = ctx()
    meter = make(drivers, context, id="gym-meter", profile="sdm630", host="127.0.0.1", port=port)
    assert isinstance(meter, PollingDriver)
    assert f"tcp:127.0.0.1:{port}" in context.buses  # made the implicit bus itself

    reading = await meter.read()

    assert reading.data == {
        "voltage_l1": 230.1,
        "voltage_l2": 229.5,
        "voltage_l3": 231.0,
        "current_l1": 5.0,
        "current_l2": 10.5,
        "current_l3": 0.0,
        "power_total": 2300.0,
        "power_factor": 0.95,
        "frequency": 50.0,
        "energy_import": 12345.5,
        "energy_total": None,
    }
    # one NaN among good values: the reading is uncertain, not bad
    assert reading.quality == "uncertain"
    assert reading.out_of_range == []
    assert meter.meta()["model"] == "sdm630"
    assert meter.meta()["protocol"] == "modbus"
    assert meter.metrics()[0].name == "voltage_l1"
    assert meter.metrics()[0].unit == "V"


async def test_all_values_nan_is_bad(
    server: Server, drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    (tmp_path / "two.yaml").write_text(
        "model: two\nvendor: t\npoints:\n"
        "  - {name: a, fc: 4, address: 0, type: float32, description: a}\n"
        "  - {name: b, fc: 4, address: 2, type: float32, description: b}\n",
    )
    port = await server.start([sim(1, inputs=[regs(0, [0x7FC0, 0, 0x7F80, 0])])], FramerType.SOCKET)
    dev = make(
        drivers, ctx(dirs=[str(tmp_path)]), id="d", profile="two", host="127.0.0.1", port=port
    )
    reading = await dev.read()
    assert reading.data == {"a": None, "b": None}
    assert reading.quality == "bad"


AIR = [
    0x01A4,  # humidity 42.0 %RH
    0xFF06,  # temperature -25.0 °C: below the profile's -20 -> uncertain
    0x032C,  # co2 812 ppm
    0x0023,  # pm25 35
    0x0032,  # pm10 50
    0x0078,  # tvoc 0.120 mg/m3
    0x0014,  # hcho 0.020 mg/m3
]


async def test_rtu_over_tcp_range_and_writes(server: Server, drivers: list[ModbusDriver]) -> None:
    port = await server.start(
        [sim(7, holding=[regs(0, AIR), regs(2000, [7])])],
        FramerType.RTU,
    )
    bus = tcp_bus("serial-server", port, framer="rtu")
    air = make(
        drivers,
        ctx({"serial-server": bus}),
        id="b1-r101-air",
        profile="air7in1",
        bus="serial-server",
        unit=7,
    )

    reading = await air.read()
    assert reading.data == {
        "humidity": 42.0,
        "temperature": -25.0,
        "co2": 812,
        "pm25": 35,
        "pm10": 50,
        "tvoc": 0.12,
        "hcho": 0.02,
    }
    assert reading.quality == "uncertain"
    assert reading.out_of_range == ["temperature"]
    # RTU frames: unit, fc 3, start 0, count 7, CRC — no MBAP header
    assert any(f.split()[2:8] == ["07", "03", "00", "00", "00", "07"] for f in air.last_frames())

    await air.write("modbus_address", 12)
    assert await read_holding(port, 2000, 1, 7, FramerType.RTU) == [12]

    with pytest.raises(ValueError, match="read-only"):
        await air.write("co2", 400)
    with pytest.raises(ValueError, match=r"outside the valid range \[1, 247\]"):
        await air.write("modbus_address", 300)
    with pytest.raises(ValueError, match=r"no point 'nope'.*writable: modbus_address"):
        await air.write("nope", 1)
    assert await read_holding(port, 2000, 1, 7, FramerType.RTU) == [12]
    assert air.meta()["settings"][0]["name"] == "modbus_address"


async def test_bits_int32_and_coil_writes(
    server: Server,
    drivers: list[ModbusDriver],
    tmp_path: Path,
) -> None:
    (tmp_path / "io.yaml").write_text(
        "model: io\nvendor: t\npoints:\n"
        "  - {name: relay, fc: 1, address: 1, type: bit, description: r, writable: true}\n"
        "  - {name: door_open, fc: 2, address: 2, type: bit, description: d}\n"
        "  - {name: alarm, fc: 3, address: 0, type: bit, bit: 2, description: a}\n"
        "  - {name: fault, fc: 3, address: 0, type: bit, bit: 3, description: f}\n"
        "  - {name: counter, fc: 3, address: 4, type: int32, word_order: little, description: c}\n"
        "  - {name: setpoint, fc: 3, address: 8, type: float32, description: s, writable: true,\n"
        "     range: [0, 50], report: false}\n",
    )
    port = await server.start(
        [
            sim(
                1,
                holding=[regs(0, [0x0004, 0, 0, 0, 0x1DC0, 0xFFFE, 0, 0, 0, 0])],
                coils=[False, False],
                discrete=[False, False, True],
            )
        ],
        FramerType.SOCKET,
    )
    dev = make(
        drivers, ctx(dirs=[str(tmp_path)]), id="io", profile="io", host="127.0.0.1", port=port
    )
    assert (await dev.read()).data == {
        "relay": False,
        "door_open": True,
        "alarm": True,
        "fault": False,
        "counter": -123456,
    }
    await dev.write("relay", True)
    await dev.write("setpoint", 21.5)  # float32 21.5 = 0x41AC0000
    assert (await dev.read()).data["relay"] is True
    assert await read_holding(port, 8, 2, 1, FramerType.SOCKET) == [0x41AC, 0x0000]


async def test_exception_response_is_protocol_error(
    server: Server,
    drivers: list[ModbusDriver],
    tmp_path: Path,
) -> None:
    (tmp_path / "far.yaml").write_text(
        "model: far\nvendor: t\npoints:\n"
        "  - {name: x, fc: 3, address: 100, type: uint16, description: x}\n",
    )
    port = await server.start([sim(1, holding=[regs(0, [1, 2, 3])])], FramerType.SOCKET)
    dev = make(
        drivers,
        ctx(dirs=[str(tmp_path)]),
        id="far",
        profile="far",
        host="127.0.0.1",
        port=port,
        retries=2,
    )
    with pytest.raises(DeviceProtocolError, match="exception 2 illegal data address") as err:
        await dev.read()
    assert err.value.device_id == "far"
    frames = dev.last_frames()
    # request and answer are kept, and exception answers are not retried
    assert [f.split()[1] for f in frames] == [">>", "<<"]
    assert frames[1].split()[-2:] == ["83", "02"]


async def test_closed_port_is_unavailable(drivers: list[ModbusDriver]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dev = make(drivers, ctx(), id="gone", profile="sdm630", host="127.0.0.1", port=port)
    with pytest.raises(DeviceUnavailable, match=f"cannot connect to 127.0.0.1:{port}"):
        await dev.read()


async def test_silent_server_is_timeout_after_retries(drivers: list[ModbusDriver]) -> None:
    received = bytearray()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            received.extend(data)
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        dev = make(
            drivers,
            ctx(),
            id="mute",
            profile="air7in1",
            host="127.0.0.1",
            port=port,
            timeout_s=0.2,
            retries=1,
        )
        with pytest.raises(DeviceTimeout, match=r"no answer from unit 1 within 0\.2 s"):
            await dev.read()
        await dev.close()
        for _ in range(50):
            if len(received) >= 24:
                break
            await asyncio.sleep(0.01)
        # two Modbus TCP requests of 12 bytes: the first try and one retry
        assert len(received) == 24
        assert received[7] == 0x03
    finally:
        silent.close()
        await silent.wait_closed()


async def test_two_devices_share_one_line_and_take_turns(
    server: Server,
    drivers: list[ModbusDriver],
) -> None:
    bus = Bus("line-1")  # settings added once the server has its port
    held: list[bool] = []

    async def check_bus_held(*_: object) -> None:
        # runs in the server while it answers: the driver must hold the bus lock meanwhile
        held.append(bus.lock.locked())
        await asyncio.sleep(0.01)

    port = await server.start(
        [
            sim(1, holding=[regs(0, AIR)], action=check_bus_held),
            sim(2, holding=[regs(0, [0x0190, 0, 0x0000, 0x01F4])], action=check_bus_held),
        ],
        FramerType.RTU,
    )
    bus.resources["config"] = TcpBus(
        id="line-1", type="tcp", host="127.0.0.1", port=port, framer="rtu"
    )
    context = ctx({"line-1": bus})
    air = make(drivers, context, id="air", profile="air7in1", bus="line-1", unit=1)
    lux = make(drivers, context, id="lux", profile="lux_noise", bus="line-1", unit=2)

    for _ in range(3):
        a, b = await asyncio.gather(air.read(), lux.read())
        assert a.data["co2"] == 812
        assert b.data == {"noise": 40.0, "illuminance": 500}

    assert held == [True] * 6
    assert server.connections == 1  # one shared connection for the line
    await air.close()
    assert (await lux.read()).data["illuminance"] == 500  # still open for the other device
    await lux.close()
    assert LINE_KEY not in bus.resources
    with pytest.raises(DeviceUnavailable, match="closed"):
        await lux.read()


async def test_reconnects_after_the_server_restarts(
    server: Server, drivers: list[ModbusDriver]
) -> None:
    device = [sim(1, holding=[regs(0, AIR)])]
    port = await server.start(device, FramerType.SOCKET)
    air = make(drivers, ctx(), id="air", profile="air7in1", host="127.0.0.1", port=port, retries=0)
    assert (await air.read()).data["co2"] == 812

    await server.stop()
    with pytest.raises((DeviceUnavailable, DeviceTimeout)):
        await air.read()

    await server.start(device, FramerType.SOCKET, port=port)
    assert (await air.read()).data["co2"] == 812
    assert server.connections == 1  # the restarted server saw a fresh connection


def test_config_rules() -> None:
    base = {"id": "m", "kind": "modbus", "profile": "sdm630"}
    with pytest.raises(ValueError, match="exactly one of 'bus' or 'host'"):
        ModbusDevice.model_validate(base)
    with pytest.raises(ValueError, match="exactly one of 'bus' or 'host'"):
        ModbusDevice.model_validate({**base, "bus": "b", "host": "h"})
    with pytest.raises(ValueError, match="belong to the bus"):
        ModbusDevice.model_validate({**base, "bus": "b", "port": 503})
    with pytest.raises(ValueError, match="must be less than interval_s"):
        ModbusDevice.model_validate({**base, "host": "h", "interval_s": 2, "timeout_s": 1})
    # a Modbus TCP device reached directly may use any unit id, 255 included
    assert ModbusDevice.model_validate({**base, "host": "h", "unit": 255}).unit == 255
    assert ModbusDevice.model_validate({**base, "host": "h", "unit": 0}).unit == 0
    with pytest.raises(ValueError, match="0-255 only for a Modbus TCP device"):
        ModbusDevice.model_validate({**base, "host": "h", "unit": 256})
    # RTU (a bus, or RTU frames over TCP): 1-247; 0 is broadcast, nobody answers a read
    for unit in (0, 248, 255):
        with pytest.raises(ValueError, match="answer on 1-247"):
            ModbusDevice.model_validate({**base, "bus": "b", "unit": unit})
        with pytest.raises(ValueError, match="answer on 1-247"):
            ModbusDevice.model_validate({**base, "host": "h", "framer": "rtu", "unit": unit})
    dev = ModbusDevice.model_validate({**base, "host": "h"})
    assert (dev.bus_id, dev.unit, dev.max_registers, dev.max_gap) == ("tcp:h:502", 1, 125, 16)


def test_driver_construction_errors_are_value_errors() -> None:
    def build(**cfg: Any) -> ModbusDriver:
        config = ModbusDevice.model_validate({"id": "m", "kind": "modbus", "host": "h", **cfg})
        return ModbusDriver(config, ctx())

    with pytest.raises(ValueError, match="profile 'nope' not found"):
        build(profile="nope")
    with pytest.raises(ValueError, match="scale_overrides: currnt_l1 not in profile 'adl400'"):
        build(profile="adl400", scale_overrides={"currnt_l1": 0.4})
    with pytest.raises(ValueError, match="needs 2 registers but max_registers is 1"):
        build(profile="sdm630", max_registers=1)
    # sdm630's default interval is 60 s
    with pytest.raises(ValueError, match="poll interval 60 s"):
        build(profile="sdm630", timeout_s=30, retries=1)


async def test_scale_override_scales_value_and_range(
    server: Server,
    drivers: list[ModbusDriver],
) -> None:
    adl = [0] * 0x78
    adl[0x64] = 250  # current_l1 2.50 A on the meter = 100.0 A through a 200/5 CT
    port = await server.start([sim(1, holding=[regs(0, adl)])], FramerType.SOCKET)
    meter = make(
        drivers,
        ctx(),
        id="ct",
        profile="adl400",
        host="127.0.0.1",
        port=port,
        scale_overrides={"current_l1": 0.4},
    )
    reading = await meter.read()
    assert reading.data["current_l1"] == 100.0
    assert reading.data["current_l2"] == 0.0
    assert next(m for m in meter.metrics() if m.name == "current_l1").range == (0, 4000)
    # frequency 0 Hz is outside 45..65, voltages 0 V are inside 0..300
    assert reading.out_of_range == ["frequency"]


def crc16_modbus(frame: bytes) -> bytes:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), low byte first on the wire."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def test_crc_matches_the_modbus_spec_example() -> None:
    # "read 7 holding registers from 0 of unit 1" as printed in sensor manuals:
    # 01 03 00 00 00 07 04 08
    assert crc16_modbus(bytes.fromhex("010300000007")) == bytes.fromhex("0408")


@pytest.mark.skipif(sys.platform != "linux", reason="needs a pseudo-terminal")
async def test_serial_rtu_line_through_a_pty(drivers: list[ModbusDriver]) -> None:
    """A hand-written RTU responder on the master side of a pty stands in for the RS-485 line."""
    import tty

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    holding = dict(enumerate(AIR))
    requests: list[bytes] = []
    pending = bytearray()

    def answer() -> None:
        pending.extend(os.read(master, 256))
        while len(pending) >= 8:  # fc 3 requests are 8 bytes
            frame, pending[:] = bytes(pending[:8]), pending[8:]
            requests.append(frame)
            unit, fc = frame[0], frame[1]
            start, count = int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big")
            assert frame[6:] == crc16_modbus(frame[:6])
            assert (unit, fc) == (1, 3)
            body = bytes([unit, fc, 2 * count]) + b"".join(
                holding[a].to_bytes(2, "big") for a in range(start, start + count)
            )
            os.write(master, body + crc16_modbus(body))

    loop = asyncio.get_running_loop()
    loop.add_reader(master, answer)
    try:
        bus = Bus("rs485-b1", 0.02)
        bus.resources["config"] = SerialBus(id="rs485-b1", type="serial", port=os.ttyname(slave))
        air = make(drivers, ctx({"rs485-b1": bus}), id="air", profile="air7in1", bus="rs485-b1")
        reading = await air.read()
        assert reading.data["co2"] == 812
        assert reading.data["humidity"] == 42.0
        assert requests == [bytes.fromhex("01 03 00 00 00 07 04 08")]
        await air.close()
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_missing_serial_port_is_unavailable(
    drivers: list[ModbusDriver], tmp_path: Path
) -> None:
    bus = Bus("rs485-x")
    missing = str(tmp_path / "ttyUSB9")
    bus.resources["config"] = SerialBus(id="rs485-x", type="serial", port=missing)
    air = make(drivers, ctx({"rs485-x": bus}), id="air", profile="air7in1", bus="rs485-x")
    with pytest.raises(DeviceUnavailable, match="ttyUSB9"):
        await air.read()


async def test_undefined_bus_fails_at_read_not_at_build(drivers: list[ModbusDriver]) -> None:
    # check-config builds drivers without buses; the bus reference is checked by the core
    air = make(drivers, ctx(), id="air", profile="air7in1", bus="nowhere")
    with pytest.raises(DeviceUnavailable, match="bus 'nowhere' is not defined"):
        await air.read()


async def test_short_answer_is_protocol_error(drivers: list[ModbusDriver]) -> None:
    """A device that answers with fewer registers than asked (seen on cheap gateways)."""

    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await reader.read(1024):
            tid, unit = request[0:2], request[6]
            pdu = bytes([0x03, 0x02, 0x03, 0x2C])  # one register (812) instead of seven
            writer.write(
                tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu
            )
        writer.close()

    fake = await asyncio.start_server(short, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    try:
        air = make(drivers, ctx(), id="air", profile="air7in1", host="127.0.0.1", port=port)
        with pytest.raises(DeviceProtocolError, match="answer has byte count 2, expected 14"):
            await air.read()
        await air.close()
    finally:
        fake.close()
        await fake.wait_closed()
