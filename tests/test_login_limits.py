"""Login limits under concurrency and from several source addresses, rehash on login, and the
client address behind trusted proxies — over a real aiohttp server and real Redis.

Several source addresses come from binding the client to other loopback addresses (127.0.0.x):
the server sees them as real peers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver.domain import hashing
from ivrserver.store.keys import Keys
from ivrserver.web.auth import MAX_LOGIN_FAILURES, LoginLimits, client_address, parse_networks
from tests.test_agent_ws import CREDENTIALS, TEST_COST, Desk, make_desk


@pytest.fixture(autouse=True)
async def _empty_redis(redis_client: aioredis.Redis) -> None:
    """Every test starts from an empty Redis (the redis_client fixture flushes it)."""


@pytest.fixture
async def desk(redis_url: str, keys: Keys) -> AsyncIterator[Desk]:
    async with make_desk(redis_url, keys) as d:
        yield d


def session_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True))


async def attempt(http: aiohttp.ClientSession, desk: Desk, agent: str, password: str,
                  headers: dict[str, str] | None = None) -> int:
    async with http.post(desk.url + "/api/v1/login", json={"agent": agent, "password": password},
                         headers=headers) as r:
        if r.status == 429:
            assert 1 <= int(r.headers["Retry-After"]) <= 900
        return r.status


async def test_parallel_wrong_passwords_get_exactly_the_limit(desk: Desk) -> None:
    """200 wrong passwords at once: exactly MAX_LOGIN_FAILURES reach the password check (401), the
    rest are refused before it (429). A read-then-count limit let 29 of 200 through."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        statuses = await asyncio.gather(*(attempt(http, desk, "agent1001", f"wrong{i}") for i in range(200)))
    assert statuses.count(401) == MAX_LOGIN_FAILURES
    assert statuses.count(429) == 200 - MAX_LOGIN_FAILURES


async def test_attacker_address_cannot_lock_out_the_agents_address(desk: Desk) -> None:
    async with session_from("127.0.0.2") as attacker, session_from("127.0.0.1") as agent:
        statuses = await asyncio.gather(*(attempt(attacker, desk, "agent1001", "guess") for _ in range(60)))
        assert statuses.count(401) == MAX_LOGIN_FAILURES and statuses.count(429) == 60 - MAX_LOGIN_FAILURES
        # Even the right password is refused from the attacker's address now ...
        assert await attempt(attacker, desk, "agent1001", "agent1001") == 429
        # ... but the agent at their own address logs in.
        assert await attempt(agent, desk, "agent1001", "agent1001") == 200


async def test_address_limit_spares_agents_known_at_that_address(redis_url: str, keys: Keys) -> None:
    limits = LoginLimits(per_agent_address=3, per_address=5, per_agent=100)
    async with make_desk(redis_url, keys, limits=limits) as desk, session_from("127.0.0.3") as http:
        assert await attempt(http, desk, "agent1001", "agent1001") == 200  # 127.0.0.3 is known for agent1001
        # Spraying unknown and real agent ids from the same address: 5 failures, then refused.
        statuses = [await attempt(http, desk, f"ghost{i}", "x") for i in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        assert await attempt(http, desk, "agent1002", "agent1002") == 429  # not known here: refused
        assert await attempt(http, desk, "agent1001", "agent1001") == 200  # known here: still in


async def test_agent_limit_refuses_new_addresses_not_known_ones(redis_url: str, keys: Keys) -> None:
    limits = LoginLimits(per_agent_address=2, per_address=50, per_agent=4)
    async with make_desk(redis_url, keys, limits=limits) as desk:
        async with session_from("127.0.0.1") as home:
            assert await attempt(home, desk, "agent1001", "agent1001") == 200
        for address in ("127.0.0.4", "127.0.0.5"):  # a distributed guess: 2 per address
            async with session_from(address) as http:
                assert [await attempt(http, desk, "agent1001", "x") for _ in range(3)] == [401, 401, 429]
        async with session_from("127.0.0.6") as new:  # agent limit (4) reached: new addresses wait
            assert await attempt(new, desk, "agent1001", "agent1001") == 429
        async with session_from("127.0.0.1") as home:  # the agent's own address is not blocked
            assert await attempt(home, desk, "agent1001", "agent1001") == 200


async def test_success_gives_its_slot_back_and_clears_the_pair(desk: Desk) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(MAX_LOGIN_FAILURES - 1):
            assert await attempt(http, desk, "agent1002", "bad") == 401
        assert await attempt(http, desk, "agent1002", "agent1002") == 200
        for _ in range(MAX_LOGIN_FAILURES):
            assert await attempt(http, desk, "agent1002", "bad") == 401
        assert await attempt(http, desk, "agent1002", "bad") == 429


async def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(redis_url: str, keys: Keys) -> None:
    limits = LoginLimits(per_agent_address=2, per_address=50, per_agent=100)
    spoof = {"X-Forwarded-For": "198.51.100.7"}
    async with make_desk(redis_url, keys, limits=limits) as desk, aiohttp.ClientSession() as http:
        # Not trusted: the header is ignored, every attempt counts for 127.0.0.1.
        assert [await attempt(http, desk, "agent1001", "x", spoof) for _ in range(3)] == [401, 401, 429]
        assert await attempt(http, desk, "agent1001", "x", {"X-Forwarded-For": "203.0.113.9"}) == 429
    async with make_desk(redis_url, keys, limits=limits, trusted_proxies="127.0.0.0/8") as desk, \
            aiohttp.ClientSession() as http:
        await desk.redis.flushdb()
        assert [await attempt(http, desk, "agent1001", "x", spoof) for _ in range(3)] == [401, 401, 429]
        # another client behind the same proxy is another address
        assert await attempt(http, desk, "agent1001", "agent1001", {"X-Forwarded-For": "203.0.113.9"}) == 200


@pytest.mark.parametrize(("peer", "xff", "trusted", "expected"), [
    ("192.0.2.1", None, "", "192.0.2.1"),
    ("192.0.2.1", "10.9.9.9", "", "192.0.2.1"),                          # untrusted peer: header ignored
    ("10.0.0.5", "198.51.100.7", "10.0.0.5", "198.51.100.7"),
    ("10.0.0.5", "1.1.1.1, 198.51.100.7", "10.0.0.5", "198.51.100.7"),   # right-most untrusted hop
    ("10.0.0.5", "198.51.100.7, 10.0.0.4", "10.0.0.0/24", "198.51.100.7"),  # chain of trusted proxies
    ("10.0.0.5", "garbage", "10.0.0.5", "10.0.0.5"),
    ("10.0.0.5", "", "10.0.0.5", "10.0.0.5"),
    ("2001:db8:1:2:3:4:5:6", None, "", "2001:db8:1:2::/64"),             # IPv6 counts per /64
    ("::ffff:192.0.2.9", None, "", "192.0.2.9"),
    (None, None, "", ""),
])
def test_client_address(peer: str | None, xff: str | None, trusted: str, expected: str) -> None:
    assert client_address(peer, xff, parse_networks(trusted)) == expected


# ---- rehash on login ------------------------------------------------------------------------------
def legacy_hash(password: str) -> str:
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(password.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    return f"scrypt$1024$8$1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


async def test_old_hash_verifies_and_is_rewritten_in_the_agents_file(redis_url: str, keys: Keys,
                                                                      tmp_path: Path) -> None:
    old = legacy_hash("agent1001")
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(f'# comment kept\nagents:\n  - {{id: agent1001, password_hash: "{old}"}}\n')
    agents_file.chmod(0o640)
    credentials: dict[str, Any] = {**CREDENTIALS, "agent1001": old}
    async with make_desk(redis_url, keys, credentials=credentials, agents_file=str(agents_file)) as desk, \
            aiohttp.ClientSession() as http:
        assert await attempt(http, desk, "agent1001", "agent1001") == 200
        text = agents_file.read_text()
        assert old not in text and text.startswith("# comment kept\n")
        new = desk.auth.credentials["agent1001"]
        assert f'password_hash: "{new}"' in text and new.startswith(f"$scrypt$ln={TEST_COST.ln},")
        assert hashing.verify("agent1001", new) and not hashing.needs_rehash(new, cost=TEST_COST)
        assert agents_file.stat().st_mode & 0o777 == 0o640
        assert await attempt(http, desk, "agent1001", "agent1001") == 200
        assert await attempt(http, desk, "agent1001", "wrong") == 401


async def test_unwritable_agents_file_upgrades_in_memory_and_says_so(redis_url: str, keys: Keys, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    old = legacy_hash("agent1002")
    credentials: dict[str, Any] = {**CREDENTIALS, "agent1002": old}
    missing = tmp_path / "nowhere" / "agents.yaml"
    async with make_desk(redis_url, keys, credentials=credentials, agents_file=str(missing)) as desk, \
            aiohttp.ClientSession() as http:
        with caplog.at_level(logging.WARNING, logger="ivrserver.auth"):
            assert await attempt(http, desk, "agent1002", "agent1002") == 200
        assert desk.auth.credentials["agent1002"] != old
        assert "run scripts/hash-password" in caplog.text and old not in caplog.text
        assert "agent1002" not in caplog.text.replace("password hash of agent1002", "")  # no password logged
