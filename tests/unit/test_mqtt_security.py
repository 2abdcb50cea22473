"""The ``mqtt`` TLS and credential settings: what check-config and ``run`` say about them.

Golden cases cover the plain messages (tests/config_cases/plaintext_credentials,
tls_missing_files, tls_empty_section, tls_key_without_cert); these tests cover what
needs real files, the command line or a process exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import EXIT_CONFIG, main
from edge_agent.config.loader import load_config
from edge_agent.errors import ConfigError
from edge_agent.supervisor import mqtt_settings
from tests.tls_helpers import make_ca

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, mqtt_lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("site: {id: school-a, gateway_id: gw1}\nmqtt:\n" + mqtt_lines, encoding="utf-8")
    return path


def test_check_config_refuses_plaintext_password_and_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MQTT_PW", "s3cret")
    cfg = _write(
        tmp_path / "agent.yaml",
        "  host: mqtt.edu-platform.example.cn\n  username: school-a\n  password: ${MQTT_PW}\n",
    )
    assert main(["check-config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"{cfg}:4  mqtt.username  " in err
    assert "mqtt.allow_plaintext_credentials: true" in err
    assert "s3cret" not in err


@pytest.mark.parametrize(
    "extra",
    [
        "  host: mqtt.edu-platform.example.cn\n  allow_plaintext_credentials: true\n",
        "  host: mqtt.edu-platform.example.cn\n  tls: {}\n",
        "  host: 127.0.0.1\n",
        "  host: localhost\n",
        "  host: '::1'\n",
    ],
    ids=["opt-in", "tls", "127.0.0.1", "localhost", "::1"],
)
def test_credentials_allowed_over_tls_to_loopback_or_with_the_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    monkeypatch.setenv("MQTT_PW", "s3cret")
    cfg = _write(
        tmp_path / "agent.yaml", f"  username: school-a\n  password: ${{MQTT_PW}}\n{extra}"
    )
    assert load_config(cfg).mqtt.password == "s3cret"


def test_empty_tls_section_means_tls_on_port_8883(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "agent.yaml", "  host: broker.example.cn\n  tls:\n")
    settings = mqtt_settings(load_config(cfg))
    assert settings.tls is True
    assert settings.port == 8883


def test_relative_tls_paths_are_taken_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_ca(tmp_path / "etc" / "certs")
    cfg = _write(
        tmp_path / "etc" / "agent.yaml",
        "  host: broker.example.cn\n  tls:\n    ca_file: certs/ca.pem\n",
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert load_config(cfg).mqtt.tls.ca_file == str(tmp_path / "etc" / "certs" / "ca.pem")  # type: ignore[union-attr]


def test_ca_file_that_is_not_a_certificate_is_reported_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("this is not a certificate\n")
    cfg = _write(
        tmp_path / "agent.yaml", "  host: broker.example.cn\n  tls:\n    ca_file: ca.pem\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(
        f"{cfg}:5  mqtt.tls.ca_file  not a PEM CA certificate: {tmp_path / 'ca.pem'}"
    )


def test_client_key_that_does_not_match_its_certificate_is_reported(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    # the CA's certificate with the server's key: a pair that does not belong together
    cfg = _write(
        tmp_path / "agent.yaml",
        f"  host: broker.example.cn\n  tls:\n    ca_file: {ca.ca_file}\n"
        f"    cert_file: {ca.ca_file}\n    key_file: {ca.server_key}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{cfg}:6  mqtt.tls.cert_file  cannot use the client")


def test_run_exits_78_on_a_missing_ca_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    cfg = _write(
        tmp_path / "agent.yaml",
        f"  host: 127.0.0.1\n  port: 1\n  tls:\n    ca_file: {missing}\n"
        f"outbox:\n  path: {tmp_path / 'outbox.db'}\n",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert f"{cfg}:6  mqtt.tls.ca_file  file not found: {missing}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tls_file_reported_also_when_a_device_is_wrong(tmp_path: Path) -> None:
    # One pass of check-config lists everything, not the structural errors first.
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        "mqtt:\n  host: broker.example.cn\n  tls: {ca_file: /nonexistent/edge-agent/ca.pem}\n"
        "devices:\n  - {id: Bad Id, kind: modbus, profile: air7in1, host: 10.0.0.5}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    keys = [line.split("  ")[1] for line in info.value.problems]
    assert "mqtt.tls.ca_file" in keys
    assert "devices[0].id" in keys


def test_unavailable_key_passphrase_is_one_problem_not_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGE_TEST_NO_SUCH_VAR", raising=False)
    ca = make_ca(tmp_path / "ca")
    cfg = _write(
        tmp_path / "agent.yaml",
        f"  host: broker.example.cn\n  tls:\n    ca_file: {ca.ca_file}\n"
        f"    cert_file: {ca.client_cert}\n    key_file: {ca.client_key}\n"
        "    key_password: ${EDGE_TEST_NO_SUCH_VAR}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert [line.split("  ")[1] for line in info.value.problems] == ["mqtt.tls.key_password"]
    # check-config on a laptop: a note for the passphrase, the files are still checked
    notes: list[str] = []
    load_config(cfg, notes=notes)
    assert len(notes) == 1
