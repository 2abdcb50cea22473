"""Commands from the platform: ``ROOT/cmd/{command}`` -> ``ROOT/cmd_result/{request_id}``.

Every request gets exactly one answer. Anything malformed (not JSON, JSON no
parser can take, not an object, a missing or bad field, an unknown command,
device or point, a payload over 64 KiB) gets ``ok: false`` with an error that
says what was wrong, and changes nothing.

No one can abuse the path:

* an MQTT 5 response topic is honoured only under ``ROOT/cmd_result/``, so a
  request cannot make the agent publish onto its own telemetry or into another
  gateway's ``cmd`` topic; a request id outside ``[A-Za-z0-9_-]{1,64}`` is
  answered on ``ROOT/cmd_result/invalid``;
* commands for one device wait in a bounded queue (``commands.queue_max``) with
  a deadline (the MQTT 5 message expiry, else ``commands.deadline_s``); a full
  queue answers ``busy`` and a request past its deadline is not executed, so
  writes to a dead relay cannot starve the sensor next to it on the line;
* a request id is executed at most once: a repeat gets the first answer again
  (or ``duplicate request_id`` while the first still runs);
* with ``commands.key`` set, commands that act on the world must be signed
  (:mod:`edge_agent.signing`);
* every write is logged and published as a ``command_audit`` event on the device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from edge_agent.driver import DoorOpener, Writable
from edge_agent.envelope import iso_ms
from edge_agent.errors import DeviceError
from edge_agent.signing import SIGNED_COMMANDS, WINDOW_S, SignatureError, verify
from edge_agent.topics import Topics

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: a device id as the contract allows it (a topic level)
DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_REQUEST_ID_PEEK = re.compile(rb'"request_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')
#: levels of a response topic below ROOT/cmd_result/
_RESPONSE_LEVELS = re.compile(r"[A-Za-z0-9_-]{1,64}(?:/[A-Za-z0-9_-]{1,64}){0,3}")
#: commands that are audited (logged and published as an event on their device)
AUDITED_COMMANDS = frozenset({"device_write", "door_open", "camera_snapshot"})
#: a signed request id is remembered this long (seconds, monotonic), longer than any
#: sig_ts can stay inside the window: a replay always meets its first answer
_SIGNED_KEEP_S = 2 * WINDOW_S + 10


class CommandError(Exception):
    """A request we refuse; the message is sent back as ``error``."""


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
#: ``reply(topic, answer, correlation_data)``
Reply = Callable[[str, dict[str, Any], bytes | None], None]
#: ``audit(device, data)``: publish a ``command_audit`` event on ``device``
Audit = Callable[[str, dict[str, Any]], None]
#: the last value of every point by device (read by polls, or written by a command)
LastValues = dict[str, dict[str, Any]]


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_request(payload: bytes) -> dict[str, Any]:
    """The request object, or :class:`CommandError` for anything a parser can raise.

    ``json.loads`` raises more than ``JSONDecodeError``: RecursionError for deep
    nesting, ValueError past the int-digits limit (``1`` followed by 5000 digits),
    and it accepts ``NaN``; all of these are refusals, never an unanswered request.
    """
    try:
        args = json.loads(payload, parse_constant=_reject_constant)
    except RecursionError:
        raise CommandError("payload is not valid JSON: nested too deeply") from None
    except Exception as err:  # UnicodeDecodeError, JSONDecodeError, ValueError, MemoryError ...
        raise CommandError(f"payload is not valid JSON: {str(err)[:200]}") from None
    if not isinstance(args, dict):
        raise CommandError("payload must be a JSON object")
    return args


class Throttle:
    """One log line (or event) per key, then one summary per ``interval_s``.

    Logs live on an SD card: 10 000 forged writes must not become 10 000 lines."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> int | None:
        """None: stay quiet. Else speak now; the number is how many were kept quiet since."""
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return 0 if last is None else last[1]


@dataclass
class _Recent:
    answer: dict[str, Any] | None  # None while the request runs
    keep_until: float  # monotonic; 0 = may be forgotten whenever room is needed


@dataclass
class _DeviceQueue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: int = 0  # running + waiting


@dataclass
class RouterStats:
    handled: int = 0
    refused: int = 0
    busy: int = 0
    expired: int = 0
    duplicate: int = 0
    unauthorised: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class CommandRouter:
    """Parses requests, checks them, calls the handler for the command, sends one answer."""

    def __init__(
        self,
        reply: Reply,
        *,
        root: str,
        key: str | None = None,
        queue_max: int = 8,
        deadline_s: float = 30.0,
        recent_max: int = 4096,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        audit: Audit | None = None,
        last_values: LastValues | None = None,
    ) -> None:
        self._reply = reply
        self.root = root
        self.topics = Topics(root)
        self._key = key
        self.queue_max = queue_max
        self.deadline_s = deadline_s
        self.recent_max = recent_max
        self._wall = wall
        self._mono = mono
        self._audit = audit
        self._last = last_values if last_values is not None else {}
        self._handlers: dict[str, Handler] = {}
        self._recent: OrderedDict[str, _Recent] = OrderedDict()
        self._queues: dict[str, _DeviceQueue] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._throttle = Throttle(clock=mono)
        self._closed = False
        self.stats = RouterStats()

    @property
    def handled(self) -> int:
        return self.stats.handled

    @property
    def refused(self) -> int:
        return self.stats.refused

    def register(self, command: str, handler: Handler) -> None:
        self._handlers[command] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def signing(self) -> bool:
        return self._key is not None

    async def close(self) -> None:
        """Cancel requests still waiting or running (the agent is stopping); each is
        answered ``agent stopping`` on its way out."""
        self._closed = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- where answers go --------------------------------------------------------
    def answer_topic(self, request_id: str | None, response_topic: str | None) -> str:
        """The MQTT 5 response topic when it lies under ``ROOT/cmd_result/``, else the default."""
        prefix = self.topics.cmd_result_prefix
        if response_topic is not None:
            rest = response_topic[len(prefix) :] if response_topic.startswith(prefix) else None
            if rest is not None and _RESPONSE_LEVELS.fullmatch(rest):
                return response_topic
            self._quiet_warning(
                "response_topic",
                "response topic %r refused: answers go only under %s (answered on the default "
                "topic) / 响应主题不在 %s 下，已改用默认主题",
                response_topic[:200],
                prefix,
                prefix,
            )
        return self.topics.cmd_result(request_id)

    def _quiet_warning(self, key: str, msg: str, *args: Any) -> None:
        self._quiet(logging.WARNING, key, msg, *args)

    def _quiet(self, level: int, key: str, msg: str, *args: Any) -> None:
        """Log once per key, then one summary a minute (a flood of bad requests must
        not fill the SD card); the rest at DEBUG."""
        quiet = self._throttle.hit(key)
        if quiet is None:
            log.debug(msg, *args)
        elif quiet:
            log.log(level, "%s (and %d more like it in the last minute)", msg % args, quiet)
        else:
            log.log(level, msg, *args)

    # -- the request -------------------------------------------------------------
    async def handle(
        self,
        command: str,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
        expiry_s: float | None = None,
    ) -> None:
        """Answer one request (called by the publisher for every ``ROOT/cmd/+`` message)."""
        arrived = self._mono()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        request_id: str | None = None
        recent: _Recent | None = None
        args: dict[str, Any] = {}
        signed = False
        try:
            try:
                args, request_id = self._parse(payload)
                if self._closed:
                    raise CommandError("agent stopping; not executed")
                handler = self._handlers.get(command)
                if handler is None:
                    raise CommandError(
                        f"unknown command {command[:64]!r}; known: {', '.join(self.commands)}"
                    )
                signed = self._authorise(command, args)
                seen = self._recent.get(request_id)
                if seen is not None:
                    self.stats.duplicate += 1
                    if seen.answer is not None:
                        self._quiet(
                            logging.INFO,
                            f"repeated:{command}",
                            "command %s %s: repeated, answered again, not executed",
                            command,
                            request_id,
                        )
                        self._send(request_id, seen.answer, response_topic, correlation)
                        return
                    raise CommandError("duplicate request_id: the first request is still running")
                recent = self._remember(request_id, signed)
                deadline = arrived + (self.deadline_s if expiry_s is None else expiry_s)
                async with self._slot(args, deadline):
                    result = await handler(args)
            except asyncio.CancelledError:
                self._finish(
                    command, request_id, args, recent, signed, False, "agent stopping",
                    response_topic, correlation,
                )  # fmt: skip
                raise
            except (CommandError, DeviceError, ValueError, OSError, TimeoutError) as err:
                # Refused (a bad request) or failed (the device said no): either way one
                # answer with ok:false, and nothing changed.
                if isinstance(err, _Refusal):
                    request_id = err.request_id
                if isinstance(err, _NotRun) and recent is not None and request_id is not None:
                    # Never executed: the same request may be sent again later.
                    self._recent.pop(request_id, None)
                    recent = None
                self._finish(
                    command, request_id, args, recent, signed, False, str(err),
                    response_topic, correlation,
                )  # fmt: skip
                if (
                    recent is not None
                    and request_id is not None
                    and not isinstance(err, DeviceError | OSError | TimeoutError)
                ):
                    # Refused before anything reached the device (a missing field, a
                    # read-only point, no such alarm): a corrected request may reuse the id.
                    self._recent.pop(request_id, None)
                return
            except Exception as err:  # a bug in a handler: still exactly one answer
                log.exception("command %s %s failed", command, request_id)
                self._finish(
                    command, request_id, args, recent, signed, False, f"internal error: {err!r}",
                    response_topic, correlation,
                )  # fmt: skip
                return
            self._finish(
                command, request_id, args, recent, signed, True, result,
                response_topic, correlation,
            )  # fmt: skip
        finally:
            if task is not None:
                self._tasks.discard(task)

    def _parse(self, payload: bytes) -> tuple[dict[str, Any], str]:
        if len(payload) > MAX_PAYLOAD:
            # Not parsed whole (that is what the limit protects), but the answer
            # should still reach the requester when the id stands near the start.
            m = _REQUEST_ID_PEEK.search(payload[:1024])
            raise _Refusal(
                m.group(1).decode() if m else None,
                f"payload of {len(payload)} bytes is over the 64 KiB limit",
            )
        try:
            args = parse_request(payload)
        except CommandError as err:
            # Answer where the requester listens when its id can still be found.
            m = _REQUEST_ID_PEEK.search(payload[:1024])
            raise _Refusal(m.group(1).decode() if m else None, str(err)) from None
        rid = args.get("request_id")
        if not isinstance(rid, str) or not REQUEST_ID.fullmatch(rid):
            raise CommandError("request_id must be a string of 1-64 characters [A-Za-z0-9_-]")
        return args, rid

    def _authorise(self, command: str, args: dict[str, Any]) -> bool:
        """True when the request carried a valid signature; raises when it needs one."""
        if self._key is None or command not in SIGNED_COMMANDS:
            return False
        try:
            verify(self._key, command, args, self._wall())
        except SignatureError as err:
            self.stats.unauthorised += 1
            device = args.get("device")
            self._quiet_warning(
                f"unauthorised:{command}",
                "command %s %s refused, not authorised: %s (device %r, by %r) / 命令未授权，已拒绝",
                command,
                args.get("request_id"),
                err,
                device,
                args.get("by"),
            )
            raise CommandError(f"not authorised: {err}") from None
        return True

    def _remember(self, request_id: str, signed: bool) -> _Recent:
        now = self._mono()
        if len(self._recent) >= self.recent_max:
            # Forget the oldest finished request that no longer guards against a replay.
            for rid, entry in self._recent.items():
                if entry.answer is not None and entry.keep_until <= now:
                    del self._recent[rid]
                    break
            else:
                self.stats.busy += 1
                raise _NotRun(
                    f"busy: {len(self._recent)} requests in the last {_SIGNED_KEEP_S:g} s; "
                    "try again later"
                )
        entry = _Recent(None, now + _SIGNED_KEEP_S if signed else 0.0)
        self._recent[request_id] = entry
        return entry

    @asynccontextmanager
    async def _slot(self, args: dict[str, Any], deadline: float) -> AsyncIterator[None]:
        """One request at a time per device, at most ``queue_max`` waiting, until ``deadline``."""
        device = args.get("device")
        if not isinstance(device, str):
            if self._mono() > deadline:
                self.stats.expired += 1
                raise _NotRun("expired before it could run; not executed")
            yield
            return
        q = self._queues.setdefault(device, _DeviceQueue())
        if q.pending >= self.queue_max:
            self.stats.busy += 1
            raise _NotRun(
                f"busy: {q.pending} commands for {device!r} are queued already "
                f"(commands.queue_max); not executed, try again later"
            )
        q.pending += 1
        try:
            remaining = deadline - self._mono()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await q.lock.acquire()
            except TimeoutError:
                self.stats.expired += 1
                raise _NotRun(
                    f"expired: waited for earlier commands to {device!r} past its deadline; "
                    "not executed"
                ) from None
            try:
                yield
            finally:
                q.lock.release()
        finally:
            q.pending -= 1
            if q.pending == 0:
                del self._queues[device]

    def _finish(
        self,
        command: str,
        request_id: str | None,
        args: dict[str, Any],
        recent: _Recent | None,
        signed: bool,
        ok: bool,
        outcome: Any,
        response_topic: str | None,
        correlation: bytes | None,
    ) -> None:
        answer: dict[str, Any] = {"request_id": request_id, "ok": ok}
        if ok:
            self.stats.handled += 1
            if outcome is not None:
                answer["result"] = outcome
        else:
            self.stats.refused += 1
            answer["error"] = str(outcome)
            # The key must not hold what a sender chooses freely (command names, ids,
            # values), or every forged request would be a new key and a new log line.
            kind = re.split(r"[:'\"{0-9]", str(outcome), maxsplit=1)[0][:40]
            known = command if command in self._handlers else "?"
            self._quiet(
                logging.INFO,
                f"refused:{known}:{kind}",
                "command %s %s refused: %s",
                command,
                request_id,
                outcome,
            )
        if recent is not None:
            recent.answer = answer
            self._audit_write(command, args, signed, answer)
        self._send(request_id, answer, response_topic, correlation)

    def _send(
        self,
        request_id: str | None,
        answer: dict[str, Any],
        response_topic: str | None,
        correlation: bytes | None,
    ) -> None:
        self._reply(self.answer_topic(request_id, response_topic), answer, correlation)

    def _audit_write(
        self, command: str, args: dict[str, Any], signed: bool, answer: dict[str, Any]
    ) -> None:
        """Log and publish who wrote what; only for requests that were let through
        (a forged one never gets this far, and is logged, throttled, by _authorise)."""
        if command not in AUDITED_COMMANDS:
            return
        device, point = args.get("device"), args.get("point", args.get("door"))
        by = args.get("by")
        who = by[:64] if isinstance(by, str) and by else "unknown"
        old = None
        if isinstance(device, str) and isinstance(point, str):
            values = self._last.get(device, {})
            old = values.get(point)
            if answer["ok"] and command == "device_write":
                # a setting that is never polled (report: false) still shows its old value
                values[point] = args.get("value")
                self._last[device] = values
        data: dict[str, Any] = {
            "command": command,
            "request_id": answer["request_id"],
            "by": who,
            "signed": signed,
            "point": point,
            "old": old,
            "new": args.get("value"),
            "result": "ok" if answer["ok"] else "refused",
            "error": answer.get("error"),
            "ts": iso_ms(self._wall()),
        }
        if command == "camera_snapshot":
            # which picture left the school, on whose request
            result = answer.get("result") or {}
            data["snapshot"] = {k: result[k] for k in ("topic", "sha256") if k in result} or None
        log.info(
            "audit: %s %s by %s%s: %s.%s %r -> %r: %s / 写操作审计",
            command,
            data["request_id"],
            who,
            " (signed)" if signed else "",
            device,
            point,
            old,
            data["new"],
            data["error"] or "ok",
        )
        # Only on a well-formed device id: the event's topic is ROOT/events/{device}, and a
        # requested "x/#" would be a topic no broker takes (paho refuses to publish it).
        if self._audit is not None and isinstance(device, str) and DEVICE_ID.fullmatch(device):
            self._audit(device, data)


class _NotRun(CommandError):
    """Refused before it ran (busy, expired): the request id is not used up."""


class _Refusal(CommandError):
    """A refusal that knows the request id although the payload was not parsed."""

    def __init__(self, request_id: str | None, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def ping_handler(info: Callable[[], dict[str, Any]]) -> Handler:
    """``agent_ping {}``: proves the command path works end to end."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "ts": iso_ms(time.time()), **info()}

    return handle


def write_handler(lookup: Callable[[str], Any]) -> Handler:
    """``device_write {device, point, value}``: only profile-writable points.

    The driver range-checks the value before anything goes on the bus."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        device = _field(args, "device", str)
        point = _field(args, "point", str)
        value = _field(args, "value", (int, float, bool))
        if not math.isfinite(value) or abs(value) > 2**53:
            # 1e400 parses as inf, a 400-digit int parses fine: neither fits a register.
            raise CommandError(f"value {str(value)[:20]} is out of any register's range")
        driver = lookup(device)
        if driver is None:
            raise CommandError(f"unknown device {device!r}")
        if not isinstance(driver, Writable):
            raise CommandError(f"device {device!r} has no writable points")
        await driver.write(point, value)
        return {"device": device, "point": point, "value": value}

    return handle


def door_handler(lookup: Callable[[str], Any]) -> Handler:
    """``door_open {device, door, by}``: only devices whose driver can open a door."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        device = _field(args, "device", str)
        door = _field(args, "door", (str, int))
        _field(args, "by", str)
        driver = lookup(device)
        if driver is None:
            raise CommandError(f"unknown device {device!r}")
        if not isinstance(driver, DoorOpener):
            raise CommandError(f"device {device!r} has no door to open")
        await driver.open_door(door)
        return {"device": device, "door": door}

    return handle


def mqtt_origin(args: dict[str, Any]) -> str:
    """Where an alarm command came from, for the alarm audit: ``mqtt``, its request id,
    and the sender and message id when the platform puts them in the request."""
    parts = ["mqtt", f"request_id={args.get('request_id')}"]
    for key in ("sender", "msg_id"):
        value = args.get(key)
        if isinstance(value, str) and value:
            parts.append(f"{key}={value[:64]!r}")
    return " ".join(parts)


def alarm_ack_handler(ack: Callable[..., dict[str, Any]]) -> Handler:
    """``alarm_ack {alarm_id, by}``: ``ack(alarm_id, by, origin=...)``."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        alarm_id = _field(args, "alarm_id", str)
        return ack(alarm_id, _field(args, "by", str), origin=mqtt_origin(args))

    return handle


def alarm_shelve_handler(shelve: Callable[..., dict[str, Any]]) -> Handler:
    """``alarm_shelve {alarm_id, by, minutes}``: ``shelve(alarm_id, by, minutes, origin=...)``."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        alarm_id = _field(args, "alarm_id", str)
        by = _field(args, "by", str)
        minutes = float(_field(args, "minutes", (int, float)))
        return shelve(alarm_id, by, minutes, origin=mqtt_origin(args))

    return handle


def snapshot_handler(take: Callable[[str], Awaitable[dict[str, Any]]]) -> Handler:
    """``camera_snapshot {device}``: ``take`` (:meth:`SnapshotService.command
    <edge_agent.snapshots.service.SnapshotService.command>`) fetches, stores and queues the
    picture, and raises ValueError for an unknown device or one that is not a camera, a
    :class:`~edge_agent.errors.SnapshotError` when the fetch failed."""

    async def handle(args: dict[str, Any]) -> dict[str, Any]:
        return await take(_field(args, "device", str))

    return handle
