-- The upload a video was completed by, kept after its upload row is gone, so
-- that a client whose `complete` answer was lost can complete again and get
-- the video (S3 answers a repeated CompleteMultipartUpload the same way).
-- Set only at completion: creating an upload writes no entry of the index.
ALTER TABLE videos ADD COLUMN completed_upload_id TEXT;
CREATE UNIQUE INDEX videos_completed_upload ON videos(completed_upload_id)
    WHERE completed_upload_id IS NOT NULL;
