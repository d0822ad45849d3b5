//! The TOTP second factor and its recovery codes.
//!
//! TOTP is RFC 6238 as every authenticator app reads an `otpauth://` URL by
//! default: HMAC-SHA1, 6 digits, 30-second steps (totp-rs computes the codes
//! and writes the URL). A code is accepted for the step before and after the
//! current one (clock drift), and only once: the last accepted step is kept,
//! and an equal or earlier one is refused, so a code seen over a shoulder
//! cannot be replayed. Wrong codes lock further tries: every fifth in a row
//! locks the account's second factor for 5 minutes, doubling with each
//! lockout (at most a day) until a right code comes. A password alone never
//! reaches this check, so the lock cannot lock out someone else's login.
//!
//! Recovery codes: ten per enrolment, shown once, stored as SHA-256 (they
//! carry 50 random bits each, so a fast hash is enough), each usable once in
//! place of a TOTP code.

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use axum::http::StatusCode;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};
use vidhost_core::time::now_ms;

const DIGITS: usize = 6;
const STEP_S: u64 = 30;
/// Steps either side of the current one whose codes are accepted.
const SKEW: u64 = 1;
/// Every this many wrong codes in a row lock the second factor…
const FAILURES_PER_LOCK: i64 = 5;
/// …for this long, doubled with each lockout.
const LOCK_MS: i64 = 5 * 60 * 1000;
const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "vidhost";

fn totp(secret: Vec<u8>, account: &str) -> ApiResult<TOTP> {
    // The label's issuer and account are separated by ':'; neither may hold one.
    let account = account.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_S,
        secret,
        Some(ISSUER.into()),
        account,
    )
    .map_err(|e| ApiError::internal(format!("TOTP: {e}")))
}

/// A new secret (160 bits, RFC 4226's recommendation), base32.
pub fn new_secret() -> String {
    let mut bytes = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::Raw(bytes).to_encoded().to_string()
}

fn secret_bytes(b32: &str) -> ApiResult<Vec<u8>> {
    Secret::Encoded(b32.to_owned())
        .to_bytes()
        .map_err(|_| ApiError::internal("a stored TOTP secret is not base32"))
}

/// The `otpauth://` URL an authenticator app enrols from (as a QR code).
pub fn otpauth_url(secret_b32: &str, email: &str) -> ApiResult<String> {
    Ok(totp(secret_bytes(secret_b32)?, email)?.get_url())
}

/// The time step whose code `code` is, within `SKEW` steps of `now_s`.
fn matching_step(secret_b32: &str, code: &str, now_s: u64) -> ApiResult<Option<i64>> {
    let t = totp(secret_bytes(secret_b32)?, "-")?;
    let now = now_s / STEP_S;
    let mut found = None;
    // Every candidate is computed and compared in constant time, so the
    // answer's timing says nothing about which step (if any) matched.
    for step in now.saturating_sub(SKEW)..=now + SKEW {
        let expected = t.generate(step * STEP_S);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step as i64);
        }
    }
    Ok(found)
}

fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn recovery_hash(code: &str) -> String {
    hex::encode(Sha256::digest(normalize(code).as_bytes()))
}

/// Fresh recovery codes (`xxxxx-xxxxx`, base32 letters and digits) and
/// their hashes.
pub fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rngs::OsRng;
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let mut s: String = (0..10)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect();
            s.insert(5, '-');
            s
        })
        .collect();
    let hashes = codes.iter().map(|c| recovery_hash(c)).collect();
    (codes, hashes)
}

/// Which secret a code is checked against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The enrolled one (sign-in, turning MFA off): TOTP or a recovery code.
    Enrolled,
    /// The one being set up (turning MFA on): TOTP only.
    Pending,
}

/// A code that passed.
pub struct Passed {
    /// The secret it was checked against.
    pub secret: String,
    /// Its time step; `None` for a recovery code (now used up).
    pub step: Option<i64>,
}

fn now_s() -> u64 {
    (now_ms() / 1000).max(0) as u64
}

pub fn invalid_totp() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_totp",
        "the authentication code is wrong or was already used",
    )
}

/// Checks `code` of `user_id` against `which` secret. Wrong: 401
/// `invalid_totp`, counted; while locked: 429 `rate_limited` with
/// `Retry-After`, not checked; no such secret: 409 `mfa_not_set_up`.
/// A right code for `Pending` resets the count only through `enable_totp`.
pub async fn verify(
    state: &SharedState,
    user_id: &str,
    which: Which,
    code: &str,
) -> ApiResult<Passed> {
    let db = &state.db;
    let now = now_ms();
    let st = db.totp_state(user_id).await?.unwrap_or_default();
    let secret = match which {
        Which::Enrolled => st.secret,
        Which::Pending => st.pending,
    }
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "mfa_not_set_up",
            "there is no authenticator to check the code against; run setup first",
        )
    })?;
    // The check is reserved (counted as wrong) before it runs: guesses sent
    // at once, to any nodes, cannot get more than the lock allows.
    if let Some(until) = db
        .reserve_totp_attempt(user_id, now, FAILURES_PER_LOCK, LOCK_MS)
        .await?
    {
        return Err(crate::error::ApiError::rate_limited(
            until - now,
            "too many wrong authentication codes; try again later",
        ));
    }
    let code = normalize(code);
    let is_totp = code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit());
    let step = match (which, is_totp) {
        (Which::Pending, true) => matching_step(&secret, &code, now_s())?.map(Some),
        (Which::Pending, false) => None,
        (Which::Enrolled, true) => match matching_step(&secret, &code, now_s())? {
            Some(step) if db.use_totp_step(user_id, step).await? => Some(Some(step)),
            _ => None,
        },
        (Which::Enrolled, false) => db
            .use_recovery_code(user_id, &recovery_hash(&code), now)
            .await?
            .then_some(None),
    };
    // A right code resets the count (use_totp_step, use_recovery_code,
    // enable_totp); a wrong one stays counted.
    step.map(|step| Passed { secret, step })
        .ok_or_else(invalid_totp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_rfc_6238() {
        // RFC 6238 appendix B, SHA-1 seed, truncated to 6 digits.
        let b32 = Secret::Raw(b"12345678901234567890".to_vec())
            .to_encoded()
            .to_string();
        assert_eq!(matching_step(&b32, "287082", 59).unwrap(), Some(1));
        assert_eq!(
            matching_step(&b32, "081804", 1111111109).unwrap(),
            Some(37037036)
        );
        // One step either side still matches; two do not.
        assert_eq!(matching_step(&b32, "287082", 89).unwrap(), Some(1));
        assert_eq!(matching_step(&b32, "287082", 119).unwrap(), None);
    }

    #[test]
    fn recovery_codes_normalize() {
        let (codes, hashes) = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(codes[0].len(), 11);
        assert_eq!(
            recovery_hash(&codes[0].to_uppercase().replace('-', " ")),
            hashes[0]
        );
        assert_ne!(hashes[0], hashes[1]);
    }
}
