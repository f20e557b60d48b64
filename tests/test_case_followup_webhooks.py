"""The case follow-up's webhooks handler end to end: case changes made over REST on the real web app
reach a real webhook receiver (tests/test_webhooks_delivery.Receiver: checks the HMAC signature,
fails first) through Webhooks.publish and its deliverer, each change once."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from ivrserver.app import IvrServer
from ivrserver.services.case_followup import CaseFollowup, webhook_handler
from ivrserver.store.keys import Keys
from tests import test_cases_api
from tests.inprocess import eventually
from tests.test_cases_api import PARTNER, bearer, call, handling, login, open_case
from tests.test_webhooks_delivery import Receiver, endpoint, status, webhooks

# test_cases_api.py's fixtures: the web app with scoped back-office tokens, and a client of it
server, client = test_cases_api.server, test_cases_api.client

async def test_case_changes_reach_the_webhook_receiver_once(redis_client: aioredis.Redis, keys: Keys,
                                                            server: IvrServer, client: TestClient) -> None:
    receiver = Receiver(answers=[status(500)])  # the first delivery fails: the deliverer retries
    await receiver.start()
    hooks = webhooks(redis_client, keys, [endpoint(receiver, events=("case.*",))])
    followup = CaseFollowup(redis_client, keys, consumer="t1", block_ms=50)
    followup.register("webhooks", webhook_handler(hooks.publish))
    tasks = [asyncio.create_task(hooks.run()), asyncio.create_task(followup.run())]
    try:
        await handling(server, "agent1001", "c-vip")
        agent = await login(client, "agent1001")
        cid = (await open_case(client, agent))["id"]
        await call(client, "POST", f"/api/v1/cases/{cid}/actions", agent, 200, {"action": "cancel_partner_charge"})
        await call(client, "POST", f"/api/v1/cases/{cid}/compensations", agent, 201,
                   {"amount_cents": 1000, "currency": "CNY", "reason": "sorry"})
        await call(client, "POST", f"/api/v1/cases/{cid}/results", bearer(PARTNER), 200,
                   {"result": "charge cancelled", "resolve": True})
        wanted = ["case.opened", "case.action_requested", "case.compensation_granted", "case.resolved"]

        async def delivered() -> bool:
            return sorted(b["event"] for b in receiver.accepted.values()) == sorted(wanted)
        await eventually(delivered, 20, "every change at the receiver")
        bodies = {b["event"]: b for b in receiver.accepted.values()}
        resolved = bodies["case.resolved"]["data"]
        assert resolved["case"]["status"] == "resolved" and resolved["actor"] == "backoffice:partner-billing"
        assert resolved["why"] == "charge cancelled" and resolved["previous"] == "waiting_backoffice"
        assert bodies["case.action_requested"]["data"]["detail"]["to"] == "partner-billing"
        assert all(h["headers"]["Idempotency-Key"].startswith("case-change:") for h in receiver.hits)
        await eventually(lambda: _empty(redis_client, keys), 10, "the case-changes stream taken")
        await asyncio.sleep(0.3)
        assert len({h["headers"]["Idempotency-Key"] for h in receiver.hits}) == 4  # one key per change
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await receiver.stop()


async def _empty(redis: aioredis.Redis, keys: Keys) -> bool:
    return await redis.xlen(keys.case_changes()) == 0
