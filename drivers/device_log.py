"""How a push driver tells the installer about its device, shared by the stream drivers
(Hikvision terminals, the camera event streams, ONVIF): one WARNING when the device goes
down and DEBUG while it stays down; each kind of problem once at WARNING, then counted,
with one summary line at the end. Logs live on an SD card."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from edge_agent.driver import DeviceLink


class DeviceLog:
    """A mixin for drivers with ``device_id``; they set ``_log`` (their module's logger, so
    the records keep their names) and ``_trouble_zh`` (the Chinese half of the down line),
    and start with ``_down_since = None`` and ``_logged = {}``."""

    _log: ClassVar[logging.Logger]
    _trouble_zh: ClassVar[str]
    #: why the device is down, None while it is up
    _down_since: str | None
    #: log keys already logged once at WARNING, and how often each came
    _logged: dict[str, int]

    if TYPE_CHECKING:

        @property
        def device_id(self) -> str: ...

    def _down(self, link: DeviceLink, state: str, reason: str) -> None:
        if self._down_since is None:
            self._log.warning("%s: %s / %s", self.device_id, reason, self._trouble_zh)
        else:
            self._log.debug("%s: still down: %s", self.device_id, reason)
        self._down_since = reason
        link.state("offline" if state == "offline" else "degraded", reason)

    def _once(self, key: str, msg: str, *args: Any) -> None:
        """Log ``msg`` once at WARNING per ``key`` (logs live on an SD card), then count."""
        n = self._logged.get(key)
        self._logged[key] = (n or 0) + 1
        text = msg % args
        if n is None:
            self._log.warning("%s: %s; further ones are counted / 之后只计数", self.device_id, text)
        else:
            self._log.debug("%s: %s", self.device_id, text)

    def _summary(self) -> None:
        again = {k: n - 1 for k, n in self._logged.items() if n > 1}
        if again:
            self._log.info(
                "%s: repeated problems since the start: %s / 重复问题汇总",
                self.device_id,
                ", ".join(f"{k} x{n}" for k, n in sorted(again.items())),
            )
