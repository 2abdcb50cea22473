"""The checks of ``edge-agent doctor`` one by one, on real sockets, files and a pty."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edge_agent.config.loader import AgentConfigBase, load_config
from edge_agent.tools.doctor import (
    Row,
    check_broker,
    check_clock,
    check_devices,
    check_outbox,
    check_serial_port,
    check_tls_files,
    connect_packet,
    exit_code,
    format_table,
)
from tests.tls_helpers import make_ca

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def config(tmp_path: Path, body: str) -> AgentConfigBase:
    path = tmp_path / "agent.yaml"
    path.write_text("site: {id: s, gateway_id: g}\n" + body, encoding="utf-8")
    return load_config(path)


async def _server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
async def refusing_broker() -> AsyncIterator[int]:
    """Answers every CONNECT with CONNACK 5 (not authorised), as a broker with an ACL does."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x20\x02\x00\x05")
        await writer.drain()
        writer.close()

    async for port in _server(handler):
        yield port


@pytest.fixture
async def silent_closer() -> AsyncIterator[int]:
    """Closes every connection at once (an HTTP server, or a TLS port spoken to in plain)."""

    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async for port in _server(handler):
        yield port


async def test_broker_refusal_reason_is_named(tmp_path: Path, refusing_broker: int) -> None:
    cfg = config(tmp_path, f"mqtt: {{host: 127.0.0.1, port: {refusing_broker}, username: u}}\n")
    row = await check_broker(cfg)
    assert row.status == "fail"
    assert "not authorised" in row.detail
    assert "未授权" in row.detail


async def test_broker_that_hangs_up_is_named(tmp_path: Path, silent_closer: int) -> None:
    cfg = config(tmp_path, f"mqtt: {{host: 127.0.0.1, port: {silent_closer}}}\n")
    row = await check_broker(cfg)
    assert row.status == "fail"
    assert "closed the connection" in row.detail


def test_connect_packet_with_long_credentials() -> None:
    # more than 127 bytes: the remaining length takes two bytes
    packet = connect_packet("c", "user", "p" * 200)
    assert packet[0] == 0x10
    assert packet[1] & 0x80
    length = (packet[1] & 0x7F) + (packet[2] << 7)
    assert length == len(packet) - 3


def test_tls_files_missing(tmp_path: Path) -> None:
    # The loader refuses a missing file; doctor still sees one removed after loading.
    (tmp_path / "ca.pem").write_bytes(make_ca(tmp_path / "ca").ca_file.read_bytes())
    cfg = config(tmp_path, f"mqtt: {{tls: {{ca_file: {tmp_path}/ca.pem}}}}\n")
    (tmp_path / "ca.pem").unlink()
    rows = check_tls_files(cfg)
    assert [(r.check, r.status) for r in rows] == [("tls ca_file", "fail")]
    assert "not found" in rows[0].detail


def test_tls_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(make_ca(tmp_path / "ca").ca_file.read_bytes())
    cfg = config(tmp_path, f"mqtt: {{tls: {{ca_file: {tmp_path}/ca.pem}}}}\n")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    rows = check_tls_files(cfg)
    assert rows[-1].status == "fail"
    assert "cannot be loaded" in rows[-1].detail


def test_serial_port_present_and_missing(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a real tty, as a USB RS-485 adapter is
    try:
        assert check_serial_port(os.ttyname(slave))[0] == "ok"
    finally:
        os.close(master)
        os.close(slave)
    status, detail = check_serial_port(str(tmp_path / "ttyUSB0"))
    assert status == "fail"
    assert "not found" in detail


def test_clock_with_a_sync_file(tmp_path: Path) -> None:
    flag = tmp_path / "synced"
    cfg = config(tmp_path, f"clock: {{sync_check: file, sync_file: {flag}}}\n")
    row = check_clock(cfg)
    assert row.status == "fail"
    assert str(flag) in row.detail
    flag.touch()
    assert check_clock(cfg).status == "ok"


def test_outbox_under_a_file_is_not_writable(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where a folder should be")
    cfg = config(tmp_path, f"outbox: {{path: {tmp_path}/state/sub/outbox.db}}\n")
    row = check_outbox(cfg, tmp_path / "agent.yaml")
    assert row.status == "fail"
    cfg = config(tmp_path, "outbox: {path: data/outbox.db}\n")  # relative to the config file
    row = check_outbox(cfg, tmp_path / "agent.yaml")
    assert row.status == "ok"
    assert row.target == str(tmp_path / "data" / "outbox.db")


def test_table_and_exit_code() -> None:
    rows = [
        Row("broker", "127.0.0.1:1883", "ok", "MQTT connection accepted"),
        Row("device 教室", "rs485-1 unit 3", "fail", "no answer / 设备无应答"),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["CHECK", "/", "检查", "TARGET", "/", "对象", "RESULT", "/", "结果",
                                "DETAIL", "/", "说明"]  # fmt: skip
    # columns line up even with Chinese text (two columns wide each)
    assert lines[1].index(" ok ") == lines[2].index(" FAIL ") + 2  # 教室: 2 chars, 4 columns
    assert lines[-1] == "1 of 2 checks failed / 1 项检查失败"
    assert exit_code(rows) == 1
    assert exit_code(rows[:1]) == 0


def test_device_values_are_shown_as_published() -> None:
    from edge_agent.tools.doctor import _format_value

    # a large energy counter keeps every digit (not 1.235e+07 kWh)
    assert _format_value(12345678.0, "kWh") == "12345678.0 kWh"
    assert _format_value(230.1, "V") == "230.1 V"
    assert _format_value(3, "") == "3"


async def test_a_push_device_is_skipped_with_the_reason_not_read(tmp_path: Path) -> None:
    """A push device has no read(): doctor says why it does not ask it, and goes on."""
    from edge_agent import registry
    from tests.push_fixture_driver import install

    saved = dict(registry.BUILTIN), registry._cache
    install()
    try:
        cfg = config(tmp_path, "devices:\n  - {id: door-a, kind: pushfixture, port: 9}\n")
        rows = await check_devices(cfg, tmp_path / "agent.yaml")
    finally:
        registry.BUILTIN.clear()
        registry.BUILTIN.update(saved[0])
        registry._cache = saved[1]
    assert [(r.status, r.detail.split(":")[0]) for r in rows] == [("skip", "push device")]


async def test_snapshot_cameras_are_tried_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.tools.doctor import check_cameras
    from tests.camera_http import CameraHttp

    async with CameraHttp("digest") as good, CameraHttp("digest", password="other") as bad:
        monkeypatch.setenv("CAM_PW", "cam-pass")
        cfg = config(
            tmp_path,
            "snapshots:\n  cameras:\n"
            f"    - {{id: gate-cam, url: '{good.url}', username: admin, password: '${{CAM_PW}}'}}\n"
            f"    - {{id: hall-cam, url: '{bad.url}', username: admin, password: '${{CAM_PW}}'}}\n",
        )
        rows = await check_cameras(cfg)
    assert [(r.target, r.status) for r in rows] == [("gate-cam", "ok"), ("hall-cam", "fail")]
    assert "login refused" in rows[1].detail
    assert len(good.served) == 1
