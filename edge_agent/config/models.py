"""Configuration models shared by the core and every driver (pydantic v2).

Every model forbids unknown keys (a typo must not pass silently) and every
field has a description, which ``docs/configuration.md`` and error messages use.
Units are in field names (``interval_s``, ``timeout_s``).
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from datetime import tzinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Ids that appear in MQTT topics: the contract allows ``[a-z0-9][a-z0-9_-]{0,63}``.
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(Strict):
    """Where a device hangs; published on its ``meta`` topic."""

    building: str = Field(description="Building name or code, e.g. 'B1' / 教学楼编号")
    floor: str | int | None = Field(default=None, description="Floor, e.g. 1 or 'B1'")
    room: str | None = Field(default=None, description="Room, e.g. '101' / 教室号")


class DeviceBase(Strict):
    """Fields every device has, whatever its kind."""

    id: Id = Field(description="Device id, used in MQTT topics, e.g. 'b1-r101-air'")
    kind: str = Field(description="Driver kind, e.g. 'modbus'")
    name: str | None = Field(default=None, description="Human-readable name / 名称")
    location: Location | None = Field(default=None, description="Building, floor and room")
    enabled: bool = Field(
        default=True, description="Set false to keep a device in the file but not poll it"
    )


class PollingDeviceBase(DeviceBase):
    """Fields of devices read by the shared poll loop."""

    interval_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="Seconds between reads; default: the profile's default_interval_s, else 30",
    )
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="Timeout of one request")
    retries: int = Field(
        default=1, ge=0, le=10, description="Retries of a failed request within one poll"
    )
    offline_after: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Consecutive failed polls after which the device is reported offline",
    )


class SerialBus(Strict):
    """An RS-485/RS-232 line on a local serial port (USB adapter or Pi UART)."""

    id: Id = Field(description="Bus id that devices refer to with 'bus:'")
    type: Literal["serial"] = Field(description="'serial'")
    port: str = Field(description="Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(default=9600, description="Baud rate")
    parity: Literal["N", "E", "O"] = Field(default="N", description="Parity: N, E or O")
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits")
    bytesize: Literal[7, 8] = Field(default=8, description="Data bits")
    min_gap_ms: float = Field(
        default=20,
        ge=0,
        le=5000,
        description="Quiet time between the end of one exchange and the next request",
    )


class TcpBus(Strict):
    """A TCP endpoint shared by several devices.

    A serial server (RTU frames over TCP) or a Modbus TCP gateway in front of an RS-485 line.
    """

    id: Id = Field(description="Bus id that devices refer to with 'bus:'")
    type: Literal["tcp"] = Field(description="'tcp'")
    host: str = Field(description="Host name or IP address")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port")
    framer: Literal["socket", "rtu"] = Field(
        default="socket",
        description="'socket' = Modbus TCP (MBAP header); "
        "'rtu' = RTU frames over TCP (serial servers)",
    )
    min_gap_ms: float = Field(default=0, ge=0, le=5000, description="Quiet time between exchanges")


BusConfig = Annotated[SerialBus | TcpBus, Field(discriminator="type")]


class TlsConfig(Strict):
    """TLS to the broker. Paths are on the gateway (relative ones from the config file's
    folder); the key passphrase is a secret. ``check-config`` reads every file named here."""

    ca_file: str | None = Field(
        default=None,
        description="CA bundle (PEM) that signed the broker certificate; default: the system CAs",
    )
    cert_file: str | None = Field(default=None, description="Client certificate (mutual TLS)")
    key_file: str | None = Field(
        default=None,
        description="Client private key (mutual TLS); default: the key is in cert_file",
    )
    key_password: str | None = Field(
        default=None,
        description="Key passphrase: only as ${ENV} or ${cred:NAME}, never literal",
    )
    insecure: bool = Field(default=False, description="Skip host-name verification (testing only)")

    @model_validator(mode="after")
    def check_key_has_cert(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        return self


class MqttConfig(Strict):
    """The uplink broker."""

    host: str = Field(
        default="localhost",
        description="Broker host name or IP address; an IPv6 literal with or without "
        "brackets ('[::1]' or '::1'); no scheme, no port",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Broker port; default 1883, 8883 with TLS"
    )
    protocol: Literal["5", "3.1.1"] = Field(
        default="5",
        description="MQTT protocol version: 5 (falls back to 3.1.1 by itself when the broker "
        "refuses MQTT 5) or '3.1.1' (only 3.1.1)",
    )
    client_id: str | None = Field(
        default=None, description="Client id; default 'edge-{site}-{gateway}'"
    )
    username: str | None = Field(default=None, description="User name")
    password: str | None = Field(
        default=None,
        description="Password: only as ${ENV} or ${cred:NAME}, never literal",
    )
    tls: TlsConfig | None = Field(
        default=None,
        description="TLS settings; 'tls: {}' (or an empty 'tls:') = TLS verified against the "
        "system CAs; omit for plain TCP",
    )
    allow_plaintext_credentials: bool = Field(
        default=False,
        description="Send username/password without TLS to a broker that is not on this "
        "gateway (localhost/127.0.0.1/::1 need no opt-in): anyone on the network can read them",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive")
    topic_prefix: Id = Field(default="campus", description="First topic level")
    inflight_max: int = Field(
        default=500,
        ge=1,
        le=65535,
        description="Messages sent whose outbox row is not yet deleted, at most: bounds the "
        "duplicates one outage or crash can cause; a larger window drains faster over a "
        "slow uplink",
    )
    reconnect_min_s: float = Field(default=1, gt=0, description="First reconnect delay")
    reconnect_max_s: float = Field(default=60, gt=0, description="Longest reconnect delay")
    health_interval_s: float = Field(
        default=60, gt=0, description="Seconds between ROOT/health messages"
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def check_protocol(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as a number and `protocol: 3.1.1` as a string.
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 5:
            return "5"
        if value in ("5", "3.1.1"):
            return value
        raise ValueError(
            f"MQTT protocol must be 5 or 3.1.1, not {value!r} / MQTT 协议版本只能是 5 或 3.1.1"
        )

    @field_validator("host")
    @classmethod
    def check_host(cls, value: str) -> str:
        host = value.strip()
        if host.startswith("[") and host.endswith("]"):
            inner = host[1:-1]
            try:
                ipaddress.IPv6Address(inner)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IPv6 address in brackets / 方括号内不是 IPv6 地址"
                ) from None
            return inner  # paho wants the address without brackets
        if not host:
            raise ValueError("the broker host is empty / 代理主机名为空")
        if "://" in host:
            raise ValueError(
                f"{value!r}: write the host name only, without a scheme (TLS: mqtt.tls, "
                "port: mqtt.port) / 只写主机名，不要写 mqtt:// 等前缀"
            )
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(
                    f"{value!r}: write the port as mqtt.port, not in the host "
                    "/ 端口请写在 mqtt.port 中，不要写在主机名里"
                ) from None
        elif any(c.isspace() or c in "/[]@" for c in host):
            raise ValueError(f"{value!r} is not a host name / 不是有效的主机名")
        return host

    @model_validator(mode="after")
    def check_reconnect_range(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


class OutboxConfig(Strict):
    """The local store-and-forward queue (SQLite, WAL)."""

    path: str = Field(
        default="/var/lib/edge-agent/outbox.db",
        description="Database file; under systemd it lives in StateDirectory",
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Size cap; past it the retention policy evicts oldest telemetry first",
    )
    commit_interval_ms: int = Field(
        default=500,
        ge=1,
        le=60000,
        description="Group commit: readings are written together at most this often (SD card wear)",
    )
    commit_max_batch: int = Field(
        default=2000, ge=1, description="Commit earlier when this many are waiting"
    )
    audit_max_rows: int = Field(
        default=10_000,
        ge=100,
        description="Alarm audit log (who acknowledged, shelved, took out of service what, "
        "when, from where): the newest this many entries are kept / 告警审计日志保留条数",
    )
    audit_max_days: float = Field(
        default=90,
        gt=0,
        description="Alarm audit entries older than this many days are deleted "
        "/ 告警审计日志保留天数",
    )


def site_tz(name: str) -> tzinfo:
    """The time zone of ``site.timezone``; ValueError names what is wrong."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: write an IANA name such as Asia/Shanghai "
            f"/ 未知时区，请写 IANA 名称，例如 Asia/Shanghai"
        ) from None


class SiteConfig(Strict):
    """The school and this gateway."""

    id: Id = Field(
        description="Site (school) id, second topic level, e.g. 'sz-nanshan-exp-primary'"
    )
    gateway_id: Id = Field(description="Gateway id, third topic level, e.g. 'gw1'")
    name: str | None = Field(default=None, description="School name / 学校名称")
    language: Literal["zh", "en"] = Field(default="zh", description="Language of alarm messages")
    pseudonym_secret: str | None = Field(
        default=None,
        description="Per-site HMAC secret for card numbers: only as ${ENV} or ${cred:NAME}",
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        description="IANA time zone of the school: door controllers and terminals report "
        "local time / 学校所在时区（门禁控制器、考勤机上报本地时间）",
    )
    raw_card_ids: bool = Field(
        default=False,
        description="Publish card numbers unhashed in events' 'card' (the site opts in). "
        "Default: 'h:' + 16 hex with pseudonym_secret, or null without it",
    )

    @field_validator("timezone")
    @classmethod
    def check_timezone(cls, name: str) -> str:
        site_tz(name)
        return name


class CommandsConfig(Strict):
    """Commands from the platform (``ROOT/cmd/{command}``): signing, queueing, deadlines."""

    key: str | None = Field(
        default=None,
        description="HMAC-SHA256 key that device_write, door_open, alarm_ack and alarm_shelve "
        "must be signed with (docs/mqtt.md#signed-commands); only as ${ENV} or ${cred:NAME}. "
        "Unset: these commands are accepted unsigned",
    )
    queue_max: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="Commands per device running or waiting, at most; more are refused 'busy'",
    )
    deadline_s: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="A command not started within this many seconds is refused, not executed "
        "(an MQTT 5 message expiry interval on the request overrides it)",
    )


def parse_bind(value: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); an IPv6 literal goes in brackets (``[::1]:8080``).

    Raises ``ValueError`` with an installer's message (English / Chinese).
    """
    text = value.strip()
    example = "e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
    if "://" in text or "/" in text:
        raise ValueError(
            f"{value!r}: write host:port only, without a scheme or path ({example}) "
            "/ 只写 主机:端口，不要写 http:// 或路径"
        )
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(
                f"{value!r}: not an IPv6 address in brackets / 方括号内不是 IPv6 地址"
            ) from None
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{value!r}: the port is missing ({example}) / 缺少端口")
        host, port_text = inner, rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r}: the port is missing ({example}) / 缺少端口")
        if ":" in host:
            raise ValueError(
                f"{value!r}: an IPv6 address goes in brackets, e.g. [::1]:8080 "
                "/ IPv6 地址请写在方括号内，例如 [::1]:8080"
            )
        if not host or any(c.isspace() or c in "[]@" for c in host):
            raise ValueError(f"{value!r}: not a host name ({example}) / 不是有效的主机名")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"{value!r}: the port must be a number from 0 to 65535 / 端口必须是 0 到 65535 的数字"
        )
    return host, int(port_text)


class HttpConfig(Strict):
    """The agent's one HTTP server, shared by push devices (they POST to the gateway) and
    the local console. Off unless enabled here or a configured device kind needs it."""

    enabled: bool = Field(
        default=False,
        description="Start the HTTP server (GET /healthz) even when no device needs it; "
        "push devices and the console start it by themselves",
    )
    bind: str = Field(
        default="127.0.0.1:8080",
        description="Address and port to listen on, host:port; an IPv6 literal in brackets "
        "('[::1]:8080'); '0.0.0.0:8080' for devices on the LAN; port 0 = any free port",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body accepted; a larger one is answered 413",
    )
    request_timeout_s: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="A request (reading its body and answering) that takes longer is "
        "answered 408 and closed; event streams of the console are exempt",
    )

    @field_validator("bind")
    @classmethod
    def check_bind(cls, value: str) -> str:
        parse_bind(value)
        return value.strip()

    def address(self) -> tuple[str, int]:
        """``bind`` as (host, port), host without brackets."""
        return parse_bind(self.bind)


# -- doors (issue 9): door logic on the pipeline, edge_agent/pipeline/doors.py ----------


class InputRef(Strict):
    """One digital input: a point of a device (a channel of a Modbus DI module)."""

    device: Id = Field(description="Device id of the input module / 输入模块的设备 id")
    point: str = Field(
        min_length=1,
        description="Point (metric) of that device, e.g. 'di1' / 输入点名称，如 di1",
    )


class ContactInput(InputRef):
    """A door contact (门磁): which value means 'closed'."""

    closed_when: Literal[0, 1] = Field(
        default=1,
        description="Value the input reads while the door is closed: 1 for a normally "
        "closed (NC) contact on a dry-contact input, 0 for a normally open one / "
        "门关闭时输入点的值：常闭门磁接无源输入为 1，常开为 0",
    )


class ActiveInput(InputRef):
    """A button or relay input: which value means 'active'."""

    active_when: Literal[0, 1] = Field(
        default=1,
        description="Value the input reads while active (button pressed, relay "
        "energised): 1 for a normally open contact, 0 for a normally closed one / "
        "动作时输入点的值：常开触点为 1，常闭触点为 0",
    )


class GrantSource(Strict):
    """Where a grant for a door comes from: a granted ``card_read`` (or an exit button or
    lock release, ``digital_input`` ``exit_button`` / ``lock``) of this device, optionally
    only for one of its doors or readers."""

    device: Id = Field(
        description="Device id of the reader, controller or terminal "
        "/ 读卡器、控制器或终端的设备 id"
    )
    door: int | str | None = Field(
        default=None,
        description="Only events whose 'door' field is this (a WG controller's door 1-4, "
        "a Hikvision or ZKTeco door number); default: any door of the device / "
        "仅限该门号的事件（默认不限）",
    )
    reader: str | None = Field(
        default=None,
        description="Only card reads of this reader (the event's 'reader' field); default: "
        "any reader / 仅限该读卡器的刷卡（默认不限）",
    )


class DoorConfig(Strict):
    """One door watched by the door logic: its contact, its exit button, what unlocks it."""

    id: Id = Field(description="Door id, in every door event's 'door' field / 门 id")
    name: str | None = Field(default=None, description="Human-readable name / 名称")
    contact: ContactInput = Field(description="The door contact input / 门磁输入")
    rex: ActiveInput | None = Field(
        default=None,
        description="Exit (REX) button input: a press grants the door like a card / "
        "出门按钮输入：按下视同授权开门",
    )
    grants: list[GrantSource] = Field(
        default_factory=list,
        description="Readers and controllers whose granted card reads unlock this door / "
        "授权刷卡可开此门的读卡器或控制器",
    )
    grant_window_s: float = Field(
        default=5,
        gt=0,
        le=300,
        description="An opening within this many seconds after a grant (card, REX) is "
        "granted; without one it is door_forced / 授权后多少秒内开门视为正常，否则为强行开门",
    )
    grant_late_s: float = Field(
        default=0,
        ge=0,
        le=10,
        description="Wait this long after an opening for a grant that arrives late (a "
        "reader whose events come through a slower path) before door_forced; 0 = decide "
        "at once / 开门后等待迟到授权的秒数，0 表示立即判断",
    )
    held_open_s: float = Field(
        default=30,
        gt=0,
        le=86400,
        description="Open longer than this -> door_held_open (once per opening) / "
        "开门超过此秒数报门长时间未关（每次开门一次）",
    )
    flap_s: float = Field(
        default=2,
        ge=0,
        le=60,
        description="A door that reopens within this many seconds of closing continues "
        "the same opening (a bouncing contact, a door that springs back): no second "
        "door_forced, the held-open time runs on / 关门后此秒数内再次打开视为同一次开门",
    )


class CriticalInput(ActiveInput):
    """A fire-panel relay or an emergency button: each change is a critical
    ``digital_input`` event."""

    input: Literal["fire", "emergency"] = Field(
        description="What it is: 'fire' (fire-panel relay output) or 'emergency' "
        "(one-button alarm) / 'fire' 消防联动输出，'emergency' 一键报警按钮",
    )
    name: str | None = Field(default=None, description="Human-readable name / 名称")


class DoorsConfig(Strict):
    """Door logic on the pipeline: door contacts, exit buttons and alarm inputs read
    through input modules (docs/doors.md#door-logic)."""

    doors: list[DoorConfig] = Field(
        default_factory=list, description="Doors with a contact input / 带门磁的门"
    )
    inputs: list[CriticalInput] = Field(
        default_factory=list,
        description="Fire and emergency inputs: critical digital_input events / 消防和紧急报警输入",
    )
    input_telemetry: Literal["on_change", "every_poll"] = Field(
        default="on_change",
        description="Telemetry of the input modules named here: 'on_change' sends a reading "
        "only when an input changed (and every input_heartbeat_s), 'every_poll' every "
        "read (4 a second per module at 0.25 s) / 输入模块的遥测：仅在变化时发送，或每次轮询都发送",
    )
    input_heartbeat_s: float = Field(
        default=60,
        ge=1,
        le=86400,
        description="With on_change: send an unchanged reading after this many seconds "
        "anyway / 无变化时每隔多少秒仍发送一次",
    )
