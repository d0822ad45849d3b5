//! Three of the four ways in: one multipart/form-data request, a presigned
//! single PUT, and S3-style multipart with parallel parts. On local storage
//! the presigned URLs point at our own signed `direct` endpoint.

use super::videos::{original_key, purge_video, MetaInput};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json};
use crate::grants::{expired, UploadTarget, PUT};
use crate::metrics::{record_upload_outcome, UploadTracker};
use crate::state::SharedState;
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use vidhost_core::config::{MIB, SINGLE_REQUEST_MAX};
use vidhost_core::domain::{
    is_id, new_id, parse_content_type, sniff_video, split_tags, UploadMethod, VideoStatus, MAX_TAGS,
};
use vidhost_core::time::{now_ms, rfc3339};
use vidhost_db::{Lease, Upload, UploadDone, Video, VideoPatch};
use vidhost_store::{MultipartLayout, PartInfo, StoreError};

const MAX_PARTS: u64 = 10_000;
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;

/// The origin for absolute URLs: `public_url`, else the request's own.
pub fn origin(state: &SharedState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{proto}://{host}")
}

pub(crate) fn clean_filename(raw: &str) -> ApiResult<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if base.is_empty() || base.chars().count() > 255 || base.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "filename must be a plain file name of 1 to 255 characters",
        ));
    }
    Ok(base.to_owned())
}

fn title_from(filename: &str) -> String {
    let stem = filename
        .rsplit_once('.')
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
        .unwrap_or(filename);
    stem.chars().take(200).collect()
}

pub(crate) fn check_size(state: &SharedState, size: u64, single_request: bool) -> ApiResult<()> {
    if size == 0 {
        return Err(ApiError::validation("size must be at least 1 byte"));
    }
    let max = state.config.uploads.max_size_bytes;
    let limit = if single_request {
        max.min(SINGLE_REQUEST_MAX)
    } else {
        max
    };
    if size > limit {
        return Err(ApiError::file_too_large(
            limit,
            single_request && limit < max,
        ));
    }
    Ok(())
}

pub(crate) fn check_content_type(ct: Option<&str>) -> ApiResult<Option<&'static str>> {
    parse_content_type(ct).map_err(|bad| ApiError::unsupported_media_type(&bad))
}

/// A new video in `awaiting_upload`, owned by the caller.
pub(crate) fn new_video(
    state: &SharedState,
    caller: &Caller,
    filename: Option<String>,
    ct: Option<&str>,
    size: Option<u64>,
    meta: VideoPatch,
) -> Video {
    // The given title, else the file name's stem, else a placeholder.
    let title = [meta.title, filename.as_deref().map(title_from)]
        .into_iter()
        .flatten()
        .find(|t| !t.trim().is_empty())
        .unwrap_or_else(|| "Untitled".to_owned());
    Video {
        id: new_id(),
        owner_id: caller.user.id.clone(),
        owner_display_name: caller.user.display_name.clone(),
        title,
        description: meta.description.unwrap_or_default(),
        tags: meta.tags.unwrap_or_default(),
        visibility: meta
            .visibility
            .unwrap_or(state.config.uploads.default_visibility),
        status: VideoStatus::AwaitingUpload,
        error: None,
        progress: 0.0,
        created_at: now_ms(),
        uploaded_at: None,
        ready_at: None,
        original_filename: filename,
        content_type: ct.map(str::to_owned),
        size_bytes: size.map(|s| s as i64),
        duration_s: None,
        width: None,
        height: None,
        step: None,
        renditions: Vec::new(),
        outputs: Default::default(),
        views: 0,
    }
}

pub(crate) fn new_upload(
    state: &SharedState,
    v: &Video,
    method: UploadMethod,
    size: u64,
    layout: Option<MultipartLayout>,
) -> Upload {
    let now = now_ms();
    Upload {
        video_id: v.id.clone(),
        upload_id: new_id(),
        owner_id: v.owner_id.clone(),
        method,
        store_upload_id: None,
        size: size as i64,
        part_size: layout.map(|l| l.part_size as i64).unwrap_or(size as i64),
        part_count: layout.map(|l| l.part_count() as i64).unwrap_or(1),
        created_at: now,
        expires_at: now + state.config.uploads.expiry_s as i64 * 1000,
        received: 0,
        metadata: None,
    }
}

/// Checks the stored bytes are a video, then marks the upload complete. A
/// file that is not a video is removed with its video, leaving nothing.
pub(crate) async fn accept_original(
    state: &SharedState,
    video: &Video,
    size: u64,
) -> ApiResult<Video> {
    let head =
        vidhost_store::read_head(state.store.as_ref(), &original_key(&video.id), 512).await?;
    let Some(sniffed) = sniff_video(&head, size) else {
        purge_video(state, &video.id).await?;
        return Err(ApiError::invalid_media());
    };
    let done = UploadDone {
        job_id: new_id(),
        max_attempts: state.config.processing.max_attempts as i64,
        size_bytes: size as i64,
        // What the bytes are, not what the client said (players and the
        // `original`'s Content-Type go by it).
        content_type: sniffed.to_owned(),
        uploaded_at: now_ms(),
    };
    if !state.db.finish_upload(&video.id, &done).await? {
        return Err(ApiError::upload_not_found());
    }
    tracing::info!(video = %video.id, size, "upload completed");
    state
        .db
        .get_video(&video.id)
        .await?
        .ok_or_else(ApiError::video_not_found)
}

/// The upload of `video_id` if the caller may manage it; 404/410 otherwise.
async fn load_upload(state: &SharedState, caller: &Caller, video_id: &str) -> ApiResult<Upload> {
    if !is_id(video_id) {
        return Err(ApiError::upload_not_found());
    }
    let up = state
        .db
        .upload_by_video(video_id)
        .await?
        .ok_or_else(ApiError::upload_not_found)?;
    if !caller.may_manage(&up.owner_id) {
        return Err(ApiError::upload_not_found());
    }
    check_not_expired(&up)?;
    Ok(up)
}

pub(crate) fn check_not_expired(up: &Upload) -> ApiResult<()> {
    if up.expires_at <= now_ms() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "upload_expired",
            "this upload has expired; start a new one",
        ));
    }
    Ok(())
}

fn bad_form(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_form",
        format!("malformed multipart/form-data: {e}"),
    )
}

/// A `file` part's stream error, as the store hands it back.
fn is_form_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<axum::extract::multipart::MultipartError>())
}

/// Reads a small text field, refusing more than 64 KiB.
async fn small_text(mut field: axum::extract::multipart::Field<'_>) -> ApiResult<String> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
        buf.extend_from_slice(&chunk);
        if buf.len() > 64 * 1024 {
            return Err(ApiError::validation(
                "form fields other than `file` must be under 64 KiB",
            ));
        }
    }
    String::from_utf8(buf).map_err(|_| ApiError::validation("form fields must be UTF-8"))
}

// ---- 1. single request ----

pub async fn form(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    caller.require_uploader()?;
    let mut form = form.map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the file as multipart/form-data (a `file` part and optional metadata parts)",
        )
    })?;
    let max = state.config.uploads.max_size_bytes;
    let limit = max.min(SINGLE_REQUEST_MAX);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit + MIB) {
        return Err(ApiError::file_too_large(limit, limit < max));
    }
    let mut meta = MetaInput::default();
    let mut tags: Option<Vec<String>> = None;
    let mut stored: Option<(Video, u64, UploadTracker)> = None;
    let result: ApiResult<()> =
        async {
            while let Some(field) = form.next_field().await.map_err(bad_form)? {
                match field.name().unwrap_or("") {
                    "file" => {
                        if stored.is_some() {
                            return Err(ApiError::validation("send exactly one `file` part"));
                        }
                        let ct = check_content_type(field.content_type())?;
                        let filename = field.file_name().map(clean_filename).transpose()?;
                        let patch = std::mem::take(&mut meta).parse_with_tags(tags.clone())?;
                        let video = new_video(&state, &caller, filename, ct, None, patch);
                        let upload = new_upload(&state, &video, UploadMethod::Form, limit, None);
                        state.db.create_upload(&video, &upload).await?;
                        let tracker = UploadTracker::start(UploadMethod::Form);
                        let body = field.map_err(std::io::Error::other).boxed();
                        let key = original_key(&video.id);
                        stored = Some((video, 0, tracker));
                        let n = state.store.put_stream(&key, body, limit).await.map_err(
                            |e| match e {
                                StoreError::TooLarge(_) => {
                                    ApiError::file_too_large(limit, limit < max)
                                }
                                // The form itself is broken (a `file` part
                                // never closed, a body cut off mid-part):
                                // the client's fault, not the store's.
                                StoreError::Io(e) if is_form_error(&e) => bad_form(e),
                                other => other.into(),
                            },
                        )?;
                        if let Some(s) = stored.as_mut() {
                            s.1 = n;
                        }
                    }
                    "title" => meta.title = Some(small_text(field).await?),
                    "description" => meta.description = Some(small_text(field).await?),
                    "visibility" => meta.visibility = Some(small_text(field).await?),
                    "tags" => {
                        let text = small_text(field).await?;
                        let all = tags.get_or_insert_with(Vec::new);
                        all.extend(split_tags(&text).into_iter().map(str::to_owned));
                        // Repeated `tags` parts add up: stop a form that
                        // sends them by the million long before memory goes.
                        if all.len() > 10 * MAX_TAGS {
                            return Err(ApiError::invalid_tags(format!("at most {MAX_TAGS} tags")));
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        .await;
    if result.is_err() {
        drain(&mut form).await;
    }
    let Some((video, size, tracker)) = stored else {
        result?;
        return Err(ApiError::validation("a `file` part is required"));
    };
    let finished: ApiResult<Video> = async {
        result?;
        if size == 0 {
            return Err(ApiError::validation("the file is empty"));
        }
        // Metadata parts may also follow the file. A blank title there, as
        // before it, leaves the file name's.
        let mut late = meta.parse_with_tags(tags)?;
        if late.title.as_deref() == Some("") {
            late.title = None;
        }
        state.db.update_video_meta(&video.id, &late).await?;
        accept_original(&state, &video, size).await
    }
    .await;
    match finished {
        Ok(v) => {
            tracker.finish("completed", Some(size));
            Ok((
                StatusCode::CREATED,
                axum::Json(super::videos::view(&state, &v)),
            )
                .into_response())
        }
        Err(e) => {
            // When the store failed this request, removing what it holds
            // would wait on it again: the client is answered now.
            let purged = if e.status == StatusCode::SERVICE_UNAVAILABLE {
                super::videos::purge_video_in_background(&state, &video.id).await
            } else {
                purge_video(&state, &video.id).await
            };
            if let Err(cleanup) = purged {
                tracing::warn!(video = %video.id, error = ?cleanup, "cleanup after a failed form upload");
            }
            tracker.finish("failed", None);
            Err(e)
        }
    }
}

/// Reads and discards what is left of a refused request body, within a
/// bound, so that the client (still sending) gets our answer instead of a
/// reset connection; larger leftovers are cut off by closing.
async fn drain(form: &mut Multipart) {
    let budget = async {
        let mut left: i64 = 64 * MIB as i64;
        while let Ok(Some(mut f)) = form.next_field().await {
            while let Ok(Some(c)) = f.chunk().await {
                left -= c.len() as i64;
                if left < 0 {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), budget).await;
}

impl MetaInput {
    fn parse_with_tags(mut self, tags: Option<Vec<String>>) -> ApiResult<VideoPatch> {
        if tags.is_some() {
            self.tags = tags;
        }
        self.parse()
    }
}

// ---- 2. presigned single PUT and 3. multipart: creation ----

#[derive(Deserialize)]
pub struct CreateBody {
    filename: String,
    content_type: Option<String>,
    size: u64,
    #[serde(flatten)]
    meta: MetaInput,
}

struct Prepared {
    video: Video,
    size: u64,
}

fn prepare(
    state: &SharedState,
    caller: &Caller,
    b: CreateBody,
    single_request: bool,
) -> ApiResult<Prepared> {
    caller.require_uploader()?;
    check_size(state, b.size, single_request)?;
    let ct = check_content_type(b.content_type.as_deref())?;
    let filename = clean_filename(&b.filename)?;
    let meta = b.meta.parse()?;
    Ok(Prepared {
        video: new_video(state, caller, Some(filename), ct, Some(b.size), meta),
        size: b.size,
    })
}

fn direct_url(state: &SharedState, headers: &HeaderMap, t: &UploadTarget) -> String {
    format!(
        "{}/api/v1/uploads/direct/{}",
        origin(state, headers),
        state.grants.sign(t)
    )
}

/// Where the presigned single PUT puts the bytes: beside the original, never
/// over it. Completion checks them there and then moves them into place, so
/// nothing can replace an original once its completion checked it, even
/// with a URL that is still valid (a PUT that comes later, or was still
/// running, only leaves an object here, removed with the video).
fn presigned_key(video_id: &str) -> String {
    format!("videos/{video_id}/upload")
}

pub async fn create_presigned(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    Json(b): Json<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let Prepared { video, size } = prepare(&state, &caller, b, true)?;
    let upload = new_upload(&state, &video, UploadMethod::Presigned, size, None);
    state.db.create_upload(&video, &upload).await?;
    let ttl = state.config.uploads.presign_expiry_s;
    let e = now_ms() / 1000 + ttl as i64;
    let key = presigned_key(&video.id);
    let (url, hdrs) = match state
        .store
        .presign_put(&key, size, Duration::from_secs(ttl))
    {
        Some(p) => (p.url, p.headers),
        None => {
            let t = UploadTarget {
                p: PUT.into(),
                v: video.id.clone(),
                u: upload.upload_id.clone(),
                n: 0,
                e,
            };
            (direct_url(&state, &headers, &t), Vec::new())
        }
    };
    let headers_json: serde_json::Map<String, serde_json::Value> =
        hdrs.into_iter().map(|(k, v)| (k, v.into())).collect();
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "video_id": video.id,
            "upload_url": url,
            "method": "PUT",
            "headers": headers_json,
            "expires_at": rfc3339(e * 1000),
        })),
    ))
}

pub async fn complete_presigned(
    State(state): State<SharedState>,
    caller: Caller,
    Path(video_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    // Going on with an upload is uploading: a caller demoted since it began
    // may still look at it or abort it, not finish it.
    caller.require_uploader()?;
    let up = match load_upload(&state, &caller, &video_id).await {
        Ok(up) if up.method == UploadMethod::Presigned => up,
        Ok(_) => return Err(ApiError::upload_not_found()),
        Err(e) if e.code == "upload_not_found" => {
            return presigned_before(&state, &caller, &video_id).await;
        }
        Err(e) => return Err(e),
    };
    // One completion at a time, under the upload's lease (as tus appends
    // take it): a second one running beside this one could otherwise move
    // bytes that a late PUT left at the staged key over the original this
    // one checked.
    let owner = new_id();
    match state
        .db
        .acquire_lease(&video_id, &owner, now_ms(), COMPLETE_LEASE_MS)
        .await?
    {
        Lease::Acquired => {}
        // A completion beside this one finished in between.
        Lease::Missing => return presigned_before(&state, &caller, &video_id).await,
        Lease::Held => {
            return Err(ApiError::new(
                StatusCode::LOCKED,
                "upload_locked",
                "another completion of this upload is running; retry shortly",
            )
            .with_header(header::RETRY_AFTER, "2"))
        }
    }
    let result = complete_presigned_leased(&state, &up).await;
    // Gone with the row once the upload completed; otherwise let go.
    if let Err(e) = state.db.release_lease(&video_id, &owner).await {
        tracing::warn!(video = %video_id, error = %e, "releasing a lease (it will expire)");
    }
    Ok(axum::Json(super::videos::view(&state, &result?)))
}

/// A presigned `complete` of an upload that an earlier one finished (its
/// answer lost on the way, say): the same answer again, the video, if a
/// presigned upload made it. 404 otherwise, as before.
async fn presigned_before(
    state: &SharedState,
    caller: &Caller,
    video_id: &str,
) -> ApiResult<axum::Json<super::videos::VideoView>> {
    if !is_id(video_id) {
        return Err(ApiError::upload_not_found());
    }
    let video = state
        .db
        .completed_with(video_id, UploadMethod::Presigned)
        .await?;
    answer_again(state, caller, video)
}

/// The video an earlier completion made, to the caller who may manage it;
/// to anyone else the upload does not exist.
fn answer_again(
    state: &SharedState,
    caller: &Caller,
    video: Option<Video>,
) -> ApiResult<axum::Json<super::videos::VideoView>> {
    match video {
        Some(v) if caller.may_manage(&v.owner_id) => Ok(axum::Json(super::videos::view(state, &v))),
        _ => Err(ApiError::upload_not_found()),
    }
}

/// How long a presigned completion holds the upload's lease at most (a
/// completion that died lets the next one in after this).
const COMPLETE_LEASE_MS: i64 = 120_000;

async fn complete_presigned_leased(state: &SharedState, up: &Upload) -> ApiResult<Video> {
    let video_id = up.video_id.as_str();
    let (staged, key) = (presigned_key(video_id), original_key(video_id));
    let declared = up.size as u64;
    let mismatch = |got: u64| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "size_mismatch",
            format!("declared {declared} bytes but {got} were stored; PUT the file again"),
        )
    };
    let moved = match state.store.head(&staged).await? {
        Some(m) if m.size == declared => state.store.move_object(&staged, &key).await,
        Some(m) => {
            state.store.delete(&staged).await?;
            return Err(mismatch(m.size));
        }
        None => Err(StoreError::NotFound),
    };
    // Nothing staged: a completion that died after moving the bytes left
    // them in place; nothing there either means no PUT.
    let got = match moved {
        Ok(()) => declared,
        Err(StoreError::NotFound) => state.store.head(&key).await?.map_or(0, |m| m.size),
        Err(e) => return Err(e.into()),
    };
    if got != declared {
        return Err(mismatch(got));
    }
    let video = state
        .db
        .get_video(video_id)
        .await?
        .ok_or_else(ApiError::upload_not_found)?;
    let result = accept_original(state, &video, got).await;
    let outcome = if result.is_ok() {
        "completed"
    } else {
        "failed"
    };
    record_upload_outcome(UploadMethod::Presigned, outcome, up.created_at, Some(got));
    result
}

/// Part size for a declared size: at least the configured minimum, and big
/// enough that no upload needs more than 10,000 parts.
pub(crate) fn layout_for(min: u64, size: u64) -> MultipartLayout {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    MultipartLayout {
        total_size: size,
        part_size: min.max(needed).min(MAX_PART_SIZE),
    }
}

pub async fn create_multipart(
    State(state): State<SharedState>,
    caller: Caller,
    Json(b): Json<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let Prepared { video, size } = prepare(&state, &caller, b, false)?;
    let layout = layout_for(state.config.uploads.min_part_size_bytes, size);
    let mut upload = new_upload(&state, &video, UploadMethod::Multipart, size, Some(layout));
    let key = original_key(&video.id);
    let store_id = state.store.create_multipart(&key, layout).await?;
    upload.store_upload_id = Some(store_id.clone());
    if let Err(e) = state.db.create_upload(&video, &upload).await {
        let _ = state.store.abort_multipart(&key, &store_id).await;
        return Err(e.into());
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "upload_id": upload.upload_id,
            "video_id": video.id,
            "part_size": layout.part_size,
            "part_count": layout.part_count(),
            "expires_at": rfc3339(upload.expires_at),
        })),
    ))
}

async fn load_multipart(
    state: &SharedState,
    caller: &Caller,
    upload_id: &str,
) -> ApiResult<(Upload, String)> {
    if !is_id(upload_id) {
        return Err(ApiError::upload_not_found());
    }
    let up = state
        .db
        .upload_by_id(upload_id)
        .await?
        .ok_or_else(ApiError::upload_not_found)?;
    if !caller.may_manage(&up.owner_id) || up.method != UploadMethod::Multipart {
        return Err(ApiError::upload_not_found());
    }
    check_not_expired(&up)?;
    let store_id = up
        .store_upload_id
        .clone()
        .ok_or_else(ApiError::upload_not_found)?;
    Ok((up, store_id))
}

fn layout_of(up: &Upload) -> MultipartLayout {
    MultipartLayout {
        total_size: up.size as u64,
        part_size: up.part_size as u64,
    }
}

#[derive(Deserialize)]
pub struct PartsBody {
    part_numbers: Vec<u32>,
}

pub async fn presign_parts(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    Path(upload_id): Path<String>,
    Json(b): Json<PartsBody>,
) -> ApiResult<impl IntoResponse> {
    caller.require_uploader()?;
    let (up, store_id) = load_multipart(&state, &caller, &upload_id).await?;
    if b.part_numbers.is_empty() || b.part_numbers.len() > MAX_PARTS as usize {
        return Err(ApiError::validation(
            "part_numbers must list 1 to 10000 part numbers",
        ));
    }
    let count = up.part_count as u32;
    if let Some(bad) = b.part_numbers.iter().find(|n| **n == 0 || **n > count) {
        return Err(ApiError::validation(format!(
            "part number {bad} is outside 1..={count}"
        )));
    }
    let ttl = state.config.uploads.presign_expiry_s;
    let e = now_ms() / 1000 + ttl as i64;
    let key = original_key(&up.video_id);
    let parts: Vec<_> = b
        .part_numbers
        .iter()
        .map(|&n| {
            let url = match state
                .store
                .presign_part(&key, &store_id, n, Duration::from_secs(ttl))
            {
                Some(p) => p.url,
                None => direct_url(
                    &state,
                    &headers,
                    &UploadTarget {
                        p: PUT.into(),
                        v: up.video_id.clone(),
                        u: up.upload_id.clone(),
                        n,
                        e,
                    },
                ),
            };
            json!({"part_number": n, "url": url, "method": "PUT", "expires_at": rfc3339(e * 1000)})
        })
        .collect();
    Ok(axum::Json(json!({ "parts": parts })))
}

pub async fn get_multipart(
    State(state): State<SharedState>,
    caller: Caller,
    Path(upload_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (up, store_id) = load_multipart(&state, &caller, &upload_id).await?;
    let parts = state
        .store
        .list_parts(&original_key(&up.video_id), &store_id)
        .await?;
    Ok(axum::Json(json!({
        "upload_id": up.upload_id,
        "video_id": up.video_id,
        "part_size": up.part_size,
        "part_count": up.part_count,
        "parts": parts.iter().map(|p| json!({"part_number": p.part_number, "size": p.size, "etag": format!("\"{}\"", p.etag)})).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct CompletePart {
    part_number: u32,
    etag: String,
}

#[derive(Deserialize)]
pub struct CompleteBody {
    parts: Vec<CompletePart>,
}

pub async fn complete_multipart(
    State(state): State<SharedState>,
    caller: Caller,
    Path(upload_id): Path<String>,
    Json(b): Json<CompleteBody>,
) -> ApiResult<impl IntoResponse> {
    caller.require_uploader()?;
    let (up, store_id) = match load_multipart(&state, &caller, &upload_id).await {
        Ok(found) => found,
        Err(e) if e.code == "upload_not_found" => {
            return completed_before(&state, &caller, &upload_id).await;
        }
        Err(e) => return Err(e),
    };
    let claimed: Vec<PartInfo> = b
        .parts
        .into_iter()
        .map(|p| PartInfo {
            part_number: p.part_number,
            size: 0,
            etag: p.etag.trim().trim_matches('"').to_owned(),
        })
        .collect();
    // Listed in any order, but each part once: S3 refuses a repeated part
    // number, and here a second entry with another ETag would go unread.
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = claimed.iter().find(|p| !seen.insert(p.part_number)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_part",
            format!("part {} is listed twice", twice.part_number),
        ));
    }
    // Every part, each once (S3 itself would take a subset and make a
    // shorter file; this upload declared its size).
    if let Some(n) = (1..=up.part_count as u32).find(|n| !seen.contains(n)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_part",
            format!(
                "part {n} is not listed: `parts` lists every one of the upload's {} parts",
                up.part_count
            ),
        ));
    }
    let key = original_key(&up.video_id);
    let joined = state
        .store
        .complete_multipart(&key, &store_id, layout_of(&up), &claimed)
        .await;
    let size = joined_or_in_place(&state, &up, &key, &store_id, joined).await?;
    let video = state
        .db
        .get_video(&up.video_id)
        .await?
        .ok_or_else(ApiError::upload_not_found)?;
    let result = accept_original(&state, &video, size).await;
    if matches!(&result, Err(e) if e.code == "upload_not_found") {
        // A completion beside this one finished first: its answer.
        return completed_before(&state, &caller, &upload_id).await;
    }
    let outcome = if result.is_ok() {
        "completed"
    } else {
        "failed"
    };
    record_upload_outcome(UploadMethod::Multipart, outcome, up.created_at, Some(size));
    Ok(axum::Json(super::videos::view(&state, &result?)))
}

/// A `complete` of an upload that an earlier `complete` finished (its answer
/// lost on the way, say): the same answer again, the video, as S3 answers a
/// repeated CompleteMultipartUpload. 404 for anyone else, as before.
async fn completed_before(
    state: &SharedState,
    caller: &Caller,
    upload_id: &str,
) -> ApiResult<axum::Json<super::videos::VideoView>> {
    if !is_id(upload_id) {
        return Err(ApiError::upload_not_found());
    }
    let video = state.db.completed_by(upload_id).await?;
    answer_again(state, caller, video)
}

/// The size of an upload's joined original, given how joining its parts
/// (`joined`) went. When that failed because an earlier completion already
/// put the bytes in place and then died (the database was unavailable, the
/// process was killed), the staging is gone and the original at the
/// declared size is the upload's: completing again goes on from there
/// instead of failing for good. Only the upload itself writes this key.
pub(crate) async fn joined_or_in_place(
    state: &SharedState,
    up: &Upload,
    key: &str,
    store_id: &str,
    joined: Result<u64, StoreError>,
) -> ApiResult<u64> {
    let size = up.size as u64;
    match joined {
        Ok(n) => Ok(n),
        Err(e) => match state.store.head(key).await? {
            Some(m) if m.size == size => {
                // What a request may have staged again since (disk).
                let _ = state.store.abort_multipart(key, store_id).await;
                Ok(size)
            }
            _ => Err(e.into()),
        },
    }
}

pub async fn abort_multipart(
    State(state): State<SharedState>,
    caller: Caller,
    Path(upload_id): Path<String>,
) -> ApiResult<StatusCode> {
    if !is_id(&upload_id) {
        return Err(ApiError::upload_not_found());
    }
    let up = state
        .db
        .upload_by_id(&upload_id)
        .await?
        .ok_or_else(ApiError::upload_not_found)?;
    if !caller.may_manage(&up.owner_id) || up.method != UploadMethod::Multipart {
        return Err(ApiError::upload_not_found());
    }
    purge_video(&state, &up.video_id).await?;
    record_upload_outcome(UploadMethod::Multipart, "aborted", up.created_at, None);
    Ok(StatusCode::NO_CONTENT)
}

// ---- the signed target of presigned URLs on local storage ----

pub async fn direct_put(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let t: UploadTarget = state.grants.verify(&state.db, &token).await?;
    if t.p != PUT || expired(t.e) {
        return Err(ApiError::invalid_token());
    }
    let up = state
        .db
        .upload_by_video(&t.v)
        .await?
        .filter(|u| u.upload_id == t.u)
        .ok_or_else(ApiError::upload_not_found)?;
    check_not_expired(&up)?;
    // The URL was signed for its uploader when they could upload; a ban or
    // a demotion since ends it.
    let owner = crate::auth::user_row(&state, &up.owner_id).await?;
    if !owner.is_some_and(|u| !u.disabled && u.role.can_upload()) {
        return Err(ApiError::forbidden(
            "the account this upload belongs to may no longer upload",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let key = original_key(&up.video_id);
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let etag = if t.n == 0 {
        let size = up.size as u64;
        let mismatch = |got: &str| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "size_mismatch",
                format!("declared {size} bytes, got {got}"),
            )
        };
        if declared.is_some_and(|d| d != size) {
            return Err(mismatch(&declared.unwrap_or(0).to_string()));
        }
        let staged = presigned_key(&up.video_id);
        let n = match state.store.put_stream(&staged, stream, size).await {
            Err(StoreError::TooLarge(_)) => return Err(mismatch("more")),
            other => other?,
        };
        if n != size {
            state.store.delete(&staged).await?;
            return Err(mismatch(&n.to_string()));
        }
        // Completed, aborted or deleted while the bytes arrived: they have
        // nothing to become (the original, if any, is not touched).
        if state.db.upload_by_video(&up.video_id).await?.is_none() {
            state.store.delete(&staged).await?;
            return Err(ApiError::upload_not_found());
        }
        state
            .store
            .head(&staged)
            .await?
            .map(|m| m.etag)
            .unwrap_or_default()
    } else {
        let layout = layout_of(&up);
        let (_, expected) = layout.part_span(t.n).ok_or_else(ApiError::invalid_token)?;
        if let Some(d) = declared.filter(|d| *d != expected) {
            return Err(StoreError::PartSize {
                part_number: t.n,
                expected,
                got: d,
            }
            .into());
        }
        let store_id = up
            .store_upload_id
            .as_deref()
            .ok_or_else(ApiError::upload_not_found)?;
        let written = state
            .store
            .write_part(&key, store_id, layout, t.n, stream)
            .await;
        // An abort, a delete or a complete that ran while this part was
        // arriving removed the upload's staging; this write may have made it
        // again. Then it goes again, and so does the part.
        let gone = state
            .db
            .upload_by_video(&up.video_id)
            .await?
            .is_none_or(|u| u.upload_id != up.upload_id);
        if gone {
            state.store.abort_multipart(&key, store_id).await?;
            return Err(ApiError::upload_not_found());
        }
        written?.etag
    };
    Ok((StatusCode::OK, [(header::ETAG, format!("\"{etag}\""))]).into_response())
}

// ---- the caller's incomplete uploads ----

pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    use futures::{StreamExt, TryStreamExt};
    let now = now_ms();
    let live: Vec<_> = state
        .db
        .uploads_of(&caller.user.id)
        .await?
        .into_iter()
        .filter(|up| up.expires_at > now)
        .collect();
    // What the store holds of each, asked for several at once. A store that
    // fails fails the list (503): a 0 would look like a real answer.
    let items: Vec<_> = futures::stream::iter(live)
        .map(|up| {
            let state = &state;
            async move {
                let key = original_key(&up.video_id);
                let received: u64 = match (&up.method, &up.store_upload_id) {
                    (UploadMethod::Multipart, Some(id)) => {
                        match state.store.list_parts(&key, id).await {
                            Ok(ps) => ps.iter().map(|p| p.size).sum(),
                            // Finished or aborted meanwhile.
                            Err(StoreError::NotFound) => 0,
                            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => 0,
                            Err(e) => return Err(ApiError::from(e)),
                        }
                    }
                    (UploadMethod::Presigned, _) => state
                        .store
                        .head(&presigned_key(&up.video_id))
                        .await?
                        .map(|m| m.size)
                        .unwrap_or(0),
                    // tus keeps its durable offset in the catalog.
                    (UploadMethod::Tus, _) => up.received as u64,
                    _ => 0,
                };
                Ok(json!({
                    "video_id": up.video_id,
                    "method": up.method,
                    "upload_id": (up.method == UploadMethod::Multipart).then_some(&up.upload_id),
                    "size": up.size,
                    "received_bytes": received,
                    "expires_at": rfc3339(up.expires_at),
                }))
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(axum::Json(json!({ "items": items })))
}

/// Removes uploads past their expiry: their bytes, their video, their row.
pub async fn sweep_expired(state: &SharedState) -> ApiResult<usize> {
    let expired = state.db.expired_uploads(now_ms(), 100).await?;
    for up in &expired {
        purge_video(state, &up.video_id).await?;
        record_upload_outcome(up.method, "expired", up.created_at, None);
        tracing::info!(video = %up.video_id, method = %up.method, "expired upload removed");
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_keep_within_s3_limits() {
        let small = layout_for(8 * MIB, 20 * MIB);
        assert_eq!((small.part_size, small.part_count()), (8 * MIB, 3));
        assert_eq!(small.part_span(3), Some((16 * MIB, 4 * MIB)));
        let huge = layout_for(8 * MIB, 5 * 1024 * 1024 * MIB);
        assert!(huge.part_count() as u64 <= MAX_PARTS);
        assert!(huge.part_size <= MAX_PART_SIZE && huge.part_size.is_multiple_of(MIB));
        assert_eq!(layout_for(8 * MIB, 1).part_count(), 1);
    }
}
