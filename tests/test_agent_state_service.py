"""services/agent_state.py: "free means ready" and the pause request, on a real Redis and a real
(unconnected) AMI client."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from ivrserver.config import AmiSettings
from ivrserver.domain.model import Agent, AgentState, AgentStatus
from ivrserver.pbx.ami import AmiClient
from ivrserver.pbx.ami_events import parse_event
from ivrserver.services.agent_state import AgentStateService, PbxUnavailable, is_free
from ivrserver.store.keys import Keys

NOW = 1_732_330_000.0
AGENTS = {
    "agent1001": Agent(id="agent1001", name="A", endpoint="PJSIP/agent1001", tiers=("vip",)),
    "agent1002": Agent(id="agent1002", name="B", endpoint="PJSIP/agent1002", tiers=("vip",)),
    "agent1003": Agent(id="agent1003", name="C", endpoint="PJSIP/agent1003", tiers=("standard",)),
}


def member(agent: str, *, paused: int = 0, status: int = 1, last_call: int = 0) -> Any:
    event = parse_event({"Event": "QueueMemberStatus", "Queue": "vip", "MemberName": agent,
                         "Interface": f"PJSIP/{agent}", "Status": str(status), "Paused": str(paused), "InCall": "0",
                         "CallsTaken": "0", "LastCall": str(last_call)})
    assert event is not None
    return event


@pytest.mark.parametrize(("status", "free"), [
    (None, False),
    (AgentStatus("a", AgentState.READY, NOW), True),
    (AgentStatus("a", AgentState.PAUSED, NOW), False),
    (AgentStatus("a", AgentState.WRAP_UP, NOW), False),
    (AgentStatus("a", AgentState.LOGGED_OUT, NOW), False),
    (AgentStatus("a", AgentState.ON_CALL, NOW), False),
])
def test_free_means_ready(status: AgentStatus | None, free: bool) -> None:
    assert is_free(status) is free


async def test_free_agents_counts_and_state(redis_client: aioredis.Redis, keys: Keys) -> None:
    service = AgentStateService(redis_client, keys, AGENTS, wrap_up_seconds=0, clock=lambda: NOW)
    await service.handle(member("agent1001"))
    await service.handle(member("agent1002", paused=1))
    await service.handle(member("agent1003"))
    assert await service.is_free("agent1001") and not await service.is_free("agent1002")
    assert not await service.is_free("agent9999")  # never seen: not free
    assert await service.free_count(["agent1001", "agent1002", "agent1003"]) == 2
    assert (await service.free_agents("vip"))[0] == "agent1001"
    assert "agent1003" not in await service.free_agents("vip")
    assert await service.state_of("agent1002") == "paused"
    assert await service.state_of("agent9999") is None


async def test_pause_without_asterisk_is_pbx_unavailable(redis_client: aioredis.Redis, keys: Keys) -> None:
    ami = AmiClient(AmiSettings(port=1))  # never connected: the real client refuses the action
    service = AgentStateService(redis_client, keys, AGENTS, wrap_up_seconds=0, ami_action=ami.action)
    with pytest.raises(PbxUnavailable, match="cannot reach Asterisk"):
        await service.set_paused("agent1001", True)
    with pytest.raises(PbxUnavailable):
        await AgentStateService(redis_client, keys, AGENTS, wrap_up_seconds=0).set_paused("agent1001", False)
