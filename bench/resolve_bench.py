"""Incident resolve at scale (issue 19): how long `POST /api/v1/incidents/{id}/resolve` takes when
thousands of callers are to be told, at several notice-scheduling concurrencies.

    .venv/bin/python bench/resolve_bench.py                       # 1,000 and 10,000 callers; 1, 4 and 16 at once
    .venv/bin/python bench/resolve_bench.py --callers 30000 --concurrency 16,64 --kill ''
    .venv/bin/python bench/resolve_bench.py --callers 1000 --concurrency 4 --kill 20000:5

Each row: a private redis-server flushed, one active incident (mobile data, Chaoyang) and N
callers who pressed 1 to be told — half of them customers with a record in Redis (they are told
in their own language), half callers without one (`tel-<number>`, told at the number they called
from, within that region's hours). Then the real IncidentService.resolve with the real
NoticeService (each notice: its key checked, the customer read, consent and budget, one callback
created; the message synthesized once per language by espeak-ng + sox into a fresh cache), timed
from the call to its return. The figures are archived by the resolve itself. Columns: seconds,
notices per second, scheduled / refused, callback records created (one per notice: duplicates or
losses would show here), Redis commands per notice (INFO stats), synthesizer renders.

Then the crash (`--kill CALLERS:SECONDS`, default 10,000 after 3 s): a child process resolves an
incident of CALLERS subscribers and is SIGKILLed SECONDS into its notices. What it left is read
(callbacks made, the incident still marked unfinished); the notice locks it held (15 s) are waited
out; then this process, as the detector's lease holder, runs `finish_resolves` with its clock past
the mark's minute of grace. Columns: callbacks when killed, left unfinished, finished, the finish's
seconds, the archived notices_scheduled, callback and notice records at the end, lost (callers
without a callback). No assertions: it prints tables.
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
from ivrserver.services.incidents import NOTIFY_CONCURRENCY, RESOLVE_GRACE_SECONDS, IncidentService
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
LOCK_HOLD_SECONDS = 15.5        # store/notices.NoticeStore.locked: hold_ms 15000


async def commands(client: aioredis.Redis) -> int:
    return int((await client.info("stats"))["total_commands_processed"])


def build(client: aioredis.Redis, cache: Path, concurrency: int) -> tuple[IncidentService, SpeechRenderer]:
    """The incident and notice services as the server wires them (no webhooks: none configured)."""
    keys = Keys(PREFIX)
    prompts = PromptSettings()
    renderer = SpeechRenderer(Synthesizer(prompts.synthesizer, prompts.convert), parse_voices(prompts.voices), cache)
    notices = NoticeService(NoticeStore(client, keys), CallbackStore(client, keys), MessageService(renderer),
                            nm.NoticePolicy(), POLICY, customer=lambda cid: customers.get_customer(client, keys, cid))
    service = IncidentService(IncidentStore(client, keys), incident_policy.load(), notices=notices,
                              notify_concurrency=concurrency)
    return service, renderer


async def seed(client: aioredis.Redis, service: IncidentService, callers: int) -> str:
    """A fresh Redis with one active incident and `callers` subscribers; the incident's id."""
    await client.flushall()
    keys = Keys(PREFIX)
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
    return incident.id


async def records(client: aioredis.Redis, key: str) -> int:
    """How many records `key` ('…:callback:*') names: not the keys below one ('…:callback:placed:…')."""
    head = key.removesuffix("*")
    return sum(1 for k in await client.keys(key) if ":" not in k[len(head):])


async def callbacks(client: aioredis.Redis) -> int:
    return await records(client, Keys(PREFIX).callback("*"))


async def one_row(url: str, callers: int, concurrency: int) -> list[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    cache = Path(tempfile.mkdtemp(prefix="resolve-bench-"))
    try:
        service, renderer = build(client, cache, concurrency)
        incident_id = await seed(client, service, callers)
        before = await commands(client)
        started = time.perf_counter()
        report = await service.resolve(incident_id, actor="bench")
        seconds = time.perf_counter() - started
        used = await commands(client) - before
        assert not inc.unfinished(await service.get(incident_id))
        assert report.notices_scheduled is not None and report.notices_refused is not None
        return [f"{callers:,}", str(concurrency), f"{seconds:.2f}", f"{callers / seconds:,.0f}",
                f"{report.notices_scheduled:,} / {report.notices_refused:,}", f"{await callbacks(client):,}",
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


async def child(url: str, incident_id: str) -> None:
    """`--child`: the instance that resolves and is SIGKILLed half-way."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    service, _ = build(client, Path(tempfile.mkdtemp(prefix="resolve-bench-child-")), NOTIFY_CONCURRENCY)
    print("resolving", flush=True)
    await service.resolve(incident_id, actor="bench")
    print("finished", flush=True)  # not expected: the parent kills it first


async def killed(url: str, callers: int, kill_after: float) -> list[str]:
    """An instance resolving `callers` notices is SIGKILLed after `kill_after` s; another instance,
    as the detector's lease holder, finishes it once the mark is past the grace."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    cache = Path(tempfile.mkdtemp(prefix="resolve-bench-"))
    try:
        service, _ = build(client, cache, NOTIFY_CONCURRENCY)
        incident_id = await seed(client, service, callers)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child", url, incident_id, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"resolving"
        await asyncio.sleep(kill_after)
        proc.kill()
        await proc.wait()
        before = await callbacks(client)
        left = await service.get(incident_id)
        mark = await client.zscore(Keys(PREFIX).incidents_unfinished(), incident_id)
        assert mark is not None, "a resolve killed half-way must stay marked"
        # the lease holder looks a minute after the mark; by then the per-customer notice locks the
        # killed instance held (15 s) are gone: wait those out, not the whole minute
        await asyncio.sleep(LOCK_HOLD_SECONDS)
        started = time.perf_counter()
        finished = await service.finish_resolves(float(mark) + RESOLVE_GRACE_SECONDS + 1)
        seconds = time.perf_counter() - started
        done = await service.get(incident_id)
        notices = await records(client, Keys(PREFIX).notice("*"))
        return [f"{callers:,}", f"{kill_after:g} s", f"{before:,}", "yes" if inc.unfinished(left) else "NO",
                "yes" if finished == [incident_id] else "NO", f"{seconds:.2f}",
                f"{done.figures.get('notices_scheduled')}", f"{await callbacks(client):,}", f"{notices:,}",
                f"{callers - await callbacks(client):,}"]
    finally:
        await client.aclose()
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", default="1000,10000", help="comma-separated numbers of callers to tell")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated notices scheduled at once")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kill", default="10000:3", help="CALLERS:SECONDS: SIGKILL a resolving instance after "
                        "SECONDS, another finishes it ('' skips it)")
    parser.add_argument("--child", nargs=2, metavar=("URL", "INCIDENT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(*args.child))
        return
    sizes = [int(x) for x in args.callers.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    with local_redis() as redis:
        rows = asyncio.run(run(redis.url, sizes, levels, args.repeat))
        kill_row = None
        if args.kill:
            callers, seconds = args.kill.split(":")
            kill_row = asyncio.run(killed(redis.url, int(callers), float(seconds)))
    print(f"Incident resolve: N callers to tell (half with a customer record), the real IncidentService + "
          f"NoticeService on a private redis-server; {time.strftime('%H:%M UTC', time.gmtime())}, load {loadavg()}")
    print_columns(["callers", "at once", "resolve s", "notices/s", "scheduled / refused", "callbacks",
                   "redis cmds/notice", "renders"], rows)
    if kill_row is not None:
        print()
        print("The resolving instance SIGKILLed half-way; another (the lease holder) finishes it:")
        print_columns(["callers", "killed after", "callbacks then", "left unfinished", "finished", "finish s",
                       "archived scheduled", "callbacks", "notices", "lost"], [kill_row])


if __name__ == "__main__":
    main()
