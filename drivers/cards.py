"""Card numbers, one form for every access kind (WG controllers, Hikvision and ZKTeco terminals,
printed cards in a config).

**The canonical form** (:func:`canonical`) is the card's number as an unsigned decimal integer,
ASCII digits without leading zeros (``"6154410"``, ``"0"``), at most 2**64 - 1. The number is
the value of the data bits a reader sends, parity bits removed:

- Wiegand 26 (facility 8 bits + card 16 bits): ``facility * 65536 + card``; a card printed
  ``093,59562`` is ``6154410``, the same number a WG controller stores in its 32-bit card field;
- Wiegand 34 and 32-bit UIDs: the 32 data bits, most significant first;
- a card printed in decimal (``0006154410``) or hex (``0x5DE8AA``, ``5D:E8:AA``): its value.

This is the string the pipeline's pseudonymiser hashes, so a card must give the same number on
every reader of a site: a reader in Wiegand 26 mode sends only 24 bits of a 32-bit UID, which
is another number (configure the readers of a site alike). Pure functions, standard library.
"""

from __future__ import annotations

import re

#: the largest card number (UIDs of 7 bytes fit; longer ones are not card numbers we accept)
MAX_CARD = 2**64 - 1


class CardError(ValueError):
    """Text or bits that are not a card number; the message says why."""


class ParityError(CardError):
    """A Wiegand frame whose parity bits do not match its data bits."""


def canonical(value: int) -> str:
    """The canonical string of a card number (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CardError(f"card number must be an integer, not {type(value).__name__}")
    if not 0 <= value <= MAX_CARD:
        raise CardError(f"card number {value} out of range 0..2**64-1")
    return str(value)


def _ones(value: int) -> int:
    return bin(value).count("1")


def _wiegand(frame: int, bits: int) -> int:
    """The data bits of a ``bits``-long Wiegand frame: the first bit is even parity over the
    first half of the data, the last bit odd parity over the second half."""
    if not 0 <= frame < 1 << bits:
        raise CardError(f"Wiegand {bits} frame {frame:#x} has more than {bits} bits")
    data_bits = bits - 2
    half = data_bits // 2
    data = frame >> 1 & ((1 << data_bits) - 1)
    even, odd = frame >> (bits - 1), frame & 1
    if (_ones(data >> half) + even) % 2 != 0:
        raise ParityError(f"Wiegand {bits} frame {frame:#x}: leading (even) parity bit wrong")
    if (_ones(data & ((1 << half) - 1)) + odd) % 2 != 1:
        raise ParityError(f"Wiegand {bits} frame {frame:#x}: trailing (odd) parity bit wrong")
    return data


def _wiegand_frame(data: int, bits: int) -> int:
    data_bits = bits - 2
    half = data_bits // 2
    if not 0 <= data < 1 << data_bits:
        raise CardError(f"{data} does not fit the {data_bits} data bits of Wiegand {bits}")
    even = _ones(data >> half) % 2
    odd = 1 - _ones(data & ((1 << half) - 1)) % 2
    return even << (bits - 1) | data << 1 | odd


def from_wiegand26(frame: int) -> int:
    """The card number of a 26-bit Wiegand frame (parity checked): facility * 65536 + card."""
    return _wiegand(frame, 26)


def from_wiegand34(frame: int) -> int:
    """The card number of a 34-bit Wiegand frame (parity checked): its 32 data bits."""
    return _wiegand(frame, 34)


def wiegand26_frame(facility: int, card: int) -> int:
    """The 26-bit frame a reader sends for ``facility`` (0-255) and ``card`` (0-65535)."""
    return _wiegand_frame(from_facility_card(facility, card, facility_bits=8), 26)


def wiegand34_frame(value: int) -> int:
    """The 34-bit frame a reader sends for the 32-bit ``value``."""
    return _wiegand_frame(value, 34)


def from_facility_card(facility: int, card: int, *, facility_bits: int = 16) -> int:
    """A card printed as facility and card number (``093,59562``): facility * 65536 + card.
    The card part has 16 bits; the facility 8 (Wiegand 26) or up to 16 (Wiegand 34)."""
    if not 0 <= facility < 1 << facility_bits:
        raise CardError(f"facility code {facility} out of range 0..{(1 << facility_bits) - 1}")
    if not 0 <= card <= 0xFFFF:
        raise CardError(f"card number {card} out of range 0..65535 for a facility,card form")
    return facility << 16 | card


def split_facility_card(value: int) -> tuple[int, int]:
    """``(facility, card)`` of a Wiegand 26/34 number, as printed on the card."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise CardError(f"card number {value} has more than 32 bits: no facility,card form")
    return value >> 16, value & 0xFFFF


def from_uid(uid: bytes, *, reverse: bool = False) -> int:
    """The number of a card UID (4 bytes for a Mifare Classic, up to 8). ``reverse``: the
    reader sends the UID least significant byte first, as many 13.56 MHz readers do in their
    'reversed' output mode, while the card was enrolled most significant first."""
    if not 1 <= len(uid) <= 8:
        raise CardError(f"UID of {len(uid)} bytes, expected 1 to 8")
    return int.from_bytes(uid[::-1] if reverse else uid, "big")


def from_wg_record(card: int) -> int:
    """The 32-bit card field of a WG record: already the number (a Wiegand 26 reader gives
    facility * 65536 + card, a Wiegand 34 reader all 32 bits)."""
    if not 0 <= card <= 0xFFFFFFFF:
        raise CardError(f"WG card field {card} does not fit 32 bits")
    return card


_FACILITY_CARD = re.compile(r"^(\d{1,5})\s*[,/-]\s*(\d{1,5})$")
_HEX_BYTES = re.compile(r"^[0-9a-fA-F]{2}([:\s-][0-9a-fA-F]{2})+$")


def parse_printed(text: str, *, hex_digits: bool = False) -> int:
    """The number of a card as printed on it or typed into a config.

    - ``"0006154410"``: decimal (leading zeros as printed on the card);
    - ``"093,59562"`` (or ``093-59562``, ``093/59562``): facility and card;
    - ``"0x5DE8AA"``: hex, always; ``"5DE8AA"``, ``"5D:E8:AA"``, ``"5d e8 aa"``: hex when
      ``hex_digits`` (digits alone cannot say whether they are hex).
    """
    s = text.strip()
    if not s:
        raise CardError("empty card number")
    if s[:2].lower() == "0x":
        return _checked(_hex(s[2:], text), text)
    if hex_digits:
        if _HEX_BYTES.match(s):
            s = re.sub(r"[:\s-]", "", s)
        return _checked(_hex(s, text), text)
    m = _FACILITY_CARD.match(s)
    if m:
        return from_facility_card(int(m.group(1)), int(m.group(2)))
    if not s.isascii() or not s.isdigit():
        raise CardError(f"card number {text!r}: digits only (or facility,card, or 0x hex)")
    return _checked(int(s), text)


def _hex(s: str, text: str) -> int:
    if not s or not all(c in "0123456789abcdefABCDEF" for c in s):
        raise CardError(f"card number {text!r} is not hex")
    return int(s, 16)


def _checked(value: int, text: str) -> int:
    if value > MAX_CARD:
        raise CardError(f"card number {text!r} is larger than 64 bits")
    return value
