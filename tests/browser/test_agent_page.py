"""The agent desktop in headless Debian Chromium (Playwright drives /usr/bin/chromium; never downloads one)."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, async_playwright, expect

from ivrserver.domain.model import Case, CaseStatus, Contact, ContactKind, Customer, Outcome, Segment, Tier
from ivrserver.domain.screen_pop import PopContext, Role, build_pop
from ivrserver.store import cases as case_store
from ivrserver.store import contacts
from ivrserver.store.keys import Keys
from tests.test_agent_ws import make_desk

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE_NAME = 'Mallory <script>window.__pwned = "script"</script><img src=x onerror="window.__pwned=\'img\'">'
HOSTILE_NOTE = '<img src=x onerror="window.__pwned=\'note\'">called about refund'
HOSTILE_INPUT = '<b onmouseover="window.__pwned=1">9</b>'


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian chromium is not installed: apt-get install -y chromium")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        await b.close()


def hostile_pop(now: float, case_id: str = "1") -> dict:
    customer = Customer(id="C1", name=HOSTILE_NAME, phones=("13800000001",), tier=Tier.VIP,
                        segment=Segment.ENTERPRISE, language="zh", account_manager="Li Na",
                        account_number="6222020212345678", pin_hash="scrypt$x",
                        attributes={"plan": "Global 199 <i>", "credit_score": "712"})
    history = (
        Contact(id="T0", kind=ContactKind.INBOUND, number="13800000001", started_at=now - 5 * 86400,
                customer_id="C1", outcome=Outcome.ANSWERED, disposition="follow_up", notes=HOSTILE_NOTE,
                agents=("agent1002",), ivr_path=("hotline", "billing")),
        Contact(id="T-1", kind=ContactKind.INBOUND, number="13800000001", started_at=now - 9 * 86400,
                customer_id="C1", outcome=Outcome.ABANDONED, ivr_path=("hotline",)),
    )
    cases = (Case(id=case_id, customer_id="C1", status=CaseStatus.OPEN, summary="premium SMS charged without consent",
                  opened_at=now - 21 * 86400, severity=1, owner_agent="agent1001",
                  still_needed="date of the first charge", next_step="tell the refund decision"),)
    ctx = PopContext(call_id="ctx-browser", number="13800000001", contact_id="T-browser", customer=customer,
                     routing_reason=f"repeat caller with open case {case_id}: back to its owner", queue="vip",
                     ivr_path=({"menu": "hotline", "input": "2", "label": "Billing"},
                               {"menu": "account_pin", "input": "123456"},
                               {"menu": "billing", "input": HOSTILE_INPUT, "label": "Dispute a charge"}),
                     recent_contacts=history, open_cases=cases)
    return build_pop(ctx, role=Role.AGENT, now=now)


async def log_in(page: Page, url: str, agent: str) -> None:
    await page.goto(url + "/")
    await page.fill("#login-agent", agent)
    await page.fill("#login-password", agent)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)


async def test_agent_page_pop_notes_and_no_injection(browser: Browser, redis_url: str,
                                                     redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        page.on("pageerror", lambda e: errors.append(str(e)))
        await log_in(page, desk.url, "agent1001")
        await expect(page.locator("#agent-name")).to_contain_text("Alice")

        # The ringing pop, as the lead publishes it on AgentCalled.
        seq = await desk.hub.publish("agent1001", hostile_pop(time.time(), desk.cases["C1"]))
        await expect(page.locator("#pop-name")).to_have_text(HOSTILE_NAME, timeout=10_000)
        await expect(page.locator("#pop-phase")).to_have_text("ringing")
        await expect(page.locator("#pop-reason")).to_contain_text("repeat caller with open case 1")
        await expect(page.locator("#pop-path li")).to_have_count(3)
        await expect(page.locator("#pop-path")).to_contain_text("••••")  # the PIN is never shown
        await expect(page.locator("#pop-path")).to_contain_text(HOSTILE_INPUT)
        await expect(page.locator("#pop-cases")).to_contain_text("date of the first charge")
        await expect(page.locator("#pop-cases")).to_contain_text("tell the refund decision")
        await expect(page.locator("#pop-history li")).to_have_count(2)
        await expect(page.locator("#pop-history")).to_contain_text(HOSTILE_NOTE)
        await expect(page.locator("#pop-facts")).to_contain_text("••••5678")
        await expect(page.locator("#pop-facts")).not_to_contain_text("712")  # not whitelisted for agents

        # Nothing the caller typed became markup or ran.
        assert await page.locator("#pop img, #pop script, #pop b, #pop i").count() == 0
        assert await page.evaluate("window.__pwned") is None
        assert dialogs == [] and errors == []

        # The page acknowledged the pop: supervisors no longer see it as unacknowledged.
        for _ in range(100):
            if not await desk.store.unacked(now=time.time()):
                break
            await page.wait_for_timeout(50)
        assert await desk.store.unacked(now=time.time()) == []

        # Answer, then write back notes + disposition + case next step.
        await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "ctx-browser", "phase": "answered"})
        await expect(page.locator("#pop-phase")).to_have_text("answered")
        await expect(page.locator("#state-badge")).to_have_text("on call")
        await page.fill("#notes-text", "Refund approved <script>alert(1)</script>")
        await page.select_option("#notes-disposition", "resolved")
        await page.select_option("#case-status", "closed")
        await page.fill("#case-next", "none: refunded")
        await page.click("#notes-save")
        await expect(page.locator("#notes-status")).to_have_text("Saved.")
        contact = await contacts.get_contact(redis_client, keys, "T-browser")
        assert contact is not None
        assert (contact.notes, contact.disposition) == ("Refund approved <script>alert(1)</script>", "resolved")
        case = await case_store.get_case(redis_client, keys, desk.cases["C1"])
        assert case is not None and (case.status, case.next_step) == ("closed", "none: refunded")

        # Pause from the page reaches the injected QueuePause hook.
        await page.click("#btn-pause")
        await expect(page.locator("#state-badge")).to_have_text("paused")
        assert desk.paused == [("agent1001", True)]

        await page.screenshot(path="/tmp/agent-page.png", full_page=True)
        assert await page.evaluate("window.__pwned") is None
        assert dialogs == [] and errors == []
        assert seq == 1
        await page.close()


async def test_reload_mid_call_shows_the_pop_again(browser: Browser, redis_url: str,
                                                   redis_client: aioredis.Redis, keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk:
        page = await browser.new_page()
        await log_in(page, desk.url, "agent1001")
        await desk.hub.publish("agent1001", hostile_pop(time.time()))
        await expect(page.locator("#pop-name")).to_have_text(HOSTILE_NAME, timeout=10_000)
        # The session survives in sessionStorage; the new socket replays the backlog, so the pop is back.
        await page.reload()
        await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
        await expect(page.locator("#pop-name")).to_have_text(HOSTILE_NAME, timeout=10_000)
        await expect(page.locator("#pop-phase")).to_have_text("ringing")
        await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "ctx-browser", "phase": "ended"})
        await expect(page.locator("#pop-phase")).to_have_text("ended")
        await expect(page.locator("#recent li")).to_have_count(1)
        assert await page.evaluate("window.__pwned") is None
        await page.close()


async def test_wrong_password_shows_error(browser: Browser, redis_url: str, redis_client: aioredis.Redis,
                                          keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk:
        page = await browser.new_page()
        await page.goto(desk.url + "/")
        await page.fill("#login-agent", "agent1001")
        await page.fill("#login-password", "nope")
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#login-error")).to_have_text("wrong agent or password")
        await expect(page.locator("#desk-view")).to_be_hidden()
        await page.close()


async def test_narrow_window_keeps_log_out_on_screen(browser: Browser, redis_url: str, redis_client: aioredis.Redis,
                                                     keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk:
        page = await browser.new_page(viewport={"width": 420, "height": 800})
        await log_in(page, desk.url, "agent1001")
        await expect(page.locator("#state-badge")).to_be_visible()
        await page.screenshot(path="/tmp/agent-page-420.png", full_page=True)
        for control in ("#btn-logout", "#btn-ready", "#btn-pause", "#state-badge", "#conn"):
            box = await page.locator(control).bounding_box()
            assert box is not None, control
            assert box["x"] >= 0 and box["x"] + box["width"] <= 420, (control, box)
        # Nothing scrolls sideways, and Log out is really clickable (no other element on top of it).
        assert await page.evaluate("document.documentElement.scrollWidth") <= 420
        await page.locator("#btn-logout").click(timeout=2000)
        await expect(page.locator("#login-view")).to_be_visible()
        await expect(page.locator("#desk-view")).to_be_hidden()
        await page.close()


async def test_recent_pops_say_how_each_call_went(browser: Browser, redis_url: str, redis_client: aioredis.Redis,
                                                  keys: Keys) -> None:
    async with make_desk(redis_url, keys) as desk:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await log_in(page, desk.url, "agent1001")
        first = {"type": "pop", "phase": "ringing", "call_id": "call-a", "number": "13800000001", "at": time.time(),
                 "customer": {"id": "C1", "name": "Wang Wei", "tier": "vip",
                              "preferences": {"timezone": "Asia/Shanghai", "allowed_from": "09:00",
                                              "allowed_until": "21:00"}}}
        await desk.hub.publish("agent1001", first)
        recent = page.locator("#recent li")
        await expect(recent).to_have_count(1)
        await expect(recent.nth(0)).to_contain_text("Wang Wei · ringing")
        await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "call-a", "phase": "answered"})
        await expect(recent.nth(0)).to_contain_text("Wang Wei · answered")
        await expect(page.locator("#state-badge")).to_have_text("on call")
        await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "call-a", "phase": "ended"})
        await expect(recent.nth(0)).to_contain_text("Wang Wei · ended")
        await expect(page.locator("#state-badge")).to_have_text("wrap up")
        # A second caller rings and hangs up before the agent answers: missed, not "ringing".
        await desk.hub.publish("agent1001", {**first, "call_id": "call-b", "number": "13900000002", "customer": None})
        await expect(recent).to_have_count(2)
        await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "call-b", "phase": "ended"})
        await expect(recent.nth(0)).to_contain_text("13900000002 · missed")
        await expect(recent.nth(1)).to_contain_text("Wang Wei · ended")
        # Looking at the older pop again shows its card; it does not change the agent's state.
        badge = await page.locator("#state-badge").text_content()
        await recent.nth(1).locator("button").click()
        await expect(page.locator("#pop-name")).to_have_text("Wang Wei")
        await expect(page.locator("#pop-phase")).to_have_text("ended")
        assert await page.locator("#state-badge").text_content() == badge
        # After a reload the replayed history gives the same labels, once each.
        await page.reload()
        await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
        await expect(recent).to_have_count(2)
        await expect(recent.nth(0)).to_contain_text("13900000002 · missed")
        await expect(recent.nth(1)).to_contain_text("Wang Wei · ended")
        await page.close()


async def test_page_keeps_receiving_pops_after_redis_lost_its_numbering(
        browser: Browser, redis_url: str, redis_client: aioredis.Redis, keys: Keys) -> None:
    # A back-office token (kept in settings, not in Redis) so the login outlives the FLUSHALL: what
    # is under test is the event numbering, not the sessions (which Redis loses too).
    token = "static-token-for-agent1001-0123456789"
    async with make_desk(redis_url, keys, static_tokens={"agent1001": token}) as desk:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(desk.url + "/")
        await page.evaluate("t => sessionStorage.setItem('ivr.token', t)", token)
        await page.reload()
        await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
        for i in range(9):
            await desk.hub.publish("agent1001", {"type": "pop", "phase": "ringing", "call_id": f"old{i}",
                                                 "number": f"1380000000{i}", "customer": None})
        await expect(page.locator("#pop-number")).to_have_text("13800000008")

        await redis_client.flushall()  # the page has seen 9; the next event is numbered 1 again
        await desk.hub.publish("agent1001", {"type": "pop", "phase": "ringing", "call_id": "new",
                                             "number": "13911112222", "customer": None})
        await expect(page.locator("#pop-number")).to_have_text("13911112222")
        await expect(page.locator("#recent li").first).to_contain_text("13911112222 · ringing")
        await desk.hub.publish("agent1001", {"type": "pop_phase", "call_id": "new", "phase": "answered"})
        await expect(page.locator("#pop-phase")).to_have_text("answered")
        # The page acknowledged the new pop in the new numbering.
        for _ in range(100):
            if not await desk.store.unacked(now=time.time()):
                break
            await page.wait_for_timeout(50)
        assert await desk.store.unacked(now=time.time()) == []
        assert errors == []
        await page.close()
