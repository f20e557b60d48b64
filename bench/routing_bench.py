"""Routing decision latency and Redis round trips per call, at N concurrent calls.

    .venv/bin/python bench/routing_bench.py [--concurrency 200] [--calls 6000] [--hold 1.0]
                                            [--flood-calls 10000] [--customers 5000]

Starts its own redis-server (devstack's LocalRedis: a free port, never 6379), seeds customers, cases,
contacts and agent states through the real stores, then runs `concurrency` callers in parallel,
each doing what call entry does: `snapshot_by_number()` (store/customers.py) then
`RoutingService.route()` (agents' live state + the pure decision).

Round trips are counted at the socket: a Connection subclass counts `send_packed_command` calls
(one per command, one per pipeline) into a per-call ContextVar, after the connection pool has
been opened, so connection set-up is not charged to calls. The Redis server's own command count
(INFO stats) is shown too. Prints a table; no assertions (timing depends on the machine).
Targets (issue 5): at most 2 round trips per call, p99 under 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivrserver.app import run_on_loop
from ivrserver.config import RoutingSettings
from ivrserver.devstack.redis import LocalRedis
from ivrserver.domain.agent_state import AgentLive, DeviceStatus, Leg
from ivrserver.domain.model import Contact, ContactKind, Customer, Outcome, Segment, Tier
from ivrserver.domain.routing import route as decide
from ivrserver.files.routing import load_routing
from ivrserver.services.routing import RoutingService
from ivrserver.store import agents as agent_store
from ivrserver.store import cases as case_store
from ivrserver.store import contacts as contact_store
from ivrserver.store import customers
from ivrserver.store.client import Connection
from ivrserver.store.keys import Keys

from benchlib import percentile

TRIPS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("trips", default=None)


class CountingConnection(Connection):
    opened = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        counter = TRIPS.get()
        if counter is not None:
            counter[0] += 1
        await super().send_packed_command(command, check_health)

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        # Connection set-up (HELLO / CLIENT SETINFO) is the pool's cost, not a call's: not counted.
        type(self).opened += 1
        token = TRIPS.set(None)
        try:
            await super().on_connect_check_health(check_health=check_health)
        finally:
            TRIPS.reset(token)


@dataclass
class Stats:
    latency: list[float] = field(default_factory=list)
    snapshot: list[float] = field(default_factory=list)
    routing: list[float] = field(default_factory=list)
    trips: list[int] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)


AGENT_STATES = {  # a plausible mid-morning floor
    "agent1001": AgentLive("agent1001", logged_in=True, device=DeviceStatus.NOT_INUSE),
    "agent1002": AgentLive("agent1002", logged_in=True, device=DeviceStatus.INUSE,
                           legs=(("PJSIP/agent1002-00000001", Leg.UP),)),
    "agent1003": AgentLive("agent1003", logged_in=True, paused=True, device=DeviceStatus.NOT_INUSE),
    "agent1004": AgentLive("agent1004", logged_in=True, device=DeviceStatus.NOT_INUSE),
    "agent1005": AgentLive("agent1005", logged_in=True, device=DeviceStatus.RINGING),
    "agent1006": AgentLive("agent1006", logged_in=False, device=DeviceStatus.UNAVAILABLE),
    "agent1007": AgentLive("agent1007", logged_in=True, device=DeviceStatus.NOT_INUSE),
    "agent1008": AgentLive("agent1008", logged_in=True, device=DeviceStatus.INUSE),
    "agent1009": AgentLive("agent1009", logged_in=True, device=DeviceStatus.NOT_INUSE),
    "agent1010": AgentLive("agent1010", logged_in=True, device=DeviceStatus.NOT_INUSE),
}


async def seed(redis: aioredis.Redis, keys: Keys, n_customers: int, now: float, rng: random.Random) -> list[str]:
    """Customers with a realistic mix; returns the numbers callers will dial from."""
    agent_ids = sorted(AGENT_STATES)
    numbers: list[str] = []
    for i in range(n_customers):
        number = f"138{i:08d}"
        numbers.append(number)
        roll = rng.random()
        tier = Tier.VIP if roll < 0.1 else Tier.GOLD if roll < 0.2 else Tier.STANDARD
        manager = rng.choice(agent_ids[:3]) if tier is not Tier.STANDARD else None
        customer = Customer(id=f"c{i}", name=f"Customer {i}", phones=(number,), tier=tier,
                            segment=rng.choice(list(Segment)), account_manager=manager)
        await customers.save_customer(redis, keys, customer)
        if rng.random() < 0.3:
            await case_store.open_case(redis, keys, customer_id=customer.id, summary="billing dispute",
                                    now=now - rng.uniform(3600, 30 * 86400), owner_agent=rng.choice(agent_ids))
        if rng.random() < 0.5:
            started = now - rng.uniform(600, 72 * 3600)
            await contact_store.save_contact(redis, keys, Contact(
                id=f"k{i}", kind=ContactKind.INBOUND, number=number, started_at=started, customer_id=customer.id,
                ended_at=started + 240, agents=(rng.choice(agent_ids),), outcome=Outcome.ANSWERED), now=now)
    await agent_store.save(redis, keys, AGENT_STATES.values())
    return numbers


def caller_numbers(known: list[str], calls: int, rng: random.Random) -> list[str]:
    """80 % known customers, 15 % unknown numbers, 5 % withheld."""
    out = []
    for _ in range(calls):
        roll = rng.random()
        out.append(rng.choice(known) if roll < 0.8 else f"139{rng.randrange(10**8):08d}" if roll < 0.95
                   else "anonymous")
    return out


async def run(args: argparse.Namespace) -> None:
    async with LocalRedis() as local:
        url = local.url
        pool = aioredis.ConnectionPool.from_url(url, decode_responses=True, connection_class=CountingConnection,
                                                max_connections=args.concurrency + 10)
        redis = aioredis.Redis(connection_pool=pool)
        keys = Keys(prefix="bench")
        rng = random.Random(5)
        now = datetime.now(UTC)
        t_seed = time.perf_counter()
        known = await seed(redis, keys, args.customers, now.timestamp(), rng)
        seed_s = time.perf_counter() - t_seed
        policy, agents_config = load_routing(RoutingSettings())
        if args.agent_state == "memory":
            # What the server does: the instance's AgentStateService view (folded from AMI events).
            known_states = await agent_store.statuses(redis, keys, AGENT_STATES, now.timestamp())

            async def in_memory(ids: Any, at: float) -> dict[str, Any]:
                return {i: known_states[i] for i in ids if i in known_states}

            routing = RoutingService(redis, keys, policy, agents_config.agents, clock=lambda: now,
                                     statuses=in_memory)
        else:
            routing = RoutingService(redis, keys, policy, agents_config.agents, clock=lambda: now)
        numbers = caller_numbers(known, args.calls + args.flood_calls, rng)
        # open the pool's connections and load the snapshot script before anything is measured
        await asyncio.gather(*(redis.ping() for _ in range(args.concurrency)))
        await customers.snapshot_by_number(redis, keys, known[0])
        gc.freeze()  # as IvrServer.run does after start-up: the seeded data is not scanned again

        async def one_call(number: str, stats: Stats) -> None:
            counter = [0]
            TRIPS.set(counter)
            started = time.perf_counter()
            snapshot = await customers.snapshot_by_number(redis, keys, number)
            got_snapshot = time.perf_counter()
            decision = await routing.route(snapshot)
            ended = time.perf_counter()
            TRIPS.set(None)
            stats.latency.append((ended - started) * 1000)
            stats.snapshot.append((got_snapshot - started) * 1000)
            stats.routing.append((ended - got_snapshot) * 1000)
            stats.trips.append(counter[0])
            stats.actions[decision.action.value] = stats.actions.get(decision.action.value, 0) + 1

        async def phase(calls: list[str], hold: float) -> tuple[Stats, float, int]:
            """`concurrency` lines; each takes a call, decides, holds it `hold` s (mean), takes the next."""
            stats = Stats()
            todo = list(reversed(calls))
            line_rng = random.Random(7)

            async def line() -> None:
                if hold:
                    await asyncio.sleep(line_rng.uniform(0, hold))  # stagger the first arrivals
                while todo:
                    await one_call(todo.pop(), stats)
                    if hold:
                        await asyncio.sleep(line_rng.uniform(0.5 * hold, 1.5 * hold))

            before = int((await redis.info("stats"))["total_commands_processed"])
            t0 = time.perf_counter()
            await asyncio.gather(*(line() for _ in range(args.concurrency)))
            wall = time.perf_counter() - t0
            after = int((await redis.info("stats"))["total_commands_processed"])
            return stats, wall, after - before - 1

        live, live_wall, live_cmds = await phase(numbers[:args.calls], args.hold)
        flood, flood_wall, _ = await phase(numbers[args.calls:], 0.0)

        # the pure decision alone, for the same callers (no I/O)
        snapshots = [await customers.snapshot_by_number(redis, keys, n) for n in numbers[:2000]]
        statuses = await agent_store.statuses(redis, keys, AGENT_STATES, now.timestamp())
        pure: list[float] = []
        for snap in snapshots:
            t = time.perf_counter()
            decide(snap, statuses, agents_config.agents, now, policy)
            pure.append((time.perf_counter() - t) * 1000)

        trips = live.trips
        rows = [
            ("customers seeded", f"{args.customers} (in {seed_s:.1f} s); callers: 80 % known, 15 % unknown, "
                                 "5 % withheld"),
            ("", ""),
            ("LIVE", f"{args.concurrency} concurrent calls, each held ~{args.hold:g} s, then the next call"),
            ("calls decided", f"{len(live.latency)} in {live_wall:.1f} s ({len(live.latency) / live_wall:,.0f}/s); "
                              + ", ".join(f"{k} {v}" for k, v in sorted(live.actions.items()))),
            ("round trips / call", f"mean {statistics.mean(trips):.2f}, max {max(trips)}; "
                                   + ", ".join(f"{k}: {trips.count(k)} calls" for k in sorted(set(trips)))
                                   + "   (target <= 2)"),
            ("Redis commands / call", f"{live_cmds / len(live.latency):.2f} (server INFO delta, Lua's inner "
                                      "calls included)"),
            ("decision latency p50", f"{percentile(live.latency, 50):.3f} ms   (snapshot + agent states + route)"),
            ("decision latency p99", f"{percentile(live.latency, 99):.3f} ms   (target < 2 ms)"),
            ("decision latency max", f"{max(live.latency):.3f} ms"),
            ("  snapshot p50 / p99", f"{percentile(live.snapshot, 50):.3f} / {percentile(live.snapshot, 99):.3f} ms   "
                                     "(store/customers.py, one EVALSHA)"),
            ("  routing p50 / p99", f"{percentile(live.routing, 50):.3f} / {percentile(live.routing, 99):.3f} ms   "
                                    f"(RoutingService.route: agent states from {args.agent_state} + route())"),
            ("", ""),
            ("FLOOD", f"{args.concurrency} callers back to back, no hold time: capacity, latency is queueing"),
            ("calls decided", f"{len(flood.latency)} in {flood_wall:.1f} s "
                              f"({len(flood.latency) / flood_wall:,.0f} decisions/s, one process)"),
            ("round trips / call", f"mean {statistics.mean(flood.trips):.2f}, max {max(flood.trips)}"),
            ("latency p50 / p99", f"{percentile(flood.latency, 50):.1f} / {percentile(flood.latency, 99):.1f} ms "
                                  f"(~ concurrency / throughput)"),
            ("", ""),
            ("pure route() p50 / p99", f"{percentile(pure, 50) * 1000:.1f} / {percentile(pure, 99) * 1000:.1f} µs"),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"routing bench — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs, {args.loop} event loop, load average {os.getloadavg()[0]:.2f}")
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
        print(f"  {'connections opened':<{width}}  {CountingConnection.opened} (pool; set-up not charged to calls)")
        await redis.aclose()
        await pool.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--agent-state", choices=("memory", "redis"), default="memory",
                        help="where routing reads agents' live state: the instance's own fold (as the server "
                             "does, no round trip) or Redis (one MGET)")
    parser.add_argument("--calls", type=int, default=6000, help="calls in the live phase")
    parser.add_argument("--hold", type=float, default=1.0, help="mean seconds a line holds a call (live phase)")
    parser.add_argument("--flood-calls", type=int, default=10000, help="calls in the flood phase")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop (default uvloop, the server's default `event_loop`)")
    args = parser.parse_args()
    run_on_loop(run(args), args.loop)


if __name__ == "__main__":
    main()
