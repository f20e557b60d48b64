-- Customers and cases: the records a contact centre keeps for years.
-- Times are timestamptz; ids are the application's own (text) so Redis-era ids carry over.

CREATE TABLE customers (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    tier            text NOT NULL DEFAULT 'standard' CHECK (tier IN ('vip', 'gold', 'standard')),
    segment         text NOT NULL DEFAULT 'individual',
    language        text NOT NULL DEFAULT 'en',
    account_manager text,
    account_number  text UNIQUE,
    pin_hash        text,
    preferences     jsonb NOT NULL DEFAULT '{}'::jsonb,
    attributes      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per (number, customer): a number shared by several customers identifies nobody.
CREATE TABLE customer_phones (
    phone       text NOT NULL,
    customer_id text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    PRIMARY KEY (phone, customer_id)
);
CREATE INDEX customer_phones_customer ON customer_phones (customer_id);

CREATE TABLE cases (
    id           text PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    status       text NOT NULL,
    summary      text NOT NULL DEFAULT '',
    severity     smallint NOT NULL DEFAULT 3 CHECK (severity BETWEEN 1 AND 5),
    owner_agent  text,
    still_needed text NOT NULL DEFAULT '',
    next_step    text NOT NULL DEFAULT '',
    opened_at    timestamptz NOT NULL,
    closed_at    timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_customer_open ON cases (customer_id) WHERE closed_at IS NULL;
CREATE INDEX cases_owner_open ON cases (owner_agent) WHERE closed_at IS NULL;

-- Every change of a case: who, when, what (append-only).
CREATE TABLE case_events (
    id      bigserial PRIMARY KEY,
    case_id text NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    kind    text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX case_events_case ON case_events (case_id, at);
