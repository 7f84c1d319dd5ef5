//! Deterministic, chunked, parallel gzip / zstd compression of uncompressed layer tars.
//!
//! # Format
//! The input is cut into fixed chunks of `chunk_bytes` (chunk `i` is input bytes
//! `[i * chunk_bytes, (i + 1) * chunk_bytes)`, so a boundary depends on nothing but the chunk
//! size), each compressed on its own; the blob is their concatenation.
//!
//! [`Codec::Gzip`] makes **one gzip member** per blob, as pigz does: chunk 0 starts with the
//! header, each chunk is deflate blocks that do not end the stream (a compressed run is ended
//! by a sync flush: an empty stored block, byte-aligned; an incompressible run is stored
//! blocks), and after the last chunk one trailer piece ends it (a final empty block, the
//! CRC-32 of the whole input, its length). Each compressed run is primed with the 32 KiB of
//! input before it as deflate's dictionary, which is what a single deflate stream's window
//! would hold: chunks depend on each other's *input*, never on their output, so they still
//! compress in parallel, in any order, and again after a crash. One member, because some
//! consumers break on several (soci-snapshotter before 0.14 builds a wrong seekable index for
//! them).
//!
//! [`Codec::Zstd`] makes one independent **frame** per chunk, or one per run of its probe
//! windows when it mixes incompressible and compressible regions ([`chunk`]). Concatenated
//! frames are a valid stream: `zstd -d` and Go's readers take them. An empty input gives one
//! empty member or frame, because a zero-byte blob is not a valid gzip or zstd stream.
//!
//! # Determinism
//! **Architecture Invariant:** same input, codec and chunk size give the same bytes, on any
//! number of threads and after any resume. What makes it hold:
//! - fixed levels ([`GZIP_LEVEL`], [`ZSTD_LEVEL`]); the codec crates are pinned to exact
//!   versions in `Cargo.toml` and [`CODEC_VERSIONS`] is checked by a test;
//! - the gzip header is [`chunk::GZIP_HEADER`] (MTIME 0, no name, OS 255); a chunk's deflate
//!   dictionary is the input before it, whatever thread or run compresses it;
//! - zstd frames have no checksum and no dictionary id, the content size is written, and
//!   libzstd's worker threads are never used (the `zstdmt` feature is off);
//! - the incompressible-data test ([`chunk::probe_runs`]) is integer-only and reads only the
//!   chunk's bytes;
//! - the parallel driver only changes *where* a chunk is compressed, never how.
//!
//! # Layout
//! - [`chunk`]: one chunk to its part of the gzip member / its zstd frames, and the
//!   incompressible-data fast path.
//! - [`pipeline`]: the bounded, ordered, parallel driver with running digests and resume.
//! - [`budget`]: the byte budget its chunk buffers are drawn from, shareable by streams.

pub mod budget;
pub mod chunk;
pub mod pipeline;

use std::fmt;
use std::str::FromStr;

pub use budget::{ChunkBudget, slot_bytes};
pub use chunk::{
    ChunkCompressor, ChunkPlace, GZIP_HEADER, GZIP_TRAILER_BYTES, StoredChunk, compress_chunk,
    gzip_trailer,
};
pub use pipeline::{
    ChunkOut, CompressConfig, StreamState, Totals, compress_stream, compress_stream_within,
    read_full,
};

/// Default input bytes per chunk: 4 MiB.
///
/// Why 4 MiB (figures in `docs/COMPRESSION.md`, a tar of `/usr`): gzip loses nothing measurable
/// to chunking (deflate's window is 32 KiB); zstd level 3 loses 1.0% of ratio against one frame
/// (1 MiB chunks: 4.4%, 16 MiB: 0.04%). In exchange a 1 GiB layer gives 256 chunks to spread
/// over the threads, a crash redoes at most `2 * threads` chunks, and memory stays at about
/// `4 * threads * chunk_bytes` (32 MiB on two threads). The chunk size is part of the output's
/// identity: the daemon must keep it with the job to resume.
pub const COMPRESS_CHUNK_BYTES_DEFAULT: usize = 4 << 20;
/// Smallest accepted chunk size; below it the per-member overhead and restarts hurt the ratio.
pub const COMPRESS_CHUNK_BYTES_MIN: usize = 64 << 10;
/// Largest accepted chunk size; it bounds memory (`4 * threads * chunk_bytes`).
pub const COMPRESS_CHUNK_BYTES_MAX: usize = 256 << 20;
/// Most compression threads one stream may use: the codec's own bound, which keeps a
/// configuration error from spawning thousands of threads. How many threads the daemon lends
/// its pushes is its own, smaller budget.
pub const STREAM_THREADS_MAX: usize = 64;

/// The most bytes compressing `input_bytes` can produce, any codec and chunk size: a chunk
/// grows by at most its codec's bound (zstd's is the larger, `n / 256` plus a frame header),
/// and at least [`COMPRESS_CHUNK_BYTES_MIN`] of input goes into each chunk. For limits that
/// must hold before the compressed size is known.
pub fn compressed_bytes_bound(input_bytes: u64) -> u64 {
    let chunks = input_bytes.div_ceil(COMPRESS_CHUNK_BYTES_MIN as u64).max(1);
    input_bytes + input_bytes / 128 + chunks * 1024
}

/// The first bytes of a gzip stream (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The first bytes of a zstd frame (RFC 8878).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// zlib-rs deflate level for gzip: 2 (zlib's `deflate_fast`), not gzip's own default of 6.
///
/// Measured on this 2-core machine per CPU second (4 MiB chunks, one thread, first 64 MiB of
/// each file; `docs/COMPRESSION.md` has the survey), against libdeflate level 2, which hoist
/// used while a layer was one gzip member per chunk:
///
/// | deflate | text MB/CPU-s | text ratio | rootfs tar MB/CPU-s | rootfs ratio |
/// | --- | ---: | ---: | ---: | ---: |
/// | libdeflate 2 (one stream per chunk) | 122 | 2.366 | 160 | 2.793 |
/// | libdeflate 2, then inflated to find its final block | 101 | 2.366 | 133 | 2.793 |
/// | zlib-rs 1 (`deflate_quick`) | 200 | 1.719 | 245 | 2.201 |
/// | zlib-rs 2 | 110 | 2.270 | 141 | 2.649 |
/// | zlib-rs 3 | 88 | 2.355 | 117 | 2.757 |
/// | zlib-rs 4 | 82 | 2.362 | 98 | 2.811 |
///
/// One gzip member needs chunks that do not end the stream, which libdeflate cannot write:
/// its last block is always final, and only decoding the chunk finds where that block starts
/// (the second row, a lower bound, is slower than zlib-rs 2 and needs an inflate with block
/// boundaries that no safe API offers). zlib-rs 2 costs about 10% more CPU than libdeflate 2
/// for 4-5% more bytes; level 3 would cost 25-30% more CPU, level 1 27-38% more bytes. On two
/// cores the compressor and the registry (about 3 CPU-s per GB it receives) share the CPU, so
/// deflate's time is push time. Changing it changes every gzip blob digest (the golden test in
/// `tests/compress.rs` pins them; spool names carry the level).
pub const GZIP_LEVEL: u32 = 2;
/// zstd level: 3, zstd's default and what `zstd -3` / skopeo use.
pub const ZSTD_LEVEL: i32 = 3;

/// The codec library versions the golden digests were recorded with. A different libzstd
/// (e.g. `ZSTD_SYS_USE_PKG_CONFIG` linking the system one) would change the bytes.
pub const CODEC_VERSIONS: CodecVersions = CodecVersions {
    libzstd: 10507,
    zlib_rs_crate: "0.6.8",
};

/// See [`CODEC_VERSIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecVersions {
    /// `ZSTD_versionNumber()`: major * 10000 + minor * 100 + patch.
    pub libzstd: u32,
    /// The `zlib-rs` crate version (gzip's deflate), checked against `Cargo.lock` by a test.
    pub zlib_rs_crate: &'static str,
}

/// The linked libzstd's version number (`ZSTD_versionNumber()`).
pub fn libzstd_version() -> u32 {
    zstd::zstd_safe::version_number()
}

/// A layer compression codec.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// One gzip member, deflate by zlib-rs.
    Gzip,
    /// zstd frames, libzstd.
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A codec name that hoist does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression {0:?} is not supported: use gzip or zstd")]
pub struct UnknownCodec(pub String);

impl FromStr for Codec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Codec::Gzip),
            "zstd" => Ok(Codec::Zstd),
            _ => Err(UnknownCodec(s.to_string())),
        }
    }
}

/// Why compressing failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("reading the input to compress failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("{codec} compression of a {input_len}-byte chunk failed: {message}")]
    Codec {
        codec: Codec,
        input_len: usize,
        message: String,
    },
    #[error(
        "chunk size {0} bytes is out of range: use {min}..={max}",
        min = COMPRESS_CHUNK_BYTES_MIN,
        max = COMPRESS_CHUNK_BYTES_MAX
    )]
    ChunkSize(usize),
    #[error("thread count {0} is out of range: use 1..={max}", max = STREAM_THREADS_MAX)]
    Threads(usize),
    #[error(
        "cannot resume at chunk {index}: the input prefix has {got} bytes, {expected} expected; \
         restart the compression from chunk 0"
    )]
    ResumePrefix { index: u64, expected: u64, got: u64 },
    #[error("a compression thread failed: {0}; this is a bug in hoist, please report it")]
    Thread(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_round_trip() {
        for c in [Codec::Gzip, Codec::Zstd] {
            assert_eq!(c.to_string().parse::<Codec>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Codec>(&json).unwrap(), c);
        }
        assert!("GZIP".parse::<Codec>().is_err());
        assert!("xz".parse::<Codec>().is_err());
    }

    #[test]
    fn linked_libzstd_is_the_pinned_one() {
        assert_eq!(libzstd_version(), CODEC_VERSIONS.libzstd);
    }

    #[test]
    fn locked_zlib_rs_is_the_pinned_one() {
        // zlib-rs has no version at run time: the lock file says what is built.
        let lock = include_str!("../../Cargo.lock");
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"zlib-rs\"\n"))
            .expect("zlib-rs is in Cargo.lock");
        let want = format!("\nversion = \"{}\"\n", CODEC_VERSIONS.zlib_rs_crate);
        assert!(entry.contains(&want), "Cargo.lock has {entry}");
    }
}
