//! The spool: compressed output of the layers hoist compresses, written chunk by chunk while
//! the uploads read what is already there.
//!
//! One file per layer in the job's spool directory, named by what determines its bytes
//! (diff_id, codec, compressor chunk size, codec versions): compression is deterministic, so a
//! resumed upload re-sends identical bytes. The file holds the compressed chunks only; stored
//! (incompressible) chunks are described in its map and read from the source
//! ([`super::spool_view`]). Every [`SPOOL_SYNC_CHUNKS`] chunks (and at the end) the file and
//! its map are synced, the progress (chunks done, stream bytes) recorded and the new bytes
//! offered to the uploads; a rerun cuts both to the recorded chunks and continues at the next
//! one, re-hashing the kept stream to restore the running digests.
//!
//! A small index (`<spool root>/index/`) remembers, per layer identity, the digest and size the
//! compression produced, so a later push of the same layer can ask the registry whether it has
//! the blob before compressing it again.
//!
//! When a job finishes, its compressed files move to `<spool root>/cache/` (same names), kept
//! up to [`SPOOL_CACHE_BYTES_MAX`], oldest out first; a later job needing the same layer takes
//! the file back instead of compressing (the registry checks the digest at the final PUT).
//! A failed, cancelled or deleted job's spool is removed with it (a retry compresses the same
//! bytes again); a paused one keeps it. Before a run writes here, [`super::disk`] checks that
//! the disk can take it.

use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::spool_view::{SpoolView, ViewReader, map_lengths, map_path};
use crate::compress::{
    CODEC_VERSIONS, COMPRESS_CHUNK_BYTES_DEFAULT, ChunkBudget, Codec, CompressConfig,
    CompressError, StreamState, compress_stream_within,
};
use crate::daemon::job::{JobContext, JobError};
use crate::digest::Digest;
use crate::plan::{CompressedLayer, PlannedLayer};
use crate::store::BlobRecord;

/// Compressor input chunk size: part of the output's identity, so fixed.
pub const SPOOL_CHUNK_BYTES: usize = COMPRESS_CHUNK_BYTES_DEFAULT;
/// How often a compressor waiting for compression threads asks whether its job stopped.
pub const TOKENS_STOP_POLL_MS: u64 = 50;
/// Compressor chunks written between two syncs of the spool file; the progress is recorded
/// and offered to the uploads at each sync. A crash costs at most this many chunks of
/// recompression (8 MiB of input); a sync and a store commit for every 4 MiB chunk showed up
/// in the push's profile on incompressible layers.
pub const SPOOL_SYNC_CHUNKS: u64 = 2;
/// Index entries kept at most; the oldest are removed beyond it.
pub const SPOOL_INDEX_ENTRIES_MAX: usize = 4096;

/// Compressor chunk buffer pairs (a chunk's input and its output, about 8 MiB) the daemon
/// holds at once, per core: what one stream on every core needs to overlap reading,
/// compressing and writing. Every compression of the daemon (spooled layers side by side,
/// split parts, the export of a `docker-daemon:` source, every job) draws its buffers from one
/// [`ChunkBudget`] of this many pairs per core, so the compressors' memory is bounded by the
/// machine, not by how many layers compress or how many upload connections there are: on two
/// cores, four pairs, 32.4 MiB.
pub const SPOOL_BUFFER_PAIRS_PER_CORE: usize = 2;

/// Compressed layers kept for later pushes, in bytes; the oldest go first beyond it.
pub const SPOOL_CACHE_BYTES_MAX: u64 = 4 << 30;

fn cache_dir(ctx: &JobContext) -> PathBuf {
    ctx.spool_dir()
        .parent()
        .unwrap_or(ctx.spool_dir())
        .join("cache")
}

/// Takes a cached compressed layer into the job's spool when the cache holds one whose size
/// matches the index; returns its digest and size.
pub fn take_cached(ctx: &JobContext, name: &str, dest: &Path) -> Option<CompressedLayer> {
    let known = index_lookup(ctx, name)?;
    let cached = cache_dir(ctx).join(name);
    let lengths = map_lengths(&map_path(&cached)).ok()?;
    if lengths.len != known.size || std::fs::metadata(&cached).ok()?.len() != lengths.spooled {
        return None;
    }
    std::fs::rename(map_path(&cached), map_path(dest)).ok()?;
    std::fs::rename(&cached, dest).ok()?;
    Some(known)
}

/// Moves a finished job's compressed layers into the cache, then trims the cache to
/// [`SPOOL_CACHE_BYTES_MAX`] (oldest first).
pub fn keep_in_cache(ctx: &JobContext, names: &[String]) {
    let dir = cache_dir(ctx);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for name in names {
        let spool = ctx.spool_dir().join(name);
        let _ = std::fs::rename(map_path(&spool), map_path(&dir.join(name)));
        let _ = std::fs::rename(&spool, dir.join(name));
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    // A spool file and its map go together (a lone map or spool file is of no use).
    let mut files: Vec<_> = entries
        .flatten()
        .filter(|e| e.path().extension().is_none_or(|x| x != "map"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let map_len = std::fs::metadata(map_path(&e.path())).map_or(0, |m| m.len());
            Some((m.modified().ok()?, m.len() + map_len, e.path()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (_, len, path) in files {
        if total <= SPOOL_CACHE_BYTES_MAX {
            break;
        }
        let _ = std::fs::remove_file(map_path(&path));
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// How far a layer's compression is, as the uploads see it.
#[derive(Debug, Clone, Default)]
pub struct Avail {
    /// Bytes of the compressed stream that are final (written and synced; see [`SpoolView`]).
    pub bytes: u64,
    /// Set once the whole layer is compressed.
    pub done: Option<CompressedLayer>,
    /// Set when compression failed or stopped; the upload gives up on the layer.
    pub error: Option<JobError>,
}

/// One layer to compress and the channels around it.
pub struct SpoolLayer {
    pub layer: PlannedLayer,
    pub codec: Codec,
    pub record: Option<BlobRecord>,
    pub path: PathBuf,
    /// The stream as the upload reads it; this layer's compressor fills it.
    pub view: Arc<SpoolView>,
    pub tx: watch::Sender<Avail>,
    /// Set by the upload when the registry has the blob already: compression is not needed.
    pub skip: Arc<AtomicBool>,
}

/// The file name of a layer's compressed bytes (and of its index entry).
pub fn spool_name(diff_id: &Digest, codec: Codec) -> String {
    let level = match codec {
        Codec::Gzip => crate::compress::GZIP_LEVEL.to_string(),
        Codec::Zstd => crate::compress::ZSTD_LEVEL.to_string(),
    };
    format!(
        "{}-{}{}-{}-{}-{}",
        diff_id.hex(),
        codec,
        level,
        SPOOL_CHUNK_BYTES,
        CODEC_VERSIONS.libzstd,
        CODEC_VERSIONS.zlib_rs_crate
    )
}

fn index_dir(ctx: &JobContext) -> PathBuf {
    ctx.spool_dir()
        .parent()
        .unwrap_or(ctx.spool_dir())
        .join("index")
}

/// What an earlier push recorded for this layer identity: the compressed digest and size.
pub fn index_lookup(ctx: &JobContext, name: &str) -> Option<CompressedLayer> {
    let text = std::fs::read_to_string(index_dir(ctx).join(name)).ok()?;
    let (d, s) = text.trim().split_once(' ')?;
    Some(CompressedLayer {
        digest: d.parse().ok()?,
        size: s.parse().ok()?,
    })
}

/// Records what compressing layer identity `name` produced (see [`index_lookup`]).
pub fn index_store(ctx: &JobContext, name: &str, c: &CompressedLayer) {
    let dir = index_dir(ctx);
    let write = || -> io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{} {}\n", c.digest, c.size))?;
        std::fs::rename(&tmp, dir.join(name))?;
        // The cap: drop the oldest entries (by mtime) beyond it.
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if entries.len() > SPOOL_INDEX_ENTRIES_MAX {
            entries.sort();
            for (_, p) in &entries[..entries.len() - SPOOL_INDEX_ENTRIES_MAX] {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    };
    if let Err(e) = write() {
        // Only an optimisation for later pushes: worth a log line, not a failure.
        tracing::warn!(error = %e, "cannot record the compressed layer in the spool index");
    }
}

/// Why the sink stopped a stream.
enum SinkError {
    Compress(CompressError),
    Io(io::Error),
    Job(JobError),
    Skipped,
}

impl From<CompressError> for SinkError {
    fn from(e: CompressError) -> Self {
        SinkError::Compress(e)
    }
}

/// Compression tokens, daemon-wide: a layer's compression takes its share of them first (see
/// [`run`]), so jobs take turns and the compression threads stay about one per token. There
/// is one token per core ([`daemon_compress_threads_default`] unless set), or one per upload
/// connection when there are more connections than cores. The tokens do not bound the
/// memory: every compression draws its chunk buffers from [`ThreadTokens::budget`], whose
/// bytes are fixed by the cores ([`SPOOL_BUFFER_PAIRS_PER_CORE`]).
pub struct ThreadTokens {
    /// Most threads one layer's compression uses: one per core.
    threads: usize,
    /// Tokens in all, at least `threads`.
    lanes: usize,
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    /// The chunk buffers of every compression that holds these tokens.
    budget: ChunkBudget,
}

impl Default for ThreadTokens {
    fn default() -> Self {
        ThreadTokens::new(daemon_compress_threads_default())
    }
}

/// What one [`ThreadTokens::take_until`] holds; gives the tokens back when dropped.
pub struct Tokens<'a> {
    pool: &'a ThreadTokens,
    n: usize,
}

impl ThreadTokens {
    /// `threads` compression threads for the whole daemon (at least one).
    pub fn new(threads: usize) -> ThreadTokens {
        ThreadTokens::with_lanes(threads, threads)
    }

    /// Up to `threads` threads for one layer and up to `lanes` layers compressing at once,
    /// one thread each when they are more than `threads`.
    pub fn with_lanes(threads: usize, lanes: usize) -> ThreadTokens {
        let threads = threads.max(1);
        let lanes = lanes.max(threads);
        ThreadTokens {
            threads,
            lanes,
            free: std::sync::Mutex::new(lanes),
            freed: std::sync::Condvar::new(),
            budget: ChunkBudget::pairs(SPOOL_BUFFER_PAIRS_PER_CORE * threads, SPOOL_CHUNK_BYTES),
        }
    }

    /// The memory budget every compression's chunk buffers are drawn from.
    pub fn budget(&self) -> &ChunkBudget {
        &self.budget
    }

    /// The most threads one layer's compression uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The most layers that compress at once: how many tokens there are in all.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Takes `n` tokens if they are free now.
    pub fn try_take(&self, n: usize) -> Option<Tokens<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        (*free >= n).then(|| {
            *free -= n;
            Tokens { pool: self, n }
        })
    }

    /// Blocks until `n` tokens are free and takes them, or until `stop` says so (`None`):
    /// another job's layer may hold the tokens for minutes, and a stop must not wait for it.
    pub fn take_until(&self, n: usize, stop: &dyn Fn() -> bool) -> Option<Tokens<'_>> {
        let poll = std::time::Duration::from_millis(TOKENS_STOP_POLL_MS);
        // A poisoned lock only means a compressor panicked: the count is still right.
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free < n {
            if stop() {
                return None;
            }
            free = self
                .freed
                .wait_timeout(free, poll)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *free -= n;
        Some(Tokens { pool: self, n })
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        *self.pool.free.lock().unwrap_or_else(|p| p.into_inner()) += self.n;
        self.pool.freed.notify_all();
    }
}

/// Compression threads daemon-wide by default: one per core (the README's promise). Their
/// chunk buffers are [`SPOOL_BUFFER_PAIRS_PER_CORE`] pairs per thread, daemon-wide.
pub fn daemon_compress_threads_default() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Compresses `layers` into the spool (blocking: run on a blocking thread). With several
/// layers to compress, up to [`ThreadTokens::lanes`] run side by side (one per upload
/// connection when there are more connections than cores), sharing the cores' threads, one
/// thread each at least: a cheap layer (incompressible data, stored) then streams to the
/// registry while a costly one (text) is still compressing, so the registry's CPU work overlaps
/// ours instead of following it; and every upload connection has a layer streaming into it as
/// it compresses, instead of waiting for a layer's turn (the parts of a split layer, each
/// slower to upload over its connection than to compress, would otherwise go two by two on two
/// cores while two connections idle). A single layer gets every thread. Each layer's watch
/// channel follows its progress. Stops at the first error, which is also sent to every layer
/// not done.
pub fn run(
    ctx: &JobContext,
    rt: &tokio::runtime::Handle,
    tokens: &ThreadTokens,
    layers: &[SpoolLayer],
) {
    let todo: Vec<&SpoolLayer> = layers
        .iter()
        .filter(|l| !l.skip.load(Ordering::Relaxed))
        .collect();
    let lanes = todo.len().clamp(1, tokens.lanes());
    // Each lane's layer takes an equal share of every token, so a run takes them all, as one
    // layer on every core did: another job's compression waits for a layer to finish. The
    // threads are the cores' split over the lanes, one at least.
    let cost = tokens.lanes() / lanes;
    let per_layer = (tokens.threads() / lanes).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let lane = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(l) = todo.get(i) else {
                return;
            };
            if failed.load(Ordering::Relaxed) || l.skip.load(Ordering::Relaxed) {
                continue;
            }
            let result = compress_in_turn(ctx, rt, tokens, l, cost, per_layer);
            if let Err(e) = result {
                failed.store(true, Ordering::Relaxed);
                for rest in &todo[i..] {
                    rest.tx.send_modify(|a| {
                        if a.done.is_none() {
                            a.error = Some(e.clone());
                        }
                    });
                }
                return;
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..lanes {
            s.spawn(lane);
        }
        lane();
    });
}

/// Compresses one layer on `threads` threads once `cost` tokens are free; a stop ends the wait.
fn compress_in_turn(
    ctx: &JobContext,
    rt: &tokio::runtime::Handle,
    tokens: &ThreadTokens,
    l: &SpoolLayer,
    cost: usize,
    threads: usize,
) -> Result<(), JobError> {
    if ctx.is_stop_requested() {
        return Err(JobError::Stopped);
    }
    let _turn = match tokens.try_take(cost) {
        Some(t) => t,
        None => {
            rt.block_on(ctx.waiting(Some(
                "waiting for another job's compression to finish (compression threads are shared daemon-wide)".into(),
            )));
            let t = tokens.take_until(cost, &|| ctx.is_stop_requested());
            rt.block_on(ctx.waiting(None));
            t.ok_or(JobError::Stopped)?
        }
    };
    compress_layer(ctx, rt, l, tokens.budget(), threads)
}

/// A spool write or read failed: a full disk with its figures (`spooled` bytes of the layer's
/// stream written, `rest` input bytes still to compress), anything else as it is.
fn io_failed(path: &Path, e: io::Error, spooled: u64, rest: u64) -> JobError {
    if super::disk::is_disk_full(&e) {
        return super::disk::disk_full(path, spooled, rest);
    }
    JobError::failed(format!(
        "cannot write the spool file {}: {e}: check the free space of the state directory, then `hoist retry` the job",
        path.display()
    ))
}

fn compress_layer(
    ctx: &JobContext,
    rt: &tokio::runtime::Handle,
    l: &SpoolLayer,
    budget: &ChunkBudget,
    threads: usize,
) -> Result<(), JobError> {
    let len = l.layer.source.location.len;
    let open = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_failed(path, e, 0, len))
    };
    let spool = Arc::new(open(&l.path)?);
    let mut map = open(&map_path(&l.path))?;
    let Some((chunks, bytes)) = resume_point(l, &spool, &mut map)? else {
        return Ok(());
    };
    let state = if chunks == 0 {
        StreamState::new()
    } else {
        StreamState::resume(
            l.codec,
            chunks,
            SPOOL_CHUNK_BYTES,
            l.layer.source.location.reader(),
            ViewReader::new(&l.view),
        )
        .map_err(|e| {
            let name = &l.layer.source.location.name;
            JobError::failed(format!("cannot resume compressing {name}: {e}"))
        })?
    };
    let file: &std::fs::File = &spool;
    let mut seek: &std::fs::File = file;
    seek.seek(SeekFrom::End(0))
        .map_err(|e| io_failed(&l.path, e, bytes, len))?;
    l.tx.send_modify(|a| a.bytes = bytes);
    let sink = Sink {
        ctx,
        rt,
        l,
        file,
        map: &map,
        budget,
    };
    let done = sink.write(threads, chunks, bytes, state)?;
    if let Some(done) = done {
        rt.block_on(ctx.blob_compressed(&l.layer.source.digest, done.digest.clone(), done.size))?;
        index_store(ctx, &spool_name(&l.layer.diff_id, l.codec), &done);
        l.tx.send_modify(|a| {
            a.bytes = done.size;
            a.done = Some(done.clone());
        });
    }
    Ok(())
}

/// Where the layer's compression goes on: `(chunks, bytes)` done, or `None` when the stream
/// is whole already (a rerun after the compression finished; the uploads are told).
fn resume_point(
    l: &SpoolLayer,
    spool: &Arc<std::fs::File>,
    map: &mut std::fs::File,
) -> Result<Option<(u64, u64)>, JobError> {
    if let Some(p) = l.record.as_ref().and_then(|r| r.pushed.clone())
        && l.view
            .load(spool.clone(), map, None, Some(p.size_bytes))
            .map_err(|e| io_failed(&l.path, e, 0, l.layer.source.location.len))?
    {
        let done = CompressedLayer {
            digest: p.digest,
            size: p.size_bytes,
        };
        l.tx.send_modify(|a| {
            a.bytes = done.size;
            a.done = Some(done.clone());
        });
        return Ok(None);
    }
    let (chunks, bytes) = l
        .record
        .as_ref()
        .filter(|r| r.pushed.is_none())
        .map_or((0, 0), |r| (r.chunks_done, r.compressed_bytes));
    // Anything past the recorded chunks was written after the last durable one: cut off. Files
    // holding less than the record (removed by hand): the layer starts over.
    let kept = l
        .view
        .load(spool.clone(), map, Some(chunks), Some(bytes))
        .map_err(|e| io_failed(&l.path, e, 0, l.layer.source.location.len))?;
    Ok(Some(if kept { (chunks, bytes) } else { (0, 0) }))
}

/// Where one layer's compressed chunks go: the spool file, its map, the view and the job.
struct Sink<'a> {
    ctx: &'a JobContext,
    rt: &'a tokio::runtime::Handle,
    l: &'a SpoolLayer,
    file: &'a std::fs::File,
    map: &'a std::fs::File,
    /// The daemon's chunk buffers, shared with every other compression.
    budget: &'a ChunkBudget,
}

impl Sink<'_> {
    /// Compresses the layer from chunk `chunks` (`bytes` of stream written before) into the
    /// spool; returns what it produced, or `None` when the upload no longer needs it.
    fn write(
        &self,
        threads: usize,
        chunks: u64,
        bytes: u64,
        state: StreamState,
    ) -> Result<Option<CompressedLayer>, JobError> {
        let l = self.l;
        let name = &l.layer.source.location.name;
        let input = l
            .layer
            .source
            .location
            .reader_at(chunks * SPOOL_CHUNK_BYTES as u64);
        let config = CompressConfig {
            codec: l.codec,
            chunk_bytes: SPOOL_CHUNK_BYTES,
            threads,
        };
        let mut written = bytes;
        let mut next_chunk = chunks;
        let mut spool_dirty = false;
        let totals = compress_stream_within(input, &config, state, self.budget, |out| {
            next_chunk = out.index;
            self.chunk(out, &mut written, &mut spool_dirty)
        });
        let totals = match totals {
            Ok(t) => t,
            Err(SinkError::Skipped) => return Ok(None),
            Err(SinkError::Job(e)) => return Err(e),
            Err(SinkError::Io(e)) => {
                let rest = (l.layer.source.location.len)
                    .saturating_sub(next_chunk * SPOOL_CHUNK_BYTES as u64);
                return Err(io_failed(&l.path, e, written, rest));
            }
            Err(SinkError::Compress(e)) => {
                return Err(JobError::failed(format!("cannot compress {name}: {e}")));
            }
        };
        if totals.diff_id != l.layer.diff_id {
            return Err(JobError::failed(format!(
                "layer {name} changed since the job was planned (its content hashes to {}, not {}): submit the push again",
                totals.diff_id, l.layer.diff_id
            )));
        }
        Ok(Some(CompressedLayer {
            digest: totals.blob_digest.clone(),
            size: totals.compressed_bytes,
        }))
    }

    /// Takes one compressed chunk: appended, and every [`SPOOL_SYNC_CHUNKS`] synced, recorded
    /// and offered to the upload.
    fn chunk(
        &self,
        out: crate::compress::ChunkOut<'_>,
        written: &mut u64,
        spool_dirty: &mut bool,
    ) -> Result<(), SinkError> {
        let l = self.l;
        if l.skip.load(Ordering::Relaxed) {
            return Err(SinkError::Skipped);
        }
        if self.ctx.is_stop_requested() {
            return Err(SinkError::Job(JobError::Stopped));
        }
        let total_chunks = l
            .layer
            .source
            .location
            .len
            .div_ceil(SPOOL_CHUNK_BYTES as u64);
        if !out.stored {
            super::disk::keep_reserve(&self.l.path, out.bytes.len()).map_err(SinkError::Io)?;
        }
        // Stored chunks are only described in the map (see `spool_view`): no copy to write.
        *spool_dirty |= !out.stored;
        l.view
            .append(out.index, out.stored, out.bytes, self.file, self.map)
            .map_err(SinkError::Io)?;
        *written += out.bytes.len() as u64;
        if (out.index + 1).is_multiple_of(SPOOL_SYNC_CHUNKS) || out.index + 1 >= total_chunks {
            // Durable before it is recorded or sent: a rerun trusts the recorded chunks, and
            // the map says where their bytes are.
            if std::mem::take(spool_dirty) {
                self.file.sync_data().map_err(SinkError::Io)?;
            }
            self.map.sync_data().map_err(SinkError::Io)?;
            let digest = &l.layer.source.digest;
            self.rt
                .block_on(self.ctx.compress_progress(digest, out.index + 1, *written))
                .map_err(SinkError::Job)?;
            l.tx.send_modify(|a| a.bytes = *written);
        }
        Ok(())
    }
}
