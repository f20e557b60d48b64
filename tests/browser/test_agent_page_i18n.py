"""The agent desk in Simplified Chinese, in headless Debian Chromium (issue 20 §4).

An agent on an English browser switches the desk to 中文 with a pop on screen: every visible label
follows (no Latin-only text left but the data and proper nouns on ALLOWED), titles and aria-labels
too, dates read the Chinese way; a reload keeps Chinese, and so does a fresh browser (the choice is
remembered server-side, GET/PUT /api/v1/me/preferences); no message is missing (no ⟦key⟧ marker,
no console error). Screenshot: /tmp/reports/desk_zh.png.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, expect

from ivrserver.domain.model import (
    Case,
    CaseStatus,
    Contact,
    ContactKind,
    ContactPreferences,
    Customer,
    Outcome,
    Segment,
    Tier,
)
from ivrserver.domain.screen_pop import PopContext, Role, build_pop
from ivrserver.store.keys import Keys
from tests.browser.test_agent_page import browser, log_in  # noqa: F401  (the browser fixture)
from tests.test_agent_ws import make_desk

SHOT = Path("/tmp/reports/desk_zh.png")
# Latin-only text allowed on the Chinese page: proper nouns and the data of this pop (names, ids,
# numbers, time zones are the caller's and the operator's, not labels of the page).
ALLOWED = {
    "ivrserver",  # the product
    "English",  # the language picker names each language in itself
    "Alice(agent1001)",  # the agent's name and id
    "C1", "agent1001",  # customer id, case owner
    "09:00–21:00 Asia/Shanghai",  # the customer's call hours in their time zone
    "account_pin",  # an IVR step's menu id (a menu without a label: menus/*.yaml)
    "plan",  # a customer attribute's name (the operator's own data)
}
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
LATIN = re.compile(r"[A-Za-z]")

# Every text node the agent can see (options of a visible select included), and the titles /
# aria-labels / placeholders of visible elements.
VISIBLE_TEXT = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim();
    if (!text) continue;
    const host = n.parentElement.closest("option") ? n.parentElement.closest("select") : n.parentElement;
    if (host && host.checkVisibility()) out.push(text);
  }
  for (const node of document.querySelectorAll("[title], [aria-label], [placeholder]")) {
    if (!node.checkVisibility()) continue;
    for (const a of ["title", "aria-label", "placeholder"]) if (node.getAttribute(a)) out.push(node.getAttribute(a));
  }
  out.push(document.title);
  return out;
}"""


def mandarin_pop(now: float, case_id: str) -> dict:
    customer = Customer(id="C1", name="王伟", phones=("13800000001",), tier=Tier.VIP, segment=Segment.ENTERPRISE,
                        language="zh", account_manager="李娜", account_number="6222020212345678",
                        pin_hash="scrypt$x", attributes={"plan": "全球通 199"})
    customer = replace(customer, preferences=ContactPreferences(timezone="Asia/Shanghai", allowed_from="09:00",
                                                                allowed_until="21:00"))
    history = (
        Contact(id="T0", kind=ContactKind.INBOUND, number="13800000001", started_at=now - 5 * 86400,
                customer_id="C1", outcome=Outcome.ANSWERED, disposition="follow_up", notes="客户询问退款进度",
                agents=("agent1002",), ivr_path=("hotline", "billing")),
        Contact(id="T-1", kind=ContactKind.INBOUND, number="13800000001", started_at=now - 9 * 86400,
                customer_id="C1", outcome=Outcome.ABANDONED, ivr_path=("hotline",)),
    )
    cases = (Case(id=case_id, customer_id="C1", status=CaseStatus.OPEN, summary="未经同意扣除增值短信费",
                  opened_at=now - 21 * 86400, severity=1, owner_agent="agent1001",
                  still_needed="首次扣费日期", next_step="告知退款决定"),)
    ctx = PopContext(call_id="ctx-zh", number="13800000001", contact_id="T-browser", customer=customer,
                     routing_reason="有未结工单的重复来电:转回负责人", queue="vip",
                     ivr_path=({"menu": "hotline", "input": "2", "label": "话费账单"},
                               {"menu": "account_pin", "input": "123456"},
                               {"menu": "billing", "input": "1", "label": "投诉扣费"}),
                     recent_contacts=history, open_cases=cases)
    return build_pop(ctx, role=Role.AGENT, now=now)


async def latin_labels(page: Page) -> list[str]:
    texts: list[str] = await page.evaluate(VISIBLE_TEXT)
    return sorted({t for t in texts if LATIN.search(t) and not CJK.search(t) and t not in ALLOWED})


async def test_desk_switches_to_chinese_and_keeps_it(browser: Browser, redis_url: str,  # noqa: F811
                                                     redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk:
        context = await browser.new_context(locale="en-US", timezone_id="Asia/Shanghai",
                                            viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(str(e)))

        # An English browser: the login page and the desk start in English.
        await page.goto(desk.url + "/")
        await expect(page.locator("#login-form h1")).to_have_text("Sign in")
        await log_in(page, desk.url, "agent1001")
        await desk.hub.publish("agent1001", mandarin_pop(time.time(), desk.cases["C1"]))
        await expect(page.locator("#pop-name")).to_have_text("王伟", timeout=10_000)
        await expect(page.locator("#pop-phase")).to_have_text("ringing")

        # The agent picks 中文: everything follows at once, the pop included.
        await page.select_option("#lang-select", "zh")
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.locator("#pop-phase")).to_have_text("振铃中")
        await expect(page.locator("#conn")).to_have_text("在线")
        await expect(page.locator("#btn-logout")).to_have_text("退出登录")
        await expect(page.locator("#conn")).to_have_attribute("title", "实时连接")
        assert await page.title() == "ivrserver · 坐席工作台"
        await expect(page.locator("#pop-history li").first).to_contain_text("已接听")
        await expect(page.locator("#pop-cases")).to_contain_text("严重级别 1")
        await expect(page.locator("#notes-disposition option[value=follow_up]")).to_have_text("需要跟进")
        assert await latin_labels(page) == []

        # Dates in the Chinese form ("2026年4月12日 14:24"), not "12/4/2026, 2:24:15 PM".
        when = await page.locator("#pop-history .when").first.text_content()
        assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}", when or ""), when
        recent = await page.locator("#recent li").first.text_content()
        assert recent and "振铃中" in recent and re.search(r"\d{4}年\d{1,2}月\d{1,2}日", recent), recent

        # The browser draws its date-time field in its own locale; the page repeats the choice in Chinese.
        await page.fill("#cb-earliest", "2026-12-07T14:30:00")
        await expect(page.locator("#cb-earliest-shown")).to_have_text("2026年12月7日 14:30")

        # Messages written by the page after the switch: a status line, the state badge.
        await page.click("#notes-save")
        await expect(page.locator("#notes-status")).to_have_text("已保存。")
        # A status line already shown follows a change of language too; what was typed stays.
        await page.fill("#case-next", "周五前回电")
        await page.select_option("#lang-select", "en")
        await expect(page.locator("#notes-status")).to_have_text("Saved.")
        await expect(page.locator("#case-next")).to_have_value("周五前回电")
        await page.select_option("#lang-select", "zh")
        await expect(page.locator("#notes-status")).to_have_text("已保存。")
        await page.click("#btn-pause")
        await expect(page.locator("#state-badge")).to_have_text("暂停")
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOT), full_page=True)

        # Remembered: the server has it, a reload stays Chinese (pop replayed from the backlog).
        assert await redis_client.hget(keys.agent_prefs("agent1001"), "language") == "zh"
        await page.reload()
        await expect(page.locator("#pop-name")).to_have_text("王伟", timeout=10_000)
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.locator("#pop-phase")).to_have_text("振铃中")
        await expect(page.locator("#lang-select")).to_have_value("zh")
        assert await latin_labels(page) == []

        # A fresh English browser: the login page is English (nothing known yet), the desk turns
        # Chinese as soon as the agent is known.
        other = await browser.new_context(locale="en-US", timezone_id="Asia/Shanghai")
        fresh = await other.new_page()
        await fresh.goto(desk.url + "/")
        await expect(fresh.locator("#login-form h1")).to_have_text("Sign in")
        await fresh.fill("#login-agent", "agent1001")
        await fresh.fill("#login-password", "agent1001")
        await fresh.click("#login-form button[type=submit]")
        await expect(fresh.locator("#conn")).to_have_text("在线", timeout=10_000)
        await expect(fresh.locator("#btn-ready")).to_have_text("就绪")
        # ... and remembers it for this browser's next login page.
        await fresh.click("#btn-logout")
        await fresh.reload()
        await expect(fresh.locator("#login-form h1")).to_have_text("登录")
        assert await latin_labels(fresh) == []

        # Back to English: the same page, the English words again.
        await page.select_option("#lang-select", "en")
        await expect(page.locator("#pop-phase")).to_have_text("ringing")
        await expect(page.locator("#state-badge")).to_have_text("unknown")  # this test server reports no state
        assert await redis_client.hget(keys.agent_prefs("agent1001"), "language") == "en"

        assert not [m for m in console if "i18n" in m or "⟦" in m], console
        assert "⟦" not in (await page.content())
        await other.close()
        await context.close()


async def test_missing_message_is_visible(browser: Browser, redis_url: str, keys: Keys) -> None:  # noqa: F811
    """A key the catalogue lacks shows as ⟦key⟧ and is reported on the console (never silently English)."""
    async with make_desk(redis_url, keys, seed=False) as desk:
        page = await browser.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        await page.goto(desk.url + "/")
        await expect(page.locator("#login-form h1")).to_have_text("Sign in")
        shown = await page.evaluate("""() => {
          const span = document.createElement("span");
          span.dataset.i18n = "desk.no.such.key";
          document.body.appendChild(span);
          I18n.apply(document);
          return [span.textContent, I18n.t("desk.notes.contact", {id: "T7"}), I18n.duration(125),
                  I18n.money(4250, "CNY"), I18n.number(1234567)];
        }""")
        assert shown == ["⟦desk.no.such.key⟧", "Contact T7", "2 min 5 s", "CN¥42.50", "1,234,567"]
        assert any("desk.no.such.key" in m for m in console), console
        await page.select_option("#lang-select", "zh")
        await expect(page.locator("#login-form h1")).to_have_text("登录")
        shown = await page.evaluate("""() => [I18n.duration(125), I18n.duration(3600 + 59), I18n.money(4250, "CNY"),
                                          I18n.money(1999, "USD"), I18n.money(500, "JPY")]""")
        assert shown == ["2分5秒", "1小时59秒", "¥42.50", "US$19.99", "JP¥500"]
