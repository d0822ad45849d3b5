-- At most one pending (queued, running or failed-awaiting-retry) job per
-- video. The checks in enqueue and retry cannot see a job another
-- transaction is inserting at the same moment (READ COMMITTED on
-- PostgreSQL); this index makes the second of two such inserts fail.
-- Duplicates stored before it existed are settled first: the newest stays.
UPDATE jobs SET state = 'dead', last_error = 'superseded: a newer job of the same video was pending'
WHERE state IN ('queued', 'running', 'failed') AND EXISTS (
    SELECT 1 FROM jobs AS newer
    WHERE newer.video_id = jobs.video_id
      AND newer.state IN ('queued', 'running', 'failed')
      AND (newer.created_at > jobs.created_at OR (newer.created_at = jobs.created_at AND newer.id > jobs.id))
);
CREATE UNIQUE INDEX jobs_one_pending ON jobs(video_id) WHERE state IN ('queued', 'running', 'failed');
