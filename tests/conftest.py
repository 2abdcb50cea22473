"""Fixtures for every test: leak checks, and the real MQTT broker.

* Every test fails when it leaks an asyncio task or a thread (``tests/leakcheck.py``).
* ``mqtt_broker``: one mosquitto for the whole session (Docker via testcontainers, else a
  local process on an ephemeral port). A test may stop/start/restart it; if a test leaves
  it stopped, it is started again before the next test.
* ``fresh_mqtt_broker``: a broker of its own for one test (outage tests that want
  nobody else on their broker).
* Subscribing and publishing: ``tests.mqtt_helpers.mqtt_subscriber`` / ``publish``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.leakcheck import no_task_leak, no_thread_leak
from tests.mqtt_helpers import MqttBroker, start_test_broker

__all__ = ["no_task_leak", "no_thread_leak"]  # fixtures, re-exported so pytest sees them


@pytest.fixture(autouse=True)
def _no_leaks(no_task_leak: None) -> None:
    """Autouse: run the task and thread leak checks (see tests/leakcheck.py) around every test."""


_session_brokers: list[MqttBroker] = []
_exit_status: list[int] = [0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status[0] = int(exitstatus)


@pytest.hookimpl(wrapper=True)
def pytest_unconfigure(config: pytest.Config) -> Generator[None, None, None]:
    """Do not hang at exit on a leaked non-daemon thread (an unclosed aiosqlite connection).

    The leak check has already failed the test that leaked it; without this, the
    interpreter would wait for the thread forever and CI would time out instead. A
    wrapper, so it runs even when another plugin's unconfigure raises.
    """
    try:
        yield
    finally:
        _exit_if_threads_stuck()


def _exit_if_threads_stuck() -> None:
    deadline = time.monotonic() + 2.0
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if stuck:
        names = ", ".join(repr(t.name) for t in stuck)
        sys.stdout.flush()
        sys.stderr.write(
            f"\nERROR: non-daemon thread(s) still running at exit: {names}; "
            "exiting without waiting for them.\n"
        )
        sys.stderr.flush()
        os._exit(_exit_status[0] or 1)


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttBroker]:
    """A real mosquitto (MQTT 5) on 127.0.0.1, shared by the session.

    Has ``.host``, ``.port``, ``.protocol``, ``.start()``, ``.stop()``, ``.restart()``;
    restarts keep the port.
    """
    broker = start_test_broker(Path(tmp_path_factory.mktemp("mqtt_broker")))
    _session_brokers.append(broker)
    yield broker
    _session_brokers.remove(broker)
    broker.close()


@pytest.fixture(autouse=True)
def _session_broker_left_running() -> Iterator[None]:
    """Start the shared broker again when a test (an outage test) left it stopped."""
    yield
    for broker in _session_brokers:
        if not broker.running:
            broker.start()


@pytest.fixture
def persistent_mqtt_broker(tmp_path: Path) -> Iterator[MqttBroker]:
    """A broker of this test's own that keeps sessions across its restarts (fault tests)."""
    broker = start_test_broker(tmp_path / "persistent_mqtt_broker", persistence=True)
    yield broker
    broker.close()


@pytest.fixture
def fresh_mqtt_broker(tmp_path: Path) -> Iterator[MqttBroker]:
    """A broker of this test's own, closed after it."""
    broker = start_test_broker(tmp_path / "fresh_mqtt_broker")
    yield broker
    broker.close()
