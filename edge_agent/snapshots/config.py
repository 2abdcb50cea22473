"""The ``snapshots:`` section: where pictures are kept, how many, how long a fetch may take,
and cameras whose snapshot URL is written in the config (docs/cameras.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from edge_agent.config.models import Id, Strict

#: the ``snapshots`` fields the loader resolves as secrets, per camera
SECRET_KEYS = ("password",)


class CameraSnapshotConfig(Strict):
    """A camera whose snapshot is fetched from a URL written here: any camera with an
    HTTP snapshot (Hikvision ``/ISAPI/Streaming/channels/101/picture``, Dahua
    ``/cgi-bin/snapshot.cgi``), or a camera device whose driver gives none or the wrong one."""

    id: Id = Field(
        description="Camera id: a device id of a camera, or an id of its own for a camera "
        "that only takes snapshots; the topic is ROOT/snapshots/{id}/... / 摄像机 id"
    )
    url: str = Field(
        description="http:// or https:// URL of one JPEG, without user name or password "
        "/ 抓图地址（不含用户名密码）"
    )
    username: str | None = Field(default=None, description="User name on the camera / 用户名")
    password: str | None = Field(
        default=None,
        description="Password: ${ENV} or ${cred:NAME}, never literal / 密码（仅限 ${ENV} 或 "
        "${cred:NAME}）",
    )
    auth: Literal["digest", "basic", "none"] = Field(
        default="digest",
        description="HTTP authentication: digest (Hikvision, Dahua, most ONVIF cameras), "
        "basic, or none / 认证方式",
    )
    tls_verify: bool = Field(
        default=True,
        description="Check the camera's certificate on an https URL (false for a self-signed "
        "one) / 校验证书",
    )

    @field_validator("url")
    @classmethod
    def check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r}: an http:// or https:// URL with a host, e.g. "
                "http://10.0.3.21/ISAPI/Streaming/channels/101/picture / 应为 http(s):// 地址"
            )
        if parts.username or parts.password:
            raise ValueError(
                "no user name or password in the URL: write username: and password: "
                "(${cred:NAME}) / 地址中不能包含用户名密码"
            )
        return value

    @model_validator(mode="after")
    def check_login(self) -> CameraSnapshotConfig:
        if self.auth != "none" and (self.username is None or self.password is None):
            raise ValueError(
                f"auth {self.auth} needs username and password (or auth: none) "
                "/ 该认证方式需要用户名和密码"
            )
        return self


class SnapshotsConfig(Strict):
    """Camera snapshots: fetched on an alarm that asks for one or on ``camera_snapshot``,
    kept on disk within a cap, published as JPEG on ``ROOT/snapshots/{camera}/{id}``."""

    dir: str | None = Field(
        default=None,
        description="Folder of the pictures; default: 'snapshots' next to the outbox database "
        "/ 图片目录（默认在缓存数据库旁）",
    )
    max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Disk cap of the folder: the oldest pictures go first, sent ones before "
        "unsent ones / 图片占用磁盘上限（字节）",
    )
    max_count: int = Field(
        default=2000, ge=1, le=1_000_000, description="Most pictures kept / 最多保留张数"
    )
    image_max_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="Largest JPEG accepted from a camera / 单张图片上限（字节）",
    )
    timeout_s: float = Field(
        default=10,
        gt=0,
        le=120,
        description="camera_snapshot: the whole fetch (connect, login, body) / 抓图超时",
    )
    alarm_wait_s: float = Field(
        default=3,
        gt=0,
        le=30,
        description="An alarm that asks for a snapshot waits at most this long for it, then "
        "goes without / 告警等待抓图的最长时间",
    )
    cameras: list[CameraSnapshotConfig] = Field(
        default_factory=list,
        description="Cameras whose snapshot URL is written here / 在此配置抓图地址的摄像机",
    )

    @model_validator(mode="after")
    def check_unique_ids(self) -> SnapshotsConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera {cam.id!r} is listed twice / 摄像机重复")
            seen.add(cam.id)
        return self


def check_rule_cameras(
    rules_raw: Any, snapshots_raw: Any, device_ids: set[str], base: Path
) -> list[tuple[tuple[str | int, ...], str]]:
    """For check-config: every rule's ``snapshot:`` names a camera, i.e. a device or a
    ``snapshots.cameras`` entry. (The rule files' own problems are reported elsewhere.)"""
    from edge_agent.config.rules import RulesConfig, load_rules

    try:
        rules_cfg = RulesConfig.model_validate(rules_raw if isinstance(rules_raw, dict) else {})
    except ValidationError:
        return []
    ruleset, _, file_problems = load_rules(rules_cfg, base)
    if file_problems:
        return []
    cams = snapshots_raw.get("cameras") if isinstance(snapshots_raw, dict) else None
    known = set(device_ids)
    known |= {c["id"] for c in cams or [] if isinstance(c, dict) and isinstance(c.get("id"), str)}
    files = [str(Path(f) if Path(f).is_absolute() else base / f) for f in rules_cfg.files]
    out: list[tuple[tuple[str | int, ...], str]] = []
    for rule in ruleset.rules:
        if rule.snapshot is None or rule.snapshot in known:
            continue
        origin = ruleset.origin.get(rule.id, "")
        where: tuple[str | int, ...] = (
            ("rules", "files", files.index(origin)) if origin in files else ("rules",)
        )
        out.append(
            (
                where,
                f"rule {rule.id!r} takes its snapshot from {rule.snapshot!r}, which is neither "
                "a device nor in snapshots.cameras / 规则指定的抓图摄像机不存在",
            )
        )
    return out
