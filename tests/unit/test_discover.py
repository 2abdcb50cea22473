"""``edge-agent discover`` against cameras on 127.0.0.1 (tests/onvif_discovery.py): the
WS-Discovery Probe by unicast only (never multicast), the ONVIF probe with a
WS-UsernameToken digest and a skewed camera clock, the printed stanzas; and the parsers
on the real ONVIF captures of ../shared/fixtures/onvif/."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.models import ID_PATTERN
from edge_agent.drivers.onvif.config import OnvifDevice
from edge_agent.tools.discover import (
    discover,
    fault_of,
    parse_capabilities,
    parse_datetime,
    parse_probe_matches,
    parse_target,
    probe_message,
    render,
    ws_discover,
)
from tests.captures import onvif_kind_params
from tests.onvif_discovery import FakeCamera

REPO = Path(__file__).resolve().parents[2]


async def test_two_cameras_answer_and_each_gets_a_stanza() -> None:
    async with (
        FakeCamera(model="DS-2CD2143G0-I", skew_s=180) as hik,
        FakeCamera(manufacturer="Dahua", model="IPC-HFW2431S", stray=True) as dahua,
    ):
        cams = await discover(
            [("127.0.0.1", hik.wsd_port), ("127.0.0.1", dahua.wsd_port)],
            multicast=False,
            timeout_s=5,
            username="admin",
            password="cam-pass",
        )
        text = render(cams, "admin")
    doc = yaml.safe_load(text)
    devices = {d["name"]: d for d in doc["devices"]}
    assert set(devices) == {"HIKVISION DS-2CD2143G0-I", "Dahua IPC-HFW2431S"}
    pairs = ((devices["HIKVISION DS-2CD2143G0-I"], hik), (devices["Dahua IPC-HFW2431S"], dahua))
    for cam, fake in pairs:
        assert cam["kind"] == "onvif"
        assert (cam["host"], cam["port"]) == ("127.0.0.1", fake.http_port)
        assert cam["user"] == "admin"
        assert cam["password"] == "${cred:" + cam["id"] + "}"
        # what discover prints is a device the onvif kind accepts as it is
        OnvifDevice.model_validate(cam)
        assert re.fullmatch(ID_PATTERN, cam["id"])
        # the device service that answered was asked, not the other interface it listed
        assert fake.soap_actions == [
            "GetSystemDateAndTime",
            "GetDeviceInformation",
            "GetCapabilities",
        ]
        assert fake.refused == 0  # the skewed camera accepted a token made on its clock
    assert "V5.6.3 build 190923" in text
    # the camera tells whole seconds: 179 or 180
    assert re.search(r"its clock is \+1(79|80) s off the gateway's", text), text
    assert f"Media http://127.0.0.1:{hik.http_port}/onvif/Media" in text
    assert "NOTE" not in text


async def test_without_a_login_the_stanza_says_what_is_missing() -> None:
    async with FakeCamera() as cam:
        cams = await discover(
            [("127.0.0.1", cam.wsd_port)],
            multicast=False,
            timeout_s=5,
            username=None,
            password=None,
        )
    text = render(cams, None)
    assert "NOTE: GetDeviceInformation: ter:NotAuthorized: Sender not authorized" in text
    assert "(give --username and --password-env)" in text
    device = yaml.safe_load(text)["devices"][0]
    assert device["name"] == "HIKVISION DS-2CD2143G0-I"  # from its discovery scopes


async def test_a_wrong_password_is_said_not_hidden() -> None:
    async with FakeCamera() as cam:
        cams = await discover(
            [("127.0.0.1", cam.wsd_port)],
            multicast=False,
            timeout_s=5,
            username="admin",
            password="wrong",
        )
    assert cam.refused == 2
    assert [p.split(":")[0] for p in cams[0].problems] == [
        "GetDeviceInformation",
        "GetCapabilities",
    ]


async def test_only_answers_to_our_probe_are_taken() -> None:
    async with FakeCamera(stray=True) as cam:
        matches = await ws_discover([("127.0.0.1", cam.wsd_port)], multicast=False, timeout_s=5)
    assert [m.address for m in matches] == [cam.endpoint]
    (probe,) = cam.probes
    root = ET.fromstring(probe)  # our own Probe
    assert root.tag == "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    assert b"dn:NetworkVideoTransmitter" in probe


def test_an_answer_to_another_probe_is_ignored() -> None:
    ours = "urn:uuid:1"
    text = probe_message(ours)  # a Probe holds no ProbeMatch
    assert parse_probe_matches(text, ours) == []
    with pytest.raises(ValueError, match="DTD"):
        parse_probe_matches(b"<!DOCTYPE x><x/>", ours)
    with pytest.raises(ValueError, match="not XML"):
        parse_probe_matches(b"\x00\xff", ours)


def test_targets() -> None:
    assert parse_target("10.0.3.21") == ("10.0.3.21", 3702)
    assert parse_target("127.0.0.1:4000") == ("127.0.0.1", 4000)
    assert parse_target("[::1]:4000") == ("::1", 4000)


async def test_the_command_line_prints_yaml_and_exits_0() -> None:
    async with FakeCamera() as cam:
        env = {**os.environ, "CAM_PW": "cam-pass"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_agent", "discover", "--no-multicast",
            "--host", cam.target, "--username", "admin", "--password-env", "CAM_PW",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    (device,) = yaml.safe_load(out)["devices"]
    assert device["name"] == "HIKVISION DS-2CD2143G0-I"
    assert b"cam-pass" not in out + err


async def test_nobody_answering_exits_1_and_says_what_to_check() -> None:
    async with FakeCamera() as cam:
        port = cam.wsd_port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", "discover", "--no-multicast",
        "--host", f"127.0.0.1:{port}", "--timeout", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert yaml.safe_load(out) == {"devices": []}
    assert "is ONVIF enabled" in err.decode()


async def test_no_multicast_without_a_host_is_a_usage_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", "discover", "--no-multicast",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "--no-multicast needs --host" in err.decode()


# -- the parsers on real cameras' answers ------------------------------------------------
def _root(data: bytes) -> ET.Element:
    return ET.fromstring(data)  # a fixture file


@pytest.mark.parametrize("capture", onvif_kind_params("getcapabilities"))
def test_capabilities_of_real_cameras(capture: tuple[dict[str, Any], bytes]) -> None:
    case, data = capture
    services = parse_capabilities(_root(data))
    assert services, case["file"]
    assert set(services.values()) <= set(case["expected"]["xaddrs"])
    assert services["Device"] in case["expected"]["xaddrs"]


@pytest.mark.parametrize("capture", onvif_kind_params("getsystemdateandtime"))
def test_clocks_of_real_cameras(capture: tuple[dict[str, Any], bytes]) -> None:
    case, data = capture
    when = parse_datetime(_root(data))
    want = dt.datetime.strptime(
        case["expected"]["SystemDateAndTime"]["UTCDateTime"], "%Y-%m-%d %H:%M:%S"
    )
    assert when == want.replace(tzinfo=dt.UTC)


@pytest.mark.parametrize("capture", onvif_kind_params("fault"))
def test_faults_of_real_cameras(capture: tuple[dict[str, Any], bytes]) -> None:
    case, data = capture
    fault = case["expected"]["fault"]
    said = fault_of(_root(data))
    assert said is not None
    code = (fault["subcodes"] or [fault["code"]])[-1]
    assert said.startswith(code)
    if fault["reason"]:
        assert said == f"{code}: {fault['reason']}"
