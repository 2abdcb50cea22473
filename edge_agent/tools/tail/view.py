"""How ``edge-agent tail`` shows the contract model: one line per message, or one screen.

Drawing is `rich`'s job (tables, colours, CJK cell widths, truncation, the live screen);
this module only decides what goes where. Everything that comes from the network is put
into ``rich.text.Text`` objects, never through rich markup, so a payload holding
``[bold red]`` or ``[link=...]`` is shown as those characters; control characters were
already written out by ``ContractState`` / ``escape_controls``.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from itertools import groupby
from typing import Any, Literal, TypeVar

from rich.color import ColorSystem
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from edge_agent.tools.tail.model import (
    ContractState,
    DeviceView,
    decode_payload,
    escape_controls,
    metrics_from_meta,
    parse_health,
    parse_ts,
    snapshot_topic,
)
from edge_agent.topics import RootPattern, classify

Language = Literal["en", "zh"]
_R = TypeVar("_R")

#: Metrics shown first on the dashboard, in this order; a device shows those it has.
KEY_METRICS: tuple[str, ...] = (
    "co2",
    "temperature",
    "humidity",
    "pm25",  # classroom air sensors
    "noise",
    "illuminance",  # lux/noise sensors
    "power_total",
    "energy_total",  # energy meters
)
#: How many values a dashboard row shows at most.
MAX_ROW_METRICS = 4
#: Short names for the dashboard only (tail mode prints the contract names).
_SHORT_METRIC = {
    "temperature": "temp",
    "humidity": "hum",
    "illuminance": "illum",
    "power_total": "P",
    "energy_total": "E",
}
_SEVERITY_ORDER = {"critical": 0, "major": 1, "minor": 2, "warning": 3}
_STATE_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}
_QUALITY_STYLE = {"good": "", "uncertain": "yellow", "bad": "red"}
_SEVERITY_STYLE = {"critical": "red", "major": "red", "minor": "yellow", "warning": "yellow"}

# -- labels (en / zh) --------------------------------------------------------------------------
_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Campus Edge",
        "agent": "agent",
        "gateways": "gateways online",
        "up": "up",
        "outbox": "outbox",
        "oldest": "oldest",
        "dropped": "dropped",
        "pub": "pub",
        "rx": "rx",
        "broker": "broker",
        "connected": "connected",
        "disconnected": "disconnected",
        "connecting": "connecting",
        "msgs": "msgs",
        "gaps": "seq gaps",
        "dup": "dup",
        "malformed": "malformed",
        "historical": "historical",
        "last": "last",
        "device": "DEVICE",
        "state": "STATE",
        "age": "AGE",
        "values": "VALUES",
        "no_building": "(no building)",
        "alarms": "ACTIVE ALARMS",
        "recent": "RECENT EVENTS",
        "more": "more",
        "no_devices": "no devices seen yet",
        "online": "online",
        "offline": "offline",
        "degraded": "degraded",
        "unknown": "?",
        "critical": "CRIT",
        "major": "MAJOR",
        "minor": "MINOR",
        "warning": "WARN",
        "active_unacked": "unacked",
        "active_acked": "acked",
        "cleared_unacked": "cleared,unacked",
        "cleared": "cleared",
        "shelved": "shelved",
        "alarm": "ALARM",
        "picture": "picture",
    },
    "zh": {
        "title": "校园边缘网关监视",
        "agent": "网关",
        "gateways": "网关在线",
        "up": "运行",
        "outbox": "缓存",
        "oldest": "最早",
        "dropped": "丢弃",
        "pub": "发送",
        "rx": "接收",
        "broker": "代理",
        "connected": "已连接",
        "disconnected": "已断开",
        "connecting": "连接中",
        "msgs": "消息",
        "gaps": "序号缺口",
        "dup": "重复",
        "malformed": "格式错误",
        "historical": "补传",
        "last": "最近",
        "device": "设备",
        "state": "状态",
        "age": "时长",
        "values": "读数",
        "no_building": "（未指定楼栋）",
        "alarms": "当前告警",
        "recent": "最近事件",
        "more": "更多",
        "no_devices": "尚未收到设备数据",
        "online": "在线",
        "offline": "离线",
        "degraded": "降级",
        "unknown": "?",
        "critical": "紧急",
        "major": "重要",
        "minor": "次要",
        "warning": "警告",
        "active_unacked": "未确认",
        "active_acked": "已确认",
        "cleared_unacked": "已恢复未确认",
        "cleared": "已恢复",
        "shelved": "已搁置",
        "alarm": "告警",
        "picture": "抓图",
    },
}


def _label(language: str, key: str) -> str:
    table = _LABELS.get(language, _LABELS["en"])
    return table.get(key, _LABELS["en"].get(key, key))


def format_value(value: Any) -> str:
    """A metric value as a console shows it: ``23.4``, ``812``, ``0.98``, ``on``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if value is None:
        return "null"
    return str(value)


def format_age(seconds: float | None) -> str:
    """``3s``, ``4m``, ``2h``, ``5d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _format_uptime(seconds: float) -> str:
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes = s // 60
    return f"{days}d{hours:02d}h" if days else f"{hours}h{minutes:02d}m"


def _format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def clock_text(ts: float | None, tz: tzinfo | None, *, ms: bool) -> str:
    if ts is None:
        return "--:--:--.---" if ms else "--:--:--"
    dt = datetime.fromtimestamp(ts, tz=tz or datetime.now().astimezone().tzinfo)
    text = dt.strftime("%H:%M:%S")
    return f"{text}.{dt.microsecond // 1000:03d}" if ms else text


def _metric_text(name: str, value: Any, units: Mapping[str, str], *, short: bool = False) -> str:
    label = _SHORT_METRIC.get(name, name) if short else name
    return f"{label}={format_value(value)}{units.get(name, '')}"


def _summarise(data: Mapping[str, Any], skip: Iterable[str] = ()) -> str:
    skipped = set(skip)
    parts = []
    for k, v in data.items():
        if k in skipped or v is None or isinstance(v, dict | list):
            continue
        parts.append(f"{k}={format_value(v)}")
    return " ".join(parts)


#: A door controller's bookkeeping in door events: the platform needs it, a person reading
#: the live view does not (kept where nothing else says what happened: ``input: unknown``).
_DOOR_BOOKKEEPING = ("record_index", "reason_code")


def _event_summary(type_: str, data: Mapping[str, Any]) -> str:
    if type_ == "card_read":
        bits = [str(data[k]) for k in ("result", "direction", "context") if data.get(k)]
        if data.get("result") == "denied" and data.get("reason"):
            bits.append(f"reason={data['reason']}")
        if data.get("reader"):
            bits.append(f"reader={data['reader']}")
        if data.get("card"):
            bits.append(f"card={data['card']}")
        return " ".join(bits)
    if type_.startswith("door_") or (type_ == "digital_input" and data.get("input") != "unknown"):
        return _summarise(data, skip=_DOOR_BOOKKEEPING)
    return _summarise(data)


def _alarm_summary(data: Mapping[str, Any]) -> str:
    bits = [str(data.get(k)) for k in ("severity", "state") if data.get(k)]
    if data.get("value") is not None:
        cmp = f"{format_value(data['value'])}"
        if data.get("threshold") is not None:
            cmp += f" (threshold {format_value(data['threshold'])})"
        bits.append(cmp)
    if data.get("message"):
        bits.append(str(data["message"]))
    picture = snapshot_topic(data)
    if picture:
        bits.append(f"picture={picture}")
    return " ".join(bits)


# -- turning rich renderables into text ------------------------------------------------------------
_OFFSCREEN = Console(file=io.StringIO(), color_system=None, legacy_windows=False, emoji=False)


def _ansi(segments: Iterable[Segment], color: bool) -> str:
    """Segments as text; ANSI colours (the 16 every terminal and ``less -R`` knows) if ``color``."""
    return "".join(
        seg.style.render(seg.text, color_system=ColorSystem.STANDARD)
        if color and seg.style
        else seg.text
        for seg in segments
        if not seg.control
    )


def _lines(renderable: RenderableType, width: int, height: int, color: bool) -> list[str]:
    """``renderable`` as at most ``height`` lines of at most ``width`` cells."""
    options = _OFFSCREEN.options.update(width=width, height=height, no_wrap=True)
    return [_ansi(line, color) for line in _OFFSCREEN.render_lines(renderable, options, pad=False)]


# -- tail mode ---------------------------------------------------------------------------------
def line_text(
    topic: str,
    payload: bytes,
    *,
    state: ContractState | None = None,
    tz: tzinfo | None = None,
    received: float | None = None,
) -> Text:
    """One message as one styled line (``tail`` mode); see ``render_line``."""
    topic = escape_controls(topic)
    pattern = state.pattern if state is not None else RootPattern("+/+/+")
    split = pattern.split(topic)
    now = received if received is not None else time.time()
    if split is None:
        return Text(f"{clock_text(now, tz, ms=True)} ?         {topic} ({len(payload)} B)")
    root, rel = split
    kind, ident = classify(rel)
    who = ident or ""
    if state is not None and state.pattern.wildcard and ident is not None:
        who = state.device_key(root, ident)
    elif state is None or state.pattern.wildcard:
        # No state or many gateways: say which gateway spoke for gateway-wide topics.
        who = who or root

    def line(ts: float | None, label: str, text: str, style: str = "") -> Text:
        head = f"{clock_text(ts if ts is not None else now, tz, ms=True)} {label:<9} "
        return Text.assemble(head, (text, style))

    if kind == "snapshot":
        return line(None, "snapshot", f"{who} {'/'.join(rel[2:])} ({len(payload)} B)")
    if kind == "cmd":
        return line(None, "cmd", f"{who} {_preview(payload)}", "dim")
    if kind == "unknown":
        return line(None, "?", f"{topic} {_preview(payload)}", "dim")
    if not payload:
        return line(None, "cleared", f"{'/'.join(rel)} (retained message removed)", "dim")
    doc, error = decode_payload(payload)
    if doc is None:
        return line(None, "MALFORMED", f"{topic}: {error}: {_preview(payload)}", "red")
    ts = parse_ts(doc.get("ts"))
    hist = " (historical)" if doc.get("historical") is True else ""
    raw_data = doc.get("data")
    if kind in ("telemetry", "event", "alarm") and not isinstance(raw_data, dict):
        return line(None, "MALFORMED", f"{topic}: envelope without a 'data' object", "red")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    if kind == "telemetry":
        units = {}
        if state is not None and ident is not None:
            dev = state.devices.get(state.device_key(root, ident))
            units = dev.units if dev else {}
        quality = str(doc.get("quality") or "good")
        values = " ".join(_metric_text(str(k), v, units) for k, v in data.items())
        return Text.assemble(
            line(ts, "telemetry", who),
            f" {values} ",
            (f"[{quality}]", _QUALITY_STYLE.get(quality, "yellow")),
            hist,
        )
    if kind == "event":
        etype = str(doc.get("type") or "?")
        return line(ts, "event", f"{who} {etype} {_event_summary(etype, data)}".rstrip() + hist)
    if kind in ("alarm", "alarm_active"):
        adata = data or doc
        device = adata.get("device") or doc.get("device") or "?"
        sev = str(adata.get("severity") or "")
        label = "alarm" if kind == "alarm" else "alarm*"
        text = f"{device} {adata.get('rule') or ident or '?'} {_alarm_summary(adata)}"
        return line(ts, label, text.rstrip() + hist, _SEVERITY_STYLE.get(sev, ""))
    if kind == "state":
        st = str(doc.get("state") or "?")
        text = f"{who} {st}"
        if doc.get("since"):
            text += f" since {doc['since']}"
        if doc.get("last_error"):
            text += f" error: {doc['last_error']}"
        return line(None, "state", text, _STATE_STYLE.get(st, ""))
    if kind == "status":
        st = str(doc.get("state") or "?")
        bits = [st]
        for k in ("reason", "agent_version", "epoch", "devices"):
            if doc.get(k) is not None:
                bits.append(f"{k}={doc[k]}")
        return line(ts, "status", f"{root} " + " ".join(bits), _STATE_STYLE.get(st, ""))
    if kind == "health":
        h = parse_health(doc, now)
        bits = []
        if h.depth is not None:
            bits.append(f"outbox={h.depth}")
        if h.bytes is not None:
            bits.append(_format_bytes(h.bytes).replace(" ", ""))
        if h.oldest_age_s is not None:
            bits.append(f"oldest={format_age(h.oldest_age_s)}")
        bits.append(f"dropped={h.dropped_total}")
        if h.publish_rate is not None:
            bits.append(f"pub={h.publish_rate:.1f}/s")
        if h.uptime_s is not None:
            bits.append(f"up={_format_uptime(h.uptime_s)}")
        return line(ts, "health", f"{root} " + " ".join(bits), "dim")
    if kind == "meta":
        units, _ = metrics_from_meta(doc)
        loc_raw = doc.get("location")
        loc: Mapping[str, Any] = loc_raw if isinstance(loc_raw, Mapping) else doc
        where = "/".join(str(loc[k]) for k in ("building", "room") if loc.get(k))
        text = f"{who} kind={doc.get('kind')} model={doc.get('model') or doc.get('profile')}"
        text += f" at {where}" if where else ""
        return line(None, "meta", f"{text} metrics={len(units)}", "cyan")
    if kind == "cmd_result":
        ok = doc.get("ok")
        text = f"{who} ok={ok}" + (f" error: {doc['error']}" if doc.get("error") else "")
        return line(None, "cmd_res", text, "green" if ok is True else "red")
    return line(None, kind, _preview(payload))


def render_line(
    topic: str,
    payload: bytes,
    *,
    state: ContractState | None = None,
    color: bool = False,
    tz: tzinfo | None = None,
    received: float | None = None,
) -> str:
    """One human line for one message (``tail`` mode).

    ``state`` (fed with this message or earlier ones) supplies ROOT and the metric
    units from ``meta``; without it ROOT is taken as the first three topic levels.
    Times are the message's own ``ts`` (else ``received``/now) in ``tz`` (default local).
    """
    text = line_text(topic, payload, state=state, tz=tz, received=received)
    # Never wrapped or cut: a pipe or ``less -S`` gets all of it.
    return _ansi(text.render(_OFFSCREEN), color)


def _preview(payload: bytes, limit: int = 80) -> str:
    text = escape_controls(payload[:limit].decode("utf-8", errors="replace"))
    return text + ("…" if len(payload) > limit else "")


# -- view mode ---------------------------------------------------------------------------------
def _cell(text: str = "", style: str = "", *, width: int | None = None) -> Text:
    cell = Text(text, style=style, no_wrap=True, overflow="ellipsis", end="")
    if width is not None:
        cell.align("left", width)  # pads or cuts by terminal cells, not characters
    return cell


def _row(*parts: tuple[str, str] | str | Text) -> Text:
    """One screen line from plain strings and ``(text, style)`` pairs; cut with ``…``."""
    return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")


DeviceRow = tuple[Text, Text, Text, Text]


def _key_metrics(dev: DeviceView) -> list[str]:
    chosen = [m for m in KEY_METRICS if m in dev.values][:MAX_ROW_METRICS]
    if chosen:
        return chosen
    order = [m for m in dev.units if m in dev.values] + [
        m for m in dev.values if m not in dev.units
    ]
    return order[:MAX_ROW_METRICS]


class Dashboard:
    """The ``view`` screen as a rich renderable: it fills whatever size rich gives it."""

    def __init__(
        self,
        state: ContractState,
        language: Language = "en",
        *,
        now: float | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        self.state = state
        self.language = language
        self.now = now
        self.tz = tz

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or options.size.height
        yield self.build(options.max_width, height)

    def build(self, width: int, height: int) -> Group:
        """What fits in ``width`` x ``height``: header, devices, alarms, recent events."""
        state = self.state
        now = state.clock() if self.now is None else self.now
        language = self.language

        def t(key: str) -> str:
            return _label(language, key)

        header = _header(state, t, now, self.tz)
        devices = _device_rows(state, t, now)
        alarms = _alarm_rows(state, t)
        recent = _recent_rows(state, t, self.tz)
        n_d, n_a, n_r = _allocate(height - len(header) - 1, len(devices), len(alarms), len(recent))

        def more(n: int) -> Text:
            return _row((f" … {n} {t('more')}", "dim"))

        parts: list[RenderableType] = [*header, _row(("─" * width, "dim"))]
        rows = _cut(devices, n_d, more)
        # Fixed widths for the first three columns: every building's table lines up.
        keys = [r[0].cell_len for r in rows if not isinstance(r, Text)]
        widths = (min(max(keys, default=0), max(12, width // 3), 40), 9, 5)
        for is_line, group in groupby(rows, key=lambda r: isinstance(r, Text)):
            if is_line:
                parts.extend(r for r in group if isinstance(r, Text))
                continue
            table = Table.grid(padding=(0, 1, 0, 0), expand=True)
            for w in widths:
                table.add_column(width=w, no_wrap=True, overflow="ellipsis")
            table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
            for row in group:
                if not isinstance(row, Text):
                    table.add_row(*row)
            parts.append(table)
        parts += [*_cut(alarms, n_a, more), *_cut(recent, n_r, more)]
        return Group(*parts)


def render_dashboard(
    state: ContractState,
    width: int,
    height: int,
    language: Language = "en",
    *,
    color: bool = False,
    now: float | None = None,
    tz: tzinfo | None = None,
) -> str:
    """One screen (``height`` lines of at most ``width`` columns) of what the platform sees."""
    width = max(10, width)
    height = max(1, height)
    dashboard = Dashboard(state, language, now=now, tz=tz)
    return "\n".join(_lines(dashboard.build(width, height), width, height, color))


def _header(
    state: ContractState, t: Callable[[str], str], now: float, tz: tzinfo | None
) -> list[Text]:
    gws = list(state.gateways.values())
    line1: list[tuple[str, str] | str] = [(t("title"), "bold"), f" · {state.root} · "]
    if state.pattern.wildcard:
        online = sum(1 for g in gws if g.state == "online")
        line1.append((f"{t('gateways')} {online}/{len(gws)}", "green" if online else "red"))
    else:
        gw = state.gateway
        st = gw.state if gw and gw.state else "unknown"
        line1 += [f"{t('agent')} ", (f"● {t(st)}", _STATE_STYLE.get(st, "yellow"))]
        if gw and gw.agent_version:
            line1.append((f" v{gw.agent_version}", "dim"))
        uptime = gw.health.uptime_s if gw and gw.health else None
        if uptime is None and gw and gw.state == "online" and gw.status_ts is not None:
            uptime = now - gw.status_ts
        if uptime is not None:
            line1.append(f" · {t('up')} {_format_uptime(uptime)}")
    line1.append((f" · {clock_text(now, tz, ms=False)}", "dim"))

    healths = [g.health for g in gws if g.health is not None]
    line2: list[tuple[str, str] | str] = [f"{t('broker')} "]
    if state.connected is None:
        line2.append((t("connecting"), "yellow"))
    elif state.connected:
        line2.append((t("connected"), "green"))
    else:
        line2.append((t("disconnected"), "red"))
    line2.append(" · ")
    if healths:
        depth = sum(h.depth or 0 for h in healths)
        text = f"{t('outbox')} {depth}"
        extra = []
        if any(h.bytes is not None for h in healths):
            extra.append(_format_bytes(sum(h.bytes or 0 for h in healths)))
        oldest = [h.oldest_age_s for h in healths if h.oldest_age_s is not None]
        if oldest:
            extra.append(f"{t('oldest')} {format_age(max(oldest))}")
        if extra:
            text += f" ({', '.join(extra)})"
        line2.append((text, "yellow" if depth else ""))
        dropped = sum(h.dropped_total for h in healths)
        line2.append((f" · {t('dropped')} {dropped}", "red" if dropped else ""))
        rates = [h.publish_rate for h in healths if h.publish_rate is not None]
        if rates:
            line2.append(f" · {t('pub')} {sum(rates):.1f}/s")
    else:
        line2.append((f"{t('outbox')} -", "dim"))
    line2.append(f" · {t('rx')} {state.rx_rate(now):.1f}/s")
    if state.connected is False and state.connection_note:
        line2.append((f" ({state.connection_note})", "red"))

    line3: list[tuple[str, str] | str] = [
        f"{t('msgs')} {state.messages}",
        (f" · {t('gaps')} {state.gaps}", "red" if state.gaps else ""),
        (f" · {t('dup')} {state.duplicates}", "yellow" if state.duplicates else ""),
        f" · {t('historical')} {state.historical}",
        (f" · {t('malformed')} {state.malformed}", "red" if state.malformed else ""),
    ]
    if state.malformed_log:
        topic, reason = state.malformed_log[-1]
        if not state.pattern.wildcard:
            topic = topic.removeprefix(state.root + "/")
        line3.append((f" ({t('last')}: {topic}: {reason})", "red"))
    return [_row(*line1), _row(*line2), _row(*line3)]


def _device_rows(
    state: ContractState, t: Callable[[str], str], now: float
) -> list[Text | DeviceRow]:
    """The header and one row per device (four cells each); building names are lines."""
    devs = sorted(
        state.devices.values(),
        key=lambda d: (d.building is None, d.building or "", d.key),
    )
    if not devs:
        return [_row((t("no_devices"), "dim"))]
    rows: list[Text | DeviceRow] = [
        (
            _cell(f" {t('device')}", "bold"),
            _cell(t("state"), "bold"),
            _cell(t("age"), "bold"),
            _cell(t("values"), "bold"),
        )
    ]
    building: str | bool | None = False  # False: no group printed yet
    for dev in devs:
        if dev.building != building:
            building = dev.building
            rows.append(_row((f"■ {dev.building or t('no_building')}", "cyan")))
        st = dev.state or "unknown"
        age = None if dev.last_ts is None else now - dev.last_ts
        values: list[tuple[str, str] | str] = []
        for name in _key_metrics(dev):
            mv = dev.values[name]
            metric = _metric_text(name, mv.value, dev.units, short=True) + " "
            values.append((metric, _QUALITY_STYLE.get(mv.quality, "yellow")))
        if not dev.values:
            counts = [("events", dev.events), ("alarms", dev.alarms), ("snapshots", dev.snapshots)]
            values.append((" ".join(f"{k}={n}" for k, n in counts if n) + " ", "dim"))
        if dev.last_error and st != "online":
            values.append((str(dev.last_error), "red"))
        rows.append(
            (
                _cell(f" {dev.key}"),
                _cell(t(st), _STATE_STYLE.get(st, "")),
                _cell(format_age(age)),
                _row(*values),
            )
        )
    return rows


def _alarm_rows(state: ContractState, t: Callable[[str], str]) -> list[Text]:
    if not state.active_alarms:
        return []
    alarms = sorted(
        state.active_alarms.values(),
        key=lambda a: (_SEVERITY_ORDER.get(a.severity or "", 9), a.raised_at or "", a.key),
    )
    rows = [_row((f"{t('alarms')} ({len(alarms)})", "bold"))]
    for a in alarms:
        sev = a.severity or "?"
        unacked = a.state is not None and "unacked" in a.state
        parts: list[tuple[str, str] | str | Text] = [
            " ",
            _cell(t(sev), _SEVERITY_STYLE.get(sev, ""), width=6),
            f" {a.device or '?'} {a.rule or a.alarm_id} ",
            (f"{t(a.state or 'unknown')} ", "yellow" if unacked else ""),
        ]
        if a.value is not None:
            cmp = format_value(a.value)
            if a.threshold is not None:
                cmp += f"/{format_value(a.threshold)}"
            parts.append(cmp + " ")
        if a.snapshot:
            # before the message: the one thing to find the picture by, kept on a narrow screen
            parts.append((f"{t('picture')} {a.snapshot} ", "cyan"))
        if a.message:
            parts.append((a.message, "dim"))
        rows.append(_row(*parts))
    return rows


def _recent_rows(state: ContractState, t: Callable[[str], str], tz: tzinfo | None) -> list[Text]:
    if not state.events:
        return []
    rows = [_row((t("recent"), "bold"))]
    for ev in reversed(state.events):
        ts = ev.ts if ev.ts is not None else ev.received
        head = f" {clock_text(ts, tz, ms=False)} {ev.key} "
        if ev.kind == "alarm":
            sev = str(ev.data.get("severity") or "")
            style = _SEVERITY_STYLE.get(sev, "magenta")
            rows.append(_row(head, (f"{t('alarm')} {ev.type} ", style), _alarm_summary(ev.data)))
        else:
            rows.append(_row(head, (f"{ev.type} ", "cyan"), _event_summary(ev.type, ev.data)))
    return rows


def _allocate(budget: int, want_d: int, want_a: int, want_r: int) -> tuple[int, int, int]:
    """Share ``budget`` lines: alarms first (up to 6), a few recent events, devices the rest;
    lines a section does not need go to the events, then to the alarms."""
    if budget <= 0:
        return 0, 0, 0
    n_a = min(want_a, 6)
    n_r = min(want_r, 4)
    # Keep at least a few device rows on small screens: shrink recent, then alarms.
    min_d = min(want_d, 3)
    while n_a + n_r + min_d > budget and (n_r or n_a):
        if n_r > 2 or (n_r and n_a <= 2):
            n_r = n_r - 1 if n_r > 2 else 0
        else:
            n_a = n_a - 1 if n_a > 2 else 0
    n_d = min(want_d, max(0, budget - n_a - n_r))
    spare = budget - n_a - n_r - n_d
    extra_r = min(spare, want_r - n_r)
    n_r += extra_r
    n_a += min(spare - extra_r, want_a - n_a)
    return n_d, n_a, n_r


def _cut(rows: list[_R], n: int, more: Callable[[int], _R]) -> list[_R]:
    """The first ``n`` rows, the last of them saying how many more there are."""
    if n >= len(rows):
        return rows
    if n <= 0:
        return []
    return [*rows[: n - 1], more(len(rows) - (n - 1))]
