"""``edge-agent bench --only alarms`` (edge_agent/tools/bench_alarms.py): a tiny real run
against the test broker, and its generated config is one check-config accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.tools import bench, bench_alarms
from tests.mqtt_helpers import MqttBroker

pytestmark = pytest.mark.integration


def test_the_generated_config_has_doors_fire_inputs_and_a_siren(tmp_path: Path) -> None:
    cfg = bench_alarms.alarm_config(
        host="127.0.0.1",
        port=1883,
        protocol="5",
        outbox_path=str(tmp_path / "outbox.db"),
        di_port=5020,
        relay_port=5021,
    )
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(path)
    assert loaded.doors is not None
    assert len(loaded.doors.doors) == len(loaded.doors.inputs) == bench_alarms.MODULES
    assert [(s.device, s.point) for s in loaded.sirens] == [("siren-relays", "relay1")]


@pytest.mark.e2e
def test_every_input_gives_its_alarm_and_rings_the_siren_while_a_backlog_drains(
    mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    result = bench_alarms.run_alarm_part(
        mqtt_broker.host, mqtt_broker.port, tmp_path, messages=3000, batch=500, min_inputs=3
    )
    assert result["inputs"] >= 2
    assert result["alarms_received"] == result["inputs"]  # every input's alarm arrived
    b = result["input_to_broker"]
    assert b["max_ms"] >= b["p99_ms"] >= b["p50_ms"] > 0
    siren = result["input_to_siren"]
    assert siren["count"] == result["siren_inputs_while_off"] >= 1  # acked: off again each time
    assert result["door_to_broker"]["count"] + result["fire_to_broker"]["count"] == result["inputs"]
    assert not list(tmp_path.glob("outbox.db*"))  # the backlog's database is removed
    assert (tmp_path / "agent.log").exists()  # the agent's log stays for a look


def test_the_report_shows_the_alarm_figures_and_judges_the_p99() -> None:
    stats = {"count": 3, "p50_ms": 150.0, "p99_ms": 300.0, "max_ms": 410.0}
    results = {
        "alarms": {
            "input_to_broker": stats,
            "input_to_siren": {**stats, "p50_ms": 120.0},
            "drain_seconds": 91.2,
            "agent_cpu_percent": 63.8,
            "p99_ms": 1200.0,
        }
    }
    report = bench.render_report(results, {})
    assert "alarms: input->siren p50 / p99 / max" in report
    verdict = {v.target.label: v.status for v in bench.evaluate(results)}
    assert verdict["alarms: input->broker p99 (1M draining)"] == "MISS"  # over 1 s
