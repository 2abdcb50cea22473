"""Unit tests of the simulated campus: encoder, timetable, world model, faults, layout."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_agent.simulators import CampusSim, Fault, FaultBoard, Phase, SimClock, Timetable
from edge_agent.simulators.faults import ScheduledFault, load_schedule, parse_schedule
from edge_agent.simulators.modbus import garble
from edge_agent.simulators.profiles import Point, ProfileError, load_profiles, profile_from_dict
from edge_agent.simulators.registers import EncodeError, clamp_to_range, decode, encode, quantize

CST = timezone(timedelta(hours=8))
# Tuesday 2025-03-04, a school day.
TUESDAY = datetime(2025, 3, 4, 0, 0, tzinfo=CST)
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def point(type_: str, **kw: object) -> Point:
    fields: dict[str, object] = {"name": "p", "fc": 3, "address": 0, "type": type_}
    fields.update(kw)
    return Point(**fields)  # type: ignore[arg-type]


# --- encoder -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "value", "words"),
    [
        ({"type_": "float32"}, 230.0, [0x4366, 0x0000]),
        ({"type_": "float32", "word_order": "little"}, 230.0, [0x0000, 0x4366]),
        ({"type_": "float32", "byte_order": "little"}, 230.0, [0x6643, 0x0000]),
        (
            {"type_": "float32", "byte_order": "little", "word_order": "little"},
            230.0,
            [0x0000, 0x6643],
        ),
        ({"type_": "float32"}, -1.5, [0xBFC0, 0x0000]),
        ({"type_": "float64"}, 1.0, [0x3FF0, 0, 0, 0]),
        ({"type_": "uint16", "scale": 0.1}, 23.4, [234]),
        ({"type_": "int16", "scale": 0.1}, -0.1, [0xFFFF]),
        ({"type_": "int16", "scale": 0.001}, -1.0, [0xFC18]),
        ({"type_": "uint32"}, 123456, [0x0001, 0xE240]),
        ({"type_": "uint32", "word_order": "little"}, 123456, [0xE240, 0x0001]),
        ({"type_": "uint32", "scale": 0.01}, 44184.22, [0x0043, 0x6B76]),
        ({"type_": "int32"}, -2, [0xFFFF, 0xFFFE]),
        ({"type_": "uint16", "scale": 0.5, "offset": -40.0}, 20.0, [120]),
        ({"type_": "uint16", "byte_order": "little"}, 0x1234, [0x3412]),
    ],
)
def test_encode_matches_hand_computed_words(
    kw: dict[str, object], value: float, words: list[int]
) -> None:
    p = point(**kw)  # type: ignore[arg-type]
    assert encode(p, value) == words
    assert decode(p, words) == pytest.approx(value)


def test_bit_points_encode_into_their_bit() -> None:
    in_register = point("bit", bit=5)
    assert encode(in_register, 1) == [1 << 5]
    assert encode(in_register, 0) == [0]
    assert decode(in_register, [0xFFFF & ~(1 << 5)]) == 0
    assert decode(in_register, [1 << 5]) == 1
    coil = point("bit", fc=1)
    assert encode(coil, 1) == [1]


def test_values_that_do_not_fit_are_refused() -> None:
    with pytest.raises(EncodeError):
        encode(point("uint16"), -1)
    with pytest.raises(EncodeError):
        encode(point("int16", scale=0.001), 40.0)
    with pytest.raises(EncodeError):
        encode(point("float32"), float("nan"))


def test_clamp_keeps_values_in_range_on_the_register_grid() -> None:
    p = point("uint16", scale=0.1, range=(0.0, 100.0))
    assert clamp_to_range(p, 123.4) == pytest.approx(100.0)
    assert clamp_to_range(p, -3) == 0
    assert clamp_to_range(p, 45.06) == pytest.approx(45.1)
    # A limit that is not on the grid: the value steps back inside.
    odd = point("uint16", scale=1.0, range=(0.0, 10.4))
    assert clamp_to_range(odd, 10.4) == 10
    assert quantize(point("float32"), 0.1) != 0.1  # float32 rounding is what the wire carries


# --- profiles ------------------------------------------------------------------------------------
def test_repository_profiles_load() -> None:
    profiles = load_profiles()
    assert {"air7in1", "lux_noise", "sdm630", "adl400"} <= set(profiles)
    sdm = profiles["sdm630"]
    assert sdm.point("voltage_l1").fc == 4
    assert sdm.point("energy_total").address == 0x0156
    assert profiles["air7in1"].point("modbus_address").writable


def test_profile_errors_name_the_problem() -> None:
    good = {"name": "x", "fc": 3, "address": 0, "type": "uint16"}
    with pytest.raises(ProfileError, match="unknown type"):
        profile_from_dict({"model": "m", "points": [{**good, "type": "uint24"}]})
    with pytest.raises(ProfileError, match="unknown keys"):
        profile_from_dict({"model": "m", "points": [{**good, "sclae": 0.1}]})
    with pytest.raises(ProfileError, match="duplicate"):
        profile_from_dict({"model": "m", "points": [good, good]})


# --- timetable and clock -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hhmm", "phase", "lesson"),
    [
        ("03:00", Phase.CLOSED, None),
        ("07:30", Phase.ARRIVAL, None),
        ("08:00", Phase.LESSON, 0),
        ("08:39", Phase.LESSON, 0),
        ("08:45", Phase.BREAK, None),
        ("08:50", Phase.LESSON, 1),
        ("09:45", Phase.BREAK, None),
        ("10:00", Phase.LESSON, 2),
        ("12:00", Phase.LUNCH, None),
        ("13:30", Phase.LESSON, 4),
        ("16:10", Phase.LESSON, 7),
        ("16:45", Phase.AFTER_SCHOOL, None),
        ("18:30", Phase.CLOSED, None),
    ],
)
def test_timetable_school_day(hhmm: str, phase: Phase, lesson: int | None) -> None:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    info = Timetable().phase(TUESDAY.replace(hour=hours, minute=minutes))
    assert (info.phase, info.lesson) == (phase, lesson)


def test_no_lessons_at_weekends() -> None:
    saturday = TUESDAY + timedelta(days=4)
    assert saturday.weekday() == 5
    tt = Timetable()
    assert {tt.phase(saturday.replace(hour=h)).phase for h in range(24)} == {Phase.CLOSED}


def test_timetable_rejects_overlapping_lessons() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Timetable(lessons=(("08:00", "08:40"), ("08:30", "09:00")))


def test_clock_runs_at_speed_and_keeps_the_start_zone() -> None:
    now = [100.0]
    clock = SimClock(TUESDAY.replace(hour=8), speed=60, monotonic=lambda: now[0])
    assert clock.now() == TUESDAY.replace(hour=8)
    now[0] += 10
    assert clock.now() == TUESDAY.replace(hour=8, minute=10)
    assert clock.now().utcoffset() == timedelta(hours=8)
    _day, weekday, sod = clock.local_day(clock.now_s())
    assert (weekday, sod) == (1, 8 * 3600 + 600)
    frozen = SimClock(TUESDAY, speed=0, monotonic=lambda: now[0])
    now[0] += 1000
    assert frozen.now() == TUESDAY
    with pytest.raises(ValueError, match="speed"):
        SimClock(TUESDAY, speed=-1)


# --- the simulated world -------------------------------------------------------------------------
def campus(**kw: object) -> CampusSim:
    args: dict[str, object] = {
        "classrooms": 4,
        "meters": 2,
        "speed": 0,
        "seed": 7,
        "start": TUESDAY,
    }
    args.update(kw)
    return CampusSim(**args)  # type: ignore[arg-type]


def at(sim: CampusSim, device: str, hhmm: str, day: int = 0) -> dict[str, float]:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    t = (TUESDAY + timedelta(days=day, hours=hours, minutes=minutes)).timestamp()
    return sim.device(device).wire_values(t)


def test_co2_rises_in_lessons_and_falls_in_breaks() -> None:
    sim = campus()
    lesson_ends = ["08:39", "09:29", "10:39", "11:29", "14:09", "14:59", "15:49", "16:29"]
    for room in ("b1-r101-air", "b1-r102-air", "b1-r103-air", "b1-r104-air"):
        assert 400 <= at(sim, room, "05:00")["co2"] <= 480
        ends = [at(sim, room, hhmm)["co2"] for hhmm in lesson_ends]
        # Now and then a class is in the gym or a lab; most lessons fill the room.
        assert sum(1 for c in ends if c > 1000) >= 6, ends
        assert max(ends) > 1200
        assert at(sim, room, "09:59")["co2"] < 650  # the 30-minute break airs the room
        assert at(sim, room, "13:29")["co2"] < 900  # lunch (with the nap in the room)
        assert at(sim, room, "20:00")["co2"] < 480
        assert at(sim, room, "10:39", day=4)["co2"] < 480  # Saturday


def test_noise_light_and_load_follow_the_timetable() -> None:
    sim = campus()
    lux = "b1-r101-lux"
    assert (
        at(sim, lux, "10:45")["noise"]
        > at(sim, lux, "10:20")["noise"]
        > at(sim, lux, "02:00")["noise"]
    )
    assert at(sim, lux, "02:00")["illuminance"] == 0
    assert at(sim, lux, "10:20")["illuminance"] > 300
    for meter, unit in (("meter-1", 1.0), ("meter-2", 1000.0)):  # sdm630 in W, adl400 in kW
        day = at(sim, meter, "10:20")
        night = at(sim, meter, "02:00")
        assert day["power_total"] * unit > 3 * night["power_total"] * unit
        assert 225 < day["voltage_l1"] < 235
        assert 49.9 < day["frequency"] < 50.1
        assert 0.75 <= day["power_factor"] <= 0.99
        # The current follows the power: P = 3 · V · I · PF within imbalance.
        volts = sum(day[f"voltage_l{i}"] for i in (1, 2, 3)) / 3
        amps = sum(day[f"current_l{i}"] for i in (1, 2, 3))
        assert volts * amps * day["power_factor"] == pytest.approx(
            day["power_total"] * unit, rel=0.03
        )


def test_energy_accumulates_the_load() -> None:
    sim = campus()
    e1 = at(sim, "meter-1", "08:00")["energy_total"]
    e2 = at(sim, "meter-1", "12:00")["energy_total"]
    e3 = at(sim, "meter-1", "12:00", day=1)["energy_total"]
    mean_kw = (e2 - e1) / 4
    assert 3 < mean_kw < 32
    assert e3 > e2 > e1
    assert at(sim, "meter-1", "12:00")["energy_import"] == e2


def test_values_are_reproducible_from_the_seed_whatever_the_read_pattern() -> None:
    a, b, c = campus(seed=3), campus(seed=3), campus(seed=4)
    # b is read often, a only at the end: the answer at 15:00 must be the same.
    for minute in range(0, 15 * 60, 7):
        at(b, "b1-r102-air", f"{minute // 60:02d}:{minute % 60:02d}")
        at(b, "meter-2", f"{minute // 60:02d}:{minute % 60:02d}")
    for device in ("b1-r102-air", "b1-r102-lux", "meter-2"):
        assert at(a, device, "15:00") == at(b, device, "15:00")
    assert at(a, "b1-r102-air", "15:00") != at(c, "b1-r102-air", "15:00")


def test_every_value_stays_in_its_profile_range_for_a_week() -> None:
    sim = campus(classrooms=6, meters=4, start=TUESDAY - timedelta(days=1))
    start = sim.clock.start_s
    for step in range(0, 7 * 24 * 60, 17):  # every 17 simulated minutes
        t = start + step * 60
        for device in sim.devices.values():
            for name, value in device.wire_values(t).items():
                low, high = device.profile.point(name).range or (-1e300, 1e300)
                assert low <= value <= high, (device.id, name, value, t)


# --- faults --------------------------------------------------------------------------------------
def test_schedule_entries_apply_in_their_window_and_runtime_faults_win() -> None:
    schedule = parse_schedule(
        [
            {"device": "d1", "fault": "exception", "code": 6, "from_s": 10, "to_s": 20},
            {"device": "d1", "fault": "slow", "delay_s": 1.5, "from_s": 30},
            {"device": "d2", "fault": "no_answer"},
        ]
    )
    board = FaultBoard(schedule)
    assert board.active("d1", 5) is None
    assert board.active("d1", 10) == Fault("exception", code=6)
    assert board.active("d1", 19.9) == Fault("exception", code=6)
    assert board.active("d1", 20) is None
    assert board.active("d1", 1e6) == Fault("slow", delay_s=1.5)
    assert board.active("d2", 0) == Fault("no_answer")
    assert board.active("d3", 0) is None
    board.set("d1", Fault.make("garbled"))
    assert board.active("d1", 15) == Fault("garbled")
    board.clear("d1")
    assert board.active("d1", 15) == Fault("exception", code=6)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"device": "d", "fault": "melted"}, "unknown fault"),
        ({"fault": "slow"}, "missing 'device'"),
        ({"device": "d", "fault": "slow", "code": 3}, "no parameter"),
        ({"device": "d", "fault": "exception", "code": 9}, "exception code"),
        ({"device": "d", "fault": "slow", "delay_s": -1}, "delay_s"),
        ({"device": "d", "fault": "garbled", "from_s": 5, "to_s": 1}, "to_s before from_s"),
    ],
)
def test_bad_schedule_entries_are_refused(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule([{"device": "ok", "fault": "no_answer"}, entry])


def test_schedule_files_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "faults.yaml"
    yaml_file.write_text(
        "- {device: b1-r101-air, fault: exception, code: 2, from_s: 1, to_s: 2}\n"
        "- device: meter-1\n  fault: out_of_range\n  metric: voltage_l1\n",
        encoding="utf-8",
    )
    json_file = tmp_path / "faults.json"
    json_file.write_text(
        json.dumps([{"device": "meter-1", "fault": "slow", "delay_s": 3}]), "utf-8"
    )
    assert load_schedule(yaml_file) == [
        ScheduledFault("b1-r101-air", Fault("exception", code=2), 1.0, 2.0),
        ScheduledFault("meter-1", Fault("out_of_range", metric="voltage_l1"), 0.0, None),
    ]
    assert load_schedule(json_file) == [ScheduledFault("meter-1", Fault("slow", delay_s=3.0))]
    sim = campus(faults=yaml_file)
    assert sim.faults.active("meter-1", 100.0) == Fault("out_of_range", metric="voltage_l1")
    with pytest.raises(KeyError, match="unknown device"):
        campus(faults=[ScheduledFault("b9-r999-air", Fault("garbled"))])


def test_out_of_range_fault_shows_in_truth() -> None:
    sim = campus()
    normal = sim.truth("b1-r101-air")
    sim.set_fault("b1-r101-air", "out_of_range")  # default: first point, above its range
    assert sim.truth("b1-r101-air")["humidity"] > 100
    sim.set_fault("b1-r101-air", "out_of_range", metric="co2", value=9000)
    faulty = sim.truth("b1-r101-air")
    assert faulty["co2"] == 9000
    assert faulty["temperature"] == normal["temperature"]
    sim.set_fault("meter-2", "out_of_range", metric="frequency")
    assert sim.truth("meter-2")["frequency"] > 65
    sim.clear_fault("b1-r101-air")
    assert sim.truth("b1-r101-air") == normal
    with pytest.raises(ValueError, match="out-of-range"):
        sim.set_fault("meter-2", "out_of_range", metric="frequency", value=50)
    with pytest.raises(ValueError, match="no metric"):
        sim.set_fault("meter-2", "out_of_range", metric="co2")
    with pytest.raises(KeyError):
        sim.set_fault("nobody", "garbled")


def test_garble_breaks_crc_and_byte_count() -> None:
    rtu = bytes.fromhex("0103020001 79 84".replace(" ", ""))
    bad = garble(rtu, "rtu")
    assert bad[:-2] == rtu[:-2]
    assert bad[-2:] != rtu[-2:]
    mbap = bytes.fromhex("0001 0000 0005 01 03 02 0001".replace(" ", ""))
    bad = garble(mbap, "socket")
    assert bad[8] == 4
    assert len(bad) == len(mbap)
    exc = bytes.fromhex("0001 0000 0003 01 83 02".replace(" ", ""))
    assert int.from_bytes(garble(exc, "socket")[4:6], "big") == 5


# --- layout --------------------------------------------------------------------------------------
def test_layout_of_a_large_campus() -> None:
    sim = campus(classrooms=60, meters=30)
    layout = sim.layout
    servers, devices = layout["servers"], layout["devices"]
    assert len(devices) == 60 * 2 + 30
    assert len(servers) == 5  # four buildings of 15 classrooms, one meter board
    ids = [d["id"] for d in devices]
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.match(i) for i in ids)
    assert "b1-r101-air" in ids
    assert "b1-r305-lux" in ids
    assert "b4-r101-air" in ids
    assert "meter-30" in ids
    first = next(d for d in devices if d["id"] == "b2-r203-lux")
    assert first["location"] == {"building": "B2", "floor": 2, "room": "203"}
    assert first["profile"] == "lux_noise"
    assert first["framer"] == "socket"
    meters = [d for d in devices if d["id"].startswith("meter-")]
    assert {d["profile"] for d in meters} == {"sdm630", "adl400"}
    assert sorted(d["unit"] for d in meters) == list(range(1, 31))
    by_building: dict[str, list[int]] = {}
    for d in devices:
        if not d["id"].startswith("meter-"):
            by_building.setdefault(d["location"]["building"], []).append(d["unit"])
    assert all(sorted(u) == list(range(1, 31)) for u in by_building.values())
    json.dumps(layout)  # serialisable


def test_consecutive_ports_from_base_port() -> None:
    sim = campus(classrooms=20, meters=1, base_port=15020)
    assert [s["port"] for s in sim.layout["servers"]] == [15020, 15021, 15022]


def test_cli_reserved_registers_parse_and_merge() -> None:
    import argparse

    from edge_agent.simulators.__main__ import _merge, _parser

    args = _parser().parse_args(
        [
            "campus",
            "--reserved",
            "lux_noise:1",
            "--reserved",
            "lux_noise:0x10,7",
            "--reserved",
            "air7in1:9",
        ]
    )
    assert _merge(args.reserved) == {"lux_noise": [1, 16, 7], "air7in1": [9]}
    for bad in ("lux_noise", "lux_noise:", ":1", "lux_noise:x", "lux_noise:70000"):
        with pytest.raises((SystemExit, argparse.ArgumentTypeError)):
            _parser().parse_args(["campus", "--reserved", bad])
