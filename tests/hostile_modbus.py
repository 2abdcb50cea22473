"""A hostile Modbus device: a raw asyncio TCP server that misbehaves on purpose.

Written from the wire format only (Modbus Application Protocol V1.1b3, Modbus
Messaging on TCP/IP V1.0b: MBAP header ``tid, pid, len, unit``; Modbus over Serial
Line V1.02: ``unit, PDU, CRC``), never from the driver, so it cannot agree with the
driver by construction. It serves holding (fc 3) and input (fc 4) registers and can
answer with a wrong transaction id, transaction id 0, a wrong unit, a wrong function
code, a wrong byte count, garbage, close mid-frame, answer late, stay silent, send the
answer in three pieces, or refuse reads that cross a "reserved" register with exception
2, as field devices do.

Each request takes the next behaviour from ``script`` (then ``default``)::

    dev = HostileModbus(framer="socket", holding={0: 812})
    dev.script += ["tid0", "ok"]
    port = await dev.start()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Behaviour = Literal[
    "ok",
    "tid0",  # transaction id 0 (pymodbus skips the tid check for 0)
    "wrong_tid",  # transaction id + 1000
    "wrong_unit",  # unit + 1
    "wrong_fc",  # fc 4 to an fc 3 request and vice versa, same data length
    "wrong_byte_count",  # one register more than asked, byte count to match
    "garbage",  # bytes that are no Modbus frame
    "close_mid_frame",  # half an answer, then the connection closes
    "late",  # the right answer after ``late_s``
    "twice",  # the right answer, sent two times (seen on gateways that retry on their own)
    "silent",  # no answer at all
    "chunked",  # the right answer in three pieces, each written on its own
]


def crc16(frame: bytes) -> bytes:
    """CRC-16/MODBUS (Modbus over Serial Line V1.02, 6.2.2), low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


@dataclass(frozen=True)
class Seen:
    """One request as the device read it off the wire."""

    unit: int
    fc: int
    start: int
    count: int


class HostileModbus:
    """The device; ``start()`` returns its port on 127.0.0.1."""

    def __init__(
        self,
        *,
        framer: Literal["socket", "rtu"] = "socket",
        unit: int = 1,
        holding: dict[int, int] | None = None,
        inputs: dict[int, int] | None = None,
        reserved: set[int] | None = None,
        late_s: float = 0.5,
    ) -> None:
        self.framer = framer
        self.unit = unit
        self.tables = {3: dict(holding or {}), 4: dict(inputs or {})}
        self.reserved = set(reserved or ())
        self.late_s = late_s
        self.script: list[Behaviour] = []
        self.default: Behaviour = "ok"
        #: called with each request before the device answers it
        self.on_request: Callable[[Seen], Behaviour | None] | None = None
        self.seen: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._late: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        for task in self._late:
            task.cancel()
        await asyncio.gather(*self._late, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- answers ----------------------------------------------------------------------

    def _pdu(self, fc: int, start: int, count: int) -> bytes:
        """The answer PDU a correct device sends: data, or exception 2 for a read that
        touches a reserved or unknown register (as e.g. Eastron and Acrel meters do)."""
        table = self.tables.get(fc)
        addresses = range(start, start + count)
        if (
            table is None
            or any(a in self.reserved for a in addresses)
            or any(a not in table for a in addresses)
        ):
            return bytes([fc | 0x80, 0x02])
        data = b"".join(table[a].to_bytes(2, "big") for a in addresses)
        return bytes([fc, len(data)]) + data

    def _frame(self, tid: int, unit: int, pdu: bytes) -> bytes:
        if self.framer == "rtu":
            body = bytes([unit]) + pdu
            return body + crc16(body)
        return (
            tid.to_bytes(2, "big")
            + b"\x00\x00"
            + (len(pdu) + 1).to_bytes(2, "big")
            + bytes([unit])
            + pdu
        )

    def _answer(self, behaviour: Behaviour, tid: int, seen: Seen) -> bytes | None:
        pdu = self._pdu(seen.fc, seen.start, seen.count)
        unit = seen.unit
        if behaviour == "silent":
            return None
        if behaviour == "garbage":
            return b"\x13\x37\xde\xad\xbe\xef\x42\x42\x42\x42\x42\x42"
        if behaviour == "tid0":
            tid = 0
        elif behaviour == "wrong_tid":
            tid = (tid + 1000) & 0xFFFF
        elif behaviour == "wrong_unit":
            unit = (unit + 1) & 0xFF
        elif behaviour == "wrong_fc":
            pdu = bytes([7 - seen.fc]) + pdu[1:]  # 3 <-> 4
        elif behaviour == "wrong_byte_count" and not pdu[0] & 0x80:
            pdu = bytes([pdu[0], pdu[1] + 2]) + pdu[2:] + b"\x00\x00"
        return self._frame(tid, unit, pdu)

    # -- the connection ---------------------------------------------------------------

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        """(tid, unit, pdu) of the next request; tid is 0 for RTU."""
        if self.framer == "rtu":
            head = await reader.readexactly(2)
            rest = await reader.readexactly(6)  # fc 3/4: address, count, CRC
            frame = head + rest
            assert frame[-2:] == crc16(frame[:-2]), f"bad CRC in request {frame.hex(' ')}"
            return 0, frame[0], frame[1:-2]
        header = await reader.readexactly(7)
        length = int.from_bytes(header[4:6], "big")
        pdu = await reader.readexactly(length - 1)
        return int.from_bytes(header[0:2], "big"), header[6], pdu

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        # a device handles one request at a time: after a late answer, the next answers
        # follow it on the wire (they cannot overtake it)
        pending: asyncio.Task[None] | None = None
        try:
            while True:
                tid, unit, pdu = await self._read_request(reader)
                seen = Seen(
                    unit, pdu[0], int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big")
                )
                self.seen.append(seen)
                behaviour = self.script.pop(0) if self.script else self.default
                if self.on_request is not None:
                    behaviour = self.on_request(seen) or behaviour
                if unit != self.unit and behaviour == "ok":
                    continue  # another unit's request: a serial line stays silent
                answer = self._answer(behaviour, tid, seen)
                if answer is None:
                    continue
                if pending is not None:
                    await pending
                    pending = None
                if behaviour == "close_mid_frame":
                    writer.write(answer[: len(answer) // 2])
                    await writer.drain()
                    break
                if behaviour == "late":
                    pending = asyncio.create_task(self._later(writer, answer))
                    self._late.add(pending)
                    pending.add_done_callback(self._late.discard)
                    continue
                if behaviour == "chunked":
                    # as a slow serial server forwards what it has: the header, half the
                    # data, the rest, each in its own TCP segment
                    third = len(answer) // 3
                    for piece in (answer[:third], answer[third : 2 * third], answer[2 * third :]):
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(0.02)
                    continue
                writer.write(answer * (2 if behaviour == "twice" else 1))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _later(self, writer: asyncio.StreamWriter, answer: bytes) -> None:
        await asyncio.sleep(self.late_s)
        if not writer.is_closing():
            writer.write(answer)
