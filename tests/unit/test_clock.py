"""Readings taken before the clock is synchronised get honest timestamps."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock import STA_UNSYNC, TIME_ERROR, SystemClock
from edge_agent.config.loader import load_config
from edge_agent.pipeline import ClockGate, Message, Pipeline
from edge_agent.supervisor import Agent
from tests.e2e import system

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, wall: float, synced: bool) -> None:
        self._wall = wall
        self._mono = 1000.0
        self.is_synced = synced

    def wall(self) -> float:
        return self._wall

    def mono(self) -> float:
        return self._mono

    def synced(self) -> bool:
        return self.is_synced

    def advance(self, s: float) -> None:
        self._wall += s
        self._mono += s


class Sink:
    """The end of a pipeline that only records what reached it."""

    def __init__(self) -> None:
        self.out: list[tuple[str, dict[str, Any], float | None, str]] = []

    def put(self, msg: Message) -> None:
        self.out.append(
            (msg.device, msg.data, msg.ts, msg.quality if msg.kind == "telemetry" else msg.kind)
        )

    async def commit(self, device: str, msgs: Any, cursor: str | None) -> None:
        raise AssertionError("these tests commit nothing")


class Gated:
    """The clock gate in a pipeline of its own: the poll loop's view of it (``telemetry``,
    ``event``), and the gate's counters."""

    def __init__(self, sink: Sink, clock: Any, hold_max_s: float = 120.0) -> None:
        self.stage = ClockGate(clock, hold_max_s)
        self.pipeline = Pipeline([self.stage], sink)
        self.telemetry = self.pipeline.telemetry
        self.event = self.pipeline.event
        self.check = self.pipeline.tick

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stage, name)


REAL_NOW = 1_795_600_000.0  # 2026-11-25
BOOT_WALL = 1_700_000_000.0  # what fake-hwclock restored: months in the past


def test_held_until_sync_then_stamped_from_the_monotonic_clock() -> None:
    clock = FakeClock(BOOT_WALL, synced=False)
    sink = Sink()
    gate = Gated(sink, clock, hold_max_s=120)
    gate.telemetry("d", {"co2": 500}, ts=clock.wall())
    clock.advance(10)
    gate.telemetry("d", {"co2": 510}, ts=clock.wall())
    gate.check()
    assert sink.out == []
    assert gate.held == 2
    clock.advance(5)
    # NTP steps the clock to the real time
    clock._wall = REAL_NOW
    clock.is_synced = True
    gate.check()
    assert [o[2] for o in sink.out] == [REAL_NOW - 15, REAL_NOW - 5]
    assert [o[3] for o in sink.out] == ["good", "good"]
    assert gate.corrected == 2
    gate.telemetry("d", {"co2": 520}, ts=clock.wall())  # synced: straight through
    assert sink.out[-1][2] == REAL_NOW


def test_never_synced_goes_out_uncertain_after_hold_max() -> None:
    clock = FakeClock(BOOT_WALL, synced=False)
    sink = Sink()
    gate = Gated(sink, clock, hold_max_s=60)
    gate.telemetry("d", {"co2": 500}, ts=clock.wall())
    gate.event("door", "door_opened", {"x": 1}, ts=clock.wall())
    clock.advance(59)
    gate.check()
    assert sink.out == []
    clock.advance(2)
    gate.check()
    assert sink.out[0] == ("d", {"co2": 500}, BOOT_WALL, "uncertain")
    assert sink.out[1][1] == {"x": 1, "ts_uncertain": True}
    assert gate.uncertain == 2


def test_backwards_jump_while_synced_passes_through() -> None:
    clock = FakeClock(REAL_NOW, synced=True)
    sink = Sink()
    gate = Gated(sink, clock)
    gate.telemetry("d", {"v": 1}, ts=clock.wall())
    clock._wall -= 3600  # a step back by an hour
    gate.telemetry("d", {"v": 2}, ts=clock.wall())
    assert [o[2] for o in sink.out] == [REAL_NOW, REAL_NOW - 3600]


def test_file_sync_check_follows_the_file(tmp_path: Path) -> None:
    flag = tmp_path / "synced"
    clock = SystemClock("file", flag)
    assert clock.synced() is False
    flag.touch()
    assert clock.synced() is True
    flag.unlink()
    assert clock.synced() is False
    assert SystemClock("none", flag).synced() is True


def eperm() -> tuple[int, int]:
    """adjtimex as systemd's ProtectClock=yes leaves it: refused by the seccomp filter."""
    raise OSError(errno.EPERM, os.strerror(errno.EPERM))


def test_adjtimex_refused_is_not_synchronised(tmp_path: Path) -> None:
    clock = SystemClock("adjtimex", adjtimex=eperm, timesyncd_flag=tmp_path / "no" / "flag")
    assert clock.synced() is False
    assert "EPERM" in clock.reason
    assert "ProtectClock" in clock.reason
    # and readings are held, then marked uncertain, as on any unsynchronised clock
    sink = Sink()
    gate = Gated(sink, clock, hold_max_s=60)
    gate.telemetry("d", {"co2": 500})
    gate.check()
    assert sink.out == []
    assert gate.synced is False


def test_adjtimex_refused_falls_back_to_timesyncd(tmp_path: Path) -> None:
    flag = tmp_path / "timesync" / "synchronized"
    flag.parent.mkdir()  # timesyncd runs
    clock = SystemClock("adjtimex", adjtimex=eperm, timesyncd_flag=flag)
    assert clock.synced() is False
    assert "not synchronised yet" in clock.reason
    flag.touch()  # timesyncd has set the clock
    assert clock.synced() is True
    assert "EPERM" in clock.reason
    assert "timesyncd: synchronised" in clock.reason


def test_adjtimex_answers_are_read() -> None:
    assert SystemClock("adjtimex", adjtimex=lambda: (TIME_ERROR, STA_UNSYNC)).synced() is False
    assert SystemClock("adjtimex", adjtimex=lambda: (0, 0)).synced() is True


async def test_health_says_the_clock_is_not_synchronised_and_why(tmp_path: Path) -> None:
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(
        "site: {id: school-a, gateway_id: gw1}\n"
        "mqtt: {host: 127.0.0.1}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n"
    )
    clock = SystemClock("adjtimex", adjtimex=eperm, timesyncd_flag=tmp_path / "no" / "flag")
    agent = Agent(load_config(cfg_path), cfg_path, clock=clock)
    await agent.outbox.open()
    try:
        health = (await agent.health())["clock"]
    finally:
        await agent.outbox.close()
    assert health["synced"] is False
    assert health["check"] == "adjtimex"
    assert "EPERM" in health["reason"]


_CLOCK_CHILD = """
import json, sys
from pathlib import Path
from edge_agent.clock import SystemClock
clock = SystemClock("adjtimex", timesyncd_flag=Path(sys.argv[1]))
print(json.dumps({"synced": clock.synced(), "reason": clock.reason}))
"""


def test_under_a_protectclock_seccomp_filter_the_clock_is_not_trusted(tmp_path: Path) -> None:
    """A process under a real seccomp filter like systemd's ProtectClock=yes."""
    prefix = system.protectclock_prefix()
    if prefix is None:
        pytest.skip("libseccomp is not installed; the injected EPERM tests still run")
    res = subprocess.run(
        [*prefix, sys.executable, "-c", _CLOCK_CHILD, str(tmp_path / "no" / "flag")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["synced"] is False, out
    assert "EPERM" in out["reason"]
