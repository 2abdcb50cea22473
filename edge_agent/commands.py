"""Commands from the platform: ``ROOT/cmd/{command}`` -> ``ROOT/cmd_result/{request_id}``.

Every request gets exactly one answer. Anything malformed (not JSON, not an
object, a missing or bad field, an unknown command, device or point, a payload
over 64 KiB) gets ``ok: false`` with an error that says what was wrong, and
changes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import DeviceError

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REQUEST_ID_PEEK = re.compile(rb'"request_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')
#: where answers go when the request had no usable request_id
INVALID_REQUEST_TOPIC = "invalid"


class CommandError(Exception):
    """A request we refuse; the message is sent back as ``error``."""


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
Reply = Callable[[str | None, dict[str, Any], str | None, bytes | None], None]


def _field(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in args:
        raise CommandError(f"missing field {name!r}")
    value = args[name]
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CommandError(f"field {name!r} must be {names}")
    return value


class CommandRouter:
    """Parses requests, calls the handler for the command, sends one answer."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._handlers: dict[str, Handler] = {}
        self.handled = 0
        self.refused = 0

    def register(self, command: str, handler: Handler) -> None:
        self._handlers[command] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    async def handle(
        self, command: str, payload: bytes, response_topic: str | None, correlation: bytes | None
    ) -> None:
        request_id: str | None = None
        try:
            if len(payload) > MAX_PAYLOAD:
                # Not parsed whole (that is what the limit protects), but the answer
                # should still reach the requester when the id stands near the start.
                m = _REQUEST_ID_PEEK.search(payload[:1024])
                request_id = m.group(1).decode() if m else None
                raise CommandError(f"payload of {len(payload)} bytes is over the 64 KiB limit")
            try:
                args = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise CommandError(f"payload is not valid JSON: {err}") from err
            if not isinstance(args, dict):
                raise CommandError("payload must be a JSON object")
            rid = args.get("request_id")
            if not isinstance(rid, str) or not REQUEST_ID.match(rid):
                raise CommandError(
                    "request_id must be a string of 1-128 characters [A-Za-z0-9._:-]"
                )
            request_id = rid
            handler = self._handlers.get(command)
            if handler is None:
                raise CommandError(
                    f"unknown command {command!r}; known: {', '.join(self.commands)}"
                )
            result = await handler(args)
        except (CommandError, DeviceError, ValueError, OSError, TimeoutError) as err:
            # Refused (a bad request) or failed (the device said no): either way one
            # answer with ok:false, and nothing changed.
            self.refused += 1
            log.info("command %s refused: %s", command, err)
            self._reply(
                request_id,
                {"request_id": request_id, "ok": False, "error": str(err)},
                response_topic,
                correlation,
            )
            return
        self.handled += 1
        answer: dict[str, Any] = {"request_id": request_id, "ok": True}
        if result is not None:
            answer["result"] = result
        self._reply(request_id, answer, response_topic, correlation)


def ping_handler(info: Callable[[], dict[str, Any]]) -> Handler:
    """``agent.ping {}``: proves the command path works end to end."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "ts": time.time(), **info()}

    return handle


def write_handler(lookup: Callable[[str], Any]) -> Handler:
    """``device.write {device, point, value}``: only profile-writable points.

    The driver range-checks the value before anything goes on the bus."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        device = _field(args, "device", str)
        point = _field(args, "point", str)
        value = _field(args, "value", (int, float, bool))
        driver = lookup(device)
        if driver is None:
            raise CommandError(f"unknown device {device!r}")
        write = getattr(driver, "write", None)
        if write is None:
            raise CommandError(f"device {device!r} has no writable points")
        await write(point, value)
        return {"device": device, "point": point, "value": value}

    return handle


def alarm_ack_handler(ack: Callable[[str, str], dict[str, Any]]) -> Handler:
    """``alarm.ack {alarm_id, by}``."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        return ack(_field(args, "alarm_id", str), _field(args, "by", str))

    return handle


def alarm_shelve_handler(shelve: Callable[[str, str, float], dict[str, Any]]) -> Handler:
    """``alarm.shelve {alarm_id, by, minutes}``."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        alarm_id = _field(args, "alarm_id", str)
        by = _field(args, "by", str)
        return shelve(alarm_id, by, float(_field(args, "minutes", (int, float))))

    return handle


def snapshot_handler(lookup: Callable[[str], Any]) -> Handler:
    """``camera.snapshot {device}``: only devices that can take snapshots."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        device = _field(args, "device", str)
        driver = lookup(device)
        if driver is None:
            raise CommandError(f"unknown device {device!r}")
        snap = getattr(driver, "snapshot", None)
        if snap is None:
            raise CommandError(f"device {device!r} is not a camera")
        result: dict[str, Any] = await snap()
        return result

    return handle
