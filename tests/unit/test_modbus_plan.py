"""Read coalescing: fewest requests within the Modbus limits and the allowed gap."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from edge_agent.drivers.modbus.plan import ReadRequest, plan_reads, split_request
from edge_agent.drivers.modbus.profile import Point, load_profile

PROFILES = [str(Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "profiles")]


def reg(name: str, address: int, type_: str = "uint16", fc: int = 3, **kw: object) -> Point:
    return Point.model_validate(
        {"name": name, "fc": fc, "address": address, "type": type_, "description": name, **kw},
    )


def coil(name: str, address: int, fc: int = 1) -> Point:
    return Point(name=name, fc=fc, address=address, type="bit", description=name)


def spans(requests: list[ReadRequest]) -> list[tuple[int, int, int]]:
    return [(r.fc, r.start, r.count) for r in requests]


def test_sdm630_with_defaults() -> None:
    points = load_profile("sdm630", PROFILES).reported()
    requests = plan_reads(points)
    # 0x0000..0x000B (6 floats); the 40-register hole up to 0x0034 costs more than a new
    # request with the default max_gap of 16, so power..energy_import is a second request,
    # and 0x0156 is far away: a third
    assert spans(requests) == [(4, 0x0000, 12), (4, 0x0034, 22), (4, 0x0156, 2)]
    assert [p.name for p in requests[1].points] == [
        "power_total",
        "power_factor",
        "frequency",
        "energy_import",
    ]


def test_sdm630_with_a_wider_gap_reads_0x0000_to_0x0049_in_one_request() -> None:
    requests = plan_reads(load_profile("sdm630", PROFILES).reported(), max_gap=40)
    assert spans(requests) == [(4, 0x0000, 0x004A), (4, 0x0156, 2)]
    assert sum(len(r.points) for r in requests) == 11


def test_max_registers_caps_a_request() -> None:
    points = load_profile("sdm630", PROFILES).reported()
    requests = plan_reads(points, max_gap=1000, max_registers=20)
    assert all(r.count <= 20 for r in requests)
    # power_total..frequency is 0x34..0x47 = 20 registers; energy_import would be the 21st
    assert spans(requests) == [(4, 0, 12), (4, 0x34, 20), (4, 0x48, 2), (4, 0x156, 2)]
    assert sorted(p.name for r in requests for p in r.points) == sorted(p.name for p in points)


def test_gap_zero_merges_only_adjacent_points() -> None:
    points = [reg("a", 0), reg("b", 1), reg("c", 3), reg("d", 4, "float32")]
    assert spans(plan_reads(points, max_gap=0)) == [(3, 0, 2), (3, 3, 3)]
    assert spans(plan_reads(points, max_gap=1)) == [(3, 0, 6)]


def test_function_codes_are_never_mixed() -> None:
    points = [reg("h", 0), reg("i", 0, fc=4), reg("h2", 1), coil("c", 0), coil("d", 0, fc=2)]
    assert spans(plan_reads(points)) == [(1, 0, 1), (2, 0, 1), (3, 0, 2), (4, 0, 1)]


def test_bit_points_sharing_a_register_read_it_once() -> None:
    points = [reg("alarm", 10, "bit", bit=0), reg("fault", 10, "bit", bit=1), reg("t", 11)]
    (request,) = plan_reads(points)
    assert (request.start, request.count) == (10, 2)
    assert [p.name for p in request.points] == ["alarm", "fault", "t"]


def test_coils_gap_is_counted_in_bits() -> None:
    # max_gap 16 registers = 256 bits: 0, 5, 100 share a request; 1000 does not
    points = [coil("a", 0), coil("b", 5), coil("c", 100), coil("d", 1000)]
    assert spans(plan_reads(points)) == [(1, 0, 101), (1, 1000, 1)]
    assert spans(plan_reads(points, max_gap=0)) == [(1, 0, 1), (1, 5, 1), (1, 100, 1), (1, 1000, 1)]


def test_coils_cap_at_2000_bits() -> None:
    points = [coil(f"c{i}", i * 100) for i in range(30)]  # 0..2900
    requests = plan_reads(points, max_gap=100)
    assert all(r.count <= 2000 for r in requests)
    assert spans(requests) == [(1, 0, 1901), (1, 2000, 901)]


def test_point_wider_than_max_registers_is_an_error() -> None:
    with pytest.raises(ValueError, match="'e' needs 4 registers but max_registers is 2"):
        plan_reads([reg("e", 0, "float64")], max_registers=2)


def test_bad_limits_are_errors() -> None:
    with pytest.raises(ValueError, match="max_registers"):
        plan_reads([reg("a", 0)], max_registers=126)
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads([reg("a", 0)], max_gap=-1)


def test_empty_profile_plans_nothing() -> None:
    assert plan_reads([]) == []


@pytest.mark.parametrize("seed", range(40))
def test_random_maps_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    types = ["uint16", "int16", "int32", "uint32", "float32", "float64"]
    points: list[Point] = []
    address = {3: 0, 4: 0}
    for i in range(rng.randint(1, 60)):
        fc = rng.choice([3, 4])
        address[fc] += rng.choice([0, 0, 1, 2, 5, 17, 40, 200])
        p = reg(f"p{i}", address[fc], rng.choice(types), fc=fc)
        points.append(p)
        address[fc] = p.end + 1
    max_registers, max_gap = rng.choice([4, 10, 60, 125]), rng.choice([0, 1, 16, 50])
    requests = plan_reads(points, max_registers=max_registers, max_gap=max_gap)

    assert sorted(p.name for r in requests for p in r.points) == sorted(p.name for p in points)
    for r in requests:
        assert r.count <= max_registers
        assert all(r.start <= p.address and p.end <= r.end for p in r.points)
        assert r.start == min(p.address for p in r.points)
        assert r.end == max(p.end for p in r.points)
    for a, b in itertools.pairwise(requests):
        if a.fc == b.fc:
            assert a.end < b.start
            # they were split for a reason: the gap is too wide or merging would pass the cap
            assert b.start - a.end - 1 > max_gap or b.end - a.start + 1 > max_registers


def test_split_request_halves_the_points_and_keeps_every_one() -> None:
    points = [reg("a", 0), reg("b", 1), reg("c", 3), reg("d", 6, "float32"), reg("e", 9)]
    (block,) = plan_reads(points)
    first, second = split_request(block)
    assert spans([first, second]) == [(3, 0, 2), (3, 3, 7)]
    assert [p.name for p in first.points + second.points] == ["a", "b", "c", "d", "e"]
    # down to single points
    assert spans(split_request(first)) == [(3, 0, 1), (3, 1, 1)]
    assert split_request(split_request(first)[0]) == []


def test_split_request_keeps_bits_of_one_register_together() -> None:
    alarm = reg("alarm", 0, "bit", bit=2)
    fault = reg("fault", 0, "bit", bit=3)
    (block,) = plan_reads([alarm, fault])
    assert split_request(block) == []  # the same register: nothing to split
    (block,) = plan_reads([alarm, fault, reg("x", 1)])
    first, second = split_request(block)
    assert [p.name for p in first.points] == ["alarm", "fault"]
    assert spans([first, second]) == [(3, 0, 1), (3, 1, 1)]
