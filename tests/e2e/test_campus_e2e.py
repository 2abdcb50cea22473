"""End to end: simulated campus (process) -> agent (process) -> mosquitto -> a platform subscriber.

Each process is started the way an installer would (``python -m simulators``,
``python -m edge_agent run -c FILE``); the subscriber checks every payload
against the contract (field names and types, ``seq`` without holes, retained
status and meta), then the agent is stopped cleanly and, in a second run,
killed, so the last will must say ``lost``.
"""

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

from tests.contract import SeqTracker, check_envelope
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ROOT = "campus/e2e-school/gw1"
CLASSROOMS, METERS = 3, 2


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def campus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("campus")
    layout_path = work / "layout.json"
    log = (work / "sim.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators",
            "campus",
            "--classrooms",
            str(CLASSROOMS),
            "--meters",
            str(METERS),
            "--base-port",
            "0",
            "--speed",
            "60",
            "--seed",
            "3",
            "--layout-out",
            str(layout_path),
        ],
        cwd=REPO,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not layout_path.exists():
            assert proc.poll() is None, (work / "sim.log").read_text()
            assert time.monotonic() < deadline, "simulators wrote no layout"
            time.sleep(0.05)
        yield json.loads(layout_path.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def agent_config(tmp_path: Path, broker: MqttBroker, layout: dict[str, Any]) -> Path:
    buses, ids = [], {}
    for i, srv in enumerate(layout["servers"]):
        ids[(srv["host"], srv["port"])] = f"bus{i}"
        buses.append(
            {
                "id": f"bus{i}",
                "type": "tcp",
                "host": srv["host"],
                "port": srv["port"],
                "framer": srv["framer"],
            }
        )
    devices = [
        {
            "id": d["id"],
            "kind": "modbus",
            "profile": d["profile"],
            "bus": ids[(d["host"], d["port"])],
            "unit": d["unit"],
            "interval_s": 1,
            "timeout_s": 0.5,
            "retries": 0,
            "location": d["location"],
        }
        for d in layout["devices"]
    ]
    cfg = {
        "site": {"id": "e2e-school", "gateway_id": "gw1"},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "protocol": broker.protocol,
            "health_interval_s": 2,
        },
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 200},
        "clock": {"sync_check": "none"},
        "buses": buses,
        "devices": devices,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_agent(cfg: Path) -> subprocess.Popen[bytes]:
    log = cfg.with_name(f"agent-{time.monotonic_ns()}.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
            cwd=REPO,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen[bytes]) -> str:
    return proc.log.read_text(errors="replace")  # type: ignore[attr-defined,no-any-return]


def _json(m: Received) -> Any:
    return json.loads(m.payload) if m.payload else None


def test_campus_to_platform_follows_the_contract(
    tmp_path: Path,
    mqtt_broker: MqttBroker,
    campus: dict[str, Any],
) -> None:
    device_ids = [d["id"] for d in campus["devices"]]
    cfg = agent_config(tmp_path, mqtt_broker, campus)
    with mqtt_subscriber(mqtt_broker, f"{ROOT}/#") as sub:
        agent = start_agent(cfg)
        try:
            sub.wait_for(lambda m: m.topic == f"{ROOT}/status", 15)
            assert agent.poll() is None, output(agent)
            # every device reports at least three times
            for dev in device_ids:
                sub.wait_for_count(3, lambda m, d=dev: m.topic == f"{ROOT}/telemetry/{d}", 30)
            sub.wait_for(lambda m: m.topic == f"{ROOT}/health", 10)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        assert agent.returncode == 0, output(agent)
        sub.wait_for(lambda m: m.topic == f"{ROOT}/status" and _json(m)["state"] == "offline", 10)
        messages = sub.messages

    tracker = SeqTracker()
    epochs = set()
    for m in messages:
        kind = m.topic[len(ROOT) + 1 :].split("/")[0]
        if kind == "telemetry":
            assert m.qos == 1
            assert not m.retain
            msg = check_envelope(m.payload, "telemetry", device=m.topic.rsplit("/", 1)[1])
            tracker.add(msg)
            epochs.add(msg["epoch"])
        elif kind == "devices":
            assert m.qos == 1
            body = _json(m)
            if m.topic.endswith("/meta"):
                assert body["kind"] == "modbus"
                assert body["model"]
                assert body["metrics"]
                for info in body["metrics"].values():
                    assert {"unit", "description"} <= info.keys()
            else:
                assert body["state"] in ("online", "offline", "degraded")
                assert body["since"].endswith("Z")
                assert "last_error" in body
    assert len(epochs) == 1
    (epoch,) = epochs
    assert tracker.holes(epoch) == [], "seq has holes within one epoch"
    assert min(tracker.seqs[epoch]) == 1
    assert tracker.duplicates == 0

    statuses = [_json(m) for m in messages if m.topic == f"{ROOT}/status"]
    assert statuses[0]["state"] == "online"
    assert statuses[0]["epoch"] == epoch
    assert statuses[0]["devices"] == len(device_ids)
    assert statuses[-1] == {**statuses[-1], "state": "offline", "reason": "shutdown"}

    # Retained topics: a platform that subscribes later still learns the site.
    with mqtt_subscriber(
        mqtt_broker,
        [f"{ROOT}/status", f"{ROOT}/devices/+/meta", f"{ROOT}/devices/+/state", f"{ROOT}/health"],
    ) as late:
        got = late.wait_for_count(2 + 2 * len(device_ids), lambda m: m.retain, 10)
        topics = {m.topic for m in got}
        assert {f"{ROOT}/devices/{d}/meta" for d in device_ids} <= topics
        assert _json(next(m for m in got if m.topic == f"{ROOT}/status"))["state"] == "offline"


def test_killed_agent_is_reported_lost_and_resumes_its_seq(
    tmp_path: Path,
    mqtt_broker: MqttBroker,
    campus: dict[str, Any],
) -> None:
    cfg = agent_config(tmp_path, mqtt_broker, campus)
    with mqtt_subscriber(mqtt_broker, [f"{ROOT}/status", f"{ROOT}/telemetry/#"]) as sub:
        agent = start_agent(cfg)
        sub.wait_for_count(10, lambda m: "/telemetry/" in m.topic, 30)
        agent.kill()  # SIGKILL: no goodbye, the broker publishes the last will
        agent.wait(10)
        # the kernel closes the socket at once, so the broker sends the will at once
        lost = sub.wait_for(
            lambda m: m.topic.endswith("/status") and _json(m).get("reason") == "lost", 10
        )
        assert _json(lost) == {"state": "offline", "reason": "lost"}
        before = [
            check_envelope(m.payload, "telemetry") for m in sub.messages if "/telemetry/" in m.topic
        ]
        sub.clear()

        agent = start_agent(cfg)  # same outbox: same epoch, seq goes on
        try:
            sub.wait_for_count(5, lambda m: "/telemetry/" in m.topic, 30)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        after = [
            check_envelope(m.payload, "telemetry") for m in sub.messages if "/telemetry/" in m.topic
        ]
    assert {m["epoch"] for m in before} == {m["epoch"] for m in after}
    assert min(m["seq"] for m in after) > 0
    # whatever was committed but not acknowledged before the kill is sent again
    # with its original msg_id and seq, so together nothing is missing
    tracker = SeqTracker()
    for m in before + after:
        tracker.add(m)
    epoch = before[0]["epoch"]
    assert tracker.holes(epoch) == []
