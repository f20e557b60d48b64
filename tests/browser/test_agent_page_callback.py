"""Issue 7's "done when", end to end: an agent schedules a callback on the desktop page, and at that
time their phone rings with the customer's story on screen, then the customer's phone rings — on
real Asterisk, once.

Nothing of ours is replaced by a double: Debian Chromium (Playwright) on the real page served by an
in-process IvrServer (FastAGI routing, AMI screen-pop, callback scheduler, REST), Asterisk 22 of this
module's own, SIPp phones for the caller, agent1003 and the customer trunk, a private Redis.

1. A gold customer with an open case owned by agent1003 and an earlier contact calls the hotline;
   routing sends the call to the case owner, agent1003, whose page shows the pop.
2. After the call the agent fills the page's "Schedule a callback" form (a time 6 s ahead in the
   browser's time zone, UTC here, a reason; "call back with me" and the case as the page preset them).
3. Not before that time, agent1003's phone rings first and the page shows the callback pop (kind
   callback, the reason, the contact it came from, the case, the customer's history) while the
   customer has not been dialed yet; the agent answers, the customer's phone rings and answers.
4. Exactly one callback call: one agent leg (ChannelId = the attempt), one customer leg, counted on
   the test's own AMI session, and one `placed` marker.

Calling hours (company and customer) are 00:00-24:00 UTC: nothing depends on the hour of the run.
Screenshot of the callback pop: /tmp/agent-callback.png.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml
from playwright.async_api import Browser, Page, expect

from ivrserver import config
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.domain.callbacks import AttemptOutcome, Callback
from ivrserver.domain.model import Contact, ContactKind, Customer, Outcome, Tier
from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers
from tests.browser.pages import log_in
from tests.conftest import free_port
from tests.integration.conftest import Phones
from tests.integration.test_callback_calls import ALL_DAY, AmiWatch
from tests.integration.test_ivrserver_calls import REPO, Ivr, wait_until, write_menus, write_routing
from tests.integration.test_screen_pop_calls import running

pytestmark = pytest.mark.integration

AGENT = "agent1003"
NUMBER = "15550031"
CUSTOMER = Customer(id="c-cb-page", name="Sun Shangxiang", phones=(NUMBER,), tier=Tier.GOLD,
                    account_manager=AGENT, preferences=ALL_DAY)
OLD_NOTE = "Router replaced; customer still sees drops in the evening"
CASE_SUMMARY = "Line drops every evening"
REASON = "Confirm the line is stable after the fix"
LEAD_SECONDS = 6  # the callback is scheduled this far ahead
SCREENSHOT = "/tmp/agent-callback.png"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
async def watch(pbx: LocalAsterisk) -> AsyncIterator[AmiWatch]:
    w = AmiWatch(pbx)
    await w.start()
    try:
        yield w
    finally:
        await w.close()


def callback_settings(asterisk: LocalAsterisk, redis_url: str, workdir: Path) -> config.Settings:
    """One IvrServer owning the hotline's FastAGI port, callbacks on: quick polling, 1 s grace,
    calling hours all day, and agents whose wrap-up is 1 s (the agent who just took the call is
    free again well before the callback is due)."""
    write_menus(workdir / "menus")
    write_routing(workdir / "routing.yaml")
    agents = yaml.safe_load((REPO / "scripts" / "demo-agents.yaml").read_text())
    agents["wrap_up_seconds"] = 1
    (workdir / "agents.yaml").write_text(yaml.safe_dump(agents, sort_keys=False))
    ports = asterisk.ports
    return config.from_mapping({
        "redis": {"url": redis_url, "prefix": f"brcb{free_port()}"},
        "ami": {"host": "127.0.0.1", "port": ports.ami_port, "secret": asterisk.ami_secret,
                "ping_interval": 1.0, "silence_timeout": 6.0, "reconnect_max_delay": 1.0},
        "agi": {"host": ports.agi_host, "port": ports.agi_port, "drain_timeout": 2.0},
        "web": {"port": free_port()},
        "asterisk": {"config_dir": str(asterisk.etc_dir), "sounds_dir": str(asterisk.sounds_dir)},
        "menus": {"dir": str(workdir / "menus"), "watch": False},
        "routing": {"agents_file": str(workdir / "agents.yaml"), "policy_file": str(workdir / "routing.yaml")},
        # 24:00 rather than 23:59: a run at 23:59 UTC must not wait for the window.
        "callbacks": {"poll_interval": 0.1, "calling_from": "00:00", "calling_until": "24:00",
                      "agent_ring_seconds": 10, "grace_seconds": 1},
        "instance": "browser-cb",
    })


@pytest.fixture
async def ivr(pbx: LocalAsterisk, phones: Phones, redis_url: str, redis_client: aioredis.Redis,
              tmp_path: Path) -> AsyncIterator[Ivr]:
    async with running(callback_settings(pbx, redis_url, tmp_path)) as server:
        yield Ivr(server, redis_client, tmp_path / "menus")


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    # The datetime-local input is in the browser's zone: pin it, whatever the host's zone.
    context = await browser.new_context(timezone_id="UTC", viewport={"width": 1400, "height": 1100})
    yield await context.new_page()


# ----------------------------------------------------------------------------- helpers

async def customer_with_a_story(ivr: Ivr) -> str:
    """The customer, an open case owned by agent1003 and a contact three days ago; the case id."""
    now = time.time()
    await customers.save_customer(ivr.redis, ivr.keys, CUSTOMER)
    case = await case_store.open_case(ivr.redis, ivr.keys, customer_id=CUSTOMER.id, summary=CASE_SUMMARY,
                                   now=now - 3 * 86400, owner_agent=AGENT, severity=2,
                                   still_needed="a week without drops", next_step="call back after the fix")
    await contact_store.save_contact(ivr.redis, ivr.keys, Contact(
        id="ct-old-1", kind=ContactKind.INBOUND, number=NUMBER, started_at=now - 3 * 86400,
        customer_id=CUSTOMER.id, ended_at=now - 3 * 86400 + 300, agents=(AGENT,), outcome=Outcome.ANSWERED,
        disposition="follow_up", notes=OLD_NOTE), now=now)
    return case.id


async def placed_markers(ivr: Ivr, callback_id: str) -> dict[int, str]:
    """Attempt number → holder of the `placed` marker (who dialed it)."""
    found: dict[int, str] = {}
    async for key in ivr.redis.scan_iter(ivr.keys.callback_placed(callback_id, 0)[:-1] + "*"):
        found[int(key.rsplit(":", 1)[1])] = await ivr.redis.get(key) or ""
    return found


async def todays_call(ivr: Ivr) -> Contact:
    """The contact record of the call that just ended (not the one of three days ago)."""
    async def find() -> Contact | None:
        for c in await ivr.contacts():
            if c.id != "ct-old-1" and c.customer_id == CUSTOMER.id and c.outcome is not Outcome.IN_PROGRESS:
                return c
        return None
    found: Contact = await wait_until(find, what="the contact record of today's call")
    assert (found.kind, found.outcome, found.agents) == (ContactKind.INBOUND, Outcome.ANSWERED, (AGENT,))
    return found


def local_input(epoch: float) -> str:
    """The datetime-local value an agent in UTC types for `epoch` (to the second)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


# ----------------------------------------------------------------------------- the test

async def test_a_callback_scheduled_on_the_page_rings_the_agent_with_the_story_then_the_customer_once(
        ivr: Ivr, phones: Phones, watch: AmiWatch, page: Page) -> None:
    case_id = await customer_with_a_story(ivr)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await log_in(page, ivr.base, AGENT)

    # 1. The customer calls; routing sends the call to the case owner and the page pops.
    first = await phones.agent(1003, ring_ms=1500, hold_ms=1500)
    await ivr.agent_ready(AGENT)
    caller = await phones.caller("", number=NUMBER)
    await expect(page.locator("#pop-name")).to_have_text(CUSTOMER.name, timeout=10_000)
    await expect(page.locator("#pop-phase")).to_have_text("ringing")
    await expect(page.locator("#pop-reason")).to_contain_text(AGENT)
    await expect(page.locator("#pop-cases")).to_contain_text(CASE_SUMMARY)
    await expect(page.locator("#case-select")).to_have_value(case_id)
    assert (await first.wait()).ok
    assert (await caller.wait()).ok
    await expect(page.locator("#pop-phase")).to_have_text("ended", timeout=10_000)
    inbound = await todays_call(ivr)
    await expect(page.locator("#notes-contact")).to_have_text(f"Contact {inbound.id}")
    [inbound_leg] = watch.agent_legs(AGENT)

    # 2. The agent schedules the callback from the page, a few seconds ahead, "with me".
    callback_phone = await phones.agent(1003, ring_ms=2000, hold_ms=2000)  # the first phone has hung up
    customer_phone = await phones.customer(ring_ms=300, hold_ms=1000)
    due = float(int(time.time()) + LEAD_SECONDS)
    await expect(page.locator("#cb-me")).to_be_checked()
    await page.fill("#cb-earliest", local_input(due))
    await page.fill("#cb-reason", REASON)
    invalid = await page.locator("#cb-earliest").evaluate("e => e.validity.valid ? '' : e.validationMessage")
    assert not invalid, (f"the page's 'Earliest' input rejects {local_input(due)!r} ({invalid}): a datetime-local "
                         "input without a step attribute takes whole minutes only (step 60 s)")
    await page.click("#callback-form button[type=submit]")
    await expect(page.locator("#cb-status")).to_have_text("Callback scheduled.", timeout=5_000)
    scheduled_at = time.time()
    assert scheduled_at < due - 1, "the form took too long: the callback is not ahead any more"

    async def requested() -> list[Callback]:
        return await ivr.server.callbacks.list(customer=CUSTOMER.id)
    [cb] = await wait_until(requested, timeout=5, what="the callback in Redis")
    assert (cb.number, cb.preferred_agent, cb.requested_by) == (NUMBER, AGENT, AGENT)
    assert (cb.reason, cb.case_id, cb.context) == (REASON, case_id, f"from contact {inbound.id}")
    assert cb.earliest == due  # the browser's local (UTC) time, to the second

    # 3. At that time the agent's phone rings first, with the customer's story and the callback on screen.
    await expect(page.locator("#pop-phase")).to_have_text("ringing · callback", timeout=LEAD_SECONDS * 1000 + 5_000)
    assert watch.customer_legs() == []  # the customer is dialed only once the agent answers
    [agent_leg] = [leg for leg in watch.agent_legs(AGENT) if leg != inbound_leg]
    rang_at = next(t for t, e in watch.events if e is agent_leg)
    assert due - 0.05 <= rang_at <= due + 2.0, (rang_at - due)  # not before the time, and on time
    await expect(page.locator("#pop-name")).to_have_text(CUSTOMER.name)
    await expect(page.locator("#pop-number")).to_have_text(NUMBER)
    await expect(page.locator("#pop-reason")).to_contain_text(f"scheduled callback {cb.id} requested by {AGENT}")
    await expect(page.locator("#pop-callback")).to_be_visible()
    facts = page.locator("#pop-callback-facts")
    for text in (REASON, f"from contact {inbound.id}", case_id):
        await expect(facts).to_contain_text(text)
    await expect(page.locator("#pop-cases")).to_contain_text(CASE_SUMMARY)
    await expect(page.locator("#pop-history")).to_contain_text(OLD_NOTE)  # the story: earlier contacts
    assert await page.locator("#pop-history li").count() >= 2  # ... including today's call
    await page.screenshot(path=SCREENSHOT, full_page=True)

    # 4. The agent answers, then the customer's phone rings and answers: bridged.
    await expect(page.locator("#pop-phase")).to_have_text("answered · callback", timeout=10_000)
    assert (r := await customer_phone.wait()).ok, r.describe()
    assert (r := await callback_phone.wait()).ok, r.describe()

    async def settled() -> Callback | None:
        found = await ivr.server.callbacks.get(cb.id)
        return found if found.state.value in ("connected", "done", "failed", "cancelled") else None
    final = await wait_until(settled, timeout=10, what=f"callback {cb.id} settled")
    assert final.state.value in ("connected", "done"), final
    assert [(a.agent_id, a.outcome) for a in final.history] == [(AGENT, AttemptOutcome.ANSWERED)]

    # 5. Once: one agent leg for the callback (ChannelId = the attempt), one customer leg, one marker.
    await asyncio.sleep(1.5)  # a late second dial would show up here
    assert [leg.uniqueid for leg in watch.agent_legs(AGENT)] == [inbound_leg.uniqueid, f"{cb.id}-1"]
    [customer_leg] = watch.customer_legs()
    assert customer_leg.linkedid == agent_leg.uniqueid  # the customer's leg belongs to the agent's call
    order = [e for _, e in watch.events if e in (agent_leg, customer_leg)]
    assert order == [agent_leg, customer_leg]  # agent first
    markers = await placed_markers(ivr, cb.id)
    assert list(markers) == [1] and markers[1].startswith("browser-cb"), markers
    assert errors == []
