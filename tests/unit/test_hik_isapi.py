"""Hikvision ISAPI, the pure layer (drivers/hikvision): the alertStream multipart parser, the
httpHosts push bodies, the SDK code mapping, the AcsEvent catch-up and device times; and every
case of ``../shared/fixtures/access/hik_isapi.json`` parsed at test time (never copied here)."""

from __future__ import annotations

import ast
import json
import random
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_agent.drivers import cards
from edge_agent.drivers.hikvision import acsevent, events, multipart
from edge_agent.drivers.hikvision.acsevent import AcsEventSearch, parse_response
from edge_agent.drivers.hikvision.alerts import AlertStream, parse_push
from edge_agent.drivers.hikvision.events import (
    AccessEvent,
    Heartbeat,
    IsapiError,
    Other,
    Reader,
    parse_time,
    to_event,
)
from edge_agent.drivers.hikvision.multipart import (
    MultipartError,
    MultipartParser,
    boundary_from_content_type,
)
from tests import captures

SHANGHAI = ZoneInfo("Asia/Shanghai")
CUIABA = timezone(timedelta(hours=-4))  # the DS-K1T342MWX capture's zone
STREAM = "multipart/mixed; boundary=MIME_boundary"


def ace(major: int | None, minor: int | None, **fields: Any) -> dict[str, Any]:
    """An alertStream / push notification as a DS-K1T sends it (JSON)."""
    inner: dict[str, Any] = {"deviceName": "gate 1", "serialNo": 7, **fields}
    if major is not None:
        inner["majorEventType"] = major
    if minor is not None:
        inner["subEventType"] = minor
    return {
        "ipAddress": "192.0.2.10",
        "macAddress": "aa:bb:cc:dd:ee:ff",
        "dateTime": "2026-11-29T08:00:00+08:00",
        "eventType": "AccessControllerEvent",
        "eventState": "active",
        "AccessControllerEvent": inner,
    }


def mapped(major: int | None, minor: int | None, **fields: Any) -> tuple[str, dict[str, Any]]:
    n = events.notification(ace(major, minor, **fields), SHANGHAI)
    assert isinstance(n, AccessEvent)
    return to_event(n, {})


def part(
    body: bytes, ctype: str | None = "application/json", nl: bytes = b"\r\n", **hdr: str
) -> bytes:
    """One part as a terminal sends it: the delimiter first, headers, blank line, body."""
    lines = [b"--MIME_boundary"]
    if ctype is not None:
        lines.append(b"Content-Type: " + ctype.encode())
    lines += [f"{k.replace('_', '-')}: {v}".encode() for k, v in hdr.items()]
    return nl.join([*lines, b"", body]) + nl


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# -- the multipart parser -------------------------------------------------------------------


def test_boundary_comes_from_the_content_type() -> None:
    assert boundary_from_content_type(STREAM) == "MIME_boundary"
    assert boundary_from_content_type('multipart/form-data; boundary="a b:c"') == "a b:c"
    assert boundary_from_content_type("Multipart/Mixed;charset=x;BOUNDARY=x1") == "x1"
    for bad in ("application/json", "multipart/mixed", "multipart/mixed; boundary=", "text/x"):
        with pytest.raises(MultipartError):
            boundary_from_content_type(bad)
    with pytest.raises(MultipartError):
        boundary_from_content_type("multipart/mixed; boundary=" + "x" * 71)


def _bodies(parser: MultipartParser, chunks: list[bytes]) -> list[bytes]:
    return [p.body for c in chunks for p in parser.feed(c)]


def test_a_json_part_is_returned_before_the_next_delimiter_comes() -> None:
    # terminals send the delimiter before each part: a door forced at 03:00 must not wait
    # for the next event or heartbeat to be known
    p = MultipartParser("MIME_boundary")
    got = p.feed(part(js({"eventType": "heartBeat", "s": '}{\\"}'}), nl=b"\n"))
    assert [json.loads(x.body) for x in got] == [{"eventType": "heartBeat", "s": '}{\\"}'}]
    xml = b'<?xml version="1.0"?>\n<EventNotificationAlert a="1"><x/></EventNotificationAlert>'
    assert [x.body for x in p.feed(part(xml, "application/xml"))] == [xml]
    assert p.finish().truncated is False


def test_content_length_is_never_trusted() -> None:
    body = js({"eventType": "heartBeat", "pad": "x" * 40})
    for declared in (5, len(body) + 30):
        p = MultipartParser("MIME_boundary")
        got = p.feed(part(body, Content_Length=str(declared)) + b"--MIME_boundary\r\n")
        assert [x.body for x in got] == [body]
        # and the same for a body that is not JSON, which ends only at the delimiter
        p = MultipartParser("MIME_boundary")
        got = p.feed(part(b"plain text", "text/plain", Content_Length=str(declared)))
        assert got == []
        assert [x.body for x in p.feed(b"--MIME_boundary\r\n")] == [b"plain text"]


MIXED = (
    b"garbage before the first delimiter\r\n"
    + part(
        js(ace(5, 0x4B, cardReaderNo=1, employeeNoString="S1")), 'application/json; charset="UTF-8"'
    )
    + part(
        b"\xff\xd8\xff\xe0" + b"J" * 300 + b"\r\n--MIME_boundar", "image/jpeg", Content_Length="9"
    )
    + part(
        b"<EventNotificationAlert><eventType>videoloss</eventType><eventState>inactive"
        b"</eventState></EventNotificationAlert>",
        "application/xml",
    )
    + part(b"not an event", "text/plain")
    + part(js({"eventType": "heartBeat"}), None, nl=b"\n")
    + b"--MIME_boundary--\r\nepilogue"
)


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_every_split_of_a_multi_part_body_gives_the_same_parts(nl: bytes) -> None:
    data = MIXED if nl == b"\r\n" else MIXED.replace(b"\r\n", b"\n")
    whole = MultipartParser("MIME_boundary")
    want = _bodies(whole, [data])
    assert len(want) == 4  # the picture is dropped, the four others are parts
    assert whole.stats.pictures == 1
    assert whole.finish().closed
    for at in range(len(data) + 1):
        p = MultipartParser("MIME_boundary")
        assert _bodies(p, [data[:at], data[at:]]) == want, at
        assert (p.stats.pictures, p.finish().closed) == (1, True), at
    p = MultipartParser("MIME_boundary")
    assert _bodies(p, [data[i : i + 1] for i in range(len(data))]) == want  # byte by byte
    assert p.stats.pictures == 1


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_every_split_gives_the_same_notifications(nl: bytes) -> None:
    data = MIXED if nl == b"\r\n" else MIXED.replace(b"\r\n", b"\n")
    want = AlertStream(STREAM, SHANGHAI).feed(data)
    assert [type(n) for n in want] == [AccessEvent, Heartbeat, Heartbeat]
    for at in range(len(data) + 1):
        s = AlertStream(STREAM, SHANGHAI)
        assert s.feed(data[:at]) + s.feed(data[at:]) == want, at
        assert s.skipped == 1  # the text/plain part
        assert "text/plain" in (s.last_skip or "")


def test_a_huge_picture_is_never_held_in_memory() -> None:
    p = MultipartParser("MIME_boundary")
    head = part(b"", "image/jpeg")[: -len(b"\r\n")]  # headers and the blank line
    assert p.feed(head) == []
    rng = random.Random(9)
    chunk = bytes(rng.getrandbits(8) for _ in range(65536)).replace(b"\n", b"n")
    most = 0
    for _ in range(160):  # 10 MiB of face picture
        assert p.feed(b"\xff\xd8\xff" + chunk[3:]) == []
        most = max(most, p.buffered)
    assert most < 64  # only what may be the start of the next delimiter
    after = p.feed(b"\r\n" + part(js({"eventType": "heartBeat"})))
    assert [x.body for x in after] == [js({"eventType": "heartBeat"})]
    assert p.stats.pictures == 1
    assert p.stats.dropped_bytes >= 160 * 65536


@pytest.mark.parametrize(
    ("ctype", "headers", "start"),
    [
        (None, {"Content_Disposition": 'form-data; name="picture"'}, b"binary"),
        (None, {}, b"\xff\xd8\xff\xe0JFIF"),
        (None, {}, b"\x89PNG\r\n\x1a\nrest"),
        (
            "application/octet-stream",
            {"Content_Disposition": 'form-data; name="x"; filename="a.jpg"'},
            b"b",
        ),
        ("image/jpeg", {}, b""),  # no body at all
    ],
    ids=["named-picture", "jpeg-bytes", "png-bytes", "jpg-filename", "empty-image"],
)
def test_pictures_are_dropped_however_they_come(
    ctype: str | None, headers: dict[str, str], start: bytes
) -> None:
    p = MultipartParser("MIME_boundary")
    picture = part(start + b"\x00" * 5000 if start else b"", ctype, **headers)
    if not start:  # an empty picture: the next delimiter right after the blank line
        picture = picture[: -len(b"\r\n")]
    data = picture + part(js({"eventType": "heartBeat"}))
    assert [x.body for x in p.feed(data)] == [js({"eventType": "heartBeat"})]
    assert p.stats.pictures == 1


def test_garbage_without_a_boundary_does_not_grow_memory() -> None:
    p = MultipartParser("MIME_boundary", max_part_bytes=64 * 1024)
    rng = random.Random(3)
    junk = bytes(rng.getrandbits(8) for _ in range(65536)).replace(b"\n", b" ")
    most = 0
    for _ in range(100):  # 6.4 MiB before any delimiter
        assert p.feed(junk) == []
        most = max(most, p.buffered)
    assert most < 64
    # a part that never ends: its body passes the bound and is dropped, then all resyncs
    p.feed(b"\r\n" + part(b"unterminated text " * 10, "text/plain")[:-2])
    for _ in range(100):
        assert p.feed(junk) == []
        most = max(most, p.buffered)
    assert most <= 64 * 1024 + len(junk)
    assert p.stats.oversized == 1
    assert p.buffered < 64
    got = p.feed(b"\r\n" + part(js({"eventType": "heartBeat"})))
    assert [x.body for x in got] == [js({"eventType": "heartBeat"})]
    assert p.stats.dropped_bytes > 12 * 65536


def test_a_json_part_that_never_closes_is_bounded() -> None:
    p = MultipartParser("MIME_boundary", max_part_bytes=4096)
    assert p.feed(part(b'{"a": [' + b"1," * 10000, "application/json")) == []
    assert p.stats.oversized == 1
    assert p.buffered < 64
    assert [x.body for x in p.feed(part(b"{}"))] == [b"{}"]


def test_headers_are_bounded_and_checked() -> None:
    p = MultipartParser("MIME_boundary", max_header_bytes=1024)
    assert p.feed(b"--MIME_boundary\r\nX-Long: " + b"a" * 5000) == []
    assert p.stats.oversized == 1
    assert p.buffered < 64
    assert p.feed(b"\r\n" + part(b"{}")) != []
    p.feed(b"--MIME_boundary\r\nthis is no header\r\n\r\n{}\r\n")
    assert p.stats.malformed == 1
    assert [x.body for x in p.feed(part(b"{}"))] == [b"{}"]


def test_a_boundary_prefix_is_not_a_delimiter() -> None:
    p = MultipartParser("MIME_boundary")
    got = p.feed(
        part(b"text\r\n--MIME_boundaryX is not a delimiter", "text/plain") + b"--MIME_boundary\r\n"
    )
    assert [x.body for x in got] == [b"text\r\n--MIME_boundaryX is not a delimiter"]


def test_a_truncated_tail_is_reported_not_raised() -> None:
    p = MultipartParser("MIME_boundary")
    assert p.feed(part(b'{"eventType": "Access', "application/json")[:-2]) == []
    end = p.finish()
    assert (end.truncated, end.pending_bytes) == (True, len(b'{"eventType": "Access'))
    assert p.stats.truncated == 1
    p = MultipartParser("MIME_boundary")
    p.feed(b"--MIME_boundary\r\nContent-Ty")
    assert p.finish().truncated
    picture_cut = part(b"\xff\xd8\xff" + b"x" * 100, "image/jpeg")[:-2]  # no event lost
    for clean in (
        part(b"{}"),
        part(b"{}") + b"--MIME_boundary\r\n",
        b"--MIME_boundary\r\n",
        b"",
        picture_cut,
    ):
        p = MultipartParser("MIME_boundary")
        p.feed(clean)
        end = p.finish()
        assert (end.truncated, end.closed) == (False, False), clean
    p = MultipartParser("MIME_boundary")
    p.feed(part(b"{}") + b"--MIME_boundary--")
    assert p.finish().closed


def test_part_headers_are_read() -> None:
    p = MultipartParser("MIME_boundary")
    [got] = p.feed(
        part(
            b"{}",
            'application/JSON; charset="UTF-8"',
            Content_Disposition='form-data; name="event_log"',
        )
    )
    assert (got.content_type, got.name) == ("application/json", "event_log")
    assert got.headers["content-disposition"] == 'form-data; name="event_log"'


# -- notifications and push bodies ----------------------------------------------------------


def test_heartbeats_are_recognised() -> None:
    xml = (
        b'<EventNotificationAlert version="2.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">'
        b"<eventType>videoloss</eventType><eventState>inactive</eventState>"
        b"</EventNotificationAlert>"
    )
    assert isinstance(events.notification(events.decode_body(xml), SHANGHAI), Heartbeat)
    assert isinstance(events.notification({"eventType": "heartBeat"}, SHANGHAI), Heartbeat)
    assert isinstance(events.notification(ace(5, 0x83), SHANGHAI), Heartbeat)
    active = xml.replace(b"inactive", b"active")
    assert events.notification(events.decode_body(active), SHANGHAI) == Other("videoloss", "active")


def test_an_xml_access_event_reads_like_a_json_one() -> None:
    xml = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<EventNotificationAlert xmlns="http://www.isapi.org/ver20/XMLSchema">'
        b"<dateTime>2026-11-29T08:00:00+08:00</dateTime><eventType>AccessControllerEvent</eventType>"
        b"<AccessControllerEvent><majorEventType>5</majorEventType><subEventType>1</subEventType>"
        b"<cardNo>0006154410</cardNo><doorNo>1</doorNo><cardReaderNo>2</cardReaderNo>"
        b"<serialNo>42</serialNo><name>Zhang San</name></AccessControllerEvent>"
        b"</EventNotificationAlert>"
    )
    n = events.notification(events.decode_body(xml), SHANGHAI)
    assert n == AccessEvent(
        major=5,
        minor=1,
        time=datetime(2026, 11, 29, 0, 0, tzinfo=UTC),
        serial_no=42,
        door=1,
        reader_no=2,
        card="6154410",
        person=None,
        qr=None,
        live=None,
    )


def test_parts_that_are_not_events_are_skipped_and_counted() -> None:
    s = AlertStream(STREAM, SHANGHAI)
    data = (
        part(b"hello", "text/plain")
        + part(b"{not json}", "application/json")
        + part(b"<Other/>", "application/xml")
        + part(b"[1, 2]", "application/json")
        + part(js({"eventType": "heartBeat"}))
    )
    assert s.feed(data) == [Heartbeat()]
    assert s.skipped == 4
    assert s.stats.parts == 5


def test_push_json_and_xml_bodies() -> None:
    batch = parse_push(js(ace(5, 0x1B, doorNo=2)), "application/json", SHANGHAI)
    [n] = batch.notifications
    assert isinstance(n, AccessEvent)
    assert to_event(n, {})[0] == "door_forced"
    bom = parse_push(b"\xef\xbb\xbf" + js(ace(5, 0x19)), "application/json", SHANGHAI)
    assert [type(n) for n in bom.notifications] == [AccessEvent]
    s = AlertStream(STREAM, SHANGHAI)
    assert s.feed(part(b"\xef\xbb\xbf" + js({"eventType": "heartBeat"}))) == [Heartbeat()]
    bad = parse_push(b"\x00\x01", "application/octet-stream", SHANGHAI)
    assert (bad.notifications, bad.skipped) == ([], 1)
    huge = parse_push(b"{" + b" " * 300_000 + b"}", "application/json", SHANGHAI)
    assert huge.skipped == 1
    assert parse_push(b"--x\r\n", "multipart/form-data", SHANGHAI).skipped == 1


def test_push_form_data_with_a_picture() -> None:
    body = (
        part(
            js(ace(5, 0x01, cardNo="123")),
            "application/json",
            Content_Disposition='form-data; name="AccessControllerEvent"',
        )
        + part(
            b"\xff\xd8\xff" + b"\x00" * 100_000,
            "image/jpeg",
            Content_Disposition='form-data; name="Picture"; filename="a.jpg"',
        )
        + b"--MIME_boundary--\r\n"
    )
    batch = parse_push(body, "multipart/form-data; boundary=MIME_boundary", SHANGHAI)
    assert [to_event(n, {})[0] for n in batch.notifications if isinstance(n, AccessEvent)] == [
        "card_read"
    ]
    assert (batch.pictures, batch.skipped, batch.truncated) == (1, 0, False)
    cut = parse_push(body[:200], "multipart/form-data; boundary=MIME_boundary", SHANGHAI)
    assert cut.truncated


def test_nothing_a_device_sends_raises() -> None:
    # deep nesting, non-ASCII digits, bytes flipped anywhere: counted, never a crash
    nasty = [
        part(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
        part(
            b"<EventNotificationAlert>"
            + b"<a>" * 5000
            + b"</a>" * 5000
            + b"</EventNotificationAlert>",
            "application/xml",
        ),
        part(js(ace(5, 1, serialNo="\u00b2", doorNo="\u0663")), "application/json"),
        part(
            b"<EventNotificationAlert><serialNo>\xc2\xb2</serialNo></EventNotificationAlert>",
            "text/xml",
        ),
    ]
    s = AlertStream(STREAM, SHANGHAI, max_part_bytes=1 << 20)
    found = [n for data in nasty for n in s.feed(data)] + s.feed(b"--MIME_boundary\r\n")
    assert s.skipped == 2  # the two nested too deep
    assert [type(n) for n in found] == [AccessEvent, Other]
    assert isinstance(found[0], AccessEvent)
    assert (found[0].serial_no, found[0].door) == (None, None)
    rng = random.Random(5)
    for _ in range(300):
        data = bytearray(MIXED)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        data = data[: rng.randrange(len(data) + 1)]
        s = AlertStream(STREAM, SHANGHAI)
        at = 0
        while at < len(data):
            step = rng.randrange(1, 200)
            s.feed(bytes(data[at : at + step]))
            at += step
        s.finish()
        parse_push(bytes(data), "multipart/form-data; boundary=MIME_boundary", SHANGHAI)


# -- the code mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("major", "minor", "fields", "etype", "want"),
    [
        (
            5,
            0x01,
            {"cardNo": "0006154410"},
            "card_read",
            {"result": "granted", "verify": "card", "card": "6154410", "credential": "card"},
        ),
        (
            5,
            0x06,
            {"cardNo": "11"},
            "card_read",
            {"result": "denied", "reason": "no_right", "card": "11"},
        ),
        (5, 0x09, {"cardNo": "99"}, "card_read", {"result": "denied", "reason": "invalid_card"}),
        (5, 0x0A, {"cardNo": "11"}, "card_read", {"result": "denied", "reason": "anti_passback"}),
        (
            5,
            0x4B,
            {"employeeNoString": "S1"},
            "card_read",
            {"result": "granted", "verify": "face", "card": "S1", "credential": "pin"},
        ),
        (
            5,
            0x4C,
            {},
            "card_read",
            {"result": "denied", "verify": "face", "reason": "verify_failed", "card": None},
        ),
        (
            5,
            0x50,
            {},
            "card_read",
            {"result": "denied", "verify": "face", "reason": "not_recognised"},
        ),
        (
            5,
            0x26,
            {"employeeNoString": "S2"},
            "card_read",
            {"result": "granted", "verify": "fingerprint", "card": "S2"},
        ),
        (5, 0x27, {}, "card_read", {"result": "denied", "verify": "fingerprint"}),
        (
            5,
            0x9C,
            {"QRCodeInfo": "qr-77"},
            "card_read",
            {"result": "granted", "verify": "qr", "card": "qr-77", "credential": "qr"},
        ),
        (5, 0x9D, {}, "card_read", {"result": "denied", "verify": "qr", "credential": None}),
        (5, 0x17, {"doorNo": 1}, "digital_input", {"door": 1, "input": "exit_button"}),
        (5, 0x19, {"doorNo": 2}, "door_opened", {"door": 2}),
        (5, 0x1A, {"doorNo": 2}, "door_closed", {"door": 2}),
        (5, 0x1B, {"doorNo": 1}, "door_forced", {"door": 1}),
        (5, 0x1C, {"doorNo": 1}, "door_held_open", {"door": 1}),
        (5, 0x15, {"doorNo": 1}, "digital_input", {"input": "lock", "active": True}),
        (5, 0x16, {"doorNo": 1}, "digital_input", {"input": "lock", "active": False}),
        (3, 0x400, {"doorNo": 1}, "digital_input", {"input": "lock", "by": "remote"}),
        (1, 0x406, {}, "reader_tamper", {"part": "reader"}),
        (1, 0x40A, {}, "digital_input", {"input": "duress", "severity": "critical"}),
        (1, 0x418, {}, "digital_input", {"input": "fire", "active": True, "severity": "critical"}),
        (1, 0x419, {}, "digital_input", {"input": "fire", "active": False}),
        (1, 0x41C, {}, "digital_input", {"input": "emergency", "severity": "critical"}),
        (5, 0x34, {}, "digital_input", {"input": "fire", "severity": "critical"}),
        (2, 0x409, {}, "device_fault", {"fault": "card_reader_offline"}),
        (2, 0x400, {}, "digital_input", {"input": "unknown", "code": "device_power_on"}),
        (5, 0x18, {}, "digital_input", {"input": "unknown", "code": "door_button_release"}),
    ],
)
def test_codes_map_to_contract_events(
    major: int, minor: int, fields: dict[str, Any], etype: str, want: dict[str, Any]
) -> None:
    got_type, data = mapped(major, minor, **fields)
    assert got_type == etype
    assert {k: data[k] for k in want} == want
    assert (data["major"], data["minor"], data["serial_no"]) == (major, minor, 7)
    assert events.known(major, minor)


@pytest.mark.parametrize(("major", "minor"), [(5, 0x1234), (9, 1), (1, 0), (3, 0x7FFF)])
def test_an_unknown_code_is_published_with_its_raw_codes(major: int, minor: int) -> None:
    etype, data = mapped(major, minor, cardNo="5", doorNo=3)
    assert etype == "digital_input"
    assert data == {
        "input": "unknown",
        "door": 3,
        "serial_no": 7,
        "major": major,
        "minor": minor,
        "card": "5",
        "credential": "card",
        "code": None,
    }
    assert not events.known(major, minor)


def test_an_event_without_codes_is_still_published() -> None:
    etype, data = mapped(None, None, QRCodeInfo="abc-123")
    assert (etype, data["input"], data["major"], data["minor"], data["card"]) == (
        "digital_input",
        "unknown",
        None,
        None,
        "abc-123",
    )
    assert data["credential"] == "qr"
    assert not events.known(None, None)


def test_names_pictures_and_addresses_never_come_out() -> None:
    personal = {
        "name": "Zhang San 张三",
        "pictureURL": "http://192.0.2.10/pic/face.jpg",
        "FaceRect": {"x": 0.1},
        "cardNo": "1",
        "employeeNoString": "S1",
        "remoteHostAddr": "192.0.2.99",
    }
    for minor in (0x01, 0x4B, 0x19, 0x1234):
        _, data = mapped(5, minor, **personal)
        text = json.dumps(data, ensure_ascii=False)
        for secret in ("Zhang", "张三", "pic", "face.jpg", "0.1", "192.0.2", "aa:bb"):
            assert secret not in text, (minor, secret)
        assert not {"name", "pictureURL", "FaceRect"} & data.keys()


def test_readers_come_from_the_site_map() -> None:
    gate_in = Reader("south-gate-in", "gate", "in")
    readers = {(1, 1): gate_in, (None, 2): Reader("any-exit", "gate", "out")}
    e = events.notification(ace(5, 0x4B, doorNo=1, cardReaderNo=1), SHANGHAI)
    assert isinstance(e, AccessEvent)
    data = to_event(e, readers)[1]
    assert (data["reader"], data["context"], data["direction"]) == ("south-gate-in", "gate", "in")
    e = events.notification(ace(5, 0x4B, doorNo=4, cardReaderNo=2), SHANGHAI)
    assert isinstance(e, AccessEvent)
    assert to_event(e, readers)[1]["reader"] == "any-exit"
    e = events.notification(ace(5, 0x4B, doorNo=3, cardReaderNo=1), SHANGHAI)
    assert isinstance(e, AccessEvent)
    data = to_event(e, readers)[1]
    assert (data["reader"], data["context"], data["direction"]) == ("door3-reader1", "access", None)
    with pytest.raises(ValueError, match="context"):
        Reader("x", "office")
    with pytest.raises(ValueError, match="direction"):
        Reader("x", "gate", "up")


def test_card_then_employee_number_then_qr_identify_the_person() -> None:
    # a card, else the employee number (a face-only user has no card), else a QR code: what
    # identifies the person goes in card, which the pipeline pseudonymises (as for ZKTeco)
    both = mapped(5, 0x26, cardNo="0011", employeeNoString="001", QRCodeInfo="q")[1]
    assert (both["card"], both["credential"]) == ("11", "card")
    pin = mapped(5, 0x4B, employeeNoString="001", QRCodeInfo="q")[1]
    assert (pin["card"], pin["credential"]) == ("001", "pin")
    door = mapped(5, 0x19, employeeNoString="001")[1]
    assert (door["card"], door["credential"]) == ("001", "pin")
    assert "card" not in mapped(5, 0x19)[1]


@pytest.mark.parametrize("printed", ["0006154410", "6154410", "0", "18446744073709551615", " 42 "])
def test_card_numbers_agree_with_the_card_rule(printed: str) -> None:
    assert events.canonical_card(printed) == cards.canonical(cards.parse_printed(printed))


# -- times ----------------------------------------------------------------------------------


def test_device_times() -> None:
    want = datetime(2025, 6, 22, 14, 26, 22, tzinfo=UTC)
    assert parse_time("2025-06-22T10:26:22-04:00", SHANGHAI) == want
    assert parse_time("2025-06-22T22:26:22+0800", CUIABA) == want
    assert parse_time("2025-06-22T14:26:22Z", SHANGHAI) == want
    # no offset: the device's local time, placed in the site's zone
    assert parse_time("2025-06-22T22:26:22", SHANGHAI) == want
    assert parse_time("2025-06-22 10:26:22", CUIABA) == want
    # a repeated hour (DST end in New York): the first one
    ny = ZoneInfo("America/New_York")
    assert parse_time("2026-11-01T01:30:00", ny) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    for bad in ("", "yesterday", "2025-13-01T00:00:00", "1750000000", "2025-06-22"):
        with pytest.raises(IsapiError):
            parse_time(bad, SHANGHAI)
    assert events.format_time(want, SHANGHAI) == "2025-06-22T22:26:22+08:00"
    with pytest.raises(ValueError, match="aware"):
        events.format_time(datetime(2025, 1, 1), SHANGHAI)


def test_an_event_time_is_its_notification_time() -> None:
    e = events.notification(ace(5, 1), SHANGHAI)
    assert isinstance(e, AccessEvent)
    assert events.event_ts(e) == datetime(2026, 11, 29, 0, 0, tzinfo=UTC).timestamp()
    no_time = ace(5, 1)
    del no_time["dateTime"]
    e = events.notification(no_time, SHANGHAI)
    assert isinstance(e, AccessEvent)
    assert events.event_ts(e) is None
    bad = ace(5, 1)
    bad["dateTime"] = "soon"
    with pytest.raises(IsapiError):
        events.notification(bad, SHANGHAI)


# -- the AcsEvent catch-up ------------------------------------------------------------------


def _page(status: str, serials: list[int], total: int = 50) -> bytes:
    items = [
        {"major": 5, "minor": 1, "time": "2026-11-29T08:00:00+08:00", "serialNo": s, "cardNo": "1"}
        for s in serials
    ]
    return js(
        {
            "AcsEvent": {
                "searchID": "s1",
                "responseStatusStrg": status,
                "numOfMatches": len(items),
                "totalMatches": total,
                "InfoList": items,
            }
        }
    )


def test_a_search_walks_the_pages() -> None:
    start = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
    search = AcsEventSearch(
        "s1", start, start + timedelta(hours=24), SHANGHAI, begin_serial=101, max_results=2
    )
    path, body = search.request()
    assert path == "/ISAPI/AccessControl/AcsEvent?format=json"
    assert body == {
        "AcsEventCond": {
            "searchID": "s1",
            "searchResultPosition": 0,
            "maxResults": 2,
            "major": 0,
            "minor": 0,
            "startTime": "2026-11-29T00:00:00+08:00",
            "endTime": "2026-11-30T00:00:00+08:00",
            "beginSerialNo": 101,
        }
    }
    page = search.accept(_page("MORE", [101, 102]), SHANGHAI)
    assert (page.more, page.last_serial, search.position, search.done) == (True, 102, 2, False)
    assert search.request()[1]["AcsEventCond"]["searchResultPosition"] == 2
    page = search.accept(_page("OK", [103]), SHANGHAI)
    assert (page.more, page.last_serial, search.position, search.done) == (False, 103, 3, True)
    with pytest.raises(RuntimeError):
        search.request()
    # a terminal answering MORE with nothing would loop forever
    again = AcsEventSearch("s2", start, start, SHANGHAI)
    again.accept(_page("MORE", []), SHANGHAI)
    assert again.done
    assert (
        "beginSerialNo"
        not in again.__class__("s3", start, start, SHANGHAI).request()[1]["AcsEventCond"]
    )


def test_search_answers_that_are_not_pages() -> None:
    nothing = parse_response(
        js(
            {
                "AcsEvent": {
                    "searchID": "s",
                    "responseStatusStrg": "NO MATCH",
                    "numOfMatches": 0,
                    "totalMatches": 0,
                }
            }
        ),
        SHANGHAI,
    )
    assert (nothing.events, nothing.more, nothing.last_serial) == ([], False, None)
    refused = js(
        {"statusCode": 6, "statusString": "Invalid Content", "subStatusCode": "badJsonContent"}
    )
    with pytest.raises(IsapiError, match="statusCode 6, badJsonContent"):
        parse_response(refused, SHANGHAI)
    for bad in (b"<html>", b"[]", js({"AcsEvent": {"responseStatusStrg": "MAYBE"}})):
        with pytest.raises(IsapiError):
            parse_response(bad, SHANGHAI)
    lying = json.loads(_page("OK", [1, 2]))
    lying["AcsEvent"]["numOfMatches"] = 3
    with pytest.raises(IsapiError, match="numOfMatches 3"):
        parse_response(js(lying), SHANGHAI)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="before"):
        AcsEventSearch("s", start, start - timedelta(1), SHANGHAI)
    with pytest.raises(ValueError, match="aware"):
        AcsEventSearch("s", datetime(2026, 1, 1), datetime(2026, 1, 2), SHANGHAI)


# -- the third-party fixtures ---------------------------------------------------------------

FIXTURES = captures.path("hik_isapi.json")
ABSENT = captures.absent("hik_isapi.json")


def _cases() -> list[Any]:
    return captures.params("hik_isapi.json")


def test_fixtures_are_found_relative_to_the_repository() -> None:
    # from any checkout or clone: <repo>/../shared/fixtures
    repo = Path(__file__).resolve().parents[2]
    assert FIXTURES == (repo.parent / "shared" / "fixtures" / "access" / "hik_isapi.json")


def test_every_fixture_is_a_case() -> None:
    if not FIXTURES.is_file():
        pytest.skip(ABSENT)
    cases = json.loads(FIXTURES.read_text("utf-8"))
    assert len(cases) == 14
    assert len({c["name"] for c in cases}) == 14


def _subset(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(actual[k], v) for k, v in expected.items()
        )
    return bool(actual == expected)


def _outputs(found: list[Any]) -> str:
    return json.dumps(
        [to_event(n, {}) for n in found if isinstance(n, AccessEvent)], ensure_ascii=False
    )


def _names(case: dict[str, Any]) -> set[str]:
    """The personal names a case holds (never to be in an output)."""
    text = case["text"]
    return {m for m in ("REDACTED_NAME", "Alice", "Bob", '"hex"') if m in text}


@pytest.mark.parametrize("case", _cases())
def test_fixture(case: dict[str, Any]) -> None:
    text: str = case["text"]
    data = text.encode("utf-8")
    want: dict[str, Any] = case["decoded"]
    name: str = case["name"]
    found: list[Any] = []
    if text.startswith("--"):
        boundary = text.split("\n", 1)[0].strip()[2:]
        assert boundary == want.get("boundary", boundary)
        form = "httphosts" in name or "form-data" in text
        ctype = f"multipart/{'form-data' if form else 'mixed'}; boundary={boundary}"
        # every split of the body gives the same result (chunks cut anywhere)
        whole = AlertStream(ctype, CUIABA)
        found = whole.feed(data)
        end = whole.finish()
        for at in range(0, len(data) + 1, 1 if len(data) < 1500 else 7):
            s = AlertStream(ctype, CUIABA)
            assert s.feed(data[:at]) + s.feed(data[at:]) == found, at
            assert s.finish() == end
        raw = MultipartParser(boundary)
        parts = raw.feed(data)
        raw.finish()
        if "parts" in want:
            objs = [json.loads(p.body) for p in parts]
            assert len(objs) == len(want["parts"])
            for obj, exp in zip(objs, want["parts"], strict=True):
                assert _subset(obj, exp) or _subset(obj.get("AccessControllerEvent"), exp)
        if "actual_body_length" in want:
            # the DS-K1T342MWX's Content-Length is wrong: the parts end at their value
            lengths = [len(p.body) for p in parts]
            actual = want["actual_body_length"]
            assert lengths == (actual if isinstance(actual, list) else [actual])
            assert lengths != want["declared_content_length"]
        if "AccessControllerEvent" in want and "parts" not in want:
            [obj] = [json.loads(p.body) for p in parts]
            assert _subset(
                obj,
                {
                    k: v
                    for k, v in want.items()
                    if k
                    not in (
                        "boundary",
                        "declared_content_length",
                        "actual_body_length",
                        "test_asserts",
                    )
                },
            )
        if "complete_parts" in want:
            assert (found, end.truncated, end.pending_bytes > 0) == ([], True, True)
        else:
            assert not end.truncated
        if "skipped_parts" in want:
            assert whole.skipped == len(want["skipped_parts"])
            assert [n.event_type for n in found if isinstance(n, Other)] == [
                p["eventType"] for p in want["parsed_json_parts"]
            ]
        if "split_at" in want:
            s = MultipartParser(boundary)
            first = s.feed(data[: want["split_at"]])
            assert len(first) == want["first_pass_parts"]
            assert len(s.feed(data[want["split_at"] :])) == want["second_pass_parts"]
        if form:
            batch = parse_push(data, ctype, CUIABA)
            assert batch.notifications == found
            if "credential" in want:
                assert [to_event(n, {})[1]["card"] for n in found] == [want["credential"]]
            if "discarded_parts" in want:
                assert batch.pictures + batch.skipped == want["discarded_parts"]
                assert [n.live for n in found] == [True]
                assert [n.serial_no for n in found] == [123]
    elif '"AcsEvent"' in text:
        page = parse_response(data, CUIABA)
        acs = want["AcsEvent"]
        assert (page.status, page.total, len(page.events)) == (
            acs["responseStatusStrg"],
            acs["totalMatches"],
            acs["numOfMatches"],
        )
        found = page.events
        if "minor_histogram_in_page" in want:
            hist = Counter(f"{e.major}.{e.minor}" for e in found)
            assert hist == Counter(want["minor_histogram_in_page"])
            first = next(e for e in found if e.minor == 75)
            etype, out = to_event(first, {})
            assert (etype, out["result"], out["verify"], first.serial_no) == (
                "card_read",
                "granted",
                "face",
                19354,
            )
            assert page.last_serial == max(e.serial_no or 0 for e in found)
        if "first" in want["AcsEvent"]:
            first_want = want["AcsEvent"]["first"]
            assert (found[0].serial_no, found[0].major, found[0].minor, found[0].card) == (
                first_want["serialNo"],
                first_want["major"],
                first_want["minor"],
                first_want["cardNo"],
            )
            assert found[0].time == datetime(2026, 5, 26, 6, 0, tzinfo=UTC)
    else:
        batch = parse_push(data, "application/json", SHANGHAI)
        found = batch.notifications
        [e] = found
        assert isinstance(e, AccessEvent)
        inner = want["AccessControllerEvent"]
        assert (e.major, e.minor, e.serial_no) == (
            inner["majorEventType"],
            inner["subEventType"],
            inner["serialNo"],
        )
        assert e.time == parse_time(want["dateTime"], SHANGHAI)
    out = _outputs(found)
    for secret in _names(case) | {"pictureURL", "FaceRect", "192.0.2.10", "AA:BB:CC"}:
        assert secret not in out, secret
    # what a DS-K1T342MWX's codes mean (HCNetSDK.h, not the repository's discovery table)
    by_code = {(n.major, n.minor): to_event(n, {})[0] for n in found if isinstance(n, AccessEvent)}
    expected = {
        (5, 23): "digital_input",  # exit button
        (5, 22): "digital_input",  # lock
        (5, 21): "digital_input",  # lock
        (5, 75): "card_read",
        (5, 38): "card_read",
        (2, 1024): "digital_input",  # unknown
        (3, 112): "digital_input",  # unknown
    }
    for code, etype in by_code.items():
        if code in expected:
            assert etype == expected[code], code


def test_the_hikvision_package_imports_only_the_standard_library() -> None:
    # the protocol layer stays pure: the driver, a simulator test or a tool can use it
    package = Path(events.__file__).resolve().parent
    bad = []
    # config.py and driver.py are the driver (pydantic, aiohttp); the rest is the pure layer
    pure = ("__init__.py", "acsevent.py", "alerts.py", "events.py", "multipart.py")
    for path in sorted(package / name for name in pure):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            for name in names:
                if name.split(".")[0] in sys.stdlib_module_names:
                    continue
                if name == "edge_agent.drivers.hikvision" or name.startswith(
                    "edge_agent.drivers.hikvision."
                ):
                    continue
                bad.append(f"{path.name}: {name}")
    assert not bad
    assert {acsevent.__name__, multipart.__name__}  # the modules this file covers


#: the event types of contract v1.1 (shared/CONTRACT.md of the steering checkout, docs/mqtt.md)
CONTRACT_TYPES = {
    "card_read", "door_opened", "door_closed", "door_forced", "door_held_open",
    "reader_tamper", "motion", "camera_tamper", "line_crossed", "people_count",
    "digital_input", "device_fault",
}  # fmt: skip


def test_every_code_maps_to_a_contract_event_type() -> None:
    # docs/mqtt.md "Door and card events": a platform that validates `type` never meets
    # an unknown one; the rest are digital_input with `input`
    codes = [(5, m) for m in events.VERIFY] + list(events.DOOR_EVENTS) + list(events.NAMES)
    codes = [c for c in codes if c != events.HEARTBEAT_CODE] + [(5, 0x1234), (9, 1), (None, None)]
    inputs = set()
    for major, minor in codes:
        etype, data = mapped(major, minor)
        assert etype in CONTRACT_TYPES, (major, minor, etype)
        if etype == "digital_input":
            inputs.add(data["input"])
            if data["input"] in ("fire", "duress", "emergency") and data["active"]:
                assert data["severity"] == "critical"
    assert inputs == {"exit_button", "lock", "fire", "duress", "emergency", "unknown"}
