//! The web UI: one HTML shell for every page path of the contract, a script
//! that renders the page for the path in the browser (and talks only to the
//! public API, as any client does), a stylesheet, and two vendored libraries
//! (hls.js for adaptive playback where the browser has no HLS of its own,
//! qrcode-generator for the MFA enrolment QR code; see web/vendor/README.md).
//! Everything is compiled into the binary, so `vidhost serve` alone serves it.
//!
//! Every answer carries a strict Content-Security-Policy: scripts only from
//! this origin and never inline, so text from the API (titles, descriptions,
//! names) can never run as script; the script also only ever sets it as
//! text. Assets are revalidated (`no-cache` + a content ETag), so a new
//! binary's UI is picked up on the next load.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

fn asset(body: &'static [u8], content_type: &'static str) -> Asset {
    let digest = Sha256::digest(body);
    let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Asset {
        body,
        content_type,
        etag: HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex is a valid header"),
    }
}

/// The shell first, then the assets, each with the path it is served at.
static FILES: LazyLock<[(&str, Asset); 5]> = LazyLock::new(|| {
    const JS: &str = "text/javascript; charset=utf-8";
    [
        (
            "",
            asset(
                include_bytes!("../web/index.html"),
                "text/html; charset=utf-8",
            ),
        ),
        ("/assets/app.js", asset(include_bytes!("../web/app.js"), JS)),
        (
            "/assets/app.css",
            asset(include_bytes!("../web/app.css"), "text/css; charset=utf-8"),
        ),
        (
            "/assets/vendor/hls.light.min.js",
            asset(include_bytes!("../web/vendor/hls.light.min.js"), JS),
        ),
        (
            "/assets/vendor/qrcode.js",
            asset(include_bytes!("../web/vendor/qrcode.js"), JS),
        ),
    ]
});

/// Scripts and styles from this origin only, none inline; media and images
/// from this origin (playback URLs are `/play/…` here, on S3 too) plus the
/// `blob:` URLs hls.js plays from and the `data:` URL of the QR code.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
    worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

fn serve(a: &Asset, req_headers: &HeaderMap) -> Response {
    let fresh = req_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == a.etag.as_bytes());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        a.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::ETAG, a.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// The UI's routes: the contract's page paths (each the shell, which
/// renders the page for its path) and the assets.
pub fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    use axum::routing::get;
    let file =
        |i: usize| get(move |headers: HeaderMap| async move { serve(&FILES[i].1, &headers) });
    let mut r = axum::Router::new();
    for path in [
        "/",
        "/login",
        "/register",
        "/upload",
        "/library",
        "/watch/{id}",
        "/account",
        "/admin",
    ] {
        r = r.route(path, file(0));
    }
    for i in 1..FILES.len() {
        r = r.route(FILES[i].0, file(i));
    }
    r
}
