//! Compression benchmarks: one chunk per codec and data kind, the parallel driver on one and two
//! threads, SHA-256, and the file pipeline end to end (read + hash + compress + hash, and the
//! same plus the spool write).
//! Kept short on purpose (10 samples, 3 s each) so `cargo bench --bench compress` takes a few
//! minutes on two cores. Other builds on the machine skew the figures: check `uptime`.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use hoist::compress::chunk::looks_incompressible;
use hoist::compress::{
    COMPRESS_CHUNK_BYTES_DEFAULT, ChunkCompressor, Codec, CompressConfig, CompressError,
    StreamState, compress_stream,
};
use hoist::daemon::push::spool::SPOOL_SYNC_CHUNKS;
use hoist::digest::{Algorithm, Hasher};
use hoist_testkit::testdata;

const CHUNK: usize = COMPRESS_CHUNK_BYTES_DEFAULT;
/// Input for the multi-chunk benchmarks: 8 chunks, so two threads have work to share.
const STREAM_BYTES: usize = 8 * CHUNK;

fn inputs(len: usize) -> [(&'static str, Vec<u8>); 2] {
    [
        ("random", testdata::random_bytes(len, 1)),
        ("text", testdata::text_like(len, 1)),
    ]
}

fn chunk(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    for (kind, input) in inputs(CHUNK) {
        for codec in [Codec::Gzip, Codec::Zstd] {
            let mut comp = ChunkCompressor::new();
            let mut out = Vec::with_capacity(CHUNK + (CHUNK >> 6));
            g.bench_function(BenchmarkId::new(codec.name(), kind), |b| {
                b.iter(|| {
                    out.clear();
                    comp.compress(codec, black_box(&input), &mut out).unwrap();
                    black_box(out.len())
                })
            });
        }
        // The incompressibility probe alone: what every chunk pays before compressing.
        g.bench_function(BenchmarkId::new("probe", kind), |b| {
            b.iter(|| looks_incompressible(black_box(&input)))
        });
    }
    g.finish();
}

fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream");
    // An iteration takes up to ~0.5 s: flat sampling keeps it to 10 iterations.
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(STREAM_BYTES as u64));
    for (kind, input) in inputs(STREAM_BYTES) {
        for codec in [Codec::Gzip, Codec::Zstd] {
            for threads in [1, 2] {
                let cfg = CompressConfig {
                    codec,
                    chunk_bytes: CHUNK,
                    threads,
                };
                let id = BenchmarkId::new(format!("{codec}/{threads}t"), kind);
                g.bench_function(id, |b| {
                    b.iter(|| {
                        compress_stream(&input[..], &cfg, StreamState::new(), |c| {
                            black_box(c.bytes.len());
                            Ok::<(), CompressError>(())
                        })
                        .unwrap()
                    })
                });
            }
        }
    }
    g.finish();
}

fn sha256(c: &mut Criterion) {
    let mut g = c.benchmark_group("sha256");
    let input = testdata::random_bytes(CHUNK, 2);
    g.throughput(Throughput::Bytes(CHUNK as u64));
    g.bench_function("4MiB", |b| {
        b.iter(|| {
            let mut h = Hasher::new(Algorithm::Sha256);
            h.update(black_box(&input));
            h.finish()
        })
    });
    g.finish();
}

/// Read from a local file (page-cached after the first iteration) + both digests + compress,
/// and in the `+spool` variants also the spool write as the daemon does it (each chunk written
/// to a file, synced every `SPOOL_SYNC_CHUNKS`).
fn file_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("file_pipeline");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(STREAM_BYTES as u64));
    let dir = tempfile::tempdir().unwrap();
    for (kind, input) in inputs(STREAM_BYTES) {
        let path = dir.path().join(kind);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&input)
            .unwrap();
        for codec in [Codec::Gzip, Codec::Zstd] {
            let cfg = CompressConfig {
                codec,
                chunk_bytes: CHUNK,
                threads: 2,
            };
            g.bench_function(BenchmarkId::new(format!("{codec}/2t"), kind), |b| {
                b.iter(|| {
                    let file = std::fs::File::open(&path).unwrap();
                    compress_stream(file, &cfg, StreamState::new(), |c| {
                        black_box(c.bytes.len());
                        Ok::<(), CompressError>(())
                    })
                    .unwrap()
                })
            });
            let spool = dir.path().join(format!("{kind}-{codec}.spool"));
            g.bench_function(BenchmarkId::new(format!("{codec}/2t+spool"), kind), |b| {
                b.iter(|| {
                    let file = std::fs::File::open(&path).unwrap();
                    let mut out = std::fs::File::create(&spool).unwrap();
                    compress_stream(file, &cfg, StreamState::new(), |c| {
                        out.write_all(c.bytes).map_err(CompressError::Read)?;
                        if (c.index + 1) % SPOOL_SYNC_CHUNKS == 0 {
                            out.sync_data().map_err(CompressError::Read)?;
                        }
                        Ok::<(), CompressError>(())
                    })
                    .unwrap();
                    out.sync_data().unwrap();
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = chunk, stream, sha256, file_pipeline
}
criterion_main!(benches);
