"""Command line: ``python -m edge_agent.simulators COMMAND [options]``; COMMAND is one of
campus, wg, zkteco, hikvision, hikvision-camera, dahua, onvif, mjpeg, cameras.

``campus`` starts the simulated campus, prints one line per server when it listens, writes the
layout JSON if asked, and runs until SIGINT/SIGTERM (Ctrl-C).
启动模拟校园（Modbus 传感器与电表），按 Ctrl-C 退出。

``wg`` starts simulated WG short-packet door controllers (UDP), optionally plays a scenario
script and reads scenario commands from stdin (``--stdin``).
``wg`` 启动模拟微耕短报文门禁控制器，可执行场景脚本或从标准输入读取命令。

``zkteco`` starts simulated ZKTeco PUSH terminals that push to a gateway (``--server``).
``zkteco`` 启动向网关推送的模拟中控终端。
``hikvision`` starts a simulated Hikvision ISAPI access terminal (HTTP, digest auth),
the same way. ``hikvision`` 启动模拟海康 ISAPI 门禁终端。
``hikvision-camera`` and ``dahua`` start a simulated camera serving its native event stream
(digest auth), scripted the same way. 启动模拟海康/大华摄像机原生事件流。
``onvif`` starts a simulated ONVIF camera (SOAP, UsernameToken digest, scriptable events).
``onvif`` 启动模拟 ONVIF 摄像机。
``mjpeg`` serves a synthetic camera scene as MJPEG over HTTP (needs OpenCV).
``mjpeg`` 以 MJPEG 发送合成摄像机画面。

``cameras`` starts the demo's cameras: an ONVIF camera over the courtyard and a Dahua camera
at the gate, playing their scenes (:mod:`.camera.trickle`), and with ``--analytics`` an MJPEG
substream of people walking (only when OpenCV is installed). ``cameras`` 启动演示用摄像机。
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from . import dahua, hikvision, hikvision_camera, wg, zkteco
from .camera import onvif
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
    _wg_parser(sub)
    _zk_parser(sub)
    _hik_parser(sub)
    _camera_parsers(sub)
    _onvif_parser(sub)
    _mjpeg_parser(sub)
    _cameras_parser(sub)
    return parser


def _merge(pairs: Sequence[tuple[str, list[int]]]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for model, addresses in pairs:
        merged.setdefault(model, []).extend(addresses)
    return merged


def _zk_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "zkteco",
        help="run ZKTeco PUSH (iclock) terminals / 运行中控 PUSH 考勤门禁终端模拟器",
        description="Run simulated ZKTeco terminals pushing to a gateway until SIGINT/SIGTERM"
        " / 运行模拟中控终端（向网关推送）直到收到退出信号",
        epilog="commands (--stdin, --script):\n" + zkteco.COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", type=_listener, required=True, help="gateway HOST:PORT / 网关地址")
    p.add_argument("--sn", action="append", required=True, help="a terminal's SN (repeat) / 序列号")
    p.add_argument("--access", action="store_true", help="security terminals (rtlog) / 门禁终端")
    p.add_argument("--poll-s", type=float, default=None, help="cap the server's Delay / 轮询间隔")
    p.add_argument("--script", default=None, help="scenario: '@SECONDS command' lines / 场景脚本")
    p.add_argument(
        "--stdin", action="store_true", help="read commands from stdin / 从标准输入读取命令"
    )
    p.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")


def _event_som(text: str) -> int:
    value = int(text, 0)
    if value not in (wg.SOM, wg.SOM_V6_62):
        raise argparse.ArgumentTypeError("must be 0x17 or 0x19")
    return value


def _listener(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("HOST:PORT expected")
    return host, int(port)


def _wg_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "wg",
        help="run WG short-packet door controllers (UDP) / 运行微耕门禁控制器模拟器",
        description="Run simulated WG/UHPPOTE door controllers until SIGINT/SIGTERM"
        " / 运行模拟微耕门禁控制器直到收到退出信号",
        epilog="commands (--stdin, --script):\n" + wg.COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--controllers", type=int, default=1, help="controllers / 控制器数 (default 1)")
    p.add_argument(
        "--doors", type=int, choices=(1, 2, 4), default=4, help="doors each / 每台门数 (default 4)"
    )
    p.add_argument(
        "--serial",
        type=int,
        default=wg.DEFAULT_SERIAL,
        help="first serial number, the others count up / 起始序列号",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
    p.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="first UDP port, controllers use consecutive ports; 0 = ephemeral"
        " (a real controller: 60000) / 起始 UDP 端口，0 为随机",
    )
    p.add_argument(
        "--listener",
        type=_listener,
        default=None,
        help="HOST:PORT the controllers push events to (also settable with 0x90) / 事件接收地址",
    )
    p.add_argument(
        "--push-anywhere",
        action="store_true",
        help="allow pushes to a listener that is not on loopback / 允许推送到非本机地址",
    )
    p.add_argument(
        "--event-som",
        type=_event_som,
        default=wg.SOM,
        help="start byte of pushed events, 0x17 or 0x19 (firmware v6.62) / 推送帧起始字节",
    )
    p.add_argument(
        "--clock-offset-s",
        type=float,
        default=0.0,
        help="controller clock minus host clock, seconds / 控制器时钟偏差（秒）",
    )
    p.add_argument(
        "--records",
        type=int,
        default=wg.DEFAULT_CAPACITY,
        help="record memory; the oldest is overwritten / 记录容量 (default 200000)",
    )
    p.add_argument("--script", default=None, help="scenario script to play / 场景脚本文件")
    p.add_argument(
        "--trickle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="students at the first controller's gate, a swipe about every SECONDS, now and "
        "then a refused card, a forced and a held-open side door (door 2), until stopped "
        "/ 模拟校门：约每 SECONDS 秒一次刷卡，间或拒绝、强行开门、门长时间未关",
    )
    p.add_argument(
        "--stdin", action="store_true", help="read commands from stdin / 从标准输入读取命令"
    )
    p.add_argument("--layout-out", default=None, help="write the layout JSON here / 布局输出文件")
    p.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")


def _hik_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "hikvision",
        help="run a Hikvision ISAPI access terminal (HTTP) / 运行海康门禁终端模拟器",
        description="Run a simulated Hikvision ISAPI access terminal until SIGINT/SIGTERM"
        " / 运行模拟海康 ISAPI 门禁终端直到收到退出信号",
        epilog="commands (--stdin, --script):\n" + hikvision.COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
    p.add_argument("--port", type=int, default=0, help="HTTP port; 0 = ephemeral / 端口")
    p.add_argument("--user", default=hikvision.DEFAULT_USER, help="digest user / 用户名")
    p.add_argument("--password", default="Campus-2026!", help="digest password / 密码")
    p.add_argument("--doors", type=int, default=1, help="doors / 门数 (default 1)")
    p.add_argument(
        "--heartbeat-s", type=float, default=10.0, help="alertStream heartbeat / 心跳间隔（秒）"
    )
    p.add_argument("--push-url", default=None, help="httpHosts URL to POST events to / 推送地址")
    p.add_argument(
        "--push-anywhere",
        action="store_true",
        help="allow a push URL that is not on loopback / 允许推送到非本机地址",
    )
    p.add_argument("--pictures", action="store_true", help="send face pictures / 发送人脸图片")
    p.add_argument("--script", default=None, help="scenario script to play / 场景脚本文件")
    p.add_argument(
        "--stdin", action="store_true", help="read commands from stdin / 从标准输入读取命令"
    )
    p.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")


#: the camera simulators of the CLI: command -> (module, what it is)
CAMERAS: dict[str, Any] = {
    "hikvision-camera": (hikvision_camera, "Hikvision camera alertStream / 海康摄像机报警流"),
    "dahua": (dahua, "Dahua camera eventManager stream / 大华摄像机事件流"),
}


def _camera_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, (module, what) in CAMERAS.items():
        p = sub.add_parser(
            name,
            help=f"run a simulated {what}",
            description=f"Run a simulated {what} until SIGINT/SIGTERM",
            epilog="commands (--stdin, --script):\n" + module.COMMANDS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
        p.add_argument("--port", type=int, default=0, help="HTTP port; 0 = ephemeral / 端口")
        p.add_argument("--user", default="admin", help="digest user / 用户名")
        p.add_argument("--password", default="Cam-2026!", help="digest password / 密码")
        p.add_argument("--heartbeat-s", type=float, default=10.0, help="heartbeat / 心跳（秒）")
        p.add_argument("--script", default=None, help="scenario script to play / 场景脚本文件")
        p.add_argument(
            "--stdin", action="store_true", help="read commands from stdin / 从标准输入读取命令"
        )
        p.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")


async def _run_camera(args: argparse.Namespace) -> int:
    module, _what = CAMERAS[args.command]
    steps = wg.parse_script(args.script_text) if args.script else []
    cls = module.HikCamera if module is hikvision_camera else module.DahuaCamera
    cam = cls(
        user=args.user,
        password=args.password,
        host=args.host,
        port=args.port,
        heartbeat_s=args.heartbeat_s,
    )
    run = functools.partial(module.run_command, cam)
    return await _serve_scripted(
        cam,
        run,
        steps,
        args.stdin,
        lambda: (
            f"{args.command} listening on {cam.host}:{cam.port} http; Ctrl-C to stop"
            " / 摄像机模拟器已就绪，Ctrl-C 退出"
        ),
        f"{args.command} stopped / 摄像机模拟器已停止",
    )


async def _run_hik(args: argparse.Namespace) -> int:
    steps = wg.parse_script(args.script_text) if args.script else []
    term = hikvision.HikTerminal(
        user=args.user,
        password=args.password,
        host=args.host,
        port=args.port,
        doors=args.doors,
        heartbeat_s=args.heartbeat_s,
        push_url=args.push_url,
        push_anywhere=args.push_anywhere,
        pictures=args.pictures,
    )
    run = functools.partial(hikvision.run_command, term)
    return await _serve_scripted(
        term,
        run,
        steps,
        args.stdin,
        lambda: (
            f"hikvision terminal listening on {term.host}:{term.port} http"
            f" doors={term.doors}; Ctrl-C to stop / 海康门禁终端模拟器已就绪，Ctrl-C 退出"
        ),
        "hikvision stopped / 海康门禁终端模拟器已停止",
    )


def _onvif_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "onvif",
        help="run an ONVIF camera (SOAP over HTTP) / 运行 ONVIF 摄像机模拟器",
        description="Run a simulated ONVIF camera until SIGINT/SIGTERM"
        " / 运行模拟 ONVIF 摄像机直到收到退出信号",
        epilog="commands (--stdin, --script):\n" + onvif.COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
    p.add_argument("--port", type=int, default=0, help="HTTP port; 0 = ephemeral / 端口")
    p.add_argument("--user", default=onvif.DEFAULT_USER, help="ONVIF user / 用户名")
    p.add_argument("--password", default="Campus-2026!", help="ONVIF password / 密码")
    p.add_argument(
        "--style", choices=("hikvision", "dahua"), default="hikvision", help="topics / 事件主题风格"
    )
    p.add_argument("--booleans", choices=("true", "1"), default="true", help="true or 1 / 布尔写法")
    p.add_argument(
        "--no-get-services",
        action="store_true",
        help="answer GetServices with a fault / 不支持 GetServices",
    )
    p.add_argument("--clock-skew-s", type=float, default=0.0, help="clock offset / 时钟偏差（秒）")
    p.add_argument("--script", default=None, help="scenario script to play / 场景脚本文件")
    p.add_argument(
        "--stdin", action="store_true", help="read commands from stdin / 从标准输入读取命令"
    )
    p.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")


async def _run_onvif(args: argparse.Namespace) -> int:
    steps = wg.parse_script(args.script_text) if args.script else []
    cam = onvif.OnvifCamera(
        user=args.user,
        password=args.password,
        host=args.host,
        port=args.port,
        style=args.style,
        booleans=args.booleans,
        get_services=not args.no_get_services,
        clock_skew_s=args.clock_skew_s,
    )
    run = functools.partial(onvif.run_command, cam)
    return await _serve_scripted(
        cam,
        run,
        steps,
        args.stdin,
        lambda: (
            f"onvif camera listening on {cam.host}:{cam.port} http style={cam.style}"
            f" device={cam.base}{onvif.DEVICE_PATH}; Ctrl-C to stop"
            " / ONVIF 摄像机模拟器已就绪，Ctrl-C 退出"
        ),
        "onvif stopped / ONVIF 摄像机模拟器已停止",
    )


async def _run(args: argparse.Namespace) -> int:
    if args.command == "onvif":
        return await _run_onvif(args)
    if args.command == "wg":
        return await _run_wg(args)
    if args.command == "zkteco":
        return await _run_zk(args)
    if args.command == "hikvision":
        return await _run_hik(args)
    if args.command in CAMERAS:
        return await _run_camera(args)
    if args.command == "mjpeg":
        return await _run_mjpeg(args)
    if args.command == "cameras":
        return await _run_cameras(args)
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


Runner = Callable[[str], Awaitable[str]]


async def _commands_from_stdin(run: Runner, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError) as err:
        print(f"stdin cannot be read as a stream / 无法读取标准输入: {err}", flush=True)
        return
    while line := await reader.readline():
        await _command(run, line.decode(errors="replace"))
    stop.set()  # stdin closed: the scenario is over


async def _command(run: Runner, line: str) -> None:
    try:
        out = await run(line)
    except ValueError as err:
        print(f"error / 错误: {err}", flush=True)
    else:
        if out:
            print(out, flush=True)


async def _play(run: Runner, steps: list[tuple[float, str]]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for at, line in steps:
        delay = start + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await _command(run, line)
    print("script done / 脚本已执行完", flush=True)


def _write_json(path: str, data: object) -> None:
    """Atomically: a reader that polls for the file never sees half of it."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(target)


async def _serve_scripted(
    sim: Any,
    run: Runner,
    steps: list[tuple[float, str]],
    stdin: bool,
    ready: Callable[[], str],
    stopped: str,
) -> int:
    """Run an HTTP simulator (an async context manager) until SIGINT/SIGTERM, playing its
    script and reading commands from stdin meanwhile; ``ready`` is the line printed once it
    listens (its port is known only then)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with sim, asyncio.TaskGroup() as tg:
            print(ready(), flush=True)
            work = []
            if steps:
                work.append(tg.create_task(_play(run, steps)))
            if stdin:
                work.append(tg.create_task(_commands_from_stdin(run, stop)))
            await stop.wait()
            for task in work:
                task.cancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print(stopped, flush=True)
    return 0


async def _run_wg(args: argparse.Namespace) -> int:
    if args.controllers < 1:
        raise ValueError("--controllers must be at least 1")
    if args.trickle is not None and (args.trickle <= 0 or args.doors < 2):
        # checked here: raised in the task group it would end as a traceback
        raise ValueError("--trickle needs SECONDS > 0 and --doors 2 or 4 (door 2 is the side door)")
    steps = wg.parse_script(args.script_text) if args.script else []
    sim = wg.WgSim.build(
        args.controllers,
        first_serial=args.serial,
        host=args.host,
        base_port=args.base_port,
        doors=args.doors,
        listener=args.listener,
        push_anywhere=args.push_anywhere,
        event_som=args.event_som,
        clock_offset_s=args.clock_offset_s,
        capacity=args.records,
    )
    run = functools.partial(wg.run_command, sim)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with sim, asyncio.TaskGroup() as tg:
            for c in sim:
                print(
                    f"wg controller {c.serial} listening on {c.host}:{c.port} udp"
                    f" doors={len(c.doors)}",
                    flush=True,
                )
            if args.layout_out:
                _write_json(args.layout_out, sim.layout)
                print(f"layout written to {args.layout_out}", flush=True)
            print(
                f"wg ready: {len(sim.controllers)} controllers; Ctrl-C to stop"
                " / 门禁控制器模拟器已就绪，Ctrl-C 退出",
                flush=True,
            )
            work: list[asyncio.Task[Any]] = []
            if steps:
                work.append(tg.create_task(_play(run, steps)))
            if args.stdin:
                work.append(tg.create_task(_commands_from_stdin(run, stop)))
            if args.trickle is not None:
                trickle = wg.gate_trickle(sim.controllers[0], every_s=args.trickle)
                work.append(tg.create_task(trickle))
            await stop.wait()
            for task in work:
                task.cancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("wg stopped / 门禁控制器模拟器已停止", flush=True)
    return 0


async def _run_zk(args: argparse.Namespace) -> int:
    steps = wg.parse_script(args.script_text) if args.script else []
    terminals = {
        sn: zkteco.ZkTerminal(sn, args.server, access=args.access, poll_s=args.poll_s)
        for sn in args.sn
    }

    async def command(line: str) -> None:
        try:
            out = await zkteco.run_command(terminals, line)
        except (ValueError, KeyError) as err:
            print(f"error / 错误: {err}", flush=True)
        else:
            if out:
                print(out, flush=True)

    async def play() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for at, line in steps:
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            await command(line)
        print("script done / 脚本已执行完", flush=True)

    async def from_stdin() -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            await command(line.decode(errors="replace"))
        stop.set()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for t in terminals.values():
            await t.start()
            kind = "security (rtlog)" if t.access else "attendance (ATTLOG)"
            print(f"zkteco terminal {t.sn} {kind} pushing to {args.server[0]}:{args.server[1]}")
        print("zkteco ready; Ctrl-C to stop / 中控终端模拟器已就绪，Ctrl-C 退出", flush=True)
        async with asyncio.TaskGroup() as tg:
            work = [tg.create_task(play())] if steps else []
            if args.stdin:
                work.append(tg.create_task(from_stdin()))
            await stop.wait()
            for task in work:
                task.cancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for t in terminals.values():
            await t.stop()
    print("zkteco stopped / 中控终端模拟器已停止", flush=True)
    return 0


def _mjpeg_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mjpeg",
        help="serve a synthetic camera scene as MJPEG over HTTP (needs OpenCV) / MJPEG 摄像机画面",
        description="Serve a scripted camera scene (simulators/camera/scenes.py) as "
        "multipart/x-mixed-replace on /stream until SIGINT/SIGTERM / 以 MJPEG 发送合成画面",
    )
    p.add_argument(
        "--scene",
        default="walkers",
        help="courtyard, walkers, covered, defocused, shifted, lights_off (default walkers)",
    )
    p.add_argument("--seed", type=int, default=1, help="same seed, same pixels / 随机种子")
    p.add_argument("--fps", type=float, default=5.0, help="frames a second / 帧率 (default 5)")
    p.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
    p.add_argument("--port", type=int, default=0, help="HTTP port; 0 = ephemeral / 端口")
    p.add_argument("--once", action="store_true", help="play the scene once, then close")
    p.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")


async def _run_mjpeg(args: argparse.Namespace) -> int:
    # OpenCV is needed only here: the other simulators run without it
    from .camera.mjpeg import MjpegServer
    from .camera.scenes import scene

    try:
        chosen = scene(args.scene, seed=args.seed, fps=args.fps)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with MjpegServer(
            chosen, host=args.host, port=args.port, loop=not args.once
        ) as server:
            print(
                f"mjpeg camera on {server.url} scene={chosen.name} seed={args.seed} "
                f"fps={args.fps:g} ({chosen.duration_s:g} s)",
                flush=True,
            )
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


def _cameras_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cameras",
        help="the demo's cameras: ONVIF courtyard, Dahua gate / 演示用摄像机",
        description="Run an ONVIF camera (courtyard: motion, a covered lens now and then) and a "
        "Dahua camera (gate: line crossings) playing their scenes until SIGINT/SIGTERM"
        " / 运行演示用 ONVIF 与大华摄像机模拟器",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
    p.add_argument("--user", default="admin", help="user of both cameras / 用户名")
    p.add_argument("--password", default="Campus-2026!", help="password of both / 密码")
    p.add_argument(
        "--every-s",
        type=float,
        default=20.0,
        help="mean seconds between courtyard steps; the gate's crossings come four times as "
        "often / 庭院场景步骤的平均间隔（秒）",
    )
    p.add_argument(
        "--analytics",
        action="store_true",
        help="also serve an MJPEG substream of people walking (needs OpenCV) / 同时提供 MJPEG 码流",
    )
    p.add_argument("--layout-out", default=None, help="write the layout JSON here / 布局输出文件")
    p.add_argument("--log-level", default="WARNING", help="logging level / 日志级别")


async def _run_cameras(args: argparse.Namespace) -> int:
    from contextlib import AsyncExitStack

    from .camera import trickle

    if args.every_s <= 0:
        raise ValueError("--every-s must be > 0")
    courtyard = onvif.OnvifCamera(
        user=args.user, password=args.password, host=args.host, style="hikvision"
    )
    gate = dahua.DahuaCamera(user=args.user, password=args.password, host=args.host)
    layout: dict[str, Any] = {"mjpeg": None, "analytics_off": None}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(courtyard)
            await stack.enter_async_context(gate)
            walkers = None
            try:
                # OpenCV draws the pictures: the courtyard's snapshot and the walkers' stream
                from .camera.mjpeg import JpegCache, MjpegServer
                from .camera.scenes import scene
            except ImportError as err:
                if args.analytics:
                    layout["analytics_off"] = f"OpenCV is not installed ({err})"
            else:
                courtyard.snapshot_jpeg = JpegCache(scene("courtyard")).jpeg(0)
                if args.analytics:
                    walkers = MjpegServer(scene("walkers"), host=args.host)
                    await stack.enter_async_context(walkers)
                    layout["mjpeg"] = {"url": walkers.url}
            layout["onvif"] = {"host": courtyard.host, "port": courtyard.port, "user": args.user}
            layout["dahua"] = {"host": gate.host, "port": gate.port, "user": args.user}
            print(
                f"cameras: onvif courtyard on {courtyard.host}:{courtyard.port}, dahua gate on "
                f"{gate.host}:{gate.port}"
                + (f", mjpeg walkers on {walkers.url}" if walkers else "")
                + "; Ctrl-C to stop / 演示摄像机已就绪，Ctrl-C 退出",
                flush=True,
            )
            if args.layout_out:
                _write_json(args.layout_out, layout)
            async with asyncio.TaskGroup() as tg:
                work = [
                    tg.create_task(trickle.courtyard_trickle(courtyard, every_s=args.every_s)),
                    tg.create_task(trickle.gate_line_trickle(gate, every_s=args.every_s / 4)),
                ]
                await stop.wait()
                for task in work:
                    task.cancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("cameras stopped / 演示摄像机已停止", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command in ("wg", "zkteco", "hikvision", "onvif", *CAMERAS) and args.script:
        try:
            args.script_text = Path(args.script).read_text(encoding="utf-8")
        except OSError as err:
            print(f"error / 错误: {err}", file=sys.stderr)
            return 2
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
