//! The web UI: its pages and assets as served, and the whole of it driven
//! in a real browser (headless Chromium through Playwright, see
//! tests/clients/web_ui.py).

use crate::helpers::*;
use reqwest::StatusCode;

const PAGES: &[&str] = &[
    "/",
    "/login",
    "/register",
    "/upload",
    "/library",
    "/watch/some-id",
    "/account",
    "/admin",
];

#[tokio::test]
async fn every_page_path_serves_the_ui_under_a_strict_csp() {
    let s = TestServer::start().await;
    for path in PAGES {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(r#"<script src="/assets/app.js" defer></script>"#),
            "{path}"
        );
        assert!(!body.contains("<script>"), "no inline script");
    }
    // Assets: the right types, revalidated by ETag.
    for (path, ty) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        (
            "/assets/vendor/hls.light.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/vendor/qrcode.js", "text/javascript; charset=utf-8"),
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], ty, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
        let etag = r.headers()["etag"].clone();
        assert!(!r.bytes().await.unwrap().is_empty());
        let again = s
            .http
            .get(s.url(path))
            .header("if-none-match", etag.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["etag"], etag);
    }
    // Paths that are neither pages nor API are still problem+json 404s.
    for path in ["/nope", "/watch", "/watch/a/b", "/assets/other.js"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
}

/// Register, upload, follow processing live, edit, play the HLS ladder with
/// hls.js, switch quality, scrub the storyboard, search, enrol TOTP from the
/// QR code and sign in with it, pause an upload and resume it after a page
/// reload, and the admin page: all in Chromium, as a user clicks.
#[tokio::test]
async fn a_new_user_goes_through_the_web_ui_in_a_real_browser() {
    let s = TestServer::start_with(&[("VIDHOST_PROCESSING__WORKERS", "1")]).await;
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("sunset.mp4");
    std::fs::write(&small, sample_mp4()).unwrap();
    // A real MP4 head, then 40 MiB: five of the UI's 8 MiB chunks.
    let big = tmp.path().join("long-take.mp4");
    let mut bytes = sample_mp4().to_vec();
    bytes.extend((0..40u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(&big, &bytes).unwrap();
    let script = clients_dir().join("web_ui.py");
    let base = s.url("");
    let seen = run_client(
        "python3",
        &[
            script.to_str().unwrap(),
            &base,
            small.to_str().unwrap(),
            big.to_str().unwrap(),
            ADMIN_EMAIL,
            PASSWORD,
        ],
        tmp.path(),
    );
    // What the browser saw agrees with the API.
    let id = seen["video_id"].as_str().unwrap();
    let v: serde_json::Value = s
        .http
        .get(s.url(&format!("/api/v1/videos/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(v["visibility"], "public", "{v}");
    assert!(seen["resumed_from"].as_u64().unwrap() >= 8 << 20, "{seen}");
}
