//! Which failures are worth another try, and how long to wait before it.

use std::time::Duration;

pub const MAX_ATTEMPTS: u32 = 8;

/// Exponential backoff with full jitter: a random wait in
/// [0, min(30 s, 500 ms × 2^attempt)].
pub fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.min(6))
        .min(Duration::from_secs(30));
    cap.mul_f64(fastrand::f64())
}

/// Connection trouble and server-side trouble are transient; a 4xx is the
/// client's fault, except for "slow down" (429), timeouts (408) and a tus
/// upload briefly held by another request (423).
pub fn retryable_status(status: u16) -> bool {
    status >= 500 || matches!(status, 408 | 423 | 429)
}

pub fn retryable_error(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(30));
            assert!(d <= Duration::from_millis(500) * (1 << attempt.min(6)));
        }
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [500, 502, 503, 429, 423, 408] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 415, 422] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
