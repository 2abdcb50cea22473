"""A tiny, dependency-free ``sd_notify`` client and a health-gated watchdog loop.

Under systemd (``Type=notify``) the service manager passes ``NOTIFY_SOCKET``,
the path of an ``AF_UNIX`` datagram socket (``@name`` means the abstract
namespace). The agent sends ``READY=1`` once it is up, ``STATUS=...`` lines that
``systemctl status`` shows, ``STOPPING=1`` when it shuts down, and, when the
unit sets ``WatchdogSec=``, ``WATCHDOG=1`` keep-alives.

Everything here is a no-op when the agent does not run under systemd (no
``NOTIFY_SOCKET``), so the CLI, tests and ``edge-agent demo`` can call it freely.
A failed send never raises: the agent keeps working, and the failure is
logged once at DEBUG.

The watchdog is only fed while the agent is healthy (see :func:`watchdog_loop`):
a stuck event loop or a dead core component stops the keep-alives, and systemd
kills and restarts the agent after ``WatchdogSec=``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["SystemdNotifier", "watchdog_loop"]

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends ``sd_notify`` messages to systemd; does nothing when not under systemd.

    ``env`` defaults to ``os.environ``; tests pass their own mapping.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._address = _parse_address(self._env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._failure_logged = False

    @property
    def enabled(self) -> bool:
        """True when ``NOTIFY_SOCKET`` names a usable socket."""
        return self._address is not None

    def send(self, message: str) -> bool:
        """Send one raw notification (``KEY=value`` lines); True if it was delivered.

        Never raises and never blocks: the socket is non-blocking, so a full
        systemd queue drops the message instead of stalling the event loop.
        """
        if self._address is None:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as err:
            if not self._failure_logged:
                self._failure_logged = True
                log.debug("sd_notify to %r failed (logged once): %s", self._address, err)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd that start-up is complete (``READY=1``), with an optional status."""
        message = "READY=1"
        if status is not None:
            message += "\nSTATUS=" + _one_line(status)
        return self.send(message)

    def status(self, text: str) -> bool:
        """Set the free-form status line shown by ``systemctl status``."""
        return self.send("STATUS=" + _one_line(text))

    def stopping(self) -> bool:
        """Tell systemd that the agent is shutting down (``STOPPING=1``)."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Feed the watchdog (``WATCHDOG=1``)."""
        return self.send("WATCHDOG=1")

    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout in seconds, or None when there is no watchdog for us.

        Read from ``WATCHDOG_USEC``; ``WATCHDOG_PID``, when set, must be our pid
        (otherwise the watchdog belongs to another process, e.g. our parent).
        """
        if self._address is None:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 1_000_000

    def close(self) -> None:
        """Close the socket; later sends open a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def watchdog_loop(notifier: SystemdNotifier, healthy: Callable[[], bool]) -> None:
    """Feed systemd's watchdog at half its interval, but only while ``healthy()`` is true.

    Returns at once when there is no watchdog. Runs until cancelled otherwise.
    Because this runs on the event loop, a blocked loop also stops the
    keep-alives. ``healthy`` must be cheap and non-blocking; if it raises, the
    agent counts as unhealthy.
    """
    interval_s = notifier.watchdog_interval_s()
    if interval_s is None:
        return
    period_s = interval_s / 2
    was_healthy = True
    while True:
        try:
            ok = healthy()
        except Exception:
            log.exception("watchdog health check raised; counting the agent as unhealthy")
            ok = False
        if ok:
            notifier.watchdog()
            if not was_healthy:
                log.info("agent healthy again; feeding the systemd watchdog again")
        elif was_healthy:
            log.warning(
                "agent unhealthy; not feeding the systemd watchdog, which restarts the agent "
                "in about %.0f s unless it recovers",
                interval_s,
            )
        was_healthy = ok
        await asyncio.sleep(period_s)


def _parse_address(value: str) -> str | bytes | None:
    """``NOTIFY_SOCKET`` as a ``sendto`` address; ``@name`` is the abstract namespace."""
    if not value or not hasattr(socket, "AF_UNIX"):
        return None
    if value.startswith("@"):
        # Linux abstract namespace: a leading NUL byte instead of a file path.
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    # systemd also allows vsock:CID:PORT (for VMs); the agent never runs like that.
    return None


def _one_line(text: str) -> str:
    """Newlines would start a new ``KEY=value`` field, so fold them into spaces."""
    return " ".join(text.splitlines())
