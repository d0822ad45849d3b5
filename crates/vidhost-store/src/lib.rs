//! The object store: every byte of every video lives behind [`ObjectStore`].
//!
//! Two implementations: [`disk::DiskStore`] (the zero-config default) and
//! [`s3::S3Store`] (any S3-compatible server). Direct uploads differ by
//! nature: S3 takes bytes from clients through presigned URLs, so its
//! `presign_*` return `Some`; on disk they return `None` and the HTTP layer
//! receives the bytes itself and hands them to `put_stream` / `write_part`.

pub mod disk;
mod error;
mod mapped;
pub mod s3;

pub use error::StoreError;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
/// A body being received or sent; request bodies may borrow the request.
pub type ByteStream<'a> = BoxStream<'a, std::io::Result<Bytes>>;

#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub size: u64,
    pub last_modified: SystemTime,
    /// Strong validator, without quotes.
    pub etag: String,
}

/// One version of an object kept as a file on this machine: objects are
/// never modified in place (a new version is a new file renamed over the
/// key), so device, inode, size and mtime tell versions apart. Cheap to
/// take (one stat) and to compare, for checks made on every request.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct LocalStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl LocalStamp {
    pub fn of(m: &std::fs::Metadata) -> LocalStamp {
        use std::os::unix::fs::MetadataExt;
        LocalStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        }
    }
}

pub struct ObjectBody {
    pub meta: ObjectMeta,
    pub stream: ByteStream<'static>,
}

/// A request the client makes straight to the store.
#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: String,
    pub method: &'static str,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
}

/// The shape of a multipart upload, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MultipartLayout {
    pub total_size: u64,
    pub part_size: u64,
}

impl MultipartLayout {
    pub fn part_count(&self) -> u32 {
        if self.total_size == 0 {
            return 1;
        }
        self.total_size.div_ceil(self.part_size) as u32
    }

    /// Byte offset and exact length of part `n` (1-based), or None when out of range.
    pub fn part_span(&self, n: u32) -> Option<(u64, u64)> {
        if n == 0 || n > self.part_count() {
            return None;
        }
        let offset = (n as u64 - 1) * self.part_size;
        Some((offset, (self.total_size - offset).min(self.part_size)))
    }
}

/// How a streamed write into staging ended.
#[derive(Debug)]
pub enum WriteEnd {
    /// The body ended.
    Complete,
    /// The body had more bytes than allowed; the allowed ones were written.
    Overflow,
    /// The body broke off (the client went away); what came was written.
    Interrupted(std::io::Error),
}

/// Bytes written (and synced) by `write_at`, and how the body ended.
#[derive(Debug)]
pub struct Written {
    pub bytes: u64,
    pub end: WriteEnd,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    async fn ping(&self) -> Result<()>;

    /// Streams `body` into `key`; the object appears whole or not at all.
    /// Fails with `TooLarge` (and stores nothing) past `max_size` bytes.
    async fn put_stream(&self, key: &str, body: ByteStream<'_>, max_size: u64) -> Result<u64>;
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;
    /// `range` is inclusive `(first, last)`; None means the whole object.
    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<ObjectBody>;
    /// `get` right after a `head` that returned `meta`: a store may skip
    /// looking the object up again when it still holds that very version.
    async fn get_seen(
        &self,
        key: &str,
        _meta: &ObjectMeta,
        range: Option<(u64, u64)>,
    ) -> Result<ObjectBody> {
        self.get(key, range).await
    }
    /// The open file that holds the version `meta` of `key`, when the store
    /// keeps objects as files on this machine (so they can be `sendfile`d).
    fn local_file(&self, _key: &str, _meta: &ObjectMeta) -> Option<std::sync::Arc<std::fs::File>> {
        None
    }
    /// The version `key` holds now, when the store keeps objects as files on
    /// this machine: one stat, to check on each request that a file opened
    /// earlier (see [`ObjectStore::local_file`]) is still the one at `key`.
    fn local_stamp(&self, _key: &str) -> Option<LocalStamp> {
        None
    }
    async fn delete(&self, key: &str) -> Result<()>;
    async fn delete_prefix(&self, prefix: &str) -> Result<()>;
    /// Moves the object at `from` to `to`, replacing what `to` held: on disk
    /// a rename (no copy of the bytes), on S3 a server-side CopyObject, then
    /// DeleteObject of `from`. NotFound when `from` holds nothing.
    async fn move_object(&self, from: &str, to: &str) -> Result<()>;

    /// A URL for the client to PUT the whole object to, when the store takes
    /// bytes directly: exactly `len` bytes (the length is part of what is
    /// signed, so the store refuses a PUT of any other size, even one made
    /// after the upload completed, while the URL is still valid).
    fn presign_put(&self, key: &str, len: u64, expires: Duration) -> Option<Presigned>;
    /// Starts a multipart upload; returns the store's handle for it. (On disk
    /// this does no I/O: the staging file appears with the first bytes.)
    async fn create_multipart(&self, key: &str, layout: MultipartLayout) -> Result<String>;
    fn presign_part(
        &self,
        key: &str,
        upload: &str,
        part_number: u32,
        expires: Duration,
    ) -> Option<Presigned>;
    /// Receives one part through the server (stores that don't presign). The
    /// part is durable when this returns.
    async fn write_part(
        &self,
        key: &str,
        upload: &str,
        layout: MultipartLayout,
        part_number: u32,
        body: ByteStream<'_>,
    ) -> Result<PartInfo>;
    async fn list_parts(&self, key: &str, upload: &str) -> Result<Vec<PartInfo>>;
    /// Joins the parts into the object. `parts` are the client's claims; every
    /// part of `layout` must be present, with the stored ETag and size.
    async fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        layout: MultipartLayout,
        parts: &[PartInfo],
    ) -> Result<u64>;
    async fn abort_multipart(&self, key: &str, upload: &str) -> Result<()>;

    /// Removes what writes left behind and nothing refers to any more,
    /// untouched for longer than `idle` (a process killed mid-write, a
    /// completion killed between moving the bytes and tidying up, a part
    /// that arrived just as its upload was aborted). Uploads expire, and
    /// their sweep removes their staging, so staging idle for longer than
    /// the expiry belongs to no live upload. Returns how many it removed.
    async fn sweep_leftovers(&self, idle: Duration) -> Result<usize> {
        let _ = idle;
        Ok(0)
    }

    /// A path to read the object from directly, where it is a local file
    /// (ffmpeg then reads it in place instead of a downloaded copy).
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether `write_at` and `commit_staged` work here (local disk): bytes
    /// can then be appended in place at any offset of a multipart upload.
    fn random_access(&self) -> bool {
        false
    }
    /// Writes `body` at `offset` of the upload's staging data, at most
    /// `limit` bytes, and syncs them before returning.
    async fn write_at(
        &self,
        _upload: &str,
        _layout: MultipartLayout,
        _offset: u64,
        _body: ByteStream<'_>,
        _limit: u64,
    ) -> Result<Written> {
        Err(StoreError::Config(
            "this store has no random-access staging".into(),
        ))
    }
    /// Makes the staging data of a fully written upload the object `key`.
    async fn commit_staged(&self, _key: &str, _upload: &str) -> Result<u64> {
        Err(StoreError::Config(
            "this store has no random-access staging".into(),
        ))
    }
}

pub type DynStore = Arc<dyn ObjectStore>;

/// Opens the store named by `url` (`file:///path` or `s3://bucket?...`).
pub async fn open(url: &str) -> Result<DynStore> {
    if let Some(path) = url.strip_prefix("file://") {
        Ok(Arc::new(disk::DiskStore::open(path.into()).await?))
    } else if url.starts_with("s3://") {
        Ok(Arc::new(s3::S3Store::from_url(url)?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported storage url `{url}`"
        )))
    }
}

/// Reads the first `n` bytes of an object (magic-byte checks).
pub async fn read_head(store: &dyn ObjectStore, key: &str, n: u64) -> Result<Vec<u8>> {
    use futures::TryStreamExt;
    let Some(meta) = store.head(key).await? else {
        return Err(StoreError::NotFound);
    };
    if meta.size == 0 {
        return Ok(Vec::new());
    }
    let body = store.get(key, Some((0, n.min(meta.size) - 1))).await?;
    let chunks: Vec<Bytes> = body.stream.try_collect().await?;
    Ok(chunks.concat())
}

/// Keys are ours (`videos/{id}/…`); refuse anything that could escape a prefix.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!("invalid object key `{key}`")))
    }
}
