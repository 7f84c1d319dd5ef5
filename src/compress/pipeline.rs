//! The parallel driver: read chunks, compress them on a bounded pool of std threads, and deliver
//! them in order with running digests of both sides.
//!
//! ```text
//!  reader thread                 N worker threads              calling thread
//!  free slot -> read chunk i  -> compress_chunk(i)          -> reorder, sha256 of the
//!  sha256 of the input           (ChunkCompressor each)        compressed bytes, sink(i),
//!       ^                                                      pair back to the budget
//!       '------------- buffer pairs from a ChunkBudget (2 per thread at most) ----'
//! ```
//! Blocking work (file reads, codecs, hashing) stays on std threads: the daemon calls
//! [`compress_stream`] from `spawn_blocking` or its own thread, never on the async runtime.
//!
//! Memory is bounded by a [`ChunkBudget`]: a buffer pair holds one chunk's input and its
//! output, and a pair only goes back after the sink has taken its chunk. A stream has at most
//! `2 * threads` chunks in flight (about `4 * threads * chunk_bytes` bytes), and fewer when
//! the budget it shares with other streams is short ([`compress_stream_within`]).
//!
//! Resume: chunk boundaries depend only on `chunk_bytes`, so after a crash the daemon rebuilds a
//! [`StreamState`] from what it kept (the input prefix and the compressed prefix it spooled) and
//! starts again at chunk `k` with the input positioned at `k * chunk_bytes`.
//!
//! A gzip stream is one member: chunk 0 starts with its header and, after the last chunk, the
//! delivery adds one more piece, the trailer ([`super::chunk::gzip_trailer`]), which needs the
//! CRC-32 of the whole input. The reader computes it as it reads, beside SHA-256, rather than
//! each worker on its chunk: the input passes through the reader in order anyway, and a
//! resume reads the input prefix again for SHA-256 ([`StreamState::resume`]), so the CRC of the
//! chunks before a restart comes from the source too, with nothing more to keep in the spool
//! or the store. The reader also hands each chunk the input before it (deflate's window, from
//! the same prefix after a resume), so chunks never depend on each other's output.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;

use super::budget::{ChunkBudget, Lent};
use super::chunk::{ChunkCompressor, ChunkPlace, DEFLATE_WINDOW_BYTES, gzip_trailer};
use super::{
    COMPRESS_CHUNK_BYTES_DEFAULT, COMPRESS_CHUNK_BYTES_MAX, COMPRESS_CHUNK_BYTES_MIN, Codec,
    CompressError, STREAM_THREADS_MAX,
};
use crate::digest::{Algorithm, Digest, Hasher};

/// How to compress one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressConfig {
    pub codec: Codec,
    /// Input bytes per chunk, in `COMPRESS_CHUNK_BYTES_MIN..=COMPRESS_CHUNK_BYTES_MAX`. Part of
    /// the output's identity: a different chunk size gives different bytes.
    pub chunk_bytes: usize,
    /// Compression threads, in `1..=STREAM_THREADS_MAX`. Does not change the output. A stream
    /// also uses one reader thread (read + SHA-256 of the input) and the calling thread
    /// (SHA-256 of the output + the sink), so hashing overlaps compression even on one thread.
    pub threads: usize,
}

impl CompressConfig {
    /// The default chunk size and one thread per available core.
    pub fn new(codec: Codec) -> Self {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        CompressConfig {
            codec,
            chunk_bytes: COMPRESS_CHUNK_BYTES_DEFAULT,
            threads: cores.min(STREAM_THREADS_MAX),
        }
    }

    pub fn validate(&self) -> Result<(), CompressError> {
        if !(COMPRESS_CHUNK_BYTES_MIN..=COMPRESS_CHUNK_BYTES_MAX).contains(&self.chunk_bytes) {
            return Err(CompressError::ChunkSize(self.chunk_bytes));
        }
        if !(1..=STREAM_THREADS_MAX).contains(&self.threads) {
            return Err(CompressError::Threads(self.threads));
        }
        Ok(())
    }
}

/// One compressed chunk, handed to the sink in index order.
#[derive(Debug)]
pub struct ChunkOut<'a> {
    /// Chunk number; input bytes `[index * chunk_bytes, index * chunk_bytes + input_len)`.
    /// A gzip stream's last piece is its trailer: one index past the input's chunks, no input.
    pub index: u64,
    pub input_offset: u64,
    pub input_len: usize,
    /// Compressed bytes before this chunk in the whole stream: where `bytes` goes in the blob.
    pub output_offset: u64,
    /// Whether the chunk was stored without compression (judged incompressible).
    pub stored: bool,
    /// The chunk's part of the gzip member, or its zstd frames. Borrowed: the buffer is reused
    /// for a later chunk.
    pub bytes: &'a [u8],
}

/// Running totals of a stream: where it is and the digests so far. Cloneable, so a caller can
/// keep the state as of its last durable chunk.
#[derive(Clone)]
pub struct StreamState {
    next_index: u64,
    uncompressed: Hasher,
    compressed: Hasher,
    uncompressed_bytes: u64,
    compressed_bytes: u64,
    /// CRC-32 of the input so far (the gzip trailer's).
    crc32: u32,
    /// The last [`DEFLATE_WINDOW_BYTES`] of the input so far: the next chunk's dictionary.
    tail: Vec<u8>,
    /// The gzip trailer is written already: the stream is whole.
    trailer_written: bool,
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("next_index", &self.next_index)
            .field("uncompressed_bytes", &self.uncompressed_bytes)
            .field("compressed_bytes", &self.compressed_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for StreamState {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamState {
    /// The state of a stream that starts at chunk 0.
    pub fn new() -> Self {
        StreamState {
            next_index: 0,
            uncompressed: Hasher::new(Algorithm::Sha256),
            compressed: Hasher::new(Algorithm::Sha256),
            uncompressed_bytes: 0,
            compressed_bytes: 0,
            crc32: 0,
            tail: Vec::new(),
            trailer_written: false,
        }
    }

    /// Rebuilds the state after pieces `0..next_index` of a `codec` stream were compressed
    /// and kept: reads (and hashes) the first `next_index * chunk_bytes` input bytes from
    /// `uncompressed` and all of `compressed_prefix` (the kept pieces). SHA-256 at ~1.5 GB/s
    /// makes this far cheaper than compressing again; the gzip trailer's CRC-32 and the next
    /// chunk's dictionary come from the same read. Fails if the input prefix does not fit
    /// `next_index` pieces.
    pub fn resume(
        codec: Codec,
        next_index: u64,
        chunk_bytes: usize,
        uncompressed: impl Read,
        compressed_prefix: impl Read,
    ) -> Result<Self, CompressError> {
        let mut state = StreamState::new();
        let want = next_index.saturating_mul(chunk_bytes as u64);
        state.uncompressed_bytes = state.read_input(codec, uncompressed.take(want))?;
        state.compressed_bytes = hash_all(compressed_prefix, &mut state.compressed)?;
        let got = state.uncompressed_bytes;
        // When the input ended inside the prefix, it has this many chunks: all full but the
        // last, and chunk 0 even when empty; a gzip stream has its trailer after them.
        let chunks = got.div_ceil(chunk_bytes as u64).max(1);
        let whole = got == want;
        let ended = !whole && next_index == chunks;
        state.trailer_written = !whole && codec == Codec::Gzip && next_index == chunks + 1;
        if !(whole || ended || state.trailer_written) {
            return Err(CompressError::ResumePrefix {
                index: next_index,
                expected: want,
                got,
            });
        }
        state.next_index = next_index;
        Ok(state)
    }

    /// Hashes all of `r` as input: SHA-256, and for gzip the CRC-32 and the window's tail.
    fn read_input(&mut self, codec: Codec, r: impl Read) -> Result<u64, CompressError> {
        read_all(r, |bytes| {
            self.uncompressed.update(bytes);
            if codec == Codec::Gzip {
                self.crc32 = zlib_rs::crc32::crc32(self.crc32, bytes);
                keep_tail(&mut self.tail, bytes);
            }
        })
    }

    /// The next chunk to compress.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    pub fn uncompressed_bytes(&self) -> u64 {
        self.uncompressed_bytes
    }

    pub fn compressed_bytes(&self) -> u64 {
        self.compressed_bytes
    }
}

fn hash_all(r: impl Read, h: &mut Hasher) -> Result<u64, CompressError> {
    read_all(r, |bytes| h.update(bytes))
}

/// Reads all of `r`, handing each piece read to `take`; returns the bytes read.
fn read_all(mut r: impl Read, mut take: impl FnMut(&[u8])) -> Result<u64, CompressError> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                take(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CompressError::Read(e)),
        }
    }
}

/// Keeps in `tail` the last [`DEFLATE_WINDOW_BYTES`] of its bytes followed by `bytes`.
fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() >= DEFLATE_WINDOW_BYTES {
        tail.clear();
        tail.extend_from_slice(&bytes[bytes.len() - DEFLATE_WINDOW_BYTES..]);
    } else {
        tail.extend_from_slice(bytes);
        let extra = tail.len().saturating_sub(DEFLATE_WINDOW_BYTES);
        tail.drain(..extra);
    }
}

/// What a finished stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// sha256 of the uncompressed input (the layer's diff_id).
    pub diff_id: Digest,
    /// sha256 of the compressed stream (the blob digest).
    pub blob_digest: Digest,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    /// Number of pieces in the whole stream (including any before a resume): the input's
    /// chunks, and a gzip stream's trailer.
    pub chunks: u64,
    /// Chunks stored without compression in this run (not counting those before a resume).
    pub stored_chunks: u64,
}

/// One chunk on its way through the threads, in a buffer pair lent by the budget.
struct Work<'a> {
    index: u64,
    offset: u64,
    len: usize,
    slot: Lent<'a>,
    /// The input's last [`DEFLATE_WINDOW_BYTES`] before this chunk (gzip only).
    before: Vec<u8>,
}

enum Done<'a> {
    Chunk {
        work: Work<'a>,
        stored: bool,
    },
    /// The reader reached the end of the input; `next_index` chunks exist in all.
    End {
        next_index: u64,
        hasher: Hasher,
        bytes: u64,
        crc32: u32,
    },
    Failed(CompressError),
}

/// Compresses `input` from chunk `state.next_index()` on (the reader must be positioned at
/// `state.next_index() * chunk_bytes`) and hands every chunk to `sink` in index order.
/// Returns the totals over the whole stream, including the chunks before a resume.
///
/// An error from `sink` stops the stream: the threads finish their current chunk and exit,
/// and that error is returned. The stream's buffers come from a budget of its own
/// (`2 * threads` pairs); [`compress_stream_within`] shares one with other streams.
pub fn compress_stream<R, F, E>(
    input: R,
    config: &CompressConfig,
    state: StreamState,
    sink: F,
) -> Result<Totals, E>
where
    R: Read + Send,
    F: FnMut(ChunkOut<'_>) -> Result<(), E>,
    E: From<CompressError>,
{
    let budget = ChunkBudget::pairs(2 * config.threads, config.chunk_bytes);
    compress_stream_within(input, config, state, &budget, sink)
}

/// [`compress_stream`] with its chunk buffers drawn from `budget`, which other streams may
/// share: the stream keeps at most `2 * threads` chunks in flight, fewer when the budget is
/// short, and waits for its first pair when the budget has none. The output is the same.
pub fn compress_stream_within<R, F, E>(
    input: R,
    config: &CompressConfig,
    state: StreamState,
    budget: &ChunkBudget,
    sink: F,
) -> Result<Totals, E>
where
    R: Read + Send,
    F: FnMut(ChunkOut<'_>) -> Result<(), E>,
    E: From<CompressError>,
{
    config.validate()?;
    let _member = budget.join();
    let lending = Lending {
        budget,
        held: AtomicUsize::new(0),
        depth: 2 * config.threads,
        closed: AtomicBool::new(false),
    };
    // Unbounded, but never holds more than the budget's pairs.
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let StreamState {
        next_index,
        uncompressed,
        compressed,
        uncompressed_bytes,
        compressed_bytes,
        crc32,
        tail,
        trailer_written,
    } = state;
    let (codec, chunk_bytes) = (config.codec, config.chunk_bytes);
    thread::scope(|s| {
        // However `deliver` returns, the reader stops waiting for pairs, so the scope's join
        // cannot hang.
        let _close = CloseOnDrop(&lending);
        for t in 0..config.threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            thread::Builder::new()
                .name(format!("hoist-compress-{t}"))
                .spawn_scoped(s, move || worker(codec, work_rx, done_tx))
                .map_err(|e| CompressError::Thread(format!("cannot start a thread: {e}")))?;
        }
        let reader = Reader {
            input,
            codec,
            chunk_bytes,
            index: next_index,
            offset: uncompressed_bytes,
            hasher: uncompressed,
            crc32,
            tail,
        };
        let reader_done_tx = done_tx.clone();
        let lending = &lending;
        thread::Builder::new()
            .name("hoist-compress-read".into())
            .spawn_scoped(s, move || reader.run(lending, work_tx, reader_done_tx))
            .map_err(|e| CompressError::Thread(format!("cannot start a thread: {e}")))?;
        // Only the threads hold senders now, so `recv` fails if they all die.
        drop(done_tx);
        // When `deliver` returns, early or not, the results' receiver is dropped and the
        // reader is closed: it drops the work sender and the workers drain and exit.
        let delivery = Delivery {
            done_rx,
            expected: next_index,
            compressed,
            compressed_bytes,
            stored_chunks: 0,
            trailer_due: codec == Codec::Gzip && !trailer_written,
        };
        delivery.run(sink)
    })
}

/// What the reader takes its buffer pairs from: the budget, at most `depth` at once for this
/// stream, until the delivery has `closed` the stream.
struct Lending<'a> {
    budget: &'a ChunkBudget,
    held: AtomicUsize,
    depth: usize,
    closed: AtomicBool,
}

/// Closes a stream's lending when the delivery ends, and wakes its reader.
struct CloseOnDrop<'l, 'a>(&'l Lending<'a>);

impl Drop for CloseOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Relaxed);
        self.0.budget.wake();
    }
}

struct Reader<R> {
    input: R,
    codec: Codec,
    chunk_bytes: usize,
    index: u64,
    offset: u64,
    hasher: Hasher,
    crc32: u32,
    tail: Vec<u8>,
}

impl<R: Read> Reader<R> {
    fn run<'a>(
        mut self,
        lending: &'a Lending<'a>,
        work_tx: mpsc::Sender<Work<'a>>,
        done_tx: mpsc::Sender<Done<'a>>,
    ) {
        loop {
            let Lending {
                budget,
                held,
                depth,
                closed,
            } = lending;
            let Some(mut lent) = budget.take(self.chunk_bytes, held, *depth, closed) else {
                return; // delivery stopped
            };
            let slot = lent.slot();
            if slot.input.len() < self.chunk_bytes {
                slot.input.resize(self.chunk_bytes, 0);
            }
            let n = match read_full(&mut self.input, &mut slot.input[..self.chunk_bytes]) {
                Ok(n) => n,
                Err(e) => {
                    let _ = done_tx.send(Done::Failed(CompressError::Read(e)));
                    return;
                }
            };
            // Chunk 0 always exists (an empty input is one empty member); later ones need bytes.
            if n == 0 && self.index != 0 {
                break;
            }
            let chunk = &slot.input[..n];
            self.hasher.update(chunk);
            let mut before = Vec::new();
            if self.codec == Codec::Gzip {
                self.crc32 = zlib_rs::crc32::crc32(self.crc32, chunk);
                before.clone_from(&self.tail);
                keep_tail(&mut self.tail, chunk);
            }
            let work = Work {
                index: self.index,
                offset: self.offset,
                len: n,
                slot: lent,
                before,
            };
            if work_tx.send(work).is_err() {
                return;
            }
            self.index += 1;
            self.offset += n as u64;
            if n < self.chunk_bytes {
                break;
            }
        }
        let _ = done_tx.send(Done::End {
            next_index: self.index,
            hasher: self.hasher,
            bytes: self.offset,
            crc32: self.crc32,
        });
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn worker<'a>(
    codec: Codec,
    work_rx: &Mutex<mpsc::Receiver<Work<'a>>>,
    done_tx: mpsc::Sender<Done<'a>>,
) {
    let mut compressor = ChunkCompressor::new();
    loop {
        // The lock is held only while waiting; another worker waits its turn while this one
        // compresses.
        let next = work_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(mut work) = next else {
            return; // the reader is done
        };
        // A panic must reach the caller as an error: otherwise its chunk never arrives and the
        // delivery would wait for it forever.
        let result = catch_unwind(AssertUnwindSafe(|| {
            let place = ChunkPlace {
                first: work.index == 0,
                before: &work.before,
            };
            let slot = work.slot.slot();
            slot.output.clear();
            compressor.compress_at(codec, &slot.input[..work.len], place, &mut slot.output)
        }));
        let (msg, stop) = match result {
            Ok(Ok(stored)) => (Done::Chunk { work, stored }, false),
            Ok(Err(e)) => (Done::Failed(e), true),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                (Done::Failed(CompressError::Thread(what)), true)
            }
        };
        if done_tx.send(msg).is_err() || stop {
            return;
        }
    }
}

struct Delivery<'a> {
    done_rx: mpsc::Receiver<Done<'a>>,
    expected: u64,
    compressed: Hasher,
    compressed_bytes: u64,
    stored_chunks: u64,
    /// A gzip stream whose trailer is still to come after the last chunk.
    trailer_due: bool,
}

/// One piece of the stream as the sink gets it, before its output offset is known.
struct Piece<'b> {
    index: u64,
    input_offset: u64,
    input_len: usize,
    stored: bool,
    bytes: &'b [u8],
}

impl<'a> Delivery<'a> {
    fn run<F, E>(mut self, mut sink: F) -> Result<Totals, E>
    where
        F: FnMut(ChunkOut<'_>) -> Result<(), E>,
        E: From<CompressError>,
    {
        let mut pending: BTreeMap<u64, (Work<'a>, bool)> = BTreeMap::new();
        let mut end: Option<(u64, Hasher, u64, u32)> = None;
        loop {
            if let Some((next_index, ..)) = &end
                && *next_index == self.expected
            {
                break;
            }
            let msg = self.done_rx.recv().map_err(|_| {
                CompressError::Thread("the compression threads stopped early".into())
            })?;
            match msg {
                Done::Chunk { work, stored } => {
                    pending.insert(work.index, (work, stored));
                    while let Some((work, stored)) = pending.remove(&self.expected) {
                        self.deliver_chunk(work, stored, &mut sink)?;
                    }
                }
                Done::End {
                    next_index,
                    hasher,
                    bytes,
                    crc32,
                } => end = Some((next_index, hasher, bytes, crc32)),
                Done::Failed(e) => return Err(e.into()),
            }
        }
        let (_, uncompressed, uncompressed_bytes, crc32) = end.expect("loop exits only at the end");
        debug_assert!(pending.is_empty());
        if std::mem::take(&mut self.trailer_due) {
            let trailer = gzip_trailer(crc32, uncompressed_bytes);
            let piece = Piece {
                index: self.expected,
                input_offset: uncompressed_bytes,
                input_len: 0,
                stored: false,
                bytes: &trailer,
            };
            self.deliver(piece, &mut sink)?;
        }
        Ok(Totals {
            diff_id: uncompressed.finish(),
            blob_digest: self.compressed.finish(),
            uncompressed_bytes,
            compressed_bytes: self.compressed_bytes,
            chunks: self.expected,
            stored_chunks: self.stored_chunks,
        })
    }

    fn deliver_chunk<F, E>(&mut self, work: Work<'a>, stored: bool, sink: &mut F) -> Result<(), E>
    where
        F: FnMut(ChunkOut<'_>) -> Result<(), E>,
    {
        let piece = Piece {
            index: work.index,
            input_offset: work.offset,
            input_len: work.len,
            stored,
            bytes: work.slot.output(),
        };
        self.deliver(piece, sink)?;
        // The pair goes back to the budget, for this stream's next chunk or another's.
        drop(work);
        Ok(())
    }

    fn deliver<F, E>(&mut self, piece: Piece<'_>, sink: &mut F) -> Result<(), E>
    where
        F: FnMut(ChunkOut<'_>) -> Result<(), E>,
    {
        let output_offset = self.compressed_bytes;
        self.compressed.update(piece.bytes);
        self.compressed_bytes += piece.bytes.len() as u64;
        self.stored_chunks += u64::from(piece.stored);
        sink(ChunkOut {
            index: piece.index,
            input_offset: piece.input_offset,
            input_len: piece.input_len,
            output_offset,
            stored: piece.stored,
            bytes: piece.bytes,
        })?;
        self.expected += 1;
        Ok(())
    }
}
