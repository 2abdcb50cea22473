"""Configuration of one Dahua camera or NVR read natively (``kind: dahua``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.drivers.camera_stream import CameraStreamDevice

_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


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
    def check_heartbeat_within_silence(self) -> DahuaDevice:
        if self.heartbeat_s >= self.silence_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s}) must be shorter than silence_s "
                f"({self.silence_s:g}): the camera would look silent between heartbeats "
                "/ 心跳间隔须小于静默超时"
            )
        return self


__all__ = ["DahuaDevice"]
