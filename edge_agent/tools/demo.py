"""``edge-agent demo``: a simulated campus, a local broker, the agent and a live view.

Everything runs on loopback. The simulators are a separate process started as
``python -m edge_agent.simulators`` (production code never imports them); they write a
layout file that says which devices answer on which port, and the demo turns
that layout into an ordinary agent config (kept in the work folder, so a
newcomer can read a config that works).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from edge_agent.config.loader import load_config
from edge_agent.errors import ConfigError, EdgeAgentError

log = logging.getLogger(__name__)

SITE_ID = "demo-school"
GATEWAY_ID = "gw1"


def config_from_layout(
    layout: dict[str, Any],
    *,
    broker_host: str,
    broker_port: int,
    protocol: str,
    outbox_path: str,
    interval_s: float = 5.0,
    language: str = "en",
) -> dict[str, Any]:
    """An agent config (as a dict) that reads every device of a simulator layout."""
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
    return {
        "site": {
            "id": SITE_ID,
            "gateway_id": GATEWAY_ID,
            "name": "Demo School / 演示学校",
            "language": language,
        },
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
        "devices": devices,
    }


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
) -> int:
    """Run the whole demo; returns the process exit code."""
    from edge_agent.supervisor import Agent
    from edge_agent.tools.localbroker import BrokerError, BrokerPortInUse, LocalBroker
    from edge_agent.tools.tail.model import run_console

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
    agent: Agent | None = None
    agent_task: asyncio.Task[None] | None = None
    try:
        await _wait_for_file(layout_path, sim, 30)
        layout = json.loads(layout_path.read_text())
        cfg_dict = config_from_layout(
            layout,
            broker_host="127.0.0.1",
            broker_port=broker.port,
            protocol=broker.protocol,
            outbox_path=str(workdir / "outbox.db"),
            language=language,
        )
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
            f"Modbus TCP servers; agent config: {cfg_path}",
            file=sys.stderr,
        )
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
        await _stop_process(sim)
        sim_log.close()
        await asyncio.to_thread(broker.stop)
        if tmp is not None:
            tmp.cleanup()
