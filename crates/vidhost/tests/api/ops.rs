use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn health_readiness_and_openapi() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/healthz", None).await.status(), StatusCode::OK);
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = s.get_json("/api/v1/openapi.json", None).await;
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/videos/{id}", "patch"),
        ("/api/v1/uploads/multipart/{upload_id}/complete", "post"),
        ("/api/v1/upload", "post"),
        ("/play/{token}/original", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} documented"
        );
    }
}

#[tokio::test]
async fn readyz_names_the_failing_store() {
    let s = TestServer::start().await;
    if s.is_s3() {
        // Point a second server at a bucket that does not exist.
        let Storage::S3 { endpoint, .. } = &s.storage else {
            unreachable!()
        };
        let url = format!("s3://no-such-bucket-here?endpoint={endpoint}");
        let s2 = TestServer::start_with(&[("VIDHOST_STORAGE_URL", &url)]).await;
        let r = s2.get("/readyz", None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["database"], "ok");
        assert!(v["storage"].as_str().unwrap().starts_with("error"), "{v}");
        return;
    }
    std::fs::remove_dir_all(s.data_dir.path().join("objects")).unwrap();
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["database"], "ok");
    assert!(v["storage"].as_str().unwrap().starts_with("error"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("storage"));
    assert_eq!(
        (v["status"].clone(), v["code"].clone()),
        (json!(503), json!("not_ready"))
    );
}

#[tokio::test]
async fn metrics_use_route_templates() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let v = s.upload_sample(&t, "m").await;
    let id = v["id"].as_str().unwrap();
    s.get(&format!("/api/v1/videos/{id}"), Some(&t)).await;
    let text = s.get("/metrics", None).await.text().await.unwrap();
    assert!(
        text.contains(r#"vidhost_http_requests_total{route="/api/v1/videos/{id}",status="200"}"#),
        "{text}"
    );
    assert!(!text.contains(id), "no raw ids in labels");
    assert!(
        text.contains(r#"vidhost_uploads_total{method="form",outcome="completed"} 1"#),
        "{text}"
    );
    assert!(text.contains("vidhost_upload_duration_seconds_bucket"));
    assert!(text.contains("vidhost_upload_size_bytes_bucket"));
    assert!(text.contains("vidhost_uploads_in_progress"));
    assert!(text.contains("vidhost_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn bad_configuration_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    // What `serve` with one bad setting says on stderr; it must not start.
    let refused = |key: &str, value: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidhost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env(key, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} was accepted");
        String::from_utf8_lossy(&out.stderr).to_lowercase()
    };
    let err = refused("VIDHOST_AUTH__ACCESS_TOKEN_TTL_S", "5");
    assert!(
        err.contains("access_token_ttl_s") && err.contains("900"),
        "{err}"
    );
    let err = refused("VIDHOST_DATABASE_URL", "mysql://x");
    assert!(err.contains("database_url"), "{err}");
    let err = refused("VIDHOST_RATE_LIMITS__TRUSTED_PROXIES", "[\"10.0.0.0/33\"]");
    assert!(err.contains("trusted_proxies"), "{err}");
    let err = refused(
        "VIDHOST_CORS__ALLOWED_ORIGINS",
        "[\"https://app.example.org/\"]",
    );
    assert!(
        err.contains("allowed_origins") && err.contains("scheme://host[:port]"),
        "{err}"
    );
}

fn in_progress(metrics: &str, method: &str) -> f64 {
    let prefix = format!("vidhost_uploads_in_progress{{method=\"{method}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn uploads_in_progress_is_what_the_catalog_holds_across_restarts() {
    let mut s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let create =
        |size: u64| json!({"filename": "a.mp4", "content_type": "video/mp4", "size": size});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = s
            .post_json("/api/v1/uploads/multipart", Some(&t), create(10 << 20))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: serde_json::Value = r.json().await.unwrap();
        ids.push(v["upload_id"].as_str().unwrap().to_owned());
    }
    let r = s
        .post_json("/api/v1/uploads/presigned", Some(&t), create(1 << 20))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = s.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(in_progress(&text, "multipart"), 3.0);
    assert_eq!(in_progress(&text, "presigned"), 1.0);
    assert_eq!(in_progress(&text, "tus"), 0.0);

    // A process that starts anew (or another node) sees the same uploads,
    // and ending one twice does not count it twice.
    s.crash_and_restart().await;
    let text = s.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(in_progress(&text, "multipart"), 3.0);
    let abort = format!("/api/v1/uploads/multipart/{}", ids[0]);
    assert_eq!(s.delete(&abort, &t).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.delete(&abort, &t).await.status(), StatusCode::NOT_FOUND);
    let text = s.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(in_progress(&text, "multipart"), 2.0);
    assert_eq!(in_progress(&text, "presigned"), 1.0);
}

#[tokio::test]
async fn every_error_is_problem_json_even_outside_the_handlers() {
    let s = TestServer::start().await;
    let token = s.user("errors@example.com").await;
    let admin = s.admin().await;
    // Query strings that do not parse are bad input like any other.
    for (path, t) in [
        ("/api/v1/videos?limit=abc", None),
        ("/api/v1/videos?limit=", Some(&token)),
        ("/api/v1/admin/audit?limit=abc", Some(&admin)),
    ] {
        let r = s.get(path, t.map(|t| t.as_str())).await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    // A body of the wrong type says which one to send.
    let r = s.post_json("/api/v1/upload", Some(&token), json!({})).await;
    let p = problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("multipart/form-data"),
        "{p}"
    );
    let r = s
        .http
        .post(s.url("/api/v1/auth/login"))
        .body(r#"{"email":"errors@example.com","password":"x"}"#)
        .send()
        .await
        .unwrap();
    let p = problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("application/json"),
        "{p}"
    );
    // The router's own answers: no such route, and a method a route does not take.
    let r = s.get("/api/v1/nope", None).await;
    problem(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s.http.put(s.url("/api/v1/videos")).send().await.unwrap();
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    problem(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let r = s
        .http
        .delete(s.url("/api/v1/auth/login"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}
