"""Configuration of on-device video analytics (``kind: camera_analytics``, issue #11).

:class:`AnalyticsConfig` is the ``analytics:`` block: the substream to read, the rate, and
what to look for (zones, lines, tamper). It is a model of its own so that a camera kind
(ONVIF, Hikvision, Dahua) can carry the same block later and hand it to
:class:`~edge_agent.drivers.camera_analytics.runner.AnalyticsRunner` with the substream URL
it found itself; :class:`CameraAnalyticsDevice` is the stand-alone kind that only analyses.

Points are fractions of the frame (``[x, y]``, 0..1 from the top-left corner), so a zone
drawn on a snapshot holds whatever resolution the substream has.

视频分析配置：区域和计数线的坐标是画面宽高的比例（0~1，左上角为原点）。
"""

from __future__ import annotations

import re
from datetime import time
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.models import DeviceBase, Id, Strict
from edge_agent.config.secrets import is_reference

Point = tuple[float, float]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _check_points(points: list[Point]) -> list[Point]:
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(
                f"point [{x:g}, {y:g}] is outside the frame: write fractions of the width and "
                "height, 0..1 from the top-left corner / 坐标应为画面宽高的比例（0~1）"
            )
    return points


class Window(Strict):
    """When a zone is watched: ``start``..``end`` local time (``site.timezone``) on ``days``.
    An ``end`` before ``start`` runs past midnight (``18:00``..``07:00``: the night that
    starts on each of ``days``)."""

    days: list[Day] = Field(
        default=list(DAYS), min_length=1, description="Days the window starts on / 星期"
    )
    start: str = Field(description="Start, HH:MM local time / 开始时间")
    end: str = Field(description="End, HH:MM local time; before start: the next day / 结束时间")

    @field_validator("start", "end")
    @classmethod
    def check_hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time: write HH:MM, e.g. '18:30' / 时间格式 HH:MM")
        return value

    def times(self) -> tuple[time, time]:
        return time.fromisoformat(self.start), time.fromisoformat(self.end)


class Zone(Strict):
    """A polygon where motion is reported (``motion`` events with ``zone`` and ``active``)."""

    name: Id = Field(description="Zone name in events, e.g. 'courtyard' / 区域名称")
    points: list[Point] = Field(
        min_length=3, max_length=32, description="Polygon corners, [x, y] fractions / 多边形顶点"
    )
    schedule: list[Window] = Field(
        default_factory=list,
        description="When the zone is watched (after hours); empty: always / 布防时段，空为全天",
    )
    min_area_pct: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Moving part of the zone, in percent of its area, that counts as motion",
    )
    hold_s: float = Field(
        default=3.0, ge=0, le=300, description="Seconds without motion before 'active: false'"
    )

    _points = field_validator("points")(_check_points)

    @model_validator(mode="after")
    def check_area(self) -> Zone:
        if _polygon_area(self.points) < 1e-4:
            raise ValueError("the zone's points enclose no area / 区域顶点围成的面积为零")
        return self


class Line(Strict):
    """A counting line from ``points[0]`` (A) to ``points[1]`` (B). A person crossing it from
    the left of A→B to its right goes ``in`` (A at the top-left, B at the top-right: walking
    down the picture is ``in``); swap the points to swap the directions."""

    name: Id = Field(description="Line name in events, e.g. 'gate' / 计数线名称")
    points: list[Point] = Field(
        min_length=2, max_length=2, description="The line's two ends, [x, y] fractions / 端点"
    )
    hysteresis_pct: float = Field(
        default=4.0,
        ge=0,
        le=25,
        description="A person must be this far (percent of the frame height) past the line "
        "on both sides before a crossing counts: jitter on the line never counts / 迟滞",
    )
    count_period_s: int = Field(
        default=300,
        ge=10,
        le=86400,
        description="Seconds between 'people_count' events (in and out during the period)",
    )

    _points = field_validator("points")(_check_points)

    @model_validator(mode="after")
    def check_length(self) -> Line:
        (ax, ay), (bx, by) = self.points
        if (ax - bx) ** 2 + (ay - by) ** 2 < 0.05**2:
            raise ValueError("the line is too short (under 5 % of the frame) / 计数线太短")
        return self


class Tamper(Strict):
    """Tamper detection: covered, defocused, moved, scene change; each held ``hold_s`` before
    it is reported. Lights going off is low light (telemetry ``low_light``), never tamper."""

    enabled: bool = Field(default=True, description="Watch for tampering / 防破坏检测")
    hold_s: float = Field(
        default=15.0,
        ge=10,
        le=30,
        description="Seconds a tamper condition must last before it is reported (10-30)",
    )
    low_light_luma: float = Field(
        default=28.0,
        ge=1,
        le=128,
        description="Mean brightness (0-255) under which the picture is low light, not tamper",
    )
    defocus_ratio: float = Field(
        default=0.35,
        gt=0,
        lt=1,
        description="Sharpness under this share of the learned sharpness is 'defocused'",
    )
    move_pct: float = Field(
        default=4.0,
        gt=0,
        le=50,
        description="A view shifted more than this (percent of the frame width) is 'moved'",
    )
    relearn_s: float = Field(
        default=120.0,
        ge=10,
        le=3600,
        description="Seconds a moved view or a changed scene stays reported before it "
        "becomes the new reference",
    )


class AnalyticsConfig(Strict):
    """The ``analytics:`` block of a camera: read a substream at a low rate in a worker
    process, and report what it sees as events (never pictures). 视频分析（按摄像机启用）。"""

    stream_url: str = Field(
        min_length=1,
        description="The substream: http(s)://… MJPEG, or rtsp://… (read with OpenCV); no "
        "password in it: use user/password / 子码流地址",
    )
    user: str | None = Field(default=None, description="Stream user (HTTP basic or digest)")
    password: str | None = Field(
        default=None,
        description="Stream password as ${ENV_NAME} or ${cred:NAME}, never the password itself",
    )
    fps: float = Field(
        default=5.0, gt=0, le=5, description="Frames analysed per second (at most 5) / 分析帧率"
    )
    analysis_width: int = Field(
        default=160,
        ge=96,
        le=640,
        description="Frames are scaled to this width (pixels) before analysis: CPU grows "
        "with its square",
    )
    zones: list[Zone] = Field(default_factory=list, description="Motion zones / 移动侦测区域")
    lines: list[Line] = Field(default_factory=list, description="Counting lines / 人数统计线")
    tamper: Tamper = Field(default_factory=Tamper, description="Tamper detection / 防破坏")
    min_person_pct: float = Field(
        default=0.4,
        gt=0,
        le=50,
        description="Smallest moving blob taken for a person, percent of the frame area",
    )
    timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Seconds without a frame before reconnecting"
    )

    @field_validator("stream_url")
    @classmethod
    def check_stream_url(cls, value: str) -> str:
        if not re.match(r"^(https?|rtsp|rtsps)://", value):
            raise ValueError("stream_url must start with http://, https:// or rtsp:// / 地址格式")
        if re.match(r"^[a-z]+://[^/@]*:[^/@]*@", value):
            raise ValueError(
                "no password in stream_url: use user and password (${ENV} or ${cred:NAME}) "
                "/ 地址中不能写密码"
            )
        return value

    @field_validator("password")
    @classmethod
    def check_password_is_a_reference(cls, value: str | None) -> str | None:
        if value is not None and not is_reference(value):
            raise ValueError(
                "secrets must not be written in the file: use ${ENV_NAME} or ${cred:NAME} "
                "/ 密钥不能明文写在配置文件里"
            )
        return value

    @model_validator(mode="after")
    def check_names(self) -> AnalyticsConfig:
        for what, items in (("zone", self.zones), ("line", self.lines)):
            names = [i.name for i in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what} names must differ: {', '.join(dup)} / 名称重复")
        if self.password is not None and self.user is None:
            raise ValueError("password without user / 缺少用户名")
        return self


class CameraAnalyticsDevice(DeviceBase):
    """A camera whose substream the gateway analyses (motion in zones, tamper, people
    counting). The camera's own events come through its ONVIF or native kind."""

    kind: Literal["camera_analytics"] = Field(description="'camera_analytics'")
    analytics: AnalyticsConfig = Field(description="What to analyse / 分析设置")


def _polygon_area(points: list[Point]) -> float:
    area = 0.0
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        area += x1 * y2 - x2 * y1
    return abs(area) / 2
