"""``edge-agent doctor -c agent.yaml``: is this gateway ready to run this config?

One pass over everything an installer can get wrong outside the YAML file, printed as
one table (like ``telegraf --test``): the broker (reachable, TLS, credentials, with the
reason when not), the TLS files, the serial ports (present and openable), the clock
(synchronised), the outbox (writable) and every device (answers one read). Nothing is
written to the broker or the outbox. Exit status 1 when any row failed.

The broker check speaks a bare MQTT 3.1.1 CONNECT (every broker the agent supports
accepts it) with a client id of its own, so a running agent is not disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from edge_agent import registry
from edge_agent.clock import SystemClock
from edge_agent.config.loader import AgentConfigBase, kind_settings
from edge_agent.config.models import SerialBus, TcpBus
from edge_agent.driver import Bus, Checkable, DriverContext, PushDriver
from edge_agent.errors import DeviceError, DeviceTimeout, DeviceUnavailable
from edge_agent.mqtt.tls import TlsFileError, TlsSettings, check_readable, client_context

Status = Literal["ok", "fail", "warn", "skip"]

HEADER = ("CHECK / 检查", "TARGET / 对象", "RESULT / 结果", "DETAIL / 说明")
STATUS_TEXT: dict[Status, str] = {
    "ok": "ok",
    "fail": "FAIL / 失败",
    "warn": "warn / 注意",
    "skip": "skip / 跳过",
}

#: seconds for the broker's TCP/TLS connect and its CONNACK
BROKER_TIMEOUT_S = 5.0
#: most metrics shown in a device's row
SHOWN_METRICS = 4

UNRESOLVED = "<unresolved>"  # what load_config(notes=...) puts in place of a missing secret


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    check: str
    target: str
    status: Status
    detail: str


# -- broker --------------------------------------------------------------------------------
_CONNACK_REASONS = {
    1: "the broker refused MQTT 3.1.1 / 代理不接受 MQTT 3.1.1",
    2: "client id rejected / 客户端 ID 被拒绝",
    3: "broker unavailable / 代理暂不可用",
    4: "bad user name or password / 用户名或密码错误",
    5: "not authorised (check the broker's ACL for this user) / 未授权",
}


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s, optional credentials."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + (10).to_bytes(2, "big") + _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _utf8(password)
    return b"\x10" + _remaining_length(len(body)) + body


def tls_context(cfg: AgentConfigBase) -> ssl.SSLContext | None:
    """The TLS context the agent would use (the publisher's own builder), or None for plain
    TCP. Raises :class:`~edge_agent.mqtt.tls.TlsFileError` naming the file that cannot be used."""
    tls = cfg.mqtt.tls
    if tls is None:
        return None
    password = tls.key_password if tls.key_password != UNRESOLVED else None
    settings = TlsSettings(tls.ca_file, tls.cert_file, tls.key_file, password, tls.insecure)
    return client_context(settings, check_key=tls.key_password != UNRESOLVED)


async def check_broker(cfg: AgentConfigBase, timeout_s: float = BROKER_TIMEOUT_S) -> Row:
    """Connect, (TLS), MQTT CONNECT with the configured credentials, read the CONNACK."""
    m = cfg.mqtt
    port = m.port or (8883 if m.tls else 1883)
    target = f"{m.host}:{port}" + (" (TLS)" if m.tls else "")

    def fail(why: str) -> Row:
        return Row("broker", target, "fail", why)

    try:
        ctx = tls_context(cfg)
    except TlsFileError as err:
        return fail(f"TLS files cannot be loaded: {err} / TLS 文件无法加载")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(m.host, port, ssl=ctx), timeout_s
        )
    except TimeoutError:
        return fail(
            f"no answer within {timeout_s:g} s (firewall, wrong address?) / "
            "连接超时（防火墙或地址错误？）"
        )
    except ssl.SSLCertVerificationError as err:
        return fail(f"TLS: broker certificate not trusted: {err.verify_message} / 证书校验失败")
    except ssl.SSLError as err:
        return fail(f"TLS handshake failed: {err.reason or err} / TLS 握手失败")
    except ConnectionRefusedError:
        return fail(
            f"connection refused: nothing listens on port {port} / 连接被拒绝：该端口无服务"
        )
    except socket.gaierror as err:
        return fail(f"unknown host {m.host!r}: {err.strerror} / 无法解析主机名")
    except OSError as err:
        return fail(f"cannot connect: {err.strerror or err} / 无法连接")
    unresolved = m.password == UNRESOLVED
    password = None if unresolved else m.password
    try:
        writer.write(connect_packet(f"edge-doctor-{os.getpid()}", m.username, password))
        await writer.drain()
        connack = await asyncio.wait_for(reader.readexactly(4), timeout_s)
        if connack[0] == 0x20 and connack[3] == 0:
            writer.write(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
            with contextlib.suppress(OSError):
                await writer.drain()
    except TimeoutError:
        return fail(f"connected, but no MQTT answer within {timeout_s:g} s (not MQTT?) / 无应答")
    except (asyncio.IncompleteReadError, OSError):
        return fail(
            "the broker closed the connection before answering (not an MQTT port? TLS "
            "expected?) / 代理未应答即断开"
        )
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if connack[0] != 0x20:
        return fail("the answer is not an MQTT CONNACK (not an MQTT port?) / 不是 MQTT 代理")
    code = connack[3]
    if code != 0:
        why = _CONNACK_REASONS.get(code, f"CONNACK code {code}")
        if unresolved:
            why += (
                "; the password is a credential that is not available to this command: "
                "set CREDENTIALS_DIRECTORY / 密码凭据在此不可用"
            )
        return fail(why)
    who = f" as {m.username!r}" if m.username else ""
    return Row("broker", target, "ok", f"MQTT connection accepted{who} / 连接成功")


# -- files, ports, clock, outbox ---------------------------------------------------------
def check_tls_files(cfg: AgentConfigBase) -> list[Row]:
    """Each TLS file the config names: present, readable by this user, and loadable. The
    config loader checked them too, but doctor runs as the service user, maybe later."""
    tls = cfg.mqtt.tls
    if tls is None:
        return []
    rows: list[Row] = []
    for key in ("ca_file", "cert_file", "key_file"):
        name = getattr(tls, key)
        if name is None:
            continue
        try:
            check_readable(key, name)
        except TlsFileError as err:
            rows.append(Row(f"tls {key}", name, "fail", str(err)))
        else:
            rows.append(Row(f"tls {key}", name, "ok", "readable / 可读取"))
    if rows and all(r.status == "ok" for r in rows):
        try:
            tls_context(cfg)
        except TlsFileError as err:
            rows.append(Row("tls", "certificates", "fail", f"cannot be loaded: {err} / 无法加载"))
    return rows


def check_serial_port(port: str) -> tuple[Status, str]:
    """A serial device is present and this user may open it."""
    if not Path(port).exists():
        return (
            "fail",
            "not found: is the USB adapter plugged in? see ls /dev/serial/by-id / "
            "找不到串口：USB 转换器是否已插好？",
        )
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        return (
            "fail",
            "permission denied: add the user to group 'dialout' / 无权限：请将用户加入 dialout 组",
        )
    except OSError as err:
        return "fail", f"cannot open: {err.strerror or err} / 无法打开"
    os.close(fd)
    return "ok", "present, opens / 串口可用"


def check_serial_ports(cfg: AgentConfigBase) -> list[Row]:
    rows = []
    for bus in cfg.buses:
        if isinstance(bus, SerialBus):
            status, detail = check_serial_port(bus.port)
            rows.append(Row(f"serial {bus.id}", bus.port, status, detail))
    return rows


def check_clock(cfg: AgentConfigBase) -> Row:
    c = cfg.clock
    target = f"sync_check: {c.sync_check}"
    if c.sync_check == "none":
        return Row("clock", target, "skip", "not checked (RTC/GPS trusted) / 未检查")
    if SystemClock(c.sync_check, c.sync_file).synced():
        return Row("clock", target, "ok", "synchronised / 时钟已同步")
    where = {
        "adjtimex": "the kernel reports it unsynchronised (timedatectl; chrony/timesyncd)",
        "timesyncd": "systemd-timesyncd has not synchronised (timedatectl timesync-status)",
        "file": f"{c.sync_file} does not exist",
    }[c.sync_check]
    return Row(
        "clock",
        target,
        "fail",
        f"not synchronised: {where}; readings are held up to {c.hold_max_s:g} s / 时钟未同步",
    )


def outbox_path(cfg: AgentConfigBase, config_path: Path) -> Path:
    """The outbox file as the agent resolves it (relative to the config file)."""
    p = Path(cfg.outbox.path)
    return p if p.is_absolute() else config_path.parent / p


def check_outbox(cfg: AgentConfigBase, config_path: Path) -> Row:
    """The outbox folder is writable (SQLite needs it for its journal), the file too."""
    path = outbox_path(cfg, config_path)
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Row("outbox", str(path), "fail", f"{existing} is not a folder / 不是目录")
    try:
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{existing} is not writable")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as err:
        return Row(
            "outbox",
            str(path),
            "fail",
            f"not writable: {err.strerror or err} (systemd: StateDirectory) / 无法写入",
        )
    free = f"{shutil.disk_usage(existing).free / 1e9:.1f} GB free"
    if path.exists():
        return Row("outbox", str(path), "ok", f"writable, {free} / 可写入")
    return Row("outbox", str(path), "ok", f"writable, will be created, {free} / 可写入，将自动创建")


# -- devices -------------------------------------------------------------------------------
def _format_value(value: Any, unit: str) -> str:
    # Exactly as published (the driver already gives the shortest decimal of the device's
    # float): an installer compares a meter's counter with its display digit by digit.
    return f"{value} {unit}".rstrip()


async def check_devices(cfg: AgentConfigBase, config_path: Path) -> list[Row]:
    """Every enabled device answers one read (devices on one bus take turns, as in the agent)."""
    buses: dict[str, Bus] = {}
    for b in cfg.buses:
        if isinstance(b, SerialBus | TcpBus):
            buses[b.id] = Bus(b.id, b.min_gap_ms / 1000)
            buses[b.id].resources["config"] = b
    ctx = DriverContext(buses=buses, config_dir=config_path.parent)
    kinds = registry.drivers({dev.kind for dev in getattr(cfg, "devices", [])})
    settings = {kind: kind_settings(cls, cfg) for kind, cls in kinds.items()}

    async def one(dev: Any) -> Row:
        target = getattr(dev, "bus_id", dev.kind)
        if unit := getattr(dev, "unit", None):
            target += f" unit {unit}"
        if not dev.enabled:
            return Row(f"device {dev.id}", target, "skip", "enabled: false / 已停用")
        driver: Any = kinds[dev.kind](dev, replace(ctx, settings=settings[dev.kind]))
        if isinstance(driver, PushDriver) and isinstance(driver, Checkable):
            try:
                seen = await asyncio.wait_for(driver.check(), 60)
            except DeviceError as err:
                return Row(f"device {dev.id}", target, "fail", err.reason)
            except TimeoutError:
                return Row(f"device {dev.id}", target, "fail", "no answer within 60 s / 超时")
            return Row(f"device {dev.id}", target, "ok", seen)
        if isinstance(driver, PushDriver):
            # It sends when it has something: nothing to ask it here. `run` reports its
            # state (ROOT/devices/{id}/state) as soon as it talks to the agent.
            return Row(
                f"device {dev.id}",
                target,
                "skip",
                "push device: sends on its own, `edge-agent run` reports its state "
                "/ 推送型设备：由运行中的代理上报状态",
            )
        units = {m.name: m.unit for m in driver.metrics()}
        # the driver applies timeout_s per request; this only bounds a driver that hangs
        limit = getattr(dev, "timeout_s", 5.0) * 10 + 5
        try:
            reading = await asyncio.wait_for(driver.read(), limit)
        except DeviceError as err:
            zh = (
                "无法连接"
                if isinstance(err, DeviceUnavailable)
                else "设备无应答"
                if isinstance(err, DeviceTimeout)
                else "应答异常"
            )
            return Row(f"device {dev.id}", target, "fail", f"{err.reason} / {zh}")
        except TimeoutError:
            return Row(f"device {dev.id}", target, "fail", f"no answer within {limit:g} s / 超时")
        finally:
            await driver.close()
        shown = ", ".join(
            f"{k}={_format_value(v, units.get(k, ''))}"
            for k, v in list(reading.data.items())[:SHOWN_METRICS]
        )
        more = len(reading.data) - SHOWN_METRICS
        detail = shown + (f", +{more} more" if more > 0 else "")
        if reading.quality != "good":
            out = ", ".join(reading.out_of_range)
            detail = f"quality {reading.quality}" + (f" ({out})" if out else "") + f": {detail}"
            status: Status = "fail" if reading.quality == "bad" else "warn"
            return Row(f"device {dev.id}", target, status, detail)
        return Row(f"device {dev.id}", target, "ok", detail)

    devices = list(getattr(cfg, "devices", []))
    return list(await asyncio.gather(*(one(d) for d in devices)))


# -- the whole run -------------------------------------------------------------------------
async def check_cameras(cfg: AgentConfigBase) -> list[Row]:
    """Fetch one picture from every ``snapshots.cameras`` entry (kept nowhere): a wrong
    password shows now, not at the first alarm that asks for a picture."""
    from edge_agent.driver import SnapshotSource
    from edge_agent.errors import SnapshotError
    from edge_agent.snapshots.fetch import fetch_jpeg

    snaps = cfg.snapshots

    async def one(cam: Any) -> Row:
        if cam.password == UNRESOLVED:
            return Row("camera", cam.id, "skip", "password not available here / 密码不可用")
        src = SnapshotSource(cam.url, cam.username, cam.password, cam.auth, cam.tls_verify)
        try:
            data = await fetch_jpeg(
                cam.id, src, timeout_s=snaps.timeout_s, max_bytes=snaps.image_max_bytes
            )
        except SnapshotError as err:
            return Row("camera", cam.id, "fail", err.reason)
        return Row("camera", cam.id, "ok", f"JPEG of {len(data)} bytes / 抓图正常")

    return list(await asyncio.gather(*(one(c) for c in snaps.cameras)))


async def run_checks(cfg: AgentConfigBase, config_path: Path) -> list[Row]:
    """Every check, in the order of the table."""
    broker = asyncio.create_task(check_broker(cfg))
    devices = asyncio.create_task(check_devices(cfg, config_path))
    cameras = asyncio.create_task(check_cameras(cfg))
    rows = [await broker, *check_tls_files(cfg), *check_serial_ports(cfg)]
    rows += [check_clock(cfg), check_outbox(cfg, config_path)]
    rows += await devices
    rows += await cameras
    return rows


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def format_table(rows: Sequence[Row]) -> str:
    """The table ``edge-agent doctor`` prints, columns aligned (Chinese counts double)."""
    cells = [HEADER] + [(r.check, r.target, STATUS_TEXT[r.status], r.detail) for r in rows]
    widths = [max(_width(c[i]) for c in cells) for i in range(3)]
    lines = []
    for c in cells:
        padded = [c[i] + " " * (widths[i] - _width(c[i])) for i in range(3)]
        lines.append("  ".join([*padded, c[3]]).rstrip())
    failed = sum(r.status == "fail" for r in rows)
    lines.append("")
    lines.append(
        f"{failed} of {len(rows)} checks failed / {failed} 项检查失败"
        if failed
        else f"all {len(rows)} checks passed / 全部 {len(rows)} 项检查通过"
    )
    return "\n".join(lines)


def exit_code(rows: Sequence[Row]) -> int:
    """1 when any check failed, else 0 (warnings do not fail)."""
    return 1 if any(r.status == "fail" for r in rows) else 0
