"""Helpers for tests that put the outbox on a full disk."""

from __future__ import annotations

import aiosqlite


async def fill_disk(db: aiosqlite.Connection) -> None:
    """No page more: SQLite's own limit gives exactly the error a full file system gives
    (SQLITE_FULL). ``PRAGMA max_page_count=1073741823`` gives the space back."""
    pages = (await (await db.execute("PRAGMA page_count")).fetchone())[0]
    await db.execute(f"PRAGMA max_page_count={pages}")
