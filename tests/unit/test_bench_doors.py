"""``edge-agent bench`` door parts (wg, hikvision, zkteco): the bookkeeping, the agent's
config, and tiny real runs through a real mosquitto (never asserting speed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.tools import bench
from edge_agent.tools.bench_doors import (
    HIK_PASSWORD,
    HIK_PASSWORD_ENV,
    DoorOptions,
    Lane,
    Sent,
    SwipeLog,
    check_delivery,
    door_config,
    door_devices,
    run_door_part,
)
from tests.mqtt_helpers import MqttBroker

ROOT = bench.ROOT


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_only_doors_runs_the_three_protocols() -> None:
    assert bench.parse_only("doors") == ["wg", "hikvision", "zkteco"]
    assert bench.parse_only("zkteco,campus") == ["campus", "zkteco"]
    args = _args()
    assert {"wg", "hikvision", "zkteco"} <= set(bench.parse_only(args.only))
    assert (args.rush_speed, args.hik_mode, args.door_commit_ms) == (10.0, "stream", None)


# -- what arrived: exactly once, in order ------------------------------------------------


def _event(card: int, seq: int) -> bytes:
    return json.dumps({"seq": seq, "type": "card_read", "data": {"card": str(card)}}).encode()


def _phase(cards_per_lane: dict[str, list[int]]) -> Sent:
    sent = Sent()
    for device, cards in cards_per_lane.items():
        lane = Lane(device, lambda card, granted: None)
        for card in cards:
            sent.swipe(lane, card)
    return sent


def _deliver(log: SwipeLog, device: str, cards: list[int], first_seq: int = 1) -> None:
    for i, card in enumerate(cards):
        log.on_message(f"{ROOT}/events/{device}", _event(card, first_seq + i), False, 0.0)


def test_every_swipe_once_in_order_is_complete() -> None:
    sent = _phase({"gate-1": [1, 2, 3], "gate-2": [4, 5]})
    log = SwipeLog()
    _deliver(log, "gate-2", [4, 5])
    _deliver(log, "gate-1", [1, 2, 3], first_seq=3)
    result = check_delivery(sent, log)
    assert result["complete_in_order"] is True
    assert (result["arrived"], result["missing"], result["duplicates"]) == (5, 0, 0)


def test_a_missing_a_doubled_and_a_reordered_swipe_are_each_found() -> None:
    sent = _phase({"gate-1": [1, 2, 3], "gate-2": [4, 5]})
    log = SwipeLog()
    _deliver(log, "gate-1", [1, 3, 2])  # reordered on one lane
    _deliver(log, "gate-2", [4, 4])  # 4 doubled, 5 lost
    result = check_delivery(sent, log)
    assert result["complete_in_order"] is False
    assert result["missing"] == 1
    assert result["duplicates"] == 1
    assert result["devices_out_of_order"] == ["gate-1", "gate-2"]


def test_the_log_ignores_what_is_not_a_card_read_and_follows_device_states() -> None:
    log = SwipeLog()
    log.on_message(f"{ROOT}/devices/gate-1/state", b'{"state":"online"}', True, 0.0)
    log.on_message(f"{ROOT}/events/gate-1", b'{"seq":1,"type":"door_opened","data":{}}', False, 0)
    log.on_message(f"{ROOT}/telemetry/gate-1", _event(7, 2), False, 0.0)
    log.on_message(f"{ROOT}/events/gate-1", b"not json", False, 0.0)
    assert log.devices_online == {"gate-1"}
    assert (log.count, log.unparsed) == (0, 1)
    assert log.others == {"event:door_opened": 1, "telemetry": 1}
    assert sorted(log.seqs) == [1, 2]  # a hole in seq is a loss, whatever the message
    log.on_message(f"{ROOT}/devices/gate-1/state", b'{"state":"offline"}', True, 0.0)
    assert log.devices_online == set()


# -- the agent's config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "mode"), [("wg", "stream"), ("hikvision", "stream"), ("hikvision", "push"),
                           ("zkteco", "stream")]
)  # fmt: skip
async def test_the_agent_config_loads_with_eight_lanes(
    protocol: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HIK_PASSWORD_ENV, HIK_PASSWORD)
    async with door_devices(protocol, DoorOptions(hik_mode=mode)) as setup:
        cfg = door_config(
            setup,
            host="127.0.0.1",
            port=1883,
            protocol="5",
            outbox_path=str(tmp_path / "o.db"),
            commit_interval_ms=100,
        )
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(path)
    assert len(setup.lanes) == 8
    assert {lane.device for lane in setup.lanes} == {d.id for d in loaded.devices}
    assert loaded.site.raw_card_ids  # the subscriber matches events to swipes by card
    assert loaded.outbox.commit_interval_ms == 100
    if protocol == "hikvision":
        assert {d.mode for d in loaded.devices} == {mode}


# -- tiny real runs ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["wg", "hikvision", "zkteco"])
def test_a_tiny_door_run_delivers_every_swipe_once_in_order(
    protocol: str, mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    opts = DoorOptions(duration_s=1.0, window=20, rush_swipes=24, rush_seconds=60, rush_speed=60)
    result: dict[str, Any] = run_door_part(
        protocol,
        mqtt_broker.host,
        mqtt_broker.port,
        tmp_path,
        mqtt_protocol=mqtt_broker.protocol,
        opts=opts,
    )
    tp, rush = result["throughput"], result["rush"]
    assert tp["swipes"] > 0
    assert tp["complete_in_order"], tp
    assert rush["swipes"] == rush["arrived"] == 24
    assert rush["complete_in_order"], rush
    assert result["complete_in_order"] is True
    assert result["seq_gaps"] == 0
    assert 0 < rush["p50_ms"] <= rush["p99_ms"] <= rush["max_ms"]
    assert result["lanes"] == 8


def test_the_report_shows_door_targets_and_figures() -> None:
    door = {
        "mode": None,
        "swipes_per_s": 850.0,
        "agent_cpu_percent": 50.0,
        "swipes_per_s_one_core": 1700.0,
        "p99_ms": 1200.0,
        "complete_in_order": True,
        "throughput": {"window": 2000, "bench_cpu_percent": 30.0},
        "rush": {"rush_speed": 10.0, "p50_ms": 700.0, "max_ms": 1300.0},
    }
    verdicts = {v.target.label: v.status for v in bench.evaluate({"wg": door})}
    assert verdicts["wg: swipe->broker p99 (rush)"] == "MISS"
    assert verdicts["wg: every swipe once, in order"] == "PASS"
    assert verdicts["zkteco: swipe->broker p99 (rush)"] == "n/a"
    text = bench.render_report({"wg": door}, {})
    assert "wg: swipes/s on one core" in text
    assert "1,700" in text
    assert "wg: rush p50 / max (10.0x)" in text


@pytest.mark.integration
@pytest.mark.e2e
def test_main_runs_a_door_part_with_its_options_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = _args(
        "--only", "wg", "--door-duration", "1", "--door-window", "20", "--rush-speed", "600",
        "--door-commit-ms", "100", "--workdir", str(tmp_path), "--json", str(out),
    )  # fmt: skip
    assert bench.main(args) == 0
    data = json.loads(out.read_text())
    wg = data["results"]["wg"]
    assert wg["rush"]["swipes"] == wg["rush"]["arrived"] == 1000  # the rush, whole
    assert wg["complete_in_order"] is True
    assert wg["throughput"]["window"] == 20
    cfg = yaml.safe_load((tmp_path / "wg" / "agent.yaml").read_text())
    assert cfg["outbox"]["commit_interval_ms"] == 100
    figures = {t["figure"]: t["result"] for t in data["targets"]}
    assert figures["wg: every swipe once, in order"] == "PASS"
    assert figures["hikvision: every swipe once, in order"] == "n/a"
