//! A `docker-daemon:` source, exported from the engine straight into the spool.
//!
//! ```text
//! endpoint (caller's env) -> GET /version -> GET /images/{name}/json: platform check
//!   -> layers already in the spool (index + file length) are not compressed again
//!   -> GET /images/{name}/get, walked once: each needed layer, identified by the digest of
//!      its uncompressed bytes, is compressed as it streams into `<job spool>/export/`, and
//!      its uncompressed bytes are teed to the ELF census on a thread of its own
//!   -> each layer whole in the spool is uploaded at once ([`super::early`]) while the export
//!      goes on with the next one
//!   -> the plan: the config (in memory, then one small file) and the compressed layers,
//!      pushed as they are
//! ```
//!
//! The engine's export is never stored: extra disk is the compressed image. The layers are
//! compressed with the spool's codec, chunk size and codec versions, so they are the bytes a
//! push of the `docker save` archive would upload (same digests, same manifest). A layer is
//! written to a temporary file and renamed when whole and synced, and recorded in the spool
//! index; a rerun (a hoistd restart during the export) exports again and skips every layer
//! already there (those, exported by an earlier run, are read back for the census).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, SyncSender};

use super::early::EarlyUploads;
use super::spool::{self, SPOOL_CHUNK_BYTES, ThreadTokens};
use super::upload::Uploader;
use crate::compress::{CompressConfig, StreamState, compress_stream_within};
use crate::daemon::job::{JobContext, JobError};
use crate::digest::Digest;
use crate::elf::LayerCensus;
use crate::environ::CallerEnv;
use crate::image::doc::{self, Config, Doc};
use crate::image::media::{self, Compression, Family};
use crate::image::select;
use crate::plan::{Codec, CompressedLayer, PlanOptions, PushPlan};
use crate::source::engine::{Endpoint, Engine, ImageInspect, TRANSPORT_PREFIX, export};
use crate::source::{BlobLocation, ResolvedImage, SourceError, SourceLayer};

/// The spool subdirectory that holds a job's exported (compressed) layers and config.
pub const EXPORT_DIR: &str = "export";
/// The exported config's file name in [`EXPORT_DIR`].
const CONFIG_FILE: &str = "config.json";
/// Bytes handed at a time from the export stream to the compressor's reader.
const PIPE_PIECE_BYTES: usize = 1 << 20;
/// Pieces queued between the export stream and the compressor.
const PIPE_PIECES_QUEUED: usize = 4;
/// The shortest time between two export progress events.
const EXPORT_PROGRESS_EVERY_MS: u64 = 1000;

/// The ELF census of layers exported in this run, by diff_id, taken from the export stream (an
/// error: the layer is not a readable tar stream, said as the census says it).
pub type StreamCensus = HashMap<Digest, Result<LayerCensus, String>>;

/// A planned `docker-daemon:` push: the plan, the census of the layers this run exported, and
/// the uploads started while it exported.
pub struct Exported {
    pub plan: PushPlan,
    pub census: StreamCensus,
    pub early: EarlyUploads,
}

/// A layer whole in the spool (compressed file synced, renamed, indexed): its diff_id and
/// what compressing it gave.
type Ready = (Digest, CompressedLayer);

fn failed(e: impl Into<SourceError>) -> JobError {
    JobError::failed(e.into().to_string())
}

fn io_failed(path: &Path, e: io::Error) -> JobError {
    JobError::failed(format!(
        "cannot write the exported layer {}: {e}: check the free space of the state directory, then `hoist retry` the job",
        path.display()
    ))
}

/// Plans a `docker-daemon:IMAGE` job (`image` is what follows the prefix); each layer is
/// uploaded by `uploader` as soon as it is whole in the spool.
pub async fn plan_job(
    ctx: &JobContext,
    uploader: &Arc<Uploader>,
    image: &str,
) -> Result<Exported, JobError> {
    let image = crate::source::engine::parse_image_name(image).map_err(|detail| {
        failed(SourceError::BadRef {
            input: ctx.spec().source.clone(),
            detail,
        })
    })?;
    // The engine socket (DOCKER_HOST, the docker context) is the caller's, as in their shell.
    let env = ctx.env().clone();
    // The plan is made from the exported layers, already compressed in the spool: no split
    // layouts to reuse (an uncompressed layer is never planned from this source).
    let opts = crate::daemon::prepare::plan_options(ctx.spec(), env.clone(), Vec::new());
    plan(ctx, uploader, &env, &image, &opts).await
}

/// The image's layers that the spool does not hold yet: what the export must write.
fn missing_layers(
    inspect: &ImageInspect,
    spooled: &HashMap<Digest, CompressedLayer>,
) -> HashSet<Digest> {
    inspect
        .rootfs
        .layers
        .iter()
        .filter(|d| !spooled.contains_key(*d))
        .cloned()
        .collect()
}

/// Plans the push of `image` from the engine the caller's environment `env` names: checks
/// its platform, exports what the spool lacks (uploading each layer once it is whole) and
/// plans from the spool's files.
pub async fn plan(
    ctx: &JobContext,
    uploader: &Arc<Uploader>,
    env: &CallerEnv,
    image: &str,
    opts: &PlanOptions,
) -> Result<Exported, JobError> {
    let endpoint = Endpoint::from_env(env).map_err(failed)?;
    let engine = Engine::connect(endpoint).await.map_err(failed)?;
    let (inspect, what) = inspect_checked(&engine, image, opts).await?;
    let dir = ctx.spool_dir().join(EXPORT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_failed(&dir, e))?;
    let codec = opts.compression;
    let mut layers = spooled_layers(ctx, &dir, &inspect, codec);
    let mut config = spooled_config(&dir, &inspect);
    let needed = missing_layers(&inspect, &layers);
    let mut early = EarlyUploads::new(ctx.clone(), uploader.clone());
    for (d, c) in &layers {
        let layer = spool_layer(&what, &dir, d, c, codec)?;
        early.start(position(&inspect, d), &layer).await?;
    }
    let mut census = StreamCensus::new();
    // What the image's index also holds: from the engine's inspect where it lists the index
    // (the export then holds only the platform asked for), else from the export's index.
    let mut left_out = inspect.left_out();
    if config.is_none() || !needed.is_empty() {
        let reader = engine.export(image, &opts.platform).await.map_err(failed)?;
        let (ready, ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Export {
            ctx: ctx.clone(),
            rt: tokio::runtime::Handle::current(),
            tokens: uploader.shared.compressing(ctx),
            dir: dir.clone(),
            codec,
            image: image.to_string(),
            inspect: inspect.clone(),
            needed,
            census: !ctx.spec().options.allow_arch_mismatch,
            ready,
            abandon: Arc::new(AtomicBool::new(false)),
        };
        let (walked, made, censused) =
            export_uploading(job, reader, ready_rx, &mut early, &what, &dir).await?;
        write_config(&dir, &walked.config)?;
        config = Some(walked.config);
        if left_out.is_empty() {
            left_out = walked.left_out;
        }
        layers.extend(made);
        census = censused;
    }
    let config = config.ok_or_else(|| {
        JobError::failed("internal error: no config after the export: report this as a bug")
    })?;
    let mut resolved = resolve(
        &what,
        &dir,
        &inspect,
        config,
        &layers,
        codec,
        &opts.platform,
    )?;
    resolved.skipped = left_out;
    let plan =
        PushPlan::from_resolved(resolved, opts).map_err(|e| JobError::failed(e.to_string()))?;
    Ok(Exported {
        plan,
        census,
        early,
    })
}

/// The engine's inspect of `image`, its platform checked before anything is exported; and
/// how messages name the source.
async fn inspect_checked(
    engine: &Engine,
    image: &str,
    opts: &PlanOptions,
) -> Result<(ImageInspect, String), JobError> {
    let inspect = engine
        .inspect(image, &opts.platform)
        .await
        .map_err(failed)?;
    let what = format!("{TRANSPORT_PREFIX}{image}");
    select::check_platform(&what, inspect.platform(), &opts.platform)
        .map_err(|e| failed(SourceError::from(e)))?;
    Ok((inspect, what))
}

/// What a finished export gives: the walk, the layers it compressed, their census.
type ExportResult = (
    export::Walked,
    HashMap<Digest, CompressedLayer>,
    StreamCensus,
);

/// Runs `job` on a blocking thread and starts the upload of each layer it reports whole
/// while it goes on. A failed upload ends the export (at its next read); a failed export
/// leaves the uploads to the caller (dropped, they end where they are); a stopped one waits
/// for them to stop at their chunk boundary.
async fn export_uploading(
    job: Export,
    reader: impl Read + Send + 'static,
    mut ready: tokio::sync::mpsc::UnboundedReceiver<Ready>,
    early: &mut EarlyUploads,
    what: &str,
    dir: &Path,
) -> Result<ExportResult, JobError> {
    let (inspect, codec, abandon) = (job.inspect.clone(), job.codec, job.abandon.clone());
    let mut task = tokio::task::spawn_blocking(move || job.run(reader));
    let start = async |early: &mut EarlyUploads, (d, c): Ready| {
        let layer = spool_layer(what, dir, &d, &c, codec)?;
        early.start(position(&inspect, &d), &layer).await
    };
    let joined = loop {
        let step = tokio::select! {
            Some(r) = ready.recv() => start(early, r).await,
            e = early.failure() => Err(e),
            joined = &mut task => break joined,
        };
        if let Err(e) = step {
            abandon.store(true, Ordering::Relaxed);
            let _ = task.await;
            return Err(early.ended_by(e).await);
        }
    };
    let result = joined.map_err(|e| {
        JobError::failed(format!(
            "internal error: the export stopped abnormally ({e}): report this as a bug"
        ))
    })?;
    let result = match result {
        Ok(r) => r,
        Err(e) => return Err(early.ended_by(e).await),
    };
    // Layers reported just before the export ended.
    while let Ok(r) = ready.try_recv() {
        start(early, r).await?;
    }
    Ok(result)
}

/// A layer's place in the plan (the config is first): its first place in the image.
fn position(inspect: &ImageInspect, diff_id: &Digest) -> usize {
    1 + inspect
        .rootfs
        .layers
        .iter()
        .position(|d| d == diff_id)
        .unwrap_or(inspect.rootfs.layers.len())
}

/// The compressed layers an earlier run left in `dir`: whole (the index's size) only.
fn spooled_layers(
    ctx: &JobContext,
    dir: &Path,
    inspect: &ImageInspect,
    codec: Codec,
) -> HashMap<Digest, CompressedLayer> {
    inspect
        .rootfs
        .layers
        .iter()
        .filter_map(|d| {
            let name = spool::spool_name(d, codec);
            let known = spool::index_lookup(ctx, &name)?;
            let len = std::fs::metadata(dir.join(&name)).ok()?.len();
            (len == known.size).then(|| (d.clone(), known))
        })
        .collect()
}

/// The config an earlier run exported, when it is still the engine's image (same ID).
fn spooled_config(dir: &Path, inspect: &ImageInspect) -> Option<Doc<Config>> {
    let bytes = std::fs::read(dir.join(CONFIG_FILE)).ok()?;
    let config: Doc<Config> = doc::parse(bytes, CONFIG_FILE, "image config").ok()?;
    (config.digest.to_string() == inspect.id
        && config.parsed.rootfs.diff_ids == inspect.rootfs.layers)
        .then_some(config)
}

fn write_config(dir: &Path, config: &Doc<Config>) -> Result<(), JobError> {
    let path = dir.join(CONFIG_FILE);
    let tmp = dir.join(".config.partial");
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&config.bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| io_failed(&path, e))
}

/// The image as the plan sees it: the config and the compressed layers in the spool, each
/// read in place like an archive's blobs.
fn resolve(
    what: &str,
    dir: &Path,
    inspect: &ImageInspect,
    config: Doc<Config>,
    layers: &HashMap<Digest, CompressedLayer>,
    codec: Codec,
    wanted: &crate::platform::Platform,
) -> Result<ResolvedImage, JobError> {
    let platform = select::check_config_platform(what, &config.parsed, wanted)
        .map_err(|e| failed(SourceError::from(e)))?;
    let mut out = Vec::new();
    for diff_id in &inspect.rootfs.layers {
        let c = layers.get(diff_id).ok_or_else(|| {
            JobError::failed(format!("internal error: layer {diff_id} is not in the spool after the export: report this as a bug"))
        })?;
        out.push(spool_layer(what, dir, diff_id, c, codec)?);
    }
    Ok(ResolvedImage {
        source: what.to_string(),
        family: Family::Docker2,
        manifest: None,
        config_media_type: media::DOCKER_CONFIG.to_string(),
        config_location: open(&dir.join(CONFIG_FILE), format!("{what}: config"))?,
        platform,
        layers: out,
        skipped: Vec::new(),
        config,
    })
}

/// A spool file read in place, like an archive's blob.
fn open(path: &Path, name: String) -> Result<BlobLocation, JobError> {
    let file = File::open(path).map_err(|e| io_failed(path, e))?;
    let len = file.metadata().map_err(|e| io_failed(path, e))?.len();
    Ok(BlobLocation {
        file: Arc::new(file),
        offset: 0,
        len,
        name: name.into(),
        splice: None,
    })
}

/// The layer `diff_id` as pushed: its compressed file in the spool, read in place.
fn spool_layer(
    what: &str,
    dir: &Path,
    diff_id: &Digest,
    c: &CompressedLayer,
    codec: Codec,
) -> Result<SourceLayer, JobError> {
    let compression = match codec {
        Codec::Gzip => Compression::Gzip,
        Codec::Zstd => Compression::Zstd,
    };
    let path = dir.join(spool::spool_name(diff_id, codec));
    let location = open(&path, format!("{what}: layer {diff_id}"))?;
    Ok(SourceLayer::docker(
        c.digest.clone(),
        compression,
        location,
        diff_id.clone(),
    ))
}

/// One export, run on a blocking thread.
struct Export {
    ctx: JobContext,
    rt: tokio::runtime::Handle,
    tokens: Arc<ThreadTokens>,
    dir: PathBuf,
    codec: Codec,
    image: String,
    inspect: ImageInspect,
    needed: HashSet<Digest>,
    /// Whether the ELF census runs on the stream (not when the job allows a mismatch).
    census: bool,
    /// Where each layer whole in the spool is reported, for its upload to start.
    ready: tokio::sync::mpsc::UnboundedSender<Ready>,
    /// Set when the push gave up (an upload failed): the export ends at its next read.
    abandon: Arc<AtomicBool>,
}

impl Export {
    fn stopped(&self) -> bool {
        self.ctx.is_stop_requested() || self.abandon.load(Ordering::Relaxed)
    }

    fn run(self, reader: impl Read) -> Result<ExportResult, JobError> {
        let threads = self.tokens.threads();
        // Every token, as a spool run's lanes take them all: one stream on every core.
        let _turn = self
            .tokens
            .take_until(self.tokens.lanes(), &|| self.stopped())
            .ok_or(JobError::Stopped)?;
        let read = Arc::new(AtomicU64::new(0));
        let mut made = HashMap::new();
        let mut census = StreamCensus::new();
        let mut progress = Progress {
            last: Instant::now(),
            read: read.clone(),
        };
        let counted = Counted {
            inner: reader,
            read: read.clone(),
            export: &self,
        };
        let mut handler = |input: &mut dyn Read| -> Result<Digest, SourceError> {
            let (diff_id, kept) = self.compress_entry(input, threads, &mut progress, made.len())?;
            if let Some((c, layer_census)) = kept {
                made.insert(diff_id.clone(), c.clone());
                if let Some(lc) = layer_census {
                    census.insert(diff_id.clone(), lc);
                }
                // The upload side is gone only when the push gave up: nothing to tell.
                let _ = self.ready.send((diff_id.clone(), c));
                self.report(&read, made.len());
            }
            Ok(diff_id)
        };
        let walked = export::walk(
            counted,
            &self.image,
            &self.inspect,
            &self.needed,
            &mut handler,
        );
        let walked = match walked {
            Err(_) if self.stopped() => return Err(JobError::Stopped),
            w => w.map_err(|e| JobError::failed(e.to_string()))?,
        };
        self.report(&read, made.len());
        Ok((walked, made, census))
    }

    fn report(&self, read: &AtomicU64, layers_done: usize) {
        self.rt.block_on(self.ctx.export_progress(
            read.load(Ordering::Relaxed),
            self.inspect.size,
            layers_done as u64,
            self.needed.len() as u64,
        ));
    }

    /// Compresses one candidate entry into a temporary file while it streams (and takes its
    /// ELF census on the way, when asked); keeps it (renamed to its spool name, synced, in the
    /// index) when its diff_id is needed.
    fn compress_entry(
        &self,
        input: &mut dyn Read,
        threads: usize,
        progress: &mut Progress,
        layers_done: usize,
    ) -> Result<(Digest, Option<Kept>), SourceError> {
        let tmp = self.dir.join(".layer.partial");
        let file = File::create(&tmp).map_err(|e| SourceError::Io {
            what: tmp.display().to_string(),
            source: e,
        })?;
        let config = CompressConfig {
            codec: self.codec,
            chunk_bytes: SPOOL_CHUNK_BYTES,
            threads,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(PIPE_PIECES_QUEUED);
        let (census_tx, census_rx) = match self.census {
            true => {
                let (t, r) = std::sync::mpsc::sync_channel::<Piece>(PIPE_PIECES_QUEUED);
                (Some(t), Some(r))
            }
            false => (None, None),
        };
        let (totals, layer_census) = std::thread::scope(|s| {
            let compressor = s.spawn(|| {
                let mut out = &file;
                let (input, budget) = (Piped::new(rx), self.tokens.budget());
                compress_stream_within(input, &config, StreamState::new(), budget, |chunk| {
                    if self.stopped() {
                        return Err(Failure::Stopped);
                    }
                    out.write_all(chunk.bytes).map_err(Failure::Io)
                })
            });
            let census = census_rx.map(|rx| s.spawn(|| census_of(rx)));
            let pumped = pump(input, &tx, census_tx.as_ref(), &mut || {
                if progress.due() {
                    self.report(&progress.read, layers_done);
                }
            });
            drop((tx, census_tx));
            let compressed = compressor.join().unwrap_or(Err(Failure::Stopped));
            let census = census.map(|c| {
                c.join()
                    .unwrap_or_else(|_| Err("the census thread ended abnormally".into()))
            });
            pumped.map_err(Failure::Io)?;
            compressed.map(|t| (t, census))
        })
        .map_err(|f| f.into_source(&tmp))?;
        if !self.needed.contains(&totals.diff_id) {
            let _ = std::fs::remove_file(&tmp);
            return Ok((totals.diff_id, None));
        }
        let name = spool::spool_name(&totals.diff_id, self.codec);
        let keep = || -> io::Result<()> {
            file.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(&name))
        };
        keep().map_err(|e| Failure::Io(e).into_source(&tmp))?;
        let c = CompressedLayer {
            digest: totals.blob_digest,
            size: totals.compressed_bytes,
        };
        spool::index_store(&self.ctx, &name, &c);
        Ok((totals.diff_id, Some((c, layer_census))))
    }
}

/// A needed layer compressed into the spool, and its census when it was taken.
type Kept = (CompressedLayer, Option<Result<LayerCensus, String>>);

/// A piece of the export stream, shared by the compressor and the census.
type Piece = Arc<Vec<u8>>;

/// The ELF census of the pieces `rx` receives. The tar ends before the stream does (padding
/// after its end blocks): the receiver is dropped then, and the pump stops sending.
fn census_of(rx: Receiver<Piece>) -> Result<LayerCensus, String> {
    crate::elf::census_tar(Piped::new(rx)).map_err(|e| e.to_string())
}

/// Copies `input` into the pipe in pieces, and to the census while it reads them; `tick`
/// runs after each.
fn pump(
    input: &mut dyn Read,
    tx: &SyncSender<Piece>,
    census: Option<&SyncSender<Piece>>,
    tick: &mut dyn FnMut(),
) -> io::Result<()> {
    let mut census = census;
    loop {
        // Whole pieces: the stream's reads are as small as the engine's HTTP chunks, and a
        // zeroed 1 MiB buffer for each of them cost more CPU than compressing the layer.
        let mut piece = Vec::with_capacity(PIPE_PIECE_BYTES);
        let n = (&mut *input)
            .take(PIPE_PIECE_BYTES as u64)
            .read_to_end(&mut piece)?;
        if n == 0 {
            return Ok(());
        }
        let piece = Arc::new(piece);
        // A census that ended (the tar's end, or not a tar) reads no more.
        if census.is_some_and(|c| c.send(piece.clone()).is_err()) {
            census = None;
        }
        if tx.send(piece).is_err() {
            // The compressor stopped: its error is the one to report.
            return Ok(());
        }
        tick();
    }
}

/// Why compressing an entry stopped.
enum Failure {
    Compress(crate::compress::CompressError),
    Io(io::Error),
    Stopped,
}

impl From<crate::compress::CompressError> for Failure {
    fn from(e: crate::compress::CompressError) -> Self {
        Failure::Compress(e)
    }
}

impl Failure {
    fn into_source(self, path: &Path) -> SourceError {
        let _ = std::fs::remove_file(path);
        let what = path.display().to_string();
        match self {
            Failure::Io(e) => export::read_failed(&what, e),
            Failure::Compress(e) => SourceError::Io {
                what,
                source: io::Error::other(e.to_string()),
            },
            Failure::Stopped => SourceError::Io {
                what,
                source: io::Error::other("the job was stopped"),
            },
        }
    }
}

/// The compressor's input: pieces from the pipe (its reader must be `Send`; the tar entry
/// it comes from is not).
struct Piped {
    rx: Receiver<Piece>,
    piece: Piece,
    at: usize,
}

impl Piped {
    fn new(rx: Receiver<Piece>) -> Piped {
        Piped {
            rx,
            piece: Arc::default(),
            at: 0,
        }
    }
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.piece.len() {
            match self.rx.recv() {
                Ok(p) => (self.piece, self.at) = (p, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The export stream, counting the bytes read; ends with an error when the job stops or the
/// push gave up.
struct Counted<'a, R> {
    inner: R,
    read: Arc<AtomicU64>,
    export: &'a Export,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.export.stopped() {
            return Err(io::Error::other("the job was stopped"));
        }
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// When the next export progress event is due.
struct Progress {
    last: Instant,
    read: Arc<AtomicU64>,
}

impl Progress {
    fn due(&mut self) -> bool {
        if self.last.elapsed() < Duration::from_millis(EXPORT_PROGRESS_EVERY_MS) {
            return false;
        }
        self.last = Instant::now();
        true
    }
}
