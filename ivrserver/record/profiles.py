"""Customers and cases in PostgreSQL: batched upserts (repeatable: the Redis import runs them twice).

A customer row is replaced whole and its phones with it; a case row likewise, with one `imported`
event in case_events the first time (every change of a case is an event: who, when, what).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ivrserver.domain.model import Case, CaseStatus, Customer
from ivrserver.record.rows import ts

if TYPE_CHECKING:
    import asyncpg

_CUSTOMER_UPSERT = """
INSERT INTO customers AS c (id, name, tier, segment, language, account_manager, account_number, pin_hash,
                            preferences, attributes, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, now())
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, tier = EXCLUDED.tier, segment = EXCLUDED.segment, language = EXCLUDED.language,
    account_manager = EXCLUDED.account_manager, account_number = EXCLUDED.account_number,
    pin_hash = EXCLUDED.pin_hash, preferences = EXCLUDED.preferences, attributes = EXCLUDED.attributes,
    updated_at = now()
WHERE (c.name, c.tier, c.segment, c.language, c.account_manager, c.account_number, c.pin_hash, c.preferences,
       c.attributes) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.tier, EXCLUDED.segment, EXCLUDED.language,
       EXCLUDED.account_manager, EXCLUDED.account_number, EXCLUDED.pin_hash, EXCLUDED.preferences,
       EXCLUDED.attributes)
"""


async def upsert_customers(conn: asyncpg.Connection, customers: Sequence[Customer]) -> None:
    """Profiles and their phone numbers (the customer's phones replace the stored ones)."""
    if not customers:
        return
    await conn.executemany(_CUSTOMER_UPSERT, [
        (c.id, c.name, c.tier.value, c.segment.value, c.language, c.account_manager, c.account_number, c.pin_hash,
         json.dumps(dataclasses.asdict(c.preferences)), json.dumps(dict(c.attributes), ensure_ascii=False))
        for c in customers])
    ids = [c.id for c in customers]
    await conn.execute("DELETE FROM customer_phones WHERE customer_id = ANY($1::text[])", ids)
    await conn.executemany("INSERT INTO customer_phones (phone, customer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           sorted({(p, c.id) for c in customers for p in c.phones}))


_CASE_UPSERT = """
INSERT INTO cases AS k (id, customer_id, status, summary, severity, owner_agent, still_needed, next_step,
                        opened_at, closed_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
ON CONFLICT (id) DO UPDATE SET
    customer_id = EXCLUDED.customer_id, status = EXCLUDED.status, summary = EXCLUDED.summary,
    severity = EXCLUDED.severity, owner_agent = EXCLUDED.owner_agent, still_needed = EXCLUDED.still_needed,
    next_step = EXCLUDED.next_step, opened_at = EXCLUDED.opened_at,
    -- a closed case keeps the closing time it got first; a reopened one has none
    closed_at = CASE WHEN EXCLUDED.status = 'open' THEN NULL ELSE COALESCE(k.closed_at, EXCLUDED.closed_at) END,
    updated_at = now()
WHERE (k.customer_id, k.status, k.summary, k.severity, k.owner_agent, k.still_needed, k.next_step, k.opened_at)
      IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.status, EXCLUDED.summary, EXCLUDED.severity,
      EXCLUDED.owner_agent, EXCLUDED.still_needed, EXCLUDED.next_step, EXCLUDED.opened_at)
"""

_IMPORTED_EVENT = """
INSERT INTO case_events (case_id, at, actor, kind, detail)
SELECT $1, $2, $3, 'imported', $4::jsonb
WHERE NOT EXISTS (SELECT 1 FROM case_events WHERE case_id = $1 AND kind = 'imported')
"""


async def upsert_cases(conn: asyncpg.Connection, cases: Sequence[Case], *, now: datetime, actor: str) -> None:
    """Cases whose customer exists (the caller filters); a closed case without a known closing
    time (Redis never kept one) gets `now`, and its `imported` event says so."""
    if not cases:
        return
    closed = CaseStatus.CLOSED
    await conn.executemany(_CASE_UPSERT, [
        (k.id, k.customer_id, k.status.value, k.summary, k.severity, k.owner_agent, k.still_needed, k.next_step,
         ts(k.opened_at), now if k.status is closed else None) for k in cases])
    await conn.executemany(_IMPORTED_EVENT, [
        (k.id, now, actor, json.dumps({"from": "redis", "status": k.status.value,
                                       **({"closed_at": "unknown before the import"} if k.status is closed else {})}))
        for k in cases])
