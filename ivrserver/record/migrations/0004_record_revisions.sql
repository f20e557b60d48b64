-- Customers, cases, case events and finished callbacks arrive through the outbox (record/sink.py):
-- at least once, in stream order within one sink, possibly out of order across sinks, and, for a
-- deployment that started on Redis alone, referring to rows the database has not seen yet.
--
-- 1. Revisions: `rev` is the outbox position a row was written from (record/sink.revision); an
--    older version delivered late never overwrites a newer one. 0 = written outside the outbox
--    (the Redis import), which any outbox version replaces.
-- 2. Nothing that would fail a write forever because records arrive out of order: the UNIQUE on
--    customers.account_number (Redis owns that rule at write time; two customers may hold one
--    number for a moment between a move and the next version) and the FOREIGN KEYs to customers
--    and cases go; their indexes stay. A customer's deletion removes its phones, cases and case
--    events in the same statement (record/rows.delete_customers) instead of ON DELETE CASCADE.
-- 3. deleted_customers: the revision a customer was deleted at, so that a version of it (or of
--    one of its cases) older than its deletion, delivered late, does not bring it back.

ALTER TABLE customers ADD COLUMN rev bigint NOT NULL DEFAULT 0;
ALTER TABLE customers DROP CONSTRAINT IF EXISTS customers_account_number_key;
CREATE INDEX customers_account_number ON customers (account_number) WHERE account_number IS NOT NULL;

ALTER TABLE customer_phones DROP CONSTRAINT IF EXISTS customer_phones_customer_id_fkey;

ALTER TABLE cases ADD COLUMN rev bigint NOT NULL DEFAULT 0;
ALTER TABLE cases DROP CONSTRAINT IF EXISTS cases_customer_id_fkey;
CREATE INDEX cases_customer ON cases (customer_id);

ALTER TABLE case_events DROP CONSTRAINT IF EXISTS case_events_case_id_fkey;
-- the outbox entry an event came from: written once however often it is delivered
ALTER TABLE case_events ADD COLUMN entry_id text;
ALTER TABLE case_events ADD COLUMN customer_id text;
ALTER TABLE case_events ADD COLUMN rev bigint NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX case_events_entry ON case_events (entry_id);
CREATE INDEX case_events_customer ON case_events (customer_id);

ALTER TABLE callbacks_finished ADD COLUMN rev bigint NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN rev bigint NOT NULL DEFAULT 0;

CREATE TABLE deleted_customers (
    id         text PRIMARY KEY,
    rev        bigint NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
