//! The spool: compressed output of the layers hoist compresses, written chunk by chunk while
//! the uploads read what is already there.
//!
//! One file per layer in the job's spool directory, named by what determines its bytes
//! (diff_id, codec, compressor chunk size, codec versions): compression is deterministic, so a
//! resumed upload re-sends identical bytes. Every [`SPOOL_SYNC_CHUNKS`] chunks (and at the
//! end) the file is synced, the progress (chunks done, compressed bytes) recorded and the new
//! bytes offered to the uploads; a rerun truncates the file to the
//! recorded length and continues at that chunk, re-hashing the prefix to restore the running
//! digests.
//!
//! A small index (`<spool root>/index/`) remembers, per layer identity, the digest and size the
//! compression produced, so a later push of the same layer can ask the registry whether it has
//! the blob before compressing it again.
//!
//! When a job finishes, its compressed files move to `<spool root>/cache/` (same names), kept
//! up to [`SPOOL_CACHE_BYTES_MAX`], oldest out first; a later job needing the same layer takes
//! the file back instead of compressing (the registry checks the digest at the final PUT).
//! A cancelled or deleted job's spool is removed with it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::compress::{
    CODEC_VERSIONS, COMPRESS_CHUNK_BYTES_DEFAULT, Codec, CompressConfig, CompressError,
    StreamState, compress_stream,
};
use crate::daemon::job::{JobContext, JobError};
use crate::digest::Digest;
use crate::plan::{CompressedLayer, PlannedLayer};
use crate::store::BlobRecord;

/// Compressor input chunk size: part of the output's identity, so fixed.
pub const SPOOL_CHUNK_BYTES: usize = COMPRESS_CHUNK_BYTES_DEFAULT;
/// Compression threads daemon-wide ([`ThreadTokens`]). Memory is about
/// `4 * threads * SPOOL_CHUNK_BYTES`; two keep the daemon inside its memory budget next to
/// four streaming uploads.
pub const COMPRESS_THREADS_MAX: usize = 2;
/// Compressor chunks written between two syncs of the spool file; the progress is recorded
/// and offered to the uploads at each sync. A crash costs at most this many chunks of
/// recompression (8 MiB of input); a sync and a store commit for every 4 MiB chunk showed up
/// in the push's profile on incompressible layers.
pub const SPOOL_SYNC_CHUNKS: u64 = 2;
/// Index entries kept at most; the oldest are removed beyond it.
pub const SPOOL_INDEX_ENTRIES_MAX: usize = 4096;

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
    if std::fs::metadata(&cached).ok()?.len() != known.size {
        return None;
    }
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
        let _ = std::fs::rename(ctx.spool_dir().join(name), dir.join(name));
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (_, len, path) in files {
        if total <= SPOOL_CACHE_BYTES_MAX {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// How far a layer's compression is, as the uploads see it.
#[derive(Debug, Clone, Default)]
pub struct Avail {
    /// Compressed bytes in the spool file that are final (written and synced).
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
    pub tx: watch::Sender<Avail>,
    /// Set by the upload when the registry has the blob already: compression is not needed.
    pub skip: Arc<AtomicBool>,
}

/// The file name of a layer's compressed bytes (and of its index entry).
pub fn spool_name(diff_id: &Digest, codec: Codec) -> String {
    let level = match codec {
        Codec::Gzip => crate::compress::GZIP_LEVEL,
        Codec::Zstd => crate::compress::ZSTD_LEVEL,
    };
    format!(
        "{}-{}{}-{}-{}-{}",
        diff_id.hex(),
        codec,
        level,
        SPOOL_CHUNK_BYTES,
        CODEC_VERSIONS.libzstd,
        CODEC_VERSIONS.libdeflater_crate
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

fn index_store(ctx: &JobContext, name: &str, c: &CompressedLayer) {
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

/// Compression threads, daemon-wide: a layer's compression takes its threads' tokens first, so
/// the compressors' memory (`4 * SPOOL_CHUNK_BYTES` per thread) stays bounded by
/// [`COMPRESS_THREADS_MAX`] whatever the number of jobs and layers.
pub struct ThreadTokens {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Default for ThreadTokens {
    fn default() -> Self {
        ThreadTokens {
            free: std::sync::Mutex::new(compress_threads()),
            freed: std::sync::Condvar::new(),
        }
    }
}

/// What one [`ThreadTokens::take`] holds; gives the tokens back when dropped.
pub struct Tokens<'a> {
    pool: &'a ThreadTokens,
    n: usize,
}

impl ThreadTokens {
    /// Takes `n` tokens if they are free now.
    pub fn try_take(&self, n: usize) -> Option<Tokens<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        (*free >= n).then(|| {
            *free -= n;
            Tokens { pool: self, n }
        })
    }

    /// Blocks until `n` tokens are free and takes them.
    pub fn take(&self, n: usize) -> Tokens<'_> {
        // A poisoned lock only means a compressor panicked: the count is still right.
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free < n {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= n;
        Tokens { pool: self, n }
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        *self.pool.free.lock().unwrap_or_else(|p| p.into_inner()) += self.n;
        self.pool.freed.notify_all();
    }
}

/// Compression threads daemon-wide: one per core, at most [`COMPRESS_THREADS_MAX`].
fn compress_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(COMPRESS_THREADS_MAX)
}

/// Compresses `layers` into the spool (blocking: run on a blocking thread). With several
/// layers to compress, up to one per compression thread run side by side, one thread each:
/// a cheap layer (incompressible data, stored) then streams to the registry while a costly one
/// (text) is still compressing, so the registry's CPU work overlaps ours instead of following
/// it. A single layer gets every thread. Each layer's watch channel follows its progress. Stops
/// at the first error, which is also sent to every layer not done.
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
    let threads = compress_threads();
    let lanes = todo.len().clamp(1, threads);
    let per_layer = threads / lanes;
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
            let result = if ctx.is_stop_requested() {
                Err(JobError::Stopped)
            } else {
                let _turn = match tokens.try_take(per_layer) {
                    Some(t) => t,
                    None => {
                        rt.block_on(ctx.waiting(Some(
                            "waiting for another job's compression to finish (compression threads are shared daemon-wide)".into(),
                        )));
                        let t = tokens.take(per_layer);
                        rt.block_on(ctx.waiting(None));
                        t
                    }
                };
                compress_layer(ctx, rt, l, per_layer)
            };
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

fn io_failed(path: &Path, e: io::Error) -> JobError {
    JobError::failed(format!(
        "cannot write the spool file {}: {e}: check the free space of the state directory, then `hoist retry` the job",
        path.display()
    ))
}

fn compress_layer(
    ctx: &JobContext,
    rt: &tokio::runtime::Handle,
    l: &SpoolLayer,
    threads: usize,
) -> Result<(), JobError> {
    let digest = &l.layer.source.digest;
    let name = &l.layer.source.location.name;
    // A rerun after the compression finished: the file is there whole.
    if let Some(p) = l.record.as_ref().and_then(|r| r.pushed.clone())
        && std::fs::metadata(&l.path).is_ok_and(|m| m.len() == p.size_bytes)
    {
        let done = CompressedLayer {
            digest: p.digest,
            size: p.size_bytes,
        };
        l.tx.send_modify(|a| {
            a.bytes = done.size;
            a.done = Some(done.clone());
        });
        return Ok(());
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&l.path)
        .map_err(|e| io_failed(&l.path, e))?;
    let (mut chunks, mut bytes) = l
        .record
        .as_ref()
        .filter(|r| r.pushed.is_none())
        .map_or((0, 0), |r| (r.chunks_done, r.compressed_bytes));
    let have = file.metadata().map_err(|e| io_failed(&l.path, e))?.len();
    if have < bytes {
        // The spool lost data (removed by hand): start the layer over.
        (chunks, bytes) = (0, 0);
    }
    // Anything past the recorded length was written after the last durable chunk: drop it.
    file.set_len(bytes).map_err(|e| io_failed(&l.path, e))?;
    let state = if chunks == 0 {
        StreamState::new()
    } else {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_failed(&l.path, e))?;
        let prefix = (&file).take(bytes);
        StreamState::resume(
            chunks,
            SPOOL_CHUNK_BYTES,
            l.layer.source.location.reader(),
            prefix,
        )
        .map_err(|e| JobError::failed(format!("cannot resume compressing {name}: {e}")))?
    };
    file.seek(SeekFrom::Start(bytes))
        .map_err(|e| io_failed(&l.path, e))?;
    l.tx.send_modify(|a| a.bytes = bytes);
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
    let total_chunks = l
        .layer
        .source
        .location
        .len
        .div_ceil(SPOOL_CHUNK_BYTES as u64);
    let totals = compress_stream(input, &config, state, |out| {
        if l.skip.load(Ordering::Relaxed) {
            return Err(SinkError::Skipped);
        }
        if ctx.is_stop_requested() {
            return Err(SinkError::Job(JobError::Stopped));
        }
        file.write_all(out.bytes).map_err(SinkError::Io)?;
        written += out.bytes.len() as u64;
        if (out.index + 1) % SPOOL_SYNC_CHUNKS == 0 || out.index + 1 >= total_chunks {
            // Durable before it is recorded or sent: a rerun trusts the recorded length.
            file.sync_data().map_err(SinkError::Io)?;
            rt.block_on(ctx.compress_progress(digest, out.index + 1, written))
                .map_err(SinkError::Job)?;
            l.tx.send_modify(|a| a.bytes = written);
        }
        Ok(())
    });
    let totals = match totals {
        Ok(t) => t,
        Err(SinkError::Skipped) => return Ok(()),
        Err(SinkError::Job(e)) => return Err(e),
        Err(SinkError::Io(e)) => return Err(io_failed(&l.path, e)),
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
    let done = CompressedLayer {
        digest: totals.blob_digest.clone(),
        size: totals.compressed_bytes,
    };
    rt.block_on(ctx.blob_compressed(digest, done.digest.clone(), done.size))?;
    index_store(ctx, &spool_name(&l.layer.diff_id, l.codec), &done);
    l.tx.send_modify(|a| {
        a.bytes = done.size;
        a.done = Some(done.clone());
    });
    Ok(())
}

/// Opens a spool file for reading (uploads read it while it grows).
pub fn open_read(path: &Path) -> io::Result<Arc<File>> {
    File::open(path).map(Arc::new)
}

/// Removes every file of the job's spool (cancel): the directory stays for the scheduler.
pub fn clear(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
