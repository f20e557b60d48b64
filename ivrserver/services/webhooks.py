"""Outgoing webhooks: `Webhooks.publish` (what other services call) and the deliverer loop.

publish(event, data, key=…) creates one delivery per endpoint whose `events` match, once per
(key, endpoint) however often and wherever it is called (store/webhooks.py: deterministic ids in one
script), durably in Redis. The deliverer (`run`, under the supervisor on every instance) claims due
deliveries with a lease, POSTs them signed (domain/webhooks.py has the wire format) with a bounded
aiohttp session, and settles each attempt: delivered on 2xx; retried with exponential backoff and
jitter on 5xx, 408, 429 (its Retry-After honoured), timeouts and connection errors; dead on any
other answer or after the endpoint's max attempts. An instance that dies mid-attempt leaves its
lease to expire: the delivery is attempted again (at least once; receivers de-duplicate by the
Idempotency-Key header). Supervisors list the log and the dead letters and re-queue dead ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from ivrserver.config import WebhookSettings
from ivrserver.domain.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    Attempt,
    Backoff,
    Delivery,
    DeliveryState,
    Endpoint,
    Next,
    after_attempt,
    attempted,
    body,
    check_event,
    check_key,
    delivery_id,
    key_digest,
    retry_after,
    routed,
    signature,
)
from ivrserver.metrics import Metrics
from ivrserver.store.keys import Keys
from ivrserver.store.webhooks import Claim, ClaimBatch, WebhookStore

log = logging.getLogger("ivrserver.webhooks")

Audit = Callable[..., Awaitable[Any]]
MAX_ANSWER = 64 * 1024  # of a receiver's answer body, read at most (and thrown away)


class WebhookNotFound(LookupError):
    pass


class WebhookNotDead(ValueError):
    """Only a dead delivery can be re-queued."""


async def _post(session: aiohttp.ClientSession, endpoint: Endpoint, delivery: Delivery,
                now: float) -> tuple[int | None, str, str | None]:
    """One attempt: (status or None, error text or "", Retry-After header or None). The error text
    never holds the URL (it may carry a token in its query) or the secret."""
    raw = delivery.body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": "ivrserver-webhooks",
               EVENT_HEADER: delivery.event, DELIVERY_HEADER: delivery.id, IDEMPOTENCY_HEADER: delivery.key,
               SIGNATURE_HEADER: signature(endpoint.secret, int(now), raw)}
    try:
        async with session.post(endpoint.url, data=raw, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=endpoint.timeout)) as resp:
            await resp.content.read(MAX_ANSWER)
            return resp.status, "", resp.headers.get("Retry-After")
    except TimeoutError:
        return None, f"timeout after {endpoint.timeout:g}s", None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            return None, "connection refused", None
        return None, f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"[:200], None
    except (aiohttp.ClientError, OSError) as exc:
        return None, type(exc).__name__, None


class Webhooks:
    """Publishing (any instance, any service) and delivering (the `run` loop) of outgoing webhooks."""

    def __init__(self, redis: Any, keys: Keys, endpoints: Sequence[Endpoint], *, settings: WebhookSettings,
                 hot_days: int, instance: str, metrics: Metrics | None = None, audit: Audit | None = None,
                 clock: Callable[[], float] = time.time, rand: Callable[[], float] = random.random) -> None:
        self.store = WebhookStore(redis, keys, hot_days=hot_days)
        self.settings = settings
        self.backoff = Backoff(settings.backoff_base_seconds, settings.backoff_max_seconds)
        self.instance = instance
        self.metrics = metrics
        self.audit = audit
        self.clock = clock
        self.rand = rand
        self._wake = asyncio.Event()
        self._redis_down = False
        self.endpoints: tuple[Endpoint, ...] = ()
        self._removed: set[str] = set()  # endpoints a reload here took out of webhooks.yaml
        self.use_endpoints(endpoints)

    # ------------------------------------------------------------------ publishing
    async def publish(self, event: str, data: Mapping[str, Any], *, key: str) -> bool:
        """Queue `event` with `data` for every endpoint whose events match, durably. False if `key`
        was published before (within redis.hot_days): nothing more is sent. ValueError for a bad
        event name or key, or data that is not JSON (or larger than 64 KB once serialised)."""
        check_event(event)
        check_key(key)
        now = self.clock()
        deliveries = []
        for endpoint in routed(self.endpoints, event):
            ident = delivery_id(key, endpoint.name)
            deliveries.append((ident, endpoint.name, body(ident, event, key, now, data)))
        created = await self.store.publish(key_digest(key), event, key, now, deliveries)
        if created and deliveries:
            self._wake.set()
        return created

    def wake(self) -> None:
        self._wake.set()

    def use_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Swap in the endpoints of a reloaded webhooks.yaml (synchronous: no delivery sees half of
        it). Deliveries created from now on follow the new routing; an attempt already under way
        finishes with the endpoint it took; later attempts use the new config, and one to an
        endpoint removed here ends dead at its next attempt (no attempt could succeed)."""
        new = tuple(endpoints)
        old = {e.name for e in self.endpoints}
        self._removed = (self._removed | old) - {e.name for e in new}
        self.endpoints = new
        self._by_name = {e.name: e for e in new}
        # a lease outlives the longest attempt, so a live instance never loses one mid-attempt
        self.lease_seconds = max(self.settings.lease_seconds, 2 * max((e.timeout for e in new), default=0))
        self._wake.set()

    # ------------------------------------------------------------------ supervisors
    def endpoint_list(self) -> list[dict[str, Any]]:
        return [e.public() for e in self.endpoints]

    async def deliveries(self, *, state: str | None = None, event: str | None = None,
                         limit: int = 100) -> list[Delivery]:
        if state is not None and state not in {s.value for s in DeliveryState}:
            raise ValueError(f"state: expected one of {', '.join(s.value for s in DeliveryState)}")
        return await self.store.deliveries(state=state, event=event, limit=limit)

    async def dead(self, *, limit: int = 100) -> list[Delivery]:
        return await self.store.dead(limit=limit)

    async def retry(self, ident: str, *, by: str, source: str = "") -> Delivery:
        """Re-queue a dead delivery with a fresh attempt budget (audited)."""
        now = self.clock()
        result = await self.store.requeue(ident, now)
        if result == "missing":
            raise WebhookNotFound(ident)
        if result == "not_dead":
            raise WebhookNotDead(f"delivery {ident} is not dead")
        if self.audit is not None:
            await self.audit(who=by, role="supervisor", what="webhook.retry", target=ident, why="", allowed=True,
                             at=now, source=source)
        self._wake.set()
        found = await self.store.get(ident)
        if found is None:  # expired in between: cannot happen (requeue persists it), but never a 500
            raise WebhookNotFound(ident)
        return found

    # ------------------------------------------------------------------ delivering
    async def run(self) -> None:
        """The deliverer: claims due deliveries and attempts them, `concurrency` at most at once."""
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency, ttl_dns_cache=60)
        async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
            inflight: set[asyncio.Task[None]] = set()
            try:
                while True:
                    await self._step(session, inflight)
            finally:
                for task in inflight:
                    task.cancel()
                await asyncio.gather(*inflight, return_exceptions=True)

    async def _step(self, session: aiohttp.ClientSession, inflight: set[asyncio.Task[None]]) -> None:
        """Claim what is due (as many as there is room for), then wait for an attempt to end, a
        publish, the next due time or the poll interval."""
        self._wake.clear()
        timeout = self.settings.poll_interval
        room = self.settings.concurrency - len(inflight)
        if room > 0:
            now = self.clock()
            try:
                batch = await self.store.claim(now, lease_seconds=self.lease_seconds, limit=room,
                                               claimer=self.instance)
            except (RedisError, OSError) as exc:
                # Redis away: attempts in flight go on (their settle may fail too: then their lease
                # expires and they are attempted again); look again after the poll interval
                if not self._redis_down:
                    log.warning("webhooks: cannot claim deliveries (%s); retrying", type(exc).__name__)
                self._redis_down = True
                batch = ClaimBatch([], None)
            else:
                if self._redis_down:
                    log.info("webhooks: claiming again")
                self._redis_down = False
            for claim in batch.claims:
                inflight.add(asyncio.create_task(self._attempt(session, claim), name=f"webhook {claim.delivery_id}"))
            if len(batch.claims) < room and batch.next_due is not None:  # (full: an attempt's end wakes us)
                timeout = min(timeout, max(0.0, batch.next_due - now))
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({*inflight, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        for task in done:
            if task is waiter:
                continue
            inflight.discard(task)  # type: ignore[arg-type]
            if not task.cancelled() and task.exception() is not None:
                log.error("webhook attempt failed to settle (it is attempted again when its lease expires)",
                          exc_info=task.exception())

    async def _attempt(self, session: aiohttp.ClientSession, claim: Claim) -> None:
        delivery = claim.delivery
        if delivery is None:
            await self.store.settle(claim, None, now=self.clock())
            return
        endpoint = self._by_name.get(delivery.endpoint)
        at = self.clock()
        started = time.monotonic()
        removed = endpoint is None and delivery.endpoint in self._removed
        if removed:
            status, error, after = None, f"endpoint {delivery.endpoint!r} was removed from webhooks.yaml", None
        elif endpoint is None:  # not (yet) configured on this instance: another may have it, retry
            status, error, after = None, f"endpoint {delivery.endpoint!r} is not configured on {self.instance}", None
        else:
            status, error, after = await _post(session, endpoint, delivery, at)
        result = Attempt(at=at, status=status, error=error, duration=time.monotonic() - started, by=self.instance)
        now = self.clock()
        if removed:  # a reload on this instance took the endpoint out: no attempt can succeed
            step = Next(DeliveryState.DEAD, None, f"endpoint {delivery.endpoint!r} removed from webhooks.yaml")
        else:
            step = after_attempt(
                status=status, attempt=delivery.attempt + 1,
                max_attempts=endpoint.max_attempts if endpoint else self.settings.max_attempts, now=now,
                backoff=self.backoff, rand=self.rand(),
                retry_after_seconds=retry_after(after, now) if status in (429, 503) else None)
        new = attempted(delivery, result, step)
        if not await self.store.settle(claim, new, now=now):
            log.warning("webhook %s: lease lost during the attempt; another instance attempts it again", delivery.id)
            return
        outcome = "retry" if new.state is DeliveryState.PENDING else new.state.value
        if self.metrics is not None:
            self.metrics.child(self.metrics.webhook_attempts, outcome).inc()
        if new.state is DeliveryState.DEAD:
            log.warning("webhook %s (%s to %s) is dead: %s; last: %s", delivery.id, delivery.event, delivery.endpoint,
                        new.dead_reason, error or status)
        elif new.state is DeliveryState.PENDING:
            log.info("webhook %s (%s to %s) attempt %d failed (%s); next in %.1fs", delivery.id, delivery.event,
                     delivery.endpoint, new.attempt, error or status, (new.next_at or now) - now)
