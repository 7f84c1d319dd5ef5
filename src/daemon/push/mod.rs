//! [`PushBody`]: the production job body. It wires the parts into the push:
//!
//! ```text
//! plan (blocking) -> ctx.plan -> source identity check
//!   (docker-daemon: the export's layers are uploaded while it goes on: [`early`])
//!   -> uploading: one task per blob, in parallel (slots cap the connections)
//!        config + as-is layers: streamed in place from the source (BlobLocation ranges)
//!        layers to compress: a blocking compressor writes the spool; the upload of a layer
//!        follows it chunk by chunk (pipelined: the digest is only needed at the final PUT)
//!      alongside: the ELF census of every layer (blocking thread, off the critical path;
//!      a docker-daemon: export's layers have theirs from the export stream already)
//!   -> verifying: HEAD every blob; one the registry lost (garbage collected while the job
//!      was paused or failed) is pending again and uploaded once more in the same run
//!   -> census check -> committing: for the target and each extra tag, PUT the manifest
//!      bytes and read the tag back as a node does
//!   -> verified -> the manifest digest
//! ```
//!
//! # Files
//! - [`spool`]: compression into the spool, resumable at chunk k; the cross-push index.
//! - [`export`]: a `docker-daemon:` source exported into the spool; [`early`]: its layers'
//!   uploads, started as each is whole.
//! - [`disk`]: the spool's free space, checked before spooling; a full disk's message.
//! - [`spool_view`]: the compressed stream as uploads read it (stored chunks framed from the source).
//! - [`upload`]: one blob from cursor to cursor, retries, resume, restart.
//! - [`commit`]: verification, platform check, manifest commit.
//! - [`identity`]: the source files' identity, checked on every rerun.
//! - [`patience`]: waiting out the network; [`wake`]: ending those waits when the link is
//!   back; [`netwatch`]: the machine's network changes (Linux).
//!
//! The body only stops when asked ([`JobContext::stop_reason`]): what a cancelled or deleted
//! job leaves behind is released by the scheduler, through [`JobBody::discard`].
//!
//! # Daemon-wide state ([`Shared`])
//! - in-flight uploads by (registry host, blob): two jobs pushing the same blob to the same
//!   registry send it once; the second waits, then finds it with a HEAD;
//! - which repository of a registry got which blob (memory only), for cross-repository mounts;
//! - each registry's link monitor ([`wake`]), which wakes every job waiting for that registry
//!   when its link comes back.

pub mod commit;
pub mod disk;
pub mod early;
pub mod export;
pub mod identity;
pub mod netwatch;
pub mod patience;
pub mod repush;
pub mod spool;
pub mod spool_view;
pub mod upload;
pub mod wake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::job::{DiscardFuture, JobBody, JobContext, JobError, JobFuture, JobOutput};
use super::prepare::{build_plan, record_plan};
use crate::api::{JobSpec, JobState};
use crate::digest::Digest;
use crate::environ::CallerEnv;
use crate::plan::{CompressedLayer, LayerAction, PushPlan};
use crate::registry::{ClientOptions, ImageRef, RegistryClient, ResumePoint, UploadCursor};
use crate::source::engine::TRANSPORT_PREFIX;
use crate::store::{BlobRecord, CursorRecord};
use export::StreamCensus;
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
    /// Each registry's link monitor: ends the waits of every job when its link comes back.
    links: Arc<wake::Links>,
    /// Compression tokens daemon-wide: one per core, or per upload connection when there are
    /// more, so jobs take turns; with them the chunk buffer budget every compression draws
    /// from, fixed by the cores. Made by the first job, which knows the connection count.
    compressing: std::sync::OnceLock<Arc<spool::ThreadTokens>>,
}

impl Shared {
    pub(super) fn compressing(&self, ctx: &JobContext) -> Arc<spool::ThreadTokens> {
        self.compressing
            .get_or_init(|| {
                Arc::new(spool::ThreadTokens::with_lanes(
                    spool::daemon_compress_threads_default(),
                    ctx.upload_connections(),
                ))
            })
            .clone()
    }

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
        Box::pin(async move { push(&ctx, shared, &net).await })
    }

    fn discard(&self, spec: JobSpec, env: CallerEnv, cursors: Vec<CursorRecord>) -> DiscardFuture {
        let net = self.net.clone();
        Box::pin(async move {
            // Deleting sessions sends no body: no job limit to pay.
            let Ok((target, client)) = target_of(&spec, &env, &net, None) else {
                return;
            };
            delete_sessions(&client, &target.repository, cursors).await;
        })
    }
}

/// DELETEs upload sessions; a failure is logged (the registry expires sessions eventually).
/// A stored cursor may lag behind its session (the registry kept part of a chunk whose answer
/// was lost), and the distribution registry refuses a DELETE whose state token names an older
/// offset: a refused DELETE asks the registry where the session is, then deletes it there.
async fn delete_sessions(client: &RegistryClient, repository: &str, cursors: Vec<CursorRecord>) {
    for c in cursors {
        let cursor = UploadCursor {
            session_url: c.session_url,
            offset: c.offset_bytes,
        };
        if client.cancel_upload(&cursor).await.is_ok() {
            continue;
        }
        let deleted = match client.resume(repository, &cursor).await {
            Ok(ResumePoint::Continue(now)) => client.cancel_upload(&now).await.map(|_| ()),
            // No trustworthy status (gone, or a registry without one): the DELETE at the
            // recorded place was refused already, and the registry expires what is left.
            Ok(ResumePoint::Unconfirmed(_)) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "cannot delete an upload session of a cancelled or deleted job");
        }
    }
}

/// Retries of a safe request inside the registry client before the job's own patience takes
/// over (and reports `waiting for network`).
const CLIENT_RETRIES_MAX: usize = 2;

/// The target and a registry client for it, working with the job's environment `env` (docker's
/// config, credential helpers, proxies). Uploads pay the daemon-wide bucket and `job_limit`:
/// the run's own bucket ([`JobContext::bandwidth`]), whose rate follows the job's limit while
/// it runs (the spec's `bandwidth_bytes_per_s` is only what it was when the run started).
fn target_of(
    spec: &JobSpec,
    env: &CallerEnv,
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
            env: env.clone(),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| JobError::failed(e.to_string()))?;
    Ok((target, client))
}

/// One run of a push: what every step after planning works with.
struct Run {
    ctx: JobContext,
    plan: Arc<PushPlan>,
    target: ImageRef,
    client: RegistryClient,
    patience: Patience,
    shared: Arc<Shared>,
}

async fn push(
    ctx: &JobContext,
    shared: Arc<Shared>,
    net: &NetSettings,
) -> Result<JobOutput, JobError> {
    let (run, records, known) = match Run::start(ctx, shared, net).await? {
        Started::Run(run, records, known) => (*run, records, known),
        Started::Committed(digest) => {
            return Ok(JobOutput {
                manifest_digest: digest,
            });
        }
    };
    let census = Census::start(ctx, &run.plan, known);
    let pushed = run.upload(&records, None).await?;
    let pushed = run.verify(pushed).await?;
    census.check(ctx, &run.plan).await?;
    let compressed = compressed_layers(&run.plan, &pushed)?;
    let manifest = commit::commit(
        &run.patience,
        &run.client,
        &run.target,
        &run.plan,
        &compressed,
    )
    .await?;
    repush::remember(ctx, &run.target, &run.plan.config.digest, &manifest).await;
    // The scheduler removes the job's spool once it is done: keep the compressed layers.
    let names: Vec<String> = run
        .plan
        .layers_to_compress()
        .filter_map(|(_, l)| match l.action {
            LayerAction::Compress { codec, .. } => Some(spool::spool_name(&l.diff_id, codec)),
            LayerAction::AsIs => None,
        })
        .collect();
    spool::keep_in_cache(ctx, &names);
    Ok(JobOutput {
        manifest_digest: manifest.digest,
    })
}

impl Run {
    /// Plans (the source checked against its identity before anything is recorded: a swapped
    /// source must not change the job's plan), records the plan, checks the repository and
    /// enters `uploading`. Returns what earlier runs recorded for every blob, and the ELF
    /// census of the layers planning read already (a `docker-daemon:` export's).
    async fn start(
        ctx: &JobContext,
        shared: Arc<Shared>,
        net: &NetSettings,
    ) -> Result<Started, JobError> {
        // A file source's plan is recorded before the target is looked at (a bad target
        // fails a job whose plan the user can see); an engine's is known only as it uploads.
        let planned = match ctx.spec().source.strip_prefix(TRANSPORT_PREFIX) {
            Some(image) => Planned::Engine(image),
            None => {
                let plan = build_plan(ctx).await?;
                identity::check(ctx, &plan)?;
                let records = record_plan(ctx, &plan, &[]).await?;
                Planned::File(Box::new(plan), records)
            }
        };
        let (target, client) =
            target_of(ctx.spec(), ctx.env(), net, Some(ctx.bandwidth().clone()))?;
        let patience = Patience {
            ctx: ctx.clone(),
            retry_delay_max: net.retry_delay_max,
            wake: Some(patience::Wake {
                link: shared.links.link(&client),
                client: client.clone(),
            }),
        };
        let reach = Reach {
            ctx: ctx.clone(),
            target,
            client,
            patience,
            shared,
        };
        let (plan, records, census) = match planned {
            Planned::File(plan, records) => {
                reach.check_repository().await?;
                (*plan, records, StreamCensus::new())
            }
            Planned::Engine(image) => {
                reach.check_repository().await?;
                if let Some(digest) = reach.skip_export(image).await? {
                    return Ok(Started::Committed(digest));
                }
                reach.plan_engine(image).await?
            }
        };
        ctx.enter(JobState::Uploading).await?;
        let Reach {
            ctx,
            target,
            client,
            patience,
            shared,
        } = reach;
        let run = Run {
            ctx,
            plan: Arc::new(plan),
            target,
            client,
            patience,
            shared,
        };
        Ok(Started::Run(Box::new(run), records, census))
    }

    fn uploader(&self) -> Uploader {
        uploader(&self.client, &self.target, &self.patience, &self.shared)
    }

    /// `verifying`: HEAD every blob. Blobs the registry lost since an earlier run recorded
    /// them are pending again and uploaded once more, then checked again.
    async fn verify(
        &self,
        mut pushed: Vec<(Digest, CompressedLayer)>,
    ) -> Result<Vec<(Digest, CompressedLayer)>, JobError> {
        let (client, repository) = (&self.client, &self.target.repository);
        let lost = commit::verify_blobs(&self.patience, client, repository, &pushed).await?;
        if lost.is_empty() {
            return Ok(pushed);
        }
        for (key, p) in &lost {
            self.ctx.blob_lost(key, &p.digest).await?;
        }
        let keys: Vec<Digest> = lost.iter().map(|(k, _)| k.clone()).collect();
        let records = self.ctx.records().await?;
        let again = self.upload(&records, Some(&keys)).await?;
        let lost = commit::verify_blobs(&self.patience, client, repository, &again).await?;
        if let Some((_, p)) = lost.first() {
            return Err(commit::missing(&self.ctx, p));
        }
        pushed.retain(|(k, _)| !keys.contains(k));
        pushed.extend(again);
        Ok(pushed)
    }

    /// Uploads the plan's blobs (`only` these keys, when given), compressing the layers that
    /// need it alongside; returns every blob's key and what was pushed for it.
    async fn upload(
        &self,
        records: &[BlobRecord],
        only: Option<&[Digest]>,
    ) -> Result<Vec<(Digest, CompressedLayer)>, JobError> {
        let (mut jobs, spool_layers) = blob_jobs(&self.ctx, &self.plan, records).await?;
        if let Some(keys) = only {
            jobs.retain(|j| keys.contains(&j.key));
        }
        let spool_layers: Vec<SpoolLayer> = spool_layers
            .into_iter()
            .filter(|l| only.is_none_or(|keys| keys.contains(&l.layer.source.digest)))
            .collect();
        let spool_layers = self.check_space(spool_layers).await?;
        let skips: Vec<Arc<AtomicBool>> = spool_layers.iter().map(|l| l.skip.clone()).collect();
        let compressor = {
            let ctx = self.ctx.clone();
            let rt = tokio::runtime::Handle::current();
            let gate = self.shared.compressing(&self.ctx);
            tokio::task::spawn_blocking(move || spool::run(&ctx, &rt, &gate, &spool_layers))
        };
        let result = upload_all(Arc::new(self.uploader()), jobs, &skips).await;
        // Wait for the compressor so nothing writes the spool after we return.
        let _ = compressor.await;
        result
    }
}

impl Run {
    /// Fails the run before anything is spooled or sent when the spool's disk cannot take
    /// what compressing `layers` writes ([`disk::check_space`], off the runtime: it may read
    /// and compress sample chunks).
    async fn check_space(&self, layers: Vec<SpoolLayer>) -> Result<Vec<SpoolLayer>, JobError> {
        let dir = self.ctx.spool_dir().to_path_buf();
        let (layers, checked) = tokio::task::spawn_blocking(move || {
            let checked = disk::check_space(&dir, &layers);
            (layers, checked)
        })
        .await
        .map_err(|e| {
            JobError::failed(format!(
                "internal error: the free-space check ended abnormally ({e}): report this as a bug"
            ))
        })?;
        checked.map(|()| layers)
    }
}

/// A run started: its uploads to do, or the push committed already (the repository held the
/// image: [`repush`]).
enum Started {
    Run(Box<Run>, Vec<BlobRecord>, StreamCensus),
    Committed(Digest),
}

/// A run's source before the target is looked at: a file source planned and recorded, or
/// the image an engine exports.
enum Planned<'a> {
    File(Box<PushPlan>, Vec<BlobRecord>),
    Engine(&'a str),
}

/// What a run reaches the registry with, before its plan is known.
struct Reach {
    ctx: JobContext,
    target: ImageRef,
    client: RegistryClient,
    patience: Patience,
    shared: Arc<Shared>,
}

impl Reach {
    /// A `docker-daemon:` source (its repository checked): the export runs with each layer's
    /// upload starting as soon as the layer is whole in the spool
    /// ([`early`]); the plan is recorded once the export has ended.
    async fn plan_engine(
        &self,
        image: &str,
    ) -> Result<(PushPlan, Vec<BlobRecord>, StreamCensus), JobError> {
        let up = uploader(&self.client, &self.target, &self.patience, &self.shared);
        let exported = export::plan_job(&self.ctx, &Arc::new(up), image).await?;
        identity::check(&self.ctx, &exported.plan)?;
        record_plan(&self.ctx, &exported.plan, exported.early.announced()).await?;
        exported.early.finish().await?;
        // The early uploads' outcomes, as the upload phase must see them.
        let records = self.ctx.records().await?;
        Ok((exported.plan, records, exported.census))
    }

    async fn check_repository(&self) -> Result<(), JobError> {
        let (client, repository) = (&self.client, &self.target.repository);
        self.patience
            .call("check the repository", || {
                client.check_repository(repository)
            })
            .await?
            .map_err(|e| {
                let reason = format!("cannot push to {}: {e}", self.ctx.spec().target);
                JobError::from_registry(reason, &e)
            })
    }
}

fn uploader(
    client: &RegistryClient,
    target: &ImageRef,
    patience: &Patience,
    shared: &Arc<Shared>,
) -> Uploader {
    Uploader {
        client: client.clone(),
        repository: target.repository.clone(),
        chunk_bytes: client.chunk_bytes(),
        patience: patience.clone(),
        shared: shared.clone(),
    }
}

/// The blobs to upload in [`PushPlan::upload_order`] (config first, a layer listed twice
/// once) and the layers to compress into the spool, in the same order; a layer compressed by
/// an earlier push is taken from the spool cache instead.
async fn blob_jobs(
    ctx: &JobContext,
    plan: &PushPlan,
    records: &[BlobRecord],
) -> Result<(Vec<BlobJob>, Vec<SpoolLayer>), JobError> {
    let record_of =
        |d: &Digest| -> Option<BlobRecord> { records.iter().find(|r| &r.digest == d).cloned() };
    let mut spool_layers = Vec::new();
    let mut jobs = vec![BlobJob {
        key: plan.config.digest.clone(),
        record: record_of(&plan.config.digest),
        src: Bytesrc::Source {
            location: plan.config.location.clone(),
            digest: plan.config.digest.clone(),
        },
    }];
    for layer in plan.upload_order() {
        let key = layer.source.digest.clone();
        if jobs.iter().any(|j| j.key == key) {
            continue;
        }
        let src = match layer.action {
            LayerAction::AsIs => Bytesrc::Source {
                location: layer.source.location.clone(),
                digest: key.clone(),
            },
            LayerAction::Compress { codec, .. } => {
                let (src, spool) = spool_job(ctx, layer, codec, record_of(&key)).await?;
                spool_layers.push(spool);
                src
            }
        };
        jobs.push(BlobJob {
            key: key.clone(),
            record: record_of(&key),
            src,
        });
    }
    Ok((jobs, spool_layers))
}

/// A layer to compress: where its upload reads and what its compressor writes.
async fn spool_job(
    ctx: &JobContext,
    layer: &crate::plan::PlannedLayer,
    codec: crate::plan::Codec,
    mut record: Option<BlobRecord>,
) -> Result<(Bytesrc, SpoolLayer), JobError> {
    let key = &layer.source.digest;
    let name = spool::spool_name(&layer.diff_id, codec);
    let (tx, rx) = watch::channel(Avail::default());
    let skip = Arc::new(AtomicBool::new(false));
    let path = ctx.spool_dir().join(&name);
    // Compressed by an earlier push: take its file instead of compressing again.
    let fresh = record
        .as_ref()
        .is_none_or(|r| r.pushed.is_none() && r.chunks_done == 0);
    if fresh && let Some(c) = spool::take_cached(ctx, &name, &path) {
        ctx.blob_compressed(key, c.digest.clone(), c.size).await?;
        if let Some(r) = record.as_mut() {
            r.pushed = Some(crate::store::Pushed {
                digest: c.digest,
                size_bytes: c.size,
            });
        }
    }
    let view = Arc::new(SpoolView::new(
        layer.source.location.clone(),
        codec,
        spool::SPOOL_CHUNK_BYTES as u64,
    ));
    let spool = SpoolLayer {
        layer: layer.clone(),
        codec,
        record,
        path,
        view: view.clone(),
        tx,
        skip: skip.clone(),
    };
    let src = Bytesrc::Spool {
        view,
        avail: rx,
        known: spool::index_lookup(ctx, &name),
        index_name: name,
        skip,
    };
    Ok((src, spool))
}

/// Runs one upload task per blob; returns every blob's key and what was pushed for it.
/// A failure ends the others where they are (their last acknowledged chunk is persisted)
/// and the compressor at its next chunk; on a stop they end by themselves at their next chunk
/// boundary. A failure wins over a stop; the first failure is the one reported.
async fn upload_all(
    uploader: Arc<Uploader>,
    jobs: Vec<BlobJob>,
    skips: &[Arc<AtomicBool>],
) -> Result<Vec<(Digest, CompressedLayer)>, JobError> {
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
            Err(e) => {
                let failed = e.is_failure();
                if first_error.is_none() || (failed && first_error == Some(JobError::Stopped)) {
                    first_error = Some(e);
                }
                if failed {
                    tasks.abort_all();
                    for s in skips {
                        s.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results.into_iter().flatten().collect()),
    }
}

/// The ELF census of the plan's layers, on threads of its own at a lower priority while the
/// uploads run: it takes the CPU the uploads leave, and must be done before the commit. It
/// gives up when the job stops or the push ends without it (dropped). Layers whose census
/// planning took already (on a `docker-daemon:` export's stream) are not read again.
struct Census {
    task: Option<tokio::task::JoinHandle<Result<Vec<crate::elf::LayerCensus>, JobError>>>,
    abandoned: Arc<AtomicBool>,
}

impl Census {
    fn start(ctx: &JobContext, plan: &Arc<PushPlan>, known: StreamCensus) -> Census {
        let abandoned = Arc::new(AtomicBool::new(false));
        let task = (!ctx.spec().options.allow_arch_mismatch).then(|| {
            let (plan, ctx, gone) = (plan.clone(), ctx.clone(), abandoned.clone());
            tokio::task::spawn_blocking(move || {
                let stop = || ctx.is_stop_requested() || gone.load(Ordering::Relaxed);
                let unread: Vec<crate::plan::PlannedLayer> = plan
                    .layers
                    .iter()
                    .filter(|l| !known.contains_key(&l.diff_id))
                    .cloned()
                    .collect();
                let mut read = crate::inspect::census_layers(&unread, true, &stop).into_iter();
                if stop() {
                    return Err(JobError::Stopped);
                }
                plan.layers
                    .iter()
                    .map(|l| {
                        let census = match known.get(&l.diff_id) {
                            Some(c) => c.clone(),
                            None => read
                                .next()
                                .unwrap_or_else(|| Err(std::io::Error::other("not read")))
                                .map_err(|e| e.to_string()),
                        };
                        census.map_err(|e| {
                            JobError::failed(format!(
                                "cannot read layer {} for the ELF check: {e}; pass --allow-arch-mismatch to push without the check",
                                l.source.location.name
                            ))
                        })
                    })
                    .collect()
            })
        });
        Census { task, abandoned }
    }

    /// Waits for the census (saying so when it is what the job waits for), then checks the
    /// binaries against the declared platform.
    async fn check(mut self, ctx: &JobContext, plan: &PushPlan) -> Result<(), JobError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let waits = !task.is_finished();
        if waits {
            ctx.waiting(Some(CENSUS_WAIT_REASON.into())).await;
        }
        let census = tokio::select! {
            r = task => r,
            () = ctx.stop_requested() => return Err(JobError::Stopped),
        };
        if waits {
            ctx.waiting(None).await;
        }
        let census = census.map_err(|e| {
            JobError::failed(format!(
                "internal error: the ELF census ended abnormally ({e}): report this as a bug"
            ))
        })??;
        for (l, c) in plan.layers.iter().zip(&census) {
            if let Some(why) = &c.skipped {
                let name = &l.source.location.name;
                ctx.warning(format!("{name}: not checked for ELF binaries: {why}"))
                    .await;
            }
        }
        commit::check_census(plan, &census)
    }
}

impl Drop for Census {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

/// The job's reason while the uploads are done and the ELF census is not.
pub const CENSUS_WAIT_REASON: &str =
    "checking the layers' binaries against the platform (ELF census) before the commit";

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
