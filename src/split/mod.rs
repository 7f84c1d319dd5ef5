//! Splitting a big uncompressed layer at file boundaries into several layers ("parts") that,
//! applied in order, give the same file system (format, rules and why: `docs/SPLIT.md`).
//!
//! A part is a list of byte ranges of the source layer's tar (whole entries, headers byte for
//! byte) followed by the end-of-archive blocks, read in place through a spliced
//! [`BlobLocation`]. The parts are decided from the headers ([`tar::scan`]) and from samples of
//! how the layer compresses ([`estimate`]); then the layer is hashed whole (checked against its
//! diff_id) and part by part, on every core.
//! The result ([`LayerSplit`]) is a function of the layer and the part size only; the daemon
//! records it with the job so a rerun rebuilds byte-identical parts without scanning again.
//!
//! - [`tar`]: the header scan.
//! - [`estimate`]: each entry's estimated compressed bytes, so parts balance their uploads.
//! - [`assign`]: which entries go into which part.
//! - [`proof`]: the check that the parts apply to the same tree as the whole layer.
//! - [`config`]: the config rewritten for the parts (`rootfs.diff_ids`, `history`).
//! - [`unpack`]: a compressed layer decompressed into a file to be split.

pub mod assign;
pub mod config;
pub mod estimate;
pub mod proof;
pub mod tar;
pub mod unpack;

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
    /// Every layer above this many bytes (a compressed one: its compressed size), foreign
    /// layers aside; a compressed layer is decompressed ([`unpack`]) to be split.
    MaxBytes(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{layer}: its parts were not proven to give the same files as the whole layer: {why}")]
    NotProven { layer: String, why: String },

    #[error("{layer}: cannot split it: {why}")]
    Unsplittable { layer: String, why: String },

    #[error(
        "{layer} is {compression}-compressed ({bytes} bytes, over the split size of {part_bytes}) and this source's layers are not decompressed to split: pass --split-layers auto or off to push it whole"
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
        "{layer}: cannot write its decompressed copy to {path}: {source}: check that directory"
    )]
    Unpack {
        layer: String,
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{layer}: no room to decompress it for splitting in {dir} ({written} bytes written, {free} bytes free, {reserve} of them kept free): free space there and run it again, or push with --split-layers auto or off to keep the layer whole"
    )]
    NoRoom {
        layer: String,
        dir: String,
        written: u64,
        free: u64,
        reserve: u64,
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
    /// The part's estimated compressed bytes ([`estimate`]), which order the uploads (see
    /// `PushPlan::upload_order`); 0 in a layout recorded without it.
    #[serde(default)]
    pub weight: u64,
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
    /// The part size for `layer`, or `None` when it stays whole. `Auto` leaves compressed
    /// layers whole; `MaxBytes` splits one whose compressed size is over it (its tar is larger
    /// still) once it is decompressed ([`unpack`]).
    pub fn part_bytes(&self, layer: &Candidate<'_>) -> Result<Option<u64>, SplitError> {
        let len = layer.location.len;
        let wanted = match *self {
            SplitPolicy::Off => return Ok(None),
            SplitPolicy::Auto if layer.compression.is_some() => None,
            SplitPolicy::Auto => (len > AUTO_SPLIT_LAYER_BYTES_MIN).then_some(AUTO_PART_BYTES),
            SplitPolicy::MaxBytes(b) if b < SPLIT_PART_BYTES_MIN => {
                return Err(SplitError::TooSmall(b));
            }
            SplitPolicy::MaxBytes(b) => (len > b).then_some(b),
        };
        Ok(wanted.filter(|_| !layer.foreign))
    }
}

/// Splits `layer` into parts of about `part_bytes` (more when that would take over
/// `parts_max` parts), balanced by estimated compressed size ([`estimate`]), checks it against
/// its diff_id and hashes the parts. `None` when it makes one part.
pub fn split_layer(
    layer: &Candidate<'_>,
    part_bytes: u64,
    parts_max: usize,
) -> Result<Option<LayerSplit>, SplitError> {
    let entries = tar::scan(layer.location)?;
    // Parts are sets of entries, and directories go with the files under them: a layer of one
    // file makes one part whatever the weights, so its blocks are not sampled (on a 1 GiB
    // file, sampling held the push 0.27 s before its first byte was sent).
    if entries.iter().filter(|e| e.kind != tar::Kind::Dir).count() < 2 {
        return Ok(None);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ratios =
        estimate::Ratios::sample(layer.location, threads).map_err(|source| SplitError::Read {
            layer: layer.location.name.to_string(),
            source,
        })?;
    let weights: Vec<u64> = entries
        .iter()
        .map(|e| ratios.weight(e.start, e.end))
        .collect();
    let cut = assign::Cut {
        part_bytes,
        weights: &weights,
    };
    let Some(parts) = assign::fit(&entries, cut, parts_max) else {
        return Ok(None);
    };
    proof::check(&entries, &parts, threads).map_err(|why| SplitError::NotProven {
        layer: layer.location.name.to_string(),
        why,
    })?;
    let ranges: Vec<Vec<(u64, u64)>> = parts
        .iter()
        .map(|members| assign::ranges(&entries, members))
        .collect();
    let mut layouts = hash_parts(layer, ranges, threads)?;
    for (layout, members) in layouts.iter_mut().zip(&parts) {
        layout.weight = members.iter().map(|&i| weights[i]).sum();
    }
    Ok(Some(LayerSplit {
        layer: layer.diff_id.clone(),
        part_bytes,
        parts: layouts,
    }))
}

/// Bytes read at a time by the hashing pass.
const HASH_READ_BYTES: usize = 1 << 20;

/// Hashes `ranges` of `loc` in order into `h`.
fn hash_ranges(loc: &BlobLocation, ranges: &[(u64, u64)], h: &mut Hasher) -> std::io::Result<()> {
    let mut buf = vec![0u8; HASH_READ_BYTES];
    for &(start, end) in ranges {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(HASH_READ_BYTES as u64) as usize;
            loc.read_exact_at(pos, &mut buf[..n])?;
            h.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(())
}

/// Runs tasks `0..tasks` on up to `threads` threads, each task on the next free thread in
/// order; the results in task order.
fn run_tasks<T: Send>(
    tasks: usize,
    threads: usize,
    task: impl Fn(usize) -> T + Sync,
) -> Vec<Option<T>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: std::sync::Mutex<Vec<Option<T>>> =
        std::sync::Mutex::new((0..tasks).map(|_| None).collect());
    let worker = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= tasks {
                return;
            }
            let r = task(i);
            done.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.clamp(1, tasks.max(1)) {
            s.spawn(worker);
        }
        worker();
    });
    done.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The layer's digest (to check against its diff_id) and each part's, on `threads` threads:
/// the whole layer is one task and each part another, taken in that order as threads free up,
/// so the whole layer's hash (the longest task) starts first.
fn hash_parts(
    layer: &Candidate<'_>,
    ranges: Vec<Vec<(u64, u64)>>,
    threads: usize,
) -> Result<Vec<PartLayout>, SplitError> {
    let loc = layer.location;
    let whole = [(0, loc.len)];
    let zeros = [0u8; tar::END_OF_ARCHIVE_BYTES as usize];
    let task = |i: usize| -> std::io::Result<Digest> {
        if i == 0 {
            let mut h = Hasher::new(layer.diff_id.algorithm());
            hash_ranges(loc, &whole, &mut h)?;
            return Ok(h.finish());
        }
        let mut h = Hasher::new(Algorithm::Sha256);
        hash_ranges(loc, &ranges[i - 1], &mut h)?;
        h.update(&zeros);
        Ok(h.finish())
    };
    let done = run_tasks(ranges.len() + 1, threads, task);
    let read_failed = |source| SplitError::Read {
        layer: loc.name.to_string(),
        source,
    };
    let mut digests = done.into_iter();
    let mut next_digest = || {
        digests
            .next()
            .flatten()
            .unwrap_or_else(|| Err(std::io::Error::other("a hashing thread ended early")))
            .map_err(read_failed)
    };
    let actual = next_digest()?;
    if &actual != layer.diff_id {
        return Err(SplitError::DiffId {
            layer: loc.name.to_string(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    ranges
        .into_iter()
        .map(|ranges| {
            let size = ranges.iter().map(|(s, e)| e - s).sum::<u64>() + tar::END_OF_ARCHIVE_BYTES;
            Ok(PartLayout {
                diff_id: next_digest()?,
                ranges,
                size,
                weight: 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    const MIB: usize = 1 << 20;

    /// A tar of 8 files of noise then 24 of zeros, 1 MiB each, as a layer location.
    fn mixed_layer() -> (BlobLocation, Digest) {
        let mut b = ::tar::Builder::new(Vec::new());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..32 {
            let data: Vec<u8> = if i >= 8 {
                vec![0; MIB]
            } else {
                (0..MIB)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            };
            let mut h = ::tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("f{i:02}"), &data[..])
                .unwrap();
        }
        layer_of(b.into_inner().unwrap())
    }

    /// A layer tar's bytes in a temporary file, as a layer location, and its diff_id.
    fn layer_of(bytes: Vec<u8>) -> (BlobLocation, Digest) {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(&bytes);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        let loc = BlobLocation {
            file: Arc::new(f),
            offset: 0,
            len: bytes.len() as u64,
            name: "t: layer".into(),
            splice: None,
        };
        (loc, h.finish())
    }

    /// The gzip size of each part of `split`.
    fn gzip_sizes(split: &LayerSplit, loc: &BlobLocation) -> Vec<usize> {
        split
            .locations(loc)
            .iter()
            .map(|p| {
                let mut tar = Vec::new();
                p.reader().read_to_end(&mut tar).unwrap();
                let mut out = Vec::new();
                crate::compress::compress_chunk(crate::compress::Codec::Gzip, &tar, &mut out)
                    .unwrap();
                out.len()
            })
            .collect()
    }

    #[test]
    fn a_layer_of_one_file_and_its_directories_stays_whole() {
        let mut b = ::tar::Builder::new(Vec::new());
        for dir in ["data", "data/big"] {
            let mut h = ::tar::Header::new_ustar();
            h.set_entry_type(::tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, dir, &[][..]).unwrap();
        }
        let data = vec![0x5a; 3 * MIB];
        let mut h = ::tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "data/big/file", &data[..]).unwrap();
        let split = |(loc, diff_id): (BlobLocation, Digest), part_bytes: usize| {
            let layer = Candidate {
                location: &loc,
                diff_id: &diff_id,
                compression: None,
                foreign: false,
            };
            split_layer(&layer, part_bytes as u64, 96).unwrap()
        };
        assert!(split(layer_of(b.into_inner().unwrap()), MIB).is_none());
        // A layer of several files does split: the shortcut is only for one file.
        assert!(split(mixed_layer(), 2 * MIB).is_some());
    }

    #[test]
    fn parts_come_out_closer_in_compressed_size_than_a_cut_by_tar_bytes() {
        let (loc, diff_id) = mixed_layer();
        let layer = Candidate {
            location: &loc,
            diff_id: &diff_id,
            compression: None,
            foreign: false,
        };
        let part_bytes = 6 * MIB as u64;
        let split = split_layer(&layer, part_bytes, 96).unwrap().unwrap();
        // 32 MiB over 6 MiB is 6 parts, rounded up to two per default upload connection; the
        // zeros weigh next to nothing and go five to a part (the size cap), so there are more.
        assert!(split.parts.len() >= 2 * assign::PARTS_ROUND, "{split:?}");
        assert!(split.parts.iter().all(|p| p.size <= part_bytes));
        let weighted = gzip_sizes(&split, &loc);
        // Cut by tar bytes alone: two parts of four files of noise each.
        let entries = tar::scan(&loc).unwrap();
        let even: Vec<u64> = entries.iter().map(tar::Entry::bytes).collect();
        let cut = assign::Cut {
            part_bytes,
            weights: &even,
        };
        let ranges = assign::fit(&entries, cut, 96)
            .unwrap()
            .iter()
            .map(|m| assign::ranges(&entries, m))
            .collect();
        let plain = LayerSplit {
            parts: hash_parts(&layer, ranges, 2).unwrap(),
            ..split.clone()
        };
        let by_bytes = gzip_sizes(&plain, &loc);
        let (w, b) = (weighted.iter().max(), by_bytes.iter().max());
        let (w, b) = (*w.unwrap(), *b.unwrap());
        assert!(
            w * 5 <= b * 4,
            "largest part: {w} balanced, {b} by tar bytes: {weighted:?} {by_bytes:?}"
        );
        // Every part's diff_id is the sha256 of its tar.
        for (p, l) in split.parts.iter().zip(split.locations(&loc)) {
            let mut h = Hasher::new(Algorithm::Sha256);
            let mut tar = Vec::new();
            l.reader().read_to_end(&mut tar).unwrap();
            h.update(&tar);
            assert_eq!(h.finish(), p.diff_id);
        }
    }

    #[test]
    fn a_split_the_proof_does_not_hold_keeps_the_layer_whole_naming_the_path() {
        // A whiteout of a path the layer itself wrote: whiteouts go to the first part, ahead
        // of the file, so the parts would keep `x` where the whole layer deletes it.
        let mut b = ::tar::Builder::new(Vec::new());
        for (name, len) in [("f", MIB), ("x", MIB), (".wh.x", 0)] {
            let mut h = ::tar::Header::new_ustar();
            h.set_size(len as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &vec![0x5a; len][..]).unwrap();
        }
        let (loc, diff_id) = layer_of(b.into_inner().unwrap());
        let layer = Candidate {
            location: &loc,
            diff_id: &diff_id,
            compression: None,
            foreign: false,
        };
        match split_layer(&layer, SPLIT_PART_BYTES_MIN, 96) {
            Err(e @ SplitError::NotProven { .. }) => {
                assert!(e.to_string().contains(".wh.x"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        let (loc, _) = mixed_layer();
        let wrong = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let layer = Candidate {
            location: &loc,
            diff_id: &wrong,
            compression: None,
            foreign: false,
        };
        assert!(matches!(
            split_layer(&layer, 8 << 20, 96),
            Err(SplitError::DiffId { .. })
        ));
    }

    #[test]
    fn an_explicit_size_splits_a_compressed_layer_over_it_and_auto_never_does() {
        let (loc, diff_id) = mixed_layer();
        let layer = |compression, foreign| Candidate {
            location: &loc,
            diff_id: &diff_id,
            compression,
            foreign,
        };
        let over = 16 * MIB as u64;
        let above = SplitPolicy::MaxBytes(over);
        for c in [None, Some("gzip"), Some("zstd")] {
            assert_eq!(above.part_bytes(&layer(c, false)).unwrap(), Some(over));
            assert_eq!(above.part_bytes(&layer(c, true)).unwrap(), None);
            let whole = SplitPolicy::MaxBytes(loc.len);
            assert_eq!(whole.part_bytes(&layer(c, false)).unwrap(), None);
            assert_eq!(SplitPolicy::Off.part_bytes(&layer(c, false)).unwrap(), None);
        }
        // `auto` is for layers above 1 GiB; this one is not, and a compressed one never is.
        assert_eq!(
            SplitPolicy::Auto.part_bytes(&layer(None, false)).unwrap(),
            None
        );
        let big = BlobLocation {
            len: AUTO_SPLIT_LAYER_BYTES_MIN + 1,
            ..loc.clone()
        };
        let big = |compression| Candidate {
            location: &big,
            diff_id: &diff_id,
            compression,
            foreign: false,
        };
        let auto = SplitPolicy::Auto;
        assert_eq!(auto.part_bytes(&big(None)).unwrap(), Some(AUTO_PART_BYTES));
        assert_eq!(auto.part_bytes(&big(Some("gzip"))).unwrap(), None);
        assert!(matches!(
            SplitPolicy::MaxBytes(SPLIT_PART_BYTES_MIN - 1).part_bytes(&big(Some("gzip"))),
            Err(SplitError::TooSmall(_))
        ));
    }
}
