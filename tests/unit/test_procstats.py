"""Process statistics for ROOT/health, read from the real /proc and from a fake one."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_agent.procstats import ProcessStats

needs_proc = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1


def test_cpu_percent_is_higher_when_busy_than_when_sleeping() -> None:
    stats = ProcessStats()
    stats.sample()
    time.sleep(0.2)
    idle = stats.sample()["cpu_percent"]
    _busy(0.2)
    busy = stats.sample()["cpu_percent"]
    assert busy > idle
    assert busy > 10  # a busy loop uses a good share of one core, whatever the machine


@needs_proc
def test_real_proc_numbers_are_plausible() -> None:
    stats = ProcessStats()
    sample = stats.sample()
    assert sample["rss_bytes"] > 1024 * 1024  # a Python interpreter is never below 1 MiB
    assert sample["threads"] >= 1
    # The test process started before this test, and /proc tells us when.
    assert sample["uptime_s"] > 0


@needs_proc
def test_threads_counts_os_threads() -> None:
    stats = ProcessStats()
    before = stats.sample()["threads"]
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        assert stats.sample()["threads"] == before + 1
    finally:
        stop.set()
        worker.join()


def _fake_proc(root: Path, *, comm: str, threads: int, start_ticks: int, rss_pages: int) -> None:
    (root / "self").mkdir(parents=True)
    # Fields 3..22 of proc(5); field 20 is num_threads, field 22 starttime.
    after_comm = ["S"] + ["0"] * 16 + [str(threads), "0", str(start_ticks)] + ["0"] * 30
    (root / "self" / "stat").write_text(f"4242 ({comm}) " + " ".join(after_comm) + "\n")
    (root / "self" / "statm").write_text(f"9000 {rss_pages} 300 5 0 700 0\n")
    (root / "uptime").write_text("1000.00 3000.00\n")


def test_parses_stat_with_awkward_command_name(tmp_path: Path) -> None:
    # The command name may contain spaces and ')' — parsing must split after the last ')'.
    ticks = os.sysconf("SC_CLK_TCK")
    _fake_proc(tmp_path, comm="edge) agent 2", threads=7, start_ticks=900 * ticks, rss_pages=2500)
    wall = [50.0]
    stats = ProcessStats(proc_root=tmp_path, clock=lambda: wall[0], cpu_clock=lambda: 1.0)
    wall[0] = 60.0
    sample = stats.sample()
    assert sample["threads"] == 7
    assert sample["rss_bytes"] == 2500 * os.sysconf("SC_PAGE_SIZE")
    # Started 900 s after boot, booted 1000 s ago -> 100 s before construction, +10 s since.
    assert sample["uptime_s"] == pytest.approx(110.0)


def test_cpu_percent_from_injected_clocks(tmp_path: Path) -> None:
    wall, cpu = [0.0], [0.0]
    stats = ProcessStats(proc_root=tmp_path, clock=lambda: wall[0], cpu_clock=lambda: cpu[0])
    wall[0], cpu[0] = 10.0, 2.5
    assert stats.sample()["cpu_percent"] == pytest.approx(25.0)
    wall[0], cpu[0] = 12.0, 2.5
    assert stats.sample()["cpu_percent"] == 0.0  # per interval, not since start
    assert stats.sample()["cpu_percent"] == 0.0  # no time passed: no division by zero


@pytest.mark.skipif(sys.platform == "win32", reason="resource module is Unix only")
def test_falls_back_without_proc(tmp_path: Path) -> None:
    stats = ProcessStats(proc_root=tmp_path / "missing")
    sample = stats.sample()
    assert sample["rss_bytes"] > 0  # peak RSS from getrusage
    assert sample["threads"] == threading.active_count()
    assert sample["uptime_s"] >= 0
