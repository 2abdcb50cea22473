"""Codec tests against register values a real device sends (from the vendors' datasheets)."""

from __future__ import annotations

import math
import struct

import pytest

from edge_agent.drivers.modbus import codec
from edge_agent.drivers.modbus.profile import Point


def point(type_: str, **kw: object) -> Point:
    fields: dict[str, object] = {
        "name": "x",
        "fc": 3,
        "address": 0,
        "type": type_,
        "description": "test",
    }
    fields.update(kw)
    return Point.model_validate(fields)


# SDM630 voltage 230.1 V is the IEEE-754 float32 0x4366199A (Eastron sends ABCD).
@pytest.mark.parametrize(
    ("registers", "byte_order", "word_order"),
    [
        pytest.param([0x4366, 0x199A], "big", "big", id="ABCD"),
        pytest.param([0x199A, 0x4366], "big", "little", id="CDAB"),
        pytest.param([0x6643, 0x9A19], "little", "big", id="BADC"),
        pytest.param([0x9A19, 0x6643], "little", "little", id="DCBA"),
    ],
)
def test_float32_orders_decode_sdm630_voltage(
    registers: list[int],
    byte_order: str,
    word_order: str,
) -> None:
    p = point("float32", byte_order=byte_order, word_order=word_order)
    assert codec.decode(p, registers) == 230.1


def test_float32_is_rounded_to_float32_precision() -> None:
    # 0x4248 0x0000 is exactly 50.0 Hz; 0x3F733333 is the float32 nearest 0.95 (PF)
    assert codec.decode(point("float32"), [0x4248, 0x0000]) == 50.0
    assert codec.decode(point("float32"), [0x3F73, 0x3333]) == 0.95


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        pytest.param([0x7FC0, 0x0000], None, id="nan"),
        pytest.param([0x7F80, 0x0000], None, id="+inf"),
        pytest.param([0xFF80, 0x0000], None, id="-inf"),
    ],
)
def test_non_finite_floats_decode_to_none(registers: list[int], expected: None) -> None:
    assert codec.decode(point("float32"), registers) is expected


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        pytest.param([0x4B7F, 0xFFFF], 16777215, id="2^24-1 stays 16777215"),
        pytest.param([0x4B3C, 0x614E], 12345678, id="energy 12345678 not 12345680"),
        pytest.param([0x4B18, 0x9680], 10000000, id="10000000"),
        pytest.param([0x4366, 0x199A], 230.1, id="230.1 not 230.10000610351562"),
        pytest.param([0x3DCC, 0xCCCD], 0.1, id="0.1"),
        # 0x4CBC614E is exactly 98765424; floats 8 apart there, and 98765420 is the
        # shortest decimal that is the same float32 (as numpy and JavaScript print it)
        pytest.param([0x4CBC, 0x614E], 98765420, id="above 2^24"),
        pytest.param([0x0000, 0x0001], 1e-45, id="smallest subnormal"),
        pytest.param([0x7F7F, 0xFFFF], 3.4028235e38, id="largest float32"),
    ],
)
def test_float32_is_the_shortest_decimal_of_the_same_float32(
    registers: list[int], expected: float
) -> None:
    value = codec.decode(point("float32"), registers)
    assert value == expected
    # and it is that very float32: nothing rounded away, nothing invented
    word = struct.pack(">f", expected)
    assert [int.from_bytes(word[:2], "big"), int.from_bytes(word[2:], "big")] == registers


def test_float_scale_and_offset_are_applied_in_decimal() -> None:
    # 230.1 V scaled to kV is 0.2301, not 0.23010000000000003 or 0.2301000061
    assert codec.decode(point("float32", scale=0.001), [0x4366, 0x199A]) == 0.2301
    # a float32 energy counter in Wh shown in kWh keeps all its digits
    assert codec.decode(point("float32", scale=0.001), [0x4B3C, 0x614E]) == 12345.678
    assert codec.decode(point("float64", scale=0.1, offset=1), [0x3FF0, 0, 0, 0]) == 1.1


def test_float64() -> None:
    assert codec.decode(point("float64"), [0x3FF0, 0, 0, 0]) == 1.0
    assert codec.decode(point("float64", word_order="little"), [0, 0, 0, 0x3FF0]) == 1.0
    # 0x400921FB54442D18 is pi
    assert codec.decode(point("float64"), [0x4009, 0x21FB, 0x5444, 0x2D18]) == math.pi


def test_int32_negative_both_word_orders() -> None:
    # -123456 = 0xFFFE1DC0
    assert codec.decode(point("int32"), [0xFFFE, 0x1DC0]) == -123456
    assert codec.decode(point("int32", word_order="little"), [0x1DC0, 0xFFFE]) == -123456
    assert codec.decode(point("int32", byte_order="little"), [0xFEFF, 0xC01D]) == -123456


def test_adl400_energy_uint32_hundredths_of_kwh() -> None:
    # ADL400 total energy 123456.78 kWh = 12345678 counts = 0x00BC614E, high word first
    p = point("uint32", scale=0.01, unit="kWh")
    assert codec.decode(p, [0x00BC, 0x614E]) == 123456.78
    # the largest count the meter can show before it wraps
    assert codec.decode(p, [0xFFFF, 0xFFFF]) == 42949672.95


def test_int16_and_uint16_scaled() -> None:
    # air sensor: temperature -5.5 °C is -55 = 0xFFC9 in 0.1 °C; humidity 42.0 %RH = 420
    assert codec.decode(point("int16", scale=0.1), [0xFFC9]) == -5.5
    assert codec.decode(point("uint16", scale=0.1), [0x01A4]) == 42.0
    assert codec.decode(point("uint16", scale=0.1), [2301]) == 230.1  # not 230.10000000000002
    assert codec.decode(point("uint16"), [0xFFC9]) == 65481
    assert codec.decode(point("int16", byte_order="little"), [0xC9FF]) == -55


def test_unscaled_integers_stay_integers() -> None:
    value = codec.decode(point("uint16"), [812])
    assert value == 812
    assert isinstance(value, int)
    assert isinstance(codec.decode(point("uint16", scale=10), [5]), int)


def test_offset_is_applied_after_scale() -> None:
    # e.g. a transmitter that reports (T + 40) in 0.1 °C
    assert codec.decode(point("uint16", scale=0.1, offset=-40), [650]) == 25.0


def test_bit_inside_register() -> None:
    status = point("bit", bit=2)
    assert codec.decode(status, [0x0004]) is True
    assert codec.decode(status, [0xFFFB]) is False
    assert codec.decode(point("bit", bit=15), [0x8000]) is True
    # byte order little: bit 2 of the register's value sits in the second byte on the wire
    assert codec.decode(point("bit", bit=2, byte_order="little"), [0x0400]) is True


def test_decode_rejects_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        codec.decode(point("float32"), [0x4366])


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("float32", 230.1, [0x4366, 0x199A]),
        ("int32", -123456, [0xFFFE, 0x1DC0]),
        ("uint32", 12345678, [0x00BC, 0x614E]),
        ("int16", -55, [0xFFC9]),
        ("uint16", 65535, [0xFFFF]),
        ("float64", 1.0, [0x3FF0, 0, 0, 0]),
    ],
)
def test_encode_big_endian(type_: str, value: float, expected: list[int]) -> None:
    assert codec.encode(point(type_), value) == expected


def test_encode_word_and_byte_order() -> None:
    assert codec.encode(point("float32", word_order="little"), 230.1) == [0x199A, 0x4366]
    assert codec.encode(point("float32", byte_order="little"), 230.1) == [0x6643, 0x9A19]


@pytest.mark.parametrize("type_", ["int16", "uint16", "int32", "uint32", "float32", "float64"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_round_trip_every_type_and_order(type_: str, byte_order: str, word_order: str) -> None:
    p = point(type_, byte_order=byte_order, word_order=word_order, scale=0.5)
    for value in (0, 1.5, 100, 12345.5):
        assert codec.decode(p, codec.encode(p, value)) == value


def test_encode_inverts_scale_and_offset() -> None:
    p = point("uint16", scale=0.1, offset=-40)
    assert codec.encode(p, 25.0) == [650]


def test_encode_refuses_out_of_profile_range() -> None:
    address = point("uint16", range=(1, 247), writable=True)
    assert codec.encode(address, 3) == [3]
    with pytest.raises(ValueError, match=r"outside the valid range \[1, 247\]"):
        codec.encode(address, 248)


def test_encode_refuses_values_the_type_cannot_hold() -> None:
    with pytest.raises(ValueError, match="does not fit uint16"):
        codec.encode(point("uint16"), 70000)
    with pytest.raises(ValueError, match="does not fit int16"):
        codec.encode(point("int16"), -40000)
    with pytest.raises(ValueError, match="does not fit uint32"):
        codec.encode(point("uint32"), -1)


def test_encode_refuses_values_between_steps_and_non_numbers() -> None:
    with pytest.raises(ValueError, match=r"resolution 0\.1"):
        codec.encode(point("uint16", scale=0.1), 23.45)
    with pytest.raises(ValueError, match="expects a number"):
        codec.encode(point("uint16"), True)
    with pytest.raises(ValueError, match="finite"):
        codec.encode(point("float32"), math.nan)


def test_encode_bit_accepts_bool_and_0_1_only() -> None:
    coil = Point(name="relay", fc=1, address=0, type="bit", description="relay", writable=True)
    assert codec.encode_bit(coil, True) is True
    assert codec.encode_bit(coil, 0) is False
    with pytest.raises(ValueError, match="true/false or 1/0"):
        codec.encode_bit(coil, 2)


@pytest.mark.parametrize(
    "kw",
    [
        {"type_": "uint16"},
        {"type_": "int16"},
        {"type_": "uint16", "scale": 0.1},
        {"type_": "int16", "scale": 0.1},
        {"type_": "uint16", "scale": 0.01, "offset": -40},
        {"type_": "int16", "scale": 10},
        {"type_": "uint16", "scale": 2, "offset": 3},
        {"type_": "int16", "offset": 0.5},
        {"type_": "uint16", "scale": 0.001},
        {"type_": "int16", "byte_order": "little", "scale": 0.1},
        {"type_": "bit", "bit": 3},
        {"type_": "int32", "word_order": "little", "scale": 0.01},
        {"type_": "float32"},
        {"type_": "uint32", "scale": 0.1},
    ],
    ids=repr,
)
def test_a_points_decoder_gives_what_decode_gives(kw: dict[str, object]) -> None:
    """The driver decodes with ``decoder(point)`` (worked out once per point); it must
    give exactly what ``decode`` gives, type included (an int stays an int), for every
    register value, taken at the point's place in a block."""
    type_ = str(kw.pop("type_"))
    p = point(type_, **kw)
    fast = codec.decoder(p)
    words = [0, 1, 2, 9, 10, 99, 100, 420, 2301, 0x7FFF, 0x8000, 0x8001, 0xFFC9, 0xFFFF]
    words += list(range(0, 0x10000, 997))
    for word in words:
        block = [0x1234, word, word ^ 0x00FF, 0x4366]  # the point starts at 1
        expected = codec.decode(p, block[1 : 1 + p.count])
        got = fast(block, 1)
        assert got == expected, (word, got, expected)
        assert type(got) is type(expected), (word, got, expected)
