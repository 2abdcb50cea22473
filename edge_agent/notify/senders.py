"""Small async senders, one per service, on aiohttp's client.

Each ``send(text)`` returns once the service accepted the message, or raises:

- :class:`TooFast` when the service says "send too fast" (the caller waits
  ``retry_after_s`` and tries again; the message is not lost);
- :class:`SendFailed` for anything else (unreachable, a 5xx, a refused signature or
  keyword): the caller retries with a backoff and logs it once.

The services answer HTTP 200 with an error code in the body, so the body decides,
never the status alone (the general notification libraries get this wrong):

- WeCom group robot (企业微信群机器人, developer.work.weixin.qq.com/document/path/91770):
  ``{"errcode": 0, "errmsg": "ok"}``; ``45009`` = API frequency out of limit
  (20 messages a minute per robot).
- DingTalk custom robot (钉钉自定义机器人, open.dingtalk.com/document/robots/custom-robot-access):
  ``{"errcode": 0, "errmsg": "ok"}``; ``130101`` = send too fast (20 a minute, then
  throttled for 10 minutes); ``310000`` = keyword / signature / IP whitelist refused.
  Signing (加签): ``sign = urlencode(base64(HMAC-SHA256(key=secret,
  msg=timestamp_ms + "\\n" + secret)))`` as the ``timestamp`` and ``sign`` query parameters.
- Feishu custom bot (飞书自定义机器人, open.feishu.cn/document/client-docs/bot-v3/add-custom-bot):
  ``{"code": 0, "msg": "success"}`` (older answers ``{"StatusCode": 0}``); ``11232`` and
  ``9499`` = frequency limited (100 a minute, 5 a second); ``19021`` = signature
  mismatch. Signing (签名校验): ``sign = base64(HMAC-SHA256(key=timestamp_s + "\\n" +
  secret, msg=b""))`` with ``timestamp`` (seconds, as a string) in the JSON body.
- generic webhook: the alarm as JSON; any 2xx is success, 429 is "too fast" (with
  ``Retry-After``); with a secret the body is signed in ``X-Signature: sha256=<hex>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import aiohttp

from edge_agent.notify.config import RobotConfig
from edge_agent.notify.errors import SendFailed, TooFast

__all__ = ["SendFailed", "Sender", "TooFast", "dingtalk_sign", "feishu_sign", "webhook_sign"]

#: how long to wait after a "too fast" answer that names no time, per kind
TOO_FAST_WAIT_S = {"wecom": 60.0, "dingtalk": 60.0, "feishu": 10.0, "webhook": 60.0}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's ``sign`` query value (already url-encoded)."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return quote_plus(base64.b64encode(digest).decode())


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's ``sign``: the string to sign is the HMAC *key*, the message is empty."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Sender:
    """Sends one text to one robot. ``wall`` is the wall clock (signatures carry it)."""

    def __init__(
        self,
        robot: RobotConfig,
        session: aiohttp.ClientSession,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.robot = robot
        self.session = session
        self.wall = wall

    async def send(self, text: str, alarm: dict[str, Any] | None = None) -> None:
        kind = self.robot.kind
        url = self.robot.url
        headers = {"Content-Type": "application/json; charset=utf-8"}
        body: dict[str, Any]
        if kind == "wecom":
            body = {"msgtype": "text", "text": {"content": text}}
        elif kind == "dingtalk":
            body = {"msgtype": "text", "text": {"content": text}}
            if self.robot.secret:
                ts = int(self.wall() * 1000)
                sep = "&" if "?" in url else "?"
                url = f"{url}{sep}timestamp={ts}&sign={dingtalk_sign(self.robot.secret, ts)}"
        elif kind == "feishu":
            body = {"msg_type": "text", "content": {"text": text}}
            if self.robot.secret:
                ts = int(self.wall())
                body = {"timestamp": str(ts), "sign": feishu_sign(self.robot.secret, ts), **body}
        else:
            body = {"text": text, "alarm": alarm}
        raw = json.dumps(body, ensure_ascii=False).encode()
        if kind == "webhook" and self.robot.secret:
            headers["X-Signature"] = webhook_sign(self.robot.secret, raw)
        timeout = aiohttp.ClientTimeout(total=self.robot.timeout_s)
        try:
            async with self.session.post(
                url, data=raw, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                text_body = await resp.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            # Never the URL in the message: it holds the robot's key.
            reason = type(err).__name__
            if isinstance(err, aiohttp.ClientConnectorError):
                reason += f" ({err.os_error.strerror or err.os_error})"
            raise SendFailed(f"unreachable: {reason}") from err
        wait = TOO_FAST_WAIT_S[kind]
        if status == 429:
            raise TooFast("HTTP 429", _seconds(retry_after, wait))
        if not 200 <= status < 300:
            raise SendFailed(f"HTTP {status}: {text_body[:200]}")
        if kind == "webhook":
            return
        try:
            answer = json.loads(text_body)
        except ValueError:
            raise SendFailed(f"not a JSON answer: {text_body[:200]!r}") from None
        if not isinstance(answer, dict):
            raise SendFailed(f"unexpected answer: {text_body[:200]!r}")
        if kind == "feishu":
            code = answer.get("code", answer.get("StatusCode"))
            msg = answer.get("msg", answer.get("StatusMessage", ""))
            too_fast = {11232, 9499}
        else:
            code = answer.get("errcode")
            msg = answer.get("errmsg", "")
            too_fast = {45009} if kind == "wecom" else {130101}
        if code == 0:
            return
        if code in too_fast:
            raise TooFast(f"code {code}: {msg}", wait)
        raise SendFailed(f"code {code}: {msg}")


def _seconds(value: str | None, default: float) -> float:
    try:
        return min(max(float(value), 1.0), 3600.0) if value is not None else default
    except ValueError:
        return default
