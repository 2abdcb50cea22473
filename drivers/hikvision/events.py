"""Hikvision access events (``AccessControllerEvent``, ``AcsEvent`` records) as contract events.

One :class:`AccessEvent` comes from any of the three ways a terminal reports (the alertStream,
the httpHosts push, the AcsEvent search), which name the same fields differently:

=============  ===================  ==========================
               alertStream, push     AcsEvent search
=============  ===================  ==========================
major          ``majorEventType``   ``major``
minor          ``subEventType``     ``minor``
time           ``dateTime`` (top)   ``time``
=============  ===================  ==========================

The codes are those of the Hikvision device network SDK (``HCNetSDK.h``): major 0x1 alarm, 0x2
exception, 0x3 operation, 0x5 event. (idstein/hikvision_access's README numbers the majors
from 0 and is wrong; a DS-K1T342MWX reports its access events as major 5.) :func:`to_event`
maps a record to a contract event ``(type, data)``, only the contract's types (docs/mqtt.md
"Door and card events"): exit button, lock, fire, duress and emergency records are
``digital_input`` with ``input`` naming them; a code this module does not map is a
``digital_input`` with ``input: "unknown"`` and its raw ``major`` and ``minor``, never dropped.

What never comes out of here: the person's ``name``, pictures (``pictureURL``, ``FaceRect``,
the binary parts), the device's IP and MAC. ``card`` holds what identifies the person, as the
ZKTeco layer does: the card number in the canonical form of ``drivers/cards.py`` (the decimal
a terminal prints, without leading zeros), else the employee number (``credential: pin``, a
face-only user has no card), else a QR code's text (``credential: qr``); the pipeline
pseudonymises it before anything leaves the gateway. ``verify`` says how the person proved it
(``card``, ``face``, ``fingerprint``, ``face_card``, ...). Pure functions, standard library
only.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

MAJOR_ALARM: Final = 0x1
MAJOR_EXCEPTION: Final = 0x2
MAJOR_OPERATION: Final = 0x3
MAJOR_EVENT: Final = 0x5

#: the type of an event for a code that maps to nothing below (``input: "unknown"``)
FALLBACK: Final = "digital_input"

#: the reader contexts a site may give a reader (issue #9)
CONTEXTS: Final = ("access", "attendance", "canteen", "library", "shop", "dorm", "gate")


class IsapiError(ValueError):
    """A body that is not what the ISAPI says it should be; the message says what it was."""


# -- the code tables (HCNetSDK.h) -----------------------------------------------------------

#: major 5 verification results: minor -> (verify mode, granted, reason when denied)
_G, _D = True, False
VERIFY: Final[Mapping[int, tuple[str, bool, str | None]]] = {
    0x01: ("card", _G, None),  # MINOR_LEGAL_CARD_PASS
    0x02: ("card_password", _G, None),
    0x03: ("card_password", _D, "verify_failed"),
    0x04: ("card_password", _D, "timeout"),
    0x05: ("card_password", _D, "timeout"),  # MINOR_CARD_AND_PSW_OVER_TIME
    0x06: ("card", _D, "no_right"),  # MINOR_CARD_NO_RIGHT
    0x07: ("card", _D, "invalid_period"),
    0x08: ("card", _D, "expired"),  # MINOR_CARD_OUT_OF_DATE
    0x09: ("card", _D, "invalid_card"),  # MINOR_INVALID_CARD: not enrolled
    0x0A: ("card", _D, "anti_passback"),  # MINOR_ANTI_SNEAK_FAIL
    0x0B: ("card", _D, "interlock"),  # MINOR_INTERLOCK_DOOR_NOT_CLOSE
    0x0C: ("card", _D, "not_in_multi_group"),
    0x0D: ("card", _D, "invalid_multi_verify_period"),
    0x26: ("fingerprint", _G, None),  # MINOR_FINGERPRINT_COMPARE_PASS
    0x27: ("fingerprint", _D, "verify_failed"),
    0x28: ("card_fingerprint", _G, None),
    0x29: ("card_fingerprint", _D, "verify_failed"),
    0x2A: ("card_fingerprint", _D, "timeout"),
    0x2B: ("card_fingerprint_password", _G, None),
    0x2C: ("card_fingerprint_password", _D, "verify_failed"),
    0x2D: ("card_fingerprint_password", _D, "timeout"),
    0x2E: ("fingerprint_password", _G, None),
    0x2F: ("fingerprint_password", _D, "verify_failed"),
    0x30: ("fingerprint_password", _D, "timeout"),
    0x31: ("fingerprint", _D, "not_enrolled"),  # MINOR_FINGERPRINT_INEXISTENCE
    0x36: ("face_fingerprint", _G, None),
    0x37: ("face_fingerprint", _D, "verify_failed"),
    0x38: ("face_fingerprint", _D, "timeout"),
    0x39: ("face_password", _G, None),
    0x3A: ("face_password", _D, "verify_failed"),
    0x3B: ("face_password", _D, "timeout"),
    0x3C: ("face_card", _G, None),
    0x3D: ("face_card", _D, "verify_failed"),
    0x3E: ("face_card", _D, "timeout"),
    0x3F: ("face_password_fingerprint", _G, None),
    0x40: ("face_password_fingerprint", _D, "verify_failed"),
    0x41: ("face_password_fingerprint", _D, "timeout"),
    0x42: ("face_card_fingerprint", _G, None),
    0x43: ("face_card_fingerprint", _D, "verify_failed"),
    0x44: ("face_card_fingerprint", _D, "timeout"),
    0x45: ("employee_fingerprint", _G, None),
    0x46: ("employee_fingerprint", _D, "verify_failed"),
    0x47: ("employee_fingerprint", _D, "timeout"),
    0x48: ("employee_fingerprint_password", _G, None),
    0x49: ("employee_fingerprint_password", _D, "verify_failed"),
    0x4A: ("employee_fingerprint_password", _D, "timeout"),
    0x4B: ("face", _G, None),  # MINOR_FACE_VERIFY_PASS
    0x4C: ("face", _D, "verify_failed"),  # MINOR_FACE_VERIFY_FAIL
    0x4D: ("employee_face", _G, None),
    0x4E: ("employee_face", _D, "verify_failed"),
    0x4F: ("employee_face", _D, "timeout"),
    0x50: ("face", _D, "not_recognised"),  # MINOR_FACE_RECOGNIZE_FAIL
    0x65: ("employee_password", _G, None),
    0x66: ("employee_password", _D, "verify_failed"),
    0x67: ("employee_password", _D, "timeout"),
    0x69: ("id_card_face", _G, None),  # MINOR_PEOPLE_AND_ID_CARD_COMPARE_PASS
    0x70: ("id_card_face", _D, "verify_failed"),
    0x71: ("id_card", _D, "blocklist"),  # MINOR_CERTIFICATE_BLOCK_LIST
    0x77: ("card", _D, "card_encryption"),  # MINOR_CARD_ENCRYPT_VERIFY_FAIL
    0x96: ("password", _D, "verify_failed"),  # MINOR_PSW_VERIFY_FAIL
    0x97: ("password", _D, "verify_failed"),  # MINOR_PASSWORD_MISMATCH
    0x98: ("employee", _D, "not_enrolled"),  # MINOR_EMPLOYEE_NO_NOT_EXIST
    0x99: ("combined", _G, None),  # MINOR_COMBINED_VERIFY_PASS
    0x9A: ("combined", _D, "timeout"),
    0x9B: ("combined", _D, "verify_mode_mismatch"),
    0x9C: ("qr", _G, None),  # QR code verified
    0x9D: ("qr", _D, "verify_failed"),
    0xB5: ("password", _G, None),  # MINOR_PASSWD_VERIFY_PASS
}

#: the ``data`` of a ``digital_input`` for fire, duress and emergency (docs/mqtt.md)
_CRITICAL: Final[Mapping[str, Any]] = {"active": True, "severity": "critical"}

#: (major, minor) of door, lock, button and alarm codes -> (event type, extra data). Only the
#: contract's types (docs/mqtt.md "Door and card events"): what has no type of its own is a
#: ``digital_input`` whose ``input`` says what it was
DOOR_EVENTS: Final[Mapping[tuple[int, int], tuple[str, Mapping[str, Any]]]] = {
    # MINOR_LOCK_OPEN / MINOR_LOCK_CLOSE: the lock relay released / locked again
    (MAJOR_EVENT, 0x15): ("digital_input", {"input": "lock", "active": True}),
    (MAJOR_EVENT, 0x16): ("digital_input", {"input": "lock", "active": False}),
    # MINOR_DOOR_BUTTON_PRESS. santanapedro's DS-K1T342MWX table calls 23/24 the door
    # contact; its counts (999 unlocks = 610 face grants + 437 presses) fit the SDK
    (MAJOR_EVENT, 0x17): ("digital_input", {"input": "exit_button", "active": True}),
    (MAJOR_EVENT, 0x19): ("door_opened", {}),  # MINOR_DOOR_OPEN_NORMAL (door contact)
    (MAJOR_EVENT, 0x1A): ("door_closed", {}),  # MINOR_DOOR_CLOSE_NORMAL
    (MAJOR_EVENT, 0x1B): ("door_forced", {}),  # MINOR_DOOR_OPEN_ABNORMAL
    (MAJOR_EVENT, 0x1C): ("door_held_open", {}),  # MINOR_DOOR_OPEN_TIMEOUT
    # MINOR_FIRE_RELAY_TURN_ON_DOOR_ALWAYS_OPEN / MINOR_FIRE_RELAY_RECOVER
    (MAJOR_EVENT, 0x34): ("digital_input", {"input": "fire", **_CRITICAL}),
    (MAJOR_EVENT, 0x35): ("digital_input", {"input": "fire", "active": False}),
    (MAJOR_EVENT, 0x87): ("door_forced", {"by": "gate_forced"}),  # MINOR_FORCE_ACCESS
    (MAJOR_ALARM, 0x404): ("reader_tamper", {"part": "controller"}),  # HOST_DESMANTLE_ALARM
    (MAJOR_ALARM, 0x406): ("reader_tamper", {"part": "reader"}),  # CARD_READER_DESMANTLE
    (MAJOR_ALARM, 0x408): ("reader_tamper", {"part": "case"}),  # MINOR_CASE_SENSOR_ALARM
    (MAJOR_ALARM, 0x40A): ("digital_input", {"input": "duress", **_CRITICAL}),  # STRESS_ALARM
    (MAJOR_ALARM, 0x418): ("digital_input", {"input": "fire", **_CRITICAL}),  # FIRE_BUTTON
    (MAJOR_ALARM, 0x419): ("digital_input", {"input": "fire", "active": False}),
    (MAJOR_ALARM, 0x41C): ("digital_input", {"input": "emergency", **_CRITICAL}),
    (MAJOR_ALARM, 0x41D): ("digital_input", {"input": "emergency", "active": False}),
    (MAJOR_EXCEPTION, 0x409): ("device_fault", {"fault": "card_reader_offline"}),
    # MINOR_REMOTE_OPEN_DOOR; 0x41D: a remote-control key fob
    (MAJOR_OPERATION, 0x400): ("digital_input", {"input": "lock", "active": True, "by": "remote"}),
    (MAJOR_OPERATION, 0x41D): (
        "digital_input",
        {"input": "lock", "active": True, "by": "remote_control"},
    ),
}

#: names of codes that have no event of their own: a ``digital_input`` with ``input:
#: "unknown"`` and this name as ``code`` (so the platform can read them); others: None
NAMES: Final[Mapping[tuple[int, int], str]] = {
    (MAJOR_EVENT, 0x13): "always_open_begin",
    (MAJOR_EVENT, 0x14): "always_open_end",
    (MAJOR_EVENT, 0x18): "door_button_release",
    (MAJOR_EVENT, 0x1D): "alarm_out_on",
    (MAJOR_EVENT, 0x1E): "alarm_out_off",
    (MAJOR_EVENT, 0x1F): "always_close_begin",
    (MAJOR_EVENT, 0x20): "always_close_end",
    (MAJOR_EVENT, 0x25): "doorbell_ringing",
    (MAJOR_EVENT, 0x83): "heartbeat",  # in an AcsEvent page; on a stream it is a Heartbeat
    (MAJOR_EVENT, 0x85): "tailgating",
    (MAJOR_EVENT, 0x86): "reverse_access",
    (MAJOR_EVENT, 0x88): "climbing_over_gate",
    (MAJOR_EVENT, 0x89): "passing_timeout",
    (MAJOR_EVENT, 0x8A): "intrusion_alarm",
    (MAJOR_ALARM, 0x405): "controller_tamper_resume",
    (MAJOR_ALARM, 0x407): "reader_tamper_resume",
    (MAJOR_ALARM, 0x409): "case_sensor_resume",
    (MAJOR_ALARM, 0x40C): "card_max_authenticate_fail",
    (MAJOR_EXCEPTION, 0x27): "network_broken",
    (MAJOR_EXCEPTION, 0x400): "device_power_on",
    (MAJOR_EXCEPTION, 0x401): "device_power_off",
    (MAJOR_EXCEPTION, 0x402): "watchdog_reset",
    (MAJOR_EXCEPTION, 0x403): "low_battery",
    (MAJOR_EXCEPTION, 0x405): "ac_off",
    (MAJOR_EXCEPTION, 0x406): "ac_resume",
    (MAJOR_EXCEPTION, 0x407): "network_resume",
    (MAJOR_EXCEPTION, 0x40A): "card_reader_resume",
    (MAJOR_OPERATION, 0x70): "remote_login",
    (MAJOR_OPERATION, 0x71): "remote_logout",
    (MAJOR_OPERATION, 0x7B): "remote_reboot",
    (MAJOR_OPERATION, 0x401): "remote_close_door",
    (MAJOR_OPERATION, 0x402): "remote_always_open",
    (MAJOR_OPERATION, 0x403): "remote_always_close",
    (MAJOR_OPERATION, 0x404): "remote_check_time",
    (MAJOR_OPERATION, 0x405): "ntp_check_time",
}

#: major 5 minor 0x83 (MINOR_HEART_BEAT): a heartbeat, not an event
HEARTBEAT_CODE: Final = (MAJOR_EVENT, 0x83)


def known(major: int | None, minor: int | None) -> bool:
    """Whether this module knows the code (the driver logs an unknown one once)."""
    return (
        major is not None
        and minor is not None
        and (
            (major == MAJOR_EVENT and minor in VERIFY)
            or (major, minor) in DOOR_EVENTS
            or (major, minor) in NAMES
        )
    )


# -- time -----------------------------------------------------------------------------------

_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
)


def parse_time(text: str, site_tz: tzinfo) -> datetime:
    """A device time as an aware UTC datetime: ISO 8601 with an offset
    (``2025-06-22T10:26:22-04:00``, ``...Z``, ``+0800``) as it says, or the device's local time
    without one (older firmware) placed in ``site_tz``. In a repeated hour (DST end) the first
    occurrence is taken. Raises :class:`IsapiError` for anything else."""
    s = text.strip()
    if not _ISO.match(s):
        raise IsapiError(f"time {text!r} is not an ISO 8601 date and time")
    try:
        moment = datetime.fromisoformat(s)
    except ValueError as err:
        raise IsapiError(f"time {text!r}: {err}") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=site_tz, fold=0)
    return moment.astimezone(UTC)


def format_time(moment: datetime, device_tz: tzinfo) -> str:
    """An aware datetime as an ISAPI time with its offset, in the device's zone (what the
    AcsEvent search's ``startTime``/``endTime`` take)."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is needed for an ISAPI time")
    return moment.astimezone(device_tz).isoformat(timespec="seconds")


# -- one record -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One access-control record as every report path gives it, with nothing personal but the
    card and employee numbers (which the pipeline pseudonymises)."""

    #: the SDK codes; None when the record had none (still published, as an unknown
    #: ``digital_input``)
    major: int | None
    minor: int | None
    #: when it happened (UTC); None when the record had no time
    time: datetime | None
    #: the terminal's own sequence number of the record: the catch-up cursor
    serial_no: int | None
    door: int | None
    #: ``cardReaderNo``: which reader of the door (1 the terminal itself on a DS-K1T)
    reader_no: int | None
    #: the canonical card number
    card: str | None
    #: ``employeeNoString`` (or ``employeeNo``): the person's number on the terminal
    person: str | None
    #: ``QRCodeInfo``: the text of a QR code shown to the reader
    qr: str | None
    #: ``currentEvent``: False for the log a terminal replays on connecting, None if absent
    live: bool | None

    @property
    def cursor(self) -> str | None:
        """The cursor value of this record for ``link.commit`` (the serial number)."""
        return None if self.serial_no is None else str(self.serial_no)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def canonical_card(text: str) -> str:
    """A terminal's ``cardNo`` as the canonical card number of ``drivers/cards.py``: the
    decimal a terminal prints (``"0006154410"``) without leading zeros; anything else (a
    number the site keeps in hex, letters) as printed. Spelled here because drivers/hikvision
    imports only the standard library (tests/unit/test_hik_isapi.py checks both agree)."""
    s = text.strip()
    if s.isascii() and s.isdigit():
        return str(int(s))
    return s


def access_event(record: Mapping[str, Any], site_tz: tzinfo, *, when: Any = None) -> AccessEvent:
    """An :class:`AccessEvent` from an ``AccessControllerEvent`` object (alertStream, push:
    ``majorEventType``/``subEventType``, the time is the notification's ``dateTime``, given as
    ``when``) or an ``AcsEvent`` ``InfoList`` item (``major``/``minor``/``time``). Missing
    codes are None (the record is still published); a time that does not parse raises
    :class:`IsapiError`."""
    major = _int(record.get("majorEventType", record.get("major")))
    minor = _int(record.get("subEventType", record.get("minor")))
    stamp = when if when is not None else record.get("time")
    card = _text(record.get("cardNo"))
    qr = _text(record.get("QRCodeInfo"))
    live = record.get("currentEvent")
    return AccessEvent(
        major=major,
        minor=minor,
        time=parse_time(stamp, site_tz) if isinstance(stamp, str) and stamp.strip() else None,
        serial_no=_int(record.get("serialNo")),
        door=_int(record.get("doorNo")),
        reader_no=_int(record.get("cardReaderNo")),
        card=canonical_card(card) if card else None,
        person=_text(record.get("employeeNoString", record.get("employeeNo"))),
        qr=qr,
        live=live if isinstance(live, bool) else None,
    )


# -- to the contract ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reader:
    """What the site calls a reader of a terminal, what a read there means, and which way a
    person goes through it (``in``/``out``; None when the site has not said)."""

    name: str
    context: str = "access"
    direction: str | None = None

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"reader context {self.context!r}: one of {', '.join(CONTEXTS)}")
        if self.direction not in ("in", "out", None):
            raise ValueError(f"reader direction {self.direction!r}: in, out or none")


#: readers by ``(door, cardReaderNo)``; a door of None names the reader on every door
ReaderMap = Mapping[tuple[int | None, int | None], Reader]


def reader_for(readers: ReaderMap, door: int | None, reader_no: int | None) -> Reader:
    """The configured reader, else one named ``door<d>-reader<n>`` in the ``access`` context
    with no direction."""
    found = readers.get((door, reader_no)) or readers.get((None, reader_no))
    if found is not None:
        return found
    return Reader(f"door{door or 1}-reader{reader_no or 1}")


def identity(event: AccessEvent) -> tuple[str | None, str | None]:
    """``(card, credential)``: what identifies the person and what it is: the card number
    (``card``), else the employee number (``pin``), else a QR code's text (``qr``)."""
    if event.card is not None:
        return event.card, "card"
    if event.person is not None:
        return event.person, "pin"
    if event.qr is not None:
        return event.qr, "qr"
    return None, None


def to_event(event: AccessEvent, readers: ReaderMap) -> tuple[str, dict[str, Any]]:
    """The contract event ``(type, data)`` of one record. Every event carries ``door``,
    ``serial_no``, ``major`` and ``minor``; a verification code is a ``card_read`` with
    ``result``, ``verify``, ``card`` and ``credential`` (:func:`identity`), ``reader``,
    ``context``, ``direction`` (and ``reason`` when denied); door, lock and alarm codes map
    by the table (a ``digital_input`` with ``input`` for what the contract has no type for);
    anything else is a ``digital_input`` with ``input: "unknown"`` and ``code`` (the SDK's
    name, or None when unknown). Any record with a card or employee number carries ``card`` and
    ``credential``."""
    data: dict[str, Any] = {
        "door": event.door,
        "serial_no": event.serial_no,
        "major": event.major,
        "minor": event.minor,
    }
    card, credential = identity(event)
    major, minor = event.major, event.minor
    if major == MAJOR_EVENT and minor is not None and minor in VERIFY:
        verify, granted, reason = VERIFY[minor]
        reader = reader_for(readers, event.door, event.reader_no)
        data |= {
            "card": card,
            "credential": credential,
            "verify": verify,
            "reader": reader.name,
            "context": reader.context,
            "direction": reader.direction,
            "result": "granted" if granted else "denied",
        }
        if not granted:
            data["reason"] = reason
        return "card_read", data
    if card is not None:
        data |= {"card": card, "credential": credential}
    if major is not None and minor is not None:
        if (major, minor) in DOOR_EVENTS:
            event_type, extra = DOOR_EVENTS[major, minor]
            return event_type, data | dict(extra)
        data["code"] = NAMES.get((major, minor))
    else:
        data["code"] = None
    data["input"] = "unknown"
    return FALLBACK, data


def event_ts(event: AccessEvent) -> float | None:
    """When the record happened as UNIX seconds for ``Event.ts``; None without a time (the
    driver then uses the time it received it)."""
    return None if event.time is None else event.time.timestamp()


# -- notifications (alertStream parts, push bodies) -----------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keep-alive: ``heartBeat`` (access terminals), ``videoloss`` inactive (cameras and
    NVRs send it every few seconds on an idle alertStream), or major 5 minor 0x83."""


@dataclass(frozen=True, slots=True)
class Other:
    """A notification that is not an access event: a camera's or NVR's ``VMD``,
    ``linedetection``, ``fielddetection``, ``shelteralarm`` (the ``hikvision_camera`` kind
    maps them); the access driver logs it once per ``event_type``.

    ``channel`` is the ``channelID`` (from 1; ``dynChannelID`` on an NVR's IP channels),
    ``regions`` the ``regionID``s of its ``DetectionRegionList`` (line and field detection
    name the rule that fired there), ``time`` its ``dateTime`` in UTC (None when absent or
    unreadable: a camera event is never dropped for its time), ``count`` the
    ``activePostCount`` (a camera repeats an ongoing alarm with it rising)."""

    event_type: str
    state: str | None
    channel: int | None = None
    regions: tuple[int, ...] = ()
    time: datetime | None = None
    count: int | None = None


Notification = AccessEvent | Heartbeat | Other


def _xml_value(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        text = (element.text or "").strip()
        return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else text
    out: dict[str, Any] = {}
    for child in children:
        tag, value = child.tag.rpartition("}")[2], _xml_value(child)
        if tag not in out:
            out[tag] = value
        elif isinstance(out[tag], _Repeated):
            out[tag].append(value)
        else:
            # a tag that repeats (a camera's DetectionRegionEntry, one per rule that fired)
            out[tag] = _Repeated([out[tag], value])
    return out


class _Repeated(list[Any]):
    """The values of an XML tag that came more than once (a JSON list in the dict form)."""


def decode_body(body: bytes) -> dict[str, Any]:
    """A JSON object, or an XML ``EventNotificationAlert`` (namespaces dropped, digits as
    numbers) as the same dict shape. Raises :class:`IsapiError` for anything else."""
    text = body.strip().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
    if text[:1] == b"{":
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            raise IsapiError(f"JSON body does not parse: {type(err).__name__}") from err
        if not isinstance(value, dict):
            raise IsapiError("JSON body is not an object")
        return value
    if text[:1] == b"<":
        try:
            # a part is at most MAX_PART_BYTES; the bundled expat (>= 2.4.1) refuses entity
            # amplification and ElementTree resolves no external entities
            root = ET.fromstring(text)  # noqa: S314
        except (ET.ParseError, ValueError, RecursionError) as err:
            raise IsapiError(f"XML body does not parse: {err}") from err
        if root.tag.rpartition("}")[2] != "EventNotificationAlert":
            raise IsapiError(f"XML body is a {root.tag.rpartition('}')[2]}, not an event")
        try:
            value = _xml_value(root)
        except RecursionError as err:
            raise IsapiError("XML body is nested too deep") from err
        return value if isinstance(value, dict) else {}
    raise IsapiError("body is neither JSON nor XML")


def notification(obj: Mapping[str, Any], site_tz: tzinfo) -> Notification:
    """What one decoded alertStream part or push body says. Raises :class:`IsapiError` for an
    ``AccessControllerEvent`` without codes or with a time that does not parse."""
    event_type = str(obj.get("eventType", ""))
    state = obj.get("eventState")
    if event_type.lower() == "heartbeat" or (
        event_type.lower() == "videoloss" and state == "inactive"
    ):
        return Heartbeat()
    ace = obj.get("AccessControllerEvent")
    if isinstance(ace, Mapping):
        when = obj.get("dateTime")
        event = access_event(ace, site_tz, when=when if isinstance(when, str) else None)
        if (event.major, event.minor) == HEARTBEAT_CODE:
            return Heartbeat()
        return event
    return _other(obj, event_type, state, site_tz)


def _entries(value: Any) -> list[Any]:
    """A list of what a JSON list or a (repeated) XML element holds."""
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _other(obj: Mapping[str, Any], event_type: str, state: Any, site_tz: tzinfo) -> Other:
    """A camera or NVR notification (``DetectionRegionList`` as XML or JSON)."""
    regions: list[int] = []
    for holder in _entries(obj.get("DetectionRegionList")):
        entries = holder.get("DetectionRegionEntry") if isinstance(holder, Mapping) else None
        for entry in _entries(entries if entries is not None else holder):
            # regionID as the ISAPI guide spells it; RegionID accepted too (no JSON camera
            # capture tells which one the JSON form uses)
            region = (
                _int(entry.get("regionID", entry.get("RegionID")))
                if isinstance(entry, Mapping)
                else None
            )
            if region is not None and region not in regions:
                regions.append(region)
    when = obj.get("dateTime")
    moment = None
    if isinstance(when, str) and when.strip():
        try:
            moment = parse_time(when, site_tz)
        except IsapiError:
            moment = None
    channel = _int(obj.get("channelID"))
    if channel is None:
        channel = _int(obj.get("dynChannelID"))
    return Other(
        event_type or "unknown",
        state if isinstance(state, str) else None,
        channel=channel,
        regions=tuple(regions),
        time=moment,
        count=_int(obj.get("activePostCount")),
    )
