"""A real headless Chromium for the web-page tests, driven by Playwright.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or ``EDGE_AGENT_CHROMIUM``):
Playwright's own browser download is not possible on a gateway build machine, so Playwright
drives the installed binary through ``executable_path``. ``scripts/test`` installs it (with the
CJK font ``fonts-wqy-microhei``, so screenshots show Chinese) as it installs mosquitto; a
missing browser fails the test with the command that installs it, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

INSTALL_HINT = (
    "the browser tests need Debian's chromium and a CJK font: "
    "sudo apt-get install -y chromium fonts-wqy-microhei "
    "(./scripts/test installs them when run as root; EDGE_AGENT_CHROMIUM=/path/to/chromium "
    "points at another build) / 浏览器测试需要 chromium 和中文字体："
    "sudo apt-get install -y chromium fonts-wqy-microhei"
)

#: Without the background-networking flags Chromium keeps dialling Google's hosts, which
#: this machine's closed network refuses; the tests load only pages on loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    wanted = os.environ.get("EDGE_AGENT_CHROMIUM")
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@asynccontextmanager
async def chromium_page(
    locale: str = "zh-CN", viewport: tuple[int, int] = (1280, 800)
) -> AsyncIterator[object]:
    """A fresh browser (own empty profile) with one page; closed on exit.

    Yields a ``playwright.async_api.Page``. Everything is torn down inside the test's own
    event loop, so the leak checks see no task or process left behind.
    """
    executable = find_chromium()
    if executable is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need the Python package playwright (the `test` extra): "
            "pip install -e '.[test]' / 浏览器测试需要 playwright：pip install -e '.[test]'",
            pytrace=False,
        )
    with tempfile.TemporaryDirectory(prefix="edge-agent-chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=CHROMIUM_ARGS,
                locale=locale,
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                yield page
            finally:
                await context.close()


def save_screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a test keeps a screenshot: under pytest's tmp_path, or EDGE_AGENT_SCREENSHOTS
    when a developer wants to look at them."""
    folder = Path(os.environ.get("EDGE_AGENT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``app`` on an ephemeral loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
