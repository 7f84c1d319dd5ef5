//! The seam between the scheduler and the work of one push.
//!
//! The scheduler owns *when* a job runs and *what state it is in*; a [`JobBody`] owns *how* an
//! image is pushed (open the source, plan, compress into the spool, upload chunk by chunk,
//! verify, commit the manifest). The body reports everything through its [`JobContext`], which
//! persists and broadcasts; the body holds no job state of its own between runs.
//!
//! # Contract of [`JobBody::run`]
//! 1. It is called when the job is in state `preparing` (the scheduler persisted that). It may
//!    be called again for the same job after a pause, a failure + retry, or a daemon restart;
//!    each call is a fresh future with a fresh context. It must therefore start by reading what
//!    was done before ([`JobContext::plan`] returns the stored blob states, upload cursors and
//!    compression progress) and skip or resume work, asking the registry for the real upload
//!    offset of a stored cursor (the stored offset may lag; it never runs ahead).
//! 2. Phases are announced in order with [`JobContext::enter`]: `uploading`, `verifying`,
//!    `committing` (before the manifest PUT), `verified` (after reading the manifest back).
//!    Skipping a phase is allowed, going back is not. The scheduler sets `done` itself when
//!    `run` returns `Ok`.
//! 3. Before each upload connection, take a slot with [`JobContext::upload_slot`] and hold the
//!    [`UploadSlot`] while the connection sends; this is the daemon-wide cap on connections.
//! 4. After the registry acknowledges a chunk, call [`JobContext::save_cursor`] with the new
//!    `(session URL, offset)` and await it **before sending the next chunk**: when it returns
//!    the cursor is committed to SQLite. Also call it (with `sent_bytes = 0`) right after the
//!    upload session is opened, so a restart reuses the session.
//! 5. Report compression with [`JobContext::compress_progress`] and, once a blob is fully
//!    compressed, its pushed digest and size with [`JobContext::blob_compressed`] (blobs stay
//!    keyed by the plan's digest everywhere in the context). Report a finished blob with
//!    [`JobContext::blob_state`] (`existed`, `uploaded`, then `verified` after the HEAD check),
//!    and each transient-failure retry with [`JobContext::retrying`].
//! 6. Stop at a chunk boundary: check [`JobContext::is_stop_requested`] between chunks (or
//!    `select!` on [`JobContext::stop_requested`]), and when it is set return
//!    `Err(JobError::Stopped)` after the last acknowledged cursor is saved. Any context method
//!    returns `Err(JobError::Stopped)` once a stop was requested; pass it up with `?`.
//!    Stops come from pause, cancel and daemon shutdown; the scheduler decides the state.
//! 7. On a failure that retrying inside the body did not fix, return
//!    `Err(JobError::Failed { reason })`: one line, no credentials, saying what went wrong and
//!    what to do. The job becomes `failed` and may be retried by the user.
//! 8. On success return the digest of the manifest the registry now serves for the target.
//!
//! Credentials never pass through the context: the registry client reads docker's config.
//!
//! # Wiring sketch (for the integration)
//! ```text
//! run(ctx):
//!   source = SourceRef::parse(spec.source)?; image = open + select spec.platform (guard)
//!   plan   = PushPlan::build(image, spec.compression)            // blobs + actions
//!   stored = ctx.plan(plan.blobs as NewBlob { digest, size, media_type, action }).await?
//!   ctx.enter(Uploading)
//!   for each blob (in parallel, bounded by upload_slot):
//!     if stored.state is existed/uploaded/verified: skip
//!     if action == compress: compress into ctx.spool_dir() (skip chunks already there),
//!        ctx.compress_progress(..) per chunk, then ctx.blob_compressed(digest, pushed, size)
//!     HEAD pushed digest -> exists: ctx.blob_state(digest, Existed); continue
//!     permit = ctx.upload_slot().await?
//!     cursor = stored.cursor.map(|c| UploadCursor { session_url: c.session_url,
//!                                                 offset: c.offset_bytes })
//!              // ask the registry for the real offset of a stored session; on 404 start over
//!              .unwrap_or(registry.start_upload()?); ctx.save_cursor(digest, cursor, 0)
//!     while cursor.offset < size:
//!       if ctx.is_stop_requested(): return Err(Stopped)
//!       cursor = registry.push_chunk(cursor, bytes[offset..offset+chunk])   // cursor -> cursor
//!       ctx.save_cursor(digest, cursor, chunk_len).await?                     // before the next
//!     registry.finish_upload(cursor, pushed_digest); ctx.blob_state(digest, Uploaded)
//!   ctx.enter(Verifying); HEAD every blob (size and digest); ctx.blob_state(.., Verified)
//!   ctx.enter(Committing); PUT manifest bytes (as built, never re-serialised)
//!   read the manifest back, compare digest; ctx.enter(Verified)
//!   Ok(JobOutput { manifest_digest })
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::metrics::Counters;
use super::scheduler::Event;
use crate::api::{BlobState, EventKind, JobId, JobSpec, JobState};
use crate::bandwidth::Bucket;
use crate::digest::Digest;
use crate::store::{BlobRecord, CursorRecord, NewBlob, Pushed, Store};

/// The future a job body returns.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<JobOutput, JobError>> + Send>>;

/// The work of one push; see the module documentation for the contract.
pub trait JobBody: Send + Sync + 'static {
    fn run(&self, ctx: JobContext) -> JobFuture;

    /// Called when a job that is not running is deleted, with the upload sessions it left
    /// open (a failed job keeps them for a retry): release them. The job and its spool are
    /// gone already; this runs in the background and must not fail.
    fn discard(&self, _spec: JobSpec, _cursors: Vec<CursorRecord>) -> DiscardFuture {
        Box::pin(async {})
    }
}

/// The future [`JobBody::discard`] returns.
pub type DiscardFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a finished push produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    pub manifest_digest: Digest,
}

/// How a job body ended without finishing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A stop was requested (pause, cancel, shutdown) and the body stopped at a chunk boundary.
    #[error("the job was asked to stop")]
    Stopped,
    /// The push failed; `reason` is one line for people.
    #[error("{reason}")]
    Failed { reason: String },
}

impl JobError {
    pub fn failed(reason: impl Into<String>) -> JobError {
        JobError::Failed {
            reason: reason.into(),
        }
    }
}

/// One of the daemon-wide upload connection slots; freed when dropped.
pub struct UploadSlot {
    _permit: OwnedSemaphorePermit,
    counters: Arc<Counters>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.counters.slot_released();
    }
}

/// What a body can do to its job. Cheap to clone; every method is safe to call from any task
/// the body spawns.
#[derive(Clone)]
pub struct JobContext {
    pub(super) id: JobId,
    pub(super) spec: JobSpec,
    /// Distinguishes runs of the same job: reports from a run the scheduler stopped are ignored.
    pub(super) generation: u64,
    pub(super) spool_dir: PathBuf,
    pub(super) store: Store,
    pub(super) scheduler: mpsc::Sender<Event>,
    pub(super) uploads: Arc<Semaphore>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) counters: Arc<Counters>,
    /// This run's own upload limit; the scheduler changes its rate when the user changes the
    /// job's limit (`PUT /v1/jobs/{id}/bandwidth`).
    pub(super) bandwidth: Arc<Bucket>,
}

impl JobContext {
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The spec as it was when this run started. The job's bandwidth limit may have changed
    /// since: uploads pay [`JobContext::bandwidth`], which follows it.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The job's own upload limit for this run (unlimited when the job has none), shared by
    /// all its uploads and changed while they run when the user changes the job's limit.
    pub fn bandwidth(&self) -> &Arc<Bucket> {
        &self.bandwidth
    }

    /// A directory for this job's compressed chunks; it exists and survives restarts. The
    /// scheduler removes it when the job is done or deleted.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Whether a stop (pause, cancel, shutdown) was requested.
    pub fn is_stop_requested(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once a stop is requested (for `select!` around a long wait).
    pub async fn stop_requested(&self) {
        let mut stop = self.stop.clone();
        // An Err means the scheduler dropped the sender: that is a stop too.
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Whether the job was deleted (while this run was still stopping).
    pub async fn is_deleted(&self) -> bool {
        matches!(
            self.store.job(self.id.clone()).await,
            Err(crate::store::StoreError::NoSuchJob(_))
        )
    }

    fn check_stop(&self) -> Result<(), JobError> {
        if self.is_stop_requested() {
            Err(JobError::Stopped)
        } else {
            Ok(())
        }
    }

    fn store_failed(e: crate::store::StoreError) -> JobError {
        JobError::failed(format!("cannot record progress: {e}"))
    }

    /// Announces a phase (`uploading`, `verifying`, `committing`, `verified`); returns once it
    /// is persisted. `Err(Stopped)` when a stop was requested.
    pub async fn enter(&self, state: JobState) -> Result<(), JobError> {
        self.check_stop()?;
        let (reply, rx) = oneshot::channel();
        self.scheduler
            .send(Event::Phase {
                id: self.id.clone(),
                generation: self.generation,
                state,
                reply,
            })
            .await
            .map_err(|_| JobError::Stopped)?;
        rx.await.map_err(|_| JobError::Stopped)?
    }

    /// Records the push plan and returns every blob with what earlier runs recorded for it
    /// (state, cursor, compression progress), in plan order.
    pub async fn plan(&self, blobs: Vec<NewBlob>) -> Result<Vec<BlobRecord>, JobError> {
        self.check_stop()?;
        self.store
            .put_blobs(self.id.clone(), blobs)
            .await
            .map_err(Self::store_failed)?;
        let records = self
            .store
            .blobs(self.id.clone())
            .await
            .map_err(Self::store_failed)?;
        for b in &records {
            self.emit(EventKind::Blob {
                digest: b.digest.clone(),
                size_bytes: b.size_bytes,
                media_type: b.media_type.clone(),
                action: b.action,
            })
            .await;
        }
        Ok(records)
    }

    /// Waits for one of the daemon-wide upload connection slots. Hold the slot while the
    /// connection sends; dropping it frees the slot.
    pub async fn upload_slot(&self) -> Result<UploadSlot, JobError> {
        self.check_stop()?;
        let permit = tokio::select! {
            permit = self.uploads.clone().acquire_owned() => permit.map_err(|_| JobError::Stopped)?,
            () = self.stop_requested() => return Err(JobError::Stopped),
        };
        self.counters.slot_taken();
        Ok(UploadSlot {
            _permit: permit,
            counters: self.counters.clone(),
        })
    }

    /// Persists the upload cursor of `digest` (committed when this returns), then reports
    /// progress. `sent_bytes` is the size of the chunk just acknowledged (0 for a new session).
    /// Call before sending the next chunk. Works after a stop was requested too, so the last
    /// acknowledged chunk is never lost.
    pub async fn save_cursor(
        &self,
        digest: &Digest,
        cursor: CursorRecord,
        sent_bytes: u64,
    ) -> Result<(), JobError> {
        let offset_bytes = cursor.offset_bytes;
        self.store
            .save_cursor(self.id.clone(), digest.clone(), cursor)
            .await
            .map_err(Self::store_failed)?;
        if sent_bytes > 0 {
            self.counters.add_chunk(sent_bytes);
        }
        let size_bytes = self.blob_size(digest).await;
        self.emit(EventKind::Progress {
            digest: digest.clone(),
            offset_bytes,
            size_bytes,
        })
        .await;
        Ok(())
    }

    async fn blob_size(&self, digest: &Digest) -> u64 {
        // Progress events carry the size for followers; the plan is small, reading it is cheap.
        self.store
            .blobs(self.id.clone())
            .await
            .ok()
            .and_then(|bs| bs.into_iter().find(|b| &b.digest == digest))
            .map_or(0, |b| b.upload_size_bytes())
    }

    /// Records what compressing `digest` produced: the digest and size of the bytes that
    /// are uploaded (and that upload cursors and progress then refer to).
    pub async fn blob_compressed(
        &self,
        digest: &Digest,
        pushed_digest: Digest,
        pushed_size_bytes: u64,
    ) -> Result<(), JobError> {
        self.store
            .set_blob_pushed(
                self.id.clone(),
                digest.clone(),
                Pushed {
                    digest: pushed_digest,
                    size_bytes: pushed_size_bytes,
                },
            )
            .await
            .map_err(Self::store_failed)
    }

    /// Records compression progress of `digest`.
    pub async fn compress_progress(
        &self,
        digest: &Digest,
        chunks_done: u64,
        bytes_done: u64,
    ) -> Result<(), JobError> {
        self.store
            .save_compress_progress(self.id.clone(), digest.clone(), chunks_done, bytes_done)
            .await
            .map_err(Self::store_failed)?;
        self.emit(EventKind::Compress {
            digest: digest.clone(),
            chunks_done,
            bytes_done,
        })
        .await;
        Ok(())
    }

    /// Records a blob's new state. A finished state (`existed`, `uploaded`, `verified`) also
    /// forgets the upload cursor.
    pub async fn blob_state(&self, digest: &Digest, state: BlobState) -> Result<(), JobError> {
        self.store
            .set_blob_state(self.id.clone(), digest.clone(), state)
            .await
            .map_err(Self::store_failed)?;
        if state.is_finished() {
            self.store
                .clear_cursor(self.id.clone(), digest.clone())
                .await
                .map_err(Self::store_failed)?;
            self.emit(EventKind::BlobDone {
                digest: digest.clone(),
                state,
            })
            .await;
        }
        Ok(())
    }

    /// Reports something the user should know that does not stop the push (e.g. index entries
    /// of other platforms that are not pushed).
    pub async fn warning(&self, message: impl Into<String>) {
        self.emit(EventKind::Warning {
            message: message.into(),
        })
        .await;
    }

    /// Reports a retry after a transient failure (`what`: e.g. "PATCH chunk at 16777216").
    pub async fn retrying(&self, what: impl Into<String>, reason: impl Into<String>) {
        self.counters.add_retry();
        self.emit(EventKind::Retry {
            what: what.into(),
            reason: reason.into(),
        })
        .await;
    }

    /// Reports that this run goes on with `digest` from its stored cursor at `offset_bytes`.
    pub async fn resumed(&self, digest: &Digest, offset_bytes: u64) {
        let size_bytes = self.blob_size(digest).await;
        self.emit(EventKind::Resumed {
            digest: digest.clone(),
            offset_bytes,
            size_bytes,
        })
        .await;
    }

    /// Reports that `digest` starts again from byte 0, losing the `offset_bytes` acknowledged.
    pub async fn restarted(&self, digest: &Digest, offset_bytes: u64, reason: impl Into<String>) {
        let size_bytes = self.blob_size(digest).await;
        self.emit(EventKind::Restarted {
            digest: digest.clone(),
            offset_bytes,
            size_bytes,
            reason: reason.into(),
        })
        .await;
    }

    /// Says what the job is waiting for (e.g. `waiting for network, retry in 20 s`), shown as
    /// the job's reason while it runs; `None` when it no longer waits.
    pub async fn waiting(&self, reason: Option<String>) {
        let _ = self
            .scheduler
            .send(Event::Waiting {
                id: self.id.clone(),
                generation: self.generation,
                reason,
            })
            .await;
    }

    /// Sends an event to the scheduler, which persists and broadcasts it. Dropped silently
    /// when the scheduler is gone (the daemon is stopping).
    async fn emit(&self, kind: EventKind) {
        let _ = self
            .scheduler
            .send(Event::Progress {
                id: self.id.clone(),
                generation: self.generation,
                kind,
            })
            .await;
    }
}
