"""Alarms that carry a snapshot: a rule with ``snapshot: <camera>``.

:class:`SnapshotAlarms` stands between the rule engine and the alarm book (it is an
:class:`~edge_agent.alarms.lifecycle.AlarmSink`). A raise of a rule without a camera
goes straight to the book. A raise of a rule with one starts the picture and raises the
alarm when the picture is on disk, with ``snapshot: {"topic", "sha256"}``, or after
``snapshots.alarm_wait_s`` at the latest, without it; a fetch that fails raises it at
once, without it. Either way the alarm is raised, and the reason it carries no picture
is logged (once per camera, then at DEBUG) and counted in ``ROOT/health``
(``snapshots.alarm_without``, ``snapshots.last_error``).

A clear that arrives while the picture is being taken (an event rule that clears at
once) is applied right after the raise, so the order of transitions stays the same. At
stop, alarms still waiting are raised without their picture before the outbox closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import SnapshotError
from edge_agent.snapshots.service import SnapshotService

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    severity: Any
    en: str
    zh: str
    value: Any
    threshold: Any
    origin: str
    cleared: bool = False
    clear_origin: str = "rules"


class SnapshotAlarms:
    """An alarm sink that attaches pictures to the alarms of rules with ``snapshot:``."""

    def __init__(
        self,
        book: Any,
        cameras: dict[str, str],
        service: SnapshotService,
        *,
        wait_s: float,
    ) -> None:
        self.book = book
        #: rule id -> camera id
        self.cameras = cameras
        self.service = service
        self.wait_s = wait_s
        self._waiting: dict[tuple[str, str], _Waiting] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._quiet: set[str] = set()

    # -- AlarmSink -------------------------------------------------------------------
    def raise_(
        self,
        rule: str,
        device: str,
        severity: Any,
        *,
        en: str,
        zh: str,
        value: Any = None,
        threshold: Any = None,
        origin: str = "rules",
    ) -> Any:
        camera = self.cameras.get(rule)
        if camera is None or self.book.is_suppressed(rule, device):
            # no picture for an alarm the book holds back (out of service, suppressed)
            return self.book.raise_(
                rule,
                device,
                severity,
                en=en,
                zh=zh,
                value=value,
                threshold=threshold,
                origin=origin,
            )
        key = (rule, device)
        existing = self.book.find(rule, device)
        if existing is not None or key in self._waiting:
            return existing
        waiting = self._waiting[key] = _Waiting(severity, en, zh, value, threshold, origin)
        task = asyncio.get_running_loop().create_task(
            self._with_picture(rule, device, camera, waiting), name=f"alarm-snapshot:{rule}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    def clear(self, rule: str, device: str, *, origin: str = "rules") -> None:
        waiting = self._waiting.get((rule, device))
        if waiting is not None:
            waiting.cleared = True
            waiting.clear_origin = origin
            return
        self.book.clear(rule, device, origin=origin)

    def find(self, rule: str, device: str) -> Any:
        return self.book.find(rule, device)

    def suppress(self, rule: str, on: bool, *, origin: str = "rules") -> None:
        self.book.suppress(rule, on, origin=origin)

    def is_suppressed(self, rule: str, device: str) -> bool:
        return bool(self.book.is_suppressed(rule, device))

    # -- the picture ---------------------------------------------------------------
    async def _with_picture(self, rule: str, device: str, camera: str, w: _Waiting) -> None:
        snapshot: dict[str, str] | None = None
        why: str | None = None
        try:
            async with asyncio.timeout(self.wait_s):
                snap = await self.service.take(camera, timeout_s=self.wait_s)
            snapshot = snap.ref()
        except TimeoutError:
            why = f"no picture from {camera} within snapshots.alarm_wait_s ({self.wait_s:g} s)"
        except (SnapshotError, ValueError) as err:  # unknown camera, not a camera, fetch
            why = str(err)
        except asyncio.CancelledError:
            why = "the agent is stopping"
            self._raise(rule, device, w, None, why)
            raise
        except Exception as err:  # a bug must not cost the alarm
            log.exception("snapshot for alarm %s on %s failed", rule, device)
            why = f"internal error: {err!r}"
        self._raise(rule, device, w, snapshot, why)

    def _raise(
        self,
        rule: str,
        device: str,
        w: _Waiting,
        snapshot: dict[str, str] | None,
        why: str | None,
    ) -> None:
        if self._waiting.pop((rule, device), None) is None:
            return
        stats = self.service.stats
        if snapshot is not None:
            stats.alarm_attached += 1
        else:
            stats.alarm_without += 1
            stats.last_error = f"alarm {rule} on {device}: {why}"[:300]
            camera = self.cameras.get(rule, "?")
            log_fn: Callable[..., None] = log.debug if camera in self._quiet else log.warning
            self._quiet.add(camera)
            log_fn(
                "alarm %s on %s raised without its snapshot: %s / 告警未附带抓图",
                rule,
                device,
                why,
            )
        self.book.raise_(
            rule,
            device,
            w.severity,
            en=w.en,
            zh=w.zh,
            value=w.value,
            threshold=w.threshold,
            origin=w.origin,
            snapshot=snapshot,
        )
        if snapshot is not None:
            self._quiet.discard(self.cameras.get(rule, "?"))
        if w.cleared:
            self.book.clear(rule, device, origin=w.clear_origin)

    async def close(self) -> None:
        """Raise every alarm still waiting for its picture, without it (the agent stops)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
