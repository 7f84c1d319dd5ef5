//! One chunk to its part of a gzip member or to zstd frames, with a fast path for
//! incompressible data.
//!
//! # The incompressible fast path
//! A layer of already-compressed or random bytes gains nothing from deflate, yet deflate still
//! runs its match finder over every byte. zstd's fast strategies speed up over
//! data without matches, but still scan. What fast compressors do about it:
//! - btrfs (`btrfs_compress_heuristic`) samples the data and judges it by byte-distribution
//!   entropy before calling any compressor;
//! - ZFS's zstd "early abort" tries a much cheaper compressor first and stores if it fails;
//! - zstd and LZ4 grow their search step while no match is found.
//!
//! hoist does the btrfs kind of test, integer-only so it is deterministic everywhere: the chunk
//! is cut into probe windows of about [`PROBE_WINDOW_BYTES`]; in each, [`PROBE_RUNS`] runs of
//! [`PROBE_RUN_BYTES`] spread evenly (16 KiB, 1/32 of a full window) are sampled, and the window
//! is judged incompressible when both
//! - the byte collision rate `sum c(c-1) / (n(n-1))` (an unbiased estimate of `sum p^2`, i.e.
//!   Renyi-2 entropy, a lower bound of Shannon entropy) is below `1 / PROBE_COLLISION_DIVISOR`,
//!   meaning above ~7.9 bits per byte, so Huffman coding can gain at most ~1%; uniform random
//!   bytes give `1/256`, 6 standard deviations away at this sample size; and
//! - fewer than one position in [`PROBE_REPEAT_DIVISOR`] starts a 4-byte string seen earlier in
//!   the sample (an LZ match; a small hash table, so only recent strings are remembered).
//!
//! Consecutive windows with the same verdict make a run, written as stored deflate blocks (in
//! the stream's one gzip member) or a zstd frame of raw blocks for an incompressible run, and
//! compressed for the rest (a sync-flushed piece of the member, or a zstd frame). Most chunks
//! are one run. A chunk that mixes them
//! (the end of a random file and the start of a text one) compresses only its compressible
//! windows: on a tree of 30% random files, 5% of the tar went through deflate in vain before,
//! 14% of deflate's time, for 0.003% of output size. A compressible run keeps deflate's
//! window across its own windows; a gzip run also starts with the 32 KiB of input before it as
//! its dictionary, so it keeps matches into the stored run before it (a zstd run loses them). Data whose redundancy is invisible to the test (e.g. a high-entropy block
//! repeated further away than the sampled runs see) is stored and loses that ratio. The
//! decision reads only the chunk's bytes.
//!
//! Cost (criterion, 4 MiB random chunk): probe 0.15 ms, stored deflate blocks 0.6 ms, raw
//! zstd frame 0.5 ms, against 2.5 ms for one SHA-256 pass and ~40 ms for deflate level 6.
//! On a text chunk every window is probed: about 0.2 ms per 4 MiB.

use flate2::{Compress, Compression, FlushCompress};

use super::{Codec, CompressError, GZIP_LEVEL, ZSTD_LEVEL, ZSTD_MAGIC};

/// A chunk shorter than this is always compressed (cheap anyway, and too small a sample).
pub const PROBE_MIN_BYTES: usize = 128 << 10;
/// Probe window: each one is judged on its own sample; a chunk is cut into
/// `max(1, len / PROBE_WINDOW_BYTES)` equal windows. A compressible island of about an eighth of
/// a window (64 KiB) or more makes its window, and so the chunk, compressible.
pub const PROBE_WINDOW_BYTES: usize = 512 << 10;
/// Sampled runs per probe window.
pub const PROBE_RUNS: usize = 8;
/// Bytes per sampled run.
pub const PROBE_RUN_BYTES: usize = 2 << 10;
/// A window is incompressible only if its byte collision rate is below `1 / 240` (uniform: `1 / 256`).
pub const PROBE_COLLISION_DIVISOR: u64 = 240;
/// ... and if fewer than one position in 64 repeats an earlier 4-byte string of the sample.
pub const PROBE_REPEAT_DIVISOR: usize = 64;

/// Largest stored deflate block (LEN is 16 bits).
const DEFLATE_STORED_BLOCK_BYTES_MAX: usize = 65_535;
/// Largest zstd block (`Block_Maximum_Size`).
const ZSTD_BLOCK_BYTES_MAX: usize = 128 << 10;
/// The one gzip header of a stream (RFC 1952): deflate, no flags (no name, no FTEXT), MTIME 0,
/// XFL 0, OS 255 "unknown"; the stream's first chunk starts with it.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// Deflate's window: a compressed run is primed with this much input before it.
pub const DEFLATE_WINDOW_BYTES: usize = 32 << 10;
/// Bytes of [`gzip_trailer`].
pub const GZIP_TRAILER_BYTES: usize = 10;

/// Where a chunk sits in its stream: what a gzip chunk's bytes depend on besides its input.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPlace<'a> {
    /// The stream's first chunk: a gzip chunk then starts with [`GZIP_HEADER`].
    pub first: bool,
    /// The input just before the chunk, its last [`DEFLATE_WINDOW_BYTES`] at least when there
    /// is that much (empty for the first chunk): deflate's dictionary, so the chunk's first
    /// matches may reach back into the previous chunk, as one deflate stream's would.
    pub before: &'a [u8],
}

impl ChunkPlace<'_> {
    /// The first chunk of a stream.
    pub const FIRST: ChunkPlace<'static> = ChunkPlace {
        first: true,
        before: &[],
    };
}

/// Compresses chunks, keeping what can be reused from one to the next (zstd's `CCtx`, which
/// costs an allocation and setup); one per thread.
pub struct ChunkCompressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// A dictionary assembled from two places (the previous chunk's tail and this chunk's head).
    window: Vec<u8>,
}

impl Default for ChunkCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkCompressor {
    pub fn new() -> Self {
        ChunkCompressor {
            zstd: None,
            window: Vec::new(),
        }
    }

    /// [`ChunkCompressor::compress_at`] for a stream's first chunk: a gzip chunk is the
    /// member's header and deflate data, without the trailer (a whole stream:
    /// [`compress_chunk`]). Enough for size estimates.
    pub fn compress(
        &mut self,
        codec: Codec,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, CompressError> {
        self.compress_at(codec, input, ChunkPlace::FIRST, out)
    }

    /// Appends chunk `input` at `place` to `out`: for gzip, part of the stream's one member
    /// (the header if first, then deflate blocks that never end the stream: compressed runs
    /// ended by a sync flush, stored runs as stored blocks; [`gzip_trailer`] ends it); for
    /// zstd, independent frames. One piece per run of probe windows judged alike
    /// ([`probe_runs`]). Returns whether the whole chunk was stored without compression.
    pub fn compress_at(
        &mut self,
        codec: Codec,
        input: &[u8],
        place: ChunkPlace<'_>,
        out: &mut Vec<u8>,
    ) -> Result<bool, CompressError> {
        let runs = probe_runs(input);
        if codec == Codec::Gzip && place.first {
            out.extend_from_slice(&GZIP_HEADER);
        }
        for run in &runs {
            let piece = &input[run.start..run.end];
            match (codec, run.stored) {
                (Codec::Gzip, true) => write_stored_blocks(Codec::Gzip, piece, out),
                (Codec::Zstd, true) => write_stored(Codec::Zstd, false, piece, out),
                (Codec::Gzip, false) => self.deflate(input, run.start..run.end, place, out)?,
                (Codec::Zstd, false) => self.zstd_compress(piece, out)?,
            }
        }
        Ok(runs.iter().all(|r| r.stored))
    }

    /// Raw deflate of `input[range]`, primed with the input before it, ended by a sync flush
    /// (an empty stored block: byte-aligned, BFINAL 0). A new deflate state for each run, not
    /// a reset one: a reset state keeps the previous stream's bytes in its window, past the
    /// new input's end, where the match finder may read them (a short last chunk compressed
    /// one byte longer after a longer chunk than on a new state), and the output must not
    /// depend on what the thread compressed before. Allocating it costs far less than
    /// compressing a chunk.
    fn deflate(
        &mut self,
        input: &[u8],
        range: std::ops::Range<usize>,
        place: ChunkPlace<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        let piece = &input[range.clone()];
        let err = |message: String| CompressError::Codec {
            codec: Codec::Gzip,
            input_len: piece.len(),
            message,
        };
        let mut c = Compress::new(Compression::new(GZIP_LEVEL), false);
        let dict = window_before(place.before, input, range.start, &mut self.window);
        if !dict.is_empty() {
            c.set_dictionary(dict).map_err(|e| err(e.to_string()))?;
        }
        let start = out.len();
        let (in0, out0) = (c.total_in(), c.total_out());
        out.reserve(piece.len() + piece.len() / 64 + 64);
        loop {
            let consumed = (c.total_in() - in0) as usize;
            let result = c.compress_vec(&piece[consumed..], out, FlushCompress::Sync);
            if let Err(e) = result {
                out.truncate(start);
                return Err(err(e.to_string()));
            }
            // The flush is complete once deflate left output space unused (zlib's rule).
            if c.total_in() - in0 == piece.len() as u64 && out.len() < out.capacity() {
                break;
            }
            out.reserve(64 << 10);
        }
        debug_assert_eq!((c.total_out() - out0) as usize, out.len() - start);
        Ok(())
    }

    fn zstd_compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        let err = |e: std::io::Error| CompressError::Codec {
            codec: Codec::Zstd,
            input_len: input.len(),
            message: e.to_string(),
        };
        if self.zstd.is_none() {
            let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(err)?;
            // Stated explicitly rather than trusting defaults: these fields change the bytes.
            c.include_checksum(false).map_err(err)?;
            c.include_contentsize(true).map_err(err)?;
            c.include_dictid(false).map_err(err)?;
            self.zstd = Some(c);
        }
        let c = self.zstd.as_mut().expect("set above");
        let start = out.len();
        out.reserve(zstd::zstd_safe::compress_bound(input.len()));
        // The cursor makes zstd append after `start` into the spare capacity, without zeroing it.
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        match c.compress_to_buffer(input, &mut cursor) {
            Ok(_) => Ok(()),
            Err(e) => {
                out.truncate(start);
                Err(err(e))
            }
        }
    }
}

/// Appends a whole stream holding `input` to `out` (one gzip member: header, deflate data,
/// trailer; or zstd frames), with a fresh context: the stream [`super::compress_stream`] makes
/// of an input that fits in one chunk. In a loop, keep a [`ChunkCompressor`] instead.
pub fn compress_chunk(codec: Codec, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    ChunkCompressor::new().compress(codec, input, out)?;
    if codec == Codec::Gzip {
        let crc = zlib_rs::crc32::crc32(0, input);
        out.extend_from_slice(&gzip_trailer(crc, input.len() as u64));
    }
    Ok(())
}

/// The end of a gzip stream: a final empty block (fixed Huffman, BFINAL 1: the bits
/// `1 10 0000000`, then padding), the CRC-32 of the whole input and its length mod 2^32.
pub fn gzip_trailer(crc32: u32, input_bytes: u64) -> [u8; GZIP_TRAILER_BYTES] {
    let mut t = [0u8; GZIP_TRAILER_BYTES];
    t[..2].copy_from_slice(&[0x03, 0x00]);
    t[2..6].copy_from_slice(&crc32.to_le_bytes());
    t[6..].copy_from_slice(&(input_bytes as u32).to_le_bytes());
    t
}

/// The last [`DEFLATE_WINDOW_BYTES`] (or fewer, at the stream's start) of the input before
/// `input[at..]`: from `input` alone when `at` reaches that far, else completed from the
/// previous chunk's tail `before` in `scratch`.
fn window_before<'a>(
    before: &'a [u8],
    input: &'a [u8],
    at: usize,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    if at >= DEFLATE_WINDOW_BYTES {
        return &input[at - DEFLATE_WINDOW_BYTES..at];
    }
    let from_before = (DEFLATE_WINDOW_BYTES - at).min(before.len());
    let tail = &before[before.len() - from_before..];
    if at == 0 {
        return tail;
    }
    scratch.clear();
    scratch.extend_from_slice(tail);
    scratch.extend_from_slice(&input[..at]);
    scratch
}

/// The deterministic incompressibility test described in the module documentation: whether
/// every probe window of `input` is judged incompressible.
pub fn looks_incompressible(input: &[u8]) -> bool {
    input.len() >= PROBE_MIN_BYTES && probe_runs(input).iter().all(|r| r.stored)
}

/// A run of consecutive probe windows with the same verdict: `input[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRun {
    pub start: usize,
    pub end: usize,
    /// Judged incompressible: written stored.
    pub stored: bool,
}

/// Each probe window of `input` judged as in the module documentation, consecutive windows
/// with the same verdict merged into one run. An input shorter than [`PROBE_MIN_BYTES`] is one
/// compressible run.
pub fn probe_runs(input: &[u8]) -> Vec<ProbeRun> {
    let whole = |stored| {
        vec![ProbeRun {
            start: 0,
            end: input.len(),
            stored,
        }]
    };
    if input.len() < PROBE_MIN_BYTES {
        return whole(false);
    }
    let windows = (input.len() / PROBE_WINDOW_BYTES).max(1);
    // The last 4-byte string seen with each hash, over the whole probe: a repeat anywhere in
    // the sample is redundancy an LZ coder can use. Zero-initialised: a run of zeros "repeats",
    // which is right, zeros compress.
    let mut last_seen = vec![0u32; 1 << PROBE_HASH_BITS];
    let mut runs: Vec<ProbeRun> = Vec::new();
    for w in 0..windows {
        // Windows split the chunk evenly, so the tail is spread over them, not left unsampled.
        let start = w * input.len() / windows;
        let end = (w + 1) * input.len() / windows;
        let stored = window_incompressible(&input[start..end], &mut last_seen);
        match runs.last_mut() {
            Some(last) if last.stored == stored => last.end = end,
            _ => runs.push(ProbeRun { start, end, stored }),
        }
    }
    runs
}

/// One probe window's verdict: incompressible when its sampled runs have a high byte entropy
/// and few repeats of a 4-byte string seen earlier in the probe (`last_seen`).
fn window_incompressible(window: &[u8], last_seen: &mut [u32]) -> bool {
    let mut hist = [0u32; 256];
    let mut repeats = 0usize;
    for r in 0..PROBE_RUNS {
        let r_start = r * window.len() / PROBE_RUNS;
        let run = &window[r_start..r_start + PROBE_RUN_BYTES];
        for &b in run {
            hist[usize::from(b)] += 1;
        }
        for quad in run.windows(4) {
            let v = u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]);
            let h = (v.wrapping_mul(0x9E37_79B1) >> (32 - PROBE_HASH_BITS)) as usize;
            repeats += usize::from(last_seen[h] == v);
            last_seen[h] = v;
        }
    }
    let n = (PROBE_RUNS * PROBE_RUN_BYTES) as u64;
    let collisions: u64 = hist
        .iter()
        .map(|&c| u64::from(c) * u64::from(c.saturating_sub(1)))
        .sum();
    let low_entropy = collisions * PROBE_COLLISION_DIVISOR >= n * (n - 1);
    let repetitive = repeats * PROBE_REPEAT_DIVISOR >= PROBE_RUNS * PROBE_RUN_BYTES;
    !(low_entropy || repetitive)
}

/// Hash table size of the repeat probe: 4096 entries.
const PROBE_HASH_BITS: u32 = 12;

/// Appends `input` as a stored chunk: stored deflate blocks (RFC 1951 BTYPE 00, none final),
/// after the stream's header when `first`; or a zstd frame of raw blocks (RFC 8878
/// Block_Type 0). The framing is [`StoredChunk`]'s, so what is written here is what a spool
/// view reads back.
fn write_stored(codec: Codec, first: bool, input: &[u8], out: &mut Vec<u8>) {
    let chunk = StoredChunk {
        codec,
        input_len: input.len() as u64,
        first,
    };
    out.reserve(chunk.encoded_len() as usize);
    let (prefix, p_len) = chunk.prefix();
    out.extend_from_slice(&prefix[..p_len]);
    write_stored_blocks(codec, input, out);
}

/// The blocks of [`write_stored`], without the prefix.
fn write_stored_blocks(codec: Codec, input: &[u8], out: &mut Vec<u8>) {
    let chunk = StoredChunk {
        codec,
        input_len: input.len() as u64,
        first: false,
    };
    let payload_max = chunk.block_shape().1 as usize;
    for i in 0..chunk.blocks() {
        let (header, h_len) = chunk.block_header(i);
        out.extend_from_slice(&header[..h_len]);
        // An empty input still has one (empty) block.
        let start = (i as usize * payload_max).min(input.len());
        out.extend_from_slice(&input[start..(start + payload_max).min(input.len())]);
    }
}

/// A chunk the incompressible path stored, described rather than held: its bytes are the
/// chunk's input with fixed framing around it (written whole by [`write_stored`]), so any
/// range of them can be produced from the input alone. This lets the spool keep a
/// stored chunk as a reference to the source instead of a copy of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredChunk {
    pub codec: Codec,
    pub input_len: u64,
    /// The stream's first chunk: a gzip chunk then starts with the stream's header.
    pub first: bool,
}

impl StoredChunk {
    /// The stored chunk that `out` (written by [`ChunkCompressor::compress_at`] with
    /// `stored == true`, first in its stream or not) is, if its length agrees.
    pub fn from_output(codec: Codec, input_len: u64, first: bool, out: &[u8]) -> Option<Self> {
        let chunk = StoredChunk {
            codec,
            input_len,
            first,
        };
        (chunk.encoded_len() == out.len() as u64).then_some(chunk)
    }

    fn prefix(&self) -> ([u8; 14], usize) {
        let mut p = [0u8; 14];
        match self.codec {
            Codec::Gzip if self.first => {
                p[..10].copy_from_slice(&GZIP_HEADER);
                (p, 10)
            }
            Codec::Gzip => (p, 0),
            Codec::Zstd => {
                // No checksum, no dictionary id, the content size in 4 or 8 bytes, and a
                // 128 KiB window (raw blocks never refer back).
                p[..4].copy_from_slice(&ZSTD_MAGIC);
                // Window_Descriptor: exponent 7 (2^(10+7) = 128 KiB), mantissa 0.
                p[5] = 7 << 3;
                // Frame_Header_Descriptor: Frame_Content_Size_flag in bits 7-6 (2: 4 bytes,
                // 3: 8 bytes), Single_Segment 0, Content_Checksum 0, Dictionary_ID_flag 0.
                if let Ok(len) = u32::try_from(self.input_len) {
                    p[4] = 2 << 6;
                    p[6..10].copy_from_slice(&len.to_le_bytes());
                    (p, 10)
                } else {
                    p[4] = 3 << 6;
                    p[6..14].copy_from_slice(&self.input_len.to_le_bytes());
                    (p, 14)
                }
            }
        }
    }

    /// (block header bytes, largest block payload).
    fn block_shape(&self) -> (u64, u64) {
        match self.codec {
            Codec::Gzip => (5, DEFLATE_STORED_BLOCK_BYTES_MAX as u64),
            Codec::Zstd => (3, ZSTD_BLOCK_BYTES_MAX as u64),
        }
    }

    fn blocks(&self) -> u64 {
        self.input_len.div_ceil(self.block_shape().1).max(1)
    }

    fn block_header(&self, i: u64) -> ([u8; 5], usize) {
        let (h, b) = self.block_shape();
        let n = self.input_len.saturating_sub(i * b).min(b);
        let last = i + 1 == self.blocks();
        let mut out = [0u8; 5];
        match self.codec {
            Codec::Gzip => {
                // BFINAL 0 (the trailer ends the stream), BTYPE=00, then padding to the byte
                // boundary: one zero byte; LEN, NLEN.
                out[1..3].copy_from_slice(&(n as u16).to_le_bytes());
                out[3..5].copy_from_slice(&(!(n as u16)).to_le_bytes());
            }
            Codec::Zstd => {
                // Block_Header, 3 bytes little-endian: Last_Block, Block_Type 0 (raw), Block_Size.
                let header = ((n as u32) << 3) | u32::from(last);
                out[..3].copy_from_slice(&header.to_le_bytes()[..3]);
            }
        }
        (out, h as usize)
    }

    /// Bytes of the stored chunk.
    pub fn encoded_len(&self) -> u64 {
        let (h, _) = self.block_shape();
        self.prefix().1 as u64 + self.blocks() * h + self.input_len
    }

    /// Fills `buf` with the chunk's bytes from `pos` on (fewer at the chunk's end) and returns
    /// how many. `read_input(dst, at)` must fill `dst` with the input's bytes from `at`.
    pub fn read_at(
        &self,
        buf: &mut [u8],
        pos: u64,
        read_input: &mut dyn FnMut(&mut [u8], u64) -> std::io::Result<()>,
    ) -> std::io::Result<usize> {
        let (prefix, p_len) = self.prefix();
        let (h, b) = self.block_shape();
        let p_len = p_len as u64;
        let end = self.encoded_len();
        let mut at = pos;
        let mut filled = 0usize;
        fn copy(buf: &mut [u8], src: &[u8], filled: &mut usize, at: &mut u64) {
            let n = src.len().min(buf.len() - *filled);
            buf[*filled..*filled + n].copy_from_slice(&src[..n]);
            *filled += n;
            *at += n as u64;
        }
        while filled < buf.len() && at < end {
            if at < p_len {
                copy(
                    buf,
                    &prefix[at as usize..p_len as usize],
                    &mut filled,
                    &mut at,
                );
            } else {
                let r = at - p_len;
                let (i, o) = (r / (h + b), r % (h + b));
                if o < h {
                    let (header, _) = self.block_header(i);
                    copy(buf, &header[o as usize..h as usize], &mut filled, &mut at);
                } else {
                    let in_at = i * b + (o - h);
                    let block_end = (i * b + b).min(self.input_len);
                    let n = ((block_end - in_at) as usize).min(buf.len() - filled);
                    read_input(&mut buf[filled..filled + n], in_at)?;
                    filled += n;
                    at += n as u64;
                }
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_testkit::testdata;

    #[test]
    fn probe_separates_random_from_text() {
        let random = testdata::random_bytes(4 << 20, 1);
        assert!(looks_incompressible(&random));
        let text = testdata::text_like(4 << 20, 1);
        assert!(!looks_incompressible(&text));
        // A compressible island of 64 KiB in a random chunk makes it compressible.
        let mut mixed = random.clone();
        mixed[2 << 20..(2 << 20) + (64 << 10)].copy_from_slice(&text[..64 << 10]);
        assert!(!looks_incompressible(&mixed));
        // High-entropy but repetitive within a run: a 1 KiB random pattern repeated.
        let pattern = testdata::random_bytes(1 << 10, 2);
        let repeated: Vec<u8> = pattern.iter().copied().cycle().take(4 << 20).collect();
        assert!(!looks_incompressible(&repeated));
        assert!(!looks_incompressible(&random[..PROBE_MIN_BYTES - 1]));
        assert!(looks_incompressible(&random[..PROBE_MIN_BYTES]));
        assert!(looks_incompressible(&random[..PROBE_WINDOW_BYTES + 1]));
        // Zeros: low entropy and repetitive.
        assert!(!looks_incompressible(&vec![0u8; 1 << 20]));
    }

    #[test]
    fn a_mixed_chunk_stores_its_random_windows_and_compresses_the_rest() {
        // 3 MiB of random bytes, then 1 MiB of text: six windows of each kind... and two.
        let mut input = testdata::random_bytes(3 << 20, 4);
        input.extend(testdata::text_like(1 << 20, 4));
        let runs = probe_runs(&input);
        assert_eq!(
            runs,
            [
                ProbeRun {
                    start: 0,
                    end: 3 << 20,
                    stored: true
                },
                ProbeRun {
                    start: 3 << 20,
                    end: 4 << 20,
                    stored: false
                },
            ]
        );
        assert!(!looks_incompressible(&input));
        for codec in [Codec::Gzip, Codec::Zstd] {
            let mut out = Vec::new();
            let stored = ChunkCompressor::new()
                .compress(codec, &input, &mut out)
                .unwrap();
            assert!(!stored, "{codec:?}: only a wholly stored chunk says so");
            // The random run is stored, byte for byte (after the header, for gzip).
            let mut head = Vec::new();
            write_stored(codec, true, &input[..3 << 20], &mut head);
            assert_eq!(&out[..head.len()], &head[..], "{codec:?}");
            // The text run is compressed: the whole is far smaller than stored would be.
            assert!(
                out.len() < head.len() + (1 << 19),
                "{codec:?}: {}",
                out.len()
            );
            assert_eq!(decode(codec, &input, out), input, "{codec:?}");
        }
        // One kind only: one run, the whole chunk.
        let text = testdata::text_like(4 << 20, 5);
        assert_eq!(probe_runs(&text).len(), 1);
        assert_eq!(probe_runs(&input[..3 << 20]).len(), 1);
    }

    /// `out` (a first chunk of `input`, without trailer) decoded: for gzip, as one member
    /// (trailer added), which must take all the bytes.
    fn decode(codec: Codec, input: &[u8], mut out: Vec<u8>) -> Vec<u8> {
        match codec {
            Codec::Gzip => {
                let crc = zlib_rs::crc32::crc32(0, input);
                out.extend_from_slice(&gzip_trailer(crc, input.len() as u64));
                gunzip_one_member(&out)
            }
            Codec::Zstd => zstd::decode_all(&out[..]).unwrap(),
        }
    }

    /// `input` cut into `chunk`-byte chunks, each compressed on its own at its place (primed
    /// with the input before it, or not), concatenated, the trailer added: the gzip stream.
    fn gzip_stream(input: &[u8], chunk: usize, primed: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, piece) in input.chunks(chunk).enumerate() {
            let at = i * chunk;
            let place = ChunkPlace {
                first: i == 0,
                before: if primed { &input[..at] } else { &[] },
            };
            // A fresh compressor per chunk: nothing but the place carries over.
            ChunkCompressor::new()
                .compress_at(Codec::Gzip, piece, place, &mut out)
                .unwrap();
        }
        let crc = zlib_rs::crc32::crc32(0, input);
        out.extend_from_slice(&gzip_trailer(crc, input.len() as u64));
        out
    }

    fn gunzip_one_member(gz: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut back = Vec::new();
        let mut one = flate2::read::GzDecoder::new(gz);
        one.read_to_end(&mut back).unwrap();
        assert!(one.into_inner().is_empty(), "one member takes every byte");
        back
    }

    #[test]
    fn chunks_compressed_apart_make_one_member_and_priming_finds_matches_across() {
        let input = testdata::text_like(1 << 20, 9);
        let primed = gzip_stream(&input, 128 << 10, true);
        let cold = gzip_stream(&input, 128 << 10, false);
        assert_eq!(&primed[..10], &GZIP_HEADER);
        assert_eq!(gunzip_one_member(&primed), input);
        assert_eq!(gunzip_one_member(&cold), input);
        assert!(
            primed.len() < cold.len(),
            "{} vs {}",
            primed.len(),
            cold.len()
        );
        // A compressed run right after a stored one reaches back into the stored bytes (a
        // 16 KiB random pattern repeated): its dictionary must be exactly the input before it.
        let random = testdata::random_bytes(1 << 20, 10);
        let pattern = &random[random.len() - (16 << 10)..];
        let mut mixed = random.clone();
        mixed.extend(pattern.iter().copied().cycle().take(1 << 20));
        let runs = probe_runs(&mixed);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(runs[0].stored && !runs[1].stored);
        for chunk in [1 << 20, 2 << 20, 768 << 10] {
            let gz = gzip_stream(&mixed, chunk, true);
            assert_eq!(gunzip_one_member(&gz), mixed, "chunk {chunk}");
            assert!(
                gz.len() < (1 << 20) + (64 << 10),
                "chunk {chunk}: {}",
                gz.len()
            );
        }
    }

    #[test]
    fn stored_formats_decode() {
        for len in [0, 1, 65_535, 65_536, 200_000, 131_072, 131_073] {
            let input = testdata::random_bytes(len, 3);
            let mut gz = Vec::new();
            write_stored(Codec::Gzip, true, &input, &mut gz);
            assert_eq!(
                decode(Codec::Gzip, &input, gz),
                input,
                "gzip stored, len {len}"
            );
            let mut zs = Vec::new();
            write_stored(Codec::Zstd, true, &input, &mut zs);
            assert_eq!(
                zstd::decode_all(&zs[..]).unwrap(),
                input,
                "zstd raw, len {len}"
            );
        }
    }

    #[test]
    fn stored_chunk_reads_back_the_written_bytes() {
        let mut seed = 7u64;
        for len in [0usize, 1, 65_534, 65_535, 65_536, 131_072, 131_073, 300_001] {
            let input = testdata::random_bytes(len, 5);
            for (codec, first) in [
                (Codec::Gzip, true),
                (Codec::Gzip, false),
                (Codec::Zstd, true),
            ] {
                let mut whole = Vec::new();
                write_stored(codec, first, &input, &mut whole);
                let chunk = StoredChunk::from_output(codec, len as u64, first, &whole)
                    .expect("the layout agrees with the writer");
                assert_eq!(chunk.encoded_len(), whole.len() as u64);
                let mut read_input = |dst: &mut [u8], at: u64| {
                    dst.copy_from_slice(&input[at as usize..at as usize + dst.len()]);
                    Ok(())
                };
                // Every boundary region and some pseudo-random ranges.
                let mut ranges = vec![(0usize, whole.len()), (0, 3), (whole.len() - 1, 10)];
                for _ in 0..40 {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let pos = (seed >> 33) as usize % whole.len();
                    let n = (seed >> 13) as usize % 70_000 + 1;
                    ranges.push((pos, n));
                }
                for (pos, n) in ranges {
                    let mut buf = vec![0u8; n];
                    let got = chunk
                        .read_at(&mut buf, pos as u64, &mut read_input)
                        .unwrap();
                    let want = &whole[pos..(pos + n).min(whole.len())];
                    assert_eq!(got, want.len(), "{codec:?} len {len} pos {pos} n {n}");
                    assert_eq!(&buf[..got], want, "{codec:?} len {len} pos {pos} n {n}");
                }
            }
        }
        // Output whose length disagrees is not taken for a stored chunk.
        assert!(StoredChunk::from_output(Codec::Gzip, 10, true, &[0u8; 20]).is_none());
    }
}
