"""Configuration of one Hikvision camera or NVR read natively (``kind: hikvision_camera``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_agent.config.models import Strict
from edge_agent.drivers.camera_stream import CameraStreamDevice


class HikZone(Strict):
    """What the site calls a motion area: a channel's whole picture (VMD, no ``region``) or
    one region of its intrusion (field) detection."""

    channel: int = Field(default=1, ge=1, le=512, description="Channel (channelID) / 通道号")
    region: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Region of intrusion detection (regionID); empty: the channel's motion "
        "detection (VMD) / 区域入侵规则号，留空表示移动侦测",
    )
    name: str = Field(min_length=1, max_length=64, description="Zone name in events / 区域名称")


class HikLine(Strict):
    """What the site calls a line-crossing rule, and which way a crossing counts."""

    channel: int = Field(default=1, ge=1, le=512, description="Channel (channelID) / 通道号")
    region: int = Field(default=1, ge=1, le=64, description="Line rule (regionID) / 越界规则号")
    name: str = Field(min_length=1, max_length=64, description="Line name in events / 警戒线名称")
    direction: Literal["in", "out"] | None = Field(
        default=None,
        description="in or out: what a crossing of this rule means (the camera's rule sets "
        "A->B or B->A; the alert does not say) / 方向",
    )


class HikvisionCameraDevice(CameraStreamDevice):
    """A Hikvision camera or NVR whose alarms are read from its ISAPI alertStream
    (``GET /ISAPI/Event/notification/alertStream``, digest authentication): motion (VMD),
    intrusion (fielddetection), line crossing (linedetection) and video tampering
    (shelteralarm). Door terminals are ``kind: hikvision``."""

    kind: Literal["hikvision_camera"] = Field(description="'hikvision_camera'")
    zones: list[HikZone] = Field(
        default_factory=list, description="Names of motion and intrusion areas / 区域名称"
    )
    lines: list[HikLine] = Field(
        default_factory=list, description="Names and directions of line rules / 警戒线"
    )

    @model_validator(mode="after")
    def check_names(self) -> HikvisionCameraDevice:
        seen: set[tuple[int, int | None]] = set()
        for z in self.zones:
            if (z.channel, z.region) in seen:
                where = f"region {z.region}" if z.region is not None else "motion detection"
                raise ValueError(f"channel {z.channel} {where} is named twice / 区域重复命名")
            seen.add((z.channel, z.region))
        lines: set[tuple[int, int]] = set()
        for line in self.lines:
            if (line.channel, line.region) in lines:
                raise ValueError(
                    f"channel {line.channel} line {line.region} is named twice / 警戒线重复命名"
                )
            lines.add((line.channel, line.region))
        return self
