"""The browser the web-page tests use works here: Debian's chromium, driven by Playwright,
loads a page from a local aiohttp server, runs its script, and draws Chinese with a real font."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from tests.browser_helpers import chromium_page, save_screenshot_path, serve

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>校园网关</title></head>
<body>
<h1 id="title">二氧化碳浓度过高</h1>
<button id="go">确认</button> <span id="out"></span>
<canvas id="c" width="64" height="32"></canvas>
<script src="/app.js"></script>
</body></html>
"""

SCRIPT = """
document.getElementById("go").addEventListener("click", () => {
  document.getElementById("out").textContent = "已确认 <b>" + location.port;
});
"""


def glyph_pixels(char: str) -> str:
    """A script that draws one character on the canvas and returns its pixels."""
    return f"""() => {{
        const c = document.getElementById("c"), g = c.getContext("2d");
        g.clearRect(0, 0, c.width, c.height);
        g.font = "24px sans-serif";
        g.fillText("{char}", 4, 26);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data).join(",");
    }}"""


async def index(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def script(_request: web.Request) -> web.Response:
    return web.Response(text=SCRIPT, content_type="text/javascript")


async def test_chromium_runs_a_local_page_and_draws_chinese(tmp_path: Path) -> None:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/app.js", script)
    async with serve(app) as base, chromium_page() as page:
        await page.goto(base + "/")  # type: ignore[attr-defined]
        assert await page.title() == "校园网关"  # type: ignore[attr-defined]
        await page.click("#go")  # type: ignore[attr-defined]
        out = page.locator("#out")  # type: ignore[attr-defined]
        await out.wait_for()
        # textContent: the markup in the string stays text
        assert (await out.text_content()).startswith("已确认 <b>")
        # Without a CJK font every character is the same empty box ("tofu"): two different
        # characters drawing the same pixels means screenshots would not show Chinese.
        zhong = await page.evaluate(glyph_pixels("中"))  # type: ignore[attr-defined]
        wen = await page.evaluate(glyph_pixels("文"))  # type: ignore[attr-defined]
        blank = await page.evaluate(glyph_pixels(" "))  # type: ignore[attr-defined]
        assert zhong != blank
        assert zhong != wen, "Chinese characters draw as identical boxes: no CJK font"
        shot = save_screenshot_path(tmp_path, "browser-smoke.png")
        await page.screenshot(path=str(shot))  # type: ignore[attr-defined]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
