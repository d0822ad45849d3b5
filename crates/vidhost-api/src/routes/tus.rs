//! tus 1.0 resumable uploads at `/api/v1/tus`: core, creation,
//! creation-with-upload, termination, expiration, checksum (sha1, sha256).
//!
//! The durable offset lives in the catalog (`uploads.received`) and moves only
//! after the bytes it covers are synced (disk) or stored (S3), so a 204 is a
//! promise that survives kill -9. One request at a time writes an upload,
//! whichever node it reached: a lease row with a heartbeat (see [`Lease`]).
//!
//! On disk, bytes go in place into the upload's preallocated staging file.
//! On S3 they become multipart parts of a fixed size; the remainder that is
//! not yet a part is kept as a small `tus-tail` object, so any node can go on.

use super::uploads::{
    accept_original, check_content_type, check_not_expired, check_size, clean_filename,
    joined_or_in_place, layout_for, new_upload, new_video, origin,
};
use super::videos::{original_key, purge_video, video_prefix, MetaInput};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::metrics::record_upload_outcome;
use crate::state::SharedState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::BytesMut;
use futures::{StreamExt, TryStreamExt};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use vidhost_core::domain::{is_id, new_id, split_tags, UploadMethod};
use vidhost_core::time::now_ms;
use vidhost_db::{Lease as LeaseState, Renewal, Upload};
use vidhost_store::{MultipartLayout, PartInfo, StoreError, WriteEnd};

pub const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// A lease not renewed for this long belongs to a request that is gone.
const LEASE_TTL_MS: i64 = 5_000;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a request waits for the holder of a lease to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(6);

fn h(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// Every tus response says `Tus-Resumable`; every request but OPTIONS must.
pub async fn protocol(req: Request, next: Next) -> Response {
    let version = req
        .headers()
        .get("tus-resumable")
        .and_then(|v| v.to_str().ok());
    let mut resp = if req.method() != Method::OPTIONS && version != Some(TUS_VERSION) {
        let mut r = ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
            "send Tus-Resumable: 1.0.0",
        )
        .into_response();
        r.headers_mut()
            .insert(h("tus-version"), HeaderValue::from_static(TUS_VERSION));
        r
    } else {
        next.run(req).await
    };
    resp.headers_mut()
        .insert(h("tus-resumable"), HeaderValue::from_static(TUS_VERSION));
    resp
}

pub async fn options(State(state): State<SharedState>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let hs = r.headers_mut();
    hs.insert(h("tus-version"), HeaderValue::from_static(TUS_VERSION));
    hs.insert(h("tus-extension"), HeaderValue::from_static(EXTENSIONS));
    hs.insert(
        h("tus-max-size"),
        HeaderValue::from(state.config.uploads.max_size_bytes),
    );
    hs.insert(
        h("tus-checksum-algorithm"),
        HeaderValue::from_static("sha1,sha256"),
    );
    r
}

fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

fn header_u64(headers: &HeaderMap, name: &str) -> ApiResult<Option<u64>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                bad_request(
                    "invalid_header",
                    format!("{name} must be a non-negative integer"),
                )
            }),
    }
}

/// `Upload-Metadata: key base64,key base64`; a key may stand alone.
fn parse_metadata(raw: &str) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = pair.splitn(2, ' ');
        let key = it.next().unwrap_or("").to_owned();
        let value = match it.next() {
            None => String::new(),
            Some(b64) => {
                let bytes = B64.decode(b64.trim()).map_err(|_| {
                    bad_request(
                        "invalid_metadata",
                        format!("Upload-Metadata `{key}` is not base64"),
                    )
                })?;
                String::from_utf8(bytes).map_err(|_| {
                    bad_request(
                        "invalid_metadata",
                        format!("Upload-Metadata `{key}` is not UTF-8"),
                    )
                })?
            }
        };
        out.push((key, value));
    }
    Ok(out)
}

enum Checksum {
    Sha1(Sha1, Vec<u8>),
    Sha256(Sha256, Vec<u8>),
}

impl Checksum {
    fn parse(headers: &HeaderMap) -> ApiResult<Option<Checksum>> {
        let Some(v) = headers.get("upload-checksum") else {
            return Ok(None);
        };
        let v = v
            .to_str()
            .map_err(|_| bad_request("invalid_checksum", "Upload-Checksum is not text"))?;
        let (algo, b64) = v.trim().split_once(' ').ok_or_else(|| {
            bad_request("invalid_checksum", "Upload-Checksum: <algorithm> <base64>")
        })?;
        let expected = B64
            .decode(b64.trim())
            .map_err(|_| bad_request("invalid_checksum", "the checksum is not base64"))?;
        match algo {
            "sha1" => Ok(Some(Checksum::Sha1(Sha1::new(), expected))),
            "sha256" => Ok(Some(Checksum::Sha256(Sha256::new(), expected))),
            other => Err(bad_request(
                "unsupported_checksum_algorithm",
                format!("checksum algorithm `{other}` is not supported; use sha1 or sha256"),
            )),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Sha1(h, _) => h.update(data),
            Checksum::Sha256(h, _) => h.update(data),
        }
    }

    fn matches(self) -> bool {
        use subtle::ConstantTimeEq;
        match self {
            Checksum::Sha1(h, e) => h.finalize().as_slice().ct_eq(&e).into(),
            Checksum::Sha256(h, e) => h.finalize().as_slice().ct_eq(&e).into(),
        }
    }
}

/// The errors of a creation-with-upload body that leave the upload to resume.
const BODY_NOT_KEPT: &[&str] = &[
    "checksum_mismatch",
    "upload_interrupted",
    "upload_taken_over",
];

fn checksum_mismatch() -> ApiError {
    ApiError::new(
        StatusCode::from_u16(460).expect("valid status"),
        "checksum_mismatch",
        "the body does not match Upload-Checksum; nothing was appended",
    )
}

fn http_date_ms(ms: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn tus_response(status: StatusCode, offset: u64, up: &Upload) -> Response {
    let mut r = status.into_response();
    let hs = r.headers_mut();
    hs.insert(h("upload-offset"), HeaderValue::from(offset));
    if let Ok(v) = HeaderValue::from_str(&http_date_ms(up.expires_at)) {
        hs.insert(h("upload-expires"), v);
    }
    r
}

fn tail_key(video_id: &str) -> String {
    format!("{}tus-tail", video_prefix(video_id))
}

fn layout_of(up: &Upload) -> MultipartLayout {
    MultipartLayout {
        total_size: up.size as u64,
        part_size: up.part_size as u64,
    }
}

/// The caller's tus upload `id`: 404 when missing or someone else's, 410 when expired.
async fn load(state: &SharedState, caller: &Caller, id: &str) -> ApiResult<Option<Upload>> {
    if !is_id(id) {
        return Err(ApiError::upload_not_found());
    }
    match state.db.upload_by_video(id).await? {
        Some(up) if up.method == UploadMethod::Tus && caller.may_manage(&up.owner_id) => {
            check_not_expired(&up)?;
            Ok(Some(up))
        }
        Some(_) => Err(ApiError::upload_not_found()),
        None => {
            // A finished upload still answers HEAD, so a client that lost the
            // last 204 learns that it is done; a video uploaded another way
            // was never a tus upload.
            match state.db.completed_with(id, UploadMethod::Tus).await? {
                Some(v) if caller.may_manage(&v.owner_id) => Ok(None),
                _ => Err(ApiError::upload_not_found()),
            }
        }
    }
}

pub async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.require_uploader()?;
    if headers.contains_key("upload-defer-length") {
        return Err(bad_request(
            "invalid_header",
            "Upload-Defer-Length is not supported; send Upload-Length",
        ));
    }
    let length = header_u64(&headers, "upload-length")?
        .ok_or_else(|| bad_request("invalid_header", "Upload-Length is required"))?;
    check_size(&state, length, false)?;
    let raw_meta = headers
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if raw_meta.len() > 16 * 1024 {
        return Err(bad_request(
            "invalid_metadata",
            "Upload-Metadata must be under 16 KiB",
        ));
    }
    let mut meta = MetaInput::default();
    let (mut filename, mut filetype) = (None, None);
    for (k, v) in parse_metadata(&raw_meta)? {
        match k.as_str() {
            "filename" | "name" => filename = Some(clean_filename(&v)?),
            "filetype" | "type" => filetype = Some(v),
            "title" => meta.title = Some(v),
            "description" => meta.description = Some(v),
            "visibility" => meta.visibility = Some(v),
            "tags" => meta.tags = Some(split_tags(&v).into_iter().map(str::to_owned).collect()),
            _ => {}
        }
    }
    let ct = check_content_type(filetype.as_deref())?;
    let video = new_video(&state, &caller, filename, ct, Some(length), meta.parse()?);
    let layout = layout_for(state.config.uploads.min_part_size_bytes, length);
    let mut up = new_upload(&state, &video, UploadMethod::Tus, length, Some(layout));
    up.metadata = Some(raw_meta).filter(|m| !m.is_empty());
    let key = original_key(&video.id);
    let store_id = state.store.create_multipart(&key, layout).await?;
    up.store_upload_id = Some(store_id.clone());
    if let Err(e) = state.db.create_upload(&video, &up).await {
        let _ = state.store.abort_multipart(&key, &store_id).await;
        return Err(e.into());
    }
    let location = format!("{}/api/v1/tus/{}", origin(&state, &headers), video.id);
    let with_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(OFFSET_OCTET_STREAM));
    let offset = if with_body {
        match append(&state, &up, 0, &headers, body).await {
            Ok(n) => n,
            // The upload exists either way: while it does, the client gets
            // its Location and durable offset to resume from (tus
            // creation-with-upload), not just the error of the body.
            // Only a body that was not (all) kept: a request refused as a
            // whole (too long, a bad header) keeps its error, and so does
            // one that stored every byte but could not complete.
            Err(e) if !BODY_NOT_KEPT.contains(&e.code) => return Err(e),
            Err(e) => match state.db.upload_by_video(&video.id).await {
                Ok(Some(now)) if now.received < now.size => {
                    tracing::info!(video = %video.id, error = %e.code, "the body of a tus creation was not all kept");
                    now.received as u64
                }
                _ => return Err(e),
            },
        }
    } else {
        0
    };
    let mut r = tus_response(StatusCode::CREATED, offset, &up);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

pub async fn head(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut r = StatusCode::OK.into_response();
    let hs = r.headers_mut();
    hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match load(&state, &caller, &id).await? {
        Some(up) => {
            if up.received == up.size {
                if let Err(e) = finish_stalled(&state, &up).await {
                    // A client told anything but 2xx or 423 starts over
                    // (tus-js-client); a completion that may work later is
                    // "try again", with every byte kept.
                    if e.status.is_server_error() || e.status == StatusCode::LOCKED {
                        tracing::warn!(video = %up.video_id, error = %e.code, "completing a tus upload on HEAD");
                        return Err(ApiError::new(
                            StatusCode::LOCKED,
                            "upload_locked",
                            "every byte is in; completing the upload failed for now, retry shortly",
                        )
                        .with_header(header::RETRY_AFTER, "2"));
                    }
                    return Err(e);
                }
            }
            let hs = r.headers_mut();
            hs.insert(h("upload-offset"), HeaderValue::from(up.received));
            hs.insert(h("upload-length"), HeaderValue::from(up.size));
            if let Some(v) = up
                .metadata
                .as_deref()
                .and_then(|m| HeaderValue::from_str(m).ok())
            {
                hs.insert(h("upload-metadata"), v);
            }
            if let Ok(v) = HeaderValue::from_str(&http_date_ms(up.expires_at)) {
                hs.insert(h("upload-expires"), v);
            }
        }
        None => {
            let v = state
                .db
                .get_video(&id)
                .await?
                .ok_or_else(ApiError::upload_not_found)?;
            let size = v.size_bytes.unwrap_or(0);
            hs.insert(h("upload-offset"), HeaderValue::from(size));
            hs.insert(h("upload-length"), HeaderValue::from(size));
        }
    }
    Ok(r)
}

pub async fn patch(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // Appending is uploading (HEAD and DELETE stay open to a demoted caller).
    caller.require_uploader()?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with(OFFSET_OCTET_STREAM) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_content_type",
            "PATCH bodies must be Content-Type: application/offset+octet-stream",
        ));
    }
    let offset = header_u64(&headers, "upload-offset")?
        .ok_or_else(|| bad_request("invalid_header", "Upload-Offset is required"))?;
    let Some(up) = load(&state, &caller, &id).await? else {
        return Err(conflict("the upload is already complete"));
    };
    if offset != up.received as u64 {
        return Err(conflict(&format!(
            "Upload-Offset is {offset} but the upload is at {}",
            up.received
        )));
    }
    let new_offset = append(&state, &up, offset, &headers, body).await?;
    Ok(tus_response(StatusCode::NO_CONTENT, new_offset, &up))
}

fn conflict(detail: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "offset_mismatch", detail.to_owned())
}

pub async fn terminate(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let Some(up) = load(&state, &caller, &id).await? else {
        return Err(ApiError::upload_not_found());
    };
    purge_video(&state, &up.video_id).await?;
    record_upload_outcome(UploadMethod::Tus, "aborted", up.created_at, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Exclusive right to write one upload, held by one request on any node.
/// A heartbeat renews it; when another request asks for the upload (its
/// client reconnected), or the lease is lost, `stop` fires and the holder
/// winds down, keeping what it has durably received.
struct Lease {
    state: SharedState,
    video_id: String,
    owner: String,
    stop: CancellationToken,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Lease {
    async fn acquire(state: &SharedState, video_id: &str) -> ApiResult<Lease> {
        let owner = new_id();
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        let mut asked = false;
        loop {
            match state
                .db
                .acquire_lease(video_id, &owner, now_ms(), LEASE_TTL_MS)
                .await?
            {
                LeaseState::Acquired => break,
                LeaseState::Missing => return Err(ApiError::upload_not_found()),
                LeaseState::Held => {
                    if !asked {
                        state.db.request_lease_steal(video_id).await?;
                        asked = true;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ApiError::new(
                            StatusCode::LOCKED,
                            "upload_locked",
                            "another request is writing this upload; retry shortly",
                        )
                        .with_header(header::RETRY_AFTER, "2"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let stop = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            state.clone(),
            video_id.to_owned(),
            owner.clone(),
            stop.clone(),
        ));
        Ok(Lease {
            state: state.clone(),
            video_id: video_id.to_owned(),
            owner,
            stop,
            heartbeat,
        })
    }

    async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self
            .state
            .db
            .release_lease(&self.video_id, &self.owner)
            .await
        {
            tracing::warn!(video = %self.video_id, error = %e, "releasing a lease (it will expire)");
        }
    }
}

async fn heartbeat(state: SharedState, video_id: String, owner: String, stop: CancellationToken) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        match state
            .db
            .renew_lease(&video_id, &owner, now_ms(), LEASE_TTL_MS)
            .await
        {
            Ok(Renewal::Kept) => {}
            Ok(Renewal::StealRequested) | Ok(Renewal::Lost) => {
                stop.cancel();
                return;
            }
            Err(e) => tracing::warn!(video = %video_id, error = %e, "renewing a lease"),
        }
    }
}

/// Appends a request body at `offset` under the lease; returns the new
/// durable offset (and completes the upload when it reaches its length).
async fn append(
    state: &SharedState,
    up: &Upload,
    offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<u64> {
    let mut checksum = Checksum::parse(headers)?;
    let size = up.size as u64;
    let limit = size - offset;
    if header_u64(headers, "content-length")?.is_some_and(|n| n > limit) {
        return Err(ApiError::file_too_large(size, false));
    }
    let lease = Lease::acquire(state, &up.video_id).await?;
    if limit == 0 {
        // Every byte is in, but completing failed before (see `finish_stalled`).
        let r = finish(state, up).await;
        lease.release().await;
        return r.map(|()| size);
    }
    let result = async {
        // The offset may have moved while we waited for the lease.
        let current = state
            .db
            .upload_by_video(&up.video_id)
            .await?
            .ok_or_else(ApiError::upload_not_found)?;
        if current.received as u64 != offset {
            return Err(conflict(&format!(
                "Upload-Offset is {offset} but the upload is at {}",
                current.received
            )));
        }
        let hasher = Arc::new(Mutex::new(checksum.take()));
        let h2 = hasher.clone();
        let stream = body
            .into_data_stream()
            .map_err(std::io::Error::other)
            .take_until(lease.stop.clone().cancelled_owned())
            .inspect_ok(move |chunk| {
                if let Some(c) = h2.lock().expect("not poisoned").as_mut() {
                    c.update(chunk);
                }
            })
            .boxed();
        let ctx = Append {
            state,
            up: &current,
            lease: &lease,
            offset,
            limit,
            hasher,
        };
        let written = if state.store.random_access() {
            ctx.in_place(stream).await?
        } else {
            ctx.as_parts(stream).await?
        };
        if lease.stop.is_cancelled() && written.0 < size {
            return Err(ApiError::new(
                StatusCode::LOCKED,
                "upload_taken_over",
                format!(
                    "another request took over this upload at offset {}",
                    written.0
                ),
            ));
        }
        Ok(written)
    }
    .await;
    // Completed under the lease, so that a HEAD (`finish_stalled`) cannot
    // see every byte in and complete the upload a second time meanwhile.
    let result = match result {
        Ok((n, end)) if n == size => finish(state, up).await.map(|()| (n, end)),
        r => r,
    };
    lease.release().await;
    let (new_offset, end) = result?;
    match end {
        // The upload is whole (and complete); the bytes past it are refused.
        WriteEnd::Overflow => Err(ApiError::file_too_large(size, false)),
        WriteEnd::Interrupted(e) => Err(StoreError::Io(e).into()),
        WriteEnd::Complete => Ok(new_offset),
    }
}

/// HEAD of an upload that has every byte but is not complete: an earlier
/// `finish` failed after the last byte was stored (the database was
/// unavailable, the process died). Stock clients stop once the offset is
/// the length, so the server completes it now, under the upload's lease.
async fn finish_stalled(state: &SharedState, up: &Upload) -> ApiResult<()> {
    let lease = match Lease::acquire(state, &up.video_id).await {
        Ok(l) => l,
        // The request that held the lease completed it meanwhile.
        Err(e) if e.code == "upload_not_found" => return Ok(()),
        Err(e) => return Err(e),
    };
    let r = match state.db.upload_by_video(&up.video_id).await {
        Ok(Some(up)) if up.received == up.size => finish(state, &up).await,
        // Another request completed it meanwhile.
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    };
    lease.release().await;
    r
}

/// One request's append, under its lease.
struct Append<'a> {
    state: &'a SharedState,
    up: &'a Upload,
    lease: &'a Lease,
    offset: u64,
    limit: u64,
    /// The request's Upload-Checksum, fed as bytes stream through.
    hasher: Arc<Mutex<Option<Checksum>>>,
}

impl Append<'_> {
    fn has_checksum(&self) -> bool {
        self.hasher.lock().expect("not poisoned").is_some()
    }

    /// With a checksum, only a whole body that matches may be kept: Ok(true)
    /// to keep, Ok(false) when the body ended early, Err on a mismatch.
    fn checksum_verdict(&self, end: &WriteEnd) -> ApiResult<bool> {
        let Some(c) = self.hasher.lock().expect("not poisoned").take() else {
            return Ok(true);
        };
        if !matches!(end, WriteEnd::Complete) || self.lease.stop.is_cancelled() {
            return Ok(false);
        }
        if c.matches() {
            Ok(true)
        } else {
            Err(checksum_mismatch())
        }
    }

    /// Moves the durable offset; refused when the lease was lost meanwhile.
    async fn advance(&self, from: u64, to: u64) -> ApiResult<()> {
        let db = &self.state.db;
        if from == to
            || db
                .advance_offset(&self.up.video_id, &self.lease.owner, from as i64, to as i64)
                .await?
        {
            Ok(())
        } else {
            Err(conflict(
                "the upload moved on while this request was writing",
            ))
        }
    }

    /// Local disk: bytes go in place into the staging file, synced, then the offset moves.
    async fn in_place(&self, stream: vidhost_store::ByteStream<'_>) -> ApiResult<(u64, WriteEnd)> {
        let store_id = self
            .up
            .store_upload_id
            .as_deref()
            .ok_or_else(ApiError::upload_not_found)?;
        let w = self
            .state
            .store
            .write_at(
                store_id,
                layout_of(self.up),
                self.offset,
                stream,
                self.limit,
            )
            .await?;
        if !self.checksum_verdict(&w.end)? {
            return Ok((self.offset, w.end));
        }
        let to = self.offset + w.bytes;
        self.advance(self.offset, to).await?;
        Ok((to, w.end))
    }

    /// S3: bytes become parts of `part_size`; what is left over is stored as
    /// the tail object and read back by whichever request goes on. The part
    /// being gathered is a [`Spool`], so memory stays bounded whatever the
    /// part size (a 5 TiB upload has parts of 525 MiB).
    async fn as_parts(
        &self,
        mut stream: vidhost_store::ByteStream<'_>,
    ) -> ApiResult<(u64, WriteEnd)> {
        let (state, up) = (self.state, self.up);
        let store_id = up
            .store_upload_id
            .clone()
            .ok_or_else(ApiError::upload_not_found)?;
        let key = original_key(&up.video_id);
        let tail = tail_key(&up.video_id);
        let part = up.part_size as u64;
        let size = up.size as u64;
        let with_checksum = self.has_checksum();
        let mut parts_done = self.offset / part;
        let mut spool = Spool::new(&state.config.data_dir, part);
        let tail_len = self.offset % part;
        if tail_len > 0 {
            let mut body = state
                .store
                .get(&tail, Some((0, tail_len - 1)))
                .await?
                .stream;
            while let Some(c) = body.next().await {
                spool.push(&c.map_err(StoreError::Io)?).await?;
            }
            if spool.len() != tail_len {
                return Err(ApiError::internal(format!(
                    "tus tail of {} holds {} bytes, expected {tail_len}",
                    up.video_id,
                    spool.len()
                )));
            }
        }
        let mut durable = self.offset;
        let mut received = 0u64;
        let mut end = WriteEnd::Complete;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    end = WriteEnd::Interrupted(e);
                    break;
                }
            };
            let take = chunk.len().min((self.limit - received) as usize);
            received += take as u64;
            let mut rest = &chunk[..take];
            while !rest.is_empty() {
                let room = (part - spool.len()).min(rest.len() as u64) as usize;
                let (now, later) = rest.split_at(room);
                spool.push(now).await?;
                rest = later;
                if spool.len() == part {
                    let bytes = spool.take().await?;
                    put_part(state, &key, &store_id, layout_of(up), parts_done + 1, bytes).await?;
                    parts_done += 1;
                    // Without a checksum every stored part counts at once.
                    if !with_checksum {
                        self.advance(durable, parts_done * part).await?;
                        durable = parts_done * part;
                    }
                }
            }
            if take < chunk.len() {
                end = WriteEnd::Overflow;
                break;
            }
        }
        if !self.checksum_verdict(&end)? {
            return Ok((self.offset, end));
        }
        let reached = parts_done * part + spool.len();
        if spool.len() > 0 {
            let len = spool.len();
            let bytes = spool.take().await?;
            if reached == size {
                put_part(state, &key, &store_id, layout_of(up), parts_done + 1, bytes).await?;
            } else {
                state.store.put_stream(&tail, bytes, len).await?;
            }
        }
        self.advance(durable, reached).await?;
        Ok((reached, end))
    }
}

/// The bytes of one S3 part being gathered by a tus request: in memory when
/// parts are at most `IN_MEMORY` (the default 8 MiB), else in a file of the
/// data dir, unlinked as soon as it is made (nothing to clean up after a
/// crash; the durable copy is the part or the tail object). Bigger parts
/// go to the file from their first byte: a memory buffer that filled up
/// first and then moved to the file stayed in the allocator's arenas
/// (a 31 MiB peak for 48 MiB parts, measured by the test).
struct Spool {
    dir: std::path::PathBuf,
    in_memory: bool,
    mem: BytesMut,
    file: Option<tokio::fs::File>,
    len: u64,
}

impl Spool {
    const IN_MEMORY: u64 = 8 << 20;

    fn new(data_dir: &std::path::Path, part_size: u64) -> Spool {
        Spool {
            dir: data_dir.join(".tus-spool"),
            in_memory: part_size <= Self::IN_MEMORY,
            mem: BytesMut::new(),
            file: None,
            len: 0,
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    async fn push(&mut self, b: &[u8]) -> ApiResult<()> {
        use tokio::io::AsyncWriteExt;
        if self.file.is_none() && !self.in_memory {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(StoreError::from)?;
            let path = self.dir.join(new_id());
            let f = tokio::fs::File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .await
                .map_err(StoreError::from)?;
            tokio::fs::remove_file(&path)
                .await
                .map_err(StoreError::from)?;
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(b).await.map_err(StoreError::from)?,
            None => self.mem.extend_from_slice(b),
        }
        self.len += b.len() as u64;
        Ok(())
    }

    /// What was gathered, as a body, and the spool empty again.
    async fn take(&mut self) -> ApiResult<vidhost_store::ByteStream<'static>> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        self.len = 0;
        match self.file.take() {
            None => {
                let bytes = self.mem.split().freeze();
                Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
            }
            Some(mut f) => {
                f.flush().await.map_err(StoreError::from)?;
                f.seek(std::io::SeekFrom::Start(0))
                    .await
                    .map_err(StoreError::from)?;
                Ok(tokio_util::io::ReaderStream::with_capacity(f, 256 << 10).boxed())
            }
        }
    }
}

async fn put_part(
    state: &SharedState,
    key: &str,
    store_id: &str,
    layout: MultipartLayout,
    n: u64,
    bytes: vidhost_store::ByteStream<'static>,
) -> ApiResult<PartInfo> {
    Ok(state
        .store
        .write_part(key, store_id, layout, n as u32, bytes)
        .await?)
}

/// The last byte arrived: join the bytes into the original and mark it uploaded.
async fn finish(state: &SharedState, up: &Upload) -> ApiResult<()> {
    let key = original_key(&up.video_id);
    let store_id = up
        .store_upload_id
        .as_deref()
        .ok_or_else(ApiError::upload_not_found)?;
    let joined = if state.store.random_access() {
        state.store.commit_staged(&key, store_id).await
    } else {
        async {
            let parts = state.store.list_parts(&key, store_id).await?;
            state
                .store
                .complete_multipart(&key, store_id, layout_of(up), &parts)
                .await
        }
        .await
    };
    let size = joined_or_in_place(state, up, &key, store_id, joined).await?;
    if !state.store.random_access() {
        state.store.delete(&tail_key(&up.video_id)).await?;
    }
    let video = state
        .db
        .get_video(&up.video_id)
        .await?
        .ok_or_else(ApiError::upload_not_found)?;
    let result = accept_original(state, &video, size).await;
    let outcome = if result.is_ok() {
        "completed"
    } else {
        "failed"
    };
    record_upload_outcome(UploadMethod::Tus, outcome, up.created_at, Some(size));
    result.map(|_| ())
}
