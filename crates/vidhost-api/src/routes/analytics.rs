//! Playback analytics: players report sessions (`views`), owners read the
//! totals (`stats`), and anyone who may watch a video gets videos like it
//! (`related`).

use crate::auth::{Caller, MaybeCaller};
use crate::client::ClientIp;
use crate::error::{ApiError, ApiResult, Json};
use crate::routes::videos::{load_managed, load_visible, view};
use crate::state::SharedState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use vidhost_core::time::now_ms;
use vidhost_db::{Sort, Video, VideoQuery, ViewBeacon, Viewer};

#[derive(Deserialize)]
pub struct Beacon {
    session_id: String,
    event: String,
    position_s: f64,
    watched_s: f64,
    rendition: Option<String>,
}

/// Who watches, for unique viewers: the user, or a keyed hash of the
/// client's address and user agent (the address itself is not stored).
fn viewer_key(
    state: &SharedState,
    caller: &MaybeCaller,
    ip: Option<&str>,
    h: &HeaderMap,
) -> String {
    if let Some(c) = &caller.0 {
        return format!("u:{}", c.user.id);
    }
    let ua = h
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let key = &state.viewer_key;
    let mut m = Hmac::<Sha256>::new_from_slice(&key.secret).expect("any key length");
    m.update(b"viewer\0");
    m.update(ip.unwrap_or("-").as_bytes());
    m.update(b"\0");
    m.update(ua);
    format!("a:{}", hex::encode(&m.finalize().into_bytes()[..16]))
}

/// A session without a report for this long is over (a player reports
/// every few seconds while it plays); a report after that starts a new one.
const SESSION_IDLE_MS: i64 = 24 * 3600 * 1000;

/// Sessions folded per transaction, and transactions per sweep: a backlog
/// (the first sweep after an upgrade) goes over several sweeps.
const FOLD_CHUNK: i64 = 1000;
const FOLD_ROUNDS: usize = 20;

/// Folds sessions that are over into the daily totals (at each sweep), so
/// that `view_sessions` holds only the last day's.
pub async fn fold_idle_sessions(state: &SharedState) -> ApiResult<u64> {
    let idle_before = now_ms() - SESSION_IDLE_MS;
    let mut folded = 0;
    for _ in 0..FOLD_ROUNDS {
        let n = state.db.fold_view_sessions(idle_before, FOLD_CHUNK).await?;
        folded += n;
        if n < FOLD_CHUNK as u64 {
            break;
        }
    }
    Ok(folded)
}

pub async fn record(
    State(state): State<SharedState>,
    caller: MaybeCaller,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<Beacon>,
) -> ApiResult<StatusCode> {
    let v = load_visible(&state, &id, &caller.viewer()).await?;
    let sid = b.session_id.trim();
    if sid.is_empty()
        || sid.len() > 64
        || !sid
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(ApiError::validation(
            "session_id must be 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    let (play, ended) = match b.event.as_str() {
        "play" => (true, false),
        "progress" => (false, false),
        "ended" => (false, true),
        _ => {
            return Err(ApiError::validation(
                "event must be play, progress or ended",
            ))
        }
    };
    let seconds = |x: f64, what: &str| {
        if x.is_finite() && (0.0..=1e7).contains(&x) {
            Ok(x)
        } else {
            Err(ApiError::validation(format!(
                "{what} must be a number of seconds, 0 or more"
            )))
        }
    };
    let position_s = seconds(b.position_s, "position_s")?;
    let watched_s = seconds(b.watched_s, "watched_s")?;
    let rendition = match b.rendition.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.len() <= 32 && r.chars().all(|c| c.is_ascii_graphic()) => Some(r.to_owned()),
        Some(_) => return Err(ApiError::validation("rendition must be a rendition name")),
    };
    let now = now_ms();
    let day = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string();
    let beacon = ViewBeacon {
        video_id: v.id.clone(),
        session_id: sid.to_owned(),
        viewer_key: viewer_key(&state, &caller, ip.as_deref(), &headers),
        day,
        now,
        play,
        ended,
        position_s,
        watched_s,
        rendition,
    };
    state.db.record_view(&beacon).await?;
    Ok(StatusCode::ACCEPTED)
}

pub async fn stats(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let v = load_managed(&state, &id, &caller).await?;
    let s = state.db.video_stats(&v.id).await?;
    let avg = if s.views > 0 {
        s.watch_time_s / s.views as f64
    } else {
        0.0
    };
    let by_day: Vec<_> = s
        .by_day
        .iter()
        .map(|(date, views, watch)| json!({"date": date, "views": views, "watch_time_s": watch}))
        .collect();
    Ok(axum::Json(json!({
        "views": s.views,
        "unique_viewers": s.unique_viewers,
        "watch_time_s": s.watch_time_s,
        "avg_view_duration_s": avg,
        "by_day": by_day,
    })))
}

/// How alike `c` is to `v`: shared tags first, then the same owner, then
/// shared title words.
fn likeness(v: &Video, c: &Video) -> usize {
    let tags = c
        .tags
        .iter()
        .filter(|t| v.tags.iter().any(|u| u.eq_ignore_ascii_case(t)))
        .count();
    // Distinct words, so a title repeating one word gains nothing; at most
    // 9, so title words never outweigh the same owner.
    let words = |s: &str| -> std::collections::BTreeSet<String> {
        s.split(|ch: char| !ch.is_alphanumeric())
            .filter(|w| w.chars().count() > 2)
            .map(str::to_lowercase)
            .collect()
    };
    let title = words(&v.title)
        .intersection(&words(&c.title))
        .count()
        .min(9);
    tags * 100 + usize::from(c.owner_id == v.owner_id) * 10 + title
}

const RELATED: usize = 12;
/// The most viewed videos the caller may see are the candidates.
const CANDIDATES: i64 = 200;

pub async fn related(
    State(state): State<SharedState>,
    caller: MaybeCaller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let viewer = caller.viewer();
    let v = load_visible(&state, &id, &viewer).await?;
    // Others' listings show only public, ready videos: related ones too,
    // even to an admin or the owner (a related list is for watching next).
    let q = VideoQuery {
        viewer: Viewer::Anonymous,
        q: None,
        owner: None,
        status: None,
        tag: None,
        sort: Sort::Popular,
        after: None,
        offset: 0,
        limit: CANDIDATES,
    };
    let mut candidates: Vec<(usize, Video)> = state
        .db
        .list_videos(&q)
        .await?
        .into_iter()
        .filter(|c| c.id != v.id)
        .map(|c| (likeness(&v, &c), c))
        .collect();
    // Stable: equally alike videos stay most viewed first.
    candidates.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    let items: Vec<_> = candidates
        .iter()
        .take(RELATED)
        .map(|(_, c)| view(&state, c))
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}
