"""Simulated ONVIF camera (Profile S/T device, media and event services, SOAP 1.2 over HTTP).

Written from the ONVIF Core and Streaming specifications and their WSDLs (``devicemgmt.wsdl``,
``media.wsdl``, ``events.wsdl``, WS-BaseNotification ``b-2.xsd``), and from the real camera
answers described in ``../shared/fixtures/onvif/README.md`` (Hikvision DS-2CD/DS-2DF, a Dahua
IPC, Axis Q6045-E); never from the agent's driver. What it answers, all by ``POST`` on one
port (the operation is the body's first element; the path only matters for a pull point):

device service (``/onvif/device_service``)
    ``GetSystemDateAndTime`` (also without credentials, as the Core spec asks: a client needs
    the camera's clock before it can sign), ``GetDeviceInformation``, ``GetCapabilities``,
    ``GetServices`` (or, with ``get_services=False``, the fault ``ter:ActionNotSupported``
    that an Axis Q6045-E answers, so a client must fall back to ``GetCapabilities``),
    ``SystemReboot``.
media service (``/onvif/Media``)
    ``GetProfiles`` (a main and a sub stream), ``GetStreamUri`` (RTSP, never served),
    ``GetSnapshotUri``; ``GET /onvif/snapshot.jpg`` answers a JPEG behind HTTP digest
    authentication (RFC 7616, MD5, as Hikvision and Dahua cameras ask for it).
event service (``/onvif/Events``)
    ``GetEventProperties`` (the topic set of the camera's ``style``),
    ``CreatePullPointSubscription`` (``InitialTerminationTime`` relative ``PT60S`` or absolute;
    the pull point's address is in the answer, a Hikvision-style path with a timestamp
    ``/onvif/Events/PullSubManager_2026-11-30T02:00:00Z_3`` or a Dahua-style
    ``/onvif/Subscription?Idx=3``), then at that address ``PullMessages`` (long poll: the answer
    comes when a message is queued or after ``Timeout``, capped by ``max_pull_timeout_s``),
    ``Renew``, ``Unsubscribe``. A subscription whose ``TerminationTime`` passed is gone (a
    Hikvision drops it, as IOTech's notes say): a pull or renew there gets a fault. The first
    pull of a new subscription gets one ``PropertyOperation="Initialized"`` message per
    property (every motion, tamper and input state), as real cameras send.

Every operation but ``GetSystemDateAndTime`` checks a WS-Security ``UsernameToken``:
``PasswordDigest`` = Base64(SHA-1(nonce + created + password)) (``PasswordText`` is accepted
too, as the spec allows), and ``Created`` within ``auth_window_s`` of the camera's own clock.
Anything else is the SOAP fault ``env:Sender / ter:NotAuthorized`` with HTTP 400.

Scenario hooks: :meth:`OnvifCamera.motion`, :meth:`~OnvifCamera.tamper`,
:meth:`~OnvifCamera.line_crossed`, :meth:`~OnvifCamera.digital_input`,
:meth:`~OnvifCamera.notify` (any topic), :attr:`~OnvifCamera.replay` (recorded
``PullMessagesResponse`` envelopes answered as they are),
:attr:`~OnvifCamera.clock_skew_s` (the camera's clock minus the true time),
:meth:`~OnvifCamera.reboot` (subscriptions lost, the port refuses connections for a
moment). ``style`` chooses the topics: ``hikvision`` (``RuleEngine/CellMotionDetector/Motion``
``IsMotion``, ``tnshik:AlarmIn``) or ``dahua``
(``VideoSource/MotionAlarm`` ``State``, ``Device/Trigger/DigitalInput``); ``booleans`` how
they are spelt: ``"true"`` (Hikvision, Dahua) or ``"1"`` (Axis).

Nothing here imports ``edge_agent`` or ``drivers``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import secrets
import time
import xml.etree.ElementTree as ET  # parses the test client's own requests
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_USER = "admin"
SOAP = "application/soap+xml; charset=utf-8"

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wstop": "http://docs.oasis-open.org/wsn/t-1",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "ter": "http://www.onvif.org/ver10/error",
    "tns1": "http://www.onvif.org/ver10/topics",
    "tnshik": "http://www.hikvision.com/2011/event/topics",
}
DIGEST_TYPE = NS["wsse"][: -len("secext-1.0.xsd")] + "username-token-profile-1.0#PasswordDigest"
CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"

DEVICE_PATH = "/onvif/device_service"
MEDIA_PATH = "/onvif/Media"
EVENTS_PATH = "/onvif/Events"
SNAPSHOT_PATH = "/onvif/snapshot.jpg"

#: a valid 8x8 baseline JPEG, flat grey: SOI, DQT, SOF0 (1 component), one-code Huffman
#: tables for DC 0 and EOB, the scan (DC 0 then EOB), EOI. A scene renderer can replace it
#: (``OnvifCamera.snapshot_jpeg``).
GREY_JPEG = b"".join(
    bytes.fromhex(part)
    for part in (
        "ffd8",  # SOI
        "ffdb004300" + "01" * 64,  # DQT: table 0, every step 1
        "ffc0000b080008000801011100",  # SOF0: 8 bit, 8x8, one component, table 0
        "ffc4001400" + "01" + "00" * 15 + "00",  # DHT DC 0: one code "0" -> category 0
        "ffc4001410" + "01" + "00" * 15 + "00",  # DHT AC 0: one code "0" -> EOB
        "ffda000801010000" + "3f00",  # SOS: component 1, tables 0/0, spectral 0..63
        "3f",  # the scan: DC "0", EOB "0", padded with ones
        "ffd9",  # EOI
    )
)

Style = Literal["hikvision", "dahua"]

COMMANDS = """\
motion on|off            motion detection starts / stops
tamper on|off [REASON]   tamper (REASON: covered, defocused, scene_change)
line [NAME]              an object crosses the line rule NAME (default Line1)
input N on|off           digital (alarm) input N closes / opens
skew SECONDS             the camera's clock runs SECONDS ahead (negative: behind)
reboot [SECONDS]         reboot: subscriptions lost, the port refuses for SECONDS (default 2)
"""


class SoapFault(Exception):
    """A SOAP 1.2 fault to answer (``code`` Sender/Receiver, ONVIF ``ter:`` subcodes, the
    ``env:Detail`` content)."""

    def __init__(
        self, code: str, subcodes: list[str], reason: str, status: int = 400, detail: str = ""
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.subcodes = subcodes
        self.reason = reason
        self.status = status
        self.detail = detail


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration_s(text: str) -> float | None:
    """``PT60S``, ``PT1M``, ``PT1H2M3.5S``, ``P1D`` (xsd:duration, no years or months)."""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?)?", text.strip())
    if m is None or text.strip() in ("P", "PT"):
        return None
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def _parse_time(text: str) -> float | None:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324  # the digest scheme's own hash


@dataclass
class Message:
    """One notification as the camera queues it."""

    topic: str
    source: list[tuple[str, str]]
    data: list[tuple[str, str]]
    operation: str = "Changed"
    #: the camera's clock when it happened (skew included)
    utc: float = 0.0
    #: the true time it happened, for tests
    true_time: float = 0.0


@dataclass
class Subscription:
    idx: int
    path: str
    termination: float  # camera clock
    queue: list[Message] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pulls: int = 0
    renewals: int = 0


@dataclass
class Counters:
    """What the camera saw, for tests."""

    creates: int = 0
    renewals: int = 0
    unsubscribes: int = 0
    pulls: int = 0
    expired: int = 0
    auth_failures: int = 0
    reboots: int = 0
    snapshots: int = 0
    pull_faults: int = 0
    operations: dict[str, int] = field(default_factory=dict)


class OnvifCamera:
    """One simulated ONVIF camera on ``host:port`` (see the module docstring)."""

    def __init__(
        self,
        *,
        user: str = DEFAULT_USER,
        password: str = "Campus-2026!",  # noqa: S107  # a simulator's demo password
        host: str = "127.0.0.1",
        port: int = 0,
        style: Style = "hikvision",
        booleans: Literal["true", "1"] = "true",
        get_services: bool = True,
        clock_skew_s: float = 0.0,
        auth_window_s: float = 30.0,
        max_pull_timeout_s: float = 60.0,
        max_lifetime_s: float = 3600.0,
        pull_timeout_limit_s: float | None = None,
        manufacturer: str | None = None,
        model: str | None = None,
        firmware: str = "V5.7.3 build 221018",
        serial: str = "SIM0001",
        inputs: int = 1,
    ) -> None:
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.style: Style = style
        self.booleans = booleans
        self.get_services = get_services
        self.clock_skew_s = clock_skew_s
        self.auth_window_s = auth_window_s
        self.max_pull_timeout_s = max_pull_timeout_s
        self.max_lifetime_s = max_lifetime_s
        #: a PullMessages asking to wait longer gets a PullMessagesFaultResponse with
        #: MaxTimeout (as the spec allows; some Uniview and Hikvision firmwares cap it)
        self.pull_timeout_limit_s = pull_timeout_limit_s
        default_make = "HIKVISION" if style == "hikvision" else "Dahua"
        default_model = "DS-2CD2143G2-I" if style == "hikvision" else "IPC-HDW2431T-AS-S2"
        self.manufacturer = manufacturer or default_make
        self.model = model or default_model
        self.firmware = firmware
        self.serial = serial
        self.inputs = inputs
        self.snapshot_jpeg: bytes = GREY_JPEG
        #: raw PullMessagesResponse envelopes to answer the next pulls with, in order
        self.replay: list[bytes] = []
        self.counters = Counters()
        #: every message queued (what a correct client should see), in order
        self.history: list[Message] = []
        self.subscriptions: dict[str, Subscription] = {}
        self._next_idx = 1
        #: property states: (topic, source) -> data (what an Initialized burst repeats)
        self._properties: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[str, str]]] = {}
        self._runner: web.AppRunner | None = None
        self._nonces: set[str] = set()
        self._reboot_task: asyncio.Task[None] | None = None
        self._init_properties()

    # -- life ------------------------------------------------------------------------------
    async def __aenter__(self) -> OnvifCamera:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the HTTP server (``port`` 0 takes an ephemeral port, kept across reboots)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_post("/{tail:.*}", self._soap)
        app.router.add_get(SNAPSHOT_PATH, self._snapshot)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0:
            self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the server and wake every waiting pull."""
        if self._reboot_task is not None:
            self._reboot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reboot_task
            self._reboot_task = None
        await self._unbind()

    async def _unbind(self) -> None:
        for sub in self.subscriptions.values():
            sub.wake.set()
        self.subscriptions.clear()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def now(self) -> float:
        """The camera's clock (UNIX seconds): the true time plus :attr:`clock_skew_s`."""
        return time.time() + self.clock_skew_s

    # -- scenario --------------------------------------------------------------------------
    def _bool(self, value: bool) -> str:
        if self.booleans == "1":
            return "1" if value else "0"
        return "true" if value else "false"

    def _motion_topic(self) -> tuple[str, list[tuple[str, str]], str]:
        if self.style == "hikvision":
            return (
                "tns1:RuleEngine/CellMotionDetector/Motion",
                [
                    ("VideoSourceConfigurationToken", "VideoSourceToken"),
                    ("VideoAnalyticsConfigurationToken", "VideoAnalyticsToken"),
                    ("Rule", "MyMotionDetectorRule"),
                ],
                "IsMotion",
            )
        return ("tns1:VideoSource/MotionAlarm", [("Source", "000")], "State")

    def _tamper_topic(self, reason: str) -> tuple[str, list[tuple[str, str]], str]:
        if reason == "defocused":
            return ("tns1:VideoSource/ImageTooBlurry/ImagingService", [("Source", "000")], "State")
        if reason == "scene_change":
            return (
                "tns1:VideoSource/GlobalSceneChange/ImagingService",
                [("Source", "000")],
                "State",
            )
        token = "VideoSourceToken" if self.style == "hikvision" else "000"
        rule = "MyTamperDetectorRule" if self.style == "hikvision" else "000"
        return (
            "tns1:RuleEngine/TamperDetector/Tamper",
            [
                ("VideoSourceConfigurationToken", token),
                ("VideoAnalyticsConfigurationToken", token),
                ("Rule", rule),
            ],
            "IsTamper",
        )

    def _input_topic(self, n: int) -> tuple[str, list[tuple[str, str]], str]:
        if self.style == "hikvision":
            return (
                "tns1:Device/Trigger/tnshik:AlarmIn",
                [("AlarmInToken", f"AlarmIn_{n}")],
                "State",
            )
        return (
            "tns1:Device/Trigger/DigitalInput",
            [("InputToken", f"{n - 1:03d}")],
            "LogicalState",
        )

    def _init_properties(self) -> None:
        for topic, source, name in (
            self._motion_topic(),
            self._tamper_topic("covered"),
            *(self._input_topic(n) for n in range(1, self.inputs + 1)),
        ):
            self._properties[(topic, tuple(source))] = [(name, self._bool(False))]

    def notify(
        self,
        topic: str,
        source: list[tuple[str, str]],
        data: list[tuple[str, str]],
        *,
        operation: str = "Changed",
    ) -> Message:
        """Queue one notification for every live subscription (any topic, as scripted)."""
        now = time.time()
        msg = Message(topic, source, data, operation, now + self.clock_skew_s, now)
        key = (topic, tuple(source))
        if key in self._properties:
            self._properties[key] = list(data)
        self.history.append(msg)
        for sub in self.subscriptions.values():
            if len(sub.queue) < 1000:  # a camera's queue is bounded; the oldest stay
                sub.queue.append(msg)
            sub.wake.set()
        return msg

    def motion(self, active: bool) -> Message:
        topic, source, name = self._motion_topic()
        return self.notify(topic, source, [(name, self._bool(active))])

    def tamper(self, active: bool, reason: str = "covered") -> Message:
        topic, source, name = self._tamper_topic(reason)
        return self.notify(topic, source, [(name, self._bool(active))])

    def line_crossed(self, rule: str = "Line1", object_id: int = 1) -> Message:
        token = "VideoSourceToken" if self.style == "hikvision" else "000"
        return self.notify(
            "tns1:RuleEngine/LineDetector/Crossed",
            [
                ("VideoSourceConfigurationToken", token),
                ("VideoAnalyticsConfigurationToken", token),
                ("Rule", rule),
            ],
            [("ObjectId", str(object_id))],
        )

    def digital_input(self, n: int, active: bool) -> Message:
        topic, source, name = self._input_topic(n)
        return self.notify(topic, source, [(name, self._bool(active))])

    async def reboot(self, down_s: float = 2.0) -> None:
        """Reboot: every subscription is lost and the port refuses connections for
        ``down_s`` seconds; property states survive (the physical world did not change)."""
        self.counters.reboots += 1
        await self._unbind()
        await asyncio.sleep(down_s)
        await self.start()

    def reboot_soon(self, down_s: float = 2.0) -> None:
        """:meth:`reboot` in the background (what ``SystemReboot`` does)."""
        if self._reboot_task is None or self._reboot_task.done():
            self._reboot_task = asyncio.create_task(self.reboot(down_s), name="onvif-sim-reboot")

    # -- HTTP ------------------------------------------------------------------------------
    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        if not self._digest_ok(request):
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            return web.Response(
                status=401,
                headers={
                    "WWW-Authenticate": f'Digest realm="IP Camera", qop="auth", '
                    f'nonce="{nonce}", algorithm="MD5"'
                },
            )
        self.counters.snapshots += 1
        return web.Response(body=self.snapshot_jpeg, content_type="image/jpeg")

    def _digest_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        f = dict(re.findall(r'(\w+)="?([^",]*)"?', header[7:]))
        if f.get("nonce") not in self._nonces or f.get("username") != self.user:
            return False
        ha1 = _md5(f"{self.user}:{f.get('realm', '')}:{self.password}")
        ha2 = _md5(f"{request.method}:{f.get('uri', '')}")
        want = _md5(f"{ha1}:{f['nonce']}:{f.get('nc', '')}:{f.get('cnonce', '')}:auth:{ha2}")
        return secrets.compare_digest(want, f.get("response", ""))

    async def _soap(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            root = ET.fromstring(body)  # noqa: S314  # a test client's request, on loopback
        except ET.ParseError:
            return self._fault(SoapFault("env:Sender", ["ter:WellFormed"], "not well-formed XML"))
        soap_body = root.find("env:Body", NS)
        if soap_body is None or len(soap_body) == 0:
            return self._fault(SoapFault("env:Sender", ["ter:WellFormed"], "no SOAP 1.2 Body"))
        op_el = soap_body[0]
        op = op_el.tag.rsplit("}", 1)[-1]
        self.counters.operations[op] = self.counters.operations.get(op, 0) + 1
        try:
            if op != "GetSystemDateAndTime":
                self._check_token(root.find("env:Header", NS))
            if op == "PullMessages" and self.replay:
                # a recorded camera answer, byte for byte (tests replay real captures)
                self._subscription(request)
                self.counters.pulls += 1
                return web.Response(body=self.replay.pop(0), content_type=SOAP.split(";")[0])
            handler = getattr(self, f"_op_{op}", None)
            if handler is None:
                raise SoapFault(
                    "env:Receiver",
                    ["ter:ActionNotSupported"],
                    f"Optional Action Not Implemented: {op}",
                    status=500,
                )
            answer = await handler(op_el, request)
        except SoapFault as fault:
            return self._fault(fault)
        return web.Response(text=self._envelope(answer), content_type=SOAP.split(";")[0])

    def _check_token(self, header: ET.Element | None) -> None:
        token = None if header is None else header.find("wsse:Security/wsse:UsernameToken", NS)
        if token is None:
            self._refuse("no WS-Security UsernameToken")
            return
        user = token.findtext("wsse:Username", "", NS)
        password_el = token.find("wsse:Password", NS)
        nonce = token.findtext("wsse:Nonce", "", NS)
        created = token.findtext("wsu:Created", "", NS)
        if password_el is None or user != self.user:
            self._refuse("unknown user")
            return
        given = (password_el.text or "").strip()
        if password_el.get("Type", DIGEST_TYPE).endswith("#PasswordText"):
            ok = secrets.compare_digest(given, self.password)
        else:
            try:
                raw_nonce = base64.b64decode(nonce)
            except ValueError:
                raw_nonce = b""
            want = base64.b64encode(
                # SHA-1 is what WS-Security UsernameToken Profile 1.0 prescribes
                hashlib.sha1(raw_nonce + created.encode() + self.password.encode()).digest()  # noqa: S324
            ).decode()
            ok = secrets.compare_digest(given, want)
        if not ok:
            self._refuse("wrong password digest")
        when = _parse_time(created) if created else None
        if when is not None and abs(when - self.now()) > self.auth_window_s:
            # the camera judges Created by its own clock: a client that does not adjust for
            # the camera's skew is refused like a wrong password (Hikvision does this)
            self._refuse(f"Created {created} is not within {self.auth_window_s:g} s")

    def _refuse(self, why: str) -> None:
        self.counters.auth_failures += 1
        log.debug("onvif sim: NotAuthorized: %s", why)
        raise SoapFault("env:Sender", ["ter:NotAuthorized"], "Sender not Authorized")

    def _envelope(self, body: str) -> str:
        decl = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {decl}>'
            f"<env:Header/><env:Body>{body}</env:Body></env:Envelope>"
        )

    def _fault(self, fault: SoapFault) -> web.Response:
        sub = ""
        for code in reversed(fault.subcodes):
            sub = f"<env:Subcode><env:Value>{code}</env:Value>{sub}</env:Subcode>"
        body = (
            f"<env:Fault><env:Code><env:Value>{fault.code}</env:Value>{sub}</env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{escape(fault.reason)}</env:Text>'
            "</env:Reason>"
            + (f"<env:Detail>{fault.detail}</env:Detail>" if fault.detail else "")
            + "</env:Fault>"
        )
        return web.Response(
            status=fault.status, text=self._envelope(body), content_type=SOAP.split(";")[0]
        )

    # -- device service --------------------------------------------------------------------
    async def _op_GetSystemDateAndTime(self, _el: ET.Element, _r: web.Request) -> str:
        t = datetime.fromtimestamp(self.now(), UTC)

        def dt(tag: str, v: datetime) -> str:
            return (
                f"<tt:{tag}><tt:Time><tt:Hour>{v.hour}</tt:Hour><tt:Minute>{v.minute}</tt:Minute>"
                f"<tt:Second>{v.second}</tt:Second></tt:Time><tt:Date><tt:Year>{v.year}</tt:Year>"
                f"<tt:Month>{v.month}</tt:Month><tt:Day>{v.day}</tt:Day></tt:Date></tt:{tag}>"
            )

        local = t + timedelta(hours=8)
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>CST-8:00:00</tt:TZ></tt:TimeZone>"
            f"{dt('UTCDateTime', t)}{dt('LocalDateTime', local)}"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    async def _op_GetDeviceInformation(self, _el: ET.Element, _r: web.Request) -> str:
        return (
            "<tds:GetDeviceInformationResponse>"
            f"<tds:Manufacturer>{escape(self.manufacturer)}</tds:Manufacturer>"
            f"<tds:Model>{escape(self.model)}</tds:Model>"
            f"<tds:FirmwareVersion>{escape(self.firmware)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{escape(self.serial)}</tds:SerialNumber>"
            "<tds:HardwareId>88</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )

    async def _op_GetCapabilities(self, _el: ET.Element, _r: web.Request) -> str:
        b = self.base
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{b}{DEVICE_PATH}</tt:XAddr></tt:Device>"
            f"<tt:Events><tt:XAddr>{b}{EVENTS_PATH}</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>true</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false"
            "</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>"
            f"<tt:Media><tt:XAddr>{b}{MEDIA_PATH}</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    async def _op_GetServices(self, _el: ET.Element, _r: web.Request) -> str:
        if not self.get_services:
            # an Axis Q6045-E (fw 5.55) answers GetServices with a fault: fall back
            raise SoapFault(
                "env:Receiver",
                ["ter:ActionNotSupported"],
                "Optional Action Not Implemented",
                status=500,
            )
        b = self.base
        services = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{b}{path}</tds:XAddr>"
            f"<tds:Version><tt:Major>{major}</tt:Major><tt:Minor>{minor}</tt:Minor>"
            "</tds:Version></tds:Service>"
            for ns, path, major, minor in (
                (NS["tds"], DEVICE_PATH, 17, 12),
                (NS["trt"], MEDIA_PATH, 17, 12),
                (NS["tev"], EVENTS_PATH, 17, 12),
            )
        )
        return f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>"

    async def _op_SystemReboot(self, _el: ET.Element, _r: web.Request) -> str:
        self.reboot_soon()
        return (
            "<tds:SystemRebootResponse><tds:Message>Rebooting in 1 second"
            "</tds:Message></tds:SystemRebootResponse>"
        )

    # -- media service ---------------------------------------------------------------------
    PROFILES = (("Profile_1", "mainStream", 2560, 1440), ("Profile_2", "subStream", 640, 360))

    async def _op_GetProfiles(self, _el: ET.Element, _r: web.Request) -> str:
        profiles = "".join(
            f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{name}</tt:Name>'
            '<tt:VideoSourceConfiguration token="VideoSourceToken"><tt:Name>VideoSourceConfig'
            "</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken>"
            '<tt:Bounds x="0" y="0" width="2560" height="1440"/></tt:VideoSourceConfiguration>'
            f'<tt:VideoEncoderConfiguration token="VideoEncoderToken_{token[-1]}"><tt:Name>'
            f"VideoEncoder_{token[-1]}</tt:Name><tt:UseCount>1</tt:UseCount>"
            "<tt:Encoding>H264</tt:Encoding><tt:Resolution>"
            f"<tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height></tt:Resolution>"
            "<tt:Quality>3</tt:Quality></tt:VideoEncoderConfiguration></trt:Profiles>"
            for token, name, w, h in self.PROFILES
        )
        return f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"

    def _profile_token(self, el: ET.Element) -> str:
        token = el.findtext("trt:ProfileToken", "", NS).strip()
        if token not in {p[0] for p in self.PROFILES}:
            raise SoapFault("env:Sender", ["ter:InvalidArgVal", "ter:NoProfile"], "no such profile")
        return token

    async def _op_GetStreamUri(self, el: ET.Element, _r: web.Request) -> str:
        token = self._profile_token(el)
        channel = "101" if token == self.PROFILES[0][0] else "102"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            "<trt:GetStreamUriResponse><trt:MediaUri>"
            f"<tt:Uri>rtsp://{host}:554/Streaming/Channels/{channel}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            "</trt:MediaUri></trt:GetStreamUriResponse>"
        )

    async def _op_GetSnapshotUri(self, el: ET.Element, _r: web.Request) -> str:
        self._profile_token(el)
        return (
            "<trt:GetSnapshotUriResponse><trt:MediaUri>"
            f"<tt:Uri>{self.base}{SNAPSHOT_PATH}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            "</trt:MediaUri></trt:GetSnapshotUriResponse>"
        )

    # -- event service ---------------------------------------------------------------------
    def _topics(self) -> list[tuple[str, list[str], list[str]]]:
        """(topic, source item names, data item names) of every topic the camera sends."""
        motion, msrc, mname = self._motion_topic()
        tamper, tsrc, tname = self._tamper_topic("covered")
        inp, isrc, iname = self._input_topic(1)
        rule_src = ["VideoSourceConfigurationToken", "VideoAnalyticsConfigurationToken", "Rule"]
        return [
            (motion, [n for n, _ in msrc], [mname]),
            (tamper, [n for n, _ in tsrc], [tname]),
            ("tns1:VideoSource/ImageTooBlurry/ImagingService", ["Source"], ["State"]),
            ("tns1:VideoSource/GlobalSceneChange/ImagingService", ["Source"], ["State"]),
            ("tns1:RuleEngine/LineDetector/Crossed", rule_src, ["ObjectId"]),
            (inp, [n for n, _ in isrc], [iname]),
        ]

    async def _op_GetEventProperties(self, _el: ET.Element, _r: web.Request) -> str:
        tree: dict[str, Any] = {}
        for topic, source, data in self._topics():
            node = tree
            for part in topic.split("/"):
                node = node.setdefault(part, {})
            node["__leaf__"] = (source, data)

        def render(node: dict[str, Any]) -> str:
            out = []
            for name, child in node.items():
                if name == "__leaf__":
                    continue
                inner = render(child)
                if "__leaf__" in child:
                    source, data = child["__leaf__"]
                    items = "".join(
                        f'<tt:SimpleItemDescription Name="{n}" Type="xs:string"/>' for n in source
                    )
                    ditems = "".join(
                        f'<tt:SimpleItemDescription Name="{n}" Type="xs:boolean"/>' for n in data
                    )
                    inner += (
                        '<tt:MessageDescription IsProperty="true">'
                        f"<tt:Source>{items}</tt:Source><tt:Data>{ditems}</tt:Data>"
                        "</tt:MessageDescription>"
                    )
                    out.append(f'<{name} wstop:topic="true">{inner}</{name}>')
                else:
                    out.append(f"<{name}>{inner}</{name}>")
            return "".join(out)

        return (
            "<tev:GetEventPropertiesResponse>"
            "<tev:TopicNamespaceLocation>http://www.onvif.org/onvif/ver10/topics/topicns.xml"
            "</tev:TopicNamespaceLocation><wsnt:FixedTopicSet>true</wsnt:FixedTopicSet>"
            f"<wstop:TopicSet>{render(tree)}</wstop:TopicSet>"
            f"<wsnt:TopicExpressionDialect>{CONCRETE_SET}</wsnt:TopicExpressionDialect>"
            "<wsnt:TopicExpressionDialect>http://docs.oasis-open.org/wsnt/t-1/TopicExpression/"
            "ConcreteSet</wsnt:TopicExpressionDialect>"
            "<tev:MessageContentFilterDialect>http://www.onvif.org/ver10/tev/messageContentFilter/"
            "ItemFilter</tev:MessageContentFilterDialect>"
            "<tev:MessageContentSchemaLocation>http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
            "</tev:MessageContentSchemaLocation></tev:GetEventPropertiesResponse>"
        )

    def _termination(self, text: str | None, default_s: float = 60.0) -> float:
        """An xsd:duration (relative to the camera's clock) or an absolute dateTime."""
        now = self.now()
        if not text or not text.strip():
            return now + default_s
        rel = _duration_s(text)
        if rel is not None:
            return now + min(rel, self.max_lifetime_s)
        absolute = _parse_time(text)
        if absolute is None or absolute <= now:
            raise SoapFault(
                "env:Sender", ["ter:InvalidArgVal"], f"invalid termination time {text!r}"
            )
        return min(absolute, now + self.max_lifetime_s)

    async def _op_CreatePullPointSubscription(self, el: ET.Element, _r: web.Request) -> str:
        termination = self._termination(el.findtext("tev:InitialTerminationTime", None, NS))
        idx = self._next_idx
        self._next_idx += 1
        if self.style == "hikvision":
            # a Hikvision pull point has an ISO timestamp (with ':') in its path
            path = f"{EVENTS_PATH}/PullSubManager_{_iso(self.now())}_{idx}"
        else:
            path = f"/onvif/Subscription?Idx={idx}"
        sub = Subscription(idx, path, termination)
        now = time.time()
        for (topic, source), data in self._properties.items():
            sub.queue.append(
                Message(topic, list(source), list(data), "Initialized", self.now(), now)
            )
        self.subscriptions[path] = sub
        self.counters.creates += 1
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa:Address>{escape(self.base + path)}</wsa:Address></tev:SubscriptionReference>"
            f"<wsnt:CurrentTime>{_iso(self.now())}</wsnt:CurrentTime>"
            f"<wsnt:TerminationTime>{_iso(termination)}</wsnt:TerminationTime>"
            "</tev:CreatePullPointSubscriptionResponse>"
        )

    def _subscription(self, request: web.Request) -> Subscription:
        sub = self.subscriptions.get(request.path_qs)
        if sub is not None and sub.termination < self.now():
            # past its TerminationTime the pull point is gone
            del self.subscriptions[request.path_qs]
            self.counters.expired += 1
            sub = None
        if sub is None:
            raise SoapFault(
                "env:Sender",
                ["ter:InvalidArgVal", "ter:NoSubscription"],
                f"no subscription at {request.path_qs}",
            )
        return sub

    async def _op_PullMessages(self, el: ET.Element, request: web.Request) -> str:
        sub = self._subscription(request)
        timeout = _duration_s(el.findtext("tev:Timeout", "PT1S", NS)) or 0.0
        limit_s = self.pull_timeout_limit_s
        if limit_s is not None and timeout > limit_s:
            self.counters.pull_faults += 1
            raise SoapFault(
                "env:Sender",
                ["ter:InvalidArgVal"],
                "Timeout exceeds the maximum",
                detail="<tev:PullMessagesFaultResponse>"
                f"<tev:MaxTimeout>PT{limit_s:g}S</tev:MaxTimeout>"
                "<tev:MaxMessageLimit>100</tev:MaxMessageLimit>"
                "</tev:PullMessagesFaultResponse>",
            )
        limit_text = el.findtext("tev:MessageLimit", "100", NS).strip()
        limit = int(limit_text) if limit_text.isdigit() else 100
        sub.pulls += 1
        self.counters.pulls += 1
        if not sub.queue:
            sub.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(timeout, self.max_pull_timeout_s)):
                    await sub.wake.wait()
        if self.subscriptions.get(request.path_qs) is not sub:
            # rebooted or unsubscribed while waiting
            raise SoapFault("env:Receiver", ["ter:NoSubscription"], "subscription lost")
        taken, sub.queue[:] = sub.queue[: max(limit, 1)], sub.queue[max(limit, 1) :]
        messages = "".join(self._notification(m) for m in taken)
        return (
            f"<tev:PullMessagesResponse><tev:CurrentTime>{_iso(self.now())}</tev:CurrentTime>"
            f"<tev:TerminationTime>{_iso(sub.termination)}</tev:TerminationTime>"
            f"{messages}</tev:PullMessagesResponse>"
        )

    def _notification(self, m: Message) -> str:
        def items(pairs: list[tuple[str, str]]) -> str:
            return "".join(
                f"<tt:SimpleItem Name={quoteattr(n)} Value={quoteattr(v)}/>" for n, v in pairs
            )

        return (
            f'<wsnt:NotificationMessage><wsnt:Topic Dialect="{CONCRETE_SET}">'
            f"{escape(m.topic)}</wsnt:Topic><wsnt:Message>"
            f'<tt:Message UtcTime="{_iso(m.utc)}" PropertyOperation="{m.operation}">'
            f"<tt:Source>{items(m.source)}</tt:Source><tt:Data>{items(m.data)}</tt:Data>"
            "</tt:Message></wsnt:Message></wsnt:NotificationMessage>"
        )

    async def _op_Renew(self, el: ET.Element, request: web.Request) -> str:
        sub = self._subscription(request)
        sub.termination = self._termination(el.findtext("wsnt:TerminationTime", None, NS))
        sub.renewals += 1
        self.counters.renewals += 1
        return (
            f"<wsnt:RenewResponse><wsnt:TerminationTime>{_iso(sub.termination)}"
            f"</wsnt:TerminationTime><wsnt:CurrentTime>{_iso(self.now())}</wsnt:CurrentTime>"
            "</wsnt:RenewResponse>"
        )

    async def _op_Unsubscribe(self, _el: ET.Element, request: web.Request) -> str:
        sub = self._subscription(request)
        del self.subscriptions[sub.path]
        sub.wake.set()
        self.counters.unsubscribes += 1
        return "<wsnt:UnsubscribeResponse/>"

    async def _op_SetSynchronizationPoint(self, _el: ET.Element, request: web.Request) -> str:
        sub = self._subscription(request)
        now = time.time()
        for (topic, source), data in self._properties.items():
            sub.queue.append(
                Message(topic, list(source), list(data), "Initialized", self.now(), now)
            )
        sub.wake.set()
        return "<tev:SetSynchronizationPointResponse/>"


async def run_command(cam: OnvifCamera, line: str) -> str:
    """One scenario command (see :data:`COMMANDS`), and what it did; raises ``ValueError``
    on a bad one."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return ""
    cmd, args = words[0], words[1:]

    def on(word: str) -> bool:
        if word not in ("on", "off"):
            raise ValueError(f"expected on or off, not {word!r}")
        return word == "on"

    if cmd == "motion" and len(args) == 1:
        cam.motion(on(args[0]))
    elif cmd == "tamper" and len(args) in (1, 2):
        cam.tamper(on(args[0]), args[1] if len(args) == 2 else "covered")
    elif cmd == "line" and len(args) <= 1:
        cam.line_crossed(args[0] if args else "Line1")
    elif cmd == "input" and len(args) == 2 and args[0].isdigit():
        cam.digital_input(int(args[0]), on(args[1]))
    elif cmd == "skew" and len(args) == 1:
        cam.clock_skew_s = float(args[0])
    elif cmd == "reboot" and len(args) <= 1:
        await cam.reboot(float(args[0]) if args else 2.0)
    else:
        raise ValueError(f"unknown command {line.strip()!r}; commands:\n{COMMANDS}")
    return f"done: {line.strip()}"
