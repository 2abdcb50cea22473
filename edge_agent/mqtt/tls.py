"""TLS to the broker, shared by the publisher, ``edge-agent tail`` and ``check-config``.

One function builds the client's :class:`ssl.SSLContext` from the ``mqtt.tls`` settings, so
the agent and the console verify the broker the same way, and ``check-config`` finds a
missing or unreadable CA, certificate or key before ``run`` does. The other helpers decide
whether credentials may go out unencrypted and put a failed handshake into words.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass


class TlsFileError(ValueError):
    """A CA, certificate or key file cannot be used; ``key`` names the setting (``ca_file``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class TlsSettings:
    """What :func:`client_context` needs (the ``mqtt.tls`` section, secrets resolved)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    insecure: bool = False


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails. paho 2.x drops the socket of a failed
    handshake without closing it: one file descriptor per retry, until the garbage
    collector finds it (a ResourceWarning)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def check_readable(key: str, path: str) -> None:
    """Raise :class:`TlsFileError` when ``path`` (the setting ``key``) cannot be read."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise TlsFileError(key, f"file not found: {path} / 文件不存在") from None
    except IsADirectoryError:
        raise TlsFileError(key, f"is a folder, not a file: {path} / 这是目录，不是文件") from None
    except OSError as err:
        raise TlsFileError(
            key, f"cannot read {path}: {err.strerror or err} / 无法读取该文件"
        ) from None


def client_context(tls: TlsSettings, *, check_key: bool = True) -> ssl.SSLContext:
    """A client context that verifies the broker: against ``ca_file``, else the system CAs.

    Raises :class:`TlsFileError` naming the setting at fault. ``check_key=False`` skips
    loading the client key (``check-config`` on a machine where its passphrase, a
    credential, is not available).
    """
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None:
            check_readable(key, path)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file is not None:
        # create_default_context(cafile=) would also load the system CAs first; a
        # private CA is meant to be the only one trusted.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except ssl.SSLError as err:
            raise TlsFileError(
                "ca_file",
                f"not a PEM CA certificate: {tls.ca_file} ({err.reason or err}) / "
                "不是 PEM 格式的 CA 证书",
            ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.sslsocket_class = _ClosingSSLSocket
    if tls.insecure:
        ctx.check_hostname = False  # still CERT_REQUIRED: only the host name is not checked
    if tls.cert_file is not None and check_key:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
        except ssl.SSLError as err:
            raise TlsFileError(
                "cert_file",
                f"cannot use the client certificate and key ({err.reason or err}): wrong "
                "passphrase, not PEM, or a key that does not match / 客户端证书或私钥无法使用",
            ) from None
    return ctx


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``): traffic that
    never leaves the gateway."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def describe_error(err: BaseException, tls: TlsSettings | None) -> str:
    """The reason a TLS handshake failed, in words an installer can act on."""
    if isinstance(err, ssl.SSLCertVerificationError):
        what = getattr(err, "verify_message", None) or getattr(err, "reason", None) or str(err)
        if tls is None:  # the caller does not know the settings (a given SSLContext)
            where = ""
        elif tls.ca_file:
            where = f" against {tls.ca_file}"
        else:
            where = " against the system CAs (mqtt.tls.ca_file not set)"
        return (
            f"TLS certificate verification failed{where}: {what} / TLS 证书校验失败，"
            "请检查 mqtt.tls.ca_file"
        )
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed: {getattr(err, 'reason', None) or err} / TLS 握手失败"
    return f"{type(err).__name__}: {err}"
