"""``edge-agent demo`` and ``edge-agent sim`` as processes a user starts and stops."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.tools.demo import opencv_installed, run_demo
from edge_agent.tools.localbroker import BrokerPortInUse, LocalBroker, free_port, stop_process
from tests.mqtt_helpers import MqttBroker, Received, mqtt_subscriber

REPO = Path(__file__).resolve().parents[2]


async def test_demo_refuses_a_port_where_another_broker_listens(
    mqtt_broker: MqttBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # mqtt_broker plays the system's own mosquitto on the port the user asked for
    with mqtt_subscriber(mqtt_broker, "campus/#") as sub:
        code = await run_demo(
            duration_s=3,
            broker_port=mqtt_broker.port,
            classrooms=1,
            meters=0,
            workdir=tmp_path,
            plain=True,
        )
        err = capsys.readouterr().err
        assert code != 0
        assert f"port {mqtt_broker.port} on 127.0.0.1 is already in use" in err
        assert "已被占用" in err
        assert "--broker-port" in err
        # the demo published nothing to someone else's broker
        assert not [m for m in sub.messages if "demo-school" in m.topic]


def test_local_broker_does_not_start_on_a_taken_port(
    mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    broker = LocalBroker(port=mqtt_broker.port, workdir=tmp_path)
    with pytest.raises(BrokerPortInUse):
        broker.start()
    assert not broker.running
    broker.close()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc, no psutil needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_sim_stops_the_simulators(tmp_path: Path, signum: signal.Signals) -> None:
    layout = tmp_path / "layout.json"
    out = (tmp_path / "sim.out").open("wb")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "sim", "campus", "--classrooms", "1",
         "--meters", "0", "--layout-out", str(layout)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )  # fmt: skip
    children: list[int] = []
    try:
        while not layout.exists():  # the simulators (the child) are up
            assert proc.poll() is None, (tmp_path / "sim.out").read_text()
            time.sleep(0.05)
        children = _children(proc.pid)
        assert children, "edge-agent sim started no child process"
        proc.send_signal(signum)
        proc.wait(timeout=30)
        orphans = [pid for pid in children if _alive(pid)]
        assert not orphans, f"simulator process(es) {orphans} outlived `edge-agent sim`"
        # the simulators stopped in order, not killed
        assert "campus stopped" in (tmp_path / "sim.out").read_text()
    finally:
        stop_process(proc, 5, "edge-agent sim")
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        out.close()


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_demo_stops_its_broker_and_simulators(
    tmp_path: Path, signum: signal.Signals
) -> None:
    work = tmp_path / "demo"
    out = (tmp_path / "demo.out").open("wb")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "demo", "--broker-port", str(free_port()),
         "--duration", "300", "--plain", "--classrooms", "1", "--meters", "0",
         "--workdir", str(work)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )  # fmt: skip
    family: list[int] = []
    try:
        # the agent config is written once the broker and the simulators are up
        while not (work / "demo-agent.yaml").exists():
            assert proc.poll() is None, (tmp_path / "demo.out").read_text()
            time.sleep(0.05)
        family = _descendants(proc.pid)
        assert len(family) >= 2, "expected a broker and the simulators"
        proc.send_signal(signum)
        proc.wait(timeout=60)
        left = [pid for pid in family if _alive(pid)]
        assert not left, f"process(es) {left} outlived `edge-agent demo`"
    finally:
        stop_process(proc, 5, "edge-agent demo")
        for pid in family:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        out.close()


def test_demo_shows_the_gate_swipes_and_door_events(tmp_path: Path) -> None:
    # `./scripts/demo --plain`: the simulated gate controller's swipes reach the live view as
    # card_read with pseudonymised cards, and the forced and held-open side door as events
    work = tmp_path / "demo"
    out_path = tmp_path / "demo.out"
    out = out_path.open("wb")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EDGE_AGENT_DEMO_PSEUDONYM_SECRET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "demo", "--broker-port", str(free_port()),
         "--duration", "300", "--plain", "--classrooms", "1", "--meters", "0",
         "--workdir", str(work)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )  # fmt: skip
    wanted = {
        "granted": re.compile(r" gate-main card_read granted in gate reader=gate-lane-1-in "
                              r"card=h:[0-9a-f]{16}$"),
        "denied": re.compile(r" gate-main card_read denied .*reader=gate-lane-1-in card=h:"),
        "forced": re.compile(r" gate-main door_forced door=2 "),
        "held": re.compile(r" gate-main door_held_open door=2 "),
        "closed": re.compile(r" gate-main door_closed door=2 "),
    }  # fmt: skip
    seen: set[str] = set()
    try:
        while seen != set(wanted):  # the per-test timeout ends a demo that never shows them
            assert proc.poll() is None, out_path.read_text()
            for line in out_path.read_text(errors="replace").splitlines():
                seen |= {name for name, pattern in wanted.items() if pattern.search(line)}
            time.sleep(0.2)
        text = out_path.read_text()
        # a card number never appears: every card_read carries a pseudonym
        assert not re.search(r"card=(?!h:)", text)
        cfg = (work / "demo-agent.yaml").read_text()
        assert "pseudonym_secret: ${EDGE_AGENT_DEMO_PSEUDONYM_SECRET}" in cfg
        assert "kind: wg" in cfg
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        stop_process(proc, 5, "edge-agent demo")
        out.close()


class _DemoBroker:
    """The demo's own broker, as ``mqtt_subscriber`` wants one (port and protocol)."""

    host = "127.0.0.1"

    def __init__(self, port: int, protocol: str) -> None:
        self.port = port
        self.protocol = protocol


def _start_demo(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[
    subprocess.Popen[bytes], Path, Path, int
]:  # fmt: skip
    work = tmp_path / "demo"
    out_path = tmp_path / "demo.out"
    port = free_port()
    with out_path.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "demo", "--broker-port", str(port),
         "--duration", "300", "--plain", "--classrooms", "1", "--meters", "0",
         "--workdir", str(work), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            cwd=REPO,
        )  # fmt: skip
    return proc, work, out_path, port


def test_demo_shows_the_cameras_and_an_alarm_with_its_picture(tmp_path: Path) -> None:
    # `./scripts/demo`: the courtyard's ONVIF camera (motion, a covered lens) and the gate's
    # Dahua camera (line crossings) reach the broker as contract events; the courtyard's
    # motion alarm carries the camera's snapshot, whose bytes arrive on its topic
    proc, work, out_path, port = _start_demo(tmp_path)
    root = "campus/demo-school/gw1"
    try:
        # the broker is up once the agent's config is written; the cameras' scenes start only
        # when the agent subscribes to them, so nothing is missed from here on
        while not (work / "demo-agent.yaml").exists():
            assert proc.poll() is None, out_path.read_text()
            time.sleep(0.05)
        broker = _DemoBroker(port, "5" if "(MQTT 5)" in out_path.read_text() else "3.1.1")
        with mqtt_subscriber(broker, f"{root}/#", protocol=broker.protocol, timeout=30) as sub:

            def event(device: str, etype: str, **data: object) -> Callable[[Received], bool]:
                def match(m: Received) -> bool:
                    if m.topic != f"{root}/events/{device}":
                        return False
                    doc = m.json()
                    return doc["type"] == etype and data.items() <= doc["data"].items()

                return match

            wait = 100.0  # the per-test timeout ends the test first if the demo stalls
            sub.wait_for(event("courtyard-cam", "motion", zone="courtyard", active=True), wait)
            sub.wait_for(event("gate-cam", "line_crossed", line="main-gate"), wait)
            alarm = sub.wait_for(
                lambda m: (
                    m.topic == f"{root}/alarms"
                    and m.json()["data"]["rule"] == "courtyard_intrusion"
                ),
                wait,
            ).json()["data"]
            picture = alarm["snapshot"]
            assert picture is not None, alarm
            assert picture["topic"].startswith(f"{root}/snapshots/courtyard-cam/")
            jpeg = sub.wait_for(lambda m: m.topic == picture["topic"], wait).payload
            assert jpeg.startswith(b"\xff\xd8")
            assert jpeg.endswith(b"\xff\xd9")
            assert hashlib.sha256(jpeg).hexdigest() == picture["sha256"]
            # the lens covered now and then: the event with its `active`, and the default alarm
            sub.wait_for(
                event("courtyard-cam", "camera_tamper", reason="covered", active=True), wait
            )
            sub.wait_for(
                lambda m: (
                    m.topic == f"{root}/alarms"
                    and m.json()["data"]["rule"] == "camera_tamper"
                    and m.json()["data"]["device"] == "courtyard-cam"
                ),
                wait,
            )
            if opencv_installed():
                # the gate counted by the analytics worker, which health reports
                sub.wait_for(event("gate-counter", "line_crossed", line="gate"), wait)
                health = sub.wait_for(
                    lambda m: m.topic == f"{root}/health" and "gate-counter" in str(m.json()),
                    wait,
                ).json()
                assert "gate-counter" in health["workers"]
        # the live view names the picture that goes with the alarm
        shown = f"picture=snapshots/courtyard-cam/{picture['topic'].rsplit('/', 1)[1]}"
        while shown not in out_path.read_text(errors="replace"):
            assert proc.poll() is None, out_path.read_text()
            time.sleep(0.2)
        assert "analytics off" not in out_path.read_text() or not opencv_installed()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        stop_process(proc, 5, "edge-agent demo")


def test_demo_without_opencv_says_so_in_one_line_and_runs_the_cameras(tmp_path: Path) -> None:
    # the analytics extra is not installed (a cv2 that cannot be imported shadows the real
    # one): one line says so, the cameras' own events still flow, nothing fails
    shadow = tmp_path / "no-opencv"
    (shadow / "cv2").mkdir(parents=True)
    (shadow / "cv2" / "__init__.py").write_text("raise ImportError('no OpenCV here (test)')\n")
    env = {"PYTHONPATH": f"{shadow}{os.pathsep}{REPO}"}
    proc, work, out_path, _port = _start_demo(tmp_path, env=env)
    try:
        wanted = re.compile(r" gate-cam line_crossed .*line=main-gate direction=(in|out)")
        while not wanted.search(out_path.read_text(errors="replace")):
            assert proc.poll() is None, out_path.read_text()
            time.sleep(0.2)
        text = out_path.read_text()
        assert text.count("analytics off: OpenCV is not installed") == 1, text
        assert "pip install 'campus-edge-agent[analytics]'" in text
        assert "kind: camera_analytics" not in (work / "demo-agent.yaml").read_text()
        assert "Traceback" not in text
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        stop_process(proc, 5, "edge-agent demo")
