-- Supervisors' reports (issue 20 §2/§3): hourly rollups maintained by the writer.
--
-- Which: rollup TABLES, not materialized views. A materialized view refreshes whole (a month of
-- contacts per refresh); these are recomputed one hour at a time. The sink marks an hour dirty in
-- the same transaction that writes its raw rows (paths, contacts, finished callbacks and notices:
-- `report_dirty`), and the record upkeep (record/runtime.py → record/reports.roll) recomputes each
-- dirty hour WHOLE from the raw rows — never incremented, so a row written twice, late or replaced
-- changes nothing but that hour's recomputation. Hours are UTC; the reports put them in their time
-- zone (whole-hour offsets are exact; a :30 offset splits an hour at the day's edge to its start).
-- A month is 720 rows per menu / queue / agent: the reports read these, not the raw rows.

CREATE TABLE report_dirty (
    source    text NOT NULL CHECK (source IN ('paths', 'contacts', 'callbacks')),
    key       text NOT NULL DEFAULT '',  -- paths: the menu ('' for the others)
    hour      timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, key, hour)
);

-- IVR funnel of one menu (entry point) for one hour: domain/reports.Funnel as JSON, and its
-- totals as columns (the self-service share per day is summed in SQL).
CREATE TABLE report_ivr_hourly (
    menu        text NOT NULL,
    hour        timestamptz NOT NULL,
    calls       integer NOT NULL,
    self_served integer NOT NULL,
    human       integer NOT NULL,  -- exits to a queue, an agent or a callback
    hangups     integer NOT NULL,
    timed_out   integer NOT NULL,
    funnel      jsonb NOT NULL,
    PRIMARY KEY (hour, menu)
);

-- Queue calls of one hour (by the call's start): waits as histograms over domain/reports.WAIT_EDGES.
CREATE TABLE report_queue_hourly (
    queue          text NOT NULL,
    hour           timestamptz NOT NULL,
    offered        integer NOT NULL,  -- finished calls that reached the queue
    answered       integer NOT NULL,
    abandoned      integer NOT NULL,
    wait_answered  integer[] NOT NULL,
    wait_abandoned integer[] NOT NULL,
    wait_seconds   double precision NOT NULL,  -- summed over answered calls
    talk_seconds   double precision NOT NULL,
    PRIMARY KEY (hour, queue)
);

-- Repeat calls of identified customers (inbound), by the reason they called (the queue the call
-- reached, 'ivr' when none): a call is a repeat when the same customer called within 24 h / 7 days
-- before it (any reason, and the same reason).
CREATE TABLE report_repeat_hourly (
    reason          text NOT NULL,
    hour            timestamptz NOT NULL,
    calls           integer NOT NULL,
    repeat_24h      integer NOT NULL,
    repeat_7d       integer NOT NULL,
    same_24h        integer NOT NULL,
    same_7d         integer NOT NULL,
    repeat_answered integer NOT NULL,  -- repeats (7 days) an agent answered
    story_carried   integer NOT NULL,  -- ... whose previous call had notes or a disposition on the pop
    PRIMARY KEY (hour, reason)
);

-- Calls an agent answered (the last agent on the call), by the call's start hour.
CREATE TABLE report_agent_hourly (
    agent        text NOT NULL,
    hour         timestamptz NOT NULL,
    calls        integer NOT NULL,
    talk_seconds double precision NOT NULL,
    PRIMARY KEY (hour, agent)
);

-- Finished callbacks (agent-first) and notices (customer-first) by the hour they were requested.
CREATE TABLE report_callback_hourly (
    kind      text NOT NULL CHECK (kind IN ('callback', 'notice')),
    hour      timestamptz NOT NULL,
    requested integer NOT NULL,
    placed    integer NOT NULL,  -- at least one dial
    answered  integer NOT NULL,  -- an attempt the customer answered
    retried   integer NOT NULL,  -- more than one dial
    failed    integer NOT NULL,
    cancelled integer NOT NULL,
    lateness  integer[] NOT NULL,  -- first dial after the window opened, over domain/reports.LATE_EDGES
    late_seconds double precision NOT NULL,
    PRIMARY KEY (hour, kind)
);

-- Recomputing one hour of contacts reads that hour only: a BRIN index on the start time (rows arrive in
-- time order; a few pages per month, next to nothing per write). Paths are read by (menu, started_at).
CREATE INDEX contacts_started_brin ON contacts USING brin (started_at) WITH (pages_per_range = 32);

-- The agents report reads these directly (a month is thousands of rows, not millions).
CREATE INDEX case_events_kind_at ON case_events (kind, at);
CREATE INDEX case_compensations_requested_at ON case_compensations (requested_at);
CREATE INDEX callbacks_finished_requested ON callbacks_finished (requested_at);
CREATE INDEX notifications_created ON notifications (created_at);
