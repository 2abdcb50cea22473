"""Command line: ``python -m edge_agent.simulators campus [options]``.

Starts the simulated campus, prints one line per server when it listens, writes the layout
JSON if asked, and runs until SIGINT/SIGTERM (Ctrl-C).
启动模拟校园（Modbus 传感器与电表），按 Ctrl-C 退出。
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import datetime

from .campus import CampusSim


def _reserved(text: str) -> tuple[str, list[int]]:
    """``"lux_noise:1,5"`` -> ``("lux_noise", [1, 5])``."""
    model, _, addresses = text.partition(":")
    try:
        values = [int(a, 0) for a in addresses.split(",") if a.strip()]
    except ValueError:
        values = []
    if not model or not values or not all(0 <= a <= 0xFFFF for a in values):
        raise argparse.ArgumentTypeError(f"expected MODEL:ADDR[,ADDR...], not {text!r}")
    return model, values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent.simulators",
        description="Simulated school campus speaking Modbus / 模拟校园 Modbus 设备",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    campus = sub.add_parser(
        "campus",
        help="run classrooms and energy meters / 运行教室传感器和电表",
        description="Run the simulated campus until SIGINT/SIGTERM / 运行模拟校园直到收到退出信号",
    )
    campus.add_argument("--classrooms", type=int, default=4, help="classrooms / 教室数 (default 4)")
    campus.add_argument("--meters", type=int, default=2, help="energy meters / 电表数 (default 2)")
    campus.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
    campus.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="first TCP port, servers use consecutive ports; 0 = ephemeral / 起始端口，0 为随机",
    )
    campus.add_argument(
        "--framer", choices=("socket", "rtu"), default="socket", help="framing / 帧格式"
    )
    campus.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second / 时间倍速"
    )
    campus.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=None,
        help="simulated start, ISO 8601 / 模拟起始时间",
    )
    campus.add_argument("--seed", type=int, default=1, help="random seed / 随机种子")
    campus.add_argument("--faults", default=None, help="fault schedule YAML/JSON / 故障计划文件")
    campus.add_argument(
        "--layout-out", default=None, help="write the layout JSON here / 布局输出文件"
    )
    campus.add_argument(
        "--profiles-dir", default=None, help="device profiles folder / 设备模板目录"
    )
    campus.add_argument(
        "--units-per-server",
        type=int,
        default=30,
        help="devices per server / 每个服务器设备数 (max 247)",
    )
    campus.add_argument(
        "--request-delay-ms",
        type=float,
        default=0.0,
        help="each server answers one request at a time after this delay, like a serial line "
        "behind a Modbus TCP gateway / 每台服务器逐个应答请求，每个延迟该毫秒数 (default 0)",
    )
    campus.add_argument(
        "--reserved",
        action="append",
        type=_reserved,
        default=[],
        metavar="MODEL:ADDR[,ADDR]",
        help="registers of a model that answer exception 2 to a read spanning them, e.g. "
        "lux_noise:1 / 保留寄存器：跨越它们的读取返回异常码 2",
    )
    campus.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")
    return parser


def _merge(pairs: Sequence[tuple[str, list[int]]]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for model, addresses in pairs:
        merged.setdefault(model, []).extend(addresses)
    return merged


async def _run(args: argparse.Namespace) -> int:
    sim = CampusSim(
        classrooms=args.classrooms,
        meters=args.meters,
        host=args.host,
        base_port=args.base_port,
        framer=args.framer,
        speed=args.speed,
        start=args.start,
        seed=args.seed,
        profiles_dir=args.profiles_dir,
        faults=args.faults,
        units_per_server=args.units_per_server,
        request_delay_s=args.request_delay_ms / 1000,
        reserved=_merge(args.reserved),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with sim:
            for server in sim.servers:
                units = sorted(server.devices)
                print(
                    f"{server.name} listening on {server.host}:{server.port} framer={server.framer}"
                    f" units={units[0]}-{units[-1]} devices={len(units)}",
                    flush=True,
                )
            if args.layout_out:
                sim.write_layout(args.layout_out)
                print(f"layout written to {args.layout_out}", flush=True)
            now = sim.clock.now()
            print(
                f"campus ready: {len(sim.devices)} devices, simulated time {now:%Y-%m-%d %H:%M}"
                f" x{sim.clock.speed:g}; Ctrl-C to stop / 模拟校园已就绪，Ctrl-C 退出",
                flush=True,
            )
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("campus stopped / 模拟校园已停止", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(_run(args))
    except (OSError, ValueError) as err:
        print(f"error / 错误: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
