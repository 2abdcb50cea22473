"""An incremental multipart parser for Hikvision ISAPI bodies: the endless ``alertStream``
(``GET /ISAPI/Event/notification/alertStream``, ``multipart/mixed; boundary=MIME_boundary``) and
the ``multipart/form-data`` a terminal POSTs to its ``httpHosts`` address.

Bytes are fed in whatever chunks the socket gives (a chunk may end inside a delimiter or
inside a header line); :meth:`MultipartParser.feed` returns the parts completed so far. What the
devices do, and what the parser does about it:

- **Line endings.** idstein/hikvision_access's fixtures are CRLF, a DS-K1T342MWX (firmware
  V3.16.1) sends bare LF: a delimiter is ``--boundary`` at the start of a line either way,
  and the line break before it belongs to the delimiter, not to the body.
- **Content-Length is never used.** The DS-K1T342MWX declares lengths that do not match its
  bodies (and a redacted capture cannot match): parts end at the next delimiter only.
- **Pictures.** A part whose Content-Type is ``image/*`` (a face snapshot of a terminal in
  ``httpHosts`` mode with ``pictureURLType=binary``) is dropped as it streams by: the parser keeps
  only the few bytes that may hold the start of the next delimiter, so a picture never sits in
  memory and never leaves the gateway. It is counted in ``stats.pictures``.
- **Bounds.** A part's headers are at most ``max_header_bytes``, its body at most
  ``max_part_bytes``; bytes without a delimiter (garbage, or a part that never ends) are
  dropped the same way as a picture once past the bound, so memory stays bounded whatever
  comes in. Both are counted (``stats.oversized``, ``stats.garbage_bytes``).
- **The end.** :meth:`MultipartParser.finish` says whether the stream ended cleanly (after a
  delimiter or the closing ``--boundary--``) or inside a part: a truncated tail is reported,
  never raised.

Parts of other types than JSON and XML are kept (the caller decides what they are, and counts
what it skips): the httpHosts ``event_log`` part of some terminals has no Content-Type at all.
Pure: bytes in, parts out, standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

#: a part's body is at most this long (an AccessControllerEvent is about 1 KiB)
MAX_PART_BYTES: Final = 256 * 1024
#: a part's headers are at most this long
MAX_HEADER_BYTES: Final = 8 * 1024

# RFC 2046 section 5.1.1: 1 to 70 characters of this set, not ending in a space
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_PARAM = re.compile(r';\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class MultipartError(ValueError):
    """A Content-Type without a usable boundary."""


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/mixed; boundary="x"'`` -> ``('multipart/mixed', {'boundary': 'x'})``: the
    value before the first ``;`` lowercased, and its parameters (names lowercased, quotes
    removed)."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        raw = m.group(2)
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
    return main.strip().lower(), params


def boundary_from_content_type(content_type: str) -> str:
    """The boundary of a ``multipart/*`` Content-Type (``multipart/mixed;
    boundary=MIME_boundary``). Raises :class:`MultipartError` when it is not multipart or its
    boundary is missing or not a valid RFC 2046 boundary."""
    main, params = header_params(content_type)
    if not main.startswith("multipart/"):
        raise MultipartError(f"content type {content_type!r} is not multipart")
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError(f"content type {content_type!r} has no boundary")
    if not _BOUNDARY.match(boundary):
        raise MultipartError(f"boundary {boundary!r} is not a valid multipart boundary")
    return boundary


@dataclass(frozen=True, slots=True)
class Part:
    """One complete part: its headers (names lowercased, last one wins) and its body."""

    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type without parameters, lowercased; ``""`` when there is none."""
        return header_params(self.headers.get("content-type", ""))[0]

    @property
    def name(self) -> str | None:
        """The form-data field name of ``Content-Disposition`` (``event_log``), if any."""
        disposition = self.headers.get("content-disposition")
        if disposition is None:
            return None
        return header_params(disposition)[1].get("name")


@dataclass(slots=True)
class Stats:
    """What the parser has seen, for the driver's diagnostics and its log summaries."""

    #: complete parts returned
    parts: int = 0
    #: ``image/*`` parts dropped unread
    pictures: int = 0
    #: parts dropped because their headers or body passed the bound
    oversized: int = 0
    #: parts whose header lines were not headers
    malformed: int = 0
    #: bytes thrown away: pictures, oversized parts, anything outside a part
    dropped_bytes: int = 0
    #: streams that ended inside a part
    truncated: int = 0


@dataclass(frozen=True, slots=True)
class End:
    """How a stream ended (:meth:`MultipartParser.finish`)."""

    #: ended inside a part: its headers or body were cut off
    truncated: bool
    #: bytes of that unfinished part the parser held
    pending_bytes: int
    #: the closing delimiter ``--boundary--`` was seen
    closed: bool


class _State(Enum):
    PREAMBLE = "preamble"  # before the first delimiter
    DELIMITER_LINE = "delimiter line"  # the rest of a delimiter line: "--", padding, line end
    HEADERS = "headers"
    BODY = "body"
    SKIP = "skip"  # a picture, an oversized or a malformed part: drop until the next delimiter
    TRAILER = "trailer"  # a part already returned: line breaks up to the next delimiter
    EPILOGUE = "epilogue"  # after --boundary--


#: a delimiter line may carry this much transport padding before its line end
_PADDING = 64


class MultipartParser:
    """Incremental parser of one multipart stream (see the module docstring).

    ``feed(chunk)`` returns the parts completed by that chunk, in order; ``finish()`` tells how
    the stream ended. ``max_part_bytes`` and ``max_header_bytes`` bound what one part may
    hold: the parser never holds more than ``max_part_bytes`` plus one chunk."""

    def __init__(
        self,
        boundary: str,
        *,
        max_part_bytes: int = MAX_PART_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        if not _BOUNDARY.match(boundary):
            raise MultipartError(f"boundary {boundary!r} is not a valid multipart boundary")
        self.boundary = boundary
        self.max_part_bytes = max_part_bytes
        self.max_header_bytes = max_header_bytes
        self.stats = Stats()
        self._dash = b"--" + boundary.encode("ascii")
        # a delimiter is "--boundary" at the start of a line; the line break before it
        # (CRLF or a DS-K1T342MWX's bare LF) belongs to the delimiter, not to the body
        self._needle = b"\n" + self._dash
        self._buf = bytearray()
        self._state = _State.PREAMBLE
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._scanned = 0  # body bytes already searched for the needle
        self._complete: _Completion | None = None
        self._fresh = True  # nothing but a possible first delimiter seen yet

    @property
    def buffered(self) -> int:
        """Bytes held right now."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Part]:
        """Take the next bytes of the stream; return the parts they complete."""
        self._buf += data
        out: list[Part] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> End:
        """The stream ended (the connection closed): how it ended, never raising."""
        state, buf = self._state, bytes(self._buf)
        self._buf.clear()
        self._state, self._fresh = _State.PREAMBLE, True
        if state is _State.EPILOGUE or (
            state is _State.DELIMITER_LINE and buf.startswith(b"--") and not buf[2:].strip()
        ):
            return End(truncated=False, pending_bytes=0, closed=True)
        clean = (
            state is _State.PREAMBLE
            # a picture, oversized or malformed part being dropped: counted already, and
            # no event was lost with it
            or state is _State.SKIP
            or (state is _State.DELIMITER_LINE and not buf.strip())
            or (state is _State.HEADERS and not buf and not self._headers)
            or (state is _State.TRAILER and not buf.strip())
        )
        if clean:
            self.stats.dropped_bytes += len(buf)
            return End(truncated=False, pending_bytes=0, closed=False)
        self.stats.truncated += 1
        self.stats.dropped_bytes += len(buf)
        return End(truncated=True, pending_bytes=len(buf), closed=False)

    # -- the state machine ----------------------------------------------------------------

    def _step(self, out: list[Part]) -> bool:
        """One move of the state machine; False when it needs more bytes."""
        state = self._state
        if state is _State.PREAMBLE or state is _State.SKIP:
            return self._seek_delimiter()
        if state is _State.DELIMITER_LINE:
            return self._delimiter_line()
        if state is _State.HEADERS:
            return self._header_line()
        if state is _State.BODY:
            return self._body(out)
        if state is _State.TRAILER:
            return self._trailer()
        self.stats.dropped_bytes += len(self._buf)  # the epilogue is ignored
        self._buf.clear()
        return False

    def _seek_delimiter(self) -> bool:
        buf = self._buf
        if self._fresh:
            if buf.startswith(self._dash):
                del buf[: len(self._dash)]
                self._fresh = False
                self._state = _State.DELIMITER_LINE
                return True
            if self._dash.startswith(buf):
                return False  # the stream may yet start with the delimiter
            self._fresh = False
        i = buf.find(self._needle)
        if i >= 0:
            self.stats.dropped_bytes += i
            del buf[: i + len(self._needle)]
            self._state = _State.DELIMITER_LINE
            return True
        keep = len(self._needle) - 1  # the start of a delimiter split across chunks
        if len(buf) > keep:
            self.stats.dropped_bytes += len(buf) - keep
            del buf[: len(buf) - keep]
        return False

    def _delimiter_line(self) -> bool:
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > _PADDING or (buf and not _could_end_delimiter(bytes(buf))):
                self._skip()  # "--boundaryX": the boundary was a prefix of another line
                return True
            return False
        line = bytes(buf[:nl]).rstrip(b"\r")
        closing = line.startswith(b"--")
        if line[2 if closing else 0 :].strip(b" \t"):
            self._skip()
            return True
        del buf[: nl + 1]
        if closing:
            self._state = _State.EPILOGUE
        else:
            self._state, self._headers, self._header_bytes = _State.HEADERS, {}, 0
        return True

    def _header_line(self) -> bool:
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if self._header_bytes + len(buf) > self.max_header_bytes:
                self.stats.oversized += 1
                self._skip()
                return True
            return False
        line = bytes(buf[:nl]).rstrip(b"\r")
        if line.startswith(self._dash):
            # a delimiter where headers were expected: a part without blank line or body
            self.stats.malformed += 1
            del buf[: len(self._dash)]
            self._state = _State.DELIMITER_LINE
            return True
        del buf[: nl + 1]
        if not line:
            self._state, self._scanned, self._complete = _State.BODY, 0, None
            return True
        self._header_bytes += nl + 1
        name, colon, value = line.decode("latin-1").partition(":")
        name = name.strip()
        if not colon or not name or any(c in name for c in " \t"):
            self.stats.malformed += 1
            self._skip()
            return True
        if self._header_bytes > self.max_header_bytes:
            self.stats.oversized += 1
            self._skip()
            return True
        self._headers[name.lower()] = value.strip()
        return True

    def _body(self, out: list[Part]) -> bool:
        buf = self._buf
        ctype = header_params(self._headers.get("content-type", ""))[0]
        head = bytes(buf[:8])
        if head and len(head) < 8 and any(m[: len(head)] == head for m in _PICTURE_MAGIC):
            return False  # may be the start of a picture's magic number: wait for more
        if _is_picture(ctype, self._headers, buf):
            self.stats.pictures += 1
            self._skip()
            buf[0:0] = b"\n"  # at a line start: an empty picture ends at a delimiter here
            return True
        if self._scanned == 0 and buf.startswith(self._dash):
            self._emit(out, b"")  # an empty body right after the blank line
            del buf[: len(self._dash)]
            self._state = _State.DELIMITER_LINE
            return True
        i, undecided = self._find_delimiter(max(0, self._scanned - len(self._needle) + 1))
        limit = i if i >= 0 else undecided if undecided >= 0 else len(buf)
        # A terminal sends the delimiter *before* each part, so the end of a part is known
        # only when the next event comes (a DS-K1T342MWX may stay silent for minutes). A JSON
        # or XML body is complete when its top-level value closes: returned at once.
        if self._complete is None:
            self._complete = _Completion.start(ctype, buf)
        done = self._complete.scan(buf, limit) if self._complete else None
        if done is not None:
            self._emit(out, bytes(buf[:done]))
            del buf[:done]
            self._state = _State.TRAILER
            return True
        if i >= 0:
            body = bytes(buf[:i])
            self._emit(out, body[:-1] if body.endswith(b"\r") else body)
            del buf[: i + len(self._needle)]
            self._state = _State.DELIMITER_LINE
            return True
        if len(buf) > self.max_part_bytes:
            self.stats.oversized += 1
            self._skip()
            return True
        self._scanned = len(buf) if undecided < 0 else undecided
        return False

    def _find_delimiter(self, start: int) -> tuple[int, int]:
        """``(index of the next delimiter or -1, index of a possible one whose line end has
        not come yet or -1)``: ``--boundaryX`` at a line start is body, not a delimiter."""
        buf, n = self._buf, len(self._needle)
        i = buf.find(self._needle, start)
        while i >= 0:
            after = bytes(buf[i + n : i + n + 2])
            if not after or after == b"-":
                return -1, i  # wait for the bytes that say what it is
            if after == b"--" or after[:1] in (b"\r", b"\n", b" ", b"\t"):
                return i, -1
            i = buf.find(self._needle, i + 1)
        return -1, -1

    def _emit(self, out: list[Part], body: bytes) -> None:
        out.append(Part(self._headers, body))
        self.stats.parts += 1

    def _trailer(self) -> bool:
        # after a body returned early: its line break, then the next delimiter
        buf = self._buf
        stripped = len(buf) - len(buf.lstrip())
        del buf[:stripped]
        if buf.startswith(self._dash):
            del buf[: len(self._dash)]
            self._state = _State.DELIMITER_LINE
            return True
        if not buf or self._dash.startswith(buf):
            return False
        self._skip()  # bytes after a complete value: dropped up to the next delimiter
        return True

    def _skip(self) -> None:
        """Drop the current part up to the next delimiter (bounded: see _seek_delimiter)."""
        self._state, self._fresh, self._headers = _State.SKIP, False, {}


def _could_end_delimiter(tail: bytes) -> bool:
    """Whether the bytes after ``--boundary`` (no line break yet) may still be a delimiter
    line: ``--``, padding and a CR only."""
    rest = tail[2:] if tail.startswith(b"--") else tail
    if tail == b"-":
        return True
    return not rest.strip(b" \t\r")


#: the first bytes of JPEG and PNG files, for picture parts sent without a Content-Type
_PICTURE_MAGIC: Final = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def _is_picture(ctype: str, headers: dict[str, str], body_start: bytearray) -> bool:
    """A face snapshot: ``image/*``, a form field named like ``picture`` (a DS-K1T's
    httpHosts POST names it so, sometimes without a Content-Type), or JPEG/PNG bytes."""
    if ctype.startswith("image/"):
        return True
    params = header_params(headers.get("content-disposition", ""))[1]
    if "pic" in params.get("name", "").lower():
        return True
    if params.get("filename", "").lower().endswith((".jpg", ".jpeg", ".png")):
        return True
    return bytes(body_start[:8]).startswith(_PICTURE_MAGIC)


class _Completion:
    """Finds where a JSON or XML body ends, incrementally, without parsing it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.pos = 0  # bytes scanned
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.root_close: bytes | None = None  # XML: b"</root"

    @classmethod
    def start(cls, ctype: str, buf: bytearray) -> _Completion | None:
        """A scanner for this body, once its first byte that is not a blank has come; None
        while the body is blank so far or when it is neither JSON nor XML."""
        lead = bytes(buf[:64]).lstrip().removeprefix(b"\xef\xbb\xbf")
        if not lead:
            return None
        if "json" in ctype or (not ctype and lead[:1] in (b"{", b"[")):
            return cls("json") if lead[:1] in (b"{", b"[") else _NEVER
        if "xml" in ctype or (not ctype and lead[:1] == b"<"):
            return cls("xml") if lead[:1] == b"<" else _NEVER
        return _NEVER

    def scan(self, buf: bytearray, limit: int) -> int | None:
        """The end of the value within ``buf[:limit]``, or None if it has not ended yet."""
        if self.kind == "json":
            return self._scan_json(buf, limit)
        if self.kind == "xml":
            return self._scan_xml(buf, limit)
        return None

    def _scan_json(self, buf: bytearray, limit: int) -> int | None:
        i = self.pos
        while i < limit:
            c = buf[i]
            i += 1
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
                    return i
        self.pos = i
        return None

    def _scan_xml(self, buf: bytearray, limit: int) -> int | None:
        if self.root_close is None:
            m = _XML_ROOT.match(bytes(buf[:limit]))
            if m is None:
                return None
            if m.group(2):  # <root .../>
                return m.end()
            self.root_close = b"</" + m.group(1)
            self.pos = m.end()
        i = buf.find(self.root_close, max(self.pos - len(self.root_close), 0), limit)
        if i < 0:
            self.pos = limit
            return None
        j = buf.find(b">", i, limit)
        if j < 0:
            self.pos = i
            return None
        return j + 1


#: a body that is not JSON or XML: it ends at the next delimiter
_NEVER = _Completion("none")
# the prolog, comments, then the root element's start tag (name, and "/" if it closes itself)
_XML_ROOT = re.compile(
    rb"\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*)*<([A-Za-z_][\w.:-]*)(?:\s[^>]*?)?(/?)>", re.S
)
