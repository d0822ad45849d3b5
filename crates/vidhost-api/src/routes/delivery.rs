//! `/play/{token}/…`: signed, expiring grants for one video, with complete
//! RFC 9110 byte-range support. Expiry is checked when a request starts, so
//! a long download is not cut.

use crate::error::{ApiError, ApiResult};
use crate::grants::{expired, GrantKind, PlayGrant, PLAY};
use crate::state::SharedState;
use axum::body::Body;
// Handlers take the whole `Request` last and pass on its head (`Parts`):
// the `HeaderMap` extractor would clone the map on every segment request.
use crate::sendfile::Outbox;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vidhost_core::domain::VideoStatus;
use vidhost_store::ObjectMeta;

use super::videos::original_key;

async fn grant(state: &SharedState, token: &str) -> ApiResult<PlayGrant> {
    let g: PlayGrant = state.grants.verify(&state.db, token).await?;
    if g.p != PLAY || expired(g.e) {
        return Err(ApiError::invalid_token());
    }
    Ok(g)
}

pub async fn original(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let g = grant(&state, &token).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file for this video",
        )
    };
    if g.k != GrantKind::Owner {
        return Err(not_found());
    }
    let cached = state
        .original_types
        .lock()
        .expect("not poisoned")
        .get(&g.v)
        .cloned();
    let ct = match cached {
        Some(ct) => ct,
        None => {
            let video = state
                .db
                .get_video(&g.v)
                .await?
                .ok_or_else(ApiError::video_not_found)?;
            if video.status == VideoStatus::AwaitingUpload {
                return Err(not_found());
            }
            let ct: std::sync::Arc<str> = video
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream")
                .into();
            let mut cache = state.original_types.lock().expect("not poisoned");
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(g.v.clone(), ct.clone());
            ct
        }
    };
    let key = original_key(&g.v);
    let meta = state.store.head(&key).await?.ok_or_else(not_found)?;
    serve(
        &state,
        &key,
        meta,
        &ct,
        "private, max-age=3600",
        &req.into_parts().0,
    )
    .await
}

/// Serves one output object of the grant's video (any grant kind); the
/// store is the authority on existence, so a deleted video is 404 at once.
async fn output(
    state: &SharedState,
    token: &str,
    key_of: impl FnOnce(&str) -> Option<String>,
    content_type: &str,
    cache_control: &'static str,
    req: &Parts,
) -> ApiResult<Response> {
    let g = grant(state, token).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file for this video",
        )
    };
    let key = key_of(&g.v).ok_or_else(not_found)?;
    let meta = state.store.head(&key).await?.ok_or_else(not_found)?;
    serve(state, &key, meta, content_type, cache_control, req).await
}

const PLAYLIST_CACHE: &str = "public, max-age=5";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// MP4 and poster keep their URL across a reprocess, so they may change.
const REPLACEABLE: &str = "public, max-age=300";

/// Outputs at fixed names: (route under `/play/{token}/`, object under
/// `videos/{id}/`, content type, cache policy).
const FIXED: &[(&str, &str, &str, &str)] = &[
    (
        "hls/master.m3u8",
        "stream/master.m3u8",
        "application/vnd.apple.mpegurl",
        PLAYLIST_CACHE,
    ),
    (
        "dash/manifest.mpd",
        "stream/manifest.mpd",
        "application/dash+xml",
        PLAYLIST_CACHE,
    ),
    ("mp4", "mp4", "video/mp4", REPLACEABLE),
    ("poster.jpg", "poster.jpg", "image/jpeg", REPLACEABLE),
    (
        "storyboard.vtt",
        "storyboard.vtt",
        "text/vtt; charset=utf-8",
        REPLACEABLE,
    ),
];

/// The manifests, MP4, poster and storyboard track: which one comes from
/// the matched route.
pub async fn fixed_output(
    State(state): State<SharedState>,
    route: axum::extract::MatchedPath,
    Path(token): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let suffix = route.as_str().trim_start_matches("/play/{token}/");
    let &(_, object, ct, cache) = FIXED
        .iter()
        .find(|f| f.0 == suffix)
        .ok_or_else(|| ApiError::internal(format!("no output for {suffix}")))?;
    output(
        &state,
        &token,
        |v| Some(format!("videos/{v}/{object}")),
        ct,
        cache,
        &req.into_parts().0,
    )
    .await
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Media playlists and CMAF segments, shared by HLS and DASH.
pub async fn stream_file(
    State(state): State<SharedState>,
    Path((token, generation, file)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let (ct, cache) = if file.ends_with(".m3u8") {
        ("application/vnd.apple.mpegurl", PLAYLIST_CACHE)
    } else if file.ends_with(".m4s") {
        ("video/iso.segment", IMMUTABLE)
    } else {
        ("application/octet-stream", IMMUTABLE)
    };
    let key = |v: &str| {
        (plain_name(&generation) && plain_name(&file))
            .then(|| format!("videos/{v}/stream/{generation}/{file}"))
    };
    output(&state, &token, key, ct, cache, &req.into_parts().0).await
}

pub async fn storyboard_image(
    State(state): State<SharedState>,
    Path((token, file)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let key = |v: &str| plain_name(&file).then(|| format!("videos/{v}/storyboard/{file}"));
    output(
        &state,
        &token,
        key,
        "image/jpeg",
        REPLACEABLE,
        &req.into_parts().0,
    )
    .await
}

/// What a request asks of a representation, after conditionals.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    NotModified,
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Whole seconds, as HTTP dates carry.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn etag_matches(list: &str, etag: &str, weak_ok: bool) -> bool {
    list.split(',').map(str::trim).any(|t| {
        t == "*" || {
            let (weak, tag) = t
                .strip_prefix("W/")
                .map(|s| (true, s))
                .unwrap_or((false, t));
            (weak_ok || !weak) && tag.trim_matches('"') == etag
        }
    })
}

fn plan(headers: &HeaderMap, meta: &ObjectMeta) -> Plan {
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    // RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since.
    if let Some(inm) = h(header::IF_NONE_MATCH) {
        if etag_matches(inm, &meta.etag, true) {
            return Plan::NotModified;
        }
    } else if let Some(ims) =
        h(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok())
    {
        if secs(meta.last_modified) <= secs(ims) {
            return Plan::NotModified;
        }
    }
    let Some(range) = h(header::RANGE) else {
        return Plan::Full;
    };
    if let Some(ir) = h(header::IF_RANGE) {
        let fresh = if ir.starts_with('"') || ir.starts_with("W/") {
            // A strong comparison: weak tags never match.
            !ir.starts_with("W/") && ir.trim_matches('"') == meta.etag
        } else {
            httpdate::parse_http_date(ir).is_ok_and(|d| secs(d) == secs(meta.last_modified))
        };
        if !fresh {
            return Plan::Full;
        }
    }
    match http_range_header::parse_range_header(range) {
        // A Range we cannot parse is ignored (RFC 9110 §14.2).
        Err(_) => Plan::Full,
        Ok(parsed) => match parsed.validate(meta.size) {
            Ok(ranges) if ranges.len() == 1 => Plan::Partial(*ranges[0].start(), *ranges[0].end()),
            // Several ranges: a server may answer with the whole representation.
            Ok(_) => Plan::Full,
            Err(_) => Plan::Unsatisfiable,
        },
    }
}

/// Answers GET or HEAD for one stored object with ranges and validators.
pub async fn serve(
    state: &SharedState,
    key: &str,
    meta: ObjectMeta,
    content_type: &str,
    cache_control: &'static str,
    req: &Parts,
) -> ApiResult<Response> {
    let plan = plan(&req.headers, &meta);
    let value = |s: String| HeaderValue::try_from(s).map_err(ApiError::internal);
    // Sized up front: growing a header map is a chain of reallocations,
    // and this runs for every segment and range a player asks for.
    let mut h = HeaderMap::with_capacity(12);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, value(format!("\"{}\"", meta.etag))?);
    h.insert(header::LAST_MODIFIED, value(http_date(meta.last_modified))?);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let respond = |status: StatusCode, h: HeaderMap, body: Body| {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = h;
        resp
    };
    let (status, range) = match plan {
        Plan::NotModified => return Ok(respond(StatusCode::NOT_MODIFIED, h, Body::empty())),
        Plan::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "the range is outside the file",
            )
            .with_header(header::CONTENT_RANGE, &format!("bytes */{}", meta.size))
            .into_response();
            resp.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(resp);
        }
        Plan::Full => (StatusCode::OK, None),
        Plan::Partial(a, z) => (StatusCode::PARTIAL_CONTENT, Some((a, z))),
    };
    let len = range.map(|(a, z)| z - a + 1).unwrap_or(meta.size);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).map_err(ApiError::internal)?,
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some((a, z)) = range {
        h.insert(
            header::CONTENT_RANGE,
            value(format!("bytes {a}-{z}/{}", meta.size))?,
        );
    }
    if req.method == Method::HEAD || len == 0 {
        return Ok(respond(status, h, Body::empty()));
    }
    let span = range.unwrap_or((0, meta.size - 1));
    let delivered = crate::metrics::delivered_bytes();
    // HTTP/1 from files on this machine: by sendfile (see sendfile.rs).
    let outbox = req
        .extensions
        .get::<axum::extract::ConnectInfo<Outbox>>()
        .filter(|_| req.version <= Version::HTTP_11);
    if let Some(outbox) = outbox {
        if let Some(file) = state.store.local_file(key, &meta) {
            if let Some(body) = crate::sendfile::file_body(&outbox.0, file, span.0, len, delivered)
            {
                return Ok(respond(status, h, body));
            }
        }
    }
    let body = state.store.get_seen(key, &meta, Some(span)).await?;
    let counted = body.stream.inspect(move |chunk| {
        if let Ok(c) = chunk {
            delivered.increment(c.len() as u64);
        }
    });
    Ok(respond(status, h, Body::from_stream(counted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            size: 1000,
            last_modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            etag: "abc".into(),
        }
    }

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn ranges() {
        let m = meta();
        assert_eq!(plan(&with(&[]), &m), Plan::Full);
        assert_eq!(
            plan(&with(&[("range", "bytes=0-99")]), &m),
            Plan::Partial(0, 99)
        );
        assert_eq!(
            plan(&with(&[("range", "bytes=-100")]), &m),
            Plan::Partial(900, 999)
        );
        assert_eq!(
            plan(&with(&[("range", "bytes=990-")]), &m),
            Plan::Partial(990, 999)
        );
        assert_eq!(
            plan(&with(&[("range", "bytes=990-5000")]), &m),
            Plan::Partial(990, 999)
        );
        assert_eq!(
            plan(&with(&[("range", "bytes=1000-")]), &m),
            Plan::Unsatisfiable
        );
        assert_eq!(plan(&with(&[("range", "items=0-1")]), &m), Plan::Full);
    }

    #[test]
    fn conditionals() {
        let m = meta();
        let date = httpdate::fmt_http_date(m.last_modified);
        assert_eq!(
            plan(&with(&[("if-none-match", "\"abc\"")]), &m),
            Plan::NotModified
        );
        assert_eq!(
            plan(&with(&[("if-modified-since", &date)]), &m),
            Plan::NotModified
        );
        assert_eq!(
            plan(
                &with(&[("range", "bytes=0-1"), ("if-range", "\"abc\"")]),
                &m
            ),
            Plan::Partial(0, 1)
        );
        assert_eq!(
            plan(
                &with(&[("range", "bytes=0-1"), ("if-range", "\"old\"")]),
                &m
            ),
            Plan::Full
        );
        assert_eq!(
            plan(
                &with(&[("range", "bytes=0-1"), ("if-range", "W/\"abc\"")]),
                &m
            ),
            Plan::Full
        );
        assert_eq!(
            plan(&with(&[("range", "bytes=0-1"), ("if-range", &date)]), &m),
            Plan::Partial(0, 1)
        );
    }
}
