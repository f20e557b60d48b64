"""What `doctor` asks the system of record: the role's rights and the partitions that must exist."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ivrserver.record import partitions

if TYPE_CHECKING:
    import asyncpg

# (table, privilege) pairs the writer needs; CREATE on the schema is for next months' partitions.
TABLE_RIGHTS = (("contacts", "INSERT"), ("contacts", "UPDATE"), ("ivr_paths", "INSERT"), ("audit", "INSERT"),
                ("customers", "INSERT"), ("cases", "INSERT"), ("agent_preferences", "INSERT"),
                ("agent_preferences", "UPDATE"))


async def missing_rights(conn: asyncpg.Connection) -> list[str]:
    """The rights the connected role lacks, as "INSERT on audit" / "CREATE on schema public"."""
    missing = []
    for table, privilege in TABLE_RIGHTS:
        if not await conn.fetchval("SELECT has_table_privilege(current_user, $1, $2)", table, privilege):
            missing.append(f"{privilege} on {table}")
    schema = await conn.fetchval("SELECT current_schema()")
    if not await conn.fetchval("SELECT has_schema_privilege(current_user, $1, 'CREATE')", schema):
        missing.append(f"CREATE on schema {schema}")
    return missing


async def missing_partitions(conn: asyncpg.Connection, now: datetime) -> list[str]:
    """Partitions of this and next month that do not exist (a write there would land in the default one)."""
    missing = []
    for table in partitions.PARTITIONED:
        have = set(await partitions.existing_partitions(conn, table))
        missing += [m.name for m in partitions.months_ahead(table, now, ahead=1) if m.name not in have]
    return missing
