"""Registers <-> engineering values for every point type, byte order and word order.

Modbus carries 16-bit registers, each big-endian on the wire; pymodbus hands us
them as ints. Wider values span several registers and vendors disagree on the
order: ``word_order: big`` means the most significant register comes first
(ABCD, e.g. Eastron SDM630 floats, Acrel ADL400 energy), ``word_order: little``
the least significant first (CDAB, many Schneider and Chinese PLC maps), and
``byte_order: little`` swaps the two bytes inside each register (BADC).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal

from edge_agent.drivers.modbus.profile import REGISTER_COUNT, Point

#: struct format of each numeric type, big-endian after registers are put in ABCD order
_FORMAT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "float64": ">d",
}

_INT_LIMITS: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}

Number = int | float


def _to_bytes(registers: Sequence[int], byte_order: str, word_order: str) -> bytes:
    if byte_order == "big" and word_order == "big":
        # The common case (every classroom sensor), in one call; a bad word falls through
        # to the loop below for its error message.
        try:
            return struct.pack(f">{len(registers)}H", *registers)
        except struct.error:
            pass
    words = list(registers)
    if word_order == "little":
        words.reverse()
    out = bytearray()
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register value {word} is not a 16-bit word")
        pair = word.to_bytes(2, "big")
        out += pair[::-1] if byte_order == "little" else pair
    return bytes(out)


def _from_bytes(data: bytes, byte_order: str, word_order: str) -> list[int]:
    words = []
    for i in range(0, len(data), 2):
        pair = data[i : i + 2]
        words.append(int.from_bytes(pair[::-1] if byte_order == "little" else pair, "big"))
    if word_order == "little":
        words.reverse()
    return words


def decode_raw(
    registers: Sequence[int],
    type_: str,
    byte_order: str = "big",
    word_order: str = "big",
) -> Number:
    """Decode ``registers`` (exactly as many as ``type_`` needs) to the raw number."""
    count = REGISTER_COUNT[type_]
    if type_ == "bit" or len(registers) != count:
        raise ValueError(f"{type_} needs {count} registers, got {len(registers)}")
    value: Number = struct.unpack(_FORMAT[type_], _to_bytes(registers, byte_order, word_order))[0]
    return value


def encode_raw(
    value: Number,
    type_: str,
    byte_order: str = "big",
    word_order: str = "big",
) -> list[int]:
    """Encode a raw number to registers; raises ValueError if it does not fit ``type_``."""
    if type_ in _INT_LIMITS:
        low, high = _INT_LIMITS[type_]
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{value} does not fit {type_} ({low}..{high})")
    elif type_ in ("float32", "float64"):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        if type_ == "float32" and abs(value) > 3.4028234663852886e38:
            raise ValueError(f"{value} does not fit float32")
    else:
        raise ValueError(f"cannot encode type {type_!r} as registers")
    return _from_bytes(struct.pack(_FORMAT[type_], value), byte_order, word_order)


@functools.lru_cache(maxsize=256)  # a profile has a handful of scales; every poll asks again
def _decimals(x: float) -> int:
    """Decimal places of ``x`` as written (0.01 -> 2, 2.5 -> 1, 10 -> 0)."""
    exponent = Decimal(repr(float(x))).normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _is_integral(x: float) -> bool:
    return float(x).is_integer()


def shortest_float32(x: float) -> float:
    """The shortest decimal that reads back as the same float32 as ``x`` (``x`` is a
    float32 value): 0x4366199A is 230.1, not 230.10000610351562, and 16777215 stays
    16777215 (rounding to 7 significant digits would make it 16777220)."""
    if not math.isfinite(x):
        return x
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{x:.{digits}g}")
        try:
            if struct.unpack(">f", struct.pack(">f", candidate))[0] == x:
                return candidate
        except OverflowError:  # rounded up past the largest float32
            continue
    return x


def to_engineering(point: Point, raw: Number) -> Number | None:
    """Apply ``raw * scale + offset``; None for NaN/infinity (a failed float sensor).

    A float is taken as the shortest decimal that is the same float32/float64 (what the
    device's display shows), and scale and offset are applied in decimal, so that
    230.1 x 0.001 is 0.2301 and an energy counter keeps every digit it has.
    """
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None
        if point.type == "float32":
            raw = shortest_float32(raw)
        if point.scale == 1 and point.offset == 0:
            return raw
        exact = Decimal(repr(raw)) * Decimal(repr(float(point.scale))) + Decimal(
            repr(float(point.offset))
        )
        value = float(exact)
        return value if math.isfinite(value) else None
    if _is_integral(point.scale) and _is_integral(point.offset):
        return int(raw * int(point.scale) + int(point.offset))
    digits = max(_decimals(point.scale), _decimals(point.offset))
    # round to the resolution the scale gives: 2301 * 0.1 is 230.1, not 230.10000000000002
    return round(raw * point.scale + point.offset, digits)


def decode(point: Point, registers: Sequence[int]) -> Number | bool | None:
    """Decode a register-based point (fc 3/4) to its engineering value.

    ``registers`` are exactly the point's registers, first address first. Returns
    None when a float is NaN or infinite (the metric's quality is bad).
    """
    if point.type == "bit":
        if len(registers) != 1:
            raise ValueError(f"bit point {point.name} needs 1 register, got {len(registers)}")
        word = _from_bytes(_to_bytes(registers, point.byte_order, "big"), "big", "big")[0]
        return bool((word >> (point.bit or 0)) & 1)
    return to_engineering(
        point, decode_raw(registers, point.type, point.byte_order, point.word_order)
    )


#: a point's decoder: (the block's registers, where the point starts in it) -> value
Decoder = Callable[[Sequence[int], int], "Number | bool | None"]


def decoder(point: Point) -> Decoder:
    """:func:`decode` for one point of a register block, with what can be worked out once
    worked out once: a 16-bit integer point (every classroom sensor's) costs a few
    operations per poll instead of a pack, an unpack and the scale's decimals. Gives what
    :func:`decode` gives (a test compares them); any other point goes through it."""
    if point.type not in ("uint16", "int16") or point.byte_order != "big":
        count = point.count

        def slow(block: Sequence[int], at: int) -> Number | bool | None:
            return decode(point, block[at : at + count])

        return slow
    return _word_decoder(point.type == "int16", point.scale, point.offset)


@functools.lru_cache(maxsize=256)  # one per kind of point, shared by every device
def _word_decoder(signed: bool, scale: float, offset: float) -> Decoder:
    """A 16-bit integer point's decoder (big-endian), as :func:`to_engineering` scales."""
    if _is_integral(scale) and _is_integral(offset):
        iscale, ioffset = int(scale), int(offset)

        def integral(block: Sequence[int], at: int) -> Number:
            raw = block[at]
            if signed and raw >= 0x8000:
                raw -= 0x10000
            return raw * iscale + ioffset

        return integral
    digits = max(_decimals(scale), _decimals(offset))

    def scaled(block: Sequence[int], at: int) -> Number:
        raw = block[at]
        if signed and raw >= 0x8000:
            raw -= 0x10000
        return round(raw * scale + offset, digits)

    return scaled


def to_raw(point: Point, value: Number | bool) -> Number:
    """Invert ``raw * scale + offset`` for a write; raises ValueError for an impossible value."""
    if isinstance(value, bool):
        raise ValueError(f"{point.name} expects a number, not {value!r}")
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{point.name} expects a finite number, not {value!r}")
    raw = (value - point.offset) / point.scale
    if point.type in ("float32", "float64"):
        return float(raw)
    rounded = round(raw)
    if abs(raw - rounded) > 1e-6 * max(1.0, abs(raw)):
        raise ValueError(
            f"{point.name}: {value} is not a multiple of the resolution {point.scale} {point.unit}",
        )
    return int(rounded)


def check_range(point: Point, value: Number | bool) -> None:
    """Raise ValueError when ``value`` is outside the point's profile range."""
    if point.range is not None and not isinstance(value, bool):
        low, high = point.range
        if not low <= value <= high:
            raise ValueError(
                f"{point.name}: {value} is outside the valid range "
                f"[{low:g}, {high:g}] {point.unit}",
            )


def encode(point: Point, value: Number | bool) -> list[int]:
    """Encode an engineering value for a register write (fc 3), range-checked."""
    if point.type == "bit":
        raise ValueError(f"{point.name} is a bit; write it as a coil")
    check_range(point, value)
    raw = to_raw(point, value)
    try:
        return encode_raw(raw, point.type, point.byte_order, point.word_order)
    except ValueError as err:
        raise ValueError(f"{point.name}: {value} cannot be written: {err}") from err


def encode_bit(point: Point, value: Number | bool) -> bool:
    """Validate a coil write: accepts true/false or 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{point.name} is a coil: write true/false or 1/0, not {value!r}")
