"""Screen-pop latency: from the AMI event (publish) to the frame read by the agent's websocket client.

    .venv/bin/python bench/pop_bench.py [--agents 2000] [--client-procs 4] [--calls-per-second 50]
                                        [--seconds 20] [--redis-url redis://...]

Processes: its own redis-server (devstack's LocalRedis, unless --redis-url), one server process (the real
aiohttp app with AgentHub + PopStore + Authenticator), and `--client-procs` client processes that
together hold `--agents` authenticated agent websockets. The server stands in for the AMI adapter:
at a steady call rate it picks a random agent and, per call, publishes the ringing pop (built with
domain.screen_pop.build_pop, ~3 KB) then the answered and ended phase updates. Each event carries
`t0 = time.time()` taken just before `hub.publish()` (where the AMI event would be handled); each
client takes `time.time()` when the frame is read and parsed. Same host, same clock.

Prints a table; no assertions (timing depends on the machine). Target (issue 6): p99 under 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.domain.model import Agent, Case, CaseStatus, Contact, ContactKind, Customer, Outcome, Tier
from ivrserver.domain.screen_pop import Phase, PopContext, Role, build_pop, phase_update
from ivrserver.services.privacy import PrivacyService
from ivrserver.services.screen_pop import PopFeed
from ivrserver.store.audit import AuditLog
from ivrserver.store.keys import Keys
from ivrserver.store.pops import PopStore
from ivrserver.web.agent_ws import AgentHub
from ivrserver.web.auth import Authenticator

from benchlib import free_port, local_redis, percentile

PREFIX = "bench"


def agent_ids(n: int) -> list[str]:
    return [f"agent{i:05d}" for i in range(n)]


def token_of(agent_id: str) -> str:
    return f"bench-static-token-{agent_id}"


def sample_pop(call_id: str, now: float) -> dict[str, Any]:
    customer = Customer(id=f"C{call_id}", name="Wang Wei", phones=("13800000001",), tier=Tier.VIP,
                        account_manager="Li Na", account_number="6222020212345678",
                        attributes={"plan": "Global 199", "region": "Beijing"})
    history = tuple(Contact(id=f"T{i}", kind=ContactKind.INBOUND, number="13800000001",
                            started_at=now - i * 86400, outcome=Outcome.ANSWERED, disposition="follow_up",
                            notes="customer reports premium SMS charges he never ordered; " * 3,
                            agents=("agent00001",), ivr_path=("hotline", "billing"))
                    for i in range(1, 6))
    cases = (Case(id="K1", customer_id=customer.id, status=CaseStatus.OPEN, summary="premium SMS fraud",
                  opened_at=now - 21 * 86400, severity=1, still_needed="date of first charge",
                  next_step="call back with refund decision"),)
    ctx = PopContext(call_id=call_id, number="13800000001", contact_id=f"T{call_id}", customer=customer,
                     routing_reason="repeat caller with open case K1", queue="vip",
                     ivr_path=({"menu": "hotline", "input": "2"}, {"menu": "billing", "input": "1"}),
                     recent_contacts=history, open_cases=cases)
    return build_pop(ctx, role=Role.AGENT, now=now)


# ---- server process --------------------------------------------------------------------------
async def serve(args: argparse.Namespace) -> None:
    ids = agent_ids(args.agents)
    agents = {a: Agent(id=a, name=a, endpoint=f"PJSIP/{a}") for a in ids}
    redis = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    keys = Keys(PREFIX)
    store = PopStore(redis, keys, backlog_seconds=3600)
    audit = AuditLog(redis, keys)
    auth = Authenticator(redis, keys, agents, {}, privacy=PrivacyService(store, audit),
                         static_tokens={a: token_of(a) for a in ids})
    hub = AgentHub(redis, PopFeed(store, keys), auth, queue_size=256, heartbeat=15.0)

    async def run(request: web.Request) -> web.Response:
        body = await request.json()
        rate, seconds = float(body["calls_per_second"]), float(body["seconds"])
        rng = random.Random(7)
        published = 0
        interval = 1.0 / rate
        start = time.perf_counter()
        pending: list[tuple[float, str, str]] = []  # (due, agent, call_id) of answered/ended updates
        call = 0
        pop_template = sample_pop("0", time.time())
        while time.perf_counter() - start < seconds:
            due = start + call * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            call += 1
            agent = rng.choice(ids)
            call_id = f"{call}"
            event = dict(pop_template, call_id=call_id, contact_id=f"T{call}", t0=time.time())
            await hub.publish(agent, event)
            published += 1
            pending.append((time.perf_counter() + 0.5, agent, call_id))
            while pending and pending[0][0] <= time.perf_counter():
                _, a, cid = pending.pop(0)
                for phase in (Phase.ANSWERED, Phase.ENDED):
                    upd = phase_update(cid, phase, now=time.time())
                    upd["t0"] = time.time()
                    await hub.publish(a, upd)
                    published += 1
        return web.json_response({"published": published, "calls": call,
                                  "elapsed": time.perf_counter() - start,
                                  "connections": hub.connections(),
                                  "slow_disconnects": hub.slow_disconnects})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"connections": hub.connections(), "slow_disconnects": hub.slow_disconnects})

    app = web.Application()
    hub.install(app)
    app.router.add_post("/bench/run", run)
    app.router.add_get("/bench/stats", stats)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096).start()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # until the parent says stop
    await runner.cleanup()
    await redis.aclose()


# ---- client process --------------------------------------------------------------------------
async def clients(args: argparse.Namespace) -> None:
    ids = agent_ids(args.agents)[args.first:args.first + args.count]
    latencies: list[float] = []
    errors = 0
    url = f"ws://127.0.0.1:{args.port}/ws/agent"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        sem = asyncio.Semaphore(100)

        async def connect(agent: str) -> None:
            async with sem:
                ws = await session.ws_connect(url, max_msg_size=1 << 20)
                await ws.send_str(json.dumps({"type": "auth", "token": token_of(agent), "last_seq": 0}))
                sockets.append(ws)

        await asyncio.gather(*(connect(a) for a in ids))

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal errors
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    errors += 1
                    continue
                now = time.time()
                frame = json.loads(msg.data)
                if frame.get("type") == "event" and "t0" in frame["data"]:
                    latencies.append(now - frame["data"]["t0"])

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        print(f"CONNECTED {len(sockets)}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        for ws in sockets:
            await ws.close()
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    print("RESULT " + json.dumps({"latencies": latencies, "errors": errors, "sockets": len(sockets)}), flush=True)


# ---- orchestration ---------------------------------------------------------------------------
def orchestrate(args: argparse.Namespace) -> None:
    redis = contextlib.ExitStack()  # our own Redis unless --redis-url
    redis_url = args.redis_url or redis.enter_context(local_redis()).url
    port = free_port()
    me = [sys.executable, __file__, "--agents", str(args.agents), "--port", str(port), "--redis-url", redis_url]
    procs: list[subprocess.Popen[str]] = []
    try:
        server = subprocess.Popen([*me, "--role", "server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        procs.append(server)
        assert server.stdout is not None and server.stdin is not None
        if server.stdout.readline().strip() != "READY":
            sys.exit("server did not start")
        per = -(-args.agents // args.client_procs)
        t_connect = time.perf_counter()
        clients_p = []
        for i in range(args.client_procs):
            first = i * per
            count = max(0, min(per, args.agents - first))
            p = subprocess.Popen([*me, "--role", "clients", "--first", str(first), "--count", str(count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            clients_p.append(p)
        connected = 0
        for p in clients_p:
            assert p.stdout is not None
            line = p.stdout.readline().split()
            connected += int(line[1])
        connect_s = time.perf_counter() - t_connect
        time.sleep(1.0)  # let every socket finish auth + replay
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/stats") as r:
            live = json.loads(r.read())["connections"]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/bench/run",
            data=json.dumps({"calls_per_second": args.calls_per_second, "seconds": args.seconds}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=args.seconds + 60) as r:
            run = json.loads(r.read())
        time.sleep(1.0)  # last frames in flight
        latencies: list[float] = []
        errors = 0
        for p in clients_p:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
            for line in p.stdout:
                if line.startswith("RESULT "):
                    res = json.loads(line[7:])
                    latencies += res["latencies"]
                    errors += res["errors"]
                    break
        server.stdin.write("stop\n")
        server.stdin.flush()
        for p in procs:
            p.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        redis.close()

    ms = [x * 1000 for x in latencies]
    rows = [
        ("agent sockets connected", f"{connected} ({live} live on server; {args.client_procs} client procs)"),
        ("connect + auth all sockets", f"{connect_s:.2f} s"),
        ("call rate", f"{args.calls_per_second:g} calls/s for {args.seconds:g} s "
                      f"(pop + answered + ended per call)"),
        ("events published", f"{run['published']} ({run['published'] / run['elapsed']:.0f}/s)"),
        ("frames received", f"{len(ms)}"),
        ("lost / slow-disconnected", f"{run['published'] - len(ms)} / {run['slow_disconnects']}"),
        ("latency p50", f"{statistics.median(ms):.2f} ms" if ms else "n/a"),
        ("latency p90", f"{percentile(ms, 90):.2f} ms"),
        ("latency p99", f"{percentile(ms, 99):.2f} ms   (target < 25 ms)"),
        ("latency max", f"{max(ms):.2f} ms" if ms else "n/a"),
        ("cpu cores", str(os.cpu_count())),
    ]
    width = max(len(k) for k, _ in rows)
    print("screen-pop latency: publish (AMI event) -> websocket frame read by the agent's client")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "server", "clients"), default="main")
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--calls-per-second", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--redis-url")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(serve(args))
    elif args.role == "clients":
        asyncio.run(clients(args))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
