"""Simulated campus devices that speak the real wire protocols (for demos, tests, benchmarks):
Modbus classrooms and meters, digital-input modules (door contacts), WG short-packet door
controllers (UDP), ZKTeco PUSH terminals (HTTP clients of the agent).

Written from the wire format and the devices' datasheets, never from the agent's drivers:
nothing here imports ``drivers`` or ``edge_agent``. Profiles (register maps as data) are shared.

Entry points: :class:`CampusSim`, :class:`DiModuleSim`, :class:`WgSim` and :class:`ZkTerminal`
(Python), ``python -m edge_agent.simulators campus``, ``... wg`` and ``... zkteco`` (CLI).
"""

from .campus import CampusSim
from .doors import DiModuleSim
from .faults import FAULT_KINDS, Fault, FaultBoard, ScheduledFault, load_schedule, parse_schedule
from .timetable import Phase, SimClock, Timetable
from .wg import WgController, WgSim
from .zkteco import ZkTerminal

__all__ = [
    "FAULT_KINDS",
    "CampusSim",
    "DiModuleSim",
    "Fault",
    "FaultBoard",
    "Phase",
    "ScheduledFault",
    "SimClock",
    "Timetable",
    "WgController",
    "WgSim",
    "ZkTerminal",
    "load_schedule",
    "parse_schedule",
]
