-- Stored objects of deleted videos still to remove. A video's rows go at
-- once, in the same transaction that queues this row; its objects (and the
-- store's multipart upload, if one was in flight) are removed right after,
-- and when the store does not answer then, by the sweeper, with backoff.
-- No foreign key: the video this names no longer exists.
CREATE TABLE store_cleanup (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    video_id TEXT NOT NULL,
    store_upload_id TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX store_cleanup_due ON store_cleanup (next_at);
