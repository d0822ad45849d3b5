//! The catalog: users, sessions, signing keys, videos and uploads in flight.
//!
//! [`Catalog`] is the one seam the rest of the program sees. It has two
//! implementations, on `sqlx::Pool<Sqlite>` and `sqlx::Pool<Postgres>`,
//! generated from one body of SQL (see `sql.rs`) so both behave identically;
//! where the dialects differ, the difference is spelled out per backend.

mod batch;
mod changes;
mod error;
mod models;
mod sql;

pub use error::DbError;
pub use models::*;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use vidhost_core::domain::UploadMethod;
use vidhost_core::time::Millis;

pub type Result<T, E = DbError> = std::result::Result<T, E>;

#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;

    // users
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn count_admins(&self) -> Result<i64>;
    async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>>;
    async fn update_user(
        &self,
        id: &str,
        role: Option<vidhost_core::domain::Role>,
        disabled: Option<bool>,
        display_name: Option<&str>,
    ) -> Result<Option<User>>;
    async fn set_password(&self, id: &str, password_hash: &str) -> Result<()>;

    // signing keys
    /// Inserts unless a key with this kid exists; returns every key of `purpose`.
    async fn ensure_signing_key(&self, key: &SigningKey) -> Result<Vec<SigningKey>>;
    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKey>>;
    /// Deletes the keys of `purpose` that a newer key created at or before
    /// `superseded_by` replaced. The newest key is never deleted. Returns
    /// how many went.
    async fn retire_signing_keys(&self, purpose: &str, superseded_by: Millis) -> Result<u64>;

    // sessions and refresh tokens
    async fn create_session(&self, session: &Session, first_token_hash: &str) -> Result<()>;
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: Millis,
    ) -> Result<RotateOutcome>;
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<Session>>;
    /// True while the session is neither revoked nor expired.
    async fn session_live(&self, session_id: &str, now: Millis) -> Result<bool>;
    async fn revoke_session(&self, user_id: &str, session_id: &str, now: Millis) -> Result<bool>;
    async fn revoke_sessions_except(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now: Millis,
    ) -> Result<()>;
    async fn list_sessions(&self, user_id: &str, now: Millis) -> Result<Vec<Session>>;

    // second factor (TOTP) and recovery codes
    async fn totp_state(&self, user_id: &str) -> Result<Option<TotpState>>;
    /// Keeps `secret` as the one being set up (replacing any earlier one).
    async fn set_totp_pending(&self, user_id: &str, secret: &str) -> Result<()>;
    /// Turns MFA on with the pending secret, if it still is `secret`, with
    /// `step` as its first used step and these recovery codes (replacing
    /// any). False when the pending secret changed or MFA is already on.
    async fn enable_totp(
        &self,
        user_id: &str,
        secret: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<bool>;
    /// Turns MFA off and forgets the secret and the recovery codes.
    async fn disable_totp(&self, user_id: &str) -> Result<()>;
    /// Marks `step` used if it is later than the last used one (and resets
    /// the failures and any lock). False: that code (or a later one) was already used.
    async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool>;
    /// Uses an unused recovery code (and resets the failures and any lock).
    /// False: none such.
    async fn use_recovery_code(&self, user_id: &str, code_hash: &str, now: Millis) -> Result<bool>;
    /// Reserves one check of a second-factor code, counted as wrong until
    /// a right one resets the count; the `every`-th in a row also locks
    /// further checks until `now + lock_ms` × 2^(lockouts so far − 1), at
    /// most a day. Reserving before checking means concurrent guesses cannot
    /// slip past the lock. `Some(until)`: locked, nothing reserved.
    async fn reserve_totp_attempt(
        &self,
        user_id: &str,
        now: Millis,
        every: i64,
        lock_ms: i64,
    ) -> Result<Option<Millis>>;
    /// An unused, unexpired invite has this code hash (a cheap look before
    /// the work of registering; `create_user_with_invite` decides).
    async fn invite_usable(&self, code_hash: &str, now: Millis) -> Result<bool>;

    // invites
    async fn create_invite(&self, invite: &Invite) -> Result<()>;
    /// Creates `user` with the role of the unused, unexpired invite whose
    /// code hashes to `code_hash`, and uses the invite up, atomically.
    /// `None`: no such invite (nothing changed). A taken e-mail is
    /// `Conflict`, and the invite stays unused.
    async fn create_user_with_invite(
        &self,
        user: &User,
        code_hash: &str,
        now: Millis,
    ) -> Result<Option<User>>;

    // playback analytics
    /// Records a player's report: the session's watch time only grows (and
    /// at most as fast as the clock since it started), a `play` counts it
    /// as a view once. Reports naming another viewer's session are ignored.
    async fn record_view(&self, beacon: &ViewBeacon) -> Result<()>;
    /// Folds up to `limit` sessions last reported before `idle_before` into
    /// the daily totals and the viewers of their videos, and deletes them;
    /// the stats stay what they were. Each session is folded once, even by
    /// nodes folding at the same time. Returns how many were folded.
    async fn fold_view_sessions(&self, idle_before: Millis, limit: i64) -> Result<u64>;
    async fn video_stats(&self, video_id: &str) -> Result<VideoStats>;

    // audit log
    async fn append_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// Newest first.
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>>;

    // videos
    async fn get_video(&self, id: &str) -> Result<Option<Video>>;
    async fn update_video_meta(&self, id: &str, patch: &VideoPatch) -> Result<()>;
    /// Deletes the video's rows (its upload's too) and, in the same
    /// transaction, queues the removal of its stored objects, due at
    /// `retry_at` (the caller tries at once). None when the video was not there.
    async fn delete_video(
        &self,
        id: &str,
        now: Millis,
        retry_at: Millis,
    ) -> Result<Option<DeletedVideo>>;
    /// Cleanups whose next try is due, oldest first.
    async fn due_cleanups(&self, now: Millis, limit: i64) -> Result<Vec<StoreCleanup>>;
    /// The objects are gone: forgets the cleanup.
    async fn finish_cleanup(&self, id: i64) -> Result<()>;
    /// Takes a due cleanup for one try (counted), due again at `until`
    /// unless finished; false when another node took it first.
    async fn claim_cleanup(&self, id: i64, now: Millis, until: Millis) -> Result<bool>;
    async fn list_videos(&self, q: &VideoQuery) -> Result<Vec<Video>>;

    // uploads
    /// Creates the video (status `awaiting_upload`) and its upload row at once.
    async fn create_upload(&self, video: &Video, upload: &Upload) -> Result<()>;
    async fn upload_by_video(&self, video_id: &str) -> Result<Option<Upload>>;
    async fn upload_by_id(&self, upload_id: &str) -> Result<Option<Upload>>;
    /// The video that upload `upload_id` completed (its row is gone by then).
    async fn completed_by(&self, upload_id: &str) -> Result<Option<Video>>;
    /// Video `video_id` if an upload made `method`-wise completed it.
    async fn completed_with(&self, video_id: &str, method: UploadMethod) -> Result<Option<Video>>;
    async fn set_store_upload_id(&self, video_id: &str, store_upload_id: &str) -> Result<()>;
    async fn uploads_of(&self, owner_id: &str) -> Result<Vec<Upload>>;
    /// Removes the upload row and marks the video `uploaded` (one transaction).
    /// Returns false when the upload was no longer there (completed twice).
    async fn finish_upload(&self, video_id: &str, done: &UploadDone) -> Result<bool>;
    async fn expired_uploads(&self, now: Millis, limit: i64) -> Result<Vec<Upload>>;
    /// Incomplete uploads (rows) per method, across every node.
    async fn count_uploads_by_method(&self) -> Result<Vec<(String, i64)>>;

    // leases on an upload (tus): one writer at a time across all nodes
    /// Takes the lease when it is free or its holder stopped renewing.
    async fn acquire_lease(
        &self,
        video_id: &str,
        owner: &str,
        now: Millis,
        ttl_ms: i64,
    ) -> Result<Lease>;
    /// Asks the current holder to let go.
    async fn request_lease_steal(&self, video_id: &str) -> Result<()>;
    async fn renew_lease(
        &self,
        video_id: &str,
        owner: &str,
        now: Millis,
        ttl_ms: i64,
    ) -> Result<Renewal>;
    async fn release_lease(&self, video_id: &str, owner: &str) -> Result<()>;
    /// Moves the durable offset from `from` to `to`, only for the lease holder.
    async fn advance_offset(&self, video_id: &str, owner: &str, from: i64, to: i64)
        -> Result<bool>;

    // the processing queue
    /// Leases the next due job (queued, failed and due, or running with a
    /// lapsed lease) to `owner`, counting an attempt. Never hands one job to
    /// two workers (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one writer).
    async fn claim_job(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Option<Job>>;
    /// False when the lease was lost (or the job is gone with its video).
    async fn renew_job(&self, id: &str, owner: &str, now: Millis, lease_ms: i64) -> Result<bool>;
    /// Schedules a retry at `retry_at`, or with None moves the job to dead
    /// letters; false when `owner` no longer holds the job.
    async fn fail_job(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<bool>;
    /// Puts a job its worker stopped (a graceful shutdown, a store that does
    /// not answer) back in the queue, due at `run_at`, without the attempt
    /// its claim counted; false when `owner` no longer holds it.
    async fn release_job(&self, id: &str, owner: &str, now: Millis, run_at: Millis)
        -> Result<bool>;
    async fn list_jobs(&self, state: Option<&str>, limit: i64) -> Result<Vec<Job>>;
    async fn count_jobs(&self, state: &str) -> Result<i64>;
    /// Re-queues a dead job; its video goes back to `uploaded`.
    async fn retry_job(&self, id: &str, now: Millis) -> Result<Option<Job>>;
    /// Queues processing again for an uploaded video (reprocess); false if a
    /// job for it is already pending or the video has no upload yet.
    async fn enqueue_processing(
        &self,
        video_id: &str,
        job_id: &str,
        max_attempts: i64,
        now: Millis,
    ) -> Result<bool>;

    // what the pipeline records on a video
    async fn set_video_progress(
        &self,
        id: &str,
        status: vidhost_core::domain::VideoStatus,
        step: Option<&str>,
        progress: f64,
    ) -> Result<()>;
    async fn set_video_media(
        &self,
        id: &str,
        duration_s: f64,
        width: i64,
        height: i64,
    ) -> Result<()>;
    /// The video is ready and its job (`job`, leased by `owner`) is done, in
    /// one transaction: a client that sees `ready` may reprocess at once.
    async fn set_video_ready(
        &self,
        id: &str,
        renditions: &[Rendition],
        outputs: &Outputs,
        job: &str,
        owner: &str,
        now: Millis,
    ) -> Result<()>;
    /// Outputs published while processing goes on (poster first, then a
    /// growing stream); the status stays as it is.
    async fn set_video_outputs(
        &self,
        id: &str,
        renditions: &[Rendition],
        outputs: &Outputs,
    ) -> Result<()>;
    async fn set_video_failed(&self, id: &str, error: &str) -> Result<()>;
    /// Ids of videos whose status, step or progress changed (see
    /// `changes`): on SQLite this process's writes, on PostgreSQL any's.
    fn video_changes(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>>;
}

pub type DynCatalog = Arc<dyn Catalog>;

/// Opens (and, for SQLite, creates) the database named by `url`.
pub async fn connect(url: &str) -> Result<DynCatalog> {
    if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives kill -9 of the process (the WAL is
            // in the OS page cache); only an OS crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Pages straight from a memory map of the file instead of a
            // read() per page-cache miss, and a 16 MiB page cache per
            // connection (SQLite's default is 2 MiB).
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-16384");
        let pool = SqlitePoolOptions::new()
            // SQLite has one writer. With many connections, writers wait in
            // SQLite's busy handler (sleep + retry: p99 of upload creation
            // ~230 ms at 10 clients); with two, they queue in the pool instead
            // (p99 ~19 ms) and a read can still run beside a write. The
            // upload-creation writer takes one more of its own (batch.rs).
            .max_connections(2)
            .min_connections(1)
            .connect_with(opts)
            .await?;
        restrict_sqlite_file(url);
        Ok(Arc::new(sql::SqliteCatalog(
            pool,
            Default::default(),
            Default::default(),
        )))
    } else {
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Arc::new(sql::PgCatalog(
            pool,
            Default::default(),
            Default::default(),
        )))
    }
}

/// The SQLite file holds password hashes and signing keys: owner-only.
fn restrict_sqlite_file(url: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    for p in [
        path.to_owned(),
        format!("{path}-wal"),
        format!("{path}-shm"),
    ] {
        if std::path::Path::new(&p).exists() {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}
