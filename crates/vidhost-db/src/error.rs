#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A uniqueness constraint refused the write (e.g. a taken e-mail).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                DbError::Conflict(d.message().to_owned())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                DbError::Unavailable(e.to_string())
            }
            _ => DbError::Other(e),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for DbError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        DbError::Other(sqlx::Error::Migrate(Box::new(e)))
    }
}
