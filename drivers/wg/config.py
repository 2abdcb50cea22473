"""Config of WG short-packet door controllers (``kind: wg``) and of the kind's one UDP socket.

A device is one controller: its serial number (on the label, and in every frame), the
address the gateway sends requests to, and the readers of its doors (name, context,
direction), so that a swipe becomes a ``card_read`` the platform can count. The kind's
settings (top-level key ``wg:``) say where the gateway's one socket listens and which
address the controllers should push their events to.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.models import DeviceBase, Strict, parse_bind

#: the UDP port of every WG controller, and the gateway's default listening port
WG_PORT = 60000

#: the contexts of ``events.CONTEXTS`` (a unit test checks that both agree)
Context = Literal["access", "attendance", "canteen", "library", "shop", "dorm", "gate"]


def parse_listener(value: str) -> tuple[str, int | None]:
    """``ip`` or ``ip:port`` (IPv4: the controller's 0x90 frame has room for nothing else);
    ``None`` as the port means the port the gateway's socket is bound to."""
    text = value.strip()
    host, port = parse_bind(text) if ":" in text else (text, None)
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(
            f"{value!r}: an IPv4 address the controllers can reach, e.g. 192.168.1.10 or "
            "192.168.1.10:60000 / 请填写控制器能访问到的网关 IPv4 地址"
        ) from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(
            f"{value!r}: the gateway's own LAN address, not {ip} / 请填写网关的局域网地址"
        )
    if port == 0:
        port = None
    return str(ip), port


class WgListen(Strict):
    """The WG kind's one UDP socket on the gateway, shared by every controller."""

    bind: str = Field(
        default=f"0.0.0.0:{WG_PORT}",
        description="host:port the gateway listens on for answers and pushed events "
        "/ 网关接收应答和实时事件的地址:端口",
    )
    listener: str | None = Field(
        default=None,
        description="The gateway's address as the controllers reach it (IPv4, or ip:port; "
        "without a port, the port of 'bind'): each controller is set to push every new "
        "record there (its 'receiving server'). Unset: nothing is pushed, the gateway reads "
        "new records at every status poll "
        "/ 控制器的“接收服务器”地址（网关的局域网 IPv4 地址）；不填则不推送，仅靠轮询读取",
    )

    @field_validator("bind")
    @classmethod
    def check_bind(cls, value: str) -> str:
        parse_bind(value)
        return value.strip()

    @field_validator("listener")
    @classmethod
    def check_listener(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listener(value)
            return value.strip()
        return value


class WgSettings(Strict):
    """The WG kind's top-level key: ``wg: {bind: ..., listener: ...}``."""

    wg: WgListen = Field(
        default_factory=WgListen,
        description="WG door controllers: the gateway's UDP socket and receiving-server "
        "address / 微耕门禁控制器：网关的 UDP 监听与接收服务器地址",
    )


class WgReader(Strict):
    """One reader of a controller's door: what the site calls it and what a swipe there
    means (门禁读卡器：名称、用途、进出方向)."""

    door: int = Field(ge=1, le=4, description="Door 1-4 of the controller / 门号")
    direction: Literal["in", "out"] | None = Field(
        default=None,
        description="The reader on the 'in' or 'out' side of the door; unset: every reader "
        "of the door / 进门或出门读卡器，不填表示该门所有读卡器",
    )
    name: str = Field(
        min_length=1, max_length=64, description="Reader name in events, e.g. 'gate-1-in'"
    )
    context: Context = Field(
        default="access",
        description="What a swipe here is: access, attendance, canteen, library, shop, dorm, "
        "gate / 刷卡用途",
    )


#: door control modes of 0x80/0x82, as the config spells them
DOOR_MODES = {"normally_open": 1, "normally_closed": 2, "controlled": 3}


class WgDoorControl(Strict):
    """How a door's lock works, set on the controller at every start (0x80) when it differs
    (门控制方式与开门延时)."""

    door: int = Field(ge=1, le=4, description="Door 1-4 of the controller / 门号")
    mode: Literal["controlled", "normally_open", "normally_closed"] = Field(
        default="controlled",
        description="controlled: opens for a grant; normally_open / normally_closed: always "
        "unlocked / locked / 在线控制、常开、常闭",
    )
    delay_s: int = Field(
        default=3, ge=0, le=255, description="Seconds the lock stays open after a grant / 开门延时"
    )


class WgDevice(DeviceBase):
    """A WG short-packet door controller (Shenzhen Weigeng 微耕 and OEMs such as UHPPOTE
    UT0311-L0x), reached over UDP."""

    kind: Literal["wg"] = Field(description="This kind: WG short-packet door controller")
    serial: int = Field(
        ge=1,
        le=0xFFFFFFFF,
        description="Controller serial number (on its label, e.g. 223190110) / 控制器序列号",
    )
    host: str = Field(
        description="The controller's IPv4 address; give it a fixed one / 控制器 IP（请固定）"
    )
    port: int = Field(default=WG_PORT, ge=1, le=65535, description="The controller's UDP port")
    doors: Literal[1, 2, 4] = Field(default=4, description="Doors the controller has: 1, 2 or 4")
    readers: list[WgReader] = Field(
        default_factory=list,
        description="Names, contexts and directions of the readers; a reader not listed is "
        "'door<n>-<in|out>' in the access context / 读卡器名称、用途和方向",
    )
    door_control: list[WgDoorControl] = Field(
        default_factory=list,
        description="Doors whose mode and unlock delay the gateway keeps as written here; "
        "a door not listed is left as the controller has it / 由网关设置的门控制方式与延时",
    )
    timeout_s: float = Field(default=1.0, gt=0, le=30, description="Wait for one answer")
    retries: int = Field(default=2, ge=0, le=10, description="Retries of an unanswered request")
    poll_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between status polls: they notice silence and catch up pushes "
        "lost on UDP / 状态轮询间隔（检测掉线、补读丢失的推送）",
    )
    offline_after: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Unanswered status polls after which the controller is reported offline",
    )
    retry_max_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Longest wait between attempts while the controller is offline "
        "(doubling from poll_interval_s)",
    )
    clock_tolerance_s: float = Field(
        default=2.0,
        ge=1,
        le=3600,
        description="The controller's clock is set when it is further off than this "
        "/ 控制器时钟偏差超过此值即校时",
    )
    clock_check_s: float = Field(
        default=3600.0,
        gt=0,
        le=86400,
        description="Seconds between clock checks (also at start and after a reconnect)",
    )
    batch_max: int = Field(
        default=50, ge=1, le=1000, description="Records read back and committed at once"
    )
    initial_backlog: int = Field(
        default=1000,
        ge=0,
        description="On the very first start (no committed record yet), how many of the "
        "records the controller already holds are read; 0: only new ones",
    )
    store_index: bool = Field(
        default=False,
        description="Also store the last committed record index on the controller (0xB2), "
        "for the vendor's tool; the gateway's own cursor is what counts",
    )
    listener: str | None = Field(
        default=None,
        description="This controller's receiving server, when it reaches the gateway at "
        "another address than wg.listener (another VLAN) / 单台控制器的接收服务器地址",
    )

    @field_validator("host")
    @classmethod
    def check_host(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r}: the controller's IPv4 address, e.g. 192.168.1.150 "
                "/ 请填写控制器的 IPv4 地址"
            ) from None
        return value.strip()

    @field_validator("listener")
    @classmethod
    def check_listener(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listener(value)
            return value.strip()
        return value

    @model_validator(mode="after")
    def check_readers(self) -> WgDevice:
        seen: set[tuple[int, str | None]] = set()
        for reader in self.readers:
            if reader.door > self.doors:
                raise ValueError(
                    f"reader {reader.name!r}: door {reader.door}, the controller has "
                    f"{self.doors} / 门号超出控制器门数"
                )
            key = (reader.door, reader.direction)
            if key in seen:
                side = reader.direction or "every direction"
                raise ValueError(f"door {reader.door} ({side}) has two readers / 读卡器重复")
            seen.add(key)
        doors: set[int] = set()
        for control in self.door_control:
            if control.door > self.doors:
                raise ValueError(
                    f"door_control: door {control.door}, the controller has {self.doors} "
                    "/ 门号超出控制器门数"
                )
            if control.door in doors:
                raise ValueError(f"door_control: door {control.door} twice / 门号重复")
            doors.add(control.door)
        return self
