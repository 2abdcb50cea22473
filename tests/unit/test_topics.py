"""edge_agent.topics against the uplink contract's topic table, written out literally.

The literal strings below are copied from CONTRACT.md (``ROOT`` replaced), so they check
topics.py independently: a typo there, or a level renamed in one place, fails here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_agent.topics import RootPattern, Topics, classify, root_of

ROOT = "campus/school-a/gw1"
T = Topics.of("campus", "school-a", "gw1")

#: (what topics.py builds, the contract's topic, the kind and id the tail parser reads back)
CONTRACT = [
    (T.status, "campus/school-a/gw1/status", ("status", None)),
    (T.health, "campus/school-a/gw1/health", ("health", None)),
    (T.device_meta("b1-r101-air"), "campus/school-a/gw1/devices/b1-r101-air/meta",
     ("meta", "b1-r101-air")),
    (T.device_state("b1-r101-air"), "campus/school-a/gw1/devices/b1-r101-air/state",
     ("state", "b1-r101-air")),
    (T.telemetry("b1-r101-air"), "campus/school-a/gw1/telemetry/b1-r101-air",
     ("telemetry", "b1-r101-air")),
    (T.events("b3-door-1"), "campus/school-a/gw1/events/b3-door-1", ("event", "b3-door-1")),
    (T.alarms, "campus/school-a/gw1/alarms", ("alarm", None)),
    (T.alarm_active("a-17"), "campus/school-a/gw1/alarms/active/a-17", ("alarm_active", "a-17")),
    (T.snapshot("cam-1", "s-9"), "campus/school-a/gw1/snapshots/cam-1/s-9",
     ("snapshot", "cam-1")),
    (T.cmd("alarm_ack"), "campus/school-a/gw1/cmd/alarm_ack", ("cmd", "alarm_ack")),
    (T.cmd_result("req-1"), "campus/school-a/gw1/cmd_result/req-1", ("cmd_result", "req-1")),
]  # fmt: skip


def test_root_is_prefix_site_gateway() -> None:
    assert root_of("campus", "school-a", "gw1") == ROOT
    assert T.root == ROOT
    assert Topics.of("edu", "s", "g").status == "edu/s/g/status"


@pytest.mark.parametrize(("built", "contract", "parsed"), CONTRACT, ids=[c[1] for c in CONTRACT])
def test_every_contract_topic_is_built_and_read_back(
    built: str, contract: str, parsed: tuple[str, str | None]
) -> None:
    assert built == contract
    split = RootPattern("campus/+/+").split(contract)
    assert split is not None
    assert split[0] == ROOT
    assert classify(split[1]) == parsed


def test_commands_subscription_prefix_and_results() -> None:
    assert T.cmd_subscription == "campus/school-a/gw1/cmd/+"
    assert T.cmd_prefix == "campus/school-a/gw1/cmd/"
    assert T.command_of("campus/school-a/gw1/cmd/device_write") == "device_write"
    assert T.command_of("campus/school-a/gw1/cmd_result/x") is None
    assert T.command_of("campus/school-b/gw1/cmd/agent_ping") is None
    assert T.cmd_result_prefix == "campus/school-a/gw1/cmd_result/"
    # a request without a usable request_id is refused on ROOT/cmd_result/invalid
    assert T.cmd_result(None) == "campus/school-a/gw1/cmd_result/invalid"
    assert T.everything == "campus/school-a/gw1/#"


@pytest.mark.parametrize(
    "rel",
    [["status", "x"], ["devices", "d"], ["devices", "d", "other"], ["alarms", "x"],
     ["telemetry"], ["telemetry", "d", "x"], ["cmd_result"], ["nope"]],
)  # fmt: skip
def test_topics_outside_the_contract_are_unknown(rel: list[str]) -> None:
    assert classify(rel) == ("unknown", None)


def test_root_pattern_matches_only_its_gateway() -> None:
    exact = RootPattern(ROOT)
    assert exact.split(T.status) == (ROOT, ["status"])
    assert exact.split("campus/school-b/gw1/status") is None
    assert exact.split(ROOT) is None  # ROOT itself is no topic under it
    with pytest.raises(ValueError, match="no '#'"):
        RootPattern("campus/#")


def test_topics_imports_nothing_of_the_agent() -> None:
    # The runtime and the tools both use it: it must not drag either in.
    code = (
        "import sys, edge_agent.topics; "
        "print(sorted(m for m in sys.modules if m.startswith('edge_agent') "
        "and m not in ('edge_agent', 'edge_agent.topics')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
