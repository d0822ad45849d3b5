//! `vidhost upload`: one file at a time, by multipart (parts in parallel,
//! straight to the presigned URLs) or tus (sequential chunks). What the
//! server has acknowledged is never sent again: a state file per file (keyed
//! by server, account, path, size and mtime) names the upload, and on a rerun the
//! server says what it already holds (ListParts-style part list, tus HEAD).

use crate::creds::{client_dir, write_private, Session};
use crate::retry::{backoff, retryable_error, retryable_status, MAX_ATTEMPTS};
use crate::ApiFailure;
use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{header, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const TUS_CHUNK: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Multipart,
    Tus,
}

#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub title: Option<String>,
    pub visibility: Option<String>,
    pub parallel: usize,
    pub protocol: Protocol,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct Uploaded {
    pub video_id: String,
    pub watch_url: String,
    /// Bytes the server already had when this run started (a resumed upload).
    pub already_there: u64,
}

/// What names an upload between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    protocol: Protocol,
    video_id: String,
    upload_id: Option<String>,
    tus_url: Option<String>,
    /// The server, account and file it is an upload of, whatever the file's
    /// size and mtime were (`source_key`).
    #[serde(default)]
    source: Option<String>,
}

struct Job<'a> {
    session: &'a Session,
    path: &'a Path,
    size: u64,
    filename: String,
    opts: &'a UploadOptions,
    state_path: PathBuf,
    source: String,
    /// Held for the whole run (`lock_of`): no other run of this client
    /// resumes, or aborts, this upload meanwhile.
    _lock: std::fs::File,
    pb: ProgressBar,
}

/// Names the (server, account, file) an upload is of, across versions of
/// the file.
fn source_key(server: &str, account: &str, path: &Path) -> String {
    let mut h = Sha256::new();
    h.update(format!("{server}\n{account}\n{}", path.display()));
    hex::encode(&h.finalize()[..16])
}

/// The lock beside a state file, taken without waiting; None while another
/// run holds it.
fn lock_of(state_path: &Path) -> anyhow::Result<Option<std::fs::File>> {
    if let Some(dir) = state_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(state_path.with_extension("lock"))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Names one version of the file (its `source_key`, size and mtime): the
/// state file of its upload.
fn fingerprint(source: &str, meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(format!("{source}\n{}\n{}", meta.len(), mtime.as_nanos()));
    hex::encode(&h.finalize()[..16])
}

fn guess_type(name: &str) -> &'static str {
    match name
        .rsplit('.')
        .next()
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("mp4" | "m4v") => "video/mp4",
        Some("mov") => "video/quicktime",
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("avi") => "video/x-msvideo",
        Some("mpg" | "mpeg") => "video/mpeg",
        Some("ts") => "video/mp2t",
        Some("3gp") => "video/3gpp",
        _ => "application/octet-stream",
    }
}

/// Sends an API request with the caller's token. Transient failures are
/// retried with backoff; a 401 refreshes the token once; any other refusal
/// is returned as an [`ApiFailure`].
async fn api(
    session: &Session,
    build: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
) -> anyhow::Result<Response> {
    let mut token = session.token().await?;
    let mut refreshed = false;
    let mut attempt = 0;
    loop {
        match build(&session.http, &token).send().await {
            Ok(r) if r.status().is_success() => return Ok(r),
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !refreshed => {
                refreshed = true;
                token = session.refresh().await?;
                continue;
            }
            Ok(r) if retryable_status(r.status().as_u16()) && attempt + 1 < MAX_ATTEMPTS => {}
            Ok(r) => return Err(ApiFailure::from_response(r).await.into()),
            Err(e) if retryable_error(&e) && attempt + 1 < MAX_ATTEMPTS => {}
            Err(e) => return Err(anyhow!(e).context(format!("cannot reach {}", session.server))),
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

pub async fn upload_file(
    session: &Session,
    path: &Path,
    opts: &UploadOptions,
) -> anyhow::Result<Uploaded> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    let abs = std::fs::canonicalize(path)?;
    let filename = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload")
        .to_owned();
    let source = source_key(&session.server, &session.account().await, &abs);
    let state_path = client_dir()?
        .join("uploads")
        .join(format!("{}.json", fingerprint(&source, &meta)));
    let pb = if opts.progress {
        ProgressBar::new(meta.len())
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_message(filename.clone());
    let Some(lock) = lock_of(&state_path)? else {
        bail!(
            "another `vidhost upload` of {} is running; wait for it to finish",
            path.display()
        );
    };
    let job = Job {
        session,
        path: &abs,
        size: meta.len(),
        filename,
        opts,
        state_path,
        source,
        _lock: lock,
        pb,
    };
    let saved: Option<State> = std::fs::read(&job.state_path)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .filter(|s: &State| s.protocol == opts.protocol);
    if saved.is_none() {
        job.abandon_earlier().await;
    }
    let done = match opts.protocol {
        Protocol::Multipart => job.multipart(saved).await,
        Protocol::Tus => job.tus(saved).await,
    };
    let (video_id, already) = match done {
        Ok(done) => done,
        Err(e) => {
            // Refused for good: the server removed the upload (or never
            // made it), so there is nothing left to resume.
            let refused = e
                .downcast_ref::<ApiFailure>()
                .is_some_and(|f| REFUSED_FOR_GOOD.contains(&f.code.as_str()));
            if refused {
                job.forget();
            }
            return Err(e);
        }
    };
    job.pb.finish_and_clear();
    job.forget();
    Ok(Uploaded {
        watch_url: format!("{}/watch/{video_id}", session.server),
        video_id,
        already_there: already,
    })
}

/// Refusals after which the server keeps nothing of the upload.
const REFUSED_FOR_GOOD: &[&str] = &["invalid_media", "file_too_large", "unsupported_media_type"];

impl Job<'_> {
    /// Removes the upload's saved state (and its lock file, still held).
    fn forget(&self) {
        let _ = std::fs::remove_file(&self.state_path);
        let _ = std::fs::remove_file(self.state_path.with_extension("lock"));
    }

    fn save(&self, s: &State) -> anyhow::Result<()> {
        write_private(&self.state_path, &serde_json::to_vec(s)?)
    }

    /// Aborts the uploads this client left unfinished of an earlier version
    /// of the same file (it changed since: another size or mtime, so a new
    /// upload starts), which would otherwise hold their bytes on the server
    /// until they expire. Best effort: what cannot be aborted now stays for
    /// the next run, or the server's expiry.
    async fn abandon_earlier(&self) {
        let Some(dir) = self.state_path.parent() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let s = self.session;
        for entry in entries.flatten() {
            let path = entry.path();
            if path == self.state_path || path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Some(st) = std::fs::read(&path)
                .ok()
                .and_then(|raw| serde_json::from_slice::<State>(&raw).ok())
            else {
                continue;
            };
            if st.source.as_deref() != Some(self.source.as_str()) {
                continue;
            }
            // Another run is sending it (the file changed under it): not ours.
            let Ok(Some(_held)) = lock_of(&path) else {
                continue;
            };
            let aborted = match (st.protocol, &st.upload_id, &st.tus_url) {
                (Protocol::Multipart, Some(id), _) => {
                    api(s, |c, t| {
                        c.delete(format!("{}/api/v1/uploads/multipart/{id}", s.server))
                            .bearer_auth(t)
                    })
                    .await
                }
                (Protocol::Tus, _, Some(url)) => {
                    api(s, |c, t| {
                        c.delete(url)
                            .bearer_auth(t)
                            .header("Tus-Resumable", "1.0.0")
                    })
                    .await
                }
                _ => continue,
            };
            // Aborted, or gone already (completed, expired): forget it.
            let gone = match aborted {
                Ok(_) => true,
                Err(e) => e
                    .downcast_ref::<ApiFailure>()
                    .is_some_and(|f| matches!(f.status, 404 | 410)),
            };
            if gone {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(path.with_extension("lock"));
            }
        }
    }

    fn create_body(&self) -> Value {
        let mut b = json!({"filename": self.filename, "content_type": guess_type(&self.filename), "size": self.size});
        if let Some(t) = &self.opts.title {
            b["title"] = json!(t);
        }
        if let Some(v) = &self.opts.visibility {
            b["visibility"] = json!(v);
        }
        b
    }

    /// Resumes `saved` if the server still has it, else starts a new upload.
    async fn multipart(&self, saved: Option<State>) -> anyhow::Result<(String, u64)> {
        let s = self.session;
        let mut have: Vec<(u32, u64, String)> = Vec::new();
        let mut layout: Option<(String, String, u64, u32)> = None;
        if let Some(st) = saved {
            let id = st.upload_id.clone().unwrap_or_default();
            match api(s, |c, t| {
                c.get(format!("{}/api/v1/uploads/multipart/{id}", s.server))
                    .bearer_auth(t)
            })
            .await
            {
                Ok(r) => {
                    let v: Value = r.json().await?;
                    for p in v["parts"].as_array().into_iter().flatten() {
                        have.push((
                            p["part_number"].as_u64().unwrap_or(0) as u32,
                            p["size"].as_u64().unwrap_or(0),
                            p["etag"]
                                .as_str()
                                .unwrap_or("")
                                .trim_matches('"')
                                .to_owned(),
                        ));
                    }
                    let part_size = v["part_size"].as_u64().context("part_size")?;
                    let count = v["part_count"].as_u64().context("part_count")? as u32;
                    layout = Some((id, st.video_id, part_size, count));
                }
                Err(e)
                    if e.downcast_ref::<ApiFailure>()
                        .is_some_and(|f| matches!(f.status, 404 | 410)) => {}
                Err(e) => return Err(e),
            }
        }
        let (upload_id, video_id, part_size, count) = match layout {
            Some(l) => l,
            None => {
                let body = self.create_body();
                let r = api(s, |c, t| {
                    c.post(format!("{}/api/v1/uploads/multipart", s.server))
                        .bearer_auth(t)
                        .json(&body)
                })
                .await?;
                let v: Value = r.json().await?;
                let l = (
                    v["upload_id"].as_str().context("upload_id")?.to_owned(),
                    v["video_id"].as_str().context("video_id")?.to_owned(),
                    v["part_size"].as_u64().context("part_size")?,
                    v["part_count"].as_u64().context("part_count")? as u32,
                );
                self.save(&State {
                    protocol: Protocol::Multipart,
                    video_id: l.1.clone(),
                    upload_id: Some(l.0.clone()),
                    tus_url: None,
                    source: Some(self.source.clone()),
                })?;
                l
            }
        };
        let already: u64 = have.iter().map(|p| p.1).sum();
        self.pb.set_position(already);
        let mut etags: std::collections::BTreeMap<u32, String> =
            have.into_iter().map(|(n, _, e)| (n, e)).collect();
        let todo: Vec<u32> = (1..=count).filter(|n| !etags.contains_key(n)).collect();
        let upload_id = Arc::new(upload_id);
        let mut results = futures::stream::iter(todo.into_iter().map(|n| {
            let upload_id = upload_id.clone();
            async move {
                let offset = (n as u64 - 1) * part_size;
                let len = (self.size - offset).min(part_size);
                self.put_part(&upload_id, n, offset, len)
                    .await
                    .map(|etag| (n, etag))
            }
        }))
        .buffer_unordered(self.opts.parallel.max(1));
        while let Some(r) = results.next().await {
            let (n, etag) = r?;
            etags.insert(n, etag);
        }
        drop(results);
        let parts: Vec<Value> = etags
            .iter()
            .map(|(n, e)| json!({"part_number": n, "etag": e}))
            .collect();
        let body = json!({ "parts": parts });
        let done = api(s, |c, t| {
            c.post(format!(
                "{}/api/v1/uploads/multipart/{upload_id}/complete",
                s.server
            ))
            .bearer_auth(t)
            .json(&body)
        })
        .await;
        match done {
            Ok(_) => Ok((video_id, already)),
            // Completed by an earlier attempt whose answer was lost?
            Err(e)
                if e.downcast_ref::<ApiFailure>()
                    .is_some_and(|f| f.status == 404)
                    && self.is_uploaded(&video_id).await =>
            {
                Ok((video_id, already))
            }
            Err(e) => Err(e),
        }
    }

    async fn is_uploaded(&self, video_id: &str) -> bool {
        let s = self.session;
        match api(s, |c, t| {
            c.get(format!("{}/api/v1/videos/{video_id}", s.server))
                .bearer_auth(t)
        })
        .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["status"] != "awaiting_upload"),
            Err(_) => false,
        }
    }

    async fn part_url(&self, upload_id: &str, n: u32) -> anyhow::Result<String> {
        let s = self.session;
        let body = json!({ "part_numbers": [n] });
        let r = api(s, |c, t| {
            c.post(format!(
                "{}/api/v1/uploads/multipart/{upload_id}/parts",
                s.server
            ))
            .bearer_auth(t)
            .json(&body)
        })
        .await?;
        let v: Value = r.json().await?;
        Ok(v["parts"][0]["url"]
            .as_str()
            .context("part url")?
            .to_owned())
    }

    /// Streams bytes `offset..offset+len` of the file as a request body,
    /// counting them into the progress bar (and into `sent`, to undo on failure).
    async fn body(
        &self,
        offset: u64,
        len: u64,
        sent: Arc<AtomicU64>,
    ) -> anyhow::Result<reqwest::Body> {
        let mut f = tokio::fs::File::open(self.path).await?;
        f.seek(std::io::SeekFrom::Start(offset)).await?;
        let pb = self.pb.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024)
            .inspect_ok(move |c| {
                pb.inc(c.len() as u64);
                sent.fetch_add(c.len() as u64, Ordering::Relaxed);
            });
        Ok(reqwest::Body::wrap_stream(stream))
    }

    async fn put_part(
        &self,
        upload_id: &str,
        n: u32,
        offset: u64,
        len: u64,
    ) -> anyhow::Result<String> {
        let mut url = self.part_url(upload_id, n).await?;
        let mut attempt = 0;
        loop {
            let sent = Arc::new(AtomicU64::new(0));
            let body = self.body(offset, len, sent.clone()).await?;
            // Presigned URLs carry their own signature: no Authorization header.
            let res = self
                .session
                .http
                .put(&url)
                .header(header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await;
            self.pb.set_position(
                self.pb
                    .position()
                    .saturating_sub(sent.load(Ordering::Relaxed)),
            );
            let retry = match res {
                Ok(r) if r.status().is_success() => {
                    self.pb.inc(len);
                    let etag = r
                        .headers()
                        .get(header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    return Ok(etag.trim_matches('"').to_owned());
                }
                // The URL expired while we waited: ask for a fresh one.
                Ok(r) if r.status() == StatusCode::FORBIDDEN => {
                    url = self.part_url(upload_id, n).await?;
                    true
                }
                Ok(r) if retryable_status(r.status().as_u16()) => true,
                Ok(r) => return Err(ApiFailure::from_response(r).await.into()),
                Err(e) if retryable_error(&e) => true,
                Err(e) => return Err(e.into()),
            };
            attempt += 1;
            if !retry || attempt >= MAX_ATTEMPTS {
                bail!("part {n} failed {attempt} times; run the command again to resume");
            }
            self.pb.suspend(|| {
                eprintln!(
                    "part {n}: retrying (attempt {} of {MAX_ATTEMPTS})",
                    attempt + 1
                )
            });
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn tus(&self, saved: Option<State>) -> anyhow::Result<(String, u64)> {
        let s = self.session;
        let tus = |r: RequestBuilder| r.header("Tus-Resumable", "1.0.0");
        let mut found = None;
        if let Some(st) = saved.and_then(|st| st.tus_url.map(|u| (st.video_id, u))) {
            match self.tus_offset(&st.1).await {
                Ok(off) => found = Some((st.0, st.1, off)),
                Err(e)
                    if e.downcast_ref::<ApiFailure>()
                        .is_some_and(|f| matches!(f.status, 404 | 410)) => {}
                Err(e) => return Err(e),
            }
        }
        let (video_id, url, mut offset) = match found {
            Some(f) => f,
            None => {
                let mut meta = vec![
                    format!("filename {}", B64.encode(&self.filename)),
                    format!("filetype {}", B64.encode(guess_type(&self.filename))),
                ];
                if let Some(t) = &self.opts.title {
                    meta.push(format!("title {}", B64.encode(t)));
                }
                if let Some(v) = &self.opts.visibility {
                    meta.push(format!("visibility {}", B64.encode(v)));
                }
                let meta = meta.join(",");
                let r = api(s, |c, t| {
                    tus(c.post(format!("{}/api/v1/tus", s.server)))
                        .bearer_auth(t)
                        .header("Upload-Length", self.size)
                        .header("Upload-Metadata", &meta)
                })
                .await?;
                let url = r
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .context("no Location")?
                    .to_owned();
                let id = url.rsplit('/').next().unwrap_or_default().to_owned();
                self.save(&State {
                    protocol: Protocol::Tus,
                    video_id: id.clone(),
                    upload_id: None,
                    tus_url: Some(url.clone()),
                    source: Some(self.source.clone()),
                })?;
                (id, url, 0)
            }
        };
        let already = offset;
        self.pb.set_position(offset);
        let mut attempt = 0;
        while offset < self.size {
            let len = (self.size - offset).min(TUS_CHUNK);
            let sent = Arc::new(AtomicU64::new(0));
            let body = self.body(offset, len, sent.clone()).await?;
            let token = s.token().await?;
            let res = tus(s.http.patch(&url))
                .bearer_auth(&token)
                .header("Upload-Offset", offset)
                .header(header::CONTENT_TYPE, "application/offset+octet-stream")
                .header(header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await;
            match res {
                Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                    offset = r
                        .headers()
                        .get("upload-offset")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .context("Upload-Offset")?;
                    self.pb.set_position(offset);
                    attempt = 0;
                    continue;
                }
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    s.refresh().await?;
                }
                Ok(r) if r.status() == StatusCode::CONFLICT => {}
                Ok(r) if retryable_status(r.status().as_u16()) => {}
                Ok(r) => return Err(ApiFailure::from_response(r).await.into()),
                Err(e) if retryable_error(&e) => {}
                Err(e) => return Err(e.into()),
            }
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                bail!(
                    "the upload failed {attempt} times in a row; run the command again to resume"
                );
            }
            self.pb.suspend(|| {
                eprintln!(
                    "retrying at offset {offset} (attempt {} of {MAX_ATTEMPTS})",
                    attempt + 1
                )
            });
            tokio::time::sleep(backoff(attempt)).await;
            // The server is the authority on what arrived.
            offset = self.tus_offset(&url).await?;
            self.pb.set_position(offset);
        }
        Ok((video_id, already))
    }

    async fn tus_offset(&self, url: &str) -> anyhow::Result<u64> {
        let r = api(self.session, |c, t| {
            c.head(url).bearer_auth(t).header("Tus-Resumable", "1.0.0")
        })
        .await?;
        r.headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("no Upload-Offset")
    }
}
