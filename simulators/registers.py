"""Engineering values to Modbus register words and back, from the wire format alone.

A value is stored as ``raw = (value - offset) / scale`` (rounded for integer types), packed
big-endian with :mod:`struct`, cut into 16-bit words, then:

- ``byte_order: little`` swaps the two bytes inside every word,
- ``word_order: little`` puts the least significant word first.

So float32 230.0 is ``0x4366 0x0000`` (ABCD), ``0x0000 0x4366`` with little word order (CDAB),
``0x6643 0x0000`` with little byte order (BADC).
"""

from __future__ import annotations

import math
import struct

from .profiles import Point

_STRUCT = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "float64": "d",
}
_INT_LIMITS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


class EncodeError(ValueError):
    """The value cannot be represented by the point's register type."""


def raw_limits(point: Point) -> tuple[float, float]:
    """Smallest and largest raw number the point's type can carry."""
    if point.type == "bit":
        return (0, 1)
    if point.type in _INT_LIMITS:
        return _INT_LIMITS[point.type]
    if point.type == "float32":
        return (-3.4028234663852886e38, 3.4028234663852886e38)
    return (-math.inf, math.inf)


def to_raw(point: Point, value: float) -> int | float:
    """Engineering value to the raw number stored on the wire."""
    if not math.isfinite(value):
        raise EncodeError(f"{point.name}: {value} is not finite")
    raw = (value - point.offset) / point.scale
    if point.type == "bit":
        return 1 if raw >= 0.5 else 0
    if point.type in _INT_LIMITS:
        raw = round(raw)
    low, high = raw_limits(point)
    if not low <= raw <= high:
        raise EncodeError(f"{point.name}: {value} does not fit {point.type}")
    return raw


def from_raw(point: Point, raw: float) -> float:
    """Raw number from the wire to the engineering value."""
    return raw * point.scale + point.offset


def _arrange(point: Point, data: bytes) -> list[int]:
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if point.byte_order == "little":
        words = [w[::-1] for w in words]
    if point.word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


def _unarrange(point: Point, words: list[int]) -> bytes:
    chunks = [w.to_bytes(2, "big") for w in words]
    if point.word_order == "little":
        chunks.reverse()
    if point.byte_order == "little":
        chunks = [c[::-1] for c in chunks]
    return b"".join(chunks)


def encode(point: Point, value: float) -> list[int]:
    """Register words for ``value``.

    For a bit of a register (``type: bit`` with FC03/FC04) the word holds only that bit: OR it
    with the other bits of the same register. For coils and discrete inputs it is ``[0]`` or
    ``[1]``.
    """
    raw = to_raw(point, value)
    if point.type == "bit":
        if point.fc in (1, 2):
            return [int(raw)]
        return [int(raw) << (point.bit or 0)]
    data = struct.pack(">" + _STRUCT[point.type], raw)
    return _arrange(point, data)


def decode(point: Point, words: list[int]) -> float:
    """Engineering value of the point's register words (as read from the wire)."""
    if len(words) != point.count:
        raise ValueError(f"{point.name}: needs {point.count} words, got {len(words)}")
    if point.type == "bit":
        if point.fc in (1, 2):
            raw: float = 1 if words[0] else 0
        else:
            raw = (words[0] >> (point.bit or 0)) & 1
        return from_raw(point, raw)
    (raw,) = struct.unpack(">" + _STRUCT[point.type], _unarrange(point, words))
    return from_raw(point, raw)


def quantize(point: Point, value: float) -> float:
    """What a correct reader decodes when the device holds ``value``."""
    return decode(point, encode(point, value))


def clamp_to_range(point: Point, value: float) -> float:
    """``value`` moved into the point's range, then onto the register grid, still in range."""
    if point.range is None:
        return quantize(point, value)
    low, high = point.range
    result = quantize(point, min(max(value, low), high))
    if point.type in _INT_LIMITS:
        # Range limits that are not on the scale grid: step one count back inside.
        step = abs(point.scale)
        if result > high:
            result = quantize(point, result - step)
        elif result < low:
            result = quantize(point, result + step)
    return result
