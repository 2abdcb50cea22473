"""What a kind brings to the config file (issue 8), through the fixture kinds of
tests/push_fixture_driver.py: its checks across devices (``check_across``), its own
top-level keys (``Settings``), and a hub that needs the HTTP server (``http.bind``).
The loader and the rest of the core name no kind: checked on their source."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent import registry
from edge_agent.config.loader import kind_settings, load_config
from edge_agent.errors import ConfigError
from tests.push_fixture_driver import HTTP_KIND, UDP_KIND, UdpFixtureDriver, install

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fixture_kinds() -> Iterator[None]:
    saved = dict(registry.BUILTIN), registry._cache
    install(UDP_KIND, HTTP_KIND)
    yield
    registry.BUILTIN.clear()
    registry.BUILTIN.update(saved[0])
    registry._cache = saved[1]


def write(tmp_path: Path, **top: Any) -> Path:
    cfg = {"site": {"id": "s", "gateway_id": "gw1"}, **top}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [line.split("  ", 1)[1] for line in info.value.problems]


def test_a_kinds_check_across_its_devices_runs_in_check_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        devices=[
            {"id": "door-a", "kind": UDP_KIND, "serial": 11},
            {"id": "door-b", "kind": UDP_KIND, "serial": 11},
        ],
    )
    assert problems(path) == ["devices[1].serial  serial 11 is 'door-a''s"]


def test_a_kinds_settings_are_top_level_keys_of_the_file(tmp_path: Path) -> None:
    devices = [{"id": "door-a", "kind": UDP_KIND, "serial": 11}]
    cfg = load_config(write(tmp_path, udpfixture={"bind": "127.0.0.1:6000"}, devices=devices))
    settings: Any = kind_settings(UdpFixtureDriver, cfg)
    assert settings.udpfixture.bind == "127.0.0.1:6000"
    # validated like every core section: a typo gets its did-you-mean
    bad = write(tmp_path, udpfixture={"bnd": "127.0.0.1:6000"}, devices=devices)
    assert problems(bad) == [
        "udpfixture.bnd  unknown key; did you mean 'bind'? / 未知的配置项，是否应为 bind？"
    ]


def test_a_kind_whose_hub_needs_http_needs_http_bind(tmp_path: Path) -> None:
    devices = [
        {"id": "t1", "kind": HTTP_KIND, "serial": 1},
        {"id": "t2", "kind": HTTP_KIND, "serial": 2},
    ]
    (line,) = problems(write(tmp_path, devices=devices))  # once per kind
    assert line.startswith("devices[0].kind  kind 'httpfixture' receives its devices' data over")
    assert "set http.bind" in line
    # the section alone is not enough: the default address is this gateway only
    assert problems(write(tmp_path, http={"enabled": True}, devices=devices)) == [line]
    # one pass lists it with the file's other mistakes
    both = problems(write(tmp_path, mqtt={"hots": "x"}, devices=devices))
    assert both == [
        "mqtt.hots  unknown key; did you mean 'host'? / 未知的配置项，是否应为 host？",
        line,
    ]
    cfg = load_config(write(tmp_path, http={"bind": "0.0.0.0:8080"}, devices=devices))
    assert cfg.http.bind == "0.0.0.0:8080"


# -- the core names no kind ---------------------------------------------------------------
#: the explicit registry lists the in-tree kinds; the command line has the Modbus probe
KIND_AWARE = {"edge_agent/registry.py", "edge_agent/cli.py"}
CORE = [
    "edge_agent/*.py",
    "edge_agent/config/*.py",
    "edge_agent/outbox/*.py",
    "edge_agent/mqtt/*.py",
]


def test_the_core_neither_imports_nor_names_a_kind_in_code() -> None:
    """Docstrings and comments may say "Modbus"; imports and string constants may not."""
    bad = []
    for pattern in CORE:
        for path in sorted(ROOT.glob(pattern)):
            rel = path.relative_to(ROOT).as_posix()
            if rel in KIND_AWARE:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                )
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names = [] if id(node) in docstrings else [node.value]
                elif isinstance(node, ast.Name | ast.Attribute):
                    names = [node.id if isinstance(node, ast.Name) else node.attr]
                else:
                    continue
                bad += [f"{rel}:{node.lineno}  {n!r}" for n in names if _names_a_kind(n)]
    assert not bad, "\n".join(bad)


def _names_a_kind(text: str) -> bool:
    low = text.lower()
    # a description may give `kind: modbus` as the example; code may not use it
    return "drivers.modbus" in low or low in {"modbus", "profile_dirs", "profiles"}


def test_modbus_finds_profiles_in_its_profile_dirs_relative_to_the_file(tmp_path: Path) -> None:
    """The Modbus kind's own top-level key: a folder named in ``profile_dirs`` (relative
    to the config file) is searched before the shipped profiles."""
    own = ROOT / "tests" / "config_cases" / "own_profile_minimal" / "profiles" / "school-air.yaml"
    (tmp_path / "my-maps").mkdir()
    (tmp_path / "my-maps" / "school-air.yaml").write_text(own.read_text(encoding="utf-8"))
    device = {"id": "r101-air", "kind": "modbus", "profile": "school-air", "host": "10.0.0.9"}
    assert problems(write(tmp_path, devices=[device]))[0].startswith(
        "devices[0].profile  profile 'school-air' not found"
    )
    cfg = load_config(write(tmp_path, profile_dirs=["my-maps"], devices=[device]))
    assert cfg.profile_dirs == ["my-maps"]  # type: ignore[attr-defined]


def test_a_hub_that_cannot_be_built_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    devices = [{"id": "door-a", "kind": UDP_KIND, "serial": 11}]
    path = write(tmp_path, udpfixture={"bind": "60000"}, devices=devices)
    (line,) = problems(path)
    assert line.startswith("devices[0].kind  udpfixture listener: '60000': the port is missing")
