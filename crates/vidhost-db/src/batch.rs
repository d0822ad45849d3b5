//! Group commit for upload creation on SQLite.
//!
//! SQLite takes one writer at a time, and each write is a trip to the
//! connection's own thread plus a WAL commit of every page it touched. Under
//! many concurrent creations those fixed costs dominated (and a second
//! writer slept in SQLite's busy handler). So creations queue here, and one
//! task writes whatever has queued up — one creation when the server is
//! idle, dozens under load — as one transaction in one call. Each caller is
//! answered only after the COMMIT that holds its rows. If a batch fails, its
//! creations are retried one by one, so one bad row fails only its own caller.
//!
//! PostgreSQL takes concurrent writers well; there each creation is one
//! statement (see `CREATE_UPLOAD_POSTGRES`).

use crate::{DbError, Result, Upload, Video};
use sqlx::{Pool, Sqlite};
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

/// At most this many creations per transaction (23 parameters each, well
/// under SQLite's 32,766).
const MAX_BATCH: usize = 64;

struct NewUpload {
    video: Video,
    upload: Upload,
    done: oneshot::Sender<Result<()>>,
}

/// The queue to the writer task, started with the first creation (and
/// again if it ever stopped, e.g. with the runtime that ran it).
#[derive(Default)]
pub struct Queue(Mutex<Option<mpsc::Sender<NewUpload>>>);

impl Queue {
    fn sender(&self, pool: &Pool<Sqlite>) -> mpsc::Sender<NewUpload> {
        let mut tx = self.0.lock().expect("not poisoned");
        match tx.as_ref() {
            Some(t) if !t.is_closed() => t.clone(),
            _ => {
                let (t, rx) = mpsc::channel(1024);
                tokio::spawn(writer(pool.clone(), rx));
                *tx = Some(t.clone());
                t
            }
        }
    }
}

pub(crate) async fn create_upload(
    pool: &Pool<Sqlite>,
    queue: &Queue,
    video: &Video,
    upload: &Upload,
) -> Result<()> {
    let tx = queue.sender(pool);
    let (done, answer) = oneshot::channel();
    let stopped = || DbError::Unavailable("the upload writer stopped".into());
    tx.send(NewUpload {
        video: video.clone(),
        upload: upload.clone(),
        done,
    })
    .await
    .map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

async fn writer(pool: Pool<Sqlite>, mut rx: mpsc::Receiver<NewUpload>) {
    let mut texts: Vec<String> = Vec::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let rows: Vec<(&Video, &Upload)> = batch.iter().map(|b| (&b.video, &b.upload)).collect();
        let result = insert(&pool, &mut texts, &rows).await;
        match result {
            Ok(()) => {
                for b in batch.drain(..) {
                    let _ = b.done.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                let b = batch.pop().expect("one");
                let _ = b.done.send(Err(e));
            }
            Err(_) => {
                for b in batch.drain(..) {
                    let r = insert(&pool, &mut texts, &[(&b.video, &b.upload)]).await;
                    let _ = b.done.send(r);
                }
            }
        }
    }
}

/// The statement list for `n` creations: parameters 23·i+1 … 23·i+23.
fn text(n: usize) -> String {
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for i in 0..n {
        let p = |k: usize| format!("${}", 23 * i + k);
        let video: Vec<String> = (1..=11).map(p).collect();
        let upload: Vec<String> = (12..=23).map(p).collect();
        sql.push_str(&format!(
            " INSERT INTO videos (id, owner_id, title, description, tags, visibility, status, error, progress, \
             created_at, uploaded_at, ready_at, original_filename, content_type, size_bytes, duration_s, width, height) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, NULL, 0, {}, NULL, NULL, {}, {}, {}, NULL, NULL, NULL); \
             INSERT INTO uploads (video_id, upload_id, owner_id, method, store_upload_id, size, part_size, part_count, \
             created_at, expires_at, received, metadata) VALUES ({});",
            video[0], video[1], video[2], video[3], video[4], video[5], video[6], video[7], video[8], video[9],
            video[10],
            upload.join(", ")
        ));
    }
    sql.push_str(" COMMIT");
    sql
}

async fn insert(
    pool: &Pool<Sqlite>,
    texts: &mut Vec<String>,
    rows: &[(&Video, &Upload)],
) -> Result<()> {
    while texts.len() < rows.len() {
        texts.push(text(texts.len() + 1));
    }
    let mut conn = pool.acquire().await?;
    let mut q = sqlx::query(&texts[rows.len() - 1]);
    for (v, u) in rows {
        q = bind_new_upload!(q, v, u);
    }
    let r = q.execute(&mut *conn).await;
    if r.is_err() {
        // The list stopped inside its transaction.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    r?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_number_on_across_the_batch() {
        let t = super::text(2);
        assert!(t.starts_with("BEGIN IMMEDIATE; INSERT INTO videos"));
        assert!(t.contains(
            "VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, 0, $8, NULL, NULL, $9, $10, $11,"
        ));
        assert!(t.contains("VALUES ($35, $36, $37, $38, $39, $40, $41, $42, $43, $44, $45, $46);"));
        assert!(t.ends_with("; COMMIT"));
    }
}
