-- The audit log read back from PostgreSQL, newest first and paged by entry id (GET /api/v1/audit
-- past Redis's hot window): entry ids are Redis stream ids `<ms>-<seq>`, ordered by their two
-- numbers. Their text order differs (`…-10` sorts before `…-9`) and depends on the collation, so
-- the pages follow the numbers, through this index of the two (a page is one index scan per month
-- partition, merged: no sort of the whole log).
--
-- Creating it reads the whole audit table and blocks its writes meanwhile (a partitioned table
-- cannot index CONCURRENTLY): the record sink waits, its entries stay in the Redis outbox, nothing
-- is lost. The numbers are numeric, not bigint: a stream id's parts are unsigned 64-bit.
CREATE INDEX audit_order ON audit ((split_part(entry_id, '-', 1)::numeric), (split_part(entry_id, '-', 2)::numeric));
