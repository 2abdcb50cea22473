"""Configuration of one ZKTeco PUSH terminal (``kind: zkteco``).

The terminal pushes to the agent's HTTP server (``http.bind``); the device is found by the
serial number (``sn``) each request carries.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_agent.config.models import DeviceBase, Strict

#: the reader contexts of issue #9 (as in drivers/zkteco/events.py)
Context = Literal["access", "attendance", "canteen", "library", "shop", "dorm", "gate"]


class ZkReader(Strict):
    """A reader of a security terminal: a door, optionally one direction of it."""

    door: int = Field(
        ge=1, le=4, description="Door number on the terminal (rtlog eventaddr) / 门号"
    )
    direction: Literal["in", "out"] | None = Field(
        default=None, description="in or out; empty: both directions of the door / 方向"
    )
    name: str = Field(min_length=1, max_length=64, description="Reader name in events / 读卡器名称")
    context: Context = Field(default="access", description="What a read here means / 用途")


class ZkTecoDevice(DeviceBase):
    """A ZKTeco attendance or access terminal pushing in the PUSH (iclock/ADMS) protocol.

    Point the terminal's *Cloud Server Setting* (云服务器设置 / ADMS) at the gateway's
    ``http.bind`` address and port; see docs/doors.md.
    """

    kind: Literal["zkteco"] = Field(description="'zkteco'")
    sn: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The terminal's serial number (System Info → Device Info; SN in every "
        "request) / 终端序列号（系统信息 → 设备信息）",
    )
    reader: str | None = Field(
        default=None,
        max_length=64,
        description="Reader name of an attendance terminal's punches; default: the device id "
        "/ 考勤机的读卡器名称，默认为设备 id",
    )
    context: Context = Field(
        default="attendance",
        description="What a punch on an attendance terminal means / 考勤机打卡的用途",
    )
    readers: list[ZkReader] = Field(
        default_factory=list,
        description="Readers of a security terminal by door and direction; unnamed doors are "
        "'door<n>-<direction>' in the access context / 门禁终端各门的读卡器",
    )
    delay_s: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="Seconds between the terminal's command polls (handshake Delay) "
        "/ 终端轮询命令的间隔（秒）",
    )
    offline_after: int = Field(
        default=3,
        ge=2,
        le=100,
        description="Offline after this many poll intervals without a request "
        "/ 连续多少个轮询间隔无请求即判为离线",
    )
    open_door_s: int = Field(
        default=5,
        ge=1,
        le=254,
        description="How long door_open unlocks the door / 远程开门时长（秒）",
    )
    command_timeout_s: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="door_open fails when the terminal has not confirmed it by then "
        "/ 开门命令等待终端确认的最长时间（秒）",
    )
    card_hex: bool = Field(
        default=False,
        description="The terminal prints card numbers in hex / 终端以十六进制显示卡号",
    )
    crlf: bool = Field(
        default=False,
        description="End handshake lines with CR LF (for a terminal that needs it) "
        "/ 握手应答使用 CRLF 换行",
    )

    @model_validator(mode="after")
    def check_command_timeout(self) -> ZkTecoDevice:
        """A confirmation comes at the terminal's next poll: wait longer than one."""
        if self.command_timeout_s <= self.delay_s:
            raise ValueError(
                f"command_timeout_s ({self.command_timeout_s:g}) must be longer than delay_s "
                f"({self.delay_s}): the terminal fetches a command at its next poll"
            )
        return self

    @model_validator(mode="after")
    def check_readers(self) -> ZkTecoDevice:
        """One reader per door and direction."""
        seen: set[tuple[int, str | None]] = set()
        for r in self.readers:
            if (r.door, r.direction) in seen:
                raise ValueError(f"readers: door {r.door} {r.direction or ''} given twice")
            seen.add((r.door, r.direction))
        return self
