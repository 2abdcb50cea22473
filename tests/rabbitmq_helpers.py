"""A RabbitMQ node of the tests' own, with the MQTT plugin, on ephemeral loopback ports.

RabbitMQ 3.x speaks MQTT 3.1.1 only and closes an MQTT 5 CONNECT without answering;
it maps ``.`` in topics to ``/``. The broker interop tests run the agent through it.

:class:`RabbitMqBroker` runs the Debian ``rabbitmq-server`` script as a child process
with everything in a work folder: its own node name, Mnesia and log directories, an
``enabled_plugins`` file that enables ``rabbitmq_mqtt``, a ``rabbitmq.conf`` that binds
AMQP and MQTT to 127.0.0.1 on free ports and defines the one user, and its own
``epmd`` (Erlang port mapper) on a free loopback port, started by us so that no epmd
daemon outlives the tests. ``HOME`` points into the work folder too, for the Erlang
cookie. ``stop()`` ends the node and its epmd; nothing is left running.

It satisfies :class:`tests.mqtt_helpers.MqttBroker` and has ``username``/``password``,
which ``mqtt_subscriber`` and ``publish`` use.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO

from edge_agent.tools.localbroker import BrokerError, free_port, mqtt_ping, stop_process

INSTALL_HINT = (
    "The broker interop tests need RabbitMQ. Install it with: "
    "sudo apt-get install -y rabbitmq-server (./scripts/test does this when run as root; "
    "EDGE_AGENT_RABBITMQ_SERVER=/path/to/sbin/rabbitmq-server points at another install).\n"
    "代理互通测试需要 RabbitMQ。请运行：sudo apt-get install -y rabbitmq-server"
    "（以 root 运行 ./scripts/test 会自动安装）。"
)


def find_rabbitmq_server() -> str | None:
    """The real ``sbin/rabbitmq-server`` script (not Debian's wrapper, which runs it as
    the ``rabbitmq`` user with the system's config), or None when not installed."""
    override = os.environ.get("EDGE_AGENT_RABBITMQ_SERVER")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"))
    return found[-1] if found else None


def find_epmd() -> str | None:
    return shutil.which("epmd") or next(
        iter(sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))), None
    )


def mqtt_login_ok(host: str, port: int, user: str, password: str, timeout_s: float) -> bool:
    """True when an MQTT 3.1.1 CONNECT with this user name and password is accepted."""
    return mqtt_ping(host, port, timeout_s, username=user, password=password)


class RabbitMqBroker:
    """One RabbitMQ node with the MQTT plugin; ``port`` is its MQTT port."""

    host = "127.0.0.1"
    username = "edge-test"
    password = "edge-test-password"

    def __init__(self, workdir: Path, start_timeout_s: float = 180.0) -> None:
        self.workdir = workdir
        self.start_timeout_s = start_timeout_s
        self.nodename = f"edgetest-{uuid.uuid4().hex[:8]}@localhost"
        self._mqtt_port = free_port(self.host)
        self._amqp_port = free_port(self.host)
        self._dist_port = free_port(self.host)
        self._epmd_port = free_port(self.host)
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        return self._mqtt_port

    @property
    def protocol(self) -> str:
        return "3.1.1"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "rabbitmq.out"

    def start(self) -> None:
        if self.running:
            return
        server, epmd = find_rabbitmq_server(), find_epmd()
        if server is None or epmd is None:
            raise BrokerError(INSTALL_HINT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = self._prepare()
        self._log = self.log_path.open("ab")
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self._epmd_port), "-address", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._wait_listening(self._epmd_port, "epmd")
        self._server = subprocess.Popen(
            [server],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,  # its own process group, ended as a whole in stop()
        )
        deadline = time.monotonic() + self.start_timeout_s
        while not mqtt_login_ok(self.host, self._mqtt_port, self.username, self.password, 2.0):
            if self._server.poll() is not None or time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise BrokerError(
                    f"RabbitMQ did not accept MQTT logins on {self.host}:{self._mqtt_port} "
                    f"within {self.start_timeout_s:.0f} s:\n{tail}"
                )
            time.sleep(0.2)

    def _prepare(self) -> dict[str, str]:
        base = self.workdir
        (base / "home").mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            "# generated by tests/rabbitmq_helpers.py\n"
            f"listeners.tcp.default = 127.0.0.1:{self._amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self._mqtt_port}\n"
            "mqtt.allow_anonymous = false\n"
            f"default_user = {self.username}\n"
            f"default_pass = {self.password}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = info\n",
            encoding="utf-8",
        )
        (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", encoding="utf-8")
        (base / "rabbitmq-env.conf").write_text("", encoding="utf-8")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k != "HOME"
        }
        env.update(
            HOME=str(base / "home"),  # the Erlang cookie goes here
            ERL_EPMD_PORT=str(self._epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "rabbitmq.pid"),
            RABBITMQ_DIST_PORT=str(self._dist_port),
            # Erlang distribution on loopback only.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _wait_listening(self, port: int, what: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.host, port), 0.5):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"{what} did not listen on {self.host}:{port}")
            time.sleep(0.05)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the node (the script passes SIGTERM to the Erlang VM), then its epmd."""
        server, self._server = self._server, None
        if server is not None:
            stop_process(server, 60.0, "rabbitmq-server")
            # Whatever the VM left in the group (it ends its helpers itself).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.pid, signal.SIGKILL)
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            stop_process(epmd, 5.0, "epmd")
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RabbitMqBroker {self.nodename} mqtt {self.host}:{self._mqtt_port}>"
