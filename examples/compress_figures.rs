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

/// Level and chunk-size trade-offs on one file (its first 64 MiB), one thread, no hashing.
/// Rows "libdeflate" and "libzstd" call the libraries directly (no incompressible probe);
/// rows "hoist" go through `ChunkCompressor` (probe, then compress or store).
fn survey(path: &str) {
    let data = std::fs::read(path).expect("read input");
    let data = &data[..data.len().min(64 << 20)];
    let name = std::path::Path::new(path)
        .file_stem()
        .map_or("data".into(), |s| s.to_string_lossy().into_owned());
    let chunk = COMPRESS_CHUNK_BYTES_DEFAULT;
    for level in [1, 4, 6, 9] {
        let lvl = libdeflater::CompressionLvl::new(level).expect("level");
        let mut c = libdeflater::Compressor::new(lvl);
        let mut out = vec![0u8; c.gzip_compress_bound(chunk)];
        let start = Instant::now();
        let mut total = 0;
        for piece in data.chunks(chunk) {
            total += c.gzip_compress(piece, &mut out).expect("gzip");
        }
        let setting = format!("level {level}, 4 MiB chunks");
        row(&name, "libdeflate gzip", &setting, data.len(), total, start);
    }
    for chunk_mib in [1usize, 4, 8, 16] {
        let mut c = zstd::bulk::Compressor::new(3).expect("zstd");
        let start = Instant::now();
        let mut total = 0;
        for piece in data.chunks(chunk_mib << 20) {
            total += c.compress(piece).expect("zstd").len();
        }
        let setting = format!("level 3, {chunk_mib} MiB chunks");
        row(&name, "libzstd", &setting, data.len(), total, start);
    }
    let start = Instant::now();
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
        let start = Instant::now();
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

fn row(data: &str, codec: &str, setting: &str, input: usize, output: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| {data} | {codec} | {setting} | {:.0} | {:.3} |",
        input as f64 / 1e6 / secs,
        input as f64 / output as f64
    );
}
