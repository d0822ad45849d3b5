-- Times are Unix milliseconds (BIGINT) in both dialects.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_lower TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    mfa_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A refresh-token family is one signed-in session.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    user_agent TEXT,
    ip TEXT,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

CREATE TABLE videos (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    visibility TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    uploaded_at BIGINT,
    ready_at BIGINT,
    original_filename TEXT,
    content_type TEXT,
    size_bytes BIGINT,
    duration_s DOUBLE PRECISION,
    width BIGINT,
    height BIGINT
);
CREATE INDEX videos_owner ON videos(owner_id, created_at);
CREATE INDEX videos_listing ON videos(status, visibility, created_at);

-- An upload in flight; the row goes when it completes, aborts or expires.
CREATE TABLE uploads (
    video_id TEXT PRIMARY KEY REFERENCES videos(id) ON DELETE CASCADE,
    upload_id TEXT NOT NULL UNIQUE,
    owner_id TEXT NOT NULL,
    method TEXT NOT NULL,
    store_upload_id TEXT,
    size BIGINT NOT NULL,
    part_size BIGINT NOT NULL,
    part_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX uploads_owner ON uploads(owner_id);
CREATE INDEX uploads_expires ON uploads(expires_at);
