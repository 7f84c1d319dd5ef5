//! A `docker-daemon:` source, exported from the engine straight into the spool.
//!
//! ```text
//! endpoint (caller's env) -> GET /version -> GET /images/{name}/json?manifests=1: the
//!   platform chosen from those held, then its inspect, checked
//!   -> layers already in the spool are not written again
//!   -> GET /images/{name}/get, walked once: each needed layer, identified by the digest of
//!      its uncompressed bytes, goes into `<job spool>/export/` as it streams: an uncompressed
//!      one compressed there, a compressed one (the containerd store's) stored as it is; its
//!      uncompressed bytes go to the ELF census on a thread of its own
//!      (an export of every platform, Docker 26 and 27, writes blobs in digest order: the
//!      compressed ones that come before the image's manifest are written aside unread, then
//!      those it names are read back for their diff_id and census, the others deleted)
//!   -> each layer whole in the spool is uploaded at once ([`super::early`]) while the export
//!      goes on with the next one
//!   -> the plan: the config (in memory, then one small file) and the layers, pushed as they
//!      are in the spool
//! ```
//!
//! The engine's export is never stored: extra disk is the compressed image. Uncompressed
//! layers (the classic store) are compressed with the spool's codec, chunk size and codec
//! versions, so they are the bytes a push of the `docker save` archive would upload (same
//! digests, same manifest); the containerd store's compressed blobs (gzip or zstd) are pushed
//! as the engine keeps them, as `docker push` does, under OCI media types. A layer is written
//! to a temporary file and renamed when whole and synced; a rerun (a hoistd restart during the
//! export) exports again and skips every layer already there (those, exported by an earlier
//! run, are read back for the census).

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
use crate::digest::{Algorithm, Digest, Hasher};
use crate::elf::LayerCensus;
use crate::environ::CallerEnv;
use crate::image::doc::{self, Config, Doc, Manifest};
use crate::image::media::{self, Compression, Family};
use crate::image::select;
use crate::plan::{Codec, CompressedLayer, PlanOptions, PushPlan};
use crate::platform::Platform;
use crate::source::engine::client::API_VERSION_PLATFORM_INSPECT;
use crate::source::engine::{
    Endpoint, Engine, EngineError, ImageInspect, TRANSPORT_PREFIX, export, platforms,
};
use crate::source::{BlobLocation, ResolvedImage, SourceError, SourceLayer};

/// The spool subdirectory that holds a job's exported (compressed) layers and config.
pub const EXPORT_DIR: &str = "export";
/// The exported config's file name in [`EXPORT_DIR`].
const CONFIG_FILE: &str = "config.json";
/// The engine's own image manifest (its exact bytes, the containerd store's), in [`EXPORT_DIR`].
const MANIFEST_FILE: &str = "manifest.json";
/// The engine's ID of the image whose config [`CONFIG_FILE`] is, in [`EXPORT_DIR`].
const IMAGE_ID_FILE: &str = "image-id";
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

/// A layer whole in the spool (file synced, renamed, indexed): its diff_id and what it is.
type Ready = (Digest, Spooled);

/// A layer whole in the spool: the blob pushed, its compression and its file in
/// [`EXPORT_DIR`]: either compressed by hoist with the spool's codec, or the engine's own
/// compressed blob stored as it came (named by [`stored_name`]).
#[derive(Debug, Clone)]
struct Spooled {
    blob: CompressedLayer,
    compression: Compression,
    file: String,
}

/// The prefix of the engine's compressed blobs stored as they came.
const STORED_PREFIX: &str = "stored-";

/// The file of an engine's blob stored as it came: its diff_id, digest and compression, so
/// a rerun finds it by listing the directory (it is renamed to this name only once whole and
/// checked).
fn stored_name(diff_id: &Digest, blob: &Digest, compression: Compression) -> String {
    format!(
        "{STORED_PREFIX}{}-{}.{}",
        diff_id.hex(),
        blob.hex(),
        compression.name()
    )
}

/// What a [`stored_name`] says: diff_id, blob digest, compression.
fn parse_stored_name(name: &str) -> Option<(Digest, Digest, Compression)> {
    let (hexes, ext) = name.strip_prefix(STORED_PREFIX)?.split_once('.')?;
    let (diff, blob) = hexes.split_once('-')?;
    let compression = [Compression::Gzip, Compression::Zstd]
        .into_iter()
        .find(|c| c.name() == ext)?;
    let digest = |hex: &str| Digest::parse(&format!("sha256:{hex}")).ok();
    Some((digest(diff)?, digest(blob)?, compression))
}

pub(super) fn failed(e: impl Into<SourceError>) -> JobError {
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
fn missing_layers(inspect: &ImageInspect, spooled: &HashMap<Digest, Spooled>) -> HashSet<Digest> {
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
    let (inspect, what, platform, family) = inspect_checked(&engine, image, opts).await?;
    let dir = ctx.spool_dir().join(EXPORT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_failed(&dir, e))?;
    let codec = opts.compression;
    let mut layers = spooled_layers(ctx, &dir, &inspect, codec);
    let mut docs = spooled_config(&dir, &inspect);
    let needed = missing_layers(&inspect, &layers);
    let mut early = EarlyUploads::new(ctx.clone(), uploader.clone());
    for (d, c) in &layers {
        let layer = spool_layer(&what, &dir, d, c, family)?;
        early.start(position(&inspect, d), &layer).await?;
    }
    let mut census = StreamCensus::new();
    // What the image's index also holds: from the engine's inspect where it lists the index
    // (the export then holds only the platform asked for), else from the export's index.
    let mut left_out = inspect.left_out();
    if docs.is_none() || !needed.is_empty() {
        let reader = engine.export(image, &platform).await.map_err(failed)?;
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
            held: layers
                .iter()
                .flat_map(|(d, s)| [d.clone(), s.blob.digest.clone()])
                .collect(),
            census: !ctx.spec().options.allow_arch_mismatch,
            ready,
            abandon: Arc::new(AtomicBool::new(false)),
        };
        let (walked, made, censused) =
            export_uploading(job, reader, ready_rx, &mut early, (&what, &dir, family)).await?;
        write_config(&dir, &walked, &inspect.id)?;
        docs = Some((walked.config, walked.manifest));
        if left_out.is_empty() {
            left_out = walked.left_out;
        }
        layers.extend(made);
        census = censused;
    }
    let docs = docs.ok_or_else(|| {
        JobError::failed("internal error: no config after the export: report this as a bug")
    })?;
    let mut resolved = resolve(
        (&what, &dir, family),
        &inspect,
        docs,
        &layers,
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

/// The engine's inspect of `image` for the wanted platform, checked before anything is
/// exported; how messages name the source; and the platform to ask the export for (the one
/// the engine holds, as it names it).
pub(super) async fn inspect_checked(
    engine: &Engine,
    image: &str,
    opts: &PlanOptions,
) -> Result<(ImageInspect, String, Platform, Family), JobError> {
    let what = format!("{TRANSPORT_PREFIX}{image}");
    let listed = engine.inspect_manifests(image).await.map_err(failed)?;
    let chosen = platforms::choose(&what, listed.manifests(), &opts.platform)
        .map_err(|e| failed(SourceError::from(e)))?;
    // The containerd image store (it lists manifests) keeps OCI images: pushed under OCI media
    // types, as its own blobs are (zstd among them).
    let family = match listed.manifests().is_empty() {
        true => Family::Docker2,
        false => Family::Oci,
    };
    let inspect = match &chosen {
        None => listed,
        Some(p) if engine.api >= API_VERSION_PLATFORM_INSPECT => {
            // The list of manifests comes from the inspect without a platform only.
            let mut inspect = engine.inspect(image, p).await.map_err(failed)?;
            inspect.manifests = listed.manifests.clone();
            inspect
        }
        Some(p) if p.matches(&listed.platform()) => listed,
        Some(p) => {
            return Err(failed(EngineError::PlatformNotDescribed {
                socket: engine.socket(),
                api: format!("{}.{}", engine.api.0, engine.api.1),
                image: image.to_string(),
                have: listed.platform().to_string(),
                wanted: p.to_string(),
            }));
        }
    };
    select::check_platform(&what, inspect.platform(), &opts.platform)
        .map_err(|e| failed(SourceError::from(e)))?;
    let platform = chosen.unwrap_or_else(|| opts.platform.clone());
    Ok((inspect, what, platform, family))
}

/// What a finished export gives: the walk, the layers it compressed, their census.
type ExportResult = (export::Walked, HashMap<Digest, Spooled>, StreamCensus);

/// How messages name the source, the export directory, the family pushed.
type Place<'a> = (&'a str, &'a Path, Family);

/// Runs `job` on a blocking thread and starts the upload of each layer it reports whole
/// while it goes on. A failed upload ends the export (at its next read); a failed export
/// leaves the uploads to the caller (dropped, they end where they are); a stopped one waits
/// for them to stop at their chunk boundary.
async fn export_uploading(
    job: Export,
    reader: impl Read + Send + 'static,
    mut ready: tokio::sync::mpsc::UnboundedReceiver<Ready>,
    early: &mut EarlyUploads,
    (what, dir, family): Place<'_>,
) -> Result<ExportResult, JobError> {
    let (inspect, abandon) = (job.inspect.clone(), job.abandon.clone());
    let mut task = tokio::task::spawn_blocking(move || job.run(reader));
    let start = async |early: &mut EarlyUploads, (d, c): Ready| {
        let layer = spool_layer(what, dir, &d, &c, family)?;
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

/// The layers an earlier run left in `dir`: the engine's blobs stored as they came, and those
/// hoist compressed (whole: the index's size) only.
fn spooled_layers(
    ctx: &JobContext,
    dir: &Path,
    inspect: &ImageInspect,
    codec: Codec,
) -> HashMap<Digest, Spooled> {
    let stored = stored_layers(dir);
    inspect
        .rootfs
        .layers
        .iter()
        .filter_map(|d| {
            if let Some(s) = stored.get(d) {
                return Some((d.clone(), s.clone()));
            }
            let file = spool::spool_name(d, codec);
            let blob = spool::index_lookup(ctx, &file)?;
            let len = std::fs::metadata(dir.join(&file)).ok()?.len();
            let compression = codec_compression(codec);
            (len == blob.size).then(|| {
                let s = Spooled {
                    blob,
                    compression,
                    file,
                };
                (d.clone(), s)
            })
        })
        .collect()
}

/// The engine's compressed blobs an earlier run stored in `dir`, by diff_id.
fn stored_layers(dir: &Path) -> HashMap<Digest, Spooled> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let (diff_id, digest, compression) = parse_stored_name(&file)?;
            let size = e.metadata().ok()?.len();
            let blob = CompressedLayer { digest, size };
            let s = Spooled {
                blob,
                compression,
                file,
            };
            Some((diff_id, s))
        })
        .collect()
}

fn codec_compression(codec: Codec) -> Compression {
    match codec {
        Codec::Gzip => Compression::Gzip,
        Codec::Zstd => Compression::Zstd,
    }
}

/// The engine's manifest bytes, when its export held one.
type EngineManifestBytes = Option<Vec<u8>>;

/// The config an earlier run exported, when it is still the engine's image: the engine's image
/// ID is the config's digest (classic store) or the one recorded beside it (the containerd
/// store's ID is its index's or manifest's digest), and the layers are the inspect's; with
/// the engine's manifest kept beside it.
fn spooled_config(
    dir: &Path,
    inspect: &ImageInspect,
) -> Option<(Doc<Config>, EngineManifestBytes)> {
    let bytes = std::fs::read(dir.join(CONFIG_FILE)).ok()?;
    let config: Doc<Config> = doc::parse(bytes, CONFIG_FILE, "image config").ok()?;
    let recorded = std::fs::read_to_string(dir.join(IMAGE_ID_FILE)).unwrap_or_default();
    let same_image = config.digest.to_string() == inspect.id || recorded.trim() == inspect.id;
    let manifest = std::fs::read(dir.join(MANIFEST_FILE)).ok();
    (same_image && config.parsed.rootfs.diff_ids == inspect.rootfs.layers)
        .then_some((config, manifest))
}

/// Keeps the exported config, the engine's manifest and the image ID they belong to. A config file already
/// there with the same bytes is left as it is: its identity (inode, mtime) was recorded by
/// the first run, and a rewrite would fail the job's source check.
fn write_config(dir: &Path, walked: &export::Walked, image_id: &str) -> Result<(), JobError> {
    let (config, manifest) = (&walked.config, walked.manifest.as_deref());
    let path = dir.join(CONFIG_FILE);
    let write = |path: &Path, bytes: &[u8]| -> io::Result<()> {
        if std::fs::read(path).is_ok_and(|had| had == bytes) {
            return Ok(());
        }
        let tmp = dir.join(".partial");
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_written = match manifest {
        Some(bytes) => write(&manifest_path, bytes),
        None => std::fs::remove_file(&manifest_path).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }),
    };
    // The ID last: it vouches for the config (and the manifest) only once they are whole.
    manifest_written
        .and_then(|()| write(&path, &config.bytes))
        .and_then(|()| write(&dir.join(IMAGE_ID_FILE), image_id.as_bytes()))
        .map_err(|e| io_failed(&path, e))
}

/// The image as the plan sees it: the config and the layers in the spool, each read in
/// place like an archive's blobs, with the engine's manifest when it names exactly those.
fn resolve(
    (what, dir, family): Place<'_>,
    inspect: &ImageInspect,
    (config, manifest): (Doc<Config>, EngineManifestBytes),
    layers: &HashMap<Digest, Spooled>,
    wanted: &crate::platform::Platform,
) -> Result<ResolvedImage, JobError> {
    let platform = select::check_config_platform(what, &config.parsed, wanted)
        .map_err(|e| failed(SourceError::from(e)))?;
    let mut out = Vec::new();
    for diff_id in &inspect.rootfs.layers {
        let c = layers.get(diff_id).ok_or_else(|| {
            JobError::failed(format!("internal error: layer {diff_id} is not in the spool after the export: report this as a bug"))
        })?;
        out.push(spool_layer(what, dir, diff_id, c, family)?);
    }
    let manifest = manifest.and_then(|m| engine_manifest(what, m, &config, &out));
    Ok(ResolvedImage {
        source: what.to_string(),
        family,
        manifest,
        config_media_type: family.config_media_type().to_string(),
        config_location: open(&dir.join(CONFIG_FILE), format!("{what}: config"))?,
        platform,
        layers: out,
        skipped: Vec::new(),
        config,
    })
}

/// The engine's manifest `bytes` with its media type, when it names exactly the config and
/// the layers pushed (digest, size, media type, in order): then it is pushed unchanged, as
/// `docker push` sends it, and the repository's copy can be found by the digest the engine
/// names ([`super::repush`]). Otherwise (Docker media types on an OCI push, say) hoist's own.
fn engine_manifest(
    what: &str,
    bytes: Vec<u8>,
    config: &Doc<Config>,
    layers: &[SourceLayer],
) -> Option<(Doc<Manifest>, String)> {
    let doc: Doc<Manifest> = doc::parse(bytes, &format!("{what}: manifest"), "manifest").ok()?;
    let m = &doc.parsed;
    let same_layers = m.layers.len() == layers.len()
        && m.layers
            .iter()
            .zip(layers)
            .all(|(d, l)| d.digest == l.digest && d.size == l.size && d.media_type == l.media_type);
    let media_type = m.media_type.clone()?;
    let fits = m.config.digest == config.digest
        && m.config.size == config.bytes.len() as u64
        && media_type == media::OCI_MANIFEST
        && same_layers;
    fits.then_some((doc, media_type))
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

/// The layer `diff_id` as pushed: its compressed file in the spool, read in place, under the
/// media type of `family`.
fn spool_layer(
    what: &str,
    dir: &Path,
    diff_id: &Digest,
    s: &Spooled,
    family: Family,
) -> Result<SourceLayer, JobError> {
    let location = open(&dir.join(&s.file), format!("{what}: layer {diff_id}"))?;
    let mut layer = SourceLayer::docker(
        s.blob.digest.clone(),
        s.compression,
        location,
        diff_id.clone(),
    );
    layer.media_type = media::layer_media_type(family, s.compression, false).to_string();
    Ok(layer)
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
    /// The layers' diff_ids and blob digests the spool has: their entries are skipped unread.
    held: HashSet<Digest>,
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
        self.clear_deferred();
        let read = Arc::new(AtomicU64::new(0));
        let progress = Progress {
            last: Instant::now(),
            read: read.clone(),
        };
        let counted = Counted {
            inner: reader,
            read: read.clone(),
            export: &self,
        };
        let mut sink = Sink {
            export: &self,
            threads,
            made: HashMap::new(),
            census: StreamCensus::new(),
            progress,
            deferred: HashMap::new(),
        };
        let walked = export::walk(
            counted,
            &self.image,
            &self.inspect,
            &self.needed,
            &self.held,
            &mut sink,
        );
        let (made, census) = (sink.made, sink.census);
        let walked = match walked {
            Err(_) if self.stopped() => return Err(JobError::Stopped),
            w => w.map_err(|e| JobError::failed(e.to_string()))?,
        };
        self.report(&read, made.len());
        Ok((walked, made, census))
    }

    /// Removes the deferred blobs a stopped run left: their diff_ids were never checked, so
    /// they are not trusted; the export sends them again (they are not in `held`).
    fn clear_deferred(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(DEFERRED_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn report(&self, read: &AtomicU64, layers_done: usize) {
        self.rt.block_on(self.ctx.export_progress(
            read.load(Ordering::Relaxed),
            self.inspect.size,
            layers_done as u64,
            self.needed.len() as u64,
        ));
    }

    /// The temporary file an entry is written to until it is kept.
    fn partial(&self) -> Result<(PathBuf, File), SourceError> {
        let tmp = self.dir.join(".layer.partial");
        let file = File::create(&tmp).map_err(|e| SourceError::Io {
            what: tmp.display().to_string(),
            source: e,
        })?;
        Ok((tmp, file))
    }

    /// Keeps the whole entry written to `tmp` as `name`: synced, then renamed.
    fn keep(&self, tmp: &Path, file: &File, name: &str) -> Result<(), SourceError> {
        file.sync_all()
            .and_then(|()| std::fs::rename(tmp, self.dir.join(name)))
            .map_err(|e| Failure::Io(e).into_source(tmp))
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
        let (tmp, file) = self.partial()?;
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
        self.keep(&tmp, &file, &name)?;
        let c = CompressedLayer {
            digest: totals.blob_digest,
            size: totals.compressed_bytes,
        };
        spool::index_store(&self.ctx, &name, &c);
        let s = Spooled {
            blob: c,
            compression: codec_compression(self.codec),
            file: name,
        };
        Ok((totals.diff_id, Some((s, layer_census))))
    }

    /// Stores one of the engine's compressed blobs as it comes (the engine's bytes are what
    /// `docker push` sends, and a registry may have them already) while a thread decompresses
    /// it for its diff_id and ELF census; keeps it (synced, renamed to its [`stored_name`])
    /// when that diff_id is needed.
    fn store_entry(
        &self,
        input: &mut dyn Read,
        compression: Compression,
        progress: &mut Progress,
        layers_done: usize,
    ) -> Result<(Digest, Option<Kept>), SourceError> {
        let (tmp, file) = self.partial()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(PIPE_PIECES_QUEUED);
        let (unpack_tx, unpack_rx) = std::sync::mpsc::sync_channel::<Piece>(PIPE_PIECES_QUEUED);
        let census = self.census;
        let ended = || io::Error::other("a thread of the export ended abnormally");
        let done = std::thread::scope(|s| {
            let writer = s.spawn(|| write_hashed(Piped::new(rx), &file, &mut || {}));
            let unpacker =
                s.spawn(move || unpack_hashed(Piped::new(unpack_rx), compression, census));
            let pumped = pump(input, &tx, Some(&unpack_tx), &mut || {
                if progress.due() {
                    self.report(&progress.read, layers_done);
                }
            });
            drop((tx, unpack_tx));
            let written = writer.join().unwrap_or_else(|_| Err(ended()));
            let unpacked = unpacker.join().unwrap_or_else(|_| Err(ended()));
            pumped?;
            Ok::<_, io::Error>((written?, unpacked?))
        });
        let ((digest, size), unpacked) = done.map_err(|e| Failure::Io(e).into_source(&tmp))?;
        let blob = CompressedLayer { digest, size };
        self.keep_stored(&tmp, &file, blob, compression, unpacked)
    }

    /// Keeps the engine's blob `blob`, whole in `tmp`, under its [`stored_name`] when its
    /// diff_id (`unpacked`, with its census) is needed; else removes it.
    fn keep_stored(
        &self,
        tmp: &Path,
        file: &File,
        blob: CompressedLayer,
        compression: Compression,
        (diff_id, layer_census): Unpacked,
    ) -> Result<(Digest, Option<Kept>), SourceError> {
        if !self.needed.contains(&diff_id) {
            let _ = std::fs::remove_file(tmp);
            return Ok((diff_id, None));
        }
        let name = stored_name(&diff_id, &blob.digest, compression);
        self.keep(tmp, file, &name)?;
        let s = Spooled {
            blob,
            compression,
            file: name,
        };
        Ok((diff_id, Some((s, layer_census))))
    }
}

/// A layer's diff_id and its ELF census when it was taken.
type Unpacked = (Digest, Option<Result<LayerCensus, String>>);

/// The prefix of a compressed blob kept unread until the image's manifest is known.
const DEFERRED_PREFIX: &str = ".deferred-";

/// The layers of one export, as the walk hands them over: each needed one kept in the spool,
/// reported for its upload and its census noted.
struct Sink<'e> {
    export: &'e Export,
    threads: usize,
    made: HashMap<Digest, Spooled>,
    census: StreamCensus,
    progress: Progress,
    /// The deferred blobs: their files and what they hold (digest and size as written). A
    /// failed walk leaves their files to the spool's removal or to the rerun's
    /// [`Export::clear_deferred`].
    deferred: HashMap<Digest, (PathBuf, CompressedLayer)>,
}

impl Sink<'_> {
    /// Notes a layer the walk handed over; one kept is reported for its upload.
    fn handled(&mut self, (diff_id, kept): (Digest, Option<Kept>)) -> Digest {
        if let Some((c, layer_census)) = kept {
            self.made.insert(diff_id.clone(), c.clone());
            if let Some(lc) = layer_census {
                self.census.insert(diff_id.clone(), lc);
            }
            // The upload side is gone only when the push gave up: nothing to tell.
            let _ = self.export.ready.send((diff_id.clone(), c));
            self.export.report(&self.progress.read, self.made.len());
        }
        diff_id
    }
}

impl export::LayerSink for Sink<'_> {
    fn layer(
        &mut self,
        input: &mut dyn Read,
        compression: Compression,
    ) -> Result<Digest, SourceError> {
        let (export, done) = (self.export, self.made.len());
        let handled = match compression {
            Compression::None => {
                export.compress_entry(input, self.threads, &mut self.progress, done)?
            }
            c => export.store_entry(input, c, &mut self.progress, done)?,
        };
        Ok(self.handled(handled))
    }

    /// Written as it streams, not synced: until its diff_id is checked a deferred blob is not
    /// part of the spool, and a rerun removes it ([`Export::clear_deferred`]). It takes disk
    /// until the manifest comes: the blobs the engine writes before it (other platforms').
    fn defer(
        &mut self,
        digest: &Digest,
        input: &mut dyn Read,
        _: Compression,
    ) -> Result<bool, SourceError> {
        let path = self
            .export
            .dir
            .join(format!("{DEFERRED_PREFIX}{}", digest.hex()));
        let file = File::create(&path).map_err(|e| Failure::Io(e).into_source(&path))?;
        let (export, done) = (self.export, self.made.len());
        let progress = &mut self.progress;
        let tick = &mut || {
            if progress.due() {
                export.report(&progress.read, done);
            }
        };
        let (written, size) =
            write_hashed(input, &file, tick).map_err(|e| Failure::Io(e).into_source(&path))?;
        let blob = CompressedLayer {
            digest: written,
            size,
        };
        self.deferred.insert(digest.clone(), (path, blob));
        Ok(true)
    }

    fn take(&mut self, digest: &Digest, compression: Compression) -> Result<Digest, SourceError> {
        let (path, blob) = self
            .deferred
            .remove(digest)
            .ok_or_else(|| export::not_kept(digest))?;
        let unpacked = File::open(&path)
            .and_then(|file| {
                // Read through `Counted` (not counted in the progress: read once already)
                // for its end at a stop.
                let input = Counted {
                    inner: &file,
                    read: Arc::default(),
                    export: self.export,
                };
                let unpacked = unpack_hashed(input, compression, self.export.census)?;
                Ok((file, unpacked))
            })
            .map_err(|e| Failure::Io(e).into_source(&path));
        let (file, unpacked) = unpacked?;
        let handled = self
            .export
            .keep_stored(&path, &file, blob, compression, unpacked)?;
        Ok(self.handled(handled))
    }

    fn discard(&mut self, digest: &Digest) {
        if let Some((path, _)) = self.deferred.remove(digest) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `input` to `file`, running `tick` after each piece; its sha256 and length.
fn write_hashed(
    mut input: impl Read,
    mut file: &File,
    tick: &mut dyn FnMut(),
) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut size = 0u64;
    let mut buf = vec![0u8; PIPE_PIECE_BYTES];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.finish(), size));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        size += n as u64;
        tick();
    }
}

/// The sha256 of `input`'s uncompressed bytes (its diff_id), and their ELF census when asked.
fn unpack_hashed(
    input: impl Read,
    compression: Compression,
    census: bool,
) -> io::Result<(Digest, Option<Result<LayerCensus, String>>)> {
    let inner = export::decoder(input, compression, "a layer of the export")
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut reader = HashingReader {
        inner,
        hasher: Hasher::new(Algorithm::Sha256),
    };
    let census = census.then(|| crate::elf::census_tar(&mut reader).map_err(|e| e.to_string()));
    // The census stops at the tar's end: the rest (padding) is part of the diff_id too.
    io::copy(&mut reader, &mut io::sink())?;
    Ok((reader.hasher.finish(), census))
}

/// A reader that hashes what it reads.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A needed layer whole in the spool, and its census when it was taken.
type Kept = (Spooled, Option<Result<LayerCensus, String>>);

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
