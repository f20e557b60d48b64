"""Reports from a real PostgreSQL: known rows in, the writer's marks, the upkeep's roll, and the exact
figures out of ReportService (record/reports.py + services/reports.py + domain/reports.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from ivrserver.config import ReportSettings
from ivrserver.domain.callbacks import Attempt, AttemptOutcome, Callback, CallbackMode, CallbackState
from ivrserver.domain.compensation import Compensation, CompensationState
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.domain.model import Contact, ContactKind, Outcome
from ivrserver.record import reports as rec
from ivrserver.record import rollup
from ivrserver.record.rows import (
    CaseEventRow,
    insert_case_events,
    upsert_case_compensations,
    upsert_contacts,
    upsert_finished_callbacks,
    upsert_paths,
)
from ivrserver.services.reports import ReportService

DAY = datetime(2026, 11, 3, tzinfo=UTC).timestamp()  # a Tuesday, 00:00 UTC = 08:00 Asia/Shanghai
H = 3600.0


def path(i: int, at: float, *steps: tuple[str, str, str, str]) -> CallPath:
    """steps: (kind, node, key, detail) one second apart."""
    events = tuple(PathEvent(PathKind(k), node, at + n, key=key, detail=detail)
                   for n, (k, node, key, detail) in enumerate(steps))
    return CallPath(f"c{i}", "hotline", "v1", at, events)


def paths() -> list[CallPath]:
    t = DAY + 10 * H
    return [
        # self-served at depth 2 (main → balance)
        path(1, t, ("enter", "main", "", ""), ("key", "main", "1", ""), ("enter", "balance", "", ""),
             ("exit", "balance", "", "self_served")),
        path(2, t + 60, ("enter", "main", "", ""), ("key", "main", "1", ""), ("enter", "balance", "", ""),
             ("exit", "balance", "", "self_served")),
        # to a queue from main (depth 1)
        path(3, t + 120, ("enter", "main", "", ""), ("key", "main", "2", ""), ("exit", "main", "", "queue")),
        # hung up in main (depth 1)
        path(4, t + 180, ("enter", "main", "", ""), ("exit", "main", "", "caller_hangup")),
        # timed out twice in main, failure → the human queue: timed_out
        path(5, t + 240, ("enter", "main", "", ""), ("timeout", "main", "", ""), ("timeout", "main", "", ""),
             ("failure", "main", "", ""), ("exit", "main", "", "queue")),
        # next day (local Shanghai day 2026-11-04 starts at 16:00 UTC on the 3rd): hung up at depth 2
        path(6, DAY + 17 * H, ("enter", "main", "", ""), ("key", "main", "3", ""), ("enter", "plans", "", ""),
             ("exit", "plans", "", "caller_hangup")),
    ]


def contact(i: int, at: float, outcome: Outcome, *, queue: str | None = "general", wait: float | None = None,
            talk: float | None = None, customer: str | None = "cust1", agents: tuple[str, ...] = (),
            notes: str = "") -> tuple[Contact, int]:
    return (Contact(id=f"k{i}", kind=ContactKind.INBOUND, number="+8613800000000", started_at=at, customer_id=customer,
                    ended_at=at + 300, queue=queue, wait_seconds=wait, talk_seconds=talk, agents=agents,
                    outcome=outcome, notes=notes), i)


def contacts() -> list[tuple[Contact, int]]:
    t = DAY + 2 * H
    return [
        contact(1, t, Outcome.ANSWERED, wait=3, talk=100, agents=("agent1001",), notes="router reset"),
        # the same customer 2 h later, same queue: a repeat within 24 h, the pop had notes
        contact(2, t + 2 * H, Outcome.ANSWERED, wait=25, talk=200, agents=("agent1002", "agent1001")),
        # abandoned after 40 s, another customer
        contact(3, t + 3 * H, Outcome.ABANDONED, wait=40, customer="cust2"),
        # 3 days later, cust1 again, another queue: a 7-day repeat (any reason), not the same reason
        contact(4, t + 72 * H, Outcome.ANSWERED, queue="vip", wait=12, talk=60, agents=("agent1002",)),
        # self-served, no queue
        contact(5, t + 73 * H, Outcome.SELF_SERVED, queue=None, customer="cust3"),
    ]


def callback(i: int, state: CallbackState, history: tuple[Attempt, ...], *,
             mode: CallbackMode = CallbackMode.AGENT_FIRST) -> tuple[Callback, int]:
    t = DAY + 5 * H
    return (Callback(id=f"cb{i}", customer_id="cust1", number="+8613800000000", earliest=t, latest=t + 3 * H,
                     created_at=t, mode=mode, state=state, attempts=len(history), history=history,
                     updated_at=t + 2 * H), i)


def callbacks() -> list[tuple[Callback, int]]:
    t = DAY + 5 * H
    return [
        callback(1, CallbackState.DONE, (Attempt(1, t + 120, "agent1001", AttemptOutcome.ANSWERED, t + 400),)),
        callback(2, CallbackState.FAILED, (Attempt(1, t + 600, "agent1001", AttemptOutcome.NO_ANSWER, t + 630),
                                           Attempt(2, t + 2000, "agent1001", AttemptOutcome.NO_ANSWER, t + 2030))),
        callback(3, CallbackState.CANCELLED, ()),
        callback(4, CallbackState.DONE, (Attempt(1, t + 30, None, AttemptOutcome.ANSWERED, t + 90),),
                 mode=CallbackMode.CUSTOMER_FIRST),
    ]


async def fill(pool: asyncpg.Pool) -> None:
    """The known rows below, written as the sink writes them (raw rows + marks), then rolled."""
    async with pool.acquire() as conn, conn.transaction():
        ps, cs, cbs = paths(), contacts(), callbacks()
        await upsert_paths(conn, ps)
        await rollup.mark_dirty(conn, ps)
        await rec.mark_paths(conn, ps)
        await upsert_contacts(conn, cs)
        await rec.mark_contacts(conn, cs)
        await upsert_finished_callbacks(conn, cbs)
        await rec.mark_callbacks(conn, cbs)
        await insert_case_events(conn, [
            (CaseEventRow("1-0", "C1", "cust1", DAY + 3 * H, "agent:agent1001", "resolved", {}, "fixed"), 1),
            (CaseEventRow("2-0", "C2", "cust2", DAY + 4 * H, "agent:agent1001", "resolved", {}, "fixed"), 2),
            (CaseEventRow("3-0", "C3", "cust2", DAY + 4 * H, "agent:agent1002", "moved", {}, ""), 3)])
        await upsert_case_compensations(conn, [
            (Compensation(id="p1", case_id="C1", customer_id="cust1", amount_cents=2000, currency="CNY",
                          reason="outage", granted_by="agent:agent1002", state=CompensationState.GRANTED,
                          requested_at=DAY + 3 * H), 1),
            (Compensation(id="p2", case_id="C2", customer_id="cust2", amount_cents=99999, currency="CNY",
                          reason="big", granted_by="agent:agent1002", state=CompensationState.REFUSED,
                          requested_at=DAY + 3 * H), 2)])
    async with pool.acquire() as conn:
        assert await rec.roll(conn) == 2 + 5 + 1  # (source, key, hour) marks: paths 2 hours, contacts 5, callbacks 1
        await rollup.roll(conn, datetime.fromtimestamp(DAY + 10 * 86400, UTC))


@pytest.fixture
async def filled(pool: asyncpg.Pool) -> ReportService:
    await fill(pool)
    return ReportService(lambda: pool, ReportSettings(timezone="Asia/Shanghai"), wrap_up_seconds=15)


async def run(service: ReportService, name: str, **params: str) -> dict:
    return await service.run(service.parse(name, {"from": "2026-11-03", "to": "2026-11-09", **params}))


def rows(body: dict, table: str) -> list[dict]:
    return body["tables"][table]["rows"]


async def test_ivr_funnel_exits_depth_and_suggested_order(filled: ReportService) -> None:
    body = await run(filled, "ivr")
    [exits] = rows(body, "exits")
    assert exits == {"menu": "hotline", "calls": 6, "self_served": 2, "queue": 1, "agent": 0, "callback": 0,
                     "caller_hangup": 2, "timed_out": 1, "ended": 0, "unfinished": 0, "self_service_share": 0.5,
                     "average_seconds": 2.7}
    nodes = {r["node"]: r for r in rows(body, "nodes")}
    assert [r["node"] for r in rows(body, "nodes")] == ["main", "balance", "plans"]
    assert (nodes["main"]["entries"], nodes["main"]["exit_queue"], nodes["main"]["exit_caller_hangup"],
            nodes["main"]["exit_timed_out"], nodes["main"]["average_seconds"]) == (6, 1, 1, 1, 2.2)
    assert (nodes["balance"]["entries"], nodes["balance"]["exit_self_served"], nodes["balance"]["average_seconds"]) \
        == (2, 2, 1.0)
    assert rows(body, "depth") == [
        {"menu": "hotline", "depth": 1, "reached": 6, "hung_up": 1, "abandon_rate": pytest.approx(1 / 6)},
        {"menu": "hotline", "depth": 2, "reached": 3, "hung_up": 1, "abandon_rate": pytest.approx(1 / 3)}]
    # keys 1 (2 calls), 2 and 3 (1 each): third-fourth-first puts the third busiest (3) in slot 1
    assert [(r["key"], r["now_key"], r["busiest_rank"], r["calls"]) for r in rows(body, "order")] == [
        ("1", "3", 3, 1), ("2", "1", 1, 2), ("3", "2", 2, 1)]
    assert body["pending_since"] is None
    # a filter on another menu: nothing
    assert rows(await run(filled, "ivr", menu="other"), "exits") == []


async def test_self_service_share_per_local_day(filled: ReportService) -> None:
    body = await run(filled, "selfservice")
    days = {(r["day"], r["menu"]): r for r in rows(body, "days")}
    assert days[("2026-11-03", "hotline")]["share"] == 0.5
    assert (days[("2026-11-03", "*")]["calls"], days[("2026-11-03", "*")]["below_target"]) == (5, True)
    assert days[("2026-11-04", "hotline")] == {"day": "2026-11-04", "menu": "hotline", "calls": 1, "self_served": 0,
                                               "human": 0, "share": None, "target": 0.78, "below_target": None}


async def test_queues_service_level_percentiles_and_hours(filled: ReportService) -> None:
    body = await run(filled, "queues")
    q = {r["queue"]: r for r in rows(body, "queues")}
    assert q["general"] == {"queue": "general", "offered": 3, "answered": 2, "abandoned": 1, "abandon_rate": 0.3333,
                            "service_level": 0.3333, "service_level_seconds": 20, "wait_average": 14.0,
                            "wait_p50": 5.0, "wait_p90": 28.0, "wait_p99": 29.8, "abandoned_wait_p50": 37.5,
                            "talk_average": 150.0}
    assert (q["vip"]["offered"], q["vip"]["service_level"]) == (1, 1.0)
    assert (q["*"]["offered"], q["*"]["answered"], q["*"]["abandoned"], q["*"]["service_level"]) == (4, 3, 1, 0.5)
    hours = {(r["queue"], r["hour"]): r["offered"] for r in rows(body, "hours")}
    assert hours == {("general", 10): 1, ("general", 12): 1, ("general", 13): 1, ("vip", 10): 1,
                     ("*", 10): 2, ("*", 12): 1, ("*", 13): 1}
    only_vip = await run(filled, "queues", queue="vip")
    assert [r["queue"] for r in rows(only_vip, "queues")] == ["vip", "*"]


async def test_repeat_calls_and_first_contact_resolution(filled: ReportService) -> None:
    body = await run(filled, "repeats")
    r = {x["reason"]: x for x in rows(body, "reasons")}
    assert r["general"] == {"reason": "general", "calls": 3, "repeat_24h": 1, "repeat_7d": 1, "same_24h": 1,
                            "same_7d": 1, "repeat_answered": 1, "story_carried": 1, "repeat_rate_24h": 0.3333,
                            "repeat_rate_7d": 0.3333, "first_contact_resolution": 0.6667, "story_carried_share": 1.0}
    assert (r["vip"]["repeat_7d"], r["vip"]["same_7d"], r["vip"]["story_carried"]) == (1, 0, 0)
    assert (r["*"]["calls"], r["*"]["repeat_7d"], r["*"]["first_contact_resolution"],
            r["*"]["story_carried_share"]) == (5, 2, 0.8, 0.5)


async def test_callbacks_and_notices(filled: ReportService) -> None:
    body = await run(filled, "callbacks")
    k = {x["kind"]: x for x in rows(body, "kinds")}
    assert k["callback"] == {"kind": "callback", "requested": 3, "placed": 2, "answered": 1, "retried": 1,
                             "failed": 1, "cancelled": 1, "answer_rate": 0.5, "late_average": 360.0,
                             "late_p50": 300.0, "late_p90": 780.0}
    assert (k["notice"]["requested"], k["notice"]["answered"], k["notice"]["late_average"]) == (1, 1, 30.0)


async def test_agents_calls_talk_wrap_up_cases_compensation(filled: ReportService) -> None:
    body = await run(filled, "agents")
    assert body["tables"]["agents"]["columns"][-1] == "compensation_CNY_cents"
    a = {x["agent"]: x for x in rows(body, "agents")}
    assert a["agent1001"] == {"agent": "agent1001", "calls": 2, "talk_seconds": 300.0, "talk_average": 150.0,
                              "wrap_up_seconds": 30.0, "cases_resolved": 2, "compensation_grants": 0}
    assert a["agent1002"] == {"agent": "agent1002", "calls": 1, "talk_seconds": 60.0, "talk_average": 60.0,
                              "wrap_up_seconds": 15.0, "cases_resolved": 0, "compensation_grants": 1,
                              "compensation_CNY_cents": 2000}


async def test_rewriting_rows_and_rolling_again_changes_nothing(filled: ReportService, pool: asyncpg.Pool) -> None:
    before = {name: await run(filled, name) for name in ("ivr", "queues", "repeats", "callbacks", "agents")}
    async with pool.acquire() as conn:
        async with conn.transaction():
            ps, cs = paths(), contacts()
            await upsert_paths(conn, ps)
            await rec.mark_paths(conn, ps)
            await upsert_contacts(conn, cs)
            await rec.mark_contacts(conn, cs)
        assert await rec.pending_since(conn, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
        await rec.roll(conn)
    for name, body in before.items():
        assert await run(filled, name) == body


async def test_csv_is_formula_safe(filled: ReportService, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        hostile = [path(99, DAY + 11 * H, ("enter", "=HYPERLINK(1)", "", ""),
                        ("exit", "=HYPERLINK(1)", "", "caller_hangup"))]
        hostile = [CallPath(p.call_id, "@menu", p.version, p.started_at, p.events) for p in hostile]
        await upsert_paths(conn, hostile)
        await rec.mark_paths(conn, hostile)
        await rec.roll(conn)
    q = filled.parse("ivr", {"from": "2026-11-03", "to": "2026-11-03", "format": "csv"})
    text = filled.csv(q, await filled.run(q))
    lines = text.splitlines()
    assert lines[0].startswith("menu,node,entries,exit_self_served,")
    assert "'@menu,'=HYPERLINK(1),1," in text
    assert not any(line.startswith(("=", "@", "+", "-")) for line in lines)


async def test_one_queue_name_and_a_callback_request_is_not_abandoned(filled: ReportService,
                                                                      pool: asyncpg.Pool) -> None:
    """Contacts recorded with Asterisk's name (before issue 20) and with ours land in one queue; a
    caller who asked for a callback is neither abandoned in the queues nor a hang-up anywhere."""
    t = DAY + 8 * 86400 + 9 * H  # 2026-11-11, a day of its own
    cs = [contact(11, t, Outcome.ANSWERED, queue="ivr-faults", wait=3, talk=30, agents=("agent1006",)),
          contact(12, t + 600, Outcome.ABANDONED, queue="faults", wait=12, customer="cust2"),
          contact(13, t + 1200, Outcome.CALLBACK_REQUESTED, queue="faults", customer="cust3"),  # asked from a queue
          contact(14, t + 1800, Outcome.CALLBACK_REQUESTED, queue=None, customer="cust4"),  # asked in the menu
          # cust1 again 2 h later, under the new name: the same reason as their ivr-faults call
          contact(15, t + 2 * H, Outcome.ANSWERED, queue="faults", wait=4, talk=20, agents=("agent1006",))]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await upsert_contacts(conn, cs)
            await rec.mark_contacts(conn, cs)
        await rec.roll(conn)

    async def day(name: str, **params: str) -> dict:
        return await filled.run(filled.parse(name, {"from": "2026-11-11", "to": "2026-11-11", **params}))

    body = await day("queues")
    q = {r["queue"]: r for r in rows(body, "queues")}
    assert set(q) == {"faults", "*"}
    assert (q["faults"]["offered"], q["faults"]["answered"], q["faults"]["abandoned"], q["faults"]["abandon_rate"],
            q["faults"]["service_level"]) == (4, 2, 1, 0.25, 0.6667)
    assert {r["queue"] for r in rows(body, "hours")} == {"faults", "*"}
    for asked in ("faults", "ivr-faults"):  # either name filters the same queue
        filtered = await day("queues", queue=asked)
        assert filtered["filters"] == {"queue": "faults"}
        assert rows(filtered, "queues") == rows(body, "queues")
    reasons = {r["reason"]: r for r in rows(await day("repeats"), "reasons")}
    assert set(reasons) == {"faults", "ivr", "*"}
    assert (reasons["faults"]["calls"], reasons["faults"]["same_24h"]) == (4, 1)
    csv_text = filled.csv(filled.parse("queues", {"from": "2026-11-11", "to": "2026-11-11", "format": "csv"}), body)
    assert [line.split(",")[0] for line in csv_text.splitlines()] == ["queue", "faults", "*"]
