//! The client side of vidhost: `vidhost login` keeps tokens in the user's
//! config dir (0600, refreshed when needed); `vidhost upload` sends files by
//! multipart (parallel parts) or tus, retrying with exponential backoff and
//! jitter, and resumes an interrupted upload from a local state file without
//! resending what the server acknowledged.

pub mod creds;
mod retry;
pub mod upload;

pub use creds::{login, Session};
pub use upload::{upload_file, Protocol, UploadOptions, Uploaded};

use std::fmt;

/// A refusal from the server that retrying cannot fix.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub detail: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server refused: {} ({}, HTTP {})",
            self.detail, self.code, self.status
        )
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    pub async fn from_response(resp: reqwest::Response) -> ApiFailure {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        ApiFailure {
            status,
            code: v["code"].as_str().unwrap_or("http_error").to_owned(),
            detail: v["detail"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| text.chars().take(200).collect()),
        }
    }
}
