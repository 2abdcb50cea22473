"""Live view of what the platform receives: a subscriber to the uplink contract.

The console knows only the MQTT contract (the shared CONTRACT.md, ``docs/mqtt.md``):
topics and JSON payloads. It never imports the agent's internals, so what it shows is
exactly what a platform subscriber would see — including holes in ``seq`` and
retransmitted ``msg_id`` s.

Three layers, each usable alone::

    ContractState.feed(topic, payload, retain)   pure model, no I/O (unit-tested)   here
    render_line / render_dashboard / Dashboard   drawn with rich                    console_view
    run_console(host, port, root, mode=...)      an MQTT subscriber driving both    here

Topics are read with :mod:`edge_agent.topics` and the connection is the agent's own
client wrapper (:class:`edge_agent.mqtt.client.Subscriber`: MQTT 5 first, 3.1.1 when the
broker refuses it, TLS, credentials); neither pulls in the publisher or the outbox.

Colours are only used when the output is a terminal (and ``NO_COLOR`` is not set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import ssl
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO

from rich.console import Console
from rich.live import Live

from edge_agent.mqtt.client import ClientOptions, Subscriber
from edge_agent.topics import RootPattern, classify

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

Mode = Literal["tail", "view"]
Language = Literal["en", "zh"]
Protocol = Literal["5", "3.1.1"]

_MAX_SEEN_MSG_IDS = 200_000
_RATE_WINDOW_S = 10.0
#: Redraws per second at most in ``view`` mode; ages are refreshed at least once a second.
_REDRAW_MIN_S = 0.5
_REDRAW_MAX_S = 1.0
_TAIL_TICK_S = 0.1


# -- model -------------------------------------------------------------------------------------
@dataclass(slots=True)
class MetricValue:
    """The latest value of one metric, with its measurement time (UNIX s) and quality."""

    value: Any
    ts: float | None
    quality: str


@dataclass(slots=True)
class DeviceView:
    """What the platform knows about one device (from ``meta``, ``state`` and envelopes)."""

    key: str
    device_id: str
    root: str
    kind: str | None = None
    model: str | None = None
    building: str | None = None
    room: str | None = None
    units: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    has_meta: bool = False
    state: str | None = None
    state_since: str | None = None
    last_error: str | None = None
    values: dict[str, MetricValue] = field(default_factory=dict)
    last_ts: float | None = None
    last_quality: str | None = None
    messages: int = 0
    telemetry: int = 0
    events: int = 0
    alarms: int = 0
    snapshots: int = 0


@dataclass(slots=True)
class HealthView:
    """``ROOT/health`` normalised; ``None`` where the payload did not say."""

    received: float
    raw: dict[str, Any]
    depth: int | None = None
    bytes: int | None = None
    oldest_age_s: float | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    publish_rate: float | None = None
    uptime_s: float | None = None

    @property
    def dropped_total(self) -> int:
        """Messages evicted by the retention policy, all lanes."""
        return sum(self.dropped.values())


@dataclass(slots=True)
class GatewayView:
    """One agent (one ``ROOT``): its status and latest health."""

    root: str
    state: str | None = None
    reason: str | None = None
    agent_version: str | None = None
    epoch: str | None = None
    device_count: int | None = None
    status_ts: float | None = None
    status_received: float | None = None
    health: HealthView | None = None


@dataclass(slots=True)
class EventView:
    """One event or alarm transition, for the "recent" list."""

    kind: Literal["event", "alarm"]
    key: str
    device_id: str
    type: str
    ts: float | None
    received: float
    data: dict[str, Any]
    historical: bool = False


@dataclass(slots=True)
class AlarmView:
    """One retained ``ROOT/alarms/active/{alarm_id}``."""

    key: str
    alarm_id: str
    root: str
    device: str | None
    rule: str | None
    severity: str | None
    state: str | None
    value: Any
    threshold: Any
    message: str | None
    raised_at: str | None
    acked_by: str | None
    received: float
    #: the topic of its picture from ``snapshots/`` on (``snapshot.topic``), or None
    snapshot: str | None = None


@dataclass(slots=True)
class CommandResultView:
    """One ``ROOT/cmd_result/{request_id}``."""

    root: str
    request_id: str
    ok: bool | None
    error: str | None
    received: float


def snapshot_topic(data: Mapping[str, Any]) -> str | None:
    """The topic of the picture an alarm carries (the contract's ``snapshot.topic``), from
    its ``snapshots/`` level on (the gateway's root is the same for all), or None."""
    snap = data.get("snapshot")
    topic = snap.get("topic") if isinstance(snap, Mapping) else None
    if not isinstance(topic, str) or not topic:
        return None
    levels = topic.split("/")
    # the picture topic ends in the levels snapshots, camera, id: keep those three
    return "/".join(levels[-3:]) if len(levels) > 3 and levels[-3] == "snapshots" else topic


class _SeqWindow:
    """The ``seq`` numbers seen in one epoch: a range ``[lo, hi]`` minus known holes.

    Holes are kept as disjoint ``[start, end]`` intervals so a jump of a million
    (retention eviction) costs one entry, and a late message (lanes drain in
    priority order, so seq order is not arrival order) fills its hole again.
    """

    __slots__ = ("hi", "holes", "lo", "skipped")

    def __init__(self, seq: int) -> None:
        self.lo = seq
        self.hi = seq
        self.holes: list[list[int]] = []
        #: ranges the gateway announced as never used (``seq_skipped`` events): not a loss
        self.skipped: list[tuple[int, int]] = []

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already seen (a reused seq)."""
        if seq > self.hi:
            if seq > self.hi + 1:
                self.holes.append([self.hi + 1, seq - 1])
            self.hi = seq
            return True
        if seq < self.lo:
            if seq < self.lo - 1:
                self.holes.insert(0, [seq + 1, self.lo - 1])
            self.lo = seq
            return True
        for i, (start, end) in enumerate(self.holes):
            if start <= seq <= end:
                if start == end:
                    del self.holes[i]
                elif seq == start:
                    self.holes[i][0] = seq + 1
                elif seq == end:
                    self.holes[i][1] = seq - 1
                else:
                    self.holes[i : i + 1] = [[start, seq - 1], [seq + 1, end]]
                return True
        return False

    def skip(self, start: int, end: int) -> None:
        """The gateway says ``start``..``end`` were never used (a seq reservation left
        behind by an unclean stop): holes there are not missing messages."""
        if start <= end:
            self.skipped.append((start, end))

    @property
    def missing(self) -> int:
        missing = 0
        for start, end in self.holes:
            missing += end - start + 1
            for s_start, s_end in self.skipped:
                overlap = min(end, s_end) - max(start, s_start) + 1
                if overlap > 0:
                    missing -= overlap
        return missing


def parse_ts(value: Any) -> float | None:
    """Contract timestamp (ISO 8601 ``...Z`` or UNIX seconds) to UNIX seconds, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return None


def _pick(d: Mapping[str, Any], *paths: str) -> Any:
    """First value found at one of the dotted ``paths`` (health field names are tolerant)."""
    for path in paths:
        cur: Any = d
        for part in path.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            else:
                break
        else:
            if cur is not None:
                return cur
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def parse_health(raw: dict[str, Any], received: float) -> HealthView:
    depth = _num(_pick(raw, "outbox.depth", "outbox_depth", "outbox.count", "depth"))
    size = _num(_pick(raw, "outbox.bytes", "outbox_bytes", "bytes"))
    dropped_raw = _pick(raw, "dropped", "outbox.dropped", "dropped_by_lane")
    dropped: dict[str, int] = {}
    if isinstance(dropped_raw, Mapping):
        for lane, count in dropped_raw.items():
            n = _num(count)
            if n is not None:
                dropped[str(lane)] = int(n)
    elif (n := _num(dropped_raw)) is not None:
        dropped["all"] = int(n)
    return HealthView(
        received=received,
        raw=raw,
        depth=None if depth is None else int(depth),
        bytes=None if size is None else int(size),
        oldest_age_s=_num(_pick(raw, "outbox.oldest_age_s", "outbox_oldest_age_s", "oldest_age_s")),
        dropped=dropped,
        publish_rate=_num(
            _pick(
                raw,
                "publish_rate",
                "publish_rate_per_s",
                "publish.rate_per_s",
                "publisher.rate_per_s",
                "publisher.publish_rate",
                "publish_rate_hz",
            )
        ),
        uptime_s=_num(_pick(raw, "uptime_s", "uptime")),
    )


def metrics_from_meta(meta: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """``metrics`` as a list of ``{name, unit, description}`` or a dict keyed by name."""
    units: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    metrics = meta.get("metrics", meta.get("points"))
    items: Iterable[tuple[str, Any]] = ()
    if isinstance(metrics, Mapping):
        items = ((str(k), v) for k, v in metrics.items())
    elif isinstance(metrics, list):
        items = ((str(m.get("name")), m) for m in metrics if isinstance(m, Mapping))
    for name, info in items:
        if isinstance(info, Mapping):
            units[name] = str(info.get("unit") or "")
            if info.get("description"):
                descriptions[name] = str(info["description"])
        elif isinstance(info, str):
            units[name] = info
    return units, descriptions


class ContractState:
    """What a platform subscriber knows after the messages fed so far.

    Pure and synchronous: ``feed(topic, payload, retain)`` never raises and never does
    I/O, so it is driven by ``run_console`` and by tests alike. ``root`` is
    ``prefix/site/gw`` or a pattern with ``+`` levels (then device keys include the root).
    """

    def __init__(
        self,
        root: str = "+/+/+",
        *,
        max_events: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pattern = RootPattern(root)
        self.root = self.pattern.text
        self.clock = clock
        self.gateways: dict[str, GatewayView] = {}
        self.devices: dict[str, DeviceView] = {}
        self.events: deque[EventView] = deque(maxlen=max_events)
        self.active_alarms: dict[str, AlarmView] = {}
        self.cmd_results: deque[CommandResultView] = deque(maxlen=max_events)
        #: every message received under ROOT
        self.messages = 0
        #: seq numbers missing within an epoch (not yet filled by a late message)
        self.gaps = 0
        #: envelopes whose msg_id was already seen (retransmissions)
        self.duplicates = 0
        #: envelopes with a new msg_id but a seq already used in the same epoch
        self.seq_reused = 0
        self.malformed = 0
        #: ``(topic, reason)`` of the latest malformed messages
        self.malformed_log: deque[tuple[str, str]] = deque(maxlen=10)
        self.historical = 0
        self.snapshots = 0
        self.commands_seen = 0
        self.unknown = 0
        self.counts: dict[str, int] = {}
        #: None until the first connection attempt ends; then True/False
        self.connected: bool | None = None
        self.connection_note = ""
        self.reconnects = 0
        self._seq: dict[tuple[str, str], _SeqWindow] = {}
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._rx_times: deque[float] = deque()

    # -- derived -------------------------------------------------------------------------
    @property
    def gateway(self) -> GatewayView | None:
        """The single gateway when ROOT names one (or the first one seen)."""
        return next(iter(self.gateways.values()), None)

    @property
    def status(self) -> str | None:
        """Agent status (``online``/``offline``) of the single gateway, None if never seen."""
        gw = self.gateway
        return gw.state if gw else None

    @property
    def health(self) -> HealthView | None:
        gw = self.gateway
        return gw.health if gw else None

    def rx_rate(self, now: float | None = None) -> float:
        """Messages per second received over the last 10 s."""
        now = self.clock() if now is None else now
        self._trim_rx(now)
        return len(self._rx_times) / _RATE_WINDOW_S

    def device_key(self, root: str, device_id: str) -> str:
        return f"{root}/{device_id}" if self.pattern.wildcard else device_id

    # -- connection (set by run_console) ----------------------------------------------------
    def set_connection(self, up: bool, note: str = "") -> None:
        if up and self.connected is False:
            self.reconnects += 1
        self.connected = up
        self.connection_note = note

    # -- feeding -------------------------------------------------------------------------
    def feed(self, topic: str, payload: bytes, retain: bool = False) -> str:
        """Apply one message; returns its kind (``telemetry``, ``malformed``, ``foreign`` ...)."""
        topic = escape_controls(topic)
        split = self.pattern.split(topic)
        if split is None:
            return "foreign"
        root, rel = split
        now = self.clock()
        self.messages += 1
        self._rx_times.append(now)
        self._trim_rx(now)
        kind, ident = classify(rel)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "unknown":
            self.unknown += 1
            return kind
        if kind == "snapshot":
            self.snapshots += 1
            assert ident is not None
            self._device(root, ident).snapshots += 1
            return kind
        if kind == "cmd":
            self.commands_seen += 1
            return kind
        if not payload:
            # An empty retained payload clears the retained message (contract: alarms/active).
            self._clear(root, kind, ident)
            return "cleared"
        doc, error = decode_payload(payload)
        if doc is None:
            self._malformed(topic, error)
            return "malformed"
        try:
            self._apply(root, kind, ident, doc, now)
        except _Malformed as err:
            self._malformed(topic, str(err))
            return "malformed"
        return kind

    def _trim_rx(self, now: float) -> None:
        while self._rx_times and self._rx_times[0] < now - _RATE_WINDOW_S:
            self._rx_times.popleft()

    def _malformed(self, topic: str, reason: str) -> None:
        self.malformed += 1
        self.malformed_log.append((topic, reason))
        log.debug("malformed message on %s: %s", topic, reason)

    def _gateway(self, root: str) -> GatewayView:
        gw = self.gateways.get(root)
        if gw is None:
            gw = self.gateways[root] = GatewayView(root)
        return gw

    def _device(self, root: str, device_id: str) -> DeviceView:
        key = self.device_key(root, device_id)
        dev = self.devices.get(key)
        if dev is None:
            dev = self.devices[key] = DeviceView(key=key, device_id=device_id, root=root)
        dev.messages += 1
        return dev

    def _clear(self, root: str, kind: str, ident: str | None) -> None:
        if kind == "alarm_active" and ident is not None:
            self.active_alarms.pop(self.device_key(root, ident), None)
        elif kind == "meta" and ident is not None:
            self.devices.pop(self.device_key(root, ident), None)
        elif kind == "status":
            self.gateways.pop(root, None)

    def _apply(
        self, root: str, kind: str, ident: str | None, doc: dict[str, Any], now: float
    ) -> None:
        if kind == "status":
            gw = self._gateway(root)
            gw.state = _opt_str(doc.get("state"))
            gw.reason = _opt_str(doc.get("reason"))
            gw.agent_version = _opt_str(doc.get("agent_version")) or gw.agent_version
            gw.epoch = _opt_str(doc.get("epoch")) or gw.epoch
            n = _num(doc.get("devices"))
            gw.device_count = int(n) if n is not None else gw.device_count
            gw.status_ts = parse_ts(doc.get("ts"))
            gw.status_received = now
        elif kind == "health":
            self._gateway(root).health = parse_health(doc, now)
        elif kind == "meta":
            assert ident is not None
            dev = self._device(root, ident)
            dev.kind = _opt_str(doc.get("kind"))
            dev.model = _opt_str(doc.get("model")) or _opt_str(doc.get("profile"))
            loc_raw = doc.get("location")
            loc: Mapping[str, Any] = loc_raw if isinstance(loc_raw, Mapping) else doc
            dev.building = _opt_str(loc.get("building"))
            dev.room = _opt_str(loc.get("room"))
            dev.units, dev.descriptions = metrics_from_meta(doc)
            dev.has_meta = True
        elif kind == "state":
            assert ident is not None
            dev = self._device(root, ident)
            dev.state = _opt_str(doc.get("state"))
            dev.state_since = _opt_str(doc.get("since"))
            dev.last_error = _opt_str(doc.get("last_error"))
        elif kind == "telemetry":
            assert ident is not None
            data = _envelope_data(doc)
            fresh = self._track(root, doc)
            dev = self._device(root, ident)
            dev.telemetry += 1
            ts = parse_ts(doc.get("ts"))
            quality = _opt_str(doc.get("quality")) or "good"
            # A backlog replay may deliver an older reading after a newer one: keep the newest.
            # A retransmission (known msg_id) is dropped, as a de-duplicating platform does.
            if fresh and (dev.last_ts is None or ts is None or ts >= dev.last_ts):
                for metric, value in data.items():
                    dev.values[str(metric)] = MetricValue(value, ts, quality)
                dev.last_ts = ts if ts is not None else now
                dev.last_quality = quality
        elif kind == "event":
            assert ident is not None
            data = _envelope_data(doc)
            fresh = self._track(root, doc)
            dev = self._device(root, ident)
            dev.events += 1
            if fresh:
                self.events.append(
                    EventView(
                        kind="event",
                        key=dev.key,
                        device_id=ident,
                        type=_opt_str(doc.get("type")) or "?",
                        ts=parse_ts(doc.get("ts")),
                        received=now,
                        data=data,
                        historical=doc.get("historical") is True,
                    )
                )
        elif kind == "alarm":
            data = _envelope_data(doc)
            fresh = self._track(root, doc)
            device = _opt_str(data.get("device")) or _opt_str(doc.get("device")) or "?"
            self._device(root, device).alarms += 1
            if fresh:
                self.events.append(
                    EventView(
                        kind="alarm",
                        key=self.device_key(root, device),
                        device_id=device,
                        type=_opt_str(data.get("rule")) or "alarm",
                        ts=parse_ts(doc.get("ts")),
                        received=now,
                        data=data,
                        historical=doc.get("historical") is True,
                    )
                )
        elif kind == "alarm_active":
            assert ident is not None
            inner = doc.get("data")
            data = inner if isinstance(inner, dict) else doc
            key = self.device_key(root, ident)
            self.active_alarms[key] = AlarmView(
                key=key,
                alarm_id=ident,
                root=root,
                device=_opt_str(data.get("device")) or _opt_str(doc.get("device")),
                rule=_opt_str(data.get("rule")),
                severity=_opt_str(data.get("severity")),
                state=_opt_str(data.get("state")),
                value=data.get("value"),
                threshold=data.get("threshold"),
                message=_opt_str(data.get("message")),
                raised_at=_opt_str(data.get("raised_at")),
                acked_by=_opt_str(data.get("acked_by")),
                received=now,
                snapshot=snapshot_topic(data),
            )
        elif kind == "cmd_result":
            assert ident is not None
            ok = doc.get("ok")
            self.cmd_results.append(
                CommandResultView(
                    root=root,
                    request_id=ident,
                    ok=ok if isinstance(ok, bool) else None,
                    error=_opt_str(doc.get("error")),
                    received=now,
                )
            )

    def _track(self, root: str, doc: Mapping[str, Any]) -> bool:
        """What a platform does with ``msg_id``/``epoch``/``seq``: find duplicates and holes.

        Returns False for a retransmission (a ``msg_id`` seen before)."""
        if doc.get("historical") is True:
            self.historical += 1
        msg_id = doc.get("msg_id")
        if isinstance(msg_id, str) and msg_id:
            if msg_id in self._seen_ids:
                self.duplicates += 1
                return False
            self._seen_ids[msg_id] = None
            if len(self._seen_ids) > _MAX_SEEN_MSG_IDS:
                self._seen_ids.popitem(last=False)
        epoch, seq = doc.get("epoch"), doc.get("seq")
        if not isinstance(epoch, str) or isinstance(seq, bool) or not isinstance(seq, int):
            return True
        window = self._seq.get((root, epoch))
        if window is None:
            window = self._seq[(root, epoch)] = _SeqWindow(seq)
        elif not window.add(seq):
            self.seq_reused += 1
        if doc.get("kind") == "event" and doc.get("type") == "seq_skipped":
            data = doc.get("data")
            if isinstance(data, dict):
                lo, hi = data.get("from"), data.get("to")
                if type(lo) is int and type(hi) is int:
                    window.skip(lo, hi)
        self.gaps = sum(w.missing for w in self._seq.values())
        return True


# -- terminal safety ---------------------------------------------------------------------------
#: What a message must not send to the operator's terminal: C0 controls (ESC starts CSI/OSC
#: sequences that retitle, recolour or clear it; BEL, \r, backspace), DEL, C1 controls
#: (U+009B is a one-character CSI), line/paragraph separators and bidirectional overrides
#: that reorder what the operator reads.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every terminal control character written out (ESC as ``\\x1b``,
    CR as ``\\r``): topics, ids and payload values come from the network."""
    return _CONTROL.sub(_escape_char, text)


def _escape_value(value: Any) -> Any:
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, list):
        return [_escape_value(v) for v in value]
    return value  # numbers, booleans, null, and objects (already escaped by the hook)


def _escaped_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {escape_controls(k): _escape_value(v) for k, v in pairs}


class _Malformed(Exception):
    """A JSON message that does not have the shape the contract gives it."""


def decode_payload(payload: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        # Every key and string comes out escaped, so nothing built from the payload
        # (tail lines, the dashboard, error notes) can carry a control sequence.
        doc = json.loads(payload.decode("utf-8"), object_pairs_hook=_escaped_object)
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err.msg} at {err.pos}"
    except RecursionError:
        return None, "JSON nested too deep"
    if not isinstance(doc, dict):
        return None, f"JSON {type(doc).__name__}, not an object"
    return doc, ""


def _envelope_data(doc: Mapping[str, Any]) -> dict[str, Any]:
    data = doc.get("data")
    if not isinstance(data, dict):
        raise _Malformed("envelope without a 'data' object")
    return data


def _opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


# -- the MQTT side -------------------------------------------------------------------------------
def _is_tty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


async def run_console(
    host: str,
    port: int,
    root: str,
    *,
    mode: Mode = "tail",
    protocol: Protocol = "5",
    duration_s: float | None = None,
    username: str | None = None,
    password: str | None = None,
    tls: bool | ssl.SSLContext = False,
    out: TextIO | None = None,
    language: Language = "en",
    color: bool | None = None,
    state: ContractState | None = None,
    keepalive_s: int = 30,
) -> ContractState:
    """Subscribe to ``root/#``; print a line per message (``tail``) or a live screen (``view``).

    Runs until ``duration_s`` has passed (forever when None) or the task is cancelled
    (CancelledError is re-raised; pass ``state`` to keep what was seen). Reconnects by
    itself while the broker is away. The paho network thread is stopped before returning.
    ``color`` defaults to "``out`` is a terminal".
    """
    from edge_agent.tools.tail.view import Dashboard, render_dashboard  # it imports this module

    if mode not in ("tail", "view"):
        raise ValueError(f"mode must be 'tail' or 'view', not {mode!r}")
    if protocol not in ("5", "3.1.1"):
        raise ValueError(f"protocol must be '5' or '3.1.1', not {protocol!r}")
    stream = out if out is not None else sys.stdout
    st = state if state is not None else ContractState(root)
    if state is not None and state.root != RootPattern(root).text:
        raise ValueError(f"state was made for root {state.root!r}, not {root!r}")
    tty = _is_tty(stream)
    use_color = (tty and "NO_COLOR" not in os.environ) if color is None else color
    inbox: deque[tuple[str, bytes, bool] | tuple[bool, str]] = deque()
    session = _subscriber(st.pattern, protocol, username, password, tls, inbox)
    loop = asyncio.get_running_loop()
    deadline = None if duration_s is None else loop.time() + duration_s
    dashboard = Dashboard(st, language)
    # On a terminal rich redraws the screen in place (alternate screen, no refresh thread:
    # we refresh when something changed, at most twice a second, and once a second for the
    # ages); into a pipe or file each redraw is appended as plain lines.
    live: Live | None = None
    term = Console(file=stream, color_system="auto" if use_color else None, emoji=False)
    if mode == "view" and tty and not term.is_dumb_terminal:  # TERM=dumb cannot redraw
        live = Live(
            dashboard,
            console=term,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def draw() -> None:
        if live is not None:
            live.refresh()
            return
        size = shutil.get_terminal_size((100, 30))
        text = render_dashboard(st, size.columns, size.lines, language, color=use_color)
        stream.write(text + "\n\n")
        stream.flush()

    log.info(
        "console: watching %s on %s:%d (MQTT %s)", st.pattern.subscription, host, port, protocol
    )
    session.start(host, port, keepalive_s=keepalive_s)
    last_draw = -math.inf
    dirty = True
    try:
        if live is not None:
            live.start()
        while True:
            changed = _drain(inbox, st, stream, mode, use_color)
            dirty = dirty or changed
            now = loop.time()
            if mode == "view" and (
                (dirty and now - last_draw >= _REDRAW_MIN_S) or now - last_draw >= _REDRAW_MAX_S
            ):
                draw()
                last_draw, dirty = now, False
            if mode == "tail" and changed:
                stream.flush()
            if deadline is not None and now >= deadline:
                break
            tick = _TAIL_TICK_S if mode == "tail" else _REDRAW_MIN_S / 2
            await asyncio.sleep(tick if deadline is None else max(0.0, min(tick, deadline - now)))
    finally:
        await _stop_client(session)
        _drain(inbox, st, stream, mode, use_color)
        if live is not None:
            live.stop()  # leaves the alternate screen; the last screen stays on the terminal
            live.console.print(dashboard)
        elif mode == "view":
            draw()
        stream.flush()
    return st


def _subscriber(
    pattern: RootPattern,
    protocol: Protocol,
    username: str | None,
    password: str | None,
    tls: bool | ssl.SSLContext,
    inbox: deque[tuple[str, bytes, bool] | tuple[bool, str]],
) -> Subscriber:
    options = ClientOptions(
        client_id=f"edge-console-{os.urandom(4).hex()}",
        protocol=protocol,
        username=username,
        password=password,
        tls=None
        if tls is False
        else (tls if isinstance(tls, ssl.SSLContext) else ssl.create_default_context()),
        reconnect_min_s=1,
        reconnect_max_s=10,
        connect_timeout_s=3.0,
    )

    # These callbacks run on paho's thread: they only append to ``inbox`` (deque.append is
    # thread-safe); the event loop owns ContractState and the output stream.
    def on_message(msg: mqtt.MQTTMessage) -> None:
        inbox.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    return Subscriber(
        options,
        [pattern.subscription],
        on_message,
        on_up=lambda protocol: inbox.append((True, f"MQTT {protocol}")),
        on_down=lambda reason: inbox.append((False, reason)),
        logger=log,
    )


def _drain(
    inbox: deque[tuple[str, bytes, bool] | tuple[bool, str]],
    state: ContractState,
    out: TextIO,
    mode: Mode,
    color: bool,
) -> bool:
    from edge_agent.tools.tail.view import clock_text, render_line  # it imports this module

    changed = False
    while inbox:
        item = inbox.popleft()
        changed = True
        if len(item) == 2:
            up, note = item
            was = state.connected
            state.set_connection(bool(up), str(note))
            if was is not up:
                if up:
                    log.info(
                        "console: connected (%s), subscribed to %s",
                        note,
                        state.pattern.subscription,
                    )
                else:
                    log.warning("console: broker connection lost (%s); reconnecting", note)
                if mode == "tail":
                    text = f"broker connected ({note})" if up else f"broker disconnected ({note})"
                    out.write(f"{clock_text(time.time(), None, ms=True)} --------- {text}\n")
            continue
        topic, payload, retain = item
        kind = state.feed(topic, payload, retain)
        if mode == "tail" and kind != "foreign":
            out.write(render_line(topic, payload, state=state, color=color) + "\n")
    return changed


async def _stop_client(session: Subscriber) -> None:
    """Disconnect and end paho's thread without blocking the event loop.

    ``loop_stop`` joins the network thread, which can sit in a TCP connect for up to
    ``connect_timeout``, so it runs on a short-lived thread that we wait for here.
    """
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def stop() -> None:
        try:
            session.stop()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed while we were stopping
                loop.call_soon_threadsafe(stopped.set)

    stopper = threading.Thread(target=stop, name="console-mqtt-stop", daemon=True)
    stopper.start()
    try:
        await stopped.wait()
    finally:
        # Only reached early when cancelled while stopping: then wait here, bounded.
        stopper.join(timeout=5)
