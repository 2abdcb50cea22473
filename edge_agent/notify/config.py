"""The ``notify:`` section: team-chat robots and webhooks that alarms are sent to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.models import Id, Strict

Severity = Literal["critical", "major", "minor", "warning"]
AlarmState = Literal["active_unacked", "active_acked", "cleared_unacked", "cleared", "shelved"]

#: severity rank: a robot with ``min_severity: major`` gets critical and major
SEVERITY_RANK: dict[str, int] = {"critical": 0, "major": 1, "minor": 2, "warning": 3}

#: per kind: messages a minute the service accepts (WeCom, DingTalk: 20 a minute per
#: robot; Feishu: 100 a minute and 5 a second, we keep to 20 a minute there too)
DEFAULT_PER_MINUTE = 20

DEFAULT_STATES: tuple[AlarmState, ...] = ("active_unacked", "cleared_unacked")


class RobotConfig(Strict):
    """One robot (a group chat) or webhook that gets alarm messages."""

    id: Id = Field(description="Robot id, for logs and its delivery cursor / 机器人 id")
    kind: Literal["wecom", "dingtalk", "feishu", "webhook"] = Field(
        description="'wecom' (企业微信群机器人), 'dingtalk' (钉钉自定义机器人), "
        "'feishu' (飞书自定义机器人) or 'webhook' (any JSON endpoint) / 机器人类型"
    )
    url: str = Field(
        description="The robot's webhook address; it holds the robot's key, so only as "
        "${ENV} or ${cred:NAME} / 机器人 Webhook 地址（含密钥，只能写 ${ENV} 或 ${cred:NAME}）"
    )
    secret: str | None = Field(
        default=None,
        description="Signing secret ('加签' in DingTalk, '签名校验' in Feishu; for 'webhook' "
        "an HMAC-SHA256 key for the X-Signature header); only as ${ENV} or ${cred:NAME} "
        "/ 加签密钥，只能写 ${ENV} 或 ${cred:NAME}",
    )
    min_severity: Severity = Field(
        default="major",
        description="Least severe alarm sent: critical, major, minor or warning "
        "/ 发送的最低告警级别",
    )
    states: list[AlarmState] = Field(
        default_factory=lambda: list(DEFAULT_STATES),
        min_length=1,
        description="Alarm transitions sent: 'active_unacked' = raised, 'cleared_unacked' "
        "= cleared before anyone acknowledged it; add 'active_acked', 'cleared', "
        "'shelved' to hear of acknowledgements too / 推送哪些告警状态变化",
    )
    keyword: str | None = Field(
        default=None,
        max_length=64,
        description="Word put at the start of every message, for robots whose security "
        "setting is a custom keyword (自定义关键词) / 自定义关键词，加在每条消息开头",
    )
    per_minute: int = Field(
        default=DEFAULT_PER_MINUTE,
        ge=1,
        le=60,
        description="Messages a minute at most (the services allow 20); more alarms are "
        "folded into one summary / 每分钟最多发送条数，超出的告警合并为一条汇总",
    )
    timeout_s: float = Field(
        default=10, gt=0, le=60, description="Timeout of one request / 单次请求超时"
    )
    enabled: bool = Field(
        default=True,
        description="false: nothing is sent to this robot, and alarms "
        "meanwhile are not kept for it / 停用（停用期间的告警不保留）",
    )

    @field_validator("url")
    @classmethod
    def check_url(cls, value: str) -> str:
        # After secret resolution the loader hands us the real address (or a marker
        # when check-config cannot resolve it on this machine).
        if value.startswith("${") or value == "<unresolved>":
            return value
        if not value.startswith(("https://", "http://")):
            raise ValueError("the robot url must start with https:// / 地址须以 https:// 开头")
        return value

    @model_validator(mode="after")
    def check_secret(self) -> RobotConfig:
        if self.kind == "wecom" and self.secret is not None:
            raise ValueError(
                "the WeCom group robot has no signing secret: leave 'secret' out "
                "/ 企业微信群机器人没有加签密钥，请删除 secret"
            )
        return self


class NotifyConfig(Strict):
    """Alarm delivery to people: team-chat robots and webhooks (docs/notify.md)."""

    robots: list[RobotConfig] = Field(
        default_factory=list, description="Robots and webhooks alarms are sent to / 告警推送机器人"
    )

    @model_validator(mode="after")
    def check_ids(self) -> NotifyConfig:
        seen: set[str] = set()
        for robot in self.robots:
            if robot.id in seen:
                raise ValueError(f"duplicate robot id {robot.id!r} / 机器人 id 重复")
            seen.add(robot.id)
        return self
