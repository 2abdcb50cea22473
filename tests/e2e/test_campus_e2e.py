"""End to end: simulated campus (process) -> agent (process) -> mosquitto -> a platform subscriber.

Each process is started the way an installer would (``python -m edge_agent.simulators``,
``python -m edge_agent run -c FILE``); the subscriber checks every payload
against the contract (field names and types, ``seq`` without holes, retained
status and meta), then the agent is stopped cleanly and, in a second run,
killed, so the last will must say ``lost``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.contract import SeqTracker, check_envelope
from tests.e2e.helpers import ROOT, agent_config, output, payload_json, start_agent
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber

pytestmark = pytest.mark.e2e


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
        sub.wait_for(
            lambda m: m.topic == f"{ROOT}/status" and payload_json(m)["state"] == "offline", 10
        )
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
            body = payload_json(m)
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

    statuses = [payload_json(m) for m in messages if m.topic == f"{ROOT}/status"]
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
        assert (
            payload_json(next(m for m in got if m.topic == f"{ROOT}/status"))["state"] == "offline"
        )


def test_killed_agent_is_reported_lost_and_resumes_its_seq(
    tmp_path: Path,
    mqtt_broker: MqttBroker,
    campus: dict[str, Any],
) -> None:
    cfg = agent_config(tmp_path, mqtt_broker, campus)
    topics = [f"{ROOT}/status", f"{ROOT}/telemetry/#", f"{ROOT}/events/#"]
    with mqtt_subscriber(mqtt_broker, topics) as sub:
        agent = start_agent(cfg)
        sub.wait_for_count(10, lambda m: "/telemetry/" in m.topic, 30)
        agent.kill()  # SIGKILL: no goodbye, the broker publishes the last will
        agent.wait(10)
        # the kernel closes the socket at once, so the broker sends the will at once
        lost = sub.wait_for(
            lambda m: m.topic.endswith("/status") and payload_json(m).get("reason") == "lost", 10
        )
        assert payload_json(lost) == {"state": "offline", "reason": "lost"}
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
        skips = [check_envelope(m.payload, "event") for m in sub.messages if "/events/" in m.topic]
    assert {m["epoch"] for m in before} == {m["epoch"] for m in after}
    assert min(m["seq"] for m in after) > 0
    # whatever was committed but not acknowledged before the kill is sent again
    # with its original msg_id and seq, so together nothing is missing
    tracker = SeqTracker()
    for m in before + after + skips:
        tracker.add(m)
    epoch = before[0]["epoch"]
    # An unclean stop skips the rest of the seq reservation (never reused), and says
    # so in a seq_skipped event: the only holes are inside the range it names.
    (skip,) = [e["data"] for e in skips if e["type"] == "seq_skipped"]
    holes = tracker.holes(epoch)
    assert [s for s in holes if not skip["from"] <= s <= skip["to"]] == [], skip
