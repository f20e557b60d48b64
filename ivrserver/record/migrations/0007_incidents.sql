-- Mass-fault incidents (issue 19): one row per incident, written through the outbox (kind
-- "incidents", record/rows.upsert_incidents) at every change; `revision` is the incident's own
-- (1 at open, +1 per change) and `rev` the outbox position: a late older version never wins.
-- `counts`: what raised it (window count, baseline, first/latest report); `figures`: the archive at
-- resolve (calls absorbed by the announcement, calls that still reached an agent, time to detect,
-- time to fix, notices delivered).
CREATE TABLE incidents (
    id               text PRIMARY KEY,
    service          text NOT NULL,
    area             text NOT NULL,
    state            text NOT NULL,            -- open | acknowledged | resolved
    planned          boolean NOT NULL DEFAULT false,
    opened_at        timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    resolved_at      timestamptz,
    cause            text NOT NULL DEFAULT '',
    expected_fix_at  timestamptz,
    opened_by        text NOT NULL,
    area_names       jsonb NOT NULL DEFAULT '{}',
    counts           jsonb NOT NULL DEFAULT '{}',
    figures          jsonb NOT NULL DEFAULT '{}',
    revision         bigint NOT NULL,
    rev              bigint NOT NULL DEFAULT 0
);
CREATE INDEX incidents_opened ON incidents (opened_at);
CREATE INDEX incidents_pair ON incidents (service, area, opened_at);
