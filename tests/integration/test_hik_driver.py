"""The hikvision driver end to end (issue 9 item 2): the ISAPI terminal simulator
(simulators/hikvision.py, HTTP with digest on 127.0.0.1) -> the agent (supervisor, pipeline,
outbox) -> a real mosquitto, in both modes: the agent holds the alertStream open, or the
terminal POSTs to the agent (httpHosts). Records arrive exactly once and in order, after the
agent was off too (catch-up by serialNo from the committed cursor); the device goes offline
when it goes silent and comes back; garbage is logged once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.driver import DriverContext, Event, HubContext
from edge_agent.drivers.hikvision.driver import HikvisionDriver, HikvisionHub
from edge_agent.errors import DeviceError, NotDurableError
from edge_agent.simulators.hikvision import HikTerminal
from edge_agent.supervisor import Agent
from tests import captures
from tests.contract import check_envelope
from tests.mqtt_helpers import MqttBroker, MqttSubscriber, Received, mqtt_subscriber, publish

pytestmark = pytest.mark.integration

PASSWORD = "Gate-Pw-2026"
SECRET = "a-site-secret"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIK_PW", PASSWORD)
    monkeypatch.setenv("PSEUDO_SECRET", SECRET)


def agent_for(
    tmp_path: Path,
    broker: MqttBroker,
    site: str,
    device: dict[str, Any],
    *,
    bind: str = "127.0.0.1:0",
) -> Agent:
    cfg = {
        "site": {"id": site, "gateway_id": "gw1", "pseudonym_secret": "${PSEUDO_SECRET}"},
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval_ms": 50},
        "clock": {"sync_check": "none"},
        "http": {"bind": bind},
        "devices": [
            {
                "id": "gate1",
                "kind": "hikvision",
                "host": "127.0.0.1",
                "password": "${HIK_PW}",
                "silence_s": 1,
                "timeout_s": 3,
                "retry_max_s": 1,
                "readers": [{"door": 1, "reader": 1, "name": "east-in", "context": "gate",
                             "direction": "in"}],
                **device,
            }
        ],
    }  # fmt: skip
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Agent(load_config(path), path)


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def http_port(agent: Agent) -> int:
    async with asyncio.timeout(10):
        while not agent.http.addresses:
            await asyncio.sleep(0.02)
    return agent.http.addresses[0][1]


def events_of(sub: MqttSubscriber, root: str) -> list[dict[str, Any]]:
    return [
        check_envelope(m.payload, "event", "gate1")
        for m in sub.messages
        if m.topic == f"{root}/events/gate1"
    ]


async def wait_events(sub: MqttSubscriber, root: str, n: int, timeout: float = 20) -> None:
    def pred(m: Received) -> bool:
        return m.topic == f"{root}/events/gate1"

    await asyncio.to_thread(sub.wait_for_count, n, pred, timeout)


def states_of(sub: MqttSubscriber, root: str) -> list[dict[str, Any]]:
    payloads = dict.fromkeys(
        m.payload for m in sub.messages if m.topic == f"{root}/devices/gate1/state"
    )
    return [json.loads(p) for p in payloads]


async def wait_state(sub: MqttSubscriber, root: str, state: str, after: int = 0) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            found = [s for s in states_of(sub, root)[after:] if s["state"] == state]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)


def serials(events: Sequence[dict[str, Any]]) -> list[int]:
    return [e["data"]["serial_no"] for e in events]


async def test_stream_records_arrive_once_in_order_without_pictures_or_names(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hik-stream/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2, pictures=True) as term:
        agent = agent_for(tmp_path, mqtt_broker, "hik-stream", {"port": term.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                for i in range(20):
                    term.swipe(f"{6154410 + i:010d}")
                term.face("EMP-7")  # a picture part follows it on the stream
                term.swipe("12345", granted=False, reason="no_right")
                term.exit_button(1)
                term.door(1, "open")
                term.door(1, "forced")
                await wait_events(sub, root, 25)
                await asyncio.sleep(0.3)  # nothing more may come
    events = events_of(sub, root)
    assert serials(events) == list(range(1, 26))  # once each, in the terminal's order
    first = events[0]["data"]
    assert events[0]["type"] == "card_read"
    assert first["result"] == "granted"
    assert (first["reader"], first["context"], first["direction"]) == ("east-in", "gate", "in")
    assert first["card"].startswith("h:")
    assert len(first["card"]) == 18
    assert events[21]["data"]["result"] == "denied"
    assert events[21]["data"]["reason"] == "no_right"
    assert [e["type"] for e in events[22:]] == ["digital_input", "door_opened", "door_forced"]
    assert events[22]["data"]["input"] == "exit_button"
    wire = json.dumps(events)
    for private in ("6154410", "EMP-7", "REDACTED", "face0000", "JFIF"):
        assert private not in wire, private
    driver = agent.drivers["gate1"]
    assert isinstance(driver, HikvisionDriver)
    assert driver.counts["pictures_dropped"] == 1


async def test_catch_up_after_the_agent_was_off_exactly_once(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hik-catchup/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2) as term:
        for i in range(3):  # before the agent ever ran: taken by first_catchup_h
            term.swipe(str(100 + i))
        device = {"port": term.port, "first_catchup_h": 1}
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent_for(tmp_path, mqtt_broker, "hik-catchup", device)):
                await wait_events(sub, root, 3)
                for i in range(5):
                    term.swipe(str(200 + i))
                await wait_events(sub, root, 8)
            # the agent is off; the gate goes on (more than one search page)
            for i in range(45):
                term.swipe(str(300 + i))
            searches = len(term.searches)
            async with running(agent_for(tmp_path, mqtt_broker, "hik-catchup", device)):
                await wait_events(sub, root, 53)
                term.swipe("999")
                await wait_events(sub, root, 54)
                await asyncio.sleep(0.3)
    assert serials(events_of(sub, root)) == list(range(1, 55))
    resumed = term.searches[searches]
    assert resumed["beginSerialNo"] == 9  # from the committed cursor
    assert [c["searchResultPosition"] for c in term.searches[searches:]] == [0, 30]


async def test_offline_when_silent_or_unplugged_and_back_with_what_it_recorded(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hik-silent/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2) as term:
        agent = agent_for(tmp_path, mqtt_broker, "hik-silent", {"port": term.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                term.silence()  # hangs: the stream stays open, no heartbeat
                off = await wait_state(sub, root, "offline")
                assert "heartbeat" in off["last_error"]
                term.swipe("1")  # recorded while silent: not on the stream
                term.resume()
                n = len(states_of(sub, root))
                await wait_state(sub, root, "online", after=n)
                await wait_events(sub, root, 1)
                await term.unplug()
                n = len(states_of(sub, root))
                off = await wait_state(sub, root, "offline", after=n)
                assert off["last_error"]
                term.swipe("2")
                term.swipe("3")
                await term.plug()
                n = len(states_of(sub, root))
                await wait_state(sub, root, "online", after=n)
                await wait_events(sub, root, 3)
                await asyncio.sleep(0.3)
    assert serials(events_of(sub, root)) == [1, 2, 3]


async def test_garbage_on_the_stream_is_logged_once_and_never_stops_it(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent.drivers.hikvision")
    root = "campus/hik-garbage/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2) as term:
        agent = agent_for(tmp_path, mqtt_broker, "hik-garbage", {"port": term.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                for i in range(3):
                    term.inject(b"--MIME_boundary\r\nContent-Type: application/json\r\n\r\n{bad")
                    term.inject(b"\r\n")
                    term.swipe(str(i + 1))
                await wait_events(sub, root, 3)
                await term.unplug()  # a new connection: its parser counts from zero again
                await term.plug()
                async with asyncio.timeout(20):
                    while term.streams_opened < 2:
                        await asyncio.sleep(0.05)
                term.inject(b"--MIME_boundary\r\nContent-Type: application/json\r\n\r\n{bad")
                term.inject(b"\r\n")
                term.swipe("4")
                await wait_events(sub, root, 4)
                await asyncio.sleep(0.3)
    assert serials(events_of(sub, root)) == [1, 2, 3, 4]
    driver = agent.drivers["gate1"]
    assert isinstance(driver, HikvisionDriver)
    assert driver.counts["skipped_parts"] == 4
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "unreadable alertStream part" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    summary = [r.getMessage() for r in caplog.records if "repeated problems" in r.getMessage()]
    assert summary
    assert "part x3" in summary[0]


async def test_a_wrong_password_is_offline_with_the_reason(
    tmp_path: Path, mqtt_broker: MqttBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIK_PW", "wrong")
    root = "campus/hik-401/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2) as term:
        agent = agent_for(tmp_path, mqtt_broker, "hik-401", {"port": term.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                off = await wait_state(sub, root, "offline")
    assert "401" in off["last_error"]
    assert not any(ok for _m, _p, ok in term.seen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_push_mode_records_arrive_once_and_after_the_agent_was_off(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hik-push/gw1"
    port = free_port()  # the gateway's address the installer types into the terminal
    bind = f"127.0.0.1:{port}"
    term = HikTerminal(
        password=PASSWORD,
        push_url=f"http://127.0.0.1:{port}/hik/gate1",
        push_retry_s=0.2,
        pictures=True,
    )
    async with term:
        device = {"port": term.port, "mode": "push"}
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent_for(tmp_path, mqtt_broker, "hik-push", device, bind=bind)):
                await wait_state(sub, root, "online")
                for i in range(10):
                    term.swipe(str(500 + i))
                term.face("EMP-1")  # with its picture part
                await wait_events(sub, root, 11)
            # the agent is off: the terminal's POSTs fail, it keeps the records
            for i in range(5):
                term.swipe(str(600 + i))
            async with asyncio.timeout(10):
                while term.push_failures < 2:
                    await asyncio.sleep(0.05)
            agent = agent_for(tmp_path, mqtt_broker, "hik-push", device, bind=bind)
            async with running(agent):
                await wait_events(sub, root, 16)
                async with asyncio.timeout(10):
                    while len(term.pushed) < 16:  # the terminal's resends got their 200
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
    events = events_of(sub, root)
    assert serials(events) == list(range(1, 17))
    assert "EMP-1" not in json.dumps(events)
    assert term.pushed == list(range(1, 17))


class RefusingLink:
    """A DeviceLink whose disk is full for the first ``refuse`` commits."""

    device_id = "gate1"

    def __init__(self, refuse: int, cursor: str | None = None) -> None:
        self.refuse = refuse
        self.committed: list[Event] = []
        self._cursor = cursor
        self.states: list[tuple[str, str | None]] = []

    @property
    def cursor(self) -> str | None:
        return self._cursor

    def telemetry(self, data: dict[str, Any], **_: Any) -> None:
        pass

    async def commit(self, events: Sequence[Event], *, cursor: str | None = None) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            raise NotDurableError("disk full")
        self.committed += events
        if cursor is not None:
            self._cursor = cursor

    def state(self, state: str, reason: str | None = None) -> None:
        self.states.append((state, reason))


async def test_a_push_not_stored_is_refused_so_the_terminal_sends_it_again() -> None:
    from edge_agent.config.models import HttpConfig
    from edge_agent.http import HttpServer

    server = HttpServer(HttpConfig(bind="127.0.0.1:0"))
    term = HikTerminal(password=PASSWORD, push_retry_s=0.1)
    await term.start()
    config = HikvisionDriver.Config.model_validate(
        {"kind": "hikvision", "id": "gate1", "host": "127.0.0.1", "port": term.port,
         "password": "${HIK_PW}", "mode": "push", "silence_s": 5}
    )  # fmt: skip
    hub = HikvisionHub(HubContext("hikvision", None, [config], http=server))
    driver = HikvisionDriver(config, DriverContext({}, hub=hub))
    link = RefusingLink(refuse=2, cursor="0")  # committed before: no first-start baseline
    try:
        async with asyncio.TaskGroup() as tg:
            srv = tg.create_task(server.run())
            run = tg.create_task(driver.run(link))  # type: ignore[arg-type]
            async with asyncio.timeout(10):
                while not server.addresses:
                    await asyncio.sleep(0.02)
            term.push_url = f"http://127.0.0.1:{server.addresses[0][1]}/hik/gate1"
            await term.stop()
            await term.start()
            term.swipe("42")
            async with asyncio.timeout(10):
                while not term.pushed:
                    await asyncio.sleep(0.02)
            for t in (srv, run):
                t.cancel()
    finally:
        await term.stop()
        await hub.close()
    assert term.push_failures == 2  # two 503s: the record stayed on the terminal
    assert term.pushed == [1]
    assert [e.data["serial_no"] for e in link.committed] == [1]
    assert link.cursor == "1"
    assert any(s == "degraded" for s, _ in link.states)


async def test_door_open_puts_the_remote_control_and_checks_the_answer() -> None:
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2, doors=2) as term:
        config = HikvisionDriver.Config.model_validate(
            {"kind": "hikvision", "id": "gate1", "host": "127.0.0.1", "port": term.port,
             "password": "${HIK_PW}", "doors": 2}
        )  # fmt: skip
        driver = HikvisionDriver(config, DriverContext({}))
        link = RefusingLink(refuse=0)
        task = asyncio.create_task(driver.run(link))  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(10):
                while ("online", None) not in link.states:
                    await asyncio.sleep(0.02)
            await driver.open_door(2)
            assert term.remote_opens == [2]
            with pytest.raises(ValueError, match="doors 1-2"):
                await driver.open_door(3)
            term.doors = 1  # the terminal refuses door 2 now: the answer is checked
            with pytest.raises(DeviceError, match=r"not opened|HTTP 400"):
                await driver.open_door(2)
            assert term.remote_opens == [2]
            async with asyncio.timeout(10):  # the remote open is a record like any other
                while len(link.committed) < 2:
                    await asyncio.sleep(0.02)
            assert [e.data.get("input") for e in link.committed] == ["lock", "lock"]
            assert link.committed[0].data["by"] == "remote"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_record_missing_from_the_stream_is_fetched_from_the_log(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hik-gap/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2) as term:
        agent = agent_for(tmp_path, mqtt_broker, "hik-gap", {"port": term.port, "silence_s": 30})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                term.swipe("1")
                await wait_events(sub, root, 1)
                searches = len(term.searches)
                term.silence()  # one record lost on the stream, the connection stays
                term.swipe("2")
                term.resume()
                term.swipe("3")
                await wait_events(sub, root, 3)
                await asyncio.sleep(0.3)
    assert serials(events_of(sub, root)) == [1, 2, 3]
    assert term.searches[searches]["beginSerialNo"] == 2
    assert term.streams_opened == 1  # no reconnect: the gap itself asked the log
    assert [s["state"] for s in states_of(sub, root)] == ["online"]


async def test_door_open_command_over_mqtt_opens_the_door_and_is_audited(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hik-door/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2) as term:
        agent = agent_for(tmp_path, mqtt_broker, "hik-door", {"port": term.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                for rid, door in (("open-1", 1), ("open-9", 9)):
                    body = {"request_id": rid, "device": "gate1", "door": door, "by": "guard"}
                    await asyncio.to_thread(
                        publish, mqtt_broker, f"{root}/cmd/door_open", json.dumps(body)
                    )

                def results(m: Received) -> bool:
                    return m.topic.startswith(f"{root}/cmd_result/")

                got = await asyncio.to_thread(sub.wait_for_count, 2, results, 20)

                def lock(m: Received) -> bool:
                    return m.topic == f"{root}/events/gate1" and b'"input":"lock"' in m.payload

                # the terminal logs the remote open (3/0x400, 5/0x15): records like any other
                await asyncio.to_thread(sub.wait_for_count, 2, lock, 20)
                await asyncio.sleep(0.3)
    answers = {m.topic.rsplit("/", 1)[1]: json.loads(m.payload) for m in got}
    assert answers["open-1"]["ok"] is True, answers
    assert answers["open-9"]["ok"] is False
    assert "door 9" in answers["open-9"]["error"]
    assert term.remote_opens == [1]
    events = events_of(sub, root)
    locks = [e["data"] for e in events if e["data"].get("input") == "lock"]
    assert locks[0]["by"] == "remote"
    audits = [e["data"] for e in events if e["type"] == "command_audit"]
    assert {(a["request_id"], a["result"]) for a in audits} == {
        ("open-1", "ok"),
        ("open-9", "refused"),
    }


async def test_push_mode_goes_offline_when_the_terminal_is_gone_and_back(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    root = "campus/hik-push-off/gw1"
    port = free_port()
    term = HikTerminal(password=PASSWORD, push_url=f"http://127.0.0.1:{port}/hik/gate1")
    async with term:
        device = {"port": term.port, "mode": "push"}
        agent = agent_for(tmp_path, mqtt_broker, "hik-push-off", device, bind=f"127.0.0.1:{port}")
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                await term.unplug()  # no POSTs, and the log search fails
                off = await wait_state(sub, root, "offline")
                assert "cannot reach" in off["last_error"]
                n = len(states_of(sub, root))
                await term.plug()
                await wait_state(sub, root, "online", after=n)
                term.swipe("7")
                await wait_events(sub, root, 1)
    assert serials(events_of(sub, root)) == [1]


async def test_an_unknown_code_is_published_raw_and_logged_once(
    tmp_path: Path, mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.drivers.hikvision")
    root = "campus/hik-unknown/gw1"
    async with HikTerminal(password=PASSWORD, heartbeat_s=0.2) as term:
        agent = agent_for(tmp_path, mqtt_broker, "hik-unknown", {"port": term.port})
        with mqtt_subscriber(mqtt_broker, f"{root}/#") as sub:
            async with running(agent):
                await wait_state(sub, root, "online")
                term.record(5, 0x1234, doorNo=1)
                term.record(5, 0x1234, doorNo=1)
                term.record(1, 0x41C)  # the emergency button
                await wait_events(sub, root, 3)
    events = events_of(sub, root)
    assert [e["type"] for e in events] == ["digital_input"] * 3
    assert events[0]["data"]["input"] == "unknown"
    assert (events[0]["data"]["major"], events[0]["data"]["minor"]) == (5, 0x1234)
    assert events[2]["data"]["input"] == "emergency"
    assert events[2]["data"]["severity"] == "critical"
    logged = [r for r in caplog.records if "unknown event code" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.WARNING


async def test_real_push_bodies_posted_to_the_route(caplog: pytest.LogCaptureFixture) -> None:
    # bodies of real terminals (../shared/fixtures/access/hik_isapi.json), POSTed over HTTP
    from aiohttp import ClientSession

    from edge_agent.config.models import HttpConfig
    from edge_agent.http import HttpServer

    real = captures.load("hik_isapi.json")
    caplog.set_level(logging.DEBUG, logger="edge_agent.drivers.hikvision")
    cases = {c["name"]: c["text"].encode() for c in real}
    server = HttpServer(HttpConfig(bind="127.0.0.1:0"))
    term = HikTerminal(password=PASSWORD)  # answers the catch-up search after a gap
    await term.start()
    config = HikvisionDriver.Config.model_validate(
        {"kind": "hikvision", "id": "gate1", "host": "127.0.0.1", "port": term.port,
         "password": "${HIK_PW}", "mode": "push", "silence_s": 30}
    )  # fmt: skip
    hub = HikvisionHub(HubContext("hikvision", None, [config], http=server))
    driver = HikvisionDriver(config, DriverContext({}, hub=hub))
    link = RefusingLink(refuse=0, cursor="138")
    plain = {"Content-Type": "application/json"}
    probe = {"Content-Type": "multipart/form-data; boundary=probe"}
    posts = [
        ("accesscontrollerevent_push_json_card_5_38_checkin", plain, 200),
        ("accesscontrollerevent_push_json_card_5_38_checkin", plain, 200),  # sent twice
        ("accesscontrollerevent_push_json_door_locked_5_22", plain, 200),  # 159: a gap
        ("httphosts_multipart_untyped_event_log_plus_decoys", probe, 200),  # 123: old
        (None, plain, 400),
        (None, plain, 400),
    ]
    statuses = []
    try:
        async with asyncio.TaskGroup() as tg:
            srv = tg.create_task(server.run())
            run = tg.create_task(driver.run(link))  # type: ignore[arg-type]
            async with asyncio.timeout(10):
                while not server.addresses or ("online", None) not in link.states:
                    await asyncio.sleep(0.02)
            url = f"http://127.0.0.1:{server.addresses[0][1]}/hik/gate1"
            async with ClientSession() as http:
                for name, headers, _want in posts:
                    body = cases[name] if name else b"{not json"
                    async with http.post(url, data=body, headers=headers) as resp:
                        statuses.append(resp.status)
                async with http.post(url.replace("gate1", "nobody"), data=b"{}") as resp:
                    assert resp.status == 404
            for t in (srv, run):
                t.cancel()
    finally:
        await term.stop()
        await hub.close()
    assert statuses == [want for *_, want in posts]
    assert [e.data["serial_no"] for e in link.committed] == [139, 159]
    card, lock = link.committed
    assert (card.type, card.data["card"], card.data["verify"]) == ("card_read", "11", "fingerprint")
    assert (lock.type, lock.data["input"], lock.data["active"]) == ("digital_input", "lock", False)
    assert term.searches[-1]["beginSerialNo"] == 140  # the gap asked the terminal's log
    assert link.cursor == "159"
    bad = [r for r in caplog.records if "unreadable POST body" in r.getMessage()]
    assert [r.levelno for r in bad] == [logging.WARNING, logging.DEBUG]  # once, then counted
