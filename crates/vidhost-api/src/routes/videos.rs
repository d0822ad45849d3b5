//! The catalog over HTTP: read, edit, delete and list videos; issue playback
//! grants.

use crate::auth::{Caller, MaybeCaller};
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::grants::{bucketed_expiry, GrantKind, PlayGrant, PLAY};
use crate::state::SharedState;
pub(crate) use crate::views::VideoView;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use vidhost_core::domain::{is_id, normalize_tags, VideoStatus, Visibility};
use vidhost_core::time::now_ms;
use vidhost_db::{Sort, Video, VideoPatch, VideoQuery, Viewer};

pub const ORIGINAL: &str = "original";

pub fn original_key(video_id: &str) -> String {
    format!("videos/{video_id}/{ORIGINAL}")
}

pub fn video_prefix(video_id: &str) -> String {
    format!("videos/{video_id}/")
}

/// A viewer grant for `v` (the same token for every viewer within an expiry
/// window, so CDN caches are shared).
fn viewer_token(state: &SharedState, v: &Video) -> (String, i64) {
    let e = bucketed_expiry(state.config.delivery.grant_ttl_s);
    (
        state.grants.sign(&PlayGrant {
            p: PLAY.into(),
            v: v.id.clone(),
            k: GrantKind::Viewer,
            e,
        }),
        e,
    )
}

/// The contract's video JSON, with a signed poster URL once there is one.
pub fn view(state: &SharedState, v: &Video) -> VideoView {
    let thumb = v
        .outputs
        .poster
        .then(|| format!("/play/{}/poster.jpg", viewer_token(state, v).0));
    VideoView::new(v, thumb)
}

pub fn can_view(v: &Video, viewer: &Viewer) -> bool {
    match viewer {
        Viewer::User { admin: true, .. } => true,
        Viewer::User { id, .. } if *id == v.owner_id => true,
        _ => v.status == VideoStatus::Ready && v.visibility != Visibility::Private,
    }
}

/// The video if `viewer` may see it; 404 otherwise, so its existence is not revealed.
pub async fn load_visible(state: &SharedState, id: &str, viewer: &Viewer) -> ApiResult<Video> {
    if !is_id(id) {
        return Err(ApiError::video_not_found());
    }
    match state.db.get_video(id).await? {
        Some(v) if can_view(&v, viewer) => Ok(v),
        _ => Err(ApiError::video_not_found()),
    }
}

/// The video if `caller` owns it or is an admin (403 if they can only watch it).
pub async fn load_managed(state: &SharedState, id: &str, caller: &Caller) -> ApiResult<Video> {
    let v = load_visible(state, id, &caller.viewer()).await?;
    if caller.may_manage(&v.owner_id) {
        Ok(v)
    } else {
        Err(ApiError::forbidden(
            "only the owner or an admin may do this",
        ))
    }
}

pub async fn get(
    State(state): State<SharedState>,
    caller: MaybeCaller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let v = load_visible(&state, &id, &caller.viewer()).await?;
    Ok(axum::Json(super::videos::view(&state, &v)))
}

/// Metadata accepted at creation and in PATCH.
#[derive(Deserialize, Default)]
pub struct MetaInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub visibility: Option<String>,
}

impl MetaInput {
    pub fn parse(self) -> ApiResult<VideoPatch> {
        let title = self
            .title
            .map(|t| {
                let t = t.trim().to_owned();
                if t.chars().count() > 200 {
                    Err(ApiError::validation(
                        "title must have at most 200 characters",
                    ))
                } else if t.chars().any(char::is_control) {
                    Err(ApiError::validation(
                        "title must be one line, without control characters",
                    ))
                } else {
                    Ok(t)
                }
            })
            .transpose()?;
        let description = self
            .description
            .map(|d| {
                if d.chars().count() > 10_000 {
                    Err(ApiError::validation(
                        "description must have at most 10000 characters",
                    ))
                } else {
                    Ok(d)
                }
            })
            .transpose()?;
        let tags = self
            .tags
            .map(|t| normalize_tags(t).map_err(ApiError::invalid_tags))
            .transpose()?;
        let visibility = self
            .visibility
            .map(|v| {
                v.parse::<Visibility>().map_err(|_| {
                    ApiError::validation("visibility must be public, unlisted or private")
                })
            })
            .transpose()?;
        Ok(VideoPatch {
            title,
            description,
            tags,
            visibility,
        })
    }
}

pub async fn patch(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(b): Json<MetaInput>,
) -> ApiResult<impl IntoResponse> {
    load_managed(&state, &id, &caller).await?;
    let patch = b.parse()?;
    // At creation an empty title means "from the file name"; here it would
    // leave the video without one.
    if patch.title.as_deref() == Some("") {
        return Err(ApiError::validation(
            "title must have 1 to 200 printable characters",
        ));
    }
    state.db.update_video_meta(&id, &patch).await?;
    // Perhaps turned private: this node's viewer grants stop at once
    // (others within seconds). Other edits leave delivery's memos be.
    if patch.visibility.is_some() {
        super::delivery::forget_seen(&state, &id);
    }
    let v = state
        .db
        .get_video(&id)
        .await?
        .ok_or_else(ApiError::video_not_found)?;
    Ok(axum::Json(super::videos::view(&state, &v)))
}

/// Deletes a video: its rows (its upload's too) at once, then every stored
/// object of it (the store's multipart upload in flight, all under its
/// prefix). The rows' transaction also queues that removal
/// (`store_cleanup`), so when the store fails now, or the process dies in
/// between, the sweeper finishes it later; the video is gone for everyone
/// either way. The caller waits for the objects' removal at most
/// `REMOVAL_WAIT`. Answers the upload that was in flight, if one was and
/// this call deleted the video (of two deletes at once, one).
pub async fn purge_video(
    state: &SharedState,
    video_id: &str,
) -> ApiResult<Option<vidhost_db::Upload>> {
    purge(state, video_id, true).await
}

/// [`purge_video`] after the store already failed this request: the
/// objects' removal runs on without the caller, who is answered at once.
pub async fn purge_video_in_background(
    state: &SharedState,
    video_id: &str,
) -> ApiResult<Option<vidhost_db::Upload>> {
    purge(state, video_id, false).await
}

async fn purge(
    state: &SharedState,
    video_id: &str,
    wait: bool,
) -> ApiResult<Option<vidhost_db::Upload>> {
    // The sweeper takes the removal over only if this one did not finish it
    // by the next sweep but one (the store failed, the process died).
    let now = now_ms();
    let takeover = now + 2 * sweep_ms(state);
    let Some(deleted) = state.db.delete_video(video_id, now, takeover).await? else {
        return Ok(None);
    };
    // This node's deliveries refuse it at once (others within seconds).
    super::delivery::forget_seen(state, video_id);
    let removal = {
        let state = state.clone();
        async move {
            if let Err(e) = remove_objects(&state, &deleted.cleanup).await {
                tracing::warn!(video = %deleted.cleanup.video_id, error = %e.detail,
                    "removing a deleted video's objects failed; the sweeper tries again");
            }
        }
    };
    let removing = tokio::spawn(removal);
    if wait {
        // A store that answers removes a video's objects well within this;
        // one that hangs does not hold the caller for its whole timeout
        // (the removal goes on, and the sweeper retries it if it fails).
        let _ = tokio::time::timeout(REMOVAL_WAIT, removing).await;
    }
    Ok(deleted.upload)
}

/// How long a DELETE waits for its video's objects to go (`purge`).
const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Removes the objects a cleanup names, then the cleanup itself. Safe to
/// repeat (on another node at the same time, too).
pub async fn remove_objects(state: &SharedState, c: &vidhost_db::StoreCleanup) -> ApiResult<()> {
    // On disk the upload's staging lies outside the prefix; on S3 the
    // prefix's removal would abort it too, but this names it exactly.
    if let Some(store_id) = &c.store_upload_id {
        state
            .store
            .abort_multipart(&original_key(&c.video_id), store_id)
            .await?;
    }
    state
        .store
        .delete_prefix(&video_prefix(&c.video_id))
        .await?;
    state.db.finish_cleanup(c.id).await?;
    Ok(())
}

fn sweep_ms(state: &SharedState) -> i64 {
    state.config.uploads.sweep_interval_s as i64 * 1000
}

/// Cleanups the store failed earlier (or whose process died): each due one
/// is claimed (so one node takes it, for two sweep intervals) and tried
/// again. The first failure ends the pass: the store is most likely down,
/// and one timeout a sweep is enough to find out when it is back; then the
/// objects go within two sweep intervals. Meanwhile delivery refuses them
/// (`delivery::check_grant`).
pub async fn retry_cleanups(state: &SharedState) -> ApiResult<usize> {
    let now = now_ms();
    let due = state.db.due_cleanups(now, 100).await?;
    let mut done = 0;
    for c in &due {
        if !state
            .db
            .claim_cleanup(c.id, now, now + 2 * sweep_ms(state))
            .await?
        {
            continue;
        }
        match remove_objects(state, c).await {
            Ok(()) => {
                done += 1;
                tracing::info!(video = %c.video_id, attempts = c.attempts + 1, "a deleted video's objects removed");
            }
            Err(e) => {
                tracing::warn!(video = %c.video_id, error = %e.detail, attempts = c.attempts + 1,
                    "removing a deleted video's objects failed again; next try in two sweeps");
                break;
            }
        }
    }
    Ok(done)
}

pub async fn delete(
    State(state): State<SharedState>,
    crate::client::ClientIp(ip): crate::client::ClientIp,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let video = load_managed(&state, &id, &caller).await?;
    if let Some(up) = purge_video(&state, &id).await? {
        // Deleting a video whose upload is in flight aborts the upload.
        crate::metrics::record_upload_outcome(up.method, "aborted", up.created_at, None);
    }
    tracing::info!(video = %id, by = %caller.user.id, "video deleted");
    crate::audit::record(
        &state,
        ip.as_deref(),
        Some(&caller.user.id),
        crate::audit::action::VIDEO_DELETED,
        Some(&id),
        serde_json::json!({"owner": video.owner_id, "title": video.title}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    owner: Option<String>,
    status: Option<String>,
    tag: Option<String>,
    sort: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// An opaque position in a list ordered by (time, id): base64 of `at:id`.
pub(crate) fn encode_cursor(at: i64, id: &str) -> String {
    B64.encode(format!("{at}:{id}"))
}

pub(crate) fn decode_cursor(c: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::validation("cursor is not one this server issued");
    let raw = String::from_utf8(B64.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let (at, id) = raw.split_once(':').ok_or_else(bad)?;
    if !is_id(id) {
        return Err(bad());
    }
    Ok((at.parse().map_err(|_| bad())?, id.to_owned()))
}

/// How deep search results (sort=relevance) may be paged.
const MAX_OFFSET: i64 = 10_000;

/// A position in search results: base64 of `o{offset}`.
fn decode_offset_cursor(c: &str) -> ApiResult<i64> {
    let bad = || ApiError::validation("cursor is not one this server issued for sort=relevance");
    let raw = String::from_utf8(B64.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let n: i64 = raw
        .strip_prefix('o')
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if !(0..=MAX_OFFSET).contains(&n) {
        return Err(ApiError::validation(format!(
            "search results page only {MAX_OFFSET} deep; narrow the search"
        )));
    }
    Ok(n)
}

/// A position in the most-viewed order: base64 of `p{views}:{at}:{id}`.
fn decode_popular_cursor(c: &str) -> ApiResult<(i64, i64, String)> {
    let bad = || ApiError::validation("cursor is not one this server issued for sort=popular");
    let raw = String::from_utf8(B64.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let rest = raw.strip_prefix('p').ok_or_else(bad)?;
    let (views, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (at, id) = decode_cursor(&B64.encode(rest))?;
    Ok((views.parse().map_err(|_| bad())?, at, id))
}

pub async fn list(
    State(state): State<SharedState>,
    caller: MaybeCaller,
    Query(p): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::validation("limit must be between 1 and 100"));
    }
    let sort = match p.sort.as_deref() {
        None | Some("recent") => Sort::Recent,
        Some("popular") => Sort::Popular,
        Some("relevance") => Sort::Relevance,
        Some(_) => {
            return Err(ApiError::validation(
                "sort must be recent, popular or relevance",
            ))
        }
    };
    let mut offset = 0;
    let after = match (sort, p.cursor.as_deref()) {
        (_, None) => None,
        (Sort::Relevance, Some(c)) => {
            offset = decode_offset_cursor(c)?;
            None
        }
        (Sort::Recent, Some(c)) => {
            let (at, id) = decode_cursor(c)?;
            Some((0, at, id))
        }
        (Sort::Popular, Some(c)) => Some(decode_popular_cursor(c)?),
    };
    let status = p
        .status
        .as_deref()
        .map(|s| {
            s.parse::<VideoStatus>()
                .map_err(|_| ApiError::validation("unknown status"))
        })
        .transpose()?;
    let q = VideoQuery {
        viewer: caller.viewer(),
        q: p.q
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().chars().take(200).collect()),
        // `owner=me`: the caller's own (anonymous callers own nothing).
        owner: match (p.owner, &caller.0) {
            (Some(o), Some(c)) if o == "me" => Some(c.user.id.clone()),
            (Some(o), None) if o == "me" => {
                return Err(ApiError::validation("owner=me needs a signed-in caller"))
            }
            (o, _) => o,
        },
        status,
        tag: p.tag,
        sort,
        after,
        offset,
        // One more than a page: whether there is a next page, so the last
        // one says `next_cursor: null` rather than lead to an empty one.
        limit: limit + 1,
    };
    let mut items = state.db.list_videos(&q).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = more
        .then(|| {
            items.last().map(|v| match sort {
                Sort::Recent => encode_cursor(v.created_at, &v.id),
                Sort::Popular => B64.encode(format!("p{}:{}:{}", v.views, v.created_at, v.id)),
                Sort::Relevance => B64.encode(format!("o{}", offset + limit)),
            })
        })
        .flatten();
    Ok(axum::Json(json!({
        "items": items.iter().map(|v| view(&state, v)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

pub async fn playback(
    State(state): State<SharedState>,
    caller: MaybeCaller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let v = load_visible(&state, &id, &caller.viewer()).await?;
    let owner = caller.0.as_ref().is_some_and(|c| c.may_manage(&v.owner_id));
    let (kind, ttl) = if owner {
        (GrantKind::Owner, state.config.delivery.owner_grant_ttl_s)
    } else {
        (GrantKind::Viewer, state.config.delivery.grant_ttl_s)
    };
    let e = bucketed_expiry(ttl);
    let token = state.grants.sign(&PlayGrant {
        p: PLAY.into(),
        v: v.id.clone(),
        k: kind,
        e,
    });
    let has_original = owner
        && matches!(
            v.status,
            VideoStatus::Uploaded
                | VideoStatus::Processing
                | VideoStatus::Ready
                | VideoStatus::Failed
        );
    let url = |on: bool, path: &str| on.then(|| format!("/play/{token}/{path}"));
    let o = &v.outputs;
    Ok(axum::Json(json!({
        "hls": url(o.stream, "hls/master.m3u8"),
        "dash": url(o.stream && !o.partial, "dash/manifest.mpd"),
        "mp4": url(o.mp4, "mp4"),
        "poster": url(o.poster, "poster.jpg"),
        "storyboard_vtt": url(o.storyboard, "storyboard.vtt"),
        "original": url(has_original, "original"),
        "expires_at": vidhost_core::time::rfc3339(e * 1000),
    })))
}

pub async fn reprocess(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    load_managed(&state, &id, &caller).await?;
    let queued = state
        .db
        .enqueue_processing(
            &id,
            &vidhost_core::domain::new_id(),
            state.config.processing.max_attempts as i64,
            vidhost_core::time::now_ms(),
        )
        .await?;
    if !queued {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "processing_pending",
            "the video has no upload yet or is already queued for processing",
        ));
    }
    let v = state
        .db
        .get_video(&id)
        .await?
        .ok_or_else(ApiError::video_not_found)?;
    Ok((StatusCode::ACCEPTED, axum::Json(view(&state, &v))))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    /// Browsers' EventSource cannot send headers; never logged.
    access_token: Option<String>,
}

/// Server-Sent Events: `{status, progress, step}` whenever one changes,
/// keep-alive comments in between, and the end of the stream at `ready` or
/// `failed` (or when the video is deleted).
pub async fn events(
    State(state): State<SharedState>,
    caller: MaybeCaller,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<impl IntoResponse> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let caller = match (caller.0, q.access_token) {
        (Some(c), _) => Some(c),
        (None, Some(t)) => Some(crate::auth::caller_from_token(&state, &t).await?),
        (None, None) => None,
    };
    let viewer = MaybeCaller(caller).viewer();
    load_visible(&state, &id, &viewer).await?;
    type Last = Option<(String, f64, Option<String>)>;
    type Changes = tokio::sync::broadcast::Receiver<std::sync::Arc<str>>;
    // Subscribed before the first read: no change falls between the two.
    let changes = state.db.video_changes();
    let stream = futures::stream::unfold(
        (
            state,
            id,
            None::<(String, f64, Option<String>)>,
            false,
            changes,
        ),
        |(state, id, mut last, done, mut changes): (SharedState, String, Last, bool, Changes)| async move {
            if done {
                return None;
            }
            loop {
                let v = match state.db.get_video(&id).await {
                    Ok(Some(v)) => v,
                    _ => return None,
                };
                let now = (v.status.as_str().to_owned(), v.progress, v.step.clone());
                let finished = matches!(v.status, VideoStatus::Ready | VideoStatus::Failed);
                if last.as_ref() != Some(&now) {
                    let data = json!({"status": now.0, "progress": now.1, "step": now.2, "error": v.error});
                    last = Some(now);
                    let event = Event::default().event("status").data(data.to_string());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (state, id, last, finished, changes),
                    ));
                }
                if finished {
                    return None;
                }
                // A change of this video wakes the stream at once; the poll
                // covers writers nobody hears (a worker process on SQLite).
                let changed = async {
                    loop {
                        match changes.recv().await {
                            Ok(v) if *v == *id => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    // The server is stopping: a client reconnects elsewhere.
                    _ = state.stopping.cancelled() => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(std::time::Duration::from_secs(15))
            .text("keep-alive"),
    ))
}
