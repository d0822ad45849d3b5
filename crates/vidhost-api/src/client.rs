//! Who is on the other end of a request: the client's address, from the
//! connection, or (behind a proxy, when configured) from `X-Forwarded-For`:
//! the last entry no trusted proxy is, read only when the connection comes
//! from one (`rate_limits.trusted_proxies`), or the last entry of all with
//! `rate_limits.trust_forwarded_for`.

use crate::sendfile::ConnInfo;
use crate::state::SharedState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use std::convert::Infallible;
use std::net::IpAddr;
use vidhost_core::config::RateLimitConfig;

pub fn client_addr(headers: &HeaderMap, ext: &Extensions, c: &RateLimitConfig) -> Option<IpAddr> {
    let peer = ext
        .get::<ConnectInfo<ConnInfo>>()
        .map(|c| c.0.peer.ip().to_canonical());
    let proxies = &c.trusted_proxies;
    let trusted = |ip: &IpAddr| proxies.iter().any(|net| net.contains(ip));
    let believed = if proxies.is_empty() {
        c.trust_forwarded_for
    } else {
        peer.as_ref().is_some_and(trusted)
    };
    if !believed {
        return peer;
    }
    // Right to left: each proxy appends the address it saw. An entry that
    // is not an address ends the walk (what is left of it, anyone wrote).
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    let mut nearest = None;
    for entry in entries {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        let ip = ip.to_canonical();
        if !trusted(&ip) {
            return Some(ip);
        }
        nearest = Some(ip);
    }
    // Every entry a trusted proxy (or none at all).
    nearest.or(peer)
}

/// The client's address as text, for sessions and the audit log.
pub struct ClientIp(pub Option<String>);

impl FromRequestParts<SharedState> for ClientIp {
    type Rejection = Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Infallible> {
        let c = &state.config.rate_limits;
        Ok(ClientIp(
            client_addr(&parts.headers, &parts.extensions, c).map(|ip| ip.to_string()),
        ))
    }
}
