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
//!    `Err(JobError::Stopped)` after the last acknowledged cursor is saved. [`JobContext::enter`],
//!    [`JobContext::plan`] and [`JobContext::upload_slot`] return `Err(JobError::Stopped)` once
//!    a stop was requested; pass it up with `?` (the recording methods keep working, so the
//!    last acknowledged chunk is never lost). Stops come from pause, cancel, delete and daemon
//!    shutdown ([`JobContext::stop_reason`]); every wait of the body (upload slots,
//!    compression threads, the census, backoff) ends on a stop. The scheduler decides the
//!    state, and releases what a cancelled or deleted job left open once the body returned;
//!    only a session whose cursor a deleted job could no longer persist is the body's to
//!    delete.
//! 7. On a failure that retrying inside the body did not fix, return
//!    `Err(JobError::Failed { reason })`: one line, no credentials, saying what went wrong and
//!    what to do. The job becomes `failed` and may be retried by the user.
//! 8. On success return the digest of the manifest the registry now serves for the target.
//!    Once the manifest PUT landed, return `Ok` whatever else happens (a stop, the deadline):
//!    the tag is written, and the scheduler records `done` whenever `run` returns `Ok`.
//!
//! Credentials never pass through the context: the registry client reads docker's config and
//! runs credential helpers with the job's environment ([`JobContext::env`]), the caller's, not
//! the daemon's own.
//!
//! # Who owns what
//! The scheduler makes one [`JobContext`] per run ([`JobContext::new`]) and reads the run's
//! [`RunMessage`]s from the channel of [`RunLink`]; this module knows nothing of the
//! scheduler. A stop carries its [`StopReason`], which the body reads with
//! [`JobContext::stop_reason`]. What a job leaves on the registry and in its spool when it
//! ends without a push (cancel, delete) is released by the scheduler, once its run (if any)
//! has ended, through [`JobBody::discard`]: the body only stops.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::metrics::Counters;
use crate::api::{BlobState, EventKind, JobId, JobSpec, JobState};
use crate::bandwidth::Bucket;
use crate::digest::Digest;
use crate::environ::CallerEnv;
use crate::store::{BlobRecord, CursorRecord, ImageKey, NewBlob, Pushed, PushedManifest, Store};

/// The future a job body returns.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<JobOutput, JobError>> + Send>>;

/// The work of one push; see the module documentation for the contract.
pub trait JobBody: Send + Sync + 'static {
    fn run(&self, ctx: JobContext) -> JobFuture;

    /// Called when a job ends without a push (cancelled, or deleted) once no run of it is
    /// left, with the upload sessions it left open (a paused or failed job keeps them for a
    /// resume): release them. The scheduler has removed its spool and forgotten the cursors
    /// already; this runs in the background and must not fail.
    /// `env` is the job's environment, as its runs had it (the registry's credentials).
    fn discard(
        &self,
        _spec: JobSpec,
        _env: CallerEnv,
        _cursors: Vec<CursorRecord>,
    ) -> DiscardFuture {
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
    /// The registry, its token service, a credential helper or a proxy refused the job's
    /// credentials (or their absence). A job that lost secret variables with a daemon restart
    /// waits for them; any other fails as with [`JobError::Failed`].
    #[error("{reason}")]
    Refused { reason: String },
}

impl JobError {
    pub fn failed(reason: impl Into<String>) -> JobError {
        JobError::Failed {
            reason: reason.into(),
        }
    }

    /// A registry error that ends the job: [`JobError::Refused`] when it is a refusal of
    /// credentials, else [`JobError::Failed`]; `reason` is the line for people.
    pub fn from_registry(reason: String, e: &crate::registry::RegistryError) -> JobError {
        if e.is_refusal() {
            JobError::Refused { reason }
        } else {
            JobError::Failed { reason }
        }
    }

    /// Whether the job ends with this error (not a stop).
    pub fn is_failure(&self) -> bool {
        !matches!(self, JobError::Stopped)
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

/// Why a run is asked to stop. A later request replaces an earlier one only when it weighs
/// more (this order): a cancelled job that is then deleted stops as deleted, a cancelled job
/// whose daemon shuts down stays cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    Pause,
    Shutdown,
    Cancel,
    Delete,
}

/// What a run tells the scheduler that launched it.
pub enum RunReport {
    /// A phase is announced; the reply says whether the run may go on.
    Phase {
        state: JobState,
        reply: oneshot::Sender<Result<(), JobError>>,
    },
    /// Blob progress, compression progress, blob done, retry, warning: persisted and broadcast.
    Progress(EventKind),
    /// What the run waits for (`None`: no longer waiting): shown as the job's reason.
    Waiting(Option<String>),
    /// The run ended (sent by the task that awaited the body, after every other report).
    Finished(Result<JobOutput, JobError>),
}

/// A report and the run it comes from.
pub struct RunMessage {
    pub id: JobId,
    /// Distinguishes runs of the same job: reports from a run the scheduler stopped are ignored.
    pub generation: u64,
    pub report: RunReport,
}

/// What every run shares: the store, the channel its reports go to (read by the scheduler),
/// the daemon-wide upload slots and the counters. Made once by the scheduler.
#[derive(Clone)]
pub struct RunLink {
    store: Store,
    reports: mpsc::Sender<RunMessage>,
    uploads: Arc<Semaphore>,
    /// How many upload slots there are in all.
    uploads_max: usize,
    counters: Arc<Counters>,
}

impl RunLink {
    /// The link and the receiving end of its reports; `queue_max` reports may wait before
    /// senders wait (back-pressure on runs that report faster than the store commits).
    pub fn new(
        store: Store,
        uploads_in_flight_max: usize,
        counters: Arc<Counters>,
        queue_max: usize,
    ) -> (RunLink, mpsc::Receiver<RunMessage>) {
        let (reports, rx) = mpsc::channel(queue_max);
        let link = RunLink {
            store,
            reports,
            uploads: Arc::new(Semaphore::new(uploads_in_flight_max.max(1))),
            uploads_max: uploads_in_flight_max.max(1),
            counters,
        };
        (link, rx)
    }

    /// Reports that the run `generation` of `id` ended. Dropped when the scheduler is gone.
    pub async fn finished(&self, id: JobId, generation: u64, result: Result<JobOutput, JobError>) {
        let _ = self
            .reports
            .send(RunMessage {
                id,
                generation,
                report: RunReport::Finished(result),
            })
            .await;
    }
}

/// The scheduler's end of one run's stop signal.
pub struct StopSender(watch::Sender<Option<StopReason>>);

impl StopSender {
    /// Asks the run to stop for `reason` (kept if an earlier reason weighs more).
    pub fn stop(&self, reason: StopReason) {
        self.0.send_if_modified(|r| {
            let stronger = r.is_none_or(|old| reason > old);
            if stronger {
                *r = Some(reason);
            }
            stronger
        });
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        *self.0.borrow()
    }
}

/// What a body can do to its job. Cheap to clone; every method is safe to call from any task
/// the body spawns.
#[derive(Clone)]
pub struct JobContext {
    id: JobId,
    spec: JobSpec,
    generation: u64,
    spool_dir: PathBuf,
    link: RunLink,
    stop: watch::Receiver<Option<StopReason>>,
    /// This run's own upload limit; the scheduler changes its rate when the user changes the
    /// job's limit (`PUT /v1/jobs/{id}/bandwidth`).
    bandwidth: Arc<Bucket>,
    /// The caller's environment, secrets included (memory only).
    env: Arc<CallerEnv>,
}

impl JobContext {
    /// The context of run `generation` of job `id`, and the scheduler's end of its stop signal.
    pub fn new(
        link: &RunLink,
        id: JobId,
        spec: JobSpec,
        generation: u64,
        spool_dir: PathBuf,
        bandwidth: Arc<Bucket>,
        env: CallerEnv,
    ) -> (JobContext, StopSender) {
        let (stop, rx) = watch::channel(None);
        let ctx = JobContext {
            id,
            spec,
            generation,
            spool_dir,
            link: link.clone(),
            stop: rx,
            bandwidth,
            env: Arc::new(env),
        };
        (ctx, StopSender(stop))
    }

    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The spec as it was when this run started. The job's bandwidth limit may have changed
    /// since: uploads pay [`JobContext::bandwidth`], which follows it.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The environment every part of the job's work reads (docker's config, credential
    /// helpers, proxies, the source): the caller's, secrets included, or the daemon's own for
    /// a job submitted without one. Never store, log or report it.
    pub fn env(&self) -> &CallerEnv {
        &self.env
    }

    /// The job's own upload limit for this run (unlimited when the job has none), shared by
    /// all its uploads and changed while they run when the user changes the job's limit.
    pub fn bandwidth(&self) -> &Arc<Bucket> {
        &self.bandwidth
    }

    /// A directory for this job's compressed chunks; it exists and survives restarts. The
    /// scheduler removes it when the job is done, cancelled or deleted.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Why a stop was requested, if one was. A scheduler that is gone counts as a shutdown.
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self.stop.has_changed() {
            Err(_) => Some((*self.stop.borrow()).unwrap_or(StopReason::Shutdown)),
            Ok(_) => *self.stop.borrow(),
        }
    }

    /// Whether a stop (pause, cancel, delete, shutdown) was requested.
    pub fn is_stop_requested(&self) -> bool {
        self.stop_reason().is_some()
    }

    /// Resolves once a stop is requested (for `select!` around a long wait).
    pub async fn stop_requested(&self) {
        let mut stop = self.stop.clone();
        // An Err means the scheduler dropped the sender: that is a stop too.
        let _ = stop.wait_for(Option::is_some).await;
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

    async fn report(&self, report: RunReport) -> Result<(), JobError> {
        self.link
            .reports
            .send(RunMessage {
                id: self.id.clone(),
                generation: self.generation,
                report,
            })
            .await
            .map_err(|_| JobError::Stopped)
    }

    /// Announces a phase (`uploading`, `verifying`, `committing`, `verified`); returns once it
    /// is persisted. `Err(Stopped)` when a stop was requested.
    pub async fn enter(&self, state: JobState) -> Result<(), JobError> {
        self.check_stop()?;
        let (reply, rx) = oneshot::channel();
        self.report(RunReport::Phase { state, reply }).await?;
        rx.await.map_err(|_| JobError::Stopped)?
    }

    /// Records the push plan and returns every blob with what earlier runs recorded for it
    /// (state, cursor, compression progress), in plan order.
    pub async fn plan(&self, blobs: Vec<NewBlob>) -> Result<Vec<BlobRecord>, JobError> {
        self.plan_announced(blobs, &[]).await
    }

    /// Records one blob of a plan not whole yet, at its place in it (a layer exported while
    /// the export goes on, uploaded before the rest is known), and returns it with what
    /// earlier runs recorded for it. The whole plan is recorded later with
    /// [`JobContext::plan_announced`], which does not announce this blob again.
    pub async fn plan_blob(&self, position: usize, blob: NewBlob) -> Result<BlobRecord, JobError> {
        self.check_stop()?;
        let digest = blob.digest.clone();
        self.link
            .store
            .add_blob(self.id.clone(), position, blob)
            .await
            .map_err(Self::store_failed)?;
        let record = self
            .records()
            .await?
            .into_iter()
            .find(|r| r.digest == digest)
            .ok_or_else(|| {
                JobError::failed(format!(
                    "internal error: blob {digest} is not recorded after it was added: report this as a bug"
                ))
            })?;
        self.emit(EventKind::Blob {
            digest,
            size_bytes: record.size_bytes,
            media_type: record.media_type.clone(),
            action: record.action,
        })
        .await;
        Ok(record)
    }

    /// [`JobContext::plan`], announcing only the blobs not in `announced` (already announced
    /// by [`JobContext::plan_blob`] in this run).
    pub async fn plan_announced(
        &self,
        blobs: Vec<NewBlob>,
        announced: &[Digest],
    ) -> Result<Vec<BlobRecord>, JobError> {
        self.check_stop()?;
        self.link
            .store
            .put_blobs(self.id.clone(), blobs)
            .await
            .map_err(Self::store_failed)?;
        let records = self
            .link
            .store
            .blobs(self.id.clone())
            .await
            .map_err(Self::store_failed)?;
        for b in records.iter().filter(|b| !announced.contains(&b.digest)) {
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

    /// The layer splits earlier runs of the job recorded: (layer diff_id, layout JSON).
    pub async fn splits(&self) -> Result<Vec<(Digest, String)>, JobError> {
        self.link
            .store
            .splits(self.id.clone())
            .await
            .map_err(Self::store_failed)
    }

    /// Records how the job splits `layer`, before anything of its parts is recorded.
    pub async fn record_split(&self, layer: &Digest, layout: String) -> Result<(), JobError> {
        self.link
            .store
            .save_split(self.id.clone(), layer.clone(), layout)
            .await
            .map_err(Self::store_failed)
    }

    /// What the store holds for every blob of the job now (state, cursor, compression), in
    /// plan order.
    pub async fn records(&self) -> Result<Vec<BlobRecord>, JobError> {
        self.link
            .store
            .blobs(self.id.clone())
            .await
            .map_err(Self::store_failed)
    }

    /// Records that the registry no longer has `digest` although an earlier run recorded it
    /// as uploaded or present (its garbage collector removed it): the blob is pending again,
    /// without a cursor, and the user is told.
    pub async fn blob_lost(&self, digest: &Digest, pushed: &Digest) -> Result<(), JobError> {
        self.link
            .store
            .set_blob_state(self.id.clone(), digest.clone(), BlobState::Pending)
            .await
            .map_err(Self::store_failed)?;
        self.link
            .store
            .clear_cursor(self.id.clone(), digest.clone())
            .await
            .map_err(Self::store_failed)?;
        self.warning(format!(
            "blob {pushed} is no longer in the registry (removed by its garbage collector?): uploading it again"
        ))
        .await;
        Ok(())
    }

    /// How many upload connections the daemon opens at most, across all jobs.
    pub fn upload_connections(&self) -> usize {
        self.link.uploads_max
    }

    /// Waits for one of the daemon-wide upload connection slots. Hold the slot while the
    /// connection sends; dropping it frees the slot.
    pub async fn upload_slot(&self) -> Result<UploadSlot, JobError> {
        self.check_stop()?;
        let permit = tokio::select! {
            permit = self.link.uploads.clone().acquire_owned() => permit.map_err(|_| JobError::Stopped)?,
            () = self.stop_requested() => return Err(JobError::Stopped),
        };
        self.link.counters.slot_taken();
        Ok(UploadSlot {
            _permit: permit,
            counters: self.link.counters.clone(),
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
        self.link
            .store
            .save_cursor(self.id.clone(), digest.clone(), cursor)
            .await
            .map_err(Self::store_failed)?;
        if sent_bytes > 0 {
            self.link.counters.add_chunk(sent_bytes);
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
        self.link
            .store
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
        self.link
            .store
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
        self.link
            .store
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

    /// Reports the progress of a `docker-daemon:` source's export (see [`EventKind::Export`]).
    pub async fn export_progress(
        &self,
        bytes_done: u64,
        size_bytes: u64,
        layers_done: u64,
        layers_total: u64,
    ) {
        self.emit(EventKind::Export {
            bytes_done,
            // The engine's size is an estimate (the export's tar headers and padding come on
            // top): a total that the bytes read have passed is raised to them, so progress
            // never reads "219 MiB of about 213 MiB".
            size_bytes: size_bytes.max(bytes_done),
            layers_done,
            layers_total,
        })
        .await;
    }

    /// Records a blob's new state. A finished state (`existed`, `uploaded`, `verified`) also
    /// forgets the upload cursor.
    pub async fn blob_state(&self, digest: &Digest, state: BlobState) -> Result<(), JobError> {
        self.link
            .store
            .set_blob_state(self.id.clone(), digest.clone(), state)
            .await
            .map_err(Self::store_failed)?;
        if state.is_finished() {
            self.link
                .store
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

    /// The manifest `key`'s image was last pushed as, remembered by the daemon: a hint, to be
    /// checked with the registry. A store error is logged and reads as nothing remembered.
    pub async fn pushed_image(&self, key: ImageKey) -> Option<PushedManifest> {
        self.link
            .store
            .pushed_image(key)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot read the re-push memory"))
            .ok()
            .flatten()
    }

    /// Remembers that `key`'s image was pushed (committed, its blobs verified) as `manifest`.
    /// A store error is logged: it only costs a later re-push its export.
    pub async fn remember_pushed_image(&self, key: ImageKey, manifest: PushedManifest) {
        if let Err(e) = self.link.store.remember_pushed_image(key, manifest).await {
            tracing::warn!(error = %e, "cannot write the re-push memory");
        }
    }

    /// Reports something the job did that is worth knowing and is no problem.
    pub async fn note(&self, message: impl Into<String>) {
        self.emit(EventKind::Note {
            message: message.into(),
        })
        .await;
    }

    /// Reports a retry after a transient failure (`what`: e.g. "PATCH chunk at 16777216").
    pub async fn retrying(&self, what: impl Into<String>, reason: impl Into<String>) {
        self.link.counters.add_retry();
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
        let _ = self.report(RunReport::Waiting(reason)).await;
    }

    /// Sends an event to the scheduler, which persists and broadcasts it. Dropped silently
    /// when the scheduler is gone (the daemon is stopping).
    async fn emit(&self, kind: EventKind) {
        let _ = self.report(RunReport::Progress(kind)).await;
    }
}
