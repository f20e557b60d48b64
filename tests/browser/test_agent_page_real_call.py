"""The agent desktop on a REAL call, in headless Debian Chromium (Playwright drives /usr/bin/chromium).

SIPp caller → Asterisk 22 → the real IvrServer (FastAGI routing, AMI screen-pop, web page at `/`)
→ SIPp phone of agent1001. The caller is a VIP whose account manager is agent1001 and whose name
is hostile markup: the page must show it as text and run none of it. The agent writes a note and
a disposition from the page and the call's contact record in Redis carries them.

This module starts its own Asterisk (the `pbx` fixture of tests/browser/conftest.py), so it never
shares an instance directory with tests/integration's session Asterisk when both run in one session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml
from playwright.async_api import Browser, expect

from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.domain.model import Customer, Outcome, Tier
from ivrserver.store import contacts, customers
from tests.browser.pages import log_in
from tests.conftest import free_port
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import Ivr, wait_until
from tests.integration.test_screen_pop_calls import running, server_settings

pytestmark = pytest.mark.integration

HOSTILE_NAME = 'Boss Wang <script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
NUMBER = "15550021"
NOTE = 'Refund promised by Friday <img src=x onerror="window.__pwned=3">'
SCREENSHOT = "/tmp/agent-real-call.png"
REPO = Path(__file__).resolve().parents[2]
WRAP_UP_SECONDS = 4


@pytest.fixture
def agents_file(tmp_path: Path) -> Path:
    """The demo agents with a short wrap-up, so the test sees it end (the page must notice by itself:
    wrap-up ends by time, no event says so)."""
    agents = yaml.safe_load((REPO / "scripts" / "demo-agents.yaml").read_text())
    agents["wrap_up_seconds"] = WRAP_UP_SECONDS
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump(agents, sort_keys=False))
    return path


@pytest.fixture
async def ivr(pbx: LocalAsterisk, phones: Phones, redis_url: str, redis_client: aioredis.Redis,
              tmp_path: Path, agents_file: Path) -> AsyncIterator[Ivr]:
    settings = server_settings(pbx, redis_url, tmp_path, prefix=f"br{free_port()}", instance="browser",
                               agi_port=pbx.ports.agi_port)
    routing = dataclasses.replace(settings.routing, agents_file=str(agents_file))
    settings = dataclasses.replace(settings, routing=routing)
    async with running(settings) as server:
        yield Ivr(server, redis_client, tmp_path / "menus")


async def test_a_real_vip_call_pops_on_the_page_as_text_and_the_notes_reach_the_contact(
        ivr: Ivr, phones: Phones, browser: Browser) -> None:
    await customers.save_customer(ivr.redis, ivr.keys, Customer(
        id="c-vip-hostile", name=HOSTILE_NAME, phones=(NUMBER,), tier=Tier.VIP, account_manager="agent1001"))
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await log_in(page, ivr.base, "agent1001")

        # The account manager's phone rings for 1.5 s, then the call lasts 2 s.
        manager = await phones.agent(1001, ring_ms=1500, hold_ms=2000)
        await ivr.agent_ready("agent1001")
        caller = await phones.caller("", number=NUMBER)

        # The story is on screen while the phone still rings, the name as text.
        await expect(page.locator("#pop-name")).to_have_text(HOSTILE_NAME, timeout=10_000)
        await expect(page.locator("#pop-phase")).to_have_text("ringing")
        await expect(page.locator("#pop-number")).to_have_text(NUMBER)
        await expect(page.locator("#pop-reason")).to_contain_text("agent1001")
        await expect(page.locator("#pop-tags")).to_contain_text("vip")
        await expect(page.locator("#notes-contact")).to_contain_text("Contact ")
        assert await page.locator("#pop script, #pop img").count() == 0
        assert await page.evaluate("window.__pwned") is None

        await expect(page.locator("#pop-phase")).to_have_text("answered", timeout=10_000)
        await expect(page.locator("#state-badge")).to_have_text("on call")
        await expect(page.locator("#recent li").first).to_contain_text("· answered")
        assert (await manager.wait()).ok
        assert (await caller.wait()).ok
        await expect(page.locator("#pop-phase")).to_have_text("ended", timeout=10_000)
        # What the agent sees once the call is over: wrap-up, and the call in "Recent pops" as ended.
        await expect(page.locator("#state-badge")).to_have_text("wrap up")
        await expect(page.locator("#recent li")).to_have_count(1)
        await expect(page.locator("#recent li").first).to_contain_text("· ended")
        await page.screenshot(path="/tmp/agent-real-call-wrapup.png", full_page=True)
        contact = await ivr.finished_contact(customer_id="c-vip-hostile")
        assert contact.outcome is Outcome.ANSWERED and contact.agents == ("agent1001",)
        await expect(page.locator("#notes-contact")).to_have_text(f"Contact {contact.id}")

        # Wrap-up: the agent writes the note and the disposition from the page.
        await page.fill("#notes-text", NOTE)
        await page.select_option("#notes-disposition", "follow_up")
        await page.click("#notes-save")
        await expect(page.locator("#notes-status")).to_have_text("Saved.")

        async def saved() -> object:
            found = await contacts.get_contact(ivr.redis, ivr.keys, contact.id)
            return found if found is not None and found.notes else None
        record = await wait_until(saved, timeout=5, what="the note on the contact record")
        assert (record.notes, record.disposition) == (NOTE, "follow_up")
        assert record.outcome is Outcome.ANSWERED  # the write-back kept what the call recorded

        # Wrap-up ends by time alone: the badge must come back to what GET /api/v1/me says, ready.
        await expect(page.locator("#state-badge")).to_have_text("ready", timeout=(WRAP_UP_SECONDS + 6) * 1000)
        me = await page.evaluate("""async () => {
            const token = sessionStorage.getItem('ivr.token');
            const r = await fetch('/api/v1/me', {headers: {Authorization: 'Bearer ' + token}});
            return await r.json();
        }""")
        assert me["state"] == "ready"
        await expect(page.locator("#recent li").first).to_contain_text("· ended")
        await page.screenshot(path=SCREENSHOT, full_page=True)
        assert await page.locator("#pop script, #pop img, #notes-form img").count() == 0
        assert await page.evaluate("window.__pwned") is None
        assert dialogs == [] and errors == []
    finally:
        await page.close()
