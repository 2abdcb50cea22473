"""A site builds the config models of the kinds it uses only (issue 8 item 9): every
kind's pydantic models cost each gateway memory, and most sites use one or two kinds.
A file with a mistake in it is checked against every kind, so check-config says the
same thing whatever kinds are installed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent import registry
from edge_agent.config import loader
from edge_agent.config.loader import load_config
from edge_agent.errors import ConfigError
from tests.push_fixture_driver import HTTP_KIND, KIND, UDP_KIND, install

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in (ROOT / "tests" / "config_cases").iterdir() if p.is_dir())

MODBUS_SITE = """\
site: {id: school-a, gateway_id: gw1}
buses:
  - {id: gw, type: tcp, host: 127.0.0.1, port: 1502}
devices:
  - {id: r101-air, kind: modbus, profile: air7in1, bus: gw, unit: 3}
"""
DOOR_SITE = """\
site: {id: school-a, gateway_id: gw1}
devices:
  - {id: door-a, kind: udpfixture, serial: 11}
"""

# A fresh interpreter: this test process has imported every kind already.
_PROBE = """
import json, sys
from edge_agent import registry
from edge_agent.config.loader import load_config
registry.BUILTIN["udpfixture"] = "tests.push_fixture_driver:UdpFixtureDriver"
registry.BUILTIN["pushfixture"] = "tests.push_fixture_driver:PushFixtureDriver"
cfg = load_config(sys.argv[1])
print(json.dumps({
    "imported": "tests.push_fixture_driver" in sys.modules,
    "devices": [type(d).__name__ for d in cfg.devices],
}))
"""


def _load_in_fresh_interpreter(path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_a_modbus_only_site_never_imports_another_kind(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(MODBUS_SITE)
    got = _load_in_fresh_interpreter(path)
    assert got == {"imported": False, "devices": ["ModbusDevice"]}
    # the other kinds are installed all the same: a site that names one gets it
    path.write_text(DOOR_SITE)
    got = _load_in_fresh_interpreter(path)
    assert got == {"imported": True, "devices": ["UdpFixtureConfig"]}


@pytest.fixture
def more_kinds() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    install(KIND, UDP_KIND, HTTP_KIND)
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def _problems(case: Path) -> list[str]:
    try:
        load_config("config.yaml")
    except ConfigError as err:
        return list(err.problems)
    return []


@pytest.mark.usefixtures("more_kinds")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_config_says_the_same_as_against_every_kind(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(case)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    got = _problems(case)
    monkeypatch.setattr(loader, "kinds_of_file", lambda _data: None)
    assert got == _problems(case)


@pytest.mark.usefixtures("more_kinds")
def test_an_unknown_kind_still_lists_every_known_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(MODBUS_SITE + "  - {id: d1, kind: udpfixtur}\n")
    every = ", ".join(sorted(registry.BUILTIN))  # the shipped kinds and the test kinds
    assert "udpfixture" in every
    assert _problems(tmp_path) == [
        f"config.yaml:6  devices[1].kind  unknown kind 'udpfixtur' (known: {every}) "
        "/ 未知的设备类型"
    ]
