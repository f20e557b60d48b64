"""EventFanout: which subscriber gets which AMI event, and what a failing one costs the others."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from ivrserver.metrics import Metrics
from ivrserver.services.event_fanout import EventFanout


@dataclass(frozen=True)
class Hangup:
    channel: str


CALLER = Hangup("PJSIP/callers-00000001")
AGENT = Hangup("PJSIP/agent1003-0000002a")


def agent_only(event: Hangup) -> bool:
    return event.channel.startswith("PJSIP/agent")


def test_handlers_see_every_event_in_order_and_queues_only_what_they_accept() -> None:
    fanout = EventFanout(asyncio.Queue(), Metrics())
    seen: list[tuple[str, Hangup]] = []
    fanout.on_event("first", lambda e: seen.append(("first", e)))
    fanout.on_event("second", lambda e: seen.append(("second", e)))
    everything = fanout.subscribe()
    agents = fanout.subscribe(accepts=agent_only)
    fanout.publish(CALLER)
    fanout.publish(AGENT)
    assert seen == [("first", CALLER), ("second", CALLER), ("first", AGENT), ("second", AGENT)]
    assert [everything.get_nowait(), everything.get_nowait()] == [CALLER, AGENT]
    assert agents.get_nowait() == AGENT and agents.empty()


def test_a_failing_handler_is_logged_and_the_others_still_get_the_event(caplog: pytest.LogCaptureFixture) -> None:
    fanout = EventFanout(asyncio.Queue(), Metrics())
    seen: list[Hangup] = []

    def broken(event: Hangup) -> None:
        raise KeyError("no such field")

    fanout.on_event("broken", broken)
    fanout.on_event("ok", seen.append)
    queue = fanout.subscribe()
    with caplog.at_level(logging.ERROR, "ivrserver.events"):
        fanout.publish(AGENT)
    assert seen == [AGENT] and queue.get_nowait() == AGENT
    assert "AMI event handler broken failed on Hangup" in caplog.text


def test_a_filter_that_raises_lets_the_event_through_to_its_consumer() -> None:
    fanout = EventFanout(asyncio.Queue(), Metrics())
    queue = fanout.subscribe(accepts=lambda e: e.no_such_attribute)
    fanout.publish(CALLER)
    assert queue.get_nowait() == CALLER


def test_a_full_queue_loses_the_event_counted_and_blocks_no_one() -> None:
    metrics = Metrics()
    fanout = EventFanout(asyncio.Queue(), metrics)
    small = fanout.subscribe(size=1)
    roomy = fanout.subscribe()
    fanout.publish(CALLER)
    fanout.publish(AGENT)
    assert small.get_nowait() == CALLER and small.empty()
    assert [roomy.get_nowait(), roomy.get_nowait()] == [CALLER, AGENT]
    assert metrics.ami_dropped._value.get() == 1


async def test_run_publishes_what_arrives_on_the_source_queue() -> None:
    source: asyncio.Queue[Hangup] = asyncio.Queue()
    fanout = EventFanout(source, Metrics())
    got: asyncio.Queue[Hangup] = asyncio.Queue()
    fanout.on_event("collect", got.put_nowait)
    task = asyncio.create_task(fanout.run())
    try:
        source.put_nowait(AGENT)
        assert await asyncio.wait_for(got.get(), 2) == AGENT
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
