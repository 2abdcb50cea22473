"""What MQTT connection trouble writes to the log: one WARNING, repeats summarised, one INFO.

The clock is injected, so "ten minutes of failures" takes no time.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl

import pytest

from edge_agent.mqtt.client import ConnectionReport, describe_connect_error, host_port

# The report writes through its owner's logger (the publisher's, in the agent).
LOGGER = "edge_agent.mqtt.publisher"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == LOGGER]


def make(clock: FakeClock) -> ConnectionReport:
    return ConnectionReport(
        "broker.example:1883",
        summary_s=300,
        stable_s=60,
        clock=clock,
        logger=logging.getLogger(LOGGER),
    )


def test_an_outage_is_one_warning_a_summary_and_one_info(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    report = make(clock)
    caplog.set_level(logging.DEBUG, LOGGER)
    for _ in range(100):  # 100 attempts, one every 5 s: 500 s
        report.failed("refused", "connection refused")
        clock.now += 5
    report.connected("5")
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 2  # the first failure, one summary after 300 s
    assert "broker.example:1883" in warnings[0]
    assert "connection refused" in warnings[0]
    assert "still failing, 61 attempts" in warnings[1]
    infos = lines(caplog, logging.INFO)
    assert len(infos) == 1
    assert "after 100 failed attempts" in infos[0]
    assert "MQTT 5" in infos[0]
    assert len(lines(caplog, logging.DEBUG)) == 98


def test_a_new_reason_is_a_new_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    report = make(clock)
    caplog.set_level(logging.INFO, LOGGER)
    report.failed("refused", "connection refused")
    report.failed("refused", "connection refused")
    report.failed("credentials", "bad credentials")
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "bad credentials (reason changed)" in warnings[1]


def test_flapping_session_takeover_is_not_logged_every_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two gateways with one client id take the session from each other every second."""
    clock = FakeClock()
    report = make(clock)
    caplog.set_level(logging.INFO, LOGGER)
    report.connected("5")
    clock.now += 3600
    for _ in range(50):
        report.lost("taken_over", "session taken over")
        clock.now += 1
        report.connected("5")
        clock.now += 1
    assert len(lines(caplog, logging.WARNING)) == 1
    assert len(lines(caplog, logging.INFO)) == 2  # the first connect, the first recovery
    # the flapping stops: once the link stayed up, one line says so
    report.check_stable()  # too early: nothing
    clock.now += 60
    report.check_stable()
    infos = lines(caplog, logging.INFO)
    assert len(infos) == 3
    assert "stable again after 50 failed attempts" in infos[2]
    # trouble after a long stable connection is news again
    clock.now += 600
    report.lost("lost", "connection lost")
    assert len(lines(caplog, logging.WARNING)) == 2


def test_a_recovery_without_flapping_needs_no_stable_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    report = make(clock)
    caplog.set_level(logging.INFO, LOGGER)
    report.failed("refused", "connection refused")
    report.connected("3.1.1")
    clock.now += 60
    report.check_stable()
    assert not report.failing
    assert len(lines(caplog, logging.INFO)) == 1


@pytest.mark.parametrize(
    ("err", "key", "text"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused", "refused"),
        (socket.gaierror(-2, "Name or service not known"), "dns", "not resolved"),
        (TimeoutError("timed out"), "timeout", "timed out"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable", "unreachable"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "tls", "TLS"),
    ],
)
def test_connect_errors_name_their_reason(err: OSError, key: str, text: str) -> None:
    got_key, got_text = describe_connect_error(err)
    assert got_key == key
    assert text in got_text


def test_ipv6_literals_are_bracketed_in_logs() -> None:
    assert host_port("::1", 1883) == "[::1]:1883"
    assert host_port("broker", 8883) == "broker:8883"
