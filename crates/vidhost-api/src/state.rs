use crate::keys::{KeyRing, Signer};
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
    pub metrics: Metrics,
}

pub type SharedState = Arc<AppState>;
