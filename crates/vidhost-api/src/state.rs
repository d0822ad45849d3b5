use crate::keys::{Key, KeyRing, Signer};
use crate::metrics::Metrics;
use std::sync::Arc;
use vidhost_core::Config;
use vidhost_db::DynCatalog;
use vidhost_store::DynStore;

/// Everything a handler may use, built once at start and passed explicitly.
pub struct AppState {
    pub config: Config,
    pub db: DynCatalog,
    pub store: DynStore,
    pub jwt_keys: KeyRing,
    pub grants: Signer,
    /// The key of anonymous viewers' pseudonyms (`keys::VIEWER`).
    pub viewer_key: Arc<Key>,
    pub metrics: Metrics,
    /// Content type of uploaded originals by video id. Safe to keep: it
    /// never changes once the upload completed, and delivery checks that
    /// the video still exists (`videos_seen`).
    pub original_types: std::sync::Mutex<std::collections::HashMap<String, Arc<str>>>,
    /// Videos this node found still existing, when, and whether they were
    /// private then (delivery checks a grant's video at most every few
    /// seconds: `delivery::check_grant`).
    pub videos_seen: std::sync::Mutex<std::collections::HashMap<String, Seen>>,
    /// Bumped whenever this node forgets a video it saw (`forget_seen`).
    pub seen_generation: std::sync::atomic::AtomicU64,
    /// User rows read by authentication in the last second.
    pub users: crate::auth::UserCache,
    /// Whether sessions were live in the last second.
    pub sessions: crate::auth::SessionCache,
    /// Access tokens already verified here.
    pub tokens: crate::auth::TokenCache,
    /// Request rate limits per client address; None when off.
    pub limits: Option<crate::ratelimit::Limits>,
    /// Fires when the process starts to stop: long-lived answers (event
    /// streams) end, so the graceful shutdown need not wait for them.
    pub stopping: tokio_util::sync::CancellationToken,
}

pub type SharedState = Arc<AppState>;

/// What delivery last read of a video (`delivery::check_grant`).
#[derive(Clone, Copy)]
pub struct Seen {
    pub at: std::time::Instant,
    /// Only owner/admin grants may play it.
    pub private: bool,
}
