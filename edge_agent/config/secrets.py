"""Secret references in config strings: ``${ENV_NAME}`` and ``${cred:NAME}``.

Secrets never live in the YAML file. A secret field holds a reference instead:

``${MQTT_PASSWORD}``
    the environment variable ``MQTT_PASSWORD`` (handy for ``edge-agent demo``
    and containers);
``${cred:mqtt-password}``
    the file ``$CREDENTIALS_DIRECTORY/mqtt-password``, which systemd fills from
    ``LoadCredential=mqtt-password:/etc/edge-agent/credentials/mqtt-password``.
    One trailing newline (``echo`` adds one) is stripped.

``$${`` stands for a literal ``${``. A reference may sit inside a longer
string (``user:${cred:x}``), but the config loader requires secret fields to be
exactly one reference (:func:`is_reference`), so a password can never be
written into the file by mistake. An empty or missing secret is an error: an
empty password is almost always a forgotten file (the unit's ``SetCredential=``
fallback gives a lone newline, so an empty secret, when the ``LoadCredential=``
file is missing).

Error messages name the variable or credential, never a secret value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SecretError", "is_reference", "resolve"]

# Environment names as POSIX shells accept them; credential names as systemd
# accepts them (a file name: no '/', not '.' or '..'), kept to a safe ASCII set.
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CRED_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.@-]*"
_REFERENCE = rf"\$\{{(?:cred:(?P<cred>{_CRED_NAME})|(?P<env>{_ENV_NAME}))\}}"
_TOKEN = re.compile(rf"\$\$\{{|{_REFERENCE}|\$\{{")
_WHOLE = re.compile(rf"{_REFERENCE}\Z")

#: Largest credential file read (systemd itself caps credentials at 1 MiB).
_MAX_CREDENTIAL_BYTES = 1024 * 1024


class SecretError(ValueError):
    """A secret reference cannot be resolved; the message says which one and why."""


def is_reference(value: str) -> bool:
    """True when ``value`` is exactly one ``${ENV}`` or ``${cred:NAME}`` reference."""
    return _WHOLE.match(value) is not None


def resolve(
    value: str,
    *,
    env: Mapping[str, str] = os.environ,
    cred_dir: str | None = None,
) -> str:
    """Replace every reference in ``value`` by the secret it names.

    ``cred_dir`` defaults to ``env["CREDENTIALS_DIRECTORY"]``. Raises
    :class:`SecretError` when a variable is unset or empty, a credential file is
    missing, unreadable or empty, or a ``${`` does not start a valid reference.
    """
    parts: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(value):
        parts.append(value[pos : match.start()])
        pos = match.end()
        if match.group(0) == "$${":
            parts.append("${")
        elif match.group("env") is not None:
            parts.append(_from_env(match.group("env"), env))
        elif match.group("cred") is not None:
            parts.append(_from_credential(match.group("cred"), env, cred_dir))
        else:
            raise SecretError(
                f"malformed secret reference at {value[match.start() : match.start() + 40]!r}: "
                "use ${ENV_NAME} or ${cred:NAME} (write $${ for a literal ${) / "
                "密钥引用格式错误，应为 ${环境变量名} 或 ${cred:凭据名}"
            )
    parts.append(value[pos:])
    return "".join(parts)


def _from_env(name: str, env: Mapping[str, str]) -> str:
    secret = env.get(name)
    if secret is None:
        raise SecretError(
            f"${{{name}}}: environment variable {name} is not set / 环境变量 {name} 未设置"
        )
    if secret == "":
        raise SecretError(
            f"${{{name}}}: environment variable {name} is empty / 环境变量 {name} 为空"
        )
    return secret


def _from_credential(name: str, env: Mapping[str, str], cred_dir: str | None) -> str:
    ref = f"${{cred:{name}}}"
    directory = cred_dir if cred_dir is not None else env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError(
            f"{ref}: $CREDENTIALS_DIRECTORY is not set; run the agent under systemd with "
            f"LoadCredential={name}:/etc/edge-agent/credentials/{name}, or set "
            "CREDENTIALS_DIRECTORY to a folder holding the file / "
            f"未设置 $CREDENTIALS_DIRECTORY：请在 systemd 单元中配置 LoadCredential={name}:..."
        )
    path = Path(directory) / name
    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_CREDENTIAL_BYTES + 1)
    except FileNotFoundError as err:
        raise SecretError(
            f"{ref}: credential file {path} does not exist; add "
            f"LoadCredential={name}:/etc/edge-agent/credentials/{name} to the unit / "
            f"凭据文件 {path} 不存在"
        ) from err
    except OSError as err:
        raise SecretError(
            f"{ref}: cannot read credential file {path}: {err.strerror} / 无法读取凭据文件 {path}"
        ) from err
    if len(raw) > _MAX_CREDENTIAL_BYTES:
        raise SecretError(f"{ref}: credential file {path} is larger than 1 MiB / 凭据文件过大")
    try:
        secret = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SecretError(
            f"{ref}: credential file {path} is not UTF-8 text / 凭据文件不是 UTF-8 文本"
        ) from err
    # Strip exactly one line ending, as `echo secret > file` adds; a secret may
    # legitimately end in other whitespace.
    if secret.endswith("\r\n"):
        secret = secret[:-2]
    elif secret.endswith("\n"):
        secret = secret[:-1]
    if secret == "":
        raise SecretError(
            f"{ref}: credential {name} is empty; is the file behind LoadCredential={name}:... "
            "missing or empty? / 凭据为空：请检查 LoadCredential 指向的文件是否存在且非空"
        )
    return secret
