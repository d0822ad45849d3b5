-- The processing pipeline: a durable job queue and the outputs it publishes.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    video_id TEXT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    -- queued | running | failed (waiting for a retry at run_at) | dead | done
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_claim ON jobs(state, run_at);
CREATE INDEX jobs_video ON jobs(video_id);

ALTER TABLE videos ADD COLUMN step TEXT;
ALTER TABLE videos ADD COLUMN renditions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE videos ADD COLUMN outputs TEXT NOT NULL DEFAULT '{}';
