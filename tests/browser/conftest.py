"""Browser tests: the JavaScript modules of python/e2ee/web/static in real Chromium.

* ``static_server``: an aiohttp server on 127.0.0.1 (an ephemeral port) serving
  python/e2ee/web/static at ``/static/`` and an empty page at ``/``.  Pages must come
  from http://127.0.0.1 to be a secure context (``crypto.subtle``).
* ``browser``: one Chromium for the session, launched by Playwright from the system
  package (Playwright cannot download its own here).  Missing Chromium or Playwright
  skips the tests, with the reason.
* ``page``: a fresh browser context and page per test, on the empty test page.

Both session fixtures live on the session's event loop, so every test here runs on it
too (``pytestmark = pytest.mark.asyncio(loop_scope="session")`` in each module); the
rest of the suite keeps its function-scoped loops.  Everything stays on loopback.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

STATIC = Path(__file__).resolve().parents[2] / "python" / "e2ee" / "web" / "static"
CHROMIUM = os.environ.get("E2EE_CHROMIUM", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream=fps=30",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
TEST_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>e2ee tests</title></head>"
    "<body></body></html>"
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def static_server() -> AsyncIterator[str]:
    """The base URL, ``http://127.0.0.1:PORT``."""

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=TEST_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """Chromium, through playwright.async_api."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium not found at {CHROMIUM} (install it, or set E2EE_CHROMIUM)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any, static_server: str) -> AsyncIterator[Any]:
    """A fresh page on the empty test page; uncaught page errors fail the test."""
    context = await browser.new_context()
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    await tab.goto(f"{static_server}/")
    assert await tab.evaluate("window.isSecureContext"), "the test page must be a secure context"
    yield tab
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
