"""What ``edge-agent run`` loads: code it never needs costs every gateway memory.

Measured in a fresh interpreter (this test process has imported everything already).
The figures behind these rules are in docs/performance.md (gateway90).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What `edge-agent run` imports before it starts the agent: the command line (every
# subcommand's options), the supervisor and the Modbus driver of a TCP-only site.
_PROBE = """
import json, sys
from edge_agent.cli import build_parser
build_parser().parse_args(["run", "-c", "agent.yaml"])
import edge_agent.supervisor
import edge_agent.drivers.modbus.driver
print(json.dumps(sorted(sys.modules)))
"""


def _modules_of_run() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, cwd=REPO, check=True
    )
    return list(json.loads(done.stdout))


def test_run_loads_neither_the_benchmark_nor_pymodbus() -> None:
    loaded = _modules_of_run()
    assert "edge_agent.drivers.modbus.driver" in loaded  # the probe did import the driver
    # the bench's options come from a small module; its code stays on disk
    assert "edge_agent.tools.bench_args" in loaded
    assert "edge_agent.tools.bench" not in loaded
    # the driver frames Modbus itself; pymodbus only opens serial ports, when there are some
    assert [m for m in loaded if m.split(".")[0] in ("pymodbus", "serial")] == []
