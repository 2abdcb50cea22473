"""The uplink envelope (contract v1): message ids, timestamps, lanes.

Kept free of I/O so the outbox, the publisher and the tests share one definition.
"""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

CONTRACT_VERSION = 1
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD)


class Lane(IntEnum):
    """Outbox lanes in drain priority order: alarms before events before telemetry."""

    ALARM = 0
    EVENT = 1
    TELEMETRY = 2


LANE_NAMES = {Lane.ALARM: "alarm", Lane.EVENT: "event", Lane.TELEMETRY: "telemetry"}


def new_ulid(ts: float | None = None) -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32 (26 chars).

    Sortable by creation time and unique without coordination, so a platform can
    de-duplicate by ``msg_id`` across gateways.
    """
    ms = int((time.time() if ts is None else ts) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    # 26 characters are 130 bits: right-aligned in 160 bits, base32 gives 32 characters
    # whose last 26 are the ULID, in RFC 4648's alphabet, translated to Crockford's.
    return base64.b32encode(value.to_bytes(20, "big"))[6:].decode().translate(_TO_CROCKFORD)


_second_cache: tuple[int, str] = (-1, "")


def iso_ms(ts: float) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``, as the contract requires."""
    global _second_cache
    ms_total = int(ts * 1000)
    sec, ms = divmod(ms_total, 1000)
    cached_sec, text = _second_cache
    if sec != cached_sec:  # readings come in bursts within one second: format it once
        text = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_cache = (sec, text)
    return f"{text}{ms:03d}Z"


def envelope(
    *,
    msg_id: str,
    epoch: str,
    seq: int,
    ts: float,
    device: str,
    kind: str,
    data: dict[str, Any],
    quality: str | None = None,
    type_: str | None = None,
) -> dict[str, Any]:
    """Build the envelope dict. ``historical`` comes before ``data`` on purpose:
    the publisher flips the first ``"historical":false`` in the encoded bytes
    when it sends a message from the backlog, without decoding it again."""
    env: dict[str, Any] = {
        "v": CONTRACT_VERSION,
        "msg_id": msg_id,
        "epoch": epoch,
        "seq": seq,
        "ts": iso_ms(ts),
        "device": device,
        "kind": kind,
        "historical": False,
    }
    if type_ is not None:
        env["type"] = type_
    env["data"] = data
    if quality is not None:
        env["quality"] = quality
    return env


HISTORICAL_FALSE = b'"historical":false'
HISTORICAL_TRUE = b'"historical":true'


def mark_historical(payload: bytes) -> bytes:
    """Return the encoded envelope with ``historical`` set to true."""
    return payload.replace(HISTORICAL_FALSE, HISTORICAL_TRUE, 1)
