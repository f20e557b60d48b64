"""Incident resolve at scale (issue 19): how long `POST /api/v1/incidents/{id}/resolve` takes when
thousands of callers are to be told, at several notice-scheduling concurrencies.

    .venv/bin/python bench/resolve_bench.py                       # 1,000 and 10,000 callers; 1, 4 and 16 at once
    .venv/bin/python bench/resolve_bench.py --callers 30000 --concurrency 16,64

Each row: a private redis-server flushed, one active incident (mobile data, Chaoyang) and N
callers who pressed 1 to be told — half of them customers with a record in Redis (they are told
in their own language), half callers without one (`tel-<number>`, told at the number they called
from, within that region's hours). Then the real IncidentService.resolve with the real
NoticeService (each notice: its key checked, the customer read, consent and budget, one callback
created; the message synthesized once per language by espeak-ng + sox into a fresh cache), timed
from the call to its return. The figures are archived by the resolve itself. Columns: seconds,
notices per second, scheduled / refused, callback records created (one per notice: duplicates or
losses would show here), Redis commands per notice (INFO stats), synthesizer renders. No
assertions: it prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callbacks_bench import OPEN, POLICY, PREFIX

from ivrserver.config import PromptSettings
from ivrserver.domain import incidents as inc
from ivrserver.domain import notices as nm
from ivrserver.domain.model import CallerSnapshot, Customer
from ivrserver.files import incident_policy
from ivrserver.services.incidents import IncidentService
from ivrserver.services.messages import MessageService
from ivrserver.services.notices import NoticeService
from ivrserver.services.speech import SpeechRenderer, Synthesizer, parse_voices
from ivrserver.store import customers
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.incidents import IncidentStore
from ivrserver.store.keys import Keys
from ivrserver.store.notices import NoticeStore

from benchlib import loadavg, local_redis, print_columns

REPO = Path(__file__).resolve().parents[1]
CHAOYANG = "+86139042{:05d}"   # mobile numbers of Chaoyang, Liaoning


async def commands(client: aioredis.Redis) -> int:
    return int((await client.info("stats"))["total_commands_processed"])


async def one_row(url: str, callers: int, concurrency: int) -> list[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    cache = Path(tempfile.mkdtemp(prefix="resolve-bench-"))
    try:
        await client.flushall()
        keys = Keys(PREFIX)
        policy = incident_policy.load()
        prompts = PromptSettings()
        renderer = SpeechRenderer(Synthesizer(prompts.synthesizer, prompts.convert), parse_voices(prompts.voices),
                                  cache)
        calls = CallbackStore(client, keys)
        notices = NoticeService(NoticeStore(client, keys), calls, MessageService(renderer), nm.NoticePolicy(),
                                POLICY, customer=lambda cid: customers.get_customer(client, keys, cid))
        service = IncidentService(IncidentStore(client, keys), policy, notices=notices,
                                  notify_concurrency=concurrency)
        incident = await service.open("mobile_data", "chaoyang-liaoning", actor="bench", planned=False)
        for n in range(callers):
            number = CHAOYANG.format(n)
            customer_id = None
            if n % 2 == 0:
                customer_id = f"c-{n:06d}"
                await customers.save_customer(client, keys, Customer(
                    id=customer_id, name="Wang Fang", phones=(number,), language="zh" if n % 4 == 0 else "en",
                    preferences=OPEN))
            await service.subscribe(incident.id, CallerSnapshot(number=number), customer_id)
        before = await commands(client)
        started = time.perf_counter()
        report = await service.resolve(incident.id, actor="bench")
        seconds = time.perf_counter() - started
        used = await commands(client) - before
        created = len(await client.keys(keys.callback("*")))
        archived = await service.get(incident.id)
        assert not inc.unfinished(archived)
        return [f"{callers:,}", str(concurrency), f"{seconds:.2f}", f"{callers / seconds:,.0f}",
                f"{report.notices_scheduled:,} / {report.notices_refused:,}", f"{created:,}",
                f"{used / max(1, callers):.1f}", str(len(renderer.rendered))]
    finally:
        await client.aclose()
        shutil.rmtree(cache, ignore_errors=True)


async def run(url: str, sizes: list[int], levels: list[int], repeat: int) -> list[list[str]]:
    rows = []
    for callers in sizes:
        for _ in range(repeat):
            for concurrency in levels:
                rows.append(await one_row(url, callers, concurrency))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", default="1000,10000", help="comma-separated numbers of callers to tell")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated notices scheduled at once")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(x) for x in args.callers.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    with local_redis() as redis:
        rows = asyncio.run(run(redis.url, sizes, levels, args.repeat))
    print(f"Incident resolve: N callers to tell (half with a customer record), the real IncidentService + "
          f"NoticeService on a private redis-server; {time.strftime('%H:%M UTC', time.gmtime())}, load {loadavg()}")
    print_columns(["callers", "at once", "resolve s", "notices/s", "scheduled / refused", "callbacks",
                   "redis cmds/notice", "renders"], rows)


if __name__ == "__main__":
    main()
