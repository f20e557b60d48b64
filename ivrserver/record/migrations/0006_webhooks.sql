-- Outgoing webhooks (services/webhooks.py): the delivery log, one row per delivery (one event to
-- one endpoint), rewritten after every attempt through the outbox (record/sink.py, kind
-- webhook_deliveries). `log` holds the attempts (at, HTTP status or null, error, duration in
-- seconds, the instance), the newest 50; `payload` is the event's data as sent (never a secret:
-- the signature is made per attempt and not kept). `rev` is the outbox position the row was
-- written from: a copy delivered late never overwrites a newer one. Partitioned by month of
-- creation like the other append-heavy records (record/partitions.py creates the months ahead;
-- postgres.webhooks_retention_days drops whole months).
CREATE TABLE webhook_deliveries (
    id          text NOT NULL,             -- wh-<32 hex>, the same for the same (key, endpoint)
    endpoint    text NOT NULL,
    event       text NOT NULL,
    key         text NOT NULL,             -- the publisher's idempotency key
    state       text NOT NULL,             -- pending | delivered | dead
    attempts    integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    next_at     timestamptz,
    last_status integer,
    last_error  text NOT NULL DEFAULT '',
    dead_reason text NOT NULL DEFAULT '',
    log         jsonb NOT NULL DEFAULT '[]',
    payload     jsonb,
    rev         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE webhook_deliveries_default PARTITION OF webhook_deliveries DEFAULT;
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, updated_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event, created_at);
CREATE INDEX webhook_deliveries_key ON webhook_deliveries (key);
