"""Snapshots on disk: one file per picture, written once, kept within a cap.

Layout (the topic's last two levels)::

    {dir}/{camera}/{snapshot_id}.q.jpg    queued: not yet acknowledged by the broker
    {dir}/{camera}/{snapshot_id}.jpg      sent (PUBACK received)
    {dir}/{camera}/.{snapshot_id}.tmp     being written; removed at start

SD-card friendly: a picture is written once (to the ``.tmp`` name, fsynced, renamed), and
never rewritten; "sent" is a rename, which changes only the directory entry. The cap
(``max_bytes``, ``max_count``) evicts the oldest sent pictures first, then the oldest
unsent ones; an unsent picture evicted is a picture lost, and counted (``dropped``).

The file work (:meth:`SnapshotStore.write`, :meth:`SnapshotStore.rename_sent`,
:meth:`SnapshotStore.delete`) is plain blocking I/O meant for ``asyncio.to_thread``;
the index (:meth:`SnapshotStore.add`, :meth:`SnapshotStore.victims`) is touched only
from the event loop.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

QUEUED = ".q.jpg"
SENT = ".jpg"
TMP = ".tmp"
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass
class Stored:
    """One picture on disk."""

    camera: str
    snapshot_id: str
    size: int
    sent: bool = False

    def path(self, root: Path) -> Path:
        return root / self.camera / (self.snapshot_id + (SENT if self.sent else QUEUED))


class SnapshotStore:
    """The folder of pictures and its index (oldest first)."""

    def __init__(self, root: Path, *, max_bytes: int, max_count: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.items: dict[tuple[str, str], Stored] = {}
        self.bytes = 0
        #: unsent pictures the cap evicted (lost), and sent ones it pruned, since start
        self.dropped = 0
        self.pruned = 0

    # -- blocking file work (asyncio.to_thread) -------------------------------------
    def scan(self) -> list[Stored]:
        """Read the folder at start: remove half-written files, index the rest; returns
        the queued pictures, oldest first (they go out before anything new)."""
        found: list[Stored] = []
        if self.root.is_dir():
            for cam_dir in self.root.iterdir():
                if not cam_dir.is_dir() or not _ID.match(cam_dir.name):
                    continue
                for f in cam_dir.iterdir():
                    name = f.name
                    if name.endswith(TMP):
                        f.unlink(missing_ok=True)
                        continue
                    sent = not name.endswith(QUEUED)
                    sid = name[: -len(QUEUED)] if not sent else name.removesuffix(SENT)
                    if sid == name or not _ID.match(sid):
                        continue
                    try:
                        size = f.stat().st_size
                    except OSError:
                        continue
                    found.append(Stored(cam_dir.name, sid, size, sent))
        found.sort(key=lambda s: (s.snapshot_id, s.camera))
        self.items = {(s.camera, s.snapshot_id): s for s in found}
        self.bytes = sum(s.size for s in found)
        return [s for s in found if not s.sent]

    def write(self, camera: str, snapshot_id: str, data: bytes) -> Stored:
        """Write one picture durably (one write, one fsync, one rename); queued."""
        folder = self.root / camera
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{snapshot_id}{TMP}"
        stored = Stored(camera, snapshot_id, len(data))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, stored.path(self.root))
        _fsync_dir(folder)
        return stored

    def rename_sent(self, stored: Stored) -> None:
        """The broker acknowledged it: ``.q.jpg`` becomes ``.jpg`` (no data rewritten).
        The caller then sets ``stored.sent`` on the event loop."""
        folder = self.root / stored.camera
        try:
            os.rename(folder / (stored.snapshot_id + QUEUED), folder / (stored.snapshot_id + SENT))
        except FileNotFoundError:
            pass  # deleted by hand meanwhile: nothing left to mark

    def delete(self, victims: list[Stored]) -> None:
        for stored in victims:
            try:
                stored.path(self.root).unlink(missing_ok=True)
            except OSError as err:
                log.warning("cannot delete snapshot %s: %s", stored.path(self.root), err)

    # -- the index (event loop) ---------------------------------------------------
    def add(self, stored: Stored) -> None:
        self.items[(stored.camera, stored.snapshot_id)] = stored
        self.bytes += stored.size

    def victims(self, keep: tuple[Stored | None, ...] = ()) -> list[Stored]:
        """Take out of the index what the cap evicts (oldest sent first, then oldest
        unsent; never one of ``keep``: the picture just taken, the one on its way to the
        broker); the caller deletes the files."""
        out: list[Stored] = []

        def over() -> bool:
            return len(self.items) > self.max_count or self.bytes > self.max_bytes

        for sent in (True, False):
            if not over():
                break
            for key, stored in list(self.items.items()):
                if not over():
                    break
                if stored.sent is not sent or any(stored is k for k in keep):
                    continue
                del self.items[key]
                self.bytes -= stored.size
                out.append(stored)
                if sent:
                    self.pruned += 1
                else:
                    self.dropped += 1
        return out

    def forget(self, stored: Stored) -> None:
        """Out of the index (its file is gone or unreadable), counted as dropped."""
        if self.items.pop((stored.camera, stored.snapshot_id), None) is not None:
            self.bytes -= stored.size
            self.dropped += 0 if stored.sent else 1

    def contains(self, stored: Stored) -> bool:
        return self.items.get((stored.camera, stored.snapshot_id)) is stored

    @property
    def queued(self) -> int:
        return sum(1 for s in self.items.values() if not s.sent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (the directory entry), where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
