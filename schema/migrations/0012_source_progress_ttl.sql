-- Finished sources leave source_progress. A row is one (file fingerprint, site host) stream:
-- the highest byte offset stored (the re-send filter) and the record count (the billing run's
-- per-source verification). Without a TTL the table grew by one row per file and host forever.
-- A stream not written for progress_days (default 400) is finished: its file was read to the
-- end and rotated away long ago, and no collector reads it again — a collector reads no file
-- it does not remember (tail.completed_retention_days, default 30) that is older than that,
-- except with --backfill, which an operator runs on purpose. The TTL follows [retention]
-- progress_days on every `schema migrate`, as the other TTLs do.
ALTER TABLE {{db}}.source_progress
    MODIFY TTL toDateTime(updated_at) + INTERVAL {{progress_days}} DAY;
