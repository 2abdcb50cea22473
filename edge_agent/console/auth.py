"""Users, sessions, CSRF tokens and the login rate limit of the console.

Passwords: a credentials file with one line per user, ``user:scrypt$N$r$p$salt$hash``
(salt and hash in base64), written by ``edge-agent console-passwd USER`` with mode 0600.
There is no default user and no default password. The file is read at every login, so
a user added or a password changed counts at once, without a restart.

Sessions live in memory (a restart logs everybody out): a random token in an HttpOnly,
SameSite=Strict cookie, an absolute lifetime, and a CSRF token of their own that every
POST must carry in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: scrypt cost: 16 MiB and about 50 ms on a Raspberry Pi 4 per login (OWASP's minimum
#: is N=2^17 at r=8 for a server; a gateway with a rate-limited login and a few users
#: trades some of it for memory it has)
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
#: a hash in the file asking for more than this is refused (a hand-edited line must not
#: make every login take gigabytes)
SCRYPT_MAXMEM = 64 * 1024 * 1024

USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class CredentialsError(ValueError):
    """A user name or a credentials line that cannot be used."""


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$hash`` for ``password`` with a fresh 16-byte salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; False for a malformed or too costly hash."""
    try:
        scheme, n_s, r_s, p_s, salt_s, hash_s = encoded.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = (
            base64.b64decode(salt_s, validate=True),
            base64.b64decode(hash_s, validate=True),
        )
    except ValueError:
        return False
    if scheme != "scrypt" or 128 * n * r * p > SCRYPT_MAXMEM or not expected:
        return False
    try:
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except ValueError:  # n not a power of two, too much memory
        return False
    return hmac.compare_digest(digest, expected)


def read_credentials(path: Path) -> dict[str, str]:
    """user -> encoded hash; ``#`` comments and blank lines skipped. OSError when the
    file cannot be read; a malformed line is skipped with a log line."""
    users: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not USER_RE.match(user) or not encoded.startswith("scrypt$"):
            log.warning("%s:%d: not a 'user:scrypt$...' line; ignored", path, number)
            continue
        users[user] = encoded
    return users


def set_password(path: Path, user: str, password: str) -> bool:
    """Add ``user`` or replace its hash in ``path`` (created if need be), mode 0600, its
    owner kept, replaced atomically; other lines are kept. True when the user is new."""
    if not USER_RE.match(user):
        raise CredentialsError(
            f"{user!r}: a user name is 1-64 letters, digits, '_', '.', '@' or '-' "
            "/ 用户名只能包含字母、数字和 _ . @ -"
        )
    if not password:
        raise CredentialsError("the password is empty / 密码不能为空")
    lines: list[str] = []
    owner: tuple[int, int] | None = None
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        st = path.stat()
        owner = (st.st_uid, st.st_gid)
    entry = f"{user}:{hash_password(password)}"
    new = True
    for i, line in enumerate(lines):
        if line.strip().partition(":")[0] == user and not line.lstrip().startswith("#"):
            lines[i] = entry
            new = False
    if new:
        lines.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".console-users.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            # root updating a file the agent's user owns (chown edge-agent: FILE): the new
            # file keeps that owner, or the agent could no longer read it
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new


# -- sessions ---------------------------------------------------------------------------


@dataclass
class Session:
    user: str
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class Sessions:
    """Logged-in browsers: token -> :class:`Session`, expired ones dropped on use."""

    def __init__(self, lifetime_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self.now = now
        self._sessions: dict[str, Session] = {}

    def create(self, user: str) -> tuple[str, Session]:
        self._prune()
        token = secrets.token_urlsafe(32)
        session = self._sessions[token] = Session(user, self.now() + self.lifetime_s)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if self.now() >= session.expires:
            del self._sessions[token]
            return None
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def _prune(self) -> None:
        now = self.now()
        for token in [t for t, s in self._sessions.items() if now >= s.expires]:
            del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


# -- the login rate limit ---------------------------------------------------------------


#: addresses whose failures are remembered, at most
MAX_TRACKED = 4096


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    logged: bool = False
    refused: int = 0


class LoginLimiter:
    """Failed logins per client address: after ``max_failures`` the address is refused
    for ``lockout_s``. The first lockout of an address is logged at WARNING; what follows
    (more refusals, further lockouts) is counted and summed up in one line per address
    when it logs in, and at stop (logs live on an SD card)."""

    def __init__(
        self, max_failures: int, lockout_s: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.now = now
        self._by_addr: dict[str, _Failures] = {}

    def locked(self, addr: str) -> float:
        """Seconds ``addr`` must still wait (0: it may try)."""
        f = self._by_addr.get(addr)
        if f is None:
            return 0.0
        left = f.locked_until - self.now()
        if left > 0:
            f.refused += 1
            return left
        return 0.0

    def failed(self, addr: str, user: str) -> None:
        f = self._by_addr.get(addr)
        if f is None:
            if len(self._by_addr) >= MAX_TRACKED:  # bounded: the oldest address goes
                self._by_addr.pop(next(iter(self._by_addr)))
            f = self._by_addr[addr] = _Failures()
        f.count += 1
        if f.count < self.max_failures:
            return
        f.count = 0
        f.locked_until = self.now() + self.lockout_s
        if not f.logged:
            f.logged = True
            log.warning(
                "console: %d failed logins from %s (last as %r); refused for %.0f s "
                "/ 控制台登录失败次数过多，该地址暂时禁止登录",
                self.max_failures,
                addr,
                user,
                self.lockout_s,
            )
        else:
            f.refused += 1

    def succeeded(self, addr: str) -> None:
        f = self._by_addr.pop(addr, None)
        if f is not None:
            self._summary(addr, f)

    def summary(self) -> None:
        for addr, f in self._by_addr.items():
            self._summary(addr, f)
        self._by_addr.clear()

    @staticmethod
    def _summary(addr: str, f: _Failures) -> None:
        if f.refused:
            log.info(
                "console: %d more login attempts from %s were refused while it was locked "
                "out / 该地址在锁定期间又有 %d 次登录尝试被拒绝",
                f.refused,
                addr,
                f.refused,
            )
