"""``edge-agent doctor`` against the simulated campus and a real mosquitto: one table,
one row per check, the reason on every failed row, exit 1 when something fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.cli import main
from edge_agent.tools.demo import config_from_layout
from edge_agent.tools.localbroker import free_port
from tests.mqtt_helpers import MqttBroker

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, broker_port: int, layout: dict[str, Any], **extra: Any) -> Path:
    cfg = config_from_layout(
        layout,
        broker_host="127.0.0.1",
        broker_port=broker_port,
        protocol="5",
        outbox_path=str(tmp_path / "state" / "outbox.db"),
    )
    for key, value in extra.items():
        cfg[key] = cfg.get(key, []) + value
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _rows(out: str) -> dict[str, str]:
    """Table lines by their first column (the check)."""
    return {line.split("  ")[0]: line for line in out.splitlines() if line.strip()}


def test_doctor_all_green_on_the_simulated_campus(
    campus: dict[str, Any], mqtt_broker: MqttBroker, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = _config(tmp_path, mqtt_broker.port, campus)
    assert main(["doctor", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert out.startswith("CHECK / 检查")
    assert "RESULT / 结果" in out
    assert " ok " in rows["broker"]
    assert " ok " in rows["outbox"]
    for dev in campus["devices"]:
        row = rows[f"device {dev['id']}"]
        assert " ok " in row, row
    co2_row = next(r for k, r in rows.items() if k.endswith("-air"))
    assert "co2=" in co2_row
    assert f"all {len(campus['devices']) + 3} checks passed" in out


def test_doctor_names_what_fails_and_why(
    campus: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = free_port()  # nothing listens here: neither a broker nor a Modbus device
    path = _config(
        tmp_path,
        dead,
        campus,
        buses=[{"id": "rs485-9", "type": "serial", "port": str(tmp_path / "ttyUSB9")}],
        devices=[
            {"id": "dead-meter", "kind": "modbus", "profile": "sdm630", "host": "127.0.0.1",
             "port": dead, "unit": 1, "timeout_s": 0.5},
            {"id": "lost-sensor", "kind": "modbus", "profile": "air7in1", "bus": "rs485-9",
             "unit": 5, "timeout_s": 0.5},
        ],
    )  # fmt: skip
    assert main(["doctor", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    rows = _rows(out)
    assert "FAIL / 失败" in rows["broker"]
    assert "connection refused" in rows["broker"]
    assert "FAIL / 失败" in rows["serial rs485-9"]
    assert "not found" in rows["serial rs485-9"]
    assert "找不到串口" in rows["serial rs485-9"]
    assert "FAIL / 失败" in rows["device dead-meter"]
    assert f"tcp:127.0.0.1:{dead}" in rows["device dead-meter"]
    assert "FAIL / 失败" in rows["device lost-sensor"]
    # the simulated devices still answer: one dead device does not hide the others
    for dev in campus["devices"]:
        assert " ok " in rows[f"device {dev['id']}"]
    assert "4 of" in out
    assert "checks failed" in out
