//! Processing: turns every uploaded video into an adaptive HLS/DASH ladder,
//! a progressive MP4 and a poster, through a durable job queue in the
//! catalog. Only this crate runs ffmpeg and ffprobe (`process.rs`).

pub mod ladder;
pub mod probe;
pub mod process;
pub mod publish;
pub mod transcode;
pub mod worker;

pub use process::Tools;
pub use worker::{Pipeline, STEPS};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Media we can never process: the job goes to dead letters at once.
    #[error("{0}")]
    Invalid(String),
    /// A tool exited with an error (usually the media's fault).
    #[error("{tool} failed (exit {code}): {stderr}")]
    ToolFailed {
        tool: String,
        code: i32,
        stderr: String,
    },
    /// Worth another try: a killed process, an unreachable store or database.
    #[error("{0}")]
    Transient(String),
    /// The object store gave no answer: nothing is wrong with the job, so
    /// it waits for the store without spending an attempt.
    #[error("{0}")]
    StoreUnreachable(String),
    /// The video was deleted or the job's lease was lost: stop quietly.
    #[error("cancelled")]
    Cancelled,
    #[error("configuration: {0}")]
    Config(String),
}

impl From<vidhost_db::DbError> for PipelineError {
    fn from(e: vidhost_db::DbError) -> Self {
        PipelineError::Transient(format!("database: {e}"))
    }
}

impl From<vidhost_store::StoreError> for PipelineError {
    fn from(e: vidhost_store::StoreError) -> Self {
        match e {
            vidhost_store::StoreError::Unreachable(_) => {
                PipelineError::StoreUnreachable(format!("object store: {e}"))
            }
            e => PipelineError::Transient(format!("object store: {e}")),
        }
    }
}

impl From<std::io::Error> for PipelineError {
    fn from(e: std::io::Error) -> Self {
        PipelineError::Transient(format!("local I/O: {e}"))
    }
}
