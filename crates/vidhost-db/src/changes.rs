//! Which videos' status, step or progress just changed, so that event
//! streams answer at once instead of at their next poll (a step shorter than
//! the poll interval, such as `publish` of a short video, was never seen).
//!
//! On SQLite the changes are this process's own writes (a `vidhost worker`
//! process on the same file is still only polled). On PostgreSQL every write
//! is also a `NOTIFY vidhost_videos, '<id>'` in the writing transaction's
//! wake, and each process that has an event stream open LISTENs on one
//! connection of its own, so changes made by any worker on any machine
//! arrive. A notification names only the video: the stream reads the row,
//! so one that arrives twice or late costs a read, never a wrong event.

use sqlx::postgres::PgListener;
use sqlx::{Pool, Postgres};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// The PostgreSQL channel of video changes.
const PG_CHANNEL: &str = "vidhost_videos";

pub struct Changes {
    tx: broadcast::Sender<Arc<str>>,
    /// Whether this process LISTENs already (PostgreSQL).
    listening: Mutex<bool>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            // A stream that falls this far behind reads the row anyway.
            tx: broadcast::channel(1024).0,
            listening: Mutex::new(false),
        }
    }
}

impl Changes {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }

    /// SQLite: tells this process's streams that `id` changed.
    pub(crate) async fn announce_sqlite(&self, _pool: &Pool<sqlx::Sqlite>, id: &str) {
        // No receiver (no stream open) is not an error.
        let _ = self.tx.send(id.into());
    }

    /// PostgreSQL: tells every process's streams, this one's included (its
    /// listener hears its own notifications). Best effort: a stream polls
    /// anyway.
    pub(crate) async fn announce_pg(&self, pool: &Pool<Postgres>, id: &str) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(PG_CHANNEL)
            .bind(id)
            .execute(pool)
            .await
        {
            tracing::debug!(error = %e, "NOTIFY of a video change");
        }
    }

    pub(crate) fn listen_sqlite(&self, _pool: &Pool<sqlx::Sqlite>) {}

    /// PostgreSQL: starts, once per process, the task that LISTENs and
    /// passes what it hears on; it reconnects when its connection drops.
    pub(crate) fn listen_pg(&self, pool: &Pool<Postgres>) {
        let mut started = self.listening.lock().expect("not poisoned");
        if *started {
            return;
        }
        *started = true;
        let (tx, pool) = (self.tx.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                let heard = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(PG_CHANNEL).await?;
                    loop {
                        let n = listener.recv().await?;
                        let _ = tx.send(n.payload().into());
                    }
                };
                let r: Result<(), sqlx::Error> = heard.await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "listening for video changes; event streams poll meanwhile");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
}
