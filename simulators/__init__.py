"""Simulated campus devices that speak the real Modbus wire protocol (for demos, tests, benchmarks).

Written from the wire format and the devices' datasheets, never from the agent's drivers:
nothing here imports ``drivers`` or ``edge_agent``. Profiles (register maps as data) are shared.

Entry points: :class:`CampusSim` (Python) and ``python -m edge_agent.simulators campus`` (CLI).
"""

from .campus import CampusSim
from .faults import FAULT_KINDS, Fault, FaultBoard, ScheduledFault, load_schedule, parse_schedule
from .timetable import Phase, SimClock, Timetable

__all__ = [
    "FAULT_KINDS",
    "CampusSim",
    "Fault",
    "FaultBoard",
    "Phase",
    "ScheduledFault",
    "SimClock",
    "Timetable",
    "load_schedule",
    "parse_schedule",
]
