//! Passwords (Argon2id, hashed off the async threads), the password policy,
//! JWT access tokens, opaque refresh tokens and the extractors that turn a
//! Bearer header into a caller.

use crate::error::{ApiError, ApiResult};
use crate::keys::Key;
use crate::state::SharedState;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm as JwtAlg, DecodingKey, EncodingKey, Header,
    Validation,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vidhost_core::config::AuthConfig;
use vidhost_core::domain::Role;
use vidhost_db::{User, Viewer};

fn argon(cfg: &AuthConfig) -> Argon2<'static> {
    let params = Params::new(cfg.argon2_memory_kib, cfg.argon2_iterations, 1, None)
        .expect("validated at start");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Argon2id works in ~19 MiB; glibc keeps freed blocks that size in its
/// arenas, so a server that hashed once would carry them for good. Give them
/// back after each hash (upload paths are measured by peak RSS).
fn release_hash_memory() {
    // SAFETY: malloc_trim only releases free memory; no pointers are involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub async fn hash_password(cfg: &AuthConfig, password: String) -> ApiResult<String> {
    let a = argon(cfg);
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let hashed = a
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string());
        release_hash_memory();
        hashed
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

/// Verifies in constant time. With no stored hash, a dummy hash is checked
/// anyway so an unknown e-mail costs the same time as a wrong password: one
/// verification. (The dummy is hashed once per process; hashing it on each
/// attempt made an unknown e-mail cost two Argon2 runs, which told it apart.)
pub async fn verify_password(
    cfg: &AuthConfig,
    password: String,
    stored: Option<String>,
) -> ApiResult<bool> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let a = argon(cfg);
    tokio::task::spawn_blocking(move || {
        let stored = match &stored {
            Some(s) => s.as_str(),
            None => DUMMY.get_or_init(|| {
                let salt = SaltString::generate(&mut rand::rngs::OsRng);
                a.hash_password(b"not-a-password", &salt)
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            }),
        };
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        let ok = a.verify_password(password.as_bytes(), &parsed).is_ok() && !stored.is_empty();
        release_hash_memory();
        ok
    })
    .await
    .map_err(ApiError::internal)
}

/// At least 12 characters and an entropy estimate of "safely unguessable"
/// (zxcvbn score ≥ 3), judged with the user's own e-mail and name as hints.
pub fn check_password_policy(password: &str, hints: &[&str]) -> ApiResult<()> {
    let weak = |why: &str| {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            why,
        ))
    };
    if password.chars().count() < 12 {
        return weak("the password must have at least 12 characters");
    }
    if password.len() > 1024 {
        return weak("the password must have at most 1024 bytes");
    }
    let estimate = zxcvbn::zxcvbn(password, hints);
    if (estimate.score() as u8) < 3 {
        let tip = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .unwrap_or_else(|| "it is too easy to guess".into());
        return weak(&format!(
            "the password is too weak: {tip}; add more words or characters"
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// the refresh-token family (session) this token came from
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

pub fn issue_access_token(
    key: &Key,
    user: &User,
    session_id: &str,
    ttl_s: u64,
) -> ApiResult<String> {
    let now = vidhost_core::time::now_ms() / 1000;
    let claims = Claims {
        sub: user.id.clone(),
        role: user.role,
        sid: session_id.into(),
        iat: now,
        exp: now + ttl_s as i64,
    };
    let mut h = Header::new(JwtAlg::HS256);
    h.kid = Some(key.kid.clone());
    encode(&h, &claims, &EncodingKey::from_secret(&key.secret)).map_err(ApiError::internal)
}

/// A fresh opaque refresh token and the hash we store for it.
pub fn new_refresh_token() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = B64.encode(raw);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated caller: a valid access token of an enabled user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub session_id: String,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
    pub fn may_manage(&self, owner_id: &str) -> bool {
        self.is_admin() || self.user.id == owner_id
    }
    pub fn require_uploader(&self) -> ApiResult<()> {
        if self.user.role.can_upload() {
            Ok(())
        } else {
            Err(ApiError::forbidden("your role may not upload videos"))
        }
    }
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("admins only"))
        }
    }
    pub fn viewer(&self) -> Viewer {
        Viewer::User {
            id: self.user.id.clone(),
            admin: self.is_admin(),
        }
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Seconds of clock skew allowed on `exp`.
pub(crate) const LEEWAY_S: i64 = 5;

pub async fn caller_from_token(state: &SharedState, token: &str) -> ApiResult<Caller> {
    let invalid = || ApiError::unauthorized("the access token is invalid or has expired");
    let verified = match state.tokens.get(token, &state.jwt_keys) {
        Some(v) => v,
        None => {
            let header = decode_header(token).map_err(|_| invalid())?;
            let kid = header.kid.ok_or_else(invalid)?;
            let key = state
                .jwt_keys
                .find_or_reload(&state.db, &kid)
                .await
                .ok_or_else(invalid)?;
            let mut v = Validation::new(JwtAlg::HS256);
            v.leeway = LEEWAY_S as u64;
            let data = decode::<Claims>(token, &DecodingKey::from_secret(&key.secret), &v)
                .map_err(|_| invalid())?;
            let verified = Verified {
                sub: data.claims.sub,
                sid: data.claims.sid,
                exp: data.claims.exp,
                kid,
            };
            state.tokens.put(token, &verified);
            verified
        }
    };
    // The user row is the authority on role and disabled, so a demotion or a
    // ban takes effect at once rather than when the token expires (on this
    // node at once, on the others within `RECENT_TTL`).
    let user = user_row(state, &verified.sub).await?.ok_or_else(invalid)?;
    if user.disabled {
        return Err(invalid());
    }
    // So is the session: signing out, a revoked session or a stolen refresh
    // token's family ends its access tokens too, not only its refreshes.
    let live = state
        .sessions
        .get_or_load(&verified.sid, || {
            state
                .db
                .session_live(&verified.sid, vidhost_core::time::now_ms())
        })
        .await?;
    if !live {
        return Err(ApiError::unauthorized(
            "this session has ended; sign in again",
        ));
    }
    Ok(Caller {
        user,
        session_id: verified.sid,
    })
}

/// The row of user `id` as read within the last second (`UserCache`).
pub async fn user_row(state: &SharedState, id: &str) -> ApiResult<Option<User>> {
    Ok(state
        .users
        .get_or_load(id, || state.db.user_by_id(id))
        .await?)
}

/// What a verified access token says.
#[derive(Clone)]
struct Verified {
    sub: String,
    sid: String,
    exp: i64,
    kid: String,
}

/// Access tokens whose signature this node has already checked. A client
/// sends the same token on every request until it expires, and checking it
/// again (two base64 and JSON decodes, an HMAC) was ~6 µs of every
/// authenticated request. An entry is found by the token's signature and
/// used only if the whole token is equal (compared in constant time), its
/// `exp` has not passed and its key is still on the ring, so a rotated-out
/// key stops its tokens here as it does when verifying.
#[derive(Default)]
pub struct TokenCache {
    /// signature → (whole token, what it says)
    rows: std::sync::Mutex<std::collections::HashMap<Box<str>, Remembered>>,
}

type Remembered = (Box<str>, Verified);

const TOKEN_CACHE_MAX: usize = 10_000;

/// The signature segment: an HMAC, so keys are spread evenly.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

impl TokenCache {
    fn get(&self, token: &str, ring: &crate::keys::KeyRing) -> Option<Verified> {
        use subtle::ConstantTimeEq;
        let hit = {
            let rows = self.rows.lock().expect("not poisoned");
            let (whole, v) = rows.get(signature(token))?;
            let same: bool = whole.as_bytes().ct_eq(token.as_bytes()).into();
            same.then(|| v.clone())?
        };
        let fresh = vidhost_core::time::now_ms() / 1000 <= hit.exp + LEEWAY_S;
        (fresh && ring.find(&hit.kid).is_some()).then_some(hit)
    }

    fn put(&self, token: &str, v: &Verified) {
        let mut rows = self.rows.lock().expect("not poisoned");
        if rows.len() >= TOKEN_CACHE_MAX {
            let now = vidhost_core::time::now_ms() / 1000;
            rows.retain(|_, (_, v)| now <= v.exp + LEEWAY_S);
            if rows.len() >= TOKEN_CACHE_MAX {
                rows.clear();
            }
        }
        rows.insert(signature(token).into(), (token.into(), v.clone()));
    }
}

/// What authentication read from the catalog within the last second: user
/// rows (role, disabled) and whether sessions are live. A request carrying
/// an access token needs both, and at thousands of requests per second each
/// read was a database round trip. Changes made through this node forget
/// at once; another node's change shows here within `RECENT_TTL`.
pub struct Recent<T> {
    rows: std::sync::Mutex<std::collections::HashMap<String, (T, std::time::Instant)>>,
    /// Bumped by every `forget`: a row read before a change is not cached after it.
    epoch: std::sync::atomic::AtomicU64,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent {
            rows: Default::default(),
            epoch: Default::default(),
        }
    }
}

/// User rows by id (None: no such user).
pub type UserCache = Recent<Option<User>>;
/// Whether a session (by id) is neither revoked nor expired.
pub type SessionCache = Recent<bool>;

const RECENT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl<T: Clone> Recent<T> {
    fn get(&self, id: &str) -> Option<T> {
        let rows = self.rows.lock().expect("not poisoned");
        rows.get(id)
            .filter(|(_, at)| at.elapsed() < RECENT_TTL)
            .map(|(v, _)| v.clone())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Caches `value` for `id`, read after `epoch()` returned `epoch`,
    /// unless something changed since.
    fn put(&self, id: &str, value: T, epoch: u64) {
        let mut rows = self.rows.lock().expect("not poisoned");
        if self.epoch() != epoch {
            return;
        }
        if rows.len() >= 10_000 {
            rows.retain(|_, (_, at)| at.elapsed() < RECENT_TTL);
        }
        rows.insert(id.to_owned(), (value, std::time::Instant::now()));
    }

    /// The cached value for `id`, or what `load` reads (then cached).
    async fn get_or_load<F, E>(&self, id: &str, load: impl FnOnce() -> F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        if let Some(v) = self.get(id) {
            return Ok(v);
        }
        let epoch = self.epoch();
        let v = load().await?;
        self.put(id, v.clone(), epoch);
        Ok(v)
    }

    /// Call after changing the row of `id`.
    pub fn forget(&self, id: &str) {
        let mut rows = self.rows.lock().expect("not poisoned");
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        rows.remove(id);
    }

    /// Call after a change to rows this cache may not know by id (every
    /// session of a user, a session family).
    pub fn forget_all(&self) {
        let mut rows = self.rows.lock().expect("not poisoned");
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        rows.clear();
    }
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("sign in first: Authorization: Bearer <token>")
        })?;
        caller_from_token(state, token).await
    }
}

/// An optional caller: anonymous when there is no Authorization header, an
/// error when there is one that is not valid.
pub struct MaybeCaller(pub Option<Caller>);

impl MaybeCaller {
    pub fn viewer(&self) -> Viewer {
        self.0
            .as_ref()
            .map(Caller::viewer)
            .unwrap_or(Viewer::Anonymous)
    }
}

impl FromRequestParts<SharedState> for MaybeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        match bearer(parts) {
            None => Ok(MaybeCaller(None)),
            Some(t) => Ok(MaybeCaller(Some(caller_from_token(state, t).await?))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rejects_short_and_common() {
        assert!(check_password_policy("short", &[]).is_err());
        assert!(check_password_policy("password1234", &[]).is_err());
        assert!(check_password_policy("aaaaaaaaaaaaaaaa", &[]).is_err());
        assert!(check_password_policy("correct horse battery staple 42", &[]).is_ok());
    }
}
