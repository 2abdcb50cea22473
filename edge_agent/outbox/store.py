"""The store-and-forward outbox: a SQLite database in WAL mode.

Every message that leaves the gateway is first committed here; the publisher
only sends what is committed, and a row is deleted only after the broker's
PUBACK. Writes are grouped (one transaction per ``commit_interval_ms`` or
``commit_max_batch`` messages) because an SD card wears out one small write at
a time; every commit is ``synchronous=FULL`` (one fsync of the WAL), so a row
that was committed survives a power cut, at the cost of at most two fsyncs a
second with the default group commit. Alarms are committed at once.

``seq`` is one gateway-wide counter kept in the ``meta`` table and assigned in
the same transaction that inserts the rows, so it is strictly increasing across
restarts. It is also reserved ahead on disk, as database sequences are: before a
seq at or above the reservation is handed out, a new reservation ``SEQ_BLOCK``
higher is written to ``outbox.db.seq`` and fsynced. A start after an unclean
stop continues from the reservation, not from what the database says, so a seq
is never handed out twice even if the storage lost the tail of the WAL; the
range skipped is reported (``skipped``, an event, ``ROOT/health``). A clean stop
writes the exact next seq back, so it skips nothing. ``epoch`` names the
database: it is created with the database and changes only when the outbox is
created anew.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from edge_agent.envelope import LANE_NAMES, Lane, envelope, iso_ms, new_ulid
from edge_agent.errors import NotDurableError, OutboxError

log = logging.getLogger(__name__)

#: seqs reserved on disk at a time: one fsync of a 64-byte file per block
SEQ_BLOCK = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY,
    lane INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_lane_seq ON outbox(lane, seq);
CREATE TABLE IF NOT EXISTS device_state(
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY(device, key)
);
CREATE TABLE IF NOT EXISTS notify_queue(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_audit(
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    alarm_id TEXT,
    action TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_audit_ts ON alarm_audit(ts);
"""

#: alarm audit entries read into memory at open (the alarm book's ``audit()``)
AUDIT_RECENT = 1000
#: audit entries held in memory while the disk is full, at most
AUDIT_MEMORY_MAX = 10_000

#: ``device_state`` key of a push device's cursor (its last committed record index)
CURSOR = "cursor"


@dataclass(slots=True)
class Row:
    """One committed message."""

    seq: int
    lane: Lane
    topic: str
    payload: bytes
    created: float


@dataclass(slots=True)
class _Pending:
    lane: Lane
    topic: str
    device: str
    kind: str
    ts: float
    data: dict[str, Any]
    quality: str | None
    type_: str | None


@dataclass(slots=True)
class _Batch:
    """A durable commit: messages and state values that go into one transaction."""

    pending: list[_Pending]
    state: dict[tuple[str, str], str]
    done: asyncio.Future[None]


def _is_disk_full(err: sqlite3.Error) -> bool:
    """SQLITE_FULL (and I/O errors from ENOSPC underneath)."""
    code = getattr(err, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(err).lower()


class _QuickCheckFailed(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` answered something other than ``ok``."""


def _is_corrupt(err: sqlite3.Error) -> bool:
    """Only a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB, a failed quick_check) is
    moved aside; a full disk, a permission or an I/O error says nothing about it."""
    if isinstance(err, _QuickCheckFailed):
        return True
    code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF  # primary of an extended code
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


# One encoder for every message: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


class Outbox:
    """The SQLite outbox. Use :meth:`open`, then run :meth:`run` in the supervisor's TaskGroup."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 512 * 1024 * 1024,
        commit_interval_s: float = 0.5,
        commit_max_batch: int = 2000,
        memory_max: int = 50_000,
        audit_max_rows: int = 10_000,
        audit_max_days: float = 90.0,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.commit_interval_s = commit_interval_s
        self.commit_max_batch = commit_max_batch
        self.epoch = ""
        self._db: aiosqlite.Connection | None = None
        self._next_seq = 1
        self._pending: list[_Pending] = []
        self._acked: list[int] = []
        #: a commit is due at once (an alarm, a full batch, a state or audit entry)
        self._wake = asyncio.Event()
        #: something was queued: ends an idle :meth:`wait_for_work`, which then waits
        #: the interval (set with every ``_wake`` too)
        self._queued = asyncio.Event()
        self._urgent = False
        #: a caller waits in :meth:`commit`: the group commit comes after this at most
        #: (a door controller's batch, not the whole interval: swipes and door events
        #: reach the platform within a second; records arriving meanwhile still share it)
        self.commit_soon_s = min(0.1, commit_interval_s)
        self._soon: asyncio.TimerHandle | None = None
        self._listeners: list[Callable[[list[Row]], None]] = []
        self._deleted_listeners: list[Callable[[list[int]], None]] = []
        #: evictions by lane, plus ``lost_in_memory`` (died while the disk was full)
        self.dropped: dict[str, int] = dict.fromkeys([*LANE_NAMES.values(), "lost_in_memory"], 0)
        self.committed_total = 0
        self._page_size = 4096
        self._size_check_due = 0.0
        self._flush_lock = asyncio.Lock()
        self.memory_max = memory_max
        self._mem: list[Row] = []
        self.disk_error: str | None = None
        self.recovered_from: tuple[str, str] | None = None
        #: every seq below this may have been handed out (it is on disk, fsynced)
        self._reserved = 0
        self._guard_failed = False
        #: meta values a full disk kept from being saved; written with the next commit
        self._meta_dirty: dict[str, str] = {}
        #: seqs skipped at this start (first, last), after an unclean stop
        self.skipped: tuple[int, int] | None = None
        #: all seqs ever skipped in this epoch, and the last range
        self.skipped_total = 0
        self.skipped_last: dict[str, Any] | None = None
        #: messages held in memory during a full disk, lost by the stop before this start
        self.lost_at_start = 0
        #: the connection had to avoid the -shm file (no room for it at start)
        self.exclusive = False
        #: messages the bounded memory queue evicted during a full disk (this run)
        self.evicted_in_memory = 0
        self._failed_commits = 0
        #: ``device_state`` as it is on disk: (device, key) -> value
        self.state: dict[tuple[str, str], str] = {}
        #: state values queued by :meth:`put_state` (kept over a full disk)
        self._state_dirty: dict[tuple[str, str], str] = {}
        self._batches: list[_Batch] = []
        #: keep a copy of every alarm message for the notification robots
        #: (edge_agent/notify): they read it with their own cursors, so the publisher's
        #: PUBACK (which deletes the outbox row) does not take it from them
        self.notify_queue = False
        self._notify_prune = 0
        self._notify_pruned = 0
        #: the alarm audit log (``alarm_audit``): entries queued by :meth:`put_audit`,
        #: written in the same transaction as the alarm messages they explain; the
        #: table keeps the newest ``audit_max_rows`` entries of the last ``audit_max_days``
        self.audit_max_rows = audit_max_rows
        self.audit_max_days = audit_max_days
        self._audit_dirty: list[tuple[float, str | None, str, str]] = []
        #: the newest entries at open, newest first (the alarm book loads them)
        self.audit_recent: list[dict[str, Any]] = []

    # -- lifecycle -------------------------------------------------------
    async def open(self) -> None:
        """Open or create the database; a new database gets a new epoch.

        Only a damaged database (SQLITE_CORRUPT, SQLITE_NOTADB, a failed ``PRAGMA
        quick_check``) is moved aside (never deleted: it may still hold data worth
        recovering by hand) and a new one, with a new epoch, takes its place.
        ``recovered_from`` then names the moved file and the reason, and the agent
        raises an alarm. Any other error (a full disk above all) keeps the file: it
        is opened in exclusive locking mode, which needs no ``-shm`` file, and
        commits that fail for lack of space go to memory as usual. What still
        fails raises :class:`OutboxError`, with the file untouched.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            try:
                await self._open_db(check=True)
            except sqlite3.DatabaseError as err:
                await self._close_quietly()
                if _is_corrupt(err):
                    raise
                # Not damage: most often a disk so full that SQLite cannot create its
                # -shm file. Exclusive locking keeps the WAL index in memory instead;
                # the rows already stored are read and sent, new ones wait in memory.
                log.warning(
                    "outbox %s cannot be opened normally (%s): opening it in exclusive "
                    "mode; the file is kept as it is / 缓存数据库无法正常打开，改用独占模式",
                    self.path,
                    err,
                )
                try:
                    await self._open_db(check=True, exclusive=True)
                except sqlite3.DatabaseError as err2:
                    await self._close_quietly()
                    if _is_corrupt(err2):
                        raise
                    raise OutboxError(
                        f"cannot open outbox {self.path} (kept as it is): {err2}"
                    ) from err2
        except sqlite3.DatabaseError as err:
            await self._close_quietly()
            moved = self._move_aside()
            self.recovered_from = (str(moved), str(err))
            log.error(
                "outbox %s is unusable (%s): moved to %s, starting a new epoch",
                self.path,
                err,
                moved,
            )
            try:
                await self._open_db(check=False)
            except sqlite3.Error as err2:
                await self._close_quietly()
                raise OutboxError(f"cannot create a new outbox {self.path}: {err2}") from err2
        except OSError as err:
            await self._close_quietly()
            raise OutboxError(f"cannot open outbox {self.path}: {err}") from err

    async def _open_db(self, *, check: bool, exclusive: bool = False) -> None:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db = db
        self.exclusive = exclusive
        await db.execute("PRAGMA busy_timeout=5000")
        if exclusive:
            # Set before the first read: SQLite then never creates the -shm file.
            await db.execute("PRAGMA locking_mode=EXCLUSIVE")
        if check:
            # quick_check reads every page (O(N)) but skips the index cross-checks of
            # integrity_check, which take minutes on a large outbox on an SD card.
            result = await db.execute_fetchall("PRAGMA quick_check")
            verdict = [r[0] for r in result]
            if verdict != ["ok"]:
                raise _QuickCheckFailed("quick_check: " + "; ".join(map(str, verdict[:3])))
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit fsyncs the WAL, so a committed row survives a power cut.
        # The group commit keeps that to one fsync per commit_interval_ms.
        await db.execute("PRAGMA synchronous=FULL")
        await db.executescript(SCHEMA)
        meta = dict(await db.execute_fetchall("SELECT key, value FROM meta"))  # type: ignore[arg-type]
        if "epoch" not in meta:
            meta["epoch"] = secrets.token_hex(8)
            meta["next_seq"] = "1"
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [("epoch", meta["epoch"]), ("next_seq", "1"), ("created", str(time.time()))],
            )
            await db.execute("COMMIT")
            log.info("outbox %s created, epoch %s", self.path, meta["epoch"])
        self.epoch = meta["epoch"]
        self.state = {
            (r[0], r[1]): r[2]
            for r in await db.execute_fetchall("SELECT device, key, value FROM device_state")
        }
        self.audit_recent = []
        for r in await db.execute_fetchall(
            "SELECT entry FROM alarm_audit ORDER BY id DESC LIMIT ?", (AUDIT_RECENT,)
        ):
            try:
                self.audit_recent.append(json.loads(r[0]))
            except ValueError:
                continue
        row = await (await db.execute("SELECT MAX(seq) FROM outbox")).fetchone()
        max_seq = row[0] if row and row[0] is not None else 0
        self._next_seq = max(int(meta.get("next_seq", "1")), max_seq + 1)
        for name in self.dropped:
            self.dropped[name] = int(meta.get(f"dropped_{name}", "0"))
        self.skipped_total = int(meta.get("skipped_total", "0"))
        self.skipped_last = json.loads(meta["skipped_last"]) if "skipped_last" in meta else None
        guard_exists = self._guard_path.exists()
        reserved, held = self._read_seq_guard(meta["epoch"])
        changed: dict[str, str] = {}
        if held > self._next_seq:
            # The agent died while the disk was full: messages it had numbered in
            # memory are gone. Never reuse their seq; count them as lost.
            lost = held - self._next_seq
            self.lost_at_start = lost
            self.dropped["lost_in_memory"] += lost
            log.error(
                "%d messages held in memory while the disk was full were lost "
                "/ 磁盘满时暂存内存的 %d 条消息已丢失",
                lost,
                lost,
            )
            self._next_seq = held
            changed["dropped_lost_in_memory"] = str(self.dropped["lost_in_memory"])
        if reserved > self._next_seq:
            # An unclean stop (crash, kill, power cut): seqs up to the reservation may
            # have been handed out, even if the database lost them with its WAL tail.
            first, last = self._next_seq, reserved - 1
            self.skipped = (first, last)
            self.skipped_total += last - first + 1
            self.skipped_last = {"from": first, "to": last, "ts": iso_ms(time.time())}
            log.warning(
                "unclean stop: seq %d to %d skipped, never reused / 非正常停止：跳过 seq %d–%d",
                first,
                last,
                first,
                last,
            )
            self._next_seq = reserved
            changed["skipped_total"] = str(self.skipped_total)
            changed["skipped_last"] = json.dumps(self.skipped_last)
        saved = True
        if changed:
            changed["next_seq"] = str(self._next_seq)
            saved = await self._save_meta(changed)
        self._page_size = (await (await db.execute("PRAGMA page_size")).fetchone() or (4096,))[0]
        self._reserved = self._next_seq
        if saved or not guard_exists:
            # Nothing is reserved ahead yet (the first commit reserves a block); this
            # also allocates the file's blocks while there is space.
            self._write_seq_guard(held=0)
        # A cap lowered in the config applies before anything is sent.
        await self.enforce_cap()

    async def _save_meta(self, values: dict[str, str]) -> bool:
        """Save ``values`` now; on a full disk keep them for the next commit (False)."""
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(values.items())
            )
            await db.execute("COMMIT")
        except sqlite3.Error as err:
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if not _is_disk_full(err):
                raise
            self._meta_dirty.update(values)
            return False
        return True

    async def _close_quietly(self) -> None:
        if self._db is not None:
            try:
                await self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        # The WAL and shared-memory files belong to that database: they move with it.
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
        if self.path.exists():
            self.path.rename(target)
        return target

    # -- the seq guard: the only write that needs no free space ------------
    @property
    def _guard_path(self) -> Path:
        return self.path.with_name(self.path.name + ".seq")

    def _read_seq_guard(self, epoch: str) -> tuple[int, int]:
        """``(reserved, held)``: no seq at or above ``reserved`` was handed out; with
        commits failing for lack of space, ``held`` was the next seq (else 0)."""
        try:
            text = self._guard_path.read_text().split()
        except (OSError, UnicodeDecodeError):
            return 0, 0
        if not text or text[0] != epoch or not all(t.isdigit() for t in text[1:]):
            return 0, 0
        if len(text) == 2:  # written before seqs were reserved: the held seq only
            return 0, int(text[1])
        if len(text) == 3:
            return int(text[1]), int(text[2])
        return 0, 0

    def _reserve(self, upto: int) -> None:
        """Before a seq below ``upto`` is handed out: reserve it (and a block more) on disk."""
        if upto > self._reserved:
            held = self._next_seq if self.mode == "memory" else 0
            self._write_seq_guard(reserved=upto + SEQ_BLOCK, held=held)

    def _write_seq_guard(self, *, held: int, reserved: int | None = None) -> None:
        """Write the reservation and the held seq: ``epoch reserved held``, fsynced.

        The file is created (and its blocks allocated) at a time when there is
        space; overwriting it in place needs none, so a restart after a crash in
        memory mode or after a power cut never hands out a seq that was already
        published.
        """
        reserved = self._reserved if reserved is None else reserved
        line = f"{self.epoch} {reserved:020d} {held:020d}\n".encode()
        try:
            fd = os.open(self._guard_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, line.ljust(64), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            if not self._guard_failed:
                log.error(
                    "cannot write the seq reservation %s: %s / 无法写入 seq 预留文件",
                    self._guard_path,
                    err,
                )
            self._guard_failed = True
            return
        self._guard_failed = False
        self._reserved = reserved

    async def close(self) -> None:
        """Commit what is pending and close."""
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._db is None:
            return
        try:
            await self.flush()
        finally:
            # Every seq handed out is committed now (FULL): the reservation comes back
            # down to the exact next seq, so a clean restart skips nothing.
            self._write_seq_guard(
                reserved=self._next_seq, held=self._next_seq if self.mode == "memory" else 0
            )
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise OutboxError("outbox is not open")
        return self._db

    @property
    def next_seq(self) -> int:
        """The seq the next committed message will get."""
        return self._next_seq

    def subscribe(self, listener: Callable[[list[Row]], None]) -> None:
        """Call ``listener(rows)`` after every commit (in the event loop), with the new rows."""
        self._listeners.append(listener)

    def subscribe_deleted(self, listener: Callable[[list[int]], None]) -> None:
        """Call ``listener(seqs)`` after acknowledged rows were deleted."""
        self._deleted_listeners.append(listener)

    # -- producing ---------------------------------------------------------
    def put(
        self,
        lane: Lane,
        topic: str,
        *,
        device: str,
        kind: str,
        ts: float,
        data: dict[str, Any],
        quality: str | None = None,
        type_: str | None = None,
    ) -> None:
        """Queue one message for the next group commit. Never blocks, never does I/O."""
        self._pending.append(_Pending(lane, topic, device, kind, ts, data, quality, type_))
        self._queued.set()
        if lane is Lane.ALARM:
            self._urgent = True
            self._wake_now()
        elif len(self._pending) >= self.commit_max_batch:
            self._wake_now()

    @staticmethod
    def message(
        lane: Lane,
        topic: str,
        *,
        device: str,
        kind: str,
        ts: float,
        data: dict[str, Any],
        quality: str | None = None,
        type_: str | None = None,
    ) -> _Pending:
        """One message for :meth:`commit` (same arguments as :meth:`put`)."""
        return _Pending(lane, topic, device, kind, ts, data, quality, type_)

    def put_state(self, device: str, key: str, value: str) -> None:
        """Save ``device_state`` in the next commit, in the same transaction as the
        messages put before it (the alarm book saves itself with its alarm messages).
        A full disk keeps it in memory until a commit works again."""
        self._state_dirty[(device, key)] = value
        self._wake_now()

    def put_audit(self, entry: dict[str, Any]) -> None:
        """Save an alarm audit entry in the next commit, in the same transaction as the
        alarm messages put before it. A full disk keeps the newest
        :data:`AUDIT_MEMORY_MAX` in memory until a commit works again."""
        ts = time.time()
        alarm_id = entry.get("alarm_id")
        self._audit_dirty.append(
            (
                ts,
                alarm_id if isinstance(alarm_id, str) else None,
                str(entry.get("action")),
                _ENCODER.encode(entry),
            )
        )
        if len(self._audit_dirty) > AUDIT_MEMORY_MAX:
            del self._audit_dirty[: len(self._audit_dirty) - AUDIT_MEMORY_MAX]
        self._wake_now()

    async def commit(
        self, messages: list[_Pending], state: dict[tuple[str, str], str] | None = None
    ) -> None:
        """Commit ``messages`` and ``state`` in ONE transaction; return once it is on disk.

        Raises :class:`NotDurableError` when the disk is full: then neither the messages
        (they get no seq, so no hole) nor the state were kept, and the caller keeps its
        records. It rides on the group commit (one fsync for everything due)."""
        if self._db is None:
            raise OutboxError("outbox is not open")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A caller cancelled meanwhile (the agent stopping) never reads a refusal:
        # retrieve it here so asyncio does not log it as unhandled.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._batches.append(_Batch(list(messages), dict(state or {}), done))
        if len(self._pending) + sum(len(b.pending) for b in self._batches) >= (
            self.commit_max_batch
        ):
            self._wake_now()
        elif self._soon is None:
            self._soon = asyncio.get_running_loop().call_later(self.commit_soon_s, self._wake_soon)
        await asyncio.shield(done)

    def _wake_soon(self) -> None:
        self._soon = None
        self._wake_now()

    def _wake_now(self) -> None:
        self._wake.set()
        self._queued.set()

    def cursor(self, device: str) -> str | None:
        """The last committed cursor of ``device`` (None before its first commit)."""
        return self.state.get((device, CURSOR))

    def request_commit(self) -> None:
        """Commit at the next opportunity instead of at the end of the interval."""
        self._wake_now()

    def ack(self, seqs: Iterable[int]) -> None:
        """Mark rows delivered (PUBACK received); they are deleted with the next commit."""
        self._acked.extend(seqs)
        self._queued.set()  # deleted within the interval, also when nothing else comes

    async def wait_for_work(self, next_timer_s: float | None = None) -> None:
        """Sleep until the next group commit is due: ``commit_interval_s`` after something
        was queued (a message, an ack, rows held in memory, a commit that failed), at once
        for an alarm, a full batch, a state or audit entry, or a durable commit's short
        wait; or after ``next_timer_s`` seconds (the caller's timers), whichever comes first.

        With nothing queued it sleeps until something is, until :meth:`nudge`, or until
        ``next_timer_s`` (None: no limit): an idle gateway does not wake every interval
        (issue 8 item 9)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        end = None if next_timer_s is None else now + next_timer_s
        idle_woken = False
        while not self._wake.is_set():
            if self.has_work():
                due = now + self.commit_interval_s
                end = due if end is None else min(end, due)
                waiter = self._wake
            elif idle_woken:
                break  # a nudge: the caller's timers may have changed
            else:
                self._queued.clear()
                waiter = self._queued  # set by every producer, the urgent ones too
            if end is not None and end <= now:
                break
            try:
                async with asyncio.timeout_at(end):
                    await waiter.wait()
            except TimeoutError:
                break
            idle_woken = waiter is self._queued
            now = loop.time()
        self._wake.clear()

    def nudge(self) -> None:
        """End an idle :meth:`wait_for_work` with nothing queued: something that commits
        nothing (a device's state) may have started a timer of the caller's."""
        self._queued.set()

    def has_work(self) -> bool:
        """Something waits for the next commit (what :meth:`flush` writes)."""
        return bool(
            self._pending
            or self._acked
            or self._mem
            or self._batches
            or self._state_dirty
            or self._audit_dirty
            or self._notify_prune > self._notify_pruned
        )

    async def flush(self) -> list[Row]:
        """Commit pending messages and delete acknowledged rows, in one transaction.

        When the disk is full the outbox degrades to a bounded in-memory queue:
        messages still get their seq and go to the publisher, rows wait in memory
        (oldest telemetry evicted past ``memory_max``, and counted) and are written
        as soon as a commit succeeds again.

        Flushes run one at a time: the agent's stop flushes while the group-commit
        task may be in the middle of one, and two transactions on one connection
        would fail (and the failing one's ROLLBACK would undo the other's).
        """
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> list[Row]:
        if self._db is None or not self.has_work():
            return []
        pending, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        batches, self._batches = self._batches, []
        audit, self._audit_dirty = self._audit_dirty, []
        if batches and self._soon is not None:
            self._soon.cancel()  # the commit it was due for is this one
            self._soon = None
        self._urgent = False  # an alarm only made this commit come sooner
        every = pending + [p for b in batches for p in b.pending]
        if every:
            self._reserve(self._next_seq + len(every))
        rows = self._build_rows(every)
        state = dict(self._state_dirty)
        for b in batches:
            state.update(b.state)
        seq = rows[-1].seq + 1 if rows else self._next_seq
        acked_set = set(acked)
        held = [r for r in self._mem if r.seq not in acked_set]
        dirty = dict(self._meta_dirty)
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            if rows or held:
                await db.executemany(
                    "INSERT OR IGNORE INTO outbox(seq, lane, topic, payload, created) "
                    "VALUES (?,?,?,?,?)",
                    [(r.seq, int(r.lane), r.topic, r.payload, r.created) for r in held + rows],
                )
                dirty["next_seq"] = str(seq)
                if self.notify_queue:
                    await db.executemany(
                        "INSERT OR IGNORE INTO notify_queue(seq, payload) VALUES (?,?)",
                        [(r.seq, r.payload) for r in held + rows if r.lane is Lane.ALARM],
                    )
            prune = self._notify_prune if self._notify_prune > self._notify_pruned else 0
            if prune:
                await db.execute("DELETE FROM notify_queue WHERE seq<=?", (prune,))
            if dirty:
                await db.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(dirty.items())
                )
            if acked:
                await db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in acked])
            if state:
                now = time.time()
                await db.executemany(
                    "INSERT OR REPLACE INTO device_state(device, key, value, updated) "
                    "VALUES (?,?,?,?)",
                    [(d, k, v, now) for (d, k), v in state.items()],
                )
            if audit:
                await self._write_audit(db, audit)
            await db.execute("COMMIT")
        except sqlite3.Error as err:
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if not _is_disk_full(err):
                # Keep everything in memory and try again with the next commit.
                self._pending = pending + self._pending
                self._acked = acked + self._acked
                self._batches = batches + self._batches
                self._audit_dirty = audit + self._audit_dirty
                raise OutboxError(f"outbox commit failed: {err}") from err
            if batches:
                # Durable commits are refused, not held: their seqs are handed back (the
                # rows were never seen by anyone), so memory holds no event whose cursor
                # is not on disk, and the device, which keeps its records, resends them.
                rows = self._build_rows(pending)
                seq = rows[-1].seq + 1 if rows else self._next_seq
                for b in batches:
                    if not b.done.done():
                        b.done.set_exception(
                            NotDurableError(f"outbox is held in memory (disk full): {err}")
                        )
            self._hold_in_memory(rows, acked_set, str(err))
            self._acked = acked + self._acked
            self._audit_dirty = (audit + self._audit_dirty)[-AUDIT_MEMORY_MAX:]
            self._next_seq = seq
            self._write_seq_guard(held=seq)
            # The publisher may count these as done: held rows that were acked are
            # dropped from memory; acked rows on disk are deleted once writes work
            # again (until then a crash could send them twice).
            self._notify(rows, acked)
            return rows
        if self.disk_error is not None or self._mem:
            # Also when the memory queue is empty (everything in it was delivered):
            # otherwise the outbox would stay in memory mode, and its alarm raised.
            log.info(
                "outbox writes work again: %d messages held in memory are on disk now "
                "(%d commits failed) / 缓存恢复写入",
                len(held),
                self._failed_commits,
            )
            self._mem = []
            self.disk_error = None
            self._failed_commits = 0
        for key in dirty:
            if self._meta_dirty.get(key) == dirty[key]:
                del self._meta_dirty[key]
        if prune:
            self._notify_pruned = prune
        self.state.update(state)
        for skey, value in state.items():
            if self._state_dirty.get(skey) == value:
                del self._state_dirty[skey]
        for b in batches:
            if not b.done.done():
                b.done.set_result(None)
        self._next_seq = seq
        self.committed_total += len(rows)
        self._notify(rows, acked)
        now = time.monotonic()  # not the wall clock: a step backwards would stop the checks
        if now >= self._size_check_due:
            self._size_check_due = now + 10
            await self.enforce_cap()
        return rows

    async def _write_audit(
        self, db: aiosqlite.Connection, audit: list[tuple[float, str | None, str, str]]
    ) -> None:
        """Insert audit entries and apply the retention (inside the caller's transaction).

        Rows are only ever deleted from the oldest end, so ids stay contiguous and
        ``id <= newest - max_rows`` keeps exactly the newest ``max_rows``."""
        cur = await db.executemany(
            "INSERT INTO alarm_audit(ts, alarm_id, action, entry) VALUES (?,?,?,?)", audit
        )
        await cur.close()
        row = await (await db.execute("SELECT MAX(id) FROM alarm_audit")).fetchone()
        newest = int(row[0]) if row and row[0] is not None else 0
        await db.execute("DELETE FROM alarm_audit WHERE id<=?", (newest - self.audit_max_rows,))
        await db.execute(
            "DELETE FROM alarm_audit WHERE ts<?", (time.time() - self.audit_max_days * 86400,)
        )

    def _build_rows(self, pending: list[_Pending]) -> list[Row]:
        rows: list[Row] = []
        seq = self._next_seq
        now = time.time()
        for p in pending:
            msg = envelope(
                msg_id=new_ulid(p.ts),
                epoch=self.epoch,
                seq=seq,
                ts=p.ts,
                device=p.device,
                kind=p.kind,
                data=p.data,
                quality=p.quality,
                type_=p.type_,
            )
            try:
                payload = _dumps(msg)
            except (TypeError, ValueError) as err:
                # A driver bug (NaN, an object) must not poison the batch: keep the
                # message, with the offending data replaced by an explanation.
                log.error(
                    "unencodable message from %s replaced by an error marker: %s", p.device, err
                )
                msg["data"] = {"error": f"unencodable: {err}"}
                msg["quality"] = "bad"
                payload = _dumps(msg)
            rows.append(Row(seq, p.lane, p.topic, payload, now))
            seq += 1
        return rows

    def _hold_in_memory(self, rows: list[Row], acked: set[int], reason: str) -> None:
        self._failed_commits += 1
        if self.disk_error is None:  # once per episode, not whenever the queue ran empty
            log.error(
                "outbox %s cannot be written (%s): holding up to %d messages in memory",
                self.path,
                reason,
                self.memory_max,
            )
        self.disk_error = reason
        self._mem = [r for r in self._mem if r.seq not in acked] + rows
        over = len(self._mem) - self.memory_max
        if over > 0:
            # Same retention order as on disk: oldest telemetry first, alarms last.
            for lane in (Lane.TELEMETRY, Lane.EVENT, Lane.ALARM):
                victims = {r.seq for r in self._mem if r.lane is lane}
                victims = set(sorted(victims)[:over])
                if victims:
                    self._mem = [r for r in self._mem if r.seq not in victims]
                    name = LANE_NAMES[lane]
                    self.dropped[name] += len(victims)
                    self.evicted_in_memory += len(victims)
                    # Saved with the first commit that works: a restart must still
                    # explain these holes in seq.
                    self._meta_dirty[f"dropped_{name}"] = str(self.dropped[name])
                    over -= len(victims)
                if over <= 0:
                    break

    def _notify(self, rows: list[Row], deleted: list[int]) -> None:
        if rows:
            for listener in self._listeners:
                listener(rows)
        if deleted:
            for deleted_listener in self._deleted_listeners:
                deleted_listener(deleted)

    @property
    def mode(self) -> str:
        """``disk`` normally; ``memory`` while commits fail for lack of space."""
        return "memory" if self._mem or self.disk_error else "disk"

    # -- the notification queue (edge_agent/notify) --------------------------
    def prune_notify(self, upto: int) -> None:
        """Every robot has delivered the alarms up to ``upto``: deleted with the next commit."""
        self._notify_prune = max(self._notify_prune, upto)
        self._queued.set()

    async def fetch_notify(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Alarm messages kept for the robots with ``seq > after_seq``, oldest first;
        while the disk is full, also those held in memory."""
        cur = await self.db.execute(
            "SELECT seq, payload FROM notify_queue WHERE seq>? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        rows = [(int(r[0]), bytes(r[1])) for r in await cur.fetchall()]
        if self._mem:
            known = {seq for seq, _ in rows}
            rows += [
                (r.seq, r.payload)
                for r in self._mem
                if r.lane is Lane.ALARM and r.seq > after_seq and r.seq not in known
            ]
            rows.sort()
            rows = rows[:limit]
        return rows

    # -- reading -----------------------------------------------------------
    async def fetch(self, lane: Lane, after_seq: int, before_seq: int, limit: int) -> list[Row]:
        """Rows of one lane with ``after_seq < seq < before_seq``, oldest first."""
        cur = await self.db.execute(
            "SELECT seq, lane, topic, payload, created FROM outbox "
            "WHERE lane=? AND seq>? AND seq<? ORDER BY seq LIMIT ?",
            (int(lane), after_seq, before_seq, limit),
        )
        rows = [Row(r[0], Lane(r[1]), r[2], bytes(r[3]), r[4]) for r in await cur.fetchall()]
        if self._mem:
            rows += [r for r in self._mem if r.lane is lane and after_seq < r.seq < before_seq]
            rows.sort(key=lambda r: r.seq)
            rows = rows[:limit]
        return rows

    async def stats(self) -> dict[str, Any]:
        """Depth, bytes and oldest age, for ``ROOT/health``."""
        row = await (await self.db.execute("SELECT COUNT(*), MIN(created) FROM outbox")).fetchone()
        count, oldest = (row[0], row[1]) if row else (0, None)
        return {
            "depth": count + len(self._pending) + len(self._mem),
            "mode": self.mode,
            "disk_error": self.disk_error,
            "bytes": await self.size_bytes(),
            "oldest_age_s": round(time.time() - oldest, 1) if oldest else 0.0,
            "epoch": self.epoch,
            "next_seq": self._next_seq,
            "dropped": dict(self.dropped),
            "skipped": {"total": self.skipped_total, "last": self.skipped_last},
        }

    async def size_bytes(self) -> int:
        """Bytes the stored messages use: database pages minus free pages.

        The WAL is not counted: it is folded back every ~4 MB (SQLite's automatic
        checkpoint), so it adds at most that much on top of the cap, and counting
        it would evict messages for a transient."""
        pages = (await (await self.db.execute("PRAGMA page_count")).fetchone() or (0,))[0]
        free = (await (await self.db.execute("PRAGMA freelist_count")).fetchone() or (0,))[0]
        return int((pages - free) * self._page_size)

    # -- retention -----------------------------------------------------------
    async def enforce_cap(self) -> int:
        """Evict oldest rows while over ``max_bytes``: telemetry first, alarms last.

        Every eviction is counted in ``dropped`` (persisted in ``meta``) so the
        platform can tell a retention gap in ``seq`` from a loss.
        """
        evicted = 0
        db = self.db
        for lane in (Lane.TELEMETRY, Lane.EVENT, Lane.ALARM):
            while (size := await self.size_bytes()) > self.max_bytes:
                row = await (
                    await db.execute(
                        "SELECT (SELECT COUNT(*) FROM outbox WHERE lane=?), COUNT(*) FROM outbox",
                        (int(lane),),
                    )
                ).fetchone()
                in_lane, total = (row[0], row[1]) if row else (0, 0)
                if in_lane == 0:
                    break
                # Delete enough to get 10 % under the cap in one go: one large
                # delete wears the card less than many small ones, and the
                # hysteresis keeps us from evicting on every commit.
                per_row = size / max(total, 1)
                n = min(in_lane, max(1, int((size - self.max_bytes * 0.9) / per_row) + 1))
                name = LANE_NAMES[lane]
                try:
                    await db.execute("BEGIN IMMEDIATE")
                    cur = await db.execute(
                        "DELETE FROM outbox WHERE seq IN "
                        "(SELECT seq FROM outbox WHERE lane=? ORDER BY seq LIMIT ?)",
                        (int(lane), n),
                    )
                    deleted = cur.rowcount
                    await db.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                        (f"dropped_{name}", str(self.dropped[name] + deleted)),
                    )
                    await db.execute("COMMIT")
                except sqlite3.Error as err:
                    try:
                        await db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    if not _is_disk_full(err):
                        raise OutboxError(f"outbox eviction failed: {err}") from err
                    return evicted  # even a delete needs WAL space: next time
                self.dropped[name] += deleted
                # Freed pages are reused by later inserts.
                evicted += deleted
                log.warning(
                    "outbox over its cap of %d bytes: evicted %d oldest %s messages",
                    self.max_bytes,
                    deleted,
                    name,
                )
        return evicted
