//! The audit log: who did which security-relevant thing, to what, when and
//! from where. Admins read it at `GET /api/v1/admin/audit`.
//!
//! An entry is written after the action it records has happened; a failure
//! to write one is logged and does not undo or fail the action. Entries hold
//! ids, e-mails and reasons, never a password, token or code.

use crate::state::SharedState;
use serde_json::Value;
use vidhost_core::domain::new_id;
use vidhost_core::time::now_ms;
use vidhost_db::AuditEntry;

/// The actions recorded, by their stable names.
pub mod action {
    pub const LOGIN: &str = "login.succeeded";
    pub const LOGIN_FAILED: &str = "login.failed";
    pub const LOGOUT: &str = "logout";
    pub const REFRESH_REUSED: &str = "refresh_token.reused";
    pub const REGISTERED: &str = "user.registered";
    pub const USER_CHANGED: &str = "user.changed";
    pub const PASSWORD_CHANGED: &str = "password.changed";
    pub const SESSION_REVOKED: &str = "session.revoked";
    pub const MFA_ENABLED: &str = "mfa.enabled";
    pub const MFA_DISABLED: &str = "mfa.disabled";
    pub const RECOVERY_CODE_USED: &str = "mfa.recovery_code_used";
    pub const INVITE_CREATED: &str = "invite.created";
    pub const VIDEO_DELETED: &str = "video.deleted";
    pub const KEY_ROTATED: &str = "key.rotated";
}

/// Appends one entry; `ip` is the client's ([`crate::client::ClientIp`]);
/// `detail` is a JSON object.
pub async fn record(
    state: &SharedState,
    ip: Option<&str>,
    actor: Option<&str>,
    action: &str,
    target: Option<&str>,
    detail: Value,
) {
    let entry = AuditEntry {
        id: new_id(),
        at: now_ms(),
        actor_id: actor.map(str::to_owned),
        actor_email: None,
        action: action.to_owned(),
        target: target.map(str::to_owned),
        ip: ip.map(str::to_owned),
        detail: detail.to_string(),
    };
    if let Err(e) = state.db.append_audit(&entry).await {
        tracing::warn!(error = %e, action, "could not write an audit entry");
    }
}
