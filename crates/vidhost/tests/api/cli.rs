use crate::helpers::*;
use reqwest::StatusCode;
use std::io::Write;
use std::process::{Command, Stdio};

fn vidhost(args: &[&str], env: &[(&str, &str)], stdin: &str) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidhost"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn admin_create_user_then_sign_in() {
    // Use the same database a server will use (SQLite file or the test PostgreSQL).
    let s = TestServer::start().await;
    let dir = s.data_dir.path().to_str().unwrap().to_owned();
    let db = s.database_url.clone();
    let env = [("VIDHOST_DATABASE_URL", db.as_str())];
    let out = vidhost(
        &[
            "admin",
            "create-user",
            "--data-dir",
            &dir,
            "--email",
            "ops@example.com",
            "--display-name",
            "Ops",
            "--role",
            "admin",
        ],
        &env,
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ops@example.com"));

    let tokens = s.login("ops@example.com").await;
    let me: serde_json::Value = s
        .get_json("/api/v1/me", tokens["access_token"].as_str())
        .await;
    assert_eq!(me["role"], "admin");
    assert_eq!(me["display_name"], "Ops");

    // Refusals are explained and change nothing.
    let out = vidhost(
        &[
            "admin",
            "create-user",
            "--data-dir",
            &dir,
            "--email",
            "weak@example.com",
        ],
        &env,
        "short\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("weak_password"));
    let out = vidhost(
        &[
            "admin",
            "create-user",
            "--data-dir",
            &dir,
            "--email",
            "ops@example.com",
        ],
        &env,
        &format!("{PASSWORD}\n"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("email_taken"));
    let out = vidhost(
        &[
            "admin",
            "create-user",
            "--data-dir",
            &dir,
            "--email",
            "x@example.com",
            "--role",
            "king",
        ],
        &env,
        "",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role"));
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            serde_json::json!({"email": "weak@example.com", "password": "short"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = vidhost(
            &["migrate", "--data-dir", dir.path().to_str().unwrap()],
            &[],
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("vidhost.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the database holds secrets: owner-only"
    );
}

#[tokio::test]
async fn serve_without_ffmpeg_stops_at_start_and_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vidhost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("PATH", empty_path.path())
        .env_remove("VIDHOST_DATABASE_URL")
        .env_remove("VIDHOST_STORAGE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("serve exits instead of running without ffmpeg")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ffmpeg not found"), "{err}");
    assert!(err.contains("apt-get install ffmpeg"), "{err}");
}

/// Runs `vidhost admin rotate-keys` on `s`'s database; returns its stdout.
fn rotate_keys(s: &TestServer, args: &[&str]) -> String {
    let env = [("VIDHOST_DATABASE_URL", s.database_url.as_str())];
    let dir = s.data_dir.path().to_str().unwrap().to_owned();
    let mut all = vec!["admin", "rotate-keys", "--data-dir", &dir];
    all.extend_from_slice(args);
    let out = vidhost(&all, &env, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Waits (at most 5 s: nodes here reload keys every second) until `token`
/// is refused.
async fn refused_soon(s: &TestServer, token: &str) {
    for _ in 0..50 {
        if s.get("/api/v1/me", Some(token)).await.status() == StatusCode::UNAUTHORIZED {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("a token of a retired key still verifies after 5 s");
}

#[tokio::test]
async fn rotated_keys_sign_new_tokens_and_old_ones_still_verify() {
    // Two nodes on one database; the rotation runs as a third process.
    let a = TestServer::start_with(&[("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1")]).await;
    let old = a.user("rot@example.com").await;
    let old_kid = kid_of(&old);
    let stdout = rotate_keys(&a, &["--purpose", "jwt"]);
    assert!(stdout.contains("jwt: new signing key jwt-"), "{stdout}");
    assert!(stdout.contains("older keys still verify for "), "{stdout}");

    // The running node switches at its next periodic reload (here every
    // second) without having seen a token of the new key.
    let mut switched = None;
    for _ in 0..50 {
        let t = a.access_token("rot@example.com").await;
        if kid_of(&t) != old_kid {
            switched = Some(kid_of(&t));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let switched = switched.expect("node a signs with the new key within 5 s");

    // A node started after the rotation signs with the new key too…
    let b = TestServer::start_with(&[("VIDHOST_DATABASE_URL", &a.database_url)]).await;
    let new = b.access_token("rot@example.com").await;
    let new_kid = kid_of(&new);
    assert_eq!(new_kid, switched);
    assert!(stdout.contains(&new_kid), "{stdout}");
    // …and each accepts the other's tokens, old and new.
    for (s, t) in [(&a, &new), (&a, &old), (&b, &old)] {
        assert_eq!(s.get("/api/v1/me", Some(t)).await.status(), StatusCode::OK);
    }
    // A made-up key id is refused.
    let r = a
        .get(
            "/api/v1/me",
            Some("eyJhbGciOiJIUzI1NiIsImtpZCI6Imp3dC05OSJ9.e30.x"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let admin = a.admin().await;
    let log = a
        .get_json("/api/v1/admin/audit?action=key.rotated", Some(&admin))
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    assert_eq!(items[0]["target"], new_kid.as_str());
    assert_eq!(items[0]["detail"]["purpose"], "jwt");
    assert_eq!(items[0]["actor"], serde_json::Value::Null);
}

#[tokio::test]
async fn superseded_keys_are_retired_once_what_they_signed_has_expired() {
    let a = TestServer::start_with(&[("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1")]).await;
    let old = a.user("ret@example.com").await;
    rotate_keys(&a, &["--purpose", "jwt"]);
    // Sweeps come and go; the old key stays while its tokens may be valid.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        a.get("/api/v1/me", Some(&old)).await.status(),
        StatusCode::OK
    );
    let new = a.access_token("ret@example.com").await;
    assert_ne!(kid_of(&new), kid_of(&old));

    // Two days later (the keys' dates moved back, as if), every token the
    // old key signed has expired: only a forged one could still use it.
    let two_days = 2 * 86_400_000;
    sql(
        &a.database_url,
        &format!(
            "UPDATE signing_keys SET created_at = created_at - {two_days} WHERE purpose = 'jwt'"
        ),
    )
    .await;
    refused_soon(&a, &old).await;
    assert_eq!(
        a.get("/api/v1/me", Some(&new)).await.status(),
        StatusCode::OK
    );

    // A node started now does not bring the first key back.
    let b = TestServer::start_with(&[("VIDHOST_DATABASE_URL", &a.database_url)]).await;
    assert_eq!(
        b.get("/api/v1/me", Some(&old)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let from_b = b.access_token("ret@example.com").await;
    assert_eq!(kid_of(&from_b), kid_of(&new));
    assert_eq!(
        a.get("/api/v1/me", Some(&from_b)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_leaked_key_is_retired_at_once_with_what_it_signed() {
    let a = TestServer::start_with(&[("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1")]).await;
    let old = a.user("leak@example.com").await;
    let video = a.upload_sample(&old, "leaked").await;
    let id = video["id"].as_str().unwrap();
    let playback = |t: String| {
        let a = &a;
        async move {
            a.get_json(&format!("/api/v1/videos/{id}/playback"), Some(&t))
                .await["original"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let old_original = playback(old.clone()).await;
    assert_eq!(a.get(&old_original, None).await.status(), StatusCode::OK);
    // A player on a keep-alive connection of its own, fetching only that
    // file over and over (the connection answers such runs itself,
    // remembering the grant it checked).
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let player = {
        let (last, url) = (last.clone(), a.url(&old_original));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..1000 {
                let status = client.get(&url).send().await.unwrap().status();
                last.store(status.as_u16(), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let player_sees = |want: u16| {
        let last = last.clone();
        async move {
            for _ in 0..100 {
                if last.load(std::sync::atomic::Ordering::SeqCst) == want {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(player_sees(200).await, "the player plays");

    let stdout = rotate_keys(&a, &["--purpose", "all", "--retire-old"]);
    for p in ["jwt", "grant"] {
        assert!(
            stdout.contains(&format!("{p}: new signing key {p}-")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("1 older key(s) retired"), "{stdout}");

    // Tokens and playback URLs of the old keys stop working…
    refused_soon(&a, &old).await;
    let r = a.get(&old_original, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        player_sees(403).await,
        "the player's connection is refused too within 5 s"
    );
    player.abort();
    // …and signing in again gives ones that work.
    let new = a.access_token("leak@example.com").await;
    assert_ne!(kid_of(&new), kid_of(&old));
    let new_original = playback(new.clone()).await;
    assert_ne!(new_original, old_original);
    assert_eq!(
        a.get(&new_original, None).await.bytes().await.unwrap(),
        sample_mp4()
    );

    let admin = a.admin().await;
    let log = a
        .get_json("/api/v1/admin/audit?action=key.rotated", Some(&admin))
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    for i in items {
        assert_eq!(i["detail"]["retired"], 1, "{log}");
    }
}
