//! Admin: invitations to register and the audit log.

use crate::audit::{self, action};
use crate::auth::Caller;
use crate::client::ClientIp;
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::routes::videos::{decode_cursor, encode_cursor};
use crate::state::SharedState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use vidhost_core::domain::{is_id, Role};
use vidhost_core::time::{now_ms, rfc3339};
use vidhost_db::{AuditQuery, Invite};

/// Invites last a week unless told otherwise, between a minute and 90 days.
const INVITE_TTL_S: i64 = 7 * 86_400;
const INVITE_TTL_MAX_S: i64 = 90 * 86_400;

/// How an invite code is stored and looked up: SHA-256, hex. Codes carry
/// 128 random bits, so a fast hash is enough.
pub fn invite_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().as_bytes()))
}

#[derive(Deserialize)]
pub struct InviteBody {
    role: Option<String>,
    expires_in_s: Option<i64>,
}

pub async fn create_invite(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Json(b): Json<InviteBody>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    let role = match b.role.as_deref() {
        None => state.config.auth.default_role,
        Some(r) => r
            .parse::<Role>()
            .map_err(|_| ApiError::validation("role must be admin, uploader or viewer"))?,
    };
    let ttl = b.expires_in_s.unwrap_or(INVITE_TTL_S);
    if !(60..=INVITE_TTL_MAX_S).contains(&ttl) {
        return Err(ApiError::validation(format!(
            "expires_in_s must be between 60 and {INVITE_TTL_MAX_S}"
        )));
    }
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let code = B64.encode(raw);
    let now = now_ms();
    let invite = Invite {
        code_hash: invite_hash(&code),
        role,
        created_by: caller.user.id.clone(),
        created_at: now,
        expires_at: now + ttl * 1000,
    };
    state.db.create_invite(&invite).await?;
    // The code itself is never logged: it is a credential until used.
    audit::record(
        &state,
        ip.as_deref(),
        Some(&caller.user.id),
        action::INVITE_CREATED,
        None,
        json!({"role": role, "expires_at": rfc3339(invite.expires_at)}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"code": code, "role": role, "expires_at": rfc3339(invite.expires_at)})),
    ))
}

#[derive(Deserialize)]
pub struct AuditParams {
    action: Option<String>,
    actor: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Newest first, filtered by action and actor, with cursor pagination.
pub async fn audit_log(
    State(state): State<SharedState>,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit must be between 1 and 200"));
    }
    if p.actor.as_deref().is_some_and(|a| !is_id(a)) {
        return Err(ApiError::validation("actor must be a user id"));
    }
    let q = AuditQuery {
        action: p.action.filter(|a| !a.is_empty()),
        actor_id: p.actor,
        before: p.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut entries = state.db.list_audit(&q).await?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next = more
        .then(|| entries.last().map(|e| encode_cursor(e.at, &e.id)))
        .flatten();
    let items: Vec<_> = entries
        .iter()
        .map(|e| {
            let actor = e
                .actor_id
                .as_ref()
                .map(|id| json!({"id": id, "email": e.actor_email}));
            let detail: serde_json::Value =
                serde_json::from_str(&e.detail).unwrap_or_else(|_| json!({}));
            json!({"id": e.id, "at": rfc3339(e.at), "action": e.action, "actor": actor,
                   "target": e.target, "ip": e.ip, "detail": detail})
        })
        .collect();
    Ok(axum::Json(json!({"items": items, "next_cursor": next})))
}
