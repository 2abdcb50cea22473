"""Secret references: ${ENV} and ${cred:NAME} (systemd LoadCredential=)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.secrets import SecretError, is_reference, resolve


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${MQTT_PASSWORD}", True),
        ("${cred:mqtt-password}", True),
        ("${cred:pseudonym_secret.v2}", True),
        ("hunter2", False),
        ("", False),
        ("${MQTT_PASSWORD}x", False),
        ("x${MQTT_PASSWORD}", False),
        ("${A}${B}", False),
        ("${1BAD}", False),
        ("${cred:}", False),
        ("${cred:../etc/shadow}", False),
        ("$${MQTT_PASSWORD}", False),
        ("${MQTT_PASSWORD}\n", False),
    ],
)
def test_is_reference(value: str, expected: bool) -> None:
    assert is_reference(value) is expected


def test_env_reference() -> None:
    assert resolve("${MQTT_PASSWORD}", env={"MQTT_PASSWORD": "s3cret"}) == "s3cret"


def test_embedded_references_and_escape() -> None:
    env = {"USER_": "agent", "PW": "p@ss"}
    assert resolve("${USER_}:${PW}@broker", env=env) == "agent:p@ss@broker"
    assert resolve("literal $${PW} stays", env=env) == "literal ${PW} stays"
    assert resolve("no references, $ and {} alone", env=env) == "no references, $ and {} alone"


def test_missing_env_names_the_variable() -> None:
    with pytest.raises(SecretError, match=r"MQTT_PASSWORD is not set"):
        resolve("${MQTT_PASSWORD}", env={})


def test_empty_env_is_an_error() -> None:
    with pytest.raises(SecretError, match=r"MQTT_PASSWORD is empty"):
        resolve("${MQTT_PASSWORD}", env={"MQTT_PASSWORD": ""})


def test_default_env_is_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_TEST_SECRET", "from-os-environ")
    assert resolve("${EDGE_AGENT_TEST_SECRET}") == "from-os-environ"


def test_credential_strips_exactly_one_newline(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_bytes(b"s3cret \n\n")
    (tmp_path / "crlf").write_bytes(b"abc\r\n")
    (tmp_path / "plain").write_bytes(b"abc")
    assert resolve("${cred:mqtt-password}", cred_dir=str(tmp_path)) == "s3cret \n"
    assert resolve("${cred:crlf}", cred_dir=str(tmp_path)) == "abc"
    assert resolve("${cred:plain}", cred_dir=str(tmp_path)) == "abc"


def test_credentials_directory_from_env(tmp_path: Path) -> None:
    (tmp_path / "pseudonym-secret").write_text("k3y\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve("${cred:pseudonym-secret}", env=env) == "k3y"


def test_missing_credentials_directory_says_how_to_fix() -> None:
    with pytest.raises(SecretError, match=r"CREDENTIALS_DIRECTORY is not set.*LoadCredential="):
        resolve("${cred:mqtt-password}", env={})


def test_missing_credential_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match=r"\$\{cred:mqtt-password\}.*does not exist") as info:
        resolve("${cred:mqtt-password}", cred_dir=str(tmp_path))
    assert str(tmp_path / "mqtt-password") in str(info.value)


def test_empty_credential_is_an_error(tmp_path: Path) -> None:
    # What the unit's SetCredential= fallback yields when the LoadCredential= file is missing.
    (tmp_path / "mqtt-password").write_bytes(b"")
    with pytest.raises(SecretError, match=r"credential mqtt-password is empty"):
        resolve("${cred:mqtt-password}", cred_dir=str(tmp_path))
    (tmp_path / "mqtt-password").write_bytes(b"\n")
    with pytest.raises(SecretError, match=r"is empty"):
        resolve("${cred:mqtt-password}", cred_dir=str(tmp_path))


def test_unreadable_credential(tmp_path: Path) -> None:
    # A directory where the file should be: open() fails with something other
    # than "not found" (as a permission error would, but this also fails as root).
    (tmp_path / "mqtt-password").mkdir()
    with pytest.raises(SecretError, match=r"cannot read credential file"):
        resolve("${cred:mqtt-password}", cred_dir=str(tmp_path))


def test_non_utf8_credential(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(SecretError, match=r"not UTF-8"):
        resolve("${cred:bin}", cred_dir=str(tmp_path))


@pytest.mark.parametrize("value", ["${", "pw=${MQTT", "${1BAD}", "${cred:}", "${cred:a/b}"])
def test_malformed_reference(value: str) -> None:
    with pytest.raises(SecretError, match=r"malformed secret reference"):
        resolve(value, env={"MQTT": "x"}, cred_dir="/nonexistent")


def test_error_never_contains_the_secret(tmp_path: Path) -> None:
    (tmp_path / "ok").write_text("TOPSECRET")
    with pytest.raises(SecretError) as info:
        resolve("${cred:ok}${MISSING}", cred_dir=str(tmp_path), env={})
    assert "TOPSECRET" not in str(info.value)


def test_secret_error_is_a_value_error() -> None:
    # pydantic turns ValueError raised in validators into a normal validation error.
    assert issubclass(SecretError, ValueError)
