//! `/play/{token}/…`: signed, expiring grants for one video, with complete
//! RFC 9110 byte-range support. Expiry is checked when a request starts, so
//! a long download is not cut.

use crate::error::{ApiError, ApiResult};
use crate::grants::{expired, GrantKind, PlayGrant, PLAY};
use crate::state::{Seen, SharedState};
use axum::body::Body;
// Handlers take the whole `Request` last and pass on its head (`Parts`):
// the `HeaderMap` extractor would clone the map on every segment request.
use crate::sendfile::ConnInfo;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vidhost_core::domain::{VideoStatus, Visibility};
use vidhost_store::ObjectMeta;

use super::videos::original_key;

async fn grant(state: &SharedState, token: &str) -> ApiResult<PlayGrant> {
    let g: PlayGrant = state.grants.verify(&state.db, token).await?;
    if !usable(state, &g) {
        return Err(ApiError::invalid_token());
    }
    Ok(g)
}

/// A play grant (not an upload target) that has not expired, and does not
/// claim to live longer than any grant this server issues (only a key that
/// leaked could sign one).
fn usable(state: &SharedState, g: &PlayGrant) -> bool {
    let longest = state.config.delivery.longest_grant_s() as i64 + 60;
    g.p == PLAY && !expired(g.e) && g.e <= vidhost_core::time::now_ms() / 1000 + longest
}

/// The content type of a video's original, if this node has it at hand.
fn known_original_type(state: &SharedState, video: &str) -> Option<std::sync::Arc<str>> {
    state
        .original_types
        .lock()
        .expect("not poisoned")
        .get(video)
        .cloned()
}

/// How long a node trusts that a grant's video still exists.
const EXISTS_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The grant's video still exists, and may still be played with this kind
/// of grant: a viewer grant stops working when its video turns private
/// (owner and admin grants go on), and a deleted video's objects, which
/// outlive its rows while the store fails (their removal then waits for the
/// sweeper), are not reached by its grants meanwhile. The catalog is read at most every
/// `EXISTS_FOR` per video and node; a delete or a visibility change made on
/// this node takes effect here at once (`forget_seen`).
async fn check_grant(state: &SharedState, g: &PlayGrant) -> ApiResult<()> {
    let now = std::time::Instant::now();
    let seen = seen_recently(state, &g.v, now);
    let seen = match seen {
        Some(s) => s,
        None => {
            let Some(video) = state.db.get_video(&g.v).await? else {
                return Err(ApiError::video_not_found());
            };
            let s = Seen {
                at: now,
                private: video.visibility == Visibility::Private,
            };
            let mut all = state.videos_seen.lock().expect("not poisoned");
            if all.len() > 10_000 {
                all.retain(|_, t| now.duration_since(t.at) < EXISTS_FOR);
            }
            all.insert(g.v.clone(), s);
            s
        }
    };
    if !may_play(seen, g) {
        return Err(ApiError::video_not_found());
    }
    Ok(())
}

/// A private video plays only with an owner (or admin) grant.
fn may_play(seen: Seen, g: &PlayGrant) -> bool {
    !seen.private || g.k == GrantKind::Owner
}

fn seen_recently(state: &SharedState, video: &str, now: std::time::Instant) -> Option<Seen> {
    state
        .videos_seen
        .lock()
        .expect("not poisoned")
        .get(video)
        .copied()
        .filter(|s| now.duration_since(s.at) < EXISTS_FOR)
}

/// Makes this node's deliveries read the video's row again before the next
/// answer (it was deleted, or its visibility changed).
pub fn forget_seen(state: &SharedState, video: &str) {
    state
        .videos_seen
        .lock()
        .expect("not poisoned")
        .remove(video);
    // Connections' memos of earlier checks (`quick`) lapse too.
    state
        .seen_generation
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

pub async fn original(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let g = grant(&state, &token).await?;
    if g.k != GrantKind::Owner {
        return Err(no_such_file());
    }
    check_grant(&state, &g).await?;
    let ct = match known_original_type(&state, &g.v) {
        Some(ct) => ct,
        None => {
            let video = state
                .db
                .get_video(&g.v)
                .await?
                .ok_or_else(ApiError::video_not_found)?;
            if video.status == VideoStatus::AwaitingUpload {
                return Err(no_such_file());
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
    let Some(meta) = state.store.head(&key).await? else {
        return Err(missing(&state, &g.v).await);
    };
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

/// Serves one output object of the grant's video (any grant kind), if the
/// video still exists and the store has the object.
async fn output(
    state: &SharedState,
    token: &str,
    key_of: impl FnOnce(&str) -> Option<String>,
    content_type: &str,
    cache_control: &'static str,
    req: &Parts,
) -> ApiResult<Response> {
    let g = grant(state, token).await?;
    check_grant(state, &g).await?;
    let key = key_of(&g.v).ok_or_else(no_such_file)?;
    let Some(meta) = state.store.head(&key).await? else {
        return Err(missing(state, &g.v).await);
    };
    serve(state, &key, meta, content_type, cache_control, req).await
}

/// 404 for a file a video does not have (yet, or of that kind).
fn no_such_file() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such file for this video",
    )
}

/// 404 for a file not in the store: `video_not_found` when its video is
/// gone (deleted while a grant for it lives), else `not_found`.
async fn missing(state: &SharedState, video_id: &str) -> ApiError {
    match state.db.get_video(video_id).await {
        Ok(None) => ApiError::video_not_found(),
        Ok(Some(_)) => no_such_file(),
        Err(e) => e.into(),
    }
}

const PLAYLIST_CACHE: &str = "public, max-age=5";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// MP4 and poster keep their URL across a reprocess, so they may change.
const REPLACEABLE: &str = "public, max-age=300";

/// Outputs at fixed names: (route, object under `videos/{id}/`, content
/// type, cache policy).
const FIXED: &[(&str, &str, &str, &str)] = &[
    (
        "/play/{token}/hls/master.m3u8",
        "stream/master.m3u8",
        "application/vnd.apple.mpegurl",
        PLAYLIST_CACHE,
    ),
    (
        "/play/{token}/dash/manifest.mpd",
        "stream/manifest.mpd",
        "application/dash+xml",
        PLAYLIST_CACHE,
    ),
    ("/play/{token}/mp4", "mp4", "video/mp4", REPLACEABLE),
    (
        "/play/{token}/poster.jpg",
        "poster.jpg",
        "image/jpeg",
        REPLACEABLE,
    ),
    (
        "/play/{token}/storyboard.vtt",
        "storyboard.vtt",
        "text/vtt; charset=utf-8",
        REPLACEABLE,
    ),
];

const ORIGINAL_ROUTE: &str = "/play/{token}/original";
const HLS_FILE_ROUTE: &str = "/play/{token}/hls/{generation}/{file}";
const DASH_FILE_ROUTE: &str = "/play/{token}/dash/{generation}/{file}";
const STORYBOARD_IMAGE_ROUTE: &str = "/play/{token}/storyboard/{file}";

/// The manifests, MP4, poster and storyboard track: which one comes from
/// the matched route.
pub async fn fixed_output(
    State(state): State<SharedState>,
    route: axum::extract::MatchedPath,
    Path(token): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let &(_, object, ct, cache) = FIXED
        .iter()
        .find(|f| f.0 == route.as_str())
        .ok_or_else(|| ApiError::internal(format!("no output for {}", route.as_str())))?;
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

/// Content type and cache policy of a file of the stream.
fn stream_type(file: &str) -> (&'static str, &'static str) {
    if file.ends_with(".m3u8") {
        ("application/vnd.apple.mpegurl", PLAYLIST_CACHE)
    } else if file.ends_with(".m4s") {
        ("video/iso.segment", IMMUTABLE)
    } else {
        ("application/octet-stream", IMMUTABLE)
    }
}

fn stream_key(video: &str, generation: &str, file: &str) -> Option<String> {
    (plain_name(generation) && plain_name(file))
        .then(|| format!("videos/{video}/stream/{generation}/{file}"))
}

fn storyboard_key(video: &str, file: &str) -> Option<String> {
    plain_name(file).then(|| format!("videos/{video}/storyboard/{file}"))
}

/// Media playlists and CMAF segments, shared by HLS and DASH.
pub async fn stream_file(
    State(state): State<SharedState>,
    Path((token, generation, file)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let (ct, cache) = stream_type(&file);
    let key = |v: &str| stream_key(v, &generation, &file);
    output(&state, &token, key, ct, cache, &req.into_parts().0).await
}

pub async fn storyboard_image(
    State(state): State<SharedState>,
    Path((token, file)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    output(
        &state,
        &token,
        |v| storyboard_key(v, &file),
        "image/jpeg",
        REPLACEABLE,
        &req.into_parts().0,
    )
    .await
}

/// What a request asks of a representation, after conditionals.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    PreconditionFailed,
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

/// What a request asks of `meta`; `h` looks up a request header (its first
/// value, if it is text).
fn plan<'a>(h: impl Fn(header::HeaderName) -> Option<&'a str>, meta: &ObjectMeta) -> Plan {
    // RFC 9110 §13.2.2, in its order: If-Match (strong), else
    // If-Unmodified-Since; then If-None-Match, which wins over
    // If-Modified-Since.
    if let Some(im) = h(header::IF_MATCH) {
        if !etag_matches(im, &meta.etag, false) {
            return Plan::PreconditionFailed;
        }
    } else if let Some(ius) =
        h(header::IF_UNMODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok())
    {
        if secs(meta.last_modified) > secs(ius) {
            return Plan::PreconditionFailed;
        }
    }
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
    // A Range we cannot parse is ignored (RFC 9110 §14.2).
    let Some(specs) = parse_range(range) else {
        return Plan::Full;
    };
    let size = meta.size;
    let mut satisfiable = specs.into_iter().filter_map(|spec| match spec {
        RangeSpec::From(first, last) if first < size => {
            Some((first, last.map_or(size - 1, |l| l.min(size - 1))))
        }
        // A suffix longer than the file means all of it (§14.1.3).
        RangeSpec::Suffix(n) if n > 0 && size > 0 => Some((size - n.min(size), size - 1)),
        _ => None,
    });
    match (satisfiable.next(), satisfiable.next()) {
        (Some((a, z)), None) => Plan::Partial(a, z),
        (None, _) => Plan::Unsatisfiable,
        // Several ranges: a server may answer with the whole representation.
        (Some(_), Some(_)) => Plan::Full,
    }
}

/// One `range-spec` of a byte `Range` (RFC 9110 §14.1.1).
#[derive(Debug, PartialEq)]
enum RangeSpec {
    /// `first-pos "-" [ last-pos ]`
    From(u64, Option<u64>),
    /// `"-" suffix-length`
    Suffix(u64),
}

/// The range set of a `Range: bytes=…` value, or None if it is not one
/// (another unit, bad syntax, a last-pos before its first-pos). Positions
/// past `u64::MAX` saturate: they are past the end of any file.
fn parse_range(v: &str) -> Option<Vec<RangeSpec>> {
    let (unit, set) = v.split_once('=')?;
    if !unit.trim_end().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let pos = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse().unwrap_or(u64::MAX))
    };
    let mut specs = Vec::new();
    // `1#range-spec`: a comma-separated list, empty elements allowed.
    for spec in set.split(',').map(|e| e.trim_matches([' ', '\t'])) {
        if spec.is_empty() {
            continue;
        }
        let (first, last) = spec.split_once('-')?;
        specs.push(if first.is_empty() {
            RangeSpec::Suffix(pos(last)?)
        } else {
            let first = pos(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(pos(last)?)
            };
            if last.is_some_and(|l| l < first) {
                return None;
            }
            RangeSpec::From(first, last)
        });
    }
    (!specs.is_empty()).then_some(specs)
}

/// What a 200 or 206 sends of a stored file.
struct Payload<'a> {
    content_type: &'a str,
    len: u64,
    range: Option<(u64, u64)>,
}

/// The headers of an answer about one stored file, in order, given to
/// `put`; `body` adds those of a 200 or 206.
fn file_headers(
    meta: &ObjectMeta,
    cache_control: &'static str,
    body: Option<Payload<'_>>,
    mut put: impl FnMut(header::HeaderName, &str),
) {
    put(header::ACCEPT_RANGES, "bytes");
    put(header::ETAG, &format!("\"{}\"", meta.etag));
    put(header::LAST_MODIFIED, &http_date(meta.last_modified));
    put(header::CACHE_CONTROL, cache_control);
    put(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(Payload {
        content_type,
        len,
        range,
    }) = body
    {
        put(header::CONTENT_TYPE, content_type);
        put(header::CONTENT_LENGTH, &len.to_string());
        if let Some((a, z)) = range {
            put(
                header::CONTENT_RANGE,
                &format!("bytes {a}-{z}/{}", meta.size),
            );
        }
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
    let plan = plan(|n| req.headers.get(n).and_then(|v| v.to_str().ok()), &meta);
    let (status, range) = match plan {
        Plan::NotModified => (StatusCode::NOT_MODIFIED, None),
        Plan::PreconditionFailed => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the file is not the one the request's If-Match or If-Unmodified-Since names",
            ))
        }
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
    let body = (status != StatusCode::NOT_MODIFIED).then_some(Payload {
        content_type,
        len,
        range,
    });
    // Sized up front: growing a header map is a chain of reallocations,
    // and this runs for every segment and range a player asks for.
    let mut h = HeaderMap::with_capacity(12);
    let mut bad = None;
    file_headers(
        &meta,
        cache_control,
        body,
        |name, value| match HeaderValue::from_str(value) {
            Ok(v) => {
                h.insert(name, v);
            }
            Err(_) => bad = Some(name),
        },
    );
    if let Some(name) = bad {
        return Err(ApiError::internal(format!("unsendable {name} header")));
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    *resp.headers_mut() = h;
    if status == StatusCode::NOT_MODIFIED || req.method == Method::HEAD || len == 0 {
        return Ok(resp);
    }
    let span = range.unwrap_or((0, meta.size - 1));
    let delivered = crate::metrics::delivered_bytes();
    // HTTP/1 from files on this machine: by sendfile (see sendfile.rs).
    let outbox = req
        .extensions
        .get::<axum::extract::ConnectInfo<ConnInfo>>()
        .filter(|_| req.version <= Version::HTTP_11);
    if let Some(outbox) = outbox {
        if let Some(file) = state.store.local_file(key, &meta) {
            if let Some(body) =
                crate::sendfile::file_body(&outbox.0.outbox, file, span.0, len, delivered)
            {
                *resp.body_mut() = body;
                return Ok(resp);
            }
        }
    }
    let body = state.store.get_seen(key, &meta, Some(span)).await?;
    let counted = body.stream.inspect(move |chunk| {
        if let Ok(c) = chunk {
            delivered.increment(c.len() as u64);
        }
    });
    *resp.body_mut() = Body::from_stream(counted);
    Ok(resp)
}

/// A 200 or 206 that the connection sends itself (see fastpath.rs): the
/// response head, then `len` bytes of `file` from `offset`.
pub(crate) struct Quick {
    pub head: Vec<u8>,
    pub file: std::sync::Arc<std::fs::File>,
    pub offset: u64,
    pub len: u64,
    /// The route template and status, for the metrics.
    pub route: &'static str,
    pub status: u16,
}

/// Larger answers go through hyper (a shutdown waits for quick answers in
/// flight, see fastpath.rs, so this bounds that wait too).
const QUICK_MAX: u64 = 16 * 1024 * 1024;

/// What a connection remembers of the path it last answered itself, so
/// that the next request for the same path (players and CDNs fetch run
/// after run of ranges of one file under one token on a keep-alive
/// connection) skips the work that depends only on the path and the file's
/// version: the grant check (MAC and decoding), the key, the content type
/// and the header lines made from the file's metadata, the file lookup.
/// A request still stats the file, as nginx does; the memo is used only
/// while the grant is unexpired, the stat finds the version that was opened
/// and the store still has that file open, and while the key that signed
/// the grant is loaded (a key retired after a leak ends the memo too).
#[derive(Default)]
pub(crate) struct QuickMemo(Option<Memo>);

struct Memo {
    path: Box<str>,
    /// The grant's expiry.
    expires: i64,
    /// The key id the grant was signed with.
    kid: Box<str>,
    key: String,
    route: &'static str,
    meta: ObjectMeta,
    stamp: vidhost_store::LocalStamp,
    /// Weak, so that a file the store lets go (deleted, replaced, idle) is
    /// not held open by an idle connection.
    file: std::sync::Weak<std::fs::File>,
    /// When delivery last read the video (`check_grant`), and the node's
    /// `seen_generation` then: the memo holds only as long as that read
    /// (`EXISTS_FOR`) and until this node deletes a video or changes one's
    /// visibility.
    seen_at: std::time::Instant,
    seen_generation: u64,
    /// The header lines that depend only on the version of the file.
    lines: Vec<u8>,
}

/// The answer to `GET {path}` (`/play/…`, no query) when it is a plain
/// success from a file on this machine that needs no wait: a grant signed
/// by a loaded key, an object on local disk, no conditional that applies.
/// None for everything else (errors, 304, 416, originals whose type is not
/// cached, stores elsewhere), which the router then answers as usual; so
/// both ways give the same answer to the same request.
pub(crate) fn quick<'a>(
    state: &SharedState,
    path: &str,
    header: impl Fn(header::HeaderName) -> Option<&'a str>,
    memo: &mut QuickMemo,
) -> Option<Quick> {
    let remembered = memo
        .0
        .as_ref()
        .filter(|m| {
            *m.path == *path
                && !expired(m.expires)
                && state.grants.ring.find(&m.kid).is_some()
                && m.seen_at.elapsed() < EXISTS_FOR
                && m.seen_generation
                    == state
                        .seen_generation
                        .load(std::sync::atomic::Ordering::Acquire)
        })
        .and_then(|m| {
            let file = m.file.upgrade()?;
            (state.store.local_stamp(&m.key)? == m.stamp).then_some(file)
        });
    let file = match remembered {
        Some(file) => file,
        // (When this fails too the connection goes to hyper for good, so
        // the memo is not used again.)
        None => {
            let (m, file) = resolve(state, path)?;
            memo.0 = Some(m);
            file
        }
    };
    let m = memo.0.as_ref()?;
    let (status, range) = match plan(header, &m.meta) {
        Plan::Full => (StatusCode::OK, None),
        Plan::Partial(a, z) => (StatusCode::PARTIAL_CONTENT, Some((a, z))),
        Plan::NotModified | Plan::Unsatisfiable | Plan::PreconditionFailed => return None,
    };
    let (offset, len) = match range {
        Some((a, z)) => (a, z - a + 1),
        None => (0, m.meta.size),
    };
    if len == 0 || len > QUICK_MAX {
        return None;
    }
    let mut head = Vec::with_capacity(m.lines.len() + 192);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&m.lines);
    let mut n = itoa::Buffer::new();
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(n.format(len).as_bytes());
    if let Some((a, z)) = range {
        head.extend_from_slice(b"\r\ncontent-range: bytes ");
        head.extend_from_slice(n.format(a).as_bytes());
        head.push(b'-');
        head.extend_from_slice(n.format(z).as_bytes());
        head.push(b'/');
        head.extend_from_slice(n.format(m.meta.size).as_bytes());
    }
    head.extend_from_slice(b"\r\nvary: ");
    head.extend_from_slice(crate::CORS_VARY.as_bytes());
    head.extend_from_slice(b"\r\ndate: ");
    crate::fastpath::with_date(|date| head.extend_from_slice(date.as_bytes()));
    head.extend_from_slice(b"\r\n\r\n");
    Some(Quick {
        head,
        file,
        offset,
        len,
        route: m.route,
        status: status.as_u16(),
    })
}

/// The first request for a path on a connection: checks the grant, finds
/// the object and its open file, and makes the header lines of its version.
fn resolve(state: &SharedState, path: &str) -> Option<(Memo, std::sync::Arc<std::fs::File>)> {
    use futures::FutureExt;
    let (token, rest) = path.strip_prefix("/play/")?.split_once('/')?;
    let g: PlayGrant = state.grants.verify_loaded(token)?;
    if !usable(state, &g) {
        return None;
    }
    // Only while the hyper path checked the video lately (it still exists,
    // and this grant may play it); else that path answers, and checks.
    let seen_generation = state
        .seen_generation
        .load(std::sync::atomic::Ordering::Acquire);
    let seen = seen_recently(state, &g.v, std::time::Instant::now())?;
    if !may_play(seen, &g) {
        return None;
    }
    let v = g.v.as_str();
    let original_type;
    // Up to three segments (a fourth means more), without allocating.
    let mut parts = rest.splitn(4, '/');
    let segments = [parts.next(), parts.next(), parts.next(), parts.next()];
    let (route, key, content_type, cache) = match segments {
        [Some("original"), None, ..] if g.k == GrantKind::Owner => {
            original_type = known_original_type(state, v)?;
            let ct: &str = &original_type;
            (ORIGINAL_ROUTE, original_key(v), ct, "private, max-age=3600")
        }
        [Some(kind @ ("hls" | "dash")), Some(generation), Some(file), None] => {
            let (ct, cache) = stream_type(file);
            let route = if kind == "hls" {
                HLS_FILE_ROUTE
            } else {
                DASH_FILE_ROUTE
            };
            (route, stream_key(v, generation, file)?, ct, cache)
        }
        [Some("storyboard"), Some(file), None, _] => (
            STORYBOARD_IMAGE_ROUTE,
            storyboard_key(v, file)?,
            "image/jpeg",
            REPLACEABLE,
        ),
        _ => {
            let &(route, object, ct, cache) = FIXED
                .iter()
                .find(|f| f.0.strip_prefix("/play/{token}/") == Some(rest))?;
            (route, format!("videos/{v}/{object}"), ct, cache)
        }
    };
    // A store on this machine answers at once; any other would wait.
    let meta = state.store.head(&key).now_or_never()?.ok()??;
    let file = state.store.local_file(&key, &meta)?;
    // The stamp of the open file: the version `local_file` checked is `meta`.
    let stamp = vidhost_store::LocalStamp::of(&file.metadata().ok()?);
    let mut lines = Vec::with_capacity(320);
    let mut sendable = true;
    let mut line = |name: header::HeaderName, value: &str| {
        sendable &= HeaderValue::from_str(value).is_ok();
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    };
    file_headers(&meta, cache, None, &mut line);
    line(header::CONTENT_TYPE, content_type);
    if !sendable {
        return None;
    }
    let memo = Memo {
        path: path.into(),
        expires: g.e,
        kid: token.split('.').next().unwrap_or_default().into(),
        key,
        route,
        meta,
        stamp,
        file: std::sync::Arc::downgrade(&file),
        lines,
        seen_at: seen.at,
        seen_generation,
    };
    Some((memo, file))
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

    fn plan_of(h: &HeaderMap, m: &ObjectMeta) -> Plan {
        plan(|n| h.get(n).and_then(|v| v.to_str().ok()), m)
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
        assert_eq!(plan_of(&with(&[]), &m), Plan::Full);
        assert_eq!(
            plan_of(&with(&[("range", "bytes=0-99")]), &m),
            Plan::Partial(0, 99)
        );
        assert_eq!(
            plan_of(&with(&[("range", "bytes=-100")]), &m),
            Plan::Partial(900, 999)
        );
        assert_eq!(
            plan_of(&with(&[("range", "bytes=990-")]), &m),
            Plan::Partial(990, 999)
        );
        assert_eq!(
            plan_of(&with(&[("range", "bytes=990-5000")]), &m),
            Plan::Partial(990, 999)
        );
        assert_eq!(
            plan_of(&with(&[("range", "bytes=1000-")]), &m),
            Plan::Unsatisfiable
        );
        assert_eq!(plan_of(&with(&[("range", "items=0-1")]), &m), Plan::Full);
        // RFC 9110 §14.1.1-3, the edges: a suffix longer than the file is
        // all of it; a zero suffix, or nothing satisfiable, is a 416; one
        // satisfiable range among others is answered alone; a reversed or
        // malformed spec makes the header one to ignore.
        let cases = [
            ("bytes=-99999999", Plan::Partial(0, 999)),
            ("bytes=-1000", Plan::Partial(0, 999)),
            ("bytes=-0", Plan::Unsatisfiable),
            ("bytes=1000-2000,-0", Plan::Unsatisfiable),
            ("bytes=0-0,5000-", Plan::Partial(0, 0)),
            ("bytes=0-0, 10-20", Plan::Full),
            ("bytes=0-0,,", Plan::Partial(0, 0)),
            ("Bytes=5-6", Plan::Partial(5, 6)),
            ("bytes=99999999999999999999999-", Plan::Unsatisfiable),
            ("bytes=10-99999999999999999999999", Plan::Partial(10, 999)),
            ("bytes=9-5", Plan::Full),
            ("bytes=a-5", Plan::Full),
            ("bytes=5", Plan::Full),
            ("bytes=", Plan::Full),
            ("bytes=-", Plan::Full),
        ];
        for (range, want) in cases {
            assert_eq!(plan_of(&with(&[("range", range)]), &m), want, "{range}");
        }
        let empty = ObjectMeta { size: 0, ..meta() };
        assert_eq!(
            plan_of(&with(&[("range", "bytes=-5")]), &empty),
            Plan::Unsatisfiable
        );
    }

    #[test]
    fn conditionals() {
        let m = meta();
        let date = httpdate::fmt_http_date(m.last_modified);
        let earlier = httpdate::fmt_http_date(m.last_modified - Duration::from_secs(60));
        assert_eq!(plan_of(&with(&[("if-match", "\"abc\"")]), &m), Plan::Full);
        assert_eq!(plan_of(&with(&[("if-match", "*")]), &m), Plan::Full);
        for (name, value) in [
            ("if-match", "\"nope\""),
            ("if-match", "W/\"abc\""),
            ("if-unmodified-since", earlier.as_str()),
        ] {
            assert_eq!(
                plan_of(&with(&[(name, value), ("range", "bytes=0-1")]), &m),
                Plan::PreconditionFailed,
                "{name}: {value}"
            );
        }
        assert_eq!(
            plan_of(&with(&[("if-unmodified-since", &date)]), &m),
            Plan::Full
        );
        assert_eq!(
            plan_of(&with(&[("if-none-match", "\"abc\"")]), &m),
            Plan::NotModified
        );
        assert_eq!(
            plan_of(&with(&[("if-modified-since", &date)]), &m),
            Plan::NotModified
        );
        assert_eq!(
            plan_of(
                &with(&[("range", "bytes=0-1"), ("if-range", "\"abc\"")]),
                &m
            ),
            Plan::Partial(0, 1)
        );
        assert_eq!(
            plan_of(
                &with(&[("range", "bytes=0-1"), ("if-range", "\"old\"")]),
                &m
            ),
            Plan::Full
        );
        assert_eq!(
            plan_of(
                &with(&[("range", "bytes=0-1"), ("if-range", "W/\"abc\"")]),
                &m
            ),
            Plan::Full
        );
        assert_eq!(
            plan_of(&with(&[("range", "bytes=0-1"), ("if-range", &date)]), &m),
            Plan::Partial(0, 1)
        );
    }
}
