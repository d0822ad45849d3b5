//! TOTP two-factor sign-in, invites and the audit log, as clients use them.

use crate::helpers::*;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// RFC 4648 base32 (no padding), as authenticator apps read `secret=`.
fn base32_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {s}"),
        };
        bits = (bits << 5) | v as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// The test's own RFC 6238 code (HMAC-SHA1, 6 digits) for a time step, as
/// an authenticator app computes it: independent of the server's library.
pub fn totp(secret: &[u8], step: u64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).unwrap();
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0xf) as usize;
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    format!("{:06}", bin % 1_000_000)
}

pub fn step_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// A code that is none of those the server accepts now.
fn wrong_code(secret: &[u8]) -> String {
    let s = step_now();
    let taken: Vec<String> = (s - 2..=s + 2).map(|t| totp(secret, t)).collect();
    (0..)
        .map(|i| format!("{:06}", 123_456 + i))
        .find(|c| !taken.contains(c))
        .unwrap()
}

async fn login_with(s: &TestServer, email: &str, code: Option<&str>) -> reqwest::Response {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let Some(c) = code {
        body["totp_code"] = json!(c);
    }
    s.post_json("/api/v1/auth/login", None, body).await
}

/// Enrols `token`'s user: returns the raw secret and the recovery codes.
pub async fn enrol(s: &TestServer, token: &str) -> (Vec<u8>, Vec<String>) {
    let r = s
        .post_json("/api/v1/auth/mfa/totp/setup", Some(token), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let setup: Value = r.json().await.unwrap();
    let b32 = setup["secret"].as_str().unwrap();
    let url = url::Url::parse(setup["otpauth_url"].as_str().unwrap()).unwrap();
    assert_eq!(url.scheme(), "otpauth");
    assert_eq!(url.host_str(), Some("totp"));
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["secret"], b32, "{url}");
    assert_eq!(q["issuer"], "vidhost");
    let secret = base32_decode(b32);
    assert!(secret.len() >= 20, "at least 160 bits");
    let r = s
        .post_json(
            "/api/v1/auth/mfa/totp/enable",
            Some(token),
            json!({"code": totp(&secret, step_now())}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

#[test]
fn the_tests_totp_is_rfc_6238() {
    assert_eq!(totp(b"12345678901234567890", 1), "287082");
    assert_eq!(totp(b"12345678901234567890", 37037036), "081804");
    assert_eq!(base32_decode("GEZDGNBV"), b"12345");
}

#[tokio::test]
async fn totp_enrolment_sign_in_replay_recovery_and_disable() {
    let s = TestServer::start().await;
    let token = s.user("mfa@example.com").await;

    // Enabling takes a code of the secret being set up: a wrong one changes nothing.
    let r = s
        .post_json("/api/v1/auth/mfa/totp/setup", Some(&token), json!({}))
        .await;
    let b32 = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .post_json(
            "/api/v1/auth/mfa/totp/enable",
            Some(&token),
            json!({"code": wrong_code(&base32_decode(&b32))}),
        )
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;
    let me = s.get_json("/api/v1/me", Some(&token)).await;
    assert_eq!(me["mfa_enabled"], false);
    assert!(login_with(&s, "mfa@example.com", None)
        .await
        .status()
        .is_success());

    // A second setup replaces the first secret; its codes enrol.
    let (secret, recovery) = enrol(&s, &token).await;
    assert_eq!(recovery.len(), 10);
    let distinct: std::collections::HashSet<_> = recovery.iter().collect();
    assert_eq!(distinct.len(), 10);
    let me = s.get_json("/api/v1/me", Some(&token)).await;
    assert_eq!(me["mfa_enabled"], true);
    let r = s
        .post_json("/api/v1/auth/mfa/totp/setup", Some(&token), json!({}))
        .await;
    problem(r, StatusCode::CONFLICT, "mfa_already_enabled").await;

    // The password alone no longer signs in; a wrong password is still
    // just wrong credentials (nothing said about the second factor).
    let r = login_with(&s, "mfa@example.com", None).await;
    problem(r, StatusCode::UNAUTHORIZED, "mfa_required").await;
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            json!({"email": "mfa@example.com", "password": "wrong password 123", "totp_code": "123456"}),
        )
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = login_with(&s, "mfa@example.com", Some(&wrong_code(&secret))).await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;

    // The code that enabled MFA was used; the next step's code (within the
    // accepted drift) signs in once, and only once.
    let now = step_now();
    // (Refused if it is the step that enabled MFA; accepted if the clock
    // moved on since.)
    let r = login_with(&s, "mfa@example.com", Some(&totp(&secret, now))).await;
    assert!(
        [StatusCode::OK, StatusCode::UNAUTHORIZED].contains(&r.status()),
        "{}",
        r.status()
    );
    let next = totp(&secret, now + 1);
    let r = login_with(&s, "mfa@example.com", Some(&next)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    assert!(s
        .get("/api/v1/me", tokens["access_token"].as_str())
        .await
        .status()
        .is_success());
    let r = login_with(&s, "mfa@example.com", Some(&next)).await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;
    // After `next`, an earlier step's code never works again.
    let r = login_with(&s, "mfa@example.com", Some(&totp(&secret, now))).await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;

    // A recovery code works once, in any case and with spaces for the dash.
    let spaced = recovery[0].to_uppercase().replace('-', " ");
    let r = login_with(&s, "mfa@example.com", Some(&spaced)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = login_with(&s, "mfa@example.com", Some(&recovery[0])).await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;

    // Disabling takes a code too (here a recovery code); then the password suffices.
    let r = s
        .post_json(
            "/api/v1/auth/mfa/totp/disable",
            Some(&token),
            json!({"code": wrong_code(&secret)}),
        )
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;
    let r = s
        .post_json(
            "/api/v1/auth/mfa/totp/disable",
            Some(&token),
            json!({"code": recovery[1]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let me = s.get_json("/api/v1/me", Some(&token)).await;
    assert_eq!(me["mfa_enabled"], false);
    assert!(login_with(&s, "mfa@example.com", None)
        .await
        .status()
        .is_success());
    let r = s
        .post_json(
            "/api/v1/auth/mfa/totp/disable",
            Some(&token),
            json!({"code": recovery[2]}),
        )
        .await;
    problem(r, StatusCode::CONFLICT, "mfa_not_enabled").await;
    // Enabling without a setup first has nothing to check against.
    let r = s
        .post_json(
            "/api/v1/auth/mfa/totp/enable",
            Some(&token),
            json!({"code": "123456"}),
        )
        .await;
    problem(r, StatusCode::CONFLICT, "mfa_not_set_up").await;
    let r = s
        .post_json("/api/v1/auth/mfa/totp/setup", None, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn wrong_codes_lock_the_second_factor_even_when_sent_at_once() {
    let s = TestServer::start().await;
    let token = s.user("guess@example.com").await;
    let (secret, _) = enrol(&s, &token).await;
    let wrong = wrong_code(&secret);

    // Twelve guesses at once: five are checked, the rest find it locked.
    let tries = (0..12).map(|_| login_with(&s, "guess@example.com", Some(&wrong)));
    let mut codes = Vec::new();
    for r in futures::future::join_all(tries).await {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        codes.push((status, body["code"].as_str().unwrap().to_owned()));
    }
    let checked = codes.iter().filter(|(_, c)| c == "invalid_totp").count();
    let locked = codes.iter().filter(|(_, c)| c == "rate_limited").count();
    assert_eq!((checked, locked), (5, 7), "{codes:?}");
    // Locked: even the right code is not checked now.
    let right = totp(&secret, step_now() + 1);
    let r = login_with(&s, "guess@example.com", Some(&right)).await;
    assert!((1..=300).contains(&retry_after(&r)));
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // Once the lock has passed, five more wrong codes lock it twice as long.
    let expire = "UPDATE users SET totp_locked_until = 0 WHERE email_lower = 'guess@example.com'";
    sql(&s.database_url, expire).await;
    for _ in 0..5 {
        let r = login_with(&s, "guess@example.com", Some(&wrong)).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;
    }
    let r = login_with(&s, "guess@example.com", Some(&right)).await;
    assert!(
        (301..=600).contains(&retry_after(&r)),
        "{}",
        retry_after(&r)
    );
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // A right code resets the count: the next wrong ones are checked again.
    sql(&s.database_url, expire).await;
    let r = login_with(&s, "guess@example.com", Some(&right)).await;
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..4 {
        let r = login_with(&s, "guess@example.com", Some(&wrong)).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_totp").await;
    }

    // Each refusal is in the audit log, aimed at the account, by nobody.
    let admin = s.admin().await;
    let log = s
        .get_json(
            "/api/v1/admin/audit?action=login.failed&limit=200",
            Some(&admin),
        )
        .await;
    let items = log["items"].as_array().unwrap();
    let count = |reason: &str| {
        items
            .iter()
            .filter(|e| e["detail"]["reason"] == reason)
            .count()
    };
    assert_eq!(
        (count("invalid_totp"), count("rate_limited")),
        (14, 9),
        "{log}"
    );
    let me = s.get_json("/api/v1/me", Some(&token)).await;
    assert!(items
        .iter()
        .all(|e| e["detail"]["email"] == "guess@example.com"
            && e["target"] == me["id"]
            && e["actor"].is_null()));
}

#[tokio::test]
async fn one_code_signs_in_once_even_when_sent_twice_at_once() {
    let s = TestServer::start().await;
    let token = s.user("twice@example.com").await;
    let (secret, _) = enrol(&s, &token).await;
    let code = totp(&secret, step_now() + 1);
    let (a, b) = tokio::join!(
        login_with(&s, "twice@example.com", Some(&code)),
        login_with(&s, "twice@example.com", Some(&code))
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
}

async fn register_with(s: &TestServer, email: &str, code: Option<&str>) -> reqwest::Response {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let Some(c) = code {
        body["invite_code"] = json!(c);
    }
    s.post_json("/api/v1/auth/register", None, body).await
}

#[tokio::test]
async fn invites_are_single_use_and_carry_their_role() {
    let s = TestServer::start_with(&[("VIDHOST_AUTH__REGISTRATION", "invite")]).await;
    let admin = s.admin().await;
    let r = register_with(&s, "a@example.com", None).await;
    problem(r, StatusCode::FORBIDDEN, "invalid_invite").await;
    let r = register_with(&s, "a@example.com", Some("made-up")).await;
    problem(r, StatusCode::FORBIDDEN, "invalid_invite").await;

    for bad in [json!({"role": "owner"}), json!({"expires_in_s": 10})] {
        let r = s
            .post_json("/api/v1/admin/invites", Some(&admin), bad)
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let r = s
        .post_json(
            "/api/v1/admin/invites",
            Some(&admin),
            json!({"role": "viewer", "expires_in_s": 3600}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let invite: Value = r.json().await.unwrap();
    let code = invite["code"].as_str().unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(invite["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let in_s = expires - chrono::Utc::now().timestamp();
    assert!((3590..=3600).contains(&in_s), "{invite}");

    // A taken e-mail fails and leaves the invite unused.
    let r = register_with(&s, ADMIN_EMAIL, Some(code)).await;
    problem(r, StatusCode::CONFLICT, "email_taken").await;
    let r = register_with(&s, "a@example.com", Some(code)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["role"], "viewer");
    let r = register_with(&s, "b@example.com", Some(code)).await;
    problem(r, StatusCode::FORBIDDEN, "invalid_invite").await;

    // Only admins invite.
    let r = s.login("a@example.com").await;
    let viewer = r["access_token"].as_str().unwrap();
    let r = s
        .post_json("/api/v1/admin/invites", Some(viewer), json!({}))
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;

    // Without a role the invite gives the default one (uploader).
    let r = s
        .post_json("/api/v1/admin/invites", Some(&admin), json!({}))
        .await;
    let code = r.json::<Value>().await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = register_with(&s, "c@example.com", Some(&code)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["role"], "uploader");

    // Closed registration is closed, invite or not.
    let s = TestServer::start_with(&[("VIDHOST_AUTH__REGISTRATION", "closed")]).await;
    let admin = s.admin().await;
    let r = s
        .post_json("/api/v1/admin/invites", Some(&admin), json!({}))
        .await;
    let code = r.json::<Value>().await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = register_with(&s, "d@example.com", Some(&code)).await;
    problem(r, StatusCode::FORBIDDEN, "registration_closed").await;
}

#[tokio::test]
async fn the_audit_log_records_security_events_for_admins_only() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "not the password 99"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let user = s.user("eve@example.com").await;
    let me = s.get_json("/api/v1/me", Some(&user)).await;
    let uid = me["id"].as_str().unwrap().to_owned();
    let video = s.upload_sample(&user, "doomed").await;
    let vid = video["id"].as_str().unwrap();
    assert_eq!(
        s.delete(&format!("/api/v1/videos/{vid}"), &user)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = s.set_user(&admin, &uid, json!({"role": "viewer"})).await;
    assert_eq!(r.status(), StatusCode::OK);

    let r = s.get("/api/v1/admin/audit", Some(&user)).await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s.get("/api/v1/admin/audit", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = s.get("/api/v1/admin/audit", Some(&admin)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(!text.contains(PASSWORD) && !text.contains("not the password 99"));
    let log: Value = serde_json::from_str(&text).unwrap();
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // Newest first.
    assert_eq!(
        actions,
        [
            "user.changed",
            "video.deleted",
            "login.succeeded",
            "user.registered",
            "login.failed",
            "login.succeeded"
        ],
        "{log}"
    );
    let items = log["items"].as_array().unwrap();
    assert_eq!(items[0]["actor"]["email"], ADMIN_EMAIL);
    assert_eq!(items[0]["target"], uid.as_str());
    assert_eq!(items[0]["detail"]["role"], "viewer");
    assert_eq!(items[1]["target"], vid);
    assert_eq!(items[1]["actor"]["id"], uid.as_str());
    assert_eq!(items[4]["actor"], Value::Null);
    assert_eq!(items[4]["detail"]["email"], "nobody@example.com");
    assert!(chrono::DateTime::parse_from_rfc3339(items[0]["at"].as_str().unwrap()).is_ok());

    // Pages of two follow each other without gaps or repeats.
    let seen = s
        .all_pages("/api/v1/admin/audit?limit=2", Some(&admin), "action")
        .await;
    assert_eq!(seen, actions);
    let by_actor = s
        .get_json(&format!("/api/v1/admin/audit?actor={uid}"), Some(&admin))
        .await;
    assert_eq!(by_actor["items"].as_array().unwrap().len(), 3, "{by_actor}");
    let r = s.get("/api/v1/admin/audit?limit=0", Some(&admin)).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = s.get("/api/v1/admin/audit?cursor=zzz", Some(&admin)).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}
