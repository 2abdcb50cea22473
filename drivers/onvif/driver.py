"""The ONVIF camera driver (``kind: onvif``): events through a PullPoint subscription, with
onvif-zeep-async (SOAP, WS-UsernameToken digest) and onvif-parsers (topics).

One connection's life (:meth:`OnvifDriver._session_once`):

1. ``GetSystemDateAndTime`` first, without credentials: the camera's clock minus ours is
   the skew, and every signed request's ``Created`` is shifted by it (a camera refuses a
   digest whose time is off by more than a few seconds, and many school cameras never saw
   an NTP server). The skew goes out as telemetry ``clock_offset_s``, and event times
   are corrected by it.
2. ``GetServices``, or ``GetCapabilities`` where the camera has no GetServices (an Axis
   Q6045-E), for the service addresses; ``GetDeviceInformation`` -> the retained ``meta``
   (vendor, model, firmware, serial); the media profiles, their stream and snapshot URIs
   (kept on the driver, :attr:`OnvifDriver.snapshot_uri`, for the snapshot feature).
3. ``CreatePullPointSubscription`` for ``subscription_s``, then ``PullMessages`` in a loop
   (a long poll of ``pull_timeout_s``, shortened so that it never outlives the renewal),
   ``Renew`` at 80 % of the lifetime the camera granted. A pull that came back at once
   with nothing waits ``pull_cooldown_s`` (cameras that ignore the timeout would be asked
   hundreds of times a second).

On stop the subscription is left to expire, never unsubscribed: the agent may be stopping
because the network is gone, and an Unsubscribe that cannot arrive would only delay the
stop; the camera drops the pull point at its TerminationTime. A fault on pull or renew
(the pull point expired, the camera rebooted) re-creates the subscription after
``pull_cooldown_s`` (``degraded`` meanwhile); a camera that does not answer is ``offline``
and reconnected with backoff 1 s -> ``retry_max_s``. Each is logged once, then at DEBUG.

Events: :mod:`edge_agent.drivers.onvif.events` (Initialized/Changed property states to
edge-triggered contract events; the states are the cursor, committed with the events).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import importlib
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from edge_agent.config.secrets import SecretError, resolve
from edge_agent.driver import DeviceLink, DriverContext, Event, MetricInfo, SnapshotSource
from edge_agent.drivers.device_log import DeviceLog
from edge_agent.drivers.onvif.config import OnvifDevice
from edge_agent.drivers.onvif.events import (
    BadNotification,
    EdgeTracker,
    Ignored,
    Mapped,
    Notification,
    UnknownTopic,
    classify,
    from_zeep,
    parse_duration,
)
from edge_agent.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceTimeout,
    DeviceUnavailable,
    NotDurableError,
    SnapshotError,
)

# onvif-zeep-async (with zeep, lxml, httpx) is imported where it is used: the registry
# builds this driver for check-config too, which never talks to a camera

log = logging.getLogger(__name__)

KIND = "onvif"
PULLPOINT_NS = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"
#: renew when this share of the granted lifetime has passed
RENEW_AT = 0.8
#: messages asked for in one pull
MESSAGE_LIMIT = 100

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """One media profile of the camera, with its addresses (None: the camera gave none)."""

    token: str
    name: str
    width: int | None
    height: int | None
    stream_uri: str | None
    snapshot_uri: str | None


def _import_libraries() -> None:
    for name in ("onvif", "onvif.exceptions", "onvif.util", "onvif_parsers", "zeep.exceptions"):
        importlib.import_module(name)


class _SubscriptionLost(Exception):
    """The camera answered, but the pull point is gone (a fault on pull or renew)."""


def _max_timeout(err: BaseException) -> float | None:
    """``MaxTimeout`` of a PullMessagesFaultResponse in the fault's detail, if that is why."""
    cause: BaseException | None = err
    while cause is not None:
        detail = getattr(cause, "detail", None)
        if detail is not None and hasattr(detail, "iter"):
            for el in detail.iter():
                if isinstance(el.tag, str) and el.tag.endswith("}MaxTimeout") and el.text:
                    return parse_duration(el.text)
        cause = cause.__cause__
    return None


class OnvifDriver(DeviceLog):
    """One ONVIF camera (see the module docstring)."""

    _log = log
    _trouble_zh = "摄像机连接异常"

    kind: ClassVar[str] = KIND
    Config: ClassVar[type[OnvifDevice]] = OnvifDevice

    def __init__(self, config: OnvifDevice, ctx: DriverContext) -> None:
        self.config = config
        self._meta_changed: Callable[[str], None] | None = ctx.meta_changed
        #: GetDeviceInformation, once connected
        self.device_info: dict[str, str] = {}
        #: the camera's media profiles with their addresses, once connected
        self.profiles: list[Profile] = []
        #: the camera's clock minus ours (seconds), once connected
        self.clock_offset_s: float | None = None
        #: the longest PullMessages wait the camera accepts, once it said so
        self.max_pull_s: int | None = None
        self._down_since: str | None = None
        self._online = False
        self._was_online = False
        self._logged: dict[str, int] = {}
        self._tracker = EdgeTracker()
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "events",
                "notifications",
                "duplicates",
                "ignored",
                "unknown_topics",
                "bad_notifications",
                "subscriptions",
                "renewals",
                "pulls",
                "empty_pulls",
            ),
            0,
        )
        #: unknown topics seen, with how often (diagnostics)
        self.unknown_topics: dict[str, int] = {}

    # -- the Driver protocol -------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.config.id

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo(
                "clock_offset_s", "s", "camera clock minus the gateway's, measured at connect"
            ),
        ]

    def meta(self) -> dict[str, Any]:
        info = self.device_info
        return {
            "vendor": info.get("manufacturer") or "ONVIF",
            "model": info.get("model") or "ONVIF camera",
            "firmware": info.get("firmware"),
            "serial": info.get("serial"),
            "protocol": "ONVIF PullPoint",
        }

    def diagnostics(self) -> dict[str, Any]:
        return {
            "host": self.config.host,
            "port": self.config.port,
            "clock_offset_s": self.clock_offset_s,
            "max_pull_s": self.max_pull_s,
            "profiles": [p.__dict__ for p in self.profiles],
            **self.counts,
            "unknown_topics_seen": dict(self.unknown_topics),
        }

    # -- what the snapshot and analytics features read -----------------------------------
    def _profile(self) -> Profile | None:
        for p in self.profiles:
            if p.token == self.config.profile:
                return p
        return self.profiles[0] if self.profiles else None

    @property
    def snapshot_uri(self) -> str | None:
        """The JPEG snapshot address of the configured profile (HTTP, digest or basic auth
        with :meth:`credentials`); None until connected or when the camera has none."""
        p = self._profile()
        return p.snapshot_uri if p else None

    @property
    def stream_uri(self) -> str | None:
        """The RTSP address of the configured profile (the main stream by default)."""
        p = self._profile()
        return p.stream_uri if p else None

    @property
    def substream_uri(self) -> str | None:
        """The RTSP address of the smallest profile (for analytics at a few fps)."""
        sized = [p for p in self.profiles if p.width and p.stream_uri]
        if not sized:
            return self.stream_uri
        return min(sized, key=lambda p: (p.width or 0) * (p.height or 0)).stream_uri

    def snapshot_source(self) -> SnapshotSource | None:
        """The snapshot service fetches the profile's snapshot URI with the camera's login
        (HTTP digest, as the ONVIF cameras we know ask for it); None until connected."""
        uri = self.snapshot_uri
        if uri is None:
            return None
        try:
            user, password = self.credentials()
        except SecretError as err:
            raise SnapshotError(self.device_id, f"password not available: {err}") from err
        return SnapshotSource(uri, user, password, "digest")

    def credentials(self) -> tuple[str, str]:
        """User and password (the secret resolved now) for the snapshot and stream URIs."""
        return self.config.user, self._password()

    def _password(self) -> str:
        return resolve(self.config.password, cred_dir=os.environ.get("CREDENTIALS_DIRECTORY"))

    # -- running -------------------------------------------------------------------------
    async def run(self, link: DeviceLink) -> None:
        self._tracker = EdgeTracker.decode(link.cursor)
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

    async def _session_once(self, link: DeviceLink) -> bool:
        """One connection's life; True when it was online at some point."""
        self._online = False
        self._was_online = False
        try:
            password = self._password()
        except SecretError as err:
            self._down(link, "offline", f"password not available: {err}")
            return False
        # onvif-zeep-async, zeep, lxml, httpx and onvif-parsers take a second to import
        # here (several on a Pi): off the event loop, which carries every other device
        await asyncio.to_thread(_import_libraries)
        from onvif import ONVIFCamera  # type: ignore[import-untyped]

        # no_cache: zeep's WSDL cache is an SQLite file in the home folder; the WSDLs are
        # local files of the package anyway
        camera = ONVIFCamera(
            self.config.host,
            self.config.port,
            self.config.user,
            password,
            no_cache=True,
            adjust_time=True,
        )
        try:
            await self._connect(camera, link)
            await self._events(camera, link)
        except DeviceError as err:
            self._down(link, "offline", err.reason)
        except NotDurableError as err:
            # the states did not move: the next subscription's Initialized burst gives
            # the camera's states again, and what differs is reported then
            self._down(link, "degraded", f"events wait: {err}")
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.timeout_s):
                    await camera.close()
        return self._was_online

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]], limit_s: float = 0) -> T:
        """One request to the camera under a timeout, its failures as DeviceErrors."""
        import aiohttp
        import zeep.exceptions
        from onvif.exceptions import ONVIFError  # type: ignore[import-untyped]

        try:
            async with asyncio.timeout(limit_s or self.config.timeout_s):
                return await fn()
        except TimeoutError as err:
            raise DeviceTimeout(self.device_id, f"no answer to {what}") from err
        except zeep.exceptions.Fault as err:
            codes = [str(getattr(c, "localname", c)) for c in (err.subcodes or [])]
            if any(c.endswith("NotAuthorized") for c in codes):
                raise DeviceError(
                    self.device_id,
                    "wrong user or password, or the camera's clock is far off "
                    "(ter:NotAuthorized) / 用户名或密码错误",
                ) from err
            detail = "/".join(codes) or str(err.code or "")
            raise DeviceProtocolError(
                self.device_id, f"{what}: SOAP fault {detail}: {err.message}"
            ) from err
        except (aiohttp.ClientError, OSError) as err:
            raise DeviceUnavailable(self.device_id, f"cannot reach the camera: {err}") from err
        except ONVIFError as err:
            # onvif-zeep-async wraps what went wrong below it (connection errors too)
            raise DeviceUnavailable(self.device_id, f"{what}: {err}") from err
        except zeep.exceptions.Error as err:
            raise DeviceProtocolError(self.device_id, f"{what}: {err}") from err

    async def _connect(self, camera: Any, link: DeviceLink) -> None:
        # GetSystemDateAndTime (the skew), then GetServices or GetCapabilities
        await self._call("GetSystemDateAndTime/GetServices", camera.update_xaddrs)
        diff = camera.dt_diff
        offset = diff.total_seconds() if diff is not None else 0.0
        if self.clock_offset_s is None or abs(offset - self.clock_offset_s) >= 2:
            if abs(offset) >= 5:
                log.info(
                    "%s: camera clock is %+.0f s off; requests and event times are corrected "
                    "/ 摄像机时钟偏差 %+.0f 秒，已自动校正",
                    self.device_id,
                    offset,
                    offset,
                )
        self.clock_offset_s = offset
        link.telemetry({"clock_offset_s": round(offset, 1)})
        device = await self._call("device service", camera.create_devicemgmt_service)
        info = await self._call("GetDeviceInformation", device.GetDeviceInformation)
        fresh = {
            "manufacturer": str(getattr(info, "Manufacturer", "") or ""),
            "model": str(getattr(info, "Model", "") or ""),
            "firmware": str(getattr(info, "FirmwareVersion", "") or ""),
            "serial": str(getattr(info, "SerialNumber", "") or ""),
        }
        if fresh != self.device_info:
            self.device_info = fresh
            if self._meta_changed is not None:
                self._meta_changed(self.device_id)
        await self._media(camera)

    async def _media(self, camera: Any) -> None:
        media = await self._call("media service", camera.create_media_service)
        answer = await self._call("GetProfiles", media.GetProfiles)
        profiles = []
        for p in answer or []:
            token = str(p.token)
            stream = snapshot = None
            with contextlib.suppress(DeviceProtocolError):
                r = await self._call(
                    "GetStreamUri",
                    functools.partial(
                        media.GetStreamUri,
                        {
                            "ProfileToken": token,
                            "StreamSetup": {
                                "Stream": "RTP-Unicast",
                                "Transport": {"Protocol": "RTSP"},
                            },
                        },
                    ),
                )
                stream = str(r.Uri) if r is not None and r.Uri else None
            with contextlib.suppress(DeviceProtocolError):
                r = await self._call(
                    "GetSnapshotUri",
                    functools.partial(media.GetSnapshotUri, {"ProfileToken": token}),
                )
                snapshot = str(r.Uri) if r is not None and r.Uri else None
            enc = getattr(p, "VideoEncoderConfiguration", None)
            res = getattr(enc, "Resolution", None)
            profiles.append(
                Profile(
                    token,
                    str(getattr(p, "Name", "") or token),
                    int(res.Width) if res is not None and res.Width else None,
                    int(res.Height) if res is not None and res.Height else None,
                    stream,
                    snapshot,
                )
            )
        self.profiles = profiles
        if self.config.profile and all(p.token != self.config.profile for p in profiles):
            self._once(
                "profile",
                "the camera has no profile %r (it has %s); using the first",
                self.config.profile,
                ", ".join(p.token for p in profiles) or "none",
            )

    # -- events --------------------------------------------------------------------------
    async def _events(self, camera: Any, link: DeviceLink) -> None:
        events = await self._call("event service", camera.create_events_service)
        failures = 0
        while True:
            pullpoint, manager, renew_at = await self._subscribe(camera, events)
            self._up(link)
            try:
                await self._pull_loop(pullpoint, manager, renew_at, link)
            except _SubscriptionLost as err:
                failures += 1
                self._down(link, "degraded", f"event subscription lost ({err}); re-subscribing")
                wait = min(self.config.pull_cooldown_s * 2 ** (failures - 1), 60)
                await asyncio.sleep(max(wait, 0.05) * random.uniform(0.8, 1.2))

    async def _subscribe(self, camera: Any, events: Any) -> tuple[Any, Any, float]:
        from onvif.util import normalize_url  # type: ignore[import-untyped]

        lifetime = int(self.config.subscription_s)
        answer = await self._call(
            "CreatePullPointSubscription",
            lambda: events.CreatePullPointSubscription(
                {"InitialTerminationTime": f"PT{lifetime}S"}
            ),
        )
        try:
            address = answer.SubscriptionReference.Address._value_1
        except AttributeError:
            address = None
        if not address:
            raise DeviceProtocolError(self.device_id, "CreatePullPointSubscription gave no address")
        camera.xaddrs[PULLPOINT_NS] = normalize_url(address)
        pullpoint = await self._call("pull point", camera.create_pullpoint_service)
        manager = await self._call(
            "subscription manager",
            lambda: camera.create_subscription_service("PullPointSubscription"),
        )
        self.counts["subscriptions"] += 1
        return pullpoint, manager, self._renew_at(answer, lifetime)

    def _renew_at(self, answer: Any, asked_s: float) -> float:
        """When to renew (monotonic): at 80 % of the lifetime the camera granted, measured
        on its own clock (TerminationTime minus CurrentTime), what we asked if it says
        nothing usable."""
        granted = float(asked_s)
        term = getattr(answer, "TerminationTime", None)
        current = getattr(answer, "CurrentTime", None)
        if isinstance(term, datetime) and isinstance(current, datetime):
            with contextlib.suppress(TypeError):
                seconds = (term - current).total_seconds()
                if 1 <= seconds <= 86400:
                    granted = seconds
        return time.monotonic() + RENEW_AT * granted

    async def _pull_loop(
        self, pullpoint: Any, manager: Any, renew_at: float, link: DeviceLink
    ) -> None:
        lifetime = int(self.config.subscription_s)
        while True:
            now = time.monotonic()
            # a pull waits whole seconds: with less than one left, renew now (early, never
            # late: a Hikvision drops the pull point at its TerminationTime)
            if renew_at - now < 1:
                answer = await self._lost_on_fault(
                    "Renew", lambda: manager.Renew({"TerminationTime": f"PT{lifetime}S"})
                )
                self.counts["renewals"] += 1
                renew_at = self._renew_at(answer, lifetime)
                continue
            longest = min(self.config.pull_timeout_s, self.max_pull_s or math.inf)
            wait = int(max(1, min(longest, renew_at - now)))
            started = time.monotonic()
            try:
                answer = await self._lost_on_fault(
                    "PullMessages",
                    functools.partial(
                        pullpoint.PullMessages,
                        {"Timeout": f"PT{wait}S", "MessageLimit": MESSAGE_LIMIT},
                    ),
                    limit_s=wait + self.config.timeout_s,
                )
            except _SubscriptionLost as lost:
                most = _max_timeout(lost)
                if most is None or most >= wait:
                    raise
                # the camera caps the wait (PullMessagesFaultResponse/MaxTimeout): the
                # subscription is fine, ask again within its limit
                self.max_pull_s = max(1, int(most))
                self._once("max_pull", "the camera allows pulls of %d s at most; using that", most)
                continue
            self.counts["pulls"] += 1
            messages = list(getattr(answer, "NotificationMessage", None) or [])
            if messages:
                await self._take([from_zeep(m) for m in messages], link)
                self._up(link)
            else:
                self.counts["empty_pulls"] += 1
                if time.monotonic() - started < wait / 2:
                    await asyncio.sleep(self.config.pull_cooldown_s)

    async def _lost_on_fault(
        self, what: str, fn: Callable[[], Awaitable[Any]], limit_s: float = 0
    ) -> Any:
        """A fault here means the pull point is gone, not the camera."""
        try:
            return await self._call(what, fn, limit_s)
        except DeviceProtocolError as err:
            raise _SubscriptionLost(err.reason) from err

    async def _take(self, notes: list[Notification], link: DeviceLink) -> None:
        mapped: list[tuple[Notification, Mapped]] = []
        for n in notes:
            self.counts["notifications"] += 1
            if any(fnmatch.fnmatchcase(n.topic, p) for p in self.config.ignore_topics):
                self.counts["ignored"] += 1
                continue
            try:
                m = await classify(n, self.config.names)
            except UnknownTopic:
                self.counts["unknown_topics"] += 1
                self.unknown_topics[n.topic] = self.unknown_topics.get(n.topic, 0) + 1
                self._once(f"topic:{n.topic}", "unknown ONVIF topic %s, not sent", n.topic)
                continue
            except BadNotification as err:
                self.counts["bad_notifications"] += 1
                self._once(f"bad:{n.topic}", "unreadable notification: %s", err)
                continue
            if isinstance(m, Ignored):
                self.counts["ignored"] += 1
                continue
            mapped.append((n, m))
        if not mapped:
            return
        found, states = self._tracker.step(mapped)
        self.counts["duplicates"] += len(mapped) - len(found)
        cursor = EdgeTracker(states).encode()
        if not found and cursor == self._tracker.encode():
            # nothing to tell and the cursor would not change (an all-inactive burst):
            # no commit, no write on the SD card
            self._tracker.adopt(states)
            return
        offset = self.clock_offset_s or 0.0
        batch = [Event(kind, data, ts=None if t is None else t - offset) for kind, data, t in found]
        # the states after these events are the cursor: committed with them, so neither
        # a re-subscription nor a restart of the agent reports a state twice
        await link.commit(batch, cursor=cursor)
        self._tracker.adopt(states)
        self.counts["events"] += len(batch)

    # -- state and logs ------------------------------------------------------------------
    def _up(self, link: DeviceLink) -> None:
        self._was_online = True
        if self._online:
            return
        self._online = True
        if self._down_since is not None:
            log.info("%s: camera events flow again / 摄像机事件恢复", self.device_id)
            self._down_since = None
        link.state("online")

    def _down(self, link: DeviceLink, state: str, reason: str) -> None:
        self._online = False
        super()._down(link, state, reason)
