"""The console's routes on the agent's HTTP server (aiohttp).

Pages are static HTML with one script each (``static/``): every value a device or a
config file says is put in the page by ``textContent`` from the JSON APIs, never as
HTML, and the Content-Security-Policy forbids inline script, so a device named
``<img src=x onerror=...>`` shows as text. Every page and API but the login needs a
session; every POST needs the session's CSRF token in ``X-CSRF-Token`` (the login POST
a token of its own, bound to a cookie) and, when the browser sends one, an ``Origin``
of this host.

Alarms reach the browser over server-sent events (:mod:`edge_agent.console.sse`):
nothing runs on the server while nobody looks, and the streams end when the agent
stops (:meth:`Console.close`, called by the HTTP server before it closes connections).
The same stream carries the alarm book's audit entries as they are written, so the
audit page and the list of what is out of service follow without polling.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edge_agent.alarms.lifecycle import AUDIT_MEMORY, AlarmBook, AlarmError
from edge_agent.console.auth import LoginLimiter, Session, Sessions, read_credentials, same_token
from edge_agent.console.auth import verify_password as _verify
from edge_agent.console.config import ConsoleConfig
from edge_agent.console.sse import AlarmStream
from edge_agent.console.views import DeviceBoard, check_config
from edge_agent.envelope import iso_ms
from edge_agent.http import HttpServer

log = logging.getLogger(__name__)

PREFIX = "/console"
COOKIE = "edge_console"
LOGIN_COOKIE = "edge_console_login"
#: a comment line on every open stream this often: a browser or proxy that went away
#: is noticed, and idle-closing middleboxes keep the stream
HEARTBEAT_S = 15.0
#: a stream write that cannot go out this long (a stalled client) ends the stream
WRITE_TIMEOUT_S = 30.0
#: open alarm streams at most (a guard office has a few screens; a tab stuck in a reload
#: loop must not pile up connections on a Pi)
MAX_STREAMS = 32
STATIC = {
    "app.js": "text/javascript",
    "login.js": "text/javascript",
    "i18n.js": "text/javascript",
    "style.css": "text/css",
}
PAGES = ("index.html", "login.html")
#: audit entries a page asks for when it does not say
AUDIT_LIMIT = 200

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authed = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def _load_static() -> dict[str, bytes]:
    base = importlib.resources.files(__package__).joinpath("static")
    return {name: base.joinpath(name).read_bytes() for name in (*STATIC, *PAGES)}


class Console:
    """The console of one agent: its sessions, its alarm stream and its routes."""

    def __init__(
        self,
        cfg: ConsoleConfig,
        *,
        book: AlarmBook,
        board: DeviceBoard,
        drivers: Mapping[str, Any],
        health: Callable[[], Awaitable[dict[str, Any]]],
        uplink: Callable[[], dict[str, Any]],
        config_dir: Path,
        config_path: Path | None = None,
        language: str = "zh",
        site: dict[str, Any] | None = None,
        now: Callable[[], float] | None = None,
        verify: Callable[[str, str], bool] = _verify,
        max_streams: int = MAX_STREAMS,
        rules: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.cfg = cfg
        self.book = book
        self.board = board
        self.drivers = drivers
        self._health = health
        self._uplink = uplink
        self.credentials = cfg.credentials_path(config_dir)
        self.config_path = config_path
        self.language = cfg.language or language
        self.site = site or {}
        clock: dict[str, Any] = {} if now is None else {"now": now}
        self.sessions = Sessions(cfg.session_s, **clock)
        self.limiter = LoginLimiter(cfg.login_failures_max, cfg.login_lockout_s, **clock)
        self.stream = AlarmStream(self._alarms)
        #: the ids of the rules the agent runs (the rule engine's); with those of the
        #: open alarms (the gateway's own, the patrol's) what can be taken out of service
        self._rules = rules
        self._verify = verify
        self.max_streams = max_streams
        self._static = _load_static()
        #: login CSRF tokens handed out (cookie value -> True), bounded
        self._login_tokens: dict[str, None] = {}
        book.add_listener(lambda data: self.stream.on_transition(self._view(data)))
        book.add_audit_listener(self.stream.on_audit)
        self._check_users()

    def _check_users(self) -> None:
        """Say at start, once, when nobody can log in (the file is read again at every
        login, so creating a user afterwards needs no restart)."""
        try:
            users = read_credentials(self.credentials)
        except OSError as err:
            why = err.strerror or str(err)
        else:
            if users:
                return
            why = "no users in it"
        log.warning(
            "console: nobody can log in yet: %s (%s); create a user with 'edge-agent "
            "console-passwd USER -c CONFIG' / 控制台尚无可登录的账号，请用 console-passwd 创建",
            self.credentials,
            why,
        )

    @classmethod
    def for_agent(cls, agent: Any) -> Console:
        """The console of a running agent (``edge_agent.supervisor.Agent``): a tap on its
        pipeline, a listener on its alarm book, and its routes on its HTTP server."""
        from edge_agent.console.views import uplink

        cfg: ConsoleConfig = agent.cfg.console
        board = DeviceBoard(agent.devices.values())
        agent.emitter.add_tap("console", board.see)
        site = agent.cfg.site
        engine = agent.rules
        console = cls(
            cfg,
            book=agent.alarms,
            board=board,
            drivers=agent.drivers,
            health=agent.health,
            uplink=lambda: uplink(agent.publisher, agent.settings.host, agent.settings.port),
            config_dir=agent.config_path.resolve().parent,
            config_path=agent.config_path,
            language=site.language,
            site={"id": site.id, "gateway_id": site.gateway_id, "name": site.name},
            rules=lambda: [r.id for r in engine.rules] if engine is not None else [],
        )
        console.attach(agent.http)
        return console

    # -- wiring -----------------------------------------------------------------------------
    def attach(self, http: HttpServer) -> None:
        p = PREFIX
        routes = [
            web.get("/", self._root),
            web.get(f"{p}", self._root),
            web.get(f"{p}/", self._page(self._index)),
            web.get(f"{p}/login", self._page(self._login_page)),
            web.get(p + "/static/{name}", self._page(self._asset)),
            web.get(f"{p}/api/login", self._page(self._login_token)),
            web.post(f"{p}/api/login", self._page(self._login)),
            web.post(f"{p}/api/logout", self._authed(self._logout, post=True)),
            web.get(f"{p}/api/session", self._authed(self._session)),
            web.get(f"{p}/api/alarms", self._authed(self._alarms_api)),
            web.post(p + "/api/alarms/{alarm_id}/ack", self._authed(self._ack, post=True)),
            web.post(p + "/api/alarms/{alarm_id}/shelve", self._authed(self._shelve, post=True)),
            web.get(f"{p}/api/audit", self._authed(self._audit)),
            web.get(f"{p}/api/out_of_view", self._authed(self._out_of_view)),
            web.post(f"{p}/api/out_of_service", self._authed(self._out_of_service, post=True)),
            web.post(f"{p}/api/in_service", self._authed(self._in_service, post=True)),
            web.get(f"{p}/api/devices", self._authed(self._devices)),
            web.get(f"{p}/api/health", self._authed(self._health_api)),
            web.get(f"{p}/api/check", self._authed(self._check)),
        ]
        http.add_routes("console", routes)
        http.add_routes(
            "console", [web.get(f"{p}/api/events", self._authed(self._events))], stream=True
        )
        http.on_stop(self.close)

    def close(self) -> None:
        """End every alarm stream (before the server closes its connections), and sum up
        the refused logins."""
        self.stream.close()
        self.limiter.summary()

    # -- helpers ----------------------------------------------------------------------------
    def _alarms(self) -> list[dict[str, Any]]:
        return [self._view(alarm.data()) for alarm in self.book.alarms.values()]

    def _view(self, data: dict[str, Any]) -> dict[str, Any]:
        """An alarm as the page shows it: its uplink data, and when its shelve ends
        (``shelved_until``, UTC), which the uplink payload does not carry."""
        alarm = self.book.alarms.get(str(data.get("alarm_id")))
        if data.get("state") == "shelved" and alarm is not None and alarm.shelved_until_wall:
            return data | {"shelved_until": iso_ms(alarm.shelved_until_wall)}
        return data

    @staticmethod
    def _secure(response: web.StreamResponse) -> web.StreamResponse:
        if response.prepared:  # an event stream: sent with its headers already
            return response
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _page(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                self._secure(exc)
                raise
            return self._secure(response)

        return wrapped

    def _authed(self, handler: Authed, *, post: bool = False) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                return self._secure(_error(401, "login required / 请先登录"))
            if post:
                refused = self._refuse_post(request, session.csrf)
                if refused is not None:
                    return self._secure(refused)
            return self._secure(await handler(request, session))

        return wrapped

    def _refuse_post(self, request: web.Request, csrf: str) -> web.Response | None:
        """403 for a POST without the right CSRF token or from another origin."""
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return _error(403, "cross-origin request refused / 拒绝跨站请求")
        if not same_token(request.headers.get("X-CSRF-Token"), csrf):
            return _error(403, "missing or wrong CSRF token / CSRF 令牌无效")
        return None

    def _file(self, name: str, content_type: str) -> web.Response:
        return web.Response(body=self._static[name], content_type=content_type, charset="utf-8")

    # -- pages --------------------------------------------------------------------------------
    async def _root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{PREFIX}/")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        if self.sessions.get(request.cookies.get(COOKIE)) is None:
            raise web.HTTPSeeOther(f"{PREFIX}/login")
        return self._file("index.html", "text/html")

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        return self._file("login.html", "text/html")

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        response = self._file(name, STATIC[name])
        response.headers["Cache-Control"] = "no-cache"
        return response

    # -- login --------------------------------------------------------------------------------
    async def _login_token(self, request: web.Request) -> web.StreamResponse:
        """A token for the login form, bound to a cookie (login CSRF)."""
        import secrets

        token = secrets.token_urlsafe(32)
        self._login_tokens[token] = None
        while len(self._login_tokens) > 1000:
            self._login_tokens.pop(next(iter(self._login_tokens)))
        response = web.json_response({"csrf": token, "language": self.language})
        response.set_cookie(
            LOGIN_COOKIE, token, httponly=True, samesite="Strict", path=PREFIX, max_age=3600
        )
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        addr = request.remote or "?"
        token = request.cookies.get(LOGIN_COOKIE)
        if token is None or token not in self._login_tokens:
            return _error(403, "missing or expired login token: reload the page / 请刷新页面")
        refused = self._refuse_post(request, token)
        if refused is not None:
            return refused
        wait = self.limiter.locked(addr)
        if wait > 0:
            response = _error(
                429,
                f"too many failed logins: try again in {wait:.0f} s / 登录失败次数过多，请稍后再试",
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        try:
            body = await request.json()
            user, password = str(body["user"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "send JSON {user, password} / 请求格式错误")
        try:
            users = read_credentials(self.credentials)
        except OSError as err:
            log.error(
                "console: cannot read the credentials file %s (%s): nobody can log in; "
                "create a user with 'edge-agent console-passwd USER' / 无法读取控制台账号文件",
                self.credentials,
                err.strerror or err,
            )
            return _error(503, "no users configured on this gateway / 网关未配置控制台账号")
        encoded = users.get(user)
        # scrypt costs tens of milliseconds: off the event loop, which carries the alarms.
        # An unknown user is checked against a dummy hash, so timing does not tell users.
        ok = await asyncio.to_thread(self._verify, password, encoded or _DUMMY) and bool(encoded)
        if not ok:
            log.debug("console: failed login as %r from %s", user, addr)
            self.limiter.failed(addr, user)
            return _error(401, "wrong user or password / 用户名或密码错误")
        self.limiter.succeeded(addr)
        self._login_tokens.pop(token, None)
        cookie, session = self.sessions.create(user)
        log.info("console: %s logged in from %s / 控制台登录", user, addr)
        response = web.json_response({"user": user, "csrf": session.csrf})
        response.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            samesite="Strict",
            path=PREFIX,
            max_age=int(self.cfg.session_s),
        )
        response.del_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    async def _logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        self.sessions.end(request.cookies.get(COOKIE))
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path=PREFIX)
        return response

    # -- APIs ---------------------------------------------------------------------------------
    async def _session(self, request: web.Request, session: Session) -> web.StreamResponse:
        return web.json_response(
            {
                "user": session.user,
                "csrf": session.csrf,
                "language": self.language,
                "site": self.site,
            }
        )

    async def _alarms_api(self, request: web.Request, session: Session) -> web.StreamResponse:
        return web.json_response({"alarms": self._alarms(), "last_event_id": self.stream.last_id})

    async def _ack(self, request: web.Request, session: Session) -> web.StreamResponse:
        alarm_id = request.match_info["alarm_id"]
        try:
            result = self.book.ack(alarm_id, session.user, origin=_origin(request))
        except AlarmError as err:
            return _error(409, str(err))
        return web.json_response(result)

    async def _shelve(self, request: web.Request, session: Session) -> web.StreamResponse:
        alarm_id = request.match_info["alarm_id"]
        try:
            body = await request.json()
            minutes = float(body["minutes"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "send JSON {minutes} / 请求格式错误")
        try:
            result = self.book.shelve(alarm_id, session.user, minutes, origin=_origin(request))
        except AlarmError as err:
            return _error(409, str(err))
        return web.json_response(result)

    async def _audit(self, request: web.Request, session: Session) -> web.StreamResponse:
        """The newest audit entries, newest first; ``alarm_id=`` for one alarm's."""
        try:
            limit = int(request.query.get("limit", AUDIT_LIMIT))
        except ValueError:
            return _error(400, "limit must be a number / limit 须为数字")
        limit = max(1, min(limit, AUDIT_MEMORY))
        alarm_id = request.query.get("alarm_id") or None
        return web.json_response(
            {
                "entries": self.book.audit(limit, alarm_id=alarm_id),
                "last_event_id": self.stream.last_id,
            }
        )

    def _known_rules(self) -> list[str]:
        known = set(self._rules())
        known.update(alarm.rule for alarm in self.book.alarms.values())
        known.update(sup.rule for sup in self.book.suppressions.values())
        return sorted(known)

    async def _out_of_view(self, request: web.Request, session: Session) -> web.StreamResponse:
        """What is out of service or suppressed now, and the rules that can be."""
        return web.json_response({"items": self.book.out_of_view(), "rules": self._known_rules()})

    async def _target(self, request: web.Request) -> tuple[str, str] | web.Response:
        try:
            body = await request.json()
            rule = str(body["rule"]).strip()
            device = str(body.get("device") or "*").strip() or "*"
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "send JSON {rule, device} / 请求格式错误")
        if not rule or "@" in rule or "@" in device:
            return _error(400, "write a rule and a device (or *) / 请填写规则和设备（或 *）")
        return rule, device

    async def _out_of_service(self, request: web.Request, session: Session) -> web.StreamResponse:
        target = await self._target(request)
        if isinstance(target, web.Response):
            return target
        rule, device = target
        if rule not in self._known_rules():
            return _error(400, f"no rule {rule!r} on this gateway / 没有该规则")
        result = self.book.take_out_of_service(
            rule, session.user, device=device, origin=_origin(request)
        )
        return web.json_response(result)

    async def _in_service(self, request: web.Request, session: Session) -> web.StreamResponse:
        target = await self._target(request)
        if isinstance(target, web.Response):
            return target
        rule, device = target
        try:
            result = self.book.return_to_service(
                rule, session.user, device=device, origin=_origin(request)
            )
        except AlarmError as err:
            return _error(409, str(err))
        return web.json_response(result)

    async def _devices(self, request: web.Request, session: Session) -> web.StreamResponse:
        return web.json_response({"devices": self.board.rows(self.drivers)})

    async def _health_api(self, request: web.Request, session: Session) -> web.StreamResponse:
        health = await self._health()
        health["uplink"] = self._uplink()
        return web.json_response(health)

    async def _check(self, request: web.Request, session: Session) -> web.StreamResponse:
        if self.config_path is None:
            return _error(404, "no config file / 没有配置文件")
        return web.json_response(await check_config(self.config_path))

    # -- the alarm stream -----------------------------------------------------------------------
    async def _events(self, request: web.Request, session: Session) -> web.StreamResponse:
        if self.stream.streams >= self.max_streams:
            busy = _error(503, "too many open alarm pages / 打开的告警页面过多")
            busy.headers["Retry-After"] = "10"
            return busy
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                **SECURITY_HEADERS,
            }
        )
        await response.prepare(request)
        cookie = request.cookies.get(COOKIE)
        stream = self.stream
        waiter = stream.waiter()
        try:
            first, seen = stream.start(request.headers.get("Last-Event-ID"))
            await self._write(response, b"retry: 2000\n\n" + b"".join(e.encode() for e in first))
            while not stream.closed:
                waiter.clear()
                events, seen = stream.after(seen)
                if events:
                    await self._write(response, b"".join(e.encode() for e in events))
                    continue
                if self.sessions.get(cookie) is None:
                    break  # logged out or expired: the browser reconnects, gets 401
                try:
                    async with asyncio.timeout(HEARTBEAT_S):
                        await waiter.wait()
                except TimeoutError:
                    await self._write(response, b": keep-alive\n\n")
        except (TimeoutError, ConnectionError):
            pass  # the browser went away or stalled
        finally:
            stream.forget(waiter)
        return response

    @staticmethod
    async def _write(response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await response.write(data)


#: verified against when the user is unknown: the answer takes as long as for a real user
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def _origin(request: web.Request) -> str:
    """Where an alarm command came from, for the alarm book's log and audit."""
    return f"console {request.remote or '?'}"


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
    )
