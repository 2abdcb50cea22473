"""System faults for an agent process: a small filesystem of its own, a clock that jumps.

* :func:`tmpfs_prefix` runs the agent in its own user and mount namespace with a
  tmpfs of a few hundred KiB mounted over its state directory, mostly taken by a
  filler file. The disk really fills (``ENOSPC`` from the kernel) without touching
  the machine's own filesystems, and the test frees space by deleting the filler
  through ``/proc/PID/root``, which shows the agent's mounts.
* :func:`faketime_env` preloads libfaketime: the agent's wall clock (``time.time``)
  follows an offset the test writes into a file, its monotonic clock stays real.
* :func:`drop_last_wal_commits` cuts the last transactions off a SQLite WAL, as
  storage that loses its write cache in a power cut does.
* :func:`protectclock_prefix` runs the agent under a seccomp filter like systemd's
  ``ProtectClock=yes`` with ``SystemCallErrorNumber=EPERM``: every ``@clock`` system
  call, read-only ``adjtimex`` included, fails with EPERM.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

LIBFAKETIME_GLOBS = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)

#: a shell script run as root of a user namespace with mounts of its own
_IN_OWN_MOUNTS = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]

_SCRIPT = (
    'mount -t tmpfs -o "size=$2" edge-agent-test "$1" && '
    'head -c "$3" /dev/zero > "$1/filler" && shift 3 && exec "$@"'
)


def namespaces_unusable() -> str | None:
    """Why a private tmpfs cannot be mounted here, or None when it can."""
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is missing"
    with tempfile.TemporaryDirectory() as d:
        probe = [*_IN_OWN_MOUNTS, _SCRIPT, "sh"]
        try:
            res = subprocess.run(
                [*probe, d, "64k", "1024", "true"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"unshare failed: {err}"
    if res.returncode != 0:
        return f"unshare --user --mount fails here: {res.stderr.strip()[:200]}"
    return None


def tmpfs_prefix(directory: Path, size_kib: int, free_kib: int) -> list[str]:
    """A command prefix that mounts a ``size_kib`` tmpfs over ``directory`` with
    ``free_kib`` left free (the rest is ``directory/filler``), then execs the agent."""
    filler = (size_kib - free_kib) * 1024
    return [
        *_IN_OWN_MOUNTS,
        _SCRIPT,
        "sh",
        str(directory),
        f"{size_kib}k",
        str(filler),
    ]


_FULL_SCRIPT = (
    'mount -t tmpfs -o "size=$2" edge-agent-test "$1" && cp -a "$3"/. "$1"/ && '
    '{ cat /dev/zero > "$1/filler" 2>/dev/null; true; } && shift 3 && exec "$@"'
)


def full_tmpfs_prefix(directory: Path, seed: Path, size_kib: int) -> list[str]:
    """Like :func:`tmpfs_prefix`, but the tmpfs starts with a copy of ``seed``'s files
    (an outbox from an earlier run) and ``directory/filler`` takes every byte left:
    the agent starts on a disk that is already full."""
    return [
        *_IN_OWN_MOUNTS,
        _FULL_SCRIPT,
        "sh",
        str(directory),
        f"{size_kib}k",
        str(seed),
    ]


def inside(pid: int, path: Path) -> Path:
    """``path`` as the process ``pid`` sees it (through its mount namespace)."""
    return Path(f"/proc/{pid}/root") / str(path.resolve()).lstrip("/")


def libfaketime() -> Path | None:
    env = os.environ.get("EDGE_AGENT_LIBFAKETIME")
    if env:
        return Path(env) if Path(env).exists() else None
    for pattern in LIBFAKETIME_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


def faketime_env(control: Path, lib: Path) -> dict[str, str]:
    """Environment for a process whose wall clock follows ``control`` (e.g. ``+0``,
    ``-1h``, ``@2024-03-01 08:00:00``; read on every call), monotonic clock untouched."""
    return {
        "LD_PRELOAD": str(lib),
        "FAKETIME_TIMESTAMP_FILE": str(control),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def set_fake_time(control: Path, spec: str) -> None:
    """Atomically: libfaketime may read the file at any moment."""
    tmp = control.with_suffix(".tmp")
    tmp.write_text(spec + "\n")
    tmp.replace(control)


def drop_last_wal_commits(wal: Path, commits: int) -> int:
    """Truncate ``wal`` after its last ``commits`` transactions; returns the frames cut.

    Only the frames that belong to the WAL's current generation count: after a
    checkpoint SQLite writes from the start again with new salts, and frames of the
    old generation further on are already dead."""
    raw = wal.read_bytes()
    page_size, _seq, salt1, salt2 = struct.unpack(">IIII", raw[8:24])
    frame = 24 + page_size
    valid = 0
    ends: list[int] = []
    while 32 + (valid + 1) * frame <= len(raw):
        head = raw[32 + valid * frame : 32 + valid * frame + 24]
        _pgno, commit, s1, s2 = struct.unpack(">IIII", head[:16])
        if (s1, s2) != (salt1, salt2):
            break
        valid += 1
        if commit:
            ends.append(valid)
    if len(ends) <= commits:
        raise AssertionError(f"the WAL holds only {len(ends)} commits")
    keep = ends[-commits - 1]
    with wal.open("r+b") as f:
        f.truncate(32 + keep * frame)
    return valid - keep


# Loads the filter (libseccomp through ctypes), then execs the rest of argv: a seccomp
# filter outlives execve, so the agent runs under it from its first instruction.
_PROTECTCLOCK = """
import ctypes, os, sys
lib = ctypes.CDLL(sys.argv[1])
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
# systemd 252's @clock, the set ProtectClock=yes refuses
for name in ("adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime",
             "clock_settime64", "settimeofday", "stime"):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0:
        assert lib.seccomp_rule_add(ctx, 0x00050000 | 1, nr, 0) == 0  # SCMP_ACT_ERRNO(EPERM)
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[2], sys.argv[2:])
"""


def protectclock_prefix() -> list[str] | None:
    """A command prefix that runs what follows under a ProtectClock-like seccomp
    filter, or None without libseccomp."""
    lib = ctypes.util.find_library("seccomp")
    if lib is None:
        return None
    return [sys.executable, "-c", _PROTECTCLOCK, lib]
