"""The case follow-up's dead letters on a real Redis: a handler that keeps failing on a change is
given up after `max_attempts` (or `max_age` after its first failure), its part of the change kept
as a dead letter (handler, last error without credentials, attempts, first/last attempt) while the
change's other handler is delivered once and the entry is acknowledged; the budget survives a
restart; a supervisor's retry re-delivers it once, with the change's original event id; over REST
(the real web app) a supervisor lists and retries, an agent gets 403."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from ivrserver import config
from ivrserver.app import IvrServer
from ivrserver.domain.cases import CaseChange
from ivrserver.metrics import Metrics
from ivrserver.services.case_followup import CaseFollowup, DeadLetterNotFound, error_text
from ivrserver.store import cases as case_store
from ivrserver.store.keys import Keys
from tests.test_cases_api import REPO, call, login
from tests.test_supervision import eventually

SECRET_URL = "redis://ivr:s3cr3t-pw@10.0.0.9:6379/0"


class Switch:
    """A handler that fails (with a long error quoting a URL with a password) until `ok` is set."""

    def __init__(self) -> None:
        self.ok = False
        self.calls: list[CaseChange] = []

    async def __call__(self, change: CaseChange) -> None:
        self.calls.append(change)
        if not self.ok:
            raise ConnectionError(f"cannot reach {SECRET_URL}\n" + "x" * 1000)


class Seen:
    def __init__(self) -> None:
        self.calls: list[CaseChange] = []

    async def __call__(self, change: CaseChange) -> None:
        self.calls.append(change)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def followup(redis: aioredis.Redis, keys: Keys, *, consumer: str = "t1", **kw: object) -> CaseFollowup:
    return CaseFollowup(redis, keys, consumer=consumer, block_ms=20, retry_base=0.01, retry_max=0.02,
                        **kw)  # type: ignore[arg-type]


async def a_change(redis: aioredis.Redis, keys: Keys, summary: str = "premium SMS charged") -> str:
    case = await case_store.open_case(redis, keys, customer_id="c-vip", summary=summary, now=time.time())
    return str(case.id)


def test_error_text_has_no_credentials_and_is_bounded() -> None:
    text = error_text(ConnectionError(f"cannot reach {SECRET_URL}\nthen\x00more " + "y" * 500))
    assert "s3cr3t" not in text and "ivr:" not in text and "redis://***@10.0.0.9:6379/0" in text
    assert text.startswith("ConnectionError: cannot reach") and len(text) == 300
    assert text.isprintable()
    assert error_text(TimeoutError()) == "TimeoutError"


async def test_a_failing_handler_is_dead_lettered_the_other_delivered_once(redis_client: aioredis.Redis,
                                                                           keys: Keys) -> None:
    metrics = Metrics()
    hooks, notices = Switch(), Seen()
    f = followup(redis_client, keys, max_attempts=3, metrics=metrics)
    f.register("webhooks", hooks)
    f.register("notices", notices)
    case_id = await a_change(redis_client, keys)
    before = time.time()
    await f.drain(10)  # returns: the stream is empty although one handler never succeeded

    assert len(hooks.calls) == 3 and len(notices.calls) == 1
    event_id = notices.calls[0].event_id
    assert {c.event_id for c in hooks.calls} == {event_id}
    assert await redis_client.xlen(keys.case_changes()) == 0
    assert await redis_client.xpending(keys.case_changes(), "case-followup") == {
        "pending": 0, "min": None, "max": None, "consumers": []}
    assert not await redis_client.exists(keys.case_change_done(event_id), keys.case_change_failures(event_id))

    [letter] = await f.dead_letters()
    assert letter.id == f"{event_id}.webhooks" and letter.event_id == event_id and letter.handler == "webhooks"
    assert (letter.kind, letter.case_id, letter.customer_id) == ("opened", case_id, "c-vip")
    assert letter.attempts == 3 and letter.reason == "attempts"
    assert before <= letter.first_at <= letter.last_at <= letter.dead_at <= time.time()
    assert letter.error.startswith("ConnectionError: cannot reach redis://***@10.0.0.9") and len(letter.error) == 300
    assert "s3cr3t" not in letter.error
    assert metrics.case_followup_dead.labels("webhooks")._value.get() == 1
    assert 0 < await redis_client.ttl(keys.case_followup_dead_letter(letter.id)) <= 30 * 86400

    # the supervisor retries once the receiver side is fixed: that handler alone, the same event id
    hooks.ok = True
    entry = await f.retry(letter.id, by="agent1010", source="127.0.0.1")
    assert entry != event_id
    with pytest.raises(DeadLetterNotFound):  # exactly once: a second retry finds nothing
        await f.retry(letter.id, by="agent1010")
    await f.drain(10)
    assert len(hooks.calls) == 4 and hooks.calls[-1].event_id == event_id and hooks.calls[-1].kind == "opened"
    assert len(notices.calls) == 1  # not handed the change again
    assert await f.dead_letters() == []
    assert await redis_client.xlen(keys.case_changes()) == 0
    await f.drain(1)
    assert len(hooks.calls) == 4


async def test_a_retried_change_that_fails_again_gets_a_fresh_budget(redis_client: aioredis.Redis,
                                                                     keys: Keys) -> None:
    hooks = Switch()
    f = followup(redis_client, keys, max_attempts=2)
    f.register("webhooks", hooks)
    f.register("notices", Seen())
    await a_change(redis_client, keys)
    await f.drain(10)
    [first] = await f.dead_letters()
    await f.retry(first.id, by="agent1010")
    await f.drain(10)
    [again] = await f.dead_letters()
    assert len(hooks.calls) == 4 and again.attempts == 2
    assert again.event_id == first.event_id and again.id != first.id and again.handler == "webhooks"
    assert again.kind == first.kind and again.case_id == first.case_id


async def test_given_up_by_age_and_the_budget_outlives_a_restart(redis_client: aioredis.Redis, keys: Keys) -> None:
    clock = Clock(1_800_000_000.0)
    hooks = Switch()
    first = followup(redis_client, keys, max_attempts=100, max_age=3600, clock=clock)
    first.register("webhooks", hooks)
    await a_change(redis_client, keys)
    await first.ensure_group()
    await first.step()  # attempt 1 fails; the instance then stops (a restart)
    assert len(hooks.calls) == 1 and await first.dead_letters() == []

    clock.now += 3600
    second = followup(redis_client, keys, max_attempts=100, max_age=3600, clock=clock)  # same consumer name
    second.register("webhooks", hooks)
    await second.drain(10)  # attempt 2, an hour after the first one: given up
    [letter] = await second.dead_letters()
    assert len(hooks.calls) == 2 and letter.attempts == 2 and letter.reason == "age"
    assert (letter.first_at, letter.last_at) == (1_800_000_000.0, 1_800_003_600.0)


async def test_a_lone_handler_given_up_finishes_the_entry(redis_client: aioredis.Redis, keys: Keys) -> None:
    hooks = Switch()
    f = followup(redis_client, keys, max_attempts=1)
    f.register("webhooks", hooks)
    await a_change(redis_client, keys)
    await a_change(redis_client, keys, summary="second")
    await f.drain(10)
    letters = await f.dead_letters()
    assert len(hooks.calls) == 2 and len(letters) == 2 and [x.attempts for x in letters] == [1, 1]
    assert letters[0].dead_at >= letters[1].dead_at  # the most recently dead first
    with pytest.raises(ValueError):
        f.register("Bad Name", hooks)


async def test_failed_attempts_are_counted_atomically(redis_client: aioredis.Redis, keys: Keys) -> None:
    """Two instances around a claim may count a failure on the same change at once: none is lost,
    the first failure's time is kept, and a value that is not ours starts the budget again."""
    f = followup(redis_client, keys)
    counted = await asyncio.gather(*(f.dead.count_failure("1-1", "webhooks", now=1000.0 + i, error=f"e{i}", ttl=60)
                                     for i in range(20)))
    assert sorted(c.attempts for c in counted) == list(range(1, 21))
    assert {c.first_at for c in counted} == {1000.0}
    await redis_client.hset(keys.case_change_failures("1-2"), "webhooks", "not json")
    again = await f.dead.count_failure("1-2", "webhooks", now=5.0, error="x" * 1000, ttl=60)
    assert (again.attempts, again.first_at, len(again.error)) == (1, 5.0, 300)


async def test_the_group_is_created_again_when_redis_lost_the_stream(redis_client: aioredis.Redis,
                                                                     keys: Keys) -> None:
    """A FLUSHALL (or a restart without persistence) takes the stream and its consumer group: the
    running follow-up creates the group again, so a change written after it is still followed."""
    seen = Seen()
    f = followup(redis_client, keys)
    f.register("webhooks", seen)
    task = asyncio.create_task(f.run())
    try:
        await a_change(redis_client, keys)
        await eventually(lambda: len(seen.calls) == 1)
        await redis_client.delete(keys.case_changes())  # what a flush does to this key and its group
        await asyncio.sleep(0.1)  # the loop meets NOGROUP
        await a_change(redis_client, keys, summary="after the flush")
        await eventually(lambda: len(seen.calls) == 2)
        assert [c.case.summary for c in seen.calls][-1] == "after the flush"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---- REST on the real web app ---------------------------------------------------------------------

@pytest.fixture
async def server(redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[IvrServer]:
    agents = tmp_path / "agents.yaml"
    agents.write_text((REPO / "scripts" / "demo-agents.yaml").read_text())
    settings = config.from_mapping({
        "redis": {"url": redis_url, "prefix": keys.prefix},
        "routing": {"agents_file": str(agents)},
        "menus": {"watch": False},
        "cases": {"followup_max_attempts": 2},
    })
    srv = IvrServer(settings)
    yield srv
    await srv.redis.aclose()
    await srv.pubsub_redis.aclose()


async def test_supervisors_list_and_retry_over_rest(redis_client: aioredis.Redis, keys: Keys,
                                                    server: IvrServer) -> None:
    crm = Switch()
    f = server.case_followup
    assert f.max_attempts == 2  # cases.followup_max_attempts
    f.retry_base, f.retry_max, f.block_ms = 0.01, 0.02, 20
    f.register("crm-sync", crm)  # a third handler beside the app's webhooks and notices
    await a_change(redis_client, keys)
    await f.drain(10)
    async with TestClient(TestServer(server.web_app())) as client:
        sup, agent = await login(client, "agent1010"), await login(client, "agent1001")
        await call(client, "GET", "/api/v1/case-followup/dead", agent, 403)
        await call(client, "GET", "/api/v1/case-followup/dead", {}, 401)
        listed = await call(client, "GET", "/api/v1/case-followup/dead", sup, 200)
        [item] = listed["items"]
        assert item["handler"] == "crm-sync" and item["attempts"] == 2 and item["kind"] == "opened"
        assert set(item) == {"id", "event_id", "handler", "kind", "case_id", "customer_id", "error", "attempts",
                             "first_at", "last_at", "dead_at", "reason"}
        assert "s3cr3t" not in str(listed)
        for bad in ("?limit=0", "?limit=x", "?limit=1001", "?state=dead"):
            await call(client, "GET", "/api/v1/case-followup/dead" + bad, sup, 400)
        path = f"/api/v1/case-followup/dead/{item['id']}/retry"
        await call(client, "POST", path, agent, 403)
        await call(client, "POST", "/api/v1/case-followup/dead/nope/retry", sup, 404)
        await call(client, "POST", "/api/v1/case-followup/dead/1-0.crm-sync/retry", sup, 404)
        crm.ok = True
        done = await call(client, "POST", path, sup, 200)
        assert done["id"] == item["id"] and done["requeued_as"]
        await call(client, "POST", path, sup, 404)  # once
        await f.drain(10)
        assert len(crm.calls) == 3 and crm.calls[-1].event_id == item["event_id"]
        assert (await call(client, "GET", "/api/v1/case-followup/dead", sup, 200))["items"] == []
    audit = await redis_client.xrange(keys.audit())
    retried = [e for _, e in audit if e["what"] == "case_followup.retry"]
    assert [(e["who"], e["target"]) for e in retried] == [("agent1010", item["id"])]
