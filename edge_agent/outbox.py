"""The store-and-forward outbox: a SQLite database in WAL mode.

Every message that leaves the gateway is first committed here; the publisher
only sends what is committed, and a row is deleted only after the broker's
PUBACK. Writes are grouped (one transaction per ``commit_interval_ms`` or
``commit_max_batch`` messages) because an SD card wears out one small write at
a time. Alarms are committed at once, with ``synchronous=FULL``.

``seq`` is one gateway-wide counter kept in the ``meta`` table and assigned in
the same transaction that inserts the rows, so it is strictly increasing across
restarts and never reused. ``epoch`` names the database: it is created with
the database and changes only when the outbox is created anew.
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

from .envelope import LANE_NAMES, Lane, envelope, new_ulid
from .errors import OutboxError

log = logging.getLogger(__name__)

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
"""


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


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class Outbox:
    """The SQLite outbox. Use :meth:`open`, then run :meth:`run` in the supervisor's TaskGroup."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 512 * 1024 * 1024,
        commit_interval_s: float = 0.5,
        commit_max_batch: int = 2000,
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
        self._wake = asyncio.Event()
        self._urgent = False
        self._listeners: list[Callable[[list[Row]], None]] = []
        self._deleted_listeners: list[Callable[[list[int]], None]] = []
        self.dropped: dict[str, int] = {name: 0 for name in LANE_NAMES.values()}
        self.committed_total = 0
        self._page_size = 4096
        self._size_check_due = 0.0
        self._closed = False

    # -- lifecycle -------------------------------------------------------
    async def open(self) -> None:
        """Open or create the database; a new database gets a new epoch."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}") from err
        self._db = db
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; a power cut may lose the
            # last group commit of telemetry. Alarms switch to FULL per commit.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
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
            row = await (await db.execute("SELECT MAX(seq) FROM outbox")).fetchone()
            max_seq = row[0] if row and row[0] is not None else 0
            self._next_seq = max(int(meta.get("next_seq", "1")), max_seq + 1)
            for name in self.dropped:
                self.dropped[name] = int(meta.get(f"dropped_{name}", "0"))
            self._page_size = (await (await db.execute("PRAGMA page_size")).fetchone() or (4096,))[
                0
            ]
        except sqlite3.Error as err:
            await db.close()
            self._db = None
            raise OutboxError(f"cannot initialise outbox {self.path}: {err}") from err

    async def close(self) -> None:
        """Commit what is pending and close."""
        if self._db is None:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
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
        if lane is Lane.ALARM:
            self._urgent = True
            self._wake.set()
        elif len(self._pending) >= self.commit_max_batch:
            self._wake.set()

    def ack(self, seqs: Iterable[int]) -> None:
        """Mark rows delivered (PUBACK received); they are deleted with the next commit."""
        self._acked.extend(seqs)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Group-commit loop; runs until cancelled (then commits what is pending)."""
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.commit_interval_s)
                except TimeoutError:
                    pass
                self._wake.clear()
                await self.flush()
        except asyncio.CancelledError:
            await asyncio.shield(self.flush())
            raise

    async def flush(self) -> list[Row]:
        """Commit pending messages and delete acknowledged rows, in one transaction."""
        if self._db is None or (not self._pending and not self._acked):
            return []
        pending, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        urgent, self._urgent = self._urgent, False
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
                log.error("unencodable message from %s dropped to error marker: %s", p.device, err)
                msg["data"] = {"error": f"unencodable: {err}"}
                msg["quality"] = "bad"
                payload = _dumps(msg)
            rows.append(Row(seq, p.lane, p.topic, payload, now))
            seq += 1
        db = self.db
        try:
            if urgent:
                await db.execute("PRAGMA synchronous=FULL")
            await db.execute("BEGIN IMMEDIATE")
            if rows:
                await db.executemany(
                    "INSERT INTO outbox(seq, lane, topic, payload, created) VALUES (?,?,?,?,?)",
                    [(r.seq, int(r.lane), r.topic, r.payload, r.created) for r in rows],
                )
                await db.execute(
                    "UPDATE meta SET value=? WHERE key='next_seq'",
                    (str(seq),),
                )
            if acked:
                await db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in acked])
            await db.execute("COMMIT")
            if urgent:
                await db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as err:
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            # Keep everything in memory and try again with the next commit.
            self._pending = pending + self._pending
            self._acked = acked + self._acked
            raise OutboxError(f"outbox commit failed: {err}") from err
        self._next_seq = seq
        self.committed_total += len(rows)
        if rows:
            for listener in self._listeners:
                listener(rows)
        if acked:
            for deleted_listener in self._deleted_listeners:
                deleted_listener(acked)
        if now >= self._size_check_due:
            self._size_check_due = now + 10
            await self.enforce_cap()
        return rows

    # -- reading -----------------------------------------------------------
    async def fetch(self, lane: Lane, after_seq: int, before_seq: int, limit: int) -> list[Row]:
        """Rows of one lane with ``after_seq < seq < before_seq``, oldest first."""
        cur = await self.db.execute(
            "SELECT seq, lane, topic, payload, created FROM outbox "
            "WHERE lane=? AND seq>? AND seq<? ORDER BY seq LIMIT ?",
            (int(lane), after_seq, before_seq, limit),
        )
        return [Row(r[0], Lane(r[1]), r[2], bytes(r[3]), r[4]) for r in await cur.fetchall()]

    async def stats(self) -> dict[str, Any]:
        """Depth, bytes and oldest age, for ``ROOT/health``."""
        row = await (await self.db.execute("SELECT COUNT(*), MIN(created) FROM outbox")).fetchone()
        count, oldest = (row[0], row[1]) if row else (0, None)
        return {
            "depth": count + len(self._pending),
            "bytes": await self.size_bytes(),
            "oldest_age_s": round(time.time() - oldest, 1) if oldest else 0.0,
            "epoch": self.epoch,
            "next_seq": self._next_seq,
            "dropped": dict(self.dropped),
        }

    async def size_bytes(self) -> int:
        """Bytes the database really uses (pages minus free pages) plus its WAL."""
        pages = (await (await self.db.execute("PRAGMA page_count")).fetchone() or (0,))[0]
        free = (await (await self.db.execute("PRAGMA freelist_count")).fetchone() or (0,))[0]
        wal = self.path.with_name(self.path.name + "-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
        return int((pages - free) * self._page_size + wal_size)

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
                await db.execute("BEGIN IMMEDIATE")
                cur = await db.execute(
                    "DELETE FROM outbox WHERE seq IN "
                    "(SELECT seq FROM outbox WHERE lane=? ORDER BY seq LIMIT ?)",
                    (int(lane), n),
                )
                deleted = cur.rowcount
                name = LANE_NAMES[lane]
                self.dropped[name] += deleted
                await db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    (f"dropped_{name}", str(self.dropped[name])),
                )
                await db.execute("COMMIT")
                # Freed pages are reused by later inserts; the WAL is folded back
                # so its size stops counting against the cap.
                await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                evicted += deleted
                log.warning(
                    "outbox over its cap of %d bytes: evicted %d oldest %s messages",
                    self.max_bytes,
                    deleted,
                    name,
                )
        return evicted
