"""``edge-agent discover``: find the ONVIF cameras on the school's network and print a
config stanza for each.

1. **WS-Discovery** (WS-Discovery 2005/04, which ONVIF Core §7.3 uses): one SOAP 1.2
   ``Probe`` for ``dn:NetworkVideoTransmitter``, sent to the multicast group
   239.255.255.250:3702 with a TTL of 1 (it never leaves the local network segment) and,
   unicast, to every ``--host`` given (cameras on another subnet, and the tests). Answers
   (``ProbeMatches`` whose ``RelatesTo`` is our ``MessageID``) are collected for
   ``--timeout`` seconds, or until every ``--host`` answered when multicast is off.
2. **ONVIF probe** of each answer, plain SOAP 1.2 over aiohttp on its first ``XAddr``:
   ``GetSystemDateAndTime`` (no login; gives the camera's clock offset, so a
   WS-UsernameToken made on this gateway is not refused for a skewed clock),
   ``GetDeviceInformation`` (manufacturer, model, firmware, serial; most cameras want a
   login: ``--username`` and the password from ``--password-env``) and
   ``GetCapabilities`` (device, media, events, analytics services).
3. **Print** one YAML ``devices:`` item per camera (kind ``onvif``, the password as
   ``${cred:...}``), with what was learnt as comments; what failed is said there too.

It sends nothing but the Probe and those three requests, and only to what answered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
import secrets
import socket
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

MULTICAST = ("239.255.255.250", 3702)
WSD_PORT = 3702
_NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
_NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
_NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_PW_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/"
    "oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
)
_NONCE_B64 = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
#: an answer bigger than this is not a ProbeMatches (and is not parsed)
MAX_DATAGRAM = 64 * 1024
MAX_SOAP = 256 * 1024


# -- WS-Discovery ---------------------------------------------------------------------
def probe_message(message_id: str) -> bytes:
    """The Probe for ONVIF network video transmitters (WS-Discovery 2005/04, SOAP 1.2)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{_NS_SOAP}" xmlns:a="{_NS_WSA}" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
        "<s:Header>"
        '<a:Action s:mustUnderstand="1">'
        "http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>"
        f"<a:MessageID>{message_id}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{_NS_WSA}/role/anonymous</a:Address></a:ReplyTo>"
        '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>'
        "</s:Header>"
        "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    ).encode()


@dataclass
class ProbeMatch:
    """One device that answered the Probe."""

    address: str  # its endpoint reference (urn:uuid:...)
    xaddrs: list[str]
    scopes: list[str]
    types: list[str]
    sender: str = ""

    def scope(self, kind: str) -> str | None:
        """The value of ``onvif://www.onvif.org/{kind}/...`` (URL-decoded), if any."""
        prefix = f"onvif://www.onvif.org/{kind}/"
        for s in self.scopes:
            if s.lower().startswith(prefix):
                return unquote(s[len(prefix) :])
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(data: bytes, limit: int) -> ET.Element:
    """XML from the network: bounded, and no DTD (no entity tricks)."""
    if len(data) > limit:
        raise ValueError(f"answer of {len(data)} bytes is too large")
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        raise ValueError("answer carries a DTD; refused")
    return ET.fromstring(data)  # noqa: S314 - bounded, no DTD: checked above


def _children(el: ET.Element, name: str) -> Iterable[ET.Element]:
    return (c for c in el.iter() if _local(c.tag) == name)


def _text(el: ET.Element, name: str) -> str | None:
    for c in _children(el, name):
        return (c.text or "").strip()
    return None


def parse_probe_matches(data: bytes, message_id: str | None = None) -> list[ProbeMatch]:
    """The ProbeMatch items of an answer; [] when it answers another Probe (``RelatesTo``
    is not ``message_id``) or is not a ProbeMatches at all. Raises ValueError for an
    answer that is not XML."""
    try:
        root = _parse(data, MAX_DATAGRAM)
    except ET.ParseError as err:
        raise ValueError(f"not XML: {err}") from err
    if message_id is not None:
        relates = _text(root, "RelatesTo")
        if relates is not None and relates != message_id:
            return []
    out = []
    for match in _children(root, "ProbeMatch"):
        address = ""
        for epr in _children(match, "EndpointReference"):
            address = _text(epr, "Address") or ""
        out.append(
            ProbeMatch(
                address=address,
                xaddrs=(_text(match, "XAddrs") or "").split(),
                scopes=(_text(match, "Scopes") or "").split(),
                types=(_text(match, "Types") or "").split(),
            )
        )
    return out


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.matches: dict[str, ProbeMatch] = {}
        self.senders: set[str] = set()
        self.changed = asyncio.Event()
        self.bad = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            found = parse_probe_matches(data, self.message_id)
        except ValueError:
            self.bad += 1
            return
        host = str(addr[0])
        for m in found:
            m.sender = host
            self.matches.setdefault(m.address or f"{host}:{len(self.matches)}", m)
        if found:
            self.senders.add(f"{host}:{addr[1]}")
            self.changed.set()


def parse_target(text: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` (``[v6]:PORT``) of ``--host``."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:]+)(?::(\d+))?|([0-9a-fA-F:]+)", text)
    if not m:
        raise ValueError(f"not a host or host:port: {text!r}")
    host = m.group(1) or m.group(3) or m.group(5)
    port = int(m.group(2) or m.group(4) or WSD_PORT)
    return host, port


async def ws_discover(
    hosts: list[tuple[str, int]], *, multicast: bool, timeout_s: float
) -> list[ProbeMatch]:
    """Send the Probe (multicast and/or to ``hosts``) and collect the ProbeMatches."""
    loop = asyncio.get_running_loop()
    message_id = f"urn:uuid:{uuid.uuid4()}"
    family = (
        socket.AF_INET6 if any(":" in h for h, _ in hosts) and not multicast else socket.AF_INET
    )
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if multicast:
        # TTL 1: the Probe stays on this network segment, as WS-Discovery wants.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))  # noqa: S104 - answers only
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Collector(message_id), sock=sock
    )
    try:
        probe = probe_message(message_id)
        if multicast:
            transport.sendto(probe, MULTICAST)
        for host, port in hosts:
            transport.sendto(probe, (host, port))
        wanted = {f"{h}:{p}" for h, p in hosts}
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            if not multicast and wanted and wanted <= proto.senders:
                break  # every host asked answered: no need to wait out the window
            proto.changed.clear()
            try:
                async with asyncio.timeout(left):
                    await proto.changed.wait()
            except TimeoutError:
                break
    finally:
        transport.close()
    return list(proto.matches.values())


# -- ONVIF over SOAP -----------------------------------------------------------------
def username_token(username: str, password: str, created: dt.datetime) -> str:
    """WS-UsernameToken with PasswordDigest = Base64(SHA-1(nonce + created + password))
    (ONVIF Core §5.9.4, WS-Security UsernameToken Profile 1.0)."""
    nonce = secrets.token_bytes(16)
    stamp = created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    digest = hashlib.sha1(nonce + stamp.encode() + password.encode()).digest()  # noqa: S324
    return (
        f'<wsse:Security xmlns:wsse="{_NS_WSSE}" xmlns:wsu="{_NS_WSU}" s:mustUnderstand="1">'
        "<wsse:UsernameToken>"
        f"<wsse:Username>{_xml_escape(username)}</wsse:Username>"
        f'<wsse:Password Type="{_PW_DIGEST}">{base64.b64encode(digest).decode()}</wsse:Password>'
        f'<wsse:Nonce EncodingType="{_NONCE_B64}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
        f"<wsu:Created>{stamp}</wsu:Created>"
        "</wsse:UsernameToken></wsse:Security>"
    )


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def soap(body: str, header: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{_NS_SOAP}" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
        'xmlns:tt="http://www.onvif.org/ver10/schema">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


class SoapFault(Exception):
    """The camera answered with a SOAP fault (NotAuthorized ...)."""


def fault_of(root: ET.Element) -> str | None:
    """``subcode: reason`` of a SOAP fault, None when ``root`` is not one."""
    for fault in _children(root, "Fault"):
        codes = [(v.text or "").strip() for v in _children(fault, "Value")]
        reason = " ".join(
            (t.text or "").strip() for r in _children(fault, "Reason") for t in r
        ).strip()
        code = codes[-1] if codes else "fault"
        return f"{code}: {reason}" if reason else code
    return None


def parse_datetime(root: ET.Element) -> dt.datetime | None:
    """The camera's UTC clock from a GetSystemDateAndTimeResponse."""
    for utc in _children(root, "UTCDateTime"):
        try:
            parts = {
                k: int(_text(utc, k) or "")
                for k in ("Year", "Month", "Day", "Hour", "Minute", "Second")
            }
            return dt.datetime(
                parts["Year"], parts["Month"], parts["Day"], parts["Hour"],
                parts["Minute"], parts["Second"], tzinfo=dt.UTC,
            )  # fmt: skip
        except ValueError:
            return None
    return None


def parse_device_information(root: ET.Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for info in _children(root, "GetDeviceInformationResponse"):
        for key in ("Manufacturer", "Model", "FirmwareVersion", "SerialNumber", "HardwareId"):
            value = _text(info, key)
            if value:
                out[key] = value
    return out


def parse_capabilities(root: ET.Element) -> dict[str, str]:
    """Service -> XAddr of a GetCapabilitiesResponse (Device, Media, Events, Analytics,
    Imaging, PTZ, and the Extension's services)."""
    out: dict[str, str] = {}
    for caps in _children(root, "Capabilities"):
        for service in caps.iter():
            name = _local(service.tag)
            for child in service:
                if _local(child.tag) == "XAddr" and (child.text or "").strip():
                    out.setdefault(name, (child.text or "").strip())
    return out


@dataclass
class Camera:
    """What discover learnt of one device."""

    match: ProbeMatch
    xaddr: str | None = None
    info: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    clock_offset_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        if self.xaddr:
            return urlsplit(self.xaddr).hostname or self.match.sender
        return self.match.sender

    @property
    def port(self) -> int:
        if self.xaddr:
            parts = urlsplit(self.xaddr)
            return parts.port or (443 if parts.scheme == "https" else 80)
        return 80


def pick_xaddr(match: ProbeMatch) -> str | None:
    """The device service URL to ask: the sender's own address first (a camera with two
    interfaces lists both), else the first http one."""
    http = [x for x in match.xaddrs if x.startswith(("http://", "https://"))]
    for x in http:
        if urlsplit(x).hostname == match.sender:
            return x
    return http[0] if http else None


async def onvif_probe(
    match: ProbeMatch, *, username: str | None, password: str | None, timeout_s: float
) -> Camera:
    """Ask the device service what the device is; problems are kept, never raised."""
    import aiohttp

    cam = Camera(match, pick_xaddr(match))
    if cam.xaddr is None:
        cam.problems.append("no http XAddr in its answer: not probed")
        return cam
    url = cam.xaddr

    async def call(session: aiohttp.ClientSession, action: str, body: str, auth: bool) -> Any:
        header = ""
        if auth and username is not None:
            now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=cam.clock_offset_s or 0.0)
            header = username_token(username, password or "", now)
        ctype = f'application/soap+xml; charset=utf-8; action="{action}"'
        async with session.post(
            url, data=soap(body, header), headers={"Content-Type": ctype}
        ) as resp:
            raw = await resp.content.read(MAX_SOAP + 1)
        try:
            root = _parse(raw, MAX_SOAP)
        except (ET.ParseError, ValueError) as err:
            raise SoapFault(f"HTTP {resp.status}, not a SOAP answer ({err})") from None
        fault = fault_of(root)
        if fault is not None:
            raise SoapFault(fault)
        return root

    device = "http://www.onvif.org/ver10/device/wsdl"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                root = await call(
                    session, f"{device}/GetSystemDateAndTime", "<tds:GetSystemDateAndTime/>", False
                )
                clock = parse_datetime(root)
                if clock is not None:
                    cam.clock_offset_s = round(clock.timestamp() - time.time(), 1)
            except SoapFault as err:
                cam.problems.append(f"GetSystemDateAndTime: {err}")
            for action, body in (
                ("GetDeviceInformation", "<tds:GetDeviceInformation/>"),
                (
                    "GetCapabilities",
                    "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>",
                ),
            ):
                try:
                    root = await call(session, f"{device}/{action}", body, True)
                except SoapFault as err:
                    hint = "" if username else " (give --username and --password-env)"
                    cam.problems.append(f"{action}: {err}{hint}")
                    continue
                if action == "GetDeviceInformation":
                    cam.info = parse_device_information(root)
                else:
                    cam.services = parse_capabilities(root)
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        cam.problems.append(f"{url}: {type(err).__name__} {err}".strip())
    return cam


# -- the stanza -----------------------------------------------------------------------
def suggest_id(cam: Camera, taken: set[str]) -> str:
    """A device id (``[a-z0-9][a-z0-9_-]{0,63}``) from the model and the address."""
    model = cam.info.get("Model") or cam.match.scope("hardware") or "cam"
    host = cam.host.replace(":", "-").replace(".", "-")
    try:
        ip = ipaddress.ip_address(cam.host)
        if ip.version == 4:
            host = str(ip).rsplit(".", 1)[-1]
    except ValueError:
        pass
    base = re.sub(r"[^a-z0-9_-]+", "-", f"cam-{model}-{host}".lower()).strip("-_")[:60]
    ident, n = base, 2
    while ident in taken:
        ident, n = f"{base}-{n}", n + 1
    taken.add(ident)
    return ident


def stanza(cam: Camera, ident: str, username: str | None) -> str:
    """One ``devices:`` item (YAML, indented for a ``devices:`` list), with comments."""
    info = cam.info
    name = " ".join(
        v for v in (info.get("Manufacturer"), info.get("Model")) if v
    ) or cam.match.scope("name")
    lines = [f"  # {name or 'ONVIF device'} at {cam.host}"]
    facts = [
        f"firmware {info['FirmwareVersion']}" if "FirmwareVersion" in info else "",
        f"serial {info['SerialNumber']}" if "SerialNumber" in info else "",
    ]
    if any(facts):
        lines.append("  # " + ", ".join(f for f in facts if f))
    lines.append(f"  # endpoint {cam.match.address or '?'}; device service {cam.xaddr or '?'}")
    if cam.services:
        lines.append(
            "  # services: " + ", ".join(f"{k} {v}" for k, v in sorted(cam.services.items()))
        )
    if cam.clock_offset_s is not None and abs(cam.clock_offset_s) >= 5:
        lines.append(f"  # its clock is {cam.clock_offset_s:+.0f} s off the gateway's")
    for problem in cam.problems:
        lines.append(f"  # NOTE: {problem}")
    item: dict[str, Any] = {"id": ident, "kind": "onvif"}
    if name:
        item["name"] = name
    item["host"] = cam.host
    item["port"] = cam.port
    item["user"] = username or "admin"
    item["password"] = f"${{cred:{ident}}}"
    body = yaml.safe_dump([item], allow_unicode=True, sort_keys=False).rstrip("\n")
    lines += ["  " + line for line in body.splitlines()]
    return "\n".join(lines)


def render(cameras: list[Camera], username: str | None) -> str:
    taken: set[str] = set()
    cams = sorted(cameras, key=lambda c: (c.host, c.port))
    parts = [
        f"## edge-agent discover: {len(cams)} ONVIF device(s). Copy what you need into the",
        "## config's devices:, choose the ids, and put each password in the credentials",
        "## folder (${cred:NAME}). 发现的摄像机，复制到配置文件的 devices: 下。",
        "devices:" if cams else "devices: []",
    ]
    parts += [stanza(c, suggest_id(c, taken), username) for c in cams]
    return "\n".join(parts) + "\n"


# -- the command line -----------------------------------------------------------------
async def discover(
    hosts: list[tuple[str, int]],
    *,
    multicast: bool,
    timeout_s: float,
    username: str | None,
    password: str | None,
) -> list[Camera]:
    matches = await ws_discover(hosts, multicast=multicast, timeout_s=timeout_s)
    return list(
        await asyncio.gather(
            *(
                onvif_probe(m, username=username, password=password, timeout_s=timeout_s + 2)
                for m in matches
            )
        )
    )


def run(args: argparse.Namespace) -> int:
    try:
        hosts = [parse_target(h) for h in args.host]
    except ValueError as err:
        print(f"edge-agent discover: {err}", file=sys.stderr)
        return 2
    if args.no_multicast and not hosts:
        print("edge-agent discover: --no-multicast needs --host / 需要 --host", file=sys.stderr)
        return 2
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            print(
                f"edge-agent discover: environment variable {args.password_env} is not set "
                "/ 环境变量未设置",
                file=sys.stderr,
            )
            return 2
    cameras = asyncio.run(
        discover(
            hosts,
            multicast=not args.no_multicast,
            timeout_s=args.timeout,
            username=args.username,
            password=password,
        )
    )
    sys.stdout.write(render(cameras, args.username))
    if not cameras:
        print(
            "no ONVIF device answered: is ONVIF enabled on the cameras, and are they on this "
            "network segment? (--host IP reaches one on another subnet) / 未发现摄像机",
            file=sys.stderr,
        )
        return 1
    return 0
