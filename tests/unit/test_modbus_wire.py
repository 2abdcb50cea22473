"""Modbus frames and answer checks, against frames printed in the Modbus specifications
and in device manuals (never produced by the code under test)."""

from __future__ import annotations

import pytest

from edge_agent.drivers.modbus import wire


def test_rtu_request_as_printed_in_sensor_manuals() -> None:
    # "read 7 holding registers from 0 of unit 1": 01 03 00 00 00 07 04 08
    request = wire.read_request(1, 3, 0, 7)
    assert wire.rtu_frame(request) == bytes.fromhex("01 03 00 00 00 07 04 08")


def test_mbap_request_from_the_tcp_spec() -> None:
    # Modbus Messaging on TCP/IP: tid, protocol 0, length 6, unit, then the PDU
    request = wire.read_request(0xFF, 4, 0x0156, 2)
    assert wire.mbap_frame(0x1234, request) == bytes.fromhex("12 34 00 00 00 06 ff 04 01 56 00 02")


def test_a_matching_mbap_answer_gives_the_registers() -> None:
    request = wire.read_request(1, 3, 0, 2)
    frame = bytes.fromhex("00 07 00 00 00 07 01 03 04 01 a4 ff 06")
    assert wire.mbap_length(frame) == len(frame)
    assert wire.registers(wire.mbap_answer(frame, 7, request)) == [0x01A4, 0xFF06]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("00 00 00 00 00 07 01 03 04 01 a4 ff 06", "transaction id 0, the request 7"),
        ("00 07 00 00 00 07 02 03 04 01 a4 ff 06", "from unit 2, the request went to unit 1"),
        ("00 07 00 00 00 07 01 04 04 01 a4 ff 06", "function code 4, the request fc 3"),
        ("00 07 00 00 00 05 01 03 02 01 a4", "byte count 2, expected 4"),
        ("00 07 00 00 00 07 01 03 02 01 a4 ff 06", "byte count 2, expected 4"),
    ],
)
def test_mbap_answers_that_do_not_match_are_refused(frame: str, message: str) -> None:
    request = wire.read_request(1, 3, 0, 2)
    with pytest.raises(wire.AnswerError, match=message):
        wire.mbap_answer(bytes.fromhex(frame), 7, request)


def test_mbap_garbage_and_exception_answers() -> None:
    with pytest.raises(wire.GarbageError):
        wire.mbap_length(bytes.fromhex("13 37 de ad be ef 42"))
    assert wire.mbap_length(bytes.fromhex("00 07 00 00")) is None  # header not in yet
    request = wire.read_request(1, 3, 100, 1)
    with pytest.raises(wire.ExceptionAnswer) as info:
        wire.mbap_answer(bytes.fromhex("00 07 00 00 00 03 01 83 02"), 7, request)
    assert info.value.code == 2


def test_rtu_answers_are_checked_crc_first() -> None:
    request = wire.read_request(1, 3, 0, 1)
    good = bytes.fromhex("01 03 02 03 2c") + wire.crc16(bytes.fromhex("01 03 02 03 2c"))
    assert wire.rtu_length(good[:2]) is None
    assert wire.rtu_length(good) == 7
    assert wire.registers(wire.rtu_answer(good, request)) == [812]
    with pytest.raises(wire.GarbageError, match="bad CRC"):
        wire.rtu_answer(good[:-1] + bytes([good[-1] ^ 1]), request)
    other = bytes.fromhex("02 03 02 03 2c")
    with pytest.raises(wire.AnswerError, match="from unit 2"):
        wire.rtu_answer(other + wire.crc16(other), request)
    with pytest.raises(wire.GarbageError):
        wire.rtu_length(bytes.fromhex("01 37"))


def test_write_answers_must_echo_the_request() -> None:
    request = wire.write_register(1, 2000, 12)
    assert wire.rtu_frame(request)[:6] == bytes.fromhex("01 06 07 d0 00 0c")
    assert request.check(bytes.fromhex("06 07 d0 00 0c")) == bytes.fromhex("06 07 d0 00 0c")
    with pytest.raises(wire.AnswerError, match="does not echo"):
        request.check(bytes.fromhex("06 07 d0 00 0d"))


def test_bits_come_lsb_first() -> None:
    # Modbus Application Protocol V1.1b3, 6.1: coils 20-38 answer CD 6B 05, coil 20 in the LSB
    pdu = bytes.fromhex("01 03 cd 6b 05")
    request = wire.read_request(1, 1, 19, 19)
    assert request.answer_len == 2 + 3
    assert wire.bits(pdu, 19)[:4] == [True, False, True, True]  # 0xCD = 1100 1101
    assert wire.bits(pdu, 19)[16:] == [True, False, True]  # 0x05, coils 36-38


def test_frame_ready_says_when_a_whole_frame_or_garbage_is_in() -> None:
    """The connection wakes the waiting exchange only when this says so: once per answer,
    however many chunks it comes in, and at once for bytes that are no frame."""
    mbap = bytes.fromhex("00 07 00 00 00 07 01 03 04 01 a4 ff 06")
    for cut in range(len(mbap)):
        assert not wire.frame_ready(mbap[:cut], rtu=False), cut
    assert wire.frame_ready(mbap, rtu=False)
    assert wire.frame_ready(mbap + mbap[:3], rtu=False)  # the next one begins
    assert wire.frame_ready(bytes.fromhex("13 37 de ad be ef 42"), rtu=False)  # protocol id
    assert wire.frame_ready(bytes.fromhex("00 07 00 00 00 01 01"), rtu=False)  # length 1
    body = bytes.fromhex("01 03 02 03 2c")
    rtu = body + wire.crc16(body)
    for cut in range(len(rtu)):
        assert not wire.frame_ready(rtu[:cut], rtu=True), cut
    assert wire.frame_ready(rtu, rtu=True)
    assert wire.frame_ready(bytes.fromhex("01 83 02 c0 f1"), rtu=True)  # exception answer
    assert not wire.frame_ready(bytes.fromhex("01 83 02 c0"), rtu=True)
    assert wire.frame_ready(bytes.fromhex("01 37"), rtu=True)  # no such function code
