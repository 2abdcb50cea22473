"""The options of ``edge-agent bench``, apart from the benchmark itself.

``edge-agent run`` builds the whole command line, ``bench`` included: keeping the options
here spares the agent the benchmark's code and imports (about 1 MiB of its memory).
"""

from __future__ import annotations

import argparse

PARTS = (
    "campus",
    "gateway90",
    "ingest",
    "drain",
    "latency",
    "alarms",
    "wg",
    "hikvision",
    "zkteco",
    "analytics",
)
#: ``--only doors``: the door protocols' parts (swipes/s on one core, rush latency)
ALIASES = {"doors": ("wg", "hikvision", "zkteco")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: all): {','.join(PARTS)}; "
        "doors = wg,hikvision,zkteco / 只运行部分测试",
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
        help="drain, alarms: backlog size (default 1000000) / 积压消息数",
    )
    parser.add_argument(
        "--inflight",
        type=int,
        default=500,
        help="drain: MQTT in-flight window (default 500, as the agent)",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="latency: raise the alarms through the alarm book and also time raise -> event "
        "on the local console's stream (SSE) / 同时测量告警到本地控制台的延迟",
    )
    parser.add_argument(
        "--door-duration",
        type=float,
        default=20.0,
        help="wg, hikvision, zkteco: seconds of swiping as fast as the agent takes them "
        "(default 20) / 门禁吞吐测试时长",
    )
    parser.add_argument(
        "--door-window",
        type=int,
        default=900,
        help="wg, hikvision, zkteco: swipes in flight at most (made, not yet seen by the "
        "subscriber; default 900: mosquitto queues at most 1000 messages for a subscriber "
        "and drops the rest)",
    )
    parser.add_argument(
        "--rush-speed",
        type=float,
        default=10.0,
        help="the morning rush (1,000 swipes in 10 min on 8 lanes) played this many times "
        "faster (default 10: one minute) / 早高峰加速倍数",
    )
    parser.add_argument(
        "--hik-mode",
        choices=("stream", "push"),
        default="stream",
        help="hikvision: alertStream or httpHosts push (default stream)",
    )
    parser.add_argument(
        "--door-commit-ms",
        type=int,
        default=None,
        help="wg, hikvision, zkteco: the agent's outbox.commit_interval_ms "
        "(default: the agent's own default) / 提交间隔",
    )
    parser.add_argument(
        "--cameras",
        type=int,
        default=8,
        help="analytics: simulated cameras analysed at 5 fps at once (default 8) / 摄像机数",
    )
    parser.add_argument(
        "--analytics-duration",
        type=float,
        default=30.0,
        help="analytics: seconds the cameras are measured (default 30)",
    )
    parser.add_argument(
        "--json",
        default="bench-results.json",
        help="write the results here (default ./bench-results.json)",
    )
    parser.add_argument(
        "--workdir", help="keep configs and logs here (default: a temporary folder) / 工作目录"
    )


__all__ = ["ALIASES", "PARTS", "add_arguments"]
