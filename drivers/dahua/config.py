"""Configuration of one Dahua camera or NVR read natively (``kind: dahua``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.models import Strict
from edge_agent.drivers.camera_stream import CameraStreamDevice

_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class DahuaLine(Strict):
    """A line rule of the camera (``CrossLineDetection``, by its name on the camera), what the
    site calls it and which of the camera's directions counts as going in."""

    channel: int = Field(default=1, ge=1, le=512, description="Channel (from 1) / 通道号")
    rule: str = Field(
        min_length=1, description="The rule's name on the camera / 摄像机上的规则名称"
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Line name in events; default: the rule's / 警戒线名称",
    )
    in_direction: Literal["LeftToRight", "RightToLeft"] = Field(
        description="The camera's direction that means going in (the other is out) / 进入方向"
    )


class DahuaDevice(CameraStreamDevice):
    """A Dahua camera or NVR whose alarms are read from its event stream
    (``GET /cgi-bin/eventManager.cgi?action=attach&codes=[All]``, digest authentication):
    VideoMotion, CrossRegionDetection (intrusion), CrossLineDetection, VideoBlind and
    SceneChange. Codes it does not map are logged once and counted."""

    kind: Literal["dahua"] = Field(description="'dahua'")
    codes: list[str] = Field(
        default_factory=lambda: ["All"],
        min_length=1,
        description="Event codes to attach to (codes=[...]); All: every code, the unmapped "
        "ones logged once / 订阅的事件代码",
    )
    heartbeat_s: int = Field(
        default=10,
        ge=1,
        le=300,
        description="The camera sends a Heartbeat this often (heartbeat= of the attach "
        "request); must be shorter than silence_s / 心跳间隔（秒）",
    )

    lines: list[DahuaLine] = Field(
        default_factory=list,
        description="Line rules whose crossings count as in or out; others keep the camera's "
        "direction (LeftToRight, RightToLeft) / 越界规则的进出方向",
    )

    @field_validator("codes")
    @classmethod
    def check_codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not _CODE.match(code):
                raise ValueError(
                    f"event code {code!r}: letters, digits and _ only "
                    "/ 事件代码只能含字母、数字和下划线"
                )
        return value

    @model_validator(mode="after")
    def check_lines(self) -> DahuaDevice:
        seen: set[tuple[int, str]] = set()
        for line in self.lines:
            if (line.channel, line.rule) in seen:
                raise ValueError(
                    f"channel {line.channel} rule {line.rule!r} is named twice / 警戒线重复命名"
                )
            seen.add((line.channel, line.rule))
        return self

    @model_validator(mode="after")
    def check_heartbeat_within_silence(self) -> DahuaDevice:
        if self.heartbeat_s >= self.silence_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s}) must be shorter than silence_s "
                f"({self.silence_s:g}): the camera would look silent between heartbeats "
                "/ 心跳间隔须小于静默超时"
            )
        return self


__all__ = ["DahuaDevice"]
