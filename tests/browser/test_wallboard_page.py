"""The wallboard page on REAL calls, in headless Debian Chromium (Playwright drives /usr/bin/chromium).

A supervisor signs in on /wallboard; a SIPp caller walks the menu into the faults queue (every agent
paused: the caller waits) and the page shows one caller waiting, the longest wait ticking by itself;
agent1006's SIPp phone answers and the page shows nobody waiting, one answered, agent1006 on call.
The service level here is 2 s (wallboard and reports): the wait turns red once it passes 2 s, and
the answer after ~4 s makes the queue's service level 0 %, red (below the 80 % target).
In Chinese, an incident opened on the server shows by the names the incidents policy gives its
service and area (移动数据 · 朝阳, not mobile_data · chaoyang-liaoning), the footer's service level
and day read the Chinese way, and so does the page title.
An agent who is not a supervisor gets the refusal, and the socket refuses them too.

This module starts its own Asterisk (the `pbx` fixture of tests/browser/conftest.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, expect

from ivrserver.devstack.asterisk import LocalAsterisk
from tests.browser.pages import sign_in
from tests.conftest import free_port
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import Ivr, running
from tests.integration.test_screen_pop_calls import server_settings

pytestmark = pytest.mark.integration

SCREENSHOT = Path("/tmp/reports/wallboard.png")
BAD = re.compile(r"(^|\s)bad(\s|$)")
RED = "rgb(255, 107, 107)"  # wallboard.css --bad


@pytest.fixture
async def ivr(pbx: LocalAsterisk, phones: Phones, redis_url: str, redis_client: aioredis.Redis,
              tmp_path: Path) -> AsyncIterator[Ivr]:
    settings = server_settings(pbx, redis_url, tmp_path, prefix=f"wbp{free_port()}", instance="wallboard",
                               agi_port=pbx.ports.agi_port)
    settings = dataclasses.replace(  # answered within 2 s, so that a few seconds' wait misses it
        settings, wallboard=dataclasses.replace(settings.wallboard, service_level_seconds=2),
        reports=dataclasses.replace(settings.reports, service_level_seconds=2))
    async with running(settings) as server:
        yield Ivr(server, redis_client, tmp_path / "menus")


async def test_the_board_follows_a_real_caller_into_a_queue_and_to_an_agent(
        ivr: Ivr, phones: Phones, browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await sign_in(page, ivr.base, "/wallboard?lang=en", "agent1010")
        await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
        faults = page.locator('#queues .queue[data-queue="faults"]')
        agent = page.locator('#agents .agent[data-agent="agent1006"]')
        await expect(faults.locator(".waiting")).to_have_text("0")
        await expect(agent).to_have_attribute("data-state", "paused", timeout=10_000)

        caller = await phones.caller("31", number="15559999", timeout=60)  # 3 = fault, 1 = the faults team
        await expect(faults.locator(".waiting")).to_have_text("1", timeout=15_000)
        await expect(page.locator("#total-waiting")).to_have_text("1")
        # The longest wait ticks on the page by itself (no frame arrives while the caller waits).
        await expect(faults.locator(".longest")).to_have_text("0:02", timeout=5_000)
        await expect(faults.locator(".longest")).to_have_text("0:03", timeout=3_000)
        # past the service level's 2 s: the longest wait is drawn red
        await expect(faults.locator(".longest")).to_have_class(BAD)
        await expect(faults.locator(".longest")).to_have_css("color", RED)
        await page.screenshot(path=str(SCREENSHOT.with_name("wallboard-waiting.png")), full_page=True)

        phone = await phones.agent(1006, ring_ms=500, hold_ms=3000)
        await expect(agent).to_have_attribute("data-state", "on_call", timeout=15_000)
        await expect(agent.locator(".astate")).to_have_text("On call")
        await expect(faults.locator(".waiting")).to_have_text("0")
        await expect(faults.locator(".answered")).to_have_text("1")
        await expect(faults.locator(".sl")).to_have_text("0%")  # answered after more than 2 s
        await expect(faults.locator(".sl")).to_have_class(BAD)  # below the 80 % target: red
        await expect(faults.locator(".sl")).to_have_css("color", RED)
        await expect(faults.locator(".longest")).to_have_text("–")
        await expect(faults.locator(".longest")).not_to_have_class(BAD)
        await expect(page.locator("#count-on_call")).to_have_text("1")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert "⟦" not in await page.inner_text("body")  # i18n.js marks a missing message so
        today = datetime.datetime.now(datetime.UTC).date()  # wallboard.timezone: UTC here
        await expect(page.locator("#sl-note")).to_have_text(
            f"Service level: answered within 2 s, today ({today.day} {today:%b} {today.year}); target 80 %")
        assert await page.title() == "ivrserver · wallboard"
        # The same board in Chinese, from the shared catalogue; the choice is remembered.
        await page.select_option("#lang", "zh")
        await expect(agent.locator(".astate")).to_have_text("通话中")
        await expect(faults.locator('[data-i18n="wallboard.queue.waiting"]')).to_have_text("排队")
        await expect(page.locator("#refused h1")).to_have_text("仅限班长")
        await expect(page.locator("#sl-note")).to_have_text(
            f"服务水平：2秒内接听（今日 {today.year}年{today.month}月{today.day}日）；目标 80%")
        assert await page.title() == "ivrserver · 实时监控大屏"
        # an incident, named as the incidents policy names its service and area, in the page's language
        assert ivr.server.incidents is not None
        await ivr.server.incidents.open("mobile_data", "chaoyang-liaoning", actor="supervisor:agent1010")
        incident = page.locator("#incidents li")
        await expect(incident.locator("strong")).to_have_text("移动数据 · 朝阳", timeout=10_000)
        await expect(incident.locator("span")).to_contain_text("处理中")
        assert "⟦" not in await page.inner_text("body")
        await page.screenshot(path=str(SCREENSHOT.with_name("wallboard-zh.png")), full_page=True)
        assert await page.evaluate("localStorage.getItem('ivr.lang')") == "zh"
        # ... and by the server, for this supervisor: another browser signing in shows Chinese.
        other = await browser.new_page()
        try:
            await sign_in(other, ivr.base, "/wallboard", "agent1010")
            await expect(other.locator("#conn")).to_have_text("已连接", timeout=10_000)
            await expect(other.locator('#queues .queue[data-queue="faults"] [data-i18n="wallboard.queue.answered"]'
                                       )).to_have_text("已接听")
        finally:
            await other.close()
        await page.select_option("#lang", "en")
        await expect(faults.locator('[data-i18n="wallboard.queue.answered"]')).to_have_text("answered")
        await expect(incident.locator("strong")).to_have_text("mobile data · Chaoyang")
        assert (await phone.wait()).ok
        assert (await caller.wait()).ok
        await expect(agent).not_to_have_attribute("data-state", "on_call", timeout=15_000)
        assert errors == []
    finally:
        await page.close()


async def test_an_agent_is_refused_on_the_page_and_on_the_socket(ivr: Ivr, browser: Browser) -> None:
    page = await browser.new_page()
    try:
        await sign_in(page, ivr.base, "/wallboard?lang=en", "agent1001")
        await expect(page.locator("#refused")).to_be_visible(timeout=10_000)
        await expect(page.locator("#refused h1")).to_have_text("Supervisors only")
        await expect(page.locator("#board")).to_be_hidden()
        await page.select_option("#lang", "zh")
        await expect(page.locator("#refused h1")).to_have_text("仅限班长")
        await page.select_option("#lang", "en")
        # The page's own cookie on a socket opened by hand: the upgrade is refused (403), nothing arrives.
        outcome = await page.evaluate("""() => new Promise((resolve) => {
            const ws = new WebSocket(`ws://${location.host}/ws/wallboard`);
            let got = 0;
            ws.onmessage = () => { got += 1; };
            ws.onclose = (ev) => resolve({code: ev.code, got});
        })""")
        assert outcome == {"code": 1006, "got": 0}
        await page.screenshot(path=str(SCREENSHOT.with_name("wallboard-refused.png")))
    finally:
        await page.close()
