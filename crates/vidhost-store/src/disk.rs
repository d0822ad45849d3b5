//! Objects as files under one root directory.
//!
//! Layout: `{root}/{key}` for objects, `{root}/.tmp/` for objects being
//! written (renamed into place when whole), `{root}/.multipart/{id}/` for a
//! multipart upload: one sparse `data` file that every part is written
//! into at its own offset (created with the first bytes; the layout comes
//! from the catalog with every call), and `parts/{n}` records written only
//! after the part's bytes are synced. `complete` therefore verifies and
//! renames; it never copies the bytes a second time.

use crate::mapped::MapCache;
use crate::{
    check_key, ByteStream, MultipartLayout, ObjectBody, ObjectMeta, ObjectStore, PartInfo,
    Presigned, Result, StoreError,
};
use crate::{LocalStamp, WriteEnd, Written};
use async_trait::async_trait;
use futures::StreamExt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;
use vidhost_core::domain::{is_id, new_id};

/// tokio's File hands writes of up to this size to a blocking thread at once.
const WRITE_BUF: usize = 2 * 1024 * 1024;
const READ_CHUNK: usize = 256 * 1024;
/// Ranges (and whole objects) up to this size are served from a memory map.
const SMALL_READ: u64 = 1024 * 1024;

pub struct DiskStore {
    root: PathBuf,
    maps: MapCache,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PartRecord {
    size: u64,
    etag: String,
}

impl DiskStore {
    pub async fn open(root: PathBuf) -> Result<DiskStore> {
        for dir in [root.clone(), root.join(".tmp"), root.join(".multipart")] {
            fs::create_dir_all(&dir).await?;
        }
        Ok(DiskStore {
            root,
            maps: MapCache::default(),
        })
    }

    fn object_path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn staging(&self, upload: &str) -> Result<PathBuf> {
        if !is_id(upload) {
            return Err(StoreError::NotFound);
        }
        Ok(self.root.join(".multipart").join(upload))
    }

    /// Opens the staging file of `upload` for writing, creating it on first
    /// use (so creating an upload costs no I/O) with the declared length.
    ///
    /// The file is sparse: disk blocks are taken as bytes arrive. It was
    /// once preallocated whole (`fallocate`), which let anyone allowed to
    /// upload reserve the whole disk for a day by declaring a huge size and
    /// sending one byte.
    async fn open_staging(&self, upload: &str, layout: MultipartLayout) -> Result<File> {
        let dir = self.staging(upload)?;
        fs::create_dir_all(dir.join("parts")).await?;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("data"))
            .await?;
        if f.metadata().await?.len() != layout.total_size {
            f.set_len(layout.total_size).await?;
        }
        Ok(f)
    }

    /// Writes a small file so that it is either whole or absent after a crash.
    async fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.root.join(".tmp").join(new_id());
        let mut f = File::create(&tmp).await?;
        f.write_all(bytes).await?;
        f.sync_all().await?;
        drop(f);
        fs::rename(&tmp, path).await?;
        sync_dir(path.parent().expect("has parent")).await
    }
}

/// How long a part write waits for another write of the same part before
/// answering `StoreError::Busy`. A client that gave up on a PUT and sends
/// it again usually closed the first connection, which ends the first
/// write at once. A completion does not wait: a part still being written
/// is not one the client was told it has.
const PART_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes a write lock on bytes `start..start + len` (`len` 0: to the end
/// of the file and beyond) of an open staging file, waiting at most
/// `wait`. An open-file-description lock (Linux `F_OFD_SETLK`): it
/// belongs to this descriptor, so two requests of one process exclude each
/// other (POSIX record locks would not), and it goes when the descriptor
/// is closed, a killed process included.
///
/// Part writes lock their own span, so two PUTs of one part never write
/// at once (their bytes would interleave under the second one's ETag),
/// while different parts go on in parallel. A completion locks the whole
/// file, so no part is written while it checks the parts and renames the
/// file into the original: a write that opened the staging file before
/// the rename would otherwise land in the original through its descriptor.
async fn lock_span(f: &File, start: u64, len: u64, wait: Duration) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let until = std::time::Instant::now() + wait;
    loop {
        // SAFETY: `flock` is plain data, zeroed then filled in; `fd` is open
        // for as long as `f` is borrowed.
        let r = unsafe {
            let mut l: libc::flock = std::mem::zeroed();
            l.l_type = libc::F_WRLCK as libc::c_short;
            l.l_whence = libc::SEEK_SET as libc::c_short;
            l.l_start = start as libc::off_t;
            l.l_len = len as libc::off_t;
            libc::fcntl(fd, libc::F_OFD_SETLK, &l)
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EACCES) if std::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(libc::EAGAIN | libc::EACCES) => return Err(StoreError::Busy),
            _ => return Err(e.into()),
        }
    }
}

/// Whether `f` is still the file at `path`: a completion may have renamed
/// it into the original, or an abort removed it, between our `open` and
/// our lock.
async fn still_at(f: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let ours = f.metadata().await?;
    match fs::metadata(path).await {
        Ok(m) => Ok(m.ino() == ours.ino() && m.dev() == ours.dev()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes a file or a whole directory; false if it was already gone.
async fn remove_entry(path: &Path, dir: bool) -> Result<bool> {
    let r = if dir {
        fs::remove_dir_all(path).await
    } else {
        fs::remove_file(path).await
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).await?.sync_all().await?;
    Ok(())
}

fn meta_of(m: &std::fs::Metadata) -> ObjectMeta {
    use std::os::unix::fs::MetadataExt;
    let modified = m.modified().unwrap_or(UNIX_EPOCH);
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // Objects are written once and never modified in place, so inode, mtime
    // and size identify the content.
    ObjectMeta {
        size: m.len(),
        last_modified: modified,
        etag: format!("{:x}-{:x}-{:x}", m.ino(), nanos, m.len()),
    }
}

/// Starts the write-out of a body's bytes while the body is still arriving.
///
/// Linux leaves written pages in the page cache until the caller's
/// `fdatasync` (background write-back starts only at
/// `dirty_background_ratio` of RAM, gigabytes here), so with large parts the
/// disk idled while bytes arrived and then took all of them at the end.
/// Every [`Writeback::EVERY`] bytes this calls
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` on what came before, which
/// queues the pages for the disk without waiting for it. The caller still
/// syncs; this only makes that sync short.
struct Writeback {
    /// Where the body started in the file.
    start: u64,
    /// Bytes of the body already handed to the disk.
    handed: u64,
    file: Option<std::sync::Arc<std::fs::File>>,
}

impl Writeback {
    const EVERY: u64 = 8 * 1024 * 1024;

    fn new(start: u64) -> Writeback {
        Writeback {
            start,
            handed: 0,
            file: None,
        }
    }

    /// Called after `written` bytes of the body went to `f`.
    async fn wrote(&mut self, f: &mut File, written: u64) -> Result<()> {
        if written - self.handed < Self::EVERY {
            return Ok(());
        }
        // Written by now, not just queued on tokio's blocking thread.
        f.flush().await?;
        let file = match &self.file {
            Some(file) => file.clone(),
            None => self
                .file
                .insert(std::sync::Arc::new(f.try_clone().await?.into_std().await))
                .clone(),
        };
        let (offset, len) = (self.start + self.handed, written - self.handed);
        self.handed = written;
        tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd;
            // Best effort (the caller's sync is what makes bytes durable), so
            // the result is not looked at. SAFETY: a plain syscall on an open
            // descriptor; no memory is passed.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    offset as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        })
        .await
        .map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// The ETag of a part: the first 128 bits of the BLAKE3 hash of its bytes,
/// in hex (the shape of S3's MD5 ETags; what it is made of is the store's
/// business — S3's own part ETags are not MD5s under SSE-KMS, nor MinIO's
/// under encryption — so clients treat them as opaque). MD5 was the cost
/// that capped uploads here: ~540 MB/s per core, more than half of the
/// server's CPU in bench/ (a) once the disk wrote ~930 MB/s; BLAKE3 hashes
/// several GB/s per core.
fn etag_of(h: &blake3::Hasher) -> String {
    hex::encode(&h.finalize().as_bytes()[..16])
}

/// Copies `body` into `f` (positioned at `start` already), hashing as it
/// goes into `hash` if given; stops with an error as soon as more than
/// `limit` bytes arrive.
async fn copy_body(
    f: &mut File,
    start: u64,
    mut body: ByteStream<'_>,
    limit: u64,
    mut hash: Option<&mut blake3::Hasher>,
) -> Result<u64> {
    let mut written = 0u64;
    let mut writeback = Writeback::new(start);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(StoreError::TooLarge(limit));
        }
        if let Some(h) = hash.as_deref_mut() {
            h.update(&chunk);
        }
        f.write_all(&chunk).await?;
        writeback.wrote(f, written).await?;
    }
    f.flush().await?;
    Ok(written)
}

#[async_trait]
impl ObjectStore for DiskStore {
    fn kind(&self) -> &'static str {
        "disk"
    }

    async fn ping(&self) -> Result<()> {
        let probe = self.root.join(".tmp").join(format!("ping-{}", new_id()));
        fs::write(&probe, b"ok")
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.root.display())))?;
        fs::remove_file(&probe).await?;
        Ok(())
    }

    async fn put_stream(&self, key: &str, body: ByteStream<'_>, max_size: u64) -> Result<u64> {
        let dest = self.object_path(key)?;
        let tmp = self.root.join(".tmp").join(new_id());
        let result = async {
            let mut f = File::create(&tmp).await?;
            f.set_max_buf_size(WRITE_BUF);
            let n = copy_body(&mut f, 0, body, max_size, None).await?;
            f.sync_data().await?;
            drop(f);
            let parent = dest.parent().expect("keys have a parent");
            fs::create_dir_all(parent).await?;
            fs::rename(&tmp, &dest).await?;
            sync_dir(parent).await?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        // One stat, on this thread: a trip to a blocking thread costs more
        // than the call (the same trade nginx makes).
        match std::fs::metadata(self.object_path(key)?) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(&m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<ObjectBody> {
        let path = self.object_path(key)?;
        let m = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(StoreError::NotFound),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let (start, len) = match range {
            None => (0, m.len()),
            Some((a, b)) if a <= b && b < m.len() => (a, b - a + 1),
            Some(_) => return Err(StoreError::Range),
        };
        if len <= SMALL_READ {
            // Small: a slice of the mapped file, no thread hop (see mapped.rs).
            let meta = meta_of(&m);
            let bytes = match self.maps.slice(&path, &m, &meta.etag, start, len) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound)
                }
                other => other?,
            };
            return Ok(ObjectBody {
                meta,
                stream: futures::stream::once(async move { Ok(bytes) }).boxed(),
            });
        }
        // Large: streamed in chunks by tokio's file reader.
        let mut f = match File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let meta = meta_of(&f.metadata().await?);
        if meta.size != m.len() {
            // Replaced between the stat and the open: the range was for the old one.
            return Err(StoreError::NotFound);
        }
        if start > 0 {
            f.seek(SeekFrom::Start(start)).await?;
        }
        let stream = ReaderStream::with_capacity(f.take(len), READ_CHUNK).boxed();
        Ok(ObjectBody { meta, stream })
    }

    async fn get_seen(
        &self,
        key: &str,
        meta: &ObjectMeta,
        range: Option<(u64, u64)>,
    ) -> Result<ObjectBody> {
        let (start, len) = match range {
            None => (0, meta.size),
            Some((a, b)) if a <= b => (a, b - a + 1),
            Some(_) => return Err(StoreError::Range),
        };
        if len <= SMALL_READ {
            let path = self.object_path(key)?;
            if let Some(bytes) = self.maps.slice_of_version(&path, &meta.etag, start, len) {
                return Ok(ObjectBody {
                    meta: meta.clone(),
                    stream: futures::stream::once(async move { Ok(bytes) }).boxed(),
                });
            }
        }
        self.get(key, range).await
    }

    fn local_file(&self, key: &str, meta: &ObjectMeta) -> Option<std::sync::Arc<std::fs::File>> {
        let path = self.object_path(key).ok()?;
        self.maps
            .file_of_version(&path, &meta.etag, |m| meta_of(m).etag)
    }

    fn local_stamp(&self, key: &str) -> Option<LocalStamp> {
        let m = std::fs::metadata(self.object_path(key).ok()?).ok()?;
        m.is_file().then(|| LocalStamp::of(&m))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.object_path(key)?;
        self.maps.forget(&path);
        let removed = fs::remove_file(&path).await;
        self.maps.forget(&path);
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn move_object(&self, from: &str, to: &str) -> Result<()> {
        let (src, dest) = (self.object_path(from)?, self.object_path(to)?);
        let parent = dest.parent().expect("keys have a parent");
        fs::create_dir_all(parent).await?;
        match fs::rename(&src, &dest).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            other => other?,
        }
        self.maps.forget(&src);
        self.maps.forget(&dest);
        sync_dir(parent).await?;
        if let Some(p) = src.parent().filter(|p| *p != parent) {
            sync_dir(p).await?;
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let dir = self.object_path(prefix.trim_end_matches('/'))?;
        self.maps.forget(&dir);
        let mut removed = fs::remove_dir_all(&dir).await;
        // A writer racing the removal (a worker publishing the video being
        // deleted) can put a file into a directory between its emptying and
        // its removal: go over it again. (The worker also removes what it
        // wrote once it sees the video gone.)
        for _ in 0..8 {
            match &removed {
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    removed = fs::remove_dir_all(&dir).await;
                }
                _ => break,
            }
        }
        // Requests racing the removal may have mapped a file again.
        self.maps.forget(&dir);
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn presign_put(&self, _key: &str, _len: u64, _expires: Duration) -> Option<Presigned> {
        None
    }

    async fn create_multipart(&self, _key: &str, _layout: MultipartLayout) -> Result<String> {
        Ok(new_id())
    }

    fn presign_part(
        &self,
        _key: &str,
        _upload: &str,
        _n: u32,
        _expires: Duration,
    ) -> Option<Presigned> {
        None
    }

    async fn write_part(
        &self,
        _key: &str,
        upload: &str,
        layout: MultipartLayout,
        part_number: u32,
        body: ByteStream<'_>,
    ) -> Result<PartInfo> {
        let (offset, expected) = layout.part_span(part_number).ok_or(StoreError::PartSize {
            part_number,
            expected: 0,
            got: 0,
        })?;
        let dir = self.staging(upload)?;
        let mut f = self.open_staging(upload, layout).await?;
        lock_span(&f, offset, expected, PART_LOCK_WAIT).await?;
        if !still_at(&f, &dir.join("data")).await? {
            // Completed or aborted meanwhile.
            return Err(StoreError::NotFound);
        }
        // A part PUT again: its record goes (durably) before its bytes are
        // overwritten, so a second PUT that breaks off leaves the part
        // missing, never the old ETag over a mix of old and new bytes.
        let record = dir.join("parts").join(part_number.to_string());
        match fs::remove_file(&record).await {
            Ok(()) => sync_dir(&dir.join("parts")).await?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        f.set_max_buf_size(WRITE_BUF);
        f.seek(SeekFrom::Start(offset)).await?;
        let mut hash = blake3::Hasher::new();
        let got = match copy_body(&mut f, offset, body, expected, Some(&mut hash)).await {
            Err(StoreError::TooLarge(_)) => {
                return Err(StoreError::PartSize {
                    part_number,
                    expected,
                    got: expected + 1,
                })
            }
            other => other?,
        };
        if got != expected {
            return Err(StoreError::PartSize {
                part_number,
                expected,
                got,
            });
        }
        f.sync_data().await?;
        let etag = etag_of(&hash);
        let rec = serde_json::to_vec(&PartRecord {
            size: got,
            etag: etag.clone(),
        })
        .expect("serializable");
        self.write_atomic(&record, &rec).await?;
        Ok(PartInfo {
            part_number,
            size: got,
            etag,
        })
    }

    async fn list_parts(&self, _key: &str, upload: &str) -> Result<Vec<PartInfo>> {
        let dir = self.staging(upload)?.join("parts");
        let mut entries = match fs::read_dir(&dir).await {
            Ok(e) => e,
            // Nothing written yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let rec: PartRecord = serde_json::from_slice(&fs::read(entry.path()).await?)
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            parts.push(PartInfo {
                part_number: n,
                size: rec.size,
                etag: rec.etag,
            });
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
        let dir = self.staging(upload)?;
        // Held until the data file is renamed: no part is written meanwhile.
        let _lock = match OpenOptions::new().write(true).open(dir.join("data")).await {
            Ok(f) => {
                lock_span(&f, 0, 0, Duration::ZERO).await?;
                Some(f)
            }
            // Nothing staged: no parts either (the check below says which).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let stored = self.list_parts(key, upload).await?;
        for n in 1..=layout.part_count() {
            let have = stored.iter().find(|p| p.part_number == n);
            let claimed = parts.iter().find(|p| p.part_number == n);
            match (have, claimed) {
                (Some(h), Some(c)) if h.etag == c.etag => {}
                _ => return Err(StoreError::PartMismatch(n)),
            }
        }
        if let Some(extra) = parts
            .iter()
            .find(|p| p.part_number == 0 || p.part_number > layout.part_count())
        {
            return Err(StoreError::PartMismatch(extra.part_number));
        }
        let dest = self.object_path(key)?;
        let parent = dest.parent().expect("keys have a parent");
        fs::create_dir_all(parent).await?;
        fs::rename(dir.join("data"), &dest).await?;
        sync_dir(parent).await?;
        fs::remove_dir_all(&dir).await?;
        Ok(layout.total_size)
    }

    fn random_access(&self) -> bool {
        true
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.object_path(key).ok().filter(|p| p.is_file())
    }

    async fn write_at(
        &self,
        upload: &str,
        layout: MultipartLayout,
        offset: u64,
        mut body: ByteStream<'_>,
        limit: u64,
    ) -> Result<Written> {
        let mut f = self.open_staging(upload, layout).await?;
        f.set_max_buf_size(WRITE_BUF);
        f.seek(SeekFrom::Start(offset)).await?;
        let mut written = 0u64;
        let mut writeback = Writeback::new(offset);
        let mut end = WriteEnd::Complete;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    end = WriteEnd::Interrupted(e);
                    break;
                }
            };
            let room = (limit - written) as usize;
            let take = chunk.len().min(room);
            f.write_all(&chunk[..take]).await?;
            written += take as u64;
            writeback.wrote(&mut f, written).await?;
            if take < chunk.len() {
                end = WriteEnd::Overflow;
                break;
            }
        }
        f.flush().await?;
        f.sync_data().await?;
        Ok(Written {
            bytes: written,
            end,
        })
    }

    async fn commit_staged(&self, key: &str, upload: &str) -> Result<u64> {
        let dir = self.staging(upload)?;
        let dest = self.object_path(key)?;
        let parent = dest.parent().expect("keys have a parent");
        fs::create_dir_all(parent).await?;
        let size = fs::metadata(dir.join("data")).await?.len();
        fs::rename(dir.join("data"), &dest).await?;
        sync_dir(parent).await?;
        fs::remove_dir_all(&dir).await?;
        Ok(size)
    }

    async fn sweep_leftovers(&self, idle: Duration) -> Result<usize> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(idle)
            .unwrap_or(UNIX_EPOCH);
        // The newest modification among `paths` (those that exist).
        async fn newest(paths: &[PathBuf]) -> Option<std::time::SystemTime> {
            let mut t = None;
            for p in paths {
                if let Ok(m) = fs::symlink_metadata(p).await.and_then(|m| m.modified()) {
                    t = t.max(Some(m));
                }
            }
            t
        }
        let mut removed = 0;
        let mut staging = fs::read_dir(self.root.join(".multipart")).await?;
        while let Some(e) = staging.next_entry().await? {
            let dir = e.path();
            let touched = newest(&[dir.clone(), dir.join("data"), dir.join("parts")]).await;
            if touched.is_some_and(|t| t < cutoff) && remove_entry(&dir, true).await? {
                removed += 1;
            }
        }
        let mut tmp = fs::read_dir(self.root.join(".tmp")).await?;
        while let Some(e) = tmp.next_entry().await? {
            let path = e.path();
            if newest(std::slice::from_ref(&path))
                .await
                .is_some_and(|t| t < cutoff)
                && remove_entry(&path, e.file_type().await?.is_dir()).await?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn abort_multipart(&self, _key: &str, upload: &str) -> Result<()> {
        match fs::remove_dir_all(self.staging(upload)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::TryStreamExt;

    fn body(parts: Vec<&'static [u8]>) -> ByteStream<'static> {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p)))).boxed()
    }

    async fn read_all(s: &DiskStore, key: &str, range: Option<(u64, u64)>) -> Vec<u8> {
        let b = s.get(key, range).await.unwrap();
        let chunks: Vec<Bytes> = b.stream.try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn put_get_range_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStore::open(dir.path().into()).await.unwrap();
        assert_eq!(
            s.put_stream("videos/a/original", body(vec![b"hello ", b"world"]), 100)
                .await
                .unwrap(),
            11
        );
        assert_eq!(
            read_all(&s, "videos/a/original", None).await,
            b"hello world"
        );
        assert_eq!(
            read_all(&s, "videos/a/original", Some((6, 10))).await,
            b"world"
        );
        assert!(matches!(
            s.get("videos/a/original", Some((6, 11))).await,
            Err(StoreError::Range)
        ));
        s.delete_prefix("videos/a/").await.unwrap();
        assert!(s.head("videos/a/original").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn write_at_appends_in_place_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStore::open(dir.path().into()).await.unwrap();
        let id = s
            .create_multipart(
                "videos/d/original",
                MultipartLayout {
                    total_size: 8,
                    part_size: 8,
                },
            )
            .await
            .unwrap();
        let l8 = MultipartLayout {
            total_size: 8,
            part_size: 8,
        };
        let w = s.write_at(&id, l8, 0, body(vec![b"abc"]), 8).await.unwrap();
        assert!(matches!((w.bytes, w.end), (3, WriteEnd::Complete)));
        let w = s
            .write_at(&id, l8, 3, body(vec![b"defgh", b"ij"]), 5)
            .await
            .unwrap();
        assert!(matches!((w.bytes, w.end), (5, WriteEnd::Overflow)));
        assert_eq!(s.commit_staged("videos/d/original", &id).await.unwrap(), 8);
        assert_eq!(read_all(&s, "videos/d/original", None).await, b"abcdefgh");
    }

    #[tokio::test]
    async fn oversized_put_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStore::open(dir.path().into()).await.unwrap();
        let err = s
            .put_stream("videos/b/original", body(vec![b"0123456789"]), 5)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(5)));
        assert!(s.head("videos/b/original").await.unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn multipart_out_of_order_then_complete() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStore::open(dir.path().into()).await.unwrap();
        let layout = MultipartLayout {
            total_size: 10,
            part_size: 4,
        };
        let id = s
            .create_multipart("videos/c/original", layout)
            .await
            .unwrap();
        let p3 = s
            .write_part("", &id, layout, 3, body(vec![b"89"]))
            .await
            .unwrap();
        let bad = s
            .write_part("", &id, layout, 1, body(vec![b"012"]))
            .await
            .unwrap_err();
        assert!(matches!(
            bad,
            StoreError::PartSize {
                expected: 4,
                got: 3,
                ..
            }
        ));
        let p1 = s
            .write_part("", &id, layout, 1, body(vec![b"01", b"23"]))
            .await
            .unwrap();
        assert!(matches!(
            s.complete_multipart("videos/c/original", &id, layout, &[p1.clone(), p3.clone()])
                .await,
            Err(StoreError::PartMismatch(2))
        ));
        let p2 = s
            .write_part("", &id, layout, 2, body(vec![b"4567"]))
            .await
            .unwrap();
        assert_eq!(
            s.list_parts("", &id).await.unwrap(),
            vec![p1.clone(), p2.clone(), p3.clone()]
        );
        assert_eq!(
            s.complete_multipart("videos/c/original", &id, layout, &[p1, p2, p3])
                .await
                .unwrap(),
            10
        );
        assert_eq!(read_all(&s, "videos/c/original", None).await, b"0123456789");
        assert!(!dir.path().join(".multipart").join(&id).exists());
    }
}
