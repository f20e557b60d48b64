"""The cases panel on the agent desk (issue 18 §1 "create and move a case during the call, see its
events and checklist", §3 "an agent grants compensation on the case from the page"), in headless
Debian Chromium against the real web app (IvrServer.web_app, served in-process on a free port) and
a private Redis; nothing of ours is replaced by a double.

An agent has the VIP on screen (a pop published through the real hub): the VIP's open cases are
listed with status, due/overdue and what is still needed; the agent opens the case of the premium
SMS charge, is stopped by the page from waiting without a why, moves it to in progress, hands it to
the partner with the policy's action (→ waiting on a back office), adds a checklist item and ticks
it, grants compensation within authority (granted) and above it (sent to a supervisor), and opens a
new case for the caller. A supervisor's browser sees the requests and the overdue case, approves one,
is refused by the server above the supervisor's own authority (the server's text on the page) and
refuses it. A crafted request from the agent's browser cannot grant above authority: asserted on
the server state. The events list shows each step with who did it; switching to 中文 relabels the
panel. Screenshots: /tmp/reports/desk_case.png (English) and /tmp/reports/desk_case_zh.png.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, expect

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain.compensation import CompensationState
from ivrserver.domain.model import CaseStatus, Customer, Tier
from ivrserver.domain.screen_pop import Phase, PopContext, Role, build_pop
from ivrserver.store import cases as case_store
from ivrserver.store import customers
from ivrserver.store.keys import Keys
from tests.browser.pages import serving
from tests.browser.test_agent_page import browser, log_in  # noqa: F401  (the browser fixture)

REPO = Path(__file__).resolve().parents[2]
SHOT = Path("/tmp/reports/desk_case.png")
SHOT_ZH = Path("/tmp/reports/desk_case_zh.png")
AGENT = "agent1001"
SUPERVISOR = "agent1010"  # supervisor: true in scripts/demo-agents.yaml
VIP = Customer(id="c-vip", name="Sun Quan", phones=("13800000009",), tier=Tier.VIP)
# Data is text on the page, never markup.
SUMMARY = 'Premium SMS charged without consent <img src=x onerror="window.__pwned=1">'
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")


@contextlib.asynccontextmanager
async def desk_server(redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[tuple[IvrServer, str]]:
    """The web app exactly as `ivrserver run` builds it (default cases.yaml: agent 5000 cents per
    severity-2 case and 30000 a day; supervisor 100000 per severity-2 case), on 127.0.0.1."""
    agents = tmp_path / "agents.yaml"
    agents.write_text((REPO / "scripts" / "demo-agents.yaml").read_text())
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": keys.prefix},
        "routing": {"agents_file": str(agents)},
        "menus": {"watch": False},
    })
    async with serving(settings) as served:
        yield served


async def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in await page.locator(selector).all_text_contents()]


async def crafted(page: Page, method: str, path: str, body: Any) -> tuple[int, Any]:
    """A request the page would never send, made with the agent's own session from their browser."""
    result: list[Any] = await page.evaluate("""async ([method, path, body]) => {
      const r = await fetch(path, {method, headers: {"Content-Type": "application/json",
        "Authorization": "Bearer " + sessionStorage.getItem("ivr.token")}, body: JSON.stringify(body)});
      return [r.status, await r.json()];
    }""", [method, path, body])
    return result[0], result[1]


async def test_agent_works_the_vips_case_and_a_supervisor_decides(
        browser: Browser, redis_url: str, redis_client: aioredis.Redis, keys: Keys,  # noqa: F811
        tmp_path: Path) -> None:
    await customers.save_customer(redis_client, keys, VIP)
    async with desk_server(redis_url, keys, tmp_path) as (server, url):
        now = time.time()
        case = await server.cases.open({"customer_id": VIP.id, "summary": SUMMARY, "severity": 2, "owner_agent": AGENT,
                                        "still_needed": "the partner's confirmation"}, actor=f"agent:{AGENT}",
                                       checklist=[("the date of the first charge", "customer")])
        # An older severity-1 case past its due time (4 h after opening): overdue.
        late = await case_store.open_case(redis_client, keys, customer_id=VIP.id, summary="Line drops every evening",
                                          now=now - 2 * 86400, severity=1, owner_agent="agent1002",
                                          due_at=now - 2 * 86400 + 4 * 3600)
        cid = case.id

        context = await browser.new_context(locale="en-US", timezone_id="Asia/Shanghai",
                                            viewport={"width": 1400, "height": 1500})
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: problems.append(m.text)
                if m.type == "error" and ("i18n" in m.text or "⟦" in m.text) else None)
        page.on("dialog", lambda d: problems.append("dialog " + d.message))
        await log_in(page, url, AGENT)
        pop = build_pop(PopContext(call_id="call-vip", number="13800000009", customer=VIP, phase=Phase.ANSWERED,
                                   routing_reason=f"repeat caller with open case {cid}", queue="vip",
                                   open_cases=(case, late)), role=Role.AGENT, now=time.time())
        await server.hub.publish(AGENT, pop, customer_id=VIP.id)
        await expect(page.locator("#pop-name")).to_have_text(VIP.name, timeout=10_000)

        # 1. The caller's cases: status, due or overdue, what is still needed; the data as text.
        await expect(page.locator("#cases-card")).to_be_visible()
        item = page.locator(f"#case-list li[data-case-id='{cid}']")
        await expect(item.locator(".case-open")).to_have_text(f"#{cid} · {SUMMARY}")
        await expect(item).to_contain_text("new")
        await expect(item).to_contain_text("severity 2")
        await expect(item.locator(".case-due")).to_contain_text("due ")
        await expect(item).to_contain_text("the date of the first charge · the customer")
        await expect(page.locator(f"#case-list li[data-case-id='{late.id}'] .tag.overdue")).to_have_text("overdue")
        await expect(page.locator(f"#case-list li[data-case-id='{late.id}']")).to_contain_text("overdue since")
        await expect(page.locator("#case-authority")).to_have_text("Your compensation role: agent")

        # 2. Open it: the moves the policy allows from "open", the agent's authority.
        await item.locator(".case-open").click()
        await expect(page.locator("#cp-title")).to_have_text(f"#{cid} · {SUMMARY}")
        assert await page.locator("#cp-move-to option").evaluate_all("os => os.map(o => o.value)") == [
            "in_progress", "waiting_customer", "waiting_backoffice", "resolved", "closed"]
        await expect(page.locator("#cp-comp-authority")).to_have_text(
            "Your authority (agent): up to CN¥50.00 on a severity 2 case, CN¥300.00 a day. "
            "Above it, a supervisor decides.")
        await expect(page.locator("#cp-events li.case-event")).to_have_count(1)

        # Waiting on the customer needs a why: the page says so and sends nothing.
        await page.select_option("#cp-move-to", "waiting_customer")
        await expect(page.locator("#cp-move-why-label")).to_have_text("Why (required)")
        await page.click("#cp-move-submit")
        await expect(page.locator("#cp-move-status")).to_have_text("This move needs a why.")
        assert (await server.cases.get(cid)).status is CaseStatus.OPEN
        await page.select_option("#cp-move-to", "in_progress")
        await expect(page.locator("#cp-move-why-label")).to_have_text("Why (optional)")
        await page.click("#cp-move-submit")
        await expect(page.locator("#cp-move-status")).to_have_text("Now in progress.")
        await expect(page.locator("#cp-meta .case-state")).to_have_text("in progress")

        # 3. Hand it to the partner with the policy's action: it waits on that back office.
        await page.select_option("#cp-action", "cancel_partner_charge")
        await page.fill("#cp-action-why", "SP-1860 charged 30 CNY on 3 Dec without consent")
        await page.click("#cp-action-submit")
        await expect(page.locator("#cp-action-status")).to_have_text(
            "Sent to partner-billing; the case waits on it.")
        await expect(page.locator("#cp-meta .case-state")).to_have_text("waiting on a back office")
        stored = await server.cases.get(cid)
        assert stored.status is CaseStatus.WAITING_BACKOFFICE and stored.handed_to == ("partner-billing",)

        # 4. The checklist: add what the bill must show, from the back office, and tick it off.
        await page.fill("#cp-item-text", "the refund on the January bill")
        await page.select_option("#cp-item-from", "backoffice")
        await page.click("#cp-item-submit")
        await expect(page.locator("#cp-item-status")).to_have_text("Added.")
        added = [i for i in (await server.cases.get(cid)).checklist if i.text == "the refund on the January bill"]
        assert len(added) == 1 and added[0].source == "backoffice" and not added[0].done
        await page.check(f"#cp-checklist input[data-item-id='{added[0].id}']")
        await expect(page.locator("#cp-item-status")).to_have_text("Ticked off.")
        ticked = next(i for i in (await server.cases.get(cid)).checklist if i.id == added[0].id)
        assert ticked.done and ticked.done_by == f"agent:{AGENT}"
        await expect(page.locator("#cp-checklist li.done")).to_contain_text(f"done by agent {AGENT}")

        # 5. Compensation: 30.00 within authority is granted; 30.00 more (60.00 > 50.00) goes to a supervisor.
        await page.fill("#cp-comp-amount", "30")
        await page.fill("#cp-comp-reason", "three calls about one charge")
        await page.click("#cp-comp-submit")
        await expect(page.locator("#cp-comp-status")).to_have_text("CN¥30.00 granted.")
        await page.fill("#cp-comp-amount", "30.00")
        await page.fill("#cp-comp-reason", "the charge was repeated in January")
        await page.click("#cp-comp-submit")
        await expect(page.locator("#cp-comp-status")).to_have_text(
            "CN¥30.00 is above your authority: sent to a supervisor for approval.")
        await expect(page.locator("#cp-comp-list li")).to_have_count(2)
        comps = await server.cases.compensations(cid)
        assert sorted((c.amount_cents, c.state) for c in comps) == [
            (3000, CompensationState.GRANTED), (3000, CompensationState.REQUESTED)]
        assert (await server.cases.get(cid)).compensated_cents == 3000
        requested = next(c for c in comps if c.state is CompensationState.REQUESTED)

        # 6. What the page cannot prevent, the server refuses: a crafted body that says "granted",
        # and a crafted amount far above authority (only ever a request).
        status, body = await crafted(page, "POST", f"/api/v1/cases/{cid}/compensations",
                                     {"amount_cents": 99000, "currency": "CNY", "reason": "x", "state": "granted"})
        assert status == 400 and body["errors"][0]["field"] == "state", body
        status, body = await crafted(page, "POST", f"/api/v1/cases/{cid}/compensations",
                                     {"amount_cents": 99000, "currency": "CNY", "reason": "crafted in the console"})
        assert status == 202 and body["state"] == "requested", body
        big = body["id"]
        status, body = await crafted(page, "POST", f"/api/v1/compensations/{big}/approve", {})
        assert status == 403, body
        status, body = await crafted(page, "POST", f"/api/v1/cases/{cid}/status", {"status": "resolved"})
        assert status == 400, body
        stored = await server.cases.get(cid)
        assert stored.compensated_cents == 3000 and stored.status is CaseStatus.WAITING_BACKOFFICE
        assert (await server.cases.compensation(big)).state is CompensationState.REQUESTED

        # 7. "New case" for the caller on screen.
        await page.click("#case-new-open")
        await page.fill("#case-new-summary", "Wants the roaming bundle explained")
        await page.select_option("#case-new-severity", "4")
        await page.fill("#case-new-needed", "the trip dates")
        await page.fill("#case-new-items", "dates of the trip\n\ncountries visited\n")
        await page.click("#case-new-submit")
        await expect(page.locator("#cp-title")).to_contain_text("Wants the roaming bundle explained")
        new_id = (await page.locator("#cp-title").text_content() or "").split(" ")[0].lstrip("#")
        created = await server.cases.get(new_id)
        assert (created.customer_id, created.severity, created.owner_agent, created.still_needed) == (
            VIP.id, 4, AGENT, "the trip dates")
        assert [(i.text, i.source) for i in created.checklist] == [
            ("dates of the trip", "customer"), ("countries visited", "customer")]
        await expect(page.locator("#case-list > li")).to_have_count(3)

        # 8. A supervisor's browser: the requests waiting and the overdue case.
        sup_context = await browser.new_context(locale="en-US", timezone_id="Asia/Shanghai",
                                                viewport={"width": 1400, "height": 1000})
        sup = await sup_context.new_page()
        sup.on("pageerror", lambda e: problems.append("supervisor: " + str(e)))
        await log_in(sup, url, SUPERVISOR)
        await expect(sup.locator("#supervisor-card")).to_be_visible()
        await expect(sup.locator("#sup-pending li.pending")).to_have_count(2)
        overdue = sup.locator(f"#sup-overdue li[data-case-id='{late.id}']")
        await expect(overdue).to_contain_text("Line drops every evening")
        await expect(sup.locator(f"#sup-overdue li[data-case-id='{cid}']")).to_have_count(0)
        row = sup.locator(f"#sup-pending li[data-compensation-id='{requested.id}']")
        await expect(row).to_contain_text(f"case #{cid}, customer {VIP.id}, asked by agent {AGENT}")
        await expect(row).to_contain_text("the charge was repeated in January")
        await row.locator(".sup-why").fill("VIP, the charge was repeated")
        await row.locator(".sup-approve").click()
        await expect(sup.locator("#sup-status")).to_have_text(f"CN¥30.00 on case #{cid} approved.")
        await expect(sup.locator("#sup-pending li.pending")).to_have_count(1)
        assert (await server.cases.compensation(requested.id)).state is CompensationState.APPROVED
        assert (await server.cases.get(cid)).compensated_cents == 6000

        # The crafted 990.00: above the supervisor's own authority (1000.00 per severity-2 case,
        # 60.00 already granted); the server's refusal is on the page. Refusing needs a why.
        big_row = sup.locator(f"#sup-pending li[data-compensation-id='{big}']")
        await big_row.locator(".sup-approve").click()
        await expect(sup.locator("#sup-status")).to_have_text(re.compile(
            r"^Not approved: you may not do that — above your authority: above the supervisor authority "
            r"for a severity 2 case \(100000 cents per case, 6000 already granted\)$"))
        await big_row.locator(".sup-refuse").click()
        await expect(sup.locator("#sup-status")).to_have_text("Refusing needs a why.")
        await big_row.locator(".sup-why").fill("not justified by the bill")
        await big_row.locator(".sup-refuse").click()
        await expect(sup.locator("#sup-status")).to_have_text(f"CN¥990.00 on case #{cid} refused.")
        await expect(sup.locator("#sup-pending li.pending")).to_have_count(0)
        assert (await server.cases.compensation(big)).state is CompensationState.REFUSED
        assert (await server.cases.get(cid)).compensated_cents == 6000

        # 9. Back on the agent's page: the case's events, newest first, each with who did it.
        await page.locator(f"#case-list li[data-case-id='{cid}'] .case-open").click()
        await expect(page.locator("#cp-events li.case-event")).to_have_count(10)
        kinds = await page.locator("#cp-events li.case-event").evaluate_all("es => es.map(e => e.dataset.kind)")
        assert kinds == ["compensation_refused", "compensation_approved", "compensation_requested",
                         "compensation_requested", "compensation_granted", "checklist", "checklist",
                         "action_requested", "moved", "opened"], kinds
        me, boss = f"agent {AGENT}", f"supervisor {SUPERVISOR}"
        assert await texts(page, "#cp-events .event-actor") == [boss, boss] + [me] * 8
        events = page.locator("#cp-events li.case-event")
        await expect(events.nth(0)).to_contain_text("Why: not justified by the bill")
        await expect(events.nth(1)).to_contain_text("Why: VIP, the charge was repeated")
        await expect(events.nth(3)).to_contain_text("above the agent authority for a severity 2 case")
        await expect(events.nth(7)).to_contain_text("Why: SP-1860 charged 30 CNY on 3 Dec without consent")
        await expect(events.nth(8)).to_contain_text("new → in progress")
        await expect(events.nth(5)).to_contain_text("ticked off: the refund on the January bill")
        await expect(page.locator("#cp-comp-list li")).to_have_count(3)  # granted, approved, refused
        await expect(page.locator("#cp-comp-list li").nth(2)).to_contain_text("refused")
        await expect(page.locator("#cp-meta")).to_contain_text("CN¥60.00")
        # dates in the page's language (en-GB form, the browser's time zone)
        first = await events.nth(9).locator(".when").text_content()
        assert re.fullmatch(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}", first or ""), first
        assert await page.evaluate("window.__pwned") is None
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOT), full_page=True)

        # 10. 中文: the panel's labels, statuses, kinds, actors and status lines follow.
        await page.select_option("#lang-select", "zh")
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.locator("#cases-card .cases-head h3")).to_have_text("来电客户的工单")
        await expect(page.locator("#cp-meta .case-state")).to_have_text("等待后台")
        await expect(events.nth(1).locator(".tag")).to_have_text("补偿已批准")
        await expect(events.nth(1).locator(".event-actor")).to_have_text(f"主管 {SUPERVISOR}")
        await expect(page.locator("#cp-comp-authority")).to_contain_text("您的权限(坐席):严重级别 2 的工单最多 ¥50.00")
        await expect(page.locator("#cp-move-to option[value=resolved]")).to_have_text("已解决")
        await page.select_option("#cp-move-to", "resolved")
        await expect(page.locator("#cp-move-why-label")).to_have_text("原因(必填)")
        await page.click("#cp-move-submit")
        await expect(page.locator("#cp-move-status")).to_have_text("此状态变更需要填写原因。")
        when_zh = await events.nth(9).locator(".when").text_content()
        assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}", when_zh or ""), when_zh
        labels = await page.evaluate("""() => Array.from(document.querySelectorAll(
            '#cases-card h3, #cases-card h4:not(#cp-title), #cases-card label > span:not(.item-text), '
            + '#cases-card button:not(.case-open), #cases-card option, #cases-card .tag, #cases-card .status'))
          .filter(n => n.checkVisibility() || n.tagName === 'OPTION').map(n => n.textContent.trim()).filter(Boolean)""")
        latin = [s for s in labels if not CJK.search(s) and not re.fullmatch(r"[\d\s·#]*", s)]
        # the only Latin-only labels left: the hand-off options (the operator's words in cases.yaml)
        assert all("→" in s for s in latin), latin
        await page.screenshot(path=str(SHOT_ZH), full_page=True)
        await sup.select_option("#lang-select", "zh")
        await expect(sup.locator("#sup-status")).to_have_text(f"已拒绝工单 #{cid} 的 ¥990.00。")
        await expect(sup.locator("#sup-pending li")).to_have_text("没有待审批的补偿。")

        # ... and back: the status line already shown follows too.
        await page.select_option("#lang-select", "en")
        await expect(page.locator("#cp-move-status")).to_have_text("This move needs a why.")
        await expect(page.locator("#cp-meta .case-state")).to_have_text("waiting on a back office")
        assert (await server.cases.get(cid)).status is CaseStatus.WAITING_BACKOFFICE

        assert problems == [], problems
        await sup_context.close()
        await context.close()
