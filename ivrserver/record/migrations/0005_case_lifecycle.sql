-- The case lifecycle (issue 18): statuses open, in_progress, waiting_customer, waiting_backoffice,
-- resolved, closed; a checklist of what is still needed; a due time by severity; the back offices a
-- case was handed to; compensation granted within authority. Cases from before keep their rows
-- (status open/closed, the new columns at their defaults).

ALTER TABLE cases ADD COLUMN due_at timestamptz;
ALTER TABLE cases ADD COLUMN checklist jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE cases ADD COLUMN handed_to text[] NOT NULL DEFAULT '{}';
ALTER TABLE cases ADD COLUMN compensated_cents bigint NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN currency text NOT NULL DEFAULT '';
-- the first time the case was resolved (NULL while it is not; a reopen clears it)
ALTER TABLE cases ADD COLUMN resolved_at timestamptz;
-- overdue cases: not resolved or closed, past due
CREATE INDEX cases_due_active ON cases (due_at)
    WHERE status IN ('open', 'in_progress', 'waiting_customer', 'waiting_backoffice');

-- why a change was made (required to reopen, to wait on someone and to resolve)
ALTER TABLE case_events ADD COLUMN why text NOT NULL DEFAULT '';

CREATE TABLE case_compensations (
    id           text PRIMARY KEY,
    case_id      text NOT NULL,
    customer_id  text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    currency     text NOT NULL,
    reason       text NOT NULL DEFAULT '',
    granted_by   text NOT NULL,
    approved_by  text,
    state        text NOT NULL CHECK (state IN ('granted', 'requested', 'approved', 'refused')),
    requested_at timestamptz NOT NULL,
    decided_at   timestamptz,
    decision_why text NOT NULL DEFAULT '',
    revision     bigint NOT NULL DEFAULT 0
);
CREATE INDEX case_compensations_case ON case_compensations (case_id);
CREATE INDEX case_compensations_customer ON case_compensations (customer_id);
CREATE INDEX case_compensations_requested ON case_compensations (requested_at) WHERE state = 'requested';
