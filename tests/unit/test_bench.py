"""``edge-agent bench``: the pure parts, and tiny real runs (never asserting speed)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.tools import bench
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber

# -- percentile ---------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert bench.percentile(values, 50) == pytest.approx(50.5)
    assert bench.percentile(values, 99) == pytest.approx(99.01)
    assert bench.percentile(values, 0) == 1.0
    assert bench.percentile(values, 100) == 100.0


def test_percentile_ignores_input_order_and_matches_statistics() -> None:
    values = [7.0, 1.0, 30.0, 3.0, 12.0, 2.0, 9.0]
    expected = statistics.quantiles(values, n=100, method="inclusive")
    for p in (1, 25, 50, 75, 99):
        assert bench.percentile(values, p) == pytest.approx(expected[p - 1])


def test_percentile_of_one_value_is_that_value() -> None:
    assert bench.percentile([4.2], 99) == 4.2


@pytest.mark.parametrize(("values", "p"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_rejects_bad_input(values: list[float], p: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        bench.percentile(values, p)


# -- /proc parsing ------------------------------------------------------------------------


def _stat_line(comm: str, utime: int, stime: int) -> str:
    # fields 3..52 of proc(5); utime and stime are fields 14 and 15
    fields = ["S"] + [str(n) for n in range(4, 53)]
    fields[14 - 3] = str(utime)
    fields[15 - 3] = str(stime)
    return f"4242 ({comm}) " + " ".join(fields) + "\n"


def test_parse_proc_stat_survives_a_command_name_with_spaces_and_parens() -> None:
    assert bench.parse_proc_stat(_stat_line("python3 (edge) x", 1234, 56)) == (1234, 56)


def test_parse_proc_stat_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="stat"):
        bench.parse_proc_stat("4242 (python) S 1 2")


def test_parse_vmrss_reads_kilobytes() -> None:
    text = "Name:\tpython3\nVmPeak:\t  99999 kB\nVmRSS:\t   48128 kB\nThreads:\t4\n"
    assert bench.parse_vmrss(text) == 48128 * 1024


def test_parse_vmrss_without_the_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="VmRSS"):
        bench.parse_vmrss("Name:\tkthreadd\nState:\tS (sleeping)\n")


def test_proc_sampler_reads_a_fake_proc(tmp_path: Path) -> None:
    pid_dir = tmp_path / "4242"
    pid_dir.mkdir()
    (pid_dir / "stat").write_text(_stat_line("python3", 300, 100))
    (pid_dir / "status").write_text("Name:\tpython3\nVmRSS:\t   2048 kB\n")
    sampler = bench.ProcSampler(4242, proc_root=tmp_path)
    ticks = os.sysconf("SC_CLK_TCK")
    assert sampler.cpu_seconds() == pytest.approx(400 / ticks)
    assert sampler.rss_bytes() == 2048 * 1024


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_proc_sampler_reads_this_process() -> None:
    sampler = bench.ProcSampler(os.getpid())
    assert sampler.rss_bytes() > 1024 * 1024
    assert sampler.cpu_seconds() > 0
    before = sampler.wakeups()
    time.sleep(0.01)  # a sleep ends in a wake-up
    assert sampler.wakeups() > before


def test_ctxt_switches_come_from_the_voluntary_line() -> None:
    status = "Name:\tpython\nvoluntary_ctxt_switches:\t1481\nnonvoluntary_ctxt_switches:\t923\n"
    assert bench.parse_ctxt_switches(status) == 1481
    with pytest.raises(ValueError, match="voluntary"):
        bench.parse_ctxt_switches("Name:\tpython\n")


# -- targets, table, options ------------------------------------------------------------------


def _results(**overrides: Any) -> dict[str, Any]:
    results: dict[str, Any] = {
        "campus": {"agent_cpu_percent": 0.4, "agent_rss_mib": 61.0},
        "ingest": {"readings_per_s": 50_000.0, "batch_size": 2000},
        "drain": {"ratio": 0.5, "messages_per_s": 5000.0, "bare_paho_messages_per_s": 10000.0},
    }
    results.update(overrides)
    return results


def test_evaluate_passes_misses_and_marks_what_did_not_run() -> None:
    # gateway90 has the same keys (it did not run here: n/a, tested below)
    verdicts = {v.target.key: v for v in bench.evaluate(_results()) if v.target.part != "gateway90"}
    assert verdicts["agent_cpu_percent"].status == "PASS"
    assert verdicts["agent_rss_mib"].status == "MISS"  # 61 > 60
    assert verdicts["readings_per_s"].status == "PASS"  # exactly on the target passes
    assert verdicts["ratio"].status == "MISS"
    assert verdicts["p99_ms"].status == "n/a"  # latency did not run
    assert verdicts["p99_ms"].value is None


def test_evaluate_treats_a_missing_figure_as_not_measured() -> None:
    verdicts = bench.evaluate({"latency": {"p99_ms": None}})
    assert {v.status for v in verdicts} == {"n/a"}


def test_format_table_aligns_columns() -> None:
    table = bench.format_table(["a", "bb"], [["long cell", "x"], ["y", "zzz"]])
    lines = table.splitlines()
    assert lines[0] == "a          bb"
    assert lines[1] == "---------  ---"
    assert lines[2] == "long cell  x"
    assert lines[3] == "y          zzz"


def test_format_table_rejects_a_short_row() -> None:
    with pytest.raises(ValueError, match="cells"):
        bench.format_table(["a", "b"], [["only one"]])


def test_report_shows_verdicts_pi_estimate_and_errors() -> None:
    results = _results(errors={"campus": "the agent did not come online"})
    report = bench.render_report(results, {"date": "2026-01-01", "cpus": 2, "python": "3.11"})
    rss_line = next(line for line in report.splitlines() if "agent RSS" in line)
    assert "MISS" in rss_line
    cpu_line = next(line for line in report.splitlines() if "agent CPU" in line)
    assert "PASS" in cpu_line
    assert "1.60-2.40" in cpu_line  # 0.4 % times 4..6 on a Pi 4
    assert "ERROR campus: the agent did not come online" in report


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (0.1234, "0.123"), (12.34, "12.3"), (51234.5, "51,234")]
)
def test_fmt_num(value: float, text: str) -> None:
    assert bench.fmt_num(value) == text


def test_gateway90_has_the_issue_targets_and_reports_what_arrived() -> None:
    g = {
        "agent_cpu_percent": 0.8,
        "agent_rss_mib": 39.0,
        "publish_rate_per_s": 8.98,
        "expected_rate_per_s": 9.0,
        "devices": 90,
        "devices_complete": 89,
        "seq_gaps": 0,
        "simulator_cpu_percent": 1.4,
    }
    verdicts = {(v.target.part, v.target.key): v for v in bench.evaluate({"gateway90": g})}
    assert verdicts["gateway90", "agent_cpu_percent"].status == "MISS"  # 0.8 > 0.75
    assert verdicts["gateway90", "agent_rss_mib"].status == "PASS"  # 39 <= 40
    assert verdicts["campus", "agent_cpu_percent"].status == "n/a"
    report = bench.render_report({"gateway90": g}, {})
    assert "gateway90: agent CPU" in report
    assert "89 / 90" in next(ln for ln in report.splitlines() if "every reading" in ln)
    assert "8.98 (9.00) msg/s" in report


def test_gateway90_reports_the_memory_split_and_the_day_of_rules() -> None:
    g = {
        "agent_cpu_percent": 0.7,
        "agent_rss_mib": 46.0,
        "agent_anon_mib": 30.5,
        "agent_file_mib": 15.5,
        "agent_pss_mib": 37.25,
        "rules_state_window_mib": 0.25,
        "rules_state_day_mib": 0.82,
        "agent_rss_day_estimate_mib": 46.6,
        "publish_rate_per_s": 9.0,
        "expected_rate_per_s": 9.0,
        "devices": 90,
        "devices_complete": 90,
        "seq_gaps": 0,
        "simulator_cpu_percent": 1.4,
    }
    lines = bench.render_report({"gateway90": g}, {}).splitlines()
    assert "30.5 + 15.5 (37.2) MiB" in next(ln for ln in lines if "own + libraries" in ln)
    assert "0.250 / 0.820 MiB" in next(ln for ln in lines if "window / after 24 h" in ln)
    assert "46.6 MiB" in next(ln for ln in lines if "after a day (estimate)" in ln)


def test_parse_smaps_rollup() -> None:
    text = (
        "556cb16da000-7fff67d64000 ---p 00000000 00:00 0   [rollup]\n"
        "Rss:               48352 kB\nPss:               38257 kB\n"
        "Pss_Anon:          31508 kB\nAnonymous:         31508 kB\n"
    )
    assert bench.parse_smaps_rollup(text) == {
        "pss": 38257 * 1024,
        "anon": 31508 * 1024,
        "file": (48352 - 31508) * 1024,
    }
    with pytest.raises(ValueError, match="smaps_rollup"):
        bench.parse_smaps_rollup("Pss: 1 kB\n")


def test_parse_only_keeps_the_canonical_order_and_rejects_unknown_parts() -> None:
    assert bench.parse_only("gateway90,campus") == ["campus", "gateway90"]
    assert bench.parse_only("drain, campus") == ["campus", "drain"]
    with pytest.raises(ValueError, match="--only"):
        bench.parse_only("campus,speed")
    with pytest.raises(ValueError, match="--only"):
        bench.parse_only(" , ")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_the_issue_figures() -> None:
    args = _args()
    assert bench.parse_only(args.only) == list(bench.PARTS)
    assert (args.duration, args.messages, args.json) == (60.0, 1_000_000, "bench-results.json")


def test_unknown_part_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(_args("--only", "nothing")) == 2
    assert "--only" in capsys.readouterr().err


def test_campus_config_keeps_profile_intervals_unless_told() -> None:
    layout = {
        "servers": [{"host": "127.0.0.1", "port": 5020}],
        "devices": [{"id": "b1-r101-air", "profile": "air7in1", "host": "127.0.0.1",
                     "port": 5020, "unit": 1}],
    }  # fmt: skip
    common: dict[str, Any] = {"host": "127.0.0.1", "port": 1883, "protocol": "5",
                              "outbox_path": "o.db"}  # fmt: skip
    cfg = bench.campus_config(layout, interval_s=None, **common)
    assert "interval_s" not in cfg["devices"][0]
    assert cfg["site"]["id"] == bench.SITE_ID
    assert bench.campus_config(layout, interval_s=2.0, **common)["devices"][0]["interval_s"] == 2.0


# -- tiny real runs ---------------------------------------------------------------------------


def test_main_runs_ingest_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    args = _args(
        "--only", "ingest", "--readings", "2000", "--batch", "500",
        "--workdir", str(tmp_path / "wd"), "--json", str(out),
    )  # fmt: skip
    assert bench.main(args) == 0
    data = json.loads(out.read_text())
    ingest = data["results"]["ingest"]
    assert ingest["readings"] == 2000
    assert ingest["batch_size"] == 500
    assert ingest["commits"] == 4
    assert len(ingest["runs_readings_per_s"]) == 3  # the median of three runs is reported
    assert ingest["payload_bytes"] > 100  # a real 7-metric envelope
    assert {t["key"]: t["result"] for t in data["targets"]}["agent_cpu_percent"] == "n/a"
    assert "ingest: readings committed" in capsys.readouterr().out
    assert not list((tmp_path / "wd").glob("*.db*"))  # the outbox and its side files are gone


@pytest.mark.integration
async def test_drain_delivers_the_whole_backlog_and_alarms(
    mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    with mqtt_subscriber(mqtt_broker, f"{bench.ROOT}/telemetry/#") as sub:
        result = await bench.run_drain(
            mqtt_broker.host, mqtt_broker.port, tmp_path, messages=2000, inflight=50, batch=500
        )
        telemetry = sub.wait_for_count(2000, timeout=20)
    assert result["messages"] == 2000
    assert all(m.json()["historical"] is True for m in telemetry)  # sent as backlog
    assert len({m.json()["seq"] for m in telemetry}) == 2000  # every row, once
    latency = result["latency"]
    assert latency["alarms_sent"] >= 1
    assert latency["alarms_received"] == latency["alarms_sent"]
    assert latency["p99_ms"] >= latency["p50_ms"] > 0
    assert not list(tmp_path.glob("*.db*"))


@pytest.mark.integration
async def test_latency_with_console_times_each_alarm_to_the_consoles_stream(
    mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    result = await bench.run_drain(
        mqtt_broker.host,
        mqtt_broker.port,
        tmp_path,
        messages=2000,
        inflight=50,
        batch=500,
        console=True,
    )
    latency = result["latency"]
    assert latency["alarms_sent"] >= 1
    assert latency["alarms_received"] == latency["alarms_sent"]  # the broker got them too
    console = latency["console"]
    assert console["alarms_received"] == latency["alarms_sent"]
    assert console["max_ms"] >= console["p99_ms"] >= console["p50_ms"] > 0
    assert not list(tmp_path.glob("*.db*"))
    assert not list(tmp_path.glob("bench-console-users*"))
    # the book's log level, quietened for the run, is set back for whatever runs next
    assert logging.getLogger("edge_agent.alarms.lifecycle").level == logging.NOTSET
    rows = dict((r[0], r[1]) for r in bench._info_rows({"latency": latency}))
    assert "alarm -> console stream p50 / p99 / max" in rows


@pytest.mark.integration
def test_bare_paho_loop_waits_for_every_puback(mqtt_broker: MqttBroker) -> None:
    with mqtt_subscriber(mqtt_broker, f"{bench.ROOT}/telemetry/#") as sub:
        result = bench.run_bare_paho(
            mqtt_broker.host, mqtt_broker.port, payload=b"x" * 300, messages=2000, inflight=50
        )
        sub.wait_for_count(2000, timeout=60)  # a deadline, not a measurement: 2 busy cores
    assert result["messages"] == 2000
    assert result["messages_per_s"] > 0


@pytest.mark.integration
@pytest.mark.e2e
def test_campus_measures_a_real_agent(mqtt_broker: MqttBroker, tmp_path: Path) -> None:
    result = bench.run_campus(
        mqtt_broker.host,
        mqtt_broker.port,
        tmp_path,
        duration_s=3.5,
        warmup_s=0.5,
        classrooms=1,
        meters=1,
        interval_s=3.0,  # every device reads at least once in the 3.5 s measured
    )
    assert result["devices"] == 3
    assert result["messages"] > 0  # the agent published while we measured
    assert result["agent_rss_mib"] > 5
    # An idle agent may use less than one clock tick (10 ms) in 3.5 s: that is the goal, so the
    # window's figure may be 0. Its start-up (imports, config, connect) always costs more.
    assert result["agent_cpu_percent"] >= 0
    assert result["agent_cpu_s_since_start"] > 0.05


@pytest.mark.integration
@pytest.mark.e2e
def test_gateway90_reads_90_units_behind_one_endpoint(
    mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    # 135 requests of 20 ms a round (the lux sensors' split plan): 2.7 s of a 5 s interval
    result = bench.run_gateway90(
        mqtt_broker.host,
        mqtt_broker.port,
        tmp_path,
        duration_s=5.5,
        warmup_s=1.0,
        interval_s=5.0,
        rules_day=False,  # tests/unit/test_bench_rules.py
    )
    layout = json.loads((tmp_path / "layout.json").read_text())
    assert len({(d["host"], d["port"]) for d in layout["devices"]}) == 1
    assert sorted(d["unit"] for d in layout["devices"]) == list(range(1, 91))
    assert result["devices"] == 90
    assert result["devices_silent"] == []
    assert result["devices_complete"] == 90, result["devices_short"]
    assert result["incomplete_per_device"] == {}
    assert result["seq_gaps"] == 0
    # every lux_noise sensor refused the read across its reserved register and was split
    log_text = (tmp_path / "agent.log").read_text()
    refused = {line.split(": ")[1] for line in log_text.splitlines() if "refused" in line}
    assert refused == {d["id"] for d in layout["devices"] if d["profile"] == "lux_noise"}
