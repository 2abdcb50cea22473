"""What a robot sender raises (apart from aiohttp, which only the senders import)."""

from __future__ import annotations


class SendFailed(Exception):
    """The service did not take the message (the reason is safe to log: no secret)."""


class TooFast(SendFailed):
    """The service asked us to slow down."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
