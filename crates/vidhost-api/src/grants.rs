//! What signed tokens say: playback grants (`/play/{token}/…`) and direct
//! upload targets on local storage (`/api/v1/uploads/direct/{token}`).

use serde::{Deserialize, Serialize};
use vidhost_core::time::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantKind {
    /// Any viewer allowed to see the video.
    #[serde(rename = "v")]
    Viewer,
    /// Owner or admin: also unlocks `original`.
    #[serde(rename = "o")]
    Owner,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlayGrant {
    /// purpose tag, so an upload token can never pass as a play token
    pub p: String,
    pub v: String,
    pub k: GrantKind,
    /// expiry, Unix seconds
    pub e: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadTarget {
    pub p: String,
    /// video id
    pub v: String,
    /// client-visible upload id
    pub u: String,
    /// part number; 0 for a whole-object PUT
    pub n: u32,
    pub e: i64,
}

pub const PLAY: &str = "play";
pub const PUT: &str = "put";

/// Expiry rounded down to a bucket of `ttl / 6`, so the same video and kind
/// yield the same token (and the same CDN cache key) for a while; a grant
/// lives between 5/6 of `ttl` and `ttl`, never longer.
pub fn bucketed_expiry(ttl_s: u64) -> i64 {
    let bucket = (ttl_s / 6).max(1) as i64;
    let e = now_ms() / 1000 + ttl_s as i64;
    e - e % bucket
}

pub fn expired(e: i64) -> bool {
    e <= now_ms() / 1000
}
