"""The simulated campus on real sockets, read with the real pymodbus client.

Thread and task leaks are checked for every test by ``tests/conftest.py``; the campus
fixtures also check that closing the campus leaves no task of its own behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from edge_agent.simulators import CampusSim, parse_schedule
from tests.sim_helpers import LESSON, assert_no_leaked_tasks, where

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def sim() -> AsyncIterator[CampusSim]:
    async with CampusSim(classrooms=3, meters=2, speed=0, seed=11, start=LESSON) as campus:
        yield campus
    await assert_no_leaked_tasks()


async def client_for(
    campus: CampusSim, device_id: str, *, timeout: float = 2.0, rtu: bool = False
) -> tuple[AsyncModbusTcpClient, int]:
    host, port, unit = where(campus, device_id)
    client = AsyncModbusTcpClient(
        host,
        port=port,
        timeout=timeout,
        retries=0,
        framer=FramerType.RTU if rtu else FramerType.SOCKET,
    )
    assert await client.connect()
    return client, unit


def f32(words: list[int]) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", *words))[0])


async def test_fc3_classroom_values_decode_to_the_truth(sim: CampusSim) -> None:
    client, unit = await client_for(sim, "b1-r102-air")
    try:
        rr = await client.read_holding_registers(0, count=7, device_id=unit)
        assert not rr.isError()
        regs = rr.registers
        truth = sim.truth("b1-r102-air")
        assert regs[0] / 10 == pytest.approx(truth["humidity"])
        temperature = struct.unpack(">h", struct.pack(">H", regs[1]))[0] / 10
        assert temperature == pytest.approx(truth["temperature"])
        assert regs[2] == truth["co2"]
        assert regs[2] > 800  # a lesson is on
        assert regs[3] == truth["pm25"]
        assert regs[4] == truth["pm10"]
        assert regs[5] / 1000 == pytest.approx(truth["tvoc"])
        assert regs[6] / 1000 == pytest.approx(truth["hcho"])
        rr = await client.read_holding_registers(2000, count=1, device_id=unit)
        assert rr.registers == [unit]

        lux, lux_unit = await client_for(sim, "b1-r102-lux")
        try:
            rr = await lux.read_holding_registers(0, count=4, device_id=lux_unit)
            truth = sim.truth("b1-r102-lux")
            assert rr.registers[0] / 10 == pytest.approx(truth["noise"])
            assert (rr.registers[2] << 16 | rr.registers[3]) == truth["illuminance"]
            assert truth["illuminance"] > 300  # lights on in the lesson
        finally:
            lux.close()
    finally:
        client.close()


async def test_fc4_and_fc3_are_separate_spaces_on_meters(sim: CampusSim) -> None:
    client, unit = await client_for(sim, "meter-1")  # SDM630
    try:
        truth = sim.truth("meter-1")
        rr = await client.read_input_registers(0, count=12, device_id=unit)
        assert not rr.isError()
        assert f32(rr.registers[0:2]) == truth["voltage_l1"]
        assert 220 < truth["voltage_l1"] < 240
        assert f32(rr.registers[6:8]) == truth["current_l1"]
        rr = await client.read_input_registers(0x0156, count=2, device_id=unit)
        assert f32(rr.registers) == truth["energy_total"]
        # The SDM630 has no holding register 0; the air sensor no input register 0.
        rr = await client.read_holding_registers(0, count=2, device_id=unit)
        assert rr.isError()
        assert rr.exception_code == 2
        air, air_unit = await client_for(sim, "b1-r101-air")
        try:
            rr = await air.read_input_registers(0, count=1, device_id=air_unit)
            assert rr.isError()
            assert rr.exception_code == 2
            rr = await air.read_holding_registers(7, count=1, device_id=air_unit)
            assert rr.isError()
            assert rr.exception_code == 2
        finally:
            air.close()
    finally:
        client.close()

    client, unit = await client_for(sim, "meter-2")  # ADL400: scaled integers
    try:
        truth = sim.truth("meter-2")
        rr = await client.read_holding_registers(0, count=2, device_id=unit)
        assert (rr.registers[0] << 16 | rr.registers[1]) / 100 == pytest.approx(
            truth["energy_total"]
        )
        rr = await client.read_holding_registers(
            0x61, count=0x17, device_id=unit
        )  # one read, gaps 0
        assert not rr.isError()
        assert rr.registers[0] / 10 == pytest.approx(truth["voltage_l1"])
        assert rr.registers[0x6A - 0x61] / 1000 == pytest.approx(truth["power_total"])
        assert rr.registers[0x77 - 0x61] / 100 == pytest.approx(truth["frequency"])
    finally:
        client.close()


async def test_exception_fault_gives_an_exception_response(sim: CampusSim) -> None:
    client, unit = await client_for(sim, "b1-r101-air")
    try:
        sim.set_fault("b1-r101-air", "exception", code=6)
        rr = await client.read_holding_registers(0, count=7, device_id=unit)
        assert rr.isError()
        assert rr.exception_code == 6
        sim.clear_fault("b1-r101-air")
        rr = await client.read_holding_registers(0, count=7, device_id=unit)
        assert not rr.isError()
        # A unit that is not on the line: a TCP gateway answers 0x0B.
        rr = await client.read_holding_registers(0, count=1, device_id=99)
        assert rr.isError()
        assert rr.exception_code == 0x0B
    finally:
        client.close()


async def test_no_answer_times_out_and_other_units_still_answer(sim: CampusSim) -> None:
    client, unit = await client_for(sim, "b1-r101-air", timeout=0.5)
    try:
        assert not (await client.read_holding_registers(0, count=7, device_id=unit)).isError()
        sim.set_fault("b1-r101-air", "no_answer")
        with pytest.raises(ModbusException):
            await client.read_holding_registers(0, count=7, device_id=unit)
        neighbour = where(sim, "b1-r101-lux")[2]
        rr = await client.read_holding_registers(0, count=1, device_id=neighbour)
        assert not rr.isError()
    finally:
        client.close()


async def test_garbled_reply_is_detected(sim: CampusSim) -> None:
    client, unit = await client_for(sim, "b1-r101-air", timeout=0.5)
    try:
        assert not (await client.read_holding_registers(0, count=7, device_id=unit)).isError()
        sim.set_fault("b1-r101-air", "garbled")
        with pytest.raises(ModbusException):
            await client.read_holding_registers(0, count=7, device_id=unit)
    finally:
        client.close()


async def test_slow_reply_arrives_late(sim: CampusSim) -> None:
    sim.set_fault("meter-1", "slow", delay_s=3.0)
    impatient, unit = await client_for(sim, "meter-1", timeout=0.3)
    try:
        with pytest.raises(ModbusException):
            await impatient.read_input_registers(0, count=2, device_id=unit)
    finally:
        impatient.close()
    sim.set_fault("meter-1", "slow", delay_s=0.2)
    patient, unit = await client_for(sim, "meter-1", timeout=10)
    try:
        rr = await patient.read_input_registers(0, count=2, device_id=unit)
        assert f32(rr.registers) == sim.truth("meter-1")["voltage_l1"]
    finally:
        patient.close()
    # The first request is still sleeping on the server: closing the campus must end it.


async def test_out_of_range_on_the_wire(sim: CampusSim) -> None:
    sim.set_fault("b1-r101-air", "out_of_range", metric="co2")
    client, unit = await client_for(sim, "b1-r101-air")
    try:
        rr = await client.read_holding_registers(2, count=1, device_id=unit)
        assert rr.registers[0] > 5000
        assert rr.registers[0] == sim.truth("b1-r101-air")["co2"]
    finally:
        client.close()


async def test_writable_point_accepts_range_checked_writes(sim: CampusSim) -> None:
    client, unit = await client_for(sim, "b1-r101-air")
    try:
        rr = await client.write_register(2000, 42, device_id=unit)
        assert not rr.isError()
        assert sim.truth("b1-r101-air")["modbus_address"] == 42
        rr = await client.write_register(2000, 300, device_id=unit)  # range 1..247
        assert rr.isError()
        assert rr.exception_code == 3
        rr = await client.write_register(2, 400, device_id=unit)  # CO2 is read-only
        assert rr.isError()
        assert rr.exception_code == 2
    finally:
        client.close()


async def test_scheduled_fault_is_active_from_the_start() -> None:
    schedule = [{"device": "b1-r101-lux", "fault": "exception", "code": 4, "from_s": 0}]
    async with CampusSim(
        classrooms=1, meters=0, speed=0, start=LESSON, faults=parse_schedule(schedule)
    ) as campus:
        client, unit = await client_for(campus, "b1-r101-lux")
        try:
            rr = await client.read_holding_registers(0, count=1, device_id=unit)
            assert rr.isError()
            assert rr.exception_code == 4
        finally:
            client.close()
    await assert_no_leaked_tasks()


async def test_rtu_framing_over_tcp(rtu_sim: CampusSim) -> None:
    client, unit = await client_for(rtu_sim, "meter-1", rtu=True, timeout=0.5)
    try:
        rr = await client.read_input_registers(0, count=2, device_id=unit)
        assert not rr.isError()
        assert f32(rr.registers) == rtu_sim.truth("meter-1")["voltage_l1"]
        # A unit that is not on the line stays silent, as on RS-485.
        with pytest.raises(ModbusException):
            await client.read_input_registers(0, count=2, device_id=77)
    finally:
        client.close()
    client, unit = await client_for(rtu_sim, "b1-r101-air", rtu=True, timeout=0.5)
    try:
        rr = await client.read_holding_registers(2, count=1, device_id=unit)
        assert rr.registers[0] == rtu_sim.truth("b1-r101-air")["co2"]
        rtu_sim.set_fault("b1-r101-air", "garbled")
        with pytest.raises(ModbusException):  # bad CRC: the client drops the frame
            await client.read_holding_registers(2, count=1, device_id=unit)
    finally:
        client.close()


async def test_speed_moves_the_simulated_clock() -> None:
    async with CampusSim(classrooms=1, meters=1, speed=3600.0, start=LESSON) as campus:
        client, unit = await client_for(campus, "meter-1")
        try:
            rr = await client.read_input_registers(0x0156, count=2, device_id=unit)
            first = f32(rr.registers)
            await asyncio.sleep(0.3)  # about 18 simulated minutes
            rr = await client.read_input_registers(0x0156, count=2, device_id=unit)
            assert f32(rr.registers) > first
        finally:
            client.close()
    await assert_no_leaked_tasks()


def test_cli_serves_writes_layout_and_stops_on_sigterm(tmp_path: Path) -> None:
    layout_file = tmp_path / "layout.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "edge_agent.simulators",
        "campus",
        "--classrooms",
        "2",
        "--meters",
        "1",
    ]
    cmd += ["--base-port", "0", "--seed", "5", "--layout-out", str(layout_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("campus ready"):
                break
        assert any("building-1 listening on 127.0.0.1:" in ln for ln in lines), lines
        layout = json.loads(layout_file.read_text("utf-8"))
        meter = next(d for d in layout["devices"] if d["id"] == "meter-1")
        client = ModbusTcpClient(meter["host"], port=meter["port"], timeout=2, retries=0)
        try:
            assert client.connect()
            rr = client.read_input_registers(0, count=2, device_id=meter["unit"])
            assert 220 < f32(rr.registers) < 240
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "campus stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_a_busy_port_is_reported_and_nothing_stays_open() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # Two buildings on port-1 and port: the second cannot bind, so the first closes again.
        campus = CampusSim(classrooms=16, meters=0, base_port=port - 1)
        with pytest.raises(OSError, match="cannot listen"):
            await campus.start()
    await assert_no_leaked_tasks()


# -- a Modbus TCP gateway in front of RS-485 sensors (bench part gateway90) -----------------


async def test_a_reserved_register_refuses_reads_that_span_it() -> None:
    async with CampusSim(
        classrooms=1, meters=0, speed=0, start=LESSON, reserved={"lux_noise": [1]}
    ) as campus:
        client, unit = await client_for(campus, "b1-r101-lux")
        try:
            # noise at 0, illuminance at 2-3: one read of both spans the reserved word 1
            rr = await client.read_holding_registers(0, count=4, device_id=unit)
            assert rr.isError()
            assert rr.exception_code == 2
            truth = campus.truth("b1-r101-lux")
            rr = await client.read_holding_registers(0, count=1, device_id=unit)
            assert rr.registers[0] / 10 == pytest.approx(truth["noise"])
            rr = await client.read_holding_registers(2, count=2, device_id=unit)
            assert rr.registers[0] << 16 | rr.registers[1] == truth["illuminance"]
            # the other model on the same server is not affected
            air, air_unit = await client_for(campus, "b1-r101-air")
            try:
                assert not (
                    await air.read_holding_registers(0, count=7, device_id=air_unit)
                ).isError()
            finally:
                air.close()
        finally:
            client.close()
    await assert_no_leaked_tasks()


def test_a_reserved_register_that_holds_a_point_is_refused() -> None:
    with pytest.raises(ValueError, match=r"reserved registers \[2\]"):
        CampusSim(classrooms=1, meters=0, reserved={"lux_noise": [2]})
    with pytest.raises(ValueError, match="unknown profile"):
        CampusSim(classrooms=1, meters=0, reserved={"no_such_model": [1]})


async def test_a_gateway_answers_one_request_at_a_time() -> None:
    async with CampusSim(
        classrooms=2, meters=0, speed=0, start=LESSON, request_delay_s=0.02
    ) as campus:
        ids = ["b1-r101-air", "b1-r101-lux", "b1-r102-air", "b1-r102-lux"]
        clients = [await client_for(campus, device_id) for device_id in ids]
        try:
            answers = await asyncio.gather(
                *(c.read_holding_registers(0, count=1, device_id=u) for c, u in clients)
            )
            assert not any(rr.isError() for rr in answers)
        finally:
            for c, _ in clients:
                c.close()
        gate = campus.device("b1-r101-air").gate
        assert gate is not None
        assert gate is campus.device("b1-r102-lux").gate  # one line per server
        assert gate.served == 4
        assert gate.max_busy == 1  # four connections, still one exchange at a time
    await assert_no_leaked_tasks()


async def test_a_gateway_answers_after_its_request_delay() -> None:
    async with CampusSim(
        classrooms=1, meters=0, speed=0, start=LESSON, request_delay_s=5
    ) as campus:
        client, unit = await client_for(campus, "b1-r101-air", timeout=0.3)
        try:
            with pytest.raises(ModbusException):
                await client.read_holding_registers(0, count=1, device_id=unit)
        finally:
            client.close()
        # the request still held in the gate ends when the campus closes
    await assert_no_leaked_tasks()
