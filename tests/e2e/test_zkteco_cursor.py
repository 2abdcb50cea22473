"""A ZKTeco terminal's records across SIGKILLs of the agent: the simulated terminal (its
CLI, a process of its own) punches 300 distinct PINs while the agent is killed during
the stream and again with the broker down; the terminal resends what was not answered
``OK``, the handshake after each restart hands back the committed stamp, and the
platform receives every punch exactly once (a duplicate only as a redelivery of the
same committed message, same msg_id)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contract import check_envelope
from tests.e2e.helpers import REPO, PersistentSubscriber
from tests.mqtt_helpers import MqttBroker

pytestmark = pytest.mark.e2e

ROOT = "campus/zk-kill/gw1"
PUNCHES = 300
INFLIGHT = 20


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, broker: MqttBroker, port: int) -> Path:
    cfg: dict[str, Any] = {
        # raw card ids: the PIN itself comes out, so each punch is recognisable
        "site": {"id": "zk-kill", "gateway_id": "gw1", "raw_card_ids": True},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "protocol": broker.protocol,
            "inflight_max": INFLIGHT,
            "reconnect_min_s": 0.5,
            "reconnect_max_s": 1,
            "keepalive_s": 5,
        },
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 100},
        "clock": {"sync_check": "none"},
        "http": {"bind": f"127.0.0.1:{port}"},
        "devices": [{"id": "gate1", "kind": "zkteco", "sn": "ZKKILL1", "delay_s": 1}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def pins(sub: PersistentSubscriber) -> list[tuple[str, str]]:
    out = []
    for _t, topic, payload in list(sub.messages):
        if topic == f"{ROOT}/events/gate1":
            msg = check_envelope(payload, "event", "gate1")
            out.append((msg["data"]["card"], msg["msg_id"]))
    return out


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_punches_survive_sigkill_with_broker_up_and_down(
    tmp_path: Path, persistent_mqtt_broker: MqttBroker
) -> None:
    broker = persistent_mqtt_broker
    port = free_port()
    cfg = config(tmp_path, broker, port)
    script = tmp_path / "punches.txt"
    # 50 punches a second for 6 s, each a PIN of its own
    script.write_text(
        "".join(f"@{i * 0.02:.2f} punch ZKKILL1 {i}\n" for i in range(1, PUNCHES + 1))
    )
    sub = PersistentSubscriber(broker, f"{ROOT}/#")
    agent_log, term_log = tmp_path / "agent.log", tmp_path / "terminal.log"
    run_agent = [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)]
    agent = spawn(run_agent, agent_log)
    terminal = spawn(
        [
            sys.executable,
            "-m",
            "edge_agent.simulators",
            "zkteco",
            "--server",
            f"127.0.0.1:{port}",
            "--sn",
            "ZKKILL1",
            "--poll-s",
            "0.2",
            "--script",
            str(script),
        ],
        term_log,
    )
    try:
        sub.wait(lambda _m: len(pins(sub)) >= 60, 30, "the first punches")
        agent.send_signal(signal.SIGKILL)  # 1. killed while punches stream in
        agent.wait(10)
        agent = spawn(run_agent, agent_log)
        sub.wait(lambda _m: len({p for p, _ in pins(sub)}) >= 150, 30, "punches after a restart")
        broker.stop()  # 2. committed to the outbox only, then killed again
        time.sleep(1.5)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        agent = spawn(run_agent, agent_log)  # starts while the broker is still down
        time.sleep(1.5)
        broker.start()
        sub.wait(lambda _m: len({p for p, _ in pins(sub)}) >= PUNCHES, 60, "every punch")
        time.sleep(1)  # late redeliveries, if any, are counted too
    finally:
        stop(terminal, signal.SIGINT)
        stop(agent)
        sub.close()
    got = pins(sub)
    logs = agent_log.read_text(errors="replace")[-3000:]
    assert {p for p, _ in got} == {str(i) for i in range(1, PUNCHES + 1)}, logs
    ids: dict[str, set[str]] = {}
    for pin, msg_id in got:
        ids.setdefault(pin, set()).add(msg_id)
    committed_twice = sorted(p for p, i in ids.items() if len(i) > 1)
    assert committed_twice == [], f"punches committed twice: {committed_twice[:10]}"
    # one in-flight window per cut of the agent's link; the broker's own resends after its
    # restart are not the agent's
    by_agent, by_broker = sub.repeats(f"{ROOT}/events/gate1")
    assert by_agent + by_broker == len(got) - PUNCHES
    assert by_agent <= INFLIGHT * 2, (by_agent, by_broker)
