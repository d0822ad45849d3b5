//! Request rate limits per client address: token buckets (governor's GCRA),
//! one for the sign-in family of endpoints and a roomier one for the rest of
//! the API. Playback, upload bytes and the health and metrics endpoints are
//! never limited: a CDN or a player fetches segments from one address at a
//! rate no API limit should guess, and an upload's bytes are few requests.
//! The buckets live in each process (a node's own view); the per-account
//! locks of wrong passwords and codes live in the catalog and hold across
//! nodes.

use crate::client::client_addr;
use crate::error::ApiError;
use crate::state::SharedState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use vidhost_core::config::RateLimitConfig;

pub struct Limits {
    auth: DefaultKeyedRateLimiter<IpAddr>,
    api: DefaultKeyedRateLimiter<IpAddr>,
    /// Wrong passwords per (account, address).
    pub logins: crate::lockout::Lockout,
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    Auth,
    Api,
    Free,
}

fn classify(method: &Method, path: &str) -> Class {
    // CORS preflights and tus capability probes are cheap and cached by
    // browsers; counting them would halve a browser's sign-in budget.
    if method == Method::OPTIONS
        || path.starts_with("/play/")
        || path.starts_with("/api/v1/uploads/direct/")
        || (path.starts_with("/api/v1/tus/") && method == Method::PATCH)
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
    {
        Class::Free
    } else if path.starts_with("/api/v1/auth/") {
        Class::Auth
    } else {
        Class::Api
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let n = |v: u32| NonZeroU32::new(v.max(1)).expect("at least 1");
    Quota::per_second(n(per_second)).allow_burst(n(burst))
}

/// The bucket an address counts in: IPv6 clients by their /64 (one
/// subscriber's network, which hands out addresses freely), so that a client
/// cannot walk its own prefix for fresh buckets and the map stays small.
pub fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Limits {
    /// None when limits are off.
    pub fn new(c: &RateLimitConfig) -> Option<Limits> {
        c.enabled.then(|| Limits {
            auth: DefaultKeyedRateLimiter::keyed(quota(c.auth_per_second, c.auth_burst)),
            api: DefaultKeyedRateLimiter::keyed(quota(c.api_per_second, c.api_burst)),
            logins: crate::lockout::Lockout::new(c.login_failures_per_lock),
        })
    }

    /// `c` says where the client address comes from (`client::client_addr`).
    fn check(&self, req: &Request, c: &RateLimitConfig) -> Result<(), ApiError> {
        let limiter = match classify(req.method(), req.uri().path()) {
            Class::Free => return Ok(()),
            Class::Auth => &self.auth,
            Class::Api => &self.api,
        };
        let Some(ip) = client_addr(req.headers(), req.extensions(), c) else {
            return Ok(());
        };
        limiter.check_key(&bucket_of(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(
                wait.as_millis() as i64,
                "too many requests from this address; slow down",
            )
        })
    }

    /// Forgets addresses whose buckets are full again (run periodically).
    pub fn upkeep(&self) {
        for l in [&self.auth, &self.api] {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.logins.upkeep();
    }
}

pub async fn limit(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if let Some(limits) = &state.limits {
        if let Err(e) = limits.check(&req, &state.config.rate_limits) {
            crate::metrics::rate_limited();
            return e.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let get = Method::GET;
        assert_eq!(classify(&get, "/play/tok/hls/master.m3u8"), Class::Free);
        assert_eq!(
            classify(&Method::PUT, "/api/v1/uploads/direct/tok"),
            Class::Free
        );
        assert_eq!(classify(&Method::PATCH, "/api/v1/tus/abc"), Class::Free);
        assert_eq!(classify(&Method::POST, "/api/v1/tus"), Class::Api);
        assert_eq!(classify(&Method::POST, "/api/v1/auth/login"), Class::Auth);
        assert_eq!(classify(&get, "/api/v1/videos"), Class::Api);
        assert_eq!(classify(&get, "/healthz"), Class::Free);
        assert_eq!(
            classify(&Method::OPTIONS, "/api/v1/auth/login"),
            Class::Free
        );
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_of(a), bucket_of(b));
        assert_ne!(bucket_of(a), bucket_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(bucket_of(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
