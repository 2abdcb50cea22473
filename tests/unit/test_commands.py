"""Command routing without a broker: signing, the replay memory, the log throttle.

The MQTT behaviour (answers, topics, queues, audit events) is tested against a real
mosquitto in tests/integration/test_commands_mqtt.py; here are the parts whose
failure would need hours or a clock step to show there.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from edge_agent.commands import CommandRouter, Throttle
from edge_agent.signing import SignatureError, canonical, parse_ts, sign, verify

REPO = Path(__file__).resolve().parents[2]
KEY = "k3y"


def _doc() -> str:
    return (REPO / "docs" / "mqtt.md").read_text(encoding="utf-8")


def test_the_worked_example_in_the_docs_is_what_the_agent_accepts() -> None:
    doc = _doc()
    code = next(b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "sign_command" in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/mqtt.md", "exec"), {})
    signed = json.loads(out.getvalue())
    printed = re.search(r"and `sig` is `([0-9a-f]{64})`", doc)
    assert printed is not None
    assert signed["sig"] == printed.group(1)
    assert sign("example-key-change-me", "device_write", signed) == signed["sig"]
    block = re.search(r"Its canonical string is\n\n```text\n(.*?)\n```", doc, re.S)
    assert block is not None
    assert canonical("device_write", signed).decode() == block.group(1)
    when = parse_ts(signed["sig_ts"])
    assert verify("example-key-change-me", "device_write", signed, when + 59) == when


@pytest.mark.parametrize("offset", [-61.0, 61.0, 3600.0])
def test_a_signature_outside_the_window_is_refused(offset: float) -> None:
    req = {"request_id": "r1", "sig_ts": "2026-11-29T21:00:00.000Z", "device": "d", "value": 1}
    req["sig"] = sign(KEY, "device_write", req)
    with pytest.raises(SignatureError, match="replay"):
        verify(KEY, "device_write", req, parse_ts(req["sig_ts"]) + offset)


def test_the_signature_covers_command_id_time_and_body() -> None:
    req = {"request_id": "r1", "sig_ts": "2026-11-29T21:00:00.000Z", "nested": {"b": 1, "a": 2}}
    req["sig"] = sign(KEY, "device_write", req)
    now = parse_ts(req["sig_ts"])
    verify(KEY, "device_write", {**req, "nested": {"a": 2, "b": 1}}, now)  # key order is free
    for changed in (
        {"request_id": "r2"},
        {"sig_ts": "2026-11-29T21:00:00.001Z"},
        {"nested": {"a": 2, "b": 2}},
        {"extra": True},
    ):
        with pytest.raises(SignatureError, match="bad signature"):
            verify(KEY, "device_write", {**req, **changed}, now)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(KEY, "door_open", req, now)


def test_throttle_says_it_once_then_sums_up() -> None:
    now = [0.0]
    t = Throttle(60.0, clock=lambda: now[0])
    assert t.hit("x") == 0
    assert [t.hit("x") for _ in range(5)] == [None] * 5
    now[0] = 61.0
    assert t.hit("x") == 5
    assert t.hit("y") == 0


async def test_signed_request_ids_are_not_forgotten_while_a_replay_could_pass() -> None:
    """With the memory full of signed ids that still guard against replays, a new
    request is refused busy rather than an old id forgotten (which would let its
    captured request run twice)."""
    answers: list[tuple[str, dict[str, Any]]] = []
    executed: list[str] = []
    wall, mono = [parse_ts("2026-11-29T21:00:00.000Z")], [1000.0]
    router = CommandRouter(
        lambda topic, answer, _c: answers.append((topic, answer)),
        root="campus/s/gw1",
        key=KEY,
        recent_max=2,
        wall=lambda: wall[0],
        mono=lambda: mono[0],
    )

    async def ack(args: dict[str, Any]) -> dict[str, Any]:
        executed.append(args["request_id"])
        return {}

    router.register("alarm_ack", ack)

    def signed(rid: str) -> bytes:
        req = {"request_id": rid, "alarm_id": "a", "by": "x", "sig_ts": "2026-11-29T21:00:00.000Z"}
        req["sig"] = sign(KEY, "alarm_ack", req)
        return json.dumps(req).encode()

    g1 = signed("g1")
    for rid in ("g1", "g2", "g3"):
        await router.handle("alarm_ack", signed(rid), None, None)
    assert executed == ["g1", "g2"]
    assert "busy" in answers[-1][1]["error"]
    await router.handle("alarm_ack", g1, None, None)  # a replay, 1 s later
    assert executed == ["g1", "g2"]
    assert answers[-1] == answers[0]
    mono[0] += 200  # past the window: now g1 may be forgotten; its sig_ts is stale anyway
    wall[0] += 200
    await router.handle("alarm_ack", g1, None, None)
    assert executed == ["g1", "g2"]
    assert "replay" in answers[-1][1]["error"]


async def test_a_flood_of_bad_requests_is_one_log_line_then_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: list[dict[str, Any]] = []
    router = CommandRouter(lambda _t, a, _c: answers.append(a), root="campus/s/gw1", key=KEY)

    async def ack(args: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("a forged request was executed")

    router.register("alarm_ack", ack)
    caplog.set_level(logging.INFO, logger="edge_agent.commands")
    for i in range(200):
        forged = {"request_id": f"f{i}", "alarm_id": f"a{i}", "by": "x", "sig": "0" * 64}
        await router.handle(
            "alarm_ack", json.dumps({**forged, "sig_ts": "bad"}).encode(), None, None
        )
        await router.handle(f"cmd{i}", json.dumps({"request_id": f"u{i}"}).encode(), None, None)
    assert len(answers) == 400
    assert all(a["ok"] is False for a in answers)
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    # one WARNING for the unauthorised, one INFO per kind of refusal; not 400 lines
    assert len(lines) <= 4, [r.getMessage() for r in lines]
    assert router.stats.unauthorised == 200


@pytest.mark.parametrize(
    ("response_topic", "honoured"),
    [
        ("campus/s/gw1/cmd_result/p1", True),
        ("campus/s/gw1/cmd_result/platform-1/a/b/c", True),
        ("campus/s/gw1/cmd_result/a/b/c/d/e", False),  # more than four levels
        ("campus/s/gw1/cmd_result/", False),
        ("campus/s/gw1/cmd_result/a//b", False),
        ("campus/s/gw1/cmd_result/#", False),
        ("campus/s/gw1/cmd_result/a.b", False),  # RabbitMQ would make it a/b
        ("campus/s/gw1/cmd_resultx/p1", False),
        ("campus/s/gw1/cmd/device_write", False),
        ("campus/s/gw2/cmd_result/p1", False),
        ("campus/s/gw1/telemetry/b1-r101-air", False),
    ],
)
def test_response_topics_are_honoured_only_under_cmd_result(
    response_topic: str, honoured: bool
) -> None:
    router = CommandRouter(lambda *_a: None, root="campus/s/gw1")
    expected = response_topic if honoured else "campus/s/gw1/cmd_result/r1"
    assert router.answer_topic("r1", response_topic) == expected
