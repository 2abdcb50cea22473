"""WG records as contract events: record type and reason code → ``(type, data)``.

The agent publishes only the uplink contract's event types (``docs/mqtt.md``, "Door and card
events"). A swipe record (type 1) is a ``card_read``, granted or denied by its granted byte,
with the denial reason as text. Door and alarm records (types 2 and 3) are mapped by reason
code: ``door_opened``, ``door_closed``, ``door_held_open``, ``door_forced``; what has no
contract type of its own is a ``digital_input`` whose ``input`` says what it was:
``exit_button`` (the REX push button), ``lock`` (released by a remote open or the super
password, with ``by``), ``fire``, ``duress`` and ``emergency`` (these three with
``severity: "critical"``). Everything else (controller power-on, an invalid push button, an
overwritten record, an unknown type or reason) is a ``digital_input`` with ``input:
"unknown"`` that keeps the raw codes, so nothing is ever dropped (the driver logs each such
code once: :func:`is_unknown`).

Every event carries ``door``, ``direction``, ``record_index`` and the raw ``reason_code``.
The reason codes and their names follow the vendor's short-packet document as listed in
uhppoted/uhppote-core ``messages/events.go``. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Final

from edge_agent.drivers.wg.wire import Record, RecordType, local_to_utc

#: the reader contexts a site may give a reader (issue #9)
CONTEXTS: Final = ("access", "attendance", "canteen", "library", "shop", "dorm", "gate")

#: reason code → name, for every code the vendor document lists (the reserved ones left out)
REASONS: Final[Mapping[int, str]] = {
    1: "swipe",
    5: "pc_control",
    6: "no_privilege",
    7: "wrong_password",
    8: "anti_passback",
    9: "more_cards",
    10: "first_card_open",
    11: "door_set_nc",
    12: "interlock",
    13: "limited_times",
    15: "invalid_timezone",
    18: "denied",
    20: "push_button",
    23: "door_open",
    24: "door_closed",
    25: "super_password_open",
    28: "controller_power_on",
    29: "controller_reset",
    30: "push_button_disabled_by_task",
    31: "push_button_invalid_forced_lock",
    32: "push_button_invalid_not_online",
    33: "push_button_invalid_interlock",
    34: "threat",
    37: "open_too_long",
    38: "forced_open",
    39: "fire",
    40: "forced_close",
    41: "guard_against_theft",
    42: "zone_7x24",
    43: "emergency_call",
    44: "remote_open",
    45: "remote_open_usb_reader",
}

#: reason code of a door (type 2) or alarm (type 3) record → (event type, extra data)
DOOR_EVENTS: Final[Mapping[int, tuple[str, Mapping[str, Any]]]] = {
    20: ("digital_input", {"input": "exit_button", "active": True}),
    23: ("door_opened", {}),
    24: ("door_closed", {}),
    25: ("digital_input", {"input": "lock", "active": True, "by": "super_password"}),
    44: ("digital_input", {"input": "lock", "active": True, "by": "remote"}),
    45: ("digital_input", {"input": "lock", "active": True, "by": "remote_usb_reader"}),
    34: ("digital_input", {"input": "duress", "active": True, "severity": "critical"}),
    37: ("door_held_open", {}),
    38: ("door_forced", {}),
    39: ("digital_input", {"input": "fire", "active": True, "severity": "critical"}),
    43: ("digital_input", {"input": "emergency", "active": True, "severity": "critical"}),
}

#: the type of an event for a record that maps to nothing above (with ``input: "unknown"``)
FALLBACK = "digital_input"


@dataclass(frozen=True, slots=True)
class Reader:
    """What the site calls a reader, and what a read there means."""

    name: str
    context: str = "access"

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"reader context {self.context!r}: one of {', '.join(CONTEXTS)}")


#: readers by ``(door, direction)``; direction ``None`` names every reader of the door
ReaderMap = Mapping[tuple[int, str | None], Reader]


def reader_for(reader_map: ReaderMap, door: int, direction: str | None) -> Reader:
    """The configured reader of ``door`` in ``direction``, else the door's, else a reader
    named ``door<n>-<direction>`` in the ``access`` context."""
    found = reader_map.get((door, direction)) or reader_map.get((door, None))
    if found is not None:
        return found
    return Reader(f"door{door}-{direction}" if direction else f"door{door}")


def _card(field: int) -> str:
    # The canonical form of drivers/cards.py (decimal, no leading zeros) of the 32-bit card
    # field, which already is the number: spelled here because drivers/wg imports only the
    # standard library (tests/unit/test_cards.py checks that both agree).
    return str(field)


def record_to_event(record: Record, reader_map: ReaderMap) -> tuple[str, dict[str, Any]]:
    """The contract event ``(type, data)`` of one record. ``card`` is the canonical card
    number (``drivers/cards.py``: the WG card field is already the number), which the
    pipeline pseudonymises before it leaves."""
    direction = record.direction_name
    data: dict[str, Any] = {
        "door": record.door,
        "direction": direction,
        "record_index": record.index,
        "reason_code": record.reason,
    }
    kind = record.kind
    if kind is RecordType.SWIPE:
        reader = reader_for(reader_map, record.door, direction)
        data |= {
            "card": _card(record.card),
            "reader": reader.name,
            "context": reader.context,
            "result": "granted" if record.granted else "denied",
            "credential": "card",
        }
        if not record.granted:
            data["reason"] = REASONS.get(record.reason, f"unknown_{record.reason}")
        return "card_read", data
    if record.card:
        data["card"] = _card(record.card)
    if kind in (RecordType.DOOR, RecordType.ALARM) and record.reason in DOOR_EVENTS:
        event_type, extra = DOOR_EVENTS[record.reason]
        return event_type, data | dict(extra)
    data["input"] = "unknown"
    data["record_type"] = record.type
    if kind is RecordType.OVERWRITTEN:
        data["reason"] = "record_overwritten"
    else:
        data["reason"] = REASONS.get(record.reason)
    return FALLBACK, data


def is_unknown(event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether :func:`record_to_event` could not name the record (the driver logs each
    ``(record_type, reason_code)`` of these once)."""
    return event_type == FALLBACK and data.get("input") == "unknown"


def event_ts(record: Record, tz: tzinfo) -> float | None:
    """When the record happened, as UNIX seconds (UTC) for ``Event.ts``, the controller's
    local time placed in the site's zone ``tz``; ``None`` for a record without a time (the
    driver then uses the time it received the record)."""
    if record.time is None:
        return None
    return local_to_utc(record.time, tz).timestamp()
