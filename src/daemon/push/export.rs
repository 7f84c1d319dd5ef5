//! A `docker-daemon:` source, exported from the engine straight into the spool.
//!
//! ```text
//! endpoint (caller's env) -> GET /version -> GET /images/{name}/json: platform check
//!   -> layers already in the spool (index + file length) are not compressed again
//!   -> GET /images/{name}/get, walked once: each needed layer, identified by the digest of
//!      its uncompressed bytes, is compressed as it streams into `<job spool>/export/`
//!   -> the plan: the config (in memory, then one small file) and the compressed layers,
//!      pushed as they are
//! ```
//!
//! The engine's export is never stored: extra disk is the compressed image. The layers are
//! compressed with the spool's codec, chunk size and codec versions, so they are the bytes a
//! push of the `docker save` archive would upload (same digests, same manifest). A layer is
//! written to a temporary file and renamed when whole and synced, and recorded in the spool
//! index; a rerun (a hoistd restart during the export) exports again and skips every layer
//! already there.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::spool::{self, SPOOL_CHUNK_BYTES, ThreadTokens};
use crate::compress::{CompressConfig, StreamState, compress_stream};
use crate::daemon::job::{JobContext, JobError};
use crate::digest::Digest;
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

fn failed(e: impl Into<SourceError>) -> JobError {
    JobError::failed(e.into().to_string())
}

fn io_failed(path: &Path, e: io::Error) -> JobError {
    JobError::failed(format!(
        "cannot write the exported layer {}: {e}: check the free space of the state directory, then `hoist retry` the job",
        path.display()
    ))
}

/// Plans a `docker-daemon:IMAGE` job (`image` is what follows the prefix).
pub async fn plan_job(
    ctx: &JobContext,
    tokens: &Arc<ThreadTokens>,
    image: &str,
) -> Result<PushPlan, JobError> {
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
    plan(ctx, tokens, &env, &image, &opts).await
}

/// Plans the push of `image` from the engine the caller's environment `env` names: checks
/// its platform, exports what the spool lacks and plans from the spool's files.
pub async fn plan(
    ctx: &JobContext,
    tokens: &Arc<ThreadTokens>,
    env: &CallerEnv,
    image: &str,
    opts: &PlanOptions,
) -> Result<PushPlan, JobError> {
    let endpoint = Endpoint::from_env(env).map_err(failed)?;
    let engine = Engine::connect(endpoint).await.map_err(failed)?;
    let inspect = engine
        .inspect(image, &opts.platform)
        .await
        .map_err(failed)?;
    let what = format!("{TRANSPORT_PREFIX}{image}");
    select::check_platform(&what, inspect.platform(), &opts.platform)
        .map_err(|e| failed(SourceError::from(e)))?;
    let dir = ctx.spool_dir().join(EXPORT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_failed(&dir, e))?;
    let codec = opts.compression;
    let mut layers = spooled_layers(ctx, &dir, &inspect, codec);
    let mut config = spooled_config(&dir, &inspect);
    let needed: HashSet<Digest> = inspect
        .rootfs
        .layers
        .iter()
        .filter(|d| !layers.contains_key(*d))
        .cloned()
        .collect();
    if config.is_none() || !needed.is_empty() {
        let reader = engine.export(image, &opts.platform).await.map_err(failed)?;
        let job = Export {
            ctx: ctx.clone(),
            rt: tokio::runtime::Handle::current(),
            tokens: tokens.clone(),
            dir: dir.clone(),
            codec,
            image: image.to_string(),
            inspect: inspect.clone(),
            needed,
        };
        let (walked, made) = tokio::task::spawn_blocking(move || job.run(reader))
            .await
            .map_err(|e| {
                JobError::failed(format!(
                    "internal error: the export stopped abnormally ({e}): report this as a bug"
                ))
            })??;
        write_config(&dir, &walked.config)?;
        config = Some(walked.config);
        layers.extend(made);
    }
    let config = config.ok_or_else(|| {
        JobError::failed("internal error: no config after the export: report this as a bug")
    })?;
    let resolved = resolve(
        &what,
        &dir,
        &inspect,
        config,
        &layers,
        codec,
        &opts.platform,
    )?;
    PushPlan::from_resolved(resolved, opts).map_err(|e| JobError::failed(e.to_string()))
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
    let compression = match codec {
        Codec::Gzip => Compression::Gzip,
        Codec::Zstd => Compression::Zstd,
    };
    let open = |path: PathBuf, name: String| -> Result<BlobLocation, JobError> {
        let file = File::open(&path).map_err(|e| io_failed(&path, e))?;
        let len = file.metadata().map_err(|e| io_failed(&path, e))?.len();
        Ok(BlobLocation {
            file: Arc::new(file),
            offset: 0,
            len,
            name: name.into(),
            splice: None,
        })
    };
    let mut out = Vec::new();
    for diff_id in &inspect.rootfs.layers {
        let c = layers.get(diff_id).ok_or_else(|| {
            JobError::failed(format!("internal error: layer {diff_id} is not in the spool after the export: report this as a bug"))
        })?;
        let name = spool::spool_name(diff_id, codec);
        let location = open(dir.join(&name), format!("{what}: layer {diff_id}"))?;
        out.push(SourceLayer::docker(
            c.digest.clone(),
            compression,
            location,
            diff_id.clone(),
        ));
    }
    Ok(ResolvedImage {
        source: what.to_string(),
        family: Family::Docker2,
        manifest: None,
        config_media_type: media::DOCKER_CONFIG.to_string(),
        config_location: open(dir.join(CONFIG_FILE), format!("{what}: config"))?,
        platform,
        layers: out,
        skipped: Vec::new(),
        config,
    })
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
}

impl Export {
    fn run(
        self,
        reader: impl Read,
    ) -> Result<(export::Walked, HashMap<Digest, CompressedLayer>), JobError> {
        let threads = self.tokens.threads();
        let _turn = self
            .tokens
            .take_until(threads, &|| self.ctx.is_stop_requested())
            .ok_or(JobError::Stopped)?;
        let read = Arc::new(AtomicU64::new(0));
        let mut made = HashMap::new();
        let mut progress = Progress {
            last: Instant::now(),
            read: read.clone(),
        };
        let counted = Counted {
            inner: reader,
            read: read.clone(),
            ctx: &self.ctx,
        };
        let mut handler = |input: &mut dyn Read| -> Result<Digest, SourceError> {
            let (diff_id, kept) = self.compress_entry(input, threads, &mut progress, made.len())?;
            if let Some(c) = kept {
                made.insert(diff_id.clone(), c);
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
            Err(_) if self.ctx.is_stop_requested() => return Err(JobError::Stopped),
            w => w.map_err(|e| JobError::failed(e.to_string()))?,
        };
        self.report(&read, made.len());
        Ok((walked, made))
    }

    fn report(&self, read: &AtomicU64, layers_done: usize) {
        self.rt.block_on(self.ctx.export_progress(
            read.load(Ordering::Relaxed),
            self.inspect.size,
            layers_done as u64,
            self.needed.len() as u64,
        ));
    }

    /// Compresses one candidate entry into a temporary file while it streams; keeps it (renamed
    /// to its spool name, synced, in the index) when its diff_id is needed.
    fn compress_entry(
        &self,
        input: &mut dyn Read,
        threads: usize,
        progress: &mut Progress,
        layers_done: usize,
    ) -> Result<(Digest, Option<CompressedLayer>), SourceError> {
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
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_PIECES_QUEUED);
        let totals = std::thread::scope(|s| {
            let compressor = s.spawn(|| {
                let mut out = &file;
                let stop = || self.ctx.is_stop_requested();
                compress_stream(Piped::new(rx), &config, StreamState::new(), |chunk| {
                    if stop() {
                        return Err(Failure::Stopped);
                    }
                    out.write_all(chunk.bytes).map_err(Failure::Io)
                })
            });
            let pumped = pump(input, &tx, &mut || {
                if progress.due() {
                    self.report(&progress.read, layers_done);
                }
            });
            drop(tx);
            let compressed = compressor.join().unwrap_or(Err(Failure::Stopped));
            pumped.map_err(Failure::Io)?;
            compressed
        });
        let totals = totals.map_err(|f| f.into_source(&tmp))?;
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
        Ok((totals.diff_id, Some(c)))
    }
}

/// Copies `input` into the pipe in pieces; `tick` runs after each.
fn pump(
    input: &mut dyn Read,
    tx: &std::sync::mpsc::SyncSender<Vec<u8>>,
    tick: &mut dyn FnMut(),
) -> io::Result<()> {
    loop {
        let mut piece = vec![0; PIPE_PIECE_BYTES];
        let n = match input.read(&mut piece) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        piece.truncate(n);
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
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

impl Piped {
    fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> Piped {
        Piped {
            rx,
            piece: Vec::new(),
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

/// The export stream, counting the bytes read; ends with an error when the job stops.
struct Counted<'a, R> {
    inner: R,
    read: Arc<AtomicU64>,
    ctx: &'a JobContext,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ctx.is_stop_requested() {
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
