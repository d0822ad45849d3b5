#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found")]
    NotFound,
    #[error("upload larger than the allowed {0} bytes")]
    TooLarge(u64),
    /// A part whose size is not what the layout says it must be.
    #[error("part {part_number} must be {expected} bytes, got {got}")]
    PartSize {
        part_number: u32,
        expected: u64,
        got: u64,
    },
    #[error("part {0} is missing or its ETag does not match")]
    PartMismatch(u32),
    #[error("the requested range is not satisfiable")]
    Range,
    /// Another request is writing the same bytes right now.
    #[error("another request is writing this upload's bytes")]
    Busy,
    #[error("the object store is full")]
    Full,
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// No answer at all (refused, reset, silent past the timeout): the store
    /// is down or cut off, not refusing this request.
    #[error("object store unreachable: {0}")]
    Unreachable(String),
    #[error("object store configuration: {0}")]
    Config(String),
    #[error("object store I/O: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            StoreError::Full
        } else {
            StoreError::Io(e)
        }
    }
}
