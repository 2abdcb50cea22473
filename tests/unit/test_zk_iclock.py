"""ZKTeco PUSH / iclock (drivers/zkteco): request classification, the handshake, the body
parsers, the cursor, the command queue, records as contract events, and the third-party
captures in ``../shared/fixtures/access/zk_push.json`` checked at test time (never copied
here)."""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from edge_agent.drivers.zkteco import iclock
from edge_agent.drivers.zkteco.events import (
    Reader,
    event_ts,
    known,
    offset_zone,
    punch_event,
    rtlog_event,
    verify_name,
)
from edge_agent.drivers.zkteco.iclock import (
    CommandError,
    CommandQueue,
    Cursor,
    CursorError,
    Endpoint,
    HandshakeOptions,
    MalformedRequest,
    NotIclockRequest,
    Punch,
    RtEvent,
    Upload,
    User,
    classify,
    handshake_reply,
    parse_upload,
    plan_commit,
)
from tests import captures

SN = "CRJP230860129"
GATE = Reader("gate-1", "gate")


def upload(table: str, body: bytes | str, stamp: str | None = None) -> Upload:
    query = f"SN={SN}&table={table}" + (f"&Stamp={stamp}" if stamp else "")
    raw = body.encode() if isinstance(body, str) else body
    return parse_upload(classify("POST", "/iclock/cdata", query), raw)


def handshake(cursor: Cursor, query: str = f"SN={SN}&options=all", **opts: Any) -> str:
    return handshake_reply(
        classify("GET", "/iclock/cdata", query), cursor, HandshakeOptions(**opts)
    )


def reply_options(reply: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in reply.splitlines() if "=" in line)


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "endpoint"),
    [
        ("GET", "/iclock/cdata", "SN=A1&options=all&pushver=2.4.1", Endpoint.HANDSHAKE),
        ("POST", "/iclock/cdata", "SN=A1&table=ATTLOG&Stamp=9", Endpoint.UPLOAD),
        ("POST", "/iclock/registry", "SN=A1", Endpoint.REGISTRY),
        ("GET", "/iclock/registry", "SN=A1", Endpoint.REGISTRY),
        ("GET", "/iclock/getrequest", "SN=A1", Endpoint.GETREQUEST),
        ("POST", "/iclock/devicecmd", "SN=A1", Endpoint.DEVICECMD),
        ("GET", "/iclock/ping", "SN=A1", Endpoint.PING),
        ("get", "/iclock/getrequest/", "sn=A1", Endpoint.GETREQUEST),
    ],
)
def test_each_endpoint_is_named(method: str, path: str, query: str, endpoint: Endpoint) -> None:
    req = classify(method, path, query)
    assert (req.endpoint, req.sn) == (endpoint, "A1")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/iclock/"),
        ("GET", "/iclock/unknown"),
        ("GET", "/isapi/cdata"),
        ("GET", "/x/iclock/cdata"),
        ("GET", "/iclock/cdata/extra"),
        ("POST", "/iclock/getrequest"),
        ("GET", "/iclock/devicecmd"),
        ("PUT", "/iclock/cdata"),
        ("DELETE", "/iclock/registry"),
    ],
)
def test_anything_else_is_not_an_iclock_request(method: str, path: str) -> None:
    with pytest.raises(NotIclockRequest, match="not an iclock request"):
        classify(method, path, "SN=A1")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("options=all", "no SN"),
        ("SN=&options=all", "no SN"),
        ("SN=a%20b", "not a serial number"),
        ("SN=" + "A" * 65, "not a serial number"),
        ("SN=A1&table=ATTLOG&Stamp=1%0A2", "Stamp"),
    ],
)
def test_an_iclock_request_without_a_usable_sn_or_stamp_is_malformed(
    query: str, message: str
) -> None:
    method = "POST" if "table" in query else "GET"
    with pytest.raises(MalformedRequest, match=message):
        classify(method, "/iclock/cdata", query)


def test_upload_tables_and_stamps_are_read_whatever_the_spelling() -> None:
    req = classify("POST", "/iclock/cdata", {"SN": "A1", "table": "RTLOG", "Stamp": ""})
    assert (req.table, req.stamp) == ("rtlog", None)
    req = classify("POST", "/iclock/cdata", "sn=A1&TABLE=attlog&stamp=77")
    assert (req.table, req.stamp) == ("ATTLOG", "77")
    req = classify("POST", "/iclock/cdata", "SN=A1")  # an INFO answer: no table
    assert req.table == ""
    assert classify("GET", "/iclock/cdata", "SN=A1&DeviceType=acc").security


# -- the handshake ----------------------------------------------------------------------------


def test_handshake_hands_back_the_committed_stamps_under_both_names() -> None:
    cursor = Cursor({"ATTLOG": "5521", "OPERLOG": "17"})
    reply = handshake(cursor)
    assert reply.startswith(f"GET OPTION FROM: {SN}\n")
    opts = reply_options(reply)
    assert (opts["ATTLOGStamp"], opts["Stamp"]) == ("5521", "5521")
    assert (opts["OPERLOGStamp"], opts["OpStamp"]) == ("17", "17")
    # nothing committed yet: 0, the terminal sends all it holds
    assert (opts["ATTPHOTOStamp"], opts["PhotoStamp"]) == ("0", "0")
    assert handshake(Cursor())


def test_handshake_lines_end_in_lf_unless_crlf_is_asked_for() -> None:
    reply = handshake(Cursor())
    assert "\r" not in reply
    assert reply.endswith("\n")
    crlf = handshake(Cursor(), crlf=True)
    assert crlf.endswith("\r\n")
    assert crlf.count("\r\n") == crlf.count("\n") == reply.count("\n")


@pytest.mark.parametrize(
    ("offset_min", "value"),
    [(480, "8"), (0, "0"), (-300, "-5"), (330, "330"), (345, "345"), (-210, "-210")],
)
def test_timezone_is_whole_hours_or_minutes_never_a_fraction(offset_min: int, value: str) -> None:
    assert reply_options(handshake(Cursor(), tz_offset_min=offset_min))["TimeZone"] == value


def test_timezone_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        HandshakeOptions(tz_offset_min=15 * 60)


def test_handshake_asks_for_no_photo_and_no_biometric_data() -> None:
    flag = reply_options(handshake(Cursor()))["TransFlag"]
    assert flag.split("\t")[0] == "TransData AttLog"
    assert set(flag.split("\t")[1:]) == {"OpLog", "EnrollUser", "ChgUser"}
    for word in ("AttPhoto", "FP", "FACE", "UserPic", "BioPhoto"):
        assert word not in flag


def test_handshake_options_shape_the_reply() -> None:
    opts = reply_options(handshake(Cursor(), delay_s=5, error_delay_s=60, realtime=False))
    assert (opts["Delay"], opts["ErrorDelay"], opts["Realtime"]) == ("5", "60", "0")
    with pytest.raises(ValueError, match="delay_s"):
        HandshakeOptions(delay_s=0)
    with pytest.raises(ValueError, match="trans_times"):
        HandshakeOptions(trans_times="00:00\n14:05")
    with pytest.raises(ValueError, match="trans_times"):
        HandshakeOptions(trans_times="００:00;14:05")  # full-width digits


def test_a_security_terminal_gets_registry_ok_and_its_code() -> None:
    reply = handshake(Cursor({"ATTLOG": "9"}), f"SN={SN}&options=all&DeviceType=acc")
    assert reply.startswith("registry=ok\n")
    code = reply_options(reply)["RegistryCode"]
    assert re.fullmatch(r"[0-9a-f]{10}", code)
    assert code == iclock.registry_code(SN) != iclock.registry_code("OTHER1")
    assert "GET OPTION FROM" not in reply
    assert "ATTLOGStamp" not in reply
    assert iclock.registry_reply(classify("POST", "/iclock/registry", f"SN={SN}")) == (
        f"RegistryCode={code}\n"
    )


def test_only_a_handshake_gets_a_handshake_reply() -> None:
    with pytest.raises(ValueError, match="not a handshake"):
        handshake_reply(classify("GET", "/iclock/getrequest", "SN=A1"), Cursor())


# -- ATTLOG -----------------------------------------------------------------------------------


def test_attlog_junk_lines_are_skipped_and_counted_never_a_crash() -> None:
    body = (
        "1\t2026-11-30 07:31:02\t0\t4\n"
        "\n"
        "   \n"
        "junk\n"
        "2\t2026-13-40 25:00:00\t0\t1\n"  # not a date
        "3\t2026-11-30 07:31:05\tx\t1\n"  # status not a number
        "\t2026-11-30 07:31:06\t0\t1\n"  # no PIN
        "4\t1999-12-31 23:59:59\t0\t1\n"  # before 2000: junk, not history
        "5\t2026-11-30 07:31:07\r\n"  # two fields are enough, CR LF too
    )
    up = upload("ATTLOG", body, "100")
    assert [p.pin for p in up.punches] == ["1", "5"]
    assert up.punches[1].status is None
    assert up.skipped == 5
    assert up.samples == ("junk", "2\t2026-13-40 25:00:00\t0\t1", "3\t2026-11-30 07:31:05\tx\t1")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\0\0\0",
        b"\xff\xfe\xfd\n\x80\x81",
        b"\t\t\t\t\n",
        b"1\t" + b"9" * 5000,
        b"1\t99999999999\t0",
        "1\t２０２６-11-30 07:31:02\t0\t1".encode(),
        b"=\t=\t=",
    ],
)
@pytest.mark.parametrize("table", ["ATTLOG", "OPERLOG", "rtlog", "ATTPHOTO", "options"])
def test_no_body_crashes_a_parser(table: str, body: bytes) -> None:
    up = upload(table, body)
    assert up.received == 0
    assert up.skipped + up.ignored <= max(1, body.count(b"\n") + 1)


def test_junk_samples_are_few_and_short() -> None:
    up = upload("ATTLOG", "\n".join("x" * 500 for _ in range(10)))
    assert up.skipped == 10
    assert [len(s) for s in up.samples] == [120, 120, 120]


def test_attlog_whitespace_fallback_and_epoch_times() -> None:
    up = upload("ATTLOG", "7 2026-11-30 07:31:02 1 15 3\n8 1764459062 0 4")
    first, second = up.punches
    assert (first.pin, first.time, first.status, first.verify, first.workcode) == (
        "7",
        datetime(2026, 11, 30, 7, 31, 2),
        1,
        15,
        "3",
    )
    assert first.time.tzinfo is None  # the terminal's local time
    assert second.time == datetime.fromtimestamp(1764459062, UTC)


# -- OPERLOG ----------------------------------------------------------------------------------


def test_operlog_keeps_the_pin_and_card_and_never_the_name_or_password() -> None:
    name = "张三"
    body = (
        f"USER PIN=20261001\tName={name}\tPri=0\tPasswd=8866\tCard=6154410\tGrp=1\n"
        "USER PIN=20261002\tName=Li\tPasswd=\tCard=0\n"
        "OPLOG 4\t0\t2026-11-30 07:00:00\t0\t0\t0\t0\n"
        "FP PIN=20261001\tFID=6\tSize=1024\tValid=1\tTMP=AAAA\n"
        "USER Name=NoPin\tCard=1\n"
        "garbage line with a name 王五\n"
    ).encode("gb18030")
    up = upload("OPERLOG", body, "42")
    assert [(u.pin, u.card) for u in up.users] == [("20261001", "6154410"), ("20261002", None)]
    assert (up.ignored, up.skipped, up.samples) == (2, 2, ())
    text = repr(up)
    for secret in ("8866", "Li'", "NoPin", "Passwd", "Name", "TMP", "AAAA"):
        assert secret not in text
    assert not {"name", "password", "passwd"} & set(iclock.User.__slots__)


# -- rtlog, ATTPHOTO, other tables ------------------------------------------------------------


def test_rtlog_needs_time_event_and_door() -> None:
    body = (
        "time=2026-11-30 07:40:00\tpin=7\tcardno=6154410\teventaddr=2\tevent=0\t"
        "inoutstatus=1\tverifytype=4\tindex=20\n"
        "time=2026-11-30 07:40:01\tpin=0\tcardno=0\teventaddr=2\tevent=200\tindex=21\n"
        "time=2026-11-30 07:40:02,pin=0,eventaddr=1,event=201,index=22\n"
        "time=2026-11-30 07:40:03\tevent=0\n"  # no door
        "time=bad\teventaddr=1\tevent=0\n"
        "time=2026-11-30 07:40:04\teventaddr=1\tevent=x\n"
    )
    up = upload("rtlog", body)
    assert [(e.event, e.door, e.pin, e.card, e.index) for e in up.rtlog] == [
        (0, 2, "7", "6154410", 20),
        (200, 2, None, None, 21),
        (201, 1, None, None, 22),
    ]
    assert up.skipped == 3


def test_attphoto_is_recognised_and_its_image_dropped() -> None:
    jpeg = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"
    head = b"PIN=20261130073102-7\tSN=A1\tsize=1028\tCMD=uploadphoto\0"
    up = upload("ATTPHOTO", head + jpeg, "3")
    (photo,) = up.photos
    assert (photo.pin, photo.captured_at, photo.size) == (
        "7",
        datetime(2026, 11, 30, 7, 31, 2),
        len(jpeg),
    )
    assert not any(isinstance(v, bytes) for v in (photo.pin, photo.captured_at, photo.size))
    plan = plan_commit(Cursor(), up)
    assert (plan.punches, plan.rtlog, plan.users) == ((), (), ())
    assert plan.cursor.stamp("ATTPHOTO") == "3"  # dropped for good: not sent again
    assert upload("ATTPHOTO", b"no header here").skipped == 1


def test_tables_the_gateway_does_not_use_are_ignored_not_parsed() -> None:
    up = upload("BIODATA", "BIODATA Pin=1\tNo=0\tTmp=AAAA\nBIODATA Pin=2\tNo=0\tTmp=BBBB\n")
    assert (up.received, up.ignored, up.skipped) == (0, 2, 0)
    assert "AAAA" not in repr(up)
    with pytest.raises(ValueError, match="carries no records"):
        parse_upload(classify("GET", "/iclock/ping", "SN=A1"), b"")


def test_upload_replies_after_commit() -> None:
    att = classify("POST", "/iclock/cdata", "SN=A1&table=ATTLOG&Stamp=1")
    rt = classify("POST", "/iclock/cdata", "SN=A1&table=rtlog")
    assert iclock.upload_reply(att, 2) == "OK: 2"
    assert iclock.upload_reply(rt, 2) == "OK"


# -- the cursor -------------------------------------------------------------------------------


def test_cursor_round_trips_and_refuses_what_it_did_not_write() -> None:
    cursor = Cursor({"ATTLOG": "5521", "OPERLOG": "17"}, 13357)
    assert Cursor.decode(cursor.encode()) == cursor
    assert Cursor.decode(None) == Cursor()
    for bad in (
        "",
        "[]",
        "{}",
        '{"v":2,"stamps":{},"rtlog":null}',
        '{"v":1,"stamps":{"ATTLOG":"a b"},"rtlog":null}',
        '{"v":1,"stamps":{"X":"1"},"rtlog":null}',
        '{"v":1,"stamps":{},"rtlog":true}',
    ):
        with pytest.raises(CursorError):
            Cursor.decode(bad)


def test_a_crash_before_commit_makes_the_terminal_resend_and_after_commit_not() -> None:
    stored: str | None = None  # what the outbox holds (device_state)
    first = upload("ATTLOG", "1\t2026-11-30 07:31:02\t0\t4\n2\t2026-11-30 07:31:09\t0\t4", "900")
    plan = plan_commit(Cursor.decode(stored), first)
    assert [p.pin for p in plan.punches] == ["1", "2"]
    # the gateway crashes before commit: the stored cursor did not move, so the handshake
    # after restart hands back the old stamp and the terminal sends both records again
    assert reply_options(handshake(Cursor.decode(stored)))["ATTLOGStamp"] == "0"
    stored = plan.cursor.encode()  # committed with the two events
    assert reply_options(handshake(Cursor.decode(stored)))["ATTLOGStamp"] == "900"


def test_a_resent_stamped_upload_is_committed_once() -> None:
    committed = Cursor({"ATTLOG": "900"})
    again = upload("ATTLOG", "1\t2026-11-30 07:31:02\t0\t4", "900")
    plan = plan_commit(committed, again)
    assert (plan.punches, plan.resent, plan.cursor) == ((), 1, committed)
    later = plan_commit(committed, upload("ATTLOG", "3\t2026-11-30 07:32:00\t0\t4", "901"))
    assert [p.pin for p in later.punches] == ["3"]
    assert later.cursor.stamps == {"ATTLOG": "901"}


def test_junk_does_not_hold_the_stamp_back_and_no_stamp_keeps_it() -> None:
    plan = plan_commit(Cursor({"OPERLOG": "4"}), upload("ATTLOG", "junk\njunk", "77"))
    assert plan.cursor.stamps == {"OPERLOG": "4", "ATTLOG": "77"}
    plan = plan_commit(Cursor({"ATTLOG": "5"}), upload("ATTLOG", "1\t2026-11-30 07:31:02"))
    assert (len(plan.punches), plan.cursor.stamps) == (1, {"ATTLOG": "5"})


def rt(index: int) -> str:
    return f"time=2026-11-30 07:40:00\teventaddr=1\tevent=200\tindex={index}\n"


def test_rtlog_resends_are_dropped_by_index_and_a_cleared_log_starts_again() -> None:
    first = plan_commit(Cursor(), upload("rtlog", rt(5) + rt(6)))
    assert [e.index for e in first.rtlog] == [5, 6]
    assert first.cursor.rtlog_index == 6
    resent = plan_commit(first.cursor, upload("rtlog", rt(5) + rt(6) + rt(7)))
    assert ([e.index for e in resent.rtlog], resent.resent) == ([7], 2)
    assert resent.cursor.rtlog_index == 7
    cleared = plan_commit(Cursor(rtlog_index=50_000), upload("rtlog", rt(1) + rt(2)))
    assert [e.index for e in cleared.rtlog] == [1, 2]
    assert cleared.cursor.rtlog_index == 2
    unindexed = plan_commit(
        first.cursor, upload("rtlog", "time=2026-11-30 07:40:00\teventaddr=1\tevent=200")
    )
    assert (len(unindexed.rtlog), unindexed.cursor) == (1, first.cursor)


# -- commands ---------------------------------------------------------------------------------


def test_command_ids_increase_and_getrequest_hands_each_out_once() -> None:
    q = CommandQueue(next_id=41)
    assert q.getrequest_reply() == "OK"
    ids = [q.add("INFO"), q.add(iclock.open_door_command(2, 10)), q.add("CHECK")]
    assert ids == [41, 42, 43]
    assert q.getrequest_reply(limit=2) == "C:41:INFO\nC:42:CONTROL DEVICE 0102010A\n"
    assert q.getrequest_reply() == "C:43:CHECK\n"
    assert q.getrequest_reply() == "OK"
    assert [i for i, _ in q.unanswered()] == [41, 42, 43]


def test_each_command_is_answered_exactly_once_and_unknown_ids_are_counted() -> None:
    q = CommandQueue()
    q.add("INFO")
    q.add("CHECK")
    q.add("LOG")  # never handed out
    q.getrequest_reply(limit=2)
    got = q.confirm(
        "ID=2&Return=0&CMD=CHECK\nID=1&Return=-1002&CMD=INFO\nID=3&Return=0&CMD=LOG\n"
        "ID=99&Return=0&CMD=DATA\nID=x&Return=0\nID=4\n"
    )
    assert [(c.id, c.code, c.ok, cmd) for c, cmd in got] == [
        (2, 0, True, "CHECK"),
        (1, -1002, False, "INFO"),
    ]
    assert got[1][0].meaning == "invalid command syntax"
    assert (q.unknown, q.malformed, q.repeated) == (2, 2, 0)
    assert q.confirm("ID=1&Return=0&CMD=INFO") == []
    assert q.repeated == 1
    assert q.unanswered() == []
    assert q.waiting() == [(3, "LOG")]


def test_commands_are_one_line_and_the_queue_is_bounded() -> None:
    q = CommandQueue(max_queued=2)
    for bad in ("", "INFO\nC:9:Shell reboot", "A\rB", "X\0"):
        with pytest.raises(CommandError):
            q.add(bad)
    q.add("INFO")
    q.add("CHECK")
    with pytest.raises(CommandError, match="already wait"):
        q.add("LOG")
    with pytest.raises(CommandError):
        iclock.format_command(0, "INFO")
    with pytest.raises(ValueError, match="next_id"):
        CommandQueue(next_id=0)


def test_door_and_user_commands() -> None:
    assert iclock.open_door_command() == "CONTROL DEVICE 01010105"
    assert iclock.open_door_command(4, 254) == "CONTROL DEVICE 010401FE"
    for door, seconds in ((0, 5), (5, 5), (1, 0), (1, 255)):
        with pytest.raises(CommandError):
            iclock.open_door_command(door, seconds)
    assert iclock.user_update_command("1001", "6154410") == (
        "DATA UPDATE USERINFO PIN=1001\tCard=6154410"
    )
    assert iclock.user_delete_command("1001") == "DATA DELETE USERINFO PIN=1001"
    for bad in ("", "10 01", "1\t2", "x" * 33):
        with pytest.raises(CommandError):
            iclock.user_delete_command(bad)
    with pytest.raises(CommandError):
        iclock.user_update_command("1", "12\t34")


# -- events -----------------------------------------------------------------------------------


def test_a_punch_is_a_granted_card_read_with_the_card_or_else_the_pin() -> None:
    punch = Punch("20261001", datetime(2026, 11, 30, 7, 31, 2), status=1, verify=15)
    etype, data = punch_event(punch, Reader("canteen-1", "canteen"), {"20261001": "6154410"})
    assert etype == "card_read"
    assert data | {"status": 1} == {
        "card": "6154410",
        "credential": "card",
        "reader": "canteen-1",
        "context": "canteen",
        "direction": "out",
        "result": "granted",
        "verify": "face",
        "verify_code": 15,
        "status": 1,
    }
    _, data = punch_event(Punch("7", punch.time, verify=4, workcode="12"), GATE)
    assert (data["card"], data["credential"], data["direction"], data["verify"]) == (
        "7",
        "pin",
        None,
        "card",
    )
    assert data["workcode"] == "12"
    assert [verify_name(c) for c in (0, 1, 4, 15, 25, 99, None)] == [
        "password",
        "fingerprint",
        "card",
        "face",
        "palm",
        "other",
        "unknown",
    ]


def rtev(event: int, **kw: Any) -> RtEvent:
    fields: dict[str, Any] = {
        "time": datetime(2026, 11, 30, 7, 40),
        "event": event,
        "door": 2,
        "inout": 0,
        "index": 9,
    }
    return RtEvent(**(fields | kw))


@pytest.mark.parametrize(
    ("code", "etype", "extra"),
    [
        (200, "door_opened", {}),
        (201, "door_closed", {}),
        (102, "door_forced", {}),
        (28, "door_held_open", {}),
        (202, "digital_input", {"input": "exit_button", "active": True}),
        (8, "digital_input", {"input": "lock", "active": True, "by": "remote"}),
        (100, "reader_tamper", {}),
        (
            101,
            "digital_input",
            {"input": "duress", "active": True, "severity": "critical", "by": "password"},
        ),
        (
            103,
            "digital_input",
            {"input": "duress", "active": True, "severity": "critical", "by": "fingerprint"},
        ),
        (206, "digital_input", {"input": "unknown"}),
        (9999, "digital_input", {"input": "unknown"}),
    ],
)
def test_rtlog_door_and_alarm_codes(code: int, etype: str, extra: dict[str, Any]) -> None:
    got, data = rtlog_event(rtev(code), {})
    assert got == etype
    assert data == {"door": 2, "direction": "in", "event_code": code, "record_index": 9} | extra


#: the event types of uplink contract v1.1 (docs/mqtt.md): nothing else is published
CONTRACT_EVENT_TYPES = {
    "card_read", "door_opened", "door_closed", "door_forced", "door_held_open",
    "reader_tamper", "motion", "camera_tamper", "line_crossed", "people_count",
    "digital_input", "device_fault",
}  # fmt: skip


@pytest.mark.parametrize("code", range(256))
def test_every_rtlog_code_is_a_contract_event_type(code: int) -> None:
    etype, data = rtlog_event(rtev(code, pin="7"), {})
    assert etype in CONTRACT_EVENT_TYPES
    assert data["event_code"] == code
    if etype == "digital_input":
        assert data["input"] in {"exit_button", "lock", "duress", "unknown"}
    assert known(code) == (data.get("input") != "unknown")


def test_rtlog_passes_and_refusals_are_card_reads_at_the_configured_reader() -> None:
    readers = {(2, "in"): GATE}
    etype, data = rtlog_event(rtev(0, card="6154410", pin="7", verify=4), readers)
    assert (etype, data["result"], data["card"], data["credential"], data["reader"]) == (
        "card_read",
        "granted",
        "6154410",
        "card",
        "gate-1",
    )
    etype, data = rtlog_event(rtev(27, inout=1), readers)
    assert (etype, data["result"], data["reason"], data["card"], data["reader"]) == (
        "card_read",
        "denied",
        "unregistered",
        None,
        "door2-out",
    )
    _, data = rtlog_event(rtev(0, pin="7"), readers, {"7": "123"})
    assert (data["card"], data["credential"]) == ("123", "card")


def test_event_time_is_local_in_the_site_zone_or_epoch_as_it_is() -> None:
    shanghai = offset_zone(480)
    assert (
        event_ts(datetime(2026, 11, 30, 8, 0), shanghai)
        == datetime(2026, 11, 30, 0, 0, tzinfo=UTC).timestamp()
    )
    epoch = datetime.fromtimestamp(1704096000, UTC)
    assert event_ts(epoch, shanghai) == 1704096000
    assert offset_zone(330) == timezone(timedelta(hours=5, minutes=30))


def test_zkteco_protocol_layer_imports_only_the_standard_library() -> None:
    # the pure layer; driver.py and config.py are the agent's side (aiohttp, pydantic)
    allowed = {"edge_agent.drivers.zkteco", "__future__"}
    package = Path(iclock.__file__).resolve().parent
    bad = []
    for path in sorted(package.glob("*.py")):
        if path.name in ("driver.py", "config.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["."]
            for name in names:
                if name.split(".")[0] in sys.stdlib_module_names or any(
                    name == a or name.startswith(a + ".") for a in allowed
                ):
                    continue
                bad.append(f"{path.name}: {name}")
    assert not bad


# -- the third-party captures -----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
FIXTURES = captures.path("zk_push.json")
ABSENT = captures.absent("zk_push.json")


def _cases() -> list[Any]:
    return captures.params("zk_push.json")


def _request_line(line: str) -> iclock.Request:
    """``GET http://host/iclock/cdata?..`` or ``POST /iclock/devicecmd?..`` (the fixtures'
    spellings of a request) classified."""
    method, target = line.split()[:2]
    url = urlsplit(target)
    return classify(method, url.path, url.query)


def _check_punches(up: Upload, records: list[dict[str, Any]]) -> None:
    assert len(up.punches) == len(records)
    for punch, want in zip(up.punches, records, strict=True):
        pin = want.get("pin", want.get("UserID"))
        assert punch.pin == pin
        if "timestamp" in want:
            assert punch.time == datetime.fromisoformat(want["timestamp"])
        for key, attr in (
            ("status", "status"),
            ("Status", "status"),
            ("verify", "verify"),
            ("VerifyMode", "verify"),
            ("workcode", "workcode"),
        ):
            if key in want:
                value = want[key]
                assert getattr(punch, attr) == (
                    int(value) if attr != "workcode" and value is not None else value
                ), key


def _handshake_request(case: dict[str, Any]) -> None:
    req = _request_line(case["text"])
    assert req.endpoint is Endpoint.HANDSHAKE
    assert {"SN": req.sn, "options": "all", "pushver": req.pushver} == case["decoded"]["query"]
    assert urlsplit(case["text"].split()[1]).path == case["decoded"]["path"]
    assert handshake_reply(req, Cursor()).startswith(f"GET OPTION FROM: {req.sn}\n")


def _attlog_request(case: dict[str, Any]) -> None:
    head, _, body = case["text"].partition("\n\n")
    req = _request_line(head.splitlines()[0])
    q = case["decoded"]["query"]
    assert (req.endpoint, req.sn, req.table, req.stamp) == (
        Endpoint.UPLOAD,
        q["SN"],
        q["table"],
        q["Stamp"],
    )
    up = parse_upload(req, body.encode())
    _check_punches(up, case["decoded"]["records"])
    assert plan_commit(Cursor(), up).cursor.stamp("ATTLOG") == q["Stamp"]


def _attlog_body(case: dict[str, Any]) -> None:
    decoded = case["decoded"]
    query = decoded.get("query", "/iclock/cdata?SN=A1&table=ATTLOG")
    req = _request_line(f"POST {query}")
    up = parse_upload(req, case["text"].encode())
    records = decoded["records"]
    assert len(up.punches) == decoded.get("count", len(records))
    if case["name"] == "s0x90_attlog_unix_timestamp_variant":
        assert up.punches[0].time == datetime.fromtimestamp(1704096000, UTC)
        records = [{"UserID": r["UserID"]} for r in records]
    _check_punches(up, records)
    if case["name"] == "s0x90_attlog_mixed_valid_invalid_lines":
        assert up.skipped == 2


def _devicecmd(case: dict[str, Any]) -> None:
    decoded = case["decoded"]
    if "endpoint" in decoded or "request" in decoded:
        req = _request_line(decoded.get("endpoint") or decoded["request"])
        assert req.endpoint is Endpoint.DEVICECMD
    results, malformed = iclock.parse_confirmations(case["text"])
    assert malformed == 0
    want = decoded.get("results") or [decoded]
    assert len(results) == decoded.get("count", len(want))
    for got, w in zip(results, want, strict=False):
        assert got.id == int(w["ID"])
        assert got.code == int(w.get("Return", w.get("ReturnCode", 0)))
        assert got.cmd == w.get("CMD", w.get("Command"))
    if "extra_lines" in decoded:
        assert list(results[0].info) == decoded["extra_lines"]
    if "Content" in decoded:
        assert results[0].info == (f"Content={decoded['Content']}",)
    # a queue that sent these ids takes each result once
    ids = [r.id for r in results]
    q = CommandQueue(next_id=min(ids))
    for _ in range(min(ids), max(ids) + 1):
        q.add("INFO")
    q.getrequest_reply(limit=100)
    assert [c.id for c, _ in q.confirm(case["text"])] == [r.id for r in results]
    assert q.confirm(case["text"]) == []
    assert q.repeated == len(results)


def _user_lines(case: dict[str, Any]) -> None:
    fields = case["decoded"]["records"][0]
    fields = fields.get("fields", fields)
    up = upload("OPERLOG", case["text"])
    assert [(u.pin, u.card) for u in up.users] == [(fields["PIN"], fields["Card"])]
    for private in ("Name", "Passwd", "Password", "Pri", "Privilege"):
        value = str(fields.get(private, ""))
        if len(value) > 2:
            assert value not in repr(up), private


def _attphoto(case: dict[str, Any]) -> None:
    decoded = case["decoded"]
    up = upload("ATTPHOTO", bytes.fromhex(case["bytes_hex"]))
    (photo,) = up.photos
    assert photo.pin == decoded["pin"]
    assert photo.captured_at == datetime.fromisoformat(decoded["captured_at"])
    assert photo.size == decoded["size"] == len(bytes.fromhex(decoded["binary_hex"]))
    assert decoded["binary_hex"] not in repr(up).replace("\\x", "")


def _getrequest_reply(case: dict[str, Any]) -> None:
    decoded = case["decoded"]
    req = _request_line(decoded["request"].split(" (")[0])
    assert req.endpoint in (Endpoint.GETREQUEST, Endpoint.UPLOAD)
    if req.endpoint is Endpoint.UPLOAD:
        assert parse_upload(req, b"").received == 0  # no table: nothing to commit
    q = CommandQueue()
    for cmd in decoded["commands"]:
        assert q.add(cmd["cmd"]) == cmd["id"]
    assert q.getrequest_reply() == case["text"]
    if case["name"] == "s0x90_getrequest_reply_with_command":
        assert iclock.user_delete_command("1001") == decoded["commands"][0]["cmd"]


def _multi_command_reply(case: dict[str, Any]) -> None:
    q = CommandQueue()
    for cmd in case["decoded"]["commands"]:
        fields = cmd.get("fields")
        text = cmd["cmd"]
        if fields:
            text += " " + "\t".join(f"{k}={v}" for k, v in fields.items())
        assert q.add(text) == cmd["id"]
    assert q.getrequest_reply() == case["text"]
    # what the gateway itself sends: DATA UPDATE USERINFO (never USER ADD), without the name
    ours = iclock.user_update_command("1001", "12345678")
    assert ours.startswith("DATA UPDATE USERINFO PIN=1001\t")
    assert "Name" not in ours


def _registry(case: dict[str, Any]) -> None:
    req = _request_line(case["decoded"]["request"])
    assert req.endpoint is Endpoint.REGISTRY
    assert iclock.parse_registry(case["text"]) == case["decoded"]["options"]


def _speedface_rtlog(case: dict[str, Any]) -> None:
    decoded = case["decoded"]
    q = decoded["query"]
    req = classify("POST", "/iclock/cdata", q)
    up = parse_upload(req, case["text"].encode())
    assert (up.skipped, iclock.upload_reply(req, up.received)) == (0, decoded["reply"])
    assert len(up.rtlog) == len(decoded["events"])
    for ev, want in zip(up.rtlog, decoded["events"], strict=True):
        assert (ev.pin or "0") == str(want["UserCode"])
        assert ev.event == want["event"]
        for key, attr in (("verifytype", "verify"), ("inoutstatus", "inout")):
            if key in want:
                assert getattr(ev, attr) == want[key]
        if "timestamp" in want:
            assert ev.time == datetime.fromisoformat(want["timestamp"])
    granted, unknown = (rtlog_event(ev, {}) for ev in up.rtlog)
    assert granted[0] == "card_read"
    assert (granted[1]["result"], granted[1]["card"], granted[1]["credential"]) == (
        "granted",
        "41235478",
        "pin",
    )
    # event 27 with pin 0: nobody to name ("not stored" by the source), a refusal here
    assert (unknown[1]["result"], unknown[1]["card"]) == ("denied", None)
    # the handshake assertions of the same source test
    acc = handshake(Cursor(), f"SN={q['SN']}&options=all&DeviceType=acc")
    assert acc.startswith("registry=ok\n")
    assert re.search(r"RegistryCode=[0-9a-f]{10}", acc)
    assert re.search(r"Realtime=1", acc)
    att = handshake(Cursor(), f"SN={q['SN']}&options=all")
    assert re.match(rf"GET OPTION FROM: {q['SN']}", att)


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "tanem_handshake_request_options_all": _handshake_request,
    "tanem_attlog_upload_request": _attlog_request,
    "tanem_devicecmd_result_info": _devicecmd,
    "tanem_attlog_tab_separated_parse": _attlog_body,
    "tanem_attlog_whitespace_fallback": _attlog_body,
    "tanem_operlog_user_line": _user_lines,
    "tanem_attphoto_upload_nul_separated": _attphoto,
    "s0x90_attlog_single_record": _attlog_body,
    "s0x90_attlog_mixed_valid_invalid_lines": _attlog_body,
    "s0x90_attlog_unix_timestamp_variant": _attlog_body,
    "s0x90_getrequest_reply_with_command": _getrequest_reply,
    "s0x90_cdata_post_reply_with_pending_command": _getrequest_reply,
    "s0x90_devicecmd_batched_confirmations": _devicecmd,
    "s0x90_devicecmd_info_with_trailing_device_info": _devicecmd,
    "s0x90_registry_post_body": _registry,
    "s0x90_user_record_line": _user_lines,
    "s0x90_doc_getrequest_multi_command_reply": _multi_command_reply,
    "s0x90_doc_shell_confirmation_multiline": _devicecmd,
    "speedface_v3l_rtlog_access_events": _speedface_rtlog,
}


@pytest.mark.parametrize("case", _cases())
def test_capture(case: dict[str, Any]) -> None:
    CHECKS[case["name"]](case)


def test_every_capture_has_a_check() -> None:
    if not FIXTURES.is_file():
        pytest.skip(ABSENT)
    names = [c["name"] for c in json.loads(FIXTURES.read_text("utf-8"))]
    assert len(names) == len(set(names)) == 19
    assert set(names) == set(CHECKS)


def test_fixtures_are_found_relative_to_the_repository() -> None:
    # from any checkout or clone: <repo>/../shared/fixtures
    assert FIXTURES.parent.parent.parent == REPO.parent / "shared"
    assert REPO.joinpath("drivers", "zkteco", "iclock.py").is_file()


def test_the_cursor_keeps_the_pin_to_card_table_through_encode_and_commits() -> None:
    cur = Cursor({"ATTLOG": "5"}, 3).with_users((User("7", "123"), User("8", None)))
    assert cur.cards == {"7": "123"}
    back = Cursor.decode(cur.encode())
    assert back == cur
    # a later commit keeps the table; a user without a card any more drops it
    upload = iclock.parse_attlog("7\t2026-11-30 07:40:00\t0\t4\n", "6")
    plan = plan_commit(back, upload)
    assert plan.cursor.cards == {"7": "123"}
    assert plan.cursor.with_users((User("7", None),)).cards == {}
    assert Cursor.decode('{"v":1,"stamps":{},"rtlog":null}').cards == {}  # older cursors
    with pytest.raises(CursorError):
        Cursor.decode('{"v":1,"stamps":{},"rtlog":null,"cards":{"7":1}}')


def test_a_command_not_yet_fetched_can_be_withdrawn_a_sent_one_cannot() -> None:
    q = CommandQueue(next_id=10)
    first, second = q.add("INFO"), q.add("CHECK")
    assert q.cancel(second) is True
    assert q.getrequest_reply() == "C:10:INFO\n"
    assert q.cancel(first) is False  # handed out: the terminal may run it
    assert q.cancel(99) is False
