-- Append-heavy records, partitioned by month so retention drops whole partitions.
-- Partitions are created ahead of time by the application (record/partitions.py); a row outside
-- every partition lands in the default partition instead of failing the write.

CREATE TABLE contacts (
    id             text NOT NULL,
    started_at     timestamptz NOT NULL,
    kind           text NOT NULL,
    number         text NOT NULL DEFAULT '',
    customer_id    text,
    ended_at       timestamptz,
    routing_reason text NOT NULL DEFAULT '',
    queue          text,
    wait_seconds   real,
    talk_seconds   real,
    agents         text[] NOT NULL DEFAULT '{}',
    outcome        text NOT NULL,
    disposition    text NOT NULL DEFAULT '',
    notes          text NOT NULL DEFAULT '',
    ivr_path       text[] NOT NULL DEFAULT '{}',
    -- the outbox position this version was written from: an older one never overwrites a newer
    rev            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE contacts_default PARTITION OF contacts DEFAULT;
CREATE INDEX contacts_customer ON contacts (customer_id, started_at DESC);

CREATE TABLE ivr_paths (
    call_id     text NOT NULL,
    started_at  timestamptz NOT NULL,
    menu        text NOT NULL,
    version     text NOT NULL DEFAULT '',
    exit_reason text NOT NULL DEFAULT '',
    events      jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (call_id, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE ivr_paths_default PARTITION OF ivr_paths DEFAULT;
CREATE INDEX ivr_paths_menu ON ivr_paths (menu, started_at);

CREATE TABLE audit (
    entry_id text NOT NULL,  -- the Redis stream id it was appended under: written once
    at       timestamptz NOT NULL,
    actor    text NOT NULL,
    role     text NOT NULL DEFAULT '',
    action   text NOT NULL,
    subject  text NOT NULL DEFAULT '',
    allowed  boolean NOT NULL,
    reason   text NOT NULL DEFAULT '',
    source   text NOT NULL DEFAULT '',
    PRIMARY KEY (entry_id, at)
) PARTITION BY RANGE (at);
CREATE TABLE audit_default PARTITION OF audit DEFAULT;
CREATE INDEX audit_subject ON audit (subject, at);

-- Callbacks and notices once they are finished (the scheduler keeps live ones in Redis).
CREATE TABLE callbacks_finished (
    id           text PRIMARY KEY,
    customer_id  text,
    number       text NOT NULL,
    mode         text NOT NULL,
    state        text NOT NULL,
    requested_at timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    record       jsonb NOT NULL
);
CREATE INDEX callbacks_finished_customer ON callbacks_finished (customer_id, finished_at DESC);

CREATE TABLE notifications (
    id          text PRIMARY KEY,
    customer_id text,
    kind        text NOT NULL,
    state       text NOT NULL,
    created_at  timestamptz NOT NULL,
    finished_at timestamptz,
    record      jsonb NOT NULL
);
CREATE INDEX notifications_customer ON notifications (customer_id, created_at DESC);
