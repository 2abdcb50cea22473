"""sd_notify client against a real AF_UNIX datagram socket (path and abstract names)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.sdnotify import SystemdNotifier, watchdog_loop


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET, as systemd would bind it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def received(self) -> list[str]:
        """Every datagram waiting in the queue, without blocking."""
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return messages


def _bind(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    if request.param == "path":
        path = tmp_path / "notify.sock"
        sock = _bind(str(path))
        env_value = str(path)
    else:
        name = f"edge-agent-test-{uuid.uuid4().hex}"
        sock = _bind(b"\0" + name.encode())
        env_value = "@" + name
    yield FakeSystemd(sock, env_value)
    sock.close()


def test_ready_status_stopping_reach_systemd(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.env())
    assert notifier.enabled
    assert notifier.ready("polling 12 devices")
    assert notifier.status("outbox 3 messages\nbroker down")
    assert notifier.watchdog()
    assert notifier.stopping()
    notifier.close()

    assert systemd.received() == [
        "READY=1\nSTATUS=polling 12 devices",
        # A newline would start a new KEY=value field, so it is folded.
        "STATUS=outbox 3 messages broker down",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_ready_without_status(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.env())
    notifier.ready()
    notifier.close()
    assert systemd.received() == ["READY=1"]


def test_everything_is_a_noop_without_notify_socket() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    assert notifier.watchdog_interval_s() is None


def test_send_failure_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="edge_agent.sdnotify")
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    notifier.close()
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1  # logged once, not on every keep-alive


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(
    systemd: FakeSystemd, extra: dict[str, str], expected: float | None
) -> None:
    assert SystemdNotifier(systemd.env(**extra)).watchdog_interval_s() == expected


async def test_watchdog_loop_returns_at_once_without_watchdog(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.env())
    await asyncio.wait_for(watchdog_loop(notifier, lambda: True), timeout=5)
    assert systemd.received() == []


async def test_watchdog_loop_feeds_only_while_healthy(systemd: FakeSystemd) -> None:
    # 100 ms watchdog: keep-alives every 50 ms.
    notifier = SystemdNotifier(systemd.env(WATCHDOG_USEC="100000"))
    health = {"ok": True}
    task = asyncio.create_task(watchdog_loop(notifier, lambda: health["ok"]))
    try:
        await asyncio.sleep(0.3)
        fed_while_healthy = systemd.received()
        assert len(fed_while_healthy) >= 2
        assert set(fed_while_healthy) == {"WATCHDOG=1"}

        health["ok"] = False
        await asyncio.sleep(0.06)  # let an iteration that began while healthy finish
        systemd.received()
        await asyncio.sleep(0.3)
        assert systemd.received() == []

        health["ok"] = True
        await asyncio.sleep(0.2)
        assert "WATCHDOG=1" in systemd.received()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_watchdog_loop_counts_a_raising_check_as_unhealthy(systemd: FakeSystemd) -> None:
    def broken() -> bool:
        raise RuntimeError("component registry gone")

    notifier = SystemdNotifier(systemd.env(WATCHDOG_USEC="100000"))
    task = asyncio.create_task(watchdog_loop(notifier, broken))
    try:
        await asyncio.sleep(0.2)
        assert systemd.received() == []
        assert not task.done()  # it keeps checking; the agent may recover
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()
