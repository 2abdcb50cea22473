"""A mosquitto with a TLS listener, and a throw-away CA to sign its certificate.

:class:`TlsBroker` is a :class:`~edge_agent.tools.localbroker.LocalBroker` (plain listener on
``.port``, anonymous, which the readiness check and ``tests.mqtt_helpers.publish`` use)
with a second listener on ``.tls_port``: TLS with a server certificate for ``localhost``,
``127.0.0.1`` and ``::1`` signed by :func:`make_ca`'s CA, and only ``USER``/``PASSWORD``
allowed in. Both listeners share one topic space, so a test can publish in plain text and
check what a TLS client receives.

The CA and certificate are made at test time with the ``openssl`` command (the
``cryptography`` package is not a dependency), into the test's own folder.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.tools.localbroker import BrokerError, LocalBroker, find_mosquitto, free_port
from tests.mqtt_helpers import NO_BROKER_MESSAGE

USER = "campus-agent"
PASSWORD = "tls-test-secret"
CLIENT_KEY_PASSWORD = "client-key-secret"


@dataclass(frozen=True)
class TestCa:
    """Files of a throw-away CA and one server certificate it signed."""

    __test__ = False  # not a test class

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # encrypted with CLIENT_KEY_PASSWORD


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("the TLS tests need the openssl command: apt-get install -y openssl")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_ca(folder: Path) -> TestCa:
    """A CA (P-256, two days) and a server certificate for localhost/127.0.0.1/::1."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=edge-agent test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n",
        encoding="utf-8",
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "client-plain.key", "-out", "client.csr",
        "-subj", "/CN=campus-agent", cwd=folder,
    )  # fmt: skip
    (folder / "client.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n",
        encoding="utf-8",
    )
    _openssl(
        "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.pem", "-days", "2", "-extfile", "client.ext",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "pkey", "-in", "client-plain.key", "-aes256", "-passout", f"pass:{CLIENT_KEY_PASSWORD}",
        "-out", "client.key", cwd=folder,
    )  # fmt: skip
    return TestCa(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )


def mosquitto_password_line(user: str, password: str) -> str:
    """A mosquitto 2 password-file line (``$7$``: PBKDF2-SHA512, 101 rounds, 12-byte salt),
    as ``mosquitto_passwd`` writes it."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    b64 = base64.b64encode
    return f"{user}:$7$101${b64(salt).decode()}${b64(digest).decode()}\n"


class TlsBroker(LocalBroker):
    """mosquitto with a plain anonymous listener (``.port``), a TLS one with a password
    (``.tls_port``) and one that also wants a client certificate (``.mtls_port``), all on
    127.0.0.1."""

    def __init__(self, workdir: Path, ca: TestCa) -> None:
        super().__init__(workdir=workdir, backend="mosquitto")
        self.ca = ca
        self.tls_port = free_port(self.host)
        self.mtls_port = free_port(self.host)

    def _write_mosquitto_config(self) -> Path:
        passwords = self.workdir / "passwords"
        passwords.write_text(mosquitto_password_line(USER, PASSWORD), encoding="utf-8")
        passwords.chmod(0o600)
        conf = self.workdir / "mosquitto.conf"
        # As root mosquitto would drop to the 'mosquitto' user, which cannot read the
        # test's private folder (key, password file): stay the user that started it.
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            "per_listener_settings true\n"
            f"{user}"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type all\n"
            "connection_messages true\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            f"listener {self.tls_port} {self.host}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"cafile {self.ca.ca_file}\n"
            f"certfile {self.ca.server_cert}\n"
            f"keyfile {self.ca.server_key}\n"
            f"listener {self.mtls_port} {self.host}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"cafile {self.ca.ca_file}\n"
            f"certfile {self.ca.server_cert}\n"
            f"keyfile {self.ca.server_key}\n"
            "require_certificate true\n",
            encoding="utf-8",
        )
        return conf


def start_tls_broker(workdir: Path) -> TlsBroker:
    """Make a CA and start a :class:`TlsBroker` in ``workdir``, or fail with a hint."""
    if find_mosquitto() is None:
        pytest.fail(NO_BROKER_MESSAGE, pytrace=False)
    broker = TlsBroker(workdir / "mosquitto", make_ca(workdir / "ca"))
    try:
        broker.start()
    except BrokerError as err:
        pytest.fail(f"could not start mosquitto with TLS: {err}", pytrace=False)
    return broker
