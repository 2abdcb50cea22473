"""Signed commands: HMAC-SHA256 over the command, request id, timestamp and body.

A site that sets ``commands.key`` requires every command that acts on the world
(:data:`SIGNED_COMMANDS`) to carry two extra fields:

``sig_ts``
    when the platform signed it, ISO 8601 UTC with milliseconds and ``Z``
    (``2026-11-29T21:00:00.000Z``); refused when more than
    :data:`WINDOW_S` seconds away from the gateway's clock;
``sig``
    64 lowercase hex digits: ``HMAC-SHA256(key, canonical)``, where
    ``canonical`` is :func:`canonical` of the request.

The canonical string (UTF-8) is five lines joined by ``\\n``::

    edge-agent-cmd-v1
    {command}            e.g. device_write
    {request_id}
    {sig_ts}             exactly as sent
    {body}               the request object without request_id, sig_ts and sig,
                         as JSON: keys sorted, no spaces, non-ASCII not escaped

A captured request cannot be replayed: its request id is remembered for longer
than the window (see :mod:`edge_agent.commands`), and once the window has passed
its timestamp is refused. ``docs/mqtt.md`` has a worked example to copy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "SIGNED_COMMANDS",
    "WINDOW_S",
    "SignatureError",
    "canonical",
    "sign",
    "verify",
]

#: commands that act on the world: they need a signature once a key is set
#: (camera_snapshot: a picture of people leaves the school, docs/cameras.md)
SIGNED_COMMANDS = frozenset(
    {"device_write", "door_open", "alarm_ack", "alarm_shelve", "camera_snapshot"}
)
#: how far ``sig_ts`` may be from the gateway's clock, either way
WINDOW_S = 60.0
PREFIX = "edge-agent-cmd-v1"
#: fields that are not part of the signed body
UNSIGNED_FIELDS = frozenset({"request_id", "sig", "sig_ts"})

_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_SIG = re.compile(r"^[0-9a-f]{64}$")


class SignatureError(ValueError):
    """The request is not signed, or not signed right, or not now."""


def canonical(command: str, request: dict[str, Any]) -> bytes:
    """The bytes that are signed for ``request`` (the parsed JSON object) sent to ``command``."""
    body = {k: v for k, v in request.items() if k not in UNSIGNED_FIELDS}
    text = "\n".join(
        (
            PREFIX,
            command,
            str(request.get("request_id", "")),
            str(request.get("sig_ts", "")),
            json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        )
    )
    return text.encode("utf-8")


def sign(key: str, command: str, request: dict[str, Any]) -> str:
    """The ``sig`` for ``request`` (which must already hold ``request_id`` and ``sig_ts``)."""
    return hmac.new(key.encode("utf-8"), canonical(command, request), hashlib.sha256).hexdigest()


def parse_ts(text: str) -> float:
    """``sig_ts`` as UNIX seconds; :class:`SignatureError` unless it is ISO 8601 ms ``Z``."""
    if not _TS.match(text):
        raise SignatureError(
            f"sig_ts {text[:40]!r} is not ISO 8601 UTC with milliseconds and Z "
            "(e.g. 2026-11-29T21:00:00.000Z)"
        )
    try:
        when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as err:
        raise SignatureError(f"sig_ts {text!r} is not a valid time") from err
    return when.timestamp()


def verify(key: str, command: str, request: dict[str, Any], now: float) -> float:
    """Check the signature and the time of ``request``; return ``sig_ts`` in UNIX seconds.

    Raises :class:`SignatureError` saying what is wrong (never the expected signature).
    """
    sig, sig_ts = request.get("sig"), request.get("sig_ts")
    if sig is None or sig_ts is None:
        raise SignatureError(
            f"{command} must be signed on this gateway: add sig_ts and sig (see docs/mqtt.md)"
        )
    if not isinstance(sig_ts, str):
        raise SignatureError("sig_ts must be a string")
    if not isinstance(sig, str) or not _SIG.match(sig):
        raise SignatureError("sig must be 64 lowercase hex digits (HMAC-SHA256)")
    when = parse_ts(sig_ts)
    if not hmac.compare_digest(sig, sign(key, command, request)):
        raise SignatureError("bad signature")
    if abs(now - when) > WINDOW_S:
        raise SignatureError(
            f"sig_ts {sig_ts} is {now - when:+.0f} s from the gateway clock "
            f"(allowed: ±{WINDOW_S:g} s); refused as a possible replay"
        )
    return when
