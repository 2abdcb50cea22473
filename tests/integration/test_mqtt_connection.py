"""Every failed MQTT connection attempt says why, once, with host:port (real sockets).

An unreachable port, a wrong password on mosquitto, a host name that does not resolve,
and two gateways with the same client id: the installer reads one WARNING with the
reason, not silence and not a line per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.mqtt.publisher import MqttSettings, Publisher
from edge_agent.outbox.store import Outbox
from edge_agent.supervisor import mqtt_settings
from edge_agent.tools.localbroker import LocalBroker, find_mosquitto, free_port
from tests.e2e.helpers import output, start_agent
from tests.mqtt_helpers import MqttBroker

LOGGER = "edge_agent.mqtt.publisher"
ROOT = "campus/conn-school/gw1"
#: attempts to watch before counting log lines: enough to see that repeats stay quiet
ATTEMPTS = 3


@contextlib.asynccontextmanager
async def running_publisher(tmp_path: Path, **settings: Any) -> AsyncIterator[Publisher]:
    """A publisher (real outbox, no devices) trying to connect until the block ends."""
    name = uuid.uuid4().hex[:8]
    outbox = Outbox(tmp_path / f"outbox-{name}.db", commit_interval_s=0.05)
    await outbox.open()
    options: dict[str, Any] = {
        "root": ROOT,
        "client_id": f"edge-conn-{name}",
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
        **settings,
    }
    pub = Publisher(MqttSettings(**options), outbox)
    task = asyncio.create_task(pub.run())
    try:
        yield pub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await outbox.close()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for ``condition`` (polled); fail saying ``what`` did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        await asyncio.sleep(0.05)


def attempts(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for m in records(caplog, logging.DEBUG) if m.startswith("MQTT connecting"))


async def test_unreachable_port_is_one_warning_with_host_port_and_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    port = free_port()  # nothing listens there
    async with running_publisher(tmp_path, host="127.0.0.1", port=port) as pub:
        await until(f"{ATTEMPTS} attempts", lambda: attempts(caplog) >= ATTEMPTS)
        assert not pub.connected.is_set()
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert f"127.0.0.1:{port}" in warnings[0]
    assert "refused" in warnings[0]


async def test_a_port_that_drops_every_connect_alternates_versions_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an MQTT broker at all (or one that drops everything): the agent tries MQTT 5,
    then 3.1.1, then 5 again..., and says once that nobody answers its CONNECT."""
    caplog.set_level(logging.DEBUG, LOGGER)

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the CONNECT arrived
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running_publisher(tmp_path, host="127.0.0.1", port=port):
            await until("four attempts", lambda: attempts(caplog) >= 4)
    finally:
        server.close()
        await server.wait_closed()
    versions = [
        m.rsplit(" ", 1)[1]
        for m in records(caplog, logging.DEBUG)
        if m.startswith("MQTT connecting")
    ]
    assert versions[:4] == ["5", "3.1.1", "5", "3.1.1"]
    assert len([m for m in records(caplog, logging.INFO) if "does not accept MQTT 5" in m]) == 1
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert f"127.0.0.1:{port}" in warnings[0]
    assert "no answer to CONNECT" in warnings[0]


class PasswordMosquitto(LocalBroker):
    """mosquitto with a second listener that wants a user name and password.

    The first listener stays anonymous: LocalBroker's readiness check connects there.
    """

    user = "edge"
    password = "right-password"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir=workdir, backend="mosquitto")
        self.auth_port = free_port()

    def _write_mosquitto_config(self) -> Path:
        conf = super()._write_mosquitto_config()
        passwd = self.workdir / "passwd"
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        subprocess.run(
            [tool, "-b", "-c", str(passwd), self.user, self.password],
            check=True,
            capture_output=True,
        )
        passwd.chmod(0o600)
        text = conf.read_text(encoding="utf-8")
        if os.geteuid() == 0 and "user root" not in text:
            # As root, mosquitto drops to the 'mosquitto' user, which cannot read the
            # password file in our work folder: stay the user that started it.
            text += "user root\n"
        conf.write_text(
            "per_listener_settings true\n" + text + f"listener {self.auth_port} {self.host}\n"
            "allow_anonymous false\n"
            f"password_file {passwd}\n",
            encoding="utf-8",
        )
        return conf


@pytest.fixture
def password_mosquitto(tmp_path: Path) -> Iterator[PasswordMosquitto]:
    if find_mosquitto() is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("this test needs mosquitto and mosquitto_passwd (apt-get install mosquitto)")
    broker = PasswordMosquitto(tmp_path / "password-mosquitto")
    broker.start()
    yield broker
    broker.close()


async def test_wrong_password_on_mosquitto_is_one_credentials_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, password_mosquitto: PasswordMosquitto
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    broker = password_mosquitto
    async with running_publisher(
        tmp_path,
        host=broker.host,
        port=broker.auth_port,
        username=broker.user,
        password="wrong-password",
    ) as pub:
        await until(f"{ATTEMPTS} attempts", lambda: attempts(caplog) >= ATTEMPTS)
        assert not pub.connected.is_set()
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert f"{broker.host}:{broker.auth_port}" in warnings[0]
    assert "bad credentials" in warnings[0]
    assert "'edge'" in warnings[0]  # which user, never the password
    assert "wrong-password" not in caplog.text

    # the right password connects, and says so once, with the MQTT version
    caplog.clear()
    async with running_publisher(
        tmp_path,
        host=broker.host,
        port=broker.auth_port,
        username=broker.user,
        password=broker.password,
    ) as pub:
        await asyncio.wait_for(pub.connected.wait(), 30)
        assert pub.protocol == "5"
    assert records(caplog, logging.WARNING) == []
    assert any("with MQTT 5" in m for m in records(caplog, logging.INFO))


async def test_same_client_id_twice_says_session_taken_over_without_flooding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mqtt_broker: MqttBroker
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    same = f"edge-twin-{uuid.uuid4().hex[:6]}"
    where = {"host": mqtt_broker.host, "port": mqtt_broker.port, "client_id": same}
    async with (
        running_publisher(tmp_path, **where) as first,
        running_publisher(tmp_path, **where) as second,
    ):
        # each takes the session from the other about once a second
        await until(
            "eight connections between the twins",
            lambda: first.stats.connects + second.stats.connects >= 8,
        )
        connects = first.stats.connects + second.stats.connects
    warnings = records(caplog, logging.WARNING)
    # Over MQTT 5 a broker may say "session taken over" in its DISCONNECT; mosquitto 2.0
    # just closes the socket, so the first loss of each twin reads "connection lost" and
    # the second names the cause. Then nothing but DEBUG, however long they fight.
    assert len(warnings) <= 4 < connects, warnings
    taken_over = [line for line in warnings if "session taken over" in line]
    assert taken_over, warnings
    for line in taken_over:
        assert same in line
        assert f"{mqtt_broker.host}:{mqtt_broker.port}" in line


def _free_ipv6_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_bracketed_ipv6_host_from_the_config_connects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if find_mosquitto() is None:
        pytest.fail("this test needs mosquitto (apt-get install mosquitto)")
    try:
        port = _free_ipv6_port()
    except OSError as err:
        pytest.skip(f"no IPv6 loopback on this machine: {err}")
    caplog.set_level(logging.INFO, LOGGER)
    path = tmp_path / "agent.yaml"
    path.write_text(
        "site: {id: conn-school, gateway_id: gw1}\n"
        f'mqtt: {{host: "[::1]", port: {port}}}\n'
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n",
        encoding="utf-8",
    )
    settings = mqtt_settings(load_config(path))
    with LocalBroker(host="::1", port=port, workdir=tmp_path / "v6", backend="mosquitto"):
        async with running_publisher(tmp_path, host=settings.host, port=settings.port) as pub:
            await asyncio.wait_for(pub.connected.wait(), 30)
    assert f"MQTT connected to [::1]:{port} with MQTT 5" in caplog.text


def _network_namespace_prefix() -> list[str]:
    """``unshare`` into a network namespace with only loopback (paho needs it for its
    wake-up socket pair), from which a DNS query cannot leave the machine."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return []
    lo_up = [ip, "link", "set", "lo", "up"]
    for flags in (["--net"], ["--net", "--map-root-user"]):
        done = subprocess.run([unshare, *flags, *lo_up], capture_output=True, check=False)
        if done.returncode == 0:
            return [unshare, *flags, "sh", "-c", f'{" ".join(lo_up)} && exec "$@"', "sh"]
    return []


async def test_unresolvable_host_name_is_one_warning(tmp_path: Path) -> None:
    # The agent runs in a network namespace of its own: looking the name up there
    # fails at once, and no query goes to the machine's DNS server.
    prefix = _network_namespace_prefix()
    if not prefix:
        pytest.skip("no network namespace (unshare): the DNS query would leave this machine")
    host = "nonexistent.invalid"
    cfg = {
        "site": {"id": "conn-school", "gateway_id": "gw1"},
        "mqtt": {"host": host, "reconnect_min_s": 1, "reconnect_max_s": 1},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "logging": {"level": "DEBUG"},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = start_agent(path, prefix=prefix)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while output(proc).count(f"MQTT connecting to {host}:1883") < ATTEMPTS:
            if proc.poll() is not None or loop.time() > deadline:
                pytest.fail(f"agent did not retry {ATTEMPTS} times:\n{output(proc)}")
            await asyncio.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    log = output(proc)
    warnings = [line for line in log.splitlines() if "WARNING edge_agent.mqtt.publisher" in line]
    assert len(warnings) == 1, log
    assert f"{host}:1883" in warnings[0]
    assert "not resolved" in warnings[0]
