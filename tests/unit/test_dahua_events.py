"""Dahua's eventManager attach stream, the pure layer (drivers/dahua/events.py): the
incremental parser, the access and camera mappings, and every case of
``../shared/fixtures/access/dahua_events.json`` parsed at test time (never copied here)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.drivers.dahua import events
from edge_agent.drivers.dahua.events import (
    DahuaEvent,
    EventStream,
    Heartbeat,
    Item,
    Reader,
    StreamError,
    boundary_from_content_type,
    camera_event,
    parse_record,
    to_event,
)
from tests import captures

CONTENT_TYPE = "multipart/x-mixed-replace; boundary=myboundary"


def part(body: str, *, headers: str = "Content-Type: text/plain\r\n", blank: bool = True) -> bytes:
    """One part as a device sends it: delimiter, headers, (blank line,) body, CRLF."""
    blank_line = "\r\n" if blank else ""
    return f"--myboundary\r\n{headers}{blank_line}{body}\r\n".encode()


def run(chunks: list[bytes], **bounds: int) -> tuple[list[Item], EventStream, events.End]:
    stream = EventStream("myboundary", **bounds)
    items: list[Item] = []
    for chunk in chunks:
        items += stream.feed(chunk)
    end = stream.finish()
    return items + end.items, stream, end


def codes(items: list[Item]) -> list[str]:
    return [i.code if isinstance(i, DahuaEvent) else "Heartbeat" for i in items]


# -- the parser -----------------------------------------------------------------------------

ACCESS = (
    'Code=AccessControl;action=Pulse;index=0;data={\n   "CardNo" : "7A087D0F",\n'
    '   "Method" : 1,\n   "Name" : "OpenDoor",\n   "Status" : 1,\n   "Type" : "Entry",\n'
    '   "UserID" : "9901",\n   "CardName" : "Zhang San; class 3",\n   "SnapURL" : "/a.jpg"\n}'
)
STREAM = (
    part("Heartbeat", headers="Content-Type: text/plain\r\nContent-Length:9\r\n", blank=False)
    + part(ACCESS, headers="Content-Type: text/plain\r\nContent-Length: 999\r\n")
    + part('Code=DoorStatus;action=Pulse;index=0;data={ "Status" : "Open" }')
    + part("Code=VideoMotion;action=Start;index=1", blank=False)
    + part(
        'Code=DoorStatus;action=Pulse;index=0;data={"Status":"Close"}\r\n'
        'Code=CrossLineDetection;action=Start;index=0;data={"Name":"Gate; east",'
        '"Direction":"LeftToRight"}'
    )
    + b"--myboundary\r\n"
)
STREAM_CODES = [
    "Heartbeat",
    "AccessControl",
    "DoorStatus",
    "VideoMotion",
    "DoorStatus",
    "CrossLineDetection",
]


def test_a_stream_in_one_chunk() -> None:
    items, stream, end = run([STREAM])
    assert codes(items) == STREAM_CODES
    assert (end.truncated, stream.stats.garbage_bytes, stream.stats.bad_data) == (False, 0, 0)
    access = items[1]
    assert isinstance(access, DahuaEvent)
    assert (access.code, access.action, access.index) == ("AccessControl", "Pulse", 0)
    assert access.data["CardName"] == "Zhang San; class 3"  # ';' inside the JSON
    last = items[-1]
    assert isinstance(last, DahuaEvent)
    assert last.data["Name"] == "Gate; east"


def test_every_split_into_two_chunks_gives_the_same_items() -> None:
    whole, _, _ = run([STREAM])
    for cut in range(1, len(STREAM)):
        items, stream, end = run([STREAM[:cut], STREAM[cut:]])
        assert items == whole, f"split at {cut}: {STREAM[cut - 10 : cut + 10]!r}"
        assert not end.truncated, cut
        assert stream.stats.garbage_bytes == 0, cut


def test_byte_by_byte_and_three_way_splits() -> None:
    whole, _, _ = run([STREAM])
    assert run([STREAM[i : i + 1] for i in range(len(STREAM))])[0] == whole
    step = 37
    for a in range(1, len(STREAM), step):
        for b in range(a + 1, len(STREAM), step):
            assert run([STREAM[:a], STREAM[a:b], STREAM[b:]])[0] == whole, (a, b)


def test_an_event_is_returned_when_it_ends_not_when_the_next_part_comes() -> None:
    # a device sends the delimiter *before* each part and may stay silent for minutes
    stream = EventStream("myboundary")
    assert stream.feed(part("Heartbeat")) == [Heartbeat()]
    got = stream.feed(part(ACCESS))
    assert codes(got) == ["AccessControl"]
    got = stream.feed(b"--myboundary\r\n\r\nCode=VideoMotion;action=Stop;index=0\r\n")
    assert codes(got) == ["VideoMotion"]
    assert stream.buffered == 0


def test_lf_framing_and_no_blank_line() -> None:
    lf = STREAM.replace(b"\r\n", b"\n")
    assert codes(run([lf])[0]) == STREAM_CODES


def test_content_length_is_never_used() -> None:
    lying = part("Code=VideoMotion;action=Start;index=0", headers="Content-Length: 5\r\n")
    short = part("Code=VideoBlind;action=Start;index=0", headers="Content-Length: 4000\r\n")
    items, _, end = run([lying + short + b"--myboundary\r\n"])
    assert codes(items) == ["VideoMotion", "VideoBlind"]
    assert not end.truncated


def test_boundary_from_the_content_type() -> None:
    assert boundary_from_content_type(CONTENT_TYPE) == "myboundary"
    assert boundary_from_content_type('multipart/mixed; boundary="my b"') == "my b"
    assert EventStream.for_content_type(CONTENT_TYPE).boundary == "myboundary"
    for bad in ("text/plain", "multipart/x-mixed-replace", 'multipart/mixed; boundary="a b "'):
        with pytest.raises(StreamError):
            boundary_from_content_type(bad)
    with pytest.raises(StreamError):
        EventStream("")


def test_garbage_before_between_and_inside_parts_is_dropped_and_counted() -> None:
    junk = b"HTTP/1.1 garbage \x00\xff\r\nmore\r\n"
    second = STREAM.index(b"--myboundary", 1)  # in the body of the heartbeat's part
    stream = junk + STREAM[:second] + b"not a record at all\r\n" + STREAM[second:]
    items, parser, end = run([stream])
    assert codes(items) == STREAM_CODES
    assert parser.stats.garbage_lines == 1
    assert parser.last_garbage == "not a record at all"
    assert parser.stats.garbage_bytes >= len(junk)
    assert not end.truncated


def test_a_line_that_only_starts_like_the_delimiter_is_no_delimiter() -> None:
    body = part("Code=VideoMotion;action=Start;index=0") + b"--myboundaryX\r\n" + part("Heartbeat")
    items, parser, _ = run([body])
    assert codes(items) == ["VideoMotion", "Heartbeat"]
    assert parser.stats.garbage_lines == 1


def test_a_huge_part_is_dropped_in_bounded_memory_and_counted() -> None:
    stream = EventStream("myboundary", max_event_bytes=4096, max_header_bytes=1024)
    stream.feed(part(ACCESS))
    peak = 0
    # a record whose JSON never closes, then a line without end, then a header line that
    # never ends: 3 MiB each, in 64 KiB chunks
    for opening in (
        b"\r\n--myboundary\r\n\r\nCode=X;action=Start;index=0;data={",
        b"\r\n--myboundary\r\n\r\n",
        b"\r\n--myboundary\r\nX-Long: ",
    ):
        stream.feed(opening)
        for _ in range(48):
            stream.feed(b"a" * 65536)
            peak = max(peak, stream.buffered)
    got = stream.feed(b"\r\n" + part("Code=VideoBlind;action=Start;index=0"))
    assert codes(got) == ["VideoBlind"]
    assert stream.stats.oversized == 3
    assert peak <= 4096 + 65536 + 64
    assert stream.stats.garbage_bytes >= 3 * 48 * 65536


def test_a_picture_sized_garbage_stream_without_any_delimiter_is_bounded() -> None:
    stream = EventStream("myboundary")
    for _ in range(100):
        assert stream.feed(b"\xff\xd8" + b"x" * 65534) == []
        assert stream.buffered < 64
    assert stream.stats.garbage_bytes > 99 * 65536
    assert not stream.finish().truncated


def test_a_truncated_tail_is_reported_at_finish() -> None:
    for tail, pending in (
        (b"--myboundary\r\nContent-Ty", True),
        (b"--myboundary\r\nContent-Type: text/plain\r\n", True),
        (b'--myboundary\r\n\r\nCode=AccessControl;action=Pulse;index=0;data={"CardNo":', True),
        (b"--myboundary\r\n\r\nCode=Cros", True),
        (b"--myboundary\r\n", False),
        (b"--mybou", False),
        (b"", False),
    ):
        stream = EventStream("myboundary")
        assert codes(stream.feed(part("Heartbeat") + tail)) == ["Heartbeat"]
        end = stream.finish()
        assert end.truncated is pending, tail
        assert end.items == []
        if not pending:
            assert end.pending_bytes == 0
        elif b"CardNo" in tail:
            assert end.pending_bytes == len(tail) - len(b"--myboundary\r\n\r\n")
        assert stream.stats.truncated == int(pending)
    # the parser is ready for the next connection
    assert codes(stream.feed(part("Heartbeat"))) == ["Heartbeat"]


def test_a_last_record_without_line_end_is_ended_by_the_close() -> None:
    stream = EventStream("myboundary")
    assert stream.feed(b"--myboundary\r\n\r\nCode=CrossLineDetection;action=Start;index=0") == []
    end = stream.finish()
    assert codes(end.items) == ["CrossLineDetection"]
    assert not end.truncated


def test_a_delimiter_inside_an_unclosed_json_ends_the_record() -> None:
    cut = b'--myboundary\r\n\r\nCode=AccessControl;action=Pulse;index=0;data={\r\n  "CardNo" :'
    items, parser, end = run([cut + b"\r\n" + part("Heartbeat")])
    assert codes(items) == ["Heartbeat"]
    assert parser.stats.truncated == 1
    assert not end.truncated


def test_data_that_does_not_parse_keeps_the_record() -> None:
    items, parser, _ = run([part('Code=VideoMotion;action=Start;index=0;data={"a": tru}')])
    (event,) = items
    assert isinstance(event, DahuaEvent)
    assert (event.code, event.data, parser.stats.bad_data) == ("VideoMotion", None, 1)
    assert event.data_error is not None
    assert "JSONDecodeError" in event.data_error


def test_gb18030_text_is_read() -> None:
    body = 'Code=CrossLineDetection;action=Start;index=0;data={"Name":"东门"}'.encode("gb18030")
    items, _, _ = run([b"--myboundary\r\n\r\n" + body + b"\r\n"])
    (event,) = items
    assert isinstance(event, DahuaEvent)
    assert event.data == {"Name": "东门"}


def test_parse_record_keys_and_index() -> None:
    event = parse_record(" code=AlarmLocal;Action=Start;INDEX=3;channel=2 ")
    assert event == DahuaEvent("AlarmLocal", "Start", 3, extra={"channel": "2"})
    assert parse_record("Code=X;index=a1").index is None  # type: ignore[union-attr]
    assert parse_record("action=Start;index=0") is None
    assert parse_record("Code=;action=Start") is None
    assert parse_record("Code=X;action=Stop").active is False  # type: ignore[union-attr]


# -- the access mapping ---------------------------------------------------------------------


def access(**data: Any) -> DahuaEvent:
    return DahuaEvent("AccessControl", "Pulse", 0, data)


def test_a_card_swipe_is_a_card_read_with_the_card_as_printed() -> None:
    kind, data = to_event(
        access(
            CardNo="7A087D0F",
            Method=1,
            Status=1,
            Type="Entry",
            UserID="9901",
            ReaderID="1",
            CardName="Zhang San",
            Name="OpenDoor",
            SnapURL="/mnt/a.jpg",
            ImageInfo=[{"Length": 1234}],
        )
    ) or ("", {})
    assert kind == "card_read"
    assert data == {
        "door": 1,
        "index": 0,
        "code": "AccessControl",
        "method": 1,
        "card": "7A087D0F",
        "credential": "card",
        "verify": "card",
        "reader": "door1-reader1",
        "context": "access",
        "direction": "in",
        "result": "granted",
    }
    # never names or pictures
    assert "Zhang" not in json.dumps(data)
    assert "jpg" not in json.dumps(data)


def test_a_refused_read_says_why() -> None:
    kind, data = to_event(access(CardNo="123", Method=1, Status=0, ErrorCode=0x10)) or ("", {})
    assert (kind, data["result"], data["reason"], data["reason_code"]) == (
        "card_read",
        "denied",
        "no_right",
        16,
    )
    _, data = to_event(access(CardNo="123", Method=1, Status=0, ErrorCode=0x99)) or ("", {})
    assert (data["reason"], data["reason_code"]) == ("denied", 0x99)
    _, data = to_event(access(CardNo="123", Method=1)) or ("", {})
    assert data["result"] == "unknown"
    assert "reason" not in data


def test_a_face_or_password_read_without_card_uses_the_user_id() -> None:
    _, data = to_event(access(UserID="01", Method=15, Status="1", Type="Exit")) or ("", {})
    assert (data["card"], data["credential"], data["verify"], data["direction"]) == (
        "01",
        "pin",
        "face",
        "out",
    )
    _, data = to_event(access(Method=0, Status=1)) or ("", {})
    assert (data["card"], data["credential"], data["verify"]) == (None, None, "password")


def test_configured_readers_name_the_read() -> None:
    gate = Reader("gate-1-in", context="gate", direction="in")
    event = DahuaEvent("AccessControl", "Pulse", 1, {"CardNo": "1", "Method": 1, "ReaderID": "2"})
    _, data = to_event(event, {(2, "2"): gate}) or ("", {})
    assert (data["door"], data["reader"], data["context"], data["direction"]) == (
        2,
        "gate-1-in",
        "gate",
        "in",
    )
    with pytest.raises(ValueError, match="context"):
        Reader("x", context="lab")
    with pytest.raises(ValueError, match="direction"):
        Reader("x", direction="up")


def test_exit_button_and_remote_open_are_digital_inputs() -> None:
    assert to_event(access(Method=5, Name="OpenDoor")) == (
        "digital_input",
        {
            "door": 1,
            "index": 0,
            "code": "AccessControl",
            "method": 5,
            "input": "exit_button",
            "active": True,
        },
    )
    kind, data = to_event(access(Method=4, Name="OpenDoor")) or ("", {})
    assert (kind, data["input"], data["by"]) == ("digital_input", "lock", "remote")


def test_door_status_and_door_alarms() -> None:
    def ev(code: str, action: str = "Pulse", index: int = 0, **data: Any) -> Any:
        return to_event(DahuaEvent(code, action, index, data or None))

    assert ev("DoorStatus", Status="Open") == (
        "door_opened",
        {"door": 1, "index": 0, "code": "DoorStatus"},
    )
    assert ev("DoorStatus", index=1, Status="Close")[0:2] == (
        "door_closed",
        {"door": 2, "index": 1, "code": "DoorStatus"},
    )
    assert ev("DoorStatus", Status="Weird")[1]["input"] == "unknown"
    assert ev("BreakIn", "Start")[0] == "door_forced"
    assert ev("BreakIn", "Stop") is None
    assert ev("DoorNotClosed", "Start")[0] == "door_held_open"
    assert ev("DoorNotClosed", "Stop") is None
    assert ev("ChassisIntruded", "Stop") == (
        "reader_tamper",
        {"door": 1, "index": 0, "code": "ChassisIntruded", "active": False},
    )
    assert ev("Duress", "Start")[1]["severity"] == "critical"
    assert ev("Duress", "Stop") is None


def test_unknown_codes_are_digital_inputs_never_dropped() -> None:
    kind, data = to_event(DahuaEvent("Invite", "Pulse", 0, {"CallID": "7"})) or ("", {})
    assert (kind, data["input"], data["code"], data["action"]) == (
        "digital_input",
        "unknown",
        "Invite",
        "Pulse",
    )
    assert "CallID" not in data  # the raw data is never copied
    assert to_event(DahuaEvent("Whatever", None, None, "not a dict")) is not None


#: the event types of contract v1.1 (shared/CONTRACT.md of the steering checkout, docs/mqtt.md)
CONTRACT_TYPES = {
    "card_read", "door_opened", "door_closed", "door_forced", "door_held_open",
    "reader_tamper", "motion", "camera_tamper", "line_crossed", "people_count",
    "digital_input", "device_fault",
}  # fmt: skip


def test_every_mapping_gives_a_contract_type() -> None:
    for code in [*events.ACCESS_CODES, *events.CAMERA_CODES, "Invite", "X"]:
        for action in ("Start", "Stop", "Pulse", None):
            for data in (None, {"Method": 5}, {"Method": 4}, {"Status": "Open"}, {"Status": 0}):
                for mapped in (
                    to_event(DahuaEvent(code, action, 0, data)),
                    camera_event(DahuaEvent(code, action, 0, data)),
                ):
                    assert mapped is None or mapped[0] in CONTRACT_TYPES, (code, action, data)


# -- the camera mapping ---------------------------------------------------------------------


def test_camera_codes_the_contract_names() -> None:
    motion = DahuaEvent("VideoMotion", "Start", 0, {"RegionName": ["Region1"], "Id": [0]})
    assert camera_event(motion) == (
        "motion",
        {"channel": 1, "index": 0, "code": "VideoMotion", "zone": "Region1", "active": True},
    )
    assert camera_event(DahuaEvent("VideoMotion", "Stop", 0)) == (
        "motion",
        {"channel": 1, "index": 0, "code": "VideoMotion", "zone": "ch1", "active": False},
    )
    line = DahuaEvent(
        "CrossLineDetection", "Start", 1, {"Name": "Gate", "Direction": "LeftToRight"}
    )
    assert camera_event(line) == (
        "line_crossed",
        {
            "channel": 2,
            "index": 1,
            "code": "CrossLineDetection",
            "line": "Gate",
            "direction": "LeftToRight",
        },
    )
    assert camera_event(DahuaEvent("CrossLineDetection", "Stop", 1)) is None
    blind = camera_event(DahuaEvent("VideoBlind", "Start", 0))
    assert blind == (
        "camera_tamper",
        {"channel": 1, "index": 0, "code": "VideoBlind", "reason": "covered", "active": True},
    )
    scene = camera_event(DahuaEvent("SceneChange", "Stop", 0))
    assert scene is not None
    assert scene[1]["reason"] == "scene_change"
    assert not scene[1]["active"]
    region = DahuaEvent("CrossRegionDetection", "Start", 0, {"Name": "Shed", "Action": "Cross"})
    assert camera_event(region) == (
        "motion",
        {"channel": 1, "index": 0, "code": "CrossRegionDetection", "zone": "Shed",
         "active": True, "action": "Cross"},
    )  # fmt: skip
    assert camera_event(DahuaEvent("AccessControl", "Pulse", 0)) is None


# -- the pure layer's imports ---------------------------------------------------------------


def test_the_dahua_layer_imports_only_the_standard_library() -> None:
    folder = Path(events.__file__).resolve().parent
    bad = []
    # config.py and driver.py are the camera driver (pydantic, aiohttp); the rest is pure
    for path in (folder / name for name in ("__init__.py", "events.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["(relative)"]
            bad += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] not in sys.stdlib_module_names
            ]
    assert not bad
    # and no I/O module: bytes in, items out
    io = {"socket", "asyncio", "ssl", "http", "urllib", "selectors", "os", "io"}
    imported = {
        (a.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for path in (folder / name for name in ("__init__.py", "events.py"))
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for a in node.names
    }
    assert not imported & io


# -- the third-party fixtures ---------------------------------------------------------------

FIXTURES = captures.path("dahua_events.json")
ABSENT = captures.absent("dahua_events.json")


def _cases() -> list[Any]:
    return captures.params("dahua_events.json")


def test_fixtures_are_found_relative_to_the_repository() -> None:
    # from any checkout or clone: <repo>/../shared/fixtures
    repo = Path(__file__).resolve().parents[2]
    assert FIXTURES == (repo.parent / "shared" / "fixtures" / "access" / "dahua_events.json")


def test_every_fixture_is_a_case() -> None:
    if not FIXTURES.is_file():
        pytest.skip(ABSENT)
    cases = json.loads(FIXTURES.read_text("utf-8"))
    assert len(cases) == 9
    assert {c["name"] for c in cases} == set(EXPECTED)


def _fields(item: Item) -> Any:
    if isinstance(item, Heartbeat):
        return "Heartbeat"
    out: dict[str, Any] = {"Code": item.code}
    if item.action is not None:
        out["action"] = item.action
    if item.index is not None:
        out["index"] = str(item.index)
    if item.data is not None:
        out["data"] = item.data
    return out


#: what each case must give, beyond what its ``decoded`` says: (items, truncated)
EXPECTED: dict[str, tuple[list[str], bool]] = {
    "rroller_event_split_across_two_chunks_then_heartbeat": (
        ["TrafficParking", "Heartbeat"],
        False,
    ),
    "rroller_heartbeat_without_blank_line_then_event": (["Heartbeat", "CrossLineDetection"], False),
    "rroller_part_boundary_split_inside_delimiter": (["CrossLineDetection"], False),
    "rroller_lf_framed_event_with_json_data": (["VideoMotion"], False),
    "rroller_semicolon_inside_data_json": (["CrossRegionDetection"], False),
    "rroller_three_line_header_block_thermal_channel": (["CrossLineDetection"], False),
    "rroller_block_cut_inside_headers": ([], True),
    "dahua_http_api_doc_attach_example": (["VideoMotion", "VideoBlind", "Heartbeat"], False),
    "vto_stream_invite_doorstatus_accesscontrol_split": (
        ["Heartbeat", "Invite", "DoorStatus", "AccessControl"],
        False,
    ),
}


def _chunks(case: dict[str, Any]) -> list[bytes]:
    decoded = case["decoded"]
    if "chunks" in decoded:
        chunks = [c.encode("utf-8") for c in decoded["chunks"]]
        assert b"".join(chunks) == case["text"].encode("utf-8")
        return chunks
    return [case["text"].encode("utf-8")]


@pytest.mark.parametrize("case", _cases())
def test_fixture_case(case: dict[str, Any]) -> None:
    name, decoded = case["name"], case["decoded"]
    want_codes, want_truncated = EXPECTED[name]
    chunks = _chunks(case)
    content_type = decoded.get("response_content_type", CONTENT_TYPE)
    items, stream, end = run_ct(chunks, content_type)
    assert codes(items) == want_codes
    assert end.truncated is want_truncated
    # the same items whatever the chunks: whole, and every split in two
    whole = b"".join(chunks)
    assert run_ct([whole], content_type)[0] == items
    for cut in range(1, len(whole)):
        assert run_ct([whole[:cut], whole[cut:]], content_type)[0] == items, cut
    # what the source asserts
    if "events" in decoded and name != "vto_stream_invite_doorstatus_accesscontrol_split":
        assert [_fields(i) for i in items] == decoded["events"]
    if name == "vto_stream_invite_doorstatus_accesscontrol_split":
        invite, status, control = items[1:]
        assert isinstance(invite, DahuaEvent)
        assert invite.action == "Pulse"
        assert invite.data["LockNum"] == 2
        assert isinstance(status, DahuaEvent)
        assert status.data["Status"] == "Open"
        assert isinstance(control, DahuaEvent)
        assert control.data["Method"] == 4
        # and as contract events: the door opened, the lock released remotely
        assert to_event(status) == ("door_opened", {"door": 1, "index": 0, "code": "DoorStatus"})
        kind, data = to_event(control) or ("", {})
        assert (kind, data["input"], data["by"]) == ("digital_input", "lock", "remote")
    if name == "rroller_event_split_across_two_chunks_then_heartbeat":
        # reassembled across the chunks ('"part": 1,' | ' "part": 2}'); JSON keeps the last
        assert isinstance(items[0], DahuaEvent)
        assert items[0].data == {"part": 2}
    if name == "rroller_heartbeat_without_blank_line_then_event":
        # the heartbeat's Content-Length:9 is not applied to the event: not "Code=Cros"
        assert isinstance(items[1], DahuaEvent)
        assert items[1].index == 0
        assert items[1].action == "Start"
    if name == "rroller_lf_framed_event_with_json_data":
        assert isinstance(items[0], DahuaEvent)
        assert camera_event(items[0]) == (
            "motion",
            {"channel": 1, "index": 0, "code": "VideoMotion", "zone": "Region1", "active": True},
        )
    if name == "dahua_http_api_doc_attach_example":
        assert camera_event(items[1]) == (  # type: ignore[arg-type]
            "camera_tamper",
            {"channel": 1, "index": 0, "code": "VideoBlind", "reason": "covered", "active": True},
        )
    assert stream.stats.garbage_lines == 0


def run_ct(chunks: list[bytes], content_type: str) -> tuple[list[Item], EventStream, events.End]:
    stream = EventStream.for_content_type(content_type)
    items: list[Item] = []
    for chunk in chunks:
        items += stream.feed(chunk)
    end = stream.finish()
    return items + end.items, stream, end


def test_nothing_is_read_after_the_closing_delimiter_even_when_split() -> None:
    stream = EventStream("myboundary")
    assert stream.feed(b"--myboundary-") == []
    assert stream.feed(b"-\r\n") == []
    assert stream.feed(part("Heartbeat")) == []
    assert stream.stats.parts == 0
    assert not stream.finish().truncated
