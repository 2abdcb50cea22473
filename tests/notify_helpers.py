"""Local receivers for the robot senders: one aiohttp server per service on 127.0.0.1.

Each checks the request the way the service documents it, computed here independently
of edge_agent/notify (hmac + base64 straight from the services' documentation):

- DingTalk (open.dingtalk.com, 自定义机器人安全设置 加签): ``sign`` query parameter =
  urlencode(base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret))), and the
  ``timestamp`` (ms) within one hour of now;
- Feishu (open.feishu.cn, 自定义机器人 签名校验): ``sign`` in the JSON body =
  base64(HMAC-SHA256(key=timestamp + "\\n" + secret, msg="")), timestamp in seconds;
- WeCom: the key in the query string; no signature.

They answer like the services (HTTP 200 with an error code in the body) and can be told
to answer "too fast" (``too_fast`` times) or to refuse every message (``refuse``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

SUCCESS: dict[str, dict[str, Any]] = {
    "wecom": {"errcode": 0, "errmsg": "ok"},
    "dingtalk": {"errcode": 0, "errmsg": "ok"},
    "feishu": {"code": 0, "msg": "success", "data": {}},
}
TOO_FAST: dict[str, dict[str, Any]] = {
    "wecom": {"errcode": 45009, "errmsg": "api freq out of limit"},
    "dingtalk": {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"},
    "feishu": {"code": 11232, "msg": "frequency limited psm[lark.oapi.app_platform_runtime]"},
}
BAD_SIGN: dict[str, dict[str, Any]] = {
    "dingtalk": {"errcode": 310000, "errmsg": "sign not match"},
    "feishu": {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"},
}


class Receiver:
    """A robot endpoint of ``kind``; ``texts`` holds every message it accepted."""

    def __init__(
        self, kind: str, secret: str | None = None, wall: Any = time.time, key: str = "k-1"
    ) -> None:
        self.kind = kind
        self.secret = secret
        self.wall = wall
        self.key = key
        self.texts: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.signatures: list[str] = []
        self.bad_signatures = 0
        self.too_fast = 0
        self.refuse: dict[str, Any] | None = None
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        path = {
            "wecom": f"/cgi-bin/webhook/send?key={self.key}",
            "dingtalk": f"/robot/send?access_token={self.key}",
            "feishu": f"/open-apis/bot/v2/hook/{self.key}",
            "webhook": "/hook",
        }[self.kind]
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _signed(self, request: web.Request, body: dict[str, Any]) -> bool:
        if self.secret is None:
            return True
        if self.kind == "dingtalk":
            ts = request.query.get("timestamp", "")
            sign = request.query.get("sign", "")  # aiohttp has url-decoded it
            if not ts.isdigit() or abs(int(ts) / 1000 - self.wall()) > 3600:
                return False
            want = base64.b64encode(
                hmac.new(
                    self.secret.encode("utf-8"),
                    f"{ts}\n{self.secret}".encode(),
                    digestmod=hashlib.sha256,
                ).digest()
            ).decode()
        elif self.kind == "feishu":
            ts = str(body.get("timestamp", ""))
            sign = str(body.get("sign", ""))
            if not ts.isdigit() or abs(int(ts) - self.wall()) > 3600:
                return False
            want = base64.b64encode(
                hmac.new(f"{ts}\n{self.secret}".encode(), b"", digestmod=hashlib.sha256).digest()
            ).decode()
        else:
            return True
        self.signatures.append(sign)
        return hmac.compare_digest(sign, want)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        raw = await request.read()
        body = json.loads(raw)
        if self.kind == "webhook":
            if self.too_fast:
                self.too_fast -= 1
                return web.Response(status=429, headers={"Retry-After": "7"})
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            self.texts.append(body["text"])
            return web.json_response({"ok": True})
        if self.kind == "wecom" and request.query.get("key") != self.key:
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        if not self._signed(request, body):
            self.bad_signatures += 1
            return web.json_response(BAD_SIGN[self.kind])
        if self.too_fast:
            self.too_fast -= 1
            return web.json_response(TOO_FAST[self.kind])
        if self.refuse is not None:
            return web.json_response(self.refuse)
        self.bodies.append(body)
        if self.kind == "feishu":
            assert body["msg_type"] == "text"
            self.texts.append(body["content"]["text"])
        else:
            assert body["msgtype"] == "text"
            self.texts.append(body["text"]["content"])
        return web.json_response(SUCCESS[self.kind])
