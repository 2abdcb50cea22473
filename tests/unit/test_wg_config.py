"""The WG kind's config pieces and its hub's routing, without I/O (the driver itself is
tested end to end in tests/integration/test_wg_driver.py)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from edge_agent.config.loader import load_config
from edge_agent.driver import DriverContext, HubContext
from edge_agent.drivers.wg import wire
from edge_agent.drivers.wg.config import Context, WgDevice, WgSettings, parse_listener
from edge_agent.drivers.wg.driver import WgDriver
from edge_agent.drivers.wg.events import CONTEXTS
from edge_agent.drivers.wg.hub import WgHub
from edge_agent.tools.doctor import check_devices

SERIAL = 423187757


def test_reader_contexts_are_the_event_layers() -> None:
    assert typing.get_args(Context) == CONTEXTS


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("192.168.10.2", ("192.168.10.2", None)),
        ("192.168.10.2:60001", ("192.168.10.2", 60001)),
        (" 10.0.0.1:0 ", ("10.0.0.1", None)),
    ],
)
def test_listener_is_an_ipv4_address_with_an_optional_port(
    text: str, parsed: tuple[str, int | None]
) -> None:
    assert parse_listener(text) == parsed


@pytest.mark.parametrize("text", ["gateway.local", "0.0.0.0", "[::1]:60000", "224.0.0.1", "1.2.3"])
def test_a_listener_a_controller_cannot_push_to_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"IPv4|LAN address|not a host|brackets"):
        parse_listener(text)


def test_hub_routes_by_the_serial_in_the_frame() -> None:
    hub = WgHub(HubContext("wg", WgSettings(), []))
    frame = wire.get_status(SERIAL).frame
    assert hub.key_of(frame, ("127.0.0.1", 60000)) == SERIAL
    v662 = bytes([wire.SOM_V6_62]) + frame[1:]
    assert hub.key_of(v662, ("127.0.0.1", 60000)) == SERIAL
    for garbage in (
        b"",
        b"\x17\x20\x00\x00",
        b"GET / HTTP/1.1\r\n",
        bytes(64),
        frame[:1] + bytes(7),
    ):
        assert hub.key_of(garbage, ("127.0.0.1", 60000)) is None
    assert (hub.host, hub.port) == ("0.0.0.0", 60000)  # the port every controller uses


async def test_the_constructor_does_no_io_and_checks_the_door_of_a_command() -> None:
    config = WgDevice.model_validate(
        {"id": "gate-1", "kind": "wg", "serial": SERIAL, "host": "192.168.10.150", "doors": 2}
    )
    driver = WgDriver(config, DriverContext({}))  # check-config builds it without a hub
    assert driver.meta()["serial"] == SERIAL
    assert [m.name for m in driver.metrics()] == ["clock_offset_s"]
    for door in (0, 3, "2a", "-1"):  # refused before anything is sent
        with pytest.raises(ValueError, match="has doors 1-2"):
            await driver.open_door(door)


async def test_doctor_skips_a_controller_it_cannot_reach_without_the_agent(tmp_path: Path) -> None:
    # doctor reads each polled device once; a WG controller answers only through the
    # kind's hub, which runs in the agent: doctor says so instead of failing on read()
    path = tmp_path / "agent.yaml"
    path.write_text(
        "site: {id: s, gateway_id: gw1}\n"
        "devices:\n  - {id: gate-1, kind: wg, serial: 423187757, host: 192.0.2.10}\n"
    )
    rows = await check_devices(load_config(path), path)
    assert [(r.check, r.status) for r in rows] == [("device gate-1", "skip")]
    assert "push device" in rows[0].detail


@pytest.mark.parametrize(
    ("controls", "message"),
    [
        ([{"door": 3}], "door_control: door 3, the controller has 2"),
        ([{"door": 1}, {"door": 1, "delay_s": 5}], "door_control: door 1 twice"),
    ],
)
def test_door_control_names_doors_the_controller_has_once(
    controls: list[dict[str, int]], message: str
) -> None:
    device = {"id": "g", "kind": "wg", "serial": 1, "host": "192.0.2.1", "doors": 2}
    with pytest.raises(ValueError, match=message):
        WgDevice.model_validate(device | {"door_control": controls})
