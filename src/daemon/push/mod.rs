//! [`PushBody`]: the production job body. It wires the parts into the push:
//!
//! ```text
//! plan (blocking) -> ctx.plan -> source identity check
//!   -> uploading: one task per blob, in parallel (slots cap the connections)
//!        config + as-is layers: streamed in place from the source (BlobLocation ranges)
//!        layers to compress: a blocking compressor writes the spool; the upload of a layer
//!        follows it chunk by chunk (pipelined: the digest is only needed at the final PUT)
//!      alongside: the ELF census of every layer (blocking thread, off the critical path)
//!   -> verifying: HEAD every blob -> census check -> committing: for the target and each
//!      extra tag, PUT the manifest bytes and read the tag back as a node does
//!   -> verified -> the manifest digest
//! ```
//!
//! # Files
//! - [`spool`]: compression into the spool, resumable at chunk k; the cross-push index.
//! - [`spool_view`]: the compressed stream as uploads read it (stored chunks framed from the source).
//! - [`upload`]: one blob from cursor to cursor, retries, resume, restart.
//! - [`commit`]: verification, platform check, manifest commit.
//! - [`identity`]: the source files' identity, checked on every rerun (issue 7).
//!
//! # Daemon-wide state ([`Shared`])
//! - in-flight uploads by (registry host, blob): two jobs pushing the same blob to the same
//!   registry send it once; the second waits, then finds it with a HEAD;
//! - which repository of a registry got which blob (memory only), for cross-repository mounts.

pub mod commit;
pub mod identity;
pub mod patience;
pub mod spool;
pub mod spool_view;
pub mod upload;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::job::{DiscardFuture, JobBody, JobContext, JobError, JobFuture, JobOutput};
use super::prepare::{build_plan, record_plan};
use crate::api::{JobSpec, JobState};
use crate::digest::Digest;
use crate::plan::{CompressedLayer, LayerAction, PushPlan};
use crate::registry::{ClientOptions, ImageRef, RegistryClient, UploadCursor};
use crate::store::{BlobRecord, CursorRecord};
use patience::Patience;
use spool::{Avail, SpoolLayer};
use spool_view::SpoolView;
use upload::{BlobJob, Bytesrc, Uploader};

/// Blobs remembered for cross-repository mounts; the map is cleared beyond it.
pub const MOUNT_MEMORY_ENTRIES_MAX: usize = 65_536;

/// A blob in a registry: (host, digest).
type BlobKey = (String, Digest);

/// State shared by every job of the daemon.
#[derive(Default)]
pub struct Shared {
    inflight: Mutex<HashMap<BlobKey, Arc<tokio::sync::Mutex<()>>>>,
    pushed_to: Mutex<HashMap<BlobKey, String>>,
    /// Compression threads daemon-wide: the compressors' buffers are the largest memory of a
    /// push (`4 * threads * chunk`), and they already use every core.
    compressing: Arc<spool::ThreadTokens>,
}

impl Shared {
    /// The lock of one blob in one registry: held while a job uploads it.
    fn inflight_lock(&self, host: &str, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().expect("inflight lock");
        // Forget locks nobody holds or waits for (only the map's reference is left).
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry((host.to_string(), digest.clone()))
            .or_default()
            .clone()
    }

    fn remember_pushed(&self, host: &str, digest: &Digest, repository: &str) {
        let mut map = self.pushed_to.lock().expect("pushed_to lock");
        if map.len() >= MOUNT_MEMORY_ENTRIES_MAX {
            map.clear();
        }
        map.insert((host.to_string(), digest.clone()), repository.to_string());
    }

    fn pushed_to(&self, host: &str, digest: &Digest) -> Option<String> {
        self.pushed_to
            .lock()
            .expect("pushed_to lock")
            .get(&(host.to_string(), digest.clone()))
            .cloned()
    }
}

/// Daemon-wide network settings of every push: the stall watchdog, the cap of the retry
/// backoff and the global bandwidth limit (a bucket shared by every upload, changeable while
/// they run through `PUT /v1/bandwidth`).
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// A request in which no byte moved for this long is dropped and resumed (sleeping laptop).
    pub stall_timeout: Duration,
    /// The longest wait between two attempts during an outage.
    pub retry_delay_max: Duration,
    pub bandwidth: Arc<crate::bandwidth::Bucket>,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            stall_timeout: Duration::from_secs(crate::registry::STALL_TIMEOUT_S_DEFAULT),
            retry_delay_max: Duration::from_millis(patience::RETRY_DELAY_MS_MAX_DEFAULT),
            bandwidth: crate::bandwidth::Bucket::new(None),
        }
    }
}

/// The production body: pushes for real.
#[derive(Default)]
pub struct PushBody {
    shared: Arc<Shared>,
    net: NetSettings,
}

impl PushBody {
    pub fn new() -> PushBody {
        PushBody::default()
    }

    pub fn with_net(net: NetSettings) -> PushBody {
        PushBody {
            shared: Arc::default(),
            net,
        }
    }
}

impl JobBody for PushBody {
    fn run(&self, ctx: JobContext) -> JobFuture {
        let shared = self.shared.clone();
        let net = self.net.clone();
        Box::pin(async move {
            let result = push(&ctx, shared, &net).await;
            if matches!(result, Err(JobError::Stopped)) {
                cleanup_if_cancelled(&ctx, &net).await;
            }
            result
        })
    }

    fn discard(&self, spec: JobSpec, cursors: Vec<CursorRecord>) -> DiscardFuture {
        let net = self.net.clone();
        Box::pin(async move {
            // Deleting sessions sends no body: no job limit to pay.
            let Ok((_, client)) = target_of(&spec, &net, None) else {
                return;
            };
            delete_sessions(&client, cursors).await;
        })
    }
}

/// DELETEs upload sessions; a failure is logged (the registry expires sessions eventually).
async fn delete_sessions(client: &RegistryClient, cursors: Vec<CursorRecord>) {
    for c in cursors {
        let cursor = UploadCursor {
            session_url: c.session_url,
            offset: c.offset_bytes,
        };
        if let Err(e) = client.cancel_upload(&cursor).await {
            tracing::warn!(error = %e, "cannot delete an upload session of a cancelled or deleted job");
        }
    }
}

/// Retries of a safe request inside the registry client before the job's own patience takes
/// over (and reports `waiting for network`).
const CLIENT_RETRIES_MAX: usize = 2;

/// The target and a registry client for it. Uploads pay the daemon-wide bucket and `job_limit`:
/// the run's own bucket ([`JobContext::bandwidth`]), whose rate follows the job's limit while
/// it runs (the spec's `bandwidth_bytes_per_s` is only what it was when the run started).
fn target_of(
    spec: &JobSpec,
    net: &NetSettings,
    job_limit: Option<Arc<crate::bandwidth::Bucket>>,
) -> Result<(ImageRef, RegistryClient), JobError> {
    let target = ImageRef::parse(&spec.target)
        .map_err(|e| JobError::failed(format!("target {}: {e}", spec.target)))?;
    let client = RegistryClient::new(
        &target.host,
        ClientOptions {
            insecure: spec.options.insecure,
            chunk_bytes: Some(spec.chunk_size_bytes),
            stall_timeout: net.stall_timeout,
            // The client's own retries only ride out a blip: a longer outage is the job's to
            // wait out (`Patience`), which says so in the job's status and knows its deadline.
            retry: crate::registry::RetryPolicy {
                retries_max: CLIENT_RETRIES_MAX,
                delay_max: crate::registry::RetryPolicy::default()
                    .delay_max
                    .min(net.retry_delay_max),
                ..crate::registry::RetryPolicy::default()
            },
            bandwidth: Some(crate::bandwidth::Limits {
                global: net.bandwidth.clone(),
                job: job_limit,
            }),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| JobError::failed(e.to_string()))?;
    Ok((target, client))
}

/// Cancel leaves nothing behind: open upload sessions are deleted and the spool emptied.
async fn cleanup_if_cancelled(ctx: &JobContext, net: &NetSettings) {
    let cancelled = ctx
        .store
        .job(ctx.id().clone())
        .await
        .is_ok_and(|j| j.state == JobState::Cancelled);
    if !cancelled {
        return;
    }
    if let (Ok(blobs), Ok((_, client))) = (
        ctx.store.blobs(ctx.id().clone()).await,
        target_of(ctx.spec(), net, Some(ctx.bandwidth().clone())),
    ) {
        let mut cursors = Vec::new();
        for b in blobs {
            if let Some(c) = b.cursor {
                cursors.push(c);
                let _ = ctx.store.clear_cursor(ctx.id().clone(), b.digest).await;
            }
        }
        delete_sessions(&client, cursors).await;
    }
    spool::clear(ctx.spool_dir());
}

async fn push(
    ctx: &JobContext,
    shared: Arc<Shared>,
    net: &NetSettings,
) -> Result<JobOutput, JobError> {
    let plan = build_plan(ctx).await?;
    // Before anything is recorded: a swapped source must not change the job's plan.
    identity::check(ctx, &plan)?;
    let records = record_plan(ctx, &plan).await?;
    let plan = Arc::new(plan);
    let (target, client) = target_of(ctx.spec(), net, Some(ctx.bandwidth().clone()))?;
    let repository = target.repository.clone();
    let patience = Patience {
        ctx: ctx.clone(),
        retry_delay_max: net.retry_delay_max,
    };
    patience
        .call("check the repository", || {
            client.check_repository(&repository)
        })
        .await?
        .map_err(|e| JobError::failed(format!("cannot push to {}: {e}", ctx.spec().target)))?;
    ctx.enter(JobState::Uploading).await?;

    // The ELF census reads every layer once more, on threads of its own at a lower priority,
    // while uploads run: it takes the CPU the uploads leave, and must be done before the commit.
    let census = (!ctx.spec().options.allow_arch_mismatch).then(|| {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || {
            plan.layers
                .iter()
                .zip(crate::inspect::census_layers(&plan.layers, true))
                .map(|(l, census)| {
                    census.map_err(|e| {
                        JobError::failed(format!(
                            "cannot read layer {} for the ELF check: {e}; pass --allow-arch-mismatch to push without the check",
                            l.source.location.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
    });

    let record_of =
        |d: &Digest| -> Option<BlobRecord> { records.iter().find(|r| &r.digest == d).cloned() };
    let mut spool_layers = Vec::new();
    let mut spool_names = Vec::new();
    let mut jobs = vec![BlobJob {
        key: plan.config.digest.clone(),
        record: record_of(&plan.config.digest),
        src: Bytesrc::Source {
            location: plan.config.location.clone(),
            digest: plan.config.digest.clone(),
        },
    }];
    for layer in &plan.layers {
        let key = layer.source.digest.clone();
        // A layer listed twice is uploaded once.
        if jobs.iter().any(|j| j.key == key) {
            continue;
        }
        let src = match layer.action {
            LayerAction::AsIs => Bytesrc::Source {
                location: layer.source.location.clone(),
                digest: key.clone(),
            },
            LayerAction::Compress { codec, .. } => {
                let name = spool::spool_name(&layer.diff_id, codec);
                let (tx, rx) = watch::channel(Avail::default());
                let skip = Arc::new(AtomicBool::new(false));
                let path = ctx.spool_dir().join(&name);
                let mut record = record_of(&key);
                // Compressed by an earlier push: take its file instead of compressing again.
                let fresh = record
                    .as_ref()
                    .is_none_or(|r| r.pushed.is_none() && r.chunks_done == 0);
                if fresh && let Some(c) = spool::take_cached(ctx, &name, &path) {
                    ctx.blob_compressed(&key, c.digest.clone(), c.size).await?;
                    if let Some(r) = record.as_mut() {
                        r.pushed = Some(crate::store::Pushed {
                            digest: c.digest,
                            size_bytes: c.size,
                        });
                    }
                }
                spool_names.push(name.clone());
                let view = Arc::new(SpoolView::new(
                    layer.source.location.clone(),
                    codec,
                    spool::SPOOL_CHUNK_BYTES as u64,
                ));
                spool_layers.push(SpoolLayer {
                    layer: layer.clone(),
                    codec,
                    record,
                    path,
                    view: view.clone(),
                    tx,
                    skip: skip.clone(),
                });
                Bytesrc::Spool {
                    view,
                    avail: rx,
                    known: spool::index_lookup(ctx, &name),
                    index_name: name,
                    skip,
                }
            }
        };
        jobs.push(BlobJob {
            key: key.clone(),
            record: record_of(&key),
            src,
        });
    }
    let skips: Vec<Arc<AtomicBool>> = spool_layers.iter().map(|l| l.skip.clone()).collect();

    let compressor = {
        let ctx = ctx.clone();
        let rt = tokio::runtime::Handle::current();
        let gate = shared.compressing.clone();
        tokio::task::spawn_blocking(move || spool::run(&ctx, &rt, &gate, &spool_layers))
    };
    let uploader = Arc::new(Uploader {
        client: client.clone(),
        repository: repository.clone(),
        chunk_bytes: client.chunk_bytes(),
        patience: patience.clone(),
        shared,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let up = uploader.clone();
        tasks.spawn(async move {
            let key = job.key.clone();
            (i, key, up.run(job).await)
        });
    }
    let mut results: Vec<Option<(Digest, CompressedLayer)>> = vec![None; tasks.len()];
    let mut first_error: Option<JobError> = None;
    while let Some(joined) = tasks.join_next().await {
        let (i, key, r) = match joined {
            Ok(v) => v,
            Err(e) if e.is_cancelled() => continue,
            Err(e) => {
                return Err(JobError::failed(format!(
                    "internal error: an upload task ended abnormally ({e}): report this as a bug"
                )));
            }
        };
        match r {
            Ok(done) => results[i] = Some((key, done)),
            // A failure wins over a stop; the first failure is the one reported.
            Err(e) => {
                let failed = matches!(e, JobError::Failed { .. });
                if first_error.is_none() || (failed && first_error == Some(JobError::Stopped)) {
                    first_error = Some(e);
                }
                if failed {
                    // The other uploads end where they are (their last acknowledged chunk is
                    // persisted); the compressor stops at its next chunk. On a stop they end
                    // by themselves at their next chunk boundary, so a cancel's cleanup never
                    // races with a part still in flight.
                    tasks.abort_all();
                    for s in &skips {
                        s.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }
    // Wait for the compressor so nothing writes the spool after we return.
    let _ = compressor.await;
    if let Some(e) = first_error {
        return Err(e);
    }
    let pushed: Vec<(Digest, CompressedLayer)> = results.into_iter().flatten().collect();
    let compressed = compressed_layers(&plan, &pushed)?;
    commit::verify_blobs(&patience, &client, &repository, &pushed).await?;
    if let Some(census) = census {
        let census = census.await.map_err(|e| {
            JobError::failed(format!(
                "internal error: the ELF census ended abnormally ({e}): report this as a bug"
            ))
        })??;
        commit::check_census(&plan, &census)?;
    }
    let digest = commit::commit(&patience, &client, &target, &plan, &compressed).await?;
    // The scheduler removes the job's spool once it is done: keep the compressed layers.
    spool::keep_in_cache(ctx, &spool_names);
    Ok(JobOutput {
        manifest_digest: digest,
    })
}

/// What the manifest needs: one entry per compressed layer, in layer order. `pushed` holds
/// every uploaded blob by its plan digest.
fn compressed_layers(
    plan: &PushPlan,
    pushed: &[(Digest, CompressedLayer)],
) -> Result<Vec<CompressedLayer>, JobError> {
    plan.layers_to_compress()
        .map(|(_, l)| {
            pushed
                .iter()
                .find(|(k, _)| k == &l.source.digest)
                .map(|(_, c)| c.clone())
                .ok_or_else(|| {
                    JobError::failed(format!(
                        "internal error: layer {} has no upload result: report this as a bug",
                        l.source.digest
                    ))
                })
        })
        .collect()
}
