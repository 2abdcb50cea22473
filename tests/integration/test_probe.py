"""``edge-agent probe`` against the simulated campus on real sockets.

Values are checked against the simulator's truth, decoded as
``tests/integration/test_simulators_wire.py`` does; the CLI runs as a child process
(``python -m edge_agent probe``) so its exit codes and output are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.drivers.modbus.driver import LineSettings
from edge_agent.drivers.modbus.probe import ExceptionResponse, ProbeRequest, format_table, probe
from edge_agent.errors import DeviceTimeout, DeviceUnavailable
from edge_agent.simulators import CampusSim
from tests.sim_helpers import LESSON, where

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def sim() -> AsyncIterator[CampusSim]:
    async with CampusSim(classrooms=2, meters=1, speed=0, seed=11, start=LESSON) as campus:
        yield campus


def request_for(
    campus: CampusSim, device_id: str, *, framer: str = "socket", **options: float
) -> ProbeRequest:
    host, port, unit = where(campus, device_id)
    line = LineSettings("tcp", host, port, "rtu" if framer == "rtu" else "socket")
    return ProbeRequest(line, unit=unit, **options)  # type: ignore[arg-type]


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``python -m edge_agent *args`` as a child; the simulator keeps serving meanwhile."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_probe_reads_the_classroom_air_sensor(sim: CampusSim) -> None:
    rows = await probe(request_for(sim, "b1-r102-air", fc=3, address=0, count=7))
    truth = sim.truth("b1-r102-air")
    assert [r.address for r in rows] == list(range(7))
    assert rows[0].uint16 / 10 == pytest.approx(truth["humidity"])
    assert rows[1].int16 / 10 == pytest.approx(truth["temperature"])
    assert rows[2].uint16 == truth["co2"]
    assert rows[2].uint16 > 800  # a lesson is on
    assert rows[2].hex == f"0x{int(truth['co2']):04X}"
    assert rows[6].pair == ()


async def test_probe_shows_the_meter_voltage_on_the_abcd_line(sim: CampusSim) -> None:
    rows = await probe(request_for(sim, "meter-1", fc=4, address=0, count=2))  # SDM630
    volts = sim.truth("meter-1")["voltage_l1"]
    assert 220 < volts < 240
    by_order = {p.order: p for p in rows[0].pair}
    assert by_order["ABCD"].float32 == float(f"{volts:.7g}")
    assert (by_order["ABCD"].byte_order, by_order["ABCD"].word_order) == ("big", "big")
    assert by_order["CDAB"].float32 != by_order["ABCD"].float32


async def test_probe_over_rtu_framing(rtu_sim: CampusSim) -> None:
    request = request_for(rtu_sim, "b1-r101-air", framer="rtu", address=2, count=1)
    rows = await probe(request)
    assert rows[0].uint16 == rtu_sim.truth("b1-r101-air")["co2"]


async def test_unserved_address_is_an_exception_response(sim: CampusSim) -> None:
    # the air sensor has holding registers 0-6 and 2000; 7 answers exception 2
    with pytest.raises(ExceptionResponse, match="exception 2 illegal data address") as info:
        await probe(request_for(sim, "b1-r101-air", address=7, count=1))
    assert info.value.code == 2
    # fc 4 on the air sensor: it has no input registers at all
    with pytest.raises(ExceptionResponse) as info:
        await probe(request_for(sim, "b1-r101-air", fc=4, address=0, count=1))
    assert info.value.code == 2


async def test_a_silent_device_is_a_timeout(sim: CampusSim) -> None:
    sim.set_fault("b1-r101-air", "no_answer")
    with pytest.raises(DeviceTimeout, match="no answer"):
        await probe(request_for(sim, "b1-r101-air", timeout_s=0.3))


async def test_a_closed_port_is_unavailable(sim: CampusSim) -> None:
    host, port, unit = where(sim, "b1-r101-air")
    await sim.close()
    with pytest.raises(DeviceUnavailable, match="cannot connect"):
        await probe(ProbeRequest(LineSettings("tcp", host, port), unit=unit))


async def test_cli_prints_the_table_and_json(sim: CampusSim) -> None:
    host, port, unit = where(sim, "b1-r101-air")
    co2 = int(sim.truth("b1-r101-air")["co2"])
    where_args = ["--host", host, "--port", str(port), "--unit", str(unit)]
    rc, out, err = await run_cli("probe", *where_args, "--address", "2", "--count", "2")
    assert (rc, err) == (0, "")
    assert out.splitlines()[0].startswith("holding registers (fc 3) 2-3 of")
    register = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["2"])
    assert register == ["2", f"0x{co2:04X}", str(co2), str(co2)]
    assert "32-bit values" in out  # the pair (2, 3)

    rc, out, err = await run_cli("probe", *where_args, "--count", "7", "--json")
    assert (rc, err) == (0, "")
    rows = json.loads(out)
    assert rows[2]["uint16"] == co2
    assert len(rows) == 7


async def test_cli_exception_response_exits_1_with_one_line(sim: CampusSim) -> None:
    host, port, unit = where(sim, "b1-r101-air")
    rc, out, err = await run_cli(
        "probe", "--host", host, "--port", str(port), "--unit", str(unit), "--address", "7"
    )
    assert rc == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "exception 2 illegal data address" in err
    assert "非法数据地址" in err


async def test_cli_timeout_exits_1_with_one_line(sim: CampusSim) -> None:
    host, port, unit = where(sim, "b1-r101-air")
    sim.set_fault("b1-r101-air", "no_answer")
    rc, out, err = await run_cli(
        "probe", "--host", host, "--port", str(port), "--unit", str(unit), "--timeout", "0.3"
    )
    assert rc == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "no answer within 0.3 s" in err
    assert "超时" in err


async def test_cli_connection_refused_exits_1_with_one_line(sim: CampusSim) -> None:
    host, port, _ = where(sim, "b1-r101-air")
    await sim.close()  # nothing listens on the port any more
    rc, out, err = await run_cli("probe", "--host", host, "--port", str(port))
    assert rc == 1
    assert out == ""
    # pymodbus' own "Failed to connect ..." warning becomes the reason, not a second line
    assert len(err.splitlines()) == 1, err
    assert f"{host}:{port} (Modbus TCP) unit 1: cannot connect: " in err
    assert "Failed to connect" not in err
    assert "无法连接设备" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--host", "127.0.0.1", "--count", "126"],  # more than one request can carry
        ["--host", "127.0.0.1", "--unit", "256"],
        ["--host", "127.0.0.1", "--framer", "rtu", "--unit", "0"],
        ["--serial", "/dev/ttyUSB0", "--port", "4196"],  # --port belongs to --host
        ["--host", "127.0.0.1", "--parity", "E"],  # a serial server's parity is its own
    ],
)
def test_cli_bad_option_combinations_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "edge-agent probe: error:" in captured.err


@pytest.mark.parametrize(
    "args",
    [
        ["--host", "127.0.0.1", "--fc", "5"],
        ["--host", "127.0.0.1", "--address", "40001x"],
        ["--host", "127.0.0.1", "--serial", "/dev/ttyUSB0"],
        ["--count", "3"],  # neither --host nor --serial
    ],
)
def test_cli_unparsable_option_exits_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["probe", *args])
    assert info.value.code == 2


async def test_cli_process_exit_code_for_a_bad_option() -> None:
    rc, out, err = await run_cli("probe", "--host", "127.0.0.1", "--count", "200")
    assert rc == 2
    assert out == ""
    assert "--count 200: must be 1-125" in err


async def test_grep_for_the_display_value_finds_address_and_orders(sim: CampusSim) -> None:
    rows = await probe(request_for(sim, "meter-1", fc=4, address=0, count=4))
    text = format_table(rows)
    volts = f"{sim.truth('meter-1')['voltage_l1']:.7g}"
    matching = [ln.split() for ln in text.splitlines() if ln.endswith(f" {volts}")]
    assert ["0", "ABCD", "big", "big"] in [cells[:4] for cells in matching]
