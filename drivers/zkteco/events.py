"""ZKTeco records as contract events: ATTLOG punches and rtlog events → ``(type, data)``.

A punch (an attendance terminal's ATTLOG record) is always a ``card_read`` granted: the
terminal only records people it recognised. An rtlog event of a security terminal maps by
its event code: verified opens are ``card_read`` granted, refusals ``card_read`` denied with
a reason, door and alarm codes ``door_opened``, ``door_closed``, ``door_forced``,
``door_held_open``, ``reader_tamper``. Only the contract's event types are published
(``docs/mqtt.md`` "Door and card events"): the exit button, a remote open (the lock
released) and duress are ``digital_input`` with ``input`` ``exit_button``, ``lock``,
``duress``; anything else a ``digital_input`` with ``input: "unknown"`` that keeps the raw
code (:func:`known` tells the driver which codes to log once), so nothing is dropped.

``card`` is the user's card number as the terminal prints it, else the PIN (a face or
fingerprint user may have no card), in the clear: the pipeline pseudonymises it before it
leaves the gateway. ``credential`` says which of the two it is. Names, passwords, photos
and templates never reach this module.

Event codes: the ZKTeco access-control event list (PullSDK / Security PUSH, as ZKAccess
shows it); verify codes: s0x90/zkteco-adms ``datasheet/ADMS.md``. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Final

from edge_agent.drivers.zkteco.iclock import Punch, RtEvent

#: the reader contexts a site may give a reader (issue #9), as in drivers/wg/events.py
CONTEXTS: Final = ("access", "attendance", "canteen", "library", "shop", "dorm", "gate")

#: verify codes (ATTLOG ``verify``, rtlog ``verifytype``) → how the person was verified;
#: any other code is ``other`` (its raw value is in ``verify_code``)
VERIFY: Final[Mapping[int, str]] = {
    0: "password",
    1: "fingerprint",
    4: "card",
    15: "face",
    25: "palm",
}

#: ATTLOG status (the key pressed on an attendance terminal) → direction
STATUS_DIRECTION: Final[Mapping[int, str]] = {
    0: "in",  # check-in
    1: "out",  # check-out
    2: "out",  # break out
    3: "in",  # break in
    4: "in",  # overtime in
    5: "out",  # overtime out
}

#: rtlog ``inoutstatus`` → direction (2 and above: the terminal does not know)
INOUT_DIRECTION: Final[Mapping[int, str]] = {0: "in", 1: "out"}

#: rtlog event codes of a verified pass
GRANTED: Final[Mapping[int, str]] = {
    0: "normal",
    1: "normal_open_time_zone",
    2: "first_card_normal_open",
    3: "multi_card_open",
    14: "fingerprint",
    15: "multi_card_fingerprint",
    16: "fingerprint_normal_open_time_zone",
    17: "card_and_fingerprint",
    18: "first_card_fingerprint",
    19: "first_card_card_and_fingerprint",
    203: "multi_card_card_and_fingerprint",
}

#: rtlog event codes of a refusal → reason
DENIED: Final[Mapping[int, str]] = {
    20: "too_short_interval",
    21: "door_inactive_time_zone",
    22: "illegal_time_zone",
    23: "access_denied",
    24: "anti_passback",
    25: "interlock",
    26: "multi_card_incomplete",
    27: "unregistered",
    29: "card_expired",
    30: "wrong_password",
    31: "too_short_fingerprint_interval",
    32: "multi_card_incomplete",
    33: "fingerprint_expired",
    34: "unregistered_fingerprint",
    35: "door_inactive_time_zone",
    38: "card_reported_lost",
    39: "access_disabled",
    41: "verify_mode_error",
    42: "wiegand_format_error",
}

_CRITICAL: Final[Mapping[str, Any]] = {"active": True, "severity": "critical"}

#: rtlog door and alarm codes → (event type, extra data); what the contract has no type
#: for is a ``digital_input`` named by ``input`` (docs/mqtt.md "Door and card events")
DOOR_EVENTS: Final[Mapping[int, tuple[str, Mapping[str, Any]]]] = {
    8: ("digital_input", {"input": "lock", "active": True, "by": "remote"}),
    28: ("door_held_open", {}),
    100: ("reader_tamper", {}),
    101: ("digital_input", {"input": "duress", **_CRITICAL, "by": "password"}),
    102: ("door_forced", {}),
    103: ("digital_input", {"input": "duress", **_CRITICAL, "by": "fingerprint"}),
    200: ("door_opened", {}),
    201: ("door_closed", {}),
    202: ("digital_input", {"input": "exit_button", "active": True}),
}

#: the type of an event for a code that maps to nothing above, with ``input: "unknown"``
FALLBACK: Final = "digital_input"


def known(code: int) -> bool:
    """Whether an rtlog event code has a meaning here (else the driver logs it once)."""
    return code in GRANTED or code in DENIED or code in DOOR_EVENTS


@dataclass(frozen=True, slots=True)
class Reader:
    """What the site calls a reader, and what a read there means."""

    name: str
    context: str = "access"

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"reader context {self.context!r}: one of {', '.join(CONTEXTS)}")


#: readers of a security terminal by ``(door, direction)``; direction ``None``: the door's
ReaderMap = Mapping[tuple[int, str | None], Reader]


def verify_name(code: int | None) -> str:
    """``card``, ``face``, ``fingerprint``, ``password``, ``palm``, ``other`` or
    ``unknown`` (no code)."""
    if code is None:
        return "unknown"
    return VERIFY.get(code, "other")


def _credential(card: str | None, pin: str | None, cards: Mapping[str, str]) -> dict[str, Any]:
    card = card or (cards.get(pin) if pin else None)
    if card:
        return {"card": card, "credential": "card"}
    if pin:
        return {"card": pin, "credential": "pin"}
    return {"card": None, "credential": None}


def punch_event(
    punch: Punch, reader: Reader, cards: Mapping[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """The ``card_read`` of one ATTLOG punch at ``reader`` (one reader per terminal).
    ``cards`` is the gateway's PIN → card table (from OPERLOG USER lines); a PIN without a
    card there goes in ``card`` itself."""
    direction = STATUS_DIRECTION.get(punch.status) if punch.status is not None else None
    data: dict[str, Any] = {
        **_credential(None, punch.pin, cards or {}),
        "reader": reader.name,
        "context": reader.context,
        "direction": direction,
        "result": "granted",
        "verify": verify_name(punch.verify),
        "verify_code": punch.verify,
        "status": punch.status,
    }
    if punch.workcode not in (None, "0"):
        data["workcode"] = punch.workcode
    return "card_read", data


def reader_for(readers: ReaderMap, door: int, direction: str | None) -> Reader:
    """The configured reader of ``door`` in ``direction``, else the door's, else one named
    ``door<n>-<direction>`` in the ``access`` context."""
    found = readers.get((door, direction)) or readers.get((door, None))
    if found is not None:
        return found
    return Reader(f"door{door}-{direction}" if direction else f"door{door}")


def rtlog_event(
    event: RtEvent, readers: ReaderMap, cards: Mapping[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """The contract event of one rtlog event. Every event carries ``door``, ``direction``,
    ``event_code`` and ``record_index``; a pass or a refusal is a ``card_read``."""
    direction = INOUT_DIRECTION.get(event.inout) if event.inout is not None else None
    data: dict[str, Any] = {
        "door": event.door,
        "direction": direction,
        "event_code": event.event,
        "record_index": event.index,
    }
    code = event.event
    if code in GRANTED or code in DENIED:
        reader = reader_for(readers, event.door, direction)
        data |= {
            **_credential(event.card, event.pin, cards or {}),
            "reader": reader.name,
            "context": reader.context,
            "result": "granted" if code in GRANTED else "denied",
            "verify": verify_name(event.verify),
            "verify_code": event.verify,
        }
        if code in DENIED:
            data["reason"] = DENIED[code]
        return "card_read", data
    if code in DOOR_EVENTS:
        event_type, extra = DOOR_EVENTS[code]
        return event_type, data | dict(extra)
    data["input"] = "unknown"
    if event.card or event.pin:
        data |= _credential(event.card, event.pin, cards or {})
    return FALLBACK, data


def event_ts(time: datetime, tz: tzinfo) -> float:
    """When a record happened, as UNIX seconds for ``Event.ts``: a terminal's local time
    (naive) placed in the site's zone ``tz``; a Unix-epoch time as it is."""
    if time.tzinfo is not None:
        return time.timestamp()
    # fold=0: in a repeated hour the first occurrence (sites in China have no DST)
    return time.replace(tzinfo=tz).timestamp()


def offset_zone(offset_min: int) -> tzinfo:
    """A fixed zone for a UTC offset in minutes (the handshake's ``TimeZone``)."""
    return timezone(timedelta(minutes=offset_min))
