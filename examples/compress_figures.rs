//! hoist's side of `scripts/compress-compare.sh`.
//!
//! ```text
//! compress_figures generate text|random BYTES PATH     write deterministic sample data
//! compress_figures run gzip|zstd THREADS PATH [OUT]    compress PATH (read + sha256 x2 +
//!                                                      compress [+ write OUT]); print
//!                                                      "seconds bytes stored chunks" on stderr
//! compress_figures survey PATH                         markdown rows: gzip levels, chunk sizes
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

use hoist::compress::{
    COMPRESS_CHUNK_BYTES_DEFAULT, ChunkCompressor, Codec, CompressConfig, CompressError,
    StreamState, compress_stream,
};
use hoist_testkit::testdata;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["generate", kind, bytes, path] => generate(kind, bytes.parse().expect("BYTES"), path),
        ["run", codec, threads, path, rest @ ..] => run(
            codec.parse().expect("gzip or zstd"),
            threads.parse().expect("THREADS"),
            path,
            rest.first().copied(),
        ),
        ["survey", path] => survey(path),
        _ => {
            eprintln!("usage: see the doc comment of examples/compress_figures.rs");
            std::process::exit(2);
        }
    }
}

fn generate(kind: &str, bytes: usize, path: &str) {
    // Generated in 64 MiB pieces with different seeds, to keep memory small.
    let piece = 64 << 20;
    let mut w = BufWriter::new(File::create(path).expect("create output"));
    let mut done = 0;
    let mut seed = 1;
    while done < bytes {
        let n = piece.min(bytes - done);
        let data = match kind {
            "text" => testdata::text_like(n, seed),
            "random" => testdata::random_bytes(n, seed),
            _ => panic!("kind is text or random"),
        };
        w.write_all(&data).expect("write");
        done += n;
        seed += 1;
    }
    w.flush().expect("flush");
}

fn run(codec: Codec, threads: usize, path: &str, out: Option<&str>) {
    let cfg = CompressConfig {
        codec,
        chunk_bytes: COMPRESS_CHUNK_BYTES_DEFAULT,
        threads,
    };
    let mut sink_file = out.map(|p| File::create(p).expect("create OUT"));
    let start = Instant::now();
    let input = File::open(path).expect("open input");
    let totals = compress_stream(input, &cfg, StreamState::new(), |c| {
        if let Some(f) = sink_file.as_mut() {
            f.write_all(c.bytes).map_err(CompressError::Read)?;
        }
        Ok::<(), CompressError>(())
    })
    .expect("compress");
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{secs:.3} {} {} {}",
        totals.compressed_bytes, totals.stored_chunks, totals.chunks
    );
}

/// This thread's CPU time: the survey's speeds are input bytes per CPU second, which other work
/// on a shared machine disturbs far less than wall time.
struct CpuClock(f64);

impl CpuClock {
    fn now() -> Self {
        CpuClock(thread_cpu_secs())
    }

    fn elapsed_secs(&self) -> f64 {
        thread_cpu_secs() - self.0
    }
}

/// Linux's per-thread CPU time in nanoseconds (the first field of `schedstat`).
fn thread_cpu_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: f64 = text
        .split(' ')
        .next()
        .and_then(|f| f.parse().ok())
        .expect("ns");
    ns / 1e9
}

/// Level and chunk-size trade-offs on one file (its first 64 MiB), one thread, no hashing.
/// Rows "libdeflate" and "libzstd" call the libraries directly (no incompressible probe);
/// rows "hoist" go through `ChunkCompressor` (probe, then compress or store).
fn survey(path: &str) {
    let data = std::fs::read(path).expect("read input");
    let data = &data[..data.len().min(64 << 20)];
    let name = std::path::Path::new(path)
        .file_stem()
        .map_or("data".into(), |s| s.to_string_lossy().into_owned());
    survey_deflate(&name, data);
    let chunk = COMPRESS_CHUNK_BYTES_DEFAULT;
    for chunk_mib in [1usize, 4, 8, 16] {
        let mut c = zstd::bulk::Compressor::new(3).expect("zstd");
        let start = CpuClock::now();
        let mut total = 0;
        for piece in data.chunks(chunk_mib << 20) {
            total += c.compress(piece).expect("zstd").len();
        }
        let setting = format!("level 3, {chunk_mib} MiB chunks");
        row(&name, "libzstd", &setting, data.len(), total, start);
    }
    let start = CpuClock::now();
    let whole = zstd::bulk::compress(data, 3).expect("zstd").len();
    row(
        &name,
        "libzstd",
        "level 3, one frame",
        data.len(),
        whole,
        start,
    );
    for codec in [Codec::Gzip, Codec::Zstd] {
        let mut c = ChunkCompressor::new();
        let mut out = Vec::new();
        let start = CpuClock::now();
        let mut total = 0;
        let mut stored = 0;
        for piece in data.chunks(chunk) {
            out.clear();
            stored += usize::from(c.compress(codec, piece, &mut out).expect("compress"));
            total += out.len();
        }
        let setting = format!("4 MiB chunks, {stored} stored");
        row(
            &name,
            &format!("hoist {codec}"),
            &setting,
            data.len(),
            total,
            start,
        );
    }
}

/// The deflate libraries hoist could use for gzip: libdeflate (no flush: each chunk ends its
/// stream) and zlib-rs (sync flush, with and without the previous 32 KiB as dictionary).
fn survey_deflate(name: &str, data: &[u8]) {
    let chunk = COMPRESS_CHUNK_BYTES_DEFAULT;
    for level in [1, 2, 4, 6, 9] {
        let lvl = libdeflater::CompressionLvl::new(level).expect("level");
        let mut c = libdeflater::Compressor::new(lvl);
        let mut out = vec![0u8; c.gzip_compress_bound(chunk)];
        let start = CpuClock::now();
        let mut total = 0;
        for piece in data.chunks(chunk) {
            total += c.gzip_compress(piece, &mut out).expect("gzip");
        }
        let setting = format!("level {level}, 4 MiB chunks");
        row(name, "libdeflate gzip", &setting, data.len(), total, start);
    }
    let start = CpuClock::now();
    let total = libdeflate_scanned(data, chunk);
    let setting = "level 2, 4 MiB chunks, then inflated (to find the final block)";
    row(
        name,
        "libdeflate deflate",
        setting,
        data.len(),
        total,
        start,
    );
    for level in [1, 2, 3, 4, 6] {
        for primed in [false, true] {
            let start = CpuClock::now();
            let total = zlib_rs_chunks(data, chunk, level, primed);
            let dict = if primed { ", primed" } else { "" };
            let setting = format!("level {level}, 4 MiB chunks, sync flush{dict}");
            row(name, "zlib-rs deflate", &setting, data.len(), total, start);
        }
    }
}

/// libdeflate has no flush: its last block is always final. Clearing that bit needs the
/// block's position, which only decoding the whole chunk finds: this row pays that decoding
/// (a plain inflate, a lower bound of the cost) on top of compressing.
fn libdeflate_scanned(data: &[u8], chunk: usize) -> usize {
    let lvl = libdeflater::CompressionLvl::new(2).expect("level");
    let mut c = libdeflater::Compressor::new(lvl);
    let mut out = vec![0u8; c.deflate_compress_bound(chunk)];
    let mut back = Vec::with_capacity(chunk);
    let mut total = 0;
    for piece in data.chunks(chunk) {
        let n = c.deflate_compress(piece, &mut out).expect("deflate");
        back.clear();
        let mut d = flate2::Decompress::new(false);
        d.decompress_vec(&out[..n], &mut back, flate2::FlushDecompress::Finish)
            .expect("inflate");
        assert_eq!(back.len(), piece.len());
        total += n;
    }
    total
}

/// Raw deflate of each chunk ended by a sync flush, as one gzip member is made of them;
/// `primed`: each chunk starts with the previous 32 KiB of input as its dictionary.
fn zlib_rs_chunks(data: &[u8], chunk: usize, level: u32, primed: bool) -> usize {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(chunk + chunk / 8);
    let mut total = 0;
    for (i, piece) in data.chunks(chunk).enumerate() {
        c.reset();
        if primed && i > 0 {
            let at = i * chunk;
            c.set_dictionary(&data[at - (32 << 10)..at])
                .expect("dictionary");
        }
        out.clear();
        c.compress_vec(piece, &mut out, flate2::FlushCompress::Sync)
            .expect("deflate");
        assert_eq!(
            c.total_in() as usize,
            piece.len(),
            "output buffer too small"
        );
        total += out.len();
    }
    total
}

fn row(data: &str, codec: &str, setting: &str, input: usize, output: usize, start: CpuClock) {
    let secs = start.elapsed_secs();
    println!(
        "| {data} | {codec} | {setting} | {:.0} | {:.3} |",
        input as f64 / 1e6 / secs,
        input as f64 / output as f64
    );
}
