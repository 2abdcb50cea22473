"""The cursor of a push device across SIGKILLs (issue 8): the agent is killed between
commit and PUBACK, and again with the broker down; after each restart the driver
resumes from the cursor committed with its events, and the platform receives every
record exactly once (duplicates only redeliveries of the in-flight window, with the
same msg_id)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contract import check_envelope
from tests.e2e.helpers import REPO, PersistentSubscriber
from tests.mqtt_helpers import MqttBroker
from tests.push_fixture_driver import KIND, RecordDevice

pytestmark = pytest.mark.e2e

ROOT = "campus/push-school/gw1"
INFLIGHT = 20
RECORDS = 600

# The agent with the fixture kind injected into the registry, as an entry point would.
RUN = (
    "import sys; from tests.push_fixture_driver import install; install(); "
    "from edge_agent.cli import main; sys.exit(main(['run', '-c', sys.argv[1]]))"
)


def config(tmp_path: Path, broker: MqttBroker, device: RecordDevice) -> Path:
    cfg: dict[str, Any] = {
        "site": {"id": "push-school", "gateway_id": "gw1"},
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
        "devices": [{"id": "door1", "kind": KIND, "port": device.port, "retry_s": 0.2}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start(cfg: Path) -> subprocess.Popen[bytes]:
    log = cfg.with_name(f"agent-{time.monotonic_ns()}.log")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN, str(cfg)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def log_of(proc: subprocess.Popen[bytes]) -> str:
    return proc.log.read_text(errors="replace")  # type: ignore[attr-defined,no-any-return]


def records(sub: PersistentSubscriber) -> list[dict[str, Any]]:
    return [
        check_envelope(payload, "event", "door1")
        for _t, topic, payload in list(sub.messages)
        if topic == f"{ROOT}/events/door1"
    ]


def received(sub: PersistentSubscriber) -> set[int]:
    return {m["data"]["record"] for m in records(sub)}


@pytest.fixture
def device() -> Iterator[RecordDevice]:
    dev = RecordDevice(RECORDS, every_s=0.01)  # 100 records a second for 6 s
    yield dev
    dev.close()


def test_push_cursor_survives_sigkill_with_broker_up_and_down(
    tmp_path: Path, persistent_mqtt_broker: MqttBroker, device: RecordDevice
) -> None:
    broker = persistent_mqtt_broker
    sub = PersistentSubscriber(broker, f"{ROOT}/#")
    cfg = config(tmp_path, broker, device)
    agent = start(cfg)
    try:
        # 1. killed while records stream in: some committed rows are not PUBACKed yet
        sub.wait(lambda _m: len(received(sub)) >= 100, 30, "the first records")
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        agent = start(cfg)
        sub.wait(lambda _m: len(received(sub)) >= 250, 30, "records after the restart")
        # 2. the broker goes down; records are committed to the outbox only; killed again
        broker.stop()
        time.sleep(1.5)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        agent = start(cfg)  # starts while the broker is still down
        time.sleep(1.5)
        broker.start()
        sub.wait(lambda _m: len(received(sub)) >= RECORDS, 60, f"all {RECORDS} records")
        time.sleep(1)  # late redeliveries, if any, are counted too
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        sub.close()
    msgs = records(sub)
    assert received(sub) == set(range(1, RECORDS + 1)), log_of(agent)
    # exactly once: a record seen twice is a redelivery of one committed message
    ids: dict[int, set[str]] = {}
    for m in msgs:
        ids.setdefault(m["data"]["record"], set()).add(m["msg_id"])
    recommitted = {r: i for r, i in ids.items() if len(i) > 1}
    assert recommitted == {}, f"records committed twice: {sorted(recommitted)[:10]}"
    # two cuts of the agent's link (its kill with the broker up, then down): one in-flight
    # window each; the broker's own resends after its restart are not the agent's
    by_agent, by_broker = sub.repeats(f"{ROOT}/events/door1")
    assert by_agent + by_broker == len(msgs) - RECORDS
    assert by_agent <= INFLIGHT * 2, (by_agent, by_broker)
    # the driver resumed from its cursor each time: it asked for more than 0 after a kill
    assert device.asked[0] == 0
    assert len(device.asked) >= 3
    assert all(a > 0 for a in device.asked[1:]), device.asked
    # and seq has no hole the outbox did not explain: one epoch, increasing per record
    seqs = sorted({m["seq"] for m in msgs})
    assert len({m["epoch"] for m in msgs}) == 1
    assert seqs == sorted(seqs)
    print(json.dumps({"duplicates": len(msgs) - RECORDS, "asked": device.asked}))
