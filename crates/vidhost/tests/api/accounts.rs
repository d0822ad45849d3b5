use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn register_login_me_and_profile() {
    let s = TestServer::start().await;
    let created = s.register("Alice@Example.com").await;
    assert_eq!(created["role"], "uploader");
    assert_eq!(created["display_name"], "Alice");
    assert!(created["id"].as_str().unwrap().len() >= 26);

    let tokens = s.login("alice@example.com").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let at = tokens["access_token"].as_str().unwrap();
    let me: serde_json::Value = s.get_json("/api/v1/me", Some(at)).await;
    assert_eq!(me["email"], "Alice@Example.com");
    assert_eq!(me["mfa_enabled"], false);

    let r = s
        .http
        .patch(s.url("/api/v1/me"))
        .bearer_auth(at)
        .json(&json!({"display_name": "Al"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me: serde_json::Value = s.get_json("/api/v1/me", Some(at)).await;
    assert_eq!(me["display_name"], "Al");
}

#[tokio::test]
async fn bad_registrations_and_logins_are_refused() {
    let s = TestServer::start().await;
    s.register("bob@example.com").await;
    let r = s
        .post_json(
            "/api/v1/auth/register",
            None,
            json!({"email": "BOB@example.com", "password": PASSWORD}),
        )
        .await;
    problem(r, StatusCode::CONFLICT, "email_taken").await;
    for weak in ["short", "password1234", "aaaaaaaaaaaaaaaa", "qwertyuiop123"] {
        let r = s
            .post_json(
                "/api/v1/auth/register",
                None,
                json!({"email": "c@example.com", "password": weak}),
            )
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    }
    let r = s
        .post_json(
            "/api/v1/auth/register",
            None,
            json!({"email": "not-an-email", "password": PASSWORD}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            json!({"email": "bob@example.com", "password": "wrong password 123"}),
        )
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = s.get("/api/v1/me", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.get("/api/v1/me", Some("garbage.token.here")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Nothing was half-created by the refusals.
    let admin = s.admin().await;
    let users: serde_json::Value = s.get_json("/api/v1/admin/users", Some(&admin)).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 2, "{users}");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let s = TestServer::start().await;
    s.register("carol@example.com").await;
    let first = s.login("carol@example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let second: serde_json::Value = s
        .post_json("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await
        .json()
        .await
        .unwrap();
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert!(s
        .get("/api/v1/me", Some(second["access_token"].as_str().unwrap()))
        .await
        .status()
        .is_success());

    // Replaying the rotated token is theft: it fails and kills the family,
    // so the legitimately rotated token stops working too.
    let r = s
        .post_json("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .post_json("/api/v1/auth/refresh", None, json!({"refresh_token": r2}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // …and the access tokens of that session, whichever refresh made them.
    for pair in [&first, &second] {
        let r = s
            .get("/api/v1/me", Some(pair["access_token"].as_str().unwrap()))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    // Logout ends the session it names, refreshes and access tokens.
    let other = s.login("carol@example.com").await;
    let (ro, ao) = (
        other["refresh_token"].as_str().unwrap(),
        other["access_token"].as_str().unwrap(),
    );
    let kept = s.access_token("carol@example.com").await;
    assert_eq!(s.get("/api/v1/me", Some(ao)).await.status(), StatusCode::OK);
    let r = s
        .post_json("/api/v1/auth/logout", None, json!({"refresh_token": ro}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .post_json("/api/v1/auth/refresh", None, json!({"refresh_token": ro}))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.get("/api/v1/me", Some(ao)).await;
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Another session of the same user goes on…
    assert_eq!(
        s.get("/api/v1/me", Some(&kept)).await.status(),
        StatusCode::OK
    );
    // …until it signs out with just its access token.
    let r = s
        .http
        .post(s.url("/api/v1/auth/logout"))
        .bearer_auth(&kept)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.get("/api/v1/me", Some(&kept)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Signing out with neither token says what to send.
    let r = s
        .http
        .post(s.url("/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn password_change_revokes_other_sessions() {
    let s = TestServer::start().await;
    s.register("dave@example.com").await;
    let a = s.login("dave@example.com").await;
    let b = s.login("dave@example.com").await;
    let at = a["access_token"].as_str().unwrap();
    let sessions: serde_json::Value = s.get_json("/api/v1/me/sessions", Some(at)).await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 2);

    let r = s.post_json("/api/v1/me/password", Some(at), json!({"current_password": "nope nope nope", "new_password": "another fine passphrase 77"})).await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = s
        .post_json(
            "/api/v1/me/password",
            Some(at),
            json!({"current_password": PASSWORD, "new_password": "abc"}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    let r = s
        .post_json(
            "/api/v1/me/password",
            Some(at),
            json!({"current_password": PASSWORD, "new_password": "another fine passphrase 77"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let r = s
        .post_json(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": b["refresh_token"]}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the other session is revoked"
    );
    let r = s
        .post_json(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": a["refresh_token"]}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the caller's own session survives"
    );
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            json!({"email": "dave@example.com", "password": "another fine passphrase 77"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn roles_registration_modes_and_disabling() {
    let s = TestServer::start_with(&[("VIDHOST_AUTH__REGISTRATION", "closed")]).await;
    let r = s
        .post_json(
            "/api/v1/auth/register",
            None,
            json!({"email": "e@example.com", "password": PASSWORD}),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "registration_closed").await;

    let s = TestServer::start_with(&[("VIDHOST_AUTH__DEFAULT_ROLE", "viewer")]).await;
    let viewer = s.user("v@example.com").await;
    let r = s
        .upload_form(&viewer, sample_mp4().to_vec(), "a.mp4", &[])
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s
        .post_json(
            "/api/v1/uploads/multipart",
            Some(&viewer),
            json!({"filename": "a.mp4", "size": 10}),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s.get("/api/v1/admin/users", Some(&viewer)).await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;

    // An admin promotes the viewer; the change applies to the token already held.
    let admin = s.admin().await;
    let me: serde_json::Value = s.get_json("/api/v1/me", Some(&viewer)).await;
    let id = me["id"].as_str().unwrap();
    let r = s.set_user(&admin, id, json!({"role": "uploader"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .upload_form(&viewer, sample_mp4().to_vec(), "a.mp4", &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Disabling locks the user out at once.
    let r = s.set_user(&admin, id, json!({"disabled": true})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        s.get("/api/v1/me", Some(&viewer)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            json!({"email": "v@example.com", "password": PASSWORD}),
        )
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn tokens_from_one_node_work_on_another() {
    // Two servers on one database (SQLite in WAL mode shares across
    // processes too) accept each other's tokens: keys live in the database.
    let a = TestServer::start().await;
    let b = TestServer::start_with(&[("VIDHOST_DATABASE_URL", &a.database_url)]).await;
    let t = a.user("shared@example.com").await;
    assert_eq!(b.get("/api/v1/me", Some(&t)).await.status(), StatusCode::OK);
    let pair = b.login("shared@example.com").await;
    let r = a
        .post_json(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// The signing key of `kid`, read from the server's database.
async fn signing_secret(database_url: &str, kid: &str) -> Vec<u8> {
    use base64::Engine;
    use sqlx::Connection;
    let q = "SELECT secret FROM signing_keys WHERE kid = $1";
    let secret: String = if database_url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(q)
            .bind(kid)
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(q)
            .bind(kid)
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .unwrap()
}

#[tokio::test]
async fn access_tokens_are_checked_whole_every_time() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let s = TestServer::start().await;
    let alice = s.user("alice@example.com").await;
    let bob = s.user("bob@example.com").await;
    let me = |t: String| {
        let s = &s;
        async move { s.get("/api/v1/me", Some(&t)).await.status() }
    };
    // Both verified once (and so remembered by the server).
    assert_eq!(me(alice.clone()).await, StatusCode::OK);
    assert_eq!(me(bob.clone()).await, StatusCode::OK);

    // Alice's signature on anything but Alice's own token is refused.
    let a: Vec<&str> = alice.split('.').collect();
    let b: Vec<&str> = bob.split('.').collect();
    let bobs_claims_alices_signature = format!("{}.{}.{}", a[0], b[1], a[2]);
    assert_eq!(
        me(bobs_claims_alices_signature).await,
        StatusCode::UNAUTHORIZED
    );
    let mut claims: serde_json::Value = serde_json::from_slice(&B64.decode(a[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    let promoted = format!("{}.{}.{}", a[0], B64.encode(claims.to_string()), a[2]);
    assert_eq!(me(promoted).await, StatusCode::UNAUTHORIZED);
    let mut cut = alice.clone();
    cut.pop();
    assert_eq!(me(cut).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(alice.clone()).await, StatusCode::OK);

    // A token stops working when it expires (plus 5 s of allowed clock
    // skew), even one the server has already checked.
    let header = jsonwebtoken::decode_header(&alice).unwrap();
    let key = signing_secret(&s.database_url, header.kid.as_deref().unwrap()).await;
    let sign = |exp: i64| {
        let mut c = claims.clone();
        c["role"] = json!("uploader");
        c["exp"] = json!(exp);
        jsonwebtoken::encode(&header, &c, &jsonwebtoken::EncodingKey::from_secret(&key)).unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(me(sign(now - 60)).await, StatusCode::UNAUTHORIZED);
    let short = sign(now + 1);
    assert_eq!(me(short.clone()).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    assert_eq!(me(short).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(alice).await, StatusCode::OK);
}

/// A demotion to viewer (or a ban) also ends the uploads a user had begun:
/// they may look at them and abort them, not add to them or finish them.
#[tokio::test]
async fn uploads_begun_before_a_demotion_cannot_be_finished() {
    use base64::Engine;
    let s = TestServer::start().await;
    let t = s.user("demoted@example.com").await;
    let admin = s.admin().await;
    let size = 6 << 20;
    let mp: serde_json::Value = s
        .post_json(
            "/api/v1/uploads/multipart",
            Some(&t),
            json!({"filename": "a.mp4", "content_type": "video/mp4", "size": size}),
        )
        .await
        .json()
        .await
        .unwrap();
    let upload = mp["upload_id"].as_str().unwrap();
    let parts_path = format!("/api/v1/uploads/multipart/{upload}/parts");
    let parts: serde_json::Value = s
        .post_json(&parts_path, Some(&t), json!({"part_numbers": [1]}))
        .await
        .json()
        .await
        .unwrap();
    let part_url = parts["parts"][0]["url"].as_str().unwrap().to_owned();
    let pre: serde_json::Value = s
        .post_json(
            "/api/v1/uploads/presigned",
            Some(&t),
            json!({"filename": "b.mp4", "content_type": "video/mp4", "size": 100}),
        )
        .await
        .json()
        .await
        .unwrap();
    let tus_at = |r: reqwest::RequestBuilder| r.bearer_auth(&t).header("tus-resumable", "1.0.0");
    let r = tus_at(s.http.post(s.url("/api/v1/tus")))
        .header("upload-length", "100")
        .header(
            "upload-metadata",
            format!(
                "filename {}",
                base64::engine::general_purpose::STANDARD.encode("c.mp4")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tus_url = r.headers()["location"].to_str().unwrap().to_owned();

    let me: serde_json::Value = s.get_json("/api/v1/me", Some(&t)).await;
    let r = s
        .set_user(
            &admin,
            me["id"].as_str().unwrap(),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Nothing more goes in…
    let r = s
        .post_json(&parts_path, Some(&t), json!({"part_numbers": [2]}))
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    if !s.is_s3() {
        // (On S3 the part URL is S3's own; there `complete` is what stops it.)
        let r = s
            .http
            .put(&part_url)
            .body(vec![0u8; 5 << 20])
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let r = tus_at(s.http.patch(&tus_url))
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(vec![0u8; 100])
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    // …and nothing is finished.
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload}/complete"),
            Some(&t),
            json!({"parts": [{"part_number": 1, "etag": "x"}]}),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s
        .post_json(
            &format!(
                "/api/v1/uploads/presigned/{}/complete",
                pre["video_id"].as_str().unwrap()
            ),
            Some(&t),
            json!({}),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;

    // Looking and aborting still work.
    let r = s
        .get(&format!("/api/v1/uploads/multipart/{upload}"), Some(&t))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = tus_at(s.http.head(&tus_url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .delete(&format!("/api/v1/uploads/multipart/{upload}"), &t)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = tus_at(s.http.delete(&tus_url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}
