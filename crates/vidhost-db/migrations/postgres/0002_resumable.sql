-- Resumable (tus) uploads: the durable offset, the client's metadata, and a
-- lease so that one request at a time writes, whichever node it reached.
ALTER TABLE uploads ADD COLUMN received BIGINT NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN metadata TEXT;
ALTER TABLE uploads ADD COLUMN lease_owner TEXT;
ALTER TABLE uploads ADD COLUMN lease_expires BIGINT;
ALTER TABLE uploads ADD COLUMN lease_steal BOOLEAN NOT NULL DEFAULT FALSE;
