"""Callers' numbers as the operators' networks send them, on a real call: SIPp caller → Asterisk 22
→ ivrserver (FastAGI + AMI) → Redis → SIPp agent phone. Nothing of ours is replaced by a double.

A mainland caller ID arrives in the domestic form with the trunk prefix (`013800000001`); the
customer was imported as `+86 138 0000 0001`. With `phone.default_region: CN` (the default) both
are `+8613800000001`, so the caller is that customer: a VIP who goes straight to their account
manager, and the contact record says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.config import Settings
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.domain import customer_validation as cv
from ivrserver.domain.model import Outcome
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import Ivr, add_customer, ivr_settings, running, url_of

pytestmark = pytest.mark.integration


def settings_for(asterisk: LocalAsterisk, redis_client: aioredis.Redis, tmp_path: Path, region: str) -> Settings:
    settings = ivr_settings(asterisk, url_of(redis_client), tmp_path)
    return dataclasses.replace(settings, phone=dataclasses.replace(settings.phone, default_region=region))


@pytest.mark.parametrize("caller_id", ["013800000001"])
async def test_a_domestic_caller_id_is_the_customer_stored_in_e164(
        fresh_asterisk: LocalAsterisk, redis_client: aioredis.Redis, tmp_path: Path, phones: Phones,
        caller_id: str) -> None:
    async with running(settings_for(fresh_asterisk, redis_client, tmp_path, "CN")) as server:
        ivr = Ivr(server, redis_client, Path(server.settings.menus.dir))
        valid, errors = cv.validate_customer(
            {"id": "c-cn-vip", "name": "Wang Lei", "phones": ["+86 138 0000 0001"], "tier": "vip",
             "account_manager": "agent1001"}, default_country=server.settings.phone.default_region)
        assert not errors and valid is not None and valid.customer.phones == ("+8613800000001",)
        await add_customer(ivr, valid.customer)
        manager = await phones.agent(1001, ring_ms=300, hold_ms=1000)
        await ivr.agent_ready("agent1001")
        result = await phones.call("", number=caller_id)
        assert result.ok, result.describe()
        assert (await manager.wait()).ok
        contact = await ivr.finished_contact(customer_id="c-cn-vip")
        assert contact.number == "+8613800000001"
        assert contact.outcome is Outcome.ANSWERED and contact.agents == ("agent1001",)
        assert "agent1001" in contact.routing_reason
        assert await ivr.paths(0) == []  # a known VIP skips the menu
