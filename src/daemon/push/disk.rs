//! The spool's disk: free space checked before a run spools, and a full disk reported with
//! its figures.
//!
//! Before a run compresses anything, what it will write into the spool is compared with the
//! free space of the spool's filesystem (`statvfs`: the blocks an unprivileged user may take).
//! Only the layers the run must compress and whose chunks are not in the spool already count.
//! A compressed chunk is never much larger than its input ([`compressed_bytes_bound`]) and a
//! stored one is not written at all, so the layers' remaining input bounds the need: when the
//! disk holds that plus the margin, the run goes on without reading anything. When it does
//! not, a few chunks of each layer are compressed ([`sample_chunks`]) and the need is their
//! ratio times the remaining input; a disk short of that fails the job at once, before any
//! byte is sent. The estimate can be wrong (a layer compressing unevenly): a spool write that
//! would eat into the database's reserve, or that hits `ENOSPC` or `EDQUOT` anyway, fails the
//! job with [`disk_full`]'s message, and the spool's map and the store never claim chunks that
//! did not land (see `spool_view`).

use std::io::Read;
use std::path::Path;

use super::spool::{SPOOL_CHUNK_BYTES, SpoolLayer};
use super::spool_view::{map_lengths, map_path};
use crate::compress::{ChunkCompressor, compressed_bytes_bound};
use crate::daemon::job::JobError;
use crate::inspect::human_bytes;
/// The free space and full-disk checks are the planner's too (a compressed layer decompressed
/// to be split): one definition, in `split::unpack`.
pub use crate::split::unpack::{free_bytes, is_disk_full};

/// Chunks of a layer compressed to estimate its ratio when the disk is tight.
pub const SPOOL_ESTIMATE_SAMPLES: u64 = 3;
/// Free space kept beyond the spool's need, at least: the database, its journal and the
/// spool maps grow beside the spool. A spool write never takes it either
/// ([`keep_reserve`]): the store must still record the cursors and the failure, or a retry
/// would find its cursors behind the registry's sessions.
pub const SPOOL_MARGIN_BYTES_MIN: u64 = 16 << 20;
/// ... and a tenth of the need, for an estimate that was a little short.
pub const SPOOL_MARGIN_DIVISOR: u64 = 10;

/// What `need` bytes of spool require free on the disk, margin included.
pub fn with_margin(need: u64) -> u64 {
    need.saturating_add(SPOOL_MARGIN_BYTES_MIN.max(need / SPOOL_MARGIN_DIVISOR))
}

/// The chunks sampled among `total` chunks from `start` on: the middles of up to
/// [`SPOOL_ESTIMATE_SAMPLES`] equal stretches.
pub fn sample_chunks(start: u64, total: u64) -> Vec<u64> {
    let n = total.saturating_sub(start);
    let k = SPOOL_ESTIMATE_SAMPLES.min(n);
    (0..k).map(|i| start + (2 * i + 1) * n / (2 * k)).collect()
}

/// The chunk a layer's compression starts from in this run (chunks already in the spool are
/// not written again), or `None` when it writes nothing: the blob is uploaded already, or its
/// whole compressed stream is in the spool.
fn first_chunk(l: &SpoolLayer) -> Option<u64> {
    let Some(r) = &l.record else {
        return Some(0);
    };
    if r.state.is_finished() {
        return None;
    }
    let on_disk = map_lengths(&map_path(&l.path)).ok();
    if let Some(p) = &r.pushed {
        return match on_disk {
            Some(m) if m.len == p.size_bytes => None,
            _ => Some(0),
        };
    }
    Some(match on_disk {
        Some(m) if r.chunks_done > 0 && m.chunks >= r.chunks_done => r.chunks_done,
        _ => 0,
    })
}

/// A layer's part of the run's spool need: its input from `start` on.
struct Pending<'a> {
    layer: &'a SpoolLayer,
    start: u64,
}

impl Pending<'_> {
    fn total_chunks(&self) -> u64 {
        self.input_len().div_ceil(SPOOL_CHUNK_BYTES as u64)
    }

    fn input_len(&self) -> u64 {
        self.layer.layer.source.location.len
    }

    fn rest(&self) -> u64 {
        self.input_len()
            .saturating_sub(self.start * SPOOL_CHUNK_BYTES as u64)
    }

    /// The spool bytes the sampled chunks predict for the rest of the layer.
    fn estimate(&self) -> Result<u64, JobError> {
        let location = &self.layer.layer.source.location;
        let mut compressor = ChunkCompressor::new();
        let (mut input, mut spooled) = (0u64, 0u64);
        let mut buf = Vec::with_capacity(SPOOL_CHUNK_BYTES);
        let mut out = Vec::new();
        for index in sample_chunks(self.start, self.total_chunks()) {
            buf.clear();
            location
                .reader_at(index * SPOOL_CHUNK_BYTES as u64)
                .take(SPOOL_CHUNK_BYTES as u64)
                .read_to_end(&mut buf)
                .map_err(|e| {
                    JobError::failed(format!("cannot read layer {}: {e}", location.name))
                })?;
            out.clear();
            let stored = compressor
                .compress(self.layer.codec, &buf, &mut out)
                .map_err(|e| {
                    JobError::failed(format!("cannot compress layer {}: {e}", location.name))
                })?;
            input += buf.len() as u64;
            // A stored chunk is framed from the source as it is uploaded: no spool bytes.
            spooled += if stored { 0 } else { out.len() as u64 };
        }
        if input == 0 {
            return Ok(0);
        }
        let ratio = spooled as f64 / input as f64;
        Ok((self.rest() as f64 * ratio).ceil() as u64)
    }
}

/// Fails the job, before anything is written or sent, when the spool's disk cannot take what
/// compressing `layers` will write (blocking: it may read and compress sample chunks).
pub fn check_space(spool_dir: &Path, layers: &[SpoolLayer]) -> Result<(), JobError> {
    let pending: Vec<Pending<'_>> = layers
        .iter()
        .filter_map(|l| first_chunk(l).map(|start| Pending { layer: l, start }))
        .filter(|p| p.rest() > 0)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let free = free_bytes(spool_dir).map_err(|e| {
        JobError::failed(format!(
            "cannot read the free space of {}: {e}: check the state directory",
            spool_dir.display()
        ))
    })?;
    let bound: u64 = pending
        .iter()
        .map(|p| compressed_bytes_bound(p.rest()))
        .sum();
    if free >= with_margin(bound) {
        return Ok(());
    }
    let mut need = 0u64;
    for p in &pending {
        need = need.saturating_add(p.estimate()?);
    }
    if free >= with_margin(need) {
        return Ok(());
    }
    Err(JobError::failed(format!(
        "the spool needs ~{} in {} ({} compressed plus a margin), {} free: free space or move the state directory with `hoistd --state-dir`, then `hoist retry` the job",
        human_bytes(with_margin(need)),
        spool_dir.display(),
        human_bytes(need),
        human_bytes(free)
    )))
}

/// Fails with `ENOSPC` before writing `bytes` to the spool file `path` would leave less than
/// [`SPOOL_MARGIN_BYTES_MIN`] free: that reserve is the database's.
pub fn keep_reserve(path: &Path, bytes: usize) -> std::io::Result<()> {
    let free = free_bytes(path.parent().unwrap_or(path))?;
    if free < SPOOL_MARGIN_BYTES_MIN.saturating_add(bytes as u64) {
        return Err(std::io::ErrorKind::StorageFull.into());
    }
    Ok(())
}

/// The job's error when a spool write found the disk full: the figures, and what to do.
/// `spooled` bytes of the layer's stream were written, `rest` input bytes are still to
/// compress. What was uploaded stays: the cursors are kept, and a retry recompresses the same
/// bytes (compression is deterministic) and goes on from the registry's offsets.
pub fn disk_full(path: &Path, spooled: u64, rest: u64) -> JobError {
    let dir = path.parent().unwrap_or(path);
    let free = free_bytes(dir).map_or_else(|_| "unknown".into(), human_bytes);
    JobError::failed(format!(
        "the disk filled while spooling to {} ({} of the layer spooled, up to {} of input still to compress, {free} free, {} of it kept for the database): free space or move the state directory with `hoistd --state-dir`, then `hoist retry` the job; what was uploaded is kept",
        dir.display(),
        human_bytes(spooled),
        human_bytes(rest),
        human_bytes(SPOOL_MARGIN_BYTES_MIN),
    ))
}
