//! Splitting a big uncompressed layer at file boundaries into several layers ("parts") that,
//! applied in order, give the same file system (format, rules and why: `docs/SPLIT.md`).
//!
//! A part is a list of byte ranges of the source layer's tar (whole entries, headers byte for
//! byte) followed by the end-of-archive blocks, read in place through a spliced
//! [`BlobLocation`]. [`plan_splits`] decides the parts from the headers alone ([`tar::scan`]),
//! then one sequential read of the layer checks it against its diff_id and hashes every part.
//! The result ([`LayerSplit`]) is a function of the layer and the part size only; the daemon
//! records it with the job so a rerun rebuilds byte-identical parts without scanning again.
//!
//! - [`tar`]: the header scan.
//! - [`assign`]: which entries go into which part.
//! - [`config`]: the config rewritten for the parts (`rootfs.diff_ids`, `history`).

pub mod assign;
pub mod config;
pub mod tar;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::source::{BlobLocation, Splice, SplicePiece};

/// `auto` splits uncompressed layers above this many bytes (why: `docs/SPLIT.md`).
pub const AUTO_SPLIT_LAYER_BYTES_MIN: u64 = 1 << 30;
/// `auto`'s part size: a 1 GiB layer becomes four parts, one per default upload connection.
pub const AUTO_PART_BYTES: u64 = 256 << 20;
pub use crate::limits::SPLIT_PART_BYTES_MIN;

/// Which layers to split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitPolicy {
    /// Push every layer whole.
    #[default]
    Off,
    /// Uncompressed layers above [`AUTO_SPLIT_LAYER_BYTES_MIN`], in parts of
    /// [`AUTO_PART_BYTES`]; compressed layers stay whole.
    Auto,
    /// Every layer above this many bytes; a compressed one is refused (hoist does not
    /// decompress to split).
    MaxBytes(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{layer}: not a layer tar hoist can split: {why}")]
    Tar { layer: String, why: String },

    #[error("{layer}: cannot split it: {why}")]
    Unsplittable { layer: String, why: String },

    #[error(
        "{layer} is {compression}-compressed ({bytes} bytes, over the split size of {part_bytes}): hoist splits only uncompressed layers; pass --split-layers auto or off to push it whole"
    )]
    Compressed {
        layer: String,
        compression: String,
        bytes: u64,
        part_bytes: u64,
    },

    #[error("split size {0} bytes is below the smallest of {min}: pick a larger size", min = SPLIT_PART_BYTES_MIN)]
    TooSmall(u64),

    #[error("{layer}: reading it to split failed: {source}")]
    Read {
        layer: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{layer}: its content hashes to {actual}, not its diff_id {expected}: the source changed or is damaged; check it and submit the push again"
    )]
    DiffId {
        layer: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("the config cannot be rewritten for the split layers: {0}")]
    Config(String),
}

/// One part: byte ranges `[start, end)` of the source layer, in order, then the
/// end-of-archive blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartLayout {
    pub ranges: Vec<(u64, u64)>,
    /// sha256 of the part's tar: its diff_id.
    pub diff_id: Digest,
    /// Bytes of the part's tar.
    pub size: u64,
}

/// How one layer is split: what the daemon records with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSplit {
    /// The source layer's diff_id.
    pub layer: Digest,
    /// The part size the layout was made for.
    pub part_bytes: u64,
    pub parts: Vec<PartLayout>,
}

impl LayerSplit {
    /// Where each part's bytes are: spliced ranges of `layer` (the source layer's location).
    pub fn locations(&self, layer: &BlobLocation) -> Vec<BlobLocation> {
        let n = self.parts.len();
        self.parts
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let mut pieces: Vec<SplicePiece> = p
                    .ranges
                    .iter()
                    .map(|&(s, e)| SplicePiece::File {
                        offset: layer.offset + s,
                        len: e - s,
                    })
                    .collect();
                pieces.push(SplicePiece::Zeros {
                    len: tar::END_OF_ARCHIVE_BYTES,
                });
                let name: Arc<str> = format!("{} (part {} of {n})", layer.name, k + 1).into();
                BlobLocation::spliced(layer.file.clone(), name, Splice::new(pieces))
            })
            .collect()
    }
}

/// A layer the policy may split.
pub struct Candidate<'a> {
    pub location: &'a BlobLocation,
    pub diff_id: &'a Digest,
    /// `None` for an uncompressed tar, else the compression's name.
    pub compression: Option<&'a str>,
    pub foreign: bool,
}

impl SplitPolicy {
    /// The part size for `layer`, or `None` when it stays whole.
    pub fn part_bytes(&self, layer: &Candidate<'_>) -> Result<Option<u64>, SplitError> {
        let len = layer.location.len;
        let wanted = match *self {
            SplitPolicy::Off => return Ok(None),
            SplitPolicy::Auto => (len > AUTO_SPLIT_LAYER_BYTES_MIN).then_some(AUTO_PART_BYTES),
            SplitPolicy::MaxBytes(b) if b < SPLIT_PART_BYTES_MIN => {
                return Err(SplitError::TooSmall(b));
            }
            SplitPolicy::MaxBytes(b) => (len > b).then_some(b),
        };
        let Some(part_bytes) = wanted else {
            return Ok(None);
        };
        if layer.foreign {
            return Ok(None);
        }
        match layer.compression {
            None => Ok(Some(part_bytes)),
            Some(_) if *self == SplitPolicy::Auto => Ok(None),
            Some(c) => Err(SplitError::Compressed {
                layer: layer.location.name.to_string(),
                compression: c.to_string(),
                bytes: len,
                part_bytes,
            }),
        }
    }
}

/// Splits `layer` into parts of about `part_bytes` (more when that would take over
/// `parts_max` parts), checks it against its diff_id and hashes the parts. `None` when it
/// makes one part only.
pub fn split_layer(
    layer: &Candidate<'_>,
    part_bytes: u64,
    parts_max: usize,
) -> Result<Option<LayerSplit>, SplitError> {
    let entries = tar::scan(layer.location)?;
    let Some(parts) = assign::fit(&entries, part_bytes, parts_max) else {
        return Ok(None);
    };
    let ranges: Vec<Vec<(u64, u64)>> = parts
        .iter()
        .map(|members| assign::ranges(&entries, members))
        .collect();
    let parts = hash_parts(layer, ranges)?;
    Ok(Some(LayerSplit {
        layer: layer.diff_id.clone(),
        part_bytes,
        parts,
    }))
}

/// Bytes read at a time by the hashing pass.
const HASH_READ_BYTES: usize = 1 << 20;

/// One sequential read of the layer: its digest checked against the diff_id, and each part's
/// ranges fed to that part's hasher (a part's ranges are in increasing order).
fn hash_parts(
    layer: &Candidate<'_>,
    ranges: Vec<Vec<(u64, u64)>>,
) -> Result<Vec<PartLayout>, SplitError> {
    let loc = layer.location;
    let read_failed = |source| SplitError::Read {
        layer: loc.name.to_string(),
        source,
    };
    let mut whole = Hasher::new(layer.diff_id.algorithm());
    let mut hashers: Vec<Hasher> = ranges
        .iter()
        .map(|_| Hasher::new(Algorithm::Sha256))
        .collect();
    let mut next: Vec<usize> = vec![0; ranges.len()];
    let mut buf = vec![0u8; HASH_READ_BYTES];
    let mut pos = 0u64;
    while pos < loc.len {
        let n = (loc.len - pos).min(HASH_READ_BYTES as u64) as usize;
        let chunk = &mut buf[..n];
        loc.read_exact_at(pos, chunk).map_err(read_failed)?;
        whole.update(chunk);
        let end = pos + n as u64;
        for (p, part) in ranges.iter().enumerate() {
            while let Some(&(s, e)) = part.get(next[p]) {
                if s >= end {
                    break;
                }
                let (from, to) = (s.max(pos), e.min(end));
                if from < to {
                    hashers[p].update(&chunk[(from - pos) as usize..(to - pos) as usize]);
                }
                if e > end {
                    break;
                }
                next[p] += 1;
            }
        }
        pos = end;
    }
    let actual = whole.finish();
    if &actual != layer.diff_id {
        return Err(SplitError::DiffId {
            layer: loc.name.to_string(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    let zeros = [0u8; tar::END_OF_ARCHIVE_BYTES as usize];
    Ok(ranges
        .into_iter()
        .zip(hashers)
        .map(|(ranges, mut h)| {
            h.update(&zeros);
            let size = ranges.iter().map(|(s, e)| e - s).sum::<u64>() + tar::END_OF_ARCHIVE_BYTES;
            PartLayout {
                ranges,
                diff_id: h.finish(),
                size,
            }
        })
        .collect())
}
