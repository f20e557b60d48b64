"""Fixtures of the system-of-record tests (PostgreSQL itself: tests/pg_fixtures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.inprocess import migrated


@pytest.fixture
async def pool(empty_db: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on an empty database migrated to the newest schema."""
    await migrated(empty_db)
    p = await asyncpg.create_pool(empty_db, min_size=1, max_size=4)
    yield p
    await p.close()
