"""What a platform subscriber checks in every message: the uplink contract v1.

Written from ``../shared/CONTRACT.md``, not from the agent's code, so a test
that uses it catches the agent drifting from the contract.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ENVELOPE_KEYS = {"v", "msg_id", "epoch", "seq", "ts", "device", "kind", "historical", "data"}
QUALITIES = {"good", "uncertain", "bad"}


def check_envelope(payload: bytes, kind: str, device: str | None = None) -> dict[str, Any]:
    """Parse and check one envelope; return it. Raises AssertionError naming the problem."""
    msg = json.loads(payload)
    assert isinstance(msg, dict), "envelope is not an object"
    missing = ENVELOPE_KEYS - msg.keys()
    assert not missing, f"envelope lacks {sorted(missing)}: {msg}"
    allowed = ENVELOPE_KEYS | {"quality", "type"}
    assert not (msg.keys() - allowed), f"unexpected keys {sorted(msg.keys() - allowed)}"
    assert msg["v"] == 1
    assert isinstance(msg["msg_id"], str)
    assert msg["msg_id"]
    assert isinstance(msg["epoch"], str)
    assert msg["epoch"]
    assert isinstance(msg["seq"], int)
    assert not isinstance(msg["seq"], bool)
    assert msg["seq"] >= 1
    assert TS.match(msg["ts"]), f"ts {msg['ts']!r} is not UTC ISO-8601 with ms and Z"
    assert isinstance(msg["device"], str)
    assert ID.match(msg["device"])
    if device is not None:
        assert msg["device"] == device, f"device {msg['device']} on the topic of {device}"
    assert msg["kind"] == kind
    assert isinstance(msg["historical"], bool)
    assert isinstance(msg["data"], dict)
    if kind == "telemetry":
        assert msg.get("quality") in QUALITIES, f"quality {msg.get('quality')!r}"
        for name, value in msg["data"].items():
            assert re.match(r"^[a-z0-9_]+$", name), f"metric name {name!r}"
            assert value is None or isinstance(value, int | float | bool | str), (name, value)
    if kind == "event":
        assert isinstance(msg.get("type"), str)
    return msg


class SeqTracker:
    """Per epoch: seqs seen, holes, duplicates by msg_id."""

    def __init__(self) -> None:
        self.seqs: dict[str, set[int]] = defaultdict(set)
        self.msg_ids: dict[str, int] = {}
        self.duplicates = 0

    def add(self, msg: dict[str, Any]) -> None:
        if msg["msg_id"] in self.msg_ids:
            assert self.msg_ids[msg["msg_id"]] == msg["seq"], "one msg_id with two seqs"
            self.duplicates += 1
            return
        self.msg_ids[msg["msg_id"]] = msg["seq"]
        assert msg["seq"] not in self.seqs[msg["epoch"]], f"seq {msg['seq']} on two msg_ids"
        self.seqs[msg["epoch"]].add(msg["seq"])

    def holes(self, epoch: str, upto: int | None = None) -> list[int]:
        seen = self.seqs[epoch]
        if not seen:
            return []
        top = upto if upto is not None else max(seen)
        return [s for s in range(min(seen), top + 1) if s not in seen]
