"""Simulated WG short-packet door controllers (Shenzhen Weigeng 微耕; OEMs: UHPPOTE UT0311-L0x).

Written from the public description of the vendor's "Short Packet Format" (as the uhppoted
projects and the vendor's own examples describe it), never from the agent's driver.

Wire format, one UDP datagram of exactly 64 bytes each way, port 60000 on a real controller:

====== ====== ======================================================================
offset length field
====== ====== ======================================================================
0      1      start byte: 0x17 (0x19 in events pushed by firmware v6.62, see below)
1      1      function code (0x20 status, 0x94 discover, ...)
2      2      reserved, zero
4      4      controller serial number, little-endian (0 in a discover broadcast)
8      56     function data: integers little-endian, dates and times BCD
====== ====== ======================================================================

A request the controller cannot use (shorter or longer than 64 bytes, another start byte, an
unknown function, another controller's serial, a door it does not have, a wrong magic word)
gets no answer at all: the host times out. That is what a real controller does, and what a
driver must cope with.

Records (the controller's event log) have increasing indices from 1. The memory is bounded:
when it is full the oldest record is overwritten, and reading an overwritten index answers
record type 0xFF. Each new record is pushed, as a status frame (function 0x20), to the
listener set with function 0x90.

Nothing here imports ``edge_agent`` or ``drivers``: a simulator written from the driver's
code would agree with it by construction and catch no bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import IntEnum
from typing import Any

log = logging.getLogger(__name__)

FRAME_LEN = 64
#: The start byte of every request and answer.
SOM = 0x17
#: The start byte of events pushed by UHPPOTE firmware v6.62 (the fixtures README lists both).
SOM_V6_62 = 0x19
#: The port a real controller listens on.
DEFAULT_PORT = 60000
#: Function 0xB2 (set the record index) is refused without this word at offset 12.
MAGIC_WORD = 0x55AAAA55
#: Record memory of a UT0311-L04 (200,000 records); the oldest is overwritten when full.
DEFAULT_CAPACITY = 200_000
#: The serial of the vendor's own example captures (a two-door controller).
DEFAULT_SERIAL = 229999901


class Fn(IntEnum):
    """Function codes (byte 1)."""

    STATUS = 0x20
    SET_TIME = 0x30
    GET_TIME = 0x32
    OPEN_DOOR = 0x40
    SET_DOOR = 0x80
    GET_DOOR = 0x82
    SET_LISTENER = 0x90
    GET_LISTENER = 0x92
    DISCOVER = 0x94
    GET_RECORD = 0xB0
    SET_INDEX = 0xB2
    GET_INDEX = 0xB4


class RecordType(IntEnum):
    """Record type (byte 12 of a record)."""

    NONE = 0
    SWIPE = 1
    #: door contact, exit button, power on, remote open
    DOOR = 2
    ALARM = 3
    #: the asked index was overwritten; ask for index 0 to learn the oldest one
    OVERWRITTEN = 0xFF


class Reason(IntEnum):
    """Record reason codes (byte 27), from the vendor's reason table."""

    SWIPE = 1
    DENIED_PC_CONTROL = 5
    DENIED_NO_PRIVILEGE = 6
    DENIED_WRONG_PASSWORD = 7
    DENIED_ANTI_PASSBACK = 8
    DENIED_MORE_CARDS = 9
    DENIED_FIRST_CARD = 10
    DENIED_DOOR_NORMALLY_CLOSED = 11
    DENIED_INTERLOCK = 12
    DENIED_LIMITED_TIMES = 13
    DENIED_TIMEZONE = 15
    DENIED = 18
    PUSH_BUTTON = 20
    DOOR_OPEN = 23
    DOOR_CLOSED = 24
    SUPER_PASSWORD = 25
    POWER_ON = 28
    RESET = 29
    BUTTON_FORCED_LOCK = 31
    BUTTON_OFFLINE = 32
    BUTTON_INTERLOCK = 33
    #: duress (胁迫): a card or password that opens the door and raises a silent alarm
    THREAT = 34
    HELD_OPEN = 37
    FORCED_OPEN = 38
    FIRE = 39
    FORCED_CLOSE = 40
    THEFT = 41
    ZONE_24H = 42
    EMERGENCY_CALL = 43
    REMOTE_OPEN = 44
    REMOTE_OPEN_USB = 45


#: Door control modes (function 0x80/0x82, byte 9).
MODE_NORMALLY_OPEN = 1
MODE_NORMALLY_CLOSED = 2
MODE_CONTROLLED = 3
#: Input state bits (status byte 50).
INPUT_FORCE_LOCK = 0x01
INPUT_FIRE = 0x02
DIRECTION_IN = 1
DIRECTION_OUT = 2


# -- BCD -------------------------------------------------------------------------------------


def bcd(digits: str) -> bytes:
    """``"20190419"`` -> ``b"\\x20\\x19\\x04\\x19"`` (two decimal digits a byte)."""
    if len(digits) % 2 or not digits.isdigit():
        raise ValueError(f"not an even number of decimal digits: {digits!r}")
    return bytes(int(digits[i]) << 4 | int(digits[i + 1]) for i in range(0, len(digits), 2))


def unbcd(raw: bytes) -> str:
    """The decimal digits of ``raw``; ``ValueError`` on a nibble above 9."""
    out = []
    for byte in raw:
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:
            raise ValueError(f"not BCD: {raw.hex()}")
        out.append(f"{hi}{lo}")
    return "".join(out)


def bcd_datetime(when: datetime | None) -> bytes:
    """Seven bytes ``YYYY MM DD hh mm ss``; all zero for no time (an empty record)."""
    return bytes(7) if when is None else bcd(when.strftime("%Y%m%d%H%M%S"))


def parse_bcd_datetime(raw: bytes) -> datetime:
    """The inverse of :func:`bcd_datetime`; ``ValueError`` for bad BCD or an impossible date."""
    return datetime.strptime(unbcd(raw[:7]), "%Y%m%d%H%M%S")


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a controller's event log."""

    index: int
    type: int
    granted: bool
    door: int
    direction: int
    card: int
    time: datetime | None
    reason: int

    def pack(self) -> bytes:
        """The 20 bytes at offsets 8-27 of a status or record answer."""
        return (
            struct.pack(
                "<IBBBBI",
                self.index,
                self.type,
                int(self.granted),
                self.door,
                self.direction,
                self.card,
            )
            + bcd_datetime(self.time)
            + bytes([self.reason])
        )


class RecordLog:
    """Records with increasing indices from 1 in a bounded memory (the oldest overwritten)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._records: deque[Record] = deque(maxlen=capacity)
        self._next = 1

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    @property
    def last(self) -> Record | None:
        return self._records[-1] if self._records else None

    @property
    def first_index(self) -> int:
        return self._records[0].index if self._records else 0

    @property
    def last_index(self) -> int:
        return self._records[-1].index if self._records else 0

    def add(self, **fields: Any) -> Record:
        record = Record(index=self._next, **fields)
        self._next += 1
        self._records.append(record)
        return record

    def get(self, index: int) -> Record | int | None:
        """The record at ``index``; index 0 is the oldest kept, 0xFFFFFFFF the newest.

        Returns ``None`` past the end (and with no records at all), and
        ``RecordType.OVERWRITTEN`` for an index that was overwritten.
        """
        if not self._records:
            return None
        if index == 0:
            return self._records[0]
        if index == 0xFFFFFFFF:
            return self._records[-1]
        if index < self.first_index:
            return int(RecordType.OVERWRITTEN)
        if index > self.last_index:
            return None
        return self._records[index - self.first_index]


# -- one controller --------------------------------------------------------------------------


@dataclass
class Door:
    """One door: its mode and delay (function 0x80), contact, relay and exit button."""

    mode: int = MODE_CONTROLLED
    #: seconds the relay stays unlocked after a grant; the vendor's default is 3 s
    delay_s: int = 3
    open: bool = False
    unlocked: bool = False
    button: bool = False
    relock: asyncio.TimerHandle | None = field(default=None, repr=False)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, controller: WgController) -> None:
        self.controller = controller

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.controller.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # a push to a listener that is not listening (the agent is off) comes back as ICMP
        # port unreachable; a real controller does not care either
        log.debug("WG controller %s: %s", self.controller.serial, exc)


def _loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return host == "localhost"


class WgController:
    """One simulated controller with 1, 2 or 4 doors on its own UDP socket.

    ``clock`` gives the host's local time (injectable for tests); the controller's own clock is
    that plus ``clock_offset_s``, which function 0x30 (set time) changes unless the clock is
    pinned (:meth:`set_clock_offset`). ``event_som`` is the start byte of pushed events.
    ``record_special_events`` adds door-contact and exit-button records, as the controller's
    setting of that name does. Pushes go only to loopback listeners unless ``push_anywhere``:
    a test replaying a capture must not send frames to the capture's LAN address.
    """

    def __init__(
        self,
        serial: int = DEFAULT_SERIAL,
        *,
        doors: int = 4,
        host: str = "127.0.0.1",
        port: int = 0,
        clock_offset_s: float = 0.0,
        capacity: int = DEFAULT_CAPACITY,
        event_som: int = SOM,
        record_special_events: bool = True,
        listener: tuple[str, int] | None = None,
        interval_s: int = 0,
        push_anywhere: bool = False,
        clock: Callable[[], datetime] | None = None,
        version: str = "0892",
        released: date = date(2018, 11, 5),
    ) -> None:
        if not 0 < serial <= 0xFFFFFFFF:
            raise ValueError(f"serial must be 1..4294967295, not {serial}")
        if doors not in (1, 2, 4):
            raise ValueError(f"a WG controller has 1, 2 or 4 doors, not {doors}")
        if event_som not in (SOM, SOM_V6_62):
            raise ValueError(f"event start byte must be 0x17 or 0x19, not {event_som:#x}")
        self.serial = serial
        self.doors = {n: Door() for n in range(1, doors + 1)}
        self.host = host
        self.port = port
        self.clock_offset_s = clock_offset_s
        self.clock_pinned = False
        self.records = RecordLog(capacity)
        self.event_som = event_som
        self.record_special_events = record_special_events
        if listener is not None:
            # the wire has room for an IPv4 address only (offsets 8-11 of 0x90/0x92)
            try:
                ipaddress.IPv4Address(listener[0])
            except ValueError:
                raise ValueError(f"listener must be an IPv4 address: {listener[0]!r}") from None
        self.listener: tuple[str, int] = listener or ("0.0.0.0", 0)  # noqa: S104 - "not set"
        self.interval_s = interval_s
        self.push_anywhere = push_anywhere
        self.read_index = 0
        self.inputs = 0
        self.system_error = 0
        self.sequence = 0
        self.unplugged = False
        self.version = version
        self.released = released
        #: frames ignored, by reason (``short``, ``start_byte``, ``function``, ``serial``, ...)
        self.ignored: Counter[str] = Counter()
        #: every frame pushed to the listener, newest last (for tests and the CLI)
        self.pushed: deque[bytes] = deque(maxlen=1000)
        self._clock = clock or datetime.now
        self._transport: asyncio.DatagramTransport | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._handlers: dict[int, Callable[[bytes], bytes | None]] = {
            Fn.DISCOVER: self._discover,
            Fn.STATUS: self._status,
            Fn.GET_TIME: self._get_time,
            Fn.SET_TIME: self._set_time,
            Fn.OPEN_DOOR: self._open_door,
            Fn.GET_DOOR: self._get_door,
            Fn.SET_DOOR: self._set_door,
            Fn.SET_LISTENER: self._set_listener,
            Fn.GET_LISTENER: self._get_listener,
            Fn.GET_INDEX: self._get_index,
            Fn.SET_INDEX: self._set_index,
            Fn.GET_RECORD: self._get_record,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        self._schedule_tick()

    def close(self) -> None:
        for door in self.doors.values():
            if door.relock is not None:
                door.relock.cancel()
                door.relock = None
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- time --------------------------------------------------------------------------------

    def _host_now(self) -> datetime:
        # the controller knows no time zones: wall-clock local time
        return self._clock().replace(tzinfo=None)

    def now(self) -> datetime:
        """The controller's clock: the host's local time plus the offset, whole seconds."""
        return (self._host_now() + timedelta(seconds=self.clock_offset_s)).replace(microsecond=0)

    def set_clock_offset(self, seconds: float, *, pinned: bool = False) -> None:
        """Put the controller's clock ``seconds`` ahead of the host (behind if negative).

        ``pinned``: function 0x30 answers but no longer moves the clock (a controller whose
        clock cannot be set), so a driver sees that its correction did not take.
        """
        self.clock_offset_s = seconds
        self.clock_pinned = pinned

    # -- the wire ----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        answer = self.handle(data)
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def handle(self, frame: bytes) -> bytes | None:
        """The answer to one request, or ``None`` where the controller stays silent."""
        if self.unplugged:
            return self._ignore("unplugged", frame)
        if len(frame) != FRAME_LEN:
            return self._ignore("length", frame)
        if frame[0] != SOM:
            return self._ignore("start_byte", frame)
        handler = self._handlers.get(frame[1])
        if handler is None:
            return self._ignore("function", frame)
        (serial,) = struct.unpack_from("<I", frame, 4)
        if serial != self.serial and not (frame[1] == Fn.DISCOVER and serial == 0):
            return self._ignore("serial", frame)
        return handler(frame)

    def _ignore(self, why: str, frame: bytes) -> bytes | None:
        """Count and drop a frame: the controller does not answer it."""
        self.ignored[why] += 1
        log.debug("WG controller %s ignores a frame (%s): %s", self.serial, why, frame[:16].hex())
        return None

    def _frame(self, fn: int, data: bytes = b"", som: int = SOM) -> bytes:
        out = bytearray(FRAME_LEN)
        out[0] = som
        out[1] = fn
        struct.pack_into("<I", out, 4, self.serial)
        out[8 : 8 + len(data)] = data
        return bytes(out)

    def status_frame(self, som: int = SOM) -> bytes:
        """Function 0x20: the last record, doors, buttons, clock, relays and inputs."""
        out = bytearray(self._frame(Fn.STATUS, som=som))
        last = self.records.last
        if last is not None:
            out[8:28] = last.pack()
        for n, door in self.doors.items():
            out[27 + n] = int(door.open)
            out[31 + n] = int(door.button)
        now = self.now()
        out[36] = self.system_error
        out[37:40] = bcd(now.strftime("%H%M%S"))
        struct.pack_into("<I", out, 40, self.sequence)
        out[49] = self.relays
        out[50] = self.inputs
        out[51:54] = bcd(now.strftime("%y%m%d"))
        return bytes(out)

    @property
    def relays(self) -> int:
        """Bit n-1 set: door n's lock relay is energised (unlocked)."""
        return sum(1 << (n - 1) for n, door in self.doors.items() if door.unlocked)

    def _door_of(self, frame: bytes) -> int | None:
        door = frame[8]
        if door not in self.doors:
            self.ignored["door"] += 1
            return None
        return door

    def _discover(self, frame: bytes) -> bytes:
        mac = bytes([0x00, 0x66, 0x19]) + self.serial.to_bytes(4, "little")[:3]
        ip = ipaddress.ip_address(self.host) if self.host not in ("", "localhost") else None
        ip4 = ip.packed if ip is not None and ip.version == 4 else bytes(4)
        data = (
            ip4
            + bytes([255, 255, 255, 0])
            + bytes(4)
            + mac
            + bcd(self.version)
            + bcd(self.released.strftime("%Y%m%d"))
        )
        return self._frame(Fn.DISCOVER, data)

    def _status(self, frame: bytes) -> bytes:
        self.sequence += 1
        return self.status_frame()

    def _get_time(self, frame: bytes) -> bytes:
        return self._frame(Fn.GET_TIME, bcd_datetime(self.now()))

    def _set_time(self, frame: bytes) -> bytes | None:
        try:
            wanted = parse_bcd_datetime(frame[8:15])
        except ValueError:
            return self._ignore("bcd", frame)
        if not self.clock_pinned:
            self.clock_offset_s = (wanted - self._host_now()).total_seconds()
        return self._frame(Fn.SET_TIME, bcd_datetime(self.now()))

    def _open_door(self, frame: bytes) -> bytes | None:
        door = self._door_of(frame)
        if door is None:
            return None
        self.add_record(RecordType.DOOR, Reason.REMOTE_OPEN, door=door, granted=True)
        self._unlock(door, walk_through=True)
        return self._frame(Fn.OPEN_DOOR, b"\x01")

    def _door_data(self, n: int) -> bytes:
        door = self.doors[n]
        return bytes([n, door.mode, door.delay_s])

    def _get_door(self, frame: bytes) -> bytes | None:
        door = self._door_of(frame)
        return None if door is None else self._frame(Fn.GET_DOOR, self._door_data(door))

    def _set_door(self, frame: bytes) -> bytes | None:
        n = self._door_of(frame)
        if n is None:
            return None
        door = self.doors[n]
        if frame[9] in (MODE_NORMALLY_OPEN, MODE_NORMALLY_CLOSED, MODE_CONTROLLED):
            door.mode = frame[9]
            # normally open keeps the lock released; the other modes lock it unless a grant
            # (or the fire input) holds it open right now
            door.unlocked = (
                door.mode == MODE_NORMALLY_OPEN
                or bool(self.inputs & INPUT_FIRE)
                or (door.mode == MODE_CONTROLLED and door.relock is not None)
            )
        door.delay_s = frame[10]
        return self._frame(Fn.SET_DOOR, self._door_data(n))

    def _set_listener(self, frame: bytes) -> bytes:
        host = str(ipaddress.IPv4Address(frame[8:12]))
        (port,) = struct.unpack_from("<H", frame, 12)
        self.listener = (host, port)
        self.interval_s = frame[14]
        self._schedule_tick()
        return self._frame(Fn.SET_LISTENER, b"\x01")

    def _get_listener(self, frame: bytes) -> bytes:
        host, port = self.listener
        data = ipaddress.IPv4Address(host).packed + struct.pack("<HB", port, self.interval_s)
        return self._frame(Fn.GET_LISTENER, data)

    def _get_index(self, frame: bytes) -> bytes:
        # the index the host said it has read (0xB2), not the newest record's: that one is
        # in the status answer
        return self._frame(Fn.GET_INDEX, struct.pack("<I", self.read_index))

    def _set_index(self, frame: bytes) -> bytes | None:
        index, magic = struct.unpack_from("<II", frame, 8)
        if magic != MAGIC_WORD:
            return self._ignore("magic_word", frame)
        changed = index != self.read_index
        self.read_index = index
        return self._frame(Fn.SET_INDEX, bytes([int(changed)]))

    def _get_record(self, frame: bytes) -> bytes:
        (index,) = struct.unpack_from("<I", frame, 8)
        found = self.records.get(index)
        if isinstance(found, Record):
            return self._frame(Fn.GET_RECORD, found.pack())
        if found == RecordType.OVERWRITTEN:
            return self._frame(Fn.GET_RECORD, struct.pack("<IB", index, found))
        # past the end: an all-zero record (index 0), as the real controller answers
        return self._frame(Fn.GET_RECORD)

    # -- records and pushes ------------------------------------------------------------------

    def add_record(
        self,
        type: int,
        reason: int,
        *,
        door: int,
        granted: bool = False,
        card: int = 0,
        direction: int = DIRECTION_IN,
    ) -> Record:
        """Append a record stamped with the controller's clock and push it to the listener."""
        record = self.records.add(
            type=int(type),
            granted=granted,
            door=door,
            direction=direction,
            card=card,
            time=self.now(),
            reason=int(reason),
        )
        self._push()
        return record

    def _push(self) -> None:
        host, port = self.listener
        if self.unplugged or self._transport is None or port == 0 or host == "0.0.0.0":  # noqa: S104
            return
        if not (self.push_anywhere or _loopback(host)):
            self.ignored["push_not_loopback"] += 1
            return
        frame = self.status_frame(self.event_som)
        self.pushed.append(frame)
        self._transport.sendto(frame, (host, port))

    def _schedule_tick(self) -> None:
        """With a listener interval, the controller also sends its status every N seconds."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self.interval_s and self._transport is not None:
            loop = asyncio.get_running_loop()
            self._tick = loop.call_later(self.interval_s, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self._push()
        self._schedule_tick()

    # -- doors -------------------------------------------------------------------------------

    def _door(self, n: int) -> Door:
        if n not in self.doors:
            raise ValueError(f"controller {self.serial} has no door {n} (1-{len(self.doors)})")
        return self.doors[n]

    def _unlock(self, n: int, *, walk_through: bool = False) -> None:
        """Energise the relay for the door's delay; ``walk_through``: someone opens the door
        and it swings shut when the relay locks again."""
        door = self._door(n)
        door.unlocked = True
        if walk_through:
            self._contact(n, True)
        if door.relock is not None:
            door.relock.cancel()
        loop = asyncio.get_running_loop()
        door.relock = loop.call_later(door.delay_s, self._relock, n, walk_through)

    def _relock(self, n: int, walk_through: bool) -> None:
        door = self.doors[n]
        door.relock = None
        door.button = False
        if door.mode != MODE_NORMALLY_OPEN and not self.inputs & INPUT_FIRE:
            door.unlocked = False
        if walk_through:
            self._contact(n, False)

    def _contact(self, n: int, is_open: bool) -> bool:
        door = self.doors[n]
        if door.open == is_open:
            return False
        door.open = is_open
        if self.record_special_events:
            reason = Reason.DOOR_OPEN if is_open else Reason.DOOR_CLOSED
            self.add_record(RecordType.DOOR, reason, door=n, granted=True)
        return True

    # -- scenario hooks ----------------------------------------------------------------------

    def swipe(
        self,
        card: int,
        door: int = 1,
        *,
        granted: bool = True,
        reason: int | None = None,
        direction: int = DIRECTION_IN,
        walk_through: bool = False,
    ) -> Record:
        """A card at a reader: a swipe record (reason 1 when granted, else ``reason``,
        default 6 "no privilege"); a grant unlocks the door for its delay. A door set normally
        closed refuses every card (reason 11). ``walk_through``: the holder also opens the
        door, which closes when the relay locks again (door-open and door-closed records)."""
        if granted and self._door(door).mode == MODE_NORMALLY_CLOSED:
            granted, reason = False, Reason.DENIED_DOOR_NORMALLY_CLOSED
        if reason is None:
            reason = Reason.SWIPE if granted else Reason.DENIED_NO_PRIVILEGE
        record = self.add_record(
            RecordType.SWIPE, reason, door=door, granted=granted, card=card, direction=direction
        )
        if granted:
            self._unlock(door, walk_through=walk_through)
        return record

    def door_contact(self, door: int, is_open: bool) -> None:
        """The door contact (门磁) opens or closes. Opened while the lock holds, on a door in
        controlled mode, it is also a forced-open alarm, as the controller reports it."""
        state = self._door(door)
        changed = self._contact(door, is_open)
        if changed and is_open and not state.unlocked and state.mode == MODE_CONTROLLED:
            self.add_record(RecordType.ALARM, Reason.FORCED_OPEN, door=door)

    def exit_button(self, door: int) -> Record:
        """The exit (REX) button: a record and the door unlocked for its delay."""
        self._door(door).button = True
        record = self.add_record(RecordType.DOOR, Reason.PUSH_BUTTON, door=door, granted=True)
        self._unlock(door)
        return record

    def forced_open(self, door: int) -> None:
        """The door is opened without a grant: the contact opens and a forced-open alarm."""
        state = self._door(door)
        if state.unlocked or state.open:
            self._contact(door, True)
            self.add_record(RecordType.ALARM, Reason.FORCED_OPEN, door=door)
        else:
            self.door_contact(door, True)

    def held_open(self, door: int) -> Record:
        """The door stayed open too long (the controller's open-too-long alarm)."""
        self._contact(door, True)
        return self.add_record(RecordType.ALARM, Reason.HELD_OPEN, door=door)

    def fire(self, active: bool = True, door: int = 1) -> Record | None:
        """The fire input: an alarm record and every lock released while it is active."""
        if active == bool(self.inputs & INPUT_FIRE):
            return None
        if active:
            self.inputs |= INPUT_FIRE
            for state in self.doors.values():
                state.unlocked = True
            return self.add_record(RecordType.ALARM, Reason.FIRE, door=door)
        self.inputs &= ~INPUT_FIRE
        for state in self.doors.values():
            if state.relock is None and state.mode != MODE_NORMALLY_OPEN:
                state.unlocked = False
        return None

    def duress(self, card: int, door: int = 1) -> Record:
        """A duress card or password: the door opens as usual and a threat alarm is recorded
        (granted, so that whoever forces the holder sees nothing unusual)."""
        self._door(door)
        record = self.add_record(
            RecordType.ALARM, Reason.THREAT, door=door, granted=True, card=card
        )
        self._unlock(door)
        return record

    def unplug(self) -> None:
        """The network cable is out: no answers, no pushes; records still accumulate."""
        self.unplugged = True

    def replug(self) -> None:
        self.unplugged = False

    def info(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "host": self.host,
            "port": self.port,
            "doors": len(self.doors),
        }


# -- many controllers ------------------------------------------------------------------------


class WgSim:
    """Several controllers in one asyncio process, each on its own UDP socket.

    ``async with WgSim.build(count=2, doors=4) as sim:`` then ``sim[serial].swipe(...)``.
    """

    def __init__(self, controllers: Iterable[WgController]) -> None:
        self.controllers = list(controllers)
        serials = [c.serial for c in self.controllers]
        if len(set(serials)) != len(serials):
            raise ValueError("two controllers with the same serial")

    @classmethod
    def build(
        cls,
        count: int = 1,
        *,
        first_serial: int = DEFAULT_SERIAL,
        host: str = "127.0.0.1",
        base_port: int = 0,
        **options: Any,
    ) -> WgSim:
        """``count`` controllers with serials ``first_serial``, +1, ... on ``base_port``, +1, ...
        (every one ephemeral with ``base_port=0``); ``options`` go to :class:`WgController`."""
        return cls(
            WgController(
                first_serial + i,
                host=host,
                port=base_port + i if base_port else 0,
                **options,
            )
            for i in range(count)
        )

    def __getitem__(self, serial: int) -> WgController:
        for controller in self.controllers:
            if controller.serial == serial:
                return controller
        raise KeyError(serial)

    def __iter__(self) -> Iterator[WgController]:
        return iter(self.controllers)

    async def start(self) -> None:
        try:
            for controller in self.controllers:
                await controller.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for controller in self.controllers:
            controller.close()

    async def __aenter__(self) -> WgSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def layout(self) -> dict[str, Any]:
        return {"controllers": [c.info() for c in self.controllers]}

    def lanes(self, count: int) -> list[tuple[int, int]]:
        """The first ``count`` (serial, door) pairs, door by door through the controllers."""
        pairs = [(c.serial, n) for c in self.controllers for n in c.doors]
        if count > len(pairs):
            raise ValueError(f"{count} lanes asked, the controllers have {len(pairs)} doors")
        return pairs[:count]


# -- the morning arrival rush ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RushSwipe:
    """One swipe of a rush: seconds after its start, the lane, the card and the outcome."""

    at_s: float
    lane: int
    card: int
    granted: bool


def rush_schedule(
    swipes: int,
    duration_s: float,
    lanes: int,
    *,
    seed: int = 1,
    first_card: int = 10_000_001,
    denied_ratio: float = 0.02,
    peak: float = 0.7,
) -> list[RushSwipe]:
    """``swipes`` students arriving over ``duration_s`` seconds at ``lanes`` gate lanes.

    Arrivals bunch up before the bell (a triangular distribution peaking at ``peak`` of the
    duration); each student has one card and uses a random lane; ``denied_ratio`` of the
    swipes are refused (an expired card). The same seed gives the same rush.
    """
    if swipes < 0 or duration_s < 0 or lanes < 1:
        raise ValueError("swipes and duration_s must be >= 0 and lanes >= 1")
    rng = random.Random(seed)
    times = sorted(rng.triangular(0.0, duration_s, peak * duration_s) for _ in range(swipes))
    return [
        RushSwipe(
            at_s=t,
            lane=rng.randrange(lanes),
            card=first_card + i,
            granted=rng.random() >= denied_ratio,
        )
        for i, t in enumerate(times)
    ]


async def run_rush(
    sim: WgSim,
    schedule: Sequence[RushSwipe],
    lanes: Sequence[tuple[int, int]] | None = None,
    *,
    speed: float = 1.0,
) -> int:
    """Play ``schedule`` on ``lanes`` (default :meth:`WgSim.lanes`); returns the number of
    swipes made. ``speed`` compresses time (``60``: a ten-minute rush in ten seconds; the
    records' times are the controllers' clocks, so they are compressed too)."""
    if speed <= 0:
        raise ValueError("speed must be > 0")
    pairs = (
        list(lanes)
        if lanes is not None
        else sim.lanes(max((s.lane for s in schedule), default=0) + 1)
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    for swipe in schedule:
        # always yield: a listener on the same loop must get to read each push before the
        # socket's receive buffer (a few hundred datagrams) overflows
        await asyncio.sleep(max(0.0, start + swipe.at_s / speed - loop.time()))
        serial, door = pairs[swipe.lane]
        sim[serial].swipe(swipe.card, door, granted=swipe.granted)
    return len(schedule)


# -- the demo's school gate ------------------------------------------------------------------

#: One round of the gate trickle, step by step: students swiping in at the turnstile lane
#: (door 1), now and then one going out, a refused card, the side door (door 2) forced open
#: and, later, held open. The unusual steps come early, so a demo shows them within a minute.
GATE_ROUND: tuple[str, ...] = (
    "in", "in", "denied", "in", "forced", "in", "out", "in", "in", "held",
    "in", "in", "out", "in", "denied", "in", "in", "in", "out", "in",
)  # fmt: skip


async def gate_trickle(
    controller: WgController,
    *,
    every_s: float = 2.0,
    seed: int = 1,
    first_card: int = 20_000_001,
    students: int = 600,
    lane_door: int = 1,
    side_door: int = 2,
    open_s: float = 4.0,
    rounds: int | None = None,
) -> int:
    """Students arriving at the school gate, one step of :data:`GATE_ROUND` about every
    ``every_s`` seconds (jittered), round after round until cancelled (or ``rounds`` done);
    returns the number of steps played. ``in``/``out``: a granted card at the lane's in or
    out reader; ``denied``: a card without privilege; ``forced``: the side door opened with
    no grant (the controller's forced-open alarm), closed ``open_s`` later; ``held``: the
    side door left open too long, then closed. Same seed, same cards."""
    if every_s <= 0 or students < 1 or open_s < 0:
        raise ValueError("every_s must be > 0, students >= 1, open_s >= 0")
    controller._door(lane_door)  # ValueError now, not at the first forced door
    controller._door(side_door)
    rng = random.Random(seed)
    steps = 0
    done = 0
    while rounds is None or done < rounds:
        for step in GATE_ROUND:
            await asyncio.sleep(every_s * rng.uniform(0.5, 1.5))
            card = first_card + rng.randrange(students)
            if step in ("in", "out"):
                direction = DIRECTION_IN if step == "in" else DIRECTION_OUT
                controller.swipe(card, lane_door, direction=direction)
            elif step == "denied":
                controller.swipe(card + students, lane_door, granted=False)  # an unknown card
            else:
                if step == "forced":
                    controller.forced_open(side_door)
                else:
                    controller.held_open(side_door)
                await asyncio.sleep(open_s)
                controller.door_contact(side_door, False)
            steps += 1
        done += 1
    return steps


# -- scripted commands (the CLI's stdin and --script) ----------------------------------------

COMMANDS = """\
swipe SERIAL DOOR CARD [granted|REASON] [in|out]   a card at a reader (REASON: a number or
                                                   no_privilege, timezone, anti_passback, ...)
contact SERIAL DOOR open|close                     the door contact
button SERIAL DOOR                                 the exit (REX) button
forced SERIAL DOOR                                 the door forced open
held SERIAL DOOR                                   the door held open too long
fire SERIAL on|off                                 the fire input
duress SERIAL DOOR CARD                            a duress card
unplug SERIAL / replug SERIAL                      stop / resume answering
clock SERIAL OFFSET_S [pinned]                     the controller's clock offset from the host
rush SWIPES SECONDS LANES [SEED [SPEED]]           a morning arrival rush (SPEED 60: ten
                                                   minutes in ten seconds)
status                                             one line per controller"""

_DENIED = {r.name.removeprefix("DENIED_").lower(): r for r in Reason if r.name.startswith("DENIED")}


def _describe(record: Record | None) -> str:
    if record is None:
        return "ok"
    return (
        f"record {record.index} type={record.type} door={record.door} card={record.card}"
        f" granted={int(record.granted)} reason={record.reason}"
    )


async def run_command(sim: WgSim, line: str) -> str:
    """Run one scenario command (see :data:`COMMANDS`); returns a line to print.

    Raises ``ValueError`` for a bad command, an unknown serial or door.
    """
    try:
        return await _run_command(sim, line)
    except IndexError:
        raise ValueError(f"missing arguments: {line.strip()!r}") from None
    except KeyError as err:
        raise ValueError(f"unknown controller or reason {err}") from None


async def _run_command(sim: WgSim, line: str) -> str:
    words = line.split()
    if not words:
        return ""
    verb, args = words[0].lower(), words[1:]
    if verb == "status":
        return "; ".join(
            f"{c.serial} port={c.port} records={c.records.last_index}"
            f"{' unplugged' if c.unplugged else ''}"
            for c in sim
        )
    if verb == "rush":
        swipes, seconds, lanes = int(args[0]), float(args[1]), int(args[2])
        seed = int(args[3]) if len(args) > 3 else 1
        speed = float(args[4]) if len(args) > 4 else 1.0
        done = await run_rush(
            sim, rush_schedule(swipes, seconds, lanes, seed=seed), sim.lanes(lanes), speed=speed
        )
        return f"rush done: {done} swipes"
    if not args:
        raise ValueError(f"{verb}: a serial number is needed")
    controller = sim[int(args[0])]
    rest = args[1:]
    record: Record | None = None
    if verb == "swipe":
        outcome = rest[2].lower() if len(rest) > 2 else "granted"
        granted = outcome == "granted"
        reason = None
        if not granted:
            reason = int(outcome) if outcome.isdigit() else _DENIED[outcome]
        direction = DIRECTION_OUT if len(rest) > 3 and rest[3].lower() == "out" else DIRECTION_IN
        record = controller.swipe(
            int(rest[1]), int(rest[0]), granted=granted, reason=reason, direction=direction
        )
    elif verb == "contact":
        controller.door_contact(int(rest[0]), rest[1].lower() == "open")
    elif verb == "button":
        record = controller.exit_button(int(rest[0]))
    elif verb == "forced":
        controller.forced_open(int(rest[0]))
    elif verb == "held":
        record = controller.held_open(int(rest[0]))
    elif verb == "fire":
        record = controller.fire(rest[0].lower() == "on")
    elif verb == "duress":
        record = controller.duress(int(rest[1]), int(rest[0]))
    elif verb == "unplug":
        controller.unplug()
    elif verb == "replug":
        controller.replug()
    elif verb == "clock":
        controller.set_clock_offset(float(rest[0]), pinned=len(rest) > 1 and rest[1] == "pinned")
    else:
        raise ValueError(f"unknown command {verb!r}")
    return _describe(record)


def parse_script(text: str) -> list[tuple[float, str]]:
    """A script: one command a line, optionally ``@SECONDS`` first (since the start; default
    right after the previous line); ``#`` starts a comment."""
    steps: list[tuple[float, str]] = []
    at = 0.0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            stamp, _, line = line.partition(" ")
            try:
                at = float(stamp[1:])
            except ValueError:
                raise ValueError(f"line {number}: bad time {stamp!r}") from None
        steps.append((at, line.strip()))
    return steps
