"""``edge-agent``: run, check-config, doctor, alarms, tail, sim, demo, bench, probe, pseudonym,
discover.

Exit codes: 0 ok, 1 bad config or failed start, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edge_agent import __version__
from edge_agent.errors import ConfigError, EdgeAgentError

if TYPE_CHECKING:  # the probe imports pymodbus: only `edge-agent probe` loads it
    from edge_agent.drivers.modbus.probe import ProbeRequest
    from edge_agent.mqtt.publisher import MqttSettings

log = logging.getLogger("edge_agent")


def _setup_logging(level: str) -> None:
    # journald adds its own timestamps; a terminal user gets them from us.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if sys.stderr.isatty() or not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, stream=sys.stderr)


#: systemd's EXIT_CONFIG: the unit's RestartPreventExitStatus=78 stops restarting a bad config
EXIT_CONFIG = 78


def _load(
    path: str,
    notes: list[str] | None = None,
    exit_code: int = 1,
    warnings: list[str] | None = None,
) -> object:
    from edge_agent.config.loader import load_config

    try:
        return load_config(path, notes=notes, warnings=warnings)
    except ConfigError as err:
        for line in err.problems:
            print(line, file=sys.stderr)
        n = len(err.problems)
        print(f"{path}: {n} problem{'s' if n != 1 else ''} / 配置有 {n} 处错误", file=sys.stderr)
        raise SystemExit(exit_code) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    if (args.file is None and args.config is None) or None not in (args.file, args.config):
        parser: argparse.ArgumentParser = args.check_parser
        parser.error("give the config file once: FILE or -c FILE / 请指定一个配置文件")
    args.file = args.file or args.config
    notes: list[str] = []
    warnings: list[str] = []
    cfg = _load(args.file, notes, warnings=warnings)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in warnings:  # valid, so the exit code stays 0
        print(f"warning: {warning}", file=sys.stderr)
    devices = getattr(cfg, "devices", [])
    buses = getattr(cfg, "buses", [])
    print(f"{args.file}: OK ({len(devices)} devices, {len(buses)} buses) / 配置正确")
    return 0


def cmd_pseudonym(args: argparse.Namespace) -> int:
    """Print each card as ``card_read`` events carry it on this site: what
    ``patrol.cards`` lists (the guards' cards), without a card number in the file."""
    from edge_agent.config.loader import AgentConfigBase
    from edge_agent.drivers.cards import CardError, canonical, parse_printed
    from edge_agent.pipeline.pseudonym import pseudonym

    cfg = _load(args.config)
    assert isinstance(cfg, AgentConfigBase)
    secret = cfg.site.pseudonym_secret
    if not secret and not cfg.site.raw_card_ids:
        print(
            f"{args.config}: site.pseudonym_secret is not set: card_read events carry no card "
            "/ 未设置 site.pseudonym_secret，刷卡事件不含卡号",
            file=sys.stderr,
        )
        return 1
    rc = 0
    for text in args.cards:
        try:
            number = canonical(parse_printed(text, hex_digits=args.hex))
        except CardError as err:
            print(f"{text}: {err} / 无法识别的卡号", file=sys.stderr)
            rc = 1
            continue
        raw = cfg.site.raw_card_ids or not secret  # the pipeline's rule: raw wins
        shown = number if raw else pseudonym((secret or "").encode("utf-8"), number)
        print(f"{text}  {number}  {shown}")
    return rc


def cmd_console_passwd(args: argparse.Namespace) -> int:
    """Add a console user or change its password in the credentials file (mode 0600)."""
    import getpass

    from edge_agent.console.auth import CredentialsError, set_password

    if (args.credentials is None) == (args.config is None):
        parser: argparse.ArgumentParser = args.passwd_parser
        parser.error("give -c CONFIG or -f FILE / 请指定配置文件 (-c) 或账号文件 (-f)")
    if args.credentials is not None:
        path = Path(args.credentials)
    else:
        # Only console.credentials is read: on the first run the file does not exist yet,
        # and check-config would refuse the config for exactly that.
        from edge_agent.config.yamlsrc import SourceError
        from edge_agent.config.yamlsrc import load as load_yaml

        try:
            data, _lines = load_yaml(Path(args.config))
        except (OSError, SourceError) as err:
            print(f"{args.config}: {getattr(err, 'message', None) or err}", file=sys.stderr)
            return 1
        section = data.get("console") if isinstance(data, dict) else None
        creds = section.get("credentials") if isinstance(section, dict) else None
        if not isinstance(creds, str) or not creds:
            print(
                f"{args.config}: no console.credentials; add 'console: {{credentials: FILE}}' "
                "/ 配置文件中没有 console.credentials",
                file=sys.stderr,
            )
            return 1
        path = Path(creds)
        if not path.is_absolute():
            path = Path(args.config).resolve().parent / path
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.user} / 密码: ")
        if getpass.getpass("again / 再输入一次: ") != password:
            print("the passwords differ / 两次输入的密码不一致", file=sys.stderr)
            return 1
    try:
        new = set_password(path, args.user, password)
    except CredentialsError as err:
        print(str(err), file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{path}: {err.strerror or err}", file=sys.stderr)
        return 1
    what = "added / 已添加" if new else "password changed / 密码已修改"
    print(f"{path}: {args.user} {what}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_agent.config.loader import AgentConfigBase
    from edge_agent.tools.doctor import exit_code, format_table, run_checks

    notes: list[str] = []
    cfg = _load(args.config, notes)
    assert isinstance(cfg, AgentConfigBase)
    _setup_logging("ERROR")
    # each failed read is one row of the table, with its reason: no log lines around it
    pymodbus_log = logging.getLogger("pymodbus")
    level = pymodbus_log.level
    pymodbus_log.setLevel(logging.CRITICAL)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        rows = asyncio.run(run_checks(cfg, Path(args.config)))
    except KeyboardInterrupt:
        return 130
    finally:
        pymodbus_log.setLevel(level)
    print(format_table(rows))
    return exit_code(rows)


def cmd_alarms_audit(args: argparse.Namespace) -> int:
    """Print the alarm audit log from the outbox database (the agent may be running)."""
    import json

    from edge_agent.alarms.audit import AuditUnreadable, format_entry, read_audit
    from edge_agent.config.loader import AgentConfigBase

    cfg = _load(args.config)
    assert isinstance(cfg, AgentConfigBase)
    path = Path(cfg.outbox.path)
    if not path.is_absolute():
        path = Path(args.config).parent / path
    try:
        entries = read_audit(path, args.limit, alarm_id=args.alarm)
    except AuditUnreadable as err:
        print(f"{err}", file=sys.stderr)
        return 1
    for entry in reversed(entries):  # oldest first, as a log reads
        print(json.dumps(entry, ensure_ascii=False) if args.json else format_entry(entry))
    if not entries and not args.json:
        print("no audit entries / 暂无审计记录", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.config.loader import AgentConfigBase
    from edge_agent.supervisor import Agent

    cfg = _load(args.config, exit_code=EXIT_CONFIG)
    assert isinstance(cfg, AgentConfigBase)
    _setup_logging(args.log_level or cfg.logging.level)
    profile_path = os.environ.get("EDGE_AGENT_PROFILE")  # developers: docs/performance.md
    try:
        if profile_path:
            from edge_agent.tools.profiling import profiled

            with profiled(profile_path):
                asyncio.run(Agent(cfg, args.config).run())
        else:
            asyncio.run(Agent(cfg, args.config).run())
    except ConfigError as err:  # e.g. a TLS file removed after the config was loaded
        for line in err.problems:
            log.error("%s: %s", args.config, line)
        return EXIT_CONFIG
    except EdgeAgentError as err:
        log.error("%s", err)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _root_from_args(
    args: argparse.Namespace,
) -> tuple[str, int, str, str, MqttSettings | None]:
    """host, port, root, protocol from --config or from explicit flags, and the config's
    MQTT settings (credentials, TLS) when there is one."""
    if args.config:
        from edge_agent.config.loader import AgentConfigBase
        from edge_agent.supervisor import mqtt_settings

        cfg = _load(args.config)
        assert isinstance(cfg, AgentConfigBase)
        s = mqtt_settings(cfg)
        return (
            args.host or s.host,
            args.port or s.port,
            args.root or s.root,
            args.protocol or s.protocol,
            s,
        )
    return (
        args.host or "localhost",
        args.port or 1883,
        args.root or "campus/+/+",
        args.protocol or "5",
        None,
    )


def cmd_tail(args: argparse.Namespace) -> int:
    from edge_agent.mqtt.tls import TlsFileError, TlsSettings, client_context
    from edge_agent.tools.tail.model import run_console

    host, port, root, protocol, settings = _root_from_args(args)
    proto: Literal["5", "3.1.1"] = "3.1.1" if protocol == "3.1.1" else "5"
    tls: bool | ssl.SSLContext = False
    if settings is not None and settings.tls:
        # The same verification as the agent's: the config's CA (else the system CAs),
        # client certificate and host-name check.
        try:
            tls = client_context(
                TlsSettings(
                    settings.ca_file,
                    settings.cert_file,
                    settings.key_file,
                    settings.key_password,
                    settings.tls_insecure,
                )
            )
        except TlsFileError as err:
            print(f"{args.config}: mqtt.tls.{err.key}  {err}", file=sys.stderr)
            return 1
    try:
        asyncio.run(
            run_console(
                host,
                port,
                root,
                mode="view" if args.view else "tail",
                protocol=proto,
                duration_s=args.duration,
                username=settings.username if settings else None,
                password=settings.password if settings else None,
                tls=tls,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    # The simulators are a separate program: production code never imports them.
    cmd = [sys.executable, "-m", "edge_agent.simulators", *args.sim_args]
    return run_child(cmd, "simulators")


def run_child(cmd: list[str], what: str, stop_timeout_s: float = 10.0) -> int:
    """Run ``cmd`` until it exits; SIGINT/SIGTERM to us are passed on to it, and we wait
    for it to stop (killing it after ``stop_timeout_s``), so it is never left orphaned
    when a service manager or a script stops us. 130 after SIGINT, else its exit code."""
    import signal
    import time

    from edge_agent.tools.localbroker import stop_process

    proc = subprocess.Popen(cmd)  # noqa: S603 - our own interpreter and module
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline: float | None = None
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + stop_timeout_s
                if deadline is not None and time.monotonic() > deadline:
                    log.warning(
                        "%s ignored the stop signal for %.0f s; killing it", what, stop_timeout_s
                    )
                    proc.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_process(proc, stop_timeout_s, what)
    return 130 if signal.SIGINT in received else code


def cmd_demo(args: argparse.Namespace) -> int:
    import signal

    from edge_agent.tools.demo import run_demo

    _setup_logging("WARNING" if not args.verbose else "INFO")

    async def demo() -> int:
        # SIGTERM (a script, `timeout`, systemd) stops the demo as Ctrl-C does, so its
        # simulators and broker are stopped too instead of being left orphaned
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await run_demo(
                duration_s=args.duration,
                broker_port=args.broker_port,
                classrooms=args.classrooms,
                meters=args.meters,
                speed=args.speed,
                workdir=Path(args.workdir) if args.workdir else None,
                language=args.language,
                plain=args.plain,
                analytics=False if args.no_analytics else None,
            )
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(demo())
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 128 + signal.SIGTERM


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_agent.tools.bench import main as bench_main

    _setup_logging("WARNING")
    return bench_main(args)


def _probe_request(args: argparse.Namespace) -> ProbeRequest:
    """The ProbeRequest the options ask for; ValueError for options that do not go together."""
    from edge_agent.drivers.modbus.driver import LineSettings
    from edge_agent.drivers.modbus.probe import ProbeRequest

    # serial options left out take LineSettings' defaults (9600 8N1)
    serial = {o: getattr(args, o) for o in ("baudrate", "parity", "stopbits")}
    serial = {o: v for o, v in serial.items() if v is not None}
    if args.host is not None:
        if serial:
            raise ValueError(
                f"--{', --'.join(serial)} only with --serial; a serial server has them in its "
                "own web page / 串口参数仅用于 --serial，串口服务器的串口参数在其网页中设置"
            )
        port = 502 if args.port is None else args.port
        line = LineSettings("tcp", args.host, port, args.framer or "socket")
    else:
        given = [o for o in ("port", "framer") if getattr(args, o) is not None]
        if given:
            names = "--" + ", --".join(given)
            raise ValueError(f"{names} only with --host / {names} 只能与 --host 一起使用")
        line = LineSettings("serial", args.serial, **serial)
    return ProbeRequest(
        line,
        unit=args.unit,
        fc=args.fc,
        address=args.address,
        count=args.count,
        timeout_s=args.timeout,
    )


def cmd_discover(args: argparse.Namespace) -> int:
    from edge_agent.tools.discover import run

    return run(args)


def cmd_probe(args: argparse.Namespace) -> int:
    from edge_agent.drivers.modbus.probe import error_message, format_table, probe, rows_json
    from edge_agent.errors import DeviceError

    try:
        request = _probe_request(args)
    except ValueError as err:
        parser: argparse.ArgumentParser = args.probe_parser
        parser.error(str(err))  # prints the usage, exits 2
    try:
        rows = asyncio.run(probe(request))
    except DeviceError as err:
        print(error_message(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(rows_json(rows) if args.json else format_table(rows, title=request.describe()))
    return 0


def _register_address(text: str) -> int:
    """0-based address: decimal, ``0x0156`` or ``0156H`` as Chinese manuals write it."""
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            return int(t, 16)
        if t.endswith("h"):
            return int(t[:-1], 16)
        return int(t, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description="Campus edge agent / 校园边缘网关")
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the agent / 运行网关")
    r.add_argument("-c", "--config", required=True, help="YAML config file")
    r.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    r.set_defaults(fn=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file / 检查配置文件")
    c.add_argument("file", nargs="?", help="YAML config file")
    # `-c FILE` as `run`, `tail` and `doctor` take it: an installer types what they know
    c.add_argument("-c", "--config", dest="config", help="YAML config file (same as FILE)")
    c.set_defaults(fn=cmd_check_config, check_parser=c)

    cp = sub.add_parser(
        "console-passwd",
        help="add a console user or change its password / 设置控制台账号密码",
        description="Write USER's scrypt password hash into the console's credentials file "
        "(console.credentials of the config, or -f FILE), mode 0600; other users are kept. "
        "The running agent reads the file at every login. "
        "写入控制台用户的密码哈希（文件权限 0600），正在运行的网关无需重启即生效。",
    )
    cp.add_argument("user", help="user name / 用户名")
    cp.add_argument("-c", "--config", help="the agent's YAML config (its console.credentials)")
    cp.add_argument("-f", "--credentials", help="the credentials file itself / 账号文件")
    cp.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (scripts) / 从标准输入读取密码",
    )
    cp.set_defaults(fn=cmd_console_passwd, passwd_parser=cp)

    dr = sub.add_parser(
        "doctor",
        help="check broker, TLS files, serial ports, clock, outbox, devices / 安装自检",
        description="Check that this gateway can run the config: broker reachable, TLS files, "
        "serial ports, clock synchronised, outbox writable, every device answers one read. "
        "Exit 1 when a check fails / 检查网关能否运行该配置，有检查失败时退出码为 1",
    )
    dr.add_argument("-c", "--config", required=True, help="YAML config file")
    dr.set_defaults(fn=cmd_doctor)

    ps = sub.add_parser(
        "pseudonym",
        help="a card as card_read events carry it (for patrol.cards) / 计算卡号的脱敏值",
        description="Print each card's canonical number and its pseudonym ('h:' + 16 hex, "
        "with the config's site.pseudonym_secret), as card_read events carry it: write it "
        "in patrol.cards. 输出卡号的规范形式及其脱敏值（写入 patrol.cards）",
    )
    ps.add_argument("-c", "--config", required=True, help="YAML config file")
    ps.add_argument(
        "cards", nargs="+", help="as printed: 0006154410, 093,59562 (facility,card), 0x5DE8AA"
    )
    ps.add_argument("--hex", action="store_true", help="the cards are printed in hex / 十六进制")
    ps.set_defaults(fn=cmd_pseudonym)

    al = sub.add_parser("alarms", help="the alarm audit log / 告警审计日志")
    al_sub = al.add_subparsers(dest="alarms_command", required=True)
    au = al_sub.add_parser(
        "audit",
        help="who acknowledged, shelved, took out of service what, when, from where / 告警操作审计",
        description="Print the alarm audit log kept in the outbox database, oldest first "
        "(works while the agent runs) / 显示缓存数据库中的告警审计日志",
    )
    au.add_argument("-c", "--config", required=True, help="YAML config file (for outbox.path)")
    au.add_argument("--limit", type=int, default=50, help="newest N entries (default 50)")
    au.add_argument("--alarm", help="only this alarm id / 只显示该告警")
    au.add_argument("--json", action="store_true", help="one JSON object a line")
    au.set_defaults(fn=cmd_alarms_audit)

    t = sub.add_parser("tail", help="subscribe and pretty-print the contract topics / 查看上报数据")
    t.add_argument(
        "-c",
        "--config",
        help="take broker, site, credentials and TLS from this config / 使用配置文件中的代理、"
        "账号和 TLS 设置",
    )
    t.add_argument("--host")
    t.add_argument("--port", type=int)
    t.add_argument("--root", help="topic root, e.g. campus/school-a/gw1 (default campus/+/+)")
    t.add_argument(
        "--protocol",
        choices=["5", "3.1.1"],
        help="MQTT version (default 5: 3.1.1 by itself when the broker refuses 5) / MQTT 版本",
    )
    t.add_argument(
        "--view", action="store_true", help="live dashboard instead of one line per message"
    )
    t.add_argument("--duration", type=float, help="stop after this many seconds")
    t.set_defaults(fn=cmd_tail)

    s = sub.add_parser(
        "sim", help="start simulators (python -m edge_agent.simulators ...) / 启动设备模拟器"
    )
    s.add_argument(
        "sim_args", nargs=argparse.REMAINDER, help="e.g. campus --classrooms 30 --meters 10"
    )
    s.set_defaults(fn=cmd_sim)

    d = sub.add_parser("demo", help="simulated campus + broker + agent + live view / 演示")
    d.add_argument("--duration", type=float, help="stop after S seconds (default: until Ctrl-C)")
    d.add_argument("--broker-port", type=int, default=1883, help="local broker port (default 1883)")
    d.add_argument("--classrooms", type=int, default=12)
    d.add_argument("--meters", type=int, default=4)
    d.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    d.add_argument("--workdir", help="keep config and outbox here (default: a temporary folder)")
    d.add_argument("--language", choices=["en", "zh"], default="en")
    d.add_argument("--plain", action="store_true", help="print lines instead of the dashboard")
    d.add_argument(
        "--no-analytics",
        action="store_true",
        help="no on-gateway video analytics even with OpenCV installed (less CPU) / 不启用视频分析",
    )
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(fn=cmd_demo)

    from edge_agent.tools.bench_args import add_arguments as bench_arguments

    b = sub.add_parser("bench", help="measure CPU, memory, throughput, alarm latency / 性能测试")
    bench_arguments(b)
    b.set_defaults(fn=cmd_bench)

    dc = sub.add_parser(
        "discover",
        help="find ONVIF cameras, print a config stanza each / 发现 ONVIF 摄像机",
        description="WS-Discovery Probe (multicast on this network segment, and unicast to "
        "--host), then GetDeviceInformation/GetCapabilities of each answer; prints a "
        "devices: item per camera. Exit 1 when none answered / 发现摄像机并输出配置片段",
    )
    dc.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="also probe this address by unicast (port 3702 unless given); repeatable "
        "/ 单播探测该地址",
    )
    dc.add_argument(
        "--no-multicast",
        action="store_true",
        help="only the --host addresses, no multicast Probe / 不发组播",
    )
    dc.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for answers (default 3)"
    )
    dc.add_argument("--username", help="ONVIF user for GetDeviceInformation / 摄像机用户名")
    dc.add_argument(
        "--password-env",
        metavar="NAME",
        help="environment variable holding the password (never on the command line) "
        "/ 存放密码的环境变量名",
    )
    dc.set_defaults(fn=cmd_discover)

    pr = sub.add_parser(
        "probe",
        help="read raw Modbus registers, every decoding / 读取并显示原始寄存器",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read registers from a Modbus device; show each as uint16/int16, and each\n"
        "pair as uint32/int32/float32 in the four byte/word orders of a profile.\n"
        "读取 Modbus 设备的原始寄存器，按各种数据类型和字节序显示，用于编写设备模板。",
        epilog="example / 示例:\n"
        "  edge-agent probe --serial /dev/ttyUSB0 --baudrate 9600 --parity E --unit 3 --fc 4\n"
        "  edge-agent probe --host 10.12.1.20 --port 4196 --framer rtu --unit 5 --count 8\n"
        "exit 0 ok, 1 no answer or exception response, 2 bad option / "
        "退出码 0 成功，1 无应答或异常应答，2 参数错误",
    )
    where = pr.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP device, gateway or serial server / 设备 IP")
    where.add_argument("--serial", help="serial port, e.g. /dev/ttyUSB0 / 串口")
    pr.add_argument("--port", type=int, help="TCP port (default 502)")
    pr.add_argument(
        "--framer",
        choices=["socket", "rtu"],
        help="with --host: socket = Modbus TCP (default), rtu = RTU over TCP (serial server)",
    )
    pr.add_argument("--baudrate", type=int, help="with --serial (default 9600) / 波特率")
    pr.add_argument("--parity", type=str.upper, choices=["N", "E", "O"], help="default N / 校验位")
    pr.add_argument("--stopbits", type=int, choices=[1, 2], help="default 1 / 停止位")
    pr.add_argument("--unit", type=int, default=1, help="unit id (default 1) / 设备地址")
    pr.add_argument(
        "--fc",
        type=int,
        choices=[3, 4],
        default=3,
        help="3 holding registers (default), 4 input registers / 功能码",
    )
    pr.add_argument(
        "--address",
        type=_register_address,
        default=0,
        help="first 0-based address as in a profile (30001/40001 = 0; 0x0156 or 0156H "
        "for hex) / 起始地址（从 0 开始）",
    )
    pr.add_argument(
        "--count", type=int, default=10, help="registers to read, 1-125 (default 10) / 数量"
    )
    pr.add_argument(
        "--timeout", type=float, default=1.0, help="seconds to wait for the answer (default 1)"
    )
    pr.add_argument("--json", action="store_true", help="print the rows as JSON")
    pr.set_defaults(fn=cmd_probe, probe_parser=pr)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.fn(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
