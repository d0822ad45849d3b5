//! Small ranges of objects on disk, served from memory maps.
//!
//! A range request for a few KiB is dominated by per-request overhead, not
//! bytes: two trips to a blocking thread (futex wake-ups and context
//! switches) plus a copy into a fresh buffer cost more than the bytes
//! themselves. A mapped file hands out slices as `Bytes` that borrow the
//! mapping; hyper copies them once, straight from the page cache into the
//! socket, and nothing waits for a thread.
//!
//! Safe because objects are never modified in place: a put, a completed
//! upload or a replacement renames a new file (a new inode) over the key,
//! and a delete unlinks it, so a mapped inode's bytes never change or
//! shrink (which would be SIGBUS). Every use checks the mapping against a
//! fresh stat of the key (device, inode, size, mtime), so a replaced or
//! deleted object is never served from an old map. Maps of deleted files are
//! dropped on the next request for the key, on a local delete, and when they
//! go unused (so they do not pin disk space).

use crate::LocalStamp;
use bytes::Bytes;
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CAPACITY: usize = 512;
const IDLE: Duration = Duration::from_secs(30);

struct Entry {
    map: Arc<Mmap>,
    /// The mapped file, open, for `sendfile`.
    file: Arc<std::fs::File>,
    id: LocalStamp,
    /// The ETag the store gives this version of the file.
    etag: String,
    used: Instant,
}

pub(crate) struct MapCache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
    born: Instant,
    /// When idle maps were last dropped, in ms since `born` (checked on every
    /// use, so without a lock).
    trimmed_ms: AtomicU64,
}

impl Default for MapCache {
    fn default() -> Self {
        MapCache {
            entries: Mutex::default(),
            born: Instant::now(),
            trimmed_ms: AtomicU64::new(0),
        }
    }
}

/// A slice of a mapping that keeps the mapping alive.
struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

impl MapCache {
    /// `len` bytes at `start` of the file at `path`, which a fresh stat
    /// found as `m`; the caller has checked the range against `m.len()`.
    /// The same from the map of the version the store calls `etag`, if that
    /// is the one mapped: a `head` just looked at it, so no second stat.
    pub(crate) fn slice_of_version(
        &self,
        path: &Path,
        etag: &str,
        start: u64,
        len: u64,
    ) -> Option<Bytes> {
        self.trim_now_and_then(Instant::now());
        let map = {
            let mut entries = self.entries.lock().expect("not poisoned");
            let e = entries.get_mut(path).filter(|e| e.etag == etag)?;
            e.used = Instant::now();
            e.map.clone()
        };
        let end = start.checked_add(len)?;
        (len > 0 && end <= map.len() as u64).then(|| {
            Bytes::from_owner(MapSlice {
                map,
                start: start as usize,
                end: end as usize,
            })
        })
    }

    pub(crate) fn slice(
        &self,
        path: &Path,
        m: &std::fs::Metadata,
        etag: &str,
        start: u64,
        len: u64,
    ) -> std::io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let id = LocalStamp::of(m);
        let now = Instant::now();
        self.trim_now_and_then(now);
        let cached = {
            let mut entries = self.entries.lock().expect("not poisoned");
            match entries.get_mut(path) {
                Some(e) if e.id == id => {
                    e.used = now;
                    Some(e.map.clone())
                }
                Some(_) => {
                    entries.remove(path);
                    None
                }
                None => None,
            }
        };
        let map = match cached {
            Some(map) => map,
            None => {
                let f = std::fs::File::open(path)?;
                // The file may have been replaced between the stat and the open.
                if LocalStamp::of(&f.metadata()?) != id {
                    return Err(std::io::ErrorKind::NotFound.into());
                }
                self.load(path, f, id, etag, now)?.0
            }
        };
        let (start, end) = (start as usize, (start + len) as usize);
        if end > map.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from_owner(MapSlice { map, start, end }))
    }

    /// The open file of the version the store calls `etag` (`etag_of` names
    /// the version of a stat), from the cache or opened and cached now.
    /// None when the key holds another version, nothing, or an empty file.
    pub(crate) fn file_of_version(
        &self,
        path: &Path,
        etag: &str,
        etag_of: impl Fn(&std::fs::Metadata) -> String,
    ) -> Option<Arc<std::fs::File>> {
        let now = Instant::now();
        self.trim_now_and_then(now);
        {
            let mut entries = self.entries.lock().expect("not poisoned");
            if let Some(e) = entries.get_mut(path).filter(|e| e.etag == etag) {
                e.used = now;
                return Some(e.file.clone());
            }
        }
        let f = std::fs::File::open(path).ok()?;
        let m = f.metadata().ok()?;
        if etag_of(&m) != etag || m.len() == 0 {
            return None;
        }
        self.load(path, f, LocalStamp::of(&m), etag, now)
            .ok()
            .map(|x| x.1)
    }

    /// Maps the open file `f`, whose stat is `id`, and caches both.
    fn load(
        &self,
        path: &Path,
        f: std::fs::File,
        id: LocalStamp,
        etag: &str,
        now: Instant,
    ) -> std::io::Result<(Arc<Mmap>, Arc<std::fs::File>)> {
        // SAFETY: objects are never written in place once they are under
        // their key (see the module docs), so the mapped bytes do not change
        // underneath us.
        let map = Arc::new(unsafe { Mmap::map(&f)? });
        let file = Arc::new(f);
        self.insert(path, map.clone(), file.clone(), id, etag, now);
        Ok((map, file))
    }

    fn insert(
        &self,
        path: &Path,
        map: Arc<Mmap>,
        file: Arc<std::fs::File>,
        id: LocalStamp,
        etag: &str,
        now: Instant,
    ) {
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now.duration_since(e.used) < IDLE);
        }
        if entries.len() >= CAPACITY {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(p, _)| p.clone());
            if let Some(p) = oldest {
                entries.remove(&p);
            }
        }
        entries.insert(
            path.to_owned(),
            Entry {
                map,
                file,
                id,
                etag: etag.to_owned(),
                used: now,
            },
        );
    }

    /// Every `IDLE`, drops the maps that went unused that long: a map of a
    /// file deleted elsewhere (no request comes for it again) must not pin
    /// its disk space.
    fn trim_now_and_then(&self, now: Instant) {
        let now_ms = now.duration_since(self.born).as_millis() as u64;
        let last = self.trimmed_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= IDLE.as_millis() as u64
            && self
                .trimmed_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.trim();
        }
    }

    /// Drops maps that went unused for a while.
    pub(crate) fn trim(&self) {
        let now = Instant::now();
        self.entries
            .lock()
            .expect("not poisoned")
            .retain(|_, e| now.duration_since(e.used) < IDLE);
    }

    /// Drops the map of `path` and of everything under it.
    pub(crate) fn forget(&self, path: &Path) {
        self.entries
            .lock()
            .expect("not poisoned")
            .retain(|p, _| !p.starts_with(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_the_file_under_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        std::fs::write(&path, b"hello world").unwrap();
        let cache = MapCache::default();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(&cache.slice(&path, &m, "v1", 6, 5).unwrap()[..], b"world");
        assert_eq!(
            &cache.slice_of_version(&path, "v1", 0, 5).unwrap()[..],
            b"hello"
        );
        assert!(
            cache.slice_of_version(&path, "v1", 6, 6).is_none(),
            "past the end"
        );
        // Replaced the way the store replaces objects: a new file renamed over it.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"HELLO WORLD!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let m2 = std::fs::metadata(&path).unwrap();
        assert_eq!(&cache.slice(&path, &m2, "v2", 6, 6).unwrap()[..], b"WORLD!");
        assert!(
            cache.slice_of_version(&path, "v1", 0, 5).is_none(),
            "replaced"
        );
        // A stat taken before the replacement no longer matches the file.
        assert!(cache.slice(&path, &m, "v1", 0, 5).is_err());
        cache.forget(dir.path());
        assert!(cache.entries.lock().unwrap().is_empty());
    }
}
