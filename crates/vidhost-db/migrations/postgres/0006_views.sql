-- Playback sessions reported by players (POST /api/v1/videos/{id}/views):
-- one row per (video, client session). `viewer_key` is the user id or a
-- keyed hash of the client's address and user agent (unique viewers);
-- `day` (UTC) the session's first report.
CREATE TABLE view_sessions (
    video_id TEXT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    viewer_key TEXT NOT NULL,
    day TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    watched_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_position_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    played BOOLEAN NOT NULL DEFAULT FALSE,
    ended BOOLEAN NOT NULL DEFAULT FALSE,
    rendition TEXT,
    PRIMARY KEY (video_id, session_id)
);
CREATE INDEX view_sessions_day ON view_sessions(video_id, day);

-- Sessions that started playing, for sort=popular and the stats.
ALTER TABLE videos ADD COLUMN views BIGINT NOT NULL DEFAULT 0;
CREATE INDEX videos_popular ON videos(views, created_at, id);
