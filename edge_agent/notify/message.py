"""The text people read in the group chat, in ``site.language``.

Only what the alarm itself says (its message, device, rule, state, time, id): no card
number, no name beyond what the alarm message carries.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

SEVERITY = {
    "zh": {"critical": "紧急", "major": "重要", "minor": "次要", "warning": "提示"},
    "en": {"critical": "CRITICAL", "major": "MAJOR", "minor": "minor", "warning": "warning"},
}
STATE = {
    "zh": {
        "active_unacked": "告警",
        "active_acked": "已确认",
        "cleared_unacked": "已恢复（未确认）",
        "cleared": "已恢复",
        "shelved": "已搁置",
    },
    "en": {
        "active_unacked": "ALARM",
        "active_acked": "acknowledged",
        "cleared_unacked": "cleared (not acknowledged)",
        "cleared": "cleared",
        "shelved": "shelved",
    },
}
#: lines of a summary before "… and N more"
SUMMARY_LINES = 10


def _local(ts: str | None, tz: tzinfo) -> str:
    if not ts:
        return "?"
    try:
        return (
            datetime.fromisoformat(ts.replace("Z", "+00:00"))
            .astimezone(tz)
            .strftime("%m-%d %H:%M:%S")
        )
    except ValueError:
        return ts


def _prefix(keyword: str | None, site: str | None) -> str:
    return "".join(f"{p} " for p in (keyword, f"[{site}]" if site else None) if p)


def format_one(
    alarm: dict[str, Any],
    ts: str | None,
    lang: str,
    tz: tzinfo,
    *,
    keyword: str | None = None,
    site: str | None = None,
) -> str:
    """One alarm transition as a chat message."""
    sev = SEVERITY[lang].get(alarm.get("severity", ""), str(alarm.get("severity")))
    state = STATE[lang].get(alarm.get("state", ""), str(alarm.get("state")))
    when = _local(ts, tz)
    if lang == "zh":
        lines = [
            f"{_prefix(keyword, site)}【{sev}·{state}】{alarm.get('message', '')}",
            f"设备：{alarm.get('device')}　规则：{alarm.get('rule')}",
            f"时间：{when}　编号：{alarm.get('alarm_id')}",
        ]
    else:
        lines = [
            f"{_prefix(keyword, site)}[{sev} {state}] {alarm.get('message', '')}",
            f"device: {alarm.get('device')}  rule: {alarm.get('rule')}",
            f"time: {when}  id: {alarm.get('alarm_id')}",
        ]
    return "\n".join(lines)


def format_summary(
    items: list[tuple[dict[str, Any], str | None]],
    lang: str,
    tz: tzinfo,
    *,
    keyword: str | None = None,
    site: str | None = None,
) -> str:
    """Several alarm transitions folded into one message (most severe first, as given)."""
    n = len(items)
    head = (
        f"{_prefix(keyword, site)}{n} 条告警（发送频率受限，已合并）："
        if lang == "zh"
        else f"{_prefix(keyword, site)}{n} alarms (folded: the robot's rate limit):"
    )
    lines = [head]
    for alarm, ts in items[:SUMMARY_LINES]:
        sev = SEVERITY[lang].get(alarm.get("severity", ""), str(alarm.get("severity")))
        state = STATE[lang].get(alarm.get("state", ""), str(alarm.get("state")))
        lines.append(
            f"· {_local(ts, tz)} {sev}·{state} {alarm.get('device')}: {alarm.get('message', '')}"
        )
    if n > SUMMARY_LINES:
        more = n - SUMMARY_LINES
        lines.append(f"……另有 {more} 条" if lang == "zh" else f"… and {more} more")
    return "\n".join(lines)
