"""WG short packets: the 64-byte UDP frames of Shenzhen Weigeng (微耕) access controllers and
their OEMs (UHPPOTE UT0311-L0x and others), as they go over the wire.

Every frame is 64 bytes::

    offset  size  field
    0       1     start byte: 0x17 (0x19 on pushed events of firmware v6.62)
    1       1     function
    2       2     reserved, 0
    4       4     controller serial number, little-endian (0 in a discovery broadcast)
    8       56    the function's fields

Integers are little-endian; times are BCD in the controller's local time (it knows no time
zone), so they decode to naive datetimes: :func:`local_to_utc` places them with the site's
zone. A record time of zero (no month and no day: firmware writes ``20 00 00 ...`` or
``20 20 00 ...`` for a record without time) decodes as ``None``, not as an error.

A request is a :class:`Request`: its ``frame`` to send and ``parse(answer)``, which takes an
answer only when it belongs to it (start byte, length, function, controller serial, door or
record index) and raises a :class:`WireError` subclass naming what was wrong otherwise.
:func:`parse_event` decodes what a controller pushes to its receiving server (set with
:func:`set_listener`).

Everything here is pure (bytes in, values or an exception out); the driver does the I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from enum import IntEnum
from typing import Generic, TypeVar

FRAME_LEN = 64
#: the start byte of every frame
SOM = 0x17
#: the start byte of pushed events on firmware v6.62 (uhppote-core ``EventV6_62``)
SOM_V6_62 = 0x19
#: the UDP port a controller listens on
PORT = 60000
#: the word a request that resets or erases must carry (0xB2 set record index)
MAGIC_WORD = 0x55AAAA55
#: index values that are not a record number, so an answer to them may carry any index
_ANY_INDEX = (0, 0xFFFFFFFF)


class Fn(IntEnum):
    """The function byte (offset 1) of the frames this module speaks."""

    STATUS = 0x20
    SET_TIME = 0x30
    GET_TIME = 0x32
    OPEN_DOOR = 0x40
    SET_DOOR_CONTROL = 0x80
    GET_DOOR_CONTROL = 0x82
    SET_LISTENER = 0x90
    GET_LISTENER = 0x92
    DISCOVER = 0x94
    READ_RECORD = 0xB0
    SET_RECORD_INDEX = 0xB2
    GET_RECORD_INDEX = 0xB4


class DoorMode(IntEnum):
    """Door control mode of 0x80/0x82."""

    NORMALLY_OPEN = 1
    NORMALLY_CLOSED = 2
    CONTROLLED = 3


class RecordType(IntEnum):
    """Byte 12 of a record: what kind of record it is."""

    NONE = 0x00
    SWIPE = 0x01
    #: door sensor, push button, remote open, super password
    DOOR = 0x02
    #: alarms and warnings: forced, held open, fire, duress, power on
    ALARM = 0x03
    #: the controller's record ring wrapped: the record at this index was overwritten
    OVERWRITTEN = 0xFF


# -- errors ---------------------------------------------------------------------------------


class WireError(Exception):
    """Bytes that are not a frame we can take; the message says what they were."""


class FrameLengthError(WireError):
    """A frame that is not 64 bytes long."""


class StartByteError(WireError):
    """A frame whose first byte is not 0x17 (or 0x19 for a pushed event)."""


class UnknownFunctionError(WireError):
    """A function byte this module does not know."""


class UnexpectedFunctionError(WireError):
    """A known function, but not the one the request (or a pushed event) has."""


class SerialMismatchError(WireError):
    """An answer from another controller than the one the request was sent to."""


class FieldMismatchError(WireError):
    """An answer for another door or record index than the request asked for."""


class BcdError(WireError):
    """A BCD field with a nibble above 9, or digits that are not a date or a time."""


class EncodeError(ValueError):
    """A request value out of range (door 1-4, 32-bit index, a year BCD cannot hold)."""


# -- field codecs ---------------------------------------------------------------------------


def _u32(frame: bytes, offset: int) -> int:
    return int.from_bytes(frame[offset : offset + 4], "little")


def _bcd_digits(raw: bytes, what: str) -> str:
    digits = raw.hex()
    if not digits.isdigit():
        raise BcdError(f"{what}: bytes {raw.hex(' ')} are not BCD")
    return digits


def _bcd(text: str) -> bytes:
    return bytes.fromhex(text)


def decode_datetime(raw: bytes, what: str = "time") -> datetime | None:
    """Seven BCD bytes ``YYYY MM DD hh mm ss`` as a naive local datetime; ``None`` when month
    and day are zero (a record the controller wrote without a time)."""
    d = _bcd_digits(raw[:7], what)
    month, day = int(d[4:6]), int(d[6:8])
    if month == 0 and day == 0:
        return None
    try:
        return datetime(int(d[0:4]), month, day, int(d[8:10]), int(d[10:12]), int(d[12:14]))
    except ValueError as err:
        raise BcdError(f"{what}: {d} is not a date and time ({err})") from err


def encode_datetime(dt: datetime) -> bytes:
    """A naive local datetime as seven BCD bytes."""
    if dt.tzinfo is not None:
        raise EncodeError("controller time must be naive local time: use utc_to_local first")
    if not 1 <= dt.year <= 9999:
        raise EncodeError(f"year {dt.year} does not fit four BCD digits")
    return _bcd(dt.strftime("%Y%m%d%H%M%S").zfill(14))


def _decode_short_date(raw: bytes, what: str) -> date | None:
    """Three BCD bytes ``YY MM DD`` (20YY); ``None`` when all zero (older firmware)."""
    d = _bcd_digits(raw[:3], what)
    if d == "000000":
        return None
    try:
        return date(2000 + int(d[0:2]), int(d[2:4]), int(d[4:6]))
    except ValueError as err:
        raise BcdError(f"{what}: {d} is not a date ({err})") from err


def _decode_time(raw: bytes, what: str) -> time:
    d = _bcd_digits(raw[:3], what)
    try:
        return time(int(d[0:2]), int(d[2:4]), int(d[4:6]))
    except ValueError as err:
        raise BcdError(f"{what}: {d} is not a time of day ({err})") from err


def _decode_long_date(raw: bytes, what: str) -> date | None:
    d = _bcd_digits(raw[:4], what)
    if d == "00000000":
        return None
    try:
        return date(int(d[0:4]), int(d[4:6]), int(d[6:8]))
    except ValueError as err:
        raise BcdError(f"{what}: {d} is not a date ({err})") from err


# -- time zones -----------------------------------------------------------------------------


def local_to_utc(local: datetime, tz: tzinfo) -> datetime:
    """A controller's naive local time as an aware UTC datetime, ``tz`` being the site's zone.
    In a repeated hour (DST end) the first occurrence is taken, as the controller cannot say."""
    if local.tzinfo is not None:
        raise ValueError("controller time is naive; this one already has a zone")
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def utc_to_local(moment: datetime, tz: tzinfo) -> datetime:
    """An aware datetime as the naive local time to set on a controller of zone ``tz``."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is needed to convert to controller time")
    return moment.astimezone(tz).replace(tzinfo=None)


# -- decoded values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One access record (bytes 8-27 of a status, a read-record answer or a pushed event)."""

    index: int
    #: raw byte 12; see :class:`RecordType` and :attr:`kind`
    type: int
    granted: bool
    door: int
    #: raw byte 15: 1 in, 2 out
    direction: int
    #: the 32-bit card field as the reader delivered it (see ``drivers/cards.py``)
    card: int
    #: controller local time; ``None`` when the record has none
    time: datetime | None
    reason: int

    @property
    def kind(self) -> RecordType | None:
        """The record type, ``None`` for a type byte this module does not know."""
        try:
            return RecordType(self.type)
        except ValueError:
            return None

    @property
    def direction_name(self) -> str | None:
        return {1: "in", 2: "out"}.get(self.direction)


@dataclass(frozen=True, slots=True)
class Status:
    """The answer to 0x20, and the frame a controller pushes to its receiving server."""

    serial: int
    #: index of the newest record (0: the controller holds none)
    last_index: int
    #: the newest record, ``None`` when ``last_index`` is 0
    record: Record | None
    #: door sensors 1-4 (True: open)
    doors_open: tuple[bool, bool, bool, bool]
    #: push buttons 1-4 (True: pressed)
    buttons: tuple[bool, bool, bool, bool]
    system_error: int
    #: controller local date and time; ``None`` when the firmware does not send the date
    controller_time: datetime | None
    #: the time of day alone (always sent)
    clock: time
    sequence: int
    special_info: int
    #: raw relay byte: bit i set = relay i+1 energised (door unlocked)
    relays: int
    #: raw input byte: bit 0 forced lock, bit 1 fire alarm
    inputs: int
    #: the start byte it came with (0x17, or 0x19 from firmware v6.62)
    start_byte: int = SOM

    def relay(self, n: int) -> bool:
        """Whether relay ``n`` (1-4) is energised."""
        return bool(self.relays >> (n - 1) & 1)

    @property
    def forced_lock(self) -> bool:
        return bool(self.inputs & 0x01)

    @property
    def fire_alarm(self) -> bool:
        return bool(self.inputs & 0x02)


@dataclass(frozen=True, slots=True)
class Device:
    """The answer to a discovery (0x94)."""

    serial: int
    ip: ipaddress.IPv4Address
    netmask: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address
    mac: str
    #: firmware version, e.g. ``"8.92"``
    version: str
    #: firmware release date
    released: date | None


@dataclass(frozen=True, slots=True)
class ClockReply:
    """The answer to 0x32 (get time) and 0x30 (set time: the time the controller now has)."""

    serial: int
    time: datetime | None


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to 0x40 (open door) and 0x90 (set listener)."""

    serial: int
    ok: bool


@dataclass(frozen=True, slots=True)
class IndexSet:
    """The answer to 0xB2 (set record index): whether the stored index *changed*. Setting the
    index it already holds answers ``changed=False``, which is not a failure; a wrong magic
    word gets no answer at all."""

    serial: int
    changed: bool


@dataclass(frozen=True, slots=True)
class DoorControl:
    """The answer to 0x80/0x82: a door's mode and unlock delay."""

    serial: int
    door: int
    #: raw mode byte: 1 normally open, 2 normally closed, 3 controlled (see :class:`DoorMode`)
    mode: int
    delay_s: int


@dataclass(frozen=True, slots=True)
class Listener:
    """The answer to 0x92: where the controller pushes its events."""

    serial: int
    address: ipaddress.IPv4Address
    port: int
    #: seconds between unsolicited status frames (0: only on events)
    interval_s: int


@dataclass(frozen=True, slots=True)
class RecordIndex:
    """The answer to 0xB4: the index of the last record the host said it has read."""

    serial: int
    index: int


@dataclass(frozen=True, slots=True)
class RecordReply:
    """The answer to 0xB0: the record, ``None`` when there is none at that index."""

    serial: int
    record: Record | None


# -- frame checks ---------------------------------------------------------------------------


def check_frame(frame: bytes) -> Fn:
    """Length, start byte and function of any frame; returns the function. 0x19 is a valid
    start byte only for a status (0x20): firmware v6.62 pushes its events with it."""
    if len(frame) != FRAME_LEN:
        raise FrameLengthError(f"frame of {len(frame)} bytes, expected {FRAME_LEN}")
    som, fn_byte = frame[0], frame[1]
    try:
        fn = Fn(fn_byte)
    except ValueError:
        fn = None
    if som != SOM and not (som == SOM_V6_62 and fn is Fn.STATUS):
        raise StartByteError(f"start byte 0x{som:02x}, expected 0x{SOM:02x}")
    if fn is None:
        raise UnknownFunctionError(f"unknown function 0x{fn_byte:02x}")
    return fn


def serial_of(frame: bytes) -> int:
    """The controller serial of a frame (no checks: use it to route a frame to its device)."""
    return _u32(frame, 4)


def _record(frame: bytes) -> Record:
    return Record(
        index=_u32(frame, 8),
        type=frame[12],
        granted=frame[13] == 1,
        door=frame[14],
        direction=frame[15],
        card=_u32(frame, 16),
        time=decode_datetime(frame[20:27], "record time"),
        reason=frame[27],
    )


def _decode_status(frame: bytes) -> Status:
    last_index = _u32(frame, 8)
    record = _record(frame) if last_index else None
    clock = _decode_time(frame[37:40], "controller time")
    day = _decode_short_date(frame[51:54], "controller date")
    return Status(
        serial=_u32(frame, 4),
        last_index=last_index,
        record=record,
        doors_open=(frame[28] == 1, frame[29] == 1, frame[30] == 1, frame[31] == 1),
        buttons=(frame[32] == 1, frame[33] == 1, frame[34] == 1, frame[35] == 1),
        system_error=frame[36],
        controller_time=datetime.combine(day, clock) if day else None,
        clock=clock,
        sequence=_u32(frame, 40),
        special_info=frame[48],
        relays=frame[49],
        inputs=frame[50],
        start_byte=frame[0],
    )


def _ip(frame: bytes, offset: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(frame[offset : offset + 4])


def _decode_device(frame: bytes) -> Device:
    return Device(
        serial=_u32(frame, 4),
        ip=_ip(frame, 8),
        netmask=_ip(frame, 12),
        gateway=_ip(frame, 16),
        mac=frame[20:26].hex(":"),
        # two BCD bytes, major then minor: 08 92 is v8.92
        version=f"{frame[26]:x}.{frame[27]:02x}",
        released=_decode_long_date(frame[28:32], "firmware date"),
    )


def _decode_clock(frame: bytes) -> ClockReply:
    return ClockReply(_u32(frame, 4), decode_datetime(frame[8:15], "controller time"))


def _decode_ack(frame: bytes) -> Ack:
    return Ack(_u32(frame, 4), frame[8] == 1)


def _decode_index_set(frame: bytes) -> IndexSet:
    return IndexSet(_u32(frame, 4), frame[8] == 1)


def _decode_door_control(frame: bytes) -> DoorControl:
    return DoorControl(_u32(frame, 4), frame[8], frame[9], frame[10])


def _decode_listener(frame: bytes) -> Listener:
    port = int.from_bytes(frame[12:14], "little")
    return Listener(_u32(frame, 4), _ip(frame, 8), port, frame[14])


def _decode_record_index(frame: bytes) -> RecordIndex:
    return RecordIndex(_u32(frame, 4), _u32(frame, 8))


def _decode_record_reply(frame: bytes) -> RecordReply:
    index = _u32(frame, 8)
    return RecordReply(_u32(frame, 4), _record(frame) if index else None)


# -- requests -------------------------------------------------------------------------------

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Request(Generic[R]):
    """One request: ``frame`` to send, and ``parse`` for the answer that belongs to it."""

    fn: Fn
    #: controller serial; 0 for a discovery broadcast, which any controller answers
    serial: int
    frame: bytes
    decode: Callable[[bytes], R]
    #: the door (0x40, 0x80, 0x82) or record index (0xB0) the answer must carry, if any
    expect: tuple[str, int] | None = None

    def parse(self, answer: bytes) -> R:
        """The decoded answer if it answers this request; raises a :class:`WireError`."""
        fn = check_frame(answer)
        if fn is not self.fn:
            raise UnexpectedFunctionError(
                f"answer has function 0x{fn:02x}, the request 0x{self.fn:02x}"
            )
        serial = _u32(answer, 4)
        if self.serial and serial != self.serial:
            raise SerialMismatchError(
                f"answer from controller {serial}, the request went to {self.serial}"
            )
        if self.expect is not None:
            name, wanted = self.expect
            got = _u32(answer, 8) if name == "index" else answer[8]
            # a read of a record the controller does not hold is answered with index 0
            if got != wanted and not (name == "index" and (got == 0 or wanted in _ANY_INDEX)):
                raise FieldMismatchError(f"answer for {name} {got}, the request asked {wanted}")
        return self.decode(answer)


def _frame(fn: Fn, serial: int, body: bytes = b"") -> bytes:
    if not 0 <= serial <= 0xFFFFFFFF:
        raise EncodeError(f"serial number {serial} does not fit 32 bits")
    head = bytes((SOM, fn, 0, 0)) + serial.to_bytes(4, "little")
    return (head + body).ljust(FRAME_LEN, b"\0")


def _u32_field(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise EncodeError(f"{what} {value} does not fit 32 bits")
    return value.to_bytes(4, "little")


def _door(door: int) -> int:
    if not 1 <= door <= 4:
        raise EncodeError(f"door {door}: a controller has doors 1 to 4")
    return door


def discover(serial: int = 0) -> Request[Device]:
    """0x94: who is there (serial 0, sent to the broadcast address) or one controller."""
    return Request(Fn.DISCOVER, serial, _frame(Fn.DISCOVER, serial), _decode_device)


def get_status(serial: int) -> Request[Status]:
    """0x20: doors, buttons, relays, inputs, the controller's clock and its newest record."""
    return Request(Fn.STATUS, serial, _frame(Fn.STATUS, serial), _decode_status)


def get_time(serial: int) -> Request[ClockReply]:
    """0x32: the controller's clock (local time)."""
    return Request(Fn.GET_TIME, serial, _frame(Fn.GET_TIME, serial), _decode_clock)


def set_time(serial: int, local: datetime) -> Request[ClockReply]:
    """0x30: set the controller's clock to ``local`` (naive, the site's local time; see
    :func:`utc_to_local`); the answer carries the time the controller now has."""
    body = encode_datetime(local)
    return Request(Fn.SET_TIME, serial, _frame(Fn.SET_TIME, serial, body), _decode_clock)


def open_door(serial: int, door: int) -> Request[Ack]:
    """0x40: unlock ``door`` (1-4) for its configured delay (the ``door_open`` command)."""
    body = bytes((_door(door),))
    return Request(Fn.OPEN_DOOR, serial, _frame(Fn.OPEN_DOOR, serial, body), _decode_ack)


def get_door_control(serial: int, door: int) -> Request[DoorControl]:
    """0x82: a door's mode and unlock delay."""
    body = bytes((_door(door),))
    frame = _frame(Fn.GET_DOOR_CONTROL, serial, body)
    return Request(Fn.GET_DOOR_CONTROL, serial, frame, _decode_door_control, ("door", door))


def set_door_control(serial: int, door: int, mode: DoorMode, delay_s: int) -> Request[DoorControl]:
    """0x80: set a door's mode and unlock delay (0-255 s); the answer echoes what was set."""
    if not 0 <= delay_s <= 255:
        raise EncodeError(f"door delay {delay_s} s: must be 0 to 255")
    body = bytes((_door(door), DoorMode(mode), delay_s))
    frame = _frame(Fn.SET_DOOR_CONTROL, serial, body)
    return Request(Fn.SET_DOOR_CONTROL, serial, frame, _decode_door_control, ("door", door))


def set_listener(
    serial: int, address: str | ipaddress.IPv4Address, port: int, interval_s: int = 0
) -> Request[Ack]:
    """0x90: make ``address:port`` the controller's receiving server, to which it pushes
    every new record (and, with ``interval_s`` > 0, a status every that many seconds)."""
    ip = ipaddress.IPv4Address(address)
    if not 0 <= port <= 0xFFFF:
        raise EncodeError(f"port {port} out of range")
    if not 0 <= interval_s <= 255:
        raise EncodeError(f"interval {interval_s} s: must be 0 to 255")
    body = ip.packed + port.to_bytes(2, "little") + bytes((interval_s,))
    return Request(Fn.SET_LISTENER, serial, _frame(Fn.SET_LISTENER, serial, body), _decode_ack)


def get_listener(serial: int) -> Request[Listener]:
    """0x92: the controller's receiving server."""
    frame = _frame(Fn.GET_LISTENER, serial)
    return Request(Fn.GET_LISTENER, serial, frame, _decode_listener)


def get_record_index(serial: int) -> Request[RecordIndex]:
    """0xB4: the record index the host last stored on the controller with 0xB2."""
    frame = _frame(Fn.GET_RECORD_INDEX, serial)
    return Request(Fn.GET_RECORD_INDEX, serial, frame, _decode_record_index)


def set_record_index(serial: int, index: int) -> Request[IndexSet]:
    """0xB2: store ``index`` as read on the controller (carries :data:`MAGIC_WORD`)."""
    body = _u32_field(index, "record index") + MAGIC_WORD.to_bytes(4, "little")
    frame = _frame(Fn.SET_RECORD_INDEX, serial, body)
    return Request(Fn.SET_RECORD_INDEX, serial, frame, _decode_index_set)


def read_record(serial: int, index: int) -> Request[RecordReply]:
    """0xB0: the record at ``index``; the answer has no record (index 0) when there is none."""
    body = _u32_field(index, "record index")
    frame = _frame(Fn.READ_RECORD, serial, body)
    return Request(Fn.READ_RECORD, serial, frame, _decode_record_reply, ("index", index))


def parse_event(frame: bytes) -> Status:
    """A frame a controller pushed to its receiving server: a status with its newest record,
    start byte 0x17 or (firmware v6.62) 0x19."""
    fn = check_frame(frame)
    if fn is not Fn.STATUS:
        raise UnexpectedFunctionError(f"pushed frame has function 0x{fn:02x}, expected 0x20")
    return _decode_status(frame)
