use vidhost_core::domain::{Role, UploadMethod, VideoStatus, Visibility};
use vidhost_core::time::Millis;

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub mfa_enabled: bool,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub purpose: String,
    /// base64 of the raw key bytes
    pub secret: String,
    pub created_at: Millis,
}

/// One refresh-token family: a signed-in device.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: Millis,
    pub last_used_at: Millis,
    pub expires_at: Millis,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub revoked_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated {
        user_id: String,
        session_id: String,
    },
    /// A rotated token came back: its whole family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

#[derive(Debug, Clone)]
pub struct Video {
    pub id: String,
    pub owner_id: String,
    pub owner_display_name: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub status: VideoStatus,
    pub error: Option<String>,
    pub progress: f64,
    pub created_at: Millis,
    pub uploaded_at: Option<Millis>,
    pub ready_at: Option<Millis>,
    pub original_filename: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: Option<i64>,
    pub duration_s: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// The pipeline step under way (`probe`, `thumbnails`, `transcode`, `publish`).
    pub step: Option<String>,
    pub renditions: Vec<Rendition>,
    pub outputs: Outputs,
    /// Playback sessions that started playing.
    pub views: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rendition {
    pub name: String,
    pub width: i64,
    pub height: i64,
    /// bits per second
    pub bitrate: i64,
    pub frame_rate: f64,
}

/// Which published outputs exist for a video.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Outputs {
    /// HLS and DASH over the same CMAF segments, under `videos/{id}/stream/`.
    pub stream: bool,
    pub mp4: bool,
    pub poster: bool,
    /// `storyboard.vtt` and its sprite images.
    pub storyboard: bool,
    /// Directory of the current segments under `stream/` (changes with each
    /// processing run, so segment URLs stay immutable).
    pub generation: Option<String>,
    /// The stream is still being made: HLS playlists are `EVENT` playlists
    /// that grow; the DASH manifest comes at the end.
    pub partial: bool,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub video_id: String,
    pub kind: String,
    /// queued | running | failed (a retry is scheduled at run_at) | dead | done
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: Millis,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct VideoPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub visibility: Option<Visibility>,
}

#[derive(Debug, Clone)]
pub struct Upload {
    pub video_id: String,
    /// The id clients see (multipart `upload_id`).
    pub upload_id: String,
    pub owner_id: String,
    pub method: UploadMethod,
    /// The store's own handle (S3 UploadId, staging file id).
    pub store_upload_id: Option<String>,
    pub size: i64,
    pub part_size: i64,
    pub part_count: i64,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Bytes durably received so far (tus).
    pub received: i64,
    /// The client's `Upload-Metadata`, echoed on HEAD (tus).
    pub metadata: Option<String>,
}

/// A deleted video's stored objects, still to remove: everything under
/// its prefix and, when its upload was in flight, the store's multipart
/// upload (`store_upload_id`).
#[derive(Debug, Clone)]
pub struct StoreCleanup {
    pub id: i64,
    pub video_id: String,
    pub store_upload_id: Option<String>,
    /// Tries the sweeper took so far (each claim counts one).
    pub attempts: i64,
}

/// What deleting a video took with it: its objects' cleanup, queued in the
/// same transaction, and its upload if one was in flight.
#[derive(Debug, Clone)]
pub struct DeletedVideo {
    pub cleanup: StoreCleanup,
    pub upload: Option<Upload>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    Acquired,
    /// A live request holds it.
    Held,
    /// The upload is gone.
    Missing,
}

/// What a lease holder learns when it renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Kept,
    /// Another request asks for the upload: finish up and let go.
    StealRequested,
    /// The lease expired and someone else took it.
    Lost,
}

#[derive(Debug, Clone)]
pub struct UploadDone {
    pub size_bytes: i64,
    pub content_type: String,
    pub uploaded_at: Millis,
    /// The processing job queued in the same transaction.
    pub job_id: String,
    pub max_attempts: i64,
}

/// Who is asking, for visibility rules.
#[derive(Debug, Clone)]
pub enum Viewer {
    Anonymous,
    User { id: String, admin: bool },
}

#[derive(Debug, Clone)]
pub struct VideoQuery {
    pub viewer: Viewer,
    pub q: Option<String>,
    pub owner: Option<String>,
    pub status: Option<VideoStatus>,
    pub tag: Option<String>,
    pub sort: Sort,
    /// Keyset cursor: (views, created_at, id) of the last item already
    /// returned (views only for `Sort::Popular`).
    pub after: Option<(i64, Millis, String)>,
    /// Rows to skip (`Sort::Relevance` only).
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// Newest first.
    #[default]
    Recent,
    /// Most viewed first, then newest.
    Popular,
    /// Best match of `q` first (title, then tags, then description), then
    /// newest; pages by `offset`, not `after`.
    Relevance,
}

/// One report of a player (`POST /api/v1/videos/{id}/views`).
#[derive(Debug, Clone)]
pub struct ViewBeacon {
    pub video_id: String,
    pub session_id: String,
    pub viewer_key: String,
    /// UTC date of `now`, `YYYY-MM-DD`.
    pub day: String,
    pub now: Millis,
    /// `play` counts the session as a view (once).
    pub play: bool,
    pub ended: bool,
    pub position_s: f64,
    /// Seconds watched in this session so far, as the player counts them.
    pub watched_s: f64,
    pub rendition: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct VideoStats {
    pub views: i64,
    pub unique_viewers: i64,
    pub watch_time_s: f64,
    /// (day, views, watch time) by the day sessions started, oldest first.
    pub by_day: Vec<(String, i64, f64)>,
}

/// A user's TOTP second factor, as stored.
#[derive(Debug, Clone, Default)]
pub struct TotpState {
    /// The enrolled secret (base32), when MFA is on.
    pub secret: Option<String>,
    /// A secret handed out by setup and not yet confirmed by a code.
    pub pending: Option<String>,
    /// The last time step whose code was accepted: a code works once.
    pub last_step: i64,
    /// Wrong codes since the last right one.
    pub failures: i64,
    /// No code is checked before this time.
    pub locked_until: Millis,
}

/// A single-use invitation to register.
#[derive(Debug, Clone)]
pub struct Invite {
    /// SHA-256 (hex) of the code; the code itself is shown once.
    pub code_hash: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// One security-relevant event.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: String,
    pub at: Millis,
    pub actor_id: Option<String>,
    /// Filled in by listing (the actor's e-mail at listing time).
    pub actor_email: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub ip: Option<String>,
    /// A JSON object.
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    /// Entries strictly older than this (at, id): the cursor.
    pub before: Option<(Millis, String)>,
    pub limit: i64,
}
