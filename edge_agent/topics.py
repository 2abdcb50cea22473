"""Every MQTT topic of the uplink contract, spelled once (shared CONTRACT.md, ``docs/mqtt.md``).

``ROOT`` is ``{topic_prefix}/{site_id}/{gateway_id}``::

    t = Topics.of("campus", "school-a", "gw1")
    t.telemetry("b1-r101-air")      campus/school-a/gw1/telemetry/b1-r101-air
    t.cmd_subscription              campus/school-a/gw1/cmd/+
    classify(["devices", "b1-r101-air", "state"])   ("state", "b1-r101-air")

The agent builds topics with :class:`Topics`; ``edge-agent tail`` reads them back with
:class:`RootPattern` and :func:`classify`. This module imports nothing of the agent, so the
tools and the runtime share it without pulling each other in.
"""

from __future__ import annotations

#: ``topic_prefix`` when the config does not set one
DEFAULT_PREFIX = "campus"
#: the ``cmd_result`` level of a refusal whose request id is missing or not allowed
INVALID_REQUEST_ID = "invalid"


def root_of(prefix: str, site_id: str, gateway_id: str) -> str:
    """``ROOT``: ``{topic_prefix}/{site_id}/{gateway_id}``."""
    return f"{prefix}/{site_id}/{gateway_id}"


class Topics:
    """The contract's topics under one ``root`` (``prefix/site/gateway``)."""

    __slots__ = ("alarms", "cmd_prefix", "cmd_result_prefix", "health", "root", "status")

    def __init__(self, root: str) -> None:
        self.root = root
        #: ``ROOT/status`` (retained; the last will says offline)
        self.status = f"{root}/status"
        #: ``ROOT/health`` (retained)
        self.health = f"{root}/health"
        #: ``ROOT/alarms``: every alarm state transition
        self.alarms = f"{root}/alarms"
        #: ``ROOT/cmd/``: a command's name follows
        self.cmd_prefix = f"{root}/cmd/"
        #: ``ROOT/cmd_result/``: a request id (or an MQTT 5 response topic's levels) follows
        self.cmd_result_prefix = f"{root}/cmd_result/"

    @classmethod
    def of(cls, prefix: str, site_id: str, gateway_id: str) -> Topics:
        """The topics of gateway ``gateway_id`` at ``site_id`` under ``prefix``."""
        return cls(root_of(prefix, site_id, gateway_id))

    def telemetry(self, device_id: str) -> str:
        return f"{self.root}/telemetry/{device_id}"

    def events(self, device_id: str) -> str:
        return f"{self.root}/events/{device_id}"

    def device_state(self, device_id: str) -> str:
        """``ROOT/devices/{id}/state`` (retained)."""
        return f"{self.root}/devices/{device_id}/state"

    def device_meta(self, device_id: str) -> str:
        """``ROOT/devices/{id}/meta`` (retained)."""
        return f"{self.root}/devices/{device_id}/meta"

    def alarm_active(self, alarm_id: str) -> str:
        """``ROOT/alarms/active/{alarm_id}`` (retained while active or unacknowledged)."""
        return f"{self.root}/alarms/active/{alarm_id}"

    def snapshot(self, camera_id: str, snapshot_id: str) -> str:
        return f"{self.root}/snapshots/{camera_id}/{snapshot_id}"

    def cmd(self, command: str) -> str:
        return self.cmd_prefix + command

    @property
    def cmd_subscription(self) -> str:
        """``ROOT/cmd/+``: every command, one level each (no name holds a ``/``)."""
        return self.cmd_prefix + "+"

    def command_of(self, topic: str) -> str | None:
        """The command named by ``topic`` (``ROOT/cmd/{command}``), None for another topic."""
        if not topic.startswith(self.cmd_prefix):
            return None
        return topic[len(self.cmd_prefix) :]

    def cmd_result(self, request_id: str | None) -> str:
        """Where the answer to ``request_id`` goes; ``ROOT/cmd_result/invalid`` without one."""
        return self.cmd_result_prefix + (request_id or INVALID_REQUEST_ID)

    @property
    def everything(self) -> str:
        """``ROOT/#``: every topic of this gateway."""
        return f"{self.root}/#"


class RootPattern:
    """``ROOT`` as given on the command line, possibly with ``+`` wildcards."""

    def __init__(self, root: str) -> None:
        root = root.strip("/")
        parts = root.split("/") if root else []
        if not parts or any(p == "" or p == "#" or ("+" in p and p != "+") for p in parts):
            raise ValueError(
                f"root must be like 'campus/site/gw' or 'campus/+/+' (no '#'): {root!r}"
            )
        self.text = root
        self.parts = parts
        self.wildcard = "+" in parts

    @property
    def subscription(self) -> str:
        return f"{self.text}/#"

    def split(self, topic: str) -> tuple[str, list[str]] | None:
        """``(actual root, remaining levels)`` or None when the topic is not under ROOT."""
        levels = topic.split("/")
        n = len(self.parts)
        if len(levels) <= n:
            return None
        for pat, lvl in zip(self.parts, levels, strict=False):
            if pat != "+" and pat != lvl:
                return None
        return "/".join(levels[:n]), levels[n:]


def classify(rel: list[str]) -> tuple[str, str | None]:
    """Map the levels below ROOT to ``(kind, id)``; kind ``unknown`` when not in the contract.

    Kinds: ``status``, ``health``, ``meta`` and ``state`` (id: the device), ``telemetry``
    and ``event`` (the device), ``alarm``, ``alarm_active`` (the alarm id), ``snapshot``
    (the camera), ``cmd_result`` (the request id), ``cmd`` (the command).
    """
    n = len(rel)
    head = rel[0]
    if n == 1 and head in ("status", "health"):
        return head, None
    if head == "devices" and n == 3 and rel[2] in ("meta", "state"):
        return rel[2], rel[1]
    if head == "telemetry" and n == 2:
        return "telemetry", rel[1]
    if head == "events" and n == 2:
        return "event", rel[1]
    if head == "alarms" and n == 1:
        return "alarm", None
    if head == "alarms" and n == 3 and rel[1] == "active":
        return "alarm_active", rel[2]
    if head == "snapshots" and n >= 2:
        return "snapshot", rel[1]
    if head == "cmd_result" and n == 2:
        return "cmd_result", rel[1]
    if head == "cmd" and n >= 2:
        return "cmd", "/".join(rel[1:])
    return "unknown", None
