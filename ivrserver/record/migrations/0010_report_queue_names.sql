-- Reports name a queue as supervisors know it (issue 20): `general`, as the wallboard, the menus and
-- routing say it, not Asterisk's `ivr-general` (domain/queue_names.queue_label). New rollups are
-- written with that name (record/reports.py folds contacts recorded with the old one into it); this
-- renames the rollups made before, so the reports read one name and `?queue=general` finds all of it.
--
-- Why a migration and not a rename on every read: the rollups are small (720 rows a month per queue),
-- renamed once; afterwards the reads filter on one exact name and know nothing of Asterisk's prefix.
-- The raw contacts are NOT rewritten (millions of rows): a late re-roll of an old hour folds their
-- `ivr-` names at roll time, and the contact history shows the name each call was recorded with.
--
-- Where both names hold a row for the same hour (a queue outside ivrserver named like one of ours),
-- the two rows are added up: counts, seconds and the wait histograms bin by bin.

WITH old AS (
    DELETE FROM report_queue_hourly WHERE starts_with(queue, 'ivr-') AND queue <> 'ivr-' RETURNING *
)
INSERT INTO report_queue_hourly AS r (queue, hour, offered, answered, abandoned, wait_answered, wait_abandoned,
                                      wait_seconds, talk_seconds)
SELECT substr(queue, 5), hour, offered, answered, abandoned, wait_answered, wait_abandoned, wait_seconds,
       talk_seconds FROM old
ON CONFLICT (hour, queue) DO UPDATE SET
    offered = r.offered + EXCLUDED.offered,
    answered = r.answered + EXCLUDED.answered,
    abandoned = r.abandoned + EXCLUDED.abandoned,
    wait_answered = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0)
                          FROM unnest(r.wait_answered, EXCLUDED.wait_answered) WITH ORDINALITY AS t(a, b, i)
                          ORDER BY i),
    wait_abandoned = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0)
                           FROM unnest(r.wait_abandoned, EXCLUDED.wait_abandoned) WITH ORDINALITY AS t(a, b, i)
                           ORDER BY i),
    wait_seconds = r.wait_seconds + EXCLUDED.wait_seconds,
    talk_seconds = r.talk_seconds + EXCLUDED.talk_seconds;

-- Repeat calls by reason (the queue the call reached, 'ivr' when none).
WITH old AS (
    DELETE FROM report_repeat_hourly WHERE starts_with(reason, 'ivr-') AND reason <> 'ivr-' RETURNING *
)
INSERT INTO report_repeat_hourly AS r (reason, hour, calls, repeat_24h, repeat_7d, same_24h, same_7d,
                                       repeat_answered, story_carried)
SELECT substr(reason, 5), hour, calls, repeat_24h, repeat_7d, same_24h, same_7d, repeat_answered, story_carried
FROM old
ON CONFLICT (hour, reason) DO UPDATE SET
    calls = r.calls + EXCLUDED.calls,
    repeat_24h = r.repeat_24h + EXCLUDED.repeat_24h,
    repeat_7d = r.repeat_7d + EXCLUDED.repeat_7d,
    same_24h = r.same_24h + EXCLUDED.same_24h,
    same_7d = r.same_7d + EXCLUDED.same_7d,
    repeat_answered = r.repeat_answered + EXCLUDED.repeat_answered,
    story_carried = r.story_carried + EXCLUDED.story_carried;
