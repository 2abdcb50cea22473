"""Readings taken before the clock is synchronised get honest timestamps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.clock import ClockGate, SystemClock


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
    def __init__(self) -> None:
        self.out: list[tuple[str, dict[str, Any], float | None, str]] = []

    def telemetry(
        self, device: str, data: dict[str, Any], *, ts: float | None = None, quality: str = "good"
    ) -> None:
        self.out.append((device, data, ts, quality))

    def event(
        self, device: str, type_: str, data: dict[str, Any], *, ts: float | None = None
    ) -> None:
        self.out.append((device, data, ts, "event"))


REAL_NOW = 1_795_600_000.0  # 2026-11-25
BOOT_WALL = 1_700_000_000.0  # what fake-hwclock restored: months in the past


def test_held_until_sync_then_stamped_from_the_monotonic_clock() -> None:
    clock = FakeClock(BOOT_WALL, synced=False)
    sink = Sink()
    gate = ClockGate(sink, clock, hold_max_s=120)
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
    gate = ClockGate(sink, clock, hold_max_s=60)
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
    gate = ClockGate(sink, clock)
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
