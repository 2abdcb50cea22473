"""``edge-agent demo``: a simulated campus, a local broker, the agent and a live view.

Everything runs on loopback. The simulators are a separate process started as
``python -m edge_agent.simulators`` (production code never imports them); they write a
layout file that says which devices answer on which port, and the demo turns
that layout into an ordinary agent config (kept in the work folder, so a
newcomer can read a config that works).

Doors too: a second simulator process plays a WG controller at the school gate
(``python -m edge_agent.simulators wg --trickle``): students swiping in and out, now
and then a refused card, a forced and a held-open side door. Its cards are
pseudonymised with a demo-only secret (:data:`DEMO_SECRET_ENV`), so they appear as
``h:`` pseudonyms, as on a real site.

Cameras too: a third process (``python -m edge_agent.simulators cameras``) plays an ONVIF
camera over the courtyard (someone moving now and then, a covered lens) and a Dahua camera at
the gate (people crossing its line). A demo rule attaches the courtyard camera's snapshot to
its motion alarm, so the live view shows an alarm with its picture's topic. With OpenCV
installed (the ``analytics`` extra) the gate is also counted by on-gateway analytics; without
it the demo says so in one line and runs the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from edge_agent.config.loader import load_config
from edge_agent.errors import ConfigError, EdgeAgentError

log = logging.getLogger(__name__)

SITE_ID = "demo-school"
GATEWAY_ID = "gw1"
#: The demo's site time zone: the WG controller's clock is set to its wall time.
DEMO_TZ = "Asia/Shanghai"
#: The environment variable the demo config's ``site.pseudonym_secret`` names; the demo sets
#: it to :data:`DEMO_SECRET` unless it is set. Demo only: a real site keeps its secret in
#: ``${cred:pseudonym-secret}``.
DEMO_SECRET_ENV = "EDGE_AGENT_DEMO_PSEUDONYM_SECRET"  # noqa: S105 - a variable name
DEMO_SECRET = "demo-only-not-a-secret"  # noqa: S105 - a published value, for the demo only
#: The gate controller's device id in the demo.
GATE_ID = "gate-main"
#: Mean seconds between the gate's swipes.
GATE_EVERY_S = 2.0
#: The variable the demo cameras' ``password`` names; the demo sets it to
#: :data:`DEMO_CAMERA_PASSWORD` and starts the camera simulators with that password.
DEMO_CAMERA_PASSWORD_ENV = "EDGE_AGENT_DEMO_CAMERA_PASSWORD"  # noqa: S105 - a variable name
DEMO_CAMERA_PASSWORD = "demo-camera-only"  # noqa: S105 - a published value, for the demo only
#: The demo's camera device ids: ONVIF over the courtyard, Dahua at the gate, and the
#: analytics of the gate's MJPEG substream (only with OpenCV).
COURTYARD_CAM = "courtyard-cam"
GATE_CAM = "gate-cam"
GATE_COUNTER = "gate-counter"
#: Mean seconds between the courtyard camera's steps (motion, a covered lens); the gate's
#: line crossings come four times as often.
CAMERA_EVERY_S = 20.0
#: The demo's rule file, written next to its config: the courtyard's motion alarm carries
#: the courtyard camera's snapshot. A real site arms such a rule after hours only
#: (``only_outside: school_day``, the default ``motion_after_hours``); the demo arms it at
#: all hours so it shows whenever the demo runs, and turns the default rule off so one
#: motion raises one alarm.
DEMO_RULES = {
    "rules": [
        {
            "id": "courtyard_intrusion",
            "type": "event",
            "event": "motion",
            "devices": [COURTYARD_CAM],
            "match": {"zone": "courtyard", "active": True},
            "severity": "major",
            "category": "security",
            "snapshot": COURTYARD_CAM,
            "message": {
                "en": "{device}: someone in the courtyard (zone {zone}), picture attached.",
                "zh": "{device}：庭院有人活动（区域 {zone}），附抓图。",
            },
        }
    ]
}
DEMO_RULES_FILE = "demo-rules.yaml"


def gate_device(controller: dict[str, Any]) -> dict[str, Any]:
    """The ``kind: wg`` device entry of the simulated gate controller (from its layout)."""
    return {
        "id": GATE_ID,
        "kind": "wg",
        "name": "School gate / 校门",
        "serial": int(controller["serial"]),
        "host": controller["host"],
        "port": int(controller["port"]),
        "doors": int(controller["doors"]),
        "location": {"building": "gate"},
        "readers": [
            {"door": 1, "direction": "in", "name": "gate-lane-1-in", "context": "gate"},
            {"door": 1, "direction": "out", "name": "gate-lane-1-out", "context": "gate"},
            {"door": 2, "name": "gate-side-door", "context": "access"},
        ],
    }


def camera_devices(cameras: dict[str, Any]) -> list[dict[str, Any]]:
    """The device entries of the demo's cameras (from ``simulators cameras --layout-out``)."""
    password = "${" + DEMO_CAMERA_PASSWORD_ENV + "}"
    onvif, dahua = cameras["onvif"], cameras["dahua"]
    devices: list[dict[str, Any]] = [
        {
            "id": COURTYARD_CAM,
            "kind": "onvif",
            "name": "Courtyard camera / 庭院摄像机",
            "host": onvif["host"],
            "port": int(onvif["port"]),
            "user": onvif["user"],
            "password": password,
            "location": {"building": "B1", "room": "courtyard"},
            "names": {"MyMotionDetectorRule": "courtyard", "MyTamperDetectorRule": "courtyard"},
        },
        {
            "id": GATE_CAM,
            "kind": "dahua",
            "name": "Gate camera / 校门摄像机",
            "host": dahua["host"],
            "port": int(dahua["port"]),
            "user": dahua["user"],
            "password": password,
            "location": {"building": "gate"},
            "lines": [{"rule": "Gate", "name": "main-gate", "in_direction": "LeftToRight"}],
        },
    ]
    if cameras.get("mjpeg"):
        devices.append(
            {
                "id": GATE_COUNTER,
                "kind": "camera_analytics",
                "name": "Gate people counter / 校门人数统计",
                "location": {"building": "gate"},
                "analytics": {
                    "stream_url": cameras["mjpeg"]["url"],
                    # walking down the picture is "in"; a count every minute
                    "lines": [
                        {"name": "gate", "points": [[0, 0.5], [1, 0.5]], "count_period_s": 60}
                    ],
                },
            }
        )
    return devices


def config_from_layout(
    layout: dict[str, Any],
    *,
    broker_host: str,
    broker_port: int,
    protocol: str,
    outbox_path: str,
    interval_s: float = 5.0,
    language: str = "en",
    wg_layout: dict[str, Any] | None = None,
    camera_layout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An agent config (as a dict) that reads every device of a simulator layout, the
    WG controllers of ``wg_layout`` (``python -m edge_agent.simulators wg --layout-out``)
    and the cameras of ``camera_layout`` (``simulators cameras --layout-out``; their alarm
    rule goes in :data:`DEMO_RULES_FILE`, which the caller writes next to the config)."""
    buses: list[dict[str, Any]] = []
    bus_ids: dict[tuple[str, int], str] = {}
    for server in layout["servers"]:
        key = (server["host"], int(server["port"]))
        bus_id = f"sim-{len(bus_ids) + 1}"
        bus_ids[key] = bus_id
        buses.append(
            {
                "id": bus_id,
                "type": "tcp",
                "host": server["host"],
                "port": int(server["port"]),
                "framer": server.get("framer", "socket"),
            }
        )
    devices = []
    for dev in layout["devices"]:
        entry: dict[str, Any] = {
            "id": dev["id"],
            "kind": "modbus",
            "profile": dev["profile"],
            "bus": bus_ids[(dev["host"], int(dev["port"]))],
            "unit": int(dev["unit"]),
            "interval_s": interval_s,
            "timeout_s": 1.0,
        }
        loc = dev.get("location")
        if loc:
            entry["location"] = {k: v for k, v in loc.items() if v is not None}
        devices.append(entry)
    site: dict[str, Any] = {
        "id": SITE_ID,
        "gateway_id": GATEWAY_ID,
        "name": "Demo School / 演示学校",
        "language": language,
    }
    sections: dict[str, Any] = {}
    if wg_layout is not None:
        controllers = wg_layout["controllers"]
        devices += [gate_device(c) for c in controllers[:1]]
        site["timezone"] = DEMO_TZ
        site["pseudonym_secret"] = "${" + DEMO_SECRET_ENV + "}"
        # the controllers push every record to the gateway's socket (0x90), on loopback
        sections["wg"] = {"bind": "127.0.0.1:0", "listener": "127.0.0.1"}
        # a guard should check the gate's side door every two minutes; nobody does, so
        # the live view shows a patrol_missed alarm (the door events themselves are events)
        sections["patrol"] = {
            "checkpoints": [
                {
                    "id": "gate-side-door",
                    "device": GATE_ID,
                    "reader": "gate-side-door",
                    "name": "Gate side door / 校门侧门",
                }
            ],
            "routes": [
                {
                    "id": "gate-round",
                    "name": "Gate round / 校门巡更",
                    "checkpoints": ["gate-side-door"],
                    "every_min": 2,
                    "window_start": "00:00",
                    "window_end": "23:59",
                    "round_min": 1,
                    "tolerance_min": 0,
                }
            ],
        }
    if camera_layout is not None:
        devices += camera_devices(camera_layout)
        sections["rules"] = {"files": [DEMO_RULES_FILE], "disable": ["motion_after_hours"]}
        # pictures next to the outbox; the alarm waits for its picture at most this long
        sections["snapshots"] = {"alarm_wait_s": 3}
    return {
        "site": site,
        "mqtt": {
            "host": broker_host,
            "port": broker_port,
            "protocol": protocol,
            "health_interval_s": 10,
        },
        "outbox": {"path": outbox_path},
        # The simulated devices and the agent share this machine's clock, whatever
        # NTP says about it: nothing to wait for.
        "clock": {"sync_check": "none"},
        "buses": buses,
        **sections,
        "devices": devices,
    }


def opencv_installed() -> bool:
    """Whether the analytics extra (OpenCV) is importable, without importing it (~60 MB)."""
    return importlib.util.find_spec("cv2") is not None


def analytics_off_line(reason: str | None = None, *, asked: bool = False) -> str:
    """The one line the demo prints when it runs without analytics: ``asked`` with
    ``--no-analytics``, else because OpenCV cannot be imported (``reason``)."""
    if asked:
        return "analytics off (--no-analytics) / 已按要求关闭视频分析"
    why = reason or "OpenCV is not installed"
    return (
        f"analytics off: {why}; the cameras' own events still run. For people counting "
        "install the extra: .venv/bin/pip install 'campus-edge-agent[analytics]' "
        "/ 未安装 OpenCV，视频分析（人数统计）未启用，摄像机事件照常运行"
    )


def _controller_offset_s(tz: str) -> float:
    """Seconds from this machine's local wall time to ``tz``'s: the WG simulator's clock is
    local wall time, a controller on a campus in ``tz`` shows that zone's."""
    local = datetime.now()
    there = datetime.now(ZoneInfo(tz)).replace(tzinfo=None)
    return round((there - local).total_seconds() / 60) * 60


async def _wait_for_file(path: Path, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():  # noqa: ASYNC240 - a stat every 100 ms while starting up
        if proc.returncode is not None:
            raise EdgeAgentError(f"the simulators exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise EdgeAgentError(f"the simulators did not write {path} within {timeout_s:g} s")
        await asyncio.sleep(0.1)


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run_demo(
    *,
    duration_s: float | None,
    broker_port: int = 1883,
    classrooms: int = 12,
    meters: int = 4,
    speed: float = 60.0,
    workdir: Path | None = None,
    language: str = "en",
    plain: bool = False,
    analytics: bool | None = None,
) -> int:
    """Run the whole demo; returns the process exit code. ``analytics``: count the gate
    with on-gateway analytics; ``None``: when OpenCV is installed."""
    from edge_agent.supervisor import Agent
    from edge_agent.tools.localbroker import BrokerError, BrokerPortInUse, LocalBroker
    from edge_agent.tools.tail.model import run_console

    if analytics is None:
        analytics = opencv_installed()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edge-agent-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(port=broker_port, workdir=workdir / "broker", embedded_ok=True)
    try:
        await asyncio.to_thread(broker.start)
    except BrokerPortInUse as err:
        print(
            f"{err}\nPick a free port: edge-agent demo --broker-port 18830 "
            "(./scripts/demo --broker-port 18830), or stop the other broker "
            "(sudo systemctl stop mosquitto) / 请换一个端口：--broker-port 18830，"
            "或停止占用该端口的代理（sudo systemctl stop mosquitto）",
            file=sys.stderr,
        )
        return 1
    except BrokerError as err:
        print(
            f"cannot start a local MQTT broker on port {broker_port}: {err}\n"
            f"无法启动本地 MQTT 代理。Try another port: ./scripts/demo --broker-port 18830",
            file=sys.stderr,
        )
        return 1
    print(
        f"broker: {broker.kind} on 127.0.0.1:{broker.port} (MQTT {broker.protocol})",
        file=sys.stderr,
    )
    layout_path = workdir / "layout.json"
    layout_path.unlink(missing_ok=True)
    sim_log = (workdir / "simulators.log").open("wb")
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent.simulators",
        "campus",
        "--classrooms",
        str(classrooms),
        "--meters",
        str(meters),
        "--host",
        "127.0.0.1",
        "--base-port",
        "0",
        "--speed",
        str(speed),
        "--layout-out",
        str(layout_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=sim_log,
    )
    wg_layout_path = workdir / "wg-layout.json"
    wg_layout_path.unlink(missing_ok=True)
    gate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent.simulators",
        "wg",
        "--controllers",
        "1",
        "--doors",
        "2",
        "--host",
        "127.0.0.1",
        "--clock-offset-s",
        str(_controller_offset_s(DEMO_TZ)),
        "--trickle",
        str(GATE_EVERY_S),
        "--layout-out",
        str(wg_layout_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=sim_log,
    )
    cam_layout_path = workdir / "camera-layout.json"
    cam_layout_path.unlink(missing_ok=True)
    os.environ.setdefault(DEMO_CAMERA_PASSWORD_ENV, DEMO_CAMERA_PASSWORD)
    cams = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent.simulators",
        "cameras",
        "--host",
        "127.0.0.1",
        "--password",
        os.environ[DEMO_CAMERA_PASSWORD_ENV],
        "--every-s",
        str(CAMERA_EVERY_S),
        *(["--analytics"] if analytics else []),
        "--layout-out",
        str(cam_layout_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=sim_log,
    )
    agent: Agent | None = None
    agent_task: asyncio.Task[None] | None = None
    try:
        await _wait_for_file(layout_path, sim, 30)
        await _wait_for_file(wg_layout_path, gate, 30)
        await _wait_for_file(cam_layout_path, cams, 30)
        layout = json.loads(layout_path.read_text())
        wg_layout = json.loads(wg_layout_path.read_text())
        cam_layout = json.loads(cam_layout_path.read_text())
        cfg_dict = config_from_layout(
            layout,
            broker_host="127.0.0.1",
            broker_port=broker.port,
            protocol=broker.protocol,
            outbox_path=str(workdir / "outbox.db"),
            language=language,
            wg_layout=wg_layout,
            camera_layout=cam_layout,
        )
        (workdir / DEMO_RULES_FILE).write_text(
            "## Generated by `edge-agent demo`: the courtyard's motion alarm carries a picture.\n"
            + yaml.safe_dump(DEMO_RULES, sort_keys=False, allow_unicode=True)
        )
        os.environ.setdefault(DEMO_SECRET_ENV, DEMO_SECRET)
        cfg_path = workdir / "demo-agent.yaml"
        cfg_path.write_text(
            "## Generated by `edge-agent demo` from the simulators' layout.\n"
            + yaml.safe_dump(cfg_dict, sort_keys=False, allow_unicode=True)
        )
        try:
            cfg = load_config(cfg_path)
        except ConfigError as err:
            print("\n".join(err.problems), file=sys.stderr)
            return 1
        print(
            f"simulated campus: {len(layout['devices'])} devices on {len(layout['servers'])} "
            f"Modbus TCP servers, a WG door controller at the gate ({GATE_ID}), cameras "
            f"{', '.join(d['id'] for d in camera_devices(cam_layout))}; "
            f"agent config: {cfg_path}",
            file=sys.stderr,
        )
        if not cam_layout.get("mjpeg"):
            line = analytics_off_line(cam_layout.get("analytics_off"), asked=not analytics)
            print(line, file=sys.stderr)
        agent = Agent(cfg, cfg_path)
        agent_task = asyncio.create_task(agent.run(), name="agent")
        console = asyncio.create_task(
            run_console(
                "127.0.0.1",
                broker.port,
                agent.root,
                mode="tail" if plain else "view",
                protocol=broker.protocol,
                duration_s=duration_s,
                language=language,  # type: ignore[arg-type]
            )
        )
        done, _ = await asyncio.wait({console, agent_task}, return_when=asyncio.FIRST_COMPLETED)
        if agent_task in done:
            console.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await console
            agent_task.result()  # raises what ended the agent
            return 1
        state = console.result()
        print(
            f"\ndemo finished: {state.messages} messages from "
            f"{len(state.devices)} devices, seq gaps {state.gaps}, duplicates {state.duplicates}",
            file=sys.stderr,
        )
        return 0
    finally:
        if agent is not None and agent_task is not None and not agent_task.done():
            agent.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent_task, 15)
        await _stop_process(cams)
        await _stop_process(gate)
        await _stop_process(sim)
        sim_log.close()
        await asyncio.to_thread(broker.stop)
        if tmp is not None:
            tmp.cleanup()
