//! The daemon's durable state in SQLite: jobs, their blobs, upload cursors, compression
//! progress and the event log.
//!
//! **Architecture Invariant:** this is the only module that contains SQL.
//!
//! # Threads
//! One thread owns the only [`rusqlite::Connection`] and runs every statement, in arrival order.
//! Async callers send it a closure over a bounded channel and await a oneshot reply, so blocking
//! I/O (and `fsync`) never runs on the async runtime, and no lock is held across an `.await`.
//! One connection also means one writer: SQLite never answers `SQLITE_BUSY` to ourselves.
//! Reads go through the same thread; at a few jobs and a few events per chunk that is plenty.
//!
//! # Durability
//! The database is in WAL mode. Each write picks its `synchronous` level (see [`Durability`]):
//! what the user was promised (an accepted job, a finished push) survives power loss; progress
//! may lag behind by a few records after a crash, which costs only re-sent bytes, because the
//! registry is asked for the real offset on resume.

// The one place SQL is allowed (clippy.toml disallows rusqlite's SQL methods elsewhere).
#![allow(clippy::disallowed_methods)]

mod encode;
mod memory;
mod ops;
mod schema;

use std::path::Path;
use std::thread;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::api::{BlobAction, BlobState, JobEnv, JobId, JobSpec, JobState};
use crate::digest::Digest;

pub use memory::{ImageKey, PUSHED_IMAGES_MAX, PushedManifest};
pub use ops::now_ms;

/// Requests that may wait for the store thread; senders wait (asynchronously) beyond this.
const STORE_QUEUE_MAX: usize = 256;
/// How long a statement waits on a lock held by another process (e.g. `sqlite3` by hand).
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Events kept per job. Beyond it the oldest progress, retry and waiting events go first;
/// state changes, the plan's blobs and warnings stay, so the log of a long outage stays
/// bounded and still ends with the job's final state.
pub const EVENTS_PER_JOB_MAX: u64 = 2048;

/// Errors of the store. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state database failed ({0}): check free disk space and hoistd's log")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the state database has schema version {found}, newer than {supported} which this hoistd knows: run a newer hoistd or use another --state-dir"
    )]
    TooNew { found: i64, supported: i64 },
    #[error(
        "the state database holds a bad value ({0}): run `hoistd` with a fresh --state-dir or delete the job"
    )]
    Corrupt(String),
    #[error(
        "the state database failed its integrity check ({0}): move hoist.db aside and start again (its jobs are lost)"
    )]
    Integrity(String),
    #[error("no job {0}: list jobs with `hoist ls`")]
    NoSuchJob(JobId),
    #[error(
        "cannot create the state directory {path}: {source}: check its parent or pass another --state-dir"
    )]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the store thread ({0}): the system is out of threads or memory")]
    Thread(#[source] std::io::Error),
    #[error("the store thread has stopped: restart hoistd")]
    Closed,
}

/// How hard a write insists on reaching the disk. In WAL mode:
/// - `Full`: the WAL is fsynced at commit; the write survives power loss.
/// - `Normal`: the WAL is fsynced only at checkpoints; a power loss may drop the newest
///   commits (never corrupt the database). A process crash loses nothing either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Full,
    Normal,
}

/// A job row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub reason: Option<String>,
    pub manifest_digest: Option<Digest>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The caller's environment the job runs with: public values and secret names only.
    /// `None`: the daemon's own environment.
    pub env: Option<JobEnv>,
}

/// A blob of a job's plan, as the planner hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob {
    pub digest: Digest,
    pub size_bytes: u64,
    pub media_type: String,
    pub action: BlobAction,
}

/// Where a resumable upload stands: the registry's session URL and the offset it acknowledged
/// (the registry client's `UploadCursor { session_url, offset }`). The URL is the registry's
/// upload location: it may carry the registry's own upload state in its query (never our
/// credentials), so `Debug` leaves the query out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct CursorRecord {
    pub session_url: String,
    pub offset_bytes: u64,
}

impl std::fmt::Debug for CursorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.session_url.split_once('?') {
            Some((path, _)) => format!("{path}?REDACTED"),
            None => self.session_url.clone(),
        };
        f.debug_struct("CursorRecord")
            .field("session_url", &url)
            .field("offset_bytes", &self.offset_bytes)
            .finish()
    }
}

/// A blob row with its cursor and compression progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: Digest,
    pub size_bytes: u64,
    pub media_type: String,
    pub action: BlobAction,
    pub state: BlobState,
    pub cursor: Option<CursorRecord>,
    pub chunks_done: u64,
    pub compressed_bytes: u64,
    /// For a compressed blob, once compression finished: the blob the registry receives.
    pub pushed: Option<Pushed>,
}

impl BlobRecord {
    /// Bytes the registry receives for this blob: the compressed size once known.
    pub fn upload_size_bytes(&self) -> u64 {
        self.pushed
            .as_ref()
            .map_or(self.size_bytes, |p| p.size_bytes)
    }
}

/// The digest and size of the bytes pushed for a blob (after compression).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub digest: Digest,
    pub size_bytes: u64,
}

/// A persisted event: its sequence number, job, time and body (the `api::EventKind` JSON; the
/// store reads its kind only to choose what a trimmed log keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub seq: u64,
    pub job: JobId,
    pub time_ms: u64,
    pub body: String,
}

type Call = Box<dyn FnOnce(&mut Connection) + Send>;

/// A cheap, cloneable handle to the store thread.
#[derive(Clone)]
pub struct Store {
    calls: mpsc::Sender<Call>,
}

impl Store {
    /// Opens (creating if needed) `dir/hoist.db`, migrates it and starts the store thread.
    /// Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        // Private: the database names the user's images and registries.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        let conn = open_connection(&dir.join("hoist.db"))?;
        let (calls, mut rx) = mpsc::channel::<Call>(STORE_QUEUE_MAX);
        thread::Builder::new()
            .name("hoist-store".into())
            .spawn(move || {
                let mut conn = conn;
                // Ends when every Store handle is dropped; pending calls run first.
                while let Some(call) = rx.blocking_recv() {
                    call(&mut conn);
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Store { calls })
    }

    /// Runs `f` on the store thread and returns its result.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |conn| {
            // The caller may have gone away (e.g. a closed HTTP connection): nothing to do then.
            let _ = tx.send(f(conn));
        });
        self.calls
            .send(call)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a new job in state `queued`, with its first event. `Full`: once the client is
    /// told the job ID, the job must survive a power loss.
    pub async fn insert_job(
        &self,
        id: JobId,
        spec: JobSpec,
        env: Option<JobEnv>,
        event_body: String,
    ) -> Result<(JobRecord, u64), StoreError> {
        self.call(move |c| ops::insert_job(c, &id, &spec, env.as_ref(), &event_body))
            .await
    }

    /// Replaces the caller's environment a job runs with (a resume or retry sent it again).
    /// `Full`: the next run, after a restart too, must use what the user sent last.
    pub async fn set_job_env(&self, id: JobId, env: Option<JobEnv>) -> Result<(), StoreError> {
        self.call(move |c| ops::set_job_env(c, &id, env.as_ref()))
            .await
    }

    pub async fn job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        self.call(move |c| ops::job(c, &id)).await
    }

    /// Every job, oldest first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.call(ops::jobs).await
    }

    /// Moves a job to `state` and appends the state event, in one transaction; returns the
    /// event's sequence number and time. The same state again (a new `reason`) is an event the
    /// trimmed log may drop; a change of state is kept. `Full` for transitions a user relies on (done, committing,
    /// failed, cancelled, paused), `Normal` for the rest: see [`state_durability`].
    pub async fn set_state(
        &self,
        id: JobId,
        state: JobState,
        reason: Option<String>,
        manifest_digest: Option<Digest>,
        event_body: String,
    ) -> Result<(u64, u64), StoreError> {
        self.call(move |c| {
            ops::set_state(
                c,
                &id,
                state,
                reason.as_deref(),
                manifest_digest.as_ref(),
                &event_body,
            )
        })
        .await
    }

    /// Sets the job's own upload limit in its spec (`options.bandwidth_bytes_per_s`; `None`:
    /// no job limit) and returns the job. `Full`: the user was told the new limit holds, for
    /// later runs too (a retry, a resume after a restart).
    pub async fn set_job_bandwidth(
        &self,
        id: JobId,
        bytes_per_s: Option<u64>,
    ) -> Result<JobRecord, StoreError> {
        self.call(move |c| ops::set_job_bandwidth(c, &id, bytes_per_s))
            .await
    }

    /// Sets the job's deadline in its spec (`options.deadline_unix_s`; `None`: no deadline)
    /// and returns the job. `Full`, like the upload limit: later runs read it.
    pub async fn set_job_deadline(
        &self,
        id: JobId,
        deadline_unix_s: Option<u64>,
    ) -> Result<JobRecord, StoreError> {
        self.call(move |c| ops::set_job_deadline(c, &id, deadline_unix_s))
            .await
    }

    /// Deletes a job with its blobs, cursors, progress and events.
    pub async fn delete_job(&self, id: JobId) -> Result<(), StoreError> {
        self.call(move |c| ops::delete_job(c, &id)).await
    }

    /// Deletes the jobs in one of `states` unchanged since `ended_before_ms` (milliseconds
    /// since the epoch), except `spare`, with their blobs, cursors, progress and events;
    /// returns their IDs.
    pub async fn prune_jobs(
        &self,
        states: Vec<JobState>,
        ended_before_ms: u64,
        spare: Vec<JobId>,
    ) -> Result<Vec<JobId>, StoreError> {
        self.call(move |c| ops::prune_jobs(c, &states, ended_before_ms, &spare))
            .await
    }

    /// Records the push plan. Blobs already recorded keep their state and cursor (a resumed
    /// job plans again and must not lose progress); blobs no longer planned are dropped.
    pub async fn put_blobs(&self, id: JobId, blobs: Vec<NewBlob>) -> Result<(), StoreError> {
        self.call(move |c| ops::put_blobs(c, &id, &blobs)).await
    }

    /// Records one blob before the whole plan is known (a layer exported while the export
    /// goes on); one the job has already is left as it is.
    pub async fn add_blob(
        &self,
        id: JobId,
        position: usize,
        blob: NewBlob,
    ) -> Result<(), StoreError> {
        self.call(move |c| ops::add_blob(c, &id, position, &blob))
            .await
    }

    pub async fn blobs(&self, id: JobId) -> Result<Vec<BlobRecord>, StoreError> {
        self.call(move |c| ops::blobs(c, &id)).await
    }

    /// Sets one blob's state (`Normal`: the registry is asked again on resume).
    pub async fn set_blob_state(
        &self,
        id: JobId,
        digest: Digest,
        state: BlobState,
    ) -> Result<(), StoreError> {
        self.call(move |c| ops::set_blob_state(c, &id, &digest, state))
            .await
    }

    /// Saves the upload cursor. `Normal`: a cursor that lags after a power loss costs one
    /// re-sent chunk, since the registry reports the real offset when the upload resumes.
    /// Returns once the row is committed, so callers send the next chunk only after that.
    pub async fn save_cursor(
        &self,
        id: JobId,
        digest: Digest,
        cursor: CursorRecord,
    ) -> Result<(), StoreError> {
        self.call(move |c| ops::save_cursor(c, &id, &digest, &cursor))
            .await
    }

    /// Forgets a blob's cursor (the session expired or the blob is finished).
    pub async fn clear_cursor(&self, id: JobId, digest: Digest) -> Result<(), StoreError> {
        self.call(move |c| ops::clear_cursor(c, &id, &digest)).await
    }

    /// Records the digest and size of the compressed bytes of `digest` (`Normal`: the spool
    /// is deterministic, so a lost record is recomputed from it).
    pub async fn set_blob_pushed(
        &self,
        id: JobId,
        digest: Digest,
        pushed: Pushed,
    ) -> Result<(), StoreError> {
        self.call(move |c| ops::set_blob_pushed(c, &id, &digest, &pushed))
            .await
    }

    /// Records how the job splits `layer` (`Normal`: a lost record is computed again, the
    /// same, from the source).
    pub async fn save_split(
        &self,
        id: JobId,
        layer: Digest,
        layout: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| ops::save_split(c, &id, &layer, &layout))
            .await
    }

    /// The job's recorded layer splits: (layer diff_id, layout JSON).
    pub async fn splits(&self, id: JobId) -> Result<Vec<(Digest, String)>, StoreError> {
        self.call(move |c| ops::splits(c, &id)).await
    }

    /// Saves compression progress (`Normal`: the spool is checked again on resume).
    pub async fn save_compress_progress(
        &self,
        id: JobId,
        digest: Digest,
        chunks_done: u64,
        bytes_done: u64,
    ) -> Result<(), StoreError> {
        self.call(move |c| ops::save_compress_progress(c, &id, &digest, chunks_done, bytes_done))
            .await
    }

    /// Appends an event (`Normal`: events are a log for people, not a promise); returns its
    /// sequence number. The job's log is trimmed to [`EVENTS_PER_JOB_MAX`] on the way.
    pub async fn append_event(&self, id: JobId, body: String) -> Result<(u64, u64), StoreError> {
        self.call(move |c| ops::append_event(c, &id, &body)).await
    }

    /// At most `page_events_max` events of a job with `seq > after`, oldest first: a reader
    /// pages through a log by passing the last `seq` it got.
    pub async fn events_after(
        &self,
        id: JobId,
        after: u64,
        page_events_max: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.call(move |c| ops::events_after(c, &id, after, page_events_max))
            .await
    }

    /// Number of jobs per state.
    pub async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        self.call(ops::count_by_state).await
    }

    /// `PRAGMA integrity_check` and `foreign_key_check`: `Ok` only when both find nothing.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        self.call(ops::integrity_check).await
    }

    /// The schema version of the open database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .await
    }
}

/// Which `synchronous` level a transition to `state` is written with.
pub fn state_durability(state: JobState) -> Durability {
    match state {
        // A user (or script) acts on these: the push finished, or it will never go on by
        // itself. Committing is recorded before the manifest PUT, so a restart re-verifies
        // instead of re-planning.
        JobState::Committing
        | JobState::Verified
        | JobState::Done
        | JobState::Failed
        | JobState::Cancelled
        | JobState::Paused => Durability::Full,
        // Losing one of these after a power loss re-runs a step that is idempotent anyway.
        JobState::Queued | JobState::Preparing | JobState::Uploading | JobState::Verifying => {
            Durability::Normal
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    // WAL: readers never block the writer, and a commit is one sequential append.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "journal_mode is {mode}, WAL expected"
        )));
    }
    // The default for every write; writes that must survive power loss raise it (Durability).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Cascading deletes and referential checks are part of the schema's meaning.
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let mut conn = conn;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests;
