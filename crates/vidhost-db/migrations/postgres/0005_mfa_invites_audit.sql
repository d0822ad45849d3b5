-- TOTP second factor: the enrolled secret (base32), a secret being set up
-- and not yet confirmed, the last time step accepted (a code works once),
-- and consecutive wrong codes with the time they lock further tries until.
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending TEXT;
ALTER TABLE users ADD COLUMN totp_last_step BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_locked_until BIGINT NOT NULL DEFAULT 0;

-- Single-use recovery codes, stored as SHA-256 of the normalized code.
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Single-use invitations to register (SHA-256 of the code).
CREATE TABLE invites (
    code_hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_by TEXT,
    used_at BIGINT
);

-- Security-relevant events, newest first by (at, id).
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target TEXT,
    ip TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at, id);
CREATE INDEX audit_log_action ON audit_log(action, at, id);
