"""Simulated ZKTeco terminals speaking PUSH (iclock / ADMS): the terminal is the HTTP
*client*, the gateway the server.

Written from the wire as the public ADMS/iclock descriptions show it (s0x90/zkteco-adms
``datasheet/ADMS.md``, tanemrahman/zkteco-adms ``docs/adms-samples.http``, both MIT, and the
captures' README in ``shared/fixtures/access/``), never from the agent's driver. What a
terminal does, in order:

1. ``GET /iclock/cdata?SN=<sn>&options=all&pushver=..`` (a security terminal adds
   ``DeviceType=acc`` and first registers with ``POST /iclock/registry``). The answer is
   ``key=value`` lines; the terminal takes ``ATTLOGStamp`` (or the older ``Stamp``),
   ``OPERLOGStamp`` (``OpStamp``), ``Delay``, ``ErrorDelay``, ``TimeoutSec``, ``Realtime``.
2. It uploads every record of its log *after the server's stamp*:
   ``POST /iclock/cdata?SN=..&table=ATTLOG&Stamp=<stamp of the last record sent>``, one
   record a line, TAB-separated ``PIN, time, status, verify, workcode``; user records as
   ``table=OPERLOG`` ``USER PIN=..<TAB>Name=..<TAB>Pri=..<TAB>Passwd=..<TAB>Card=..``; a
   security terminal its access events as ``table=rtlog`` (keyed TAB fields with an
   increasing ``index``, as a SpeedFace-V3L sends them). Only an answer starting ``OK``
   moves its own marker; anything else (an error status, no answer) and it sends the
   same records again after ``ErrorDelay``.
3. Every ``Delay`` seconds (at once when a new record is made and ``Realtime=1``):
   ``GET /iclock/getrequest?SN=..``; the answer holds ``C:<id>:<command>`` lines or
   ``OK``. It runs each command and posts the results to ``POST /iclock/devicecmd?SN=..``
   as ``ID=<id>&Return=<code>&CMD=<word>`` lines, several in one POST. ``CONTROL DEVICE
   01<door>01<seconds>`` opens a door (a security terminal records event 8, remote open);
   ``DATA UPDATE USERINFO`` / ``DATA DELETE USERINFO`` change a user; ``USER ADD`` is
   refused with ``Return=-1002`` as a real SpeedFace-V5L does.

The log is the terminal's own and survives :meth:`ZkTerminal.stop` / :meth:`start` (a
reboot): a restarted terminal hands shakes again and resends from the server's stamps.
Scenario hooks: :meth:`punch`, :meth:`add_user`, :meth:`deny`, :meth:`door`,
:meth:`unplug` / :meth:`plug`, :meth:`garble`, :meth:`ignore_acks`.

Nothing here imports ``edge_agent`` or ``drivers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

#: verify modes as the terminals number them (ATTLOG ``verify``, rtlog ``verifytype``)
VERIFY_CODES = {"password": 0, "fingerprint": 1, "card": 4, "face": 15, "palm": 25}
#: rtlog event codes of a security terminal (ZKAccess event list)
DOOR_CODES = {
    "remote_open": 8,
    "held_open": 28,
    "tamper": 100,
    "duress": 101,
    "forced": 102,
    "opened": 200,
    "closed": 201,
    "exit_button": 202,
}
#: the refusals a scenario can ask for (rtlog event codes)
DENY_CODES = {"access_denied": 23, "anti_passback": 24, "unregistered": 27, "expired": 29}

ATTENDANCE_PUSHVER = "2.4.1"
SECURITY_PUSHVER = "3.1.2"
#: records per upload (a terminal sends its backlog in batches)
BATCH = 50


@dataclass
class _Record:
    stamp: int  # the terminal's upload position: increasing, never reused
    line: str


@dataclass
class Stats:
    """What the terminal saw, for tests and the CLI."""

    handshakes: int = 0
    uploads: int = 0
    ok: int = 0
    refused: int = 0
    errors: int = 0
    commands: int = 0
    getrequests: int = 0
    last_error: str | None = None
    #: (table, Stamp sent) of every upload answered OK
    acked: list[tuple[str, str]] = field(default_factory=list)
    #: the raw handshake answers
    options: dict[str, str] = field(default_factory=dict)


class HttpError(OSError):
    """The server answered something a terminal cannot use, or nothing."""


async def http_request(
    host: str, port: int, method: str, path: str, body: bytes = b"", timeout_s: float = 10
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh connection: (status, body). Raises OSError or
    TimeoutError when nothing usable comes back."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "User-Agent: iClock Proxy/1.09\r\nConnection: close\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split()[1])
            except (IndexError, ValueError) as err:
                raise HttpError(f"bad status line {lines[0][:60]!r}") from err
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            else:
                data = await reader.read()
        except asyncio.IncompleteReadError as err:
            raise HttpError("connection closed mid-answer") from err
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return status, data


def _options(body: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


class ZkTerminal:
    """One terminal: its serial ``sn``, where it pushes (``server`` = host, port), and
    whether it is an attendance terminal (ATTLOG) or a security one (``access=True``:
    rtlog with indices, DeviceType=acc).

    ``clock`` gives the terminal's local wall time (naive); default: UTC now +
    ``tz_offset_min``. ``poll_s`` caps the server's ``Delay`` (tests do not wait 10 s).
    """

    def __init__(
        self,
        sn: str,
        server: tuple[str, int],
        *,
        access: bool = False,
        tz_offset_min: int = 480,
        poll_s: float | None = None,
        clock: Callable[[], datetime] | None = None,
        model: str = "",
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9]{1,32}", sn):
            raise ValueError(f"serial number {sn!r}: letters and digits")
        self.sn = sn
        self.server = server
        self.access = access
        self.model = model or ("SpeedFace-V3L" if access else "MB460")
        self.poll_s = poll_s
        self._tz = timezone(timedelta(minutes=tz_offset_min))
        self.clock = clock or (lambda: datetime.now(UTC).astimezone(self._tz).replace(tzinfo=None))
        #: the terminal's own logs (kept across stop/start: they are in its flash)
        self.attlog: list[_Record] = []
        self.operlog: list[_Record] = []
        self.rtlog: list[_Record] = []
        self.users: dict[str, str | None] = {}
        self._stamp = 0
        self._index = 0
        #: the upload positions the terminal believes delivered
        self._sent: dict[str, int] = {"ATTLOG": 0, "OPERLOG": 0, "rtlog": 0}
        self.stats = Stats()
        self.plugged = True
        self._garbage: list[tuple[str, bytes]] = []
        self._ignore_acks: dict[str | None, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._delay_s = 10.0
        self._error_delay_s = 30.0
        self._timeout_s = 10.0
        self._realtime = True
        #: commands run, in order: (id, command, return code)
        self.ran: list[tuple[int, str, int]] = []
        #: scenario: commands whose first word is a key fail with that return code
        #: (``{"CONTROL": -1}``: the lock output is not wired)
        self.refuse: dict[str, int] = {}

    # -- scenario hooks --------------------------------------------------------------
    def _now(self, at: datetime | None) -> str:
        return (at or self.clock()).strftime("%Y-%m-%d %H:%M:%S")

    def _next_stamp(self) -> int:
        self._stamp += 1
        return self._stamp

    def _rt(self, event: int, door: int, *, pin: str = "0", card: str = "0", inout: int = 2,
            verify: int = 200, at: datetime | None = None) -> None:  # fmt: skip
        self._index += 1
        line = "\t".join(
            [
                f"time={self._now(at)}",
                f"pin={pin}",
                f"cardno={card}",
                f"eventaddr={door}",
                f"event={event}",
                f"inoutstatus={inout}",
                f"verifytype={verify}",
                f"index={self._index}",
                "sitecode=0",
                "linkid=0",
                "maskflag=0",
            ]
        )
        self.rtlog.append(_Record(self._index, line))
        self._wake.set()

    def add_user(self, pin: str, card: str | None = None, name: str = "Student") -> None:
        """Enrol a user on the terminal: an OPERLOG ``USER`` line (with the name, which
        the gateway must not keep)."""
        self.users[pin] = card
        line = f"USER PIN={pin}\tName={name}\tPri=0\tPasswd=\tCard={card or ''}\tGrp=1"
        self.operlog.append(_Record(self._next_stamp(), line))
        self._wake.set()

    def punch(
        self,
        pin: str,
        *,
        verify: str = "card",
        status: int = 0,
        door: int = 1,
        inout: int = 0,
        at: datetime | None = None,
    ) -> None:
        """Someone verified (card, fingerprint, face, ...): an ATTLOG record, or on a
        security terminal an rtlog event 0 (normal open)."""
        code = VERIFY_CODES[verify]
        if self.access:
            card = self.users.get(pin) if verify == "card" else None
            self._rt(0, door, pin=pin, card=card or "0", inout=inout, verify=code, at=at)
            return
        line = f"{pin}\t{self._now(at)}\t{status}\t{code}\t0\t0\t0"
        self.attlog.append(_Record(self._next_stamp(), line))
        self._wake.set()

    def deny(self, pin: str = "0", reason: str = "unregistered", *, door: int = 1,
             card: str = "0", inout: int = 0) -> None:  # fmt: skip
        """A refused verification on a security terminal (rtlog)."""
        self._require_access()
        self._rt(DENY_CODES[reason], door, pin=pin, card=card, inout=inout, verify=4)

    def door(self, what: str, door: int = 1) -> None:
        """A door or alarm record on a security terminal: ``opened``, ``closed``,
        ``forced``, ``held_open``, ``exit_button``, ``duress``, ``tamper``, ``remote_open``."""
        self._require_access()
        self._rt(DOOR_CODES[what], door)

    def _require_access(self) -> None:
        if not self.access:
            raise ValueError(f"{self.sn} is an attendance terminal: no door records")

    def unplug(self) -> None:
        """The network cable is out: the terminal keeps recording, sends nothing."""
        self.plugged = False

    def plug(self) -> None:
        self.plugged = True
        self._wake.set()

    def garble(self, table: str = "ATTLOG", body: bytes = b"\xff\xfe garbage\n") -> None:
        """Send one upload of ``table`` with ``body`` (junk) before the next real one."""
        self._garbage.append((table, body))
        self._wake.set()

    def ignore_acks(self, n: int = 1, table: str | None = None) -> None:
        """Lose the next ``n`` answers to uploads (of ``table``, or of any): the OK never
        reaches the terminal, so it sends the same records, with the same Stamp, again."""
        self._ignore_acks[table] = self._ignore_acks.get(table, 0) + n

    def backlog(self, table: str = "ATTLOG") -> int:
        """Records the terminal holds that it believes undelivered."""
        log_ = {"ATTLOG": self.attlog, "OPERLOG": self.operlog, "rtlog": self.rtlog}[table]
        return sum(1 for r in log_ if r.stamp > self._sent[table])

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"zkteco-sim:{self.sn}")

    async def stop(self) -> None:
        """Power off (the log stays: :meth:`start` again is a reboot)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> ZkTerminal:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the protocol ------------------------------------------------------------------
    def _path(self, endpoint: str, **params: str) -> str:
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in {"SN": self.sn, **params}.items())
        return f"/iclock/{endpoint}?{query}"

    async def _http(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        host, port = self.server
        return await http_request(host, port, method, path, body, self._timeout_s)

    async def _run(self) -> None:
        handshaken = False
        while True:
            try:
                if not self.plugged:
                    handshaken = False  # a terminal hand shakes again after a link loss
                    await self._sleep(self._poll_delay())
                    continue
                if not handshaken:
                    await self._handshake()
                    handshaken = True
                await self._upload_all()
                await self._getrequest()
                await self._sleep(self._poll_delay())
            except (OSError, TimeoutError) as err:
                self.stats.errors += 1
                self.stats.last_error = str(err) or type(err).__name__
                log.debug("%s: %s", self.sn, self.stats.last_error)
                handshaken = False
                await asyncio.sleep(min(self._error_delay_s, self._poll_delay()))

    def _poll_delay(self) -> float:
        return min(self._delay_s, self.poll_s) if self.poll_s else self._delay_s

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _handshake(self) -> None:
        if self.access:
            body = (
                f"DeviceType=acc,~DeviceName={self.model},FirmVer=ZAM180-NF-Ver1.1.17,"
                "IPAddress=127.0.0.1"
            ).encode()
            status, _ = await self._http("POST", self._path("registry"), body)
            if status != 200:
                raise HttpError(f"registry answered {status}")
            path = self._path("cdata", options="all", pushver=SECURITY_PUSHVER, DeviceType="acc")
        else:
            path = self._path("cdata", options="all", pushver=ATTENDANCE_PUSHVER)
        status, answer = await self._http("GET", path)
        if status != 200:
            raise HttpError(f"handshake answered {status}")
        opts = _options(answer)
        self.stats.handshakes += 1
        self.stats.options = opts
        if self.access and "registry=ok" not in answer.decode("utf-8", "replace"):
            raise HttpError("handshake without registry=ok")
        stamp_keys = {"ATTLOG": ("ATTLOGStamp", "Stamp"), "OPERLOG": ("OPERLOGStamp", "OpStamp")}
        for table, names in stamp_keys.items():
            value = next((opts[k] for k in names if k in opts), None)
            if value is not None and not self.access:
                # The server's stamp rules: what came after it is sent (again).
                self._sent[table] = int(value) if value.isdigit() else 0
        timings = {"_delay_s": "Delay", "_error_delay_s": "ErrorDelay", "_timeout_s": "TimeoutSec"}
        for attr, option in timings.items():
            if opts.get(option, "").isdigit() and int(opts[option]) > 0:
                setattr(self, attr, float(opts[option]))
        self._realtime = opts.get("Realtime", "1") == "1"

    async def _upload_all(self) -> None:
        while self._garbage:
            table, body = self._garbage.pop(0)
            # no Stamp: junk must not move (or collide with) the upload position
            await self._http("POST", self._path("cdata", table=table), body)
        tables = ["OPERLOG", "rtlog"] if self.access else ["OPERLOG", "ATTLOG"]
        for table in tables:
            while await self._upload(table):
                pass

    async def _upload(self, table: str) -> bool:
        """Send the next batch of ``table``; True when something was delivered."""
        records = {"ATTLOG": self.attlog, "OPERLOG": self.operlog, "rtlog": self.rtlog}[table]
        batch = [r for r in records if r.stamp > self._sent[table]][:BATCH]
        if not batch:
            return False
        body = "".join(r.line + "\n" for r in batch).encode("utf-8")
        params = {"table": table}
        if table != "rtlog":
            params["Stamp"] = str(batch[-1].stamp)
        self.stats.uploads += 1
        status, answer = await self._http("POST", self._path("cdata", **params), body)
        if status != 200 or not answer.startswith(b"OK"):
            self.stats.refused += 1
            self.stats.last_error = f"{table} upload answered {status} {answer[:60]!r}"
            raise HttpError(self.stats.last_error)
        for key in (table, None):
            if self._ignore_acks.get(key):
                self._ignore_acks[key] -= 1
                return True  # the answer was "lost": the same batch goes again
        self.stats.ok += 1
        self.stats.acked.append((table, params.get("Stamp", str(batch[-1].stamp))))
        self._sent[table] = batch[-1].stamp
        return True

    async def _getrequest(self) -> None:
        self.stats.getrequests += 1
        status, answer = await self._http("GET", self._path("getrequest"))
        if status != 200:
            raise HttpError(f"getrequest answered {status}")
        results = []
        for line in answer.decode("utf-8", "replace").splitlines():
            m = re.fullmatch(r"C:(\d+):(.+)", line.strip())
            if m:
                cmd_id, cmd = int(m[1]), m[2]
                code = self._execute(cmd)
                self.ran.append((cmd_id, cmd, code))
                self.stats.commands += 1
                word = cmd.split(" ", 1)[0]
                results.append(f"ID={cmd_id}&Return={code}&CMD={word}\n")
        if results:
            status, _ = await self._http("POST", self._path("devicecmd"), "".join(results).encode())
            if status != 200:
                raise HttpError(f"devicecmd answered {status}")

    def _execute(self, cmd: str) -> int:
        if cmd.split(" ", 1)[0] in self.refuse:
            return self.refuse[cmd.split(" ", 1)[0]]
        if m := re.fullmatch(r"CONTROL DEVICE 01([0-9A-F]{2})01([0-9A-F]{2})", cmd):
            door = int(m[1], 16)
            if not 1 <= door <= 4:
                return -1
            if self.access:
                self._rt(DOOR_CODES["remote_open"], door)
            return 0
        if cmd.startswith("DATA UPDATE USERINFO "):
            fields = dict(
                p.partition("=")[::2] for p in cmd.removeprefix("DATA UPDATE USERINFO ").split("\t")
            )
            if not fields.get("PIN"):
                return -1002
            self.add_user(fields["PIN"], fields.get("Card") or None)
            return 0
        if cmd.startswith("DATA DELETE USERINFO PIN="):
            return 0 if self.users.pop(cmd.rpartition("=")[2], "missing") != "missing" else -1
        if cmd in ("INFO", "CHECK", "REBOOT"):
            return 0
        return -1002  # USER ADD, USER DEL and anything else: invalid syntax

    def layout(self) -> dict[str, Any]:
        return {"sn": self.sn, "access": self.access, "model": self.model,
                "server": f"{self.server[0]}:{self.server[1]}"}  # fmt: skip


#: the commands of the CLI's --stdin / --script
COMMANDS = """\
  punch SN PIN [card|fingerprint|face]   someone verified / 打卡
  user SN PIN [CARD]                     enrol a user / 登记用户
  deny SN [PIN] [unregistered|access_denied|anti_passback|expired]
  door SN opened|closed|forced|held_open|exit_button|duress|tamper [DOOR]
  unplug SN | plug SN                    network cable out / in / 断网、恢复
  reboot SN                              stop and start (the log stays) / 重启
  status SN                              what the terminal saw / 状态
"""


async def run_command(terminals: dict[str, ZkTerminal], line: str) -> str:
    """Run one scenario command (see :data:`COMMANDS`); its output. ValueError when bad."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return ""
    if len(words) < 2 or words[1] not in terminals:
        raise ValueError(f"{line.strip()!r}: a command and a known SN expected")
    op, t, rest = words[0], terminals[words[1]], words[2:]
    if op == "punch" and rest:
        t.punch(rest[0], verify=rest[1] if len(rest) > 1 else "card")
    elif op == "user" and rest:
        t.add_user(rest[0], rest[1] if len(rest) > 1 else None)
    elif op == "deny":
        t.deny(rest[0] if rest else "0", rest[1] if len(rest) > 1 else "unregistered")
    elif op == "door" and rest:
        t.door(rest[0], int(rest[1]) if len(rest) > 1 else 1)
    elif op == "unplug":
        t.unplug()
    elif op == "plug":
        t.plug()
    elif op == "reboot":
        await t.stop()
        await t.start()
    elif op == "status":
        s = t.stats
        return (
            f"{t.sn}: handshakes={s.handshakes} uploads={s.uploads} ok={s.ok} "
            f"refused={s.refused} errors={s.errors} commands={s.commands} "
            f"backlog={t.backlog('rtlog' if t.access else 'ATTLOG')} last_error={s.last_error}"
        )
    else:
        raise ValueError(f"{line.strip()!r}: unknown command")
    return ""
