"""Reading the alarm audit log from the outbox database, for ``edge-agent alarms audit``.

The agent writes the log (:meth:`edge_agent.alarms.lifecycle.AlarmBook._record`, through
:meth:`edge_agent.outbox.store.Outbox.put_audit`: table ``alarm_audit``, in the same
transaction as the alarm messages). This module only reads it, with its own read-only
connection, so it works while the agent runs (WAL: readers never block the writer).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


class AuditUnreadable(Exception):
    """The outbox database cannot be opened or read."""


def read_audit(
    path: str | Path, limit: int = 50, *, alarm_id: str | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` entries (of one alarm), newest first."""
    db_path = Path(path)
    if not db_path.exists():
        raise AuditUnreadable(f"no outbox database at {db_path} / 找不到缓存数据库")
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise AuditUnreadable(f"cannot open {db_path}: {err}") from err
    try:
        has = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alarm_audit'"
        ).fetchone()
        if not has:
            return []  # written by a version before the audit log
        if alarm_id is None:
            rows = db.execute(
                "SELECT entry FROM alarm_audit ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = db.execute(
                "SELECT entry FROM alarm_audit WHERE alarm_id=? ORDER BY id DESC LIMIT ?",
                (alarm_id, limit),
            ).fetchall()
    except sqlite3.Error as err:
        raise AuditUnreadable(f"cannot read {db_path}: {err}") from err
    finally:
        db.close()
    out = []
    for (text,) in rows:
        try:
            out.append(json.loads(text))
        except ValueError:
            continue
    return out


def format_entry(e: dict[str, Any]) -> str:
    """One line: time, action, alarm (or rule@device), state, who, from where, note."""
    what = e.get("alarm_id") or f"{e.get('rule')}@{e.get('device')}"
    parts = [str(e.get("ts")), f"{e.get('action')!s:<15}", str(what)]
    if e.get("state"):
        parts.append(str(e["state"]))
    parts.append(f"by {e['by']}" if e.get("by") else "-")
    parts.append(f"({e['origin']})" if e.get("origin") else "")
    if not e.get("changed", True):
        parts.append("[no change]")
    if e.get("note"):
        parts.append(f"- {e['note']}")
    return "  ".join(p for p in parts if p)
