"""Golden config cases and the shipped example configs.

``tests/config_cases/<name>/config.yaml`` with either ``error.txt`` (the exact
``file:line  key.path  message`` lines check-config prints) or ``expected.json``
(a subset of the validated config, dumped as JSON).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.loader import load_config
from edge_agent.config.rules import load_rules
from edge_agent.drivers.modbus.profile import builtin_profiles
from edge_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in (ROOT / "tests" / "config_cases").iterdir() if p.is_dir())


def _subset(expected: Any, actual: Any, path: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            _subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: expected {expected!r}, got {actual!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_config_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(case)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    error_file = case / "error.txt"
    if error_file.exists():
        with pytest.raises(ConfigError) as info:
            load_config("config.yaml")
        # a profile next to the case (its profiles/ folder) is named by its absolute path
        got = [
            line.replace(str(builtin_profiles()), "<profiles>").replace(str(case), ".")
            for line in info.value.problems
        ]
        assert got == error_file.read_text(encoding="utf-8").splitlines()
    else:
        cfg = load_config("config.yaml")
        expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
        _subset(expected, cfg.model_dump(mode="json"))


EXAMPLES = sorted((ROOT / "config").glob("*.yaml")) + sorted(
    (ROOT / "drivers").glob("*/sample.yaml")
)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_loads(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Examples refer to credentials that only exist on a gateway; give them here.
    for name in ("mqtt-password", "mqtt-key-password", "pseudonym-secret", "hall-cam-snapshot"):
        (tmp_path / name).write_text("test-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    text = path.read_text(encoding="utf-8")
    if "\nsite:" not in "\n" + text:
        # A driver's sample.yaml is a fragment (buses + devices) to paste into a config.
        path = tmp_path / "agent.yaml"
        path.write_text("site: {id: sample-school, gateway_id: gw1}\n" + text, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.site.id
    assert cfg.devices  # type: ignore[attr-defined]


def test_example_school_is_a_whole_school() -> None:
    notes: list[str] = []
    cfg = load_config(ROOT / "config" / "example-school.yaml", notes=notes)
    devices = cfg.devices  # type: ignore[attr-defined]
    rooms = {
        (d.location.building, d.location.room)
        for d in devices
        if d.location and getattr(d, "profile", None) == "air7in1"
    }
    assert len(rooms) >= 30
    profiles = {getattr(d, "profile", None) for d in devices}
    assert profiles >= {"air7in1", "lux_noise", "sdm630", "adl400", "waveshare_io8"}
    assert len({d.location.building for d in devices if d.location}) >= 3
    # the password is a credential reference, unresolved on a test machine: a note, not an error
    assert any("mqtt.password" in n for n in notes)


def test_example_school_has_its_doors_and_a_night_patrol() -> None:
    warnings: list[str] = []
    cfg = load_config(ROOT / "config" / "example-school.yaml", notes=[], warnings=warnings)
    devices = cfg.devices  # type: ignore[attr-defined]
    readers = {d.kind: d for d in devices if d.kind in ("wg", "hikvision", "zkteco")}
    assert set(readers) == {"wg", "hikvision", "zkteco"}
    gate = readers["wg"]
    assert {(r.direction, r.context) for r in gate.readers} == {("in", "gate"), ("out", "gate")}
    assert readers["zkteco"].context == "canteen"
    assert {r.context for r in readers["hikvision"].readers} == {"dorm"}
    # the card secret is a credential reference, so check-config has nothing to warn about
    assert not warnings
    text = (ROOT / "config" / "example-school.yaml").read_text(encoding="utf-8")
    assert "\n  pseudonym_secret: ${cred:pseudonym-secret}" in text
    doors = cfg.doors  # type: ignore[attr-defined]
    assert [d.id for d in doors.doors] == ["b1-fire-exit-east"]
    assert [i.input for i in doors.inputs] == ["fire"]
    patrol = cfg.patrol  # type: ignore[attr-defined]
    (night,) = patrol.routes
    assert night.start_times == ["22:00", "02:00"]
    assert {c.device for c in patrol.checkpoints} == {d.id for d in readers.values()}


def test_example_school_has_its_cameras_snapshots_and_a_picture_alarm(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config" / "example-school.yaml", notes=[])
    cams = {d.kind: d for d in cfg.devices if d.kind in ("onvif", "hikvision_camera", "dahua")}  # type: ignore[attr-defined]
    assert set(cams) == {"onvif", "hikvision_camera", "dahua"}
    # every camera password is a credential reference, never the password
    text = (ROOT / "config" / "example-school.yaml").read_text(encoding="utf-8")
    for cam in cams.values():
        assert re.search(rf"\n  - id: {cam.id}\n(    .*\n)*?    password: \$\{{cred:", text)
    snapshots = cfg.snapshots  # type: ignore[attr-defined]
    assert [c.id for c in snapshots.cameras] == ["hall-cam"]
    # the school's rule file attaches the courtyard camera's picture to its after-hours alarm,
    # and the default rule it replaces is off (one motion, one alarm)
    assert cfg.rules.files == ["rules/example-school.yaml"]  # type: ignore[attr-defined]
    assert "motion_after_hours" in cfg.rules.disable  # type: ignore[attr-defined]
    ruleset, config_problems, file_problems = load_rules(cfg.rules, ROOT / "config")  # type: ignore[attr-defined]
    assert (config_problems, file_problems) == ([], [])
    pictured = {r.id: r.snapshot for r in ruleset.rules if r.snapshot}
    assert pictured == {"courtyard_after_hours": cams["onvif"].id}
    # the analytics stanza is commented out (it needs the OpenCV extra); uncommented, it is valid
    block = re.search(r"\n  # - id: main-gate-counter\n((  #.*\n)+)", text)
    assert block is not None
    stanza = "\n".join(
        line.replace("  # ", "  ", 1)
        for line in ("  # - id: main-gate-counter\n" + block[1]).splitlines()
    )
    pytest.importorskip("cv2")  # the kind is disabled without OpenCV
    uncommented = tmp_path / "agent.yaml"
    uncommented.write_text(
        f"site: {{id: s, gateway_id: g}}\ndevices:\n{stanza}\n", encoding="utf-8"
    )
    (analytics,) = load_config(uncommented, notes=[]).devices  # type: ignore[attr-defined]
    assert analytics.kind == "camera_analytics"
    assert [line.name for line in analytics.analytics.lines] == ["main-gate"]
    assert analytics.analytics.zones[0].schedule


def test_secret_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = tmp_path / "agent.yaml"
    cfg_file.write_text("site: {id: s, gateway_id: g}\nmqtt:\n  password: ${MQTT_PW}\n")
    monkeypatch.setenv("MQTT_PW", "s3cret")
    assert load_config(cfg_file).mqtt.password == "s3cret"
    monkeypatch.delenv("MQTT_PW")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    assert info.value.problems[0].startswith(f"{cfg_file}:3  mqtt.password  ")
    assert "MQTT_PW" in info.value.problems[0]
