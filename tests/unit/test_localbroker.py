"""LocalBroker: the broker child process behind `edge-agent demo` and the test fixtures."""

from __future__ import annotations

import importlib.util
import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from edge_agent.tools.localbroker import (
    BrokerError,
    BrokerNotFound,
    LocalBroker,
    find_mosquitto,
    free_port,
    mqtt_ping,
)
from tests.mqtt_helpers import NO_BROKER_MESSAGE, mqtt_subscriber, publish


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@pytest.fixture
def mosquitto() -> str:
    path = find_mosquitto()
    if path is None:
        pytest.fail(NO_BROKER_MESSAGE, pytrace=False)
    return path


def test_find_mosquitto_looks_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "mosquitto", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_mosquitto() == fake


def test_missing_mosquitto_raises_with_install_hint(tmp_path: Path) -> None:
    broker = LocalBroker(workdir=tmp_path, mosquitto_path=str(tmp_path / "no-such-mosquitto"))
    with pytest.raises(BrokerNotFound) as info:
        broker.start()
    message = str(info.value)
    assert "apt-get install -y mosquitto" in message
    assert "未安装 mosquitto" in message
    assert not broker.running


def test_forced_mosquitto_backend_never_falls_back(tmp_path: Path) -> None:
    broker = LocalBroker(
        workdir=tmp_path,
        embedded_ok=True,
        backend="mosquitto",
        mosquitto_path=str(tmp_path / "no-such-mosquitto"),
    )
    with pytest.raises(BrokerNotFound):
        broker.start()


def test_broker_that_exits_reports_code_and_log(tmp_path: Path) -> None:
    exe = _script(
        tmp_path / "bad-broker", "import sys\nprint('bad option', file=sys.stderr)\nsys.exit(3)\n"
    )
    broker = LocalBroker(workdir=tmp_path, mosquitto_path=exe)
    with pytest.raises(BrokerError, match="exited with code 3") as info:
        broker.start()
    assert "bad option" in str(info.value)
    assert not broker.running


def test_broker_that_never_listens_times_out_and_is_killed(tmp_path: Path) -> None:
    # Ignores SIGTERM too, so stop() must escalate to SIGKILL.
    exe = _script(
        tmp_path / "deaf-broker",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(60)\n",
    )
    broker = LocalBroker(
        port=free_port(),  # an explicit port: one attempt, no retry on another port
        workdir=tmp_path,
        mosquitto_path=exe,
        start_timeout_s=0.5,
        stop_timeout_s=0.5,
    )
    with pytest.raises(BrokerError, match="did not accept connections"):
        broker.start()
    assert not broker.running
    assert broker.pid is None


def test_mosquitto_round_trip_stop_and_restart_on_same_port(tmp_path: Path, mosquitto: str) -> None:
    broker = LocalBroker(workdir=tmp_path)
    try:
        broker.start()
        assert broker.kind == "mosquitto"
        assert broker.protocol == "5"
        port = broker.port
        assert port > 0
        with mqtt_subscriber(broker, "t/#", protocol=5) as sub:
            publish(broker, "t/1", b"one")
            assert sub.wait_for(lambda m: m.topic == "t/1").payload == b"one"

        broker.stop()
        assert not broker.running
        assert _refuses(broker.host, port)

        broker.start()
        assert broker.port == port
        with mqtt_subscriber(broker, "t/#") as sub:
            publish(broker, "t/2", b"two")
            assert sub.wait_for().payload == b"two"

        broker.restart()
        assert broker.port == port
        assert mqtt_ping(broker.host, port)
    finally:
        broker.stop()
    log = broker.read_log()
    assert f"port {port}" in log  # mosquitto logged its listener into our log file


def test_explicit_port_in_use_is_a_clear_error(tmp_path: Path, mosquitto: str) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        broker = LocalBroker(port=port, workdir=tmp_path)
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            broker.start()
        assert not broker.running
        assert broker.port == port  # an explicit port is never silently changed


def test_context_manager_stops_and_removes_its_temp_dir(mosquitto: str) -> None:
    with LocalBroker() as broker:
        workdir = broker.workdir
        port = broker.port
        assert (workdir / "mosquitto.conf").is_file()
        assert mqtt_ping(broker.host, port)
    assert not broker.running
    assert not workdir.exists()
    assert _refuses("127.0.0.1", port)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_embedded_amqtt_broker_round_trip(tmp_path: Path) -> None:
    if importlib.util.find_spec("amqtt") is None:
        pytest.skip("amqtt (extra 'demo') is not installed / 未安装 amqtt")
    broker = LocalBroker(
        workdir=tmp_path, embedded_ok=True, mosquitto_path=str(tmp_path / "no-mosquitto")
    )
    try:
        broker.start()
        assert broker.kind == "amqtt"
        assert broker.protocol == "3.1.1"
        with mqtt_subscriber(broker, "e/#", protocol="3.1.1") as sub:
            publish(broker, "e/1", b"x", protocol="3.1.1")
            assert sub.wait_for().payload == b"x"
        port = broker.port
        broker.restart()
        assert broker.port == port
        assert mqtt_ping(broker.host, port)
    finally:
        broker.stop()


def test_stop_is_idempotent_and_prompt(tmp_path: Path, mosquitto: str) -> None:
    broker = LocalBroker(workdir=tmp_path)
    broker.stop()  # never started: nothing to do
    broker.start()
    pid = broker.pid
    assert pid is not None
    broker.stop()
    broker.stop()
    # the process is gone (reaped), not merely signalled
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
