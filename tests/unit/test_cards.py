"""Card numbers (drivers/cards.py): every form a card arrives in gives one canonical string."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.drivers import cards
from edge_agent.drivers.cards import CardError, ParityError


def w26(bits: str) -> int:
    """A Wiegand 26 frame from its bits as a reader sends them (parity bits included)."""
    assert len(bits) == 26
    return int(bits, 2)


# facility 93 (0101 1101), card 59562 (1110 1000 1010 1010): the first 12 data bits
# 0101 1101 1110 hold 8 ones, so the even parity bit is 0; the last 12, 1000 1010 1010,
# hold 5 ones, so the odd parity bit is 0.
FRAME_93_59562 = w26("0" + "01011101" + "1110100010101010" + "0")


def test_wiegand26_is_facility_times_65536_plus_card() -> None:
    assert cards.from_wiegand26(FRAME_93_59562) == 93 * 65536 + 59562 == 6154410
    assert cards.canonical(cards.from_wiegand26(FRAME_93_59562)) == "6154410"


@pytest.mark.parametrize("flip", [0, 25, 1, 12, 13, 24])
def test_wiegand26_with_one_bit_flipped_fails_parity(flip: int) -> None:
    with pytest.raises(ParityError, match="parity"):
        cards.from_wiegand26(FRAME_93_59562 ^ (1 << flip))


def test_wiegand26_frame_round_trips() -> None:
    assert cards.wiegand26_frame(93, 59562) == FRAME_93_59562
    for facility, card in [(0, 0), (255, 65535), (1, 2), (128, 32768)]:
        assert cards.from_wiegand26(cards.wiegand26_frame(facility, card)) == facility << 16 | card


def test_wiegand34() -> None:
    # 32 data bits 0xE9CDACEA: first 16 (0xE9CD) hold 10 ones -> even parity 0; last 16
    # (0xACEA) hold 9 ones -> odd parity 0
    frame = int("0" + format(0xE9CDACEA, "032b") + "0", 2)
    assert cards.from_wiegand34(frame) == 0xE9CDACEA == 3922570474
    assert cards.wiegand34_frame(0xE9CDACEA) == frame
    with pytest.raises(ParityError):
        cards.from_wiegand34(frame ^ 1)
    with pytest.raises(ParityError):
        cards.from_wiegand34(frame ^ (1 << 33))


@pytest.mark.parametrize(
    ("fn", "value"),
    [(cards.from_wiegand26, 1 << 26), (cards.from_wiegand34, 1 << 34), (cards.from_wiegand26, -1)],
)
def test_wiegand_frame_too_long(fn: Any, value: int) -> None:
    with pytest.raises(CardError, match="bits"):
        fn(value)


def test_facility_card_forms() -> None:
    assert cards.from_facility_card(93, 59562) == 6154410
    assert cards.split_facility_card(6154410) == (93, 59562)
    with pytest.raises(CardError, match="facility code 256"):
        cards.wiegand26_frame(256, 1)
    with pytest.raises(CardError, match="65536"):
        cards.from_facility_card(1, 65536)
    with pytest.raises(CardError, match="32 bits"):
        cards.split_facility_card(1 << 32)


def test_uid_bytes_and_their_order() -> None:
    uid = bytes.fromhex("E9CDACEA")
    assert cards.from_uid(uid) == 0xE9CDACEA
    assert cards.from_uid(bytes.fromhex("EAACCDE9"), reverse=True) == 0xE9CDACEA
    assert cards.from_uid(bytes.fromhex("04A1B2C3D4E5F6")) == 0x04A1B2C3D4E5F6  # 7-byte UID
    for bad in (b"", bytes(9)):
        with pytest.raises(CardError, match="UID"):
            cards.from_uid(bad)


def test_wg_record_field() -> None:
    assert cards.from_wg_record(3922570474) == 3922570474
    with pytest.raises(CardError):
        cards.from_wg_record(1 << 32)


@pytest.mark.parametrize(
    ("text", "hex_digits", "value"),
    [
        ("0006154410", False, 6154410),
        ("6154410", False, 6154410),
        (" 0006154410 ", False, 6154410),
        ("093,59562", False, 6154410),
        ("093-59562", False, 6154410),
        ("93/59562", False, 6154410),
        ("093, 59562", False, 6154410),
        ("0x5DE8AA", False, 6154410),
        ("0x5de8aa", True, 6154410),
        ("5DE8AA", True, 6154410),
        ("5D:E8:AA", True, 6154410),
        ("5d e8 aa", True, 6154410),
        ("5D-E8-AA", True, 6154410),
        ("0", False, 0),
        ("18446744073709551615", False, 2**64 - 1),
    ],
)
def test_printed_forms(text: str, hex_digits: bool, value: int) -> None:
    assert cards.parse_printed(text, hex_digits=hex_digits) == value


@pytest.mark.parametrize(
    ("text", "hex_digits"),
    [
        ("", False),
        ("   ", False),
        ("-5", False),
        ("+5", False),
        ("5DE8AA", False),  # hex digits, but the caller did not say hex
        ("12.5", False),
        ("١٢٣", False),  # Arabic-Indic digits pass str.isdigit
        ("0x", False),
        ("0xZZ", False),
        ("GG", True),
        ("18446744073709551616", False),
        ("0x1" + "0" * 16, False),
        ("300,70000", False),
    ],
)
def test_what_is_not_a_card_number(text: str, hex_digits: bool) -> None:
    with pytest.raises(CardError):
        cards.parse_printed(text, hex_digits=hex_digits)


def test_canonical_form_is_decimal_without_leading_zeros() -> None:
    assert cards.canonical(6154410) == "6154410"
    assert cards.canonical(0) == "0"
    assert cards.canonical(2**64 - 1) == "18446744073709551615"
    for bad in (-1, 2**64, True, "6154410", 1.0):
        with pytest.raises(CardError):
            cards.canonical(bad)  # type: ignore[arg-type]


def test_same_card_in_every_form_is_one_string() -> None:
    forms = {
        cards.canonical(cards.from_wiegand26(FRAME_93_59562)),
        cards.canonical(cards.from_wg_record(6154410)),
        cards.canonical(cards.parse_printed("0006154410")),
        cards.canonical(cards.parse_printed("093,59562")),
        cards.canonical(cards.parse_printed("0x5DE8AA")),
        cards.canonical(cards.from_uid(bytes.fromhex("5DE8AA"))),
        cards.canonical(cards.from_wiegand34(cards.wiegand34_frame(6154410))),
    }
    assert forms == {"6154410"}
