"""Configuration of one Hikvision ISAPI access terminal (``kind: hikvision``)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.models import DeviceBase, Strict
from edge_agent.config.secrets import is_reference
from edge_agent.drivers.hikvision.events import CONTEXTS, Reader


class HikReader(Strict):
    """What the site calls one reader of the terminal (a DS-K1T is one reader on door 1; a
    DS-K2 controller has up to 4 doors with an entry and an exit reader each)."""

    door: int | None = Field(
        default=None, ge=1, le=64, description="Door number (doorNo); empty: any door / 门号"
    )
    reader: int = Field(
        default=1, ge=1, le=64, description="Reader number on the door (cardReaderNo) / 读卡器号"
    )
    name: str = Field(min_length=1, description="Reader name in events / 读卡器名称")
    context: Literal["access", "attendance", "canteen", "library", "shop", "dorm", "gate"] = Field(
        default="access", description="What a read here means / 用途: " + "|".join(CONTEXTS)
    )
    direction: Literal["in", "out"] | None = Field(
        default=None, description="in or out, for counting entries and exits / 进出方向"
    )

    def as_reader(self) -> Reader:
        return Reader(self.name, self.context, self.direction)


class HikvisionDevice(DeviceBase):
    """A Hikvision access terminal or controller (DS-K1T…, DS-K2…) over ISAPI with digest
    authentication. ``mode: stream`` holds the terminal's alertStream open; ``mode: push``
    has the terminal POST each record to the gateway (its httpHosts address set to
    ``http://<gateway>:<http.bind port>/hik/<id>``). Either way the agent catches up from the
    terminal's own log (AcsEvent search by serial number) after any gap."""

    kind: Literal["hikvision"] = Field(description="'hikvision'")
    host: str = Field(min_length=1, description="IP address or host name of the terminal / 地址")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="HTTP(S) port; default 80 (http) or 443 (https)"
    )
    scheme: Literal["http", "https"] = Field(default="http", description="http or https")
    tls_verify: bool = Field(
        default=False,
        description="With https: check the terminal's certificate (terminals ship a "
        "self-signed one) / 是否校验终端证书",
    )
    user: str = Field(default="admin", min_length=1, description="ISAPI user / 用户名")
    password: str = Field(
        description="ISAPI password as a secret reference, ${ENV_NAME} or ${cred:NAME}, never "
        "the password itself / 密码，只能写 ${环境变量} 或 ${cred:名称}"
    )
    mode: Literal["stream", "push"] = Field(
        default="stream",
        description="stream: the agent holds the alertStream open; push: the terminal POSTs "
        "to http://<gateway>/hik/<id> (needs http.bind) / 事件接收方式",
    )
    doors: int = Field(default=1, ge=1, le=64, description="Doors of the device / 门数")
    silence_s: float = Field(
        default=40,
        gt=0,
        le=3600,
        description="stream: offline and reconnect after this long without a heartbeat; "
        "push: check the terminal (and catch up) after this long without a POST / 静默超时（秒）",
    )
    timeout_s: float = Field(default=5, gt=0, le=120, description="Timeout of one request")
    retry_max_s: float = Field(
        default=60, ge=1, le=3600, description="Longest wait between reconnects (backoff from 1 s)"
    )
    catchup_days: float = Field(
        default=7,
        gt=0,
        le=366,
        description="How far back a catch-up searches the terminal's log / 补采最长回溯天数",
    )
    first_catchup_h: float = Field(
        default=0,
        ge=0,
        le=8784,
        description="At the very first start (no cursor yet): hours of the terminal's log to "
        "take; 0 = only what comes from now on / 首次启动补采小时数",
    )
    readers: list[HikReader] = Field(
        default_factory=list, description="Reader names, contexts and directions / 读卡器"
    )

    @field_validator("password")
    @classmethod
    def check_password_is_a_reference(cls, value: str) -> str:
        if not is_reference(value):
            raise ValueError(
                "secrets must not be written in the file: use ${ENV_NAME} or ${cred:NAME} "
                "/ 密钥不能明文写在配置文件里"
            )
        return value

    @model_validator(mode="after")
    def check_readers(self) -> HikvisionDevice:
        seen = set()
        for r in self.readers:
            if (r.door, r.reader) in seen:
                raise ValueError(f"reader {r.reader} of door {r.door or 'any'} is named twice")
            seen.add((r.door, r.reader))
            if r.door is not None and r.door > self.doors:
                raise ValueError(
                    f"reader {r.name!r} is on door {r.door}, the device has {self.doors}"
                )
        return self

    @property
    def base_url(self) -> str:
        port = self.port or (443 if self.scheme == "https" else 80)
        host = self.host
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        return f"{self.scheme}://{host}:{port}"
