"""The card-number pseudonymiser: a card number never leaves the gateway in clear
unless the site asked for it.

Every event's ``card`` field (``card_read`` and any other event that carries one) is
replaced, before anything else sees it, by ``"h:" + 16 hex digits``: the first 16 hex
digits of HMAC-SHA256(key = ``site.pseudonym_secret`` as UTF-8, message = the normalised
card number as UTF-8). The same secret gives the same pseudonym on every gateway of a
site, so the platform can follow a card across buildings without knowing its number.

- ``site.raw_card_ids: true``: the normalised number goes out as it is (the site opts in).
- neither a secret nor the opt-in: ``card`` becomes ``null`` and one log line says why.

Drivers put the card number in ``card`` in its canonical form (``drivers/cards.py``: an
unsigned decimal integer as ASCII digits, no leading zeros), never a hash of their own;
:func:`normalise_card` irons out what may still differ (an ``int``, zero padding, spaces).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from edge_agent.pipeline.base import Message, Stage

log = logging.getLogger(__name__)

FIELD = "card"
PREFIX = "h:"
HEX_DIGITS = 16


def normalise_card(value: Any) -> str | None:
    """The card number the pseudonym is computed from, or None when there is none.

    An integer becomes its decimal digits; a string loses its whitespace (``"1234 5678"``)
    and, when it is all decimal digits, its leading zeros (a printed ``"0012345678"`` and a
    terminal's ``"12345678"`` are one card: the canonical form); other text (a terminal's
    PIN with letters) is upper-cased. Anything else is not a card number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = "".join(value.split())
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return text.lstrip("0") or "0"
    return text.upper()


def pseudonym(key: bytes, number: str) -> str:
    """``"h:"`` + the first 16 hex digits of HMAC-SHA256(key, number)."""
    digest = hmac.new(key, number.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_DIGITS]


class Pseudonymiser(Stage):
    """Replaces every event's ``card`` by its pseudonym (or drops it, see the module)."""

    name = "pseudonym"

    def __init__(self, key: bytes | None, *, raw: bool = False) -> None:
        super().__init__()
        self.key = key or None
        self.raw = raw
        self._told_dropped = False
        self._told_unusable = False
        #: card fields seen, by what became of them (``ROOT/health``: ``pipeline``)
        self.pseudonymised = self.raw_sent = self.nulled = 0
        if raw:
            log.warning(
                "site.raw_card_ids is true: card numbers are published unhashed "
                "/ site.raw_card_ids 为 true：卡号将以明文上传"
            )

    def process(self, msg: Message, *, durable: bool) -> Message | None:
        if msg.kind != "event" or FIELD not in msg.data:
            return msg
        value = msg.data[FIELD]
        if value is None:
            return msg
        number = normalise_card(value)
        if number is None:
            self._unusable(msg, value)
            msg.data[FIELD] = None
            self.nulled += 1
        elif self.raw:
            msg.data[FIELD] = number
            self.raw_sent += 1
        elif self.key is not None:
            msg.data[FIELD] = pseudonym(self.key, number)
            self.pseudonymised += 1
        else:
            self._dropped(msg)
            msg.data[FIELD] = None
            self.nulled += 1
        return msg

    def stats(self) -> dict[str, int]:
        return {
            "cards_pseudonymised": self.pseudonymised,
            "cards_raw": self.raw_sent,
            "cards_nulled": self.nulled,
        }

    def _dropped(self, msg: Message) -> None:
        if self._told_dropped:
            return
        self._told_dropped = True
        log.warning(
            "%s sent a card number, but site.pseudonym_secret is not set and "
            "site.raw_card_ids is false: card numbers are published as null. Set the "
            "secret (docs/install-raspberry-pi.md) to get pseudonyms 'h:...' "
            "/ 未设置 site.pseudonym_secret 且未开启 site.raw_card_ids：卡号一律以 null 上传，"
            "请配置卡号脱敏密钥",
            msg.device,
        )

    def _unusable(self, msg: Message, value: Any) -> None:
        if self._told_unusable:
            return
        self._told_unusable = True
        log.warning(
            "%s sent a card field that is not a card number (%s): published as null "
            "(driver bug?) / 卡号字段格式无效，以 null 上传",
            msg.device,
            type(value).__name__,
        )
