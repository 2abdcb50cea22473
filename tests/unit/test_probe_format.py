"""``edge-agent probe`` output: every decoding of real meter registers, columns aligned.

Expected values are computed here with ``struct`` from the bytes each order puts on the
wire, not with the codec the probe calls.
"""

from __future__ import annotations

import json
import struct
import unicodedata

import pytest

from edge_agent.drivers.modbus.driver import LineSettings
from edge_agent.drivers.modbus.probe import ProbeRequest, format_table, make_rows, rows_json

# 230.5 V as float32 is 0x43668000; an ABCD meter (e.g. Eastron SDM630) sends 0x4366 first.
VOLTS = [0x4366, 0x8000]

#: the four bytes of registers (r0, r1) = (AB, CD) in the order each name reads them
ORDER_BYTES = {
    "ABCD": (0, 1, 2, 3),
    "CDAB": (2, 3, 0, 1),
    "BADC": (1, 0, 3, 2),
    "DCBA": (3, 2, 1, 0),
}
PROFILE_ORDERS = {
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
}


def expected(registers: list[int], order: str) -> tuple[int, int, float]:
    """uint32, int32, float32 of two registers read in ``order``, independently of the codec."""
    wire = struct.pack(">HH", *registers)
    data = bytes(wire[i] for i in ORDER_BYTES[order])
    return (
        struct.unpack(">I", data)[0],
        struct.unpack(">i", data)[0],
        struct.unpack(">f", data)[0],
    )


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def sections(text: str) -> tuple[list[str], list[str]]:
    """(register table, pair table): header line first, blank lines dropped."""
    lines = text.splitlines()
    reg_start = next(i for i, ln in enumerate(lines) if ln.startswith("address") and "hex" in ln)
    pair_start = next(
        (i for i, ln in enumerate(lines) if ln.startswith("address") and "order" in ln), None
    )
    reg_end = pair_start if pair_start is not None else len(lines)
    registers = [ln for ln in lines[reg_start:reg_end] if ln and not ln.startswith("32-bit")]
    pairs = [ln for ln in lines[pair_start:] if ln] if pair_start is not None else []
    return registers, pairs


def pair_line(pairs: list[str], address: int, order: str) -> list[str]:
    found = [ln.split() for ln in pairs[1:] if ln.split()[:2] == [str(address), order]]
    assert len(found) == 1, (address, order, pairs)
    return found[0]


def test_float32_volts_in_every_order() -> None:
    text = format_table(make_rows(0, VOLTS))
    registers, pairs = sections(text)
    assert registers[1].split() == ["0", "0x4366", "17254", "17254"]
    assert registers[2].split() == ["1", "0x8000", "32768", "-32768"]

    assert pair_line(pairs, 0, "ABCD")[-1] == "230.5"
    for order, (byte_order, word_order) in PROFILE_ORDERS.items():
        uint32, int32, float32 = expected(VOLTS, order)
        cells = pair_line(pairs, 0, order)
        assert cells == [
            "0",
            order,
            byte_order,
            word_order,
            str(uint32),
            str(int32),
            f"{float32:.7g}",
        ]
    # what the wrong orders make of 230.5 V: the symptoms docs/modbus.md describes
    assert (
        pair_line(pairs, 0, "CDAB")[-1]
        == f"{struct.unpack('>f', bytes.fromhex('80004366'))[0]:.7g}"
    )
    assert "e-41" in pair_line(pairs, 0, "CDAB")[-1]
    assert "e+23" in pair_line(pairs, 0, "BADC")[-1]
    assert "e-38" in pair_line(pairs, 0, "DCBA")[-1]
    # the last register read starts no pair
    assert not [ln for ln in pairs[1:] if ln.split()[0] == "1"]


def test_low_word_first_meter_shows_the_value_on_the_cdab_line() -> None:
    # docs/modbus.md: 230.1 V low word first arrives as 0x199A 0x4366; as ABCD it is 1.595e-23
    regs = [0x199A, 0x4366]
    _, pairs = sections(format_table(make_rows(0, regs)))
    assert pair_line(pairs, 0, "CDAB")[2:4] == ["big", "little"]
    assert pair_line(pairs, 0, "CDAB")[-1] == "230.1"
    assert pair_line(pairs, 0, "ABCD")[-1].startswith("1.595")
    assert pair_line(pairs, 0, "ABCD")[-1].endswith("e-23")


def test_integers_signed_and_word_swapped() -> None:
    # 100000 kWh as uint32 is 0x000186A0; low word first it arrives as 0x86A0 0x0001
    regs = [0x86A0, 0x0001, 0xFFFF]
    rows = make_rows(40, regs)
    assert [r.address for r in rows] == [40, 41, 42]
    assert rows[2].int16 == -1
    assert rows[2].uint16 == 65535
    assert rows[2].pair == ()
    _, pairs = sections(format_table(rows))
    assert pair_line(pairs, 40, "CDAB")[4] == "100000"
    assert pair_line(pairs, 40, "ABCD")[4] == str(0x86A00001)
    assert pair_line(pairs, 41, "ABCD")[4:6] == [str(0x0001FFFF), str(0x0001FFFF)]
    assert pair_line(pairs, 41, "CDAB")[4:6] == [str(0xFFFF0001), str(0xFFFF0001 - 2**32)]


def test_columns_are_aligned_under_a_bilingual_header() -> None:
    text = format_table(make_rows(100, [0x4366, 0x8000, 0x7FC0, 0x0000, 0xFFFF]), title="T")
    assert text.splitlines()[0] == "T"
    for table in sections(text):
        header = table[0]
        assert any(unicodedata.east_asian_width(c) == "W" for c in header)  # 地址 ...
        assert "address" in header
        # the last column is right-aligned: every line ends in the same terminal column
        assert len({width(ln) for ln in table}) == 1, table
    _, pairs = sections(text)
    # left-aligned order names start in one column; CJK in the header counts two columns
    starts = {
        width(ln[: ln.index(order)])
        for ln in pairs[1:]
        for order in PROFILE_ORDERS
        if f"  {order}  " in ln
    }
    header_start = width(pairs[0][: pairs[0].index("order")])
    assert starts == {header_start}
    assert pair_line(pairs, 102, "ABCD")[-1] == "nan"


def test_one_register_has_no_pair_table() -> None:
    text = format_table(make_rows(7, [0x0596]))
    registers, pairs = sections(text)
    assert pairs == []
    assert registers[1].split() == ["7", "0x0596", "1430", "1430"]


def test_json_is_strict_and_carries_every_decoding() -> None:
    rows = make_rows(0, [*VOLTS, 0x7FC0, 0x0000, 0x7F80, 0x0000])
    data = json.loads(rows_json(rows), parse_constant=pytest.fail)  # no bare NaN/Infinity
    assert [r["address"] for r in data] == [0, 1, 2, 3, 4, 5]
    first = data[0]
    assert (first["hex"], first["uint16"], first["int16"]) == ("0x4366", 17254, 17254)
    by_order = {p["order"]: p for p in first["pair"]}
    assert set(by_order) == set(PROFILE_ORDERS)
    for order, (byte_order, word_order) in PROFILE_ORDERS.items():
        uint32, int32, float32 = expected(VOLTS, order)
        p = by_order[order]
        assert (p["byte_order"], p["word_order"]) == (byte_order, word_order)
        assert (p["uint32"], p["int32"]) == (uint32, int32)
        assert p["float32"] == pytest.approx(float32, rel=1e-6)
    assert by_order["ABCD"]["float32"] == 230.5
    assert data[2]["pair"][0]["float32"] == "nan"  # 0x7FC00000
    assert data[4]["pair"][0]["float32"] == "inf"  # 0x7F800000
    assert data[5]["pair"] == []
    assert json.loads(rows_json([])) == []


TCP = LineSettings("tcp", "127.0.0.1", 502, "socket")
RTU = LineSettings("tcp", "127.0.0.1", 4196, "rtu")
SERIAL = LineSettings("serial", "/dev/ttyUSB0")


@pytest.mark.parametrize(
    ("line", "changes", "message"),
    [
        (TCP, {"count": 0}, "--count 0"),
        (TCP, {"count": 126}, "--count 126"),
        (TCP, {"address": 65535, "count": 2}, "passes register 65535"),
        (TCP, {"address": -1}, "--address -1"),
        (TCP, {"fc": 1}, "--fc 1"),
        (TCP, {"unit": 256}, "--unit 256"),
        (RTU, {"unit": 0}, "--unit 0"),
        (SERIAL, {"unit": 248}, "--unit 248"),
        (TCP, {"timeout_s": 0.0}, "--timeout 0"),
        (LineSettings("tcp", "h", 0), {}, "--port 0"),
        (LineSettings("serial", "/dev/x", baudrate=0), {}, "--baudrate 0"),
    ],
)
def test_request_refuses_what_modbus_cannot_carry(
    line: LineSettings, changes: dict[str, int | float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ProbeRequest(line, **changes)  # type: ignore[arg-type]


def test_request_accepts_the_edges() -> None:
    ProbeRequest(TCP, unit=0, address=65535, count=1)
    ProbeRequest(TCP, unit=255, count=125, fc=4)
    ProbeRequest(SERIAL, unit=247)
    assert "holding registers" in ProbeRequest(TCP).describe()
    assert "输入寄存器" in ProbeRequest(TCP, fc=4).describe()
