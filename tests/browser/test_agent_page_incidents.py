"""The known incidents on the pop (incidents.js), in headless Debian Chromium: a caller from an area
with an active mass-fault incident — the agent sees service, area, state, cause and expected fix,
in the page's language, with hostile text kept as text."""

from __future__ import annotations

import dataclasses
import time

import redis.asyncio as aioredis
from playwright.async_api import Browser, expect

from ivrserver.domain.screen_pop import PopContext, Role, build_pop
from ivrserver.store.keys import Keys
from tests.browser.test_agent_page import browser, hostile_pop, log_in  # noqa: F401  (fixture)
from tests.test_agent_ws import make_desk

HOSTILE_CAUSE = '<img src=x onerror="window.__pwned=1">fibre cut'


def pop_with_incident(now: float) -> dict:
    pop = hostile_pop(now)
    ctx = PopContext(call_id="ctx-incident", number="+8613904210001", contact_id="T-inc", customer=None,
                     routing_reason="fault report", queue="faults",
                     incidents=({"id": "inc-1-mobile_data-chaoyang", "service_name": "mobile data",
                                 "area_name": "Chaoyang", "service_names": {"en": "mobile data", "zh": "移动数据"},
                                 "area_names": {"en": "Chaoyang", "zh": "朝阳"}, "state": "acknowledged",
                                 "cause": HOSTILE_CAUSE,
                                 "expected_fix_at": now + 3600, "opened_at": now - 600},))
    assert dataclasses.is_dataclass(ctx)
    return {**build_pop(ctx, role=Role.AGENT, now=now), "seq_hint": pop.get("seq_hint")}


async def test_the_pop_shows_known_incidents_in_the_callers_area(browser: Browser, redis_url: str,  # noqa: F811
                                                                 redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await log_in(page, desk.url, "agent1001")
        box = page.locator("#pop-incidents-box")
        await desk.hub.publish("agent1001", hostile_pop(time.time()))
        await expect(page.locator("#pop")).to_be_visible(timeout=10_000)
        await expect(box).to_be_hidden()  # no incident on this pop

        await desk.hub.publish("agent1001", pop_with_incident(time.time()))
        await expect(box).to_be_visible(timeout=10_000)
        item = page.locator("#pop-incidents .incident")
        await expect(item).to_have_count(1)
        await expect(item).to_contain_text("mobile data in Chaoyang")
        await expect(item).to_contain_text("acknowledged")
        await expect(item).to_contain_text("Cause: " + HOSTILE_CAUSE)  # shown as text, never parsed
        await expect(item).to_contain_text("Expected fix:")
        assert await page.evaluate("window.__pwned") is None

        await page.select_option("#lang-select", "zh")
        await expect(item).to_contain_text("朝阳移动数据故障")  # the names in the page's language
        await expect(item).to_contain_text("已受理")
        await expect(page.locator("#pop-incidents-box h3")).to_have_text("来电者所在地区的已知故障")
