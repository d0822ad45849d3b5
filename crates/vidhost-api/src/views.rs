//! JSON shapes of the contract. Every named field is always present.

use serde::Serialize;
use vidhost_core::time::{rfc3339, rfc3339_opt};
use vidhost_db::{User, Video};

#[derive(Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: &'static str,
    pub mfa_enabled: bool,
    pub disabled: bool,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role.as_str(),
            mfa_enabled: u.mfa_enabled,
            disabled: u.disabled,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct OwnerView {
    pub id: String,
    pub display_name: String,
}

#[derive(Serialize)]
pub struct RenditionView {
    pub name: String,
    pub width: i64,
    pub height: i64,
    pub bitrate: i64,
}

#[derive(Serialize)]
pub struct VideoView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub visibility: &'static str,
    pub status: &'static str,
    pub error: Option<String>,
    pub progress: f64,
    /// The processing step under way (extra to the contract's fields).
    pub step: Option<String>,
    pub owner: OwnerView,
    pub created_at: String,
    pub uploaded_at: Option<String>,
    pub ready_at: Option<String>,
    pub original_filename: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: Option<i64>,
    pub duration_s: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub renditions: Vec<RenditionView>,
    pub thumbnail_url: Option<String>,
    /// Playback sessions that started playing (extra to the contract's fields).
    pub views: i64,
}

impl VideoView {
    /// `thumbnail_url` is a signed URL, so the caller supplies it.
    pub fn new(v: &Video, thumbnail_url: Option<String>) -> Self {
        VideoView {
            id: v.id.clone(),
            title: v.title.clone(),
            description: v.description.clone(),
            tags: v.tags.clone(),
            visibility: v.visibility.as_str(),
            status: v.status.as_str(),
            error: v.error.clone(),
            progress: v.progress,
            step: v.step.clone(),
            owner: OwnerView {
                id: v.owner_id.clone(),
                display_name: v.owner_display_name.clone(),
            },
            created_at: rfc3339(v.created_at),
            uploaded_at: rfc3339_opt(v.uploaded_at),
            ready_at: rfc3339_opt(v.ready_at),
            original_filename: v.original_filename.clone(),
            content_type: v.content_type.clone(),
            size_bytes: v.size_bytes,
            duration_s: v.duration_s,
            width: v.width,
            height: v.height,
            renditions: v
                .renditions
                .iter()
                .map(|r| RenditionView {
                    name: r.name.clone(),
                    width: r.width,
                    height: r.height,
                    bitrate: r.bitrate,
                })
                .collect(),
            thumbnail_url,
            views: v.views,
        }
    }
}
