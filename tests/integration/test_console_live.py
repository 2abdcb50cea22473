"""The console against a real broker: what it returns is what a platform subscriber saw."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from edge_agent.tools.localbroker import free_port
from edge_agent.tools.tail.model import ContractState, run_console
from tests.mqtt_helpers import TestBroker, publish

pytestmark = pytest.mark.integration


def _root() -> str:
    # A site of its own per test: retained messages of other tests never show up here.
    return f"campus/console-{os.urandom(3).hex()}/gw1"


def _envelope(kind: str, device: str, seq: int, data: dict[str, Any], **extra: Any) -> bytes:
    doc = {
        "v": 1,
        "msg_id": extra.pop("msg_id", f"m-{seq}"),
        "epoch": "ep1",
        "seq": seq,
        "ts": "2026-11-28T08:00:00.123Z",
        "device": device,
        "kind": kind,
        "historical": False,
        "data": data,
        **extra,
    }
    return json.dumps(doc).encode()


async def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def _publish(broker: TestBroker, topic: str, payload: bytes, *, retain: bool = False) -> None:
    # The helper blocks until PUBACK: keep it off the event loop that runs the console.
    await asyncio.to_thread(publish, broker, topic, payload, 1, retain, broker.protocol)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_console_returns_what_the_platform_received(
    mqtt_broker: TestBroker, protocol: str
) -> None:
    root = _root()
    meta = {
        "kind": "modbus",
        "model": "air7in1",
        "location": {"building": "b1", "room": "r101"},
        "metrics": [{"name": "co2", "unit": "ppm"}, {"name": "temperature", "unit": "°C"}],
    }
    # Retained before the console starts: it must get them on subscribing.
    await _publish(
        mqtt_broker, f"{root}/status", b'{"state":"online","agent_version":"0.1.0"}', retain=True
    )
    await _publish(
        mqtt_broker, f"{root}/devices/b1-r101-air/meta", json.dumps(meta).encode(), retain=True
    )

    out = io.StringIO()
    state = ContractState(root)
    console = asyncio.create_task(
        run_console(
            mqtt_broker.host,
            mqtt_broker.port,
            root,
            mode="tail",
            protocol=protocol,  # type: ignore[arg-type]
            duration_s=3.0,
            out=out,
            state=state,
        )
    )
    try:
        # The retained meta arriving proves the subscription is in place.
        await _until(lambda: "b1-r101-air" in state.devices, "the retained meta")
        telemetry = f"{root}/telemetry/b1-r101-air"
        for seq in (1, 2, 4):  # seq 3 is lost
            await _publish(
                mqtt_broker,
                telemetry,
                _envelope("telemetry", "b1-r101-air", seq, {"co2": 800 + seq, "temperature": 22.5}),
            )
        await _publish(  # a retransmission of seq 2
            mqtt_broker, telemetry, _envelope("telemetry", "b1-r101-air", 2, {"co2": 802})
        )
        await _publish(mqtt_broker, telemetry, b"{broken")
        alarm = {
            "alarm_id": "a1",
            "rule": "co2_high",
            "severity": "major",
            "state": "active_unacked",
        }
        await _publish(
            mqtt_broker, f"{root}/alarms/active/a1", json.dumps(alarm).encode(), retain=True
        )
        await _until(lambda: "a1" in state.active_alarms, "the active alarm")
        await _publish(mqtt_broker, f"{root}/alarms/active/a1", b"", retain=True)
        result = await console
    finally:
        if not console.done():
            console.cancel()
            with pytest.raises(asyncio.CancelledError):
                await console
        await _publish(mqtt_broker, f"{root}/status", b"", retain=True)
        await _publish(mqtt_broker, f"{root}/devices/b1-r101-air/meta", b"", retain=True)

    assert result is state
    assert result.connected is True
    assert result.status == "online"
    dev = result.devices["b1-r101-air"]
    assert dev.units["co2"] == "ppm"
    assert dev.values["co2"].value == 804  # the late retransmission did not overwrite it
    assert dev.telemetry == 4
    assert (result.gaps, result.duplicates, result.malformed) == (1, 1, 1)
    assert result.active_alarms == {}
    text = out.getvalue()
    assert "telemetry b1-r101-air co2=804ppm temperature=22.5°C [good]" in text
    assert "MALFORMED" in text
    assert "broker connected" in text
    assert "\x1b[" not in text  # not a terminal: plain lines, no colour codes


async def test_console_view_survives_a_broker_restart(mqtt_broker: TestBroker) -> None:
    root = _root()
    out = io.StringIO()
    state = ContractState(root)
    console = asyncio.create_task(
        run_console(
            mqtt_broker.host,
            mqtt_broker.port,
            root,
            mode="view",
            protocol=mqtt_broker.protocol,  # type: ignore[arg-type]
            out=out,
            state=state,
        )
    )
    try:
        await _publish(mqtt_broker, f"{root}/status", b'{"state":"online"}', retain=True)
        await _until(lambda: state.status == "online", "the retained status")
        await asyncio.to_thread(mqtt_broker.restart)
        await _until(lambda: state.reconnects >= 1 and bool(state.connected), "a reconnect")
        # Resubscribed after the reconnect: live telemetry still arrives.
        payload = _envelope("telemetry", "b2-meter", 1, {"power_total": 1234.5})
        topic = f"{root}/telemetry/b2-meter"

        async def keep_publishing() -> None:
            # The console resubscribes right after CONNACK; retry until it sees one message.
            while "b2-meter" not in state.devices:
                await _publish(mqtt_broker, topic, payload)
                await asyncio.sleep(0.2)

        await asyncio.wait_for(keep_publishing(), timeout=10)
        await _until(lambda: "b2-meter" in out.getvalue(), "a redraw showing the meter")
    finally:
        console.cancel()
        with pytest.raises(asyncio.CancelledError):
            await console
        await _publish(mqtt_broker, f"{root}/status", b"", retain=True)

    assert state.devices["b2-meter"].values["power_total"].value == 1234.5
    assert "P=1234.5" in out.getvalue()
    assert "\x1b[" not in out.getvalue()  # not a terminal: no escape codes


async def test_console_without_a_broker_stops_cleanly_after_its_duration() -> None:
    # Nothing listens on this port: the console keeps retrying, then stops on time and
    # leaves no paho thread behind (the autouse leak check fails the test otherwise).
    port = free_port("127.0.0.1")
    out = io.StringIO()
    state = await run_console("127.0.0.1", port, "campus/s1/gw1", duration_s=1.5, out=out)
    assert state.connected is False
    assert state.messages == 0
    assert "broker disconnected (connection refused" in out.getvalue()


class _Terminal(io.StringIO):
    """What the console writes to a terminal, kept: ``isatty()`` says yes."""

    def isatty(self) -> bool:
        return True


async def test_console_view_on_a_terminal_redraws_in_place_at_most_twice_a_second(
    mqtt_broker: TestBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Raspberry Pi console left open for days: a flood of messages must not turn into a
    # flood of redraws. Count full-screen redraws (cursor home) while telemetry streams in.
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    root = _root()
    out = _Terminal()
    state = ContractState(root)
    duration_s = 3.0
    console = asyncio.create_task(
        run_console(
            mqtt_broker.host,
            mqtt_broker.port,
            root,
            mode="view",
            protocol=mqtt_broker.protocol,  # type: ignore[arg-type]
            duration_s=duration_s,
            out=out,
            state=state,
        )
    )
    seq = 0
    try:
        await _until(lambda: bool(state.connected), "the console to connect")
        while not console.done():
            seq += 1
            payload = _envelope("telemetry", "b3-门禁-1", seq, {"co2": 400 + seq})
            await _publish(mqtt_broker, f"{root}/telemetry/b3-门禁-1", payload)
        await console
    finally:
        if not console.done():
            console.cancel()
            with pytest.raises(asyncio.CancelledError):
                await console

    screen = out.getvalue()
    assert state.devices["b3-门禁-1"].telemetry > 10  # it was busy
    assert screen.count("\x1b[?1049h") == 1  # the alternate screen, entered once ...
    assert screen.count("\x1b[?1049l") == 1  # ... and left
    redraws = screen.count("\x1b[H") - 1  # entering the alternate screen homes once too
    assert 1 <= redraws <= 2 * duration_s + 2, redraws
    # The last screen stays on the terminal after leaving the alternate screen, in colour.
    last = screen.rsplit("\x1b[?1049l", 1)[1]
    assert "b3-门禁-1" in last
    assert "\x1b[32mconnected" in last
