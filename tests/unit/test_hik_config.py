"""The hikvision kind's config (``drivers/hikvision/config.py``) through the real loader: the
password only as a secret reference, readers checked, the HTTP server required."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.drivers.hikvision.config import HikvisionDevice
from edge_agent.errors import ConfigError


def write(tmp_path: Path, device: dict[str, Any], **top: Any) -> Path:
    cfg = {
        "site": {"id": "s", "gateway_id": "gw1"},
        "http": {"bind": "127.0.0.1:0"},
        **top,
        "devices": [{"id": "gate1", "kind": "hikvision", "host": "10.0.0.9",
                     "password": "${HIK_PW}", **device}],
    }  # fmt: skip
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


def test_a_terminal_loads_with_a_password_reference(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"mode": "push", "scheme": "https"}))
    dev = cfg.devices[0]  # type: ignore[attr-defined]
    assert isinstance(dev, HikvisionDevice)
    assert dev.password == "${HIK_PW}"  # resolved by the driver when it runs
    assert dev.base_url == "https://10.0.0.9:443"


def test_a_password_in_the_file_is_refused(tmp_path: Path) -> None:
    text = problems(write(tmp_path, {"password": "Campus-2026!"}))
    assert "devices[0].password" in text
    assert "secrets must not be written in the file" in text


def test_readers_are_checked(tmp_path: Path) -> None:
    twice = [{"door": 1, "reader": 1, "name": "a"}, {"door": 1, "reader": 1, "name": "b"}]
    assert "named twice" in problems(write(tmp_path, {"readers": twice}))
    far = [{"door": 3, "reader": 1, "name": "a"}]
    assert "the device has 1" in problems(write(tmp_path, {"readers": far}))
    bad = [{"reader": 1, "name": "a", "context": "bathroom"}]
    assert "context" in problems(write(tmp_path, {"readers": bad}))


def test_the_kind_needs_http_bind(tmp_path: Path) -> None:
    path = write(tmp_path, {"mode": "push"})
    cfg = yaml.safe_load(path.read_text())
    del cfg["http"]
    path.write_text(yaml.safe_dump(cfg))
    assert "http.bind" in problems(path)


def test_an_ipv6_terminal_gets_brackets() -> None:
    dev = HikvisionDevice.model_validate(
        {"id": "g", "kind": "hikvision", "host": "fd00::9", "password": "${X}", "port": 8080}
    )
    assert dev.base_url == "http://[fd00::9]:8080"
