"""The bench's day of readings through the alarm rules: the rules' state stops growing
once the longest mean's window is full, and stays small per (rule, device)."""

from __future__ import annotations

from edge_agent.tools.bench_rules import deep_size, rules_state_over_day


def test_the_rules_state_is_flat_after_the_longest_window_and_small() -> None:
    day = rules_state_over_day(
        [("r1-air", "air7in1"), ("r1-lux", "lux_noise")], 10.0, checkpoints_h=(0.5, 25, 49)
    )
    sizes = day["state_bytes_at_hours"]
    assert day["alarms_raised"] == 0  # typical values: the book holds nothing
    assert sizes["0.5"] < sizes["25"]  # the means fill over their windows ...
    assert sizes["49"] <= sizes["25"] * 1.01  # ... and then the state stays as it is
    # 8 rolling means on these two sensors (1 h, 8 h, 24 h windows of 96 buckets each)
    # and a school-day mean: a list per bucket made each ~16 KiB after a day (their
    # tracks included), two flat arrays and a running total ~3 KiB
    assert sizes["49"] < 8 * 4 * 1024


def test_deep_size_counts_each_object_once() -> None:
    shared = list(range(100))
    assert deep_size([[shared, shared]]) == deep_size([[shared]]) + 8
