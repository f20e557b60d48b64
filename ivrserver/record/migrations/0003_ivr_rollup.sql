-- Menu statistics over months without reading every path: per menu, the counts of each
-- 15-minute bucket (domain/menu_stats.Tally as JSON), recomputed from ivr_paths whenever paths of
-- that bucket arrive (the sink marks the bucket dirty in the transaction that writes the paths).

CREATE TABLE ivr_rollup (
    menu        text NOT NULL,
    bucket      timestamptz NOT NULL,
    tally       jsonb NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (menu, bucket)
);

CREATE TABLE ivr_rollup_dirty (
    menu      text NOT NULL,
    bucket    timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (menu, bucket)
);
