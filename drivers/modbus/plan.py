"""Read coalescing: as few requests as possible for a profile's reported points.

Every request costs a round trip (at 9600 baud about 40 ms with the device's
turnaround), while every register read in a gap costs only two bytes (~2.3 ms).
So neighbouring points of one function code are merged into one request while
the gap between them stays within ``max_gap`` registers and the whole request
within ``max_registers`` (125 is the Modbus limit for fc 3/4). For coils and
discrete inputs (fc 1/2) counts are in bits: the cap is ``max_bits`` (2000, the
Modbus limit) and the allowed gap is ``max_gap * 16`` bits, the same bytes on the
wire as ``max_gap`` registers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_agent.drivers.modbus.profile import Point

#: Modbus limits per request (Modbus Application Protocol V1.1b3, 6.1-6.4)
MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of function code ``fc`` from ``start``."""

    fc: int
    start: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        """Last address read (inclusive)."""
        return self.start + self.count - 1


def plan_reads(
    points: Iterable[Point],
    *,
    max_registers: int = MAX_REGISTERS,
    max_gap: int = 16,
    max_bits: int = MAX_BITS,
) -> list[ReadRequest]:
    """Group ``points`` into requests, ordered by function code, then address.

    ``max_gap`` is the largest number of unused registers read between two points
    (0 = only adjacent or overlapping points share a request). Raises
    :class:`ValueError` when a single point is wider than ``max_registers``.
    """
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_REGISTERS}, not {max_registers}")
    if not 1 <= max_bits <= MAX_BITS:
        raise ValueError(f"max_bits must be 1..{MAX_BITS}, not {max_bits}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, not {max_gap}")

    requests: list[ReadRequest] = []
    by_fc: dict[int, list[Point]] = {}
    for point in points:
        by_fc.setdefault(point.fc, []).append(point)

    for fc in sorted(by_fc):
        bits = fc in (1, 2)
        cap = max_bits if bits else max_registers
        gap_limit = max_gap * 16 if bits else max_gap
        group: list[Point] = []
        start = end = 0
        for point in sorted(by_fc[fc], key=lambda p: (p.address, p.end)):
            if point.count > cap:
                raise ValueError(
                    f"point '{point.name}' needs {point.count} registers but max_registers "
                    f"is {cap}",
                )
            if group:
                gap = point.address - end - 1
                new_end = max(end, point.end)
                if gap <= gap_limit and new_end - start + 1 <= cap:
                    group.append(point)
                    end = new_end
                    continue
                requests.append(ReadRequest(fc, start, end - start + 1, tuple(group)))
            group = [point]
            start, end = point.address, point.end
        if group:
            requests.append(ReadRequest(fc, start, end - start + 1, tuple(group)))
    return requests


def split_request(request: ReadRequest) -> list[ReadRequest]:
    """``request`` as two requests, each holding half of its points; [] for a request
    of a single point (or of points at the very same registers), which cannot be split.

    Used when a device refuses a coalesced read (exception 2 or 3: a reserved register
    inside the block): halving again and again finds the points it serves.
    """
    spans = sorted({(p.address, p.end) for p in request.points})
    if len(spans) < 2:
        return []
    cut = spans[len(spans) // 2][0]
    halves = (
        [p for p in request.points if p.address < cut],
        [p for p in request.points if p.address >= cut],
    )
    out = []
    for points in halves:
        start = min(p.address for p in points)
        end = max(p.end for p in points)
        out.append(ReadRequest(request.fc, start, end - start + 1, tuple(points)))
    return out
