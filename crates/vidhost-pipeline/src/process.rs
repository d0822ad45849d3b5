//! The one place that spawns ffmpeg and ffprobe: a timeout, kill on drop
//! (and on cancellation), a concurrency limit, progress parsed from
//! `-progress pipe:1`, and the tail of stderr kept for error messages.

use crate::PipelineError;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const STDERR_TAIL: usize = 4096;

#[derive(Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    limit: Arc<Semaphore>,
}

impl Tools {
    /// Finds ffmpeg and ffprobe on PATH; a clear error when they are missing.
    pub fn discover(concurrency: usize) -> Result<Tools, PipelineError> {
        let find = |name: &str| {
            std::env::var_os("PATH")
                .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|c| c.is_file()))
                .ok_or_else(|| {
                    PipelineError::Config(format!(
                        "{name} not found on PATH: install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg)"
                    ))
                })
        };
        Ok(Tools {
            ffmpeg: find("ffmpeg")?,
            ffprobe: find("ffprobe")?,
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    /// Runs `program args`, returning stdout. `on_progress` gets ffmpeg's
    /// `out_time_us` (microseconds of output written) when the command
    /// includes `-progress pipe:1`.
    pub async fn run(
        &self,
        program: &PathBuf,
        args: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
        mut on_progress: impl FnMut(u64) + Send,
    ) -> Result<Vec<u8>, PipelineError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| PipelineError::Cancelled)?;
        let name = program
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("tool")
            .to_owned();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| PipelineError::Transient(format!("starting {name}: {e}")))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let progress = args.iter().any(|a| a == "pipe:1");
        let read_out = async {
            let mut out = Vec::new();
            if progress {
                let mut lines = BufReader::new(&mut stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(us) = line
                        .strip_prefix("out_time_us=")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        on_progress(us);
                    }
                }
            } else {
                let _ = stdout.read_to_end(&mut out).await;
            }
            out
        };
        let read_err = async {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        };
        let work = async {
            let (out, err) = tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = tokio::select! {
            r = tokio::time::timeout(timeout, work) => match r {
                Ok(r) => r,
                Err(_) => return Err(PipelineError::Transient(format!("{name} timed out after {} s", timeout.as_secs()))),
            },
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
        };
        let status =
            status.map_err(|e| PipelineError::Transient(format!("waiting for {name}: {e}")))?;
        if status.success() {
            return Ok(out);
        }
        let tail = String::from_utf8_lossy(&err)
            .trim()
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        match status.code() {
            // Killed by a signal (OOM killer, an operator): worth another try.
            None => Err(PipelineError::Transient(format!(
                "{name} was killed: {tail}"
            ))),
            Some(code) => Err(PipelineError::ToolFailed {
                tool: name,
                code,
                stderr: tail,
            }),
        }
    }
}
