"""Fetch one JPEG from a camera: digest, basic or no authentication, a size cap, a
deadline for the whole exchange, and a check that the bytes are a whole JPEG.

aiohttp is imported here only, when a camera is first asked for a picture: an agent
without cameras never loads the HTTP client.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any
from urllib.parse import urlsplit

from edge_agent.driver import SnapshotSource
from edge_agent.errors import SnapshotError

#: Start of Image followed by the first marker's 0xFF: every JPEG begins so
SOI = b"\xff\xd8\xff"
#: End of Image: the last two bytes of a whole JPEG
EOI = b"\xff\xd9"
_CHUNK = 64 * 1024


def where(url: str) -> str:
    """``host[:port]/path`` of ``url``, for messages: no query (it may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def check_jpeg(data: bytes) -> None:
    """Raise ValueError unless ``data`` is a whole JPEG (SOI at the start, EOI at the end).

    A camera that is rebooting or refuses the login often answers 200 with an HTML page;
    a connection cut mid-body leaves a JPEG without its end."""
    if not data.startswith(SOI):
        head = data[:16]
        hint = " (an HTML or XML page?)" if head.lstrip().startswith(b"<") else ""
        raise ValueError(f"not a JPEG: starts with {head!r}{hint} / 不是 JPEG 图片")
    if not data.endswith(EOI):
        raise ValueError(
            f"JPEG cut short: {len(data)} bytes without the end-of-image marker / 图片不完整"
        )


async def fetch_jpeg(
    camera: str, source: SnapshotSource, *, timeout_s: float, max_bytes: int
) -> bytes:
    """The JPEG at ``source.url``, or :class:`SnapshotError` saying why not.

    ``timeout_s`` bounds everything: connect, the digest challenge and its answer, the
    body. A body over ``max_bytes`` is refused before it is read whole."""
    import aiohttp

    url = where(source.url)
    middlewares: tuple[Any, ...] = ()
    headers: dict[str, str] = {}
    if source.auth == "digest" and source.username is not None:
        middlewares = (aiohttp.DigestAuthMiddleware(source.username, source.password or ""),)
    elif source.auth == "basic" and source.username is not None:
        # RFC 7617, sent with the first request (aiohttp 3.14 deprecates BasicAuth)
        pair = f"{source.username}:{source.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    tls: bool | ssl.SSLContext = True
    if not source.tls_verify:
        tls = False
    try:
        async with asyncio.timeout(timeout_s):
            # A session per picture: snapshots are rare, and nothing stays open between
            # them (a camera that reboots never leaves a dead keep-alive connection here).
            async with (
                aiohttp.ClientSession(
                    middlewares=middlewares, connector=aiohttp.TCPConnector(ssl=tls)
                ) as session,
                session.get(source.url, headers=headers, allow_redirects=False) as resp,
            ):
                if resp.status == 401:
                    asked = resp.headers.get("WWW-Authenticate", "").split(" ", 1)[0]
                    raise SnapshotError(
                        camera,
                        f"{url}: login refused (HTTP 401, the camera asks for "
                        f"{asked or 'nothing'}; auth is {source.auth}): check username, "
                        "password and auth / 登录被拒绝，请检查用户名、密码和认证方式",
                    )
                if resp.status != 200:
                    raise SnapshotError(
                        camera, f"{url}: HTTP {resp.status} {resp.reason or ''}".rstrip()
                    )
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise SnapshotError(
                        camera,
                        f"{url}: picture of {resp.content_length} bytes is over "
                        f"snapshots.image_max_bytes ({max_bytes}) / 图片过大",
                    )
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    body += chunk
                    if len(body) > max_bytes:
                        raise SnapshotError(
                            camera,
                            f"{url}: picture over snapshots.image_max_bytes ({max_bytes}) "
                            "/ 图片过大",
                        )
    except TimeoutError:
        raise SnapshotError(
            camera, f"{url}: no whole picture within {timeout_s:g} s / 抓图超时"
        ) from None
    except aiohttp.ClientError as err:
        raise SnapshotError(camera, f"{url}: {type(err).__name__}: {err}") from err
    except OSError as err:  # refused, unreachable, TLS
        raise SnapshotError(camera, f"{url}: {err.strerror or err}") from err
    data = bytes(body)
    try:
        check_jpeg(data)
    except ValueError as err:
        raise SnapshotError(camera, f"{url}: {err}") from None
    return data
