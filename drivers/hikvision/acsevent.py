"""The catch-up: ``POST /ISAPI/AccessControl/AcsEvent?format=json`` searches the terminal's
own log, page by page, for what the agent missed while it (or the network) was down.

A search is one ``searchID`` (any string, the same on every page of one search) with a
``searchResultPosition`` that moves by what each page returned; ``maxResults`` is at most 30 on
a DS-K1T342MWX (santanapedro/ha-hikvision-access, discovery doc), so 30 is the default. The
answer says ``responseStatusStrg``: ``MORE`` (ask for the next page), ``OK`` (this was the last
one) or ``NO MATCH``. Each ``InfoList`` item carries ``major``/``minor``/``time`` (not the
alertStream's ``majorEventType``/``subEventType``/``dateTime``) and ``serialNo``, the record's
sequence number on the terminal: the device cursor the driver commits with the events.

:class:`AcsEventSearch` is the whole conversation without I/O: ``request()`` gives the path
and the JSON body to POST, ``accept(answer)`` reads the answer and moves to the next page.
Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Final

from edge_agent.drivers.hikvision.events import AccessEvent, IsapiError, access_event, format_time

PATH: Final = "/ISAPI/AccessControl/AcsEvent?format=json"
#: the most a DS-K1T342MWX returns per page
MAX_RESULTS: Final = 30
STATUSES: Final = ("MORE", "OK", "NO MATCH")


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One answer of the search."""

    status: str
    #: ``totalMatches``: what the whole search finds (as the terminal counts it now)
    total: int
    #: the records of this page, in the terminal's order
    events: list[AccessEvent]
    #: the largest ``serialNo`` on this page (the cursor after committing it), or None
    last_serial: int | None

    @property
    def more(self) -> bool:
        """Whether another page follows."""
        return self.status == "MORE"


def parse_response(body: bytes, site_tz: tzinfo) -> SearchPage:
    """An AcsEvent search answer as a :class:`SearchPage`. Raises :class:`IsapiError` for a
    body that is not one (an ISAPI ``ResponseStatus`` error names its status)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise IsapiError(f"AcsEvent answer is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise IsapiError("AcsEvent answer is not a JSON object")
    acs = doc.get("AcsEvent")
    if not isinstance(acs, dict):
        if "statusCode" in doc or "subStatusCode" in doc:
            raise IsapiError(
                f"terminal refused the search: statusCode {doc.get('statusCode')}, "
                f"{doc.get('subStatusCode') or doc.get('statusString') or 'no reason'}"
            )
        raise IsapiError("AcsEvent answer has no AcsEvent object")
    status = acs.get("responseStatusStrg")
    if status not in STATUSES:
        raise IsapiError(f"AcsEvent responseStatusStrg {status!r}: one of {STATUSES}")
    items = acs.get("InfoList") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise IsapiError("AcsEvent InfoList is not a list of records")
    events = [access_event(item, site_tz) for item in items]
    count = acs.get("numOfMatches", len(events))
    if count != len(events):
        raise IsapiError(f"AcsEvent numOfMatches {count} but {len(events)} records")
    total = acs.get("totalMatches", len(events))
    serials = [e.serial_no for e in events if e.serial_no is not None]
    return SearchPage(
        status=str(status),
        total=total if isinstance(total, int) else len(events),
        events=events,
        last_serial=max(serials) if serials else None,
    )


@dataclass(slots=True)
class AcsEventSearch:
    """One search, page by page. Records between ``start`` and ``end`` (aware datetimes,
    written in ``device_tz``, the terminal's zone), and where the firmware supports it
    (``AcsEvent`` capability ``beginSerialNo``) from ``begin_serial`` on. ``major``/``minor``
    0 mean every code."""

    search_id: str
    start: datetime
    end: datetime
    device_tz: tzinfo
    begin_serial: int | None = None
    max_results: int = MAX_RESULTS
    major: int = 0
    minor: int = 0
    position: int = 0
    done: bool = False
    pages: list[SearchPage] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.search_id or len(self.search_id) > 64:
            raise ValueError("searchID must be 1 to 64 characters")
        if not 1 <= self.max_results <= 1000:
            raise ValueError(f"maxResults {self.max_results}: 1 to 1000")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("search times must be aware datetimes")
        if self.end < self.start:
            raise ValueError("search end is before its start")

    def request(self) -> tuple[str, dict[str, Any]]:
        """The path and the JSON body of the next page's POST."""
        if self.done:
            raise RuntimeError("the search is complete")
        cond: dict[str, Any] = {
            "searchID": self.search_id,
            "searchResultPosition": self.position,
            "maxResults": self.max_results,
            "major": self.major,
            "minor": self.minor,
            "startTime": format_time(self.start, self.device_tz),
            "endTime": format_time(self.end, self.device_tz),
        }
        if self.begin_serial is not None:
            cond["beginSerialNo"] = self.begin_serial
        return PATH, {"AcsEventCond": cond}

    def accept(self, body: bytes, site_tz: tzinfo) -> SearchPage:
        """Read the answer to :meth:`request` and move to the next page. A ``MORE`` page that
        returned nothing ends the search too (a terminal that keeps answering ``MORE`` with
        no records would loop forever)."""
        page = parse_response(body, site_tz)
        self.position += len(page.events)
        self.done = not page.more or not page.events
        return page
