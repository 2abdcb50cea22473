"""A Hikvision camera's ``alertStream`` notifications as contract events (pure, standard
library only). The stream itself is read by ``drivers/hikvision/alerts.py``
(:class:`~edge_agent.drivers.hikvision.alerts.AlertStream`, the one multipart parser of the
ISAPI kinds); a camera alarm arrives there as an
:class:`~edge_agent.drivers.hikvision.events.Other` (``eventType``, ``eventState``,
``channelID``, the ``regionID``\\ s of ``DetectionRegionList``).

=================  =====================================  ========================
``eventType``      contract                                edges
=================  =====================================  ========================
``VMD``            ``motion`` (``zone``, ``active``)        held
``fielddetection`` ``motion``, one per region               held
``linedetection``  ``line_crossed`` (``line``,              one-shot per region
                   ``direction``)
``shelteralarm``   ``camera_tamper`` ``reason: covered``     held
``tamperdetection``  ``camera_tamper`` ``reason: covered``   held
``defocus``          ``camera_tamper`` ``reason: defocused`` held
``scenechangedetection`` ``camera_tamper`` ``scene_change``  held
``videoloss``      inactive: the idle heartbeat (never an event)
=================  =====================================  ========================

Video tampering is ``shelteralarm`` on older firmwares and ``tamperdetection`` on newer ones
(the ISAPI event types of "Video Tampering"); ``defocus`` and ``scenechangedetection`` are
the smart events of cameras that have them, named as the pyHik client's event table names
them. No capture of a camera's own stream is in ``../shared/fixtures``: these names come
from the ISAPI guide and that client, not from a recorded device.

*Held*: the camera posts an ongoing alarm again every second or so (``activePostCount``
rising) and, on many firmwares, never posts its end (why clients of the stream end a state
on a timeout): the state ends at an
``inactive`` post or ``hold_s`` after the last ``active`` one
(:class:`~edge_agent.drivers.camera_edges.Edges`). A line crossing is one event however many
times the camera repeats it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final

#: event types this module maps (lower case: firmwares differ in case, ``VMD``/``vmd``)
#: camera_tamper reasons of the tampering event types
TAMPER: Final[Mapping[str, str]] = {
    "shelteralarm": "covered",
    "tamperdetection": "covered",
    "defocus": "defocused",
    "scenechangedetection": "scene_change",
}
MAPPED: Final = frozenset({"vmd", "fielddetection", "linedetection", *TAMPER})


@dataclass(frozen=True, slots=True)
class Line:
    """What the site calls a line-crossing rule of a channel, and which way it counts."""

    name: str
    direction: str | None = None


@dataclass(frozen=True, slots=True)
class Alarm:
    """One state a notification says holds (or ended): its edge key, contract type, data."""

    key: Hashable
    event_type: str
    data: dict[str, Any]
    one_shot: bool = False


#: zone names by ``(channel, region)``; region None is the channel's whole-picture VMD
Zones = Mapping[tuple[int, int | None], str]
#: line rules by ``(channel, region)``
Lines = Mapping[tuple[int, int], Line]


def alarms(
    event_type: str,
    channel: int | None,
    regions: tuple[int, ...],
    zones: Zones,
    lines: Lines,
) -> list[Alarm] | None:
    """The states one notification names (one per region for line and field detection);
    None for an event type this module does not map."""
    kind = event_type.lower()
    if kind not in MAPPED:
        return None
    ch = channel or 1
    base: dict[str, Any] = {"channel": ch, "code": event_type}
    if kind == "vmd":
        zone = zones.get((ch, None), f"ch{ch}")
        return [Alarm(("motion", ch, None), "motion", base | {"zone": zone})]
    if kind in TAMPER:
        reason = TAMPER[kind]
        return [Alarm(("tamper", ch, reason), "camera_tamper", base | {"reason": reason})]
    out: list[Alarm] = []
    for region in regions or (None,):
        if kind == "fielddetection":
            named = zones.get((ch, region)) if region is not None else None
            if named is None:
                named = f"ch{ch}-field" if region is None else f"ch{ch}-field{region}"
            data = base | {"zone": named, "region": region}
            out.append(Alarm(("field", ch, region), "motion", data))
        else:
            rule = lines.get((ch, region)) if region is not None else None
            if rule is not None:
                name = rule.name
            else:
                name = f"ch{ch}-line" if region is None else f"ch{ch}-line{region}"
            data = base | {
                "line": name,
                "direction": rule.direction if rule is not None else None,
                "region": region,
            }
            out.append(Alarm(("line", ch, region), "line_crossed", data, one_shot=True))
    return out


def ended_keys(
    active: list[Hashable], event_type: str, channel: int | None, regions: tuple[int, ...]
) -> list[Hashable]:
    """The active keys an ``inactive`` notification ends: those of its regions, or every
    region of its type and channel when it names none."""
    kind = event_type.lower()
    ch = channel or 1
    if kind in TAMPER:
        wanted: tuple[Any, ...] = ("tamper", ch, TAMPER[kind])
        return [k for k in active if k == wanted]
    prefix = {"vmd": "motion", "fielddetection": "field", "linedetection": "line"}.get(kind)
    if prefix is None:
        return []
    out: list[Hashable] = []
    for key in active:
        if not (isinstance(key, tuple) and key[:2] == (prefix, ch)):
            continue
        if regions and len(key) > 2 and key[2] not in regions and prefix in ("field", "line"):
            continue
        out.append(key)
    return out
