"""The simulated campus as a separate process, shared by the end-to-end tests of a module."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.tools.localbroker import stop_process
from tests.e2e.helpers import CLASSROOMS, METERS, REPO, _env


@pytest.fixture(scope="module")
def campus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("campus")
    layout_path = work / "layout.json"
    log = (work / "sim.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.simulators",
            "campus",
            "--classrooms",
            str(CLASSROOMS),
            "--meters",
            str(METERS),
            "--base-port",
            "0",
            "--speed",
            "60",
            "--seed",
            "3",
            "--layout-out",
            str(layout_path),
        ],
        cwd=REPO,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not layout_path.exists():
            assert proc.poll() is None, (work / "sim.log").read_text()
            assert time.monotonic() < deadline, "simulators wrote no layout"
            time.sleep(0.05)
        yield json.loads(layout_path.read_text())
    finally:
        stop_process(proc, 10, "simulated campus")
        log.close()
