//! Group commit for upload creation, the hot write.
//!
//! Creations queue here, and one writer per process writes whatever has
//! queued up (one creation when the server is idle, dozens under load) in
//! one transaction. Each caller is answered only after the COMMIT that holds
//! its rows. If a batch fails, its creations are retried one by one, so one
//! bad row fails only its own caller. A commit writes every page it touched
//! (~10-17 for a few creations: two tables and seven indexes), so bigger
//! batches mean fewer pages per creation.
//!
//! - SQLite takes one writer at a time. The writer is a thread of its own
//!   with a connection of its own (rusqlite, on the same file sqlx uses);
//!   whatever queued while it wrote one batch is the next. As a task on a
//!   runtime thread it took that thread for each batch (~250 µs at ten
//!   clients), and the requests queued behind it waited: the machine was
//!   ~75 % busy. On its own thread it shares the cores with the runtime's
//!   (~83 % busy, ~+15 % creations per second in bench/). Through sqlx,
//!   every call a message to the connection's thread and back, the wake-ups
//!   cost ~20 µs per creation; here a batch costs one wake-up each way.
//!   Automatic checkpoints are off on its connection; every
//!   `CHECKPOINT_EVERY` commits a PASSIVE checkpoint starts on a thread and a
//!   connection of its own while the writer goes on, and the writer waits
//!   for one only if the WAL outgrew `WAL_FRAMES_MAX`.
//! - PostgreSQL takes concurrent writers, but each creation as its own
//!   transaction cost its backend about 195 µs of CPU (bench/, ten clients).
//!   The writer is a task that gathers a batch by yielding to the runtime
//!   while creations keep arriving, then writes it as one statement over
//!   `unnest`ed arrays: about five creations per transaction there, ~110 µs
//!   of backend CPU each, p99 2.9 ms. Up to `PG_IN_FLIGHT` (two) batches
//!   are written at once, each on a pooled connection of its own, so the
//!   server is not idle while a batch's round trip is on the wire (about
//!   +5-10 % creations per second over one at a time, in 8 s runs whose
//!   noise is about as large).

use crate::{DbError, Result, Upload, Video};
use sqlx::{Pool, Postgres, Sqlite};
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

/// At most this many creations per transaction.
const MAX_BATCH: usize = 64;

/// At most this many yields to the runtime while gathering a batch.
const MAX_GATHER: usize = 8;

struct NewUpload {
    video: Video,
    upload: Upload,
    done: oneshot::Sender<Result<()>>,
}

/// The queue to the writer, started with the first creation (and again if
/// it ever stopped: a panic, or the runtime that ran the PostgreSQL task).
#[derive(Default)]
pub struct Queue(Mutex<Option<mpsc::Sender<NewUpload>>>);

impl Queue {
    /// The queue's sender; `start` starts a writer on the receiving end
    /// when there is none (yet, or any more).
    fn sender(&self, start: impl FnOnce(mpsc::Receiver<NewUpload>)) -> mpsc::Sender<NewUpload> {
        let mut tx = self.0.lock().expect("not poisoned");
        match tx.as_ref() {
            Some(t) if !t.is_closed() => t.clone(),
            _ => {
                let (t, rx) = mpsc::channel(1024);
                start(rx);
                *tx = Some(t.clone());
                t
            }
        }
    }
}

async fn submit(
    queue: &Queue,
    start: impl FnOnce(mpsc::Receiver<NewUpload>),
    video: &Video,
    upload: &Upload,
) -> Result<()> {
    let tx = queue.sender(start);
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

pub(crate) async fn create_upload_sqlite(
    pool: &Pool<Sqlite>,
    queue: &Queue,
    video: &Video,
    upload: &Upload,
) -> Result<()> {
    let start = |rx| {
        let writer = SqliteWriter {
            path: pool.connect_options().get_filename().to_owned(),
            conn: None,
            commits: 0,
            checkpoint: Checkpoint::Idle(None),
            wal: None,
        };
        // A failure to start drops `rx`: this creation gets `Unavailable`
        // and the next one tries again.
        let _ = std::thread::Builder::new()
            .name("vidhost-sqlite-writer".into())
            .spawn(move || sqlite_write_loop(writer, rx));
    };
    submit(queue, start, video, upload).await
}

pub(crate) async fn create_upload_pg(
    pool: &Pool<Postgres>,
    queue: &Queue,
    video: &Video,
    upload: &Upload,
) -> Result<()> {
    let start = |rx| {
        tokio::spawn(pg_write_loop(PgWriter { pool: pool.clone() }, rx));
    };
    submit(queue, start, video, upload).await
}

/// Moves what has queued up into `batch`, up to `MAX_BATCH`.
fn take_queued(rx: &mut mpsc::Receiver<NewUpload>, batch: &mut Vec<NewUpload>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
}

/// Answers the batch with the result of its transaction. True when the
/// transaction failed for more than one creation: the caller then writes
/// them one by one, so that a bad row fails only its own creation.
fn answer(batch: &mut Vec<NewUpload>, result: Result<()>) -> bool {
    match result {
        Ok(()) => {
            for b in batch.drain(..) {
                let _ = b.done.send(Ok(()));
            }
            false
        }
        Err(e) if batch.len() == 1 => {
            let b = batch.pop().expect("one");
            let _ = b.done.send(Err(e));
            false
        }
        Err(_) => true,
    }
}

fn rows_of(batch: &[NewUpload]) -> Vec<(&Video, &Upload)> {
    batch.iter().map(|b| (&b.video, &b.upload)).collect()
}

/// The SQLite writer's own thread: whatever queued while it wrote the last
/// batch is the next one.
fn sqlite_write_loop(mut writer: SqliteWriter, mut rx: mpsc::Receiver<NewUpload>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        take_queued(&mut rx, &mut batch);
        let result = writer.insert(&rows_of(&batch));
        if answer(&mut batch, result) {
            for b in batch.drain(..) {
                let r = writer.insert(&[(&b.video, &b.upload)]);
                let _ = b.done.send(r);
            }
        }
    }
}

/// The PostgreSQL writer, a task: it waits on the server, not the CPU.
/// Before it writes, it yields to the runtime while new creations keep
/// arriving (at most `MAX_GATHER` times), so that requests already being
/// handled join this batch rather than wait for the next. Up to
/// `PG_IN_FLIGHT` batches are written at once, each on a pooled connection
/// of its own: while one batch's statement travels to the server and back,
/// the server writes another, instead of idling between round trips.
async fn pg_write_loop(writer: PgWriter, mut rx: mpsc::Receiver<NewUpload>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(PG_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        for _ in 0..MAX_GATHER {
            take_queued(&mut rx, &mut batch);
            if batch.len() >= MAX_BATCH {
                break;
            }
            tokio::task::yield_now().await;
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        // While every slot is busy, creations queue up for the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        take_queued(&mut rx, &mut batch);
        let writer = writer.clone();
        tokio::spawn(async move {
            let result = writer.insert(&rows_of(&batch)).await;
            if answer(&mut batch, result) {
                for b in batch.drain(..) {
                    let r = writer.insert(&[(&b.video, &b.upload)]).await;
                    let _ = b.done.send(r);
                }
            }
            drop(slot);
        });
    }
}

/// PostgreSQL batches written at once (see `pg_write_loop`).
const PG_IN_FLIGHT: usize = 2;

struct SqliteWriter {
    path: std::path::PathBuf,
    /// Opened on first use (after migrations), dropped after an error that
    /// was not the rows' fault, and opened again by the next batch.
    conn: Option<rusqlite::Connection>,
    /// Commits since the last checkpoint started.
    commits: u32,
    /// The checkpoints' own connection, or the checkpoint running on it.
    checkpoint: Checkpoint,
    /// The WAL file, for write-back (see `write_back_wal`).
    wal: Option<std::fs::File>,
}

enum Checkpoint {
    Idle(Option<rusqlite::Connection>),
    /// Hands back the connection and the WAL's size in frames.
    Running(std::thread::JoinHandle<(Option<rusqlite::Connection>, rusqlite::Result<i64>)>),
}

/// A checkpoint starts after this many commits (batches touch ~10-17
/// pages each: about SQLite's automatic 1,000 pages).
const CHECKPOINT_EVERY: u32 = 64;

/// A WAL this long (frames; 4 KiB pages) means the checkpoints running
/// beside the writer never caught up with it (SQLite starts the WAL over
/// only when a checkpoint has copied all of it), so the writer waits for
/// one of its own.
const WAL_FRAMES_MAX: i64 = 4096;

/// Write-back of the WAL after this many commits.
const WRITE_BACK_EVERY: u32 = 16;

const INSERT_VIDEO_SQLITE: &str = "INSERT INTO videos (id, owner_id, title, description, tags, \
    visibility, status, error, progress, created_at, uploaded_at, ready_at, original_filename, \
    content_type, size_bytes, duration_s, width, height) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 0, ?8, NULL, NULL, ?9, ?10, ?11, NULL, NULL, NULL)";
const INSERT_UPLOAD_SQLITE: &str = "INSERT INTO uploads (video_id, upload_id, owner_id, method, \
    store_upload_id, size, part_size, part_count, created_at, expires_at, received, metadata) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

fn sqlite_error(e: rusqlite::Error) -> DbError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => DbError::Conflict(e.to_string()),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            DbError::Corrupt(e.to_string())
        }
        _ => DbError::Unavailable(format!("the upload writer: {e}")),
    }
}

/// The writer's connection, with the pool's settings (lib.rs `connect`)
/// except for automatic checkpoints. Waiting for another connection's write
/// lock blocks only the writer's own thread.
fn open_writer(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let c = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384; \
         PRAGMA mmap_size = 268435456; PRAGMA wal_autocheckpoint = 0;",
    )?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

fn insert_rows(c: &mut rusqlite::Connection, rows: &[(&Video, &Upload)]) -> rusqlite::Result<()> {
    use rusqlite::params;
    // Dropped without commit (an error), the transaction rolls back.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut videos = tx.prepare_cached(INSERT_VIDEO_SQLITE)?;
        let mut uploads = tx.prepare_cached(INSERT_UPLOAD_SQLITE)?;
        for (v, u) in rows {
            let tags = serde_json::to_string(&v.tags).expect("strings serialize");
            videos.execute(params![
                v.id,
                v.owner_id,
                v.title,
                v.description,
                tags,
                v.visibility.as_str(),
                v.status.as_str(),
                v.created_at,
                v.original_filename,
                v.content_type,
                v.size_bytes
            ])?;
            uploads.execute(params![
                u.video_id,
                u.upload_id,
                u.owner_id,
                u.method.as_str(),
                u.store_upload_id,
                u.size,
                u.part_size,
                u.part_count,
                u.created_at,
                u.expires_at,
                u.received,
                u.metadata
            ])?;
        }
    }
    tx.commit()
}

impl SqliteWriter {
    fn insert(&mut self, rows: &[(&Video, &Upload)]) -> Result<()> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self
                .conn
                .insert(open_writer(&self.path).map_err(sqlite_error)?),
        };
        let r = insert_rows(conn, rows).map_err(sqlite_error);
        match &r {
            Ok(()) => {
                self.commits += 1;
                if self.commits.is_multiple_of(WRITE_BACK_EVERY) {
                    self.write_back_wal();
                }
            }
            // The rows' own fault: the connection is fine.
            Err(DbError::Conflict(_)) => {}
            Err(_) => self.conn = None,
        }
        if self.commits >= CHECKPOINT_EVERY && self.conn.is_some() {
            if let Err(e) = self.checkpoint() {
                // The rows are committed; the next checkpoint tries again,
                // on a connection opened afresh.
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
        r
    }

    /// With `synchronous=NORMAL` a commit does not sync the WAL, so its pages
    /// stay dirty until a checkpoint's fsync writes them all at once (~4 MiB
    /// between checkpoints here). Queueing them for the disk as they come
    /// (`SYNC_FILE_RANGE_WRITE` starts the writes and does not wait for
    /// them) halved a checkpoint's typical time (~6.3 → ~3 ms).
    fn write_back_wal(&mut self) {
        use std::os::fd::AsRawFd;
        if self.wal.is_none() {
            let mut p = self.path.clone().into_os_string();
            p.push("-wal");
            self.wal = std::fs::File::open(p).ok();
        }
        if let Some(f) = &self.wal {
            // SAFETY: a plain syscall on a descriptor `f` keeps open.
            unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }

    /// Starts a PASSIVE checkpoint on a thread beside the writer unless one
    /// is running; makes the writer checkpoint itself first if the last one
    /// found the WAL grown past `WAL_FRAMES_MAX`.
    ///
    /// A checkpoint costs two fsyncs: ~3 ms, and on this shared disk now and
    /// then hundreds. While the writer waited for every one of them, each
    /// slow fsync stalled all creations (p99 157-554 ms in bench/ runs).
    fn checkpoint(&mut self) -> Result<()> {
        let (conn, frames) = match std::mem::replace(&mut self.checkpoint, Checkpoint::Idle(None)) {
            Checkpoint::Running(h) if !h.is_finished() => {
                self.checkpoint = Checkpoint::Running(h);
                return Ok(());
            }
            Checkpoint::Running(h) => {
                let (conn, r) = h
                    .join()
                    .map_err(|_| DbError::Unavailable("a WAL checkpoint panicked".into()))?;
                (conn, r.map_err(sqlite_error)?)
            }
            Checkpoint::Idle(conn) => (conn, 0),
        };
        if frames > WAL_FRAMES_MAX {
            // No commit can come in while the writer itself checkpoints, so
            // this one copies the rest and the next write starts the WAL over.
            let c = self.conn.as_ref().expect("opened");
            c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                .map_err(sqlite_error)?;
        }
        let path = self.path.clone();
        self.commits = 0;
        let run = move || {
            let conn = match conn {
                Some(c) => c,
                None => match open_writer(&path) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            // (busy, frames in the WAL, frames copied)
            let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1));
            (Some(conn), r)
        };
        let h = std::thread::Builder::new()
            .name("vidhost-sqlite-checkpoint".into())
            .spawn(run)
            .map_err(|e| DbError::Unavailable(format!("a WAL checkpoint: {e}")))?;
        self.checkpoint = Checkpoint::Running(h);
        Ok(())
    }
}

/// Any number of new videos and their uploads, atomically, in one
/// statement: each parameter is the array of one column, and the videos'
/// INSERT runs as a data-modifying CTE (the uploads' foreign-key checks run
/// at the end of the statement, when the videos are in).
const CREATE_UPLOADS_POSTGRES: &str = "WITH new_videos AS (\
    INSERT INTO videos (id, owner_id, title, description, tags, visibility, status, error, progress, \
    created_at, uploaded_at, ready_at, original_filename, content_type, size_bytes, duration_s, width, height) \
    SELECT id, owner_id, title, description, tags, visibility, status, NULL, 0, created_at, NULL, NULL, \
    original_filename, content_type, size_bytes, NULL, NULL, NULL \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
    $8::bigint[], $9::text[], $10::text[], $11::bigint[]) \
    AS t(id, owner_id, title, description, tags, visibility, status, created_at, original_filename, \
    content_type, size_bytes) RETURNING id) \
    INSERT INTO uploads (video_id, upload_id, owner_id, method, store_upload_id, size, part_size, part_count, \
    created_at, expires_at, received, metadata) \
    SELECT * FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bigint[], \
    $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[], $23::text[])";

#[derive(Clone)]
struct PgWriter {
    pool: Pool<Postgres>,
}

impl PgWriter {
    async fn insert(&self, rows: &[(&Video, &Upload)]) -> Result<()> {
        fn col<'a, T>(
            rows: &[(&'a Video, &'a Upload)],
            f: impl Fn(&'a Video, &'a Upload) -> T,
        ) -> Vec<T> {
            rows.iter().map(|(v, u)| f(v, u)).collect()
        }
        let tags = |v: &Video| serde_json::to_string(&v.tags).expect("strings serialize");
        sqlx::query(CREATE_UPLOADS_POSTGRES)
            .bind(col(rows, |v, _| v.id.as_str()))
            .bind(col(rows, |v, _| v.owner_id.as_str()))
            .bind(col(rows, |v, _| v.title.as_str()))
            .bind(col(rows, |v, _| v.description.as_str()))
            .bind(col(rows, |v, _| tags(v)))
            .bind(col(rows, |v, _| v.visibility.as_str()))
            .bind(col(rows, |v, _| v.status.as_str()))
            .bind(col(rows, |v, _| v.created_at))
            .bind(col(rows, |v, _| v.original_filename.as_deref()))
            .bind(col(rows, |v, _| v.content_type.as_deref()))
            .bind(col(rows, |v, _| v.size_bytes))
            .bind(col(rows, |_, u| u.video_id.as_str()))
            .bind(col(rows, |_, u| u.upload_id.as_str()))
            .bind(col(rows, |_, u| u.owner_id.as_str()))
            .bind(col(rows, |_, u| u.method.as_str()))
            .bind(col(rows, |_, u| u.store_upload_id.as_deref()))
            .bind(col(rows, |_, u| u.size))
            .bind(col(rows, |_, u| u.part_size))
            .bind(col(rows, |_, u| u.part_count))
            .bind(col(rows, |_, u| u.created_at))
            .bind(col(rows, |_, u| u.expires_at))
            .bind(col(rows, |_, u| u.received))
            .bind(col(rows, |_, u| u.metadata.as_deref()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
