//! Any S3-compatible store (AWS S3, MinIO, Garage, Ceph RGW), spoken to
//! through rusty-s3's signed requests over one reqwest client.
//!
//! Uploads from clients go straight to the store through presigned URLs
//! (PutObject, UploadPart); the server only creates, lists (ListParts),
//! completes and aborts. `put_stream` (server-side writes) buffers at most
//! one 8 MiB part in memory.

use crate::{
    check_key, ByteStream, MultipartLayout, ObjectBody, ObjectMeta, ObjectStore, PartInfo,
    Presigned, Result, StoreError,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2, ListParts};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::time::{Duration, SystemTime};
use url::Url;

/// Signatures on server-side requests only need to outlive the request start.
const SIGN_TTL: Duration = Duration::from_secs(600);
const PUT_PART: usize = 8 * 1024 * 1024;
/// A store that says nothing for this long is taken as down: the request
/// fails with 503 (`timeout_s=` in the storage URL sets another). S3 keeps
/// a slow CompleteMultipartUpload alive with whitespace, which counts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct S3Store {
    bucket: Bucket,
    /// The same bucket at the address clients use (`public_endpoint`).
    public_bucket: Bucket,
    prefix: String,
    creds: Credentials,
    http: reqwest::Client,
    /// How long the store may stay silent: on a request without a streamed
    /// body, for the whole answer; with one, between two reads.
    timeout: Duration,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// What an S3 error document says, as `Code: Message`: not the rest of it,
/// which can echo the request (a SignatureDoesNotMatch carries the
/// canonical request and the access key id).
fn s3_reason(xml: &str) -> String {
    let field = |name: &str| xml_field(xml, name).map(|f| f.chars().take(200).collect::<String>());
    match (field("Code"), field("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => "no error code given".to_owned(),
    }
}

/// A request that failed on the way (connection, timeout, body). Without its
/// URL: a presigned one carries the access key id and a signature that
/// stays valid for `SIGN_TTL`, and this text reaches logs, job errors and
/// `/readyz`.
fn http_error(e: reqwest::Error) -> StoreError {
    StoreError::Unreachable(e.without_url().to_string())
}

impl S3Store {
    /// `s3://bucket[/prefix]?endpoint=http://host:port&region=…&public_endpoint=…`
    pub fn from_url(raw: &str) -> Result<S3Store> {
        let u = Url::parse(raw).map_err(|e| StoreError::Config(format!("storage url: {e}")))?;
        let name = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            StoreError::Config("storage url needs a bucket: s3://BUCKET?endpoint=…".into())
        })?;
        let mut endpoint = None;
        let mut public = None;
        let mut region = std::env::var("AWS_REGION").ok();
        let mut timeout = DEFAULT_TIMEOUT;
        for (k, v) in u.query_pairs() {
            match &*k {
                "endpoint" => endpoint = Some(v.into_owned()),
                "public_endpoint" => public = Some(v.into_owned()),
                "region" => region = Some(v.into_owned()),
                "timeout_s" => {
                    timeout = v
                        .parse::<u64>()
                        .ok()
                        .filter(|t| (1..=3600).contains(t))
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            StoreError::Config(format!(
                            "storage url parameter timeout_s must be 1 to 3600 seconds, got `{v}`"
                        ))
                        })?
                }
                other => {
                    return Err(StoreError::Config(format!(
                        "unknown storage url parameter `{other}`"
                    )))
                }
            }
        }
        let region = region.unwrap_or_else(|| "us-east-1".into());
        let key = std::env::var("AWS_ACCESS_KEY_ID")
            .map_err(|_| StoreError::Config("S3 storage needs AWS_ACCESS_KEY_ID".into()))?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
            .map_err(|_| StoreError::Config("S3 storage needs AWS_SECRET_ACCESS_KEY".into()))?;
        let creds = match std::env::var("AWS_SESSION_TOKEN") {
            Ok(token) => Credentials::new_with_token(key, secret, token),
            Err(_) => Credentials::new(key, secret),
        };
        let make = |ep: &Option<String>| -> Result<Bucket> {
            let (url, style) = match ep {
                // A custom endpoint means MinIO/Garage/Ceph: path-style addressing.
                Some(e) => (e.clone(), UrlStyle::Path),
                None => (
                    format!("https://s3.{region}.amazonaws.com"),
                    UrlStyle::VirtualHost,
                ),
            };
            let url = Url::parse(&url)
                .map_err(|e| StoreError::Config(format!("endpoint `{url}`: {e}")))?;
            Bucket::new(url, style, name.to_owned(), region.clone())
                .map_err(|e| StoreError::Config(format!("bucket: {e}")))
        };
        let bucket = make(&endpoint)?;
        let public_bucket = make(&public.or(endpoint))?;
        let prefix = u.path().trim_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .read_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(S3Store {
            bucket,
            public_bucket,
            prefix: if prefix.is_empty() {
                prefix
            } else {
                prefix + "/"
            },
            creds,
            http,
            timeout,
        })
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key.trim_end_matches('/'))?;
        Ok(format!("{}{}", self.prefix, key))
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<reqwest::Body>,
    ) -> Result<reqwest::Response> {
        let empty_write = body.is_none() && matches!(method, Method::POST | Method::PUT);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.body(b);
        } else {
            // A small request and a small answer: all of it within the timeout.
            req = req.timeout(self.timeout);
            if empty_write {
                // Some servers want a Content-Length even on empty writes.
                req = req.header(reqwest::header::CONTENT_LENGTH, "0");
            }
        }
        req.send().await.map_err(http_error)
    }

    /// The body of a small GET (a listing) that must succeed.
    async fn get_text(&self, url: Url) -> Result<String> {
        Self::expect_ok(self.send(Method::GET, url, None).await?)
            .await?
            .text()
            .await
            .map_err(http_error)
    }

    async fn expect_ok(resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(match status {
            StatusCode::NOT_FOUND => StoreError::NotFound,
            StatusCode::RANGE_NOT_SATISFIABLE => StoreError::Range,
            StatusCode::BAD_REQUEST
                if text.contains("EntityTooSmall") || text.contains("InvalidPart") =>
            {
                StoreError::PartMismatch(0)
            }
            _ => unavailable(format!("S3 answered {status}: {}", s3_reason(&text))),
        })
    }

    async fn put_object(&self, key: &str, body: Bytes) -> Result<()> {
        let url = self
            .bucket
            .put_object(Some(&self.creds), key)
            .sign(SIGN_TTL);
        Self::expect_ok(self.send(Method::PUT, url, Some(body.into())).await?).await?;
        Ok(())
    }

    async fn create_upload(&self, key: &str) -> Result<String> {
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.creds), key)
            .sign(SIGN_TTL);
        let text = Self::expect_ok(self.send(Method::POST, url, None).await?)
            .await?
            .text()
            .await
            .map_err(http_error)?;
        let parsed = CreateMultipartUpload::parse_response(&text).map_err(unavailable)?;
        Ok(parsed.upload_id().to_owned())
    }

    /// UploadPart of `len` bytes (S3 wants the Content-Length even when the
    /// body is a stream).
    async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        n: u16,
        body: reqwest::Body,
        len: u64,
    ) -> Result<String> {
        let url = self
            .bucket
            .upload_part(Some(&self.creds), key, n, upload)
            .sign(SIGN_TTL);
        let req = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, len);
        let resp = Self::expect_ok(req.body(body).send().await.map_err(http_error)?).await?;
        Ok(etag_of(&resp))
    }

    async fn complete(&self, key: &str, upload: &str, etags: &[String]) -> Result<()> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload,
            etags.iter().map(|e| e.as_str()),
        );
        let url = action.sign(SIGN_TTL);
        let resp = Self::expect_ok(
            self.send(Method::POST, url, Some(action.body().into()))
                .await?,
        )
        .await?;
        // S3 may answer 200 and still report an error in the body.
        let text = resp.text().await.map_err(http_error)?;
        if text.contains("<Error>") {
            return Err(
                if text.contains("InvalidPart") || text.contains("EntityTooSmall") {
                    StoreError::PartMismatch(0)
                } else {
                    unavailable(format!("CompleteMultipartUpload failed: {text}"))
                },
            );
        }
        Ok(())
    }

    async fn abort(&self, key: &str, upload: &str) -> Result<()> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, upload)
            .sign(SIGN_TTL);
        match Self::expect_ok(self.send(Method::DELETE, url, None).await?).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn presigned(url: Url, method: &'static str) -> Presigned {
        Presigned {
            url: url.to_string(),
            method,
            headers: Vec::new(),
        }
    }
}

fn etag_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_default()
}

fn meta_from(resp: &reqwest::Response, size: u64) -> ObjectMeta {
    let last_modified = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    ObjectMeta {
        size,
        last_modified,
        etag: etag_of(resp),
    }
}

fn total_size(resp: &reqwest::Response) -> Option<u64> {
    if let Some(cr) = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        return cr.rsplit('/').next().and_then(|t| t.parse().ok());
    }
    resp.content_length()
}

#[async_trait]
impl ObjectStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn ping(&self) -> Result<()> {
        let url = self.bucket.head_bucket(Some(&self.creds)).sign(SIGN_TTL);
        let resp = self.send(Method::HEAD, url, None).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(unavailable(format!(
                "HeadBucket {} answered {}",
                self.bucket.name(),
                resp.status()
            )))
        }
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream<'_>, max_size: u64) -> Result<u64> {
        let key = self.full_key(key)?;
        let mut buf = BytesMut::with_capacity(PUT_PART);
        let mut total = 0u64;
        let mut upload: Option<String> = None;
        let mut etags = Vec::new();
        let result: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                if total > max_size {
                    return Err(StoreError::TooLarge(max_size));
                }
                buf.extend_from_slice(&chunk);
                if buf.len() >= PUT_PART {
                    if upload.is_none() {
                        upload = Some(self.create_upload(&key).await?);
                    }
                    let part = buf.split_to(PUT_PART).freeze();
                    let (n, len) = (etags.len() as u16 + 1, part.len() as u64);
                    let id = upload.as_deref().expect("set");
                    etags.push(self.upload_part(&key, id, n, part.into(), len).await?);
                }
            }
            match &upload {
                None => self.put_object(&key, buf.split().freeze()).await,
                Some(id) => {
                    if !buf.is_empty() {
                        let part = buf.split().freeze();
                        let (n, len) = (etags.len() as u16 + 1, part.len() as u64);
                        etags.push(self.upload_part(&key, id, n, part.into(), len).await?);
                    }
                    self.complete(&key, id, &etags).await
                }
            }
        }
        .await;
        if let Err(e) = result {
            if let Some(id) = &upload {
                let _ = self.abort(&key, id).await;
            }
            return Err(e);
        }
        Ok(total)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let key = self.full_key(key)?;
        let url = self
            .bucket
            .head_object(Some(&self.creds), &key)
            .sign(SIGN_TTL);
        let resp = self.send(Method::HEAD, url, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = Self::expect_ok(resp).await?;
        let size = resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some(meta_from(&resp, size)))
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<ObjectBody> {
        let key = self.full_key(key)?;
        let url = self
            .bucket
            .get_object(Some(&self.creds), &key)
            .sign(SIGN_TTL);
        let mut req = self.http.get(url);
        if let Some((a, b)) = range {
            req = req.header(reqwest::header::RANGE, format!("bytes={a}-{b}"));
        }
        let resp = Self::expect_ok(req.send().await.map_err(http_error)?).await?;
        if range.is_some() && resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(unavailable("the store ignored a Range request"));
        }
        let meta = meta_from(&resp, total_size(&resp).unwrap_or(0));
        let stream = resp
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url()))
            .boxed();
        Ok(ObjectBody { meta, stream })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = self.full_key(key)?;
        let url = self
            .bucket
            .delete_object(Some(&self.creds), &key)
            .sign(SIGN_TTL);
        match Self::expect_ok(self.send(Method::DELETE, url, None).await?).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn move_object(&self, from: &str, to: &str) -> Result<()> {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        // What may stay as it is in the copy source (a URL path).
        const KEEP: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'/')
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let (src, dest) = (self.full_key(from)?, self.full_key(to)?);
        let source = format!(
            "/{}/{}",
            self.bucket.name(),
            utf8_percent_encode(&src, KEEP)
        );
        // CopyObject is a PUT of the destination with the source as a
        // (signed) header and no body.
        let mut copy = self.bucket.put_object(Some(&self.creds), &dest);
        copy.headers_mut()
            .insert("x-amz-copy-source", source.as_str());
        let url = copy.sign(SIGN_TTL);
        let req = self
            .http
            .put(url)
            .header("x-amz-copy-source", source.as_str())
            .header(reqwest::header::CONTENT_LENGTH, "0");
        let resp = Self::expect_ok(req.send().await.map_err(http_error)?).await?;
        // S3 may answer 200 and still report an error in the body.
        let text = resp.text().await.map_err(http_error)?;
        if text.contains("<Error>") {
            return Err(if text.contains("NoSuchKey") {
                StoreError::NotFound
            } else {
                unavailable(format!("CopyObject failed: {text}"))
            });
        }
        self.delete(from).await
    }

    /// Every object under `prefix`, and every incomplete multipart upload
    /// there (one a form upload or a worker's output left when the store
    /// failed under it, which no row names).
    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let full = self.full_key(prefix)?;
        self.abort_uploads_under(&full, None).await?;
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            action.with_prefix(full.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGN_TTL);
            let text = self.get_text(url).await?;
            let page = ListObjectsV2::parse_response(&text).map_err(unavailable)?;
            futures::stream::iter(page.contents.into_iter().map(|o| async move {
                // Listed with encoding-type=url: keys come back percent-encoded.
                let key = percent_encoding::percent_decode_str(&o.key)
                    .decode_utf8_lossy()
                    .into_owned();
                let url = self
                    .bucket
                    .delete_object(Some(&self.creds), &key)
                    .sign(SIGN_TTL);
                match Self::expect_ok(self.send(Method::DELETE, url, None).await?).await {
                    Ok(_) | Err(StoreError::NotFound) => Ok(()),
                    Err(e) => Err(e),
                }
            }))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    fn presign_put(&self, key: &str, len: u64, expires: Duration) -> Option<Presigned> {
        let key = self.full_key(key).ok()?;
        let len = len.to_string();
        let mut put = self.public_bucket.put_object(Some(&self.creds), &key);
        put.headers_mut().insert("content-length", len.as_str());
        // Not listed in the answer's `headers`: every HTTP client sends it
        // by itself for a body of that size (browsers refuse to let scripts
        // set it), and a second, hand-set copy could only get in the way.
        Some(Self::presigned(put.sign(expires), "PUT"))
    }

    async fn create_multipart(&self, key: &str, _layout: MultipartLayout) -> Result<String> {
        let key = self.full_key(key)?;
        self.create_upload(&key).await
    }

    fn presign_part(
        &self,
        key: &str,
        upload: &str,
        part_number: u32,
        expires: Duration,
    ) -> Option<Presigned> {
        let key = self.full_key(key).ok()?;
        let n = u16::try_from(part_number).ok()?;
        let url = self
            .public_bucket
            .upload_part(Some(&self.creds), &key, n, upload)
            .sign(expires);
        Some(Self::presigned(url, "PUT"))
    }

    async fn write_part(
        &self,
        key: &str,
        upload: &str,
        layout: MultipartLayout,
        part_number: u32,
        body: ByteStream<'_>,
    ) -> Result<PartInfo> {
        // Not on the multipart request path (clients PUT parts to S3
        // directly); tus uses it. The body streams through with the part's
        // length (S3 wants a Content-Length), never gathered in memory here.
        let key = self.full_key(key)?;
        let n = u16::try_from(part_number).map_err(|_| StoreError::PartMismatch(part_number))?;
        let (_, size) = layout.part_span(part_number).ok_or(StoreError::PartSize {
            part_number,
            expected: 0,
            got: 0,
        })?;
        // The request outlives this call's borrow of `body` only in type:
        // it is sent and answered before this returns.
        let (tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(2);
        let request = self.upload_part(&key, upload, n, reqwest::Body::wrap_stream(rx), size);
        let feed = async move {
            let mut tx = tx;
            let mut body = body;
            while let Some(chunk) = body.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        };
        // Once S3 has answered (maybe early, with an error, on a connection
        // it keeps open), the feed is dropped rather than left waiting on a
        // channel nobody reads.
        let mut request = std::pin::pin!(request);
        let etag = tokio::select! {
            r = &mut request => r,
            () = feed => request.await,
        }?;
        Ok(PartInfo {
            part_number,
            size,
            etag,
        })
    }

    async fn list_parts(&self, key: &str, upload: &str) -> Result<Vec<PartInfo>> {
        let key = self.full_key(key)?;
        let mut parts = Vec::new();
        let mut marker: Option<u16> = None;
        loop {
            let mut action = self.bucket.list_parts(Some(&self.creds), &key, upload);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let url = action.sign(SIGN_TTL);
            let text = self.get_text(url).await?;
            let page = ListParts::parse_response(&text).map_err(unavailable)?;
            parts.extend(page.parts.iter().map(|p| PartInfo {
                part_number: p.number as u32,
                size: p.size,
                etag: p.etag.trim_matches('"').to_owned(),
            }));
            match page.next_part_number_marker {
                Some(m)
                    if marker != Some(m)
                        && !page.parts.is_empty()
                        && text.contains("<IsTruncated>true") =>
                {
                    marker = Some(m)
                }
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.part_number);
        Ok(parts)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        layout: MultipartLayout,
        parts: &[PartInfo],
    ) -> Result<u64> {
        let stored = self.list_parts(key, upload).await?;
        let mut etags = Vec::new();
        for n in 1..=layout.part_count() {
            let (_, expected) = layout.part_span(n).expect("n in range");
            let have = stored
                .iter()
                .find(|p| p.part_number == n)
                .ok_or(StoreError::PartMismatch(n))?;
            if have.size != expected {
                return Err(StoreError::PartSize {
                    part_number: n,
                    expected,
                    got: have.size,
                });
            }
            match parts.iter().find(|p| p.part_number == n) {
                Some(c) if c.etag == have.etag => etags.push(format!("\"{}\"", have.etag)),
                _ => return Err(StoreError::PartMismatch(n)),
            }
        }
        if let Some(extra) = parts
            .iter()
            .find(|p| p.part_number == 0 || p.part_number > layout.part_count())
        {
            return Err(StoreError::PartMismatch(extra.part_number));
        }
        self.complete(&self.full_key(key)?, upload, &etags).await?;
        Ok(layout.total_size)
    }

    async fn abort_multipart(&self, key: &str, upload: &str) -> Result<()> {
        let key = self.full_key(key)?;
        self.abort(&key, upload).await
    }

    /// Aborts our incomplete multipart uploads started longer than `idle`
    /// ago under `videos/`: what a process killed mid-write (a form upload,
    /// a worker's output) never aborted. An upload's expiry is fixed at its
    /// creation and a worker's step has a timeout, so none that old belongs
    /// to anything live.
    async fn sweep_leftovers(&self, idle: Duration) -> Result<usize> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(idle).map_err(|e| StoreError::Config(e.to_string()))?;
        self.abort_uploads_under(&format!("{}videos/", self.prefix), Some(cutoff))
            .await
    }
}

impl S3Store {
    /// Aborts the incomplete multipart uploads under the full key prefix
    /// `full` (those started before `started_before`, if given), found with
    /// ListMultipartUploads (by hand: rusty-s3 has no action for it).
    /// Returns how many it aborted.
    async fn abort_uploads_under(
        &self,
        full: &str,
        started_before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<usize> {
        let mut marker: Option<(String, String)> = None;
        let mut removed = 0;
        // At most 1,000 pages of 1,000 a call; the next sweep goes on.
        for _ in 0..1000 {
            // ListObjectsV2's request without its own parameters.
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            let q = action.query_mut();
            q.remove("list-type");
            q.remove("encoding-type");
            q.insert("uploads", "");
            q.insert("prefix", full.to_owned());
            if let Some((key, id)) = &marker {
                q.insert("key-marker", key.clone());
                q.insert("upload-id-marker", id.clone());
            }
            let url = action.sign(SIGN_TTL);
            let text = self.get_text(url).await?;
            for block in text.split("<Upload>").skip(1) {
                let (Some(key), Some(id), Some(started)) = (
                    xml_field(block, "Key"),
                    xml_field(block, "UploadId"),
                    xml_field(block, "Initiated"),
                ) else {
                    continue;
                };
                let due = started_before.is_none_or(|cutoff| {
                    chrono::DateTime::parse_from_rfc3339(&started).is_ok_and(|t| t < cutoff)
                });
                if due {
                    self.abort(&xml_unescape(&key), &xml_unescape(&id)).await?;
                    removed += 1;
                }
            }
            let truncated = xml_field(&text, "IsTruncated").as_deref() == Some("true");
            match (
                xml_field(&text, "NextKeyMarker"),
                xml_field(&text, "NextUploadIdMarker"),
            ) {
                (Some(k), Some(u)) if truncated => {
                    marker = Some((xml_unescape(&k), xml_unescape(&u)))
                }
                _ => break,
            }
        }
        Ok(removed)
    }
}

/// The text of the first `<name>` element in `xml`.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].to_owned())
}

/// Our keys and S3's upload ids are plain ASCII, but an XML answer may
/// still escape some of it.
fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod error_text_tests {
    use super::{http_error, s3_reason};

    #[tokio::test]
    async fn failed_requests_do_not_carry_their_signed_url() {
        // Nothing listens on port 1: the request fails on the way.
        let url = "http://127.0.0.1:1/bucket/key?X-Amz-Credential=AKIDEXAMPLE%2F20261204&X-Amz-Signature=deadbeef";
        let e = reqwest::Client::new().get(url).send().await.unwrap_err();
        assert!(
            e.to_string().contains("X-Amz-Signature"),
            "reqwest shows the url: {e}"
        );
        let text = http_error(e).to_string();
        assert!(
            !text.contains("X-Amz") && !text.contains("AKIDEXAMPLE"),
            "{text}"
        );
    }

    #[test]
    fn error_documents_are_reduced_to_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                   <Message>The request signature we calculated does not match</Message>\
                   <AWSAccessKeyId>AKIDEXAMPLE</AWSAccessKeyId><CanonicalRequest>GET /b/k X-Amz-Credential=AKIDEXAMPLE</CanonicalRequest></Error>";
        assert_eq!(
            s3_reason(xml),
            "SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(s3_reason("<html>bad gateway</html>"), "no error code given");
    }
}
