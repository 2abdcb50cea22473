"""Configuration of one ONVIF camera (``kind: onvif``)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from edge_agent.config.models import DeviceBase
from edge_agent.config.secrets import is_reference


class OnvifDevice(DeviceBase):
    """An ONVIF camera (Profile S/T: Hikvision, Dahua, Axis, Uniview, TP-Link…). The agent
    reads its events through a PullPoint subscription (no port to open on the gateway) and
    keeps its stream and snapshot addresses; it never pulls video over the uplink."""

    kind: Literal["onvif"] = Field(description="'onvif'")
    host: str = Field(min_length=1, description="IP address or host name of the camera / 地址")
    port: int = Field(default=80, ge=1, le=65535, description="ONVIF (HTTP) port / 端口")
    user: str = Field(default="admin", min_length=1, description="ONVIF user / 用户名")
    password: str = Field(
        description="ONVIF password as a secret reference, ${ENV_NAME} or ${cred:NAME}, never "
        "the password itself / 密码，只能写 ${环境变量} 或 ${cred:名称}"
    )
    profile: str | None = Field(
        default=None,
        description="Media profile token for the stream and snapshot addresses; empty: the "
        "first profile (the main stream) / 媒体配置文件",
    )
    subscription_s: float = Field(
        default=60,
        ge=10,
        le=3600,
        description="Lifetime asked for the event subscription; it is renewed at 80 % of it "
        "/ 事件订阅有效期（秒）",
    )
    pull_timeout_s: float = Field(
        default=10,
        ge=1,
        le=60,
        description="How long one PullMessages waits for events at the camera / 单次拉取等待时间",
    )
    pull_cooldown_s: float = Field(
        default=1,
        ge=0,
        le=60,
        description="Pause after a pull that came back at once with nothing (cameras that "
        "ignore the wait) / 空拉取后的间隔",
    )
    timeout_s: float = Field(default=10, gt=0, le=120, description="Timeout of one request")
    retry_max_s: float = Field(
        default=60, ge=1, le=3600, description="Longest wait between reconnects (backoff from 1 s)"
    )
    names: dict[str, str] = Field(
        default_factory=dict,
        description="Camera rule, source and input names -> names in events (zone, line, "
        "input), e.g. {MyMotionDetectorRule: courtyard} / 规则名映射",
    )

    ignore_topics: list[str] = Field(
        default_factory=list,
        description="ONVIF topics not to send, exact or with * (e.g. tns1:VideoSource/MotionAlarm "
        "on a Hikvision, which reports each motion under two topics) / 不上报的事件主题",
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

    @property
    def url_host(self) -> str:
        """``host`` as it goes into a URL (an IPv6 address in brackets)."""
        try:
            if ipaddress.ip_address(self.host).version == 6:
                return f"[{self.host}]"
        except ValueError:
            pass
        return self.host
