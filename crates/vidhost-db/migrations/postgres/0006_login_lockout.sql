-- Wrong passwords in a row, and the time they lock sign-in until.
ALTER TABLE users ADD COLUMN login_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN login_locked_until BIGINT NOT NULL DEFAULT 0;
