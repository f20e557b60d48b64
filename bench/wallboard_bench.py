"""Wallboard latency and CPU: synthetic AMI events through the real fold and fan-out to 50 supervisor sockets.

    .venv/bin/python bench/wallboard_bench.py [--full] [--supervisors 50] [--agents 1000] [--seconds S]
                                              [--rates 1000,10000] [--calls-per-minute 300]

Quick (what `make bench` runs): 15 s per row, 1,000 and 10,000 changes/min. `--full`: 60 s per row,
1,000, 3,000 and 10,000 changes/min. `--seconds` / `--rates` override either.

Processes: its own redis-server (devstack's LocalRedis), this process as the ivrserver side (the real
EventFanout → AgentStateService (fold + Redis write) → WallboardService.on_agent, and EventFanout →
WallboardService.run (one Lua call per queue fact) → Redis pub/sub → WallboardService.listen → the
WallboardHub's per-socket queues → aiohttp websockets), and one client process holding `--supervisors`
authenticated wallboard sockets that timestamps every frame as it reads it.

Each row runs `--seconds` at a steady rate of agent state changes per minute (`--rates`; each change is
one QueueMemberPause event flipping an agent between ready and paused) plus `--calls-per-minute` queue
calls (QueueCallerJoin, then AgentConnect 2 s later: two changes of the queue's tile). `t0 = time.time()`
is taken just before the event enters the fan-out (where the AMI reader hands it over); the client
takes `time.time()` when the frame is read and parsed. Same host, same clock. The k-th agent frame of
an agent on a socket is matched to that agent's k-th change, the k-th queue frame to the k-th queue event.

CPU: this process (fold, Lua calls, pub/sub, JSON, websockets) and redis-server, as % of one core over
the row. "max backlog": the most events seen waiting in the agent-state fold's queue and in the
wallboard's queue (sampled at each event sent); "load avg": the host's 1-minute load at the row's end
(the numbers are only comparable on a quiet machine). Prints a table; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from ivrserver.config import WallboardSettings
from ivrserver.domain.model import Agent
from ivrserver.metrics import Metrics
from ivrserver.pbx import ami_events as ev
from ivrserver.pbx.asterisk_conf import ivr_queue
from ivrserver.services.agent_state import AgentStateService
from ivrserver.services.event_fanout import EventFanout
from ivrserver.services.privacy import PrivacyService
from ivrserver.services.wallboard import WallboardService
from ivrserver.store.audit import AuditLog
from ivrserver.store.keys import Keys
from ivrserver.store.pops import PopStore
from ivrserver.web.auth import Authenticator
from ivrserver.web.wallboard_ws import WallboardHub

from benchlib import local_redis, percentile

QUEUES = ("vip", "general", "billing", "faults", "sales")


def agent_ids(n: int) -> list[str]:
    return [f"agent{i:05d}" for i in range(n)]


def token_of(supervisor: str) -> str:
    return f"bench-static-token-{supervisor}"


def supervisors(n: int) -> list[str]:
    return [f"sup{i:03d}" for i in range(n)]


# ------------------------------------------------------------------------------ clients (own process)

async def clients(url: str, names: list[str]) -> None:
    """Hold one wallboard socket per supervisor; on 'stop' print every frame's (kind, key, recv time)."""
    received: list[list[tuple[str, str, float]]] = [[] for _ in names]
    async with aiohttp.ClientSession() as session:
        sockets = []
        for name in names:
            ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {token_of(name)}"},
                                          max_msg_size=0)
            first = json.loads((await ws.receive()).data)
            assert first["type"] == "snapshot", first
            sockets.append(ws)

        async def read(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                at = time.time()
                frame = json.loads(msg.data)
                if frame["type"] == "agent":
                    received[i].append(("agent", frame["agent"]["id"], at))
                elif frame["type"] == "queues":
                    received[i].append(("queues", "", at))
        readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if line.strip() == "dump" or not line:
                print(json.dumps(received), flush=True)
                received = [[] for _ in names]
            if line.strip() == "stop" or not line:
                break
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


# ------------------------------------------------------------------------------ server side (this process)

def redis_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, redis_url: str, n_agents: int, n_supervisors: int) -> None:
        self.keys = Keys(prefix="wbbench")
        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.pubsub = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.agents = {a: Agent(id=a, name=f"Agent {a[-5:]}", endpoint=f"PJSIP/{a}") for a in agent_ids(n_agents)}
        sups = {s: Agent(id=s, name=s, endpoint=f"PJSIP/{s}", supervisor=True) for s in supervisors(n_supervisors)}
        privacy = PrivacyService(PopStore(self.redis, self.keys), AuditLog(self.redis, self.keys))
        self.auth = Authenticator(self.redis, self.keys, {**self.agents, **sups}, {}, privacy=privacy,
                                  static_tokens={s: token_of(s) for s in sups})
        self.source: asyncio.Queue[Any] = asyncio.Queue()
        self.fanout = EventFanout(self.source, Metrics())
        self.agent_state = AgentStateService(self.redis, self.keys, self.agents, wrap_up_seconds=10)
        self.wallboard = WallboardService(self.redis, self.pubsub, self.keys, WallboardSettings(refresh_interval=5.0),
                                          agents=self.agents, queue_of=ivr_queue, queues=QUEUES)
        self.agent_state.on_change(self.wallboard.on_agent)
        self.hub = WallboardHub(self.wallboard, self.auth, queue_size=4096)
        self.tasks: list[asyncio.Task[Any]] = []
        self.paused = dict.fromkeys(self.agents, False)

    async def start(self) -> str:
        await self.redis.flushdb()
        await self.agent_state.start()
        # every agent logged in and ready before the rows (not measured)
        for agent_id, agent in self.agents.items():
            await self.agent_state.handle(ev.QueueMember(queue="ivr-general", member_name=agent_id,
                                                         interface=agent.endpoint, status=1, paused=False,
                                                         in_call=False, calls_taken=0, last_call=0))
        self.wallboard.start_agents(self.agent_state.records())
        agent_events = self.fanout.subscribe(accepts=self.agent_state.wants)
        board_events = self.fanout.subscribe(accepts=self.wallboard.wants)
        self.backlogs = (agent_events, board_events)  # sampled: where events wait, if anywhere
        self.tasks = [asyncio.create_task(c) for c in (
            self.fanout.run(), self.agent_state.run(agent_events), self.wallboard.run(board_events),
            self.wallboard.listen(), self.wallboard.tick())]
        await self.wallboard.wait_loaded()
        app = web.Application()
        self.hub.install(app)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"ws://{host}:{port}/ws/wallboard"

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.runner.cleanup()
        await self.redis.aclose()
        await self.pubsub.aclose()

    def flip(self, agent_id: str) -> None:
        self.paused[agent_id] = not self.paused[agent_id]
        self.source.put_nowait(ev.QueueMemberPause(queue="ivr-general", member_name=agent_id,
                                                   interface=self.agents[agent_id].endpoint, status=1,
                                                   paused=self.paused[agent_id], in_call=False, calls_taken=0,
                                                   last_call=0))

    def queue_event(self, name: str, uid: str, queue: str) -> None:
        headers = {"Event": name, "Channel": f"PJSIP/callers-{uid[-8:]}", "Uniqueid": uid, "Linkedid": uid,
                   "Queue": f"ivr-{queue}", "Position": "1", "Count": "1", "Interface": "PJSIP/nobody",
                   "DestChannel": "PJSIP/nobody-00000001", "HoldTime": "2"}  # not one of the agents
        self.source.put_nowait(ev.parse_event(headers))


async def run_row(server: Server, client: asyncio.subprocess.Process, *, per_minute: int, calls_per_minute: int,
                  seconds: float, redis_pid: int | None) -> dict[str, Any]:
    ids = list(server.agents)
    sent_agent: dict[str, list[float]] = {a: [] for a in ids}
    sent_queue: list[float] = []
    cpu0, redis0, wall0 = time.process_time(), redis_cpu(redis_pid), time.monotonic()
    step = 60.0 / per_minute
    call_step = 60.0 / calls_per_minute if calls_per_minute else float("inf")
    start = time.monotonic()
    n = calls = 0
    answers: list[tuple[float, str, str]] = []
    next_call = start
    backlog = [0, 0]
    while (now := time.monotonic()) - start < seconds:
        backlog = [max(backlog[0], server.backlogs[0].qsize()), max(backlog[1], server.backlogs[1].qsize())]
        due = start + n * step
        if now >= due:
            agent_id = ids[n % len(ids)]
            sent_agent[agent_id].append(time.time())
            server.flip(agent_id)
            n += 1
        if now >= next_call:
            uid = f"{int(time.time())}.{calls}"
            queue = QUEUES[calls % len(QUEUES)]
            sent_queue.append(time.time())
            server.queue_event("QueueCallerJoin", uid, queue)
            answers.append((now + 2.0, uid, queue))
            calls += 1
            next_call = start + calls * call_step
        while answers and answers[0][0] <= now:
            _, uid, queue = answers.pop(0)
            sent_queue.append(time.time())
            server.queue_event("AgentConnect", uid, queue)
        await asyncio.sleep(max(0.0, min(start + n * step, next_call, answers[0][0] if answers else next_call)
                                - time.monotonic()))
    await asyncio.sleep(3.0)  # let the last frames arrive
    cpu = time.process_time() - cpu0
    redis_used = redis_cpu(redis_pid) - redis0
    wall = time.monotonic() - wall0
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(b"dump\n")
    await client.stdin.drain()
    received = json.loads(await client.stdout.readline())
    agent_lat: list[float] = []
    queue_lat: list[float] = []
    missing = 0
    for frames in received:
        seen: dict[str, int] = {}
        q = 0
        for kind, key, at in frames:
            if kind == "agent":
                k = seen.get(key, 0)
                seen[key] = k + 1
                if k < len(sent_agent[key]):
                    agent_lat.append((at - sent_agent[key][k]) * 1000)
            elif q < len(sent_queue):
                queue_lat.append((at - sent_queue[q]) * 1000)
                q += 1
        missing += sum(len(v) for v in sent_agent.values()) - sum(seen.values()) + len(sent_queue) - q
    both = agent_lat + queue_lat
    return {"per_minute": per_minute, "calls_per_minute": calls_per_minute, "changes": n,
            "queue_events": len(sent_queue), "frames": len(both), "missing": missing,
            "p50": percentile(both, 50), "p99": percentile(both, 99), "max": max(both, default=float("nan")),
            "agent_p99": percentile(agent_lat, 99), "queue_p99": percentile(queue_lat, 99),
            "cpu": 100 * cpu / wall, "redis_cpu": 100 * redis_used / wall,
            "backlog_agents": backlog[0], "backlog_queues": backlog[1], "load": os.getloadavg()[0]}


async def orchestrate(args: argparse.Namespace, redis_url: str, redis_pid: int | None) -> list[dict[str, Any]]:
    server = Server(redis_url, args.agents, args.supervisors)
    url = await server.start()
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", "clients", "--url", url, "--supervisors", str(args.supervisors),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 30)
    rows = []
    try:
        assert client.stdout is not None
        line = (await client.stdout.readline()).decode()
        if line.strip() != "ready":
            raise SystemExit(f"clients did not start: {line!r}")
        for rate in (int(r) for r in args.rates.split(",")):
            rows.append(await run_row(server, client, per_minute=rate, calls_per_minute=args.calls_per_minute,
                                      seconds=args.seconds, redis_pid=redis_pid))
            print_row(rows[-1], args.supervisors)
    finally:
        with contextlib.suppress(Exception):
            assert client.stdin is not None
            client.stdin.write(b"stop\n")
            await client.stdin.drain()
        try:
            await asyncio.wait_for(client.wait(), 10)
        except TimeoutError:
            client.kill()
            await client.wait()
        await server.stop()
    return rows


def print_row(row: dict[str, Any], sockets: int) -> None:
    print(f"| {row['per_minute']:>6} | {row['calls_per_minute']:>5} | {sockets:>7} | {row['frames']:>8} | "
          f"{row['missing']:>7} | {row['p50']:>6.1f} | {row['p99']:>6.1f} | {row['max']:>7.1f} | "
          f"{row['agent_p99']:>9.1f} | {row['queue_p99']:>9.1f} | {row['cpu']:>9.1f} | {row['redis_cpu']:>9.1f} | "
          f"{row['backlog_agents']:>5} / {row['backlog_queues']:<5} | {row['load']:>5.1f} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("orchestrator", "clients"), default="orchestrator")
    parser.add_argument("--url", default="")
    parser.add_argument("--supervisors", type=int, default=50)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="60 s per row, 1,000 / 3,000 / 10,000 changes/min")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rates", default=None, help="agent state changes per minute, one row each")
    parser.add_argument("--calls-per-minute", type=int, default=300)
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 60.0 if args.full else 15.0
    if args.rates is None:
        args.rates = "1000,3000,10000" if args.full else "1000,10000"
    if args.role == "clients":
        asyncio.run(clients(args.url, supervisors(args.supervisors)))
        return
    print(f"wallboard: {args.supervisors} supervisor sockets, {args.agents} agents, {args.seconds:g} s per row "
          f"(latency: event into the fan-out → frame read by each socket, ms; CPU: % of one core)")
    print("| changes/min | calls/min | sockets | frames | missing | p50 ms | p99 ms | max ms | agent p99 | "
          "queue p99 | ivrserver CPU % | redis CPU % | max backlog agent-state / wallboard | load avg |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with local_redis() as redis:
        asyncio.run(orchestrate(args, redis.url, redis.pid))


if __name__ == "__main__":
    main()
