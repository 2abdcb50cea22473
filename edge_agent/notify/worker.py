"""One task per robot: a second consumer of the outbox's alarm messages.

Durability. The outbox keeps a copy of every alarm message in its ``notify_queue``
table, written in the same transaction as the message itself (so an alarm that is on
the uplink's way is also on the robots' way, and the other way round). Each robot has
its own cursor in ``device_state`` (device ``""``, key ``notify:<robot id>``):
``{"upto": seq, "done": [seqs above upto already delivered]}`` (``done`` because
critical alarms overtake older minor ones). While the robot's URL is unreachable the
notifications wait in that table; when it answers again they go out, folded into a
summary if there are more than the robot's tokens.

The cursor is saved (and fsynced) after every accepted message and before the next
is sent: a crash after the service accepted a message and before its cursor is on
disk repeats that one message (or that one summary) after the restart, never more,
and never loses one. Rows every robot has delivered are deleted with a later commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol

from edge_agent.envelope import Lane
from edge_agent.errors import NotDurableError
from edge_agent.notify.config import SEVERITY_RANK, NotifyConfig, RobotConfig
from edge_agent.notify.errors import SendFailed, TooFast
from edge_agent.notify.limits import Limits, plan
from edge_agent.notify.message import format_one, format_summary

log = logging.getLogger(__name__)

#: notifications read from the outbox at a time (a flood beyond it is folded in rounds)
FETCH_LIMIT = 500


class NotifyStore(Protocol):
    """What a robot needs from the outbox (edge_agent/outbox/store.py)."""

    state: dict[tuple[str, str], str]
    notify_queue: bool

    async def fetch_notify(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]: ...

    async def commit(
        self, messages: list[Any], state: dict[tuple[str, str], str] | None = None
    ) -> None: ...

    def request_commit(self) -> None: ...

    def put_state(self, device: str, key: str, value: str) -> None: ...

    def prune_notify(self, upto: int) -> None: ...

    def subscribe(self, listener: Callable[[list[Any]], None]) -> None: ...


@dataclass
class Item:
    seq: int
    alarm: dict[str, Any]
    ts: str | None

    def key(self) -> tuple[int, int]:
        return (SEVERITY_RANK.get(str(self.alarm.get("severity")), 9), self.seq)


def cursor_key(robot_id: str) -> tuple[str, str]:
    return ("", f"notify:{robot_id}")


class RobotWorker:
    """Delivers the alarm messages of one robot, in its limits, exactly once per cursor."""

    def __init__(
        self,
        robot: RobotConfig,
        store: NotifyStore,
        *,
        language: str,
        tz: tzinfo,
        site: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_min_s: float = 5.0,
        retry_max_s: float = 300.0,
        summary_s: float = 600.0,
        on_ack: Callable[[], None] | None = None,
    ) -> None:
        self.robot = robot
        self.store = store
        self.language = language
        self.tz = tz
        self.site = site
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.summary_s = summary_s
        self.on_ack = on_ack
        self.limits = Limits.for_kind(robot.kind, robot.per_minute, clock)
        self._new = asyncio.Event()
        self.upto, self.done = self._load()
        self.min_rank = SEVERITY_RANK[robot.min_severity]
        #: messages the service accepted (a summary counts once), and alarms folded
        self.sent = 0
        self.folded = 0
        self.failures = 0
        #: "too fast" answers in a row
        self.too_fast = 0
        self._failing_since: float | None = None
        self._summary_due = 0.0

    # -- the cursor ---------------------------------------------------------------
    def _load(self) -> tuple[int, set[int]]:
        text = self.store.state.get(cursor_key(self.robot.id))
        if text is None:
            return 0, set()
        try:
            saved = json.loads(text)
            return int(saved["upto"]), {int(s) for s in saved.get("done", [])}
        except (ValueError, KeyError, TypeError) as err:
            log.error(
                "robot %s: its saved cursor is unreadable, starting over: %s", self.robot.id, err
            )
            return 0, set()

    async def _ack(self, seqs: list[int], queued: list[int]) -> None:
        """Mark ``seqs`` delivered; save the cursor and return once it is on disk."""
        self.done.update(seqs)
        for seq in queued:  # in seq order: advance over the delivered prefix
            if seq not in self.done:
                break
            self.upto = seq
        self.done = {s for s in self.done if s > self.upto}
        value = json.dumps({"upto": self.upto, "done": sorted(self.done)})
        self.store.request_commit()
        try:
            await self.store.commit([], {cursor_key(self.robot.id): value})
        except NotDurableError:
            # A full disk: the cursor waits in memory and is written with the first
            # commit that works. Going on from it (not from the one on disk) keeps the
            # robot from sending the same alarms again and again while the disk is
            # full; only a crash in that time repeats them.
            self.store.put_state(*cursor_key(self.robot.id), value)
        if self.on_ack is not None:
            self.on_ack()

    # -- reading -------------------------------------------------------------------
    def wake(self) -> None:
        self._new.set()

    async def _pending(self) -> tuple[list[Item], list[int], list[int]]:
        """(to send, seqs this robot skips, every seq read) after the cursor."""
        rows = await self.store.fetch_notify(self.upto, FETCH_LIMIT)
        items: list[Item] = []
        skip: list[int] = []
        for seq, payload in rows:
            if seq in self.done:
                continue
            try:
                msg = json.loads(payload)
                alarm = msg["data"]
                wanted = (
                    SEVERITY_RANK.get(alarm.get("severity"), 9) <= self.min_rank
                    and alarm.get("state") in self.robot.states
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                wanted = False
            if wanted:
                items.append(Item(seq, alarm, msg.get("ts")))
            else:
                skip.append(seq)
        return items, skip, [seq for seq, _ in rows]

    # -- sending -------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled. A failure of the outbox (a full disk refuses the
        cursor) or a bug here never ends the agent: logged, then the robot starts over
        from its saved cursor (repeating at most the message whose cursor was lost)."""
        crashes = 0
        while True:
            try:
                await self._deliver()
            except Exception as err:
                crashes += 1
                if crashes == 1:
                    log.exception(
                        "robot %s stopped, restarting from its cursor: %s", self.robot.id, err
                    )
                else:
                    log.debug("robot %s stopped again (%d times): %s", self.robot.id, crashes, err)
                await self.sleep(min(self.retry_max_s, self.retry_min_s * 2 ** min(crashes, 8)))
                self.upto, self.done = self._load()

    async def _deliver(self) -> None:
        # aiohttp's client only when a robot runs: an agent without robots (and without
        # the HTTP server) never imports aiohttp (tests/unit/test_http.py).
        import aiohttp

        from edge_agent.notify.senders import Sender

        async with aiohttp.ClientSession() as session:
            sender = Sender(self.robot, session, self.wall)
            backoff = self.retry_min_s
            while True:
                self._new.clear()
                items, skip, queued = await self._pending()
                if skip and not items:
                    await self._ack(skip, queued)
                    continue
                if not items:
                    await self._new.wait()
                    continue
                available = self.limits.available()
                if available < 1:
                    await self.sleep(self.limits.wait_s())
                    continue
                step = plan(items, available, Item.key)
                batch = [step.single] if step.single is not None else step.folded
                if step.single is not None:
                    text = format_one(
                        step.single.alarm,
                        step.single.ts,
                        self.language,
                        self.tz,
                        keyword=self.robot.keyword,
                        site=self.site,
                    )
                else:
                    text = format_summary(
                        [(i.alarm, i.ts) for i in batch],
                        self.language,
                        self.tz,
                        keyword=self.robot.keyword,
                        site=self.site,
                    )
                try:
                    await sender.send(text, batch[0].alarm if len(batch) == 1 else None)
                except TooFast as err:
                    # DingTalk keeps a robot throttled for 10 minutes: one line, not
                    # one a minute (logs live on an SD card).
                    self.too_fast += 1
                    log.log(
                        logging.WARNING if self.too_fast == 1 else logging.DEBUG,
                        "robot %s: the service says too fast (%s), waiting %.0f s; alarms "
                        "meanwhile are folded into one message / 机器人发送过快，稍后合并发送",
                        self.robot.id,
                        err,
                        err.retry_after_s,
                    )
                    self.limits.drain()
                    await self.sleep(err.retry_after_s)
                    continue
                except SendFailed as err:
                    self._failed(err, len(items))
                    await self.sleep(backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                backoff = self.retry_min_s
                if self.too_fast > 1:
                    log.info(
                        "robot %s: %d too-fast answers before this message went out",
                        self.robot.id,
                        self.too_fast,
                    )
                self.too_fast = 0
                self.limits.take()
                self.sent += 1
                if step.single is None:
                    self.folded += len(batch)
                self._recovered()
                await self._ack([i.seq for i in batch] + skip, queued)

    def _failed(self, err: SendFailed, waiting: int) -> None:
        self.failures += 1
        now = self.clock()
        if self._failing_since is None:
            self._failing_since = now
            self._summary_due = now + self.summary_s
            log.warning(
                "robot %s (%s) cannot deliver: %s; %d alarms wait and are retried "
                "/ 告警推送失败，稍后重试",
                self.robot.id,
                self.robot.kind,
                err,
                waiting,
            )
        elif now >= self._summary_due:
            self._summary_due = now + self.summary_s
            log.warning(
                "robot %s still cannot deliver (%d attempts failed, last: %s); %d alarms "
                "wait / 告警推送仍然失败",
                self.robot.id,
                self.failures,
                err,
                waiting,
            )
        else:
            log.debug("robot %s: %s", self.robot.id, err)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "robot %s delivers again after %d failed attempts / 告警推送已恢复",
                self.robot.id,
                self.failures,
            )
            self._failing_since = None
            self.failures = 0


class Notifier:
    """Every robot of the config, as tasks the supervisor runs."""

    def __init__(
        self,
        cfg: NotifyConfig,
        store: NotifyStore,
        *,
        language: str,
        tz: tzinfo,
        site: str | None = None,
        **worker_args: Any,
    ) -> None:
        self.store = store
        self.workers = [
            RobotWorker(
                robot,
                store,
                language=language,
                tz=tz,
                site=site,
                on_ack=self._prune,
                **worker_args,
            )
            for robot in cfg.robots
            if robot.enabled
        ]
        if self.workers:
            store.notify_queue = True
            store.subscribe(self._committed)

    def _committed(self, rows: list[Any]) -> None:
        if any(getattr(r, "lane", None) is Lane.ALARM for r in rows):
            for w in self.workers:
                w.wake()

    def _prune(self) -> None:
        self.store.prune_notify(min(w.upto for w in self.workers))
