"""Reminders walk (issue 18 §4): how fast the scanner walks every customer, and how long it holds the
event loop that also serves calls on the same instance.

    .venv/bin/python bench/reminders_bench.py                # quick: 20,000 customers
    .venv/bin/python bench/reminders_bench.py --customers 100000 --pages 100,200,500,1000

A private redis-server (devstack's LocalRedis); customers with a card_expires attribute a year out
(the shipped reminders.yaml: a notice 30 days before), so every walk evaluates the rule for every
customer and none is due within the horizon (the steady state of a real base: the notice service
is never called). For each page size one walk runs with the shipped page pause while a ticker asks
the loop for 1 ms sleeps: how late those wake up is what a call on the same instance would wait.
Then the same walk once the rule was handled (`reminders:handled` matches: one dict lookup each).

No assertions: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import date, timedelta

import redis.asyncio as aioredis

from ivrserver.config import ReminderSettings
from ivrserver.devstack.redis import LocalRedis
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.domain.notices import NoticeRequest, NoticeResult
from ivrserver.files import reminders as rules_file
from ivrserver.services.reminders import ReminderService
from ivrserver.store import customers
from ivrserver.store.keys import Keys
from ivrserver.store.reminders import ReminderStore

from benchlib import percentile


class NotCalled:
    """The notice service's port; the walk never reaches it (nothing is due within the horizon)."""

    async def schedule(self, req: NoticeRequest) -> NoticeResult:
        raise AssertionError("no reminder is due in this benchmark")

    async def cancel(self, key: str, *, reason: str) -> bool:
        raise AssertionError("nothing to cancel in this benchmark")


async def seed(redis: aioredis.Redis, keys: Keys, n: int) -> None:
    expires = (date.today() + timedelta(days=365)).isoformat()
    prefs = ContactPreferences(timezone="Asia/Shanghai")
    for start in range(0, n, 1000):
        batch = range(start, min(n, start + 1000))
        await asyncio.gather(*(customers.save_customer(redis, keys, Customer(
            id=f"c{i:07d}", name="王芳", phones=(f"+86138{i:08d}",), preferences=prefs,
            attributes={"card_expires": expires, "notices": "card_expiry"})) for i in batch))


async def walk(service: ReminderService) -> tuple[float, float, float, float]:
    """(seconds, CPU seconds, loop lag p99 ms, loop lag max ms): the CPU from a walk alone, the
    lags from a second walk with the ticker running."""
    cpu, t0 = time.process_time(), time.perf_counter()
    await service.scan_once(force=True)
    elapsed, used = time.perf_counter() - t0, time.process_time() - cpu
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t - 0.001) * 1000)

    tick = asyncio.create_task(ticker())
    await service.scan_once(force=True)
    done.set()
    await tick
    return elapsed, used, percentile(lags, 99), max(lags, default=0.0)


async def main(args: argparse.Namespace) -> None:
    pause = ReminderSettings().page_pause
    rules = rules_file.load()
    async with LocalRedis() as local:
        redis = aioredis.Redis.from_url(local.url, decode_responses=True)
        keys = Keys("bench")
        t = time.perf_counter()
        await seed(redis, keys, args.customers)
        print(f"{args.customers} customers seeded in {time.perf_counter() - t:.1f} s; page pause {pause} s\n")
        print(f"{'page':>6} {'state':<10} {'walk s':>8} {'cust/s':>9} {'CPU ms/1000':>12} "
              f"{'lag p99 ms':>11} {'lag max ms':>11}")
        for size in args.pages:
            store = ReminderStore(redis, keys, kept_seconds=3600)
            service = ReminderService(store, NotCalled(), rules, page_size=size, page_pause=pause,
                                      horizon=ReminderSettings().horizon_days * 86400)
            elapsed, used, p99, worst = await walk(service)
            print(f"{size:>6} {'not due':<10} {elapsed:>8.2f} {args.customers / elapsed:>9.0f} "
                  f"{used / args.customers * 1e6:>12.1f} {p99:>11.2f} {worst:>11.2f}")
        # handled: as after the notices were scheduled (the value remembered per customer)
        ids = [f"c{i:07d}" for i in range(args.customers)]
        expires = (date.today() + timedelta(days=365)).isoformat()
        for start in range(0, len(ids), 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for cid in ids[start:start + 1000]:
                    pipe.hset(keys.reminders_handled(cid), "card_expiry", expires)
                await pipe.execute()
        for size in args.pages:
            service = ReminderService(ReminderStore(redis, keys, kept_seconds=3600), NotCalled(), rules,
                                      page_size=size, page_pause=pause)
            elapsed, used, p99, worst = await walk(service)
            print(f"{size:>6} {'handled':<10} {elapsed:>8.2f} {args.customers / elapsed:>9.0f} "
                  f"{used / args.customers * 1e6:>12.1f} {p99:>11.2f} {worst:>11.2f}")
        await redis.aclose()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--pages", type=lambda s: [int(x) for x in s.split(",")], default=[100, 200, 500, 1000])
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
