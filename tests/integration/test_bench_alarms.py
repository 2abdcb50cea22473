"""``edge-agent bench --only alarms`` (edge_agent/tools/bench_alarms.py): a tiny real run
against the test broker (broker, console and siren legs), and its generated config is one
check-config accepts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.console.auth import set_password
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
    assert loaded.console is None  # no console unless asked


def test_the_generated_config_runs_the_console_on_loopback(tmp_path: Path) -> None:
    set_password(tmp_path / "users", "bench", "secret")  # check-config wants the file
    cfg = bench_alarms.alarm_config(
        host="127.0.0.1",
        port=1883,
        protocol="5",
        outbox_path=str(tmp_path / "outbox.db"),
        di_port=5020,
        relay_port=5021,
        console_credentials="users",
    )
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(path)
    assert loaded.console is not None
    assert loaded.console.credentials_path(tmp_path) == tmp_path / "users"
    assert loaded.http.bind == "127.0.0.1:0"  # loopback, a port the agent picks


def test_the_console_url_is_read_from_the_agents_log_line() -> None:
    log = (
        "2026-11-30 03:20:01 INFO edge_agent.http: HTTP server listening on "
        "http://127.0.0.1:40123 (console) / HTTP 服务已启动\n"
    )
    assert bench_alarms.listening_url(log) == "http://127.0.0.1:40123"
    assert bench_alarms.listening_url("HTTP server listening on http://0.0.0.0:8080") is None


@pytest.mark.e2e
def test_every_input_gives_its_alarm_and_rings_the_siren_while_a_backlog_drains(
    mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    # min_inputs: 3000 messages can drain before the warm-up alarm is through (more so
    # since the bench logs in to the console first); the legs need inputs to time
    result = bench_alarms.run_alarm_part(
        mqtt_broker.host, mqtt_broker.port, tmp_path, messages=3000, batch=500, min_inputs=3
    )
    assert result["inputs"] >= 3
    assert result["alarms_received"] == result["inputs"]  # every input's alarm arrived
    b = result["input_to_broker"]
    assert b["max_ms"] >= b["p99_ms"] >= b["p50_ms"] > 0
    siren = result["input_to_siren"]
    assert siren["count"] == result["siren_inputs_while_off"] >= 1  # acked: off again each time
    assert result["door_to_broker"]["count"] + result["fire_to_broker"]["count"] == result["inputs"]
    # the same alarms on the agent's console, read by a logged-in client's event stream
    assert result["console_received"] == result["inputs"]
    c = result["input_to_console"]
    assert c["count"] == result["inputs"]
    assert c["max_ms"] >= c["p99_ms"] >= c["p50_ms"] > 0
    assert result["console_p99_ms"] == c["p99_ms"]
    assert len(result["console_latencies_ms"]) == result["inputs"]
    assert not list(tmp_path.glob("outbox.db*"))  # the backlog's database is removed
    assert not (tmp_path / "console-users").exists()  # the bench's password hash too
    assert (tmp_path / "agent.log").exists()  # the agent's log stays for a look


def test_the_report_shows_the_alarm_figures_and_judges_the_p99() -> None:
    stats = {"count": 3, "p50_ms": 150.0, "p99_ms": 300.0, "max_ms": 410.0}
    results = {
        "alarms": {
            "input_to_broker": stats,
            "input_to_siren": {**stats, "p50_ms": 120.0},
            "input_to_console": {**stats, "p50_ms": 140.0},
            "drain_seconds": 91.2,
            "agent_cpu_percent": 63.8,
            "p99_ms": 1200.0,
            "console_p99_ms": 310.0,
        }
    }
    report = bench.render_report(results, {})
    assert "alarms: input->siren p50 / p99 / max" in report
    assert "alarms: input->console p50 / max" in report
    verdict = {v.target.label: v.status for v in bench.evaluate(results)}
    assert verdict["alarms: input->broker p99 (1M draining)"] == "MISS"  # over 1 s
    assert verdict["alarms: input->console p99 (1M draining)"] == "PASS"


async def test_the_console_client_logs_in_as_a_browser_and_hears_each_alarm(
    tmp_path: Path,
) -> None:
    """The client both console legs use (``alarms`` and ``latency --console``): a wrong
    password is a BenchError, not a leg that silently measures nothing; logged in, every
    alarm event after the snapshot reaches ``on_event``, and a stream the console ends
    is noticed."""
    from edge_agent.alarms.lifecycle import AlarmBook

    book = AlarmBook(bench.ROOT, lambda *a, **kw: None, lambda t, p: None)
    watch = bench._ConsoleWatch(book, tmp_path)
    await watch.server.start()
    base = f"http://127.0.0.1:{watch.server.addresses[0][1]}"
    seen: list[tuple[str, dict[str, object]]] = []
    wrong = bench.ConsoleClient(base, "bench", "not-the-password", lambda *e: None)
    right = bench.ConsoleClient(base, "bench", watch.password, lambda n, d, _t: seen.append((n, d)))
    try:
        with pytest.raises(bench.BenchError, match="login failed: HTTP 401"):
            await wrong.start()
        book.raise_("door_forced", "di-01", "critical", en="before", zh="之前")  # in the snapshot
        await right.start()
        book.raise_("fire_input", "di-02", "critical", en="fire", zh="火警")
        for _ in range(500):
            if any(n == "alarm" for n, _d in seen):
                break
            await asyncio.sleep(0.01)
        alarms = [d for n, d in seen if n == "alarm"]
        assert [(a["rule"], a["device"], a["state"]) for a in alarms] == [
            ("fire_input", "di-02", "active_unacked")
        ]
        assert right.alive
        watch.console.close()  # the agent stops: its streams end
        for _ in range(500):
            if not right.alive:
                break
            await asyncio.sleep(0.01)
        assert not right.alive
        assert right.ended == "the console closed its event stream"
    finally:
        await wrong.stop()
        await right.stop()
        await watch.stop()
