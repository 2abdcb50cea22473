"""Modbus frames as they go over the wire, and the checks an answer must pass.

The driver frames its own requests (Modbus Application Protocol V1.1b3 for the PDU,
Modbus Messaging on TCP/IP V1.0b for the MBAP header, Modbus over Serial Line V1.02
for RTU and its CRC) so that an answer is taken only when it belongs to the request:
the same transaction id (Modbus TCP), unit id, function code and byte count. A
device that answers transaction id 0, another unit, fc 4 to an fc 3 request, or the
late answer to an earlier request, gets an error naming what was wrong, never its
values published as ``good``.

Everything here is pure (bytes in, bytes or an exception out) and tested without a
device; :class:`drivers.modbus.driver._Line` does the I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: largest PDU (Modbus Application Protocol V1.1b3, 4.1): 253 bytes
MAX_PDU = 253
#: MBAP header: transaction id, protocol id, length, unit id
MBAP_HEADER = 7


class AnswerError(Exception):
    """Bytes that are not the answer to the request; the message says what they were."""


class GarbageError(AnswerError):
    """Bytes that are not a Modbus frame at all (bad CRC, bad header): the stream is out of
    step and whatever follows cannot be trusted until the line is flushed."""


class ExceptionAnswer(Exception):
    """The device answered the request with a Modbus exception ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception {code}")
        self.code = code


def crc16(frame: bytes) -> bytes:
    """CRC-16/MODBUS of ``frame`` (poly 0xA001 reflected, init 0xFFFF), low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class Request:
    """One request PDU for ``unit``, and what a matching answer PDU looks like."""

    unit: int
    pdu: bytes
    #: length of a normal answer PDU (function code included)
    answer_len: int

    @property
    def fc(self) -> int:
        return self.pdu[0]

    def check(self, pdu: bytes) -> bytes:
        """The answer PDU if it answers this request; raises ExceptionAnswer or AnswerError."""
        if not pdu:
            raise AnswerError("empty answer")
        fc = pdu[0]
        if fc == self.fc | 0x80:
            if len(pdu) != 2:
                raise AnswerError(f"exception answer of {len(pdu)} bytes, expected 2")
            raise ExceptionAnswer(pdu[1])
        if fc != self.fc:
            raise AnswerError(f"answer has function code {fc}, the request fc {self.fc}")
        if self.fc in (1, 2, 3, 4):
            expected = self.answer_len - 2
            if len(pdu) < 2 or pdu[1] != expected:
                got = pdu[1] if len(pdu) >= 2 else "no"
                raise AnswerError(f"answer has byte count {got}, expected {expected}")
            if len(pdu) != self.answer_len:
                raise AnswerError(
                    f"answer has {len(pdu) - 2} data bytes, its byte count says {expected}"
                )
            return pdu
        # writes (fc 5, 6, 16) echo address and value/quantity
        if pdu[1:5] != self.pdu[1:5] or len(pdu) != self.answer_len:
            raise AnswerError(
                f"write answer {pdu.hex(' ')} does not echo the request {self.pdu[:5].hex(' ')}"
            )
        return pdu


def read_request(unit: int, fc: int, address: int, count: int) -> Request:
    """Read ``count`` coils/inputs (fc 1/2, bits) or registers (fc 3/4) from ``address``."""
    if fc not in (1, 2, 3, 4):
        raise ValueError(f"not a read function code: {fc}")
    limit = 2000 if fc in (1, 2) else 125
    if not 1 <= count <= limit or not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise ValueError(f"cannot read {count} from {address} with fc {fc}")
    data_bytes = (count + 7) // 8 if fc in (1, 2) else 2 * count
    pdu = bytes([fc]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")
    return Request(unit, pdu, 2 + data_bytes)


def write_coil(unit: int, address: int, value: bool) -> Request:
    """fc 5: one coil; the answer echoes the request."""
    pdu = bytes([5]) + address.to_bytes(2, "big") + (b"\xff\x00" if value else b"\x00\x00")
    return Request(unit, pdu, 5)


def write_register(unit: int, address: int, value: int) -> Request:
    """fc 6: one holding register; the answer echoes the request."""
    pdu = bytes([6]) + address.to_bytes(2, "big") + value.to_bytes(2, "big")
    return Request(unit, pdu, 5)


def write_registers(unit: int, address: int, values: list[int]) -> Request:
    """fc 16: several holding registers; the answer echoes address and quantity."""
    if not 1 <= len(values) <= 123:
        raise ValueError(f"cannot write {len(values)} registers in one request")
    pdu = (
        bytes([16])
        + address.to_bytes(2, "big")
        + len(values).to_bytes(2, "big")
        + bytes([2 * len(values)])
        + b"".join(v.to_bytes(2, "big") for v in values)
    )
    return Request(unit, pdu, 5)


def registers(pdu: bytes) -> list[int]:
    """Register values of a checked fc 3/4 answer."""
    return list(struct.unpack_from(f">{(len(pdu) - 2) // 2}H", pdu, 2))


def bits(pdu: bytes, count: int) -> list[bool]:
    """The first ``count`` bits of a checked fc 1/2 answer (LSB of the first byte first)."""
    return [bool(pdu[2 + i // 8] >> (i % 8) & 1) for i in range(count)]


# -- Modbus TCP (MBAP) ------------------------------------------------------------------


def mbap_frame(tid: int, request: Request) -> bytes:
    """The request with its MBAP header."""
    return (
        tid.to_bytes(2, "big")
        + b"\x00\x00"
        + (len(request.pdu) + 1).to_bytes(2, "big")
        + bytes([request.unit])
        + request.pdu
    )


def mbap_length(buf: bytes | bytearray) -> int | None:
    """Length of the MBAP frame at the start of ``buf``; None until the header is in.

    Raises GarbageError for a header no Modbus TCP device sends (protocol id not 0, a
    length that cannot hold a PDU).
    """
    if len(buf) < MBAP_HEADER:
        return None
    protocol = int.from_bytes(buf[2:4], "big")
    length = int.from_bytes(buf[4:6], "big")
    if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
        raise GarbageError(
            f"garbage instead of a Modbus TCP answer: {bytes(buf[:MBAP_HEADER]).hex(' ')}"
        )
    return 6 + length


def mbap_answer(frame: bytes, tid: int, request: Request) -> bytes:
    """The checked answer PDU of a complete MBAP ``frame``."""
    got_tid = int.from_bytes(frame[0:2], "big")
    if got_tid != tid:
        raise AnswerError(f"answer has transaction id {got_tid}, the request {tid}")
    if frame[6] != request.unit:
        raise AnswerError(
            f"answer comes from unit {frame[6]}, the request went to unit {request.unit}"
        )
    return request.check(frame[MBAP_HEADER:])


# -- RTU --------------------------------------------------------------------------------


def rtu_frame(request: Request) -> bytes:
    """The request as an RTU frame: unit, PDU, CRC."""
    body = bytes([request.unit]) + request.pdu
    return body + crc16(body)


def rtu_length(buf: bytes | bytearray) -> int | None:
    """Length of the RTU frame at the start of ``buf``; None until enough bytes are in.

    RTU frames carry no length: it follows from the function code (and the byte count
    of a read answer). An unknown function code is garbage.
    """
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return 5  # unit, fc, exception code, CRC
    if fc in (1, 2, 3, 4):
        return None if len(buf) < 3 else 5 + buf[2]
    if fc in (5, 6, 15, 16):
        return 8
    raise GarbageError(f"garbage instead of an RTU answer: {bytes(buf[:8]).hex(' ')}")


def frame_length(buf: bytes | bytearray, rtu: bool) -> int | None:
    """Length of the frame at the start of ``buf`` (RTU when ``rtu``, else MBAP); None
    until enough bytes are in. Raises GarbageError for bytes that are no frame."""
    return rtu_length(buf) if rtu else mbap_length(buf)


def frame_ready(buf: bytes | bytearray, rtu: bool) -> bool:
    """Whether ``buf`` is worth reading yet: it starts with a whole frame (Modbus TCP, or
    RTU when ``rtu``), or with bytes that are no frame at all (garbage, reported by the
    reader). False while a frame is still coming in; never raises.

    The connection asks this for every chunk it receives, so that the exchange waiting
    for an answer is woken once, when the answer is whole, not once per chunk.
    """
    try:
        length = frame_length(buf, rtu)
    except GarbageError:
        return True
    return length is not None and len(buf) >= length


def rtu_answer(frame: bytes, request: Request) -> bytes:
    """The checked answer PDU of a complete RTU ``frame`` (CRC first: a bad CRC is garbage)."""
    if crc16(frame[:-2]) != frame[-2:]:
        raise GarbageError(f"answer with a bad CRC: {frame.hex(' ')}")
    if frame[0] != request.unit:
        raise AnswerError(
            f"answer comes from unit {frame[0]}, the request went to unit {request.unit}"
        )
    return request.check(frame[1:-2])


__all__ = [
    "AnswerError",
    "ExceptionAnswer",
    "GarbageError",
    "Request",
    "bits",
    "crc16",
    "frame_length",
    "frame_ready",
    "mbap_answer",
    "mbap_frame",
    "mbap_length",
    "read_request",
    "registers",
    "rtu_answer",
    "rtu_frame",
    "rtu_length",
    "write_coil",
    "write_register",
    "write_registers",
]
