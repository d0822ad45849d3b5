//! Signing keys, kept in the catalog so that every node accepts what any node
//! issued. Each key has a kid; the newest signs, all verify. A node that meets
//! an unknown kid reloads the set once (another node may have rotated).

use crate::error::ApiError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use vidhost_core::config::Config;
use vidhost_db::{DynCatalog, SigningKey};

pub const JWT: &str = "jwt";
pub const GRANT: &str = "grant";
/// The key of the pseudonyms of anonymous viewers (analytics). It never
/// rotates: a new key would make every anonymous viewer a new one.
pub const VIEWER: &str = "viewer";

#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub secret: Vec<u8>,
}

pub struct KeyRing {
    purpose: &'static str,
    /// Shared, not cloned, per verification (a hot path: every request).
    keys: RwLock<Vec<Arc<Key>>>,
    /// When the set was last reloaded for an unknown kid.
    reloaded: tokio::sync::Mutex<Option<Instant>>,
}

/// At most one reload per this interval: a stream of tokens with made-up
/// kids must not become a stream of database queries.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

fn decode(keys: Vec<SigningKey>) -> Result<Vec<Arc<Key>>, ApiError> {
    keys.into_iter()
        .map(|k| {
            let secret = B64
                .decode(&k.secret)
                .map_err(|e| ApiError::internal(format!("signing key {}: {e}", k.kid)))?;
            Ok(Arc::new(Key { kid: k.kid, secret }))
        })
        .collect()
}

impl KeyRing {
    /// Loads the keys for `purpose`, creating the first one if none exists.
    /// The first kid is fixed, so nodes starting together agree on one key.
    /// Once rotations retired it, it is not made again: there is a newer key.
    pub async fn load(db: &DynCatalog, purpose: &'static str) -> Result<KeyRing, ApiError> {
        let mut keys = db.signing_keys(purpose).await?;
        if keys.is_empty() {
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let first = SigningKey {
                kid: format!("{purpose}-1"),
                purpose: purpose.into(),
                secret: B64.encode(secret),
                created_at: vidhost_core::time::now_ms(),
            };
            keys = db.ensure_signing_key(&first).await?;
        }
        let keys = decode(keys)?;
        Ok(KeyRing {
            purpose,
            keys: RwLock::new(keys),
            reloaded: tokio::sync::Mutex::new(None),
        })
    }

    /// Takes the catalog's set as it is now: a key added by a rotation
    /// (on any node) signs here from then on.
    pub async fn reload(&self, db: &DynCatalog) -> Result<(), ApiError> {
        let fresh = decode(db.signing_keys(self.purpose).await?)?;
        if !fresh.is_empty() {
            *self.keys.write().expect("not poisoned") = fresh;
        }
        Ok(())
    }

    pub fn purpose(&self) -> &'static str {
        self.purpose
    }

    pub fn current(&self) -> Arc<Key> {
        self.keys
            .read()
            .expect("not poisoned")
            .last()
            .cloned()
            .expect("at least one key")
    }

    pub fn find(&self, kid: &str) -> Option<Arc<Key>> {
        self.keys
            .read()
            .expect("not poisoned")
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
    }

    /// Finds `kid`, reloading from the catalog once if it is unknown here.
    pub async fn find_or_reload(&self, db: &DynCatalog, kid: &str) -> Option<Arc<Key>> {
        if let Some(k) = self.find(kid) {
            return Some(k);
        }
        // Only kids of our own naming scheme are worth a database round trip.
        if !kid.starts_with(self.purpose) || kid.len() > 64 {
            return None;
        }
        // One reload at a time; those who waited look again first (the
        // reload they waited for may have brought their kid).
        let mut last = self.reloaded.lock().await;
        if let Some(k) = self.find(kid) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
            return None;
        }
        self.reload(db).await.ok()?;
        *last = Some(Instant::now());
        self.find(kid)
    }
}

/// Adds a new signing key for `purpose` and returns its kid. It signs from
/// then on: at once on a node that meets a token it signed, otherwise from
/// the node's next periodic reload. Older keys still verify until
/// [`retire_superseded`] retires them, so nothing issued before is cut off;
/// after a leak, [`retire_older`] cuts them off at once.
pub async fn rotate(db: &DynCatalog, purpose: &str) -> Result<String, ApiError> {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let now = vidhost_core::time::now_ms();
    let key = SigningKey {
        // Sorted after every earlier key (by created_at, then kid).
        kid: format!("{purpose}-{now}"),
        purpose: purpose.into(),
        secret: B64.encode(secret),
        created_at: now,
    };
    db.ensure_signing_key(&key).await?;
    Ok(key.kid)
}

/// How long a key still verifies after a newer one replaced it: nodes keep
/// signing with it until their next reload (`sweep_interval_s`), and what it
/// signed last lives for the longest lifetime of its purpose (access tokens;
/// play grants and upload URLs), plus the leeway on `exp` and a minute for
/// clocks that disagree.
pub fn retention(config: &Config, purpose: &str) -> Duration {
    let lifetime = if purpose == JWT {
        config.auth.access_token_ttl_s
    } else {
        config
            .delivery
            .longest_grant_s()
            .max(config.uploads.presign_expiry_s)
    };
    Duration::from_secs(
        lifetime + config.uploads.sweep_interval_s + crate::auth::LEEWAY_S as u64 + 60,
    )
}

/// Retires the keys of `purpose` that a newer key replaced longer ago than
/// [`retention`]: nothing they signed is still valid, so from then on they
/// could only verify tokens forged with a stolen copy. Runs on every node at
/// each sweep (a DELETE that finds nothing costs one query). Returns how
/// many keys went; nodes drop them at their next reload.
pub async fn retire_superseded(
    db: &DynCatalog,
    config: &Config,
    purpose: &str,
) -> Result<u64, ApiError> {
    let cutoff = vidhost_core::time::now_ms() - retention(config, purpose).as_millis() as i64;
    Ok(db.retire_signing_keys(purpose, cutoff).await?)
}

/// Retires every key of `purpose` but the newest, at once: for a key that
/// leaked. What the older keys signed stops working on each node at its
/// next reload (within `sweep_interval_s`): their users sign in again and
/// players fetch fresh playback URLs.
pub async fn retire_older(db: &DynCatalog, purpose: &str) -> Result<u64, ApiError> {
    Ok(db.retire_signing_keys(purpose, i64::MAX).await?)
}

/// Compact signed tokens for grants: `kid.payload.mac`, all base64url.
pub struct Signer {
    pub ring: KeyRing,
}

fn mac(key: &Key, signed: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(&key.secret).expect("any key length");
    m.update(signed.as_bytes());
    m
}

impl Signer {
    pub fn sign<T: Serialize>(&self, payload: &T) -> String {
        let key = self.ring.current();
        let body = B64.encode(serde_json::to_vec(payload).expect("serializable"));
        let signed = format!("{}.{}", key.kid, body);
        let tag = B64.encode(mac(&key, &signed).finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// Verifies the MAC in constant time and decodes the payload.
    pub async fn verify<T: DeserializeOwned>(
        &self,
        db: &DynCatalog,
        token: &str,
    ) -> Result<T, ApiError> {
        let parts = Parts::of(token).ok_or_else(ApiError::invalid_token)?;
        let key = self
            .ring
            .find_or_reload(db, parts.kid)
            .await
            .ok_or_else(ApiError::invalid_token)?;
        parts.open(&key).ok_or_else(ApiError::invalid_token)
    }

    /// [`Signer::verify`] without a trip to the catalog: None when the
    /// token is bad or signed by a key this node has not loaded yet.
    pub fn verify_loaded<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let parts = Parts::of(token)?;
        let key = self.ring.find(parts.kid)?;
        parts.open(&key)
    }
}

/// A token split into `kid.payload.mac`.
struct Parts<'a> {
    kid: &'a str,
    /// `kid.payload`, what the MAC covers.
    signed: &'a str,
    body: &'a str,
    tag: &'a str,
}

impl<'a> Parts<'a> {
    fn of(token: &'a str) -> Option<Parts<'a>> {
        let (signed, tag) = token.rsplit_once('.')?;
        let (kid, body) = signed.split_once('.')?;
        Some(Parts {
            kid,
            signed,
            body,
            tag,
        })
    }

    /// Checks the MAC in constant time, then decodes the payload.
    fn open<T: DeserializeOwned>(&self, key: &Key) -> Option<T> {
        // Decoded on the stack: this runs for every segment a player fetches.
        let mut tag_buf = [0u8; 64];
        let n = B64.decode_slice(self.tag, &mut tag_buf).ok()?;
        mac(key, self.signed).verify_slice(&tag_buf[..n]).ok()?;
        let mut body_buf = [0u8; 1024];
        match B64.decode_slice(self.body, &mut body_buf) {
            Ok(n) => serde_json::from_slice(&body_buf[..n]).ok(),
            Err(_) => serde_json::from_slice(&B64.decode(self.body).ok()?).ok(),
        }
    }
}
