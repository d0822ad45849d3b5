//! Who is on the other end of a request: the client's address, from the
//! connection, or (behind a proxy, when configured) from the last
//! `X-Forwarded-For` entry, the one the proxy itself appended.

use crate::sendfile::ConnInfo;
use crate::state::SharedState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use std::convert::Infallible;
use std::net::IpAddr;

pub fn client_addr(headers: &HeaderMap, ext: &Extensions, trust_forwarded: bool) -> Option<IpAddr> {
    if trust_forwarded {
        let last = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if last.is_some() {
            return last;
        }
    }
    ext.get::<ConnectInfo<ConnInfo>>().map(|c| c.0.peer.ip())
}

/// The client's address as text, for sessions and the audit log.
pub struct ClientIp(pub Option<String>);

impl FromRequestParts<SharedState> for ClientIp {
    type Rejection = Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Infallible> {
        let trust = state.config.rate_limits.trust_forwarded_for;
        Ok(ClientIp(
            client_addr(&parts.headers, &parts.extensions, trust).map(|ip| ip.to_string()),
        ))
    }
}
