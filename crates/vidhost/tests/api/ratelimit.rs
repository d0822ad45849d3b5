//! Rate limits as a client meets them: 429 `rate_limited` with Retry-After.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

async fn wrong_login(s: &TestServer, email: &str, forwarded_for: &str) -> reqwest::Response {
    login_from(s, email, "not the password 99", forwarded_for).await
}

async fn login_from(s: &TestServer, email: &str, password: &str, from: &str) -> reqwest::Response {
    s.http
        .post(s.url("/api/v1/auth/login"))
        .header("x-forwarded-for", from)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_requests_per_address_are_limited_and_forwarded_for_is_not_trusted() {
    let s = TestServer::start_with(&[
        ("VIDHOST_RATE_LIMITS__AUTH_BURST", "5"),
        ("VIDHOST_RATE_LIMITS__AUTH_PER_SECOND", "1"),
    ])
    .await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        // A made-up X-Forwarded-For per request does not buy new buckets.
        let r = wrong_login(&s, "nobody@example.com", &format!("10.0.0.{i}")).await;
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        }
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert!(limited >= 2, "{statuses:?}");
    // Other classes are not touched by the sign-in bucket.
    assert_eq!(s.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(s.get("/api/v1/videos", None).await.status(), StatusCode::OK);
    let metrics = s.get("/metrics", None).await.text().await.unwrap();
    let n: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vidhost_rate_limited_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= limited as f64, "{n}");
}

#[tokio::test]
async fn a_browser_page_can_read_its_429_and_retry_after() {
    let s = TestServer::start_with(&[
        ("VIDHOST_RATE_LIMITS__API_BURST", "3"),
        ("VIDHOST_RATE_LIMITS__API_PER_SECOND", "1"),
    ])
    .await;
    let origin = "https://app.example.com";
    let mut limited = None;
    for _ in 0..6 {
        let r = s
            .http
            .get(s.url("/api/v1/videos"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = limited.expect("the fourth request within a second is limited");
    // Without these a browser hides the answer from the page entirely.
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    assert!(r.headers().contains_key("retry-after"));
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

/// A server whose sign-in bucket holds 3 (1 more a second), with one more
/// `rate_limits` setting.
async fn small_sign_in_bucket((key, value): (&str, &str)) -> TestServer {
    let key = format!("VIDHOST_RATE_LIMITS__{key}");
    TestServer::start_with(&[
        ("VIDHOST_RATE_LIMITS__AUTH_BURST", "3"),
        ("VIDHOST_RATE_LIMITS__AUTH_PER_SECOND", "1"),
        (&key, value),
    ])
    .await
}

/// The address the audit log recorded for a sign-in sent with this
/// X-Forwarded-For.
async fn audited_address(s: &TestServer, forwarded_for: &str) -> serde_json::Value {
    let r = login_from(s, ADMIN_EMAIL, PASSWORD, forwarded_for).await;
    assert_eq!(r.status(), StatusCode::OK);
    let admin: serde_json::Value = r.json().await.unwrap();
    let log = s
        .get_json(
            "/api/v1/admin/audit?action=login.succeeded",
            admin["access_token"].as_str(),
        )
        .await;
    log["items"][0]["ip"].clone()
}

#[tokio::test]
async fn only_listed_proxies_are_believed_and_a_chain_counts_its_first_client() {
    // The test client connects from 127.0.0.1, which is not a listed proxy:
    // its X-Forwarded-For is its own invention and buys no fresh buckets.
    let s = small_sign_in_bucket(("TRUSTED_PROXIES", "[\"10.0.0.0/8\"]")).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = wrong_login(&s, "nobody@example.com", &format!("10.0.0.{i}")).await;
        statuses.push(r.status());
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    drop(s);

    // Loopback listed as the outer proxy and 10/8 as the inner one: the
    // client is the last entry that is neither.
    let s = small_sign_in_bucket(("TRUSTED_PROXIES", "[\"127.0.0.0/8\", \"10.0.0.0/8\"]")).await;
    // What the client itself sent (left of its address) is not believed.
    let ip = audited_address(&s, "192.0.2.66, 198.51.100.7, 10.0.0.5").await;
    assert_eq!(ip, "198.51.100.7");
    let mut limited = false;
    for _ in 0..10 {
        let r = wrong_login(&s, "nobody@example.com", "198.51.100.7, 10.0.0.5").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "198.51.100.7's sign-in bucket never ran out");
    // The same client through another listed proxy: the same bucket.
    let r = wrong_login(&s, "nobody@example.com", "198.51.100.7, 10.0.0.6").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxies has a bucket of its own.
    let r = wrong_login(&s, "nobody@example.com", "198.51.100.8, 10.0.0.5").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A chain of proxies only: the outermost entry.
    assert_eq!(audited_address(&s, "10.0.0.9, 10.0.0.5").await, "10.0.0.9");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_bucket() {
    let s = small_sign_in_bucket(("TRUST_FORWARDED_FOR", "true")).await;
    // The proxy appends the address it saw: the last entry counts.
    for i in 0..6 {
        let r = wrong_login(&s, "nobody@example.com", &format!("192.0.2.1, 10.0.0.{i}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let mut last = StatusCode::OK;
    for _ in 0..5 {
        last = wrong_login(&s, "nobody@example.com", "192.0.2.1, 10.0.1.1")
            .await
            .status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // The audit log records the forwarded address.
    assert_eq!(audited_address(&s, "10.0.2.2").await, "10.0.2.2");
}

#[tokio::test]
async fn wrong_passwords_lock_out_the_address_that_sent_them_not_the_owner() {
    let s = TestServer::start_with(&[
        ("VIDHOST_RATE_LIMITS__LOGIN_FAILURES_PER_LOCK", "3"),
        // Addresses come from X-Forwarded-For here, so a test can be two places.
        ("VIDHOST_RATE_LIMITS__TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    s.register("lock@example.com").await;
    // Ten sign-ins at once with the right password: all pass.
    let tries = (0..10).map(|_| login_from(&s, "lock@example.com", PASSWORD, "10.0.0.1"));
    for r in futures::future::join_all(tries).await {
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Three wrong ones from the attacker's address lock that address out…
    for _ in 0..3 {
        let r = wrong_login(&s, "lock@example.com", "10.6.6.6").await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let r = login_from(&s, "lock@example.com", PASSWORD, "10.6.6.6").await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // …and not the owner, elsewhere.
    let r = login_from(&s, "lock@example.com", PASSWORD, "10.0.0.1").await;
    assert_eq!(r.status(), StatusCode::OK);

    // A right password resets the count for its address.
    for _ in 0..2 {
        let r = wrong_login(&s, "lock@example.com", "10.0.0.1").await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    assert_eq!(
        login_from(&s, "lock@example.com", PASSWORD, "10.0.0.1")
            .await
            .status(),
        StatusCode::OK
    );
    for _ in 0..2 {
        let r = wrong_login(&s, "lock@example.com", "10.0.0.1").await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    assert_eq!(
        login_from(&s, "lock@example.com", PASSWORD, "10.0.0.1")
            .await
            .status(),
        StatusCode::OK
    );

    let admin = s.admin().await;
    let log = s
        .get_json(
            "/api/v1/admin/audit?action=login.failed&limit=100",
            Some(&admin),
        )
        .await;
    let locked: Vec<_> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["reason"] == "locked")
        .collect();
    assert_eq!(locked.len(), 1, "{log}");
    assert_eq!(locked[0]["ip"], "10.6.6.6");

    // An e-mail without an account locks alike, so the lockout does not
    // tell which e-mails have accounts.
    for _ in 0..3 {
        let r = wrong_login(&s, "Nobody@example.com", "10.6.6.7").await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let r = wrong_login(&s, "nobody@example.com", "10.6.6.7").await;
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let s = TestServer::start_with(&[
        ("VIDHOST_RATE_LIMITS__ENABLED", "false"),
        ("VIDHOST_RATE_LIMITS__AUTH_BURST", "1"),
        ("VIDHOST_RATE_LIMITS__LOGIN_FAILURES_PER_LOCK", "1"),
    ])
    .await;
    s.register("free@example.com").await;
    for _ in 0..5 {
        let r = wrong_login(&s, "free@example.com", "-").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    s.login("free@example.com").await;
}
