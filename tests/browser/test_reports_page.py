"""The reports page in headless Chromium on a whole in-process IvrServer (real Redis, real PostgreSQL
with known rows rolled up): a supervisor signs in, every report draws its charts (Chart.js served by
ivrserver itself, no network), tables and CSV links; a CSV downloads (machine values); the tables
show the values in the page's language and locale (kinds, policy, days, durations, amounts); an
agent is refused. A supervisor whose language kept by the server is Chinese gets the page in
Chinese without ?lang, and a switch is saved on the server.
Screenshots: /tmp/reports/reports.png, reports-zh.png, reports-zh-tables.png."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from ivrserver.app import IvrServer
from tests.browser.pages import sign_in
from tests.test_reports_api import reports_server, session  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

SCREENSHOT = Path("/tmp/reports/reports.png")
REPORTS = ("ivr", "selfservice", "queues", "repeats", "callbacks", "agents")


async def test_supervisor_sees_charts_and_downloads_csv_agent_refused(
        reports_server: IvrServer, browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    base = f"http://127.0.0.1:{reports_server.web_port}"
    context = await browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    page = await context.new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the 401 of /api/v1/me before signing in is expected; nothing else may fail (the browser's own
    # favicon request aside)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
            and not r.url.endswith(("/favicon.ico", "/api/v1/me")) else None)
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
    try:
        await sign_in(page, base, "/reports?lang=en&from=2026-11-03&to=2026-11-09", "agent1010")
        await expect(page.locator("body[data-loaded='1']")).to_have_count(1, timeout=20_000)
        for name in REPORTS:
            section = page.locator(f"#report-{name}")
            await expect(section.locator("canvas").first).to_be_visible()
            await expect(section.locator("a.csv").first).to_be_visible()
            assert await section.locator(".r-status.error").count() == 0, name
        # Chart.js drew: each chart has its instance, with axis titles and a legend
        drawn = await page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
            const ch = Chart.getChart(c);
            if (!ch) return null;
            const y = ch.options.scales.y;
            return {type: ch.config.type, sets: ch.data.datasets.length,
                    legend: ch.options.plugins.legend.position, y: y && y.title ? y.title.text : null}; })""")
        assert len(drawn) == 8 and all(d and d["sets"] >= 1 and d["legend"] == "bottom" for d in drawn), drawn
        assert {d["y"] for d in drawn} >= {"% self-served", "% of callers who reached it and hung up", "calls"}
        queues = page.locator("#report-queues table").first
        await expect(queues).to_contain_text("general")
        await expect(queues).to_contain_text("33.3 %")
        # machine values shown in the page's form: a wait of 14 s as a duration, an amount in CNY,
        # the compensation column named (not compensation_CNY_cents), a day as a date
        assert await cell(page, "queues", "queues", "general", "wait_average") == "14 s"
        assert await header(page, "agents", "agents", "compensation_CNY_cents") == "compensation granted (CNY)"
        assert await cell(page, "agents", "agents", "agent1002", "compensation_CNY_cents") == "CN¥20.00"
        assert await cell(page, "callbacks", "kinds", None, "kind") in ("callbacks", "notices")
        assert await cell(page, "queues", "days", None, "day") == "3 Nov 2026"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        # a CSV download
        async with page.expect_download() as info:
            await page.locator('#report-queues a.csv[data-table="queues"]').click()
        download = await info.value
        assert download.suggested_filename == "ivrserver-queues-queues-2026-11-03-2026-11-09.csv"
        text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
        assert text.startswith("queue,offered,answered,abandoned,abandon_rate,service_level,")
        assert "\ngeneral,3,2,1,0.3333,0.3333,20," in text
        # the same page in Chinese, nothing left untranslated
        await page.select_option("#lang", "zh")
        await expect(page.locator("#report-ivr .r-title")).to_have_text("IVR漏斗")
        assert "⟦" not in await page.inner_text("body")
        # the texts built from the server's data follow the switch too (both were left in English once)
        await expect(page.locator("#range-hint")).to_have_text("按时区 Asia/Shanghai 的整天统计；包含起止两天。")
        await expect(page.locator("#report-ivr .r-help")).to_contain_text("第3、4繁忙的选项在前")
        await page.screenshot(path=str(SCREENSHOT.with_name("reports-zh.png")), full_page=True)
        # the tables too: values from the server in Chinese and the Chinese forms
        assert await page.title() == "ivrserver · 报表"
        assert {await c.inner_text() for c in await column(page, "callbacks", "kinds", "kind")} <= {"回拨", "通知"}
        assert await cell(page, "queues", "queues", "general", "wait_average") == "14秒"
        assert await cell(page, "queues", "days", None, "day") == "2026年11月3日"
        assert await header(page, "agents", "agents", "compensation_CNY_cents") == "已发放补偿（CNY）"
        assert await cell(page, "agents", "agents", "agent1002", "compensation_CNY_cents") == "¥20.00"
        assert await cell(page, "agents", "agents", "agent1001", "talk_seconds") == "5分"
        policies = {await c.inner_text() for c in await column(page, "ivr", "order", "policy")}
        assert policies <= {"第3、4繁忙优先"}, policies
        assert "⟦" not in await page.inner_text("body")
        await page.locator("#report-agents").screenshot(path=str(SCREENSHOT.with_name("reports-zh-tables.png")))
        assert not errors, errors
        assert not outside, outside  # no CDN: everything from ivrserver itself
    finally:
        await context.close()

    agent = await browser.new_page()  # (a new context: nothing remembered by the browser)
    try:
        await sign_in(agent, base, "/reports?lang=en", "agent1001")
        await expect(agent.locator("#refused")).to_be_visible(timeout=10_000)
        await expect(agent.locator("#reports")).to_be_hidden()
    finally:
        await agent.close()


async def test_the_language_kept_by_the_server_and_a_switch_saved_there(
        reports_server: IvrServer, browser: Browser) -> None:  # noqa: F811
    base = f"http://127.0.0.1:{reports_server.web_port}"
    api = await session(reports_server, "agent1010")
    try:
        r = await api.put("/api/v1/me/preferences", json={"language": "zh"})
        assert r.status == 200, await r.text()
        context = await browser.new_context(locale="en-GB")  # an English browser, nothing remembered
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            await sign_in(page, base, "/reports?from=2026-11-03&to=2026-11-09", "agent1010")
            await expect(page.locator("#report-ivr .r-title")).to_have_text("IVR漏斗", timeout=20_000)
            await expect(page.locator("#lang")).to_have_value("zh")
            assert await page.title() == "ivrserver · 报表"
            await page.select_option("#lang", "en")
            await expect(page.locator("#report-ivr .r-title")).to_have_text("IVR funnel")
            # saved on the server, for this supervisor (the PUT is sent right after the switch)
            for _ in range(50):
                r = await api.get("/api/v1/me/preferences")
                if (await r.json())["language"] == "en":
                    break
                await asyncio.sleep(0.1)
            assert (await r.json())["language"] == "en"
            assert await page.evaluate("localStorage.getItem('ivr.lang')") == "en"
            assert not errors, errors
        finally:
            await context.close()
    finally:
        await api.close()


async def column(page: Page, report: str, table: str, col: str) -> list[Locator]:
    """The body cells of one column of a report's table (found by the th's title: the machine name)."""
    tbl = page.locator(f'#report-{report} .table-wrap:has(a.csv[data-table="{table}"]) table')
    names = await tbl.locator("thead th").evaluate_all("ths => ths.map(th => th.title)")
    i = names.index(col)
    return await tbl.locator(f"tbody tr td:nth-child({i + 1})").all()


async def header(page: Page, report: str, table: str, col: str) -> str:
    tbl = page.locator(f'#report-{report} .table-wrap:has(a.csv[data-table="{table}"]) table')
    return await tbl.locator(f'thead th[title="{col}"]').inner_text()


async def cell(page: Page, report: str, table: str, row: str | None, col: str) -> str:
    """The text of one cell: in the row whose first cell reads `row` (None: the first row)."""
    tbl = page.locator(f'#report-{report} .table-wrap:has(a.csv[data-table="{table}"]) table')
    names = await tbl.locator("thead th").evaluate_all("ths => ths.map(th => th.title)")
    i = names.index(col)
    rows = tbl.locator("tbody tr")
    if row is not None:
        rows = rows.filter(has=page.locator(f"td:first-child:text-is('{row}')"))
    return await rows.first.locator(f"td:nth-child({i + 1})").inner_text()
