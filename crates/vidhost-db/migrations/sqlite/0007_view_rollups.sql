-- Playback sessions idle for a day are folded into these and deleted
-- (`fold_view_sessions`, at each sweep), so the catalog grows with videos,
-- days and viewers rather than with every playback.
-- Views and watch time per video and day (the day a session started).
CREATE TABLE view_days (
    video_id TEXT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    views BIGINT NOT NULL,
    watch_time_s DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (video_id, day)
);
-- Who has watched a video (its unique viewers), once each.
CREATE TABLE video_viewers (
    video_id TEXT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    viewer_key TEXT NOT NULL,
    PRIMARY KEY (video_id, viewer_key)
);
CREATE INDEX view_sessions_updated ON view_sessions(updated_at);
