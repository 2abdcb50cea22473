"""The agent and ``edge-agent tail`` against a mosquitto with a TLS listener and a password.

The broker (``tests/tls_helpers.py``) has a certificate signed by a CA made for this
module, a TLS listener that lets only ``USER``/``PASSWORD`` in, and a plain anonymous
listener sharing its topics, from which the tests watch and publish.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.cli import main
from edge_agent.config.loader import load_config
from edge_agent.supervisor import Agent
from tests.mqtt_helpers import mqtt_subscriber, publish
from tests.tls_helpers import (
    CLIENT_KEY_PASSWORD,
    PASSWORD,
    USER,
    TlsBroker,
    start_tls_broker,
)

pytestmark = pytest.mark.integration

ROOT = "campus/tls-school/gw1"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    broker = start_tls_broker(tmp_path_factory.mktemp("tls_broker"))
    yield broker
    broker.close()


def write_config(
    tmp_path: Path, broker: TlsBroker, tls: dict[str, Any], port: int | None = None
) -> Path:
    cfg = {
        "site": {"id": "tls-school", "gateway_id": "gw1"},
        "mqtt": {
            "host": "localhost",  # the name in the broker's certificate
            "port": port or broker.tls_port,
            "username": USER,
            "password": "${EDGE_TEST_MQTT_PASSWORD}",
            "tls": tls,
            "reconnect_max_s": 1,
        },
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", PASSWORD)


@pytest.fixture
async def agent_factory() -> AsyncIterator[Any]:
    tasks: list[tuple[Agent, asyncio.Task[None]]] = []

    def start(cfg_path: Path) -> Agent:
        agent = Agent(load_config(cfg_path), cfg_path)
        tasks.append((agent, asyncio.create_task(agent.run())))
        return agent

    yield start
    for agent, task in tasks:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def test_agent_connects_with_ca_file_and_password(
    tmp_path: Path, tls_broker: TlsBroker, agent_factory: Any
) -> None:
    cfg = write_config(tmp_path, tls_broker, {"ca_file": str(tls_broker.ca.ca_file)})
    with mqtt_subscriber(tls_broker, f"{ROOT}/status") as sub:
        agent_factory(cfg)
        online = await asyncio.to_thread(
            sub.wait_for, lambda m: json.loads(m.payload).get("state") == "online", 15
        )
    assert json.loads(online.payload)["devices"] == 0


async def test_agent_connects_with_a_client_certificate_and_key_passphrase(
    tmp_path: Path,
    tls_broker: TlsBroker,
    agent_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGE_TEST_KEY_PASSWORD", CLIENT_KEY_PASSWORD)
    tls = {
        "ca_file": str(tls_broker.ca.ca_file),
        "cert_file": str(tls_broker.ca.client_cert),
        "key_file": str(tls_broker.ca.client_key),
        "key_password": "${EDGE_TEST_KEY_PASSWORD}",
    }
    cfg = write_config(tmp_path, tls_broker, tls, port=tls_broker.mtls_port)
    with mqtt_subscriber(tls_broker, f"{ROOT}/status") as sub:
        agent_factory(cfg)
        await asyncio.to_thread(
            sub.wait_for, lambda m: json.loads(m.payload).get("state") == "online", 15
        )


async def test_system_cas_refuse_the_private_ca_with_a_logged_reason(
    tmp_path: Path,
    tls_broker: TlsBroker,
    agent_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent")
    cfg = write_config(tmp_path, tls_broker, {})  # TLS, verified against the system CAs
    agent = agent_factory(cfg)

    def reason() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "certificate verification failed" in r.message
        ]

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not reason():
        if loop.time() > deadline:
            pytest.fail(f"no TLS reason logged; log: {[r.message for r in caplog.records]}")
        await asyncio.sleep(0.05)
    message = reason()[0].message
    assert f"localhost:{tls_broker.tls_port}" in message
    assert "system CAs" in message
    assert "self-signed certificate" in message
    assert not agent.publisher.connected.is_set()


def test_tail_connects_with_tls_and_password_and_escapes_a_hostile_payload(
    tmp_path: Path, tls_broker: TlsBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m"
    telemetry = {
        "v": 1,
        "msg_id": "m1",
        "epoch": "ep1",
        "seq": 1,
        "ts": "2026-11-29T08:00:00.000Z",
        "device": "b1-r101-air",
        "kind": "telemetry",
        "historical": False,
        "data": {"co2": 812, "note": hostile},
        "quality": "good",
    }
    status = json.dumps({"state": "offline", "reason": hostile}).encode()
    # Retained, on the plain listener: tail gets them as soon as it has subscribed over TLS.
    publish(tls_broker, f"{ROOT}/status", status, retain=True)
    publish(tls_broker, f"{ROOT}/telemetry/b1-r101-air", json.dumps(telemetry), retain=True)
    try:
        cfg = write_config(tmp_path, tls_broker, {"ca_file": str(tls_broker.ca.ca_file)})
        assert main(["tail", "-c", str(cfg), "--duration", "3"]) == 0
    finally:
        publish(tls_broker, f"{ROOT}/status", b"", retain=True)
        publish(tls_broker, f"{ROOT}/telemetry/b1-r101-air", b"", retain=True)
    out = capsys.readouterr().out
    assert "broker connected" in out
    assert "co2=812" in out
    assert "note=\\x1b]0;pwned\\x07\\x1b[2J\\r\\x9b31m" in out
    assert "reason=\\x1b]0;pwned" in out
    assert "\x1b" not in out
    assert "\x9b" not in out
    assert "\r" not in out


def test_tail_says_why_the_tls_handshake_failed(
    tmp_path: Path, tls_broker: TlsBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, tls_broker, {})  # system CAs: the private CA is unknown
    assert main(["tail", "-c", str(cfg), "--duration", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "broker disconnected (TLS certificate verification failed" in out
    assert "self-signed certificate" in out
