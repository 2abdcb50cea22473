"""One exception tree for the agent.

::

    EdgeAgentError
    ├── ConfigError            bad YAML or a value the schema rejects (carries every problem)
    ├── OutboxError            the SQLite outbox cannot be opened or written
    │   └── NotDurableError    a commit is held only in memory (full disk, clock gate)
    └── DeviceError            anything a device did wrong; carries ``device_id``
        ├── DeviceTimeout      no answer within ``timeout_s``
        ├── DeviceProtocolError garbled frame, exception response, unexpected length
        ├── DeviceUnavailable  cannot connect (port missing, connection refused)
        └── SnapshotError      a camera's snapshot could not be fetched (auth, not a JPEG ...)

Drivers catch narrow library errors at their edge and re-raise one of these
``from err``; the poll loop and the supervisor only ever see this tree.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """The configuration cannot be used.

    ``problems`` holds one ``file:line  key.path  message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class OutboxError(EdgeAgentError):
    """The outbox database cannot be opened or written."""


class NotDurableError(OutboxError):
    """Events and cursor of ``DeviceLink.commit`` are not on disk (a full disk, or the clock
    gate holding them): nothing was kept, so the device must keep its records and retry."""


class DeviceError(EdgeAgentError):
    """A device failed; ``device_id`` names it."""

    def __init__(self, device_id: str, message: str) -> None:
        super().__init__(f"{device_id}: {message}")
        self.device_id = device_id
        self.reason = message


class DeviceTimeout(DeviceError):
    """The device did not answer in time."""


class DeviceProtocolError(DeviceError):
    """The device answered with something we cannot use (garbled, exception code, wrong length)."""


class DeviceUnavailable(DeviceError):
    """The device or its bus cannot be reached at all."""


class SnapshotError(DeviceError):
    """A camera's snapshot could not be fetched or stored (HTTP error, authentication,
    timeout, not a JPEG, too large); ``reason`` says which, in words for an installer."""
