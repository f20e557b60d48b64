"""The dead letters on the agent desk (deliveries.js; issue 18 §2 "a dead-letter list supervisors
see"), in headless Debian Chromium against the real web app (IvrServer.web_app on a free port), its
own webhook deliverer and case follow-up, a private Redis and a real webhook receiver on 127.0.0.1.

A case change goes out as the webhook case.opened to a receiver that answers 500 until told
otherwise (webhooks.yaml: max_attempts 1, so it is dead at once) and to a third follow-up step
("crm-sync") that fails with a hostile error text until told otherwise (cases.followup_max_attempts
2). A supervisor's desk shows both lists with when, what and why, the error as text; the receiver
is fixed and Retry sends the webhook again (the receiver accepts it); in 中文 the follow-up entry is
relabelled, Retry hands the change to that step once. An agent's desk has no such panel.
Screenshots: /tmp/reports/desk_deliveries.png (English) and /tmp/reports/desk_deliveries_zh.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain.cases import CaseChange
from ivrserver.domain.model import Customer, Tier
from ivrserver.store import cases as case_store
from ivrserver.store import customers
from ivrserver.store.keys import Keys
from tests.browser.pages import serving
from tests.browser.test_agent_page import browser, log_in  # noqa: F401  (the browser fixture)
from tests.inprocess import eventually
from tests.test_webhooks_delivery import SECRET, Receiver

REPO = Path(__file__).resolve().parents[2]
SHOT = Path("/tmp/reports/desk_deliveries.png")
SHOT_ZH = Path("/tmp/reports/desk_deliveries_zh.png")
SUPERVISOR = "agent1010"  # supervisor: true in scripts/demo-agents.yaml
AGENT = "agent1001"
VIP = Customer(id="c-vip", name="Sun Quan", phones=("13800000009",), tier=Tier.VIP)
HOSTILE = '<img src=x onerror="window.__pwned=1">CRM refused'


class Gate:
    """The receiver's answers: 500 until `open`."""

    def __init__(self) -> None:
        self.open = False

    async def __call__(self, _n: int) -> web.StreamResponse:
        if self.open:
            return web.json_response({"ok": True})
        return web.json_response({"error": "down"}, status=500)


class CrmSync:
    """A follow-up step that fails with a hostile error text until `ok`."""

    def __init__(self) -> None:
        self.ok = False
        self.calls: list[CaseChange] = []

    async def __call__(self, change: CaseChange) -> None:
        self.calls.append(change)
        if not self.ok:
            raise RuntimeError(HOSTILE)


@contextlib.asynccontextmanager
async def deliveries_server(redis_url: str, keys: Keys, tmp_path: Path,
                            receiver: Receiver) -> AsyncIterator[tuple[IvrServer, str]]:
    agents = tmp_path / "agents.yaml"
    agents.write_text((REPO / "scripts" / "demo-agents.yaml").read_text())
    (tmp_path / "secret").write_text(SECRET.decode())
    (tmp_path / "secret").chmod(0o600)
    (tmp_path / "webhooks.yaml").write_text(
        f"endpoints:\n  - {{name: crm, url: '{receiver.url}', events: ['case.*'], secret_file: "
        f"'{tmp_path / 'secret'}', max_attempts: 1}}\n")
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": keys.prefix},
        "routing": {"agents_file": str(agents)},
        "menus": {"watch": False},
        "cases": {"followup_max_attempts": 2},
        "webhooks": {"endpoints_file": str(tmp_path / "webhooks.yaml"), "poll_interval": 0.05,
                     "backoff_base_seconds": 0.05},
    })
    async with serving(settings) as served:
        yield served


def watch(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and ("i18n" in m.text or "⟦" in m.text) else None)
    return problems


async def test_a_supervisor_sees_both_dead_letter_lists_and_retries(
        browser: Browser, redis_url: str, redis_client: aioredis.Redis, keys: Keys,  # noqa: F811
        tmp_path: Path) -> None:
    gate = Gate()
    receiver = Receiver(answers=[gate] * 100)
    await receiver.start()
    crm = CrmSync()
    await customers.save_customer(redis_client, keys, VIP)
    async with deliveries_server(redis_url, keys, tmp_path, receiver) as (server, url):
        followup = server.case_followup
        followup.retry_base, followup.retry_max, followup.block_ms = 0.02, 0.05, 50
        followup.register("crm-sync", crm)
        tasks = [asyncio.create_task(server.webhooks.run()), asyncio.create_task(followup.run())]
        try:
            case = await case_store.open_case(redis_client, keys, customer_id=VIP.id, summary="premium SMS",
                                              now=time.time())
            dead = await eventually(server.webhooks.dead, 20, "the webhook delivery dead")
            letters = await eventually(followup.dead_letters, 20, "the follow-up step dead")
            assert len(receiver.hits) == 1 and len(crm.calls) == 2 and len(dead) == len(letters) == 1

            context = await browser.new_context(locale="en-US", timezone_id="Asia/Shanghai",
                                                viewport={"width": 1400, "height": 1300})
            page = await context.new_page()
            problems = watch(page)
            await log_in(page, url, SUPERVISOR)
            card = page.locator("#deliveries-card")
            await expect(card).to_be_visible(timeout=10_000)
            await expect(card.locator("h3").first).to_have_text("Undelivered: webhooks and case follow-up")
            hook = page.locator("#dl-webhooks li.dead-letter")
            await expect(hook).to_have_count(1)
            await expect(hook).to_contain_text("case.opened to crm")
            await expect(hook).to_contain_text("given up ")
            await expect(hook).to_contain_text("Why: gave up after 1 attempts")
            await expect(hook).to_contain_text("Last answer: 500")
            await expect(hook).to_contain_text("Attempts: 1 · first queued ")
            await expect(hook).to_contain_text(f"Key: case-change:{letters[0].event_id}")
            step = page.locator("#dl-followup li.dead-letter")
            await expect(step).to_have_count(1)
            await expect(step).to_contain_text(f"Case #{case.id} of c-vip: opened")
            await expect(step).to_contain_text("crm-sync")
            await expect(step).to_contain_text("Why: RuntimeError: " + HOSTILE)  # text, never markup
            await expect(step).to_contain_text("too many failed attempts · Attempts: 2, from ")
            assert await page.evaluate("window.__pwned") is None
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            await card.scroll_into_view_if_needed()
            await page.screenshot(path=str(SHOT), full_page=True)

            # the receiver is fixed: Retry sends the webhook again, once
            gate.open = True
            await hook.locator("button.dl-retry").click()
            await expect(page.locator("#dl-status")).to_have_text("Queued again: case.opened to crm")
            await expect(page.locator("#dl-webhooks li")).to_have_text(["Nothing undelivered."])

            async def accepted() -> bool:
                return any(b["event"] == "case.opened" for b in receiver.accepted.values())
            await eventually(accepted, 20, "the webhook at the receiver")
            assert [h["body"]["event"] for h in receiver.hits] == ["case.opened", "case.opened"]

            # in Chinese: the follow-up entry relabelled; Retry hands the change to crm-sync once
            await page.select_option("#lang-select", "zh")
            await expect(card.locator("h3").first).to_have_text("未送达：Webhook 推送与工单后续处理")
            await expect(page.locator("#dl-status")).to_have_text("已重新排队：case.opened → crm")
            await expect(step).to_contain_text(f"客户 c-vip 的工单 #{case.id}：创建")
            await expect(step).to_contain_text("原因：RuntimeError: " + HOSTILE)
            await expect(step.locator("button.dl-retry")).to_have_text("重试")
            await expect(page.locator("#dl-webhooks li")).to_have_text(["没有未送达的内容。"])
            await page.screenshot(path=str(SHOT_ZH), full_page=True)
            crm.ok = True
            await step.locator("button.dl-retry").click()
            await expect(page.locator("#dl-status")).to_have_text(f"已重新排队：客户 c-vip 的工单 #{case.id}：创建")
            await expect(page.locator("#dl-followup li")).to_have_text(["没有未送达的内容。"])
            async def handed_again() -> bool:
                return len(crm.calls) == 3
            await eventually(handed_again, 20, "crm-sync handed the change again")
            assert crm.calls[-1].event_id == letters[0].event_id
            await asyncio.sleep(0.3)
            assert len(crm.calls) == 3 and len(receiver.hits) == 2  # once each
            assert await followup.dead_letters() == [] and await server.webhooks.dead() == []
            assert problems == []

            # an agent's desk: no such panel
            other = await browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
            agent_page = await other.new_page()
            await log_in(agent_page, url, AGENT)
            await expect(agent_page.locator("#idle")).to_be_visible()
            await expect(agent_page.locator("#deliveries-card")).to_be_hidden()
            assert await agent_page.locator("#dl-webhooks li").count() == 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await receiver.stop()
