"""The agent's one HTTP server (aiohttp), shared by push devices and the local console.

Push devices POST to the gateway (a ZKTeco terminal to ``/iclock/cdata``, a Hikvision
camera to the ``httpHosts`` URL it was given); the console serves pages and server-sent
events. Each part registers its routes with :meth:`HttpServer.add_routes` before the
agent starts; the supervisor owns the server and starts it only when ``http.enabled``
is set or a registered part asks for it, on the address ``http.bind`` names.

What every request gets, whoever registered the route:

* a body limit (``http.max_body_bytes``): a larger body is answered 413, checked on
  ``Content-Length`` before reading and again while reading a chunked body;
* a time limit (``http.request_timeout_s``, off for event streams): answered 408;
  a connection idle for 15 s, or stuck in its headers that long, is closed;
* no traceback to the client or in the log for a bad request; a handler bug is
  answered 500 and logged once per route and error type (with its traceback once),
  then at DEBUG, and counted in a summary at stop (logs live on an SD card);
* no access log (SD card).

``GET /healthz`` answers the agent's health JSON (the same as ``ROOT/health``), 503
when the outbox stopped committing.

aiohttp is imported only when the server starts (it costs about 12 MB of RSS and 130 ms
on x86): an agent that needs no HTTP never loads it. Parts that register routes import
it themselves, so only when they are configured.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from edge_agent.config.models import HttpConfig
from edge_agent.poll import backoff_delay

if TYPE_CHECKING:
    from aiohttp import web

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)

#: requests still running at stop get this long to finish, then are cancelled
STOP_TIMEOUT_S = 2.0
#: a connection idle this long is closed, also one that sent only part of its headers
#: (a terminal that went away, a slow-loris client)
IDLE_TIMEOUT_S = 15.0


class ErrorLog:
    """Logs each kind of error once at WARNING, then at DEBUG, and a count at stop."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}

    def report(
        self, key: tuple[str, ...], msg: str, *args: object, exc: BaseException | None = None
    ) -> None:
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        if n == 1:
            log.warning(msg, *args, exc_info=exc)
        else:
            log.debug(msg, *args)

    def summary(self) -> None:
        for key, n in self.counts.items():
            if n > 1:
                log.info("HTTP: %s happened %d times / 共发生 %d 次", " ".join(key), n, n)
        self.counts.clear()


class _ProtocolLogger(logging.Logger):
    """The logger aiohttp's connection handler writes to.

    A malformed request (a scanner, a device firmware bug) makes aiohttp log
    "Error handling request" with a traceback at ERROR; here it is one line per error
    type, without traceback."""

    def __init__(self, errors: ErrorLog) -> None:
        super().__init__(f"{__name__}.protocol")
        self.parent = log  # its DEBUG lines (a client speaking TLS or garbage) go with ours
        self.errors = errors

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        info = kwargs.get("exc_info")
        err = info if isinstance(info, BaseException) else sys.exc_info()[1]
        name = type(err).__name__ if err is not None else "error"
        self.errors.report(
            ("bad request", name),
            "HTTP: bad request (%s: %s) / 无效的 HTTP 请求",
            name,
            str(err)[:200],
        )

    error = exception


class HttpServer:
    """The one HTTP server of the agent; parts register routes, the supervisor runs it."""

    def __init__(
        self,
        cfg: HttpConfig,
        *,
        health: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        healthy: Callable[[], bool] | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.cfg = cfg
        self.idle_timeout_s = idle_timeout_s
        self.host, self.port = cfg.address()
        self.errors = ErrorLog()
        self._health = health
        self._healthy = healthy
        #: (method, path) -> (kind, route, timeout_s); in registration order
        self._routes: dict[tuple[str, str], tuple[str, web.RouteDef | None, float | None]] = {}
        self._users: set[str] = set()
        self._runner: web.AppRunner | None = None
        #: called at stop before connections close (the console ends its event streams)
        self._on_stop: list[Callable[[], None]] = []
        if health is not None:
            # Added to the app at start (no aiohttp import here); claimed now, so no kind
            # can take the path.
            self._routes[("GET", "/healthz")] = ("agent", None, self.cfg.request_timeout_s)

    # -- registration ------------------------------------------------------------
    def add_routes(
        self,
        kind: str,
        routes: Iterable[web.RouteDef],
        *,
        stream: bool = False,
        start: bool = True,
    ) -> None:
        """Serve ``routes`` for ``kind`` (a device kind, ``console``); before :meth:`start`.

        ``stream``: long-lived responses (server-sent events) that the request time
        limit must not cut. ``start``: ``kind`` needs the server, so it starts even
        when ``http.enabled`` is false.
        """
        if self._runner is not None:
            raise RuntimeError(f"{kind}: routes must be added before the HTTP server starts")
        timeout = None if stream else self.cfg.request_timeout_s
        new: dict[tuple[str, str], tuple[str, web.RouteDef | None, float | None]] = {}
        for route in routes:
            key = (route.method.upper(), route.path)
            other = self._routes.get(key) or new.get(key)
            if other is not None:
                raise ValueError(
                    f"{kind}: {key[0]} {key[1]} is already served by {other[0]} "
                    f"/ 该 HTTP 路径已被 {other[0]} 占用"
                )
            new[key] = (kind, route, timeout)
        self._routes.update(new)
        if start and new:
            self._users.add(kind)

    def on_stop(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the server stops, before it waits for running requests: a
        part with long-lived responses (event streams) ends them there instead of having
        them cancelled after the stop timeout."""
        self._on_stop.append(fn)

    @property
    def wanted(self) -> bool:
        """Whether the supervisor should run the server: enabled, or a part needs it."""
        return self.cfg.enabled or bool(self._users)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where it listens once started (the real port when ``bind`` says port 0)."""
        if self._runner is None:
            return []
        return [(a[0], a[1]) for a in self._runner.addresses]

    # -- running -----------------------------------------------------------------
    def _make_app(self) -> web.Application:
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._guard(request, handler)

        app = web.Application(client_max_size=self.cfg.max_body_bytes, middlewares=[guard])
        if self._health is not None:
            app.router.add_get("/healthz", self._healthz)
        for _kind, route, _timeout in self._routes.values():
            if route is not None:
                route.register(app.router)
        return app

    async def start(self) -> None:
        """Bind and serve; ``OSError`` when the address cannot be bound (nothing left open)."""
        if self._runner is not None:
            return
        from aiohttp import web

        runner = web.AppRunner(
            self._make_app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=STOP_TIMEOUT_S,
            keepalive_timeout=self.idle_timeout_s,
            logger=_ProtocolLogger(self.errors),
            # Without it, stop leaves a connection task behind that still reads the rest of
            # a body (lingering) after cleanup. A handler is then cancelled when its client
            # hangs up: a push kind whose commit must finish anyway shields it.
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        kinds = sorted({kind for kind, _h, _t in self._routes.values()})
        log.info(
            "HTTP server listening on %s (%s) / HTTP 服务已启动",
            ", ".join(_url(host, port) for host, port in self.addresses),
            ", ".join(kinds) or "no routes",
        )

    async def stop(self) -> None:
        """Stop listening, let running requests finish (bounded), close every connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for fn in self._on_stop:
            fn()
        await runner.cleanup()
        self.errors.summary()
        log.info("HTTP server stopped / HTTP 服务已停止")

    async def run(self) -> None:
        """For the supervisor's TaskGroup: serve until cancelled, then stop.

        An address that cannot be bound (in use, not on this host) is retried with
        backoff and logged once: the rest of the agent keeps collecting data."""
        rng = random.Random()
        attempt = 0
        try:
            while True:
                try:
                    await self.start()
                    break
                except OSError as err:
                    delay = backoff_delay(attempt, rng)
                    attempt += 1
                    self.errors.report(
                        ("bind", self.cfg.bind),
                        "HTTP: cannot listen on %s (%s); retrying in %.0f s "
                        "/ 无法监听 HTTP 地址，稍后重试",
                        self.cfg.bind,
                        err.strerror or err,
                        delay,
                    )
                    await asyncio.sleep(delay)
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- per request ---------------------------------------------------------------
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        from aiohttp import web

        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else ""
        method = "GET" if request.method == "HEAD" else request.method
        info = self._routes.get((method, path))
        kind, timeout = (info[0], info[2]) if info else ("-", self.cfg.request_timeout_s)
        size = request.content_length
        if size is not None and size > self.cfg.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.cfg.max_body_bytes, actual_size=size)
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                return await handler(request)
        except web.HTTPException:
            raise
        except TimeoutError:
            if not limit.expired():
                raise
            raise web.HTTPRequestTimeout() from None
        except (ConnectionError, asyncio.IncompleteReadError):
            raise  # the client went away; aiohttp closes the connection quietly
        except Exception as err:
            self.errors.report(
                (kind, request.method, request.path, type(err).__name__),
                "HTTP %s %s (%s) failed: %r / HTTP 请求处理出错",
                request.method,
                request.path,
                kind,
                err,
                exc=err,
            )
            raise web.HTTPInternalServerError() from None

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        assert self._health is not None
        from aiohttp import web

        body = await self._health()
        ok = self._healthy is None or self._healthy()
        return web.json_response(body, status=200 if ok else 503)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


__all__ = ["ErrorLog", "HttpServer"]
