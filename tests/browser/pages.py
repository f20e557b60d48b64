"""What the browser tests share: Debian Chromium under Playwright (never a downloaded one) and
signing in on the pages.

- `chromium()`: a headless Chromium, closed at the end (the `browser` fixture of conftest.py).
- `log_in(page, url, agent)`: the agent desktop (`/`), until its socket is live.
- `sign_in(page, url, path, agent)`: a supervisor page with a login form (`/wallboard`, `/reports`);
  the caller checks what the page shows next.
- `serving(settings)`: the web app exactly as `ivrserver run` builds it, on 127.0.0.1 (no AMI,
  no FastAGI): (server, base url).
The demo agents' password is their id.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from ivrserver import config
from ivrserver.app import IvrServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian chromium is not installed: apt-get install -y chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def fill_login(page: Page, agent: str) -> None:
    await page.fill("#login-agent", agent)
    await page.fill("#login-password", agent)
    await page.click("#login-form button[type=submit]")


async def log_in(page: Page, url: str, agent: str) -> None:
    await page.goto(url + "/")
    await fill_login(page, agent)
    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)


async def sign_in(page: Page, url: str, path: str, agent: str) -> None:
    await page.goto(url + path)
    await expect(page.locator("#login-form")).to_be_visible(timeout=10_000)
    await fill_login(page, agent)


@contextlib.asynccontextmanager
async def serving(settings: config.Settings) -> AsyncIterator[tuple[IvrServer, str]]:
    server = IvrServer(settings)
    runner = web.AppRunner(server.web_app(), shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield server, f"http://{host}:{port}"
    finally:
        await runner.cleanup()
        await server.redis.aclose()
        await server.pubsub_redis.aclose()
