//! The job worker: claims a job (a lease with a heartbeat), runs the steps
//! probe → validate → thumbnails → transcode → publish, and records the
//! outcome: done, a retry with exponential backoff kept in the row
//! (`run_at`), or dead letters. Every step overwrites its own outputs, so a
//! retried job never duplicates or orphans objects.

use crate::ladder::{self, Rung};
use crate::probe::{self, MediaInfo};
use crate::process::Tools;
use crate::publish::{self, put_bytes, put_file, LivePublisher};
use crate::transcode;
use crate::PipelineError;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vidhost_core::domain::{new_id, VideoStatus};
use vidhost_core::time::now_ms;
use vidhost_core::Config;
use vidhost_db::{DynCatalog, Job, Outputs, Rendition};
use vidhost_store::DynStore;

pub const STEPS: &[&str] = &["probe", "thumbnails", "transcode", "publish"];

pub struct Pipeline {
    pub config: Config,
    pub db: DynCatalog,
    pub store: DynStore,
    pub tools: Tools,
}

/// How often each worker process looks for abandoned work directories.
const WORK_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// A work directory this young is never taken for abandoned.
const WORK_DIR_GRACE: Duration = Duration::from_secs(600);

fn original_key(id: &str) -> String {
    format!("videos/{id}/original")
}

impl Pipeline {
    /// Runs `n` workers until `shutdown` fires, and beside them, at start
    /// and every `WORK_SWEEP_EVERY`, the sweep of abandoned work directories.
    pub async fn run(self: Arc<Self>, n: usize, shutdown: CancellationToken) {
        let workers: Vec<_> = (0..n)
            .map(|_| tokio::spawn(self.clone().work(shutdown.clone())))
            .collect();
        let sweeper = {
            let (me, stop) = (self.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    match me.sweep_work_dirs().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "abandoned work directories removed"),
                        Err(e) => tracing::warn!(error = %e, "sweeping work directories"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(WORK_SWEEP_EVERY) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            })
        };
        for w in workers {
            let _ = w.await;
        }
        sweeper.abort();
    }

    /// Removes the work directories of this data dir that no running job
    /// owns: what a worker killed mid-job (kill -9, a crash, a lost machine
    /// coming back) left there after its job went on elsewhere or ended. A
    /// directory is `{job}-a{attempt}`, and a retry's claim counts a new
    /// attempt, so only the directory of the attempt that is running stays.
    /// Directories younger than `WORK_DIR_GRACE` stay too: their job may
    /// have been claimed (here or by another process on this data dir) after
    /// the running jobs were read.
    pub async fn sweep_work_dirs(&self) -> Result<usize, PipelineError> {
        let root = self.config.data_dir.join("work");
        let running: std::collections::HashSet<String> = self
            .db
            .list_jobs(Some("running"), 1_000_000)
            .await?
            .into_iter()
            .map(|j| format!("{}-a{}", j.id, j.attempts))
            .collect();
        let mut entries = match tokio::fs::read_dir(&root).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut removed = 0;
        while let Some(e) = entries.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            if running.contains(&name) {
                continue;
            }
            let young = e
                .metadata()
                .await
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().map_or(true, |age| age < WORK_DIR_GRACE))
                .unwrap_or(true);
            if young {
                continue;
            }
            let gone = match e.file_type().await {
                Ok(t) if t.is_dir() => tokio::fs::remove_dir_all(e.path()).await,
                _ => tokio::fs::remove_file(e.path()).await,
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn work(self: Arc<Self>, shutdown: CancellationToken) {
        let owner = new_id();
        while !shutdown.is_cancelled() {
            let claimed = self.db.claim_job(&owner, now_ms(), self.lease_ms()).await;
            match claimed {
                Ok(Some(job)) => self.process(&owner, job, &shutdown).await,
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        self.config.processing.lease_s as i64 * 1000
    }

    async fn process(&self, owner: &str, job: Job, shutdown: &CancellationToken) {
        let started = Instant::now();
        if job.attempts > job.max_attempts {
            // A worker died with it too often (each claim counts an attempt).
            let msg = job
                .last_error
                .clone()
                .unwrap_or_else(|| "processing was interrupted too often".into());
            self.bury(owner, &job, &msg).await;
            return;
        }
        let cancel = shutdown.child_token();
        let heartbeat = tokio::spawn(heartbeat(
            self.db.clone(),
            job.id.clone(),
            job.video_id.clone(),
            owner.to_owned(),
            self.lease_ms(),
            cancel.clone(),
        ));
        let mut result = self.steps(&job, owner, &cancel).await;
        heartbeat.abort();
        if let Ok(None) = self.db.get_video(&job.video_id).await {
            // Deleted while we worked, whatever became of the work: the
            // delete removed what was stored then, this what we wrote since
            // (a delete after the last cancel check, during publishing, is
            // noticed only here).
            let _ = self
                .store
                .delete_prefix(&format!("videos/{}/", job.video_id))
                .await;
            result = Err(PipelineError::Cancelled);
        }
        let kind = job.kind.as_str();
        let outcome = match result {
            Ok(()) => {
                // `set_video_ready` marked the job done with the video.
                tracing::info!(video = %job.video_id, secs = started.elapsed().as_secs_f64(), "processed");
                "completed"
            }
            Err(PipelineError::Cancelled) if shutdown.is_cancelled() => {
                // The process is stopping (a deploy, say): the job goes
                // back to the queue for the next worker at once, rather
                // than stay `running` until its lease lapses, and the
                // interruption costs it no attempt.
                let now = now_ms();
                match self.db.release_job(&job.id, owner, now, now).await {
                    Ok(true) => {
                        tracing::info!(video = %job.video_id, "stopping: processing handed back to the queue")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(video = %job.video_id, error = %e, "stopping: the job stays leased until its lease lapses")
                    }
                }
                "cancelled"
            }
            Err(PipelineError::Cancelled) => "cancelled",
            Err(PipelineError::StoreUnreachable(msg)) => {
                // Not the job's fault: it waits for the store (a retry
                // interval) without spending an attempt, however long the
                // outage; another step's failure still counts.
                let now = now_ms();
                let wait = self.config.processing.retry_base_s as i64 * 1000;
                tracing::warn!(video = %job.video_id, error = %msg, "the object store does not answer; processing waits for it");
                let _ = self.db.release_job(&job.id, owner, now, now + wait).await;
                "retry"
            }
            Err(e @ (PipelineError::Invalid(_) | PipelineError::ToolFailed { .. })) => {
                self.bury(owner, &job, &e.to_string()).await;
                "dead"
            }
            Err(e) => {
                let msg = e.to_string();
                if job.attempts >= job.max_attempts {
                    self.bury(
                        owner,
                        &job,
                        &format!("gave up after {} attempts: {msg}", job.attempts),
                    )
                    .await;
                    "dead"
                } else {
                    let delay = self
                        .config
                        .processing
                        .retry_base_s
                        .saturating_mul(1 << (job.attempts - 1).clamp(0, 16))
                        * 1000;
                    tracing::warn!(video = %job.video_id, attempt = job.attempts, error = %msg, "processing failed; will retry");
                    let _ = self
                        .db
                        .fail_job(
                            &job.id,
                            owner,
                            &msg,
                            Some(now_ms() + delay as i64),
                            now_ms(),
                        )
                        .await;
                    "retry"
                }
            }
        };
        metrics::counter!("vidhost_jobs_total", "kind" => kind.to_owned(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("vidhost_job_duration_seconds", "kind" => kind.to_owned())
            .record(started.elapsed().as_secs_f64());
    }

    /// Dead letters: the job stops, the video says why.
    async fn bury(&self, owner: &str, job: &Job, msg: &str) {
        tracing::warn!(video = %job.video_id, error = %msg, "processing failed for good");
        if !matches!(
            self.db.fail_job(&job.id, owner, msg, None, now_ms()).await,
            Ok(true)
        ) {
            // No longer ours (the lease lapsed and another worker runs it):
            // its outputs are theirs now.
            return;
        }
        let _ = self
            .db
            .set_video_failed(&job.video_id, &for_owner(msg))
            .await;
        // Segments of this run stay only if they are a complete, published stream.
        let generation = generation_of(job);
        if let Ok(Some(v)) = self.db.get_video(&job.video_id).await {
            let mut outputs = v.outputs.clone();
            if outputs.generation.as_deref() == Some(&generation) && outputs.partial {
                outputs.stream = false;
                outputs.partial = false;
                outputs.generation = None;
                // Objects go only once the catalog no longer points at them.
                if self
                    .db
                    .set_video_outputs(&job.video_id, &v.renditions, &outputs)
                    .await
                    .is_ok()
                {
                    let _ = self
                        .store
                        .delete_prefix(&format!("videos/{}/stream/", job.video_id))
                        .await;
                }
            } else if outputs.generation.as_deref() != Some(&generation) {
                let _ = self
                    .store
                    .delete_prefix(&format!("videos/{}/stream/{generation}/", job.video_id))
                    .await;
            }
        }
    }

    async fn steps(
        &self,
        job: &Job,
        owner: &str,
        cancel: &CancellationToken,
    ) -> Result<(), PipelineError> {
        let id = &job.video_id;
        let cfg = &self.config.processing;
        let timeout = Duration::from_secs(cfg.step_timeout_s);
        let work = self.work_dir(job).await?;
        let _cleanup = RemoveOnDrop(work.clone());
        let before = self.db.get_video(id).await?;
        let mut outputs = before
            .as_ref()
            .map(|v| v.outputs.clone())
            .unwrap_or_default();
        // A run taken over from a dead worker goes on from the progress shown.
        let shown = before
            .as_ref()
            .filter(|v| v.status == VideoStatus::Processing)
            .map(|v| v.progress);
        let progress = Progress::new(self.db.clone(), id.clone(), shown.unwrap_or(0.0));
        let generation = generation_of(job);
        // A stream that is already complete keeps playing until the new one
        // is; a first run (or a retry of one) shows its stream as it grows.
        let complete = outputs.stream && !outputs.partial;
        let previous = outputs
            .generation
            .clone()
            .filter(|g| *g != generation && complete);
        // A retry of a run that already finished its stream (e.g. only the
        // cleanup after it failed) republishes it whole, never as EVENT.
        let live = !complete;

        progress.set("probe", 0.0).await?;
        let src = self.source(id, &work).await?;
        let probe_args: Vec<String> = [
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(crate::transcode::source_input(&src))
        .collect();
        let json = match self
            .tools
            .run(&self.tools.ffprobe, &probe_args, timeout, cancel, |_| {})
            .await
        {
            Err(PipelineError::ToolFailed { stderr, .. }) => {
                return Err(PipelineError::Invalid(format!(
                    "the file is not readable media: {stderr}"
                )))
            }
            other => other?,
        };
        let info: MediaInfo = probe::parse(&json)?;
        let v = probe::validate(&info)?.clone();
        let (dw, dh) = v.display_size();
        self.db
            .set_video_media(id, info.duration_s, dw as i64, dh as i64)
            .await?;

        // The poster goes out at once: a thumbnail while the rest is made.
        check(cancel)?;
        progress.set("thumbnails", 0.02).await?;
        let poster = self.poster(&src, &info, &work, timeout, cancel).await?;
        put_file(&self.store, &format!("videos/{id}/poster.jpg"), &poster).await?;
        let renditions_before = before.map(|v| v.renditions).unwrap_or_default();
        outputs.poster = true;
        self.db
            .set_video_outputs(id, &renditions_before, &outputs)
            .await?;

        // One ffmpeg for the ladder, its segments out as they are finished;
        // then one for the storyboard sprites.
        check(cancel)?;
        progress.set("transcode", 0.05).await?;
        let rungs = ladder::plan(&info, &v, &cfg.ladder);
        let has_audio = info.audio.is_some();
        let renditions: Vec<Rendition> = rungs
            .iter()
            .map(|r| Rendition {
                name: r.name.clone(),
                width: r.width as i64,
                height: r.height as i64,
                bitrate: r.bitrate as i64,
                frame_rate: r.frame_rate,
            })
            .collect();
        let out = work.join("out");
        let storyboard = transcode::Storyboard::plan(&info, &v);
        let sb_dir = work.join("storyboard");
        tokio::fs::create_dir_all(&sb_dir).await?;
        let args = transcode::ladder_args(&src, &info, &v, &rungs, cfg, &out);
        let stream_prefix = format!("videos/{id}/stream/");
        let mut publisher = LivePublisher::new(
            self.store.clone(),
            &out,
            format!("{stream_prefix}{generation}/"),
            rungs.len() + usize::from(has_audio),
            cfg.segment_duration_s,
            live,
        );
        if outputs.partial && outputs.generation.as_deref() == Some(&generation) {
            // Players may already follow this run's EVENT playlists: a retry
            // must not publish them shorter than they were.
            publisher.resume_published().await;
        }
        let total_us = (info.duration_s * 1e6).max(1.0);
        let (tx, mut rx) = tokio::sync::watch::channel(0u64);
        let reporter = {
            let progress = progress.clone();
            async move {
                while rx.changed().await.is_ok() {
                    let done = (*rx.borrow() as f64 / total_us).clamp(0.0, 1.0);
                    let _ = progress.set("transcode", 0.05 + 0.8 * done).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let ladder_cancel = cancel.child_token();
        let (finished_tx, mut finished) = tokio::sync::watch::channel(false);
        let run = async {
            let r = self
                .tools
                .run(
                    &self.tools.ffmpeg,
                    &args,
                    timeout,
                    &ladder_cancel,
                    move |us| {
                        let _ = tx.send(us);
                    },
                )
                .await;
            let _ = finished_tx.send(true);
            r
        };
        let publishing = async {
            let mut announced = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(400)) => {}
                    _ = finished.changed() => return Ok(()),
                }
                let playable = match publisher.pass(false).await {
                    Ok(p) => p,
                    Err(e) => {
                        ladder_cancel.cancel();
                        return Err(e);
                    }
                };
                // ffmpeg writes the media playlists before its first
                // master playlist: wait for both.
                let playable = playable && out.join("master.m3u8").is_file();
                if live && playable && !announced {
                    announced = true;
                    let announce = async {
                        self.publish_master(
                            &stream_prefix,
                            &generation,
                            &rungs,
                            has_audio,
                            &out,
                            None,
                        )
                        .await?;
                        outputs.stream = true;
                        outputs.partial = true;
                        outputs.generation = Some(generation.clone());
                        self.db.set_video_outputs(id, &renditions, &outputs).await?;
                        tracing::info!(video = %id, "first segments out: playable");
                        Ok::<_, PipelineError>(())
                    };
                    if let Err(e) = announce.await {
                        ladder_cancel.cancel();
                        return Err(e);
                    }
                }
            }
        };
        let (ran, published, _) = tokio::join!(run, publishing, reporter);
        published?;
        ran?;
        publisher.pass(true).await?;
        check(cancel)?;
        progress.set("transcode", 0.86).await?;
        self.tools
            .run(
                &self.tools.ffmpeg,
                &transcode::storyboard_args(&src, &v, &storyboard, &sb_dir),
                timeout,
                cancel,
                |_| {},
            )
            .await?;
        let mp4 = work.join("video.mp4");
        self.tools
            .run(
                &self.tools.ffmpeg,
                &transcode::mp4_args(&out, &mp4),
                timeout,
                cancel,
                |_| {},
            )
            .await?;

        check(cancel)?;
        progress.set("publish", 0.92).await?;
        put_file(&self.store, &format!("videos/{id}/mp4"), &mp4).await?;
        let mut sprites = tokio::fs::read_dir(&sb_dir).await?;
        let mut sprite_count = 0;
        while let Some(e) = sprites.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            put_file(
                &self.store,
                &format!("videos/{id}/storyboard/{name}"),
                &e.path(),
            )
            .await?;
            sprite_count += 1;
        }
        // A picture shorter than one thumbnail's interval (a single frame)
        // makes no sprite: then there is no storyboard to point at.
        if sprite_count > 0 {
            let vtt = storyboard.vtt(info.duration_s).into_bytes();
            put_bytes(&self.store, &format!("videos/{id}/storyboard.vtt"), vtt).await?;
        }
        // The manifests switch to the new generation last, with the rates
        // the segments really have.
        let measured =
            publish::measure(&out, rungs.len(), has_audio, cfg.segment_duration_s as f64).await?;
        self.publish_master(
            &stream_prefix,
            &generation,
            &rungs,
            has_audio,
            &out,
            Some(&measured),
        )
        .await?;
        let mpd = tokio::fs::read_to_string(out.join("manifest.mpd")).await?;
        put_bytes(
            &self.store,
            &format!("{stream_prefix}manifest.mpd"),
            transcode::rewrite_mpd(&mpd, &generation).into_bytes(),
        )
        .await?;
        let outputs = Outputs {
            stream: true,
            mp4: true,
            poster: true,
            storyboard: sprite_count > 0,
            generation: Some(generation.clone()),
            partial: false,
        };
        self.db
            .set_video_ready(id, &renditions, &outputs, &job.id, owner, now_ms())
            .await?;
        if let Some(old) = previous {
            // The video is ready and no manifest names `old` any more; if this
            // fails, the job must not run again and rewind a finished video.
            if let Err(e) = self
                .store
                .delete_prefix(&format!("{stream_prefix}{old}/"))
                .await
            {
                tracing::warn!(video = %id, generation = %old, error = %e, "removing an old generation failed; it stays as an orphan");
            }
        }
        Ok(())
    }

    /// The poster: the `thumbnail` filter's choice, and if that is near
    /// black, a second choice among brighter frames. The check and the
    /// second choice are best effort: if they fail, the first poster stays.
    async fn poster(
        &self,
        src: &Path,
        info: &MediaInfo,
        work: &Path,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, PipelineError> {
        let ffmpeg = |args: Vec<String>| async move {
            self.tools
                .run(&self.tools.ffmpeg, &args, timeout, cancel, |_| {})
                .await
        };
        // Only a cancellation stops a best-effort step.
        let best_effort = |r: Result<Vec<u8>, PipelineError>| match r {
            Err(PipelineError::Cancelled) => Err(PipelineError::Cancelled),
            other => Ok(other.ok()),
        };
        let poster = work.join("poster.jpg");
        ffmpeg(transcode::poster_args(src, info, &poster, false)).await?;
        if !poster.is_file() {
            ffmpeg(transcode::poster_at(0.0, src, &poster, false)).await?;
        }
        if !poster.is_file() {
            return Err(PipelineError::Invalid(
                "no picture could be taken from the video".into(),
            ));
        }
        let luma = best_effort(ffmpeg(transcode::luma_args(&poster)).await)?
            .and_then(|out| transcode::parse_luma(&out));
        if luma.is_some_and(|l| l < transcode::DARK_LUMA) {
            let dark = work.join("poster-dark.jpg");
            tokio::fs::rename(&poster, &dark).await?;
            let again =
                best_effort(ffmpeg(transcode::poster_args(src, info, &poster, true)).await)?;
            if again.is_none() || !poster.is_file() {
                tokio::fs::rename(&dark, &poster).await?;
            }
        }
        Ok(poster)
    }

    /// A fresh directory for this attempt; earlier attempts' directories of
    /// the same job (left by a worker that was killed) are removed first.
    async fn work_dir(&self, job: &Job) -> Result<PathBuf, PipelineError> {
        let root = self.config.data_dir.join("work");
        tokio::fs::create_dir_all(&root).await?;
        let mine = format!("{}-a{}", job.id, job.attempts);
        let mut entries = tokio::fs::read_dir(&root).await?;
        while let Some(e) = entries.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            let earlier = name
                .strip_prefix(job.id.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("-a"));
            if earlier {
                let _ = tokio::fs::remove_dir_all(e.path()).await;
            }
        }
        let work = root.join(mine);
        tokio::fs::create_dir_all(work.join("out")).await?;
        Ok(work)
    }

    /// The multivariant playlist, pointed at `generation`.
    async fn publish_master(
        &self,
        stream_prefix: &str,
        generation: &str,
        rungs: &[Rung],
        audio: bool,
        out: &Path,
        measured: Option<&[transcode::Bandwidth]>,
    ) -> Result<(), PipelineError> {
        let master = tokio::fs::read_to_string(out.join("master.m3u8")).await?;
        put_bytes(
            &self.store,
            &format!("{stream_prefix}master.m3u8"),
            transcode::rewrite_master(&master, generation, rungs, audio, measured).into_bytes(),
        )
        .await
    }

    /// The original as a local file: in place on disk, downloaded from S3.
    async fn source(&self, id: &str, work: &Path) -> Result<PathBuf, PipelineError> {
        let key = original_key(id);
        if let Some(p) = self.store.local_path(&key) {
            return Ok(p);
        }
        let dest = work.join("source");
        let body = self.store.get(&key, None).await?;
        let mut f = tokio::fs::File::create(&dest).await?;
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk?).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut f).await?;
        Ok(dest)
    }
}

/// Renews the job's lease; cancels the work when the lease is lost or the
/// video was deleted (its job row goes with it), which kills ffmpeg.
async fn heartbeat(
    db: DynCatalog,
    job: String,
    video: String,
    owner: String,
    lease_ms: i64,
    cancel: CancellationToken,
) {
    // Often enough that a deleted video's ffmpeg stops within seconds.
    let every = Duration::from_millis((lease_ms as u64 / 3).min(2000));
    let lease = Duration::from_millis(lease_ms as u64);
    // When the lease we hold was last extended (as of the renewal's start).
    let mut held_since = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let asked = Instant::now();
        let renewed =
            tokio::time::timeout(every, db.renew_job(&job, &owner, now_ms(), lease_ms)).await;
        match renewed {
            Ok(Ok(true)) => held_since = asked,
            Ok(Ok(false)) => {
                tracing::info!(video = %video, "job gone (video deleted or lease lost): stopping");
                cancel.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing a job lease"),
            Err(_) => tracing::warn!("renewing a job lease timed out"),
        }
        // Stop before the lease can lapse unrenewed: past it, the job may
        // be someone else's, and two runs must not race.
        if held_since.elapsed() + every >= lease {
            tracing::warn!(video = %video, "lease about to lapse unrenewed: stopping");
            cancel.cancel();
            return;
        }
    }
}

/// Status, step and progress on the video; progress never goes back.
#[derive(Clone)]
struct Progress {
    db: DynCatalog,
    video: String,
    last: Arc<std::sync::Mutex<f64>>,
}

impl Progress {
    fn new(db: DynCatalog, video: String, start: f64) -> Progress {
        Progress {
            db,
            video,
            last: Arc::new(std::sync::Mutex::new(start)),
        }
    }

    async fn set(&self, step: &str, value: f64) -> Result<(), PipelineError> {
        let v = {
            let mut last = self.last.lock().expect("not poisoned");
            *last = last.max(value);
            *last
        };
        self.db
            .set_video_progress(&self.video, VideoStatus::Processing, Some(step), v)
            .await?;
        Ok(())
    }
}

/// Where a job's segments go: fixed per job, so a retry overwrites them.
/// A failure as the video's owner reads it: the tools' words without this
/// server's paths (`/srv/vidhost-data/objects/videos/…/original: Invalid
/// data` → `original: Invalid data`) or their context tags with memory
/// addresses (`[mov,mp4 @ 0x55d0…] `). The job keeps the whole message for
/// admins, and the log has it.
fn for_owner(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(c) = rest.chars().next() {
        let tag_end = rest
            .starts_with('[')
            .then(|| rest.find(']'))
            .flatten()
            .filter(|&end| rest[..end].contains(" @ 0x"));
        if let Some(end) = tag_end {
            rest = rest[end + 1..].trim_start_matches(' ');
            continue;
        }
        let starts_word = out.is_empty() || out.ends_with(|p: char| p.is_whitespace() || p == '\'');
        if c == '/' && starts_word {
            let len = rest
                .find(|p: char| p.is_whitespace() || p == ':' || p == '\'' || p == ',')
                .unwrap_or(rest.len());
            let path = &rest[..len];
            out.push_str(path.rsplit('/').find(|part| !part.is_empty()).unwrap_or(""));
            rest = &rest[len..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn generation_of(job: &Job) -> String {
    format!("g{}", &job.id[job.id.len().saturating_sub(12)..])
}

fn check(cancel: &CancellationToken) -> Result<(), PipelineError> {
    if cancel.is_cancelled() {
        Err(PipelineError::Cancelled)
    } else {
        Ok(())
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod owner_message_tests {
    use super::for_owner;

    #[test]
    fn server_paths_and_tool_addresses_are_left_out() {
        let raw = "the file is not readable media: [mov,mp4,m4a,3gp,3g2,mj2 @ 0x563c1d2e4f00] moov atom not found\n\
                   /srv/data/objects/videos/0190abc/original: Invalid data found when processing input";
        assert_eq!(
            for_owner(raw),
            "the file is not readable media: moov atom not found\noriginal: Invalid data found when processing input"
        );
        // Words that merely contain a slash stay as they are.
        assert_eq!(for_owner("audio/video 1/2 done"), "audio/video 1/2 done");
        assert_eq!(for_owner("[h264] broken"), "[h264] broken");
    }
}
