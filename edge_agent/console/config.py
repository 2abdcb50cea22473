"""The ``console:`` section: the local web console, off unless it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge_agent.config.models import Strict


class ConsoleConfig(Strict):
    """The local web console on the agent's HTTP server (docs/console.md). Needs
    ``http.bind``; users and password hashes are in the ``credentials`` file, written
    by ``edge-agent console-passwd USER``."""

    credentials: str = Field(
        min_length=1,
        description="File of users and their scrypt password hashes, written by "
        "'edge-agent console-passwd USER -c CONFIG'; relative to the config file's folder "
        "/ 控制台账号文件（用 edge-agent console-passwd 生成）",
    )
    session_s: float = Field(
        default=8 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="A login lasts this many seconds, then the user logs in again "
        "/ 登录有效期（秒）",
    )
    language: Literal["zh", "en"] | None = Field(
        default=None,
        description="Language the pages open in (each user can switch); default: "
        "site.language / 页面默认语言",
    )
    login_failures_max: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Failed logins from one address before it must wait login_lockout_s "
        "/ 同一地址连续登录失败多少次后锁定",
    )
    login_lockout_s: float = Field(
        default=300,
        ge=1,
        le=86400,
        description="How long an address that failed too often is refused / 锁定时长（秒）",
    )

    def credentials_path(self, config_dir: Path) -> Path:
        path = Path(self.credentials)
        return path if path.is_absolute() else config_dir / path


Problem = tuple[tuple[str | int, ...], str]


def check_console(data: dict[str, Any], config_dir: Path) -> list[Problem]:
    """check-config's lines for the raw ``console:`` section: it needs ``http.bind``
    written in the file (the default, 127.0.0.1, serves nobody on the LAN, and a console
    that starts by surprise on an address nobody chose is worse), and its credentials
    file must exist (else nobody can log in)."""
    section = data.get("console")
    if not isinstance(section, dict):
        return []
    problems: list[Problem] = []
    http = data.get("http")
    if not (isinstance(http, dict) and "bind" in http):
        problems.append(
            (
                ("console",),
                "the console needs http.bind: the address browsers reach it on, e.g. "
                "0.0.0.0:8080 / 控制台需要设置 http.bind（浏览器访问的地址，如 0.0.0.0:8080）",
            )
        )
    creds = section.get("credentials")
    if isinstance(creds, str) and creds:
        path = Path(creds) if Path(creds).is_absolute() else config_dir / creds
        if not path.is_file():
            problems.append(
                (
                    ("console", "credentials"),
                    f"{path} does not exist: create a user with 'edge-agent console-passwd "
                    f"USER -c CONFIG' / 账号文件不存在，请用 edge-agent console-passwd 创建用户",
                )
            )
    return problems
