"""``edge-agent probe``: read raw registers from a Modbus device and show every decoding.

An installer wiring a new device reads a block of registers once and looks for a value
they can see on the device's display: each register as ``uint16``/``int16``, and each
pair of registers (address, address+1) as ``uint32``/``int32``/``float32`` in the four
orders a profile can name (``byte_order``/``word_order``, see ``docs/modbus.md``). The
line that shows the expected value gives the profile's ``address``, ``type``,
``byte_order`` and ``word_order``.

The connection is the driver's (:class:`~drivers.modbus.driver._Line`): answers are
checked and errors named as in the driver, and every decoding is
:func:`drivers.modbus.codec.decode_raw`. Formatting is pure (:func:`make_rows`,
:func:`format_table`, :func:`rows_json`) so it is tested without a device.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from edge_agent.drivers.modbus import codec, wire
from edge_agent.drivers.modbus.config import unit_range
from edge_agent.drivers.modbus.driver import ExceptionResponse, LineSettings, _Line
from edge_agent.errors import DeviceError, DeviceTimeout, DeviceUnavailable

#: most registers in one read request (Modbus Application Protocol, FC 03/04)
MAX_COUNT = 125

#: the four orders of a 32-bit value: (datasheet name, profile byte_order, profile word_order)
ORDERS: tuple[tuple[str, Literal["big", "little"], Literal["big", "little"]], ...] = (
    ("ABCD", "big", "big"),
    ("CDAB", "big", "little"),
    ("BADC", "little", "big"),
    ("DCBA", "little", "little"),
)

FC_NAMES: dict[int, tuple[str, str]] = {
    3: ("holding registers", "保持寄存器"),
    4: ("input registers", "输入寄存器"),
}

#: Chinese names of the Modbus exception codes in :data:`EXCEPTION_NAMES`
EXCEPTION_NAMES_ZH: dict[int, str] = {
    1: "非法功能码",
    2: "非法数据地址",
    3: "非法数据值",
    4: "从站设备故障",
    5: "确认",
    6: "从站设备忙",
    7: "否定确认",
    8: "存储奇偶校验错误",
    10: "网关路径不可用",
    11: "网关后的目标设备无应答",
}


#: what to check when a device stays silent, by line kind
_TIMEOUT_HINTS = {
    "socket": "check --unit and --port; a serial server in transparent mode needs --framer rtu",
    "rtu": "check --unit and the serial server's baud rate and parity; a Modbus TCP gateway "
    "needs --framer socket",
    "serial": "check --unit, --baudrate, --parity and the A/B wiring",
}


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """What to read and where; ValueError for a value Modbus cannot carry."""

    line: LineSettings
    unit: int = 1
    fc: int = 3
    address: int = 0
    count: int = 10
    timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.fc not in FC_NAMES:
            raise ValueError(f"--fc {self.fc}: use 3 (holding) or 4 (input registers)")
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"--count {self.count}: must be 1-{MAX_COUNT}")
        if not 0 <= self.address <= 65535:
            raise ValueError(f"--address {self.address}: must be 0-65535")
        if self.address + self.count > 65536:
            raise ValueError(
                f"--address {self.address} + --count {self.count} passes register 65535"
            )
        if self.line.type == "tcp" and not 1 <= self.line.port <= 65535:
            raise ValueError(f"--port {self.line.port}: must be 1-65535")
        if self.line.type == "serial" and self.line.baudrate <= 0:
            raise ValueError(f"--baudrate {self.line.baudrate}: must be more than 0")
        direct_tcp = self.line.type == "tcp" and self.line.framer == "socket"
        if self.unit not in unit_range(direct_tcp=direct_tcp):
            raise ValueError(
                f"--unit {self.unit}: must be 0-255 for Modbus TCP"
                if direct_tcp
                else f"--unit {self.unit}: RTU devices answer on 1-247 (0 is broadcast, no answer)"
            )
        if not (math.isfinite(self.timeout_s) and 0 < self.timeout_s <= 60):
            raise ValueError(f"--timeout {self.timeout_s:g}: must be more than 0, at most 60 s")

    @property
    def target(self) -> str:
        """The device, as in error messages: ``127.0.0.1:502 (Modbus TCP) unit 1``."""
        return f"{self.line.describe()} unit {self.unit}"

    def describe(self) -> str:
        """One bilingual line saying what was read from where."""
        en, zh = FC_NAMES[self.fc]
        last = self.address + self.count - 1
        return (
            f"{en} (fc {self.fc}) {self.address}-{last} of {self.target} / "
            f"{zh} {self.address}-{last}，设备地址 {self.unit}"
        )


@dataclass(frozen=True, slots=True)
class PairDecoding:
    """Registers (address, address+1) read as 32-bit values in one order."""

    order: str  # ABCD, CDAB, BADC, DCBA
    byte_order: str  # the profile's byte_order
    word_order: str  # the profile's word_order
    uint32: int
    int32: int
    #: float32 rounded to the 7 significant digits it carries (NaN and infinities kept)
    float32: float


@dataclass(frozen=True, slots=True)
class Row:
    """One register, and the pair starting at it (empty for the last register read)."""

    address: int
    hex: str
    uint16: int
    int16: int
    pair: tuple[PairDecoding, ...]


def _float7(value: float) -> float:
    return float(f"{value:.7g}")


def decode_pair(registers: Sequence[int]) -> tuple[PairDecoding, ...]:
    """Two registers, first address first, as uint32/int32/float32 in every order."""
    return tuple(
        PairDecoding(
            order=name,
            byte_order=byte_order,
            word_order=word_order,
            uint32=int(codec.decode_raw(registers, "uint32", byte_order, word_order)),
            int32=int(codec.decode_raw(registers, "int32", byte_order, word_order)),
            float32=_float7(codec.decode_raw(registers, "float32", byte_order, word_order)),
        )
        for name, byte_order, word_order in ORDERS
    )


def make_rows(address: int, registers: Sequence[int]) -> list[Row]:
    """Rows for ``registers`` read from ``address`` on."""
    rows = []
    for i, word in enumerate(registers):
        rows.append(
            Row(
                address=address + i,
                hex=f"0x{word:04X}",
                uint16=int(codec.decode_raw([word], "uint16")),
                int16=int(codec.decode_raw([word], "int16")),
                pair=decode_pair(registers[i : i + 2]) if i + 1 < len(registers) else (),
            )
        )
    return rows


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: CJK characters are two wide."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _align(header: Sequence[str], body: Sequence[Sequence[str]], right: str) -> list[str]:
    """Header and body lines, columns aligned; ``right[i]`` is ``"r"`` (right) or ``"l"``.

    An empty row in ``body`` is a blank line.
    """
    rows = [cells for cells in body if cells]
    widths = [max(_width(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for cells in (header, *body):
        if not cells:
            lines.append("")
            continue
        parts = []
        for cell, width, how in zip(cells, widths, right, strict=True):
            pad = " " * (width - _width(cell))
            parts.append(pad + cell if how == "r" else cell + pad)
        lines.append("  ".join(parts).rstrip())
    return lines


REGISTER_HEADER = ("address/地址", "hex/十六进制", "uint16", "int16")
PAIR_HEADER = (
    "address/地址",
    "order/顺序",
    "byte_order",
    "word_order",
    "uint32",
    "int32",
    "float32",
)
PAIR_TITLE = "32-bit values of registers (address, address+1) / 相邻两个寄存器组成的 32 位数值"


def format_table(rows: Sequence[Row], title: str | None = None) -> str:
    """The text ``edge-agent probe`` prints: registers, then the pairs, columns aligned.

    Every pair line holds its address, so ``| grep 230.5`` finds the address, type and
    orders of a value seen on the device's display.
    """
    lines = [title, ""] if title else []
    registers = [(str(r.address), r.hex, str(r.uint16), str(r.int16)) for r in rows]
    lines += _align(REGISTER_HEADER, registers, "rrrr")
    pairs: list[tuple[str, ...]] = []
    for row in rows:
        if row.pair and pairs:
            pairs.append(())  # a blank line between addresses
        pairs += [
            (
                str(row.address),
                p.order,
                p.byte_order,
                p.word_order,
                str(p.uint32),
                str(p.int32),
                f"{p.float32:.7g}",
            )
            for p in row.pair
        ]
    if pairs:
        lines += ["", PAIR_TITLE, ""]
        lines += _align(PAIR_HEADER, pairs, "rlllrrr")
    return "\n".join(lines)


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # "nan", "inf", "-inf"


def rows_json(rows: Sequence[Row]) -> str:
    """The rows as a JSON array, one row per line.

    A NaN or infinite float32 is the string ``"nan"``/``"inf"``/``"-inf"`` (JSON has no NaN).
    """
    out = []
    for row in rows:
        item = asdict(row)
        item["pair"] = [{**p, "float32": _json_float(p["float32"])} for p in item["pair"]]
        out.append(item)
    # one row per line: valid JSON for scripts, still readable in a terminal
    body = ",\n".join(" " + json.dumps(item, ensure_ascii=False, allow_nan=False) for item in out)
    return f"[\n{body}\n]" if out else "[]"


async def read_registers(request: ProbeRequest) -> list[int]:
    """Connect, read ``count`` registers from ``address``, close; raises DeviceError.

    The answer is checked as the driver checks it (transaction id, unit, function code,
    byte count), so a probe never shows the registers of another request or unit.
    """
    who = request.target
    what = f"read {FC_NAMES[request.fc][0]} {request.address}+{request.count}"
    kind = request.line.framer if request.line.type == "tcp" else "serial"
    line = _Line(request.line)
    try:
        try:
            await line.connect(who, request.timeout_s)
        except DeviceUnavailable as err:
            detail = err.reason.split(": ", 1)[-1]
            raise DeviceUnavailable(who, f"cannot connect: {detail}") from err
        try:
            pdu = await line.exchange(
                who,
                wire.read_request(request.unit, request.fc, request.address, request.count),
                what,
                request.timeout_s,
            )
        except DeviceTimeout as err:
            if isinstance(err.__cause__, TimeoutError):
                raise DeviceTimeout(
                    who,
                    f"{what}: no answer within {request.timeout_s:g} s ({_TIMEOUT_HINTS[kind]})",
                ) from err
            raise
    finally:
        line.drop()
    return wire.registers(pdu)


async def probe(request: ProbeRequest) -> list[Row]:
    """Read the registers ``request`` names and decode them; raises DeviceError."""
    return make_rows(request.address, await read_registers(request))


def error_message(err: DeviceError) -> str:
    """One bilingual line for a failed probe."""
    if isinstance(err, ExceptionResponse):
        zh = f"设备返回异常 {err.code}：{EXCEPTION_NAMES_ZH.get(err.code, '未知异常')}"
    elif isinstance(err, DeviceTimeout):
        zh = "设备无应答（超时），请检查设备地址、串口参数和接线"
    elif isinstance(err, DeviceUnavailable):
        zh = "无法连接设备"
    else:
        zh = "设备应答报文有误"
    return f"edge-agent probe: {err} / {zh}"


__all__ = [
    "MAX_COUNT",
    "ORDERS",
    "ExceptionResponse",
    "PairDecoding",
    "ProbeRequest",
    "Row",
    "error_message",
    "format_table",
    "make_rows",
    "probe",
    "read_registers",
    "rows_json",
]
