"""The console in a real headless Chromium (Debian's, driven by Playwright through
``executable_path``; no browser download), against the agent, the simulated campus
(Modbus on loopback) and a real mosquitto.

What a guard and an installer see: the login first; an alarm raised in the agent
appears on the alarms page and one click acknowledges it, which the broker's retained
``ROOT/alarms/active/{id}`` then says; a device named like an XSS attack shows its name
as text (no dialog); the pages in Chinese (screenshots, kept where
``EDGE_AGENT_SCREENSHOTS`` says, else in the test's temporary folder).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.loader import load_config
from edge_agent.console.auth import set_password
from edge_agent.simulators.campus import CampusSim
from edge_agent.supervisor import Agent
from tests.browser_helpers import chromium_page, save_screenshot_path
from tests.e2e.helpers import agent_config
from tests.mqtt_helpers import MqttBroker, mqtt_subscriber

pytestmark = pytest.mark.integration

XSS = "<img src=x onerror=alert(1)>"
PASSWORD = "night-shift 夜班"
#: generous: a loaded CI machine; never an assertion on how long it took
WAIT_MS = 15_000


@dataclass
class Console:
    agent: Agent
    url: str
    root: str
    device: str


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """The shared browser (tests/browser_helpers.py) in English; every dialog (an XSS
    that ran) is recorded in ``page.dialogs`` and dismissed."""
    async with chromium_page(locale="en-US") as opened:
        page: Any = opened
        dialogs: list[str] = []
        page.dialogs = dialogs

        async def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.set_default_timeout(WAIT_MS)
        yield page


@pytest.fixture
async def console(tmp_path: Path, mqtt_broker: MqttBroker) -> AsyncIterator[Console]:
    async with CampusSim(classrooms=1, meters=0, speed=0, seed=3) as sim:
        path = agent_config(
            tmp_path,
            mqtt_broker,
            sim.layout,
            site={"id": f"console-{os.urandom(3).hex()}", "language": "en"},
            device={"interval_s": 1, "timeout_s": 0.5},
            outbox={"commit_interval_ms": 50},
            http={"bind": "127.0.0.1:0"},
            console={"credentials": "console-users"},
        )
        cfg = yaml.safe_load(path.read_text())
        device = cfg["devices"][0]["id"]
        cfg["devices"][0]["name"] = XSS
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        set_password(tmp_path / "console-users", "guard", PASSWORD)
        agent = Agent(load_config(path), path)
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: bool(agent.http.addresses))
            port = agent.http.addresses[0][1]
            yield Console(agent, f"http://127.0.0.1:{port}/console/", agent.root, device)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)


async def until(pred: Callable[[], bool]) -> None:
    async with asyncio.timeout(15):
        while not pred():
            await asyncio.sleep(0.02)


async def log_in(page: Any, console: Console, password: str = PASSWORD) -> None:
    await page.goto(console.url)
    await page.wait_for_url("**/console/login")
    await page.fill("#user", "guard")
    await page.fill("#password", password)
    await page.click("#login-button")


async def test_the_console_wants_a_login_first(page: Any, console: Console) -> None:
    await log_in(page, console, password="wrong")
    error = page.locator("#login-error")
    await error.wait_for()
    await page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert "wrong user or password" in await error.text_content()
    assert page.url.endswith("/console/login")
    await page.fill("#password", PASSWORD)
    await page.click("#login-button")
    await page.wait_for_url(console.url)
    await page.locator("#user", has_text="guard").wait_for()
    # the APIs behind the page want the session too: a fresh context has none
    answer = await page.context.request.get(console.url + "api/alarms")
    assert answer.status == 200
    assert len([c for c in await page.context.cookies() if c["name"] == "edge_console"]) == 1
    await page.context.clear_cookies()
    assert (await page.context.request.get(console.url + "api/alarms")).status == 401


async def test_an_alarm_shows_live_and_one_click_acknowledges_it_on_the_broker(
    page: Any, console: Console, mqtt_broker: MqttBroker
) -> None:
    await log_in(page, console)
    await page.wait_for_url(console.url)
    await page.locator("#stream-state.ok").wait_for()  # the stream is open
    alarm = console.agent.alarms.raise_(
        "co2_high", console.device, "major", en=f"CO2 high {XSS}", zh="二氧化碳过高"
    )
    row = page.locator(f'tr[data-alarm-id="{alarm.alarm_id}"]')
    await row.wait_for()  # pushed over SSE, no reload
    assert await row.locator("td").nth(4).text_content() == f"CO2 high {XSS}"
    raised = row.locator("td.raised")  # in the browser's time zone, the exact time in title
    assert await raised.get_attribute("title") == alarm.data()["raised_at"]
    assert not (await raised.text_content()).endswith("Z")
    await row.locator("button.ack").click()
    await row.locator("td.state", has_text="active, acknowledged").wait_for()
    topic = f"{console.root}/alarms/active/{alarm.alarm_id}"

    def acked(m: Any) -> bool:
        return bool(m.retain and m.payload and m.json()["state"] == "active_acked")

    # a subscriber that comes after the ack gets the broker's retained copy
    with mqtt_subscriber(mqtt_broker, topic) as sub:
        got = await asyncio.to_thread(sub.wait_for, acked, 15)
    assert got.json()["acked_by"] == "guard"
    # a state this page has no text for (the lifecycle grows: out of service, suppressed)
    # shows its own name rather than a translation key
    data = dict(alarm.data(), alarm_id="later-1", state="suppressed")
    console.agent.console.stream.on_transition(data)
    later = page.locator('tr[data-alarm-id="later-1"] td.state')
    await later.wait_for()
    assert await later.text_content() == "suppressed"
    assert page.dialogs == []


async def test_an_ack_of_an_alarm_that_ended_meanwhile_says_so_and_no_error(
    page: Any, console: Console
) -> None:
    """The platform acknowledged, and the condition cleared, while the guard's page still
    showed the alarm: the guard's ack converges on the finished alarm."""
    agent = console.agent
    await log_in(page, console)
    await page.wait_for_url(console.url)
    await page.locator("#stream-state.ok").wait_for()
    alarm = agent.alarms.raise_("co2_high", console.device, "major", en="CO2 high", zh="CO2")
    row = page.locator(f'tr[data-alarm-id="{alarm.alarm_id}"]')
    await row.wait_for()

    async def finished_first(route: Any) -> None:
        agent.alarms.ack(alarm.alarm_id, "duty-office", origin="mqtt request_id=plat-9")
        agent.alarms.clear("co2_high", console.device)
        await route.continue_()

    await page.route("**/api/alarms/*/ack", finished_first)
    await row.locator("button.ack").click()
    note = page.locator("#action-note", has_text="ended meanwhile")
    await note.wait_for()
    assert (await note.text_content()).endswith("acknowledged by duty-office")
    await row.wait_for(state="detached")
    assert await page.locator("#action-error").text_content() == ""
    assert page.dialogs == []


async def test_a_device_named_like_an_xss_attack_shows_as_text(
    page: Any, console: Console, tmp_path: Path
) -> None:
    await log_in(page, console)
    await page.wait_for_url(console.url)
    await page.click("button.tab[data-tab=devices]")
    row = page.locator(f'tr[data-device-id="{console.device}"]')
    await row.locator("td.dev-online").wait_for()  # read from the simulated sensor
    assert await row.locator("td.name").text_content() == XSS
    assert await page.locator("#devices img").count() == 0
    frames = await row.locator("td").nth(8).text_content()
    assert ">>" in frames  # the Modbus driver keeps its last raw frames
    assert "co2 = " in await row.locator("td").nth(7).text_content()
    assert " ppm" in await row.locator("td").nth(7).text_content()  # the profile's unit
    assert page.dialogs == []
    await page.screenshot(path=str(save_screenshot_path(tmp_path, "console-devices-en.png")))


async def test_the_pages_in_chinese(page: Any, console: Console, tmp_path: Path) -> None:
    console.agent.alarms.raise_(
        "co2_high", console.device, "major", en="CO2 high", zh="二氧化碳过高"
    )
    await log_in(page, console)
    await page.wait_for_url(console.url)
    await page.select_option("#lang", "zh")
    await page.locator("button.tab[data-tab=alarms]", has_text="告警").wait_for()
    await page.locator("#alarms td", has_text="未确认").wait_for()
    await page.click("button.tab[data-tab=health]")
    await page.locator("#health dt", has_text="缓存消息数").wait_for()
    dropped = page.locator("#health dt", has_text="丢弃").locator("xpath=following-sibling::dd[1]")
    assert await dropped.text_content() == "0"
    shot = save_screenshot_path(tmp_path, "console-health-zh.png")
    await page.screenshot(path=str(shot), full_page=True)
    await page.click("button.tab[data-tab=alarms]")
    await page.screenshot(path=str(save_screenshot_path(tmp_path, "console-alarms-zh.png")))
    assert shot.stat().st_size > 5000
    await page.click("button.tab[data-tab=audit]")
    await page.locator("#audit td.action", has_text="告警产生").wait_for()
    await page.screenshot(path=str(save_screenshot_path(tmp_path, "console-audit-zh.png")))
    await page.click("button.tab[data-tab=oos]")
    await page.locator("#oos-take", has_text="停用").wait_for()
    await page.locator("#all-in-service", has_text="所有规则均在服务中").wait_for()
    # the choice is the user's, kept across a reload
    await page.reload()
    await page.locator("button.tab[data-tab=devices]", has_text="设备").wait_for()


async def test_the_config_check_shows_the_files_problems_as_text(
    page: Any, console: Console
) -> None:
    await log_in(page, console)
    await page.wait_for_url(console.url)
    await page.click("button.tab[data-tab=check]")
    await page.locator("#check-result.ok").wait_for()  # the file the agent runs is valid
    # the installer edits the file: a key that is markup, and a device id that breaks a rule
    path = console.agent.config_path
    cfg = yaml.safe_load(path.read_text())
    cfg["site"][XSS] = 1
    cfg["devices"][0]["id"] = "Bad Id"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    await page.click("#run-check")
    await page.locator("#check-result.bad").wait_for()
    lines = await page.locator("#check-lines li").all_text_contents()
    assert any(XSS in line for line in lines)
    assert any("devices[0].id" in line for line in lines)
    assert await page.locator("#check-lines img").count() == 0
    assert page.dialogs == []


async def test_a_rule_out_of_service_on_the_console_leaves_view_and_the_audit_says_who(
    page: Any, console: Console, mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    """A guard takes co2_high on one room out of service from its alarm's row: the alarm
    leaves the alarms page and the broker's retained topic; back in service, the
    condition (still true) is a new alarm; the audit page lists both actions with the
    user, newest first, and a platform user named like markup as text."""
    agent = console.agent
    assert agent.rules is not None
    assert "co2_high" in {r.id for r in agent.rules.rules}
    await log_in(page, console)
    await page.wait_for_url(console.url)
    await page.locator("#stream-state.ok").wait_for()
    alarm = agent.alarms.raise_("co2_high", console.device, "major", en="CO2 high", zh="CO2")
    topic = f"{console.root}/alarms/active/{alarm.alarm_id}"
    row = page.locator(f'tr[data-alarm-id="{alarm.alarm_id}"]')
    await row.wait_for()

    # the platform acknowledges just before the guard's click: the page shows the
    # converged state and who was first, not an error
    async def platform_first(route: Any) -> None:
        agent.alarms.ack(alarm.alarm_id, XSS, origin="mqtt request_id=plat-1")
        await route.continue_()

    await page.route("**/api/alarms/*/ack", platform_first)
    await row.locator("button.ack").click()
    await page.locator("#action-note", has_text="Already acknowledged by").wait_for()
    assert await page.locator("#action-note").text_content() == f"Already acknowledged by {XSS}"
    assert await page.locator("#action-error").text_content() == ""
    await row.locator("td.state", has_text="active, acknowledged").wait_for()

    with mqtt_subscriber(mqtt_broker, topic) as sub:
        await row.locator("button.oos").click()  # the form, filled from the row
        assert await page.locator("#oos-rule").input_value() == "co2_high"
        assert await page.locator("#oos-device").input_value() == console.device
        await page.click("#oos-take")
        target = page.locator(f'#out-of-view tr[data-target="co2_high@{console.device}"]')
        await target.locator("td.by", has_text="guard").wait_for()
        assert await target.locator("td.reason").text_content() == "out of service"
        await row.wait_for(state="detached")  # no longer on the alarms page
        assert await page.locator("#action-note").text_content() == ""  # about it: gone too
        await asyncio.to_thread(sub.wait_for, lambda m: m.payload == b"", 15)
    # a subscriber that comes now gets no retained alarm: the status (retained, asked for
    # after it in the same SUBSCRIBE) arrives with nothing before it
    with mqtt_subscriber(mqtt_broker, [topic, f"{console.root}/status"]) as fresh:
        await asyncio.to_thread(fresh.wait_for, lambda m: m.topic.endswith("/status"), 15)
        assert [m.topic for m in fresh.messages if m.topic == topic] == []
    await page.click("button.tab[data-tab=alarms]")
    note = page.locator("#out-of-view-note")
    await note.wait_for()
    assert f"co2_high@{console.device} (out of service)" in await note.text_content()
    await page.screenshot(path=str(save_screenshot_path(tmp_path, "console-out-of-view-en.png")))

    await page.click("button.tab[data-tab=oos]")
    await target.locator("button.in-service").click()
    await target.wait_for(state="detached")
    await page.locator("#all-in-service").wait_for()
    await page.click("button.tab[data-tab=alarms]")
    back = page.locator("#alarms tbody tr", has_text="co2_high")
    await back.wait_for()  # still true: raised anew, a new alarm
    assert await back.get_attribute("data-alarm-id") != alarm.alarm_id
    assert await note.is_hidden()

    await page.click("button.tab[data-tab=audit]")
    actions = page.locator("#audit tbody td.action")
    await page.locator("#audit td.action", has_text="returned to service").wait_for()
    rows = await page.locator("#audit tbody tr").all()
    seen = [
        (
            await r.locator("td.action").get_attribute("title"),
            await r.locator("td.by").text_content(),
        )
        for r in rows
    ]
    service = [a for a, by in seen if by == "guard" and a in ("out_of_service", "in_service")]
    assert service == ["in_service", "out_of_service"]  # newest first
    assert ("ack", XSS) in seen  # the platform user's name, shown as text
    origins = await page.locator("#audit tbody td.origin").all_text_contents()
    assert "console 127.0.0.1" in origins
    assert await page.locator("#audit img").count() == 0
    hidden = page.locator("#audit tbody tr", has=page.locator('td.action[title="hidden"]'))
    assert await hidden.locator("td").nth(6).text_content() == "out of service"  # why
    # live: an entry written while the page is open comes without a reload
    new_id = str(await back.get_attribute("data-alarm-id"))
    agent.alarms.ack(new_id, "duty-office", origin="mqtt request_id=plat-2")
    await page.locator("#audit tbody tr:first-child td.by", has_text="duty-office").wait_for()
    assert await actions.count() == len(rows) + 1
    await page.screenshot(path=str(save_screenshot_path(tmp_path, "console-audit-en.png")))

    # one alarm's history, from its row
    await page.click("button.tab[data-tab=alarms]")
    await back.locator("button.history").click()
    await page.locator("#audit-filter", has_text=new_id).wait_for()
    alarm_ids = await page.locator("#audit tbody td.alarm").all_text_contents()
    assert alarm_ids
    assert set(alarm_ids) == {new_id}

    # a shelved alarm says until when; one the uplink calls suppressed is not active
    await page.click("button.tab[data-tab=alarms]")
    await back.locator("button.shelve").click()
    until = back.locator("td.state small.until")
    await until.wait_for()
    shelved = agent.alarms.alarms[new_id]
    assert shelved.shelved_until_wall is not None
    from edge_agent.envelope import iso_ms

    assert await until.get_attribute("title") == iso_ms(shelved.shelved_until_wall)
    data = dict(shelved.data(), state="active_unacked", suppressed="schedule")
    agent.console.stream.on_transition(data)
    await back.wait_for(state="detached")
    assert page.dialogs == []
