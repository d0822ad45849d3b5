-- How a video's upload was made (`form`, `presigned`, `multipart`, `tus`),
-- kept beside `completed_upload_id`: a repeated presigned `complete` answers
-- with the video only if a presigned upload made it.
ALTER TABLE videos ADD COLUMN completed_upload_method TEXT;
