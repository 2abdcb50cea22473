"""What a user installs: the built wheel, in a fresh venv, run from another folder (issue #7).

The Pi guide installs the agent with ``pip install`` of the source (not editable). A wheel that
lacks its shipped profiles, or that claims generic top-level names such as ``drivers``, passes
every test of the checkout and fails on the gateway; these tests run the installed copy only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

from edge_agent.tools.localbroker import stop_process
from tests.e2e.helpers import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout (and its dependencies) installed."""
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools reuses a stale build/ folder of the checkout, which can
    # hold files the current configuration would no longer ship.
    src = work / "src"
    shutil.copytree(
        REPO,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    dist = work / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        cwd=work,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"edge_agent"}, f"the wheel installs other top-level names: {sorted(top)}"
    assert "edge_agent/drivers/modbus/profiles/air7in1.yaml" in names

    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    inst = _run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        cwd=work,
    )
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return env_dir


def test_check_config_finds_the_shipped_profiles(installed: Path, tmp_path: Path) -> None:
    result = _run(
        [
            str(installed / "bin" / "edge-agent"),
            "check-config",
            str(REPO / "config" / "example-school.yaml"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not found" not in result.stdout + result.stderr


def test_no_generic_import_names(installed: Path, tmp_path: Path) -> None:
    for name in ("drivers", "simulators"):
        result = _run([str(installed / "bin" / "python"), "-c", f"import {name}"], cwd=tmp_path)
        assert result.returncode != 0, name
        assert "ModuleNotFoundError" in result.stderr, name
    ok = _run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import edge_agent.drivers.modbus, sys; print(edge_agent.drivers.modbus.__file__)",
        ],
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert str(installed) in ok.stdout  # the installed copy, not the checkout


def test_sim_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout.json"
    argv = [str(installed / "bin" / "edge-agent"), "sim", "campus", "--classrooms", "1",
            "--meters", "1", "--base-port", "0", "--layout-out", str(layout)]  # fmt: skip
    log = (tmp_path / "sim.log").open("wb")
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not layout.exists():
            assert proc.poll() is None, (tmp_path / "sim.log").read_text()
            assert time.monotonic() < deadline, "the installed simulator wrote no layout"
            time.sleep(0.1)
        devices = json.loads(layout.read_text())["devices"]
        assert {d["profile"] for d in devices} >= {"air7in1"}
    finally:
        stop_process(proc, 10, "installed simulator")
        log.close()


def test_the_console_pages_are_in_the_wheel(installed: Path, tmp_path: Path) -> None:
    """The console serves its pages from package data: a wheel without them would answer
    every page with a crash on the gateway."""
    py = installed / "bin" / "python"
    code = "from edge_agent.console.app import _load_static; print(sorted(_load_static()))"
    done = _run([str(py), "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("index.html", "login.html", "app.js", "login.js", "i18n.js", "style.css"):
        assert name in done.stdout
