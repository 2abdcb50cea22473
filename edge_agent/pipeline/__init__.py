"""The processing pipeline between the drivers and the outbox (issue 8, item 3).

::

    poll loop (Emit) ─┐
                      ├─► pseudonym ─► clock gate ─► door logic ─► sink ─► taps
    push link ────────┘   card → h:…    hold until     derived       outbox   rules,
      put / commit                      NTP            events                console

The supervisor builds the list once from the config (:func:`build_pipeline`); the
poll loop's emitter and every push device's link go through it. The contract is in
:mod:`edge_agent.pipeline.base`, the taps in :mod:`edge_agent.pipeline.taps`. This
package never imports MQTT, the drivers or the tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_agent.clock import Clock
from edge_agent.pipeline.base import Message, Sink, Stage
from edge_agent.pipeline.clockgate import ClockGate
from edge_agent.pipeline.doors import DoorLogic, StateStore
from edge_agent.pipeline.pseudonym import Pseudonymiser
from edge_agent.pipeline.runner import Pipeline
from edge_agent.pipeline.taps import QueueTap, Tap, Taps

if TYPE_CHECKING:
    from edge_agent.config.loader import AgentConfigBase

__all__ = [
    "ClockGate",
    "DoorLogic",
    "Message",
    "Pipeline",
    "Pseudonymiser",
    "QueueTap",
    "Sink",
    "Stage",
    "Tap",
    "Taps",
    "build_pipeline",
]


def build_pipeline(
    cfg: AgentConfigBase, clock: Clock, sink: Sink, *, extra: Sequence[Stage] = ()
) -> Pipeline:
    """The agent's pipeline: the pseudonymiser first (a raw card number is never held
    in memory nor seen by a later stage, a tap included), then the clock gate (later
    stages see corrected timestamps), then ``extra`` stages, then the door logic when
    ``doors:`` is configured (it keeps its state in the sink when the sink can: the
    outbox's ``device_state``)."""
    secret = cfg.site.pseudonym_secret
    stages: list[Stage] = [
        Pseudonymiser(secret.encode("utf-8") if secret else None, raw=cfg.site.raw_card_ids),
        ClockGate(clock, cfg.clock.hold_max_s),
        *extra,
    ]
    doors = getattr(cfg, "doors", None)
    if doors is not None and (doors.doors or doors.inputs):
        stages.append(DoorLogic(doors, clock, sink if isinstance(sink, StateStore) else None))
    return Pipeline(stages, sink)
