//! The SQL behind [`Catalog`], written once and instantiated for SQLite and
//! PostgreSQL by `catalog_impl!`. Both dialects accept `$N` placeholders,
//! `RETURNING`, `ON CONFLICT` and the column types used in the migrations, so
//! one text serves both; every query's first statement in a transaction is a
//! write, so SQLite takes its write lock up front and never fails a lock
//! upgrade halfway.

use crate::{
    AuditEntry, AuditQuery, Catalog, DbError, DeletedVideo, Invite, Job, Lease, Outputs, Rendition,
    Renewal, Result, RotateOutcome, Session, SigningKey, Sort, StoreCleanup, TotpState, Upload,
    UploadDone, User, Video, VideoPatch, VideoQuery, VideoStats, ViewBeacon, Viewer,
};
use async_trait::async_trait;
use sqlx::Row;
use vidhost_core::domain::{Role, UploadMethod, VideoStatus};
use vidhost_core::time::Millis;

fn parse<T: std::str::FromStr>(what: &str, s: String) -> Result<T> {
    s.parse()
        .map_err(|_| DbError::Corrupt(format!("{what} `{s}`")))
}

/// Escapes LIKE wildcards so user input matches literally.
fn like_pattern(s: &str) -> String {
    let mut out = String::from("%");
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

const VIDEO_SELECT: &str = "SELECT v.id, v.owner_id, u.display_name AS owner_display_name, v.title, v.description, v.tags, \
    v.visibility, v.status, v.error, v.progress, v.created_at, v.uploaded_at, v.ready_at, v.original_filename, \
    v.content_type, v.size_bytes, v.duration_s, v.width, v.height, v.step, v.renditions, v.outputs, v.views FROM videos v JOIN users u ON u.id = v.owner_id";

const USER_COLS: &str =
    "id, email, display_name, password_hash, role, disabled, mfa_enabled, created_at";
const UPLOAD_COLS: &str =
    "video_id, upload_id, owner_id, method, store_upload_id, size, part_size, part_count, \
    created_at, expires_at, received, metadata";
/// A processing job, queued now: ($1 id, $2 video, $3 max attempts, $4 now).
const INSERT_QUEUED_JOB: &str =
    "INSERT INTO jobs (id, video_id, kind, state, attempts, max_attempts, run_at, \
    created_at, updated_at) VALUES ($1, $2, 'process', 'queued', 0, $3, $4, $4, $4)";
/// Job $2, leased by $3, is done at $1 (with its video turning ready).
const FINISH_JOB: &str =
    "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires = NULL, \
    last_error = NULL, updated_at = $1 WHERE id = $2 AND lease_owner = $3";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const JOB_COLS: &str =
    "id, video_id, kind, state, attempts, max_attempts, run_at, last_error, created_at, updated_at";
const SESSION_COLS: &str =
    "id, user_id, created_at, last_used_at, expires_at, user_agent, ip, revoked_at";

/// The INSERT of a new user, for any backend.
fn insert_user<DB: sqlx::Database>(
    u: &User,
) -> sqlx::query::Query<'_, DB, <DB as sqlx::Database>::Arguments<'_>>
where
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO users (id, email, email_lower, display_name, password_hash, role, disabled, mfa_enabled, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(u.id.as_str())
    .bind(u.email.as_str())
    .bind(u.email.to_lowercase())
    .bind(u.display_name.as_str())
    .bind(u.password_hash.as_str())
    .bind(u.role.as_str())
    .bind(u.disabled)
    .bind(u.mfa_enabled)
    .bind(u.created_at)
}

macro_rules! catalog_impl {
    ($name:ident, $db:ty, $row:ty, $backend:literal, $migrations:literal, $claim_lock:literal, $create_upload:path, $announce:ident, $listen:ident) => {
        pub struct $name(pub sqlx::Pool<$db>, pub crate::batch::Queue, pub crate::changes::Changes);

        impl $name {
            fn user(r: &$row) -> Result<User> {
                Ok(User {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    display_name: r.try_get("display_name")?,
                    password_hash: r.try_get("password_hash")?,
                    role: parse("role", r.try_get("role")?)?,
                    disabled: r.try_get("disabled")?,
                    mfa_enabled: r.try_get("mfa_enabled")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            fn video(r: &$row) -> Result<Video> {
                let tags: String = r.try_get("tags")?;
                Ok(Video {
                    id: r.try_get("id")?,
                    owner_id: r.try_get("owner_id")?,
                    owner_display_name: r.try_get("owner_display_name")?,
                    title: r.try_get("title")?,
                    description: r.try_get("description")?,
                    tags: serde_json::from_str(&tags).map_err(|e| DbError::Corrupt(format!("tags: {e}")))?,
                    visibility: parse("visibility", r.try_get("visibility")?)?,
                    status: parse("status", r.try_get("status")?)?,
                    error: r.try_get("error")?,
                    progress: r.try_get("progress")?,
                    created_at: r.try_get("created_at")?,
                    uploaded_at: r.try_get("uploaded_at")?,
                    ready_at: r.try_get("ready_at")?,
                    original_filename: r.try_get("original_filename")?,
                    content_type: r.try_get("content_type")?,
                    size_bytes: r.try_get("size_bytes")?,
                    duration_s: r.try_get("duration_s")?,
                    width: r.try_get("width")?,
                    height: r.try_get("height")?,
                    step: r.try_get("step")?,
                    renditions: serde_json::from_str(&r.try_get::<String, _>("renditions")?)
                        .map_err(|e| DbError::Corrupt(format!("renditions: {e}")))?,
                    outputs: serde_json::from_str(&r.try_get::<String, _>("outputs")?)
                        .map_err(|e| DbError::Corrupt(format!("outputs: {e}")))?,
                    views: r.try_get("views")?,
                })
            }

            fn upload(r: &$row) -> Result<Upload> {
                Ok(Upload {
                    video_id: r.try_get("video_id")?,
                    upload_id: r.try_get("upload_id")?,
                    owner_id: r.try_get("owner_id")?,
                    method: parse("method", r.try_get("method")?)?,
                    store_upload_id: r.try_get("store_upload_id")?,
                    size: r.try_get("size")?,
                    part_size: r.try_get("part_size")?,
                    part_count: r.try_get("part_count")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    received: r.try_get("received")?,
                    metadata: r.try_get("metadata")?,
                })
            }

            fn session(r: &$row) -> Result<Session> {
                Ok(Session {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                    expires_at: r.try_get("expires_at")?,
                    user_agent: r.try_get("user_agent")?,
                    ip: r.try_get("ip")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            }

            fn job(r: &$row) -> Result<Job> {
                Ok(Job {
                    id: r.try_get("id")?,
                    video_id: r.try_get("video_id")?,
                    kind: r.try_get("kind")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    max_attempts: r.try_get("max_attempts")?,
                    run_at: r.try_get("run_at")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            fn key(r: &$row) -> Result<SigningKey> {
                Ok(SigningKey {
                    kid: r.try_get("kid")?,
                    purpose: r.try_get("purpose")?,
                    secret: r.try_get("secret")?,
                    created_at: r.try_get("created_at")?,
                })
            }
        }

        #[async_trait]
        impl Catalog for $name {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> Result<()> {
                sqlx::migrate!($migrations).run(&self.0).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.0).await?;
                Ok(())
            }

            async fn create_user(&self, u: &User) -> Result<()> {
                insert_user(u).execute(&self.0).await?;
                Ok(())
            }

            async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
                let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
                sqlx::query(&sql).bind(id).fetch_optional(&self.0).await?.as_ref().map(Self::user).transpose()
            }

            async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
                let sql = format!("SELECT {USER_COLS} FROM users WHERE email_lower = $1");
                sqlx::query(&sql)
                    .bind(email.to_lowercase())
                    .fetch_optional(&self.0)
                    .await?
                    .as_ref()
                    .map(Self::user)
                    .transpose()
            }

            async fn count_admins(&self) -> Result<i64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = $1")
                    .bind(Role::Admin.as_str())
                    .fetch_one(&self.0)
                    .await?;
                Ok(n)
            }

            async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>> {
                let sql = format!("SELECT {USER_COLS} FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2");
                let rows = sqlx::query(&sql).bind(limit).bind(offset).fetch_all(&self.0).await?;
                rows.iter().map(Self::user).collect()
            }

            async fn update_user(&self, id: &str, role: Option<Role>, disabled: Option<bool>, display_name: Option<&str>) -> Result<Option<User>> {
                sqlx::query(
                    "UPDATE users SET role = COALESCE($1, role), disabled = COALESCE($2, disabled), \
                     display_name = COALESCE($3, display_name) WHERE id = $4",
                )
                .bind(role.map(|r| r.as_str()))
                .bind(disabled)
                .bind(display_name)
                .bind(id)
                .execute(&self.0)
                .await?;
                self.user_by_id(id).await
            }

            async fn set_password(&self, id: &str, password_hash: &str) -> Result<()> {
                sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(id)
                    .execute(&self.0)
                    .await?;
                Ok(())
            }

            async fn ensure_signing_key(&self, k: &SigningKey) -> Result<Vec<SigningKey>> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, purpose, secret, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING",
                )
                .bind(&k.kid)
                .bind(&k.purpose)
                .bind(&k.secret)
                .bind(k.created_at)
                .execute(&self.0)
                .await?;
                self.signing_keys(&k.purpose).await
            }

            async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKey>> {
                let rows = sqlx::query(
                    "SELECT kid, purpose, secret, created_at FROM signing_keys WHERE purpose = $1 ORDER BY created_at, kid",
                )
                .bind(purpose)
                .fetch_all(&self.0)
                .await?;
                rows.iter().map(Self::key).collect()
            }

            async fn retire_signing_keys(&self, purpose: &str, superseded_by: Millis) -> Result<u64> {
                // Older than the newest key created by `superseded_by`; with
                // none that old, the subquery is NULL and nothing matches.
                let r = sqlx::query(
                    "DELETE FROM signing_keys WHERE purpose = $1 AND created_at < \
                     (SELECT MAX(created_at) FROM signing_keys WHERE purpose = $1 AND created_at <= $2)",
                )
                .bind(purpose)
                .bind(superseded_by)
                .execute(&self.0)
                .await?;
                Ok(r.rows_affected())
            }

            async fn create_session(&self, s: &Session, first_token_hash: &str) -> Result<()> {
                let mut tx = self.0.begin().await?;
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
                )
                .bind(&s.id)
                .bind(&s.user_id)
                .bind(s.created_at)
                .bind(s.last_used_at)
                .bind(s.expires_at)
                .bind(&s.user_agent)
                .bind(&s.ip)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at, rotated_at) VALUES ($1, $2, $3, NULL)")
                    .bind(first_token_hash)
                    .bind(&s.id)
                    .bind(s.created_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_refresh_token(&self, old_hash: &str, new_hash: &str, now: Millis) -> Result<RotateOutcome> {
                let mut tx = self.0.begin().await?;
                let rotated = sqlx::query(
                    "UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL \
                     AND session_id IN (SELECT id FROM sessions WHERE revoked_at IS NULL AND expires_at > $3)",
                )
                .bind(now)
                .bind(old_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let row = sqlx::query(
                    "SELECT t.session_id, t.rotated_at, s.user_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                     WHERE t.token_hash = $1",
                )
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(RotateOutcome::Invalid) };
                let session_id: String = row.try_get("session_id")?;
                let user_id: String = row.try_get("user_id")?;
                if rotated == 1 {
                    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at, rotated_at) VALUES ($1, $2, $3, NULL)")
                        .bind(new_hash)
                        .bind(&session_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(&session_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(RotateOutcome::Rotated { user_id, session_id });
                }
                let rotated_at: Option<Millis> = row.try_get("rotated_at")?;
                if rotated_at.is_some() {
                    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(now)
                        .bind(&session_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(RotateOutcome::Reused);
                }
                Ok(RotateOutcome::Invalid)
            }

            async fn session_by_token(&self, token_hash: &str) -> Result<Option<Session>> {
                let sql = format!(
                    "SELECT {SESSION_COLS} FROM sessions WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)"
                );
                sqlx::query(&sql).bind(token_hash).fetch_optional(&self.0).await?.as_ref().map(Self::session).transpose()
            }

            async fn session_live(&self, session_id: &str, now: Millis) -> Result<bool> {
                let live: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
                )
                .bind(session_id)
                .bind(now)
                .fetch_one(&self.0)
                .await?;
                Ok(live > 0)
            }

            async fn revoke_session(&self, user_id: &str, session_id: &str, now: Millis) -> Result<bool> {
                let n = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(session_id)
                    .bind(user_id)
                    .execute(&self.0)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn revoke_sessions_except(&self, user_id: &str, keep: Option<&str>, now: Millis) -> Result<()> {
                sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3")
                    .bind(now)
                    .bind(user_id)
                    .bind(keep.unwrap_or(""))
                    .execute(&self.0)
                    .await?;
                Ok(())
            }

            async fn list_sessions(&self, user_id: &str, now: Millis) -> Result<Vec<Session>> {
                let sql = format!(
                    "SELECT {SESSION_COLS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY last_used_at DESC"
                );
                let rows = sqlx::query(&sql).bind(user_id).bind(now).fetch_all(&self.0).await?;
                rows.iter().map(Self::session).collect()
            }

            async fn totp_state(&self, user_id: &str) -> Result<Option<TotpState>> {
                let row = sqlx::query(
                    "SELECT totp_secret, totp_pending, totp_last_step, totp_failures, totp_locked_until FROM users WHERE id = $1",
                )
                .bind(user_id)
                .fetch_optional(&self.0)
                .await?;
                row.map(|r| {
                    Ok(TotpState {
                        secret: r.try_get("totp_secret")?,
                        pending: r.try_get("totp_pending")?,
                        last_step: r.try_get("totp_last_step")?,
                        failures: r.try_get("totp_failures")?,
                        locked_until: r.try_get("totp_locked_until")?,
                    })
                })
                .transpose()
            }

            async fn set_totp_pending(&self, user_id: &str, secret: &str) -> Result<()> {
                sqlx::query("UPDATE users SET totp_pending = $1 WHERE id = $2")
                    .bind(secret)
                    .bind(user_id)
                    .execute(&self.0)
                    .await?;
                Ok(())
            }

            async fn enable_totp(&self, user_id: &str, secret: &str, step: i64, recovery_hashes: &[String]) -> Result<bool> {
                let mut tx = self.0.begin().await?;
                let n = sqlx::query(
                    "UPDATE users SET mfa_enabled = TRUE, totp_secret = totp_pending, totp_pending = NULL, \
                     totp_last_step = $1, totp_failures = 0, totp_locked_until = 0 \
                     WHERE id = $2 AND totp_pending = $3 AND mfa_enabled = FALSE",
                )
                .bind(step)
                .bind(user_id)
                .bind(secret)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                for h in recovery_hashes {
                    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, used_at) VALUES ($1, $2, NULL)")
                        .bind(user_id)
                        .bind(h)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn disable_totp(&self, user_id: &str) -> Result<()> {
                let mut tx = self.0.begin().await?;
                sqlx::query(
                    "UPDATE users SET mfa_enabled = FALSE, totp_secret = NULL, totp_pending = NULL, totp_failures = 0, \
                     totp_locked_until = 0 WHERE id = $1",
                )
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE users SET totp_last_step = $1, totp_failures = 0, totp_locked_until = 0 \
                     WHERE id = $2 AND totp_last_step < $1",
                )
                .bind(step)
                .bind(user_id)
                .execute(&self.0)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn use_recovery_code(&self, user_id: &str, code_hash: &str, now: Millis) -> Result<bool> {
                let mut tx = self.0.begin().await?;
                let n = sqlx::query(
                    "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                )
                .bind(now)
                .bind(user_id)
                .bind(code_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    sqlx::query("UPDATE users SET totp_failures = 0, totp_locked_until = 0 WHERE id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn reserve_totp_attempt(&self, user_id: &str, now: Millis, every: i64, lock_ms: i64) -> Result<Option<Millis>> {
                let mut tx = self.0.begin().await?;
                // The row stays locked to this transaction until it commits
                // (SQLite: the write lock; PostgreSQL: the row lock, and a
                // waiting UPDATE re-checks its WHERE on the row as committed).
                let failures: Option<i64> = sqlx::query_scalar(
                    "UPDATE users SET totp_failures = totp_failures + 1 WHERE id = $1 AND totp_locked_until <= $2 \
                     RETURNING totp_failures",
                )
                .bind(user_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(failures) = failures else {
                    let locked: Option<Millis> = sqlx::query_scalar("SELECT totp_locked_until FROM users WHERE id = $1")
                        .bind(user_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    // No such user: nothing to lock.
                    return Ok(locked);
                };
                if every > 0 && failures % every == 0 {
                    let doublings = (failures / every - 1).clamp(0, 20) as u32;
                    const DAY_MS: i64 = 86_400_000;
                    let lock = lock_ms.saturating_mul(1i64 << doublings).min(DAY_MS);
                    sqlx::query("UPDATE users SET totp_locked_until = $1 WHERE id = $2")
                        .bind(now + lock)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(None)
            }

            async fn invite_usable(&self, code_hash: &str, now: Millis) -> Result<bool> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM invites WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(code_hash)
                .bind(now)
                .fetch_one(&self.0)
                .await?;
                Ok(n > 0)
            }

            async fn create_invite(&self, i: &Invite) -> Result<()> {
                sqlx::query(
                    "INSERT INTO invites (code_hash, role, created_by, created_at, expires_at, used_by, used_at) \
                     VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
                )
                .bind(&i.code_hash)
                .bind(i.role.as_str())
                .bind(&i.created_by)
                .bind(i.created_at)
                .bind(i.expires_at)
                .execute(&self.0)
                .await?;
                Ok(())
            }

            async fn create_user_with_invite(&self, u: &User, code_hash: &str, now: Millis) -> Result<Option<User>> {
                let mut tx = self.0.begin().await?;
                let role: Option<String> = sqlx::query_scalar(
                    "UPDATE invites SET used_at = $1, used_by = $2 WHERE code_hash = $3 AND used_at IS NULL AND expires_at > $1 \
                     RETURNING role",
                )
                .bind(now)
                .bind(&u.id)
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(role) = role else { return Ok(None) };
                let user = User { role: parse("role", role)?, ..u.clone() };
                // A taken e-mail fails here; dropping `tx` un-uses the invite.
                insert_user(&user).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(user))
            }

            async fn record_view(&self, b: &ViewBeacon) -> Result<()> {
                // Watched seconds grow at most as fast as the clock since the
                // session's first report (plus slack for the player's own
                // buffering of reports): a forged report cannot claim hours.
                const SLACK_S: f64 = 30.0;
                // ($9: the reported seconds; the new row's own are capped at the slack.)
                let watched = format!(
                    "CASE WHEN $9 > ($5 - view_sessions.started_at) / 1000.0 + {SLACK_S} \
                     THEN ($5 - view_sessions.started_at) / 1000.0 + {SLACK_S} ELSE $9 END"
                );
                let upsert = format!(
                    "INSERT INTO view_sessions (video_id, session_id, viewer_key, day, started_at, updated_at, \
                     watched_s, max_position_s, played, ended, rendition) \
                     VALUES ($1, $2, $3, $4, $5, $5, $6, $7, FALSE, FALSE, $8) \
                     ON CONFLICT (video_id, session_id) DO UPDATE SET updated_at = $5, \
                     watched_s = CASE WHEN {watched} > view_sessions.watched_s THEN {watched} ELSE view_sessions.watched_s END, \
                     max_position_s = CASE WHEN excluded.max_position_s > view_sessions.max_position_s \
                     THEN excluded.max_position_s ELSE view_sessions.max_position_s END, \
                     rendition = COALESCE(excluded.rendition, view_sessions.rendition) \
                     WHERE view_sessions.viewer_key = excluded.viewer_key"
                );
                let mut tx = self.0.begin().await?;
                sqlx::query(&upsert)
                    .bind(&b.video_id)
                    .bind(&b.session_id)
                    .bind(&b.viewer_key)
                    .bind(&b.day)
                    .bind(b.now)
                    .bind(b.watched_s.min(SLACK_S))
                    .bind(b.position_s)
                    .bind(&b.rendition)
                    .bind(b.watched_s)
                    .execute(&mut *tx)
                    .await?;
                if b.play {
                    let first = sqlx::query(
                        "UPDATE view_sessions SET played = TRUE WHERE video_id = $1 AND session_id = $2 \
                         AND viewer_key = $3 AND played = FALSE",
                    )
                    .bind(&b.video_id)
                    .bind(&b.session_id)
                    .bind(&b.viewer_key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if first == 1 {
                        sqlx::query("UPDATE videos SET views = views + 1 WHERE id = $1")
                            .bind(&b.video_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if b.ended {
                    sqlx::query("UPDATE view_sessions SET ended = TRUE WHERE video_id = $1 AND session_id = $2 AND viewer_key = $3")
                        .bind(&b.video_id)
                        .bind(&b.session_id)
                        .bind(&b.viewer_key)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn fold_view_sessions(&self, idle_before: Millis, limit: i64) -> Result<u64> {
                use std::collections::{BTreeMap, BTreeSet};
                let mut tx = self.0.begin().await?;
                // A row that two nodes' DELETEs both pick is returned to one
                // of them only: each session is counted once.
                let gone = sqlx::query(
                    "DELETE FROM view_sessions WHERE (video_id, session_id) IN \
                     (SELECT video_id, session_id FROM view_sessions WHERE updated_at < $1 ORDER BY updated_at LIMIT $2) \
                     RETURNING video_id, day, viewer_key, played, watched_s",
                )
                .bind(idle_before)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut days: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
                let mut viewers: BTreeSet<(String, String)> = BTreeSet::new();
                for r in &gone {
                    let video: String = r.try_get("video_id")?;
                    let played: bool = r.try_get("played")?;
                    if played {
                        viewers.insert((video.clone(), r.try_get("viewer_key")?));
                    }
                    let d = days.entry((video, r.try_get("day")?)).or_default();
                    d.0 += i64::from(played);
                    d.1 += r.try_get::<f64, _>("watched_s")?;
                }
                for ((video, day), (views, watched)) in &days {
                    sqlx::query(
                        "INSERT INTO view_days (video_id, day, views, watch_time_s) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (video_id, day) DO UPDATE SET views = view_days.views + excluded.views, \
                         watch_time_s = view_days.watch_time_s + excluded.watch_time_s",
                    )
                    .bind(video)
                    .bind(day)
                    .bind(views)
                    .bind(watched)
                    .execute(&mut *tx)
                    .await?;
                }
                for (video, key) in &viewers {
                    sqlx::query("INSERT INTO video_viewers (video_id, viewer_key) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(video)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(gone.len() as u64)
            }

            async fn video_stats(&self, video_id: &str) -> Result<VideoStats> {
                // Folded sessions (view_days, video_viewers) and live ones.
                let views: Option<i64> = sqlx::query_scalar("SELECT views FROM videos WHERE id = $1")
                    .bind(video_id)
                    .fetch_optional(&self.0)
                    .await?;
                let row = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM (SELECT viewer_key FROM video_viewers WHERE video_id = $1 \
                     UNION SELECT viewer_key FROM view_sessions WHERE video_id = $1 AND played) AS u) AS uniq, \
                     COALESCE((SELECT SUM(watch_time_s) FROM view_days WHERE video_id = $1), 0.0) \
                     + COALESCE((SELECT SUM(watched_s) FROM view_sessions WHERE video_id = $1), 0.0) AS watched",
                )
                .bind(video_id)
                .fetch_one(&self.0)
                .await?;
                let days = sqlx::query(
                    "SELECT day, CAST(SUM(views) AS BIGINT) AS views, SUM(watched) AS watched FROM \
                     (SELECT day, views, watch_time_s AS watched FROM view_days WHERE video_id = $1 \
                     UNION ALL SELECT day, CASE WHEN played THEN 1 ELSE 0 END, watched_s FROM view_sessions \
                     WHERE video_id = $1) AS t GROUP BY day ORDER BY day",
                )
                .bind(video_id)
                .fetch_all(&self.0)
                .await?;
                Ok(VideoStats {
                    views: views.unwrap_or(0),
                    unique_viewers: row.try_get("uniq")?,
                    watch_time_s: row.try_get("watched")?,
                    by_day: days
                        .iter()
                        .map(|r| Ok((r.try_get("day")?, r.try_get("views")?, r.try_get("watched")?)))
                        .collect::<Result<_>>()?,
                })
            }

            async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
                sqlx::query(
                    "INSERT INTO audit_log (id, at, actor_id, action, target, ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&e.id)
                .bind(e.at)
                .bind(&e.actor_id)
                .bind(&e.action)
                .bind(&e.target)
                .bind(&e.ip)
                .bind(&e.detail)
                .execute(&self.0)
                .await?;
                Ok(())
            }

            async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
                let mut b = sqlx::QueryBuilder::<$db>::new(
                    "SELECT a.id, a.at, a.actor_id, u.email AS actor_email, a.action, a.target, a.ip, a.detail \
                     FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id WHERE 1=1",
                );
                if let Some(action) = &q.action {
                    b.push(" AND a.action = ").push_bind(action.clone());
                }
                if let Some(actor) = &q.actor_id {
                    b.push(" AND a.actor_id = ").push_bind(actor.clone());
                }
                if let Some((at, id)) = &q.before {
                    b.push(" AND (a.at < ").push_bind(*at);
                    b.push(" OR (a.at = ").push_bind(*at);
                    b.push(" AND a.id < ").push_bind(id.clone());
                    b.push("))");
                }
                b.push(" ORDER BY a.at DESC, a.id DESC LIMIT ").push_bind(q.limit);
                let rows = b.build().fetch_all(&self.0).await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditEntry {
                            id: r.try_get("id")?,
                            at: r.try_get("at")?,
                            actor_id: r.try_get("actor_id")?,
                            actor_email: r.try_get("actor_email")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            ip: r.try_get("ip")?,
                            detail: r.try_get("detail")?,
                        })
                    })
                    .collect()
            }

            async fn get_video(&self, id: &str) -> Result<Option<Video>> {
                let sql = format!("{VIDEO_SELECT} WHERE v.id = $1");
                sqlx::query(&sql).bind(id).fetch_optional(&self.0).await?.as_ref().map(Self::video).transpose()
            }

            async fn update_video_meta(&self, id: &str, p: &VideoPatch) -> Result<()> {
                let tags = p.tags.as_ref().map(|t| serde_json::to_string(t).expect("strings serialize"));
                sqlx::query(
                    "UPDATE videos SET title = COALESCE($1, title), description = COALESCE($2, description), \
                     tags = COALESCE($3, tags), visibility = COALESCE($4, visibility) WHERE id = $5",
                )
                .bind(&p.title)
                .bind(&p.description)
                .bind(tags)
                .bind(p.visibility.map(|v| v.as_str()))
                .bind(id)
                .execute(&self.0)
                .await?;
                Ok(())
            }

            async fn delete_video(&self, id: &str, now: Millis, retry_at: Millis) -> Result<Option<DeletedVideo>> {
                let mut tx = self.0.begin().await?;
                let sql = format!("DELETE FROM uploads WHERE video_id = $1 RETURNING {UPLOAD_COLS}");
                let upload = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?.as_ref().map(Self::upload).transpose()?;
                let n = sqlx::query("DELETE FROM videos WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
                if n == 0 {
                    return Ok(None);
                }
                let store_upload_id = upload.as_ref().and_then(|u| u.store_upload_id.clone());
                let (cleanup_id,): (i64,) = sqlx::query_as(
                    "INSERT INTO store_cleanup (video_id, store_upload_id, attempts, next_at, created_at) \
                     VALUES ($1, $2, 0, $3, $4) RETURNING id",
                )
                .bind(id)
                .bind(&store_upload_id)
                .bind(retry_at)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(DeletedVideo {
                    cleanup: StoreCleanup { id: cleanup_id, video_id: id.to_owned(), store_upload_id, attempts: 0 },
                    upload,
                }))
            }

            async fn due_cleanups(&self, now: Millis, limit: i64) -> Result<Vec<StoreCleanup>> {
                let rows: Vec<(i64, String, Option<String>, i64)> = sqlx::query_as(
                    "SELECT id, video_id, store_upload_id, attempts FROM store_cleanup WHERE next_at <= $1 ORDER BY next_at, id LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&self.0)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, video_id, store_upload_id, attempts)| StoreCleanup { id, video_id, store_upload_id, attempts })
                    .collect())
            }

            async fn finish_cleanup(&self, id: i64) -> Result<()> {
                sqlx::query("DELETE FROM store_cleanup WHERE id = $1").bind(id).execute(&self.0).await?;
                Ok(())
            }

            async fn claim_cleanup(&self, id: i64, now: Millis, until: Millis) -> Result<bool> {
                let n = sqlx::query("UPDATE store_cleanup SET attempts = attempts + 1, next_at = $1 WHERE id = $2 AND next_at <= $3")
                    .bind(until)
                    .bind(id)
                    .bind(now)
                    .execute(&self.0)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn list_videos(&self, q: &VideoQuery) -> Result<Vec<Video>> {
                let mut b = sqlx::QueryBuilder::<$db>::new(VIDEO_SELECT);
                b.push(" WHERE 1=1");
                match &q.viewer {
                    Viewer::Anonymous => {
                        b.push(" AND v.visibility = 'public' AND v.status = 'ready'");
                    }
                    Viewer::User { admin: true, .. } => {}
                    Viewer::User { id, .. } => {
                        b.push(" AND ((v.visibility = 'public' AND v.status = 'ready') OR v.owner_id = ");
                        b.push_bind(id.clone());
                        b.push(")");
                    }
                }
                if let Some(owner) = &q.owner {
                    b.push(" AND v.owner_id = ").push_bind(owner.clone());
                }
                if let Some(status) = q.status {
                    b.push(" AND v.status = ").push_bind(status.as_str());
                }
                if let Some(tag) = &q.tag {
                    let quoted = serde_json::to_string(tag).expect("strings serialize");
                    b.push(" AND lower(v.tags) LIKE ").push_bind(like_pattern(&quoted)).push(" ESCAPE '\\'");
                }
                if let Some(text) = &q.q {
                    let pat = like_pattern(text);
                    b.push(" AND (lower(v.title) LIKE ").push_bind(pat.clone()).push(" ESCAPE '\\'");
                    b.push(" OR lower(v.description) LIKE ").push_bind(pat.clone()).push(" ESCAPE '\\'");
                    b.push(" OR lower(v.tags) LIKE ").push_bind(pat).push(" ESCAPE '\\')");
                }
                match (q.sort, &q.after) {
                    (_, None) | (Sort::Relevance, _) => {}
                    (Sort::Recent, Some((_, at, id))) => {
                        b.push(" AND (v.created_at < ").push_bind(*at);
                        b.push(" OR (v.created_at = ").push_bind(*at).push(" AND v.id < ").push_bind(id.clone()).push("))");
                    }
                    (Sort::Popular, Some((views, at, id))) => {
                        b.push(" AND (v.views < ").push_bind(*views);
                        b.push(" OR (v.views = ").push_bind(*views).push(" AND v.created_at < ").push_bind(*at);
                        b.push(") OR (v.views = ").push_bind(*views).push(" AND v.created_at = ").push_bind(*at);
                        b.push(" AND v.id < ").push_bind(id.clone()).push("))");
                    }
                }
                match (q.sort, &q.q) {
                    (Sort::Popular, _) => {
                        b.push(" ORDER BY v.views DESC, v.created_at DESC, v.id DESC");
                    }
                    (Sort::Relevance, Some(text)) => {
                        // Weights: the title as typed, a title starting
                        // with it, in the title, in the tags, in the description.
                        let lower = text.to_lowercase();
                        let pat = like_pattern(text);
                        let prefix = format!("{}%", &pat[1..pat.len() - 1]);
                        b.push(" ORDER BY (CASE WHEN lower(v.title) = ").push_bind(lower);
                        b.push(" THEN 8 ELSE 0 END) + (CASE WHEN lower(v.title) LIKE ").push_bind(prefix);
                        b.push(" ESCAPE '\\' THEN 4 ELSE 0 END) + (CASE WHEN lower(v.title) LIKE ").push_bind(pat.clone());
                        b.push(" ESCAPE '\\' THEN 4 ELSE 0 END) + (CASE WHEN lower(v.tags) LIKE ").push_bind(pat.clone());
                        b.push(" ESCAPE '\\' THEN 2 ELSE 0 END) + (CASE WHEN lower(v.description) LIKE ").push_bind(pat);
                        b.push(" ESCAPE '\\' THEN 1 ELSE 0 END) DESC, v.created_at DESC, v.id DESC");
                    }
                    _ => {
                        b.push(" ORDER BY v.created_at DESC, v.id DESC");
                    }
                }
                b.push(" LIMIT ").push_bind(q.limit);
                if q.sort == Sort::Relevance {
                    b.push(" OFFSET ").push_bind(q.offset);
                }
                let rows = b.build().fetch_all(&self.0).await?;
                rows.iter().map(Self::video).collect()
            }

            async fn create_upload(&self, v: &Video, u: &Upload) -> Result<()> {
                $create_upload(&self.0, &self.1, v, u).await
            }

            async fn upload_by_video(&self, video_id: &str) -> Result<Option<Upload>> {
                let sql = format!("SELECT {UPLOAD_COLS} FROM uploads WHERE video_id = $1");
                sqlx::query(&sql).bind(video_id).fetch_optional(&self.0).await?.as_ref().map(Self::upload).transpose()
            }

            async fn upload_by_id(&self, upload_id: &str) -> Result<Option<Upload>> {
                let sql = format!("SELECT {UPLOAD_COLS} FROM uploads WHERE upload_id = $1");
                sqlx::query(&sql).bind(upload_id).fetch_optional(&self.0).await?.as_ref().map(Self::upload).transpose()
            }

            async fn completed_by(&self, upload_id: &str) -> Result<Option<Video>> {
                let sql = format!("{VIDEO_SELECT} WHERE v.completed_upload_id = $1");
                sqlx::query(&sql).bind(upload_id).fetch_optional(&self.0).await?.as_ref().map(Self::video).transpose()
            }

            async fn completed_with(&self, video_id: &str, method: UploadMethod) -> Result<Option<Video>> {
                let sql = format!("{VIDEO_SELECT} WHERE v.id = $1 AND v.completed_upload_method = $2");
                sqlx::query(&sql)
                    .bind(video_id)
                    .bind(method.as_str())
                    .fetch_optional(&self.0)
                    .await?
                    .as_ref()
                    .map(Self::video)
                    .transpose()
            }

            async fn set_store_upload_id(&self, video_id: &str, store_upload_id: &str) -> Result<()> {
                sqlx::query("UPDATE uploads SET store_upload_id = $1 WHERE video_id = $2")
                    .bind(store_upload_id)
                    .bind(video_id)
                    .execute(&self.0)
                    .await?;
                Ok(())
            }

            async fn uploads_of(&self, owner_id: &str) -> Result<Vec<Upload>> {
                let sql = format!("SELECT {UPLOAD_COLS} FROM uploads WHERE owner_id = $1 ORDER BY created_at DESC");
                let rows = sqlx::query(&sql).bind(owner_id).fetch_all(&self.0).await?;
                rows.iter().map(Self::upload).collect()
            }

            async fn finish_upload(&self, video_id: &str, d: &UploadDone) -> Result<bool> {
                let mut tx = self.0.begin().await?;
                let upload: Option<(String, String)> =
                    sqlx::query_as("DELETE FROM uploads WHERE video_id = $1 RETURNING upload_id, method")
                        .bind(video_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((upload_id, method)) = upload else {
                    return Ok(false);
                };
                sqlx::query(
                    "UPDATE videos SET status = 'uploaded', size_bytes = $1, content_type = $2, uploaded_at = $3, progress = 0, \
                     completed_upload_id = $4, completed_upload_method = $5 WHERE id = $6",
                )
                .bind(d.size_bytes)
                .bind(&d.content_type)
                .bind(d.uploaded_at)
                .bind(&upload_id)
                .bind(&method)
                .bind(video_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    INSERT_QUEUED_JOB,
                )
                .bind(&d.job_id)
                .bind(video_id)
                .bind(d.max_attempts)
                .bind(d.uploaded_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn claim_job(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Option<Job>> {
                let sql = format!(
                    "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires = $2, attempts = attempts + 1, \
                     updated_at = $3 WHERE id = (SELECT id FROM jobs WHERE ((state IN ('queued', 'failed') AND run_at <= $3) \
                     OR (state = 'running' AND lease_expires < $3)) ORDER BY run_at, id LIMIT 1 {}) RETURNING {JOB_COLS}",
                    $claim_lock
                );
                sqlx::query(&sql)
                    .bind(owner)
                    .bind(now + lease_ms)
                    .bind(now)
                    .fetch_optional(&self.0)
                    .await?
                    .as_ref()
                    .map(Self::job)
                    .transpose()
            }

            async fn renew_job(&self, id: &str, owner: &str, now: Millis, lease_ms: i64) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE jobs SET lease_expires = $1, updated_at = $2 WHERE id = $3 AND lease_owner = $4 AND state = 'running'",
                )
                .bind(now + lease_ms)
                .bind(now)
                .bind(id)
                .bind(owner)
                .execute(&self.0)
                .await?
                .rows_affected();
                Ok(n == 1)
            }


            async fn fail_job(&self, id: &str, owner: &str, error: &str, retry_at: Option<Millis>, now: Millis) -> Result<bool> {
                let state = if retry_at.is_some() { "failed" } else { "dead" };
                let r = sqlx::query(
                    "UPDATE jobs SET state = $1, run_at = COALESCE($2, run_at), lease_owner = NULL, lease_expires = NULL, \
                     last_error = $3, updated_at = $4 WHERE id = $5 AND lease_owner = $6",
                )
                .bind(state)
                .bind(retry_at)
                .bind(error)
                .bind(now)
                .bind(id)
                .bind(owner)
                .execute(&self.0)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn release_job(&self, id: &str, owner: &str, now: Millis, run_at: Millis) -> Result<bool> {
                let r = sqlx::query(
                    "UPDATE jobs SET state = 'queued', run_at = $4, lease_owner = NULL, lease_expires = NULL, \
                     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = $1 \
                     WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
                )
                .bind(now)
                .bind(id)
                .bind(owner)
                .bind(run_at)
                .execute(&self.0)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn list_jobs(&self, state: Option<&str>, limit: i64) -> Result<Vec<Job>> {
                let sql = format!(
                    "SELECT {JOB_COLS} FROM jobs WHERE ($1 IS NULL OR state = $1) ORDER BY updated_at DESC, id DESC LIMIT $2"
                );
                let rows = sqlx::query(&sql).bind(state).bind(limit).fetch_all(&self.0).await?;
                rows.iter().map(Self::job).collect()
            }

            async fn count_jobs(&self, state: &str) -> Result<i64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = $1")
                    .bind(state)
                    .fetch_one(&self.0)
                    .await?;
                Ok(n)
            }

            async fn retry_job(&self, id: &str, now: Millis) -> Result<Option<Job>> {
                let mut tx = self.0.begin().await?;
                let sql = format!(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $1, last_error = NULL, updated_at = $1 \
                     WHERE id = $2 AND state = 'dead' AND NOT EXISTS (SELECT 1 FROM jobs AS pending \
                     WHERE pending.video_id = jobs.video_id AND pending.state IN ('queued', 'running', 'failed')) \
                     RETURNING {JOB_COLS}"
                );
                let row = match sqlx::query(&sql).bind(now).bind(id).fetch_optional(&mut *tx).await {
                    // Another job of the video became pending meanwhile (jobs_one_pending).
                    Err(e) if is_unique_violation(&e) => return Ok(None),
                    other => other?,
                };
                let Some(job) = row.as_ref().map(Self::job).transpose()? else { return Ok(None) };
                sqlx::query("UPDATE videos SET status = 'uploaded', error = NULL, progress = 0, step = NULL WHERE id = $1")
                    .bind(&job.video_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(job))
            }

            async fn enqueue_processing(&self, video_id: &str, job_id: &str, max_attempts: i64, now: Millis) -> Result<bool> {
                let mut tx = self.0.begin().await?;
                let n = sqlx::query(
                    "UPDATE videos SET status = 'uploaded', error = NULL, progress = 0, step = NULL WHERE id = $1 \
                     AND status <> 'awaiting_upload' AND NOT EXISTS \
                     (SELECT 1 FROM jobs WHERE video_id = $1 AND state IN ('queued', 'running', 'failed'))",
                )
                .bind(video_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Ok(false);
                }
                let inserted = sqlx::query(INSERT_QUEUED_JOB)
                    .bind(job_id)
                    .bind(video_id)
                    .bind(max_attempts)
                    .bind(now)
                    .execute(&mut *tx)
                    .await;
                match inserted {
                    // Another job of the video became pending meanwhile (jobs_one_pending).
                    Err(e) if is_unique_violation(&e) => return Ok(false),
                    other => other?,
                };
                // The new run supersedes the video's dead letters: an admin
                // retrying one would run the video a second time, and they
                // would count in `vidhost_jobs_dead` (and its alert) for good.
                sqlx::query("DELETE FROM jobs WHERE video_id = $1 AND state = 'dead'")
                    .bind(video_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            fn video_changes(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>> {
                self.2.$listen(&self.0);
                self.2.subscribe()
            }

            async fn set_video_progress(&self, id: &str, status: VideoStatus, step: Option<&str>, progress: f64) -> Result<()> {
                sqlx::query("UPDATE videos SET status = $1, step = $2, progress = $3 WHERE id = $4")
                    .bind(status.as_str())
                    .bind(step)
                    .bind(progress)
                    .bind(id)
                    .execute(&self.0)
                    .await?;
                self.2.$announce(&self.0, id).await;
                Ok(())
            }

            async fn set_video_media(&self, id: &str, duration_s: f64, width: i64, height: i64) -> Result<()> {
                sqlx::query("UPDATE videos SET duration_s = $1, width = $2, height = $3 WHERE id = $4")
                    .bind(duration_s)
                    .bind(width)
                    .bind(height)
                    .bind(id)
                    .execute(&self.0)
                    .await?;
                Ok(())
            }

            async fn set_video_ready(&self, id: &str, renditions: &[Rendition], outputs: &Outputs, job: &str, owner: &str, now: Millis) -> Result<()> {
                let mut tx = self.0.begin().await?;
                sqlx::query(
                    "UPDATE videos SET status = 'ready', step = NULL, progress = 1, error = NULL, ready_at = $1, \
                     renditions = $2, outputs = $3 WHERE id = $4",
                )
                .bind(now)
                .bind(serde_json::to_string(renditions).expect("serializable"))
                .bind(serde_json::to_string(outputs).expect("serializable"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(FINISH_JOB).bind(now).bind(job).bind(owner).execute(&mut *tx).await?;
                tx.commit().await?;
                self.2.$announce(&self.0, id).await;
                Ok(())
            }

            async fn set_video_outputs(&self, id: &str, renditions: &[Rendition], outputs: &Outputs) -> Result<()> {
                sqlx::query("UPDATE videos SET renditions = $1, outputs = $2 WHERE id = $3")
                    .bind(serde_json::to_string(renditions).expect("serializable"))
                    .bind(serde_json::to_string(outputs).expect("serializable"))
                    .bind(id)
                    .execute(&self.0)
                    .await?;
                Ok(())
            }

            async fn set_video_failed(&self, id: &str, error: &str) -> Result<()> {
                sqlx::query("UPDATE videos SET status = 'failed', step = NULL, error = $1 WHERE id = $2")
                    .bind(error)
                    .bind(id)
                    .execute(&self.0)
                    .await?;
                self.2.$announce(&self.0, id).await;
                Ok(())
            }

            async fn acquire_lease(&self, video_id: &str, owner: &str, now: Millis, ttl_ms: i64) -> Result<Lease> {
                let n = sqlx::query(
                    "UPDATE uploads SET lease_owner = $1, lease_expires = $2, lease_steal = FALSE \
                     WHERE video_id = $3 AND (lease_owner IS NULL OR lease_expires <= $4)",
                )
                .bind(owner)
                .bind(now + ttl_ms)
                .bind(video_id)
                .bind(now)
                .execute(&self.0)
                .await?
                .rows_affected();
                if n == 1 {
                    return Ok(Lease::Acquired);
                }
                let exists: Option<String> = sqlx::query_scalar("SELECT video_id FROM uploads WHERE video_id = $1")
                    .bind(video_id)
                    .fetch_optional(&self.0)
                    .await?;
                Ok(if exists.is_some() { Lease::Held } else { Lease::Missing })
            }

            async fn request_lease_steal(&self, video_id: &str) -> Result<()> {
                sqlx::query("UPDATE uploads SET lease_steal = TRUE WHERE video_id = $1 AND lease_owner IS NOT NULL")
                    .bind(video_id)
                    .execute(&self.0)
                    .await?;
                Ok(())
            }

            async fn renew_lease(&self, video_id: &str, owner: &str, now: Millis, ttl_ms: i64) -> Result<Renewal> {
                let steal: Option<bool> = sqlx::query_scalar(
                    "UPDATE uploads SET lease_expires = $1 WHERE video_id = $2 AND lease_owner = $3 RETURNING lease_steal",
                )
                .bind(now + ttl_ms)
                .bind(video_id)
                .bind(owner)
                .fetch_optional(&self.0)
                .await?;
                Ok(match steal {
                    None => Renewal::Lost,
                    Some(true) => Renewal::StealRequested,
                    Some(false) => Renewal::Kept,
                })
            }

            async fn release_lease(&self, video_id: &str, owner: &str) -> Result<()> {
                sqlx::query(
                    "UPDATE uploads SET lease_owner = NULL, lease_expires = NULL, lease_steal = FALSE \
                     WHERE video_id = $1 AND lease_owner = $2",
                )
                .bind(video_id)
                .bind(owner)
                .execute(&self.0)
                .await?;
                Ok(())
            }

            async fn advance_offset(&self, video_id: &str, owner: &str, from: i64, to: i64) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE uploads SET received = $1 WHERE video_id = $2 AND lease_owner = $3 AND received = $4",
                )
                .bind(to)
                .bind(video_id)
                .bind(owner)
                .bind(from)
                .execute(&self.0)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn expired_uploads(&self, now: Millis, limit: i64) -> Result<Vec<Upload>> {
                let sql = format!("SELECT {UPLOAD_COLS} FROM uploads WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2");
                let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&self.0).await?;
                rows.iter().map(Self::upload).collect()
            }

            async fn count_uploads_by_method(&self) -> Result<Vec<(String, i64)>> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT method, COUNT(*) FROM uploads GROUP BY method")
                        .fetch_all(&self.0)
                        .await?;
                Ok(rows)
            }
        }
    };
}

catalog_impl!(
    SqliteCatalog,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    "sqlite",
    "./migrations/sqlite",
    // One writer at a time: the UPDATE itself is the lock.
    "",
    crate::batch::create_upload_sqlite,
    announce_sqlite,
    listen_sqlite
);
catalog_impl!(
    PgCatalog,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    "postgres",
    "./migrations/postgres",
    // Concurrent workers skip rows another transaction is claiming.
    "FOR UPDATE SKIP LOCKED",
    crate::batch::create_upload_pg,
    announce_pg,
    listen_pg
);

#[cfg(test)]
mod tests {
    #[test]
    fn like_escapes_wildcards() {
        assert_eq!(super::like_pattern("50%_A"), "%50\\%\\_a%");
    }
}
