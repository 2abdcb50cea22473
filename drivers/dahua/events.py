"""Dahua's event stream, the pure layer: ``GET /cgi-bin/eventManager.cgi?action=attach&codes=[All]``
answers ``multipart/x-mixed-replace; boundary=myboundary`` and never ends. Access controllers
and door stations (VTO: ``AccessControl``, ``DoorStatus``, ``Invite``) and cameras
(``VideoMotion``, ``CrossLineDetection``, ``VideoBlind``, issue #11) send their events on it.

:class:`EventStream` takes the bytes in whatever chunks the socket gives and returns what they
complete: :class:`DahuaEvent` (``Code=...;action=Start|Stop|Pulse;index=N;data={json}``) and
:class:`Heartbeat`. What the devices do, and what the parser does about it (the captures in
``../shared/fixtures/access/dahua_events.json``):

- **A part is** ``--myboundary``, header lines, then the body. The vendor's HTTP API example
  and a DH-SD42A212TN-HNI heartbeat have *no blank line* between headers and body: a line that
  is not ``Name: value`` ends the headers. Blocks are framed with CRLF or bare LF.
- **Content-Length is never used.** The vendor example counts the trailing CRLF for events (39,
  38) but not for ``Heartbeat`` (9); a VTO2202F-P-style stream declares 120 bytes for a 77-byte
  body. A record ends at its line end, or where its ``data=`` JSON closes (pretty-printed over
  several lines, with ``;`` inside strings: the JSON is scanned, not split), so an event is
  returned as soon as it is complete, not when the next delimiter comes (a device may stay
  silent for minutes).
- **A part may carry several records**, one per line (a VTO sends ``DoorStatus`` and
  ``AccessControl`` in one part).
- **Bounds.** A header line is at most ``max_header_bytes``, a record at most
  ``max_event_bytes``; past that, the part is dropped up to the next delimiter, keeping only
  the few bytes that may start it, and counted (``stats.oversized``). Bytes outside a part and
  body lines that are neither a record nor a heartbeat are dropped and counted
  (``stats.garbage_bytes``, ``stats.garbage_lines``, ``last_garbage`` for the log).
- **The end.** :meth:`EventStream.finish` returns a last record the close completed (a record
  without line end: the stream ended it) and says whether a part was cut (inside its headers,
  inside a record's JSON): reported, never raised.

Then the contract (docs/mqtt.md "Door and card events", only the contract's types):
:func:`to_event` maps an access record to ``(type, data)``: ``card_read`` with ``card`` as the
device prints it (the pipeline pseudonymises it), ``door_opened``/``door_closed`` from
``DoorStatus``, the exit button, a remote open and codes it cannot name as ``digital_input``.
:func:`camera_event` maps the camera codes the contract names (``motion``, ``line_crossed``,
``camera_tamper``). Names, pictures (``SnapURL``, ``ImageInfo``) and the person's data never
come out of either: only the fields listed here are copied. Pure, standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

#: a record (one ``Code=...`` with its data) is at most this long; a VTO's is about 300 bytes
MAX_EVENT_BYTES: Final = 64 * 1024
#: a header line is at most this long
MAX_HEADER_BYTES: Final = 8 * 1024

#: the reader contexts a site may give a reader (issue #9; the same list as the other kinds)
CONTEXTS: Final = ("access", "attendance", "canteen", "library", "shop", "dorm", "gate")

# RFC 2046 section 5.1.1: 1 to 70 characters of this set, not ending in a space
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_PARAM = re.compile(r';\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
# a header line: a token, a colon ("Content-Length:9" on a DH-SD42A212TN-HNI has no space)
_HEADER = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:")
# what a header line may look like before its colon has come
_HEADER_PREFIX = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]*$")
_CODE = b"code="
_DATA = b";data="


class StreamError(ValueError):
    """A Content-Type without a usable boundary."""


def boundary_from_content_type(content_type: str) -> str:
    """The boundary of the stream's Content-Type (``multipart/x-mixed-replace;
    boundary=myboundary``). Raises :class:`StreamError` when it is not multipart or its boundary
    is missing or not a valid RFC 2046 boundary."""
    main, _, rest = content_type.partition(";")
    if not main.strip().lower().startswith("multipart/"):
        raise StreamError(f"content type {content_type!r} is not multipart")
    for m in _PARAM.finditer(";" + rest):
        if m.group(1).lower() == "boundary":
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if not _BOUNDARY.match(value):
                raise StreamError(f"boundary {value!r} is not a valid multipart boundary")
            return value
    raise StreamError(f"content type {content_type!r} has no boundary")


@dataclass(frozen=True, slots=True)
class DahuaEvent:
    """One record: ``Code=VideoMotion;action=Start;index=0;data={...}``. ``index`` is the
    channel (a door or a video channel, from 0), None when absent or not a number; ``data`` the
    parsed JSON (None without one, or when it does not parse: ``data_error`` says why);
    ``extra`` any other ``key=value`` of the record."""

    code: str
    action: str | None = None
    index: int | None = None
    data: Any = None
    data_error: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether the state the code names holds now: ``Start`` and ``Pulse`` yes, ``Stop``
        no."""
        return (self.action or "").lower() != "stop"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``Heartbeat``: the device is alive (sent every ``heartbeat=`` seconds of the attach
    request)."""


Item = DahuaEvent | Heartbeat


@dataclass(slots=True)
class Stats:
    """What the parser has seen, for the driver's diagnostics and log summaries."""

    parts: int = 0
    events: int = 0
    heartbeats: int = 0
    #: records whose ``data=`` did not parse (the record is returned with ``data_error``)
    bad_data: int = 0
    #: parts dropped because a header line or a record passed its bound
    oversized: int = 0
    #: body lines that are neither a record nor a heartbeat
    garbage_lines: int = 0
    #: bytes thrown away: outside a part, garbage lines, oversized parts
    garbage_bytes: int = 0
    #: streams that ended inside a part
    truncated: int = 0


@dataclass(frozen=True, slots=True)
class End:
    """How a stream ended (:meth:`EventStream.finish`)."""

    #: a last record the end of the stream completed (it had no line end yet)
    items: list[Item]
    #: ended inside a part: its headers or a record were cut off
    truncated: bool
    #: bytes of that unfinished part the parser held
    pending_bytes: int


class _State(Enum):
    PREAMBLE = "preamble"  # before the first delimiter, or dropping up to the next one
    HEADERS = "headers"
    BODY = "body"
    EPILOGUE = "epilogue"  # after --boundary--


class EventStream:
    """Incremental parser of one attach stream (see the module docstring): ``feed(chunk)``
    returns the items completed by that chunk, in order; ``finish()`` says how it ended. The
    parser holds at most ``max(max_event_bytes, max_header_bytes)`` plus one chunk."""

    def __init__(
        self,
        boundary: str,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        if not _BOUNDARY.match(boundary):
            raise StreamError(f"boundary {boundary!r} is not a valid multipart boundary")
        self.boundary = boundary
        self.max_event_bytes = max_event_bytes
        self.max_header_bytes = max_header_bytes
        self.stats = Stats()
        #: the last garbage line (at most 80 bytes, as text), for the log line
        self.last_garbage: str | None = None
        self._dash = b"--" + boundary.encode("ascii")
        self._needle = b"\n" + self._dash  # a delimiter is "--boundary" at a line start
        self._buf = bytearray()
        self._state = _State.PREAMBLE
        self._headers = 0  # header lines of the current part
        self._json: _JsonScan | None = None  # scanning a record's data= JSON

    @classmethod
    def for_content_type(cls, content_type: str, **bounds: int) -> EventStream:
        """A parser for the response's Content-Type (:func:`boundary_from_content_type`)."""
        return cls(boundary_from_content_type(content_type), **bounds)

    @property
    def buffered(self) -> int:
        """Bytes held right now."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Item]:
        """Take the next bytes of the stream; return the items they complete."""
        self._buf += data
        out: list[Item] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> End:
        """The stream ended (the connection closed): a record the close completed, and whether
        a part was cut. Never raises; the parser is ready for a new stream."""
        state, buf, scan, headers = self._state, bytes(self._buf), self._json, self._headers
        self._buf.clear()
        self._state, self._json, self._headers = _State.PREAMBLE, None, 0
        items: list[Item] = []
        if state is _State.BODY and scan is None and _ended_by_close(buf.strip()):
            # a record or heartbeat with no line end yet: the close ends it
            self._line(buf.strip(), items)
            return End(items, truncated=False, pending_bytes=0)
        stripped = buf.strip()
        cut = (state is _State.HEADERS and (headers > 0 or bool(stripped))) or (
            # a record cut inside its JSON or its first line; "--myboundary" cut short is not
            state is _State.BODY and (scan is not None or not self._dash.startswith(stripped))
        )
        if cut:
            self.stats.truncated += 1
            self.stats.garbage_bytes += len(buf)
            return End(items, truncated=True, pending_bytes=len(buf))
        # "--myboundary\r\n" and nothing more is how an idle stream waits for its next event
        self.stats.garbage_bytes += len(stripped)
        return End(items, truncated=False, pending_bytes=0)

    # -- the state machine ----------------------------------------------------------------

    def _step(self, out: list[Item]) -> bool:
        """One move; False when more bytes are needed."""
        if self._state is _State.PREAMBLE:
            return self._seek_delimiter()
        if self._state is _State.EPILOGUE:
            self.stats.garbage_bytes += len(self._buf)
            self._buf.clear()
            return False
        if self._json is not None:
            return self._scan_data(out)
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            return self._partial_line()
        line = bytes(buf[:nl]).rstrip(b"\r")
        if self._is_delimiter(line):
            del buf[: nl + 1]
            self._open_part(closing=line.rstrip(b" \t").endswith(b"--"))
            return True
        if self._state is _State.HEADERS:
            if not line.strip():
                del buf[: nl + 1]
                self._state = _State.BODY
                return True
            if _HEADER.match(line):
                del buf[: nl + 1]
                self._headers += 1
                if nl + 1 > self.max_header_bytes:
                    return self._oversized()
                return True
            # no blank line after the headers (vendor example, DH-SD42A212TN-HNI heartbeat)
            self._state = _State.BODY
            return True
        if self._starts_data(nl):
            return True
        del buf[: nl + 1]
        if nl + 1 > self.max_event_bytes:
            return self._oversized(counted=nl + 1)
        self._line(line.strip(), out)
        return True

    def _partial_line(self) -> bool:
        """The buffer holds the start of a line: wait, or act on what it already says."""
        buf = self._buf
        if self._dash.startswith(bytes(buf[: len(self._dash)])) and _could_end_delimiter(
            bytes(buf[len(self._dash) :])
        ):
            return False  # may be a delimiter split across chunks
        if self._state is _State.HEADERS:
            if _HEADER.match(buf) or _HEADER_PREFIX.match(buf):
                if len(buf) > self.max_header_bytes:
                    return self._oversized()
                return False
            self._state = _State.BODY  # the body's first line, without a blank line before it
            return True
        if self._starts_data(len(buf)):
            return True
        if len(buf) > self.max_event_bytes:
            return self._oversized()
        return False

    def _starts_data(self, end: int) -> bool:
        """At a record whose ``data=`` JSON starts within ``buf[:end]``: scan that JSON (it may
        run over many lines and chunks)."""
        buf = self._buf
        if bytes(buf[: len(_CODE)]).lower() != _CODE:
            return False
        i = buf.find(_DATA, 0, end)
        if i < 0:
            return False
        j = i + len(_DATA)
        while j < len(buf) and buf[j] in b" \t":
            j += 1
        if j >= len(buf):
            return False  # wait for the first byte of the value
        if buf[j] not in b"{[":
            return False  # a scalar or empty data ends at the line end
        self._json = _JsonScan(j)
        return True

    def _scan_data(self, out: list[Item]) -> bool:
        buf, scan = self._buf, self._json
        assert scan is not None
        end, cut = scan.scan(buf, self._needle)
        if cut >= 0:
            # a delimiter inside the JSON: the device cut the record (a restart); drop it
            self._json = None
            self.stats.truncated += 1
            self.stats.garbage_bytes += cut + 1
            del buf[: cut + 1]
            return True
        if end < 0:
            if len(buf) > self.max_event_bytes:
                self._json = None
                return self._oversized()
            return False
        self._json = None
        record = bytes(buf[:end])
        del buf[:end]
        self._record(record, out)
        return True

    def _seek_delimiter(self) -> bool:
        buf = self._buf
        if buf.startswith(self._dash):
            i = 0
        else:
            i = buf.find(self._needle)
            if i >= 0:
                self.stats.garbage_bytes += i + 1
                del buf[: i + 1]
        if i < 0:
            if self._dash.startswith(bytes(buf)):
                return False  # the stream may yet start with the delimiter
            keep = len(self._needle) - 1  # the start of a delimiter split across chunks
            if len(buf) > keep:
                self.stats.garbage_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
            return False
        nl = buf.find(b"\n")
        if nl < 0:
            if _could_end_delimiter(bytes(buf[len(self._dash) :])):
                return False
            self.stats.garbage_bytes += 1  # "--myboundaryX...": not a delimiter
            del buf[:1]
            return True
        line = bytes(buf[:nl]).rstrip(b"\r")
        del buf[: nl + 1]
        if self._is_delimiter(line):
            self._open_part(closing=line.rstrip(b" \t").endswith(b"--"))
        else:
            self.stats.garbage_bytes += nl + 1
        return True

    def _is_delimiter(self, line: bytes) -> bool:
        if not line.startswith(self._dash):
            return False
        rest = line[len(self._dash) :]
        return not rest.removeprefix(b"--").strip(b" \t")

    def _open_part(self, *, closing: bool) -> None:
        if closing:
            self._state = _State.EPILOGUE
            return
        self._state, self._headers = _State.HEADERS, 0
        self.stats.parts += 1

    def _oversized(self, counted: int = 0) -> bool:
        """Drop the current part up to the next delimiter (bounded: see _seek_delimiter)."""
        self.stats.oversized += 1
        self.stats.garbage_bytes += counted
        self._state = _State.PREAMBLE
        return True

    # -- records ------------------------------------------------------------------------------

    def _line(self, line: bytes, out: list[Item]) -> None:
        """One complete body line (stripped)."""
        if not line:
            return
        if line.lower() == b"heartbeat":
            self.stats.heartbeats += 1
            out.append(Heartbeat())
            return
        if line[: len(_CODE)].lower() == _CODE:
            self._record(line, out)
            return
        self._garbage(line)

    def _garbage(self, line: bytes) -> None:
        self.stats.garbage_lines += 1
        self.stats.garbage_bytes += len(line)
        self.last_garbage = _text(line[:80])

    def _record(self, raw: bytes, out: list[Item]) -> None:
        event = parse_record(raw)
        if event is None:
            self._garbage(raw)
            return
        if event.data_error is not None:
            self.stats.bad_data += 1
        self.stats.events += 1
        out.append(event)


def parse_record(raw: bytes | str) -> DahuaEvent | None:
    """One record, ``Code=X;action=Start;index=0;data={...}``, as a :class:`DahuaEvent`; None
    when it has no ``Code``. ``data=`` comes last and runs to the end: its JSON may hold ``;``
    and line breaks. Keys are matched without regard to case."""
    text = _text(raw).strip() if isinstance(raw, bytes) else raw.strip()
    head, sep, data_text = text.partition(";data=")
    fields: dict[str, str] = {}
    for pair in head.split(";"):
        key, eq, value = pair.partition("=")
        if eq:
            fields[key.strip().lower()] = value.strip()
    code = fields.pop("code", "")
    if not code:
        return None
    action = fields.pop("action", None)
    index_text = fields.pop("index", None)
    index = int(index_text) if index_text is not None and index_text.isdecimal() else None
    if index_text is not None and index is None:
        fields["index"] = index_text
    data: Any = None
    error: str | None = None
    if sep and data_text.strip():
        try:
            data = json.loads(data_text)
        except (ValueError, RecursionError) as err:
            error = f"data does not parse: {type(err).__name__}"
    return DahuaEvent(code, action, index, data, error, fields)


def _ended_by_close(line: bytes) -> bool:
    """Whether a last line without line end is whole: ``Heartbeat``, or a record with its
    ``action`` and ``index`` (``Code=Cros`` is a record cut short, not a code)."""
    if line.lower() == b"heartbeat":
        return True
    event = parse_record(line) if line[: len(_CODE)].lower() == _CODE else None
    return event is not None and event.action is not None and event.index is not None


def _text(raw: bytes) -> str:
    """UTF-8, else GB 18030 (firmware for the Chinese market), never failing."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace")


def _could_end_delimiter(tail: bytes) -> bool:
    """Whether the bytes after ``--boundary`` (no line end yet) may still be a delimiter
    line: ``--``, blanks and a CR only."""
    return tail == b"-" or not tail.removeprefix(b"--").strip(b" \t\r")


class _JsonScan:
    """Finds where a JSON value ends, incrementally, without parsing it."""

    def __init__(self, start: int) -> None:
        self.pos = start
        self.depth = 0
        self.in_string = False
        self.escape = False

    def scan(self, buf: bytearray, needle: bytes) -> tuple[int, int]:
        """``(end of the value or -1, start of a delimiter line inside it or -1)``."""
        i, n = self.pos, len(buf)
        while i < n:
            c = buf[i]
            i += 1
            if c == 0x0A:  # a line end: a delimiter may follow, even inside a string
                if len(buf) - (i - 1) < len(needle):
                    if needle.startswith(bytes(buf[i - 1 :])):
                        self.pos = i - 1
                        return -1, -1  # wait: it may be a delimiter
                elif buf.startswith(needle, i - 1):
                    return -1, i - 1
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif c == 0x5C:  # backslash
                    self.escape = True
                elif c == 0x22:
                    self.in_string = False
            elif c == 0x22:
                self.in_string = True
            elif c in (0x7B, 0x5B):  # { [
                self.depth += 1
            elif c in (0x7D, 0x5D):  # } ]
                self.depth -= 1
                if self.depth <= 0:
                    self.pos = i
                    return i, -1
        self.pos = i
        return -1, -1


# -- the contract: access records ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reader:
    """What the site calls a reader, what a read there means, and which way a person goes
    through it (``in``/``out``; None: the record's ``Type`` says, or nobody)."""

    name: str
    context: str = "access"
    direction: str | None = None

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"reader context {self.context!r}: one of {', '.join(CONTEXTS)}")
        if self.direction not in ("in", "out", None):
            raise ValueError(f"reader direction {self.direction!r}: in, out or none")


#: readers by ``(door, ReaderID)``; a door of None names the reader on every door
ReaderMap = Mapping[tuple[int | None, str | None], Reader]

#: ``AccessControl`` ``Method``: how the door was opened, as the Dahua HTTP API lists it.
#: 1 (card) and 5 (exit button) are confirmed by VTO22xx users (rroller/dahua issue #318), 4
#: (remote, after a call) by the VTO stream of the fixtures; the rest is the API's table.
METHODS: Final[Mapping[int, str]] = {
    0: "password",
    1: "card",
    2: "card_password",
    3: "password_card",
    4: "remote",
    5: "exit_button",
    6: "fingerprint",
    7: "password_card_fingerprint",
    10: "card_fingerprint",
    11: "multi_person",
    12: "key",
    13: "duress_password",
    14: "qr",
    15: "face",
    18: "face_card",
    21: "face_password",
}

#: ``ErrorCode`` of a refused ``AccessControl`` (``Status`` 0), as the HTTP API lists them
ERRORS: Final[Mapping[int, str]] = {
    0x10: "no_right",
    0x11: "card_lost",
    0x12: "no_right",
    0x13: "verify_mode_mismatch",
    0x14: "expired",
    0x15: "anti_passback",
    0x30: "invalid_period",
}

#: codes of door stations and access controllers this module maps (the rest is unknown)
ACCESS_CODES: Final = frozenset(
    {"AccessControl", "DoorStatus", "BreakIn", "DoorNotClosed", "ChassisIntruded", "Duress"}
)
#: camera codes the contract names -> the contract type
CAMERA_CODES: Final[Mapping[str, str]] = {
    "VideoMotion": "motion",
    "CrossRegionDetection": "motion",
    "CrossLineDetection": "line_crossed",
    "VideoBlind": "camera_tamper",
    "SceneChange": "camera_tamper",
}


def door_of(event: DahuaEvent) -> int:
    """The door, from 1: the record's channel ``index`` counts from 0 (a VTO's only door is
    index 0); ``data.Door`` wins when the controller sends it."""
    data = event.data if isinstance(event.data, Mapping) else {}
    door = data.get("Door")
    if isinstance(door, int) and not isinstance(door, bool) and door >= 0:
        return door + 1
    return (event.index or 0) + 1


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    return None


def reader_for(readers: ReaderMap, door: int, reader_id: str | None) -> Reader:
    """The configured reader, else ``door<d>-reader<n>`` in the ``access`` context."""
    found = readers.get((door, reader_id)) or readers.get((None, reader_id))
    if found is not None:
        return found
    return Reader(f"door{door}-reader{reader_id or 1}")


#: a contract event: ``(type, data)``
Contract = tuple[str, dict[str, Any]]


def to_event(event: DahuaEvent, readers: ReaderMap | None = None) -> Contract | None:
    """The contract event ``(type, data)`` of an access record (docs/mqtt.md "Door and card
    events"), or None for what is no event: the ``Stop`` of a one-shot alarm. Every event
    carries ``door``, ``index`` and ``code``:

    - ``AccessControl``: the exit button (``Method`` 5) is a ``digital_input`` ``exit_button``,
      a remote open (4) a ``digital_input`` ``lock`` ``by: remote``; any other method a
      ``card_read``: ``card`` (``CardNo`` as printed, else ``UserID`` with ``credential: pin``),
      ``verify``, ``reader``, ``context``, ``direction`` (``Type`` Entry/Exit, else the
      reader's), ``result`` (``Status`` 1 granted, 0 denied, else unknown), ``reason`` and
      ``reason_code`` when denied;
    - ``DoorStatus`` ``Open``/``Close``: ``door_opened``/``door_closed``;
    - ``BreakIn``: ``door_forced``; ``DoorNotClosed``: ``door_held_open``;
      ``ChassisIntruded``: ``reader_tamper`` with ``active``; ``Duress``: ``digital_input``
      ``duress``, critical;
    - anything else (a VTO's ``Invite``, a camera code): ``digital_input`` ``input:
      "unknown"`` with ``action`` and ``active``, never dropped (the driver attaches only to
      the codes it wants)."""
    readers = readers or {}
    data = event.data if isinstance(event.data, Mapping) else {}
    door = door_of(event)
    base: dict[str, Any] = {"door": door, "index": event.index, "code": event.code}
    code = event.code
    if code == "AccessControl":
        kind = "card_read" if _is_read(data) else "digital_input"
        return kind, _access(data, door, base, readers)
    if code == "DoorStatus":
        status = str(data.get("Status", "")).strip().lower()
        if status in ("open", "opened"):
            return "door_opened", base
        if status in ("close", "closed"):
            return "door_closed", base
        return "digital_input", base | {"input": "unknown", "status": _str(data.get("Status"))}
    if code in ("BreakIn", "DoorNotClosed"):
        if not event.active:
            return None  # the contract's door_forced / door_held_open are one-shot
        return ("door_forced" if code == "BreakIn" else "door_held_open"), base
    if code == "ChassisIntruded":
        return "reader_tamper", base | {"active": event.active}
    if code == "Duress":
        if not event.active:
            return None
        return "digital_input", base | {"input": "duress", "active": True, "severity": "critical"}
    return "digital_input", base | {
        "input": "unknown",
        "action": event.action,
        "active": event.active,
    }


def _method(data: Mapping[str, Any]) -> int | None:
    return _int(data.get("Method"))


def _is_read(data: Mapping[str, Any]) -> bool:
    return _method(data) not in (4, 5)


def _access(
    data: Mapping[str, Any], door: int, base: dict[str, Any], readers: ReaderMap
) -> dict[str, Any]:
    method = _method(data)
    out = base | {"method": method}
    if method == 5:
        return out | {"input": "exit_button", "active": True}
    if method == 4:
        return out | {"input": "lock", "active": True, "by": "remote"}
    card, user = _str(data.get("CardNo")), _str(data.get("UserID"))
    status = _int(data.get("Status"))
    reader = reader_for(readers, door, _str(data.get("ReaderID")))
    kind = str(data.get("Type", "")).strip().lower()
    direction = {"entry": "in", "exit": "out"}.get(kind, reader.direction)
    result = {1: "granted", 0: "denied"}.get(status if status is not None else -1, "unknown")
    out |= {
        "card": card if card is not None else user,
        "credential": "card" if card is not None else "pin" if user is not None else None,
        "verify": METHODS.get(method, "unknown") if method is not None else None,
        "reader": reader.name,
        "context": reader.context,
        "direction": direction,
        "result": result,
    }
    if result == "denied":
        code = _int(data.get("ErrorCode"))
        out |= {"reason": ERRORS.get(code, "denied") if code else "denied", "reason_code": code}
    return out


# -- the contract: camera records (the ``dahua`` kind) ----------------------------------------


def camera_event(event: DahuaEvent) -> Contract | None:
    """The contract event of a camera record the contract names, or None (any other code, or
    the ``Stop`` of a line crossing):

    - ``VideoMotion`` -> ``motion`` (``zone`` = the first ``RegionName``, else ``ch<n>``);
    - ``CrossRegionDetection`` (intrusion) -> ``motion`` (``zone`` = the rule's ``Name``, else
      ``ch<n>-region``), with the camera's ``action`` (Appear, Cross, Inside) when it says;
    - ``CrossLineDetection`` -> ``line_crossed`` (``line`` = the rule's ``Name``, ``direction``
      as the camera says it: LeftToRight, RightToLeft), one event per ``Start``;
    - ``VideoBlind`` -> ``camera_tamper`` ``covered``, ``SceneChange`` -> ``scene_change``.

    Motion and tamper carry ``active`` (Start, Pulse: true; Stop: false). Each carries
    ``channel`` (from 1, as the camera's web page numbers it: the record's ``index`` + 1),
    ``index`` (the record's own) and ``code``."""
    kind = CAMERA_CODES.get(event.code)
    if kind is None:
        return None
    data = event.data if isinstance(event.data, Mapping) else {}
    channel = (event.index or 0) + 1
    base: dict[str, Any] = {"channel": channel, "index": event.index, "code": event.code}
    if event.code == "VideoMotion":
        regions = data.get("RegionName")
        zone = regions[0] if isinstance(regions, list) and regions else regions
        return kind, base | {"zone": _str(zone) or f"ch{channel}", "active": event.active}
    if event.code == "CrossRegionDetection":
        zone = _str(data.get("Name")) or f"ch{channel}-region"
        out = base | {"zone": zone, "active": event.active}
        action = _str(data.get("Action"))
        return kind, out | ({"action": action} if action else {})
    if kind == "line_crossed":
        if not event.active:
            return None  # one crossing is one event
        line = _str(data.get("Name")) or f"ch{channel}-line"
        return kind, base | {"line": line, "direction": _str(data.get("Direction"))}
    reason = "covered" if event.code == "VideoBlind" else "scene_change"
    return kind, base | {"reason": reason, "active": event.active}
