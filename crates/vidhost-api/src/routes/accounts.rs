//! Register, sign in, rotate refresh tokens, sign out; the caller's profile,
//! password, sessions and second factor.

use crate::audit::{self, action};
use crate::auth::{self, Caller};
use crate::client::ClientIp;
use crate::error::{ApiError, ApiResult, Json};
use crate::mfa::{self, Which};
use crate::state::SharedState;
use crate::views::UserView;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use vidhost_core::domain::{new_id, RegistrationMode, Role};
use vidhost_core::time::{now_ms, rfc3339};
use vidhost_db::{DbError, RotateOutcome, Session, User};

#[derive(Deserialize)]
pub struct RegisterBody {
    email: String,
    password: String,
    display_name: Option<String>,
    invite_code: Option<String>,
}

fn parse_email(raw: &str) -> ApiResult<String> {
    let e = raw.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e.to_owned())
    } else {
        Err(ApiError::validation("email must be a valid e-mail address"))
    }
}

pub fn parse_display_name(raw: &str) -> ApiResult<String> {
    let n = raw.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "display_name must have 1 to 100 printable characters",
        ));
    }
    Ok(n.to_owned())
}

/// A new user after checking the policy (not stored yet).
async fn new_user(
    state: &SharedState,
    email: &str,
    password: &str,
    display_name: Option<&str>,
    role: Role,
) -> ApiResult<User> {
    let email = parse_email(email)?;
    let local = email.split('@').next().unwrap_or("user").to_owned();
    let display_name = parse_display_name(display_name.unwrap_or(&local))?;
    auth::check_password_policy(password, &[&email, &local, &display_name])?;
    let hash = auth::hash_password(&state.config.auth, password.to_owned()).await?;
    Ok(User {
        id: new_id(),
        email,
        display_name,
        password_hash: hash,
        role,
        disabled: false,
        mfa_enabled: false,
        created_at: now_ms(),
    })
}

fn email_taken(e: DbError) -> ApiError {
    match e {
        DbError::Conflict(_) => ApiError::new(
            StatusCode::CONFLICT,
            "email_taken",
            "an account with this e-mail already exists",
        ),
        other => other.into(),
    }
}

/// Creates a user after checking the policy; shared by registration, the
/// bootstrap admin and `vidhost admin create-user`.
pub async fn create_user(
    state: &SharedState,
    email: &str,
    password: &str,
    display_name: Option<&str>,
    role: Role,
) -> ApiResult<User> {
    let user = new_user(state, email, password, display_name, role).await?;
    state.db.create_user(&user).await.map_err(email_taken)?;
    Ok(user)
}

fn invalid_invite() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_invite",
        "the invite code is unknown, used or expired",
    )
}

/// Open registration takes an invite code too (its role then applies);
/// invite-only registration needs one.
pub async fn register(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    Json(b): Json<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    let code = b
        .invite_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match (state.config.auth.registration, code) {
        (RegistrationMode::Closed, _) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "registration_closed",
                "registration is closed",
            ))
        }
        (RegistrationMode::Invite, None) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_invite",
                "registration needs an invite code",
            ))
        }
        _ => {}
    }
    // A cheap look first: the work of hashing is for codes that can work.
    if let Some(code) = code {
        if !state
            .db
            .invite_usable(&super::admin::invite_hash(code), now_ms())
            .await?
        {
            return Err(invalid_invite());
        }
    }
    let user = new_user(
        &state,
        &b.email,
        &b.password,
        b.display_name.as_deref(),
        state.config.auth.default_role,
    )
    .await?;
    let user = match code {
        None => {
            state.db.create_user(&user).await.map_err(email_taken)?;
            user
        }
        Some(code) => state
            .db
            .create_user_with_invite(&user, &super::admin::invite_hash(code), now_ms())
            .await
            .map_err(email_taken)?
            .ok_or_else(invalid_invite)?,
    };
    tracing::info!(user = %user.id, "registered");
    audit::record(
        &state,
        ip.as_deref(),
        Some(&user.id),
        action::REGISTERED,
        Some(&user.id),
        json!({"email": user.email, "role": user.role, "invite": code.is_some()}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(
            json!({"id": user.id, "email": user.email, "display_name": user.display_name, "role": user.role}),
        ),
    ))
}

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
    totp_code: Option<String>,
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    let ua = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    ua
}

async fn token_pair(
    state: &SharedState,
    user: &User,
    session_id: &str,
    refresh: String,
) -> ApiResult<serde_json::Value> {
    let ttl = state.config.auth.access_token_ttl_s;
    let access = auth::issue_access_token(&state.jwt_keys.current(), user, session_id, ttl)?;
    Ok(
        json!({"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": ttl}),
    )
}

pub async fn login(
    State(state): State<SharedState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    Json(b): Json<LoginBody>,
) -> ApiResult<impl IntoResponse> {
    let bad = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong e-mail or password",
        )
    };
    let user = state.db.user_by_email(b.email.trim()).await?;
    // A failed sign-in is nobody's action: the account it aimed at is its
    // target, and the e-mail as typed (capped) its detail.
    let failed = |user: Option<&User>, reason: &'static str| {
        let (state, ip) = (&state, ip.clone());
        let target = user.map(|u| u.id.clone());
        let email: String = b.email.trim().chars().take(254).collect();
        async move {
            tracing::info!(reason, "login failed");
            audit::record(
                state,
                ip.as_deref(),
                None,
                action::LOGIN_FAILED,
                target.as_deref(),
                json!({"email": email, "reason": reason}),
            )
            .await;
        }
    };
    // Wrong passwords in a row lock this address out of this account
    // (lockout.rs: keyed by both, so nobody can lock someone else out).
    let lock = state.limits.as_ref().map(|l| &l.logins).zip(
        ip.as_deref()
            .and_then(|a| a.parse().ok())
            .map(crate::ratelimit::bucket_of),
    );
    // An e-mail without an account locks the same way, so that the lockout
    // does not tell which e-mails have accounts.
    let lock_key = match &user {
        Some(u) => u.id.clone(),
        None => {
            let email: String = b.email.trim().to_lowercase().chars().take(254).collect();
            format!("no-account:{email}")
        }
    };
    if let Some((logins, addr)) = lock {
        if let Some(left) = logins.locked(&lock_key, addr) {
            failed(user.as_ref(), "locked").await;
            return Err(ApiError::rate_limited(
                left.as_millis() as i64,
                "too many wrong passwords for this account from here; try again later",
            ));
        }
    }
    let ok = auth::verify_password(
        &state.config.auth,
        b.password,
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await?;
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        u => {
            let reason = match u {
                Some(ref u) if ok && u.disabled => "disabled",
                _ => "invalid_credentials",
            };
            if let (false, Some((logins, addr))) = (ok, lock) {
                logins.failed(&lock_key, addr);
            }
            failed(u.as_ref(), reason).await;
            return Err(bad());
        }
    };
    if let Some((logins, addr)) = lock {
        logins.succeeded(&user.id, addr);
    }
    // The second factor is asked for only after the password passed, so
    // its answers say nothing to someone who does not know the password.
    let mut recovery_used = false;
    if user.mfa_enabled {
        let Some(code) = b.totp_code.as_deref().filter(|c| !c.trim().is_empty()) else {
            // The right password without a code: worth a line in the log.
            failed(Some(&user), "mfa_required").await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "mfa_required",
                "this account needs an authentication code (totp_code)",
            ));
        };
        match mfa::verify(&state, &user.id, Which::Enrolled, code).await {
            Ok(passed) => recovery_used = passed.step.is_none(),
            Err(e) => {
                failed(Some(&user), e.code).await;
                return Err(e);
            }
        }
    }
    let (refresh, hash) = auth::new_refresh_token();
    let now = now_ms();
    let user_agent = user_agent(&headers);
    let session = Session {
        id: new_id(),
        user_id: user.id.clone(),
        created_at: now,
        last_used_at: now,
        expires_at: now + state.config.auth.refresh_token_ttl_s as i64 * 1000,
        user_agent,
        ip: ip.clone(),
        revoked_at: None,
    };
    state.db.create_session(&session, &hash).await?;
    tracing::info!(user = %user.id, session = %session.id, "login");
    if recovery_used {
        audit::record(
            &state,
            ip.as_deref(),
            Some(&user.id),
            action::RECOVERY_CODE_USED,
            Some(&user.id),
            json!({}),
        )
        .await;
    }
    audit::record(
        &state,
        ip.as_deref(),
        Some(&user.id),
        action::LOGIN,
        Some(&session.id),
        json!({"mfa": user.mfa_enabled}),
    )
    .await;
    Ok(axum::Json(
        token_pair(&state, &user, &session.id, refresh).await?,
    ))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    Json(b): Json<RefreshBody>,
) -> ApiResult<impl IntoResponse> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            "the refresh token is invalid, expired or revoked",
        )
    };
    let old = auth::hash_refresh_token(&b.refresh_token);
    let (new_token, new_hash) = auth::new_refresh_token();
    match state
        .db
        .rotate_refresh_token(&old, &new_hash, now_ms())
        .await?
    {
        RotateOutcome::Rotated {
            user_id,
            session_id,
        } => {
            let user = state
                .db
                .user_by_id(&user_id)
                .await?
                .filter(|u| !u.disabled)
                .ok_or_else(invalid)?;
            Ok(axum::Json(
                token_pair(&state, &user, &session_id, new_token).await?,
            ))
        }
        RotateOutcome::Reused => {
            tracing::warn!("a rotated refresh token was reused; its session is revoked");
            let session = state.db.session_by_token(&old).await?;
            match &session {
                Some(s) => state.sessions.forget(&s.id),
                None => state.sessions.forget_all(),
            }
            audit::record(
                &state,
                ip.as_deref(),
                session.as_ref().map(|s| s.user_id.as_str()),
                action::REFRESH_REUSED,
                session.as_ref().map(|s| s.id.as_str()),
                json!({"session_revoked": true}),
            )
            .await;
            Err(invalid())
        }
        RotateOutcome::Invalid => Err(invalid()),
    }
}

/// Ends the session of the refresh token in the body or, without a body, of
/// the access token: its refreshes and its access tokens stop working.
pub async fn logout(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    req: axum::extract::Request,
) -> ApiResult<StatusCode> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::validation("the body is too large"))?;
    let session = if body.iter().all(u8::is_ascii_whitespace) {
        let token = auth::bearer(&parts).ok_or_else(|| {
            ApiError::unauthorized(
                "send {\"refresh_token\"} or Authorization: Bearer <access token>",
            )
        })?;
        let caller = auth::caller_from_token(&state, token).await?;
        Some((caller.user.id, caller.session_id))
    } else {
        let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
        let Json(b) =
            <Json<RefreshBody> as axum::extract::FromRequest<_>>::from_request(req, &state).await?;
        let hash = auth::hash_refresh_token(&b.refresh_token);
        state
            .db
            .session_by_token(&hash)
            .await?
            .map(|s| (s.user_id, s.id))
    };
    if let Some((user_id, session_id)) = session {
        state.sessions.forget(&session_id);
        if state
            .db
            .revoke_session(&user_id, &session_id, now_ms())
            .await?
        {
            audit::record(
                &state,
                ip.as_deref(),
                Some(&user_id),
                action::LOGOUT,
                Some(&session_id),
                json!({}),
            )
            .await;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

fn me_json(u: &User) -> serde_json::Value {
    json!({"id": u.id, "email": u.email, "display_name": u.display_name, "role": u.role, "mfa_enabled": u.mfa_enabled})
}

pub async fn me(caller: Caller) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(me_json(&caller.user)))
}

#[derive(Deserialize)]
pub struct MePatch {
    display_name: Option<String>,
}

pub async fn patch_me(
    State(state): State<SharedState>,
    caller: Caller,
    Json(b): Json<MePatch>,
) -> ApiResult<impl IntoResponse> {
    let name = b
        .display_name
        .as_deref()
        .map(parse_display_name)
        .transpose()?;
    let user = state
        .db
        .update_user(&caller.user.id, None, None, name.as_deref())
        .await?
        .ok_or_else(ApiError::video_not_found)?;
    state.users.forget(&user.id);
    Ok(axum::Json(me_json(&user)))
}

#[derive(Deserialize)]
pub struct PasswordBody {
    current_password: String,
    new_password: String,
}

pub async fn change_password(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Json(b): Json<PasswordBody>,
) -> ApiResult<StatusCode> {
    // The password itself comes from the database, never from the
    // authentication cache (it may be a second old).
    let fresh = state
        .db
        .user_by_id(&caller.user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account is gone"))?;
    let u = &fresh;
    if !auth::verify_password(
        &state.config.auth,
        b.current_password,
        Some(u.password_hash.clone()),
    )
    .await?
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    let local = u.email.split('@').next().unwrap_or("");
    auth::check_password_policy(&b.new_password, &[&u.email, local, &u.display_name])?;
    let hash = auth::hash_password(&state.config.auth, b.new_password).await?;
    state.db.set_password(&u.id, &hash).await?;
    state.users.forget(&u.id);
    state
        .db
        .revoke_sessions_except(&u.id, Some(&caller.session_id), now_ms())
        .await?;
    state.sessions.forget_all();
    audit::record(
        &state,
        ip.as_deref(),
        Some(&u.id),
        action::PASSWORD_CHANGED,
        Some(&u.id),
        json!({"other_sessions_revoked": true}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn sessions(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    let items: Vec<_> = state
        .db
        .list_sessions(&caller.user.id, now_ms())
        .await?
        .into_iter()
        .map(|s| {
            json!({"id": s.id, "created_at": rfc3339(s.created_at), "last_used_at": rfc3339(s.last_used_at),
                   "user_agent": s.user_agent, "ip": s.ip, "current": s.id == caller.session_id})
        })
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

pub async fn revoke_session(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state
        .db
        .revoke_session(&caller.user.id, &id, now_ms())
        .await?
    {
        state.sessions.forget(&id);
        audit::record(
            &state,
            ip.as_deref(),
            Some(&caller.user.id),
            action::SESSION_REVOKED,
            Some(&id),
            json!({}),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no such session",
        ))
    }
}

// --- admin: users ---

pub async fn admin_users(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    let users = state.db.list_users(1000, 0).await?;
    Ok(axum::Json(
        json!({"items": users.iter().map(UserView::from).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
pub struct AdminUserPatch {
    role: Option<String>,
    disabled: Option<bool>,
}

pub async fn admin_patch_user(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Path(id): Path<String>,
    Json(b): Json<AdminUserPatch>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    let role = b
        .role
        .as_deref()
        .map(|r| {
            r.parse::<Role>()
                .map_err(|_| ApiError::validation("role must be admin, uploader or viewer"))
        })
        .transpose()?;
    if id == caller.user.id && (b.disabled == Some(true) || role.is_some_and(|r| r != Role::Admin))
    {
        return Err(ApiError::validation(
            "an admin cannot demote or disable themselves",
        ));
    }
    let user = state
        .db
        .update_user(&id, role, b.disabled, None)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "no such user"))?;
    state.users.forget(&id);
    if b.disabled == Some(true) {
        state.db.revoke_sessions_except(&id, None, now_ms()).await?;
        state.sessions.forget_all();
    }
    tracing::info!(admin = %caller.user.id, user = %id, role = ?role, disabled = ?b.disabled, "user changed");
    audit::record(
        &state,
        ip.as_deref(),
        Some(&caller.user.id),
        action::USER_CHANGED,
        Some(&id),
        json!({"email": user.email, "role": role, "disabled": b.disabled}),
    )
    .await;
    Ok(axum::Json(UserView::from(&user)))
}

// --- the caller's second factor (TOTP) ---

fn mfa_conflict(code: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, detail)
}

/// A new secret to enrol, kept pending until `enable` confirms a code of it
/// (a second setup replaces it).
pub async fn mfa_setup(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    let user = fresh_user(&state, &caller).await?;
    if user.mfa_enabled {
        return Err(mfa_conflict(
            "mfa_already_enabled",
            "two-factor authentication is already on; disable it first to enrol again",
        ));
    }
    let secret = mfa::new_secret();
    let url = mfa::otpauth_url(&secret, &user.email)?;
    state.db.set_totp_pending(&user.id, &secret).await?;
    Ok(axum::Json(json!({"secret": secret, "otpauth_url": url})))
}

#[derive(Deserialize)]
pub struct CodeBody {
    code: String,
}

/// The user row itself, not the authentication cache's copy (which may be
/// a second old): MFA state decides what happens next.
async fn fresh_user(state: &SharedState, caller: &Caller) -> ApiResult<User> {
    state
        .db
        .user_by_id(&caller.user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account is gone"))
}

pub async fn mfa_enable(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Json(b): Json<CodeBody>,
) -> ApiResult<impl IntoResponse> {
    let user = fresh_user(&state, &caller).await?;
    if user.mfa_enabled {
        return Err(mfa_conflict(
            "mfa_already_enabled",
            "two-factor authentication is already on",
        ));
    }
    let passed = mfa::verify(&state, &user.id, Which::Pending, &b.code).await?;
    let (codes, hashes) = mfa::new_recovery_codes();
    let step = passed.step.unwrap_or(0);
    if !state
        .db
        .enable_totp(&user.id, &passed.secret, step, &hashes)
        .await?
    {
        // Another setup or enable got in between.
        return Err(mfa_conflict(
            "mfa_not_set_up",
            "the authenticator being set up changed; run setup again",
        ));
    }
    state.users.forget(&user.id);
    audit::record(
        &state,
        ip.as_deref(),
        Some(&user.id),
        action::MFA_ENABLED,
        Some(&user.id),
        json!({"method": "totp"}),
    )
    .await;
    Ok(axum::Json(json!({"recovery_codes": codes})))
}

/// Turning MFA off takes a current code (or a recovery code).
pub async fn mfa_disable(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Json(b): Json<CodeBody>,
) -> ApiResult<StatusCode> {
    let user = fresh_user(&state, &caller).await?;
    if !user.mfa_enabled {
        return Err(mfa_conflict(
            "mfa_not_enabled",
            "two-factor authentication is not on",
        ));
    }
    mfa::verify(&state, &user.id, Which::Enrolled, &b.code).await?;
    state.db.disable_totp(&user.id).await?;
    state.users.forget(&user.id);
    audit::record(
        &state,
        ip.as_deref(),
        Some(&user.id),
        action::MFA_DISABLED,
        Some(&user.id),
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
