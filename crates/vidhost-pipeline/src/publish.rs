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

/// What each rendition's finished segments weigh, with the audio's added
/// (ffmpeg writes `media_{i}.m3u8` per rung, then the audio's): the
/// multivariant playlist's BANDWIDTH and AVERAGE-BANDWIDTH.
pub async fn measure(
    out: &Path,
    rungs: usize,
    audio: bool,
    target_s: f64,
) -> Result<Vec<transcode::Bandwidth>, PipelineError> {
    let weigh = |i: usize| async move {
        let text = tokio::fs::read_to_string(out.join(format!("media_{i}.m3u8"))).await?;
        let pl = transcode::parse_media_playlist(&text).ok_or_else(|| {
            PipelineError::Transient(format!("media_{i}.m3u8 has no init segment"))
        })?;
        let mut sizes = Vec::with_capacity(pl.segments.len());
        for (d, f) in &pl.segments {
            sizes.push((*d, tokio::fs::metadata(out.join(f)).await?.len()));
        }
        Ok::<_, PipelineError>(transcode::Bandwidth::of(&sizes, target_s))
    };
    let audio = if audio {
        Some(weigh(rungs).await?)
    } else {
        None
    };
    let mut all = Vec::with_capacity(rungs);
    for i in 0..rungs {
        all.push(weigh(i).await?.with(audio));
    }
    Ok(all)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ffmpeg_playlist(n: usize) -> String {
        let mut s =
            String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-MAP:URI=\"init-stream0.m4s\"\n");
        for i in 1..=n {
            s.push_str(&format!("#EXTINF:2.000000,\nchunk-stream0-{i:05}.m4s\n"));
        }
        s
    }

    fn write_run(out: &Path, n: usize) {
        std::fs::write(out.join("init-stream0.m4s"), b"init").unwrap();
        for i in 1..=n {
            std::fs::write(out.join(format!("chunk-stream0-{i:05}.m4s")), b"seg").unwrap();
        }
        std::fs::write(out.join("media_0.m3u8"), ffmpeg_playlist(n)).unwrap();
    }

    async fn published(store: &DynStore) -> String {
        let body = store.get("v/g1/media_0.m3u8", None).await.unwrap();
        let chunks: Vec<_> = body.stream.collect().await;
        String::from_utf8(
            chunks
                .into_iter()
                .flat_map(|c| c.unwrap().to_vec())
                .collect(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn event_playlists_only_grow_even_across_a_retry() {
        let root = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(
            vidhost_store::disk::DiskStore::open(root.path().join("objects"))
                .await
                .unwrap(),
        );
        let out = root.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        // A segment still being written (".tmp") is not listed by ffmpeg yet.
        std::fs::write(out.join("chunk-stream0-00004.m4s.tmp"), b"half").unwrap();
        write_run(&out, 3);
        let mut first = LivePublisher::new(store.clone(), &out, "v/g1/".into(), 1, 2, true);
        assert!(
            first.pass(false).await.unwrap(),
            "playable with one segment"
        );
        let text = published(&store).await;
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !text.contains("ENDLIST"));
        assert_eq!(text.matches("chunk-stream0-").count(), 3, "{text}");

        // The worker dies; the retry starts over in a fresh directory.
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        write_run(&out, 1);
        let mut retry = LivePublisher::new(store.clone(), &out, "v/g1/".into(), 1, 2, true);
        retry.resume_published().await;
        retry.pass(false).await.unwrap();
        assert_eq!(published(&store).await, text, "not shortened to 1 segment");
        write_run(&out, 4);
        retry.pass(false).await.unwrap();
        let grown = published(&store).await;
        assert!(grown.starts_with(text.trim_end_matches('\n')), "{grown}");
        assert!(grown.contains("chunk-stream0-00004.m4s"));
        retry.pass(true).await.unwrap();
        assert!(published(&store).await.ends_with("#EXT-X-ENDLIST\n"));
    }
}
