"""Profiles: the shipped register maps load, and broken ones fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_agent.drivers.modbus.profile import Point, Profile, clear_profile_cache, load_profile

SHIPPED = str(Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "profiles")


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_profile_cache()


@pytest.mark.parametrize(
    ("name", "model", "count"),
    [
        ("air7in1", "air7in1", 8),
        ("lux_noise", "lux_noise", 2),
        ("sdm630", "sdm630", 11),
        ("adl400", "adl400", 10),
    ],
)
def test_shipped_profiles_load(name: str, model: str, count: int) -> None:
    profile = load_profile(name, [SHIPPED])
    assert profile.model == model
    assert len(profile.points) == count
    assert all(p.description and p.name for p in profile.points)


def test_shipped_profile_details() -> None:
    sdm = load_profile("sdm630", [SHIPPED])
    energy = sdm.point("energy_total")
    assert energy is not None
    assert (energy.fc, energy.address, energy.type, energy.count) == (4, 0x0156, "float32", 2)
    air = load_profile("air7in1", [SHIPPED])
    address = air.point("modbus_address")
    assert address is not None
    assert address.writable
    assert not address.report
    assert "modbus_address" not in [p.name for p in air.reported()]
    adl = load_profile("adl400", [SHIPPED])
    assert adl.point("energy_total") == adl.points[0]
    assert adl.points[0].scale == 0.01


def test_profiles_are_cached_per_name_and_dirs(tmp_path: Path) -> None:
    first = load_profile("sdm630", [SHIPPED])
    assert load_profile("sdm630", [SHIPPED]) is first
    assert load_profile("sdm630", [str(tmp_path), SHIPPED]) is not first


def test_first_directory_wins(tmp_path: Path) -> None:
    (tmp_path / "sdm630.yaml").write_text(
        "model: mine\nvendor: me\npoints:\n"
        "  - {name: v, fc: 4, address: 0, type: float32, description: v}\n",
    )
    assert load_profile("sdm630", [str(tmp_path), SHIPPED]).model == "mine"
    assert load_profile("sdm630", [SHIPPED, str(tmp_path)]).model == "sdm630"


def test_missing_profile_names_the_file_and_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"profile 'nope' not found: no nope\.yaml in ") as err:
        load_profile("nope", [str(tmp_path), SHIPPED])
    assert str(tmp_path) in str(err.value)


def test_profile_name_cannot_escape_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid"):
        load_profile("../secrets", [str(tmp_path)])


def write(tmp_path: Path, body: str) -> str:
    (tmp_path / "bad.yaml").write_text(body, encoding="utf-8")
    return str(tmp_path / "bad.yaml")


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "model: x\npoints: [\n")
    with pytest.raises(ValueError, match="cannot read profile") as err:
        load_profile("bad", [str(tmp_path)])
    assert path in str(err.value)


def test_not_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_profile("bad", [str(tmp_path)])


def test_schema_errors_name_the_file_and_the_point(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model: x\nvendor: y\npoints:\n"
        "  - {name: co2, fc: 3, adress: 2, type: uint16, description: CO2}\n",
    )
    with pytest.raises(ValueError, match="unknown key") as err:
        load_profile("bad", [str(tmp_path)])
    assert str(err.value).splitlines() == [
        f"{path}:4  points[0](co2).address  Field required",
        f"{path}:4  points[0](co2).adress  unknown key; did you mean 'address'? "
        "/ 未知的配置项，是否应为 address？",
    ]


def test_description_is_optional(tmp_path: Path) -> None:
    write(
        tmp_path, "model: x\nvendor: y\npoints:\n  - {name: co2, fc: 3, address: 2, type: uint16}\n"
    )
    assert load_profile("bad", [str(tmp_path)]).points[0].description == ""


def test_missing_profile_suggests_the_closest_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean 'sdm630'") as err:
        load_profile("sdm603", [str(tmp_path), SHIPPED])
    assert "是否应为 sdm630" in str(err.value)


def test_merge_keys_in_a_profile(tmp_path: Path) -> None:
    write(
        tmp_path,
        "model: x\nvendor: y\n"
        "x-reg: &reg {fc: 4, type: float32, word_order: little}\n"
        "points:\n"
        "  - {<<: *reg, name: v, address: 0}\n"
        "  - {<<: *reg, name: i, address: 2, type: int32}\n",
    )
    v, i = load_profile("bad", [str(tmp_path)]).points
    assert (v.fc, v.type, v.word_order, v.address) == (4, "float32", "little", 0)
    assert (i.fc, i.type, i.word_order, i.address) == (4, "int32", "little", 2)


BASE = {"name": "x", "address": 0, "description": "d"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fc": 1, "type": "uint16"}, "fc 1 .* requires type 'bit'"),
        ({"fc": 2, "type": "float32"}, "fc 2 .* requires type 'bit'"),
        ({"fc": 3, "type": "bit"}, "needs 'bit: 0..15'"),
        ({"fc": 3, "type": "uint16", "bit": 3}, "'bit' is only for type 'bit'"),
        ({"fc": 1, "type": "bit", "bit": 3}, "'bit' is only for type 'bit'"),
        ({"fc": 3, "type": "uint16", "bit": 16}, "less than or equal to 15"),
        ({"fc": 4, "type": "uint16", "writable": True}, "only fc 1 .* or 3 .* can be writable"),
        ({"fc": 2, "type": "bit", "writable": True}, "only fc 1 .* or 3 .* can be writable"),
        ({"fc": 3, "type": "bit", "bit": 1, "writable": True}, "cannot be writable"),
        ({"fc": 3, "type": "uint16", "scale": 0}, "non-zero"),
        ({"fc": 3, "type": "uint16", "range": [10, 1]}, r"range \[10.0, 1.0\]"),
        ({"fc": 3, "type": "float64", "address": 65533}, "passes 65535"),
        ({"fc": 5, "type": "uint16"}, "Input should be 1, 2, 3 or 4"),
        ({"fc": 3, "type": "int8"}, "Input should be 'int16'"),
        ({"fc": 3, "type": "uint16", "name": "CO2"}, "should match pattern"),
        ({"fc": 3, "type": "uint16", "address": 70000}, "less than or equal to 65535"),
    ],
)
def test_point_checks(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Point.model_validate({**BASE, **fields})


def profile(*points: dict[str, object]) -> dict[str, object]:
    return {"model": "m", "vendor": "v", "points": list(points)}


def test_duplicate_point_names() -> None:
    a = {"name": "t", "fc": 3, "address": 0, "type": "uint16", "description": "t"}
    with pytest.raises(ValidationError, match="duplicate point name 't'"):
        Profile.model_validate(profile(a, {**a, "address": 5}))


def test_overlapping_registers_are_refused() -> None:
    f = {"name": "f", "fc": 4, "address": 0, "type": "float32", "description": "f"}
    u = {"name": "u", "fc": 4, "address": 1, "type": "uint16", "description": "u"}
    with pytest.raises(ValidationError, match="'f' and 'u' overlap at fc 4 address 1"):
        Profile.model_validate(profile(f, u))
    # the same address on another function code is another register
    Profile.model_validate(profile(f, {**u, "fc": 3}))


def test_bit_points_may_share_a_register_but_not_a_bit() -> None:
    a = {"name": "a", "fc": 3, "address": 7, "type": "bit", "bit": 0, "description": "a"}
    b = {**a, "name": "b", "bit": 1}
    assert len(Profile.model_validate(profile(a, b)).points) == 2
    with pytest.raises(ValidationError, match="overlap"):
        Profile.model_validate(profile(a, {**b, "bit": 0}))
    c = {"name": "c", "fc": 1, "address": 7, "type": "bit", "description": "c"}
    with pytest.raises(ValidationError, match="overlap"):
        Profile.model_validate(profile(c, {**c, "name": "d"}))
    # a bit point still may not share a register with a number
    with pytest.raises(ValidationError, match="overlap"):
        Profile.model_validate(
            profile(a, {"name": "n", "fc": 3, "address": 7, "type": "uint16", "description": "n"}),
        )


def test_profile_needs_points_and_forbids_extra_keys() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        Profile.model_validate(profile())
    with pytest.raises(ValidationError, match="Extra inputs"):
        Profile.model_validate(
            {
                **profile(
                    {"name": "a", "fc": 3, "address": 0, "type": "uint16", "description": "a"}
                ),
                "modle": "x",
            }
        )
