//! Getting outputs into the object store while the ladder still runs.
//!
//! ffmpeg finishes a CMAF segment by renaming it from `.tmp` and then
//! rewrites that rendition's media playlist. [`LivePublisher::pass`] reads
//! those playlists, uploads every segment not yet uploaded and republishes
//! each playlist that grew, as an HLS `EVENT` playlist: players keep polling
//! it and may start at once. Once every rendition has a segment out, the
//! worker publishes the multivariant playlist and the video is watchable,
//! long before the ladder ends. The last pass adds `ENDLIST`.
//!
//! Segment keys are `videos/{id}/stream/{generation}/{file}`; the generation
//! is fixed per job, so a retried job overwrites what it uploaded before
//! instead of leaving a second copy.

use crate::transcode;
use crate::PipelineError;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use vidhost_store::DynStore;

pub struct LivePublisher {
    store: DynStore,
    out: PathBuf,
    /// `videos/{id}/stream/{generation}/`
    prefix: String,
    /// How many media playlists ffmpeg will write (video rungs + audio).
    expected: usize,
    target_s: u32,
    /// `EVENT` playlists republished as they grow, or only `VOD` ones at the end.
    event: bool,
    uploaded: HashSet<String>,
    /// Segments listed by the last playlist we published, per playlist.
    listed: HashMap<String, usize>,
    /// Segments an earlier run of this job already published, per playlist.
    floor: HashMap<String, usize>,
}

impl LivePublisher {
    pub fn new(
        store: DynStore,
        out: &Path,
        prefix: String,
        expected: usize,
        target_s: u32,
        event: bool,
    ) -> LivePublisher {
        LivePublisher {
            store,
            out: out.to_owned(),
            prefix,
            expected,
            target_s,
            event,
            uploaded: HashSet::new(),
            listed: HashMap::new(),
            floor: HashMap::new(),
        }
    }

    /// For a retry of a run whose playlists are already public: reads how
    /// many segments each one lists, so this run republishes a playlist only
    /// once it lists at least as many (an EVENT playlist may only grow).
    pub async fn resume_published(&mut self) {
        for i in 0..self.expected {
            let name = format!("media_{i}.m3u8");
            let key = format!("{}{name}", self.prefix);
            let Ok(body) = self.store.get(&key, None).await else {
                continue;
            };
            let chunks: Vec<_> = body.stream.collect().await;
            let bytes: Vec<u8> = chunks
                .into_iter()
                .filter_map(|c| c.ok())
                .flat_map(|c| c.to_vec())
                .collect();
            if let Some(pl) = transcode::parse_media_playlist(&String::from_utf8_lossy(&bytes)) {
                self.floor.insert(name, pl.segments.len());
            }
        }
    }

    /// Uploads what ffmpeg has finished and republishes the playlists that
    /// grew (all of them, with `ENDLIST`, when `ended`). True once every
    /// rendition has at least one segment in the store.
    pub async fn pass(&mut self, ended: bool) -> Result<bool, PipelineError> {
        let mut names = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.out).await?;
        while let Some(e) = dir.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("media_") && name.ends_with(".m3u8") {
                names.push(name);
            }
        }
        names.sort();
        let mut playable = names.len() >= self.expected;
        for name in names {
            let text = tokio::fs::read_to_string(self.out.join(&name)).await?;
            let Some(mut pl) = transcode::parse_media_playlist(&text) else {
                playable = false;
                continue;
            };
            // Listed means closed, but stay on the safe side: stop at the
            // first segment whose file is not there under its final name.
            if let Some(gap) = pl
                .segments
                .iter()
                .position(|(_, f)| !plain(f) || !self.out.join(f).is_file())
            {
                pl.segments.truncate(gap);
            }
            if pl.segments.is_empty() || !plain(&pl.init) {
                playable = false;
                continue;
            }
            self.upload(&pl.init).await?;
            for (_, f) in &pl.segments {
                self.upload(f).await?;
            }
            let grew = self.listed.get(&name) != Some(&pl.segments.len());
            let caught_up = pl.segments.len() >= self.floor.get(&name).copied().unwrap_or(0);
            if ended || (self.event && grew && caught_up) {
                let text = transcode::media_playlist(&pl, self.target_s, self.event, ended);
                put_bytes(
                    &self.store,
                    &format!("{}{name}", self.prefix),
                    text.into_bytes(),
                )
                .await?;
                self.listed.insert(name, pl.segments.len());
            }
        }
        Ok(playable)
    }

    async fn upload(&mut self, file: &str) -> Result<(), PipelineError> {
        if self.uploaded.contains(file) {
            return Ok(());
        }
        put_file(
            &self.store,
            &format!("{}{file}", self.prefix),
            &self.out.join(file),
        )
        .await?;
        self.uploaded.insert(file.to_owned());
        Ok(())
    }
}

/// A bare file name ffmpeg wrote (no path, no dot files).
fn plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub async fn put_file(store: &DynStore, key: &str, path: &Path) -> Result<(), PipelineError> {
    let f = tokio::fs::File::open(path).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).boxed();
    store.put_stream(key, stream, u64::MAX).await?;
    Ok(())
}

pub async fn put_bytes(store: &DynStore, key: &str, bytes: Vec<u8>) -> Result<(), PipelineError> {
    let once = futures::stream::once(async move { Ok(bytes.into()) }).boxed();
    store.put_stream(key, once, u64::MAX).await?;
    Ok(())
}
