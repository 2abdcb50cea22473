"""What a terminal sends on its own: the ``alertStream`` it serves and the ``httpHosts`` POSTs
it makes, both as :data:`~edge_agent.drivers.hikvision.events.Notification` objects.

- :class:`AlertStream`: the body of ``GET /ISAPI/Event/notification/alertStream`` (an endless
  ``multipart/mixed``), fed in the chunks the socket gives.
- :func:`parse_push`: one POST body of the httpHosts push mode: ``application/json`` (or an XML
  ``EventNotificationAlert``), or ``multipart/form-data`` whose ``event_log`` or
  ``AccessControllerEvent`` parts hold the event and whose picture parts are dropped unread.

A part that is not a JSON or XML event is skipped and counted, with the reason of the last
one, so the driver can log one line and then a summary. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from edge_agent.drivers.hikvision.events import (
    IsapiError,
    Notification,
    decode_body,
    notification,
)
from edge_agent.drivers.hikvision.multipart import (
    MAX_PART_BYTES,
    End,
    MultipartParser,
    Part,
    Stats,
    boundary_from_content_type,
    header_params,
)


class AlertStream:
    """One alertStream connection: ``feed(chunk)`` -> notifications, ``finish()`` at its end.

    ``content_type`` is the response's Content-Type (its boundary, usually ``MIME_boundary``);
    ``site_tz`` places times a terminal sends without an offset."""

    def __init__(
        self, content_type: str, site_tz: tzinfo, *, max_part_bytes: int = MAX_PART_BYTES
    ) -> None:
        self.parser = MultipartParser(
            boundary_from_content_type(content_type), max_part_bytes=max_part_bytes
        )
        self.site_tz = site_tz
        #: parts that were not a JSON or XML notification (or not a valid one)
        self.skipped = 0
        #: why the last one was skipped
        self.last_skip: str | None = None

    @property
    def stats(self) -> Stats:
        """The multipart counters: parts, pictures, oversized, truncated, dropped bytes."""
        return self.parser.stats

    def feed(self, data: bytes) -> list[Notification]:
        """Take the next bytes of the response body; return the notifications they complete."""
        out: list[Notification] = []
        for part in self.parser.feed(data):
            found = self._decode(part)
            if found is not None:
                out.append(found)
        return out

    def finish(self) -> End:
        """The connection closed: whether it ended inside a part (``truncated``)."""
        return self.parser.finish()

    def _decode(self, part: Part) -> Notification | None:
        try:
            return notification(decode_body(part.body), self.site_tz)
        except IsapiError as err:
            self.skipped += 1
            self.last_skip = f"{part.content_type or 'untyped'} part: {err}"
            return None


@dataclass(slots=True)
class PushBatch:
    """What one httpHosts POST held."""

    notifications: list[Notification] = field(default_factory=list)
    #: parts (or the body) that were not a JSON or XML notification
    skipped: int = 0
    #: picture parts dropped unread
    pictures: int = 0
    #: the multipart body ended inside a part
    truncated: bool = False
    #: why the last part was skipped
    last_skip: str | None = None


def parse_push(
    body: bytes, content_type: str, site_tz: tzinfo, *, max_part_bytes: int = MAX_PART_BYTES
) -> PushBatch:
    """The notifications of one POST body of a terminal in httpHosts mode (see the module
    docstring). Never raises for what a device sends: what it cannot read is counted."""
    batch = PushBatch()
    main = header_params(content_type)[0]
    if not main.startswith("multipart/"):
        if len(body) > max_part_bytes:
            batch.skipped, batch.last_skip = 1, f"body of {len(body)} bytes is too long"
            return batch
        try:
            batch.notifications.append(notification(decode_body(body), site_tz))
        except IsapiError as err:
            batch.skipped, batch.last_skip = 1, f"{main or 'untyped'} body: {err}"
        return batch
    try:
        parser = MultipartParser(
            boundary_from_content_type(content_type), max_part_bytes=max_part_bytes
        )
    except ValueError as err:
        batch.skipped, batch.last_skip = 1, str(err)
        return batch
    parts = parser.feed(body)
    end = parser.finish()
    for part in parts:
        try:
            batch.notifications.append(notification(decode_body(part.body), site_tz))
        except IsapiError as err:
            batch.skipped += 1
            batch.last_skip = f"part {part.name or '?'} ({part.content_type or 'untyped'}): {err}"
    batch.skipped += parser.stats.oversized + parser.stats.malformed
    batch.pictures = parser.stats.pictures
    batch.truncated = end.truncated
    return batch
