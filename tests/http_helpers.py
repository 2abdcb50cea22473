"""A minimal HTTP/1.1 client on a real socket for the HTTP server tests.

Raw asyncio streams rather than an HTTP client library: no resolver threads (the
leak check), and a test can send what a broken device sends (a body shorter than its
Content-Length, a malformed header).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


async def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh connection (Connection: close): status, headers, body."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    try:
        if raw is None:
            hdrs = {"Host": "gw", "Connection": "close", "Content-Length": str(len(body))}
            hdrs.update(headers or {})
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in hdrs.items()
            )
            raw = head.encode() + b"\r\n" + body
        writer.write(raw)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        # Read the answer by its Content-Length, not to EOF: after an early answer (413)
        # the server may keep reading the rest of a body the client never sends.
        head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head_bytes.decode("latin-1").strip().split("\r\n")
        status = int(lines[0].split()[1])
        parsed = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(parsed.get("content-length", "0"))
        payload = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return status, parsed, payload


def refused(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) != 0
