"""ONVIF notifications -> contract events, with no I/O.

Three steps, each usable alone:

1. **Read** a ``wsnt:NotificationMessage`` into a :class:`Notification` (topic, property
   operation, time, Source/Key/Data items as text): :func:`from_zeep` for what
   onvif-zeep-async's ``PullMessages`` returns, :func:`from_xml` for raw XML (a captured
   ``PullMessagesResponse`` or an Axis ``tt:MetadataStream``: the same message schema).
2. **Map** it (:func:`classify`): where onvif-parsers knows the topic it reads the value
   (``onvif_parsers.parse``, the parsers Home Assistant uses) and the entity it names picks
   the contract type (:data:`ENTITY_TYPES`); otherwise our own table (:data:`OWN_TOPICS`,
   vendor topics it does not know). Every boolean spelling a camera sends is accepted
   before either sees it: ``true``/``false`` (Hikvision, Dahua), ``1``/``0`` (Axis) and
   ``True`` (Pelco D6230L, not an xsd:boolean). Topics that are known but no contract event
   (CPU load, recording state, PTZ moves, "image too dark": lights off is not tamper) are
   :data:`IGNORED`; anything else is an unknown topic, which the driver logs once and counts.
3. **Edges** (:class:`EdgeTracker`): ONVIF reports *properties*. A subscription starts with
   one ``Initialized`` message per property (its current state), then ``Changed`` ones. The
   tracker keeps the last state per property (topic + Source + Key) and emits an event only
   when the state differs from it, with an unknown property taken as inactive. So the burst
   after a (re)subscription repeats nothing already reported (a motion still active after a
   camera reboot is not reported twice), an ``Initialized`` that differs (the motion ended
   while the camera was away) is reported once, and a camera that was already covered when
   the agent started is reported. Pulses (a line crossed: ``Changed`` only, no state) are
   events each time. The states are the driver's cursor, committed with the events, so a
   restart of the agent repeats nothing either.

Contract data: ``motion`` ``{zone, active}``, ``camera_tamper`` ``{reason, active}``
(``covered|defocused|moved|scene_change``), ``line_crossed`` ``{line, direction}``
(``direction`` is null: ONVIF's LineDetector does not say it), ``digital_input``
``{input, active}``. Zone, line and input names are the camera's rule or token names,
renamed by the device's ``names:``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET  # parses a camera's answer, never entities
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

Items = tuple[tuple[str, str], ...]

WSNT = "http://docs.oasis-open.org/wsn/b-2"
TT = "http://www.onvif.org/ver10/schema"

#: the contract's camera event types
CAMERA_TYPES = ("motion", "camera_tamper", "line_crossed", "digital_input")


@dataclass(frozen=True)
class Notification:
    """One ONVIF notification, every value as the camera wrote it (text)."""

    topic: str
    operation: str | None = None  # Initialized | Changed | Deleted | None
    utc_time: float | None = None  # UNIX seconds by the camera's clock
    source: Items = ()
    key: Items = ()
    data: Items = ()

    @property
    def prop(self) -> str:
        """The property's identity: topic, Source and Key items."""
        parts = [self.topic, *(f"{n}={v}" for n, v in self.source + self.key)]
        return "|".join(parts)


@dataclass(frozen=True)
class Mapped:
    """What a notification means for the contract: ``type`` and the data without the
    state; ``active`` the property's state (None for a pulse without one)."""

    type: str
    data: dict[str, Any]
    active: bool | None
    #: a pulse: each rising edge (or each Changed message without a state) is one event
    pulse: bool = False


class Ignored:
    """A known topic that is no contract event."""


IGNORE = Ignored()


class UnknownTopic(Exception):
    """No parser and no table entry knows the topic."""


class BadNotification(Exception):
    """The topic is known but the message does not have what it needs."""


# -- step 1: reading ------------------------------------------------------------------------
def _topic_text(text: str | None) -> str:
    # Pelco D6230L pretty-prints: "tns1:RuleEngine/...\n          "
    return re.sub(r"\s+", "", text or "")


def parse_duration(text: str) -> float | None:
    """An xsd:duration without years or months (``PT5S``, ``PT1M30S``, ``P1D``) in seconds;
    None when it is not one."""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?)?", text.strip())
    if m is None or not any(m.groups()):
        return None
    d, h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + sec


def parse_time(value: Any) -> float | None:
    """``UtcTime`` (a datetime from zeep, or text with or without ``Z``) -> UNIX seconds."""
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, str) and value.strip():
        try:
            t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if t.tzinfo is None:  # seen from a camera with tnshik topics: UtcTime without Z
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def _xml_items(parent: ET.Element | None) -> Items:
    if parent is None:
        return ()
    return tuple(
        (el.get("Name", ""), el.get("Value", "")) for el in parent.findall(f"{{{TT}}}SimpleItem")
    )


def from_xml(xml: bytes | str) -> list[Notification]:
    """Every ``wsnt:NotificationMessage`` in a document (PullMessagesResponse, Notify,
    MetadataStream), in order."""
    root = ET.fromstring(xml)  # noqa: S314  # stdlib expat: no external entities are fetched
    out = []
    for nm in root.iter(f"{{{WSNT}}}NotificationMessage"):
        topic = nm.find(f"{{{WSNT}}}Topic")
        msg = nm.find(f"{{{WSNT}}}Message/{{{TT}}}Message")
        if msg is None:
            out.append(Notification(_topic_text(topic.text if topic is not None else "")))
            continue
        out.append(
            Notification(
                topic=_topic_text(topic.text if topic is not None else ""),
                operation=msg.get("PropertyOperation"),
                utc_time=parse_time(msg.get("UtcTime")),
                source=_xml_items(msg.find(f"{{{TT}}}Source")),
                key=_xml_items(msg.find(f"{{{TT}}}Key")),
                data=_xml_items(msg.find(f"{{{TT}}}Data")),
            )
        )
    return out


def _zeep_items(group: Any) -> Items:
    if group is None:
        return ()
    items = getattr(group, "SimpleItem", None) or []
    return tuple((str(i.Name), "" if i.Value is None else str(i.Value)) for i in items)


def from_zeep(message: Any) -> Notification:
    """One ``NotificationMessage`` as onvif-zeep-async returns it (``Topic._value_1`` and
    ``Message._value_1``: a parsed ``tt:Message``, or an lxml element when the camera's
    message is not one zeep knows)."""
    topic = _topic_text(getattr(getattr(message, "Topic", None), "_value_1", None))
    body = getattr(getattr(message, "Message", None), "_value_1", None)
    if body is None:
        return Notification(topic)
    if hasattr(body, "tag"):  # an lxml element: read it as XML
        from lxml import etree  # type: ignore[import-untyped]

        wrapped = (
            f'<n:NotificationMessage xmlns:n="{WSNT}"><n:Message>'
            f"{etree.tostring(body, encoding='unicode')}</n:Message></n:NotificationMessage>"
        )
        found = from_xml(wrapped)
        return replace(found[0], topic=topic) if found else Notification(topic)
    return Notification(
        topic=topic,
        operation=getattr(body, "PropertyOperation", None),
        utc_time=parse_time(getattr(body, "UtcTime", None)),
        source=_zeep_items(getattr(body, "Source", None)),
        key=_zeep_items(getattr(body, "Key", None)),
        data=_zeep_items(getattr(body, "Data", None)),
    )


# -- step 2: mapping ------------------------------------------------------------------------
_TRUE = {"true", "1", "active", "on"}
_FALSE = {"false", "0", "inactive", "off"}


def parse_bool(value: str) -> bool | None:
    """``true``/``1`` and ``false``/``0`` in any case (Axis sends 1/0, Pelco ``True``), and
    ``active``/``inactive`` (``LogicalState`` of relays and inputs); None otherwise."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


#: onvif-parsers' entity name -> contract type (and tamper reason)
ENTITY_TYPES: dict[str, tuple[str, str | None]] = {
    "Motion Alarm": ("motion", None),
    "Cell Motion Detection": ("motion", None),
    "Motion Region Detection": ("motion", None),
    "Field Detection": ("motion", None),
    "Intrusion Detection": ("motion", None),
    "Person Detection": ("motion", None),
    "Human Shape Detection": ("motion", None),
    "Tamper Detection": ("camera_tamper", "covered"),
    "Image Too Blurry": ("camera_tamper", "defocused"),
    "Global Scene Change": ("camera_tamper", "scene_change"),
    "Line Detector Crossed": ("line_crossed", None),
    "Digital Input": ("digital_input", None),
}

#: topics onvif-parsers knows but names for something else
TOPIC_TYPES: dict[str, tuple[str, str | None]] = {
    # Hikvision alarm inputs: onvif-parsers files them with VideoSource/MotionAlarm as
    # "Motion Alarm"; on a DS-2CD a closed alarm input is a contact, not motion
    "tns1:Device/Trigger/tnshik:AlarmIn": ("digital_input", None),
}

#: our own table, for topics onvif-parsers does not know: (regex on the topic, type,
#: tamper reason, pulse). Each names the camera it comes from.
OWN_TOPICS: list[tuple[re.Pattern[str], str, str | None, bool]] = [
    # Axis ACAP motion (VMD 4 profiles, fw 9+) and the older VMD 3 rule topics
    (re.compile(r"tnsaxis:CameraApplicationPlatform/VMD/.+"), "motion", None, False),
    (re.compile(r"tns1:RuleEngine/tnsaxis:VMD3/.+"), "motion", None, False),
    # Axis PIR sensor (P-series with a PIR): motion without video analytics
    (re.compile(r"tns1:Device/tnsaxis:Sensor/PIR"), "motion", None, False),
    # Axis I/O ports: input contacts
    (re.compile(r"tns1:Device/tnsaxis:IO/Port"), "digital_input", None, False),
    # Axis Fence Guard: something crossed the virtual fence (a pulse of 'active')
    (re.compile(r"tnsaxis:CameraApplicationPlatform/FenceGuard/.+"), "line_crossed", None, True),
    # Hikvision "video tampering" on firmwares that file it under UserAlarm (the tnshik
    # device of eyetowers/gonvif#1), and Dahua's "VideoBlind" over ONVIF
    (re.compile(r"tns1:UserAlarm/(?:tnshik:)?VideoCover"), "camera_tamper", "covered", False),
    (re.compile(r"tns1:VideoSource/(?:tnsdahua:)?VideoBlind"), "camera_tamper", "covered", False),
    # a camera moved away from its view (Dahua "SceneChange" over ONVIF, Uniview)
    (re.compile(r"tns1:VideoSource/(?:\w+:)?SceneMoved"), "camera_tamper", "moved", False),
]

#: topics that are known and are no contract event (counted, never logged as unknown)
IGNORED = re.compile(
    r"tns1:Monitoring/.*|tns1:RecordingHistory/.*|tns1:RecordingConfig/.*"
    r"|tns1:VideoSource/ImageToo(?:Dark|Bright)/.*|tns1:Device/Trigger/Relay"
    r"|tns1:PTZController/.*|tns1:Device/(?:tnsaxis:)?Light/.*|tns1:VideoSource/tnsaxis:.*"
    r"|tns1:AudioSource/.*|tns1:AudioAnalytics/.*|tnsaxis:Storage/.*|tns1:Device/HardwareFailure/.*"
    r"|tns1:RuleEngine/CountAggregation/.*|tnsaxis:CameraApplicationPlatform/"
    r"(?:LoiteringGuard|MotionGuard)/.*"
)

#: Source/Key item names that name a zone, line or input, best first
NAME_ITEMS = (
    "Rule",
    "RuleName",
    "InputToken",
    "AlarmInToken",
    "port",
    "sensor",
    "areaid",
    "VideoSourceConfigurationToken",
    "VideoSourceToken",
    "VideoSource",
    "Source",
)
#: Data item names that carry a state, best first
STATE_ITEMS = (
    "IsMotion",
    "IsTamper",
    "IsInside",
    "State",
    "state",
    "active",
    "LogicalState",
    "Value",
)


def _name(n: Notification, names: Mapping[str, str]) -> str:
    items = dict(n.source + n.key)
    for item in NAME_ITEMS:
        if items.get(item):
            raw = items[item]
            return names.get(raw, raw)
    # Axis application topics carry the profile in the topic itself
    last = n.topic.rsplit("/", 1)[-1].split(":")[-1]
    return names.get(last, last) if "CameraApplicationPlatform" in n.topic else "default"


def _state(n: Notification) -> bool | None:
    data = dict(n.data)
    for item in STATE_ITEMS:
        if item in data:
            return parse_bool(data[item])
    for _item, value in n.data:
        b = parse_bool(value)
        if b is not None:
            return b
    return None


def _shim(n: Notification) -> Any:
    """The object onvif-parsers reads (``Topic._value_1``, ``Message._value_1.Source/Data``),
    with every boolean spelt ``true``/``false``: its parsers compare with ``"true"``."""

    def items(pairs: Items, norm: bool) -> list[SimpleNamespace]:
        out = []
        for name, value in pairs:
            b = parse_bool(value) if norm else None
            text = (
                value
                if b is None or value.strip().lower() in ("active", "inactive")
                else ("true" if b else "false")
            )
            out.append(SimpleNamespace(Name=name, Value=text))
        return out

    payload = SimpleNamespace(
        Source=SimpleNamespace(SimpleItem=items(n.source, False), ElementItem=[]),
        Key=SimpleNamespace(SimpleItem=items(n.key, False), ElementItem=[]),
        Data=SimpleNamespace(SimpleItem=items(n.data, True), ElementItem=[]),
        PropertyOperation=n.operation,
        UtcTime=n.utc_time,
    )
    return SimpleNamespace(
        Topic=SimpleNamespace(_value_1=n.topic), Message=SimpleNamespace(_value_1=payload)
    )


def _contract(
    kind: str, reason: str | None, n: Notification, names: Mapping[str, str]
) -> dict[str, Any]:
    name = _name(n, names)
    if kind == "motion":
        return {"zone": name}
    if kind == "camera_tamper":
        return {"reason": reason or "covered"}
    if kind == "line_crossed":
        return {"line": name, "direction": None}
    return {"input": name}


async def classify(n: Notification, names: Mapping[str, str] | None = None) -> Mapped | Ignored:
    """What ``n`` means for the contract; raises :class:`UnknownTopic` or
    :class:`BadNotification`."""
    # imported here: zeep and lxml come with it, and check-config never maps a topic
    from onvif_parsers import registry as parser_registry

    names = names or {}
    parser = parser_registry.get_parser(n.topic)
    if parser is not None:
        try:
            entities = await parser("onvif", _shim(n))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
            raise BadNotification(f"{n.topic}: {type(err).__name__}: {err}") from err
        kind_reason = TOPIC_TYPES.get(n.topic)
        value: Any = entities[0].value if entities else None
        if kind_reason is None:
            for entity in entities:
                kind_reason = ENTITY_TYPES.get(entity.name)
                if kind_reason is not None:
                    value = entity.value
                    break
        if kind_reason is None:
            return IGNORE
        kind, reason = kind_reason
        if kind == "line_crossed":
            # ONVIF LineDetector/Crossed carries an ObjectId: each message is a crossing
            # (its "1" is an object id, not a state); a Tapo IsLineCross is a state whose
            # rising edge is the crossing
            named = [v for k, v in n.data if k in STATE_ITEMS or k.startswith("Is")]
            b = parse_bool(named[0]) if named else None
            return Mapped(kind, _contract(kind, reason, n, names), b, pulse=True)
        if _state(n) is None:
            # the parsers take anything that is not "true" for false: refuse it instead
            raise BadNotification(f"{n.topic}: no boolean state in {dict(n.data)!r}")
        # the parser's value (it knows which item holds the state), read after our
        # spelling of the booleans
        state = value if isinstance(value, bool) else _state(n)
        return Mapped(kind, _contract(kind, reason, n, names), state)
    for pattern, kind, reason, pulse in OWN_TOPICS:
        if pattern.fullmatch(n.topic):
            state = _state(n)
            if state is None and not (pulse and kind == "line_crossed"):
                raise BadNotification(f"{n.topic}: no boolean state in {dict(n.data)!r}")
            return Mapped(kind, _contract(kind, reason, n, names), state, pulse=pulse)
    if IGNORED.fullmatch(n.topic):
        return IGNORE
    raise UnknownTopic(n.topic)


# -- step 3: edges --------------------------------------------------------------------------
class EdgeTracker:
    """Last state per property; :meth:`step` turns mapped notifications into events
    without changing anything, :meth:`adopt` takes the states once they are committed."""

    def __init__(self, states: Mapping[str, bool] | None = None) -> None:
        self.states: dict[str, bool] = dict(states or {})

    def step(
        self, items: Iterable[tuple[Notification, Mapped]]
    ) -> tuple[list[tuple[str, dict[str, Any], float | None]], dict[str, bool]]:
        """(events as ``(type, data, camera time)``, the states after them)."""
        states = dict(self.states)
        events: list[tuple[str, dict[str, Any], float | None]] = []
        for n, m in items:
            key = n.prop
            if n.operation == "Deleted":
                if states.pop(key, False) and not m.pulse:
                    events.append((m.type, {**m.data, "active": False}, n.utc_time))
                continue
            if m.active is None:
                # a pulse without a state (LineDetector ObjectId): only a real change is
                # a crossing; the Initialized burst repeats the last one
                if m.pulse and n.operation != "Initialized":
                    events.append((m.type, dict(m.data), n.utc_time))
                continue
            before = states.get(key, False)
            states[key] = m.active
            if m.active == before:
                continue  # nothing new (the burst after a re-subscription, a repeat)
            if m.pulse:
                if m.active:  # one crossing per rising edge
                    events.append((m.type, dict(m.data), n.utc_time))
                continue
            events.append((m.type, {**m.data, "active": m.active}, n.utc_time))
        return events, states

    def adopt(self, states: dict[str, bool]) -> None:
        self.states = states

    def encode(self) -> str:
        """The cursor: ``{"v": 1, "states": {property: state}}`` (only what is active is
        worth keeping: an absent property is inactive)."""
        return json.dumps(
            {"v": 1, "states": {k: v for k, v in sorted(self.states.items()) if v}},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | None) -> EdgeTracker:
        """From :meth:`encode`'s text; a missing or unreadable cursor starts empty."""
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            states = raw["states"] if isinstance(raw, dict) else None
        except (ValueError, KeyError):
            return cls()
        if not isinstance(states, dict):
            return cls()
        return cls({str(k): bool(v) for k, v in states.items() if isinstance(v, bool)})
