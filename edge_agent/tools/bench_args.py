"""The options of ``edge-agent bench``, apart from the benchmark itself.

``edge-agent run`` builds the whole command line, ``bench`` included: keeping the options
here spares the agent the benchmark's code and imports (about 1 MiB of its memory).
"""

from __future__ import annotations

import argparse

PARTS = ("campus", "gateway90", "ingest", "drain", "latency")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: all): {','.join(PARTS)} / 只运行部分测试",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="campus, gateway90: seconds measured (default 60)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=15.0,
        help="campus, gateway90: seconds before measuring (default 15)",
    )
    parser.add_argument(
        "--classrooms", type=int, default=60, help="campus: classrooms (default 60)"
    )
    parser.add_argument("--meters", type=int, default=30, help="campus: energy meters (default 30)")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="campus: poll every device every S s (default: profile defaults, 30 s / 60 s)",
    )
    parser.add_argument(
        "--readings", type=int, default=200_000, help="ingest: readings committed (default 200000)"
    )
    parser.add_argument(
        "--batch", type=int, default=2000, help="ingest/drain: commit batch (default 2000)"
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=1_000_000,
        help="drain: backlog size (default 1000000) / 积压消息数",
    )
    parser.add_argument(
        "--inflight",
        type=int,
        default=500,
        help="drain: MQTT in-flight window (default 500, as the agent)",
    )
    parser.add_argument(
        "--json",
        default="bench-results.json",
        help="write the results here (default ./bench-results.json)",
    )
    parser.add_argument(
        "--workdir", help="keep configs and logs here (default: a temporary folder) / 工作目录"
    )


__all__ = ["PARTS", "add_arguments"]
