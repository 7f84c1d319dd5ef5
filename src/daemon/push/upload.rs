//! Uploading one blob: a loop of steps from one persisted cursor to the next.
//!
//! ```text
//! HEAD (known digest) -> present: existed | mount from a repository that has it
//! stored cursor? resume -> c (a 404 status proves nothing: the next PATCH on c tells) ;
//!   else start_upload ; save_cursor(c, 0)
//! loop: bytes [c.offset, c.offset + chunk) available? (spool: wait for the compressor)
//!       slot ; PATCH streamed from the file ; save_cursor(next, sent)   <- before the next PATCH
//! PUT ?digest= (empty body) ; failed? blob_present first (the PUT may have landed)
//! ```
//! Transient errors wait with backoff (reported with `ctx.retrying`, saying when the next try
//! is) then ask the registry where the session is (`resume`); a session lost (a PATCH or PUT
//! answered `is_upload_gone`) starts that blob only over; anything else fails the job with the
//! registry's message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::watch;

use super::Shared;
use super::patience::Patience;
use super::spool::Avail;
use crate::api::BlobState;
use crate::chunk_size::ChunkSizer;
use crate::compress::compressed_bytes_bound;
use crate::daemon::job::{JobContext, JobError, StopReason};
use crate::digest::Digest;
use crate::limits::{LimitError, RegistryLimits};
use crate::plan::CompressedLayer;
use crate::registry::{FileRange, MountOutcome, RegistryClient, RegistryError, UploadCursor};
use crate::source::BlobLocation;
use crate::store::{BlobRecord, CursorRecord};

/// Consecutive lost sessions of one blob (without any acknowledged chunk between them) before
/// the job fails. Network errors are not counted: an outage is waited out (with backoff capped
/// at the daemon's `retry_delay_max`) until the job's deadline, if it has one.
pub const BLOB_ATTEMPTS_MAX: u32 = 16;
/// Adaptive chunks never shrink below this, whatever the registry: ECR refuses smaller parts,
/// and an ECR-like registry behind another name cannot be told apart.
pub const ADAPTIVE_CHUNK_BYTES_MIN: u64 = crate::registry::ECR_CHUNK_BYTES_MIN;
/// Fresh sessions for one blob after a refused digest before the job fails.
pub const DIGEST_RESTARTS_MAX: u32 = 1;

/// Where a blob's bytes come from.
pub enum Bytesrc {
    /// Read in place from the source (config, layers pushed as they are).
    Source {
        location: BlobLocation,
        digest: Digest,
    },
    /// The spool a compressor is filling.
    Spool {
        view: Arc<super::spool_view::SpoolView>,
        avail: watch::Receiver<Avail>,
        /// The digest an earlier push recorded for the same layer, to check before compressing.
        known: Option<CompressedLayer>,
        /// The layer's name in the spool index (looked up again after waiting for another job).
        index_name: String,
        skip: Arc<AtomicBool>,
    },
}

/// One blob to upload.
pub struct BlobJob {
    /// The plan's digest (the key everywhere in the job context).
    pub key: Digest,
    pub record: Option<BlobRecord>,
    pub src: Bytesrc,
}

/// Where one blob's upload stands between two steps.
struct SendState {
    cursor: UploadCursor,
    /// Failed steps since the last acknowledged chunk.
    attempts: u32,
    digest_restarts: u32,
    sizer: ChunkSizer,
}

pub struct Uploader {
    pub client: RegistryClient,
    pub repository: String,
    /// The configured chunk size: where the adaptive size starts and the most it grows to.
    pub chunk_bytes: u64,
    /// How this job waits out the network (backoff cap, deadline, reports).
    pub patience: Patience,
    pub shared: Arc<Shared>,
}

/// Fails the job when the registry refused to finish an empty blob for good (ECR: "does not
/// have any parts"): no retry or resume can change that answer.
fn refuse_empty(key: &Digest, done: &CompressedLayer, e: &RegistryError) -> Result<(), JobError> {
    if done.size > 0 || e.is_retryable() || e.is_upload_gone() {
        return Ok(());
    }
    Err(JobError::failed(
        LimitError::EmptyBlobRefused {
            digest: key.to_string(),
            answer: e.to_string(),
        }
        .to_string(),
    ))
}

/// The reason a `restarted` event gives when the registry no longer has the upload session.
const SESSION_LOST: &str = "the registry lost the session";
/// The reason a `restarted` event gives when the registry refused the finished blob's digest.
const DIGEST_REFUSED: &str = "the registry refused the digest";

/// A permanent registry error: one line with the registry's answer and what to do next.
fn reg_failed(what: &str, e: &RegistryError) -> JobError {
    let reason = format!(
        "{what}: {e}; fix the cause, then `hoist retry` the job (it resumes where it stopped)"
    );
    JobError::from_registry(reason, e)
}

/// The blob's size as the registry receives it, or an upper bound while it is compressed.
fn upload_bytes_bound(blob: &BlobJob) -> u64 {
    match (&blob.src, &blob.record) {
        (Bytesrc::Source { location, .. }, _) => location.len,
        (Bytesrc::Spool { .. }, Some(r)) => r
            .pushed
            .as_ref()
            .map_or_else(|| compressed_bytes_bound(r.size_bytes), |p| p.size_bytes),
        // Every planned blob has a record; without one there is no size to plan parts for.
        (Bytesrc::Spool { known, .. }, None) => known.as_ref().map_or(0, |k| k.size),
    }
}

impl Uploader {
    fn ctx(&self) -> &JobContext {
        &self.patience.ctx
    }

    /// What the registry accepts (ECR's limits unless the host is known to differ).
    fn limits(&self) -> RegistryLimits {
        crate::registry::limits_for_host(self.client.host())
    }

    /// Uploads `blob` unless the registry has it; returns its pushed digest and size.
    pub async fn run(&self, blob: BlobJob) -> Result<CompressedLayer, JobError> {
        let ctx = self.ctx();
        let finished = blob.record.as_ref().is_some_and(|r| r.state.is_finished());
        // Known final digest and size, if any, before any byte is compressed or sent.
        let known = match &blob.src {
            Bytesrc::Source { location, digest } => Some(CompressedLayer {
                digest: digest.clone(),
                size: location.len,
            }),
            Bytesrc::Spool { known, .. } => blob
                .record
                .as_ref()
                .and_then(|r| r.pushed.clone())
                .map(|p| CompressedLayer {
                    digest: p.digest,
                    size: p.size_bytes,
                })
                .or_else(|| known.clone()),
        };
        if finished && let Some(k) = &known {
            self.skip_compression(&blob.src);
            return Ok(k.clone());
        }
        // Two jobs pushing the same blob to the same registry: the second waits here, then
        // finds it present (HEAD) instead of sending it again.
        let lock = self.shared.inflight_lock(self.client.host(), &blob.key);
        let _guard = match lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                ctx.waiting(Some(format!(
                    "waiting for another job that uploads blob {} to {}",
                    blob.key.short(),
                    self.client.host()
                )))
                .await;
                let g = tokio::select! {
                    g = lock.lock() => g,
                    () = ctx.stop_requested() => return Err(JobError::Stopped),
                };
                ctx.waiting(None).await;
                g
            }
        };
        // Another job may have compressed and pushed the same layer meanwhile.
        let known = match (&known, &blob.src) {
            (None, Bytesrc::Spool { index_name, .. }) => {
                super::spool::index_lookup(ctx, index_name)
            }
            _ => known,
        };
        if let Some(k) = &known
            && self.present_or_mounted(&blob.key, k).await?
        {
            self.skip_compression(&blob.src);
            if matches!(blob.src, Bytesrc::Spool { .. }) {
                ctx.blob_compressed(&blob.key, k.digest.clone(), k.size)
                    .await?;
            }
            ctx.blob_state(&blob.key, BlobState::Existed).await?;
            return Ok(k.clone());
        }
        let done = self.send(&blob).await?;
        self.shared
            .remember_pushed(self.client.host(), &done.digest, &self.repository);
        ctx.blob_state(&blob.key, BlobState::Uploaded).await?;
        Ok(done)
    }

    fn skip_compression(&self, src: &Bytesrc) {
        if let Bytesrc::Spool { skip, .. } = src {
            skip.store(true, Ordering::Relaxed);
        }
    }

    /// HEAD, then a cross-repository mount when another repository of this registry got the
    /// blob from this daemon.
    async fn present_or_mounted(
        &self,
        key: &Digest,
        k: &CompressedLayer,
    ) -> Result<bool, JobError> {
        let present = self
            .with_retries(&format!("HEAD {}", k.digest.short()), || {
                self.client
                    .blob_present(&self.repository, &k.digest, k.size)
            })
            .await?;
        if present {
            return Ok(true);
        }
        if let Some(from) = self.shared.pushed_to(self.client.host(), &k.digest)
            && from != self.repository
        {
            match self
                .client
                .mount_blob(&self.repository, &from, &k.digest)
                .await
            {
                Ok(MountOutcome::Mounted) => return Ok(true),
                Ok(MountOutcome::Upload(c)) => {
                    // Not mounted: drop the session it opened; the upload opens its own.
                    let _ = self.client.cancel_upload(&c).await;
                }
                Err(e) => tracing::info!(error = %e, blob = %key, "mount failed: uploading"),
            }
        }
        Ok(false)
    }

    /// Runs a registry call, waiting and retrying transient errors with reports.
    async fn with_retries<T, F, Fut>(&self, what: &str, op: F) -> Result<T, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        self.patience
            .call(what, op)
            .await?
            .map_err(|e| reg_failed(what, &e))
    }

    async fn save(&self, key: &Digest, c: &UploadCursor, sent: u64) -> Result<(), JobError> {
        let saved = self
            .ctx()
            .save_cursor(
                key,
                CursorRecord {
                    session_url: c.session_url.clone(),
                    offset_bytes: c.offset,
                },
                sent,
            )
            .await;
        if self.ctx().stop_reason() == Some(StopReason::Delete) {
            // The job is being deleted while this chunk was in flight. The scheduler discards
            // the sessions it found in the store once this run has ended, but it may have read
            // this one's location before this save (the distribution registry refuses a
            // DELETE whose state token names an older offset): the delete was asked before
            // that read, so this step holds the current cursor, and deletes the session.
            if let Err(e) = self.client.cancel_upload(c).await {
                tracing::warn!(error = %e, "cannot delete the upload session of a deleted job");
            }
            return Err(JobError::Stopped);
        }
        saved
    }

    async fn new_session(&self, key: &Digest) -> Result<UploadCursor, JobError> {
        let c = self
            .with_retries("open an upload session", || {
                self.client.start_upload(&self.repository)
            })
            .await?;
        self.save(key, &c, 0).await?;
        Ok(c)
    }

    /// Where to go on from the stored cursor, or a new session.
    async fn first_cursor(&self, blob: &BlobJob) -> Result<UploadCursor, JobError> {
        let Some(stored) = blob.record.as_ref().and_then(|r| r.cursor.clone()) else {
            return self.new_session(&blob.key).await;
        };
        let cursor = UploadCursor {
            session_url: stored.session_url,
            offset: stored.offset_bytes,
        };
        // An unconfirmed point is tried as it is: the next PATCH says if the session is gone.
        Ok(self
            .with_retries("ask the registry where the upload is", || {
                self.client.resume(&self.repository, &cursor)
            })
            .await?
            .cursor())
    }

    /// Smaller parts after failures (a cut costs less), back to the configured size on a
    /// steady link; never so small that the blob would need more parts than allowed.
    fn sizer(&self, blob: &BlobJob) -> ChunkSizer {
        ChunkSizer::new(
            self.client.chunk_bytes_min().max(ADAPTIVE_CHUNK_BYTES_MIN),
            self.chunk_bytes,
        )
        .with_part_limit(self.limits().parts_per_upload_max, upload_bytes_bound(blob))
    }

    /// Sends the blob's bytes chunk by chunk and finishes the upload.
    async fn send(&self, blob: &BlobJob) -> Result<CompressedLayer, JobError> {
        let mut state = SendState {
            cursor: self.first_cursor_announced(blob).await?,
            attempts: 0,
            digest_restarts: 0,
            sizer: self.sizer(blob),
        };
        loop {
            let (range, done) = self.next_range(blob, &state.cursor, &state.sizer).await?;
            if range.len > 0 {
                self.send_chunk(blob, &mut state, range).await?;
            } else if let Some(done) = done
                && self.finish_or_recover(blob, &mut state, &done).await?
            {
                return Ok(done);
            }
        }
    }

    /// Sends one chunk with an upload slot and persists the cursor the registry answers
    /// (before the next chunk); a failure is recovered from (new session, or wait and resume).
    async fn send_chunk(
        &self,
        blob: &BlobJob,
        state: &mut SendState,
        range: FileRange,
    ) -> Result<(), JobError> {
        let ctx = self.ctx();
        if ctx.is_stop_requested() {
            return Err(JobError::Stopped);
        }
        let what = format!("PATCH chunk at {}", state.cursor.offset);
        let (range, body_read) = CountedBody::wrap(range);
        let slot = ctx.upload_slot().await?;
        let result = self
            .patience
            .before_deadline(&what, self.client.upload_chunk_from(&state.cursor, range))
            .await?;
        drop(slot);
        let wire_bytes = body_read.load(Ordering::Relaxed);
        match result {
            Ok(next) => {
                let (from, sent) = (
                    state.cursor.offset,
                    next.offset.saturating_sub(state.cursor.offset),
                );
                state.cursor = next;
                // Persisted before the next chunk is sent.
                self.save(&blob.key, &state.cursor, sent).await?;
                if sent > 0 {
                    state.attempts = 0;
                    state
                        .sizer
                        .on_part_stored(from, state.cursor.offset, wire_bytes);
                }
            }
            Err(e) => {
                if e.is_retryable() {
                    state.sizer.on_failure(wire_bytes);
                }
                state.cursor = self
                    .recover(&blob.key, &state.cursor, e, &mut state.attempts, &what)
                    .await?;
            }
        }
        Ok(())
    }

    /// The final PUT; `true` once the blob is complete in the registry. A failed PUT may have
    /// landed (its answer lost): the registry is asked first. A refused digest sends the blob
    /// again from byte 0 (once); other failures are recovered from like a chunk's.
    async fn finish_or_recover(
        &self,
        blob: &BlobJob,
        state: &mut SendState,
        done: &CompressedLayer,
    ) -> Result<bool, JobError> {
        let Err(e) = self.finish(&state.cursor, done).await? else {
            return Ok(true);
        };
        if let Ok(true) = self
            .client
            .blob_present(&self.repository, &done.digest, done.size)
            .await
        {
            return Ok(true);
        }
        refuse_empty(&blob.key, done, &e)?;
        if e.is_digest_refused() && state.digest_restarts < DIGEST_RESTARTS_MAX {
            state.digest_restarts += 1;
            tracing::warn!(blob = %blob.key, error = %e, "digest refused: sending the blob again from byte 0");
            state.cursor = self
                .restart(&blob.key, &state.cursor, DIGEST_REFUSED)
                .await?;
            return Ok(false);
        }
        state.cursor = self
            .recover(
                &blob.key,
                &state.cursor,
                e,
                &mut state.attempts,
                "finish upload",
            )
            .await?;
        Ok(false)
    }

    /// The final PUT (`?digest=`, empty body), with an upload slot like every other request
    /// of the upload; not sent after a stop (the outer `Err`).
    async fn finish(
        &self,
        cursor: &UploadCursor,
        done: &CompressedLayer,
    ) -> Result<Result<(), RegistryError>, JobError> {
        if cursor.offset != done.size {
            // Our count and the blob disagree: let the registry's digest check decide, but say so.
            tracing::warn!(
                offset = cursor.offset,
                size = done.size,
                "finishing an upload whose offset is not the blob size"
            );
        }
        let _slot = self.ctx().upload_slot().await?;
        Ok(self
            .client
            .finish_upload(cursor, &done.digest, Bytes::new())
            .await)
    }

    /// [`Self::first_cursor`], saying what became of a stored cursor, so the user sees whether
    /// the bytes the registry acknowledged before (an earlier run, a killed daemon) count: the
    /// blob resumes at an offset, or starts again from 0.
    async fn first_cursor_announced(&self, blob: &BlobJob) -> Result<UploadCursor, JobError> {
        let cursor = self.first_cursor(blob).await?;
        if let Some(stored) = blob.record.as_ref().and_then(|r| r.cursor.as_ref()) {
            if cursor.offset > 0 {
                self.ctx().resumed(&blob.key, cursor.offset).await;
            } else if stored.offset_bytes > 0 {
                self.ctx()
                    .restarted(&blob.key, stored.offset_bytes, SESSION_LOST)
                    .await;
            }
        }
        Ok(cursor)
    }

    /// A new session for a blob whose upload was at `lost`, reported as a restart for `reason`
    /// when that loses acknowledged bytes.
    async fn restart(
        &self,
        key: &Digest,
        lost: &UploadCursor,
        reason: &str,
    ) -> Result<UploadCursor, JobError> {
        if lost.offset > 0 {
            self.ctx().restarted(key, lost.offset, reason).await;
        }
        self.new_session(key).await
    }

    /// After a failed step: a new session when the old one is gone, else wait and ask the
    /// registry where the session is.
    async fn recover(
        &self,
        key: &Digest,
        cursor: &UploadCursor,
        e: RegistryError,
        attempts: &mut u32,
        what: &str,
    ) -> Result<UploadCursor, JobError> {
        if e.is_upload_gone() {
            tracing::info!(blob = %key, error = %e, "upload session lost: starting the blob again");
            *attempts += 1;
            if *attempts > BLOB_ATTEMPTS_MAX {
                return Err(reg_failed(what, &e));
            }
            return self.restart(key, cursor, SESSION_LOST).await;
        }
        if !e.is_retryable() {
            return Err(reg_failed(&format!("{what} for blob {}", key.short()), &e));
        }
        *attempts += 1;
        self.patience.wait_before_retry(what, &e, *attempts).await?;
        Ok(self
            .with_retries("ask the registry where the upload is", || {
                self.client.resume(&self.repository, cursor)
            })
            .await?
            .cursor())
    }

    /// The next chunk to send from `cursor.offset`, as `sizer` sizes it (empty at the end,
    /// with the final digest). For a spool file, waits until the compressor has written the
    /// bytes.
    async fn next_range(
        &self,
        blob: &BlobJob,
        cursor: &UploadCursor,
        sizer: &ChunkSizer,
    ) -> Result<(FileRange, Option<CompressedLayer>), JobError> {
        let chunk_bytes = sizer.part_bytes(cursor.offset);
        match &blob.src {
            Bytesrc::Source { location, digest } => {
                let len = location.len.saturating_sub(cursor.offset).min(chunk_bytes);
                let done = (len == 0).then(|| CompressedLayer {
                    digest: digest.clone(),
                    size: location.len,
                });
                let range = match &location.splice {
                    None => FileRange {
                        file: location.file.clone(),
                        offset: location.offset + cursor.offset,
                        len,
                    },
                    Some(_) => FileRange {
                        file: Arc::new(SplicedBody(location.clone())),
                        offset: cursor.offset,
                        len,
                    },
                };
                Ok((range, done))
            }
            Bytesrc::Spool { view, avail, .. } => {
                let mut rx = avail.clone();
                let layer_bytes_max = self.limits().layer_bytes_max;
                // Whatever the compressor has written goes once it makes a part the registry
                // takes, not only a whole chunk: when the compressor is the slower one, the
                // link would wait for it anyway, and a stream's last chunk would otherwise go
                // up alone after its compression ended. A compressor ahead of the link still
                // gives whole chunks.
                let mut want = cursor.offset + sizer.part_bytes_min(cursor.offset);
                if upload_bytes_bound(blob) > layer_bytes_max {
                    // It may end over the limit: no part before compression shows it fits.
                    want = want.max(layer_bytes_max + 1);
                }
                let a = tokio::select! {
                    r = rx.wait_for(|a| a.error.is_some() || a.done.is_some() || a.bytes >= want) => {
                        r.map_err(|_| JobError::Stopped)?.clone()
                    }
                    () = self.ctx().stop_requested() => return Err(JobError::Stopped),
                };
                if let Some(e) = a.error {
                    return Err(e);
                }
                self.limits()
                    .check_layer_bytes(&format!("layer {} once compressed", blob.key), a.bytes)
                    .map_err(|e| JobError::failed(e.to_string()))?;
                let len = a.bytes.saturating_sub(cursor.offset).min(chunk_bytes);
                let done = if len == 0 { a.done } else { None };
                Ok((
                    FileRange {
                        file: view.clone(),
                        offset: cursor.offset,
                        len,
                    },
                    done,
                ))
            }
        }
    }
}

/// A PATCH body that counts the bytes read from it: what the request put on the wire, as far
/// as this process can tell (a cut part's count includes what was still in socket buffers).
/// The chunk sizer learns from it how much a link carries between failures.
struct CountedBody {
    inner: Arc<dyn crate::registry::ReadAt>,
    read: Arc<AtomicU64>,
}

impl CountedBody {
    /// `range` read through a counter, and the counter.
    fn wrap(range: FileRange) -> (FileRange, Arc<AtomicU64>) {
        let read = Arc::new(AtomicU64::new(0));
        let body = CountedBody {
            inner: range.file,
            read: read.clone(),
        };
        let range = FileRange {
            file: Arc::new(body),
            offset: range.offset,
            len: range.len,
        };
        (range, read)
    }
}

impl crate::registry::ReadAt for CountedBody {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        let n = self.inner.read_at(buf, pos)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A blob assembled from pieces (a rewritten config) as a request body reads it.
struct SplicedBody(BlobLocation);

impl crate::registry::ReadAt for SplicedBody {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        self.0.read_at(pos, buf)
    }
}
