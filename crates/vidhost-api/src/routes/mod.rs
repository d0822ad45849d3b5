//! Every route of the API, declared once in `api_routes!`: the same table
//! builds the axum router and the OpenAPI document, so the two cannot drift.

pub mod accounts;
pub mod admin;
pub mod analytics;
pub mod delivery;
pub mod jobs;
pub mod ops;
pub mod tus;
pub mod uploads;
pub mod videos;

use crate::state::SharedState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, head, options, patch, post, put, MethodRouter};
use axum::Router;

/// One documented operation.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: bool,
    /// Status codes this operation answers with besides the problem+json errors.
    pub ok: &'static [u16],
}

macro_rules! api_routes {
    ($( $method:ident $path:literal => $handler:path, $tag:literal, $auth:literal, [$($ok:literal),*], $summary:literal; )+) => {
        pub const OPERATIONS: &[Operation] = &[
            $( Operation { method: stringify!($method), path: $path, tag: $tag, summary: $summary, auth: $auth, ok: &[$($ok),*] }, )+
        ];

        fn table() -> Vec<(&'static str, MethodRouter<SharedState>)> {
            vec![ $( ($path, $method($handler)), )+ ]
        }
    };
}

api_routes! {
    get "/healthz" => ops::healthz, "operations", false, [200], "Liveness: 200 while the process runs";
    get "/readyz" => ops::readyz, "operations", false, [200, 503], "Readiness: database and object store answer";
    get "/metrics" => ops::metrics, "operations", false, [200], "Prometheus metrics";
    get "/api/v1/openapi.json" => crate::openapi::document, "operations", false, [200], "This OpenAPI 3.1 document";

    post "/api/v1/auth/register" => accounts::register, "accounts", false, [201], "Create an account";
    post "/api/v1/auth/login" => accounts::login, "accounts", false, [200], "Sign in: access and refresh tokens";
    post "/api/v1/auth/refresh" => accounts::refresh, "accounts", false, [200], "Rotate a refresh token for a new pair";
    post "/api/v1/auth/logout" => accounts::logout, "accounts", false, [204], "Revoke the refresh token's session";
    get "/api/v1/me" => accounts::me, "accounts", true, [200], "The caller's profile";
    patch "/api/v1/me" => accounts::patch_me, "accounts", true, [200], "Change the caller's display name";
    post "/api/v1/me/password" => accounts::change_password, "accounts", true, [204], "Change password; other sessions are revoked";
    get "/api/v1/me/sessions" => accounts::sessions, "accounts", true, [200], "The caller's signed-in sessions";
    delete "/api/v1/me/sessions/{id}" => accounts::revoke_session, "accounts", true, [204], "Revoke one session";
    post "/api/v1/auth/mfa/totp/setup" => accounts::mfa_setup, "accounts", true, [200], "Start TOTP enrolment: a secret and its otpauth:// URL";
    post "/api/v1/auth/mfa/totp/enable" => accounts::mfa_enable, "accounts", true, [200], "Confirm a code of the new secret: MFA on, recovery codes shown once";
    post "/api/v1/auth/mfa/totp/disable" => accounts::mfa_disable, "accounts", true, [204], "MFA off (takes a current or recovery code)";

    get "/api/v1/videos" => videos::list, "videos", false, [200], "List and search videos (cursor pagination)";
    get "/api/v1/videos/{id}" => videos::get, "videos", false, [200], "One video";
    patch "/api/v1/videos/{id}" => videos::patch, "videos", true, [200], "Edit title, description, tags, visibility";
    delete "/api/v1/videos/{id}" => videos::delete, "videos", true, [204], "Delete a video and every stored object";
    get "/api/v1/videos/{id}/playback" => videos::playback, "delivery", false, [200], "Signed, expiring playback URLs";

    post "/api/v1/upload" => uploads::form, "uploads", true, [201], "Upload in one multipart/form-data request";
    get "/api/v1/uploads" => uploads::list, "uploads", true, [200], "The caller's incomplete uploads";
    post "/api/v1/uploads/presigned" => uploads::create_presigned, "uploads", true, [201], "Start a presigned single-PUT upload";
    post "/api/v1/uploads/presigned/{video_id}/complete" => uploads::complete_presigned, "uploads", true, [200], "Finish a presigned upload";
    post "/api/v1/uploads/multipart" => uploads::create_multipart, "uploads", true, [201], "Start a multipart upload";
    get "/api/v1/uploads/multipart/{upload_id}" => uploads::get_multipart, "uploads", true, [200], "Parts received so far";
    delete "/api/v1/uploads/multipart/{upload_id}" => uploads::abort_multipart, "uploads", true, [204], "Abort; stored parts are removed";
    post "/api/v1/uploads/multipart/{upload_id}/parts" => uploads::presign_parts, "uploads", true, [200], "URLs to PUT parts to";
    post "/api/v1/uploads/multipart/{upload_id}/complete" => uploads::complete_multipart, "uploads", true, [200], "Join the parts into the video";
    put "/api/v1/uploads/direct/{token}" => uploads::direct_put, "uploads", false, [200], "Signed PUT target of presigned URLs on local storage";

    options "/api/v1/tus" => tus::options, "tus", false, [204], "tus capabilities (versions, extensions, maximum size, checksums)";
    post "/api/v1/tus" => tus::create, "tus", true, [201], "tus creation (and creation-with-upload)";
    options "/api/v1/tus/{id}" => tus::options, "tus", false, [204], "tus capabilities";
    head "/api/v1/tus/{id}" => tus::head, "tus", true, [200], "tus: the durable offset of an upload";
    patch "/api/v1/tus/{id}" => tus::patch, "tus", true, [204], "tus: append bytes at Upload-Offset (optional Upload-Checksum)";
    delete "/api/v1/tus/{id}" => tus::terminate, "tus", true, [204], "tus termination: remove the upload and its bytes";

    get "/play/{token}/hls/master.m3u8" => delivery::fixed_output, "delivery", false, [200, 206, 304], "HLS multivariant playlist";
    get "/play/{token}/hls/{generation}/{file}" => delivery::stream_file, "delivery", false, [200, 206, 304, 416], "HLS media playlists and CMAF segments";
    get "/play/{token}/dash/manifest.mpd" => delivery::fixed_output, "delivery", false, [200, 206, 304], "MPEG-DASH manifest over the same segments";
    get "/play/{token}/dash/{generation}/{file}" => delivery::stream_file, "delivery", false, [200, 206, 304, 416], "DASH segments (shared with HLS)";
    get "/play/{token}/mp4" => delivery::fixed_output, "delivery", false, [200, 206, 304, 416], "Progressive MP4 (H.264/AAC, faststart)";
    get "/play/{token}/storyboard.vtt" => delivery::fixed_output, "delivery", false, [200, 206, 304], "Scrubbing thumbnails (WebVTT pointing into sprite images)";
    get "/play/{token}/storyboard/{file}" => delivery::storyboard_image, "delivery", false, [200, 206, 304], "Storyboard sprite images";
    get "/play/{token}/poster.jpg" => delivery::fixed_output, "delivery", false, [200, 206, 304], "Poster frame";
    get "/play/{token}/original" => delivery::original, "delivery", false, [200, 206, 304, 416], "The uploaded file (owner grants), with byte ranges";

    get "/api/v1/videos/{id}/events" => videos::events, "videos", false, [200], "Server-Sent Events: status, step and progress until ready or failed";
    post "/api/v1/videos/{id}/reprocess" => videos::reprocess, "videos", true, [202], "Run the processing pipeline again";
    post "/api/v1/videos/{id}/views" => analytics::record, "analytics", false, [202], "Analytics beacon of a player: play, progress, ended";
    get "/api/v1/videos/{id}/stats" => analytics::stats, "analytics", true, [200], "Views, unique viewers, watch time, by day (owner or admin)";
    get "/api/v1/videos/{id}/related" => analytics::related, "videos", false, [200], "Videos like this one: shared tags, same owner, most viewed";
    get "/api/v1/admin/jobs" => jobs::list, "admin", true, [200], "Processing jobs by state (queued, running, failed, dead)";
    post "/api/v1/admin/jobs/{id}/retry" => jobs::retry, "admin", true, [200], "Re-queue a dead job";
    get "/api/v1/admin/users" => accounts::admin_users, "admin", true, [200], "All users";
    patch "/api/v1/admin/users/{id}" => accounts::admin_patch_user, "admin", true, [200], "Change a user's role or disable them";
    post "/api/v1/admin/invites" => admin::create_invite, "admin", true, [201], "A single-use invite code to register with (and its role)";
    get "/api/v1/admin/audit" => admin::audit_log, "admin", true, [200], "Audit log, newest first: logins, MFA, roles, sessions, invites, deletions, key rotations";
}

/// Routes whose bodies are whole files: no body limit (they stream, and
/// enforce the declared size themselves).
const STREAMING: &[&str] = &[
    "/api/v1/upload",
    "/api/v1/uploads/direct/{token}",
    "/api/v1/tus",
    "/api/v1/tus/{id}",
];

pub fn router() -> Router<SharedState> {
    let mut r = Router::new();
    // Several methods on one path are merged by axum's `route`.
    for (path, mr) in table() {
        let mr = if STREAMING.contains(&path) {
            mr.layer(DefaultBodyLimit::disable())
        } else {
            mr
        };
        let mr = if path.starts_with("/api/v1/tus") {
            mr.layer(axum::middleware::from_fn(tus::protocol))
        } else {
            mr
        };
        r = r.route(path, mr);
    }
    r.merge(crate::web::router())
}
