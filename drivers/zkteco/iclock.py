"""ZKTeco PUSH (iclock / ADMS): the HTTP protocol in which attendance and access terminals
push their records to a server, here the gateway. Pure: text and bytes in, values or an
exception out; the driver and the agent's HTTP server do the I/O.

A terminal set to push to ``http://<gateway>:<port>`` talks in these requests::

    GET  /iclock/cdata?SN=..&options=all[&pushver=..][&DeviceType=acc]   handshake
    POST /iclock/cdata?SN=..&table=ATTLOG|OPERLOG|ATTPHOTO|rtlog&Stamp=..  records
    GET|POST /iclock/registry?SN=..      registration of a security (DeviceType=acc) terminal
    GET  /iclock/getrequest?SN=..        "any command for me?" (every Delay seconds)
    POST /iclock/devicecmd?SN=..         the results of the commands it ran
    GET  /iclock/ping?SN=..              keep-alive of security terminals

:func:`classify` names the request; :func:`handshake_reply` answers the handshake with the
stamps the gateway has committed, so the terminal resends exactly what came after them;
:func:`parse_upload` parses a POSTed table; :class:`Cursor` and :func:`plan_commit` say
which records to commit and which cursor goes with them; :class:`CommandQueue` formats
``C:<id>:<cmd>`` lines for getrequest and matches the devicecmd confirmations.

Sources (read for understanding, nothing copied): s0x90/zkteco-adms ``datasheet/ADMS.md``
("Real Device Protocol Findings", a SpeedFace-V5L on ZAM180-NF-Ver1.1.17) and its tests,
tanemrahman/zkteco-adms (``AdmsService``, ``docs/adms-samples.http``), the captures in
``../shared/fixtures/access/zk_push.json`` and the choices in ``docs/doors.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final
from urllib.parse import parse_qsl

# -- errors -----------------------------------------------------------------------------------


class IclockError(ValueError):
    """Something the iclock layer refuses; the message says what and why."""


class NotIclockRequest(IclockError):
    """A request that is none of the iclock endpoints (another path or method): the HTTP
    server answers it 404 and it never reaches a driver."""


class MalformedRequest(IclockError):
    """An iclock endpoint with a missing or unusable parameter (no ``SN``, a bad stamp)."""


class CommandError(IclockError):
    """A command that cannot be sent to a terminal (a line break in it, a bad door)."""


class CursorError(IclockError):
    """A stored cursor that is not one this module wrote."""


# -- requests ---------------------------------------------------------------------------------


class Endpoint(StrEnum):
    """What an iclock request is."""

    HANDSHAKE = "handshake"
    UPLOAD = "upload"
    REGISTRY = "registry"
    GETREQUEST = "getrequest"
    DEVICECMD = "devicecmd"
    PING = "ping"


#: the tables with a stamp the handshake hands back (attendance PUSH)
STAMPED_TABLES: Final = ("ATTLOG", "OPERLOG", "ATTPHOTO")

#: spellings of a ``table`` parameter → the name this module uses
_TABLES: Final[Mapping[str, str]] = {
    "ATTLOG": "ATTLOG",
    "OPERLOG": "OPERLOG",
    "ATTPHOTO": "ATTPHOTO",
    "RTLOG": "rtlog",
    "RTSTATE": "rtstate",
    # user records pushed in answer to DATA QUERY USERINFO (s0x90 handler)
    "USERINFO": "USERINFO",
    "USER": "USERINFO",
}

_SN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: a stamp is the terminal's opaque upload position; it goes back into the handshake reply,
#: so nothing that could break a line or a ``key=value`` pair
_STAMP = re.compile(r"[\x21-\x7e]{1,64}")


@dataclass(frozen=True, slots=True)
class Request:
    """One classified iclock request. ``table`` only for uploads (``""`` when a POST to
    cdata names none: the answer to an INFO command); ``stamp`` the upload's ``Stamp``."""

    endpoint: Endpoint
    sn: str
    table: str | None = None
    stamp: str | None = None
    device_type: str | None = None
    pushver: str | None = None

    @property
    def security(self) -> bool:
        """A security (access-control) PUSH terminal: ``DeviceType=acc``."""
        return (self.device_type or "").lower() == "acc"


_ROUTES: Final[Mapping[tuple[str, str], Endpoint]] = {
    ("GET", "cdata"): Endpoint.HANDSHAKE,
    ("POST", "cdata"): Endpoint.UPLOAD,
    ("GET", "registry"): Endpoint.REGISTRY,
    ("POST", "registry"): Endpoint.REGISTRY,
    ("GET", "getrequest"): Endpoint.GETREQUEST,
    ("POST", "devicecmd"): Endpoint.DEVICECMD,
    ("GET", "ping"): Endpoint.PING,
}


def _query(query: str | Mapping[str, str]) -> dict[str, str]:
    """The query as a dict with lower-case keys (terminals write ``SN``, proxies ``sn``);
    the first value of a repeated key wins."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query.items()
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key.lower(), value)
    return out


def classify(method: str, path: str, query: str | Mapping[str, str] = "") -> Request:
    """Name an HTTP request by method, path and query (the raw query string, or its
    parameters). Raises :class:`NotIclockRequest` for anything that is not an iclock
    endpoint and :class:`MalformedRequest` for an endpoint without a usable ``SN``."""
    method = method.upper()
    head, _, name = path.rstrip("/").rpartition("/")
    if head != "/iclock" or (method, name) not in _ROUTES:
        raise NotIclockRequest(f"not an iclock request: {method} {path}")
    endpoint = _ROUTES[(method, name)]
    params = _query(query)
    sn = params.get("sn", "")
    if not _SN.fullmatch(sn):
        what = "no SN" if not sn else f"SN {sn[:70]!r} is not a serial number"
        raise MalformedRequest(f"{method} {path}: {what}")
    table = stamp = None
    if endpoint is Endpoint.UPLOAD:
        raw = params.get("table", "")
        table = _TABLES.get(raw.upper(), raw)
        raw_stamp = params.get("stamp")
        if raw_stamp not in (None, ""):
            if not _STAMP.fullmatch(raw_stamp):
                raise MalformedRequest(f"{method} {path}: Stamp {raw_stamp[:70]!r} unusable")
            stamp = raw_stamp
    return Request(
        endpoint,
        sn,
        table=table,
        stamp=stamp,
        device_type=params.get("devicetype") or None,
        pushver=params.get("pushver") or None,
    )


# -- the handshake ----------------------------------------------------------------------------

#: what the gateway asks an attendance terminal to push: records, operation log (the USER
#: lines that tie a PIN to its card) and user changes, and nothing biometric: no AttPhoto,
#: no fingerprint or face templates, no user pictures (they stay on the terminal)
TRANS_FLAG: Final = "TransData AttLog\tOpLog\tEnrollUser\tChgUser"
#: the same for a security terminal (Security PUSH 3.x names tables, not flags)
TRANS_TABLES: Final = "User\tTransaction"
ATTENDANCE_PUSH_VERSION: Final = "2.4.1"
SECURITY_PUSH_VERSION: Final = "3.1.2"


def timezone_value(offset_min: int) -> str:
    """The ``TimeZone`` value for a UTC offset in minutes: whole hours as hours (``8`` for
    China), any other offset in minutes (``330`` for +05:30). Never a fraction: a
    terminal read ``5.5`` as 5 and ran 30 minutes slow (see docs/doors.md)."""
    if not -12 * 60 <= offset_min <= 14 * 60:
        raise ValueError(f"UTC offset {offset_min} min outside -12:00..+14:00")
    return str(offset_min // 60) if offset_min % 60 == 0 else str(offset_min)


@dataclass(frozen=True, slots=True)
class HandshakeOptions:
    """The settings the handshake hands a terminal. ``tz_offset_min`` is the site's UTC
    offset (the terminal shows and stamps local time); ``crlf`` ends lines with CR LF for a
    terminal that wants them (the default, LF, is what the sources agree on)."""

    tz_offset_min: int = 480
    delay_s: int = 10
    error_delay_s: int = 30
    trans_interval_min: int = 1
    trans_times: str = "00:00;14:05"
    realtime: bool = True
    timeout_s: int = 10
    server_name: str = "edge-agent"
    crlf: bool = False

    def __post_init__(self) -> None:
        timezone_value(self.tz_offset_min)
        for name in ("delay_s", "error_delay_s", "trans_interval_min", "timeout_s"):
            value = getattr(self, name)
            if not 1 <= value <= 3600:
                raise ValueError(f"{name} = {value}: 1 to 3600")
        if not re.fullmatch(r"\d\d:\d\d(;\d\d:\d\d)*", self.trans_times, re.ASCII):
            raise ValueError(f"trans_times {self.trans_times!r}: hh:mm;hh:mm")
        if not re.fullmatch(r"[A-Za-z0-9 _.-]{1,32}", self.server_name):
            raise ValueError(f"server_name {self.server_name!r}: letters, digits, ' _.-'")

    @property
    def eol(self) -> str:
        return "\r\n" if self.crlf else "\n"


def registry_code(sn: str) -> str:
    """A stable ``RegistryCode`` for a security terminal: 10 hex digits of its serial's
    SHA-256 (the code only names the registration; it is no secret)."""
    return hashlib.sha256(sn.encode("ascii")).hexdigest()[:10]


def handshake_reply(
    request: Request, cursor: Cursor, options: HandshakeOptions | None = None
) -> str:
    """The body that answers a handshake (``GET /iclock/cdata?options=all``).

    An attendance terminal gets ``GET OPTION FROM: <SN>`` and the committed stamp of each
    table under both its names (``ATTLOGStamp`` and the older ``Stamp``, ...): it uploads
    what it holds after them, so what the gateway did not commit comes again and what it
    committed does not. ``0`` (nothing committed yet) asks for everything the terminal
    holds. A security terminal (``DeviceType=acc``) gets ``registry=ok`` and its
    ``RegistryCode`` first, as the SpeedFace-V3L expects.
    """
    opts = options or HandshakeOptions()
    if request.endpoint is not Endpoint.HANDSHAKE:
        raise ValueError(f"a {request.endpoint} request is not a handshake")
    tz = timezone_value(opts.tz_offset_min)
    common = [
        f"ErrorDelay={opts.error_delay_s}",
        f"Delay={opts.delay_s}",
        f"TransTimes={opts.trans_times}",
        f"TransInterval={opts.trans_interval_min}",
    ]
    realtime = f"Realtime={int(opts.realtime)}"
    if request.security:
        lines = [
            "registry=ok",
            f"RegistryCode={registry_code(request.sn)}",
            f"ServerVersion={SECURITY_PUSH_VERSION}",
            f"ServerName={opts.server_name}",
            f"PushProtVer={SECURITY_PUSH_VERSION}",
            *common,
            f"RequestDelay={opts.delay_s}",
            f"TransTables={TRANS_TABLES}",
            realtime,
            f"TimeoutSec={opts.timeout_s}",
            f"TimeZone={tz}",
        ]
    else:
        att, op, photo = (cursor.stamp(t) for t in STAMPED_TABLES)
        lines = [
            f"GET OPTION FROM: {request.sn}",
            f"ATTLOGStamp={att}",
            f"OPERLOGStamp={op}",
            f"ATTPHOTOStamp={photo}",
            f"Stamp={att}",
            f"OpStamp={op}",
            f"PhotoStamp={photo}",
            *common,
            f"TransFlag={TRANS_FLAG}",
            f"TimeZone={tz}",
            realtime,
            "Encrypt=0",
            f"ServerVer={ATTENDANCE_PUSH_VERSION}",
            f"PushProtVer={ATTENDANCE_PUSH_VERSION}",
        ]
    return opts.eol.join(lines) + opts.eol


def registry_reply(request: Request) -> str:
    """The answer to ``/iclock/registry``: the terminal's ``RegistryCode``."""
    return f"RegistryCode={registry_code(request.sn)}\n"


def upload_reply(request: Request, received: int) -> str:
    """The answer to an upload, sent only once its records are committed: ``OK: <n>`` for
    the stamped tables (both sources answer so), ``OK`` for the others (rtlog)."""
    return f"OK: {received}" if request.table in STAMPED_TABLES else "OK"


def parse_registry(body: bytes | str) -> dict[str, str]:
    """The options of a registry body (``DeviceType=acc,~DeviceName=SpeedFace,...``):
    comma-separated ``key=value``, the leading ``~`` of extended keys dropped."""
    out: dict[str, str] = {}
    for part in _text(body).replace("\n", ",").split(","):
        key, sep, value = part.strip().partition("=")
        if sep and key.strip("~"):
            out[key.strip().lstrip("~")] = value.strip()
    return out


# -- records ----------------------------------------------------------------------------------

# ASCII digits only: \d would take full-width and other Unicode digits, and int() with them
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})", re.ASCII)
_EPOCH = re.compile(r"\d{9,11}", re.ASCII)
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIME_ONLY = re.compile(r"\d{2}:\d{2}:\d{2}", re.ASCII)
_INT = re.compile(r"-?\d{1,10}", re.ASCII)
_PIN = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: records outside these years are junk, not history (a terminal with a flat RTC battery
#: stamps 2000-01-01; that is still a year we accept, the clock gate judges it)
_YEARS: Final = range(2000, 2100)
#: junk lines kept for the log, per upload, each cut to this many characters
_SAMPLES, _SAMPLE_LEN = 3, 120


def parse_time(text: str) -> datetime | None:
    """A record time: ``YYYY-MM-DD hh:mm:ss`` in the terminal's local time (a naive
    datetime), or Unix seconds (an aware UTC datetime; some libraries and firmware send
    that). ``None`` when it is neither."""
    text = text.strip()
    try:
        if m := _DATE_TIME.fullmatch(text):
            y, mo, d, h, mi, sec = (int(g) for g in m.groups())
            t = datetime(y, mo, d, h, mi, sec)  # the terminal's local time: naive
        elif _EPOCH.fullmatch(text):
            t = datetime.fromtimestamp(int(text), UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return t if t.year in _YEARS else None


@dataclass(frozen=True, slots=True)
class Punch:
    """One ATTLOG record: who (PIN), when, the status key pressed (0 check-in, 1 check-out,
    2 break out, 3 break in, 4 overtime in, 5 overtime out) and how they were verified."""

    pin: str
    time: datetime
    status: int | None = None
    verify: int | None = None
    workcode: str | None = None


@dataclass(frozen=True, slots=True)
class User:
    """What the gateway keeps of a user record: the PIN and the card number as the terminal
    prints it. Never the name, the password or the privilege: they are not even parsed."""

    pin: str
    card: str | None


@dataclass(frozen=True, slots=True)
class RtEvent:
    """One rtlog line of a security terminal (keyed, as the SpeedFace-V3L sends it)."""

    time: datetime
    event: int
    door: int
    pin: str | None = None
    card: str | None = None
    inout: int | None = None
    verify: int | None = None
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Photo:
    """An ATTPHOTO upload, recognised and dropped: its header only. The image bytes are
    never kept (no face image leaves the gateway); ``size`` is how many there were."""

    pin: str | None
    captured_at: datetime | None
    size: int


@dataclass(frozen=True, slots=True)
class Upload:
    """A parsed upload. ``skipped`` counts junk lines (never a crash), ``ignored``
    well-formed lines the gateway does not use (other OPERLOG tags, biometric tables),
    ``samples`` a few junk lines for the log (never from OPERLOG: those carry names)."""

    table: str
    stamp: str | None
    punches: tuple[Punch, ...] = ()
    users: tuple[User, ...] = ()
    rtlog: tuple[RtEvent, ...] = ()
    photos: tuple[Photo, ...] = ()
    skipped: int = 0
    ignored: int = 0
    samples: tuple[str, ...] = ()

    @property
    def received(self) -> int:
        """How many records the upload carried (what ``OK: <n>`` reports)."""
        return len(self.punches) + len(self.users) + len(self.rtlog) + len(self.photos)


def _text(body: bytes | str) -> str:
    # records are ASCII; a name in GB18030 or UTF-8 only ever sits in a field we drop
    return body if isinstance(body, str) else body.decode("utf-8", errors="replace")


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]


def _int(text: str | None) -> int | None:
    """An optional integer field: ``None`` when absent or empty; ValueError when not one."""
    if text is None or not text.strip():
        return None
    if not _INT.fullmatch(text.strip()):  # int() also takes "1_0", " ４" and 5000 digits
        raise ValueError(f"not an integer: {text[:20]!r}")
    return int(text.strip())


class _Junk:
    """Counts junk lines and keeps a few for the log."""

    def __init__(self, keep: bool) -> None:
        self.count = 0
        self.samples: list[str] = []
        self.keep = keep

    def add(self, line: str) -> None:
        self.count += 1
        if self.keep and len(self.samples) < _SAMPLES:
            self.samples.append(line[:_SAMPLE_LEN])


def _punch(line: str) -> Punch | None:
    if "\t" in line:
        cols = [c.strip() for c in line.split("\t")]
    else:
        # the whitespace fallback: date and time are two tokens of their own
        toks = line.split()
        if len(toks) >= 3 and _DATE_ONLY.fullmatch(toks[1]) and _TIME_ONLY.fullmatch(toks[2]):
            toks = [toks[0], f"{toks[1]} {toks[2]}", *toks[3:]]
        cols = toks
    if len(cols) < 2 or not _PIN.fullmatch(cols[0]):
        return None
    t = parse_time(cols[1])
    if t is None:
        return None
    try:
        status = _int(cols[2]) if len(cols) > 2 else None
        verify = _int(cols[3]) if len(cols) > 3 else None
    except ValueError:
        return None
    workcode = cols[4] if len(cols) > 4 and cols[4] else None
    return Punch(cols[0], t, status, verify, workcode)


def parse_attlog(body: bytes | str, stamp: str | None = None) -> Upload:
    """ATTLOG: one record a line, TAB-separated ``PIN, time, status, verify[, workcode]``
    (more columns are reserved and ignored); lines without a TAB are split on whitespace.
    A line without a PIN or a time is junk: skipped and counted."""
    punches, junk = [], _Junk(keep=True)
    for line in _lines(_text(body)):
        rec = _punch(line)
        if rec is None:
            junk.add(line)
        else:
            punches.append(rec)
    return Upload(
        "ATTLOG", stamp, punches=tuple(punches), skipped=junk.count, samples=tuple(junk.samples)
    )


#: OPERLOG tags that carry user records
_USER_TAGS: Final = frozenset({"USER", "USERINFO"})
#: OPERLOG tags the gateway recognises and does not use (operation log, biometrics)
_OTHER_TAGS: Final = frozenset(
    {
        "OPLOG",
        "FP",
        "FACE",
        "USERPIC",
        "BIOPHOTO",
        "BIODATA",
        "FVEIN",
        "WORKCODE",
        "SMS",
        "USER_SMS",
        "IDCARD",
        "ERRORLOG",
    }
)


def _fields(text: str, sep: str = "\t") -> dict[str, str]:
    """``key=value`` fields, keys lower-cased; a part without ``=`` is skipped."""
    out: dict[str, str] = {}
    for part in text.split(sep):
        key, eq, value = part.partition("=")
        if eq and key.strip():
            out.setdefault(key.strip().lower(), value.strip())
    return out


def _user(fields: Mapping[str, str]) -> User | None:
    pin = fields.get("pin", "")
    if not _PIN.fullmatch(pin):
        return None
    card = fields.get("card", fields.get("cardno", "")).strip()
    return User(pin, card if card not in ("", "0") else None)


def parse_operlog(body: bytes | str, stamp: str | None = None, table: str = "OPERLOG") -> Upload:
    """OPERLOG (and USERINFO): ``<TAG> key=value<TAB>...`` lines. ``USER`` lines (also
    a bare ``PIN=...`` line, as pushed for DATA QUERY USERINFO) give a :class:`User` with
    the PIN and the card only; the other tags (operation log, fingerprints, faces) are
    ignored; anything else is junk. No sample of a junk line is kept: it may hold a name."""
    users, junk, ignored = [], _Junk(keep=False), 0
    for line in _lines(_text(body)):
        tag, _, rest = line.strip().partition(" ")
        if tag.upper() in _USER_TAGS:
            user = _user(_fields(rest))
        elif tag.upper() in _OTHER_TAGS:
            ignored += 1
            continue
        elif line.lstrip().upper().startswith("PIN="):
            user = _user(_fields(line.strip()))
        else:
            user = None
        if user is None:
            junk.add(line)
        else:
            users.append(user)
    return Upload(table, stamp, users=tuple(users), skipped=junk.count, ignored=ignored)


def _rt_event(line: str) -> RtEvent | None:
    # keyed TAB fields (the SpeedFace-V3L frame); commas in unverified examples elsewhere
    fields = _fields(line, "\t" if "\t" in line else ",")
    t = parse_time(fields.get("time", ""))
    if t is None:
        return None
    try:
        event = _int(fields.get("event"))
        door = _int(fields.get("eventaddr"))
        inout = _int(fields.get("inoutstatus"))
        verify = _int(fields.get("verifytype"))
        index = _int(fields.get("index"))
    except ValueError:
        return None
    if event is None or door is None:
        return None
    pin = fields.get("pin", "")
    card = fields.get("cardno", "")
    return RtEvent(
        time=t,
        event=event,
        door=door,
        pin=pin if pin not in ("", "0") else None,
        card=card if card not in ("", "0") else None,
        inout=inout,
        verify=verify,
        index=index,
    )


def parse_rtlog(body: bytes | str, stamp: str | None = None) -> Upload:
    """rtlog of a security terminal: one event a line, ``key=value`` TAB-separated (time,
    pin, cardno, eventaddr, event, inoutstatus, verifytype, index, ...). A line without a
    time, event or door is junk: skipped and counted."""
    events, junk = [], _Junk(keep=True)
    for line in _lines(_text(body)):
        rec = _rt_event(line)
        if rec is None:
            junk.add(line)
        else:
            events.append(rec)
    return Upload(
        "rtlog", stamp, rtlog=tuple(events), skipped=junk.count, samples=tuple(junk.samples)
    )


_PHOTO_PIN = re.compile(r"(\d{14})-([A-Za-z0-9_-]{1,32})", re.ASCII)


def parse_attphoto(body: bytes, stamp: str | None = None) -> Upload:
    """ATTPHOTO: a TAB-separated header (``PIN=<yyyymmddhhmmss>-<pin>``, ``SN``, ``size``,
    ``CMD=uploadphoto``), a NUL byte, then the JPEG. Recognised by its header and dropped:
    only the header is read, the image is never copied. A body without that header is
    junk."""
    head, nul, image = body.partition(b"\0")
    fields = _fields(_text(head))
    if not nul or ("pin" not in fields and fields.get("cmd", "").lower() != "uploadphoto"):
        return Upload("ATTPHOTO", stamp, skipped=1)
    pin, captured = fields.get("pin") or None, None
    if pin and (m := _PHOTO_PIN.fullmatch(pin)):
        captured = parse_time(
            f"{m[1][:4]}-{m[1][4:6]}-{m[1][6:8]} {m[1][8:10]}:{m[1][10:12]}:{m[1][12:14]}"
        )
        pin = m[2]
    return Upload("ATTPHOTO", stamp, photos=(Photo(pin, captured, len(image)),))


def parse_upload(request: Request, body: bytes) -> Upload:
    """Parse the body of an upload by its table. Tables the gateway does not use (options,
    rtstate, biometric data, an INFO answer) are recognised and ignored, never parsed."""
    if request.endpoint is not Endpoint.UPLOAD:
        raise ValueError(f"a {request.endpoint} request carries no records")
    table, stamp = request.table or "", request.stamp
    if table == "ATTLOG":
        return parse_attlog(body, stamp)
    if table in ("OPERLOG", "USERINFO"):
        return parse_operlog(body, stamp, table)
    if table == "rtlog":
        return parse_rtlog(body, stamp)
    if table == "ATTPHOTO":
        return parse_attphoto(body, stamp)
    return Upload(table, stamp, ignored=len(_lines(_text(body))) if body else 0)


# -- the cursor -------------------------------------------------------------------------------

#: an rtlog index this close below the committed one is a resend (the terminal got no
#: answer to an upload the gateway had committed); further below, the terminal's log was
#: cleared and its index started again
RESEND_WINDOW: Final = 1000


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a terminal has delivered for good: the last committed stamp of each stamped
    table, and the index of the last committed rtlog event. Stored with the events it
    covers (``link.commit(events, cursor=cursor.encode())``) and read back at start."""

    stamps: Mapping[str, str] = field(default_factory=dict)
    rtlog_index: int | None = None
    #: the gateway's PIN → card table (from the terminal's USER lines), kept with the
    #: cursor so that one person keeps one pseudonym across restarts
    cards: Mapping[str, str] = field(default_factory=dict)

    def stamp(self, table: str) -> str:
        """The stamp the handshake hands back for ``table``: ``0`` before the first commit."""
        return self.stamps.get(table, "0")

    def with_users(self, users: tuple[User, ...]) -> Cursor:
        """This cursor with the PIN → card table updated by ``users`` (a user without a
        card drops its PIN's entry)."""
        if not users:
            return self
        cards = dict(self.cards)
        for user in users:
            if user.card:
                cards[user.pin] = user.card
            else:
                cards.pop(user.pin, None)
        return replace(self, cards=cards)

    def encode(self) -> str:
        raw: dict[str, object] = {
            "v": 1,
            "stamps": dict(sorted(self.stamps.items())),
            "rtlog": self.rtlog_index,
        }
        if self.cards:
            raw["cards"] = dict(self.cards)
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        """The cursor ``encode`` wrote; ``None`` (nothing committed yet) is the empty one."""
        if text is None:
            return cls()
        try:
            raw = json.loads(text)
            stamps = raw["stamps"]
            index = raw["rtlog"]
            cards = raw.get("cards", {})
            ok = (
                raw.get("v") == 1
                and isinstance(stamps, dict)
                and all(
                    t in STAMPED_TABLES and isinstance(s, str) and _STAMP.fullmatch(s)
                    for t, s in stamps.items()
                )
                and (index is None or (isinstance(index, int) and not isinstance(index, bool)))
                and isinstance(cards, dict)
                and all(isinstance(p, str) and isinstance(c, str) for p, c in cards.items())
            )
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise CursorError(f"stored iclock cursor {text[:80]!r} unreadable: {err}") from err
        if not ok:
            raise CursorError(f"stored iclock cursor {text[:80]!r} is not one of ours")
        return cls(dict(stamps), index, dict(cards))


@dataclass(frozen=True, slots=True)
class Commit:
    """What to commit for one upload, in one transaction: ``punches``/``rtlog`` become
    events, ``users`` update the gateway's PIN → card table, ``cursor`` goes with them.
    ``resent`` counts records dropped as already committed."""

    cursor: Cursor
    punches: tuple[Punch, ...] = ()
    users: tuple[User, ...] = ()
    rtlog: tuple[RtEvent, ...] = ()
    resent: int = 0


def _is_resend(index: int | None, committed: int | None) -> bool:
    return (
        index is not None
        and committed is not None
        and committed - RESEND_WINDOW < index <= committed
    )


def plan_commit(cursor: Cursor, upload: Upload) -> Commit:
    """The records and the cursor to commit for ``upload``, given the committed ``cursor``.

    - A stamped table whose ``Stamp`` equals the committed one is a resend (the terminal
      did not get the answer to an upload that was committed): nothing to commit again.
      Otherwise the upload's stamp becomes the table's cursor, committed with its records,
      so a crash before that commit leaves the old stamp and the terminal resends, and
      after it the handshake hands back the new stamp and it does not.
    - rtlog events at or just below the committed index are resends and dropped; the
      cursor moves to the index of the last new event.
    - Junk lines do not hold the stamp back: the same bytes would come again forever.
    """
    if upload.table in STAMPED_TABLES:
        if upload.stamp is not None and cursor.stamps.get(upload.table) == upload.stamp:
            return Commit(cursor, resent=upload.received)
        new = cursor
        if upload.stamp is not None:
            new = replace(cursor, stamps={**cursor.stamps, upload.table: upload.stamp})
        return Commit(new, punches=upload.punches, users=upload.users)
    if upload.table == "rtlog":
        fresh = tuple(e for e in upload.rtlog if not _is_resend(e.index, cursor.rtlog_index))
        indexed = [e.index for e in fresh if e.index is not None]
        new = replace(cursor, rtlog_index=indexed[-1]) if indexed else cursor
        return Commit(new, rtlog=fresh, resent=len(upload.rtlog) - len(fresh))
    return Commit(cursor, users=upload.users)


# -- commands ---------------------------------------------------------------------------------

#: what a terminal's ``Return`` codes mean (s0x90 ADMS.md, probed on a SpeedFace-V5L)
RETURN_CODES: Final[Mapping[int, str]] = {
    0: "ok",
    -1: "not supported or no data",
    -2: "file operation failed",
    -1002: "invalid command syntax",
    -1004: "table not supported on this model",
}

_CMD_TEXT = re.compile(r"[^\r\n\0]{1,4000}")
_FIELD_VALUE = re.compile(r"[^\t\r\n\0]{0,64}")


def _checked(cmd: str) -> str:
    if not _CMD_TEXT.fullmatch(cmd):
        raise CommandError(f"command {cmd[:40]!r}: one line of 1 to 4000 characters, no NUL")
    return cmd


def format_command(cmd_id: int, cmd: str) -> str:
    """One getrequest line: ``C:<id>:<cmd>`` and a line feed."""
    if cmd_id < 1:
        raise CommandError(f"command id {cmd_id}: a positive integer")
    return f"C:{cmd_id}:{_checked(cmd)}\n"


def open_door_command(door: int = 1, seconds: int = 5) -> str:
    """Open ``door`` for ``seconds`` (1-254): ``CONTROL DEVICE 01 <door> 01 <seconds>``,
    each a hex byte (operation 01 = output, address type 01 = the door's lock)."""
    if not 1 <= door <= 4:
        raise CommandError(f"door {door}: 1 to 4")
    if not 1 <= seconds <= 254:
        raise CommandError(f"open time {seconds} s: 1 to 254 (255 would leave it open)")
    return f"CONTROL DEVICE 01{door:02X}01{seconds:02X}"


def _pin_checked(pin: str) -> str:
    if not _PIN.fullmatch(pin):
        raise CommandError(f"PIN {pin[:40]!r}: 1 to 32 letters, digits, '_' or '-'")
    return pin


def user_update_command(pin: str, card: str | None = None) -> str:
    """Add or change a user: ``DATA UPDATE USERINFO PIN=..<TAB>Card=..``. Not ``USER ADD``,
    which a real terminal refuses (Return=-1002). Names are not sent from the gateway."""
    parts = [f"PIN={_pin_checked(pin)}"]
    if card is not None:
        if not _FIELD_VALUE.fullmatch(card):
            raise CommandError(f"card {card[:40]!r}: no TAB or line break")
        parts.append(f"Card={card}")
    return "DATA UPDATE USERINFO " + "\t".join(parts)


def user_delete_command(pin: str) -> str:
    """Remove a user: ``DATA DELETE USERINFO PIN=..`` (not ``USER DEL``, not ``DATA DEL``)."""
    return f"DATA DELETE USERINFO PIN={_pin_checked(pin)}"


@dataclass(frozen=True, slots=True)
class Confirmation:
    """One command result a terminal posted to devicecmd. ``cmd`` is the terminal's echo
    (``DATA`` for every DATA command), ``info`` extra lines (an INFO answer, Shell output)."""

    id: int
    code: int
    cmd: str = ""
    info: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def meaning(self) -> str:
        return RETURN_CODES.get(self.code, f"return code {self.code}")


def parse_confirmations(body: bytes | str) -> tuple[list[Confirmation], int]:
    """The results in a devicecmd body and how many results were malformed.

    Three forms: one ``ID=..&Return=..&CMD=..`` a line (several in one POST when the
    terminal batches them), lines after it that hold no ``ID=`` (an INFO answer's
    ``~DeviceName=..``), and the multi-line form of Shell results (``ID=32``, ``Return=0``,
    ``CMD=Shell``, ``Content=..`` each on its own line)."""
    # (fields, extra lines, multi-line form)
    blocks: list[tuple[dict[str, str], list[str], bool]] = []
    for line in _lines(_text(body)):
        stripped = line.strip()
        if stripped.upper().startswith("ID="):
            blocks.append((_fields(stripped, "&"), [], "&" not in stripped))
        elif blocks:
            fields, extra, multiline = blocks[-1]
            key, _, value = stripped.partition("=")
            key = key.strip().lower()
            if multiline and key in ("return", "cmd") and key not in fields:
                fields[key] = value.strip()
            else:
                extra.append(stripped)
    results, malformed = [], 0
    for fields, extra, _ in blocks:
        try:
            cmd_id, code = _int(fields.get("id")), _int(fields.get("return"))
        except ValueError:
            cmd_id = code = None
        if cmd_id is None or code is None:
            malformed += 1
            continue
        results.append(Confirmation(cmd_id, code, fields.get("cmd", ""), tuple(extra)))
    return results, malformed


#: how many answered ids a queue remembers to count repeated results
_ANSWERED_KEPT: Final = 1000


@dataclass(slots=True)
class _Queued:
    id: int
    cmd: str
    sent: bool = False


class CommandQueue:
    """The commands waiting for one terminal. :meth:`add` queues a command and returns its
    id (strictly increasing: start ``next_id`` above every id the terminal has seen, e.g.
    from the outbox, so an old confirmation never matches a new command);
    :meth:`getrequest_reply` hands them out; :meth:`confirm` matches the results, each
    command answered exactly once. Unknown ids and repeated results are ignored and
    counted (``unknown``, ``repeated``, ``malformed``)."""

    def __init__(self, next_id: int = 1, max_queued: int = 100) -> None:
        if next_id < 1:
            raise ValueError(f"next_id {next_id}: a positive integer")
        self._next = next_id
        self._max = max_queued
        self._queue: dict[int, _Queued] = {}
        # ids answered lately (bounded), to tell a repeated result from an unknown id
        self._answered: dict[int, None] = {}
        self.unknown = 0
        self.repeated = 0
        self.malformed = 0

    @property
    def next_id(self) -> int:
        return self._next

    def add(self, cmd: str) -> int:
        """Queue ``cmd``; its id. Raises :class:`CommandError` when the queue is full (the
        terminal has not polled for a long while) or the command is not one line."""
        _checked(cmd)
        if len(self._queue) >= self._max:
            raise CommandError(f"{len(self._queue)} commands already wait for this terminal")
        cmd_id = self._next
        self._next += 1
        self._queue[cmd_id] = _Queued(cmd_id, cmd)
        return cmd_id

    def cancel(self, cmd_id: int) -> bool:
        """Withdraw a command the terminal has not fetched yet (its caller gave up): True
        when it was withdrawn, False when it was already handed out (or is unknown)."""
        queued = self._queue.get(cmd_id)
        if queued is None or queued.sent:
            return False
        del self._queue[cmd_id]
        return True

    def unanswered(self) -> list[tuple[int, str]]:
        """Commands sent and not yet confirmed, oldest first."""
        return [(q.id, q.cmd) for q in self._queue.values() if q.sent]

    def waiting(self) -> list[tuple[int, str]]:
        """Commands not yet handed to the terminal, oldest first."""
        return [(q.id, q.cmd) for q in self._queue.values() if not q.sent]

    def getrequest_reply(self, limit: int = 10) -> str:
        """The answer to a getrequest: up to ``limit`` waiting commands as ``C:<id>:<cmd>``
        lines (each marked sent), or ``OK`` when none waits."""
        batch = [q for q in self._queue.values() if not q.sent][:limit]
        if not batch:
            return "OK"
        for q in batch:
            q.sent = True
        return "".join(format_command(q.id, q.cmd) for q in batch)

    def confirm(self, body: bytes | str) -> list[tuple[Confirmation, str]]:
        """The confirmations in a devicecmd body that answer a command of this queue, each
        with the command it answers; each command is answered once, then forgotten."""
        results, malformed = parse_confirmations(body)
        self.malformed += malformed
        out = []
        for res in results:
            queued = self._queue.get(res.id)
            if queued is None or not queued.sent:
                if res.id in self._answered:
                    self.repeated += 1
                else:
                    self.unknown += 1
                continue
            del self._queue[res.id]
            self._answered[res.id] = None
            if len(self._answered) > _ANSWERED_KEPT:
                del self._answered[next(iter(self._answered))]
            out.append((res, queued.cmd))
        return out
