"""What the native camera kinds share (``hikvision_camera``, ``dahua``): a camera that serves
its events on one long-lived HTTP GET (a multipart body that never ends) behind digest
authentication.

:class:`CameraStreamDevice` holds the connection fields; :class:`CameraStreamDriver` holds the
stream open: digest login (aiohttp's ``DigestAuthMiddleware``), a read under ``silence_s``
(anything the camera sends, its heartbeat included, proves it alive), the held states of
:class:`~edge_agent.drivers.camera_edges.Edges` ended on time, reconnects with backoff from 1 s
to ``retry_max_s`` (jittered), one WARNING per problem then DEBUG, one INFO when it answers
again, and a summary of the repeats when it stops. A subclass says which URL to open, how to
read the body and what each item means.

Events have no cursor: a camera keeps no log to ask again, so what the outbox refuses
(``NotDurableError``: disk full, clock not synchronised) is held here, at most
:data:`MAX_PENDING` events, and committed with the next ones (the device is ``degraded``
meanwhile); past that bound the oldest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import Field, field_validator

from edge_agent.config.models import DeviceBase
from edge_agent.config.secrets import SecretError, is_reference, resolve
from edge_agent.driver import DeviceLink, DriverContext, Event, MetricInfo, SnapshotSource
from edge_agent.drivers.camera_edges import Contract, Edges
from edge_agent.drivers.device_log import DeviceLog
from edge_agent.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
    NotDurableError,
    SnapshotError,
)

if TYPE_CHECKING:
    from aiohttp import ClientResponse

# aiohttp is imported where it is used (tests/unit/test_http.py: a Modbus-only agent never
# pays for it)

log = logging.getLogger(__name__)

#: events held in memory while the outbox refuses them, at most
MAX_PENDING = 1000
#: while events are held, try the outbox again this often (s)
RETRY_PENDING_S = 1.0


class CameraStreamDevice(DeviceBase):
    """Connection fields of a camera whose events come on one long-lived HTTP GET."""

    host: str = Field(min_length=1, description="IP address or host name of the camera / 地址")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="HTTP(S) port; default 80 (http) or 443 (https)"
    )
    scheme: Literal["http", "https"] = Field(default="http", description="http or https")
    tls_verify: bool = Field(
        default=False,
        description="With https: check the camera's certificate (cameras ship a self-signed "
        "one) / 是否校验摄像机证书",
    )
    user: str = Field(default="admin", min_length=1, description="Camera user / 用户名")
    password: str = Field(
        description="Camera password as a secret reference, ${ENV_NAME} or ${cred:NAME}, never "
        "the password itself / 密码，只能写 ${环境变量} 或 ${cred:名称}"
    )
    silence_s: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Offline and reconnect after this long without a byte of the event stream "
        "(heartbeats included) / 静默超时（秒）",
    )
    timeout_s: float = Field(
        default=5, gt=0, le=120, description="Timeout of connecting and of the stream's answer"
    )
    retry_max_s: float = Field(
        default=60, ge=1, le=3600, description="Longest wait between reconnects (backoff from 1 s)"
    )
    hold_s: float = Field(
        default=5,
        gt=0,
        le=300,
        description="A motion or tamper alarm the camera stops repeating ends this long after "
        "its last post (many firmwares never send its end) / 报警保持时间（秒）",
    )

    @field_validator("password")
    @classmethod
    def check_password_is_a_reference(cls, value: str) -> str:
        if not is_reference(value):
            raise ValueError(
                "secrets must not be written in the file: use ${ENV_NAME} or ${cred:NAME} "
                "/ 密钥不能明文写在配置文件里"
            )
        return value

    @property
    def base_url(self) -> str:
        port = self.port or (443 if self.scheme == "https" else 80)
        host = self.host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        return f"{self.scheme}://{host}:{port}"


class StreamParser(Protocol):
    """An incremental parser of one stream's body."""

    def feed(self, data: bytes) -> list[Any]: ...


class CameraStreamDriver(DeviceLog):
    """The stream loop of a native camera kind (see the module docstring). Subclasses set
    ``kind`` and ``Config`` and implement :meth:`stream_path`, :meth:`open_parser`,
    :meth:`take`, :meth:`parser_problems` and :meth:`finish`."""

    _log = log
    _trouble_zh = "摄像机事件流异常"

    config: CameraStreamDevice
    vendor = ""

    def __init__(self, config: CameraStreamDevice, ctx: DriverContext) -> None:
        self.config = config
        self.tz = ctx.tz
        self.base = config.base_url
        self.edges = Edges()
        #: the monotonic clock (a test may inject one)
        self.mono: Callable[[], float] = time.monotonic
        self._pending: list[Event] = []
        self._down_since: str | None = None
        self._online = False
        #: the outbox refused events (they wait in :attr:`_pending`)
        self._degraded = False
        #: the stream is open now
        self._open = False
        self._logged: dict[str, int] = {}
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "events",
                "heartbeats",
                "connects",
                "skipped",
                "truncated",
                "dropped_pending",
            ),
            0,
        )

    # -- what a subclass says ----------------------------------------------------------
    def stream_path(self) -> str:
        """The path and query of the event stream."""
        raise NotImplementedError

    def open_parser(self, content_type: str) -> StreamParser:
        """A parser for the stream's Content-Type; ``ValueError`` when it cannot be one."""
        raise NotImplementedError

    def take(
        self, items: list[Any], now: float
    ) -> tuple[bool, list[tuple[Contract, float | None]]]:
        """What parsed items mean: whether any proves the camera alive, and the contract
        events (with the camera's time, UNIX seconds, or None) their edges give."""
        raise NotImplementedError

    def parser_problems(self, parser: Any) -> list[tuple[str, str]]:
        """New unreadable parts since the last call, as ``(log key, message)``."""
        return []

    def finish(self, parser: Any) -> bool:
        """The stream ended: whether it ended inside a part."""
        return False

    # -- the Driver protocol -------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo("events", "", "camera events published since the agent started"),
            MetricInfo("repeats", "", "camera posts that repeated an alarm already active"),
            MetricInfo("connects", "", "event stream connections opened"),
        ]

    def diagnostics(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "stream": self.stream_path(),
            "active": [str(k) for k in self.edges.active()],
            "pending": len(self._pending),
            **self.counts,
            "repeats": self.edges.repeats,
        }

    # -- running -------------------------------------------------------------------------
    async def run(self, link: DeviceLink) -> None:
        backoff = 1.0
        try:
            while True:
                healthy = await self._session_once(link)
                if healthy:
                    backoff = 1.0
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.config.retry_max_s)
        finally:
            self._summary()

    def snapshot_source_at(self, url: str) -> SnapshotSource:
        """The snapshot service fetches ``url`` with this camera's own digest login."""
        try:
            password = resolve(
                self.config.password, cred_dir=os.environ.get("CREDENTIALS_DIRECTORY")
            )
        except SecretError as err:
            raise SnapshotError(self.device_id, f"password not available: {err}") from err
        return SnapshotSource(
            url,
            self.config.user,
            password,
            "digest",
            tls_verify=self.config.scheme == "http" or self.config.tls_verify,
        )

    async def _session_once(self, link: DeviceLink) -> bool:
        """One connection's life; True when the stream was open at some point."""
        self._online = False
        try:
            password = resolve(
                self.config.password, cred_dir=os.environ.get("CREDENTIALS_DIRECTORY")
            )
        except SecretError as err:
            self._down(link, "offline", f"password not available: {err}")
            return False
        from aiohttp import ClientSession, ClientTimeout, DigestAuthMiddleware, TCPConnector

        ssl = self.config.scheme == "http" or self.config.tls_verify
        async with ClientSession(
            connector=TCPConnector(ssl=ssl, limit=2),
            middlewares=(DigestAuthMiddleware(self.config.user, password),),
            timeout=ClientTimeout(total=None, sock_connect=self.config.timeout_s),
        ) as session:
            try:
                await self._stream(link, session)
            except DeviceError as err:
                self._open = False
                await self._lost(link)
                self._down(link, "offline", err.reason)
        return self._online

    async def _stream(self, link: DeviceLink, session: Any) -> None:
        from aiohttp import ClientError
        from yarl import URL

        # encoded=True: Dahua's ``codes=[All]`` goes out with its brackets as cameras
        # expect them (and as the digest's uri says)
        url = URL(self.base + self.stream_path(), encoded=True)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                resp: ClientResponse = await session.get(url)
        except TimeoutError as err:
            raise DeviceTimeout(self.device_id, "no answer to the event stream request") from err
        except (ClientError, OSError) as err:
            raise DeviceUnavailable(self.device_id, f"cannot reach the camera: {err}") from err
        try:
            if resp.status == 401:
                raise DeviceError(
                    self.device_id, "wrong user or password (HTTP 401) / 用户名或密码错误"
                )
            if resp.status != 200:
                raise DeviceProtocolError(
                    self.device_id, f"HTTP {resp.status} for the event stream"
                )
            ctype = resp.headers.get("Content-Type", "")
            try:
                parser = self.open_parser(ctype)
            except ValueError as err:
                raise DeviceProtocolError(
                    self.device_id, f"event stream is not multipart ({ctype!r}): {err}"
                ) from err
            self.counts["connects"] += 1
            await self._read(link, resp, parser)
        finally:
            resp.close()

    async def _read(self, link: DeviceLink, resp: ClientResponse, parser: Any) -> None:
        from aiohttp import ClientError

        alive_at = self.mono()
        self._open = True
        self._up(link)
        await self._flush_pending(link)
        while True:
            now = self.mono()
            wait = alive_at + self.config.silence_s - now
            expiry = self.edges.next_expiry()
            if expiry is not None:
                wait = min(wait, expiry - now)
            if self._pending:
                wait = min(wait, RETRY_PENDING_S)
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    chunk = await resp.content.readany()
            except TimeoutError:
                now = self.mono()
                await self._commit(link, [(c, None) for c in self.edges.expire(now)])
                if now >= alive_at + self.config.silence_s:
                    raise DeviceTimeout(
                        self.device_id,
                        f"no heartbeat for {self.config.silence_s:g} s / 超时无心跳",
                    ) from None
                continue
            except (ClientError, OSError) as err:
                self._ended(parser)
                raise DeviceUnavailable(self.device_id, f"event stream broke: {err}") from err
            if not chunk:
                self._ended(parser)
                raise DeviceUnavailable(self.device_id, "the camera closed the event stream")
            items = parser.feed(chunk)
            for key, message in self.parser_problems(parser):
                self.counts["skipped"] += 1
                self._once(key, "%s", message)
            now = self.mono()
            alive, events = self.take(items, now)
            if alive:
                alive_at = now
            expired = [(c, None) for c in self.edges.expire(now)]
            await self._commit(link, [*events, *expired])

    def _ended(self, parser: Any) -> None:
        if self.finish(parser):
            self.counts["truncated"] += 1
            self._once("truncated", "event stream ended inside a part")

    # -- committing ----------------------------------------------------------------------
    async def _commit(self, link: DeviceLink, found: list[tuple[Contract, float | None]]) -> None:
        batch = [Event(etype, data, ts=ts) for (etype, data), ts in found]
        if not batch and not self._pending:
            return
        todo = [*self._pending, *batch]
        try:
            await link.commit(todo)
        except NotDurableError as err:
            over = len(todo) - MAX_PENDING
            if over > 0:
                self.counts["dropped_pending"] += over
                self._once("pending", "outbox refuses events; %d oldest dropped", over)
                todo = todo[over:]
            self._pending = todo
            self._degraded = True
            self._down(link, "degraded", f"events wait in memory: {err}")
            return
        self._pending = []
        self.counts["events"] += len(todo)
        if self._degraded:
            self._degraded = False
            if self._open:
                self._up(link)

    async def _flush_pending(self, link: DeviceLink) -> None:
        if self._pending:
            await self._commit(link, [])

    async def _lost(self, link: DeviceLink) -> None:
        """The stream is gone: active alarms end (a Stop may have been missed)."""
        ended = self.edges.lost()
        if ended:
            await self._commit(link, [(c, None) for c in ended])

    # -- state and logs ------------------------------------------------------------------
    def _up(self, link: DeviceLink) -> None:
        self._online = True
        if self._down_since is not None:
            log.info("%s: camera event stream open again / 摄像机事件流恢复", self.device_id)
            self._down_since = None
        link.state("online")
