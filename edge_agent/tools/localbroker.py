"""A throw-away MQTT broker on loopback, for ``edge-agent demo`` and the test suite.

:class:`LocalBroker` runs ``mosquitto`` (MQTT 5) as a child process with a generated
config: one listener on ``127.0.0.1`` and an ephemeral port, anonymous access, no
persistence, log to a file in its work directory. When mosquitto is not installed and
the caller allows it (``embedded_ok=True``), it runs the pure-Python ``amqtt`` broker
(MQTT 3.1.1 only) in a child process instead; see :mod:`edge_agent.tools._amqtt_broker`.

The API is synchronous on purpose: it is used from the CLI before the event loop
starts and from pytest fixtures. ``start()`` returns only once the broker accepts
TCP connections; ``stop()`` then ``start()`` (or ``restart()``) brings the same broker
back on the same port, which the outage tests rely on.

::

    with LocalBroker() as broker:
        print(broker.host, broker.port, broker.protocol)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from edge_agent.errors import EdgeAgentError

log = logging.getLogger(__name__)

Backend = Literal["auto", "mosquitto", "amqtt"]

#: Where Debian and source builds put the daemon; ``/usr/sbin`` is not on a normal user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")

INSTALL_HINT = (
    "mosquitto is not installed. Install it with: sudo apt-get install -y mosquitto\n"
    "未安装 mosquitto。请运行：sudo apt-get install -y mosquitto"
)
EMBEDDED_HINT = (
    "Or install the embedded Python broker: pip install 'campus-edge-agent[demo]' (amqtt)\n"
    "或安装内置的 Python 代理：pip install 'campus-edge-agent[demo]'（amqtt）"
)


class BrokerError(EdgeAgentError):
    """The local broker could not be started or stopped."""


class BrokerNotFound(BrokerError):
    """Neither mosquitto nor (when allowed) the embedded amqtt broker is available."""


class BrokerPortInUse(BrokerError):
    """Another program (often a system mosquitto) already listens on the port."""


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (or it cannot be bound).

    ``SO_REUSEADDR`` as mosquitto sets it: connections of a broker we just stopped,
    still in TIME_WAIT, do not count; another listener does.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def find_mosquitto() -> str | None:
    """Return the path of the ``mosquitto`` executable, or ``None`` when it is not installed.

    Looks on ``PATH`` first, then in ``/usr/sbin`` and ``/usr/local/sbin``.
    """
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def amqtt_available() -> bool:
    """True when the optional ``amqtt`` package (extra ``demo``) can be imported."""
    return importlib.util.find_spec("amqtt") is not None


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def mqtt_ping(
    host: str,
    port: int,
    timeout_s: float = 1.0,
    *,
    username: str | None = None,
    password: str | None = None,
) -> bool:
    """True when an MQTT broker on ``host:port`` accepts an MQTT 3.1.1 CONNECT (with this
    user name and password, when given).

    A bare TCP connect would also succeed against any other program that grabbed the
    port, and leaves "no data" errors in the broker log; a real handshake does neither.
    """
    client_id = f"edge-agent-probe-{os.getpid()}".encode()
    # CONNECT: protocol "MQTT" level 4, clean session (+ user name, password flags),
    # keepalive 10 s, then the client id, user name and password.
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    fields = [client_id] + [v.encode() for v in (username, password) if v is not None]
    variable = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x0a"
    variable += b"".join(len(f).to_bytes(2, "big") + f for f in fields)
    if len(variable) > 127:  # the one-byte remaining length of this small packet
        raise ValueError("user name and password too long for the broker probe")
    packet = b"\x10" + bytes([len(variable)]) + variable
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(packet)
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    return False
                connack += chunk
            # CONNACK is 0x20 0x02 <session present> <return code>; 0 = accepted.
            ok = connack[0] == 0x20 and connack[3] == 0
            if ok:
                sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
            return ok
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float, what: str = "broker") -> None:
    """Terminate, wait, then kill: the child never outlives this call."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s pid %d ignored SIGTERM for %.0f s; killing it", what, proc.pid, timeout_s
            )
            proc.kill()
            proc.wait()


def _finalize(proc_box: list[subprocess.Popen[bytes]], tmpdir: str | None) -> None:
    # Runs at garbage collection or interpreter exit when the owner forgot stop().
    for proc in proc_box:
        stop_process(proc, 2.0)
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


class LocalBroker:
    """An MQTT broker child process on loopback (mosquitto, or amqtt as a fallback).

    ``port=0`` picks a free ephemeral port at the first :meth:`start`; later starts reuse
    it. ``workdir`` holds the generated config and ``broker.log``; by default a temporary
    directory that is removed when the object is collected or the interpreter exits.
    ``mosquitto_path`` overrides :func:`find_mosquitto`. ``backend`` forces one broker;
    ``"auto"`` means mosquitto, else amqtt when ``embedded_ok`` is true.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        workdir: Path | None = None,
        *,
        embedded_ok: bool = False,
        persistence: bool = False,
        backend: Backend = "auto",
        mosquitto_path: str | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.persistence = persistence
        self.host = host
        self._port = port
        self._port_chosen_by_us = port == 0
        self.embedded_ok = embedded_ok
        self.backend: Backend = backend
        self.mosquitto_path = mosquitto_path
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._tmpdir: str | None = None
        if workdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="edge-agent-broker-")
            workdir = Path(self._tmpdir)
        self.workdir = Path(workdir)
        self._resolved: tuple[Literal["mosquitto", "amqtt"], str] | None = None
        # A one-element list so the finalizer sees the current process without holding self.
        self._proc_box: list[subprocess.Popen[bytes]] = []
        self._log_file: IO[bytes] | None = None
        self._finalizer = weakref.finalize(self, _finalize, self._proc_box, self._tmpdir)

    # -- properties ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; 0 until the first :meth:`start` when it was chosen automatically."""
        return self._port

    @property
    def kind(self) -> Literal["mosquitto", "amqtt"]:
        """Which broker runs: ``"mosquitto"`` or ``"amqtt"``. Raises :class:`BrokerNotFound`."""
        return self._resolve()[0]

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """Highest MQTT version the broker speaks: ``"5"`` (mosquitto) or ``"3.1.1"`` (amqtt)."""
        return "5" if self.kind == "mosquitto" else "3.1.1"

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for logs and config files."""
        return f"mqtt://{self.host}:{self._port}"

    @property
    def log_path(self) -> Path:
        """The broker's own log (stdout and stderr of the child process)."""
        return self.workdir / "broker.log"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return bool(self._proc_box) and self._proc_box[0].poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or ``None``."""
        return self._proc_box[0].pid if self.running else None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker and return once it accepts TCP connections.

        Does nothing when it is already running. Raises :class:`BrokerNotFound` when no
        broker is installed and :class:`BrokerError` when it exits or does not answer
        within ``start_timeout_s``.
        """
        if self.running:
            return
        kind, executable = self._resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A port picked by free_port() can be taken by someone else before the broker
        # binds it; only then (and only before the first successful start) pick again.
        attempts = 3 if self._port_chosen_by_us and self._port == 0 else 1
        for attempt in range(1, attempts + 1):
            if self._port == 0 or (attempt > 1 and self._port_chosen_by_us):
                self._port = free_port(self.host)
            if port_in_use(self.host, self._port):
                # Our broker would fail to bind, but until it exits the readiness check
                # would reach the other broker and we would use someone else's broker.
                if attempt < attempts:
                    continue
                raise BrokerPortInUse(
                    f"port {self._port} on {self.host} is already in use (another MQTT broker, "
                    "e.g. the system's mosquitto service?); not using someone else's broker / "
                    f"端口 {self._port} 已被占用（可能是系统自带的 mosquitto 服务），"
                    "不会使用他人的代理"
                )
            try:
                self._spawn(kind, executable)
                self._wait_ready()
            except BrokerError:
                self._cleanup_process()
                if attempt == attempts:
                    raise
                log.debug("broker did not start on port %d, trying another port", self._port)
                continue
            self._port_chosen_by_us = False
            log.info("%s broker listening on %s:%d (pid %s)", kind, self.host, self._port, self.pid)
            return

    def stop(self) -> None:
        """Stop the broker (SIGTERM, wait, SIGKILL). Safe to call when it is not running."""
        if self._proc_box:
            log.info("stopping %s broker on %s:%d", self._resolved_kind(), self.host, self._port)
        self._cleanup_process()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and remove the temporary work directory (if we made it)."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalBroker {self._resolved_kind()} {self.host}:{self._port} {state}>"

    def read_log(self) -> str:
        """The broker log so far (empty when there is none)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- internals ----------------------------------------------------------------------

    def _resolved_kind(self) -> str:
        return self._resolved[0] if self._resolved else "?"

    def _resolve(self) -> tuple[Literal["mosquitto", "amqtt"], str]:
        if self._resolved is None:
            self._resolved = self._find_backend()
        return self._resolved

    def _find_backend(self) -> tuple[Literal["mosquitto", "amqtt"], str]:
        if self.backend in ("auto", "mosquitto"):
            path = self.mosquitto_path or find_mosquitto()
            if path and Path(path).is_file() and os.access(path, os.X_OK):
                return ("mosquitto", path)
            if self.backend == "mosquitto" or not self.embedded_ok:
                where = f" (looked for {self.mosquitto_path})" if self.mosquitto_path else ""
                hint = f"{INSTALL_HINT}\n{EMBEDDED_HINT}" if self.embedded_ok else INSTALL_HINT
                raise BrokerNotFound(f"no mosquitto broker found{where}.\n{hint}")
        if not amqtt_available():
            raise BrokerNotFound(
                f"neither mosquitto nor the embedded amqtt broker is installed.\n"
                f"{INSTALL_HINT}\n{EMBEDDED_HINT}"
            )
        return ("amqtt", sys.executable)

    def _write_mosquitto_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        persistence = (
            f"persistence true\npersistence_location {self.workdir}/\n"
            if self.persistence
            else "persistence false\n"
        )
        if self.persistence and os.geteuid() == 0:
            # As root, mosquitto drops to the 'mosquitto' user, which cannot write the
            # session database into our work folder: stay the user that started it.
            persistence += "user root\n"
        conf.write_text(
            "# generated by edge_agent.tools.localbroker; rewritten at every start\n"
            f"listener {self._port} {self.host}\n"
            "allow_anonymous true\n"
            # mosquitto drops QoS 1 messages past 1000 queued for one slow subscriber
            # (a test's or the bench's on a busy box): here every message must arrive
            "max_queued_messages 100000\n"
            f"{persistence}"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "log_type information\n"
            "connection_messages true\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n",
            encoding="utf-8",
        )
        return conf

    def _spawn(self, kind: Literal["mosquitto", "amqtt"], executable: str) -> None:
        if kind == "mosquitto":
            argv = [executable, "-c", str(self._write_mosquitto_config())]
        else:
            argv = [executable, "-m", "edge_agent.tools._amqtt_broker", self.host, str(self._port)]
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"--- starting: {' '.join(argv)}\n".encode())
        self._log_file.flush()
        env = dict(os.environ)
        if kind == "amqtt":
            # The child imports edge_agent from wherever this process found it.
            pkg_root = str(Path(__file__).resolve().parents[2])  # the folder holding edge_agent/
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (pkg_root, env.get("PYTHONPATH", "")) if p
            )
        log.debug("starting broker: %s", argv)
        proc = subprocess.Popen(  # noqa: S603 - argv is built here, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            # Own session: Ctrl-C in the demo terminal reaches the agent, which then stops
            # the broker in order instead of both dying at once.
            start_new_session=True,
        )
        self._proc_box[:] = [proc]

    def _wait_ready(self) -> None:
        proc = self._proc_box[0]
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"{self._resolved_kind()} exited with code {code} before accepting "
                    f"connections on {self.host}:{self._port}. Log ({self.log_path}):\n"
                    f"{self._log_tail()}"
                )
            if mqtt_ping(self.host, self._port, 1.0) and proc.poll() is None:
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"{self._resolved_kind()} did not accept connections on {self.host}:"
                    f"{self._port} within {self.start_timeout_s:.0f} s. Log ({self.log_path}):\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.read_log().splitlines()[-lines:])

    def _cleanup_process(self) -> None:
        for proc in self._proc_box:
            stop_process(proc, self.stop_timeout_s)
        self._proc_box.clear()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
