-- Agents' page preferences (issue 20 §4: the desk's language, "chosen per agent and remembered").
-- Redis holds them for the pages (one HASH per agent); with postgres.dsn every change also goes
-- through the outbox (kind "agent_prefs", record/rows.upsert_agent_preferences), and the warm-up
-- copies them back into a Redis that lost its data (services/record_warmup.py).
-- `rev` is the outbox position of the change (record/sink.revision): an older change delivered late
-- never overwrites a newer one; 0 = copied by `ivrserver db import-redis`, which any change replaces.
-- `updated_at` is when the agent made the change. The language is checked by the sink against the
-- languages this ivrserver ships (domain/i18n.LANGUAGES), not here: a new language needs no migration.
CREATE TABLE agent_preferences (
    agent_id   text PRIMARY KEY,
    language   text NOT NULL CHECK (language <> ''),
    updated_at timestamptz NOT NULL,
    rev        bigint NOT NULL DEFAULT 0
);
