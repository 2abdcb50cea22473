"""Camera snapshots: fetch, keep on disk, publish (``ROOT/snapshots/{camera}/{id}``).

:class:`SnapshotService` is the one place that takes pictures, for the
``camera_snapshot`` command and for alarms that ask for one
(:mod:`edge_agent.snapshots.alarms`):

1. **where**: a camera written in ``snapshots.cameras`` (URL, login), else a device
   whose driver has the :class:`~edge_agent.driver.Snapshotter` capability (the ONVIF
   driver gives its GetSnapshotUri); anything else is an unknown device or not a camera;
2. **fetch** (:func:`~edge_agent.snapshots.fetch.fetch_jpeg`): digest/basic/no login,
   bounded in time and size, checked to be a whole JPEG;
3. **keep** (:class:`~edge_agent.snapshots.store.SnapshotStore`): written once, durably,
   before anyone is told its topic and sha256; the cap evicts the oldest;
4. **send** (:meth:`SnapshotService.run`): one picture at a time, oldest first, QoS 1,
   not retained, MQTT 5 content type ``image/jpeg``; marked sent at the broker's PUBACK.
   While the uplink is down pictures wait on disk and go out after, within the cap.

Raw bytes never go through the outbox (SQLite): a 300 KB picture in the WAL would cost
the SD card several times its size, and the envelope's seq accounting is for messages,
not files. The alarm or command result that names a picture carries its sha256, so the
platform can check what it received.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_agent.driver import SnapshotSource, Snapshotter
from edge_agent.envelope import iso_ms, new_ulid
from edge_agent.errors import SnapshotError
from edge_agent.snapshots.config import SnapshotsConfig
from edge_agent.snapshots.store import SnapshotStore, Stored
from edge_agent.topics import Topics

log = logging.getLogger(__name__)

CONTENT_TYPE = "image/jpeg"
#: a PUBACK not seen after this long: the picture is sent again (same id: the platform
#: de-duplicates by topic); a slow uplink sends 4 MB in far less
ACK_WAIT_S = 300.0

#: a picture the broker refused (ACL, quota) is offered again after this long
REFUSED_RETRY_S = 60.0

Fetch = Callable[..., Awaitable[bytes]]


class UnknownCamera(ValueError):
    """No device and no ``snapshots.cameras`` entry of that id."""


class NotACamera(ValueError):
    """A device that cannot take pictures."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A picture kept on disk, on its way to the broker."""

    camera: str
    snapshot_id: str
    topic: str
    sha256: str
    size: int
    ts: float

    def ref(self) -> dict[str, str]:
        """What an alarm carries: ``{"topic", "sha256"}`` (the contract's ``snapshot``)."""
        return {"topic": self.topic, "sha256": self.sha256}


class BlobSender(Protocol):
    """What the uploader needs of the publisher (:class:`edge_agent.mqtt.publisher.Publisher`)."""

    connected: asyncio.Event

    def publish_blob(
        self, topic: str, data: bytes, *, content_type: str, user_properties: list[tuple[str, str]]
    ) -> asyncio.Future[None] | None:
        """QoS 1, not retained; a future set at the PUBACK, None when not connected."""
        ...


@dataclass
class SnapshotStats:
    taken: int = 0
    failed: int = 0
    sent: int = 0
    alarm_attached: int = 0
    alarm_without: int = 0
    last_error: str | None = None


class SnapshotService:
    """Takes, keeps and sends camera snapshots (see the module docstring)."""

    def __init__(
        self,
        cfg: SnapshotsConfig,
        folder: Path,
        topics: Topics,
        drivers: Mapping[str, Any],
        *,
        fetch: Fetch | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.drivers = drivers
        self.sources: dict[str, SnapshotSource] = {
            c.id: SnapshotSource(c.url, c.username, c.password, c.auth, c.tls_verify)
            for c in cfg.cameras
        }
        self.store = SnapshotStore(folder, max_bytes=cfg.max_bytes, max_count=cfg.max_count)
        self._fetch = fetch
        self._wall = wall
        self._queue: list[Stored] = []
        self._wake = asyncio.Event()
        self._sending: Stored | None = None
        self._failing: set[str] = set()
        #: the picture being taken, by camera
        self._taking: dict[str, asyncio.Future[Snapshot]] = {}
        self._opened = False
        self.stats = SnapshotStats()

    # -- where pictures come from ---------------------------------------------------
    def source(self, camera: str) -> SnapshotSource:
        """Where ``camera``'s picture is; :class:`UnknownCamera`, :class:`NotACamera`, or
        :class:`SnapshotError` for a camera that does not know its URL yet."""
        src = self.sources.get(camera)
        if src is not None:
            return src
        driver = self.drivers.get(camera)
        if driver is None:
            raise UnknownCamera(f"unknown device {camera!r}")
        if not isinstance(driver, Snapshotter):
            raise NotACamera(f"device {camera!r} is not a camera")
        src = driver.snapshot_source()
        if src is None:
            raise SnapshotError(
                camera,
                "the camera has not told its snapshot URL yet (not connected?); or write "
                "it under snapshots.cameras / 摄像机尚未提供抓图地址",
            )
        return src

    # -- taking one -----------------------------------------------------------------
    async def open(self) -> None:
        """Index the folder (at start): pictures still queued go out first."""
        queued = await asyncio.to_thread(self.store.scan)
        self._queue = queued + self._queue
        self._opened = True
        if queued:
            log.info(
                "%d snapshots from before the restart wait to be sent / %d 张抓图待发送",
                len(queued),
                len(queued),
            )
            self._wake.set()

    async def take(self, camera: str, *, timeout_s: float | None = None) -> Snapshot:
        """Fetch a picture of ``camera``, keep it on disk, queue it; its topic and sha256.

        Raises :class:`UnknownCamera`, :class:`NotACamera` or :class:`SnapshotError`.
        One picture at a time per camera: who asks while one is being taken gets that one
        (ten motion alarms in a second do not send ten requests to one small camera). A
        caller that stops waiting (an alarm past its bound) does not stop the picture for
        the others; once fetched it is kept and sent, though nobody may name it."""
        src = self.source(camera)
        running = self._taking.get(camera)
        if running is None:
            running = asyncio.ensure_future(self._take(camera, src, timeout_s))
            self._taking[camera] = running
            running.add_done_callback(functools.partial(self._done_taking, camera))
        return await asyncio.shield(running)

    def _done_taking(self, camera: str, task: asyncio.Future[Snapshot]) -> None:
        if self._taking.get(camera) is task:
            del self._taking[camera]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up

    async def close(self) -> None:
        """Stop pictures still being taken (the agent stops)."""
        tasks = list(self._taking.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _take(self, camera: str, src: SnapshotSource, timeout_s: float | None) -> Snapshot:
        limit = self.cfg.timeout_s if timeout_s is None else min(timeout_s, self.cfg.timeout_s)
        ts = self._wall()
        try:
            if self._fetch is not None:
                data = await self._fetch(
                    camera, src, timeout_s=limit, max_bytes=self.cfg.image_max_bytes
                )
            else:
                from edge_agent.snapshots.fetch import fetch_jpeg

                data = await fetch_jpeg(
                    camera, src, timeout_s=limit, max_bytes=self.cfg.image_max_bytes
                )
        except SnapshotError as err:
            self._failed(camera, err)
            raise
        sid = new_ulid(ts).lower()
        snap = Snapshot(
            camera=camera,
            snapshot_id=sid,
            topic=self.topics.snapshot(camera, sid),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            ts=ts,
        )
        await self._keep(snap, data)
        if camera in self._failing:
            self._failing.discard(camera)
            log.info("camera %s: snapshots work again / 摄像机抓图恢复", camera)
        return snap

    async def _keep(self, snap: Snapshot, data: bytes) -> None:
        try:
            stored = await asyncio.to_thread(self.store.write, snap.camera, snap.snapshot_id, data)
        except OSError as err:
            error = SnapshotError(snap.camera, f"cannot store the picture: {err}")
            self._failed(snap.camera, error)
            raise error from err
        self.store.add(stored)
        self.stats.taken += 1
        self._queue.append(stored)
        victims = self.store.victims(keep=(stored, self._sending))
        if victims:
            lost = [v for v in victims if not v.sent]
            if lost:
                log.warning(
                    "snapshot folder over its cap (snapshots.max_bytes/max_count): %d unsent "
                    "pictures evicted, oldest first (%d in all) "
                    "/ 抓图目录超限，%d 张未发送图片被删除",
                    len(lost),
                    self.store.dropped,
                    len(lost),
                )
            gone = {id(v) for v in victims}
            self._queue = [q for q in self._queue if id(q) not in gone]
            await asyncio.to_thread(self.store.delete, victims)
        self._wake.set()

    def _failed(self, camera: str, err: Exception) -> None:
        self.stats.failed += 1
        self.stats.last_error = str(err)[:300]
        if camera in self._failing:
            log.debug("snapshot of %s failed again: %s", camera, err)
            return
        self._failing.add(camera)
        log.warning("snapshot of %s failed: %s / 抓图失败", camera, err)

    async def command(self, camera: str) -> dict[str, Any]:
        """The result of ``camera_snapshot {device}``."""
        snap = await self.take(camera)
        return {
            "device": camera,
            "snapshot_id": snap.snapshot_id,
            "topic": snap.topic,
            "sha256": snap.sha256,
            "bytes": snap.size,
            "ts": iso_ms(snap.ts),
        }

    # -- sending --------------------------------------------------------------------
    async def run(self, sender: BlobSender) -> None:
        """Send queued pictures, oldest first, one at a time, until cancelled."""
        if not self._opened:
            await self.open()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            stored = self._queue[0]
            if not self.store.contains(stored):  # evicted while waiting
                self._queue.pop(0)
                continue
            self._sending = stored
            try:
                await self._send(sender, stored)
            finally:
                self._sending = None
            if self._queue and self._queue[0] is stored:
                self._queue.pop(0)

    async def _send(self, sender: BlobSender, stored: Stored) -> None:
        try:
            data = await asyncio.to_thread(stored.path(self.store.root).read_bytes)
        except OSError as err:
            log.error("snapshot %s unreadable, dropped: %s", stored.path(self.store.root), err)
            self.store.forget(stored)
            return
        sha = hashlib.sha256(data).hexdigest()
        topic = self.topics.snapshot(stored.camera, stored.snapshot_id)
        props = [("sha256", sha), ("camera", stored.camera)]
        refusals = 0
        while True:
            await sender.connected.wait()
            ack = sender.publish_blob(topic, data, content_type=CONTENT_TYPE, user_properties=props)
            if ack is None:  # the link dropped between the two lines above
                await asyncio.sleep(0.5)
                continue
            try:
                async with asyncio.timeout(ACK_WAIT_S):
                    await ack
            except TimeoutError:
                log.warning("snapshot %s: no PUBACK within %g s, sending again", topic, ACK_WAIT_S)
                continue
            except Exception as err:  # the broker refused it (MQTT 5 reason code)
                self.stats.last_error = f"broker refused {topic}: {err}"[:300]
                if not refusals:
                    log.warning(
                        "the broker refused snapshot %s (%s): it stays queued and is tried "
                        "again in %g s; check the broker's ACL for ROOT/snapshots/# and its "
                        "message size limit / 代理拒收抓图，稍后重试",
                        topic,
                        err,
                        REFUSED_RETRY_S,
                    )
                refusals += 1
                await asyncio.sleep(REFUSED_RETRY_S)
                continue
            break
        await asyncio.to_thread(self.store.rename_sent, stored)
        stored.sent = True
        self.stats.sent += 1

    def health(self) -> dict[str, Any]:
        """For ``ROOT/health``: ``snapshots``."""
        s = self.stats
        return {
            "taken": s.taken,
            "failed": s.failed,
            "sent": s.sent,
            "queued": self.store.queued,
            "stored": len(self.store.items),
            "bytes": self.store.bytes,
            "dropped": self.store.dropped,
            "pruned": self.store.pruned,
            "alarm_attached": s.alarm_attached,
            "alarm_without": s.alarm_without,
            "last_error": s.last_error,
        }
