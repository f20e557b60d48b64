"""Redis under Sentinel: a real primary, two replicas and three sentinels on loopback; the primary is
killed mid-load, the client follows the failover, and every write acknowledged by a replica
(WAIT, as the callback scheduler does after marking an attempt placed) survives it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivrserver.config import RedisSettings
from ivrserver.store.client import connect_to, wait_for_replica
from tests.conftest import free_port

MASTER = "ivrserver"


@dataclass
class Topology:
    primary: int
    replicas: list[int]
    sentinels: list[int]
    exe: str
    workdir: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def settings(self) -> RedisSettings:
        return RedisSettings(url="redis://127.0.0.1/0", sentinels=",".join(f"127.0.0.1:{p}" for p in self.sentinels),
                             sentinel_master=MASTER, replica_wait_ms=200)


def _server(exe: str, workdir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    d = workdir / str(port)
    d.mkdir()
    return subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sentinel_topology() -> Iterator[Topology]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make test`")
    workdir = Path(tempfile.mkdtemp(prefix="ivrserver-sentinel-"))
    topo = Topology(free_port(), [free_port(), free_port()], [free_port() for _ in range(3)], exe, workdir)
    topo.procs[topo.primary] = _server(exe, workdir, topo.primary)
    for port in topo.replicas:
        topo.procs[port] = _server(exe, workdir, port, "--replicaof", "127.0.0.1", str(topo.primary))
    for port in topo.sentinels:
        conf = workdir / f"sentinel-{port}.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {topo.primary} 2\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 5000\n")
        topo.procs[port] = subprocess.Popen([exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
    yield topo
    for proc in topo.procs.values():
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


topology = pytest.fixture(sentinel_topology, name="topology")


async def _ready(topo: Topology) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                primary = aioredis.Redis(port=topo.primary, decode_responses=True)
                info = await primary.info("replication")
                await primary.aclose()
                sentinel = aioredis.Redis(port=topo.sentinels[0], decode_responses=True)
                seen = await sentinel.execute_command("SENTINEL", "SENTINELS", MASTER)
                replicas = await sentinel.execute_command("SENTINEL", "REPLICAS", MASTER)
                await sentinel.aclose()
                # A failover needs the sentinels to know each other and the replica (they learn of
                # it from the primary's INFO, every 10 s at first).
                if info.get("connected_slaves") == 2 and len(seen) == 2 and len(replicas) == 2:
                    return
            except (RedisConnectionError, OSError):
                pass
            await asyncio.sleep(0.1)


async def test_writes_acknowledged_by_a_replica_survive_a_failover(topology: Topology) -> None:
    await _ready(topology)
    settings = topology.settings()
    client = connect_to(settings, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=1.0)
    acknowledged: list[str] = []
    unreplicated = failed_writes = 0
    i = 0
    async with asyncio.timeout(90):
        while len(acknowledged) < 600:
            key = f"placed:{i}"
            i += 1
            try:
                await client.set(key, "1", nx=True, ex=3600)
                if await wait_for_replica(client, settings):
                    acknowledged.append(key)
                else:
                    unreplicated += 1  # written, but the caller knows no replica holds it yet
            except (RedisConnectionError, RedisTimeoutError, ReadOnlyError):
                failed_writes += 1  # the caller sees the error: nothing it took as written is at stake
                await asyncio.sleep(0.05)
            if i == 300:
                topology.procs[topology.primary].send_signal(signal.SIGKILL)
    # One of the two replicas was promoted; the other now replicates it.
    roles = {}
    for port in topology.replicas:
        node = aioredis.Redis(port=port, decode_responses=True)
        roles[port] = (await node.execute_command("ROLE"))[0]
        await node.aclose()
    assert sorted(roles.values()) == ["master", "slave"]
    new_primary = aioredis.Redis(port=next(p for p, r in roles.items() if r == "master"), decode_responses=True)
    assert await new_primary.exists(*acknowledged) == len(acknowledged) == 600
    assert failed_writes > 0  # the failover really happened under load
    await new_primary.aclose()
    await client.aclose()


async def test_without_sentinels_there_is_nothing_to_wait_for(redis_url: str) -> None:
    settings = RedisSettings(url=redis_url)
    client = connect_to(settings)
    assert await wait_for_replica(client, settings) is True
    await client.aclose()


async def test_a_placed_mark_waits_for_a_replica_under_sentinel(topology: Topology) -> None:
    """The scheduler's own path: start_dial takes the placed mark, then waits for a replica to hold
    it; the mark is on a replica before the dial would start. With no replica answering (both
    frozen), the dial goes ahead and the unconfirmed mark is counted."""
    from ivrserver.domain import callbacks as cbm
    from ivrserver.domain.callbacks import Callback, CallbackState
    from ivrserver.store.callbacks import CallbackStore, DialStart
    from ivrserver.store.keys import Keys

    await _ready(topology)
    # 2 s, not the 200 ms of the failover test: under a loaded make test a replica can lag past
    # 200 ms, WAIT then answers 0 and the (correct) outcome is "unconfirmed", not what this checks.
    settings = dataclasses.replace(topology.settings(), replica_wait_ms=2000)
    client = connect_to(settings, decode_responses=True, socket_timeout=3.0)
    keys = Keys("t")
    store = CallbackStore(client, keys, replicated=lambda: wait_for_replica(client, settings))
    now = 1_717_408_800.0
    for n, frozen in ((1, False), (2, True)):
        cb = Callback(id=f"cb{n}", customer_id="c1", number="5551234", earliest=now, latest=now + 7200,
                      created_at=now - 1, state=CallbackState.SCHEDULED, due_at=now)
        await store.create(cb)
        [claim] = await store.claim(now, lease_seconds=10, limit=1, claimer="A")
        before = store.unreplicated_marks
        if frozen:
            for port in topology.replicas:
                topology.procs[port].send_signal(signal.SIGSTOP)
        started = await store.start_dial(claim, cbm.start_attempt(cb, now + 1, "a1"), "A", now=now + 1,
                                         lease_seconds=10)
        assert started is DialStart.MARKED
        if not frozen:
            # WAIT 1: at least one replica holds the mark before the dial (the other may lag a moment).
            holders = 0
            for port in topology.replicas:
                replica = aioredis.Redis(port=port, decode_responses=True)
                holders += await replica.get(keys.callback_placed(cb.id, 1)) == "A"
                await replica.aclose()
            # The contract: a mark is on a replica before the dial, or the store says it is not (counted
            # and logged) — never silently unconfirmed. On a loaded host (a full make test) replication
            # can lag past even 2 s; on a quiet one the first holds (seen in every run alone).
            unconfirmed = store.unreplicated_marks - before
            assert (holders >= 1 and unconfirmed == 0) or (holders == 0 and unconfirmed == 1)
        else:
            assert store.unreplicated_marks == before + 1
            for port in topology.replicas:
                topology.procs[port].send_signal(signal.SIGCONT)
    await client.aclose()
